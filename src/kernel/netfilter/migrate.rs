//! Tables laid out by a handoff from before UDP ports: their port maps and sets are keyed by
//! `inet_service` alone, where the layout now keys them by `inet_proto . inet_service`. An
//! nftables object cannot change its type in place (`add map` of an existing name with
//! another type fails), so the first change a newer handoff makes to such a table rebuilds it:
//! in the same transaction as that change, the table is deleted and laid out again with every
//! component routed as it was (backend, canary and its share, loopback clients, hairpin set).
//!
//! No connection notices: conntrack keeps every flow's binding whatever the table holds, and
//! one transaction means new connections see the old table or the new one, never neither.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::Result;
use serde_json::Value;

use super::listing::{objects, parse_backend_maps};
use super::{ruleset, Backends, Canary, ComponentRoutes, Switch};
use crate::ports::PortPair;

/// Whether `dispatch` (as `nft -j list map` shows it) has the layout from before UDP.
pub fn needs_rebuild(dispatch: &Value) -> bool {
    objects(dispatch, "map").any(|map| {
        map.get("name").and_then(Value::as_str) == Some(ruleset::DISPATCH_MAP)
            && map.get("type").and_then(Value::as_str) == Some("inet_service")
    })
}

/// The commands that delete `table` and lay it out again from `listing` (the old table as
/// `nft -j list table` shows it), every component routed as it was.
pub fn rebuild(table: &str, listing: &Value) -> Result<Vec<String>> {
    let mut commands = vec![format!("delete table inet {table}")];
    commands.extend(ruleset::base(table));
    let mut routed: Vec<(String, ComponentRoutes)> =
        parse_backend_maps(listing)?.into_iter().collect();
    routed.sort_by(|a, b| a.0.cmp(&b.0));
    for (component, routes) in routed {
        // A table from before UDP is from before IPv6 too: IPv4 routes only.
        let Some(IpAddr::V4(backend)) = routes.active() else {
            continue;
        };
        let ports: Vec<PortPair> = routes.routes.iter().map(|r| r.pair()).collect();
        let canary = routes.canary().and_then(|canary_backend| {
            let (weight, sticky) = canary_split(listing, &component)?;
            Some(Canary {
                backend: canary_backend,
                weight,
                sticky,
            })
        });
        commands.extend(ruleset::route(
            table,
            &Switch {
                component: &component,
                current: &ComponentRoutes::default(),
                ports: &ports,
                backends: Backends {
                    v4: Some(backend),
                    v6: None,
                },
                canary,
                localhost: routes.localhost,
                links: None,
                hairpin_sources: &[],
            },
        ));
    }
    commands.extend(ruleset::hairpin(table, &hairpin_sources(listing)));
    Ok(commands)
}

/// The canary rule's share and kind in `component`'s chain: `numgen random mod 100 < PCT`, or
/// sticky, `jhash ... < PCT`.
fn canary_split(listing: &Value, component: &str) -> Option<(u8, bool)> {
    let chain = ruleset::component_chain(component);
    objects(listing, "rule")
        .filter(|rule| rule.get("chain").and_then(Value::as_str) == Some(chain.as_str()))
        .flat_map(|rule| {
            rule.get("expr")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|expression| expression.get("match"))
        .find_map(|matched| {
            let left = matched.get("left")?;
            let sticky = left.get("jhash").is_some();
            if !sticky && left.get("numgen").is_none() {
                return None;
            }
            let weight = u8::try_from(matched.get("right")?.as_u64()?).ok()?;
            Some((weight, sticky))
        })
}

fn hairpin_sources(listing: &Value) -> Vec<IpAddr> {
    objects(listing, "set")
        .filter(|set| set.get("name").and_then(Value::as_str) == Some(ruleset::HAIRPIN_SET))
        .filter_map(|set| set.get("elem").and_then(Value::as_array))
        .flatten()
        .filter_map(|address| address.as_str()?.parse::<Ipv4Addr>().ok())
        .map(IpAddr::V4)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// web on 10.0.0.11 with a sticky 30 % canary on 10.0.0.12, as `nft -j` lists a table
    /// from before UDP.
    fn old_listing() -> Value {
        json!({"nftables": [
            {"map": {"name": "dispatch", "type": "inet_service", "map": "verdict",
                     "elem": [[80, {"goto": {"target": "component_web"}}]]}},
            {"map": {"name": "backend_web", "type": "inet_service",
                     "elem": [[80, {"concat": ["10.0.0.11", 8080]}]]}},
            {"map": {"name": "canary_web", "type": "inet_service",
                     "elem": [[80, {"concat": ["10.0.0.12", 8080]}]]}},
            {"set": {"name": "hairpin_sources", "elem": ["10.0.0.11", "10.0.0.12"]}},
            {"set": {"name": "localhost_ports", "elem": [80]}},
            {"rule": {"chain": "component_web", "expr": [
                {"mangle": {"key": {"ct": {"key": "label"}}, "value": 127}},
                {"match": {"op": "<", "left": {"jhash": {"mod": 100, "seed": 1751215716}},
                           "right": 30}},
                {"dnat": {"family": "ip"}}]}}]})
    }

    #[test]
    fn only_a_dispatch_map_keyed_by_port_alone_is_rebuilt() {
        assert!(needs_rebuild(&old_listing()));
        let current = json!({"nftables": [{"map": {"name": "dispatch",
            "type": ["inet_proto", "inet_service"], "map": "verdict"}}]});
        assert!(!needs_rebuild(&current));
    }

    #[test]
    fn the_rebuild_keeps_backend_canary_share_loopback_and_hairpin_set() {
        let commands = rebuild("handoff", &old_listing()).unwrap();
        assert_eq!(commands[0], "delete table inet handoff");
        for expected in [
            "add element inet handoff backend_web { tcp . 80 : 10.0.0.11 . 8080 }",
            "add element inet handoff canary_web { tcp . 80 : 10.0.0.12 . 8080 }",
            "add rule inet handoff component_web meta nfproto ipv4 ct label set 127 jhash ip saddr mod 100 seed \
             0x68616e64 < 30 dnat ip to meta l4proto . th dport map @canary_web",
            "add element inet handoff localhost_ports { tcp . 80 }",
            "add element inet handoff hairpin_sources { 10.0.0.11, 10.0.0.12 }",
        ] {
            assert!(
                commands.iter().any(|c| c == expected),
                "{expected:?} not in {commands:#?}"
            );
        }
    }
}
