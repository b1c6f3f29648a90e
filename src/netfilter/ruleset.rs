//! handoff's nftables layout, built as data (nft JSON commands) so it can be unit-tested and
//! applied in one atomic transaction.
//!
//! One table of our own; nothing outside it is ever touched:
//!
//! ```text
//! table inet handoff {
//!     # external port -> the chain of the component that owns it: one lookup dispatches
//!     # every component, however many there are
//!     map dispatch { type inet_service : verdict }
//!
//!     # per component: external port -> backend address . backend port
//!     map backend_web { type inet_service : ipv4_addr . inet_service }
//!
//!     # backend addresses whose own connections to a component are masqueraded (hairpin:
//!     # without it the reply would go straight back over the bridge, bypassing the host)
//!     set hairpin_sources { type ipv4_addr }
//!
//!     # traffic from other hosts to the host's own addresses
//!     chain prerouting { type nat hook prerouting priority dstnat - 10; policy accept;
//!         meta nfproto ipv4 fib daddr type local meta l4proto tcp tcp dport vmap @dispatch }
//!     # clients on the host itself (127.0.0.0/8 is left alone: its replies cannot be routed)
//!     chain output { type nat hook output priority -110; policy accept;
//!         meta nfproto ipv4 ip daddr != 127.0.0.0/8 fib daddr type local
//!         meta l4proto tcp tcp dport vmap @dispatch }
//!     # the rule that carries the component's traffic: one map lookup, nothing else
//!     chain component_web { dnat ip to tcp dport map @backend_web }
//!     chain postrouting { type nat hook postrouting priority srcnat - 10; policy accept;
//!         ct status dnat ip saddr @hairpin_sources masquerade }
//! }
//! ```
//!
//! NAT chains only see the first packet of a connection; conntrack carries every later packet
//! with the binding it recorded. That is why replacing `backend_web`'s elements moves *new*
//! connections while every existing one stays on the backend it started with.
//!
//! A switch flushes and refills the component's map in the same transaction that re-asserts
//! the base chains (add is idempotent for tables, chains and maps; rules are flushed and added
//! again so a rerun never duplicates them). Changing an element in place is not possible: the
//! kernel refuses an `add` whose key exists with other data.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use crate::config::PortPair;

/// The name of our table (family `inet`).
pub const TABLE: &str = "handoff";
pub const DISPATCH_MAP: &str = "dispatch";
pub const HAIRPIN_SET: &str = "hairpin_sources";
/// Priority of our NAT chains: just before the usual `dstnat` (-100) so that our DNAT is the
/// one that decides, ahead of Docker's or anyone else's.
pub const DSTNAT_PRIORITY: i32 = -110;
/// Just before the usual `srcnat` (100).
pub const SRCNAT_PRIORITY: i32 = 90;

/// A component's name as it appears in nftables object names. Component names may contain
/// `-` and `.`, which the nft command line does not accept in identifiers, so they are encoded
/// injectively: `_` -> `__`, `-` -> `_h`, `.` -> `_d`.
pub fn object_suffix(component: &str) -> String {
    let mut out = String::with_capacity(component.len() + 4);
    for c in component.chars() {
        match c {
            '_' => out.push_str("__"),
            '-' => out.push_str("_h"),
            '.' => out.push_str("_d"),
            other => out.push(other),
        }
    }
    out
}

pub fn backend_map(component: &str) -> String {
    format!("backend_{}", object_suffix(component))
}

pub fn component_chain(component: &str) -> String {
    format!("component_{}", object_suffix(component))
}

fn table() -> Value {
    json!({"family": "inet", "name": TABLE})
}

fn chain(name: &str) -> Value {
    json!({"family": "inet", "table": TABLE, "name": name})
}

fn base_chain(name: &str, hook: &str, kind: &str, priority: i32) -> Value {
    json!({"family": "inet", "table": TABLE, "name": name, "type": kind, "hook": hook,
           "prio": priority, "policy": "accept"})
}

fn rule(chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": "inet", "table": TABLE, "chain": chain, "expr": expr}}})
}

fn matches(left: Value, op: &str, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn tcp_dport() -> Value {
    json!({"payload": {"protocol": "tcp", "field": "dport"}})
}

/// `meta nfproto ipv4 [extra] fib daddr type local meta l4proto tcp tcp dport vmap @dispatch`
fn dispatch_rule(chain: &str, extra: Option<Value>) -> Value {
    let mut expr = vec![matches(meta("nfproto"), "==", json!("ipv4"))];
    expr.extend(extra);
    expr.push(matches(
        json!({"fib": {"result": "type", "flags": ["daddr"]}}),
        "==",
        json!("local"),
    ));
    expr.push(matches(meta("l4proto"), "==", json!("tcp")));
    expr.push(json!({"vmap": {"key": tcp_dport(), "data": format!("@{DISPATCH_MAP}")}}));
    rule(chain, expr)
}

/// Table, maps, sets and base chains with their rules, idempotently.
pub fn base() -> Vec<Value> {
    let mut commands = vec![
        json!({"add": {"table": table()}}),
        json!({"add": {"map": {"family": "inet", "table": TABLE, "name": DISPATCH_MAP,
                                "type": "inet_service", "map": "verdict"}}}),
        json!({"add": {"set": {"family": "inet", "table": TABLE, "name": HAIRPIN_SET,
                                "type": "ipv4_addr"}}}),
    ];
    let chains = [
        ("prerouting", "prerouting", "nat", DSTNAT_PRIORITY),
        ("output", "output", "nat", DSTNAT_PRIORITY),
        ("postrouting", "postrouting", "nat", SRCNAT_PRIORITY),
    ];
    for (name, hook, kind, priority) in chains {
        commands.push(json!({"add": {"chain": base_chain(name, hook, kind, priority)}}));
        commands.push(json!({"flush": {"chain": chain(name)}}));
    }
    commands.push(dispatch_rule("prerouting", None));
    commands.push(dispatch_rule(
        "output",
        Some(matches(
            json!({"payload": {"protocol": "ip", "field": "daddr"}}),
            "!=",
            json!({"prefix": {"addr": "127.0.0.0", "len": 8}}),
        )),
    ));
    commands.push(rule(
        "postrouting",
        vec![
            matches(json!({"ct": {"key": "status"}}), "in", json!("dnat")),
            matches(
                json!({"payload": {"protocol": "ip", "field": "saddr"}}),
                "==",
                json!(format!("@{HAIRPIN_SET}")),
            ),
            json!({"masquerade": null}),
        ],
    ));
    commands
}

/// Point every external port of `component` at `backend`: flush its map and refill it, make
/// sure its chain and dispatch entries exist.
pub fn route(component: &str, ports: &[PortPair], backend: Ipv4Addr) -> Vec<Value> {
    let map = backend_map(component);
    let chain_name = component_chain(component);
    let backend_elements: Vec<Value> = ports
        .iter()
        .map(|p| json!([p.external, {"concat": [backend.to_string(), p.backend]}]))
        .collect();
    let dispatch_elements: Vec<Value> = ports
        .iter()
        .map(|p| json!([p.external, {"goto": {"target": chain_name}}]))
        .collect();
    vec![
        json!({"add": {"map": {"family": "inet", "table": TABLE, "name": map,
                                "type": "inet_service", "map": ["ipv4_addr", "inet_service"]}}}),
        json!({"add": {"chain": chain(&chain_name)}}),
        json!({"flush": {"chain": chain(&chain_name)}}),
        rule(
            &chain_name,
            vec![json!({"dnat": {"family": "ip",
                                  "addr": {"map": {"key": tcp_dport(), "data": format!("@{map}")}}}})],
        ),
        json!({"flush": {"map": {"family": "inet", "table": TABLE, "name": map}}}),
        json!({"add": {"element": {"family": "inet", "table": TABLE, "name": map,
                                    "elem": backend_elements}}}),
        json!({"add": {"element": {"family": "inet", "table": TABLE, "name": DISPATCH_MAP,
                                    "elem": dispatch_elements}}}),
    ]
}

/// Replace the hairpin set with exactly `sources`.
pub fn hairpin(sources: &[Ipv4Addr]) -> Vec<Value> {
    let mut commands = vec![json!({"flush": {"set": {"family": "inet", "table": TABLE,
                                                     "name": HAIRPIN_SET}}})];
    if !sources.is_empty() {
        let elements: Vec<Value> = sources.iter().map(|a| json!(a.to_string())).collect();
        commands.push(json!({"add": {"element": {"family": "inet", "table": TABLE,
                                                  "name": HAIRPIN_SET, "elem": elements}}}));
    }
    commands
}

/// Wrap commands into one nft JSON document: one document is one kernel transaction.
pub fn document(commands: Vec<Value>) -> Value {
    json!({"nftables": commands})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> Vec<PortPair> {
        vec![
            PortPair { external: 80, backend: 8080 },
            PortPair { external: 443, backend: 8443 },
        ]
    }

    #[test]
    fn object_names_are_encoded_injectively() {
        assert_eq!(object_suffix("web"), "web");
        assert_eq!(object_suffix("my-web.v2_x"), "my_hweb_dv2__x");
        assert_ne!(object_suffix("a-b"), object_suffix("a_hb"));
        assert_eq!(backend_map("a.b"), "backend_a_db");
        assert_eq!(component_chain("a-b"), "component_a_hb");
    }

    #[test]
    fn route_refills_the_component_map_and_dispatches_its_ports() {
        let commands = route("web", &ports(), Ipv4Addr::new(10, 0, 0, 12));
        let flush = commands.iter().position(|c| c["flush"]["map"]["name"] == "backend_web");
        let fill = commands
            .iter()
            .position(|c| c["add"]["element"]["name"] == "backend_web")
            .expect("elements added");
        assert!(flush.expect("map flushed") < fill, "flush before refill");
        assert_eq!(
            commands[fill]["add"]["element"]["elem"],
            json!([[80, {"concat": ["10.0.0.12", 8080]}], [443, {"concat": ["10.0.0.12", 8443]}]])
        );
        let dispatch = commands
            .iter()
            .find(|c| c["add"]["element"]["name"] == DISPATCH_MAP)
            .expect("dispatch elements");
        assert_eq!(
            dispatch["add"]["element"]["elem"][1],
            json!([443, {"goto": {"target": "component_web"}}])
        );
    }

    #[test]
    fn the_traffic_rule_is_one_map_lookup() {
        let commands = route("web", &ports(), Ipv4Addr::new(10, 0, 0, 12));
        let rules: Vec<&Value> = commands
            .iter()
            .filter(|c| c["add"]["rule"]["chain"] == "component_web")
            .collect();
        assert_eq!(rules.len(), 1);
        let expr = rules[0]["add"]["rule"]["expr"].as_array().unwrap();
        assert_eq!(expr.len(), 1, "no counters, logs or extra matches: {expr:?}");
        assert_eq!(expr[0]["dnat"]["addr"]["map"]["data"], "@backend_web");
        assert!(
            commands.iter().any(|c| c["flush"]["chain"]["name"] == "component_web"),
            "the chain is flushed before its rule is added, so reruns never duplicate it"
        );
    }

    #[test]
    fn base_chains_are_reasserted_idempotently_in_our_table_only() {
        let commands = base();
        for command in &commands {
            let object = command
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(Value::as_object)
                .and_then(|o| o.values().next())
                .expect("command shape");
            let table = object.get("table").or(object.get("name")).unwrap();
            assert_eq!(table, TABLE, "{command}");
            assert_eq!(object["family"], "inet");
        }
        for name in ["prerouting", "output", "postrouting"] {
            let added = commands
                .iter()
                .position(|c| c["add"]["chain"]["name"] == name)
                .unwrap();
            let flushed = commands
                .iter()
                .position(|c| c["flush"]["chain"]["name"] == name)
                .unwrap();
            let rules = commands
                .iter()
                .filter(|c| c["add"]["rule"]["chain"] == name)
                .count();
            assert!(added < flushed);
            assert_eq!(rules, 1, "{name}");
        }
        let prerouting = commands
            .iter()
            .find(|c| c["add"]["chain"]["name"] == "prerouting")
            .unwrap();
        assert_eq!(prerouting["add"]["chain"]["prio"], DSTNAT_PRIORITY);
        assert_eq!(prerouting["add"]["chain"]["policy"], "accept");
    }

    #[test]
    fn output_leaves_loopback_alone() {
        let commands = base();
        let output = commands
            .iter()
            .find(|c| c["add"]["rule"]["chain"] == "output")
            .unwrap();
        let text = output.to_string();
        assert!(text.contains(r#""addr":"127.0.0.0","len":8"#), "{text}");
    }

    #[test]
    fn hairpin_set_is_replaced_whole() {
        let commands = hairpin(&[Ipv4Addr::new(10, 0, 0, 11), Ipv4Addr::new(10, 0, 0, 12)]);
        assert_eq!(commands[0]["flush"]["set"]["name"], HAIRPIN_SET);
        assert_eq!(commands[1]["add"]["element"]["elem"], json!(["10.0.0.11", "10.0.0.12"]));
        assert_eq!(hairpin(&[]).len(), 1, "an empty element list is not sent");
    }
}
