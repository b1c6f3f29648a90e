//! The JSON records the fleet keeps in etcd. Two kinds, written by different hands:
//!
//! * the spec, written by operators only: [`RolloutSpec`] and [`StopSpec`] (and the config's
//!   text), each sealed in an envelope and signed ([`super::sealed`]);
//! * what hosts report and coordinate with, each host only its own: [`HostRecord`],
//!   [`MemberRecord`], [`StatusRecord`], [`RefusalsRecord`], [`UpdatingRecord`], [`HaltRecord`],
//!   and the turn slots ([`TurnRecord`]) every host competes for.

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

/// A component's state as its host reports it.
pub mod state {
    /// Serving (`tag` and `active` say what).
    pub const READY: &str = "ready";
    /// Starting, updating or replacing it failed (`reason` says why).
    pub const FAILED: &str = "failed";
    /// The spec for it was refused here (unsigned, badly signed, replayed, or forbidden by
    /// the host's policy): nothing of it was started, what ran is kept (`tag`, `active`).
    pub const REFUSED: &str = "refused";
    /// Out of the ruleset after a fleet-wide stop, draining.
    pub const STOPPING: &str = "stopping";
    /// Drained and retired after a fleet-wide stop.
    pub const STOPPED: &str = "stopped";
    /// Retired without draining after a fleet-wide kill.
    pub const KILLED: &str = "killed";
    /// The states of a component that an operator's stop holds.
    pub const HELD_BY_STOP: [&str; 3] = [STOPPING, STOPPED, KILLED];
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
    /// One of [`state`].
    pub state: String,
    pub reason: Option<String>,
    pub at_ms: u64,
}

/// The body of `spec/rollout`: one component to one tag across the fleet. Whether it runs,
/// halted or is done is not written here (no host may write the spec): it follows from the
/// hosts' turns, halts and statuses ([`super::rollout::Snapshot::progress`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    pub component: String,
    pub tag: String,
    /// The tag the fleet ran before (what `rollback` returns to, and what a host that has
    /// not had its turn yet runs).
    pub previous: String,
    pub max_parallel: u32,
    pub started_ms: u64,
}

/// What an operator asked of a component fleet-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopAction {
    /// Out of the ruleset, drained, retired.
    Stop,
    /// Retired at once, without draining.
    Kill,
    /// Serving again: lifts a stop or a kill. A record rather than a deletion, so that it is
    /// signed like the stop it lifts (a deletion cannot be).
    Start,
}

/// The body of `spec/stops/{component}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopSpec {
    pub component: String,
    pub action: StopAction,
    pub since_ms: u64,
}

impl StopSpec {
    /// Stopped or killed (not started again).
    pub fn holds(&self) -> bool {
        self.action != StopAction::Start
    }

    pub fn kill(&self) -> bool {
        self.action == StopAction::Kill
    }
}

/// `rollout/turns/{slot}`, under the holder's lease: a host updating in a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnRecord {
    pub host: String,
    /// The rollout's sequence number ([`super::sealed::Envelope::sequence`]).
    pub rollout: u64,
    pub since_ms: u64,
}

/// `rollout/updating/{host}`: the host started its update in that rollout and has not ended
/// it. Not under the lease: a host that dies mid-update leaves it, and the rollout reads as
/// halted ("lost during its update") until an operator starts another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatingRecord {
    pub host: String,
    pub rollout: u64,
    pub since_ms: u64,
}

/// `rollout/halts/{host}`: the host halted that rollout (its update failed, or it refused the
/// rollout's spec). Only the rollout with that sequence number reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaltRecord {
    pub host: String,
    pub rollout: u64,
    pub reason: String,
    pub at_ms: u64,
}

/// `refusals/{host}`: the spec records the host refused (key -> why) and keeps refusing; it
/// acts on what it accepted before. Absent when it refuses nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalsRecord {
    pub host: String,
    pub refused: std::collections::BTreeMap<String, String>,
    pub at_ms: u64,
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
