//! Rollouts: one component to one tag across the fleet, at most `max_parallel` hosts at once —
//! gantryd's "one machine at a time", without its failure modes.
//!
//! * A turn is a slot key `spec/turns/{0..max_parallel}` created under the updating host's
//!   lease, in one transaction with the marker `spec/updating/{host}` and guarded by the
//!   rollout's revision and the host's registration: at most `max_parallel` hosts hold one,
//!   and an agent acting on a stale rollout, or whose lease expired, cannot take one.
//! * A host finishes its turn by deleting the slot and the marker and writing its status, in
//!   one transaction that holds only while its lease still holds the slot.
//! * A host that dies mid-update loses the slot with its lease, but its marker stays: anyone
//!   who then reads the fleet (every agent watches `spec/`, and `fleet update` waits on it)
//!   halts the rollout with "host X was lost during its update" — within the lease's TTL,
//!   where gantryd's `updating` state blocked forever.
//! * A failed ready check halts the rollout with the host's reason; no other host starts.
//! * When every live host reports the tag, the rollout is `done`.
//!
//! Every halt and every `done` is guarded by the rollout's revision, so of several watchers
//! noticing the same thing one writes, and an operator's new rollout is never overwritten.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use etcd_client::{Compare, CompareOp, PutOptions, TxnOp};

use super::records::{
    now_ms, HostRecord, MemberRecord, RolloutRecord, StatusRecord, StopRecord, TurnRecord,
};
use super::{Etcd, Keys};

pub const RUNNING: &str = "running";
pub const HALTED: &str = "halted";
pub const DONE: &str = "done";

/// One consistent read of a fleet (one etcd revision): what the agents, `fleet update` and
/// `fleet list` decide from.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub revision: i64,
    pub config: Option<String>,
    /// The rollout and its mod revision.
    pub rollout: Option<(RolloutRecord, i64)>,
    /// Held turns: slot and holder.
    pub turns: Vec<(u32, TurnRecord)>,
    /// Hosts that started an update in the current rollout and have not finished it.
    pub updating: BTreeSet<String>,
    /// Components stopped (or killed) fleet-wide, by name.
    pub stopped: BTreeMap<String, StopRecord>,
    /// Hosts whose lease is alive, by name.
    pub alive: BTreeMap<String, HostRecord>,
    /// Every host ever registered, by name: when it was last seen.
    pub members: BTreeMap<String, MemberRecord>,
    /// (host, component) -> status.
    pub statuses: BTreeMap<(String, String), StatusRecord>,
}

impl Snapshot {
    pub fn read(etcd: &mut Etcd, keys: &Keys) -> Result<Snapshot> {
        let (entries, revision) = etcd.snapshot(keys.root())?;
        let mut snapshot = Snapshot {
            revision,
            ..Snapshot::default()
        };
        for (key, value, mod_revision) in entries {
            if key == keys.config() {
                snapshot.config = Some(String::from_utf8_lossy(&value).into_owned());
            } else if key == keys.rollout() {
                if let Ok(record) = serde_json::from_slice(&value) {
                    snapshot.rollout = Some((record, mod_revision));
                }
            } else if let Some(slot) = key.strip_prefix(&keys.turns()) {
                if let (Ok(slot), Ok(turn)) = (slot.parse(), serde_json::from_slice(&value)) {
                    snapshot.turns.push((slot, turn));
                }
            } else if key.starts_with(&keys.stops()) {
                if let Ok(stop) = serde_json::from_slice::<StopRecord>(&value) {
                    snapshot.stopped.insert(stop.component.clone(), stop);
                }
            } else if let Some(host) = key.strip_prefix(&keys.updatings()) {
                snapshot.updating.insert(host.to_string());
            } else if key.starts_with(&keys.hosts()) {
                if let Ok(record) = serde_json::from_slice::<HostRecord>(&value) {
                    snapshot.alive.insert(record.name.clone(), record);
                }
            } else if key.starts_with(&keys.members()) {
                if let Ok(member) = serde_json::from_slice::<MemberRecord>(&value) {
                    snapshot.members.insert(member.name.clone(), member);
                }
            } else if let Some(rest) = key.strip_prefix(&keys.statuses()) {
                if let (Some((host, _)), Ok(status)) = (
                    rest.split_once('/'),
                    serde_json::from_slice::<StatusRecord>(&value),
                ) {
                    snapshot
                        .statuses
                        .insert((host.to_string(), status.component.clone()), status);
                }
            }
        }
        Ok(snapshot)
    }

    /// The rollout, when it is running.
    pub fn running(&self) -> Option<&(RolloutRecord, i64)> {
        self.rollout.as_ref().filter(|(r, _)| r.state == RUNNING)
    }

    /// Hosts marked updating that hold no turn: their lease expired in the middle of it.
    pub fn lost_updaters(&self) -> Vec<String> {
        self.updating
            .iter()
            .filter(|host| !self.turns.iter().any(|(_, t)| &t.host == *host))
            .cloned()
            .collect()
    }

    /// The tag `host` serves `component` at, if it reports serving.
    pub fn serving_tag(&self, host: &str, component: &str) -> Option<&str> {
        self.statuses
            .get(&(host.to_string(), component.to_string()))
            .filter(|s| s.state == "ready")
            .and_then(|s| s.tag.as_deref())
    }

    /// The state `host` last reported for `component`.
    pub fn state_of(&self, host: &str, component: &str) -> Option<&str> {
        self.statuses
            .get(&(host.to_string(), component.to_string()))
            .map(|s| s.state.as_str())
    }

    /// Every live host serves the rollout's tag and no update is under way.
    pub fn complete(&self, rollout: &RolloutRecord) -> bool {
        self.updating.is_empty()
            && !self.alive.is_empty()
            && self
                .alive
                .keys()
                .all(|h| self.serving_tag(h, &rollout.component) == Some(rollout.tag.as_str()))
    }
}

fn put_rollout(keys: &Keys, record: &RolloutRecord) -> Result<TxnOp> {
    Ok(TxnOp::put(
        keys.rollout(),
        serde_json::to_vec(record)?,
        None,
    ))
}

/// What a watcher of a running rollout must do: halt it when a host was lost mid-update,
/// mark it done when complete. `Some(new state)` when this call changed it.
pub fn check(etcd: &mut Etcd, keys: &Keys, snapshot: &Snapshot) -> Result<Option<String>> {
    let Some((rollout, revision)) = snapshot.running() else {
        return Ok(None);
    };
    if let Some(lost) = snapshot.lost_updaters().first() {
        let reason = format!("host {lost} was lost during its update");
        let written = halt(
            etcd,
            keys,
            rollout,
            *revision,
            &reason,
            vec![TxnOp::delete(keys.updating(lost), None)],
        )?;
        return Ok(written.then(|| HALTED.to_string()));
    }
    if snapshot.complete(rollout) {
        let mut done = rollout.clone();
        done.state = DONE.into();
        let written = etcd.txn(
            vec![Compare::mod_revision(
                keys.rollout(),
                CompareOp::Equal,
                *revision,
            )],
            vec![put_rollout(keys, &done)?],
        )?;
        return Ok(written.then(|| DONE.to_string()));
    }
    Ok(None)
}

/// Halt `rollout` (read at `revision`) with `reason`, plus `extra` operations.
pub fn halt(
    etcd: &mut Etcd,
    keys: &Keys,
    rollout: &RolloutRecord,
    revision: i64,
    reason: &str,
    extra: Vec<TxnOp>,
) -> Result<bool> {
    let mut halted = rollout.clone();
    halted.state = HALTED.into();
    halted.reason = Some(reason.to_string());
    let mut operations = vec![put_rollout(keys, &halted)?];
    operations.extend(extra);
    etcd.txn(
        vec![Compare::mod_revision(
            keys.rollout(),
            CompareOp::Equal,
            revision,
        )],
        operations,
    )
}

/// A turn taken: its slot and the etcd revision it was taken at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    pub slot: u32,
    pub revision: i64,
}

/// Take a free turn in the running rollout for `host` (registered under `lease`).
pub fn take_turn(
    etcd: &mut Etcd,
    keys: &Keys,
    snapshot: &Snapshot,
    host: &str,
    lease: i64,
) -> Result<Option<Turn>> {
    let Some((rollout, revision)) = snapshot.running() else {
        return Ok(None);
    };
    let turn = serde_json::to_vec(&TurnRecord {
        host: host.to_string(),
        since_ms: now_ms(),
    })?;
    for slot in 0..rollout.max_parallel {
        if snapshot.turns.iter().any(|(s, _)| *s == slot) {
            continue;
        }
        let taken = etcd.txn_revision(
            vec![
                Compare::mod_revision(keys.rollout(), CompareOp::Equal, *revision),
                Compare::create_revision(keys.turn(slot), CompareOp::Equal, 0),
                Compare::lease(keys.host(host), CompareOp::Equal, lease),
            ],
            vec![
                TxnOp::put(
                    keys.turn(slot),
                    turn.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
                TxnOp::put(keys.updating(host), host, None),
            ],
        )?;
        if let Some(revision) = taken {
            return Ok(Some(Turn { slot, revision }));
        }
    }
    Ok(None)
}

/// End `host`'s turn in `slot`: free the slot, clear the marker and write `status`, only while
/// its lease still holds the slot. With `halt_reason`, also halt the rollout (a failed update).
/// The etcd revision the turn ended at; `None` when the lease no longer held the slot.
#[allow(clippy::too_many_arguments)]
pub fn end_turn(
    etcd: &mut Etcd,
    keys: &Keys,
    slot: u32,
    host: &str,
    lease: i64,
    status: &StatusRecord,
    halt_reason: Option<(&RolloutRecord, &str)>,
) -> Result<Option<i64>> {
    let mut operations = vec![
        TxnOp::delete(keys.turn(slot), None),
        TxnOp::delete(keys.updating(host), None),
        TxnOp::put(
            keys.status(host, &status.component),
            serde_json::to_vec(status)?,
            None,
        ),
    ];
    if let Some((rollout, reason)) = halt_reason {
        let mut halted = rollout.clone();
        halted.state = HALTED.into();
        halted.reason = Some(reason.to_string());
        operations.push(put_rollout(keys, &halted)?);
    }
    etcd.txn_revision(
        vec![Compare::lease(keys.turn(slot), CompareOp::Equal, lease)],
        operations,
    )
}

/// Start (or resume) a rollout of `component` to `tag`. A running rollout of anything else is
/// refused (`Err` names it), as is a component stopped fleet-wide; a halted or finished one is
/// replaced; the same one is resumed.
pub fn begin(
    etcd: &mut Etcd,
    keys: &Keys,
    snapshot: &Snapshot,
    component: &str,
    tag: &str,
    max_parallel: u32,
    config_tag: &str,
) -> Result<std::result::Result<RolloutRecord, String>> {
    if snapshot.stopped.contains_key(component) {
        return Ok(Err(format!(
            "{component} is stopped fleet-wide; `handoff fleet start {component}` first"
        )));
    }
    let (previous, guard) = match &snapshot.rollout {
        Some((r, revision)) => {
            if r.state == RUNNING && (r.component != component || r.tag != tag) {
                return Ok(Err(format!(
                    "a rollout of {} to {} is running; wait for it or let it halt",
                    r.component, r.tag
                )));
            }
            let previous = if r.component != component {
                config_tag.to_string()
            } else if r.state == DONE {
                r.tag.clone()
            } else {
                r.previous.clone()
            };
            (
                previous,
                Compare::mod_revision(keys.rollout(), CompareOp::Equal, *revision),
            )
        }
        None => (
            config_tag.to_string(),
            Compare::create_revision(keys.rollout(), CompareOp::Equal, 0),
        ),
    };
    let record = RolloutRecord {
        component: component.to_string(),
        tag: tag.to_string(),
        previous,
        max_parallel: max_parallel.max(1),
        state: RUNNING.into(),
        reason: None,
        started_ms: now_ms(),
    };
    // A stop requested since the read wins: the rollout is not started.
    let not_stopped = Compare::create_revision(keys.stop(component), CompareOp::Equal, 0);
    if !etcd.txn(vec![guard, not_stopped], vec![put_rollout(keys, &record)?])? {
        return Ok(Err(
            "the rollout changed while it was being started; run the command again".into(),
        ));
    }
    Ok(Ok(record))
}
