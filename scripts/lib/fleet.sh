# Shared by fleet-test.sh and fleet-bench.sh: three Vagrant machines (h1 h2 h3) as a fleet set
# up the way docs/fleet-setup.md tells an operator to, step by step:
#
#   1. a CA and certificates made with openssl (etcd's, with h1's address; root's; one per
#      host, CN handoff-default-hN; the operator's, CN handoff-default-op-ci);
#   2. etcd on h1 (Debian's etcd-server) with TLS and --client-cert-auth;
#   3. etcd's root user, `auth enable`;
#   4. `fleet grant-host hN` for each host and `fleet grant-operator ci`, with root's cert;
#   5. the operator's ed25519 SSH key (ssh-keygen);
#   6. on each host: the package, /etc/default/handoff (https, the CA, its cert and key),
#      /etc/handoff/fleet-signers (the operator's key, and a second one for ssh-keygen's
#      signatures) and /etc/handoff/policy.json (image web, ports 80 and 81).
#
# The operator's workstation is this host: the handoff of the same package (unpacked into the
# work directory), its certificate, its SSH key; every write it makes is signed (`signed`).
# Images in each machine: web:v1, web:v2, web:slow (ready 4 s after it starts), web:never
# (runs, never ready: it listens on 9999, not 8080) and evil:v1 (a repository the policy does
# not name). Source after sandbox.sh and machines.sh, call `machines_begin NAME` and set
# `trap fleet_cleanup EXIT`, then `fleet_up`.
#
# FLEET_TEST_H3_TRUST, a control that must turn the refusal steps red: `insecure` runs h3's
# agent with --insecure-accept-any-spec and neither file; `policy-only` gives h3 the policy but
# no signers file.

export HANDOFF_MACHINES="h1 h2 h3"
hosts=(h1 h2 h3)
declare -A id ip
loads=()
fleet=default

fleet_cleanup() {
    local rc=$?
    for pid in "${loads[@]}"; do kill "$pid" 2>/dev/null || true; done
    if ((rc != 0)); then
        for host in "${hosts[@]}"; do
            [[ -n ${id[$host]:-} ]] || continue
            # A frozen etcd stays frozen after a failure in the middle of the freeze.
            if [[ $host == h1 ]]; then
                docker exec "${id[$host]}" systemctl kill -s SIGCONT etcd >/dev/null 2>&1 || true
            fi
            echo "---- $host: handoff journal ----" >&2
            docker exec "${id[$host]}" journalctl --no-pager -o short-monotonic -u 'handoff*' 2>&1 | tail -30 >&2 || true
        done
        if [[ -n ${id[h1]:-} ]]; then
            echo "---- h1: etcd journal ----" >&2
            docker exec "${id[h1]}" journalctl --no-pager -o short-monotonic -u etcd 2>&1 | tail -10 >&2 || true
        fi
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

# Write stdin to PATH in HOST, with MODE and OWNER (root:root unless given).
put_file() {
    local host=$1 path=$2 mode=$3 owner=${4:-root:root}
    on "$host" sh -c 'umask 077 && cat >"$1" && chown "$3" "$1" && chmod "$2" "$1"' sh "$path" "$mode" "$owner"
}

# -- the operator's side: this host -------------------------------------------------------------
# `handoff fleet` as WHO (a certificate in $pki: root, handoff-default-hN, handoff-default-op-ci).
fleet_as() {
    local who=$1
    shift
    "$operator_handoff" fleet --etcd "$etcd_url" --cacert "$pki/ca.pem" \
        --cert "$pki/$who.pem" --key "$pki/$who.key" "$@"
}
# `handoff fleet` as the operator, from the environment docs/fleet-setup.md sets up; never
# longer than 120 s (a wait that would never end is a failure, not a stuck run).
operator() {
    timeout 120 env HANDOFF_ETCD="$etcd_url" HANDOFF_ETCD_CACERT="$pki/ca.pem" \
        HANDOFF_ETCD_CERT="$pki/handoff-$fleet-op-ci.pem" HANDOFF_ETCD_KEY="$pki/handoff-$fleet-op-ci.key" \
        "$operator_handoff" fleet "$@"
}
# A write by the operator, signed with its SSH key.
signed() { operator "$@" --sign "$ssh_key"; }
# etcdctl as WHO.
etcdctl_as() {
    local who=$1
    shift
    etcdctl --endpoints "$etcd_url" --cacert "$pki/ca.pem" --cert "$pki/$who.pem" --key "$pki/$who.key" "$@"
}
key_of() { echo "/handoff/fleets/$fleet/$1"; }

# host:alive|lost:component:state:tag for every status `fleet list --json` reports, and
# rollout:tag:state.
fleet_view() {
    operator list --json >"$work/fleet.json" 2>/dev/null || return 0
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

# -- setup ------------------------------------------------------------------------------------------
# docs/fleet-setup.md, step 1: in $pki, a key and a certificate whose CN is NAME, signed by the
# CA, for USAGE (serverAuth, clientAuth), with EXTRA extension lines (subjectAltName).
fleet_cert() {
    local name=$1 usage=$2 extra=${3:-}
    (
        cd "$pki"
        openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
            -keyout "$name.key" -out "$name.csr" -subj "/CN=$name"
        printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n%s\n' \
            "$usage" "$extra" >"$name.ext"
        openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 \
            -extfile "$name.ext" -out "$name.pem"
        chmod 600 "$name.key"
    ) >>"$work/openssl.log" 2>&1 || { cat "$work/openssl.log" >&2; fail "openssl: $name"; }
}

fleet_pki() {
    pki=$work/pki
    mkdir -m 700 "$pki"
    (
        cd "$pki"
        openssl req -x509 -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
            -keyout ca.key -out ca.pem -days 365 -subj "/CN=handoff fleet CA" \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
        chmod 600 ca.key
    ) >>"$work/openssl.log" 2>&1 || { cat "$work/openssl.log" >&2; fail "openssl: the CA"; }
    fleet_cert etcd serverAuth,clientAuth "subjectAltName=IP:${ip[h1]},IP:127.0.0.1"
    fleet_cert root clientAuth
    local host
    for host in "${hosts[@]}"; do fleet_cert "handoff-$fleet-$host" clientAuth; done
    fleet_cert "handoff-$fleet-op-ci" clientAuth
}

# Step 2 and 3: etcd on h1 with TLS, client certificates required, a root user, auth enabled.
fleet_etcd() {
    on h1 env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >"$work/etcd.log" 2>&1 ||
        { cat "$work/etcd.log" >&2; fail "etcd-server"; }
    on h1 install -d -m 0750 -o root -g etcd /etc/etcd/pki
    put_file h1 /etc/etcd/pki/ca.pem 0644 <"$pki/ca.pem"
    put_file h1 /etc/etcd/pki/etcd.pem 0644 <"$pki/etcd.pem"
    put_file h1 /etc/etcd/pki/etcd.key 0600 etcd:etcd <"$pki/etcd.key"
    on h1 sh -c "cat >>/etc/default/etcd" <<EOF
ETCD_LISTEN_CLIENT_URLS=https://${ip[h1]}:2379,https://127.0.0.1:2379
ETCD_ADVERTISE_CLIENT_URLS=https://${ip[h1]}:2379
ETCD_CERT_FILE=/etc/etcd/pki/etcd.pem
ETCD_KEY_FILE=/etc/etcd/pki/etcd.key
ETCD_TRUSTED_CA_FILE=/etc/etcd/pki/ca.pem
ETCD_CLIENT_CERT_AUTH=true
EOF
    on h1 systemctl restart etcd
    etcd_url=https://${ip[h1]}:2379
    for _ in $(seq 60); do
        etcdctl_as root endpoint health >/dev/null 2>&1 && break
        sleep 0.5
    done
    etcdctl_as root endpoint health >&2 || fail "etcd does not answer on $etcd_url with TLS"
    {
        etcdctl_as root user add root --no-password &&
            etcdctl_as root user grant-role root root &&
            etcdctl_as root auth enable
    } >"$work/auth.log" 2>&1 || { cat "$work/auth.log" >&2; fail "etcd's root user and auth enable"; }
    # Without a client certificate, etcd takes no one.
    if etcdctl --endpoints "$etcd_url" --cacert "$pki/ca.pem" get / >/dev/null 2>&1; then
        fail "etcd answered a client without a certificate"
    fi
}

fleet_up() {
    step "building the package, the machine image and the web image"
    deb=$(bash scripts/package.sh | tail -1)
    export HANDOFF_MACHINE_IMAGE
    HANDOFF_MACHINE_IMAGE=$(bash scripts/machine-image.sh | tail -1)
    cargo build --release --quiet --bin handoff-netkit
    bin=$PWD/target/release
    netkit_rootfs_tar "$work/web.tar"
    # The operator's handoff: the package's own binary (not target/, which a build may replace
    # while the run goes on).
    dpkg-deb -x "$deb" "$work/operator-root"
    operator_handoff=$work/operator-root/usr/sbin/handoff

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
        # A version that exists and runs but is never ready (nothing on 8080): the first host
        # really creates its container, then halts the rollout.
        on "$host" docker import -c 'CMD ["/usr/local/bin/handoff-netkit", "serve", "--listen", "0.0.0.0:9999", "--name", "never"]' \
            - web:never <"$work/web.tar" >/dev/null
        # An image the policy does not allow: it exists, so a host that ignored its policy
        # would create it.
        on "$host" docker import -c "$(netkit_serve_cmd evil)" - evil:v1 <"$work/web.tar" >/dev/null
    done

    step "the secure setup (docs/fleet-setup.md): certificates, etcd with TLS, users, keys, trust files"
    fleet_pki
    fleet_etcd
    {
        for host in "${hosts[@]}"; do fleet_as root grant-host "$host"; done
        fleet_as root grant-operator ci
    } >"$work/grants.log" 2>&1 || { cat "$work/grants.log" >&2; fail "grant-host / grant-operator"; }
    # The operator's signing key, and a second operator's (whose signatures ssh-keygen makes).
    ssh_key=$work/operator-ci
    ssh-keygen -q -t ed25519 -N '' -C ci@fleet-test -f "$ssh_key"
    ssh-keygen -q -t ed25519 -N '' -C ops2@fleet-test -f "$work/operator-ops2"
    printf 'ci@fleet-test %s\nops2@fleet-test %s\n' "$(cat "$ssh_key.pub")" "$(cat "$work/operator-ops2.pub")" \
        >"$work/fleet-signers"
    echo '{ "images": ["web"], "ports": [80, 81] }' >"$work/policy.json"
    local agent_args
    for host in "${hosts[@]}"; do
        put_file "$host" /etc/handoff/etcd-ca.pem 0644 <"$pki/ca.pem"
        put_file "$host" /etc/handoff/etcd-client.pem 0644 <"$pki/handoff-$fleet-$host.pem"
        put_file "$host" /etc/handoff/etcd-client.key 0600 <"$pki/handoff-$fleet-$host.key"
        agent_args="--host $host"
        case $host:${FLEET_TEST_H3_TRUST:-} in
            h3:insecure) agent_args+=" --insecure-accept-any-spec" ;;
            h3:policy-only) put_file "$host" /etc/handoff/policy.json 0644 <"$work/policy.json" ;;
            *)
                put_file "$host" /etc/handoff/fleet-signers 0644 <"$work/fleet-signers"
                put_file "$host" /etc/handoff/policy.json 0644 <"$work/policy.json"
                ;;
        esac
        put_file "$host" /etc/default/handoff 0644 <<EOF
HANDOFF_ETCD=$etcd_url
HANDOFF_ETCD_CACERT=/etc/handoff/etcd-ca.pem
HANDOFF_ETCD_CERT=/etc/handoff/etcd-client.pem
HANDOFF_ETCD_KEY=/etc/handoff/etcd-client.key
HANDOFF_AGENT_ARGS=$agent_args
EOF
    done
    [[ -n ${FLEET_TEST_H3_TRUST:-} ]] && step "CONTROL: h3 trusts as '$FLEET_TEST_H3_TRUST': the refusal steps must fail"
    cp examples/web.json "$work/web.json"
    return 0
}
