# Shared by vagrant-test.sh and fleet-test.sh: the Vagrant machines they boot (docker
# provider, no ssh: commands go in with `docker exec`), their work directory and messages, and
# the check both make of a load report. Source after sandbox.sh, then call `machines_begin NAME`.

# Messages as NAME, a work directory in $work, Vagrant's state in it (not in the tree).
machines_begin() {
    machines_name=$1
    work=$(mktemp -d "/tmp/handoff-$machines_name.XXXXXX")
    export VAGRANT_DOTFILE_PATH=$work/vagrant-state
    export VAGRANT_CHECKPOINT_DISABLE=1
}

step() { echo "$machines_name: $*" >&2; }
fail() {
    echo "$machines_name: FAILED: $*" >&2
    exit 1
}

# The container id of Vagrant machine NAME.
machine_id() { cat "$VAGRANT_DOTFILE_PATH/machines/$1/docker/id"; }
machine_exec() {
    local id=$1
    shift
    docker exec -i "$id" "$@"
}
machine_ip() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"; }

# Wait until systemd in machine ID has finished booting; a degraded boot is a failure.
machine_wait_booted() {
    local id=$1 state=
    for _ in $(seq 240); do
        state=$(machine_exec "$id" systemctl is-system-running 2>/dev/null || true)
        [[ $state == running || $state == degraded ]] && break
        sleep 0.5
    done
    [[ $state == running ]] ||
        fail "machine $id did not boot to 'running' ($state): $(machine_exec "$id" systemctl --failed --no-legend 2>&1)"
}

# Check a netkit load report FILE: no request failed, none took a second or more, and each
# BACKEND answered some (`v1 v2`); `only:BACKEND` also requires that nothing else answered.
check_load() {
    local file=$1 what=$2
    shift 2
    python3 - "$machines_name" "$file" "$what" "$@" <<'PY'
import json, sys
name, path, what, expected = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
report = json.load(open(path))
problems = []
if report["failed"] != 0:
    problems.append(f"{report['failed']} failed")
if report.get("slowest_ms", 0) >= 1000:
    problems.append(f"slowest request {report['slowest_ms']} ms")
by_backend = report.get("by_backend", {})
for backend in expected:
    if backend.startswith("only:"):
        backend = backend[5:]
        if set(by_backend) != {backend}:
            problems.append(f"answered by {sorted(by_backend)}, expected only {backend}")
    elif by_backend.get(backend, 0) == 0:
        problems.append(f"{backend} answered nothing")
summary = f"{report['ok']} ok, {report['failed']} failed, by backend {by_backend}, slowest {report.get('slowest_ms')} ms"
if problems:
    sys.exit(f"{name}: FAILED: {what}: {'; '.join(problems)} ({summary})")
print(f"{name}: {what}: {summary}", file=sys.stderr)
PY
}
