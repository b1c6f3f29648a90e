#!/usr/bin/env bash
# A live handoff on a sandbox of its own: gantry's `update`, with the kernel instead of HAProxy.
#
# Builds handoff and two versions of a small web image (busybox + the netkit server, imported
# locally), makes a client network namespace that reaches this host over a veth, and then:
#   handoff start web             v1 serves; the client keeps opening new connections and
#                                 downloads 150 MB from it
#   handoff update web --tag v2   v2 starts beside v1, is checked, takes every new connection;
#                                 v1 finishes the download, then is signalled, stopped, removed
# and prints a summary. Everything it made is removed at the end, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=lib/sandbox.sh
source scripts/lib/sandbox.sh
require_root_and_packages

echo "== building handoff (release)"
cargo build --release --quiet --bins
bin=$PWD/target/release
ensure_dockerd

id=hodemo$$
table=$id
repo=handoff-demo-$id
client=$id-client
host_if=${id}h
subnet=$((1 + $$ % 250))
host=10.232.$subnet.1
port=18080
work=$(mktemp -d)
cleanup() {
    set +e
    "$bin/handoff" --config "$work/handoff.json" --state-dir "$work/state" --table "$table" \
        kill web >/dev/null 2>&1
    ip netns pids "$client" 2>/dev/null | xargs -r kill 2>/dev/null
    docker ps -aq --filter "label=handoff.table=$table" | xargs -r docker rm -f >/dev/null 2>&1
    docker rmi -f "$repo:v1" "$repo:v2" >/dev/null 2>&1
    nft delete table inet "$table" 2>/dev/null
    ip netns del "$client" 2>/dev/null
    ip link del "$host_if" 2>/dev/null
    rm -rf "$work"
    stop_dockerd
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== images $repo:v1 and :v2 (docker import of busybox + netkit)"
build_netkit_image "$repo:v1" v1
build_netkit_image "$repo:v2" v2

echo "== client namespace 10.232.$subnet.2 -> this host $host:$port"
ip netns add "$client"
ip -n "$client" link set lo up
ip link add "$host_if" type veth peer name eth0 netns "$client"
ip addr add "$host/24" dev "$host_if"
ip link set "$host_if" up
ip -n "$client" addr add "10.232.$subnet.2/24" dev eth0
ip -n "$client" link set eth0 up
ip -n "$client" route add default via "$host"

cat >"$work/handoff.json" <<JSON
{
  "components": [
    {
      "name": "web",
      "repo": "$repo",
      "tag": "v1",
      "pull": "never",
      "ports": [{ "external": $port, "container": 8080 }],
      "readyChecks": [{ "kind": "http", "port": 8080, "path": "/" }],
      "readyTimeout": 10000,
      "drainTimeout": 120000,
      "stopTimeout": 5
    }
  ]
}
JSON
handoff() { "$bin/handoff" --config "$work/handoff.json" --state-dir "$work/state" --table "$table" "$@"; }
netkit() { ip netns exec "$client" "$bin/handoff-netkit" "$@"; }

echo "== handoff start web"
handoff start web
handoff list

echo "== live load: 8 clients, a new connection per request, 9 s; a 150 MB download from v1"
netkit load --target "$host:$port" --connections 8 --duration-ms 9000 >"$work/load.json" &
load_pid=$!
(netkit download --target "$host:$port" --bytes 150000000 --rate 30000000 >"$work/download.json" || true
 now_ms >"$work/download.end") &
download_pid=$!
sleep 1.5

echo "== handoff update web --tag v2 (returns when v1 has drained and is gone)"
update_start=$(now_ms)
handoff update web --tag v2 | tee "$work/update.out"
update_end=$(now_ms)
wait "$load_pid" "$download_pid"

echo "== handoff list (after the update)"
handoff list
docker ps --filter "label=handoff.table=$table" --format '{{.Names}} {{.Image}} {{.Status}}' >"$work/containers"

python3 - "$work" "$update_start" "$update_end" <<'PY'
import json, re, sys
work, update_start, update_end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
load = json.load(open(f"{work}/load.json"))
download = json.load(open(f"{work}/download.json"))
download_end = int(open(f"{work}/download.end").read())
update = open(f"{work}/update.out").read()
switched = re.search(r"switched in (\d+) ms", update)
containers = open(f"{work}/containers").read().split("\n")
containers = [c for c in containers if c.strip()]
print()
print("== summary")
print(f"requests served:      v1 {load['by_backend'].get('v1', 0)}, v2 {load['by_backend'].get('v2', 0)}")
print(f"failed requests:      {load['failed']}")
print(f"download (150 MB):    served by {download['backend']}, {download['bytes']} bytes, "
      f"{'intact' if download['intact'] else 'CORRUPT'}")
print(f"switch:               {switched.group(1) if switched else '?'} ms (kernel transaction and state)")
print(f"update:               {(update_end - update_start) / 1000:.1f} s in all; returned "
      f"{update_end - download_end} ms after the download's connection closed")
print(f"containers left:      {', '.join(containers) if containers else 'none'}")
ok = (load["failed"] == 0 and download["intact"] and download["backend"] == "v1"
      and download["bytes"] == 150000000 and load["by_backend"].get("v2", 0) > 0
      and len(containers) == 1 and ":v2" in containers[0])
print("result:               " + ("zero-downtime update, old container removed" if ok else "FAILED"))
sys.exit(0 if ok else 1)
PY
