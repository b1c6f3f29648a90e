//! The layout as data: what each builder emits, in which order.

use super::*;
use std::net::Ipv4Addr;

use crate::kernel::netfilter::{Backends, ComponentRoutes, Links, Route};
use crate::ports::Protocol;

pub(super) fn ports() -> Vec<PortPair> {
    vec![PortPair::tcp(80, 8080), PortPair::tcp(443, 8443)]
}

/// The commands of a switch of web (its ports 80 and 443) to `backend`, web being routed on
/// `routed` ports before.
fn route_web(
    table: &str,
    routed: &[u16],
    backend: Ipv4Addr,
    canary: Option<&Canary>,
    localhost: bool,
    links: Option<Links>,
) -> Vec<String> {
    let ports = ports();
    let current = ComponentRoutes {
        routes: routed
            .iter()
            .map(|&external| Route {
                protocol: Protocol::Tcp,
                external,
                address: IpAddr::V4(backend),
                backend_port: external,
            })
            .collect(),
        ..ComponentRoutes::default()
    };
    route(
        table,
        &Switch {
            component: "web",
            current: &current,
            ports: &ports,
            backends: Backends {
                v4: Some(backend),
                v6: None,
            },
            canary: canary.copied(),
            localhost,
            links,
            hairpin_sources: &[],
        },
    )
}

pub(super) fn position(commands: &[String], wanted: &str) -> usize {
    commands
        .iter()
        .position(|c| c == wanted)
        .unwrap_or_else(|| panic!("{wanted:?} not in {commands:#?}"))
}

#[test]
fn a_port_dropped_from_the_config_leaves_the_dispatch_map() {
    let commands = route_web(
        DEFAULT_TABLE,
        &[81],
        Ipv4Addr::new(10, 0, 0, 12),
        None,
        false,
        None,
    );
    let added = position(
        &commands,
        "add element inet handoff dispatch { tcp . 81 : goto component_web }",
    );
    let deleted = position(
        &commands,
        "delete element inet handoff dispatch { tcp . 81 }",
    );
    assert!(added < deleted, "idempotent: added before it is deleted");
    assert!(!route_web(
        DEFAULT_TABLE,
        &[],
        Ipv4Addr::new(10, 0, 0, 12),
        None,
        false,
        None
    )
    .iter()
    .any(|c| c.starts_with("delete element inet handoff dispatch {")));
}

/// web's ports routed to 10.0.0.12, nothing stale.
fn web_to_12() -> Vec<String> {
    route_web(
        DEFAULT_TABLE,
        &[],
        Ipv4Addr::new(10, 0, 0, 12),
        None,
        false,
        None,
    )
}

#[test]
fn route_refills_the_component_map_and_dispatches_its_ports() {
    let commands = web_to_12();
    let flush = position(&commands, "flush map inet handoff backend_web");
    let fill = position(
        &commands,
        "add element inet handoff backend_web { tcp . 80 : 10.0.0.12 . 8080, tcp . 443 : 10.0.0.12 . 8443 }",
    );
    assert!(flush < fill, "flush before refill");
    position(
        &commands,
        "add element inet handoff dispatch { tcp . 80 : goto component_web, tcp . 443 : goto \
         component_web }",
    );
}

#[test]
fn the_traffic_rule_is_one_map_lookup() {
    let commands = web_to_12();
    let rules: Vec<&String> = commands
        .iter()
        .filter(|c| c.starts_with("add rule inet handoff component_web"))
        .collect();
    assert_eq!(
        rules,
        [
            "add rule inet handoff component_web meta nfproto ipv4 ct label set 127 dnat ip to \
             meta l4proto . th dport map @backend_web",
            "add rule inet handoff component_web meta nfproto ipv6 ct label set 127 dnat ip6 to \
             meta l4proto . th dport map @backend6_web",
            "add rule inet handoff component_web meta l4proto tcp reject with tcp reset",
            "add rule inet handoff component_web reject",
        ]
    );
    let flushed = position(&commands, "flush chain inet handoff component_web");
    let added = position(&commands, rules[0]);
    assert!(flushed < added, "reruns never duplicate the rule");
}

#[test]
fn a_canary_rule_comes_before_the_main_one_and_without_a_canary_its_map_goes() {
    let canary = Canary {
        backend: IpAddr::from([10, 0, 0, 13]),
        weight: 10,
        sticky: false,
    };
    let commands = route_web(
        DEFAULT_TABLE,
        &[],
        Ipv4Addr::new(10, 0, 0, 12),
        Some(&canary),
        false,
        None,
    );
    let split = position(
        &commands,
        "add rule inet handoff component_web meta nfproto ipv4 ct label set 127 numgen random mod 100 < 10 \
         dnat ip to meta l4proto . th dport map @canary_web",
    );
    let main = position(
        &commands,
        "add rule inet handoff component_web meta nfproto ipv4 ct label set 127 dnat ip to meta l4proto . th dport map \
         @backend_web",
    );
    assert!(split < main, "the canary's share is taken first");
    position(
        &commands,
        "add element inet handoff canary_web { tcp . 80 : 10.0.0.13 . 8080, tcp . 443 : 10.0.0.13 . 8443 }",
    );
    assert!(!commands.iter().any(|c| c.starts_with("delete map")));
    let sticky = route_web(
        DEFAULT_TABLE,
        &[],
        Ipv4Addr::new(10, 0, 0, 12),
        Some(&Canary {
            sticky: true,
            ..canary
        }),
        false,
        None,
    );
    position(
        &sticky,
        "add rule inet handoff component_web meta nfproto ipv4 ct label set 127 jhash ip saddr mod 100 seed \
         0x68616e64 < 10 dnat ip to meta l4proto . th dport map @canary_web",
    );
    let ended = web_to_12();
    let flushed = position(&ended, "flush chain inet handoff component_web");
    let added = position(
        &ended,
        "add map inet handoff canary_web { type inet_proto . inet_service : ipv4_addr . \
         inet_service ; }",
    );
    let deleted = position(&ended, "delete map inet handoff canary_web");
    assert!(
        added < deleted && flushed < deleted,
        "idempotent, and nothing refers to it"
    );
}

#[test]
fn base_chains_are_reasserted_idempotently_in_our_table_only() {
    let commands = base(DEFAULT_TABLE);
    for command in &commands {
        assert!(
            command.contains(" inet handoff"),
            "touches only our table: {command}"
        );
        assert!(!command.starts_with("delete") && !command.starts_with("flush ruleset"));
    }
    for (name, expected) in [
        ("prerouting", 7),
        ("output", 8),
        ("postrouting", 4),
        (LOCALNET_GUARD, 1),
    ] {
        let added = commands
            .iter()
            .position(|c| c.starts_with(&format!("add chain inet handoff {name} ")))
            .unwrap();
        let flushed = position(&commands, &format!("flush chain inet handoff {name}"));
        let rules: Vec<usize> = commands
            .iter()
            .enumerate()
            .filter(|(_, c)| c.starts_with(&format!("add rule inet handoff {name} ")))
            .map(|(i, _)| i)
            .collect();
        assert!(
            added < flushed && rules.len() == expected && flushed < rules[0],
            "{name}"
        );
    }
    let prerouting = commands
        .iter()
        .find(|c| c.starts_with("add chain inet handoff prerouting "))
        .unwrap();
    assert!(prerouting.contains("type nat hook prerouting priority -110"));
    assert!(prerouting.contains("policy accept"));
}

#[test]
fn loopback_clients_reach_only_the_ports_that_ask_for_it_behind_the_localnet_guard() {
    let commands = base(DEFAULT_TABLE);
    position(
        &commands,
        "add rule inet handoff output meta nfproto ipv4 ip daddr 127.0.0.0/8 meta l4proto \
         { tcp, udp } meta l4proto . th dport @localhost_ports meta l4proto . th dport vmap \
         @dispatch",
    );
    position(
        &commands,
        "add rule inet handoff postrouting ct label 127 ct status dnat ip saddr 127.0.0.0/8 \
         masquerade",
    );
    position(
        &commands,
        "add rule inet handoff localnet_guard iifname != \"lo\" ip daddr 127.0.0.0/8 ct \
         status & dnat == 0 ct state != { established, related } drop",
    );
    let asking = route_web(
        DEFAULT_TABLE,
        &[],
        Ipv4Addr::new(10, 0, 0, 12),
        None,
        true,
        None,
    );
    position(
        &asking,
        "add element inet handoff localhost_ports { tcp . 80, tcp . 443 }",
    );
    assert!(!asking
        .iter()
        .any(|c| c.contains("delete element inet handoff localhost")));
    let not_asking = web_to_12();
    let added = position(
        &not_asking,
        "add element inet handoff localhost_ports { tcp . 80, tcp . 443 }",
    );
    let deleted = position(
        &not_asking,
        "delete element inet handoff localhost_ports { tcp . 80, tcp . 443 }",
    );
    assert!(added < deleted, "taken out idempotently");
}

#[test]
fn output_leaves_loopback_alone_and_hairpin_is_masqueraded() {
    let commands = base(DEFAULT_TABLE);
    position(
        &commands,
        "add rule inet handoff output meta nfproto ipv4 ip daddr != 127.0.0.0/8 fib daddr \
         type local meta l4proto { tcp, udp } meta l4proto . th dport vmap @dispatch",
    );
    position(
        &commands,
        "add rule inet handoff postrouting ct label 127 ct status dnat ip saddr \
         @hairpin_sources masquerade",
    );
}

#[test]
fn unroute_removes_the_component_idempotently() {
    let commands = unroute(DEFAULT_TABLE, "web", &ports(), &[]);
    let add = position(&commands, "add chain inet handoff component_web");
    let delete = position(&commands, "delete chain inet handoff component_web");
    let undispatch = position(
        &commands,
        "delete element inet handoff dispatch { tcp . 80, tcp . 443 }",
    );
    assert!(add < undispatch && undispatch < delete, "{commands:#?}");
    position(&commands, "delete map inet handoff backend_web");
    assert!(
        commands.iter().all(|c| c.contains(" inet handoff ")),
        "{commands:#?}"
    );
}

#[test]
fn another_table_name_is_used_everywhere() {
    let mut commands = base("handoff_test");
    commands.extend(route_web(
        "handoff_test",
        &[81],
        Ipv4Addr::new(10, 0, 0, 1),
        None,
        false,
        None,
    ));
    commands.extend(hairpin("handoff_test", &[IpAddr::from([10, 0, 0, 1])]));
    assert!(
        commands.iter().all(|c| c.contains(" inet handoff_test")),
        "{commands:#?}"
    );
}

#[test]
fn hairpin_set_is_replaced_whole() {
    let commands = hairpin(
        DEFAULT_TABLE,
        &[IpAddr::from([10, 0, 0, 11]), IpAddr::from([10, 0, 0, 12])],
    );
    assert_eq!(
        commands,
        [
            "flush set inet handoff hairpin_sources",
            "add element inet handoff hairpin_sources { 10.0.0.11, 10.0.0.12 }",
            "flush set inet handoff hairpin_sources6",
        ]
    );
    assert_eq!(
        hairpin(DEFAULT_TABLE, &["fd00::11".parse().unwrap()])[1..],
        [
            "flush set inet handoff hairpin_sources6",
            "add element inet handoff hairpin_sources6 { fd00::11 }"
        ]
    );
    assert_eq!(
        hairpin(DEFAULT_TABLE, &[]).len(),
        2,
        "an empty element list is not sent"
    );
}

#[test]
fn a_document_is_one_command_per_line() {
    let script = document(&[
        "add table inet handoff".into(),
        "flush chain inet handoff x".into(),
    ]);
    assert_eq!(
        script,
        "add table inet handoff\nflush chain inet handoff x\n"
    );
}

#[test]
fn a_links_port_is_reached_through_the_links_map_never_the_public_dispatch() {
    // web's port 443 is its link: reached at the gateway 172.17.0.1 only.
    let commands = route_web(
        DEFAULT_TABLE,
        &[],
        Ipv4Addr::new(10, 0, 0, 12),
        None,
        false,
        Some(Links {
            gateway: Ipv4Addr::new(172, 17, 0, 1),
            ports: &[443],
        }),
    );
    position(
        &commands,
        "add element inet handoff backend_web { tcp . 80 : 10.0.0.12 . 8080, tcp . 443 : 10.0.0.12 . 8443 }",
    );
    position(
        &commands,
        "add element inet handoff dispatch { tcp . 80 : goto component_web }",
    );
    position(
        &commands,
        "add element inet handoff link_gateways { 172.17.0.1 }",
    );
    let link = position(
        &commands,
        "add element inet handoff links { 443 : goto component_web }",
    );
    // 443 leaves the public dispatch (it may have been public before); 80 leaves the links.
    let unpublished = position(
        &commands,
        "delete element inet handoff dispatch { tcp . 443 }",
    );
    position(&commands, "delete element inet handoff links { 80 }");
    assert_ne!(link, unpublished);
    assert!(!commands
        .iter()
        .any(|c| c == "add element inet handoff localhost_ports { tcp . 80, tcp . 443 }"));
    // The links' rule is the first of prerouting, so that a link's port wins at the gateway.
    let base = base(DEFAULT_TABLE);
    let flush = position(&base, "flush chain inet handoff prerouting");
    assert_eq!(
        base[flush + 1],
        "add rule inet handoff prerouting meta nfproto ipv4 ip daddr @link_gateways fib daddr \
         . iif type local meta l4proto tcp tcp dport vmap @links"
    );
}

#[test]
fn unrouting_takes_a_port_out_of_the_links_too() {
    let commands = unroute(DEFAULT_TABLE, "web", &ports(), &[]);
    let added = position(
        &commands,
        "add element inet handoff links { 80 : goto component_web, 443 : goto component_web }",
    );
    let deleted = position(&commands, "delete element inet handoff links { 80, 443 }");
    assert!(added < deleted);
}

#[test]
fn a_udp_port_is_keyed_by_its_protocol_beside_the_same_tcp_port() {
    let ports = vec![
        PortPair::tcp(443, 8443),
        PortPair {
            protocol: Protocol::Udp,
            external: 443,
            backend: 8443,
            address: None,
        },
    ];
    let current = ComponentRoutes::default();
    let commands = route(
        DEFAULT_TABLE,
        &Switch {
            component: "web",
            current: &current,
            ports: &ports,
            backends: Backends {
                v4: Some(Ipv4Addr::new(10, 0, 0, 12)),
                v6: None,
            },
            canary: None,
            localhost: true,
            links: None,
            hairpin_sources: &[],
        },
    );
    position(
        &commands,
        "add element inet handoff backend_web { tcp . 443 : 10.0.0.12 . 8443, udp . 443 : \
         10.0.0.12 . 8443 }",
    );
    position(
        &commands,
        "add element inet handoff dispatch { tcp . 443 : goto component_web, udp . 443 : goto \
         component_web }",
    );
    position(
        &commands,
        "add element inet handoff localhost_ports { tcp . 443, udp . 443 }",
    );
    // Over IPv6 the UDP port is refused too (port unreachable: UDP has no reset).
    position(
        &base(DEFAULT_TABLE),
        "add rule inet handoff prerouting meta nfproto ipv6 fib daddr type local meta l4proto \
         udp meta l4proto . th dport @dispatch reject",
    );
}
