#!/bin/bash
# PID 1 of the virtual machine that scripts/flowtable-experiment.sh boots (rdinit=/experiment.sh):
# Debian bookworm's own kernel, whose nf_flow_table modules the host kernel lacks. It builds the
# bench's namespaces itself (client 10.0.2.2 -- vc 10.0.2.1 gw br0 10.0.1.1 -- b 10.0.1.12,
# nginx on 10.0.1.12:8080), measures wrk through three paths (no NAT, hand-written DNAT, DNAT
# plus a flowtable), checks that offloaded flows stay visible to conntrack and that their end
# is seen, and writes raw records to /dev/ttyS1 (the host turns them into tables). Progress
# goes to the console (ttyS0). It powers the machine off when done, whatever happened.
#
# Settings come from /experiment.conf (written by the host script): ROUNDS, SECS, TOPOLOGIES
# (bridged and/or routed), DRAIN (1 to run the drain checks), DOCKERLIKE (1 to also check
# offload with br_netfilter loaded, as Docker does).
set -uo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C HOME=/root

ROUNDS=5 SECS=5 TOPOLOGIES=bridged DRAIN=1 DOCKERLIKE=1
# shellcheck source=/dev/null
[[ -r /experiment.conf ]] && . /experiment.conf

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
exec </dev/null >/dev/console 2>&1

power_off() {
    sync
    echo o >/proc/sysrq-trigger
    sleep 30
}
trap power_off EXIT

out=/dev/ttyS1
stty -F "$out" raw -echo 2>/dev/null || true
records=/tmp/records
record() { printf '%s\n' "$*" | tee -a "$records" >>"$out"; }
log() { printf '[guest %6.1fs] %s\n' "$(cut -d' ' -f1 /proc/uptime)" "$*"; }

work=/tmp/ft
BRNF=''
mkdir -p "$work"
ip link set lo up
for module in veth bridge nf_tables nft_chain_nat nf_nat nf_conntrack nf_conntrack_netlink \
    nf_flow_table nf_flow_table_inet nft_flow_offload nft_ct; do
    modprobe "$module" || log "modprobe $module failed"
done
record "meta kernel $(uname -r) $(uname -v | tr ' ' '_')"
record "meta cpus $(nproc) vCPUs, $(awk '/MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo) GiB"
record "meta versions nft=$(nft --version | awk '{print $2}') conntrack=$(conntrack --version 2>&1 | awk '{print $2}') wrk=$(wrk -v 2>&1 | awk 'NR==1 {print $2}') nginx=$(nginx -v 2>&1 | sed 's|.*/||')"
log "kernel $(uname -r); modules: $(lsmod | awk 'NR>1 {print $1}' | grep -E 'flow|nft_|conntrack' | tr '\n' ' ')"

# ---------------------------------------------------------------------------------------------
# The sandbox: fresh namespaces for every measurement (a backend holding TIME_WAIT from an
# earlier run rejects reused client ports).

ns_exec() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}

sandbox_down() {
    local ns pids _
    for ns in client b gw; do
        pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
        if [[ -n ${pids// /} ]]; then
            # shellcheck disable=SC2086
            kill -9 $pids 2>/dev/null
            for _ in $(seq 40); do
                [[ -z $(ip netns pids "$ns" 2>/dev/null) ]] && break
                sleep 0.05
            done
        fi
        ip netns del "$ns" 2>/dev/null
    done
    return 0
}

# The flowtable's devices: the gateway's side of both links.
ft_devices() {
    case $1 in
        bridged) echo "vc, br0" ;;
        bridged+port) echo "vc, br0, vb" ;;
        routed) echo "vc, vb" ;;
    esac
}

# nft ruleset for PATH (nonat, dnat, ft) on TOPOLOGY; COUNTER=1 counts the packets that take
# the slow path through the forward chain (only in the offload check, not when measuring).
ruleset() {
    local path=$1 topo=$2 counter=${3:-}
    [[ $path == nonat ]] && return 0
    cat <<EOF
table ip bench {
    chain pre {
        type nat hook prerouting priority -100;
        ip daddr 10.0.2.1 tcp dport 80 dnat to 10.0.1.12:8080
    }
}
EOF
    [[ $path == ft ]] || return 0
    cat <<EOF
table inet ft {
    flowtable f {
        hook ingress priority 0; devices = { $(ft_devices "$topo") };
    }
    chain forward {
        type filter hook forward priority 0;
        meta l4proto tcp ${counter:+counter} flow add @f
    }
}
EOF
}

# sandbox_up TOPOLOGY PATH [COUNTER]: namespaces, links, nginx, the ruleset.
sandbox_up() {
    local topo=$1 path=$2 counter=${3:-} _
    sandbox_down
    ip netns add client && ip netns add gw && ip netns add b || return 1
    ns_exec gw ip link set lo up
    ns_exec b ip link set lo up
    ns_exec client ip link set lo up
    ip link add vc netns gw type veth peer name eth0 netns client || return 1
    ns_exec gw ip addr add 10.0.2.1/24 dev vc
    ns_exec gw ip link set vc up
    ns_exec client ip addr add 10.0.2.2/24 dev eth0
    ns_exec client ip link set eth0 up
    ns_exec client ip route add default via 10.0.2.1
    ip link add vb netns gw type veth peer name eth0 netns b || return 1
    if [[ $topo == routed ]]; then
        ns_exec gw ip addr add 10.0.1.1/24 dev vb
    else
        ns_exec gw ip link add br0 type bridge || return 1
        ns_exec gw ip addr add 10.0.1.1/24 dev br0
        ns_exec gw ip link set br0 up
        ns_exec gw ip link set vb master br0
    fi
    ns_exec gw ip link set vb up
    ns_exec b ip addr add 10.0.1.12/24 dev eth0
    ns_exec b ip link set eth0 up
    ns_exec b ip route add default via 10.0.1.1
    ns_exec gw sysctl -qw net.ipv4.ip_forward=1
    if [[ -n $BRNF ]]; then
        ns_exec gw sysctl -qw net.bridge.bridge-nf-call-iptables=1 || return 1
    fi
    if [[ $path != nonat ]]; then
        ruleset "$path" "$topo" "$counter" >"$work/ruleset.nft"
        if ! ns_exec gw nft -f "$work/ruleset.nft" 2>"$work/nft.err"; then
            log "nft failed: $(tr '\n' ' ' <"$work/nft.err")"
            return 1
        fi
    fi
    local d=$work/nginx
    rm -rf "$d"
    mkdir -p "$d"
    cat >"$d/nginx.conf" <<EOF
worker_processes 2;
pid $d/nginx.pid;
error_log $d/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 10.0.1.12:8080;
        location / { return 200 "ok\n"; }
    }
}
EOF
    ns_exec b nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf" || return 1
    for _ in $(seq 100); do
        ns_exec b ss -Hltn 'sport = :8080' | grep -q 8080 && return 0
        sleep 0.05
    done
    log "nginx did not listen"
    return 1
}

# ---------------------------------------------------------------------------------------------
# Throughput: wrk from the client.

# "rps p99_ms socket_errors non_2xx requests" from wrk's output on stdin.
parse_wrk() {
    awk 'function ms(v) {
             if (v ~ /us$/) return v / 1000
             if (v ~ /ms$/) return v + 0
             if (v ~ /m$/) return v * 60000
             if (v ~ /s$/) return v * 1000
             return v + 0
         }
         $1 == "99%" { p99 = ms($2) }
         /^Requests\/sec:/ { rps = $2 }
         / requests in / { reqs = $1 }
         /Socket errors:/ { gsub(",", ""); err = $4 + $6 + $8 + $10 }
         /Non-2xx or 3xx/ { non = $NF }
         END {
             printf "%s %s %d %d %s\n", (rps == "" ? "NA" : rps),
                 (p99 == "" ? "NA" : sprintf("%.3f", p99)), err, non, (reqs == "" ? 0 : reqs)
         }'
}

# wrk_args LOAD: threads, connections and extra header of a load.
load_args() {
    case $1 in
        ka1) echo "-t1 -c1" ;;
        ka8) echo "-t2 -c8" ;;
        ka64) echo "-t2 -c64" ;;
        close64) echo "-t2 -c64 close" ;;
    esac
}

run_wrk() { # PATH LOAD SECONDS -> wrk output in $work/wrk.txt
    local path=$1 load=$2 secs=$3 url=http://10.0.2.1:80/ args
    [[ $path == nonat ]] && url=http://10.0.1.12:8080/
    read -ra args <<<"$(load_args "$load")"
    if [[ ${args[2]:-} == close ]]; then
        args=("${args[0]}" "${args[1]}" -H "Connection: close")
    fi
    ns_exec client timeout $((secs + 20)) wrk --latency "${args[@]}" -d"${secs}s" "$url" \
        >"$work/wrk.txt" 2>&1
}

measure() { # ROUND TOPOLOGY PATH LOAD
    local round=$1 topo=$2 path=$3 load=$4 result
    if ! sandbox_up "$topo" "$path"; then
        record "meas $round $topo $path $load NA NA 0 0 0 setup-failed"
        return
    fi
    run_wrk "$path" "$load" "$SECS"
    result=$(parse_wrk <"$work/wrk.txt")
    record "meas $round $topo $path $load $result"
    log "round $round $topo $path $load: $result"
    sandbox_down
}

# ---------------------------------------------------------------------------------------------
# Offload check: are the flows really in the flowtable, and how many packets still take the
# slow path (the forward chain's counter) against the packets wrk's requests needed?

offload_check() { # TOPOLOGY [LABEL]
    local topo=$1 label=${2:-$1} wrk_pid entries offloaded line other pkts reqs result
    if ! sandbox_up "$topo" ft 1; then
        record "offload $label setup-failed"
        return
    fi
    run_wrk ft ka8 3 &
    wrk_pid=$!
    sleep 1.5
    ns_exec gw conntrack -L -p tcp 2>/dev/null >"$work/ct-load.txt"
    wait "$wrk_pid"
    result=$(parse_wrk <"$work/wrk.txt")
    reqs=$(echo "$result" | awk '{print $5}')
    entries=$(grep -c 'dport=80 ' "$work/ct-load.txt")
    offloaded=$(grep 'dport=80 ' "$work/ct-load.txt" | grep -c '\[OFFLOAD\]')
    line=$(grep 'dport=80 ' "$work/ct-load.txt" | grep -m1 '\[OFFLOAD\]')
    [[ -z $line ]] && line=$(grep -m1 'dport=80 ' "$work/ct-load.txt")
    pkts=$(ns_exec gw nft list chain inet ft forward | awk '/counter/ {for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1)}')
    record "offload $label entries=$entries offloaded=$offloaded slowpath_packets=${pkts:-NA} requests=$reqs"
    record "offload-line $label ${line:-none}"
    other=$(grep 'dport=80 ' "$work/ct-load.txt" | grep -v -m1 '\[OFFLOAD\]')
    [[ -n $other ]] && record "offload-other $label $other"
    log "offload check $label: $entries entries, $offloaded offloaded, ${pkts:-NA} slow-path packets for $reqs requests"
    sandbox_down
}

# ---------------------------------------------------------------------------------------------
# Drain exactness: one long keep-alive connection through the DNAT (a request every 100 ms for
# 5 s), with conntrack events and a dump filtered by the backend (--reply-src, as handoff
# counts a backend's flows) polled every 50 ms. HOW: client (the client closes) or server (the
# last request says Connection: close, the backend closes first).

# The dump poller (in gw) and the client (in client) of the drain checks.
write_drain_helpers() {
    cat >"$work/poll.sh" <<'EOF'
while :; do
    echo "T $EPOCHREALTIME"
    conntrack -L -p tcp --reply-src 10.0.1.12 2>/dev/null
    sleep 0.05
done
EOF
    cat >"$work/client.sh" <<'EOF'
how=$1 n=50 ok=0
trap '' PIPE
exec 3<>/dev/tcp/10.0.2.1/80 || exit 1
echo "OPEN $EPOCHREALTIME"
for ((i = 1; i <= n; i++)); do
    conn=keep-alive
    [[ $how == server && $i -eq $n ]] && conn=close
    body=
    if printf 'GET / HTTP/1.1\r\nHost: t\r\nConnection: %s\r\n\r\n' "$conn" >&3 2>/dev/null; then
        while IFS= read -r -t 2 -u 3 line 2>/dev/null; do [[ $line == $'\r' ]] && break; done
        read -r -t 2 -u 3 -N 3 body 2>/dev/null
    fi
    if [[ $body == ok* ]]; then
        ok=$((ok + 1))
    else
        # The connection is broken (reset, or no answer within 2 s): stop there.
        echo "FAILED request $i at $EPOCHREALTIME"
        break
    fi
    [[ $i -lt $n ]] && sleep 0.1
done
if [[ $how == server ]]; then
    # The backend closes after answering: wait for its FIN (EOF) and note when it came.
    while read -r -t 3 -u 3 _; do :; done
fi
echo "END $EPOCHREALTIME"
exec 3>&-
echo "CLOSED $EPOCHREALTIME"
echo "OK $ok"
EOF
}

drain_case() { # TOPOLOGY PATH HOW
    local topo=$1 path=$2 how=$3 ev_pid poll_pid client_pid
    local d=$work/drain-$topo-$path-$how
    mkdir -p "$d"
    if ! sandbox_up "$topo" "$path"; then
        record "drain $topo $path $how setup-failed"
        return
    fi
    ip netns exec gw timeout 40 conntrack -E -o timestamp -p tcp >"$d/events" 2>&1 &
    ev_pid=$!
    ip netns exec gw timeout 40 bash "$work/poll.sh" >"$d/polls" 2>&1 &
    poll_pid=$!
    sleep 0.5
    ip netns exec client timeout 30 bash "$work/client.sh" "$how" >"$d/client" 2>&1 &
    client_pid=$!
    sleep 2.5
    ns_exec gw conntrack -L -p tcp 2>/dev/null >"$d/snapshot"
    if [[ $how == expire ]]; then
        # What handoff's retire does to the live flows of a backend retired without draining
        # (and dockerd to a stopped container's): the entry's timeout set to 0.
        echo "EXPIRE $EPOCHREALTIME" >"$d/expire"
        ns_exec gw conntrack -U -p tcp --reply-src 10.0.1.12 --timeout 0 >>"$d/expire" 2>&1
    fi
    wait "$client_pid"
    sleep 3
    kill "$poll_pid" "$ev_pid" 2>/dev/null
    wait "$poll_pid" "$ev_pid" 2>/dev/null
    drain_analyse "$d" "$topo $path $how"
    sandbox_down
}

drain_analyse() { # DIR LABEL
    local d=$1 label=$2 open end ok snap
    open=$(awk '$1 == "OPEN" {print $2}' "$d/client")
    end=$(awk '$1 == "END" {print $2}' "$d/client")
    ok=$(awk '$1 == "OK" {print $2}' "$d/client")
    if [[ -z $open || -z $end ]]; then
        record "drain $label client-failed $(tr '\n' ' ' <"$d/client")"
        return
    fi
    local expire=0
    if [[ -s $d/expire ]]; then
        expire=$(awk '$1 == "EXPIRE" {print $2}' "$d/expire")
        record "drain-expire $label $(grep -v '^EXPIRE' "$d/expire" | tail -1)"
    fi
    if grep -q '^FAILED' "$d/client"; then
        record "drain-failed $label $(awk -v open="$open" -v expire="$expire" '$1 == "FAILED" {
            printf "request %s failed, %.0f ms after the start", $3, ($5 - open) * 1000
            if (expire > 0) printf " and %.0f ms after the expiry", ($5 - expire) * 1000
        }' "$d/client")"
    fi
    if [[ $label == *expire ]]; then
        # Every entry of the connection's ports, also one the backend's packets may have
        # opened on their own (orig 10.0.1.12:8080 -> the client, without translation).
        awk '/dport=80 |sport=8080 / {print "drain-raw '"${label// /_}"' " $0}' "$d/events" | tee -a "$records" >>"$out"
    fi
    snap=$(grep -m1 'dport=80 ' "$d/snapshot")
    record "drain-snapshot $label ${snap:-none}"
    # Polls: each "T time" is followed by the dump's lines; the flow is the one to port 80.
    # An offloaded entry carries no timeout and no TCP state (ctnetlink leaves both out while
    # the flow is in the flowtable): it is "OFFLOAD" here, and live, as handoff counts it.
    awk -v open="$open" -v end="$end" -v label="$label" -v expire="$expire" '
        function flush() {
            if (t == "") return
            live_now = present && state != "TIME_WAIT" && state != "CLOSE"
            if (expire > 0 && t > expire + 0.1 && t < end) { x_polls++; if (present) x_listed++; if (present && off) x_off++ }
            if (t > open + 0.2 && t < end) {
                during++
                if (live_now) { live++; if (off) offl++ }
                if (timeout == "" && present) timeout = (to == "" ? "none" : to)
            }
            if (t > end) {
                after++
                if (live_now) { last_live = t - end; live_after++ }
                else if (first_done == "") { first_done = t - end; done_state = (present ? state : "absent") }
                if (!present && first_gone == "") first_gone = t - end
            }
        }
        $1 == "T" { flush(); t = $2; present = 0; state = ""; off = 0; to = ""; next }
        /dport=80 / {
            present = 1; off = ($0 ~ /\[OFFLOAD\]/); state = (off ? "OFFLOAD" : "?")
            if ($3 ~ /^[0-9]+$/) to = $3
            for (i = 3; i <= NF; i++) if ($i ~ /^[A-Z_0-9]+$/ && $i !~ /^[0-9]+$/) { state = $i; break }
        }
        END {
            flush()
            printf "drain-dump %s polls_open=%d listed_live=%d offloaded=%d timeout_shown=%s polls_after=%d live_after=%d last_live_after_ms=%s first_not_live_ms=%s not_live_state=%s gone_ms=%s",
                label, during, live, offl, (timeout == "" ? "NA" : timeout), after, live_after,
                (last_live == "" ? "none" : sprintf("%.0f", last_live * 1000)),
                (first_done == "" ? "never" : sprintf("%.0f", first_done * 1000)), done_state,
                (first_gone == "" ? "not-within-3s" : sprintf("%.0f", first_gone * 1000))
            if (expire > 0) printf " polls_after_expire=%d listed_after_expire=%d offloaded_after_expire=%d", x_polls, x_listed, x_off
            printf "\n"
        }' "$d/polls" | tee -a "$records" >>"$out"
    # Events: the states the flow went through, and the first one after the end that tells a
    # finished flow (TIME_WAIT, CLOSE, or DESTROY).
    awk -v end="$end" -v label="$label" -v ok="$ok" '
        /dport=80 / {
            ts = $1; gsub(/[\[\]]/, "", ts); type = $2; gsub(/[\[\]]/, "", type)
            st = ""
            for (i = 3; i <= NF; i++) if ($i ~ /^(SYN_SENT|SYN_RECV|ESTABLISHED|FIN_WAIT|CLOSE_WAIT|LAST_ACK|TIME_WAIT|CLOSE|SYN_SENT2|NONE)$/) { st = $i; break }
            seq = seq (seq == "" ? "" : ",") type (st == "" ? "" : ":" st) sprintf("@%+.0fms", (ts - end) * 1000)
            if (ts + 0 >= end - 0.05 && first == "" && (st == "TIME_WAIT" || st == "CLOSE" || type == "DESTROY")) {
                first = ts - end; first_what = type (st == "" ? "" : ":" st)
            }
        }
        END {
            printf "drain-events %s end_seen_ms=%s end_event=%s requests_ok=%s events=%s\n", label,
                (first == "" ? "never" : sprintf("%.0f", first * 1000)), (first_what == "" ? "none" : first_what),
                ok, (seq == "" ? "none" : seq)
        }' "$d/events" | tee -a "$records" >>"$out"
    log "drain $label: $(tail -2 "$records" | cut -d' ' -f5-12 | tr '\n' ' ')"
}

# ---------------------------------------------------------------------------------------------

main() {
    local round topo path load paths loads
    loads=(ka1 ka8 ka64 close64)
    for topo in $TOPOLOGIES; do
        offload_check "$topo"
    done
    for ((round = 1; round <= ROUNDS; round++)); do
        for topo in $TOPOLOGIES; do
            # The paths' order alternates between rounds.
            if ((round % 2)); then paths=(nonat dnat ft); else paths=(ft dnat nonat); fi
            for load in "${loads[@]}"; do
                for path in "${paths[@]}"; do
                    measure "$round" "$topo" "$path" "$load"
                done
            done
        done
    done
    if [[ $DRAIN == 1 ]]; then
        write_drain_helpers
        for topo in $TOPOLOGIES; do
            for path in dnat ft; do
                drain_case "$topo" "$path" client
                drain_case "$topo" "$path" server
                drain_case "$topo" "$path" expire
            done
        done
    fi
    if [[ $DOCKERLIKE == 1 && " $TOPOLOGIES " == *" bridged "* ]]; then
        # Docker loads br_netfilter and sets bridge-nf-call-iptables: bridged frames then meet
        # the IP hooks (conntrack too) on the bridge port, before the flowtable on br0.
        if modprobe br_netfilter; then
            BRNF=1
            offload_check bridged bridged+br_netfilter
        else
            record "offload bridged+br_netfilter setup-failed"
        fi
    fi
    record "done"
}

log "experiment: rounds=$ROUNDS seconds=$SECS topologies=$TOPOLOGIES drain=$DRAIN dockerlike=$DOCKERLIKE"
main
log "experiment finished"
