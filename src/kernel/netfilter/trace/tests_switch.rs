//! Switches that change more than the backend, traced: a sticky canary, IPv6 coming and
//! going, host clients turned off, the hairpin set replaced, two components side by side.

use std::net::Ipv4Addr;

use super::tests::{
    dnat_of, from_lan, host, ip, packet, switch_commands, v4, web, web_at, A, B, BRIDGE, GATEWAY,
    HOST,
};
use super::*;
use crate::kernel::netfilter::ruleset::{base, hairpin, unroute};
use crate::kernel::netfilter::{Backends, Canary, ComponentRoutes, Route};
use crate::ports::PortPair;

fn both(v6: &str) -> Backends {
    Backends {
        v4: Some(Ipv4Addr::new(10, 0, 1, 11)),
        v6: v6.parse().ok(),
    }
}

#[test]
fn a_sticky_canary_splits_by_the_draw_too() {
    let mut table = web_at(A);
    let sticky = Canary {
        backend: ip(B),
        weight: 10,
        sticky: true,
    };
    table.apply(&web(v4(A), Some(sticky), false)).unwrap();
    let mut client = from_lan(HOST, 80);
    client.draw = 9;
    assert_eq!(dnat_of(&table, &client), Some((ip(B), 8080)));
    client.draw = 10;
    assert_eq!(dnat_of(&table, &client), Some((ip(A), 8080)));
}

#[test]
fn a_canary_splits_ipv4_clients_only() {
    let mut table = Table::new("handoff");
    table.apply(&base("handoff")).unwrap();
    let canary = Canary {
        backend: ip(B),
        weight: 99,
        sticky: false,
    };
    table
        .apply(&web(both("fd00:1::11"), Some(canary), false))
        .unwrap();
    let mut v6 = from_lan("fd00:2::1", 80);
    v6.draw = 0;
    assert_eq!(dnat_of(&table, &v6), Some((ip("fd00:1::11"), 8080)));
}

#[test]
fn an_ipv6_backend_that_goes_leaves_ipv6_clients_refused_again() {
    let mut table = Table::new("handoff");
    table.apply(&base("handoff")).unwrap();
    table.apply(&web(both("fd00:1::11"), None, false)).unwrap();
    let routed = ComponentRoutes {
        routes6: vec![Route {
            protocol: Protocol::Tcp,
            external: 80,
            address: ip("fd00:1::11"),
            backend_port: 8080,
        }],
        ..ComponentRoutes::default()
    };
    table
        .apply(&switch_commands(
            "handoff",
            "web",
            &[PortPair::tcp(80, 8080)],
            v4(A),
            &routed,
        ))
        .unwrap();
    let trace = table.trace(&host(), &from_lan("fd00:2::1", 80)).unwrap();
    assert_eq!(trace.verdict, Verdict::Refused);
    assert_eq!(dnat_of(&table, &from_lan(HOST, 80)), Some((ip(A), 8080)));
}

#[test]
fn ipv6_udp_of_a_component_without_an_ipv6_backend_is_refused_too() {
    let mut table = Table::new("handoff");
    table.apply(&base("handoff")).unwrap();
    let dns = [PortPair {
        protocol: Protocol::Udp,
        ..PortPair::tcp(53, 5353)
    }];
    table
        .apply(&switch_commands(
            "handoff",
            "dns",
            &dns,
            v4(A),
            &Default::default(),
        ))
        .unwrap();
    let query = packet(Protocol::Udp, "fd00:2::2", Some("eth0"), "fd00:2::1", 53);
    let trace = table.trace(&host(), &query).unwrap();
    assert_eq!(trace.verdict, Verdict::Refused);
    assert!(trace.matched[0].contains("meta l4proto udp"), "{trace:?}");
}

#[test]
fn host_clients_turned_off_lose_the_loopback_path() {
    let mut table = Table::new("handoff");
    table.apply(&base("handoff")).unwrap();
    table.apply(&web(v4(A), None, true)).unwrap();
    let loopback = packet(Protocol::Tcp, "127.0.0.1", None, "127.0.0.1", 80);
    assert_eq!(dnat_of(&table, &loopback), Some((ip(A), 8080)));
    table.apply(&web(v4(A), None, false)).unwrap();
    assert_eq!(dnat_of(&table, &loopback), None);
    assert!(table.set("localhost_ports").is_empty());
    // The host's own clients at its other addresses are served either way.
    let own = packet(Protocol::Tcp, HOST, None, GATEWAY, 80);
    assert_eq!(dnat_of(&table, &own), Some((ip(A), 8080)));
}

#[test]
fn a_replaced_hairpin_set_stops_masquerading_the_old_source() {
    let mut table = web_at(A);
    table.apply(&hairpin("handoff", &[ip(A)])).unwrap();
    let from_a = packet(Protocol::Tcp, A, Some(BRIDGE), GATEWAY, 80);
    assert!(table.trace(&host(), &from_a).unwrap().masqueraded);
    table.apply(&hairpin("handoff", &[ip(B)])).unwrap();
    assert!(!table.trace(&host(), &from_a).unwrap().masqueraded);
    let from_b = packet(Protocol::Tcp, B, Some(BRIDGE), GATEWAY, 80);
    assert!(table.trace(&host(), &from_b).unwrap().masqueraded);
}

#[test]
fn an_ipv6_hairpin_source_is_masqueraded_in_its_own_set() {
    let mut table = Table::new("handoff");
    table.apply(&base("handoff")).unwrap();
    table.apply(&web(both("fd00:1::11"), None, false)).unwrap();
    table
        .apply(&hairpin("handoff", &[ip(A), ip("fd00:1::11")]))
        .unwrap();
    assert_eq!(table.set("hairpin_sources6").len(), 1);
    let own = packet(Protocol::Tcp, "fd00:1::11", Some(BRIDGE), "fd00:2::1", 80);
    let trace = table.trace(&host(), &own).unwrap();
    assert_eq!(trace.dnat, Some((ip("fd00:1::11"), 8080)));
    assert!(trace.masqueraded);
}

#[test]
fn two_components_route_side_by_side_and_one_unrouted_leaves_the_other() {
    let mut table = web_at(A);
    let api = [PortPair::tcp(8443, 9443)];
    table
        .apply(&switch_commands(
            "handoff",
            "api",
            &api,
            v4(B),
            &Default::default(),
        ))
        .unwrap();
    assert_eq!(dnat_of(&table, &from_lan(HOST, 8443)), Some((ip(B), 9443)));
    table
        .apply(&unroute("handoff", "web", &[PortPair::tcp(80, 8080)], &[]))
        .unwrap();
    assert_eq!(dnat_of(&table, &from_lan(HOST, 80)), None);
    assert_eq!(dnat_of(&table, &from_lan(HOST, 8443)), Some((ip(B), 9443)));
}

#[test]
fn unrouting_twice_changes_nothing_the_second_time() {
    let mut table = web_at(A);
    let gone = unroute("handoff", "web", &[PortPair::tcp(80, 8080)], &[]);
    table.apply(&gone).unwrap();
    table.apply(&gone).unwrap();
    assert_eq!(dnat_of(&table, &from_lan(HOST, 80)), None);
}

#[test]
fn a_refused_command_in_the_middle_leaves_the_table_as_it_was() {
    let mut table = web_at(A);
    let mut commands = web(v4(B), None, false);
    commands.push("delete element inet handoff dispatch { tcp . 9999 }".to_string());
    assert!(table.apply(&commands).is_err());
    assert_eq!(dnat_of(&table, &from_lan(HOST, 80)), Some((ip(A), 8080)));
}
