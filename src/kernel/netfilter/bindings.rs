//! Bind addresses (`ports[].address`, Docker's `-p ADDRESS:PORT:PORT`): a bound port is the
//! component's only for packets to that local address. Its way in is a verdict map keyed by
//! the address too — `dispatch_bound` (`ipv4_addr . inet_proto . inet_service`) and
//! `dispatch6_bound` — consulted before the port-only `dispatch`, where a bound port never is:
//! the same port on another address stays the host's (or another component's, bound there).
//!
//! What a component holds there is read back from the kernel (an element's verdict names the
//! component's chain), so that a switch knows what to take out when a binding changes or goes,
//! and the hot path (which touches only backend maps) is used only when nothing changes here.

use std::net::IpAddr;

use anyhow::Result;
use serde_json::Value;

use super::batch::{self, Missing};
use crate::ports::{PortKey, PortPair, Protocol};

/// IPv4 clients' dispatch of bound ports: address . protocol . port -> a component's chain.
pub const DISPATCH_BOUND_MAP: &str = "dispatch_bound";
/// IPv6 clients' dispatch of bound ports.
pub const DISPATCH6_BOUND_MAP: &str = "dispatch6_bound";
/// The maps' key types.
pub const BOUND_KEY: &str = "ipv4_addr . inet_proto . inet_service";
pub const BOUND6_KEY: &str = "ipv6_addr . inet_proto . inet_service";

/// One port a component holds on one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Binding {
    pub address: IpAddr,
    pub key: PortKey,
}

impl Binding {
    /// The map of the address's family.
    pub fn map(&self) -> &'static str {
        match self.address {
            IpAddr::V4(_) => DISPATCH_BOUND_MAP,
            IpAddr::V6(_) => DISPATCH6_BOUND_MAP,
        }
    }

    /// The element's key in nft's text: `203.0.113.5 . tcp . 80`.
    pub fn nft_key(&self) -> String {
        format!(
            "{} . {} . {}",
            self.address, self.key.protocol, self.key.port
        )
    }
}

/// The bindings `ports` ask for, sorted.
pub fn wanted(ports: &[PortPair]) -> Vec<Binding> {
    let mut bindings: Vec<Binding> = ports
        .iter()
        .filter_map(|p| {
            Some(Binding {
                address: p.address?,
                key: p.key(),
            })
        })
        .collect();
    bindings.sort();
    bindings
}

/// The bindings whose verdict is `chain`, in a table listing (`nft -j list table`), sorted.
pub fn listed(listing: &Value, chain: &str) -> Vec<Binding> {
    let mut bindings: Vec<Binding> = listing["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("map"))
        .filter(|map| {
            let name = map["name"].as_str();
            name == Some(DISPATCH_BOUND_MAP) || name == Some(DISPATCH6_BOUND_MAP)
        })
        .filter_map(|map| map["elem"].as_array())
        .flatten()
        .filter(|element| element[1]["goto"]["target"].as_str() == Some(chain))
        .filter_map(|element| {
            let concat = element[0]["concat"].as_array()?;
            let protocol = match concat.get(1)?.as_str()? {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => return None,
            };
            Some(Binding {
                address: concat.first()?.as_str()?.parse().ok()?,
                key: PortKey {
                    protocol,
                    port: u16::try_from(concat.get(2)?.as_u64()?).ok()?,
                },
            })
        })
        .collect();
    bindings.sort();
    bindings
}

/// The bindings whose verdict is `chain`, read from the kernel over netlink (none when the
/// maps do not exist: a table from before bind addresses), sorted.
pub fn read(table: &str, chain: &str) -> Result<Vec<Binding>> {
    let mut bindings = Vec::new();
    for map in [DISPATCH_BOUND_MAP, DISPATCH6_BOUND_MAP] {
        let elements = match batch::read_verdict_elements(table, map) {
            Ok(elements) => elements,
            Err(error) if error.downcast_ref::<Missing>().is_some() => continue,
            Err(error) => return Err(error),
        };
        bindings.extend(
            elements
                .iter()
                .filter(|(_, target)| target.as_deref() == Some(chain))
                .filter_map(|(key, _)| decode(key)),
        );
    }
    bindings.sort();
    Ok(bindings)
}

/// A key as the kernel holds it: the address, then the protocol and the port, each field
/// padded to 4 bytes (12 bytes for IPv4, 24 for IPv6).
fn decode(key: &[u8]) -> Option<Binding> {
    let (address, rest): (IpAddr, &[u8]) = match key.len() {
        12 => (<[u8; 4]>::try_from(&key[..4]).ok()?.into(), &key[4..]),
        24 => (<[u8; 16]>::try_from(&key[..16]).ok()?.into(), &key[16..]),
        _ => return None,
    };
    Some(Binding {
        address,
        key: batch::decode_port(rest)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_keys_decode_to_the_address_protocol_and_port() {
        let v4 = [[203, 0, 113, 5].as_slice(), &[6, 0, 0, 0], &[0, 80, 0, 0]].concat();
        assert_eq!(
            decode(&v4),
            Some(Binding {
                address: "203.0.113.5".parse().unwrap(),
                key: PortKey {
                    protocol: Protocol::Tcp,
                    port: 80
                }
            })
        );
        let mut v6 = "fd00::5"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets()
            .to_vec();
        v6.extend([17, 0, 0, 0, 0, 53, 0, 0]);
        let decoded = decode(&v6).unwrap();
        assert_eq!(decoded.nft_key(), "fd00::5 . udp . 53");
        assert_eq!(decoded.map(), DISPATCH6_BOUND_MAP);
        assert_eq!(decode(&[0; 8]), None);
    }

    #[test]
    fn the_listing_gives_each_chain_its_own_bindings() {
        let listing: Value = serde_json::from_str(
            r#"{"nftables": [{"map": {"name": "dispatch_bound", "elem": [
                [{"concat": ["10.0.0.5", "tcp", 80]}, {"goto": {"target": "component_web"}}],
                [{"concat": ["10.0.0.6", "tcp", 80]}, {"goto": {"target": "component_api"}}]]}},
               {"map": {"name": "dispatch6_bound", "elem": [
                [{"concat": ["fd00::5", "udp", 53]}, {"goto": {"target": "component_web"}}]]}}]}"#,
        )
        .unwrap();
        let keys: Vec<String> = listed(&listing, "component_web")
            .iter()
            .map(Binding::nft_key)
            .collect();
        assert_eq!(keys, ["10.0.0.5 . tcp . 80", "fd00::5 . udp . 53"]);
        assert_eq!(listed(&listing, "component_we"), []);
    }
}
