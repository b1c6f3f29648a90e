#!/usr/bin/env bash
# The fleet's figures, on the three Vagrant machines scripts/fleet-test.sh boots (etcd on h1,
# `handoff-fleet-agent.service` on each, shipped settings: health rounds every 10 s):
#
#   * reaction: from the start of the operator's signed `fleet update` (run on this host over
#     TLS, as lib/fleet.sh sets the fleet up; a timestamp taken right before it) to the first
#     host creating its new container (dockerd's `create` event, in ns), over ROUNDS rollouts
#     alternating v1 and v2; target p50 <= 200 ms (gantryd polled every 30 s);
#   * coordination: a rollout of the three hosts (one at a time) against the sum of three
#     local `handoff update --no-wait` on the same hosts with the agents stopped (both are
#     done at the switch; old containers drain outside the timing); medians;
#   * idle agent: CPU over IDLE seconds (the time on a CPU of all the agent's threads, in ns,
#     from /proc/PID/task/*/schedstat: clock ticks are too coarse for 0.1 %) and memory
#     (VmRSS, VmHWM) on each host; targets <= 0.1 % of a core, RSS <= 30 MB.
#
#   sudo scripts/bench.sh --fleet [--quick]     (or this script directly)
#
# Prints a Markdown table; exit 1 when a target is missed. Root only; everything is removed on
# exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=lib/sandbox.sh
source scripts/lib/sandbox.sh
# shellcheck source=lib/machines.sh
source scripts/lib/machines.sh
# shellcheck source=lib/fleet.sh
source scripts/lib/fleet.sh
require_root_and_packages debootstrap:debootstrap
ensure_dockerd

rounds=10 idle=60
if [[ ${1:-} == --quick ]]; then rounds=4 idle=20; fi

machines_begin fleet-bench
trap fleet_cleanup EXIT
fleet_up
signed setconfig "$work/web.json" >/dev/null
for host in "${hosts[@]}"; do on "$host" systemctl start handoff-fleet-agent; done
for host in "${hosts[@]}"; do wait_view "$host:alive:web:ready:v1" "$host converged"; done

# Nanoseconds since the epoch, in machine HOST (the machines share this host's clock).
now_ns() { on "$1" date +%s%N; }

# -- reaction and rollout time ----------------------------------------------------------------------
step "$rounds rollouts of web across ${hosts[*]}, one host at a time"
: >"$work/reaction" && : >"$work/rollout"
tag=v1
for round in $(seq "$rounds"); do
    tag=$([[ $tag == v1 ]] && echo v2 || echo v1)
    # The operator's command, from this host (the machines share its clock), signed.
    t0=$(date +%s%N)
    signed update web --tag "$tag" >/dev/null 2>&1 || fail "round $round: fleet update web --tag $tag"
    t1=$(date +%s%N)
    first=
    for host in "${hosts[@]}"; do
        for created in $(on "$host" docker events --since "$((t0 / 1000000000))" \
            --until "$(date +%s)" --filter event=create --filter "image=web:$tag" \
            --format '{{.TimeNano}}'); do
            ((created >= t0)) || continue
            if [[ -z $first ]] || ((created < first)); then first=$created; fi
        done
    done
    [[ -n $first ]] || fail "round $round: no host created a web:$tag container"
    echo $(((first - t0) / 1000)) >>"$work/reaction"
    echo $(((t1 - t0) / 1000)) >>"$work/rollout"
    step "round $round: to $tag: first container created after $(((first - t0) / 1000000)) ms, done after $(((t1 - t0) / 1000000)) ms"
done

# -- the same hosts updated locally, one after the other ------------------------------------------
step "$rounds rounds of three local updates (agents stopped)"
for host in "${hosts[@]}"; do
    on "$host" systemctl stop handoff-fleet-agent
    # The local CLI reads its config from the default file; the fleet's config, as stored.
    put_file "$host" /etc/handoff/handoff.json 0644 <"$work/web.json"
done
: >"$work/local"
for round in $(seq "$rounds"); do
    tag=$([[ $tag == v1 ]] && echo v2 || echo v1)
    total=0
    for host in "${hosts[@]}"; do
        times=$(on "$host" sh -c "date +%s%N; handoff update web --tag $tag --no-wait >/dev/null 2>&1 || exit 1; date +%s%N") ||
            fail "round $round: $host: handoff update web --tag $tag: $(on "$host" handoff update web --tag "$tag" --no-wait 2>&1)"
        total=$((total + $(tail -1 <<<"$times") - $(head -1 <<<"$times")))
        on "$host" handoff drain web --wait --timeout 30 >/dev/null 2>&1 || true
    done
    echo $((total / 1000)) >>"$work/local"
    step "round $round: three local updates to $tag took $((total / 1000000)) ms together"
done

# -- idle agents ----------------------------------------------------------------------------------
step "idle agents: ${idle} s"
for host in "${hosts[@]}"; do on "$host" systemctl start handoff-fleet-agent; done
for host in "${hosts[@]}"; do wait_view "$host:alive:web:ready:$tag" "$host back"; done
sleep 5
declare -A pid cpu0
# ns on a CPU, all threads of the agent
cpu_ns() { on "$1" sh -c "cat /proc/${pid[$1]}/task/*/schedstat" | awk '{ns += $1} END {printf "%d", ns}'; }
for host in "${hosts[@]}"; do
    pid[$host]=$(on "$host" systemctl show -p MainPID --value handoff-fleet-agent)
    cpu0[$host]=$(cpu_ns "$host")
done
started=$(date +%s%N)
sleep "$idle"
elapsed_ms=$((($(date +%s%N) - started) / 1000000))
: >"$work/idle"
for host in "${hosts[@]}"; do
    cpu1=$(cpu_ns "$host")
    memory=$(on "$host" awk '/^VmRSS|^VmHWM/ {printf "%s ", $2}' "/proc/${pid[$host]}/status")
    echo "$host $((cpu1 - cpu0[$host])) $memory" >>"$work/idle"
done

python3 - "$work" "$rounds" "$elapsed_ms" <<'PY'
import statistics, sys
work, rounds, elapsed_ms = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def micros(name):
    return sorted(int(line) / 1000 for line in open(f"{work}/{name}") if line.strip())
def pct(values, p):
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]
reaction, rollout, local = micros("reaction"), micros("rollout"), micros("local")
idle = [line.split() for line in open(f"{work}/idle")]
ok = True
def row(figure, value, target="", met=None):
    global ok
    ok = ok and met is not False
    print(f"| {figure} | {value} | {target} | {'' if met is None else 'yes' if met else 'NO'} |")
print(f"\nhandoff fleet bench: 3 machines (Vagrant, docker provider) on one host, "
      f"{rounds} rounds, idle {elapsed_ms / 1000:.0f} s\n")
print("| figure | measured | target | met |")
print("|---|---|---|---|")
row("reaction, `fleet update` to the first new container, p50 / p99",
    f"{pct(reaction, 50):.0f} / {pct(reaction, 99):.0f} ms", "p50 <= 200 ms",
    pct(reaction, 50) <= 200)
fleet, alone = statistics.median(rollout), statistics.median(local)
row("rollout of 3 hosts, one at a time (median)", f"{fleet:.0f} ms")
row("3 local `update --no-wait`, one after the other (median)", f"{alone:.0f} ms")
row("coordination overhead (rollout - local sum)",
    f"{fleet - alone:+.0f} ms ({fleet / alone:.2f}x)")
# VmHWM and VmRSS, in the order /proc/PID/status lists them.
for host, ns, hwm, rss in ((i[0], int(i[1]), int(i[2]), int(i[3])) for i in idle):
    cpu = ns / 1e6 / elapsed_ms * 100
    row(f"idle agent on {host}: CPU", f"{cpu:.3f} % of a core", "<= 0.1 %", cpu <= 0.1)
    row(f"idle agent on {host}: RSS (peak since it started)",
        f"{rss / 1024:.1f} MB ({hwm / 1024:.1f} MB)", "<= 30 MB", hwm / 1024 <= 30)
sys.exit(0 if ok else 1)
PY
