//! The elements a component's routing puts in the shared maps and sets: its backend map's
//! entries, its keys in the verdict maps (`dispatch`, `dispatch6`, `links`) and in the
//! loopback set, each added idempotently (see [`super`] for the layout).

use std::net::IpAddr;

use super::{DISPATCH6_MAP, DISPATCH_MAP, LINKS_MAP, LOCALHOST_SET};
use crate::ports::{PortKey, PortPair, Protocol};

pub(super) fn tcp(port: u16) -> PortKey {
    PortKey {
        protocol: Protocol::Tcp,
        port,
    }
}

/// Fill backend map `map` with each of `ports` to `backend` (nothing without one).
pub(super) fn fill(
    t: &str,
    map: &str,
    ports: &[PortPair],
    backend: Option<IpAddr>,
) -> Option<String> {
    let backend = backend?;
    Some(format!(
        "add element {t} {map} {{ {} }}",
        elements(ports, backend)
    ))
}

/// A backend map's elements: each of `ports` to `backend`.
pub(super) fn elements(ports: &[PortPair], backend: impl std::fmt::Display) -> String {
    let elements: Vec<String> = ports
        .iter()
        .map(|p| {
            format!(
                "{} . {} : {backend} . {}",
                p.protocol, p.external, p.backend
            )
        })
        .collect();
    elements.join(", ")
}

/// Keys of the dispatch map and the loopback set: `tcp . 80`.
pub(super) fn dispatch_keys(ports: &[PortKey]) -> Vec<String> {
    ports
        .iter()
        .map(|k| format!("{} . {}", k.protocol, k.port))
        .collect()
}

/// Keys of the links map: links are TCP, keyed by port alone.
pub(super) fn link_keys(ports: &[PortKey]) -> Vec<String> {
    ports
        .iter()
        .filter(|k| k.protocol == Protocol::Tcp)
        .map(|k| k.port.to_string())
        .collect()
}

/// `keys` -> `goto chain` in verdict map `map`.
pub(super) fn add_verdicts(t: &str, map: &str, chain: &str, keys: &[String]) -> Vec<String> {
    if keys.is_empty() {
        return Vec::new();
    }
    let elements: Vec<String> = keys
        .iter()
        .map(|key| format!("{key} : goto {chain}"))
        .collect();
    vec![format!(
        "add element {t} {map} {{ {} }}",
        elements.join(", ")
    )]
}

/// Delete the entries of `keys` from verdict map `map`. Added first, so that the delete
/// cannot fail the transaction when they are not there.
pub(super) fn remove_verdicts(t: &str, map: &str, chain: &str, keys: &[String]) -> Vec<String> {
    if keys.is_empty() {
        return Vec::new();
    }
    let mut commands = add_verdicts(t, map, chain, keys);
    commands.push(format!(
        "delete element {t} {map} {{ {} }}",
        keys.join(", ")
    ));
    commands
}

/// Put `ports` in the loopback set (`reachable`), or take them out (added first, so that the
/// delete cannot fail the transaction when they are not there).
pub(super) fn localhost_ports(t: &str, ports: &[PortKey], reachable: bool) -> Vec<String> {
    if ports.is_empty() {
        return Vec::new();
    }
    let keys = dispatch_keys(ports).join(", ");
    let add = format!("add element {t} {LOCALHOST_SET} {{ {keys} }}");
    if reachable {
        return vec![add];
    }
    vec![
        add,
        format!("delete element {t} {LOCALHOST_SET} {{ {keys} }}"),
    ]
}

/// Delete every way in to `ports`: their dispatch and link entries, and their place in the
/// loopback set.
pub(super) fn remove_dispatch(t: &str, chain: &str, ports: &[PortKey]) -> Vec<String> {
    let mut commands = localhost_ports(t, ports, false);
    for dispatch in [DISPATCH_MAP, DISPATCH6_MAP] {
        commands.extend(remove_verdicts(t, dispatch, chain, &dispatch_keys(ports)));
    }
    commands.extend(remove_verdicts(t, LINKS_MAP, chain, &link_keys(ports)));
    commands
}
