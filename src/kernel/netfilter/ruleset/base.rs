//! The table's shared part, laid out idempotently by every layout: the table, the shared maps
//! and sets, and the base chains with their rules (see [`super`] for the layout).

use super::super::bindings::{BOUND6_KEY, BOUND_KEY, DISPATCH6_BOUND_MAP, DISPATCH_BOUND_MAP};
use super::super::label::flow_label;
use super::*;

/// The bound ports' dispatch (see `bindings.rs`): a local address, the protocol and the port.
const DISPATCH_BOUND: &str = "fib daddr type local meta l4proto { tcp, udp } \
     ip daddr . meta l4proto . th dport vmap @dispatch_bound";
const DISPATCH6_BOUND: &str = "fib daddr type local meta l4proto { tcp, udp } \
     ip6 daddr . meta l4proto . th dport vmap @dispatch6_bound";

/// Table, maps, sets and base chains with their rules, idempotently: `add` of an existing
/// table, chain, map or set is a no-op, and base chains are flushed before their rule is added
/// again, so a rerun never duplicates a rule.
pub fn base(table: &str) -> Vec<String> {
    let t = format!("inet {table}");
    let label = flow_label(table);
    vec![
        format!("add table {t}"),
        format!("add map {t} {DISPATCH_MAP} {{ type {PORT_KEY} : verdict ; }}"),
        format!("add map {t} {DISPATCH6_MAP} {{ type {PORT_KEY} : verdict ; }}"),
        format!("add set {t} {HAIRPIN_SET} {{ type ipv4_addr ; }}"),
        format!("add set {t} {HAIRPIN6_SET} {{ type ipv6_addr ; }}"),
        format!("add set {t} {LOCALHOST_SET} {{ type {PORT_KEY} ; }}"),
        format!("add set {t} {LINK_GATEWAYS_SET} {{ type ipv4_addr ; }}"),
        format!("add map {t} {LINKS_MAP} {{ type inet_service : verdict ; }}"),
        format!("add map {t} {DISPATCH_BOUND_MAP} {{ type {BOUND_KEY} : verdict ; }}"),
        format!("add map {t} {DISPATCH6_BOUND_MAP} {{ type {BOUND6_KEY} : verdict ; }}"),
        format!(
            "add chain {t} prerouting {{ type nat hook prerouting priority {DSTNAT_PRIORITY} ; \
             policy accept ; }}"
        ),
        format!("flush chain {t} prerouting"),
        format!(
            "add rule {t} prerouting meta nfproto ipv4 ip daddr @{LINK_GATEWAYS_SET} \
             fib daddr . iif type local meta l4proto tcp tcp dport vmap @{LINKS_MAP}"
        ),
        format!("add rule {t} prerouting meta nfproto ipv4 {DISPATCH_BOUND}"),
        format!("add rule {t} prerouting meta nfproto ipv4 {DISPATCH}"),
        format!("add rule {t} prerouting meta nfproto ipv6 {DISPATCH6_BOUND}"),
        format!("add rule {t} prerouting meta nfproto ipv6 {DISPATCH6}"),
        format!(
            "add rule {t} prerouting meta nfproto ipv6 {}",
            REFUSE_IPV6[0]
        ),
        format!(
            "add rule {t} prerouting meta nfproto ipv6 {}",
            REFUSE_IPV6[1]
        ),
        format!(
            "add chain {t} output {{ type nat hook output priority {DSTNAT_PRIORITY} ; \
             policy accept ; }}"
        ),
        format!("flush chain {t} output"),
        format!("add rule {t} output meta nfproto ipv4 ip daddr != 127.0.0.0/8 {DISPATCH_BOUND}"),
        format!("add rule {t} output meta nfproto ipv4 ip daddr != 127.0.0.0/8 {DISPATCH}"),
        format!(
            "add rule {t} output meta nfproto ipv4 ip daddr 127.0.0.0/8 meta l4proto {{ tcp, \
             udp }} meta l4proto . th dport @{LOCALHOST_SET} ip daddr . meta l4proto . th dport \
             vmap @{DISPATCH_BOUND_MAP}"
        ),
        format!(
            "add rule {t} output meta nfproto ipv4 ip daddr 127.0.0.0/8 meta l4proto {{ tcp, \
             udp }} meta l4proto . th dport @{LOCALHOST_SET} meta l4proto . th dport vmap \
             @dispatch"
        ),
        format!("add rule {t} output meta nfproto ipv6 ip6 daddr != ::1 {DISPATCH6_BOUND}"),
        format!("add rule {t} output meta nfproto ipv6 ip6 daddr != ::1 {DISPATCH6}"),
        format!(
            "add rule {t} output meta nfproto ipv6 ip6 daddr != ::1 {}",
            REFUSE_IPV6[0]
        ),
        format!(
            "add rule {t} output meta nfproto ipv6 ip6 daddr != ::1 {}",
            REFUSE_IPV6[1]
        ),
        format!(
            "add chain {t} postrouting {{ type nat hook postrouting priority {SRCNAT_PRIORITY} ; \
             policy accept ; }}"
        ),
        format!("flush chain {t} postrouting"),
        format!(
            "add rule {t} postrouting ct label {label} ct status dnat ip saddr \
             @{HAIRPIN_SET} masquerade"
        ),
        format!(
            "add rule {t} postrouting ct label {label} ct status dnat ip6 saddr \
             @{HAIRPIN6_SET} masquerade"
        ),
        format!(
            "add rule {t} postrouting ct label {label} ct status dnat ip saddr \
             127.0.0.0/8 masquerade"
        ),
        format!(
            "add rule {t} postrouting ct label {label} ct status dnat ct original ip \
             daddr @{LINK_GATEWAYS_SET} masquerade"
        ),
        format!(
            "add chain {t} {LOCALNET_GUARD} {{ type filter hook input priority filter ; \
             policy accept ; }}"
        ),
        format!("flush chain {t} {LOCALNET_GUARD}"),
        format!(
            "add rule {t} {LOCALNET_GUARD} iifname != \"lo\" ip daddr 127.0.0.0/8 \
             ct status & dnat == 0 ct state != {{ established, related }} drop"
        ),
    ]
}
