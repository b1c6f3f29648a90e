//! The switch's hot path straight over nfnetlink: read a component's backend map, and replace
//! its elements (plus the hairpin set) in one batch, which the kernel applies as one
//! transaction.
//!
//! Why not the `nft` binary here: before it applies anything, nft loads a cache of the table,
//! and for a flush followed by adds it loads every set with every element. With 1,000
//! components that alone costs ~20 ms per switch (measured with nft 1.0.6), growing with the
//! table. A batch of our own is constant-time: the kernel work is the same, the cache is gone.
//! Creating the table, chains and maps (first routing of a component) still goes through nft
//! scripts (`ruleset.rs`): that is not the hot path, and the layout stays readable there.
//!
//! Element encoding follows nftables' register layout: each part of a concatenation is padded
//! to 4 bytes, so an `inet_proto . inet_service` key is 8 bytes (the protocol number, then
//! the port in network order), the `ipv4_addr . inet_service` data is 8 bytes (the address,
//! then the port) and the `ipv6_addr . inet_service` data 20; an address key is its bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use anyhow::{Context, Result};
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_netfilter::nftables::{
    DataAttribute, ListAttribute, NfTablesMessage, SetElementAttribute, SetElementList,
    SetElementMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterProtoFamily};
use netlink_sys::Socket;

use super::exchange;
pub use super::exchange::{errno_error, Missing, ACK_TIMEOUT};
use super::{raw, Route};
use crate::kernel::nfnetlink;
use crate::ports::{PortKey, Protocol};

/// `NFNL_SUBSYS_NFTABLES`: the batch's resource id.
const NFNL_SUBSYS_NFTABLES: u16 = 10;

/// The batch was sent, but its acknowledgement never came (a timeout, an interrupted wait): the
/// kernel may or may not have committed it. Only reading the map back can tell.
#[derive(Debug, thiserror::Error)]
#[error("nftables did not acknowledge the switch of {0}: it may or may not have happened")]
pub struct Unconfirmed(pub String);

fn inet() -> NetfilterHeader {
    NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0)
}

fn set_ref(table: &str, set: &str) -> Vec<SetElementList> {
    vec![
        SetElementList::Table(table.to_string()),
        SetElementList::Set(set.to_string()),
    ]
}

/// `IPPROTO_TCP`, `IPPROTO_UDP`.
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// The key of a port map or set element: `inet_proto . inet_service`, each padded to 4 bytes.
pub fn encode_port(key: PortKey) -> Vec<u8> {
    let protocol = match key.protocol {
        Protocol::Tcp => IPPROTO_TCP,
        Protocol::Udp => IPPROTO_UDP,
    };
    let [high, low] = key.port.to_be_bytes();
    vec![protocol, 0, 0, 0, high, low, 0, 0]
}

/// The inverse of [`encode_port`]; a key of 2 bytes is a port of the layout before UDP
/// (`inet_service` alone, TCP), which a table made by an earlier handoff still has until it
/// is migrated. `None` for bytes of another shape or protocol.
pub fn decode_port(key: &[u8]) -> Option<PortKey> {
    let port = |bytes: &[u8]| Some(u16::from_be_bytes(bytes.try_into().ok()?));
    match key.len() {
        2 => Some(PortKey {
            protocol: Protocol::Tcp,
            port: port(key)?,
        }),
        8 => Some(PortKey {
            protocol: match key[0] {
                IPPROTO_TCP => Protocol::Tcp,
                IPPROTO_UDP => Protocol::Udp,
                _ => return None,
            },
            port: port(&key[4..6])?,
        }),
        _ => None,
    }
}

/// An address as nftables holds it: its bytes in network order.
fn address_bytes(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Key and data of a backend map element.
pub fn encode_route(route: &Route) -> (Vec<u8>, Vec<u8>) {
    let mut data = address_bytes(route.address);
    data.extend_from_slice(&route.backend_port.to_be_bytes());
    data.extend_from_slice(&[0, 0]);
    (encode_port(route.key()), data)
}

/// The inverse of [`encode_route`]; `None` for bytes of another shape.
pub fn decode_route(key: &[u8], data: &[u8]) -> Option<Route> {
    let key = decode_port(key)?;
    let (address, port) = match data.len() {
        8 => (
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&data[..4]).ok()?)),
            &data[4..6],
        ),
        20 => (
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&data[..16]).ok()?)),
            &data[16..18],
        ),
        _ => return None,
    };
    Some(Route {
        protocol: key.protocol,
        external: key.port,
        address,
        backend_port: u16::from_be_bytes(port.try_into().ok()?),
    })
}

/// A backend map's elements: each route's key and data.
pub fn route_elements(routes: &[Route]) -> Vec<Element> {
    routes
        .iter()
        .map(|r| {
            let (key, data) = encode_route(r);
            (key, Some(data))
        })
        .collect()
}

/// An address set's elements.
pub fn address_elements(addresses: impl IntoIterator<Item = IpAddr>) -> Vec<Element> {
    addresses
        .into_iter()
        .map(|a| (address_bytes(a), None))
        .collect()
}

fn elements(items: Vec<Element>) -> SetElementList {
    SetElementList::Elements(
        items
            .into_iter()
            .map(|(key, data)| {
                let mut attributes = vec![SetElementAttribute::Key(DataAttribute::Value(key))];
                if let Some(data) = data {
                    attributes.push(SetElementAttribute::Data(DataAttribute::Value(data)));
                }
                ListAttribute::Element(attributes)
            })
            .collect(),
    )
}

/// Wait for readable data, at most until `deadline`.
fn wait_readable(socket: &Socket, deadline: Instant) -> Result<bool> {
    nfnetlink::wait_readable(socket, deadline.saturating_duration_since(Instant::now()))
}

/// The elements of backend map `map` in `table`; [`Missing`] when the map does not exist.
pub fn read_routes(table: &str, map: &str) -> Result<Vec<Route>> {
    let mut routes: Vec<Route> = read_elements(table, map)?
        .into_iter()
        .filter_map(|(key, data)| decode_route(&key, &data?))
        .collect();
    routes.sort_by_key(Route::key);
    Ok(routes)
}

/// The ports in port set `set` of `table`; [`Missing`] when it does not exist.
pub fn read_ports(table: &str, set: &str) -> Result<Vec<PortKey>> {
    Ok(read_elements(table, set)?
        .into_iter()
        .filter_map(|(key, _)| decode_port(&key))
        .collect())
}

/// An element as the kernel lists it: its key and, for a map, its data.
pub type Element = (Vec<u8>, Option<Vec<u8>>);

/// Every element of set or map `set` in `table`.
pub fn read_elements(table: &str, set: &str) -> Result<Vec<Element>> {
    Ok(dump_elements(table, set)?
        .iter()
        .flat_map(|answer| listed(answer))
        .collect())
}

/// Every element of verdict map `map` in `table`: its key and the chain its verdict names.
pub fn read_verdict_elements(table: &str, map: &str) -> Result<Vec<(Vec<u8>, Option<String>)>> {
    let mut elements = Vec::new();
    for answer in dump_elements(table, map)? {
        let Some(list) = raw::find(&answer, LIST_ELEMENTS) else {
            continue;
        };
        for element in raw::attributes(list) {
            let Some(key) = raw::find(element.payload, ELEMENT_KEY)
                .and_then(|nested| raw::find(nested, DATA_VALUE))
            else {
                continue;
            };
            let chain = raw::find(element.payload, ELEMENT_DATA).and_then(verdict_chain);
            elements.push((key.to_vec(), chain));
        }
    }
    Ok(elements)
}

/// The chain an element's verdict data names (`NFTA_DATA_VERDICT` / `NFTA_VERDICT_CHAIN`).
fn verdict_chain(data: &[u8]) -> Option<String> {
    const DATA_VERDICT: u16 = 2;
    const VERDICT_CHAIN: u16 = 2;
    let verdict = raw::find(data, DATA_VERDICT)?;
    raw::string(raw::find(verdict, VERDICT_CHAIN)?).map(str::to_string)
}

/// The kernel's answers to a dump of `set`'s elements.
fn dump_elements(table: &str, set: &str) -> Result<Vec<Vec<u8>>> {
    let socket = nfnetlink::open()?;
    let request = nfnetlink::request(
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
        inet(),
        NfTablesMessage::GetSetElement(SetElementMessage {
            attributes: set_ref(table, set),
        }),
    );
    exchange::exchange(&socket, &request, &format!("the elements of {set}"), set)
}

/// `NFTA_SET_ELEM_LIST_ELEMENTS`, and in each element `NFTA_SET_ELEM_KEY`/`_DATA`, each
/// holding its bytes in `NFTA_DATA_VALUE` (a verdict, `NFTA_DATA_VERDICT`, is not read).
const LIST_ELEMENTS: u16 = 3;
const ELEMENT_KEY: u16 = 1;
const ELEMENT_DATA: u16 = 2;
const DATA_VALUE: u16 = 1;

/// The elements of one answer of a set's dump (its attributes).
fn listed(answer: &[u8]) -> Vec<Element> {
    let Some(list) = raw::find(answer, LIST_ELEMENTS) else {
        return Vec::new();
    };
    let value = |element: &[u8], kind| {
        raw::find(element, kind)
            .and_then(|nested| raw::find(nested, DATA_VALUE))
            .map(<[u8]>::to_vec)
    };
    raw::attributes(list)
        .into_iter()
        .filter_map(|element| {
            let key = value(element.payload, ELEMENT_KEY)?;
            Some((key, value(element.payload, ELEMENT_DATA)))
        })
        .collect()
}

/// One kernel transaction under construction: messages between a batch's begin and end,
/// each acknowledged by the kernel. Nothing happens until [`Batch::commit`].
pub struct Batch {
    bytes: Vec<u8>,
    sequence: u32,
    acked: Vec<u32>,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            bytes: nfnetlink::request(
                NLM_F_REQUEST,
                1,
                NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
                ControlMessage::BatchBegin,
            ),
            sequence: 1,
            acked: Vec::new(),
        }
    }
}

impl Batch {
    fn next(&mut self) -> u32 {
        self.sequence += 1;
        self.acked.push(self.sequence);
        self.sequence
    }

    fn push(&mut self, flags: u16, inner: NfTablesMessage) {
        let sequence = self.next();
        self.bytes.extend(nfnetlink::request(
            NLM_F_REQUEST | NLM_F_ACK | flags,
            sequence,
            inet(),
            inner,
        ));
    }

    /// A message built as bytes (`raw.rs`): `message` is its `NFT_MSG_*` type.
    pub fn push_raw(&mut self, message: u16, flags: u16, attributes: &[u8]) {
        let sequence = self.next();
        self.bytes.extend(raw::message(
            message,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            sequence,
            attributes,
        ));
    }

    /// Add `items` to set or map `set` (those already there with the same data stay).
    pub fn add_elements(&mut self, table: &str, set: &str, items: Vec<Element>) {
        if items.is_empty() {
            return;
        }
        let mut attributes = set_ref(table, set);
        attributes.push(elements(items));
        self.push(
            NLM_F_CREATE,
            NfTablesMessage::NewSetElement(SetElementMessage { attributes }),
        );
    }

    /// Make set or map `set` hold exactly `items`: every element deleted, then `items` added
    /// (a deletion: the transaction's end waits for an RCU grace period, see `generations.rs`).
    pub fn replace_elements(&mut self, table: &str, set: &str, items: Vec<Element>) {
        self.push(
            0,
            NfTablesMessage::DeleteSetElement(SetElementMessage {
                attributes: set_ref(table, set),
            }),
        );
        self.add_elements(table, set, items);
    }

    /// Send the batch and wait for every acknowledgement; `object` names what it changes, in
    /// errors. [`Missing`] when an object it refers to does not exist, [`Unconfirmed`] when
    /// the answer never came. Refused, the kernel changed nothing.
    pub fn commit(mut self, object: &str) -> Result<()> {
        let end = self.sequence + 1;
        self.bytes.extend(nfnetlink::request(
            NLM_F_REQUEST,
            end,
            NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
            ControlMessage::BatchEnd,
        ));
        let socket = nfnetlink::open()?;
        socket
            .send(&self.bytes, 0)
            .context("sending the nftables batch")?;
        let deadline = Instant::now() + ACK_TIMEOUT;
        let mut buffer = Vec::with_capacity(nfnetlink::RECV_BUFFER);
        while !self.acked.is_empty() {
            if !wait_readable(&socket, deadline).unwrap_or(false) {
                return Err(Unconfirmed(object.to_string()).into());
            }
            if nfnetlink::receive(&socket, &mut buffer).is_err() {
                return Err(Unconfirmed(object.to_string()).into());
            }
            let answers = raw::answers(&buffer);
            if answers.is_empty() {
                anyhow::bail!("unreadable answer from nftables");
            }
            for answer in answers {
                if let raw::Answer::Error { sequence, code } = answer {
                    if code != 0 {
                        return Err(errno_error(-code, "switching the backend map", object));
                    }
                    self.acked.retain(|s| *s != sequence);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dumped_element_gives_its_key_and_its_data_when_it_has_some() {
        let nested = |kind: u16, bytes: &[u8]| {
            let mut value = Vec::new();
            raw::put(&mut value, DATA_VALUE, bytes);
            let mut out = Vec::new();
            raw::put(&mut out, kind | raw::NESTED, &value);
            out
        };
        let mut map_element = nested(ELEMENT_KEY, &[6, 0, 0, 0, 0, 80, 0, 0]);
        map_element.extend(nested(ELEMENT_DATA, &[10, 0, 1, 11, 31, 144, 0, 0]));
        let set_element = nested(ELEMENT_KEY, &[10, 0, 1, 12]);
        let mut list = Vec::new();
        raw::put(&mut list, 1 | raw::NESTED, &map_element);
        raw::put(&mut list, 1 | raw::NESTED, &set_element);
        let mut answer = Vec::new();
        raw::put_string(&mut answer, 1, "handoff");
        raw::put(&mut answer, LIST_ELEMENTS | raw::NESTED, &list);
        assert_eq!(
            listed(&answer),
            vec![
                (
                    vec![6, 0, 0, 0, 0, 80, 0, 0],
                    Some(vec![10, 0, 1, 11, 31, 144, 0, 0])
                ),
                (vec![10, 0, 1, 12], None),
            ]
        );
        assert!(listed(&[1, 2, 3]).is_empty());
    }

    #[test]
    fn routes_are_encoded_in_nftables_register_layout() {
        let route = Route {
            protocol: Protocol::Udp,
            external: 443,
            address: IpAddr::V4(Ipv4Addr::new(10, 0, 1, 12)),
            backend_port: 8443,
        };
        let (key, data) = encode_route(&route);
        assert_eq!(key, vec![17, 0, 0, 0, 0x01, 0xbb, 0, 0]);
        assert_eq!(data, vec![10, 0, 1, 12, 0x20, 0xfb, 0, 0]);
        assert_eq!(decode_route(&key, &data), Some(route));
        assert_eq!(decode_route(&[1], &data), None);
        assert_eq!(decode_route(&key, &[10, 0, 1]), None);
        assert_eq!(decode_route(&[99, 0, 0, 0, 0, 80, 0, 0], &data), None);
    }

    #[test]
    fn ipv6_routes_carry_sixteen_address_bytes_and_the_padded_port() {
        let route = Route {
            protocol: Protocol::Tcp,
            external: 80,
            address: "fd00::1:12".parse().unwrap(),
            backend_port: 8080,
        };
        let (key, data) = encode_route(&route);
        assert_eq!(key, vec![6, 0, 0, 0, 0, 80, 0, 0]);
        assert_eq!(data.len(), 20);
        assert_eq!(&data[..2], &[0xfd, 0]);
        assert_eq!(&data[14..], &[0, 0x12, 0x1f, 0x90, 0, 0]);
        assert_eq!(decode_route(&key, &data), Some(route));
        assert_eq!(decode_route(&key, &data[..19]), None);
    }

    #[test]
    fn a_key_of_the_layout_before_udp_reads_as_tcp() {
        assert_eq!(
            decode_port(&[0x01, 0xbb]),
            Some(PortKey {
                protocol: Protocol::Tcp,
                port: 443
            })
        );
    }
}
