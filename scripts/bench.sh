#!/usr/bin/env bash
# Measurements on a namespace sandbox (see scripts/lib/sandbox.sh), printed as a table:
#   switch   whole-process `handoff switch` time, p50/p99 (the ready check is one TCP connect
#            to a backend on the same bridge, ~0.3 ms), and the kernel transaction alone
#   drain    lag from the last old flow closing to `drain --wait` returning, p50/p99
#   memory   peak RSS of `switch` and of `drain --wait`
# Usage: sudo scripts/bench.sh [--quick]      (not part of scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=40
[[ ${1:-} == --quick ]] && rounds=10

# shellcheck source=lib/sandbox.sh
source scripts/lib/sandbox.sh
require_root_and_packages /usr/bin/time:time
cargo build --release --quiet --bins
bin=$PWD/target/release
sandbox_up "hobench$$"
cat >"$work/handoff.json" <<'JSON'
{"components": [{"name": "web", "ports": [{"external": 80, "container": 8080}],
                 "readyTimeout": 5000, "drainTimeout": 60000}]}
JSON
serve "$v1" v1
serve "$v2" v2
handoff switch web --to 10.0.1.11 >/dev/null 2>&1
handoff drain web --wait >/dev/null 2>&1 || true

echo "switch: $rounds rounds" >&2
: >"$work/switch.ms"
: >"$work/switch.kernel.ms"
for i in $(seq "$rounds"); do
    to=10.0.1.$((11 + i % 2))
    start=$(date +%s%N)
    out=$(handoff switch web --to "$to" 2>/dev/null)
    end=$(date +%s%N)
    echo $(((end - start) / 1000)) >>"$work/switch.ms"
    sed -n 's/.*in \([0-9]*\) ms.*/\1/p' <<<"$out" >>"$work/switch.kernel.ms"
done
handoff drain web --wait >/dev/null 2>&1 || true

echo "drain: $rounds rounds" >&2
: >"$work/drain.ms"
for i in $(seq "$rounds"); do
    to=10.0.1.$((11 + i % 2))
    coproc HOLD { ip netns exec "$client" "$bin/handoff-netkit" hold --target 10.0.2.1:80 --ms 400; }
    hold_pid=$HOLD_PID
    read -r _ <&"${HOLD[0]}"
    handoff switch web --to "$to" >/dev/null 2>&1
    (handoff drain web --wait --timeout 30 >/dev/null 2>&1; date +%s%N >"$work/drain.end") &
    drain_pid=$!
    wait "$hold_pid" || true
    hold_end=$(date +%s%N)
    wait "$drain_pid"
    echo $((($(cat "$work/drain.end") - hold_end) / 1000)) >>"$work/drain.ms"
done

echo "memory" >&2
/usr/bin/time -f %M -o "$work/rss.switch" ip netns exec "$gw" "$bin/handoff" \
    --config "$work/handoff.json" --state-dir "$work/state" switch web --to 10.0.1.11 >/dev/null 2>&1
coproc HOLD { ip netns exec "$client" "$bin/handoff-netkit" hold --target 10.0.2.1:80 --ms 1000; }
hold_pid=$HOLD_PID
read -r _ <&"${HOLD[0]}"
handoff switch web --to 10.0.1.12 >/dev/null 2>&1
/usr/bin/time -f %M -o "$work/rss.drain" ip netns exec "$gw" "$bin/handoff" \
    --config "$work/handoff.json" --state-dir "$work/state" drain web --wait --timeout 30 >/dev/null 2>&1
wait "$hold_pid" || true

python3 - "$work" <<'PY'
import sys
work = sys.argv[1]
rss_switch = int(open(f"{work}/rss.switch").read().split()[-1])
rss_drain = int(open(f"{work}/rss.drain").read().split()[-1])
def load(name):
    return sorted(int(x) for x in open(f"{work}/{name}") if x.strip())
def pct(values, p):
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]
switch, kernel, drain = load("switch.ms"), load("switch.kernel.ms"), load("drain.ms")
print(f"| figure | p50 | p99 | rounds |")
print(f"|---|---|---|---|")
print(f"| switch, whole process | {pct(switch, 50) / 1000:.1f} ms | {pct(switch, 99) / 1000:.1f} ms | {len(switch)} |")
print(f"| switch, kernel transaction | {pct(kernel, 50)} ms | {pct(kernel, 99)} ms | {len(kernel)} |")
print(f"| drain lag (last flow closed -> drain --wait returned) | {pct(drain, 50) / 1000:.1f} ms | {pct(drain, 99) / 1000:.1f} ms | {len(drain)} |")
print(f"| peak RSS, switch | {rss_switch / 1024:.1f} MB | | 1 |")
print(f"| peak RSS, drain --wait | {rss_drain / 1024:.1f} MB | | 1 |")
PY
