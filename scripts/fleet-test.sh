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
#   5. h3's agent, started only now, converges to v2 (the fleet's finished rollout).
#
# Run by scripts/test.sh; root only. Everything is removed on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

# shellcheck source=lib/sandbox.sh
source scripts/lib/sandbox.sh
# shellcheck source=lib/machines.sh
source scripts/lib/machines.sh
require_root_and_packages debootstrap:debootstrap
ensure_dockerd

machines_begin fleet-test
export HANDOFF_MACHINES="h1 h2 h3"
hosts=(h1 h2 h3)
declare -A id ip
loads=()

cleanup() {
    local rc=$?
    for pid in "${loads[@]}"; do kill "$pid" 2>/dev/null || true; done
    if ((rc != 0)); then
        for host in "${hosts[@]}"; do
            [[ -n ${id[$host]:-} ]] || continue
            echo "---- $host: handoff journal ----" >&2
            docker exec "${id[$host]}" journalctl --no-pager -o short-monotonic -u 'handoff*' 2>&1 | tail -25 >&2 || true
        done
    fi
    (cd vagrant && vagrant destroy -f >/dev/null 2>&1) || true
    for host in "${hosts[@]}"; do
        [[ -n ${id[$host]:-} ]] && docker rm -f "${id[$host]}" >/dev/null 2>&1
    done
    rm -rf "$work"
    stop_dockerd
    exit "$rc"
}
trap cleanup EXIT

on() {
    local host=$1
    shift
    machine_exec "${id[$host]}" "$@"
}

# host:component:state:tag for every status `fleet list --json` reports, and the rollout.
fleet_view() {
    on h1 handoff fleet list --json >"$work/fleet.json" 2>/dev/null || return 0
    python3 - "$work/fleet.json" <<'PY'
import json, sys
listed = json.load(open(sys.argv[1]))
parts = [f"{h['name']}:{'alive' if h['alive'] else 'lost'}:{c['name']}:{c['state']}:{c['tag']}"
         for h in listed["hosts"] for c in h["components"]]
rollout = listed.get("rollout")
if rollout:
    parts.append(f"rollout:{rollout['tag']}:{rollout['state']}")
print(" ".join(parts))
PY
}

wait_view() {
    local want=$1 what=$2 view=
    for _ in $(seq 120); do
        view=$(fleet_view)
        [[ " $view " == *" $want "* ]] && return 0
        sleep 0.5
    done
    fail "$what: '$want' not in the fleet view: $view"
}

start_loads() {
    local ms=$1 tag=$2 host
    loads=()
    for host in h1 h2; do
        "$repo/target/release/handoff-netkit" load --target "${ip[$host]}:80" --connections 2 \
            --duration-ms "$ms" >"$work/load-$host-$tag.json" &
        loads+=($!)
    done
}

check_loads() {
    local tag=$1 pid host
    for pid in "${loads[@]}"; do wait "$pid" || true; done
    loads=()
    for host in h1 h2; do
        check_load "$work/load-$host-$tag.json" "$host: $tag"
    done
}

# -- three machines, the package in each, etcd on h1 --------------------------------------------
step "building the package, the machine image and the web image"
deb=$(bash scripts/package.sh | tail -1)
export HANDOFF_MACHINE_IMAGE
HANDOFF_MACHINE_IMAGE=$(bash scripts/machine-image.sh | tail -1)
bin=$repo/target/release
cargo build --release --quiet --bin handoff-netkit
netkit_rootfs_tar "$work/web.tar"

step "vagrant up h1 h2 h3"
(cd vagrant && vagrant up --provider=docker >"$work/up.log" 2>&1) || { cat "$work/up.log" >&2; fail "vagrant up"; }
for host in "${hosts[@]}"; do
    id[$host]=$(machine_id "$host")
    ip[$host]=$(machine_ip "${id[$host]}")
done
for host in "${hosts[@]}"; do machine_wait_booted "${id[$host]}"; done
for host in "${hosts[@]}"; do
    on "$host" bash /handoff/vagrant/provision.sh "/handoff/${deb#"$repo"/}" >"$work/provision-$host.log" 2>&1 &
done
wait || fail "provisioning: $(cat "$work"/provision-*.log)"
for host in "${hosts[@]}"; do
    for version in v1 v2; do
        on "$host" docker import -c "$(netkit_serve_cmd "$version")" - "web:$version" <"$work/web.tar" >/dev/null
    done
    printf 'HANDOFF_ETCD=http://%s:2379\nHANDOFF_AGENT_ARGS=--host %s\n' "${ip[h1]}" "$host" |
        on "$host" sh -c 'cat >/etc/default/handoff'
done
on h1 env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >"$work/etcd.log" 2>&1 ||
    { cat "$work/etcd.log" >&2; fail "etcd-server"; }
on h1 sh -c "cat >>/etc/default/etcd" <<EOF
ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379
ETCD_ADVERTISE_CLIENT_URLS=http://${ip[h1]}:2379
EOF
on h1 systemctl restart etcd

# -- 1. setconfig: the agents start web -----------------------------------------------------------
step "1. fleet setconfig; agents on h1 and h2 start web v1"
on h1 sh -c 'cat >/etc/handoff/handoff.json' <examples/web.json
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
turns=$(for host in h1 h2; do
    on "$host" journalctl --no-pager -o short-unix -u handoff-fleet-agent |
        awk -v h="$host" '/my turn/ {print $1, h, "begin"} /now serves/ {print $1, h, "end"}'
done | sort -n)
echo "$turns" | sed 's/^/    /' >&2
awk '$3 == "begin" {n++; if (n > 1) bad = 1} $3 == "end" {n--} END {exit bad}' <<<"$turns" ||
    fail "two hosts were updating at once: $turns"

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
step "passed"
