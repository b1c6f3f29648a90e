#!/usr/bin/env bash
# The fleet on real machines, set up as docs/fleet-setup.md tells an operator to: three Debian
# machines booted by Vagrant (docker provider, each with its own network namespace, nftables,
# conntrack, state and dockerd), handoff installed in each from its package; etcd on h1 with
# TLS and client certificates, auth enabled; each host's etcd user made by `grant-host` (its
# certificate's CN), the operator's by `grant-operator`; every host with a signers file and a
# policy; every operator command run from this host with the operator's certificate and
# `--sign`. With load from this host on the machines:
#
#   1. after `fleet setconfig --sign`, the agents on h1 and h2 start web v1 (traffic says so);
#   2. etcd refuses h1's certificate for spec/config, spec/rollout, spec/stops, a signature and
#      h2's keys (permission denied) and takes its own; a record stored by `setconfig --sign`,
#      read with h2's certificate, verifies with `ssh-keygen -Y verify` and h2's signers file;
#   3. `fleet update web --tag v2` (max 1 at a time): 0 failed requests, no two turns overlap,
#      every host then answers with v2;
#   4. etcd stopped for 20 s in steady state: no request fails, the agents resync after;
#   5. etcd frozen (SIGSTOP) for 20 s, twice the lease's TTL: no request fails; each agent says
#      within 15 s that it lost etcd; after SIGCONT each says "registered again" (its lease
#      expired) and a rollout made after the thaw is acted on by every agent's watch;
#   6. `fleet update web --tag never` (a version that runs but is never ready): exit 3 with the
#      first host's reason; that host created a container of it, no other host did; every host
#      still answers with the old version;
#   7. h3's agent, started only now, converges to v2 (the fleet's finished rollout);
#   8. `fleet update web --tag v1 --max-parallel 2` under load on all three: 0 failed, two hosts
#      updating at once and never three, every host then answers with v1;
#   9. the agent of the host taking its turn is SIGKILLed mid-update: the waiting `fleet update`
#      exits 3 with "host X was lost during its update" within the lease's TTL + 2 s;
#  10. `fleet stop web`, `start`, `kill`, and a start signed by `ssh-keygen -Y sign` (a second
#      operator's key) and put with etcdctl: every host reports each state, no web container
#      runs while stopped, each start serves;
#  11. a signed config with a privileged component, then one with an image outside the policy's
#      repositories: every host reports it `refused` with the policy's reason, no host creates a
#      container (dockerd's events), web keeps answering;
#  12. a config written with etcd's root certificate, unsigned (its signature deleted), that the
#      policy would allow: every host refuses it ("unsigned spec"), creates nothing, web keeps
#      answering; a signed config replaces it and the refusals are gone.
#
# The agents' own statuses are used to wait, never as proof of what serves: that is the load's
# report (each answer names its backend). FLEET_TEST_H3_TRUST=insecure|policy-only (see
# lib/fleet.sh) is a control under which steps 11 or 12 must fail.
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
began=$SECONDS

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

# Wait for the loads; each must have failed nothing, and been answered as BACKEND... say
# (check_load: `v1 v2` each answered some, `only:v2` nothing else answered).
check_loads() {
    local tag=$1 pid host
    shift
    for pid in "${loads[@]}"; do wait "$pid" || true; done
    loads=()
    for host in "${load_hosts[@]}"; do
        check_load "$work/load-$host-$tag.json" "$host: $tag" "$@"
    done
}

# Which version answers on each HOST: a short load, nothing failed, only VERSION answered.
answers_only() {
    local version=$1 host
    shift
    for host in "$@"; do
        "$bin/handoff-netkit" load --target "${ip[$host]}:80" --connections 2 --duration-ms 1000 \
            >"$work/answers-$host.json"
        check_load "$work/answers-$host.json" "$host answers" "only:$version"
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

# The images of the containers HOST's dockerd created from SINCE to UNTIL (epoch seconds), one
# a line: dockerd's own record, whatever the agents report.
created() {
    on "$1" docker events --since "$2" --until "$3" --filter type=container --filter event=create \
        --format '{{.Actor.Attributes.image}}'
}

# Fail if any host's dockerd created a container from SINCE to now.
nothing_created() {
    local since=$1 what=$2 until host images
    until=$(date +%s.%N)
    for host in "${hosts[@]}"; do
        images=$(created "$host" "$since" "$until")
        [[ -z $images ]] || fail "$what: $host created containers of $(tr '\n' ' ' <<<"$images")"
    done
}

# From `fleet list --json`, one line per host in HOSTS: `HOST STATE REASON` of COMPONENT, or
# with `refused:KEY`, `HOST REASON` of the host's refusal of that spec key.
listed() {
    local what=$1
    shift
    operator list --json >"$work/listed.json" 2>/dev/null || return 0
    python3 - "$work/listed.json" "$what" "$@" <<'PY'
import json, sys
listed, what, names = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3:]
hosts = {h["name"]: h for h in listed["hosts"]}
for name in names:
    host = hosts.get(name, {})
    if what.startswith("refused:"):
        print(name, host.get("refused", {}).get(what[len("refused:"):], "-"))
    else:
        component = next((c for c in host.get("components", []) if c["name"] == what), {})
        print(name, component.get("state", "-"), component.get("reason") or "-")
PY
}

# Wait (up to 60 s) until `listed WHAT` says EXPECTED (HOST replaced by each host) for every
# host.
wait_listed() {
    local what=$1 expected=$2 got= want host
    want=$(for host in "${hosts[@]}"; do echo "${expected//HOST/$host}"; done)
    for _ in $(seq 120); do
        got=$(listed "$what" "${hosts[@]}")
        [[ $got == "$want" ]] && return 0
        sleep 0.5
    done
    fail "$what: every host should report '$expected'; they report:
$got"
}

# The first line of the agent's journal on HOST since SINCE (epoch seconds) that matches
# PATTERN, as `SECONDS-AFTER-SINCE LINE`; nothing when there is none.
journal_first() {
    local host=$1 since=$2 pattern=$3
    on "$host" journalctl --no-pager -o short-unix -u handoff-fleet-agent --since "@${since%.*}" |
        python3 -c '
import re, sys
since, pattern = float(sys.argv[1]), re.compile(sys.argv[2])
for line in sys.stdin:
    stamp, _, text = line.partition(" ")
    try:
        at = float(stamp)
    except ValueError:
        continue
    if at >= since and pattern.search(text):
        print(f"{at - since:.1f} {text.strip()}")
        break
' "$since" "$pattern"
}

fleet_up
step "set up in $((SECONDS - began)) s"

# -- 1. setconfig: the agents start web -----------------------------------------------------------
step "1. fleet setconfig --sign; agents on h1 and h2 start web v1"
signed setconfig "$work/web.json" >&2
for host in h1 h2; do on "$host" systemctl start handoff-fleet-agent; done
wait_view "h1:alive:web:ready:v1" "h1 converged"
wait_view "h2:alive:web:ready:v1" "h2 converged"
answers_only v1 h1 h2
for host in h1 h2; do
    on "$host" journalctl --no-pager -o cat -u handoff-fleet-agent |
        grep -q "accepting: signed by /etc/handoff/fleet-signers, allowed by /etc/handoff/policy.json" ||
        fail "$host's agent does not say it requires signatures and its policy"
done

# -- 2. a host's credentials; a stored record verified by stock OpenSSH ----------------------------
step "2. etcd refuses h1's certificate for the spec and for h2's keys; a stored record verifies with ssh-keygen"
for key in spec/config spec/rollout spec/stops/web spec/signatures/config status/h2/web hosts/h2 rollout/halts/h2; do
    if denied=$(etcdctl_as "handoff-$fleet-h1" put -- "$(key_of "$key")" x 2>&1); then
        fail "h1's certificate wrote $key"
    fi
    grep -q 'permission denied' <<<"$denied" || fail "h1 writing $key: not a permission refusal: $denied"
done
# ... while its own keys are its to write (its member record, put back as it is).
member=$(etcdctl_as "handoff-$fleet-h1" get --print-value-only "$(key_of members/h1)")
etcdctl_as "handoff-$fleet-h1" put -- "$(key_of members/h1)" "$member" >/dev/null ||
    fail "h1's certificate cannot write its own member record"
# etcdctl ends a value with a newline of its own: the record is the bytes before it.
etcdctl_as "handoff-$fleet-h2" get --print-value-only "$(key_of spec/config)" | head -c -1 >"$work/config.record"
etcdctl_as "handoff-$fleet-h2" get --print-value-only "$(key_of spec/signatures/config)" >"$work/config.sig"
on h2 cat /etc/handoff/fleet-signers >"$work/h2-signers"
grep -qx "key $(key_of spec/config)" "$work/config.record" || fail "the stored record does not name its key: $(head -5 "$work/config.record")"
ssh-keygen -Y verify -f "$work/h2-signers" -I ci@fleet-test -n handoff-fleet -s "$work/config.sig" \
    <"$work/config.record" >&2 || fail "ssh-keygen -Y verify refused the record setconfig --sign stored"

# -- 3. a rollout under load ----------------------------------------------------------------------
step "3. fleet update web --tag v2 under load on both hosts"
start_loads 12000 v2
sleep 2
started=$SECONDS
signed update web --tag v2 >&2 || fail "fleet update web --tag v2"
step "the rollout took $((SECONDS - started)) s"
check_loads v2 v1 v2
check_turns "${hosts[@]}" 1 "$(date +%s -d '-1 hour')"
answers_only v2 h1 h2

# -- 4. etcd down for 20 s --------------------------------------------------------------------------
step "4. etcd stopped for 20 s under load"
start_loads 24000 etcd-down
sleep 1
on h1 systemctl stop etcd
sleep 20
on h1 systemctl start etcd
check_loads etcd-down only:v2
wait_view "h1:alive:web:ready:v2" "h1 after etcd returned"
wait_view "h2:alive:web:ready:v2" "h2 after etcd returned"

# -- 5. etcd frozen for twice the lease's TTL --------------------------------------------------------
step "5. etcd frozen (SIGSTOP) for 20 s under load: noticed, registered again, watched again"
start_loads 26000 frozen
sleep 1
frozen_at=$(date +%s.%N)
on h1 systemctl kill -s SIGSTOP etcd
sleep 20
thawed_at=$(date +%s.%N)
on h1 systemctl kill -s SIGCONT etcd
check_loads frozen only:v2
for host in h1 h2; do
    noticed=$(journal_first "$host" "$frozen_at" 'retrying')
    [[ -n $noticed ]] || fail "$host's agent never said it lost the frozen etcd"
    python3 -c 'import sys; sys.exit(float(sys.argv[1]) > 15)' "${noticed%% *}" ||
        fail "$host noticed the frozen etcd only ${noticed%% *} s after the freeze (15 s allowed): $noticed"
    step "$host noticed after ${noticed%% *} s: ${noticed#* }"
done
for host in h1 h2; do
    again=
    for _ in $(seq 60); do
        again=$(journal_first "$host" "$thawed_at" "the lease had expired; $host registered again")
        [[ -n $again ]] && break
        sleep 0.5
    done
    [[ -n $again ]] || fail "$host did not register again after the thaw: $(on "$host" journalctl --no-pager -o cat -u handoff-fleet-agent --since "@${frozen_at%.*}")"
    step "$host registered again ${again%% *} s after the thaw"
done
# No polling in the agents: a rollout completes only if every agent watches again.
started=$SECONDS
signed update web --tag v1 >&2 || fail "a rollout after the thaw did not complete"
step "a rollout after the thaw took $((SECONDS - started)) s"
answers_only v1 h1 h2

# -- 6. a bad version halts after the first host --------------------------------------------------
step "6. fleet update web --tag never (runs, never ready): halts after the first host, no other creates it"
since=$(date +%s.%N)
set +e
signed update web --tag never >"$work/bad.out" 2>"$work/bad.err"
rc=$?
set -e
((rc == 3)) || fail "a bad version: exit $rc, expected 3: $(cat "$work/bad.err")"
first=$(grep -oE 'halted: host h[0-9]+: ' "$work/bad.err" | grep -oE 'h[0-9]+' | head -1)
[[ -n $first ]] || fail "the halt names no host: $(cat "$work/bad.err")"
grep -qE "halted: host $first: .*web is not ready at [0-9.]+ after [0-9]+ ms" "$work/bad.err" ||
    fail "the halt does not say $first's new version was not ready: $(cat "$work/bad.err")"
until=$(date +%s.%N)
for host in "${hosts[@]}"; do
    made=$(created "$host" "$since" "$until" | grep -cx 'web:never' || true)
    if [[ $host == "$first" ]]; then
        ((made >= 1)) || fail "$first halted the rollout but its dockerd created no web:never container"
    else
        ((made == 0)) || fail "$host created $made web:never container(s) after $first halted the rollout"
    fi
done
answers_only v1 h1 h2
step "$(grep -o 'halted: .*' "$work/bad.err" | cut -c1-300)"

# -- 7. a late host converges ---------------------------------------------------------------------
step "7. h3 joins late: it converges to v2"
signed update web --tag v2 >&2 || fail "a rollout to v2 after the halt"
on h3 systemctl start handoff-fleet-agent
wait_view "h3:alive:web:ready:v2" "h3 converged"
answers_only v2 h1 h2 h3
if [[ -z ${FLEET_TEST_H3_TRUST:-} ]]; then
    on h3 journalctl --no-pager -o cat -u handoff-fleet-agent |
        grep -q "accepting: signed by /etc/handoff/fleet-signers, allowed by /etc/handoff/policy.json" ||
        fail "h3's agent does not say it requires signatures and its policy"
fi

# -- 8. two at a time across three hosts --------------------------------------------------------
step "8. fleet update web --tag v1 --max-parallel 2 under load on all three hosts"
load_hosts=(h1 h2 h3)
since=$(date +%s)
start_loads 8000 parallel
sleep 1
signed update web --tag v1 --max-parallel 2 >&2 || fail "fleet update --max-parallel 2"
check_loads parallel v1 v2
check_turns "${hosts[@]}" 2 "$since"
((turns_most == 2)) || fail "--max-parallel 2: the hosts updated one at a time"
answers_only v1 h1 h2 h3

# -- 9. the updating host's agent SIGKILLed -----------------------------------------------------
step "9. SIGKILL of the agent on the host taking its turn: the rollout halts within TTL + 2 s"
since=$(date +%s)
signed update web --tag slow >"$work/lost.out" 2>"$work/lost.err" &
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
signed update web --tag v1 >&2 || fail "back to v1 after the halt"
answers_only v1 h1 h2 h3

# -- 10. fleet-wide stop, kill and start ---------------------------------------------------------
web_containers() {
    local host count=0
    for host in "${hosts[@]}"; do
        count=$((count + $(on "$host" docker ps -q --filter ancestor=web:v1 | wc -l)))
    done
    echo "$count"
}
step "10. fleet stop / start / kill / start web (the last start signed by ssh-keygen -Y sign)"
signed stop web >&2 || fail "fleet stop web"
for host in "${hosts[@]}"; do wait_view "$host:alive:web:stopped:None" "$host stopped"; done
(($(web_containers) == 0)) || fail "web containers still run after fleet stop"
operator list >&2
signed start web >&2 || fail "fleet start web"
start_loads 2000 started
check_loads started only:v1
signed kill web >&2 || fail "fleet kill web"
for host in "${hosts[@]}"; do wait_view "$host:alive:web:killed:None" "$host killed"; done
(($(web_containers) == 0)) || fail "web containers still run after fleet kill"
# A start record made with stock tools: the envelope (fleet, key, a sequence above the kill's),
# signed by ssh-keygen with the second operator's key, both put with the operator's
# certificate. The agents verify it with the same signers file.
stop_key=$(key_of spec/stops/web)
sequence=$(etcdctl_as "handoff-$fleet-op-ci" get --print-value-only "$stop_key" | sed -n 's/^sequence //p')
printf 'handoff-fleet-record 1\nfleet %s\nkey %s\nsequence %s\n\n{"component": "web", "action": "start", "since_ms": %s}' \
    "$fleet" "$stop_key" "$((sequence + 1))" "$(date +%s%3N)" >"$work/start.record"
ssh-keygen -q -Y sign -n handoff-fleet -f "$work/operator-ops2" "$work/start.record" ||
    fail "ssh-keygen -Y sign"
etcdctl_as "handoff-$fleet-op-ci" put "$(key_of spec/signatures/stops/web)" <"$work/start.record.sig" >/dev/null
etcdctl_as "handoff-$fleet-op-ci" put "$stop_key" <"$work/start.record" >/dev/null
for host in "${hosts[@]}"; do wait_view "$host:alive:web:ready:v1" "$host started by the ssh-keygen-signed record"; done
start_loads 2000 restarted
check_loads restarted only:v1

# -- 11. what the policy forbids ------------------------------------------------------------------
# web.json with one more component NAME on port 81, from REPO, with FIELDS (JSON) merged in.
config_with() {
    python3 - "$work/web.json" "$@" <<'PY'
import json, sys
path, name, repo, fields = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
config = json.load(open(path))
extra = dict(config["components"][0], name=name, repo=repo, tag="v1",
             ports=[{"external": 81, "container": 8080}], **fields)
config["components"].append(extra)
print(json.dumps(config, indent=2))
PY
}
step "11. signed configs the policy forbids: a privileged component, an image outside its repositories"
config_with admin web '{"privileged": true}' >"$work/privileged.json"
config_with evil evil '{}' >"$work/evil.json"
for forbidden in "privileged admin privileged not allowed by /etc/handoff/policy.json" \
    "evil evil image evil not allowed by /etc/handoff/policy.json (allowed: web)"; do
    read -r file component reason <<<"$forbidden"
    since=$(date +%s.%N)
    signed setconfig "$work/$file.json" >&2 || fail "setconfig $file.json"
    wait_listed "$component" "HOST refused $reason"
    # A host that ignored its policy would have created the container by now.
    sleep 2
    nothing_created "$since" "the $file config"
    answers_only v1 "${hosts[@]}"
    step "every host refuses $component ($reason); nothing created; web answers with v1"
done

# -- 12. an unsigned config written with etcd's root certificate ----------------------------------
step "12. a config put with etcd's root certificate, unsigned: every host refuses it"
config_key=$(key_of spec/config)
sequence=$(etcdctl_as root get --print-value-only "$config_key" | sed -n 's/^sequence //p')
# What the policy allows (image web, port 81): only the missing signature stands in the way.
config_with intruder web '{}' >"$work/intruder.json"
printf 'handoff-fleet-record 1\nfleet %s\nkey %s\nsequence %s\n\n%s' \
    "$fleet" "$config_key" "$((sequence + 1))" "$(cat "$work/intruder.json")" >"$work/intruder.record"
since=$(date +%s.%N)
etcdctl_as root del "$(key_of spec/signatures/config)" >/dev/null
etcdctl_as root put "$config_key" <"$work/intruder.record" >/dev/null || fail "root's put"
wait_listed "refused:$config_key" "HOST unsigned spec at $config_key"
sleep 2
nothing_created "$since" "the unsigned config"
wait_listed intruder "HOST - -"
answers_only v1 "${hosts[@]}"
signed setconfig "$work/web.json" >&2 || fail "a signed config after the unsigned one"
wait_listed "refused:$config_key" "HOST -"
answers_only v1 "${hosts[@]}"
step "passed in $((SECONDS - began)) s"
