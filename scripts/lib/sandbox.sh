# Shared by test.sh, demo.sh and bench.sh: root check, system packages, and a sandbox of network
# namespaces torn down on exit:
#
#   client 10.0.2.2 -- veth -- 10.0.2.1 gateway 10.0.1.1 -- br0 -+- v1 10.0.1.11
#                              (runs handoff)                    +- v2 10.0.1.12
#
# Source it, then call `sandbox_up PREFIX`; it sets $gw $v1 $v2 $client $work and installs an
# EXIT trap that kills every process inside the namespaces and deletes them.

require_root_and_packages() {
    if [[ $(id -u) -ne 0 ]]; then
        echo "$(basename "$0"): run as root (sudo $0): it builds network namespaces" >&2
        exit 1
    fi
    export PATH="$HOME/.cargo/bin:/usr/local/cargo/bin:$PATH"
    bash scripts/install.sh --deps-only "$@"
}

# Start dockerd when no daemon answers; sets $started_dockerd to its pid (empty otherwise).
ensure_dockerd() {
    started_dockerd=
    docker info >/dev/null 2>&1 && return 0
    echo "$(basename "$0"): starting dockerd" >&2
    local log
    log=$(mktemp /tmp/handoff-dockerd.XXXXXX.log)
    dockerd >"$log" 2>&1 &
    started_dockerd=$!
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    echo "$(basename "$0"): dockerd did not come up; its log:" >&2
    tail -30 "$log" >&2
    return 1
}

# Write TAR: a root filesystem of busybox-static and the netkit server ($bin/handoff-netkit)
# with the libraries it links.
netkit_rootfs_tar() {
    local tar=$1 root lib
    root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/usr/local/bin" "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    ln -s busybox "$root/bin/sh"
    cp "$bin/handoff-netkit" "$root/usr/local/bin/"
    for lib in $(ldd "$bin/handoff-netkit" | grep -o '/[^ ]*'); do
        mkdir -p "$root$(dirname "$lib")"
        cp "$lib" "$root$lib"
    done
    tar -C "$root" -cf "$tar" .
    rm -rf "$root"
}

# The image's CMD, for `docker import -c`: the netkit server on 8080, answering as NAME.
netkit_serve_cmd() {
    echo "CMD [\"/usr/local/bin/handoff-netkit\", \"serve\", \"--listen\", \"0.0.0.0:8080\", \"--name\", \"$1\"]"
}

# Build image REPO:TAG from busybox-static and the netkit server, serving as NAME.
build_netkit_image() {
    local image=$1 name=$2 tar
    tar=$(mktemp --suffix=.tar)
    netkit_rootfs_tar "$tar"
    docker import -c "$(netkit_serve_cmd "$name")" "$tar" "$image" >/dev/null
    rm -f "$tar"
}

# Stop the dockerd that ensure_dockerd started, if it started one, and wait for it to exit.
stop_dockerd() {
    if [[ -n ${started_dockerd:-} ]]; then
        kill "$started_dockerd" 2>/dev/null || true
        wait "$started_dockerd" 2>/dev/null || true
    fi
}

sandbox_down() {
    local ns
    for ns in "$client" "$v1" "$v2" "$gw"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    done
    sleep 0.2
    for ns in "$client" "$v1" "$v2" "$gw"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$work"
}

sandbox_up() {
    local prefix=$1 spec ns host port
    gw=$prefix-gw v1=$prefix-v1 v2=$prefix-v2 client=$prefix-client
    work=$(mktemp -d)
    trap sandbox_down EXIT
    trap 'exit 130' INT TERM
    for ns in "$gw" "$v1" "$v2" "$client"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    ip -n "$gw" link add br0 type bridge
    ip -n "$gw" addr add 10.0.1.1/24 dev br0
    ip -n "$gw" link set br0 up
    for spec in "$v1 11 p1" "$v2 12 p2"; do
        read -r ns host port <<<"$spec"
        ip -n "$gw" link add "$port" type veth peer name eth0 netns "$ns"
        ip -n "$gw" link set "$port" master br0 up
        ip -n "$gw" link set "$port" type bridge_slave hairpin on
        ip -n "$ns" addr add "10.0.1.$host/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" route add default via 10.0.1.1
    done
    ip -n "$gw" link add vc type veth peer name eth0 netns "$client"
    ip -n "$gw" addr add 10.0.2.1/24 dev vc
    ip -n "$gw" link set vc up
    ip -n "$client" addr add 10.0.2.2/24 dev eth0
    ip -n "$client" link set eth0 up
    ip -n "$client" route add default via 10.0.2.1
    ip netns exec "$gw" sysctl -qw net.ipv4.ip_forward=1
}

# Start a netkit server named NAME in namespace NS on port 8080 and wait until it listens.
serve() {
    local ns=$1 name=$2
    ip netns exec "$ns" "$bin/handoff-netkit" serve --listen 0.0.0.0:8080 --name "$name" \
        --ready-file "$work/$name.ready" 2>/dev/null &
    for _ in $(seq 200); do [[ -e $work/$name.ready ]] && return 0; sleep 0.05; done
    echo "server $name did not start" >&2
    return 1
}

handoff() { ip netns exec "$gw" "$bin/handoff" --config "$work/handoff.json" --state-dir "$work/state" "$@"; }
netkit() { local ns=$1; shift; ip netns exec "$ns" "$bin/handoff-netkit" "$@"; }
now_ms() { date +%s%3N; }
