#!/usr/bin/env bash
# A live handoff on a sandbox of its own.
#
# Builds handoff, makes four network namespaces (a gateway playing the host, two backends
# "v1" and "v2" on a bridge behind it, a client in front of it), and then, while the client
# keeps opening new connections and downloads a large file from v1:
#   switch web from v1 to v2  ->  new connections go to v2, the download stays on v1
#   drain web --wait          ->  returns the moment the download's connection ends
# and prints a summary. Everything it made is removed at the end, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=lib/sandbox.sh
source scripts/lib/sandbox.sh
require_root_and_packages

echo "== building handoff (release)"
cargo build --release --quiet --bins
bin=$PWD/target/release

echo "== sandbox: client 10.0.2.2 -> gateway 10.0.2.1 (runs handoff) -> v1 10.0.1.11 / v2 10.0.1.12"
sandbox_up "hodemo$$"
# Byte counts per flow in `handoff flows` (this namespace only).
ip netns exec "$gw" sysctl -qw net.netfilter.nf_conntrack_acct=1

cat >"$work/handoff.json" <<'JSON'
{
  "components": [
    {
      "name": "web",
      "ports": [{ "external": 80, "container": 8080 }],
      "readyChecks": [{ "kind": "http", "port": 8080, "path": "/" }],
      "readyTimeout": 5000,
      "drainTimeout": 120000
    }
  ]
}
JSON
serve "$v1" v1
serve "$v2" v2

echo "== handoff switch web --to 10.0.1.11 (v1)"
handoff switch web --to 10.0.1.11

echo "== live load: 8 clients opening a new connection per request for 8 s; a 150 MB download from v1"
netkit "$client" load --target 10.0.2.1:80 --connections 8 --duration-ms 8000 >"$work/load.json" &
load_pid=$!
(netkit "$client" download --target 10.0.2.1:80 --bytes 150000000 --rate 30000000 >"$work/download.json" || true
 now_ms >"$work/download.end") &
download_pid=$!
sleep 1.5

echo "== handoff switch web --to 10.0.1.12 (v2), while the download runs"
switch_start=$(now_ms)
handoff switch web --to 10.0.1.12 | tee "$work/switch.out"
switch_end=$(now_ms)

echo "== handoff list"
handoff list
echo "== handoff flows web (the download is still on v1)"
handoff flows web

echo "== handoff drain web --wait"
drain_start=$(now_ms)
handoff drain web --wait --timeout 120
drain_end=$(now_ms)

wait "$load_pid" "$download_pid"
echo "== handoff list (after the drain)"
handoff list

python3 - "$work" "$switch_start" "$switch_end" "$drain_start" "$drain_end" <<'PY'
import json, re, sys
work, switch_start, switch_end, drain_start, drain_end = sys.argv[1], *map(int, sys.argv[2:])
load = json.load(open(f"{work}/load.json"))
download = json.load(open(f"{work}/download.json"))
download_end = int(open(f"{work}/download.end").read())
applied = re.search(r"switched in (\d+) ms", open(f"{work}/switch.out").read())
lag = drain_end - download_end
print()
print("== summary")
print(f"requests served:      v1 {load['by_backend'].get('v1', 0)}, v2 {load['by_backend'].get('v2', 0)}")
print(f"failed requests:      {load['failed']}")
print(f"download (150 MB):    served by {download['backend']}, {download['bytes']} bytes, "
      f"{'intact' if download['intact'] else 'CORRUPT'}")
print(f"switch:               {applied.group(1) if applied else '?'} ms in the kernel transaction, "
      f"{switch_end - switch_start} ms for the whole command (ready check included)")
print(f"drain:                waited {(drain_end - drain_start) / 1000:.1f} s for the download; "
      f"returned {lag} ms after its connection closed")
ok = load["failed"] == 0 and download["intact"] and download["backend"] == "v1" \
     and download["bytes"] == 150000000 and load["by_backend"].get("v2", 0) > 0
print("result:               " + ("zero-downtime handoff" if ok else "FAILED"))
sys.exit(0 if ok else 1)
PY
