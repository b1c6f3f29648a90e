//! The layout for IPv6 clients: their own dispatch map and backend map, and the refusals
//! for components without an IPv6 backend.

use std::net::Ipv4Addr;

use super::tests::{ports, position};
use super::*;
use crate::kernel::netfilter::{Backends, ComponentRoutes};

/// web with an IPv6 backend beside its IPv4 one (`v6`), or without one.
fn web_with_ipv6(v6: Option<&str>) -> Vec<String> {
    let ports = ports();
    route(
        DEFAULT_TABLE,
        &Switch {
            component: "web",
            current: &ComponentRoutes::default(),
            ports: &ports,
            backends: Backends {
                v4: Some(Ipv4Addr::new(10, 0, 0, 12)),
                v6: v6.map(|a| a.parse().unwrap()),
            },
            canary: None,
            localhost: false,
            links: None,
            hairpin_sources: &[],
        },
    )
}

#[test]
fn an_ipv6_backend_fills_its_own_map_and_dispatches_ipv6_clients() {
    let commands = web_with_ipv6(Some("fd00::12"));
    let flush = position(&commands, "flush map inet handoff backend6_web");
    let fill = position(
        &commands,
        "add element inet handoff backend6_web { tcp . 80 : fd00::12 . 8080, tcp . 443 : \
         fd00::12 . 8443 }",
    );
    assert!(flush < fill);
    position(
        &commands,
        "add element inet handoff dispatch6 { tcp . 80 : goto component_web, tcp . 443 : goto \
         component_web }",
    );
    // Without one, its IPv6 clients leave dispatch6 (and meet the base chain's refusals).
    let without = web_with_ipv6(None);
    assert!(!without
        .iter()
        .any(|c| c.starts_with("add element inet handoff backend6_web")));
    let added = position(
        &without,
        "add element inet handoff dispatch6 { tcp . 80 : goto component_web, tcp . 443 : goto \
         component_web }",
    );
    let deleted = position(
        &without,
        "delete element inet handoff dispatch6 { tcp . 80, tcp . 443 }",
    );
    assert!(added < deleted, "idempotent: added before it is deleted");
}

#[test]
fn ipv6_clients_are_dispatched_only_through_dispatch6_before_the_refusals() {
    let commands = base(DEFAULT_TABLE);
    let dispatched = position(
        &commands,
        "add rule inet handoff prerouting meta nfproto ipv6 fib daddr type local meta l4proto \
         { tcp, udp } meta l4proto . th dport vmap @dispatch6",
    );
    let refused = position(
        &commands,
        "add rule inet handoff prerouting meta nfproto ipv6 fib daddr type local meta \
         l4proto tcp meta l4proto . th dport @dispatch reject with tcp reset",
    );
    assert!(dispatched < refused);
    position(
        &commands,
        "add rule inet handoff output meta nfproto ipv6 ip6 daddr != ::1 fib daddr type local \
         meta l4proto { tcp, udp } meta l4proto . th dport vmap @dispatch6",
    );
    position(
        &commands,
        "add rule inet handoff postrouting ct label 127 ct status dnat ip6 saddr \
         @hairpin_sources6 masquerade",
    );
}

#[test]
fn a_components_ports_are_refused_over_ipv6_from_outside_and_from_the_host() {
    let commands = base(DEFAULT_TABLE);
    position(
        &commands,
        "add rule inet handoff prerouting meta nfproto ipv6 fib daddr type local meta \
         l4proto tcp meta l4proto . th dport @dispatch reject with tcp reset",
    );
    position(
        &commands,
        "add rule inet handoff output meta nfproto ipv6 ip6 daddr != ::1 fib daddr type \
         local meta l4proto tcp meta l4proto . th dport @dispatch reject with tcp reset",
    );
}
