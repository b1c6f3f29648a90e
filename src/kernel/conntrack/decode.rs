//! ctnetlink messages the kernel sends (dump entries, events, errors), decoded.
//! `netlink-packet-netfilter` does the framing; the attributes it leaves raw (id, zone, byte
//! counters, start timestamp) are decoded here. Never panics, whatever the bytes.

use std::net::SocketAddr;

use anyhow::Result;
use netlink_packet_core::{DefaultNla, NetlinkPayload, Nla};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple, Protocol,
    Tuple,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner};

use super::flow::{Change, Flow, FlowState};
use crate::kernel::nfnetlink;

/// Attributes the crate leaves undecoded (linux/netfilter/nfnetlink_conntrack.h).
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_ID: u16 = 12;
pub(super) const CTA_ZONE: u16 = 18;
const CTA_TIMESTAMP: u16 = 20;
const CTA_COUNTERS_BYTES: u16 = 2;
const CTA_TIMESTAMP_START: u16 = 1;

pub(super) fn default_nla_bytes(nla: &DefaultNla) -> Vec<u8> {
    let mut value = vec![0; nla.value_len()];
    nla.emit_value(&mut value);
    value
}

/// Nested attributes as (kind, value) pairs; malformed nesting ends the walk.
fn nested(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            break;
        }
        out.push((kind, &rest[4..len]));
        let aligned = (len + 3) & !3;
        rest = rest.get(aligned..).unwrap_or(&[]);
    }
    out
}

fn be_u64(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.get(..8)?.try_into().ok()?))
}

fn be_u32(value: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(value.get(..4)?.try_into().ok()?))
}

/// (source, destination, protocol) of a tuple attribute.
fn decode_tuple(tuple: &[Tuple]) -> Option<(SocketAddr, SocketAddr, Protocol)> {
    let (mut src_ip, mut dst_ip, mut src_port, mut dst_port, mut proto) =
        (None, None, None, None, None);
    for part in tuple {
        match part {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src_ip = Some(*a),
                        IPTuple::DestinationAddress(a) => dst_ip = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(protos) => {
                for p in protos {
                    match p {
                        ProtoTuple::Protocol(value) => proto = Some(*value),
                        ProtoTuple::SourcePort(port) => src_port = Some(*port),
                        ProtoTuple::DestinationPort(port) => dst_port = Some(*port),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((
        SocketAddr::new(src_ip?, src_port?),
        SocketAddr::new(dst_ip?, dst_port?),
        proto?,
    ))
}

/// Turn a conntrack message into a [`Change`]. Flows other than TCP and UDP yield `None`.
pub fn decode(message: &ConntrackMessage) -> Option<Change> {
    let (attributes, destroyed) = match message {
        ConntrackMessage::New(attributes) => (attributes, false),
        ConntrackMessage::Delete(attributes) => (attributes, true),
        _ => return None,
    };
    let mut original = None;
    let mut reply = None;
    let mut state = None;
    let mut timeout_secs = None;
    let mut status = 0;
    let mut id = None;
    let mut bytes: Option<u64> = None;
    let mut start_ns = None;
    let mut zone = 0;
    for attribute in attributes {
        match attribute {
            ConntrackAttribute::CtaTupleOrig(tuple) => original = decode_tuple(tuple),
            ConntrackAttribute::CtaTupleReply(tuple) => reply = decode_tuple(tuple),
            ConntrackAttribute::CtaProtoInfo(infos) => {
                for info in infos {
                    if let ProtoInfo::TCP(tcp) = info {
                        for item in tcp {
                            if let ProtoInfoTCP::State(value) = item {
                                state = Some(FlowState::from_kernel(*value));
                            }
                        }
                    }
                }
            }
            ConntrackAttribute::CtaTimeout(value) => timeout_secs = Some(*value),
            ConntrackAttribute::CtaStatus(value) => status = value.bits(),
            ConntrackAttribute::Other(nla) => {
                let value = default_nla_bytes(nla);
                match nla.kind() & 0x3fff {
                    CTA_ID => id = be_u32(&value),
                    CTA_ZONE => {
                        zone = value
                            .get(..2)
                            .map(|b| u16::from_be_bytes([b[0], b[1]]))
                            .unwrap_or(0)
                    }
                    CTA_COUNTERS_ORIG | CTA_COUNTERS_REPLY => {
                        for (kind, counter) in nested(&value) {
                            if kind == CTA_COUNTERS_BYTES {
                                if let Some(n) = be_u64(counter) {
                                    bytes = Some(bytes.unwrap_or(0).saturating_add(n));
                                }
                            }
                        }
                    }
                    CTA_TIMESTAMP => {
                        start_ns = nested(&value)
                            .into_iter()
                            .find(|(kind, _)| *kind == CTA_TIMESTAMP_START)
                            .and_then(|(_, v)| be_u64(v));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let (client, destination, protocol) = original?;
    let protocol = match protocol {
        Protocol::Tcp => crate::ports::Protocol::Tcp,
        Protocol::Udp => crate::ports::Protocol::Udp,
        _ => return None,
    };
    let (backend, reply_to, _) = reply?;
    let flow = Flow {
        id,
        protocol,
        client,
        destination,
        backend,
        reply_to,
        zone,
        // Events for a destroyed entry may omit the state; an UPDATE always carries it.
        state: match (protocol, state) {
            (crate::ports::Protocol::Udp, _) if !destroyed => FlowState::Udp,
            (crate::ports::Protocol::Udp, _) => FlowState::Close,
            (_, Some(state)) => state,
            (_, None) if destroyed => FlowState::Close,
            (_, None) => FlowState::Unknown,
        },
        timeout_secs,
        status,
        bytes,
        start_ns,
    };
    Some(if destroyed {
        Change::Destroyed(flow)
    } else {
        Change::Present(flow)
    })
}

/// What one read from a ctnetlink socket produced.
#[derive(Debug)]
pub struct Batch {
    pub changes: Vec<Change>,
    /// The dump finished (NLMSG_DONE seen).
    pub done: bool,
}

/// Split a datagram into netlink messages and decode the conntrack ones. Undecodable messages
/// are skipped (counted in `skipped`), never a panic.
pub fn decode_datagram(datagram: &[u8], skipped: &mut usize) -> Result<Batch> {
    let mut changes = Vec::new();
    let mut done = false;
    for message in nfnetlink::parse_datagram(datagram) {
        let Some(message) = message else {
            *skipped += 1;
            continue;
        };
        match message.payload {
            NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::Conntrack(ct),
                ..
            }) => changes.extend(decode(&ct)),
            NetlinkPayload::Done(_) => done = true,
            NetlinkPayload::Error(error) => {
                if let Some(code) = error.code {
                    let io = std::io::Error::from_raw_os_error(-code.get());
                    return Err(anyhow::Error::new(io).context("ctnetlink refused the request"));
                }
            }
            _ => {}
        }
    }
    Ok(Batch { changes, done })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernel::conntrack::StateTimeouts;
    use netlink_packet_core::{NetlinkSerializable, ParseableParametrized};
    use netlink_packet_netfilter::conntrack::Status;
    use netlink_packet_netfilter::{NetfilterHeader, NetfilterProtoFamily};
    use std::net::{IpAddr, Ipv4Addr};

    pub(crate) fn tuple(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<Tuple> {
        vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(IpAddr::V4(Ipv4Addr::from(src))),
                IPTuple::DestinationAddress(IpAddr::V4(Ipv4Addr::from(dst))),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(Protocol::Tcp),
                ProtoTuple::SourcePort(sport),
                ProtoTuple::DestinationPort(dport),
            ]),
        ]
    }

    fn counters(bytes: u64) -> Vec<u8> {
        let mut value = Vec::new();
        for (kind, n) in [(1u16, 3u64), (CTA_COUNTERS_BYTES, bytes)] {
            value.extend_from_slice(&12u16.to_ne_bytes());
            value.extend_from_slice(&kind.to_ne_bytes());
            value.extend_from_slice(&n.to_be_bytes());
        }
        value
    }

    /// A DNAT'd flow: client 10.0.2.2:40000 -> host 10.0.2.1:80, answered by 10.0.1.11:8080.
    pub(crate) fn dnat_flow_attributes(state: u8) -> Vec<ConntrackAttribute> {
        vec![
            ConntrackAttribute::CtaTupleOrig(tuple([10, 0, 2, 2], 40000, [10, 0, 2, 1], 80)),
            ConntrackAttribute::CtaTupleReply(tuple([10, 0, 1, 11], 8080, [10, 0, 2, 2], 40000)),
            ConntrackAttribute::CtaStatus(Status::from_bits_retain(0x1a8)),
            ConntrackAttribute::CtaTimeout(431_990),
            ConntrackAttribute::CtaProtoInfo(vec![ProtoInfo::TCP(vec![
                ProtoInfoTCP::State(state),
                ProtoInfoTCP::OriginalWindowScale(7),
            ])]),
            ConntrackAttribute::Other(DefaultNla::new(CTA_ID, 77u32.to_be_bytes().to_vec())),
            ConntrackAttribute::Other(DefaultNla::new(CTA_COUNTERS_ORIG | 0x8000, counters(1000))),
            ConntrackAttribute::Other(DefaultNla::new(CTA_COUNTERS_REPLY | 0x8000, counters(500))),
        ]
    }

    /// The same flow over IPv6: client [fd00:2::2]:40000 -> host [fd00:2::1]:80, answered by
    /// [fd00:1::11]:8080.
    pub(crate) fn dnat_flow6_attributes(state: u8) -> Vec<ConntrackAttribute> {
        let six = |src: &str, sport: u16, dst: &str, dport: u16| {
            vec![
                Tuple::Ip(vec![
                    IPTuple::SourceAddress(src.parse().unwrap()),
                    IPTuple::DestinationAddress(dst.parse().unwrap()),
                ]),
                Tuple::Proto(vec![
                    ProtoTuple::Protocol(Protocol::Tcp),
                    ProtoTuple::SourcePort(sport),
                    ProtoTuple::DestinationPort(dport),
                ]),
            ]
        };
        let mut attributes = dnat_flow_attributes(state);
        attributes[0] = ConntrackAttribute::CtaTupleOrig(six("fd00:2::2", 40000, "fd00:2::1", 80));
        attributes[1] =
            ConntrackAttribute::CtaTupleReply(six("fd00:1::11", 8080, "fd00:2::2", 40000));
        attributes
    }

    #[test]
    fn an_ipv6_flow_is_decoded() {
        let bytes = datagram(ConntrackMessage::New(dnat_flow6_attributes(3)));
        let batch = decode_datagram(&bytes, &mut 0).unwrap();
        let Change::Present(flow) = &batch.changes[0] else {
            panic!("expected a present flow: {:?}", batch.changes)
        };
        assert_eq!(flow.client, "[fd00:2::2]:40000".parse().unwrap());
        assert_eq!(flow.backend, "[fd00:1::11]:8080".parse().unwrap());
        assert_eq!(flow.state, FlowState::Established);
    }

    /// Encode a message the way the kernel sends it: netlink header + nfgenmsg + attributes.
    pub(crate) fn datagram(message: ConntrackMessage) -> Vec<u8> {
        nfnetlink::request(
            0,
            0,
            NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
            message,
        )
    }

    #[test]
    fn a_dnat_flow_is_decoded_with_counters_and_id() {
        let bytes = datagram(ConntrackMessage::New(dnat_flow_attributes(3)));
        let mut skipped = 0;
        let batch = decode_datagram(&bytes, &mut skipped).unwrap();
        assert_eq!(skipped, 0);
        let Change::Present(flow) = &batch.changes[0] else {
            panic!("expected a present flow: {:?}", batch.changes)
        };
        assert_eq!(flow.client, "10.0.2.2:40000".parse().unwrap());
        assert_eq!(flow.destination, "10.0.2.1:80".parse().unwrap());
        assert_eq!(flow.backend, "10.0.1.11:8080".parse().unwrap());
        assert_eq!(flow.state, FlowState::Established);
        assert!(flow.is_live());
        assert!(flow.is_dnat());
        assert_eq!(flow.id, Some(77));
        assert_eq!(flow.bytes, Some(1500));
        assert_eq!(flow.timeout_secs, Some(431_990));
        let mut timeouts = StateTimeouts::default();
        timeouts
            .0
            .insert("nf_conntrack_tcp_timeout_established", 432_000);
        assert_eq!(flow.idle_secs(&timeouts), Some(10));
    }

    #[test]
    fn time_wait_and_close_are_finished() {
        for (state, live) in [
            (1, true),
            (3, true),
            (4, true),
            (5, true),
            (7, false),
            (8, false),
        ] {
            let Some(Change::Present(flow)) =
                decode(&ConntrackMessage::New(dnat_flow_attributes(state)))
            else {
                panic!("state {state} not decoded")
            };
            assert_eq!(flow.is_live(), live, "state {}", flow.state.name());
        }
    }

    #[test]
    fn destroy_events_are_recognised() {
        let mut attributes = dnat_flow_attributes(3);
        attributes.retain(|a| !matches!(a, ConntrackAttribute::CtaProtoInfo(_)));
        let change = decode(&ConntrackMessage::Delete(attributes)).unwrap();
        assert!(matches!(change, Change::Destroyed(ref f) if !f.is_live()));
    }

    #[test]
    fn sctp_and_incomplete_entries_are_ignored_and_udp_is_live_until_destroyed() {
        let with_protocol = |protocol| {
            let mut attributes = dnat_flow_attributes(3);
            attributes[0] = ConntrackAttribute::CtaTupleOrig(vec![
                Tuple::Ip(vec![
                    IPTuple::SourceAddress(IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1))),
                    IPTuple::DestinationAddress(IpAddr::V4(Ipv4Addr::new(2, 2, 2, 2))),
                ]),
                Tuple::Proto(vec![
                    ProtoTuple::Protocol(protocol),
                    ProtoTuple::SourcePort(1),
                    ProtoTuple::DestinationPort(2),
                ]),
            ]);
            attributes
        };
        assert_eq!(
            decode(&ConntrackMessage::New(with_protocol(Protocol::Sctp))),
            None
        );
        assert_eq!(decode(&ConntrackMessage::New(vec![])), None);
        let Some(Change::Present(udp)) =
            decode(&ConntrackMessage::New(with_protocol(Protocol::Udp)))
        else {
            panic!("a UDP flow is decoded")
        };
        assert_eq!(udp.protocol, crate::ports::Protocol::Udp);
        assert!(udp.is_live());
        let Some(Change::Destroyed(gone)) =
            decode(&ConntrackMessage::Delete(with_protocol(Protocol::Udp)))
        else {
            panic!("its end is decoded")
        };
        assert!(!gone.is_live());
    }

    #[test]
    fn several_messages_in_one_datagram_and_done() {
        let mut bytes = datagram(ConntrackMessage::New(dnat_flow_attributes(3)));
        bytes.extend(datagram(ConntrackMessage::New(dnat_flow_attributes(7))));
        // NLMSG_DONE: header only, type 3, with a 4-byte payload.
        let mut done = vec![0u8; 20];
        done[..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&3u16.to_ne_bytes());
        bytes.extend(done);
        let mut skipped = 0;
        let batch = decode_datagram(&bytes, &mut skipped).unwrap();
        assert_eq!(batch.changes.len(), 2);
        assert!(batch.done);
        assert_eq!(skipped, 0);
    }

    #[test]
    fn garbage_is_skipped_not_a_panic() {
        let mut skipped = 0;
        for garbage in [
            vec![0xffu8; 64],
            vec![16, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            vec![200, 0, 0, 0],
            datagram(ConntrackMessage::New(dnat_flow_attributes(3)))[..40].to_vec(),
        ] {
            let _ = decode_datagram(&garbage, &mut skipped);
        }
        assert!(skipped > 0);
        // The crate's own parser agrees with ours on the message type split.
        let message = NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
            ConntrackMessage::Get(vec![]),
        );
        let kind = message.message_type();
        assert!(NetfilterMessage::parse_with_param(&[2, 0, 0, 0], kind).is_ok());
    }
}
