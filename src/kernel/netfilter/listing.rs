//! Reading the kernel's table back from `nft -j list table`: every component's routes (its
//! newest map generations, its canary, its loopback clients, its bind addresses) in one
//! listing. The hot path reads one component over netlink instead (`batch.rs`).

use std::collections::HashMap;
use std::net::IpAddr;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{bindings, ruleset, ComponentRoutes, Route};
use crate::identity;
use crate::ports::{PortKey, Protocol};

/// The objects of one kind (`map`, `set`, `rule`, ...) in an `nft -j list` listing.
pub fn objects<'a>(listing: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a Value> {
    listing["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(move |o| o.get(kind))
}

/// Every component's backend map (and canary map) in a table listing, by component name.
pub fn parse_backend_maps(listing: &Value) -> Result<HashMap<String, ComponentRoutes>> {
    let mut maps: HashMap<String, ComponentRoutes> = HashMap::new();
    let mut generations: HashMap<(String, usize), u32> = HashMap::new();
    let mut canaries = Vec::new();
    for map in objects(listing, "map") {
        let Some(name) = map.get("name").and_then(Value::as_str) else {
            continue;
        };
        // Of a map's generations, the newest routes (see `generations.rs`).
        let generation = identity::split_generation(name).1;
        let mut newest = |component: String, family: usize| {
            let seen = generations.entry((component, family)).or_insert(generation);
            *seen = (*seen).max(generation);
            *seen == generation
        };
        if let Some(component) = ruleset::component_of_map(name) {
            if newest(component.clone(), 4) {
                maps.entry(component).or_default().routes = parse_map_elements(map)?;
            }
        } else if let Some(component) = ruleset::component_of_backend6_map(name) {
            if newest(component.clone(), 6) {
                maps.entry(component).or_default().routes6 = parse_map_elements(map)?;
            }
        } else if let Some(component) = ruleset::component_of_canary_map(name) {
            canaries.push((component, parse_map_elements(map)?));
        }
    }
    let localhost: Vec<PortKey> = objects(listing, "set")
        .filter(|set| set.get("name").and_then(Value::as_str) == Some(ruleset::LOCALHOST_SET))
        .filter_map(|set| set.get("elem").and_then(Value::as_array))
        .flatten()
        .filter_map(parse_port)
        .collect();
    for routing in maps.values_mut() {
        routing.localhost = routing.routes.iter().any(|r| localhost.contains(&r.key()));
    }
    for (component, routes) in canaries {
        if let Some(routing) = maps.get_mut(&component) {
            routing.canary = routes;
        }
    }
    for (component, routing) in maps.iter_mut() {
        routing.bound = bindings::listed(listing, &ruleset::component_chain(component));
    }
    Ok(maps)
}

/// A port key as nft lists it: `{"concat": ["udp", 53]}`, or a bare `80` in a table of the
/// layout before UDP (TCP).
fn parse_port(key: &Value) -> Option<PortKey> {
    if let Some(port) = key.as_u64() {
        return Some(PortKey {
            protocol: Protocol::Tcp,
            port: u16::try_from(port).ok()?,
        });
    }
    let concat = key.get("concat")?;
    let protocol = match concat.get(0)?.as_str()? {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return None,
    };
    Some(PortKey {
        protocol,
        port: u16::try_from(concat.get(1)?.as_u64()?).ok()?,
    })
}

/// Elements as nft lists them: `[{"concat": ["tcp", 80]}, {"concat": ["10.0.0.11", 8080]}]`.
fn parse_map_elements(map: &Value) -> Result<Vec<Route>> {
    let Some(elements) = map.get("elem").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    let mut routes = Vec::with_capacity(elements.len());
    for element in elements {
        let parsed = (|| {
            let key = parse_port(element.get(0)?)?;
            let concat = element.get(1)?.get("concat")?;
            let address: IpAddr = concat.get(0)?.as_str()?.parse().ok()?;
            let backend_port = u16::try_from(concat.get(1)?.as_u64()?).ok()?;
            Some(Route {
                protocol: key.protocol,
                external: key.port,
                address,
                backend_port,
            })
        })();
        routes.push(parsed.with_context(|| format!("unexpected map element {element}"))?);
    }
    routes.sort_by_key(Route::key);
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_backend_map_of_a_table_listing_is_parsed() {
        let listing = json!({"nftables": [
            {"map": {"name": "dispatch", "elem": [[80, {"goto": {"target": "component_web"}}]]}},
            {"map": {"name": "backend_web", "elem": [[80, {"concat": ["10.0.0.11", 8080]}]]}},
            {"map": {"name": "backend_api"}},
            {"map": {"name": "backend6_web", "elem": [
                [{"concat": ["tcp", 80]}, {"concat": ["fd00::11", 8080]}]]}},
            {"map": {"name": "canary_web", "elem": [[80, {"concat": ["10.0.0.12", 8080]}]]}},
            {"set": {"name": "localhost_ports", "elem": [80]}},
            {"chain": {"name": "prerouting"}}]});
        let maps = parse_backend_maps(&listing).unwrap();
        assert_eq!(maps.len(), 2);
        assert_eq!(maps["web"].active(), Some(IpAddr::from([10, 0, 0, 11])));
        assert_eq!(maps["web"].canary(), Some(IpAddr::from([10, 0, 0, 12])));
        assert_eq!(maps["web"].active6(), "fd00::11".parse().ok());
        assert_eq!(maps["api"].active(), None);
        assert_eq!(maps["api"].active6(), None);
        assert_eq!(maps["api"].canary(), None);
        assert!(maps["web"].localhost && !maps["api"].localhost);
    }

    #[test]
    fn a_malformed_element_is_an_error_not_a_panic() {
        let listing =
            json!({"nftables": [{"map": {"name": "backend_web", "elem": [[80, "10.0.0.1"]]}}]});
        assert!(parse_backend_maps(&listing).is_err());
    }
}
