//! The JSON records the fleet keeps in etcd.

use serde::{Deserialize, Serialize};

/// `hosts/{host}`, under the agent's lease: present exactly while the agent is alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub name: String,
    /// When this registration started (ms since the epoch).
    pub since_ms: u64,
    /// The agent's process id, for an operator looking for it.
    pub pid: u32,
}

/// `members/{host}`: outlives the lease, so a lost host is listed as lost, with when it was
/// last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub name: String,
    /// The last keep-alive the agent got an answer to (ms since the epoch).
    pub last_seen_ms: u64,
}

/// `status/{host}/{component}`: what serves the component on the host, as its agent last saw
/// it. Not under the lease: a lost host's last known state stays readable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    pub component: String,
    /// The active container's image tag (absent when nothing serves).
    pub tag: Option<String>,
    /// The active backend address.
    pub active: Option<String>,
    /// `ready` (serving), `failed` (with the reason), or after a fleet-wide stop `stopping`
    /// (out of the ruleset, draining), `stopped` (drained and retired) or `killed`.
    pub state: String,
    pub reason: Option<String>,
    pub at_ms: u64,
}

/// `spec/rollout`: the fleet's current (or last) rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    pub component: String,
    pub tag: String,
    /// The tag the fleet ran before (what `rollback` returns to).
    pub previous: String,
    pub max_parallel: u32,
    /// `running`, `halted` or `done`.
    pub state: String,
    pub reason: Option<String>,
    pub started_ms: u64,
}

/// `spec/stopped/{component}`: the component is stopped fleet-wide (`fleet stop`, or `fleet
/// kill` when `kill`): every agent takes it out of its host and convergence no longer starts
/// it, until `fleet start` deletes the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRecord {
    pub component: String,
    pub kill: bool,
    pub since_ms: u64,
}

/// `spec/turns/{slot}`, under the holder's lease: a host updating in this rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnRecord {
    pub host: String,
    pub since_ms: u64,
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
