//! The flow model: one conntrack entry as handoff sees it, and what an event says about it.

use std::net::SocketAddr;

use serde::Serialize;

use crate::ports::Protocol;

/// `IPS_DST_NAT` in the conntrack status bits: the flow was DNAT'd.
const IPS_DST_NAT: u32 = 1 << 5;

/// conntrack's TCP states (linux/netfilter/nf_conntrack_tcp.h), and `Udp` for a UDP flow,
/// which has none: it lives while its entry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FlowState {
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
    Udp,
}

impl FlowState {
    pub fn from_kernel(value: u8) -> Self {
        match value {
            0 => FlowState::None,
            1 => FlowState::SynSent,
            2 => FlowState::SynRecv,
            3 => FlowState::Established,
            4 => FlowState::FinWait,
            5 => FlowState::CloseWait,
            6 => FlowState::LastAck,
            7 => FlowState::TimeWait,
            8 => FlowState::Close,
            9 => FlowState::SynSent2,
            _ => FlowState::Unknown,
        }
    }

    /// Finished flows only wait for their entry to expire; every other state may still carry
    /// data. A UDP flow has no end of its own (no FIN): it is live until its entry goes,
    /// `nf_conntrack_udp_timeout_stream` (120 s) after its last datagram.
    pub fn is_live(self) -> bool {
        !matches!(self, FlowState::TimeWait | FlowState::Close)
    }

    pub fn name(self) -> &'static str {
        match self {
            FlowState::None => "NONE",
            FlowState::SynSent => "SYN_SENT",
            FlowState::SynRecv => "SYN_RECV",
            FlowState::Established => "ESTABLISHED",
            FlowState::FinWait => "FIN_WAIT",
            FlowState::CloseWait => "CLOSE_WAIT",
            FlowState::LastAck => "LAST_ACK",
            FlowState::TimeWait => "TIME_WAIT",
            FlowState::Close => "CLOSE",
            FlowState::SynSent2 => "SYN_SENT2",
            FlowState::Unknown => "UNKNOWN",
            FlowState::Udp => "UDP",
        }
    }

    /// The sysctl holding this state's full timeout, to tell idle time from the time left.
    pub(crate) fn timeout_sysctl(self) -> Option<&'static str> {
        Some(match self {
            FlowState::SynSent | FlowState::SynSent2 => "nf_conntrack_tcp_timeout_syn_sent",
            FlowState::SynRecv => "nf_conntrack_tcp_timeout_syn_recv",
            FlowState::Established => "nf_conntrack_tcp_timeout_established",
            FlowState::FinWait => "nf_conntrack_tcp_timeout_fin_wait",
            FlowState::CloseWait => "nf_conntrack_tcp_timeout_close_wait",
            FlowState::LastAck => "nf_conntrack_tcp_timeout_last_ack",
            FlowState::TimeWait => "nf_conntrack_tcp_timeout_time_wait",
            FlowState::Close => "nf_conntrack_tcp_timeout_close",
            // An answered flow's; one never answered has the shorter nf_conntrack_udp_timeout.
            FlowState::Udp => "nf_conntrack_udp_timeout_stream",
            FlowState::None | FlowState::Unknown => return None,
        })
    }
}

/// One TCP or UDP flow (IPv4 or IPv6) as conntrack sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flow {
    /// conntrack's id for the entry (stable for its lifetime).
    pub id: Option<u32>,
    pub protocol: Protocol,
    /// The client: source of the original direction.
    pub client: SocketAddr,
    /// What the client connected to (the host's external address and port).
    pub destination: SocketAddr,
    /// Where the flow really goes: source of the reply direction (after DNAT, the backend).
    pub backend: SocketAddr,
    /// Where the backend's replies are addressed: destination of the reply direction (the
    /// client, or the host's own address for a masqueraded hairpin flow).
    pub reply_to: SocketAddr,
    /// The conntrack zone (0 unless the host sorts flows into zones).
    pub zone: u16,
    pub state: FlowState,
    /// Seconds until the entry expires unless a packet refreshes it.
    pub timeout_secs: Option<u32>,
    pub status: u32,
    /// Bytes in both directions, when `nf_conntrack_acct` is on.
    pub bytes: Option<u64>,
    /// Start time in ns (CLOCK_REALTIME), when `nf_conntrack_timestamp` is on.
    pub start_ns: Option<u64>,
}

/// Identifies a conntrack entry across dump and events: its zone and original tuple. (Not
/// unique over time: a client that reuses a tuple gets a new entry with the same key.)
pub type FlowKey = (u16, Protocol, SocketAddr, SocketAddr);

impl Flow {
    pub fn key(&self) -> FlowKey {
        (self.zone, self.protocol, self.client, self.destination)
    }

    pub fn is_live(&self) -> bool {
        self.state.is_live()
    }

    pub fn is_dnat(&self) -> bool {
        self.status & IPS_DST_NAT != 0
    }

    /// Seconds since the last packet, derived from the state's configured timeout and the time
    /// left (`None` when either is unknown).
    pub fn idle_secs(&self, timeouts: &super::StateTimeouts) -> Option<u32> {
        let full = timeouts.get(self.state)?;
        Some(full.saturating_sub(self.timeout_secs?))
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
