//! Bind addresses traced (`ports[].address`): a bound port is the component's on its address
//! only, two components share a port on two addresses, and a changed or dropped address
//! leaves nothing behind.

use super::tests::{from_lan, host, ip, packet, switch_commands, v4, web_at, A, B, BRIDGE, HOST};
use super::*;
use crate::kernel::netfilter::bindings::Binding;
use crate::kernel::netfilter::ruleset::{base, unroute};
use crate::kernel::netfilter::{Backends, ComponentRoutes};
use crate::ports::{PortKey, PortPair};

const SECOND: &str = "10.0.2.3";

fn bound(port: u16, address: &str) -> PortPair {
    PortPair {
        address: Some(ip(address)),
        ..PortPair::tcp(port, 8080)
    }
}

fn host_with_second_address() -> Host {
    let mut host = host();
    host.addresses.push(("eth0", ip(SECOND)));
    host.addresses.push(("eth0", ip("fd00:2::3")));
    host
}

fn laid_out(components: &[(&str, PortPair, &str)]) -> Table {
    let mut table = Table::new("handoff");
    table.apply(&base("handoff")).unwrap();
    for (name, port, backend) in components {
        let commands = switch_commands("handoff", name, &[*port], v4(backend), &Default::default());
        table.apply(&commands).unwrap();
    }
    table
}

fn dnat(table: &Table, packet: &Packet) -> Option<(IpAddr, u16)> {
    table
        .trace(&host_with_second_address(), packet)
        .unwrap()
        .dnat
}

#[test]
fn a_bound_port_is_dispatched_only_for_its_address() {
    let table = laid_out(&[("web", bound(80, HOST), A)]);
    assert_eq!(dnat(&table, &from_lan(HOST, 80)), Some((ip(A), 8080)));
    assert_eq!(
        dnat(&table, &from_lan(SECOND, 80)),
        None,
        "the host's there"
    );
}

#[test]
fn two_components_share_one_port_on_two_addresses() {
    let table = laid_out(&[("web", bound(80, HOST), A), ("api", bound(80, SECOND), B)]);
    assert_eq!(dnat(&table, &from_lan(HOST, 80)), Some((ip(A), 8080)));
    assert_eq!(dnat(&table, &from_lan(SECOND, 80)), Some((ip(B), 8080)));
}

#[test]
fn a_port_bound_twice_on_one_address_is_refused_whole() {
    let mut table = laid_out(&[("web", bound(80, HOST), A)]);
    let commands = switch_commands(
        "handoff",
        "api",
        &[bound(80, HOST)],
        v4(B),
        &Default::default(),
    );
    assert!(table.apply(&commands).is_err());
    assert_eq!(dnat(&table, &from_lan(HOST, 80)), Some((ip(A), 8080)));
    assert!(!table.has_chain("component_api"));
}

#[test]
fn a_port_bound_to_an_ipv4_address_leaves_ipv6_to_the_host_unrefused() {
    let table = laid_out(&[("web", bound(80, HOST), A)]);
    let trace = table
        .trace(&host_with_second_address(), &from_lan("fd00:2::1", 80))
        .unwrap();
    assert_eq!(trace.verdict, Verdict::Accepted);
    assert_eq!(trace.dnat, None);
}

#[test]
fn an_ipv6_binding_takes_its_address_only() {
    let mut table = Table::new("handoff");
    table.apply(&base("handoff")).unwrap();
    let backends = Backends {
        v4: None,
        v6: Some("fd00:1::11".parse().unwrap()),
    };
    let ports = [bound(80, "fd00:2::1")];
    table
        .apply(&switch_commands(
            "handoff",
            "web",
            &ports,
            backends,
            &Default::default(),
        ))
        .unwrap();
    assert_eq!(
        dnat(&table, &from_lan("fd00:2::1", 80)),
        Some((ip("fd00:1::11"), 8080))
    );
    assert_eq!(dnat(&table, &from_lan("fd00:2::3", 80)), None);
    assert_eq!(dnat(&table, &from_lan(HOST, 80)), None);
}

#[test]
fn the_hosts_own_clients_reach_a_bound_port_at_its_address_only() {
    let table = laid_out(&[("web", bound(80, HOST), A)]);
    let own = packet(Protocol::Tcp, HOST, None, HOST, 80);
    assert_eq!(dnat(&table, &own), Some((ip(A), 8080)));
    let elsewhere = packet(Protocol::Tcp, HOST, None, SECOND, 80);
    assert_eq!(dnat(&table, &elsewhere), None);
}

#[test]
fn a_changed_address_moves_the_port_and_leaves_nothing_at_the_old_one() {
    let mut table = laid_out(&[("web", bound(80, HOST), A)]);
    let current = ComponentRoutes {
        bound: vec![Binding {
            address: ip(HOST),
            key: PortKey {
                protocol: Protocol::Tcp,
                port: 80,
            },
        }],
        ..ComponentRoutes::default()
    };
    let moved = switch_commands("handoff", "web", &[bound(80, SECOND)], v4(A), &current);
    table.apply(&moved).unwrap();
    assert_eq!(dnat(&table, &from_lan(SECOND, 80)), Some((ip(A), 8080)));
    assert_eq!(dnat(&table, &from_lan(HOST, 80)), None);
    // Unbound again: every address.
    let current = ComponentRoutes {
        bound: vec![Binding {
            address: ip(SECOND),
            key: PortKey {
                protocol: Protocol::Tcp,
                port: 80,
            },
        }],
        ..ComponentRoutes::default()
    };
    let everywhere = switch_commands(
        "handoff",
        "web",
        &[PortPair::tcp(80, 8080)],
        v4(A),
        &current,
    );
    table.apply(&everywhere).unwrap();
    assert_eq!(dnat(&table, &from_lan(HOST, 80)), Some((ip(A), 8080)));
    assert_eq!(dnat(&table, &from_lan(SECOND, 80)), Some((ip(A), 8080)));
    assert!(table.map_keys("dispatch_bound").is_empty());
}

#[test]
fn a_port_that_becomes_bound_leaves_the_port_only_dispatch() {
    let mut table = web_at(A);
    let bind = switch_commands(
        "handoff",
        "web",
        &[bound(80, HOST)],
        v4(A),
        &Default::default(),
    );
    table.apply(&bind).unwrap();
    assert_eq!(dnat(&table, &from_lan(SECOND, 80)), None);
    assert_eq!(dnat(&table, &from_lan(HOST, 80)), Some((ip(A), 8080)));
}

#[test]
fn unrouted_a_bound_component_takes_its_bindings_with_it_and_leaves_the_others() {
    let mut table = laid_out(&[("web", bound(80, HOST), A), ("api", bound(80, SECOND), B)]);
    let held = [Binding {
        address: ip(HOST),
        key: PortKey {
            protocol: Protocol::Tcp,
            port: 80,
        },
    }];
    table
        .apply(&unroute("handoff", "web", &[bound(80, HOST)], &held))
        .unwrap();
    assert_eq!(dnat(&table, &from_lan(HOST, 80)), None);
    assert_eq!(dnat(&table, &from_lan(SECOND, 80)), Some((ip(B), 8080)));
}

#[test]
fn a_bound_component_calling_itself_through_the_host_is_masqueraded() {
    let mut table = laid_out(&[("web", bound(80, HOST), A)]);
    table
        .apply(&crate::kernel::netfilter::ruleset::hairpin(
            "handoff",
            &[ip(A)],
        ))
        .unwrap();
    let own = packet(Protocol::Tcp, A, Some(BRIDGE), HOST, 80);
    let trace = table.trace(&host_with_second_address(), &own).unwrap();
    assert_eq!(trace.dnat, Some((ip(A), 8080)));
    assert!(trace.masqueraded);
}
