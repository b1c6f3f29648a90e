//! The layout traced: packets through the commands `ruleset.rs` and `migrate.rs` emit, for
//! dispatch, canary, IPv6, UDP, links, the label and the loopback guard, with no root.

use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::kernel::netfilter::label::flow_label;
use crate::kernel::netfilter::ruleset::{base, route, unroute};
use crate::kernel::netfilter::{Backends, Canary, ComponentRoutes, Links, Switch};
use crate::ports::PortPair;

pub(super) const LAN: &str = "eth0";
pub(super) const BRIDGE: &str = "br0";
pub(super) const HOST: &str = "10.0.2.1";
pub(super) const GATEWAY: &str = "10.0.1.1";
pub(super) const A: &str = "10.0.1.11";
pub(super) const B: &str = "10.0.1.12";

pub(super) fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

pub(super) fn host() -> Host {
    Host {
        addresses: vec![
            (LAN, ip(HOST)),
            (LAN, ip("fd00:2::1")),
            (BRIDGE, ip(GATEWAY)),
        ],
    }
}

/// A packet of `protocol` from `source` (coming in by `iif`, or the host's own) to
/// `destination`:`port`, with the canary's draw `draw`.
pub(super) fn packet(
    protocol: Protocol,
    source: &str,
    iif: Option<&'static str>,
    destination: &str,
    port: u16,
) -> Packet {
    Packet {
        protocol,
        source: ip(source),
        destination: ip(destination),
        port,
        iif,
        draw: 50,
    }
}

/// A TCP packet from the LAN (10.0.2.2) to `destination`:`port`.
pub(super) fn from_lan(destination: &str, port: u16) -> Packet {
    let source = if destination.contains(':') {
        "fd00:2::2"
    } else {
        "10.0.2.2"
    };
    packet(Protocol::Tcp, source, Some(LAN), destination, port)
}

/// The switch of `component` on `ports` to `backends`, its routes as `current` had them.
pub(super) fn switch_commands(
    table: &str,
    component: &str,
    ports: &[PortPair],
    backends: Backends,
    current: &ComponentRoutes,
) -> Vec<String> {
    route(
        table,
        &Switch {
            component,
            current,
            ports,
            backends,
            canary: None,
            localhost: false,
            links: None,
            hairpin_sources: &[],
        },
    )
}

pub(super) fn v4(address: &str) -> Backends {
    Backends {
        v4: address.parse().ok(),
        v6: None,
    }
}

/// The commands of a switch of web (80 -> 8080) to `backends`, from nothing routed.
pub(super) fn web(backends: Backends, canary: Option<Canary>, localhost: bool) -> Vec<String> {
    route(
        "handoff",
        &Switch {
            component: "web",
            current: &ComponentRoutes::default(),
            ports: &[PortPair::tcp(80, 8080)],
            backends,
            canary,
            localhost,
            links: None,
            hairpin_sources: &[],
        },
    )
}

/// Table `handoff` laid out with web on 80 -> 8080 at `backend`.
pub(super) fn web_at(backend: &str) -> Table {
    let mut table = Table::new("handoff");
    table.apply(&base("handoff")).unwrap();
    let ports = [PortPair::tcp(80, 8080)];
    let commands = switch_commands("handoff", "web", &ports, v4(backend), &Default::default());
    table.apply(&commands).unwrap();
    table
}

pub(super) fn dnat_of(table: &Table, packet: &Packet) -> Option<(IpAddr, u16)> {
    table.trace(&host(), packet).unwrap().dnat
}

#[test]
fn a_client_on_the_lan_is_dnatd_to_the_backend_with_the_tables_label() {
    let table = web_at(A);
    let trace = table.trace(&host(), &from_lan(HOST, 80)).unwrap();
    assert_eq!(trace.dnat, Some((ip(A), 8080)));
    assert_eq!(trace.label, Some(flow_label("handoff")));
    assert_eq!(trace.verdict, Verdict::Accepted);
    assert!(!trace.masqueraded, "a LAN client keeps its address");
    assert!(
        trace.matched[0].starts_with("prerouting: meta nfproto ipv4"),
        "{trace:?}"
    );
}

#[test]
fn another_port_and_a_foreign_address_are_left_alone() {
    let table = web_at(A);
    assert_eq!(dnat_of(&table, &from_lan(HOST, 81)), None);
    // Not one of the host's addresses (routed through it): not ours.
    assert_eq!(dnat_of(&table, &from_lan("192.0.2.9", 80)), None);
}

#[test]
fn every_local_address_dispatches_an_unbound_port() {
    let table = web_at(A);
    assert_eq!(dnat_of(&table, &from_lan(GATEWAY, 80)), Some((ip(A), 8080)));
}

#[test]
fn a_switch_moves_new_connections_to_the_new_backend() {
    let mut table = web_at(A);
    let current = ComponentRoutes::default();
    let ports = [PortPair::tcp(80, 8080)];
    table
        .apply(&switch_commands("handoff", "web", &ports, v4(B), &current))
        .unwrap();
    assert_eq!(dnat_of(&table, &from_lan(HOST, 80)), Some((ip(B), 8080)));
}

#[test]
fn udp_is_keyed_apart_from_tcp() {
    let mut table = Table::new("handoff");
    table.apply(&base("handoff")).unwrap();
    let dns = [PortPair {
        protocol: Protocol::Udp,
        ..PortPair::tcp(53, 5353)
    }];
    let commands = switch_commands("handoff", "dns", &dns, v4(A), &Default::default());
    table.apply(&commands).unwrap();
    let udp = packet(Protocol::Udp, "10.0.2.2", Some(LAN), HOST, 53);
    assert_eq!(dnat_of(&table, &udp), Some((ip(A), 5353)));
    assert_eq!(
        dnat_of(&table, &from_lan(HOST, 53)),
        None,
        "53/tcp is not 53/udp"
    );
}

#[test]
fn ipv6_clients_of_a_component_without_an_ipv6_backend_are_refused_not_sent_to_the_host() {
    let table = web_at(A);
    let trace = table.trace(&host(), &from_lan("fd00:2::1", 80)).unwrap();
    assert_eq!(trace.verdict, Verdict::Refused);
    assert_eq!(trace.dnat, None);
    let udp = packet(Protocol::Udp, "fd00:2::2", Some(LAN), "fd00:2::1", 80);
    assert_eq!(
        table.trace(&host(), &udp).unwrap().verdict,
        Verdict::Accepted,
        "80/udp is not web's"
    );
}

#[test]
fn an_ipv6_backend_takes_the_ipv6_clients() {
    let mut table = Table::new("handoff");
    table.apply(&base("handoff")).unwrap();
    let backends = Backends {
        v4: Some(Ipv4Addr::new(10, 0, 1, 11)),
        v6: Some("fd00:1::11".parse().unwrap()),
    };
    let ports = [PortPair::tcp(80, 8080)];
    let commands = switch_commands("handoff", "web", &ports, backends, &Default::default());
    table.apply(&commands).unwrap();
    assert_eq!(
        dnat_of(&table, &from_lan("fd00:2::1", 80)),
        Some((ip("fd00:1::11"), 8080))
    );
    assert_eq!(dnat_of(&table, &from_lan(HOST, 80)), Some((ip(A), 8080)));
}

#[test]
fn the_hosts_own_clients_go_through_output() {
    let table = web_at(A);
    let own = packet(Protocol::Tcp, HOST, None, HOST, 80);
    let trace = table.trace(&host(), &own).unwrap();
    assert_eq!(trace.dnat, Some((ip(A), 8080)));
    assert!(trace.matched[0].starts_with("output: "), "{trace:?}");
}

#[test]
fn loopback_is_dispatched_only_for_components_with_host_clients() {
    let table = web_at(A);
    let loopback = packet(Protocol::Tcp, "127.0.0.1", None, "127.0.0.1", 80);
    assert_eq!(dnat_of(&table, &loopback), None, "not asked for");
    let mut table = Table::new("handoff");
    table.apply(&base("handoff")).unwrap();
    table.apply(&web(v4(A), None, true)).unwrap();
    let trace = table.trace(&host(), &loopback).unwrap();
    assert_eq!(trace.dnat, Some((ip(A), 8080)));
    assert!(
        trace.masqueraded,
        "a 127.0.0.1 source cannot leave the host"
    );
    let ipv6_loopback = packet(Protocol::Tcp, "::1", None, "::1", 80);
    assert_eq!(dnat_of(&table, &ipv6_loopback), None, "::1 is left alone");
}

#[test]
fn the_loopback_guard_drops_outside_packets_to_127_and_lets_the_host_in() {
    let table = web_at(A);
    let attack = packet(Protocol::Tcp, "10.0.2.2", Some(LAN), "127.0.0.1", 2379);
    let trace = table.trace(&host(), &attack).unwrap();
    assert_eq!(trace.verdict, Verdict::Dropped);
    assert!(
        trace.matched[0].starts_with("localnet_guard: "),
        "{trace:?}"
    );
    let from_bridge = packet(Protocol::Tcp, B, Some(BRIDGE), "127.0.0.2", 9000);
    assert_eq!(
        table.trace(&host(), &from_bridge).unwrap().verdict,
        Verdict::Dropped
    );
    let own = packet(Protocol::Tcp, "127.0.0.1", Some("lo"), "127.0.0.1", 2379);
    assert_eq!(
        table.trace(&host(), &own).unwrap().verdict,
        Verdict::Accepted
    );
}

#[test]
fn a_canary_takes_its_share_by_the_draw_and_the_rest_stays() {
    let mut table = web_at(A);
    let canary = Canary {
        backend: ip(B),
        weight: 30,
        sticky: false,
    };
    table.apply(&web(v4(A), Some(canary), false)).unwrap();
    let mut drawn = from_lan(HOST, 80);
    drawn.draw = 29;
    assert_eq!(dnat_of(&table, &drawn), Some((ip(B), 8080)));
    drawn.draw = 30;
    assert_eq!(dnat_of(&table, &drawn), Some((ip(A), 8080)));
    // Ended: everyone on the active backend again, the canary's map gone.
    let ended = switch_commands(
        "handoff",
        "web",
        &[PortPair::tcp(80, 8080)],
        v4(A),
        &Default::default(),
    );
    table.apply(&ended).unwrap();
    drawn.draw = 0;
    assert_eq!(dnat_of(&table, &drawn), Some((ip(A), 8080)));
    assert!(table.map_keys("canary_web").is_empty());
}

#[test]
fn a_link_is_reached_only_at_its_gateway_from_its_own_network() {
    let mut table = Table::new("handoff");
    table.apply(&base("handoff")).unwrap();
    let ports = [PortPair::tcp(80, 8080), PortPair::tcp(5432, 5432)];
    let commands = route(
        "handoff",
        &Switch {
            component: "db",
            current: &ComponentRoutes::default(),
            ports: &ports,
            backends: v4(A),
            canary: None,
            localhost: false,
            links: Some(Links {
                gateway: Ipv4Addr::new(10, 0, 1, 1),
                ports: &[5432],
            }),
            hairpin_sources: &[],
        },
    );
    table.apply(&commands).unwrap();
    let caller = packet(Protocol::Tcp, B, Some(BRIDGE), GATEWAY, 5432);
    let trace = table.trace(&host(), &caller).unwrap();
    assert_eq!(trace.dnat, Some((ip(A), 5432)));
    assert!(
        trace.masqueraded,
        "the backend would answer the caller directly"
    );
    // From the LAN, at the gateway's address or the host's: not a public port.
    let outside = packet(Protocol::Tcp, "10.0.2.2", Some(LAN), GATEWAY, 5432);
    assert_eq!(dnat_of(&table, &outside), None);
    assert_eq!(dnat_of(&table, &from_lan(HOST, 5432)), None);
    // The control: its public port is public.
    assert_eq!(dnat_of(&table, &from_lan(HOST, 80)), Some((ip(A), 8080)));
}

#[test]
fn unrouted_the_component_leaves_no_way_in() {
    let mut table = web_at(A);
    table
        .apply(&unroute("handoff", "web", &[PortPair::tcp(80, 8080)], &[]))
        .unwrap();
    assert_eq!(dnat_of(&table, &from_lan(HOST, 80)), None);
    assert!(!table.has_chain("component_web"));
    assert!(table.map_keys("dispatch").is_empty());
}

#[test]
fn a_port_dropped_from_the_config_is_no_longer_dispatched() {
    let mut table = Table::new("handoff");
    table.apply(&base("handoff")).unwrap();
    let both = [PortPair::tcp(80, 8080), PortPair::tcp(443, 8443)];
    table
        .apply(&switch_commands(
            "handoff",
            "web",
            &both,
            v4(A),
            &Default::default(),
        ))
        .unwrap();
    let current = ComponentRoutes {
        routes: both
            .iter()
            .map(|p| crate::kernel::netfilter::Route {
                protocol: p.protocol,
                external: p.external,
                address: ip(A),
                backend_port: p.backend,
            })
            .collect(),
        ..ComponentRoutes::default()
    };
    let only_80 = [PortPair::tcp(80, 8080)];
    table
        .apply(&switch_commands(
            "handoff",
            "web",
            &only_80,
            v4(A),
            &current,
        ))
        .unwrap();
    assert_eq!(dnat_of(&table, &from_lan(HOST, 443)), None);
    assert_eq!(dnat_of(&table, &from_lan(HOST, 80)), Some((ip(A), 8080)));
}

#[test]
fn two_components_cannot_take_one_port_and_the_refused_transaction_changes_nothing() {
    let mut table = web_at(A);
    let commands = switch_commands(
        "handoff",
        "api",
        &[PortPair::tcp(80, 9090)],
        v4(B),
        &Default::default(),
    );
    let error = format!("{:#}", table.apply(&commands).unwrap_err());
    assert!(error.contains("File exists"), "{error}");
    assert!(
        !table.has_chain("component_api"),
        "nothing of the transaction stayed"
    );
    assert_eq!(dnat_of(&table, &from_lan(HOST, 80)), Some((ip(A), 8080)));
}

#[test]
fn a_named_table_labels_its_flows_with_its_own_bit_and_masquerades_only_those() {
    let mut table = Table::new("blue");
    table.apply(&base("blue")).unwrap();
    let commands = route(
        "blue",
        &Switch {
            component: "web",
            current: &ComponentRoutes::default(),
            ports: &[PortPair::tcp(80, 8080)],
            backends: v4(A),
            canary: None,
            localhost: false,
            links: None,
            hairpin_sources: &[ip(A)],
        },
    );
    table.apply(&commands).unwrap();
    table
        .apply(&crate::kernel::netfilter::ruleset::hairpin(
            "blue",
            &[ip(A)],
        ))
        .unwrap();
    let own = packet(Protocol::Tcp, A, Some(BRIDGE), GATEWAY, 80);
    let trace = table.trace(&host(), &own).unwrap();
    assert_eq!(trace.label, Some(flow_label("blue")));
    assert_ne!(trace.label, Some(127));
    assert!(
        trace.masqueraded,
        "a backend calling its own component is masqueraded"
    );
    assert!(
        trace
            .matched
            .iter()
            .any(|m| m.contains(&format!("ct label {}", flow_label("blue")))),
        "{trace:?}"
    );
}

#[test]
fn a_neighbour_on_the_bridge_is_not_masqueraded_unless_it_is_a_hairpin_source() {
    let table = web_at(A);
    let neighbour = packet(Protocol::Tcp, B, Some(BRIDGE), GATEWAY, 80);
    let trace = table.trace(&host(), &neighbour).unwrap();
    assert_eq!(trace.dnat, Some((ip(A), 8080)));
    assert!(!trace.masqueraded);
}
