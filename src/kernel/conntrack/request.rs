//! ctnetlink requests handoff sends: a dump (of everything, or of one backend's flows), a
//! lookup of one entry, an expiry of one entry.

use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{DefaultNla, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Tuple,
};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterProtoFamily};

use super::decode::CTA_ZONE;
use super::flow::{Flow, FlowKey};
use crate::kernel::nfnetlink;
use crate::ports;

const CTA_FILTER: u16 = 25;
/// Inside CTA_FILTER: which fields of the reply tuple must match (linux ≥ 5.9).
const CTA_FILTER_REPLY_FLAGS: u16 = 2;
const CTA_FILTER_FLAG_IP_SRC: u32 = 1 << 0;
/// `NLA_F_NESTED`.
const NESTED: u16 = 1 << 15;

fn tuple(protocol: ports::Protocol, source: SocketAddr, destination: SocketAddr) -> Vec<Tuple> {
    vec![
        Tuple::Ip(vec![
            IPTuple::SourceAddress(source.ip()),
            IPTuple::DestinationAddress(destination.ip()),
        ]),
        Tuple::Proto(vec![
            ProtoTuple::Protocol(match protocol {
                ports::Protocol::Tcp => Protocol::Tcp,
                ports::Protocol::Udp => Protocol::Udp,
            }),
            ProtoTuple::SourcePort(source.port()),
            ProtoTuple::DestinationPort(destination.port()),
        ]),
    ]
}

/// The zone attribute; zone 0 is the kernel's default and needs none.
fn zone_attribute(zone: u16) -> Option<ConntrackAttribute> {
    (zone != 0)
        .then(|| ConntrackAttribute::Other(DefaultNla::new(CTA_ZONE, zone.to_be_bytes().to_vec())))
}

/// The family of `address` in a conntrack request.
fn family(address: IpAddr) -> NetfilterProtoFamily {
    match address {
        IpAddr::V4(_) => NetfilterProtoFamily::IPv4,
        IpAddr::V6(_) => NetfilterProtoFamily::IPv6,
    }
}

/// The request for a dump of the table: every entry of both families, or (`replies_from`)
/// only the entries whose reply comes from that address, of any protocol (the decoder keeps
/// TCP and UDP). For an IPv4 address the kernel filters (linux ≥ 5.9), so a dump for one
/// backend costs a walk of the table, not a copy of it; older kernels ignore the filter and
/// send everything. Callers filter again either way.
///
/// An IPv6 address gets the whole IPv6 table, unfiltered: the kernel's IPv6 match is inverted
/// (`ctnetlink_filter_match_tuple` tests `!ipv6_addr_cmp(...)`, and `ipv6_addr_cmp` is 0 for
/// *equal* addresses). Measured on linux 6.18 in `tests/ipv6.rs`'s sandbox: a dump filtered by
/// reply source fd00:1::11 returned only the flow answered by fd00:1::12, and the reverse.
/// Filtered again here, that would have been no flow at all — a drain ending at once while its
/// flows still ran.
pub fn dump_request(replies_from: Option<IpAddr>) -> Vec<u8> {
    let filtered = replies_from.filter(IpAddr::is_ipv4);
    let attributes = match filtered {
        None => Vec::new(),
        Some(address) => vec![ConntrackAttribute::CtaTupleReply(vec![Tuple::Ip(vec![
            IPTuple::SourceAddress(address),
        ])])],
    };
    let mut request = nfnetlink::request(
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
        NetfilterHeader::new(
            replies_from.map_or(NetfilterProtoFamily::Unspec, family),
            0,
            0,
        ),
        ConntrackMessage::Get(attributes),
    );
    if filtered.is_some() {
        // Appended by hand: the kernel parses CTA_FILTER strictly and wants its NLA_F_NESTED
        // flag, which the crate's generic attribute does not carry.
        request.extend_from_slice(&filter_attribute());
        let length = u32::try_from(request.len()).unwrap_or(u32::MAX);
        request[..4].copy_from_slice(&length.to_ne_bytes());
    }
    request
}

/// CTA_FILTER (nested) holding CTA_FILTER_REPLY_FLAGS: the reply tuple's source address must
/// match.
fn filter_attribute() -> Vec<u8> {
    let flags = CTA_FILTER_FLAG_IP_SRC;
    // Two attribute headers (length, kind) of four bytes each, one u32 value.
    let mut attribute = Vec::with_capacity(12);
    attribute.extend_from_slice(&12u16.to_ne_bytes());
    attribute.extend_from_slice(&(CTA_FILTER | NESTED).to_ne_bytes());
    attribute.extend_from_slice(&8u16.to_ne_bytes());
    attribute.extend_from_slice(&CTA_FILTER_REPLY_FLAGS.to_ne_bytes());
    attribute.extend_from_slice(&flags.to_ne_bytes());
    attribute
}

/// The request that looks one entry up by its zone and original tuple.
pub fn lookup_request(key: FlowKey) -> Vec<u8> {
    let (zone, protocol, client, destination) = key;
    let mut attributes = vec![ConntrackAttribute::CtaTupleOrig(tuple(
        protocol,
        client,
        destination,
    ))];
    attributes.extend(zone_attribute(zone));
    nfnetlink::request(
        NLM_F_REQUEST,
        1,
        NetfilterHeader::new(family(client.ip()), 0, 0),
        ConntrackMessage::Get(attributes),
    )
}

/// The request that expires `flow`'s entry now: found by its *reply* tuple (backend ->
/// client) and zone, its timeout set to 0.
///
/// Why expire rather than delete: the reply tuple names the backend, so the request cannot
/// reach an entry that a client opened later with the same original tuple towards another
/// backend. And an expired entry is handled gracefully by everyone else: a packet that looks
/// it up skips it (and a new SYN starts a new entry), a dump (dockerd's) does not list it. A
/// delete instead races with a SYN that is reopening that very tuple: the kernel, finding the
/// entry killed under it, drops the SYN, and the client waits a second to send it again.
pub fn expire_request(flow: &Flow) -> Vec<u8> {
    let mut attributes = vec![ConntrackAttribute::CtaTupleReply(tuple(
        flow.protocol,
        flow.backend,
        flow.reply_to,
    ))];
    attributes.extend(zone_attribute(flow.zone));
    attributes.push(ConntrackAttribute::CtaTimeout(0));
    // No NLM_F_CREATE: only an existing entry is changed; ENOENT when it is gone.
    nfnetlink::request(
        NLM_F_REQUEST | NLM_F_ACK,
        1,
        NetfilterHeader::new(family(flow.backend.ip()), 0, 0),
        ConntrackMessage::New(attributes),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::conntrack::decode::tests::{datagram, dnat_flow_attributes, tuple};
    use crate::kernel::conntrack::decode::{decode_datagram, default_nla_bytes};
    use crate::kernel::conntrack::Change;
    use netlink_packet_core::{NetlinkPayload, Nla};
    use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner};

    /// The attributes of a request built by us, decoded back.
    fn attributes_of(request: &[u8]) -> Vec<ConntrackAttribute> {
        let message = nfnetlink::parse_datagram(request).remove(0).unwrap();
        match message.payload {
            NetlinkPayload::InnerMessage(NetfilterMessage {
                inner:
                    NetfilterMessageInner::Conntrack(
                        ConntrackMessage::Get(attributes) | ConntrackMessage::New(attributes),
                    ),
                ..
            }) => attributes,
            other => panic!("not a conntrack request: {other:?}"),
        }
    }

    fn kinds(attributes: &[ConntrackAttribute]) -> Vec<u16> {
        attributes.iter().map(|a| a.kind() & 0x3fff).collect()
    }

    #[test]
    fn an_expiry_names_the_entry_by_its_reply_tuple_and_zone_and_sets_no_time_left() {
        let bytes = datagram(ConntrackMessage::New(dnat_flow_attributes(7)));
        let mut skipped = 0;
        let Change::Present(mut flow) =
            decode_datagram(&bytes, &mut skipped).unwrap().changes[0].clone()
        else {
            panic!("not decoded")
        };
        flow.zone = 5;
        let request = expire_request(&flow);
        // Never the original tuple: a client may have reused it for a flow elsewhere.
        let attributes = attributes_of(&request);
        assert_eq!(kinds(&attributes), vec![2, CTA_ZONE, 7]);
        assert_eq!(
            attributes[0],
            ConntrackAttribute::CtaTupleReply(tuple([10, 0, 1, 11], 8080, [10, 0, 2, 2], 40000))
        );
        let ConntrackAttribute::Other(zone) = &attributes[1] else {
            panic!("zone")
        };
        assert_eq!(default_nla_bytes(zone), vec![0, 5]);
        assert_eq!(attributes[2], ConntrackAttribute::CtaTimeout(0));
        // A change of an existing entry, never a creation.
        let flags = u16::from_ne_bytes([request[6], request[7]]);
        assert_eq!(flags & netlink_packet_core::NLM_F_CREATE, 0);
    }

    #[test]
    fn a_lookup_carries_the_zone_unless_it_is_the_default() {
        use crate::ports::Protocol::Tcp;
        let client = "10.0.2.2:40000".parse().unwrap();
        let host = "10.0.2.1:80".parse().unwrap();
        assert_eq!(
            kinds(&attributes_of(&lookup_request((0, Tcp, client, host)))),
            vec![1]
        );
        let in_zone = attributes_of(&lookup_request((9, Tcp, client, host)));
        assert_eq!(kinds(&in_zone), vec![1, CTA_ZONE]);
        assert_eq!(
            in_zone[0],
            ConntrackAttribute::CtaTupleOrig(tuple([10, 0, 2, 2], 40000, [10, 0, 2, 1], 80))
        );
    }

    #[test]
    fn a_dump_for_one_backend_asks_the_kernel_to_filter_by_reply_source() {
        let everything = dump_request(None);
        assert!(attributes_of(&everything).is_empty());

        let backend = IpAddr::from([10, 0, 1, 11]);
        let request = dump_request(Some(backend));
        // The netlink length covers the attribute appended by hand.
        let length = u32::from_ne_bytes(request[..4].try_into().unwrap()) as usize;
        assert_eq!(length, request.len());
        let flags = u16::from_ne_bytes([request[6], request[7]]);
        assert_eq!(flags & NLM_F_DUMP, NLM_F_DUMP);
        // CTA_FILTER, nested, holding the reply flags "source address" and "protocol".
        let filter = &request[request.len() - 12..];
        assert_eq!(u16::from_ne_bytes([filter[0], filter[1]]), 12);
        assert_eq!(
            u16::from_ne_bytes([filter[2], filter[3]]),
            CTA_FILTER | NESTED
        );
        assert_eq!(u16::from_ne_bytes([filter[4], filter[5]]), 8);
        assert_eq!(
            u16::from_ne_bytes([filter[6], filter[7]]),
            CTA_FILTER_REPLY_FLAGS
        );
        let wanted = u32::from_ne_bytes(filter[8..12].try_into().unwrap());
        assert_eq!(wanted, CTA_FILTER_FLAG_IP_SRC);
        // The value to match: the reply tuple's source, whatever the protocol.
        let attributes = attributes_of(&request);
        assert_eq!(
            attributes[0],
            ConntrackAttribute::CtaTupleReply(vec![Tuple::Ip(vec![IPTuple::SourceAddress(
                backend
            )])])
        );
    }

    #[test]
    fn a_dump_for_an_ipv6_backend_asks_for_the_ipv6_table_unfiltered() {
        let request = dump_request(Some("fd00:1::11".parse().unwrap()));
        assert!(attributes_of(&request).is_empty());
        let length = u32::from_ne_bytes(request[..4].try_into().unwrap()) as usize;
        assert_eq!(length, request.len(), "no filter appended");
        // nfgenmsg's family: AF_INET6.
        assert_eq!(request[16], 10);
        assert_eq!(dump_request(None)[16], 0, "both families");
    }
}
