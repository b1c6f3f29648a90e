//! The layout as a whole, traced: the migration from a table of before UDP, a layout applied
//! twice, and the vocabulary the trace refuses to guess at.

use super::tests::{
    dnat_of, from_lan, host, ip, packet, switch_commands, v4, web_at, A, BRIDGE, GATEWAY, HOST,
};
use super::*;
use crate::kernel::netfilter::ruleset::base;
use crate::ports::PortPair;

#[test]
fn a_table_from_before_udp_is_rebuilt_and_routes_as_it_did() {
    let listing: serde_json::Value = serde_json::from_str(
        r#"{"nftables": [
            {"map": {"name": "dispatch", "type": "inet_service", "elem": [[80, {"goto": {"target": "component_web"}}]]}},
            {"map": {"name": "backend_web", "elem": [[80, {"concat": ["10.0.1.11", 8080]}]]}},
            {"set": {"name": "hairpin_sources", "elem": ["10.0.1.11"]}}]}"#,
    )
    .unwrap();
    let mut table = Table::new("handoff");
    table
        .apply(&["add table inet handoff".to_string()])
        .unwrap();
    let rebuilt = crate::kernel::netfilter::migrate::rebuild("handoff", &listing).unwrap();
    table.apply(&rebuilt).unwrap();
    assert_eq!(dnat_of(&table, &from_lan(HOST, 80)), Some((ip(A), 8080)));
    let own = packet(Protocol::Tcp, A, Some(BRIDGE), GATEWAY, 80);
    assert!(
        table.trace(&host(), &own).unwrap().masqueraded,
        "hairpin kept"
    );
}

#[test]
fn the_layout_applies_twice_without_change() {
    let mut table = web_at(A);
    let before = format!("{:?}", table.map_keys("dispatch"));
    table.apply(&base("handoff")).unwrap();
    let ports = [PortPair::tcp(80, 8080)];
    table
        .apply(&switch_commands(
            "handoff",
            "web",
            &ports,
            v4(A),
            &Default::default(),
        ))
        .unwrap();
    assert_eq!(format!("{:?}", table.map_keys("dispatch")), before);
    let trace = table.trace(&host(), &from_lan(HOST, 80)).unwrap();
    assert_eq!(trace.matched.len(), 2, "one dispatch, one DNAT: {trace:?}");
}

#[test]
fn a_command_outside_the_vocabulary_is_an_error_not_a_pass() {
    let mut table = Table::new("handoff");
    table.apply(&base("handoff")).unwrap();
    for command in [
        "add rule inet handoff prerouting tcp dport 80 counter accept",
        "add rule inet other prerouting drop",
        "insert rule inet handoff prerouting drop",
    ] {
        assert!(table.apply(&[command.to_string()]).is_err(), "{command}");
    }
}
