//! The layout of bind addresses (`ports[].address`): what a switch of a bound component emits.

use super::tests::position;
use super::*;
use std::net::Ipv4Addr;

use crate::kernel::netfilter::bindings::Binding;
use crate::kernel::netfilter::{Backends, ComponentRoutes};
use crate::ports::Protocol;

fn bound(port: u16, address: &str) -> PortPair {
    PortPair {
        address: Some(address.parse().unwrap()),
        ..PortPair::tcp(port, 8080)
    }
}

fn switch(ports: &[PortPair], current: &ComponentRoutes) -> Vec<String> {
    route(
        DEFAULT_TABLE,
        &Switch {
            component: "web",
            current,
            ports,
            backends: Backends {
                v4: Some(Ipv4Addr::new(10, 0, 0, 12)),
                v6: Some("fd00::12".parse().unwrap()),
            },
            canary: None,
            localhost: false,
            links: None,
            hairpin_sources: &[],
        },
    )
}

#[test]
fn a_bound_port_is_dispatched_by_its_address_and_never_by_port_alone() {
    let ports = [
        bound(80, "203.0.113.5"),
        bound(53, "fd00::5"),
        PortPair::tcp(443, 8443),
    ];
    let commands = switch(&ports, &ComponentRoutes::default());
    position(
        &commands,
        "add element inet handoff dispatch_bound { 203.0.113.5 . tcp . 80 : goto component_web }",
    );
    position(
        &commands,
        "add element inet handoff dispatch6_bound { fd00::5 . tcp . 53 : goto component_web }",
    );
    position(
        &commands,
        "add element inet handoff dispatch { tcp . 443 : goto component_web }",
    );
    // Bound ports leave the port-only maps (a binding added to a port routed before).
    let out = position(
        &commands,
        "delete element inet handoff dispatch { tcp . 80, tcp . 53 }",
    );
    assert!(out > 0);
    // Base chains look the bound maps up first, by the packet's own destination.
    let base = base(DEFAULT_TABLE);
    let by_address = position(
        &base,
        "add rule inet handoff prerouting meta nfproto ipv4 fib daddr type local meta l4proto { \
         tcp, udp } ip daddr . meta l4proto . th dport vmap @dispatch_bound",
    );
    let by_port = position(
        &base,
        "add rule inet handoff prerouting meta nfproto ipv4 fib daddr type local meta l4proto { \
         tcp, udp } meta l4proto . th dport vmap @dispatch",
    );
    assert!(by_address < by_port);
}

#[test]
fn a_changed_address_takes_the_old_binding_out_first() {
    let current = ComponentRoutes {
        bound: vec![Binding {
            address: "203.0.113.5".parse().unwrap(),
            key: PortKey {
                protocol: Protocol::Tcp,
                port: 80,
            },
        }],
        ..ComponentRoutes::default()
    };
    let commands = switch(&[bound(80, "203.0.113.6")], &current);
    let removed = position(
        &commands,
        "delete element inet handoff dispatch_bound { 203.0.113.5 . tcp . 80 }",
    );
    let added = commands
        .iter()
        .rposition(|c| {
            c == "add element inet handoff dispatch_bound { 203.0.113.6 . tcp . 80 : goto \
                  component_web }"
        })
        .unwrap();
    assert!(removed < added);
    // Unrouted, every binding it holds goes, the config's and the kernel's.
    let commands = unroute(
        DEFAULT_TABLE,
        "web",
        &[bound(80, "203.0.113.6")],
        &current.bound,
    );
    position(
        &commands,
        "delete element inet handoff dispatch_bound { 203.0.113.5 . tcp . 80, 203.0.113.6 . tcp \
         . 80 }",
    );
}
