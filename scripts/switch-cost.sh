#!/usr/bin/env bash
# Where a switch's kernel transaction waits: the whole-process time of `nft -f` (median of 20)
# for a transaction that changes nothing, one that adds a map element with a new key, and one
# that deletes an element, in a network namespace of its own — then the same with
# /sys/kernel/rcu_expedited=1 (the control: a wait that shrinks with it is an RCU grace period),
# the setting put back as it was on exit.
#
#   sudo scripts/switch-cost.sh
#
# Not part of scripts/test.sh (it changes a host-wide setting for a few seconds).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=lib/sandbox.sh
source scripts/lib/sandbox.sh
require_root_and_packages

ns="switch-cost-$$"
expedited=$(cat /sys/kernel/rcu_expedited)
cleanup() {
    echo "$expedited" >/sys/kernel/rcu_expedited
    ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$ns"

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# Whole-process time of one `nft -f` of $1, in microseconds.
once() {
    local start end
    start=$(date +%s%N)
    ip netns exec "$ns" nft -f - <<<"$1" >/dev/null
    end=$(date +%s%N)
    echo $(((end - start) / 1000))
}

ip netns exec "$ns" nft -f - <<'NFT'
table inet t {
    map m { type inet_proto . inet_service : ipv4_addr . inet_service ; }
    chain c { type nat hook prerouting priority -100 ; dnat ip to meta l4proto . th dport map @m ; }
}
NFT

measure() {
    local noop add delete
    noop=$(for _ in $(seq 20); do once 'add table inet t'; done | median)
    add=$(for port in $(seq 1000 1019); do
        once "add element inet t m { tcp . $port : 10.0.0.2 . 8080 }"
    done | median)
    delete=$(for port in $(seq 1000 1019); do
        once "delete element inet t m { tcp . $port }"
    done | median)
    printf '| %s | %s | %s | %s |\n' "$1" "$noop" "$add" "$delete"
}

echo "| rcu_expedited | no-op transaction (us) | add a new key (us) | delete a key (us) |"
echo "|---|---|---|---|"
echo 0 >/sys/kernel/rcu_expedited
measure 0
echo 1 >/sys/kernel/rcu_expedited
measure 1
