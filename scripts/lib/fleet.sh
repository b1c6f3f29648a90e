# Shared by fleet-test.sh and fleet-bench.sh: three Vagrant machines (h1 h2 h3) as a fleet —
# the package installed in each, web:v1, web:v2 and web:slow (ready 4 s after it starts)
# imported into each machine's dockerd, /etc/default/handoff pointing the agent at etcd on h1,
# the config at /etc/handoff/handoff.json. Source after sandbox.sh and machines.sh, call
# `machines_begin NAME` and set `trap fleet_cleanup EXIT`, then `fleet_up`.

export HANDOFF_MACHINES="h1 h2 h3"
hosts=(h1 h2 h3)
declare -A id ip
loads=()

fleet_cleanup() {
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

on() {
    local host=$1
    shift
    machine_exec "${id[$host]}" "$@"
}

# host:alive|lost:component:state:tag for every status `fleet list --json` reports, and
# rollout:tag:state.
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

# Wait (up to 60 s) until WANT is in the fleet view.
wait_view() {
    local want=$1 what=$2 view=
    for _ in $(seq 120); do
        view=$(fleet_view)
        [[ " $view " == *" $want "* ]] && return 0
        sleep 0.5
    done
    fail "$what: '$want' not in the fleet view: $view"
}

fleet_up() {
    step "building the package, the machine image and the web image"
    deb=$(bash scripts/package.sh | tail -1)
    export HANDOFF_MACHINE_IMAGE
    HANDOFF_MACHINE_IMAGE=$(bash scripts/machine-image.sh | tail -1)
    cargo build --release --quiet --bin handoff-netkit
    bin=$PWD/target/release
    netkit_rootfs_tar "$work/web.tar"

    step "vagrant up ${hosts[*]}"
    (cd vagrant && vagrant up --provider=docker >"$work/up.log" 2>&1) || { cat "$work/up.log" >&2; fail "vagrant up"; }
    local host version
    for host in "${hosts[@]}"; do
        id[$host]=$(machine_id "$host")
        ip[$host]=$(machine_ip "${id[$host]}")
    done
    for host in "${hosts[@]}"; do machine_wait_booted "${id[$host]}"; done
    for host in "${hosts[@]}"; do
        on "$host" bash /handoff/vagrant/provision.sh "/handoff/${deb#"$PWD"/}" >"$work/provision-$host.log" 2>&1 &
    done
    wait || fail "provisioning: $(cat "$work"/provision-*.log)"
    for host in "${hosts[@]}"; do
        for version in v1 v2; do
            on "$host" docker import -c "$(netkit_serve_cmd "$version")" - "web:$version" <"$work/web.tar" >/dev/null
        done
        # Ready only 4 s after it starts: a window to SIGKILL an agent in the middle of its update.
        on "$host" docker import -c 'CMD ["/bin/sh", "-c", "sleep 4; exec /usr/local/bin/handoff-netkit serve --listen 0.0.0.0:8080 --name slow"]' \
            - web:slow <"$work/web.tar" >/dev/null
        printf 'HANDOFF_ETCD=http://%s:2379\nHANDOFF_AGENT_ARGS=--host %s\n' "${ip[h1]}" "$host" |
            on "$host" sh -c 'cat >/etc/default/handoff'
        on "$host" sh -c 'cat >/etc/handoff/handoff.json' <examples/web.json
    done
    on h1 env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >"$work/etcd.log" 2>&1 ||
        { cat "$work/etcd.log" >&2; fail "etcd-server"; }
    on h1 sh -c "cat >>/etc/default/etcd" <<EOF2
ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379
ETCD_ADVERTISE_CLIENT_URLS=http://${ip[h1]}:2379
EOF2
    on h1 systemctl restart etcd
}
