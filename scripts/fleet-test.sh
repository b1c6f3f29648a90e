#!/usr/bin/env bash
# The fleet on real machines: three Debian machines booted by Vagrant (docker provider, each
# with its own network namespace, nftables, conntrack, state and dockerd), handoff installed
# in each from its package, etcd on h1, `handoff-fleet-agent.service` on h1 and h2; with load
# from this host on every machine for the whole run:
#
#   1. after `fleet setconfig`, each agent starts web v1 on its host;
#   2. `fleet update web --tag v2` (max 1 at a time): 0 failed requests on any host, and the
#      agents' journals show no two turns overlapping;
#   3. etcd stopped for 20 s in steady state: no request fails, the agents resync after;
#   4. `fleet update web --tag missing`: exit 3 after the first host, the other untouched;
#   5. h3's agent, started only now, converges to v2 (the fleet's finished rollout);
#   6. `fleet update web --tag v1 --max-parallel 2` under load on all three: 0 failed, and the
#      agents' journals show two hosts updating at once, never three;
#   7. the agent of the host taking its turn is SIGKILLed mid-update: the waiting `fleet update`
#      exits 3 with "host X was lost during its update" within the lease's TTL + 2 s;
#   8. `fleet stop web`, `fleet start web`, `fleet kill web`, `fleet start web`: every host
#      reports each state, no web container runs on any while stopped, and each start serves.
#
# Run by scripts/test.sh; root only. Everything is removed on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

# shellcheck source=lib/sandbox.sh
source scripts/lib/sandbox.sh
# shellcheck source=lib/machines.sh
source scripts/lib/machines.sh
# shellcheck source=lib/fleet.sh
source scripts/lib/fleet.sh
require_root_and_packages debootstrap:debootstrap
ensure_dockerd

machines_begin fleet-test
trap fleet_cleanup EXIT
bin=$repo/target/release

load_hosts=(h1 h2)
start_loads() {
    local ms=$1 tag=$2 host
    loads=()
    for host in "${load_hosts[@]}"; do
        "$bin/handoff-netkit" load --target "${ip[$host]}:80" --connections 2 \
            --duration-ms "$ms" >"$work/load-$host-$tag.json" &
        loads+=($!)
    done
}

check_loads() {
    local tag=$1 pid host
    for pid in "${loads[@]}"; do wait "$pid" || true; done
    loads=()
    for host in "${load_hosts[@]}"; do
        check_load "$work/load-$host-$tag.json" "$host: $tag"
    done
}

# The agents' event history since SINCE (epoch seconds): every turn taken and ended, in the
# order of the etcd revisions the agents report for them; fail unless at most MAX hosts were
# updating at once, and say how many were. Not journald's times: journald stamps a line when
# it reads it, and a late one once put h2's end 49 ms after h1's start in the very slot h2 had
# just freed (a CI run failed on it: "3 hosts were updating at once").
check_turns() {
    local max=${*: -2:1} since=${*: -1} turns most
    local names=("${@:1:$#-2}")
    turns=$(for host in "${names[@]}"; do
        on "$host" journalctl --no-pager -o cat -u handoff-fleet-agent --since "@$since" |
            sed -nE -e "s/.*my turn \(slot [0-9]+, etcd revision ([0-9]+)\).*/\1 $host begin/p" \
                -e "s/.*my turn ended \(etcd revision ([0-9]+)\).*/\1 $host end/p"
    done | sort -n)
    echo "$turns" | sed 's/^/    /' >&2
    most=$(awk '$3 == "begin" {n++; if (n > m) m = n} $3 == "end" {n--} END {print m + 0}' <<<"$turns")
    ((most <= max)) || fail "$most hosts were updating at once (at most $max allowed): $turns"
    step "at most $most host(s) updating at once (allowed: $max)"
    turns_most=$most
}

fleet_up

# -- 1. setconfig: the agents start web -----------------------------------------------------------
step "1. fleet setconfig; agents on h1 and h2 start web v1"
on h1 handoff fleet setconfig /etc/handoff/handoff.json >&2
for host in h1 h2; do on "$host" systemctl start handoff-fleet-agent; done
wait_view "h1:alive:web:ready:v1" "h1 converged"
wait_view "h2:alive:web:ready:v1" "h2 converged"

# -- 2. a rollout under load ----------------------------------------------------------------------
step "2. fleet update web --tag v2 under load on both hosts"
start_loads 12000 v2
sleep 2
started=$SECONDS
on h1 handoff fleet update web --tag v2 >&2 || fail "fleet update web --tag v2"
step "the rollout took $((SECONDS - started)) s"
check_loads v2
check_turns "${hosts[@]}" 1 "$(date +%s -d '-1 hour')"

# -- 3. etcd down for 20 s --------------------------------------------------------------------------
step "3. etcd stopped for 20 s under load"
start_loads 24000 etcd-down
sleep 1
on h1 systemctl stop etcd
sleep 20
on h1 systemctl start etcd
check_loads etcd-down
wait_view "h1:alive:web:ready:v2" "h1 after etcd returned"
wait_view "h2:alive:web:ready:v2" "h2 after etcd returned"

# -- 4. a bad version halts after the first host --------------------------------------------------
step "4. fleet update web --tag missing: halts after the first host"
set +e
on h1 handoff fleet update web --tag missing >"$work/bad.out" 2>"$work/bad.err"
rc=$?
set -e
((rc == 3)) || fail "a bad version: exit $rc, expected 3: $(cat "$work/bad.err")"
grep -q "halted" "$work/bad.err" || fail "no halt reason: $(cat "$work/bad.err")"
view=$(fleet_view)
[[ $(grep -o ':web:ready:v2' <<<"$view" | wc -l) == 2 ]] ||
    fail "the hosts must still serve v2 after the halt: $view"
step "halted: $(tail -1 "$work/bad.err")"

# -- 5. a late host converges ---------------------------------------------------------------------
step "5. h3 joins late: it converges to v2"
on h1 handoff fleet update web --tag v2 >&2 || fail "resuming v2"
on h3 systemctl start handoff-fleet-agent
wait_view "h3:alive:web:ready:v2" "h3 converged"
"$bin/handoff-netkit" load --target "${ip[h3]}:80" --connections 2 --duration-ms 1000 >"$work/h3.json"
grep -q '"v2"' "$work/h3.json" || fail "h3 does not serve v2: $(cat "$work/h3.json")"

# -- 6. two at a time across three hosts --------------------------------------------------------
step "6. fleet update web --tag v1 --max-parallel 2 under load on all three hosts"
load_hosts=(h1 h2 h3)
since=$(date +%s)
start_loads 8000 parallel
sleep 1
on h1 handoff fleet update web --tag v1 --max-parallel 2 >&2 || fail "fleet update --max-parallel 2"
check_loads parallel
check_turns "${hosts[@]}" 2 "$since"
((turns_most == 2)) || fail "--max-parallel 2: the hosts updated one at a time"

# -- 7. the updating host's agent SIGKILLed -----------------------------------------------------
step "7. SIGKILL of the agent on the host taking its turn: the rollout halts within TTL + 2 s"
since=$(date +%s)
on h1 handoff fleet update web --tag slow >"$work/lost.out" 2>"$work/lost.err" &
waiting=$!
victim=
for _ in $(seq 100); do
    for host in "${hosts[@]}"; do
        if on "$host" journalctl --no-pager -u handoff-fleet-agent --since "@$since" |
            grep -qE 'my turn \(slot 0, etcd revision [0-9]+\) in the rollout to slow'; then
            victim=$host
        fi
    done
    [[ -n $victim ]] && break
    sleep 0.1
done
[[ -n $victim ]] || fail "no host took a turn in the rollout to slow: $(cat "$work/lost.err")"
on "$victim" systemctl kill -s SIGKILL handoff-fleet-agent
killed_at=$EPOCHREALTIME
set +e
wait "$waiting"
rc=$?
set -e
halted_ms=$(python3 -c "print(round(($EPOCHREALTIME - $killed_at) * 1000))")
((rc == 3)) || fail "after the SIGKILL: exit $rc, expected 3: $(cat "$work/lost.err")"
grep -q "host $victim was lost during its update" "$work/lost.err" ||
    fail "no 'lost' reason: $(cat "$work/lost.err")"
((halted_ms <= 12000)) || fail "halted $halted_ms ms after the SIGKILL (TTL 10 s + 2 s)"
step "halted $halted_ms ms after the SIGKILL of $victim's agent: $(tail -1 "$work/lost.err")"
# systemd starts the agent again (Restart=always); it registers once the old lease is gone.
wait_view "$victim:alive:web:ready:v1" "$victim's agent back"
# The slow container the killed update left behind is retired by the agent that came back.
for _ in $(seq 60); do
    [[ -z $(on "$victim" docker ps -q --filter ancestor=web:slow) ]] && break
    sleep 0.5
done
[[ -z $(on "$victim" docker ps -q --filter ancestor=web:slow) ]] ||
    fail "$victim: the killed update's container was left running"
on h1 handoff fleet update web --tag v1 >&2 || fail "back to v1 after the halt"

# -- 8. fleet-wide stop, kill and start ---------------------------------------------------------
web_containers() {
    local host count=0
    for host in "${hosts[@]}"; do
        count=$((count + $(on "$host" docker ps -q --filter ancestor=web:v1 | wc -l)))
    done
    echo "$count"
}
step "8. fleet stop / start / kill / start web"
on h1 handoff fleet stop web >&2 || fail "fleet stop web"
for host in "${hosts[@]}"; do wait_view "$host:alive:web:stopped:None" "$host stopped"; done
(($(web_containers) == 0)) || fail "web containers still run after fleet stop"
on h1 handoff fleet list >&2
on h1 handoff fleet start web >&2 || fail "fleet start web"
start_loads 2000 started
check_loads started
on h1 handoff fleet kill web >&2 || fail "fleet kill web"
for host in "${hosts[@]}"; do wait_view "$host:alive:web:killed:None" "$host killed"; done
(($(web_containers) == 0)) || fail "web containers still run after fleet kill"
on h1 handoff fleet start web >&2 || fail "fleet start web after the kill"
start_loads 2000 restarted
check_loads restarted
step "passed"
