#!/usr/bin/env bash
# The real-host test: a Debian bookworm machine booted by `vagrant up` (docker provider,
# systemd as PID 1, /proc/sys read-only), handoff installed in it from its Debian package with
# apt, and then, with load coming from *outside* the machine (this host, on the machine's
# address):
#
#   1. `systemctl start handoff-update@web` deploys v1, then v2 under load: 0 failed
#      requests, the old container gone, the read-only /proc/sys warned about once;
#   2. `vagrant reload` (a clean reboot) and a power cut (`docker kill`, then `vagrant up`):
#      handoff-restore.service brings web back with no manual step, each time;
#   3. handoff-monitor@web replaces a killed container; handoff-fleet-agent.service, against an
#      etcd in the machine, registers the host and reports web without starting it twice;
#   4. the package reinstalled under load (0 failed; the monitor restarted), `apt-get remove`
#      (units stopped, no table or rule, state and containers kept; reinstalling and restore
#      route again), `apt-get purge` (nor state, nor enabled units);
#   5. `vagrant destroy` leaves nothing on this host.
#
# Run by scripts/test.sh; root only. Installs vagrant and debootstrap when missing; the
# machine's image is cached (scripts/machine-image.sh). Everything it made is removed on exit,
# also when it fails (after printing the machine's journal).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

# shellcheck source=lib/sandbox.sh
source scripts/lib/sandbox.sh
# shellcheck source=lib/machines.sh
source scripts/lib/machines.sh
require_root_and_packages debootstrap:debootstrap
ensure_dockerd

machines_begin vagrant-test
id=

diagnose() {
    [[ -n $id ]] && docker inspect "$id" >/dev/null 2>&1 || return 0
    echo "---- the machine's handoff journal, failed units, containers, ruleset ----" >&2
    docker exec "$id" journalctl --no-pager -o short-monotonic -u 'handoff*' 2>&1 | tail -60 >&2 || true
    docker exec "$id" systemctl --failed --no-legend >&2 || true
    docker exec "$id" docker ps -a >&2 || true
    docker exec "$id" nft list ruleset 2>&1 | head -60 >&2 || true
}

cleanup() {
    local rc=$?
    ((rc != 0)) && diagnose
    if [[ -n $id ]] && docker inspect "$id" >/dev/null 2>&1; then
        (cd vagrant && vagrant destroy -f >/dev/null 2>&1) || docker rm -f "$id" >/dev/null 2>&1 || true
    fi
    [[ -n ${load_pid:-} ]] && kill "$load_pid" 2>/dev/null
    rm -rf "$work"
    stop_dockerd
    exit "$rc"
}
trap cleanup EXIT

in_machine() { machine_exec "$id" "$@"; }

# After a boot: handoff-restore.service ran and routed web again (the ruleset was gone).
check_restored() {
    wait_unit_active handoff-restore.service
    local journal
    journal=$(in_machine journalctl --no-pager -o cat -b -u handoff-restore.service)
    grep -q 'web: new connections now go to' <<<"$journal" ||
        fail "handoff-restore did not route web again: $journal"
}

# Wait for a oneshot unit with RemainAfterExit to be active; fail if it failed.
wait_unit_active() {
    local unit=$1 state=
    for _ in $(seq 240); do
        state=$(in_machine systemctl is-active "$unit" 2>/dev/null || true)
        [[ $state == active || $state == failed ]] && break
        sleep 0.5
    done
    [[ $state == active ]] || fail "$unit is $state"
}

# Requests from this host to the machine's port 80 for MS milliseconds, in the background;
# the report goes to FILE.
start_load() {
    local ms=$1 file=$2
    "$bin/handoff-netkit" load --target "$(machine_ip "$id"):80" --connections 4 --duration-ms "$ms" >"$file" &
    load_pid=$!
}

# Short load that must be answered by BACKEND only (after a reboot, after a replacement).
check_served_only_by() {
    local backend=$1 what=$2
    "$bin/handoff-netkit" load --target "$(machine_ip "$id"):80" --connections 2 --duration-ms 2000 >"$work/short.json"
    check_load "$work/short.json" "$what" "only:$backend"
}

running_web_containers() {
    in_machine docker ps --filter ancestor="$1" --format '{{.ID}}'
}

# -- What the machine gets: the package, the image, the test's web images ---------------------
step "building the package, the machine image and the web image"
deb=$(bash scripts/package.sh | tail -1)
image=$(bash scripts/machine-image.sh | tail -1)
export HANDOFF_MACHINE_IMAGE=$image
bin=$repo/target/release
cargo build --release --quiet --bin handoff-netkit
netkit_rootfs_tar "$work/web.tar"
cgroups_before=$(find /sys/fs/cgroup -maxdepth 3 -type d -name 'docker' -exec ls {} \; 2>/dev/null | sort | md5sum)
host_ruleset_before=$(nft list ruleset 2>/dev/null | grep -v counter | md5sum)

# -- vagrant up, then the package installed with apt --------------------------------------------
step "vagrant up --provider=docker ($image)"
(cd vagrant && vagrant up --provider=docker >"$work/up.log" 2>&1) || { cat "$work/up.log" >&2; fail "vagrant up"; }
id=$(machine_id default)
machine_wait_booted "$id"
in_machine sh -c 'echo 1 >/proc/sys/net/netfilter/nf_conntrack_events' 2>/dev/null &&
    fail "/proc/sys is writable in the machine: the read-only case would go untested"
in_machine sh -c '! command -v nft && ! command -v dockerd' >/dev/null ||
    fail "the machine image already has nftables or Docker: apt would not be shown resolving them"
in_machine bash /handoff/vagrant/provision.sh "/handoff/${deb#"$repo"/}" >&2
for version in v1 v2; do
    in_machine docker import -c "$(netkit_serve_cmd "$version")" - "web:$version" <"$work/web.tar" >/dev/null
done
in_machine systemctl is-enabled --quiet handoff-restore.service ||
    fail "the package did not enable handoff-restore.service"
for file in /usr/sbin/handoff /usr/share/man/man8/handoff.8.gz /usr/share/bash-completion/completions/handoff \
    /usr/share/zsh/vendor-completions/_handoff /usr/share/fish/vendor_completions.d/handoff.fish \
    /usr/share/doc/handoff/examples/handoff.json; do
    in_machine test -f "$file" || fail "the package did not install $file"
done
in_machine sh -c '! command -v handoff-netkit' >/dev/null || fail "the test tool is in the package"

# A unit that leaves a mark only when the machine shuts down cleanly: tells a clean reboot
# from a power cut below.
in_machine sh -c 'cat >/etc/systemd/system/shutdown-mark.service && systemctl daemon-reload && systemctl enable --now --quiet shutdown-mark.service' <<'UNIT'
[Unit]
Description=mark a clean shutdown
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
ExecStop=/bin/touch /var/lib/clean-shutdown
[Install]
WantedBy=multi-user.target
UNIT

# -- 1. deploy v1, then update to v2 under load from this host ----------------------------------
step "1. handoff-update@web: v1, then v2 under load from outside the machine"
in_machine sh -c 'cat >/etc/handoff/handoff.json' <examples/web.json
in_machine systemctl start handoff-update@web
check_served_only_by v1 "v1 deployed by the unit"
in_machine sed -i 's/"tag": "v1"/"tag": "v2"/' /etc/handoff/handoff.json
cursor=$(in_machine journalctl -q -n 0 --show-cursor | sed -n 's/^-- cursor: //p')
# The packaged binary is built without the test-only switches (the test-hooks feature): set
# for every unit, they must change nothing — the update below would die at its switch otherwise.
in_machine sh -c '! grep -a -q -e HANDOFF_CRASH_AT -e HANDOFF_UNSAFE_SKIP /usr/sbin/handoff' ||
    fail "the packaged binary carries the test-only switches"
in_machine systemctl set-environment HANDOFF_CRASH_AT=before-switch HANDOFF_UNSAFE_SKIP_CONNTRACK_CLEANUP=1
start_load 9000 "$work/update.json"
sleep 2
in_machine systemctl start handoff-update@web
wait "$load_pid" || true
load_pid=
in_machine systemctl unset-environment HANDOFF_CRASH_AT HANDOFF_UNSAFE_SKIP_CONNTRACK_CLEANUP
check_load "$work/update.json" "update v1 -> v2 under load" v1 v2
[[ -z $(running_web_containers web:v1) ]] && [[ -z $(in_machine docker ps -a -q --filter ancestor=web:v1) ]] ||
    fail "the v1 container is still there: $(in_machine docker ps -a)"
journal=$(in_machine journalctl --no-pager -o cat --after-cursor "$cursor" -u handoff-update@web)
warnings=$(grep -c 'warning: .*nf_conntrack_events' <<<"$journal" || true)
((warnings == 1)) || fail "expected one warning about the read-only nf_conntrack_events, got $warnings: $journal"
grep -q 'switched' <<<"$journal" || fail "no switch line in the journal: $journal"
# The unit keeps only CAP_NET_ADMIN and CAP_NET_RAW: the container's bridge port must get its
# hairpin mode without entering the container's namespace.
! grep -q 'cannot reach its own component' <<<"$journal" ||
    fail "self-hairpin failed under the unit: $journal"
step "update journal (read-only /proc/sys: one warning):"
sed 's/^/    /' <<<"$journal" | tail -12 >&2

# -- 2. a clean reboot, then a power cut: handoff-restore.service brings web back ---------------
step "2. vagrant reload (a clean reboot)"
in_machine rm -f /var/lib/clean-shutdown
(cd vagrant && vagrant reload >"$work/reload.log" 2>&1) || { cat "$work/reload.log" >&2; fail "vagrant reload"; }
machine_wait_booted "$id"
in_machine test -e /var/lib/clean-shutdown || fail "vagrant reload was not a clean shutdown"
check_restored
check_served_only_by v2 "after the clean reboot"

step "2. a power cut (docker kill), then vagrant up"
in_machine rm -f /var/lib/clean-shutdown
docker kill "$id" >/dev/null
(cd vagrant && vagrant up --provider=docker >"$work/up2.log" 2>&1) || { cat "$work/up2.log" >&2; fail "vagrant up after the power cut"; }
machine_wait_booted "$id"
in_machine test -e /var/lib/clean-shutdown && fail "the power cut left a clean-shutdown mark"
check_restored
check_served_only_by v2 "after the power cut"

# -- 3. the monitor replaces a killed container -------------------------------------------------
step "3. handoff-monitor@web replaces a killed container"
in_machine systemctl enable --now --quiet handoff-monitor@web
killed=$(running_web_containers web:v2)
[[ -n $killed ]] || fail "no running v2 container to kill"
in_machine docker kill "$killed" >/dev/null
killed_at=$SECONDS
replaced=
for _ in $(seq 120); do
    replaced=$(running_web_containers web:v2)
    [[ -n $replaced && $replaced != "$killed" ]] && break
    replaced=
    sleep 1
done
[[ -n $replaced ]] || fail "the monitor did not replace the killed container within 120 s"
step "the killed container was replaced after $((SECONDS - killed_at)) s"
in_machine systemctl is-active --quiet handoff-monitor@web || fail "the monitor unit stopped"
wait_for_routed() {
    for _ in $(seq 30); do
        "$bin/handoff-netkit" load --target "$(machine_ip "$id"):80" --connections 1 --duration-ms 300 >"$work/probe.json" || true
        python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if r["ok"] and not r["failed"] else 1)' "$work/probe.json" && return 0
        sleep 1
    done
    return 1
}
wait_for_routed || fail "the replacement is not routed"
check_served_only_by v2 "after the monitor's replacement"

# -- 3. the fleet agent's unit, against an etcd in the machine --------------------------------
step "3. handoff-fleet-agent.service: registers, reports web, starts nothing"
in_machine env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >"$work/etcd.log" 2>&1 ||
    { cat "$work/etcd.log" >&2; fail "apt-get install etcd-server"; }
in_machine systemctl is-active --quiet etcd || in_machine systemctl start etcd
containers_before=$(in_machine docker ps -q | wc -l)
in_machine handoff fleet setconfig /etc/handoff/handoff.json >&2
# An agent needs a signers file or a policy (secure by default; the secure setup is
# fleet-test's): a policy that allows web, root's and read-only to others.
in_machine sh -c 'umask 022 && echo "{\"images\": [\"web\"], \"ports\": [80]}" >/etc/handoff/policy.json'
in_machine systemctl start handoff-fleet-agent.service
# host:alive:component:state:tag for every component `fleet list --json` reports.
fleet_report() {
    in_machine handoff fleet list --json >"$work/fleet.json" 2>/dev/null || return 0
    python3 - "$work/fleet.json" <<'PY'
import json, sys
listed = json.load(open(sys.argv[1]))
print(" ".join(f"{h['name']}:{h['alive']}:{c['name']}:{c['state']}:{c['tag']}"
               for h in listed["hosts"] for c in h["components"]))
PY
}
reported=
for _ in $(seq 60); do
    reported=$(fleet_report)
    [[ $reported == "handoff-host:True:web:ready:v2" ]] && break
    sleep 0.5
done
[[ $reported == "handoff-host:True:web:ready:v2" ]] ||
    fail "the fleet agent did not report web ready at v2 ($reported): $(in_machine journalctl --no-pager -o cat -u handoff-fleet-agent | tail -20)"
(($(in_machine docker ps -q | wc -l) == containers_before)) || fail "the fleet agent started a container twice"
step "fleet agent journal:"
in_machine journalctl --no-pager -o cat -u handoff-fleet-agent | sed 's/^/    /' >&2

# -- 4. upgrade, remove, purge ------------------------------------------------------------------
step "4. the package reinstalled (an upgrade's maintainer scripts) under load"
monitor_pid=$(in_machine systemctl show -p MainPID --value handoff-monitor@web)
start_load 6000 "$work/upgrade.json"
sleep 1
in_machine env DEBIAN_FRONTEND=noninteractive apt-get install --reinstall -y -qq "/handoff/${deb#"$repo"/}" >"$work/reinstall.log" 2>&1 ||
    { cat "$work/reinstall.log" >&2; fail "apt-get install --reinstall"; }
wait "$load_pid" || true
load_pid=
check_load "$work/upgrade.json" "during the reinstall" only:v2
[[ $(in_machine systemctl show -p MainPID --value handoff-monitor@web) != "$monitor_pid" ]] ||
    fail "the running monitor was not restarted with the new binary"

step "4. apt-get remove handoff: units stopped, no table, state and containers kept"
in_machine env DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq handoff >"$work/remove.log" 2>&1 ||
    { cat "$work/remove.log" >&2; fail "apt-get remove"; }
no_trace_in_the_kernel() {
    in_machine systemctl is-active --quiet handoff-monitor@web && fail "the monitor still runs after $1"
    in_machine systemctl is-active --quiet handoff-fleet-agent && fail "the fleet agent still runs after $1"
    in_machine nft list table inet handoff >/dev/null 2>&1 && fail "table inet handoff is left after $1"
    in_machine sh -c 'iptables -S DOCKER-USER; iptables -S FORWARD' | grep -q 'handoff:' &&
        fail "a handoff rule is left in Docker's chains after $1"
    return 0
}
no_trace_in_the_kernel "apt-get remove"
in_machine test -f /var/lib/handoff/state.json || fail "remove deleted the state file"
[[ -n $(running_web_containers web:v2) ]] || fail "remove stopped the web container"
in_machine env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "/handoff/${deb#"$repo"/}" >"$work/install2.log" 2>&1 ||
    { cat "$work/install2.log" >&2; fail "apt-get install after remove"; }
in_machine systemctl start handoff-restore.service
check_served_only_by v2 "reinstalled, then handoff-restore"

step "4. apt-get purge handoff"
in_machine env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq handoff >"$work/purge.log" 2>&1 ||
    { cat "$work/purge.log" >&2; fail "apt-get purge"; }
no_trace_in_the_kernel "apt-get purge"
in_machine test -e /var/lib/handoff && fail "/var/lib/handoff is left after purge"
in_machine sh -c 'ls /etc/systemd/system/*.wants/handoff-* 2>/dev/null' && fail "enabled handoff units are left after purge"

# -- 5. destroy: nothing left on this host ------------------------------------------------------
step "5. vagrant destroy"
(cd vagrant && vagrant destroy -f >"$work/destroy.log" 2>&1) || { cat "$work/destroy.log" >&2; fail "vagrant destroy"; }
docker inspect "$id" >/dev/null 2>&1 && fail "the machine's container is left"
machine=$id
id=
[[ -z $(find /sys/fs/cgroup -maxdepth 3 -type d -name "$machine*" 2>/dev/null) ]] ||
    fail "cgroups of the machine are left: $(find /sys/fs/cgroup -maxdepth 3 -type d -name "$machine*")"
[[ $(find /sys/fs/cgroup -maxdepth 3 -type d -name 'docker' -exec ls {} \; 2>/dev/null | sort | md5sum) == "$cgroups_before" ]] ||
    fail "the host's docker cgroups changed"
[[ $(nft list ruleset 2>/dev/null | grep -v counter | md5sum) == "$host_ruleset_before" ]] ||
    fail "the host's ruleset changed"
step "passed"
