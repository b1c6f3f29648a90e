//! Fleet-wide `stop`, `kill` and `start`. gantryd's `stop` and `kill` wrote a component state
//! every machine acted on; here a stop is the key `spec/stopped/{component}` ([`StopRecord`]),
//! which every agent watches:
//!
//! * `stop`: the agent takes the component's ports out of its ruleset, reports `stopping`,
//!   lets the flows drain as the local `stop` does, then retires the containers and reports
//!   `stopped`;
//! * `kill`: the same without draining or termination signals; it reports `killed`. A kill
//!   after a stop cuts the drain short;
//! * `start` deletes the key; convergence then starts the component again, at the fleet's tag.
//!
//! A stop is refused while a rollout of the component runs, and a rollout is refused while
//! the component is stopped: each transaction is guarded by the other's key, so of a stop and
//! a rollout asked at the same moment exactly one happens.

use anyhow::Result;
use etcd_client::{Compare, CompareOp, TxnOp};

use super::records::{now_ms, StopRecord};
use super::rollout::Snapshot;
use super::{Etcd, Keys};

/// Reported by a host that took the component out and is draining it.
pub const STOPPING: &str = "stopping";
/// Reported by a host that drained and retired the component.
pub const STOPPED: &str = "stopped";
/// Reported by a host that retired the component without draining.
pub const KILLED: &str = "killed";

/// Stop (`kill`: kill) `component` fleet-wide, unless a rollout of it is running (`Err` says
/// so). A kill replaces a stop; a stop never turns a kill back into a drain.
pub fn request(
    etcd: &mut Etcd,
    keys: &Keys,
    snapshot: &Snapshot,
    component: &str,
    kill: bool,
) -> Result<std::result::Result<StopRecord, String>> {
    if let Some((rollout, _)) = snapshot.running() {
        if rollout.component == component {
            return Ok(Err(format!(
                "a rollout of {component} to {} is running; wait for it or let it halt",
                rollout.tag
            )));
        }
    }
    let earlier = snapshot.stopped.get(component);
    let record = StopRecord {
        component: component.to_string(),
        kill: kill || earlier.is_some_and(|s| s.kill),
        since_ms: earlier.map_or_else(now_ms, |s| s.since_ms),
    };
    let rollout_unchanged = match &snapshot.rollout {
        Some((_, revision)) => Compare::mod_revision(keys.rollout(), CompareOp::Equal, *revision),
        None => Compare::create_revision(keys.rollout(), CompareOp::Equal, 0),
    };
    let written = etcd.txn(
        vec![rollout_unchanged],
        vec![TxnOp::put(
            keys.stop(component),
            serde_json::to_vec(&record)?,
            None,
        )],
    )?;
    if !written {
        return Ok(Err(
            "the rollout changed while the stop was being written; run the command again".into(),
        ));
    }
    Ok(Ok(record))
}

/// `fleet start`: lift the stop of `component`; whether there was one.
pub fn release(etcd: &mut Etcd, keys: &Keys, component: &str) -> Result<bool> {
    etcd.txn(
        vec![Compare::create_revision(
            keys.stop(component),
            CompareOp::Greater,
            0,
        )],
        vec![TxnOp::delete(keys.stop(component), None)],
    )
}

/// What a host must do about `stop`, given the state it last reported for the component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Take the component out and drain it (again, after a restart mid-drain).
    Withdraw,
    /// Retire everything of the component at once.
    Kill,
    /// The host is where the stop wants it.
    Nothing,
}

pub fn action(stop: &StopRecord, reported: Option<&str>) -> Action {
    match (stop.kill, reported) {
        (_, Some(KILLED)) => Action::Nothing,
        (true, _) => Action::Kill,
        (false, Some(STOPPED)) => Action::Nothing,
        (false, _) => Action::Withdraw,
    }
}

/// Whether a host that reported `reported` has done what `stop` asks.
pub fn satisfied(stop: &StopRecord, reported: Option<&str>) -> bool {
    match reported {
        Some(KILLED) => true,
        Some(STOPPED) => !stop.kill,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stop(kill: bool) -> StopRecord {
        StopRecord {
            component: "web".into(),
            kill,
            since_ms: 1,
        }
    }

    #[test]
    fn a_stop_withdraws_until_stopped_and_a_kill_cuts_a_drain_short() {
        assert_eq!(action(&stop(false), Some("ready")), Action::Withdraw);
        assert_eq!(action(&stop(false), None), Action::Withdraw);
        // An agent restarted mid-drain withdraws again, which resumes the drain.
        assert_eq!(action(&stop(false), Some(STOPPING)), Action::Withdraw);
        assert_eq!(action(&stop(false), Some(STOPPED)), Action::Nothing);
        assert_eq!(action(&stop(false), Some(KILLED)), Action::Nothing);
        assert_eq!(action(&stop(true), Some(STOPPING)), Action::Kill);
        assert_eq!(action(&stop(true), Some(STOPPED)), Action::Kill);
        assert_eq!(action(&stop(true), Some(KILLED)), Action::Nothing);
    }

    #[test]
    fn a_stop_is_done_when_stopped_or_killed_and_a_kill_only_when_killed() {
        assert!(!satisfied(&stop(false), Some(STOPPING)));
        assert!(satisfied(&stop(false), Some(STOPPED)));
        assert!(satisfied(&stop(false), Some(KILLED)));
        assert!(!satisfied(&stop(true), Some(STOPPED)));
        assert!(satisfied(&stop(true), Some(KILLED)));
        assert!(!satisfied(&stop(true), None));
    }
}
