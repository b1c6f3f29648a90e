//! The flow model: one conntrack entry as handoff sees it, and what an event says about it.

use std::net::SocketAddrV4;

use serde::Serialize;

/// `IPS_DST_NAT` in the conntrack status bits: the flow was DNAT'd.
const IPS_DST_NAT: u32 = 1 << 5;

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
    pub(crate) fn timeout_sysctl(self) -> Option<&'static str> {
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
    /// Where the backend's replies are addressed: destination of the reply direction (the
    /// client, or the host's own address for a masqueraded hairpin flow).
    pub reply_to: SocketAddrV4,
    /// The conntrack zone (0 unless the host sorts flows into zones).
    pub zone: u16,
    pub state: TcpState,
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
pub type FlowKey = (u16, SocketAddrV4, SocketAddrV4);

impl Flow {
    pub fn key(&self) -> FlowKey {
        (self.zone, self.client, self.destination)
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
