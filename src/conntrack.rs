//! The kernel's connection tracking table, read through ctnetlink: a dump of the flows that
//! exist now, and NEW/UPDATE/DESTROY events that say the moment one ends.
//!
//! Decoding uses `netlink-packet-netfilter`; the attributes it leaves raw (flow id, byte
//! counters, start timestamp) are decoded here. No `/proc` parsing and no `conntrack` binary.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::{Context, Result};
use netlink_packet_core::{DefaultNla, NetlinkPayload, Nla, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple, Protocol,
    Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::Socket;
use serde::Serialize;

use crate::error::Failure;
use crate::nfnetlink;

/// Multicast groups of ctnetlink events (linux/netfilter/nfnetlink.h).
const NFNLGRP_CONNTRACK_NEW: u32 = 1;
const NFNLGRP_CONNTRACK_UPDATE: u32 = 2;
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;

/// Attributes the crate leaves undecoded (linux/netfilter/nfnetlink_conntrack.h).
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_ID: u16 = 12;
const CTA_TIMESTAMP: u16 = 20;
const CTA_COUNTERS_BYTES: u16 = 2;
const CTA_TIMESTAMP_START: u16 = 1;

/// `IPS_DST_NAT` in the conntrack status bits: the flow was DNAT'd.
const IPS_DST_NAT: u32 = 1 << 5;

/// Receive buffer for events: large, so that a burst of unrelated flows rarely overruns it.
const EVENT_RCVBUF: usize = 8 << 20;

/// conntrack's TCP states (linux/netfilter/nf_conntrack_tcp.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TcpState {
    None,
    SynSent,
    SynRecv,
    Established,
    FinWait,
    CloseWait,
    LastAck,
    TimeWait,
    Close,
    SynSent2,
    Unknown,
}

impl TcpState {
    pub fn from_kernel(value: u8) -> Self {
        match value {
            0 => TcpState::None,
            1 => TcpState::SynSent,
            2 => TcpState::SynRecv,
            3 => TcpState::Established,
            4 => TcpState::FinWait,
            5 => TcpState::CloseWait,
            6 => TcpState::LastAck,
            7 => TcpState::TimeWait,
            8 => TcpState::Close,
            9 => TcpState::SynSent2,
            _ => TcpState::Unknown,
        }
    }

    /// Finished flows only wait for their entry to expire; every other state may still carry
    /// data.
    pub fn is_live(self) -> bool {
        !matches!(self, TcpState::TimeWait | TcpState::Close)
    }

    pub fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::SynSent2 => "SYN_SENT2",
            TcpState::Unknown => "UNKNOWN",
        }
    }

    /// The sysctl holding this state's full timeout, to tell idle time from the time left.
    fn timeout_sysctl(self) -> Option<&'static str> {
        Some(match self {
            TcpState::SynSent | TcpState::SynSent2 => "nf_conntrack_tcp_timeout_syn_sent",
            TcpState::SynRecv => "nf_conntrack_tcp_timeout_syn_recv",
            TcpState::Established => "nf_conntrack_tcp_timeout_established",
            TcpState::FinWait => "nf_conntrack_tcp_timeout_fin_wait",
            TcpState::CloseWait => "nf_conntrack_tcp_timeout_close_wait",
            TcpState::LastAck => "nf_conntrack_tcp_timeout_last_ack",
            TcpState::TimeWait => "nf_conntrack_tcp_timeout_time_wait",
            TcpState::Close => "nf_conntrack_tcp_timeout_close",
            TcpState::None | TcpState::Unknown => return None,
        })
    }
}

/// One IPv4 TCP flow as conntrack sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flow {
    /// conntrack's id for the entry (stable for its lifetime).
    pub id: Option<u32>,
    /// The client: source of the original direction.
    pub client: SocketAddrV4,
    /// What the client connected to (the host's external address and port).
    pub destination: SocketAddrV4,
    /// Where the flow really goes: source of the reply direction (after DNAT, the backend).
    pub backend: SocketAddrV4,
    pub state: TcpState,
    /// Seconds until the entry expires unless a packet refreshes it.
    pub timeout_secs: Option<u32>,
    pub status: u32,
    /// Bytes in both directions, when `nf_conntrack_acct` is on.
    pub bytes: Option<u64>,
    /// Start time in ns (CLOCK_REALTIME), when `nf_conntrack_timestamp` is on.
    pub start_ns: Option<u64>,
}

/// Identifies a flow across dump and events: its original tuple.
pub type FlowKey = (SocketAddrV4, SocketAddrV4);

impl Flow {
    pub fn key(&self) -> FlowKey {
        (self.client, self.destination)
    }

    pub fn is_live(&self) -> bool {
        self.state.is_live()
    }

    pub fn is_dnat(&self) -> bool {
        self.status & IPS_DST_NAT != 0
    }

    /// Seconds since the last packet, derived from the state's configured timeout and the time
    /// left (`None` when either is unknown).
    pub fn idle_secs(&self, timeouts: &StateTimeouts) -> Option<u32> {
        let full = timeouts.get(self.state)?;
        Some(full.saturating_sub(self.timeout_secs?))
    }
}

/// The configured per-state TCP timeouts of this network namespace.
#[derive(Debug, Default, Clone)]
pub struct StateTimeouts(HashMap<&'static str, u32>);

impl StateTimeouts {
    pub fn read() -> Self {
        let mut timeouts = HashMap::new();
        for state in [
            TcpState::SynSent,
            TcpState::SynRecv,
            TcpState::Established,
            TcpState::FinWait,
            TcpState::CloseWait,
            TcpState::LastAck,
            TcpState::TimeWait,
            TcpState::Close,
        ] {
            if let Some(name) = state.timeout_sysctl() {
                let path = format!("/proc/sys/net/netfilter/{name}");
                if let Some(value) = std::fs::read_to_string(path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                {
                    timeouts.insert(name, value);
                }
            }
        }
        StateTimeouts(timeouts)
    }

    fn get(&self, state: TcpState) -> Option<u32> {
        self.0.get(state.timeout_sysctl()?).copied()
    }
}

/// What a ctnetlink message says about a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The flow exists (dump entry, NEW or UPDATE event) in the state given.
    Present(Flow),
    /// The entry was destroyed.
    Destroyed(Flow),
}

impl Change {
    pub fn flow(&self) -> &Flow {
        match self {
            Change::Present(flow) | Change::Destroyed(flow) => flow,
        }
    }
}

fn default_nla_bytes(nla: &DefaultNla) -> Vec<u8> {
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

/// (source, destination, protocol) of a tuple attribute, IPv4 only.
fn decode_tuple(tuple: &[Tuple]) -> Option<(SocketAddrV4, SocketAddrV4, Protocol)> {
    let (mut src_ip, mut dst_ip, mut src_port, mut dst_port, mut proto) =
        (None, None, None, None, None);
    for part in tuple {
        match part {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(IpAddr::V4(a)) => src_ip = Some(*a),
                        IPTuple::DestinationAddress(IpAddr::V4(a)) => dst_ip = Some(*a),
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
        SocketAddrV4::new(src_ip?, src_port?),
        SocketAddrV4::new(dst_ip?, dst_port?),
        proto?,
    ))
}

/// Turn a conntrack message into a [`Change`]. Non-TCP and non-IPv4 flows yield `None`.
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
    for attribute in attributes {
        match attribute {
            ConntrackAttribute::CtaTupleOrig(tuple) => original = decode_tuple(tuple),
            ConntrackAttribute::CtaTupleReply(tuple) => reply = decode_tuple(tuple),
            ConntrackAttribute::CtaProtoInfo(infos) => {
                for info in infos {
                    if let ProtoInfo::TCP(tcp) = info {
                        for item in tcp {
                            if let ProtoInfoTCP::State(value) = item {
                                state = Some(TcpState::from_kernel(*value));
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
    if protocol != Protocol::Tcp {
        return None;
    }
    let (backend, _, _) = reply?;
    let flow = Flow {
        id,
        client,
        destination,
        backend,
        // Events for a destroyed entry may omit the state; an UPDATE always carries it.
        state: state.unwrap_or(if destroyed {
            TcpState::Close
        } else {
            TcpState::Unknown
        }),
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

const EVENTS_SYSCTL: &str = "/proc/sys/net/netfilter/nf_conntrack_events";

/// Make sure flows created from now on report their end.
///
/// With `nf_conntrack_events = 2` (the kernel's default: "only when someone listens"), a flow
/// created while no ctnetlink listener exists never reports its end, and a drain started later
/// could only poll. Setting it to 1 gives every new flow the (small) event extension. A value
/// of 0 means events were turned off on purpose: it is left alone and drains fall back to
/// periodic dumps. Returns the value found.
pub fn ensure_events_for_new_flows() -> Result<u8> {
    let current = std::fs::read_to_string(EVENTS_SYSCTL).map_err(|e| {
        Failure::host(format!(
            "cannot read {EVENTS_SYSCTL} ({e}); is nf_conntrack loaded?"
        ))
    })?;
    let current: u8 = current.trim().parse().unwrap_or(2);
    if current == 2 {
        std::fs::write(EVENTS_SYSCTL, "1").map_err(|e| {
            Failure::host(format!(
                "cannot enable conntrack events in {EVENTS_SYSCTL}: {e}"
            ))
        })?;
    }
    Ok(current)
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

/// Every IPv4 TCP flow conntrack knows now (all states).
pub fn dump() -> Result<Vec<Flow>> {
    let socket = nfnetlink::open()?;
    let request = nfnetlink::request(
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
        NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
        ConntrackMessage::Get(vec![]),
    );
    socket.send(&request, 0).map_err(|e| {
        Failure::host(format!(
            "cannot query conntrack ({e}); is the nf_conntrack module loaded?"
        ))
    })?;
    let mut flows = Vec::new();
    let mut buffer = Vec::with_capacity(nfnetlink::RECV_BUFFER);
    let mut skipped = 0;
    loop {
        nfnetlink::receive(&socket, &mut buffer).map_err(|e| {
            Failure::host(format!(
                "reading the conntrack table failed ({e}); is the nf_conntrack_netlink module \
                 available?"
            ))
        })?;
        let batch = decode_datagram(&buffer, &mut skipped)
            .map_err(|e| Failure::host(format!("cannot dump conntrack: {e:#}")))?;
        flows.extend(batch.changes.into_iter().filter_map(|change| match change {
            Change::Present(flow) => Some(flow),
            Change::Destroyed(_) => None,
        }));
        if batch.done {
            return Ok(flows);
        }
    }
}

/// The entry for one flow now, looked up by its original tuple: `None` when conntrack no
/// longer has it. Costs one request per flow, whatever the size of the table.
pub fn lookup(socket: &Socket, key: FlowKey) -> Result<Option<Flow>> {
    let (client, destination) = key;
    let tuple = vec![
        Tuple::Ip(vec![
            IPTuple::SourceAddress(IpAddr::V4(*client.ip())),
            IPTuple::DestinationAddress(IpAddr::V4(*destination.ip())),
        ]),
        Tuple::Proto(vec![
            ProtoTuple::Protocol(Protocol::Tcp),
            ProtoTuple::SourcePort(client.port()),
            ProtoTuple::DestinationPort(destination.port()),
        ]),
    ];
    let request = nfnetlink::request(
        NLM_F_REQUEST,
        1,
        NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0),
        ConntrackMessage::Get(vec![ConntrackAttribute::CtaTupleOrig(tuple)]),
    );
    socket
        .send(&request, 0)
        .context("looking up a conntrack entry")?;
    if !nfnetlink::wait_readable(socket, Duration::from_secs(1))? {
        anyhow::bail!("conntrack did not answer a lookup within 1 s");
    }
    let mut buffer = Vec::with_capacity(nfnetlink::RECV_BUFFER);
    nfnetlink::receive(socket, &mut buffer).context("reading a conntrack entry")?;
    let mut skipped = 0;
    match decode_datagram(&buffer, &mut skipped) {
        Ok(batch) => Ok(batch.changes.into_iter().find_map(|change| match change {
            Change::Present(flow) => Some(flow),
            Change::Destroyed(_) => None,
        })),
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::raw_os_error)
                == Some(nix::libc::ENOENT) =>
        {
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// What waiting for events produced.
#[derive(Debug)]
pub enum Events {
    Changes(Vec<Change>),
    /// Nothing arrived within the timeout.
    Idle,
    /// The kernel dropped events (receive buffer full): the caller must dump again.
    Overrun,
}

/// A subscription to conntrack NEW, UPDATE and DESTROY events.
pub struct EventStream {
    socket: Socket,
    buffer: Vec<u8>,
    skipped: usize,
}

impl EventStream {
    /// Subscribe. Subscribe before dumping, so that nothing ending in between is missed.
    pub fn subscribe() -> Result<Self> {
        let socket = nfnetlink::open()?;
        for group in [
            NFNLGRP_CONNTRACK_NEW,
            NFNLGRP_CONNTRACK_UPDATE,
            NFNLGRP_CONNTRACK_DESTROY,
        ] {
            socket.add_membership(group).map_err(|e| {
                Failure::host(format!(
                    "cannot subscribe to conntrack events ({e}); handoff must run as root"
                ))
            })?;
        }
        // Best effort: a smaller buffer only means more resyncs.
        let _ = socket.set_rx_buf_sz(EVENT_RCVBUF);
        socket
            .set_non_blocking(true)
            .context("making the event socket non-blocking")?;
        Ok(EventStream {
            socket,
            buffer: Vec::with_capacity(nfnetlink::RECV_BUFFER),
            skipped: 0,
        })
    }

    /// Wait up to `timeout` for events and return all that are queued.
    pub fn wait(&mut self, timeout: Duration) -> Result<Events> {
        if !nfnetlink::wait_readable(&self.socket, timeout)? {
            return Ok(Events::Idle);
        }
        let mut changes = Vec::new();
        loop {
            match nfnetlink::receive(&self.socket, &mut self.buffer) {
                Ok(_) => {
                    let batch = decode_datagram(&self.buffer, &mut self.skipped)?;
                    changes.extend(batch.changes);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    return Ok(Events::Overrun)
                }
                Err(e) => return Err(anyhow::Error::new(e).context("reading conntrack events")),
            }
        }
        Ok(Events::Changes(changes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkSerializable, ParseableParametrized};
    use netlink_packet_netfilter::conntrack::Status;
    use std::net::Ipv4Addr;

    fn tuple(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<Tuple> {
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
    fn dnat_flow_attributes(state: u8) -> Vec<ConntrackAttribute> {
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

    /// Encode a message the way the kernel sends it: netlink header + nfgenmsg + attributes.
    fn datagram(message: ConntrackMessage) -> Vec<u8> {
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
        assert_eq!(flow.state, TcpState::Established);
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
    fn udp_and_incomplete_entries_are_ignored() {
        let mut udp = dnat_flow_attributes(3);
        udp[0] = ConntrackAttribute::CtaTupleOrig(vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1))),
                IPTuple::DestinationAddress(IpAddr::V4(Ipv4Addr::new(2, 2, 2, 2))),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(Protocol::Udp),
                ProtoTuple::SourcePort(1),
                ProtoTuple::DestinationPort(2),
            ]),
        ]);
        assert_eq!(decode(&ConntrackMessage::New(udp)), None);
        assert_eq!(decode(&ConntrackMessage::New(vec![])), None);
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
