//! Rollouts: one component to one tag across the fleet, at most `max_parallel` hosts at once —
//! gantryd's "one machine at a time", without its failure modes, and without any host writing
//! what another runs.
//!
//! * An operator writes the rollout (`spec/rollout`, sealed and signed: [`super::sealed`]).
//!   Its sequence number names it in everything hosts write about it.
//! * A turn is a slot key `rollout/turns/{0..max_parallel}` created under the updating host's
//!   lease, in one transaction with the host's marker `rollout/updating/{host}`, guarded by
//!   the rollout record's revision, by no halt written since, and by the host's registration:
//!   at most `max_parallel` hosts hold one, and an agent acting on a stale rollout, or whose
//!   lease expired, cannot take one.
//! * A host finishes its turn by deleting the slot and its marker and writing its status —
//!   and, when its update failed, its halt `rollout/halts/{host}` — in one transaction that
//!   holds only while its lease still holds the slot.
//! * Whether the rollout runs, halted or is done is read, not written ([`Snapshot::progress`]):
//!   halted when a host halted it, or when a host's marker outlives its turn (it was lost
//!   mid-update: within the lease's TTL, where gantryd's `updating` state blocked forever);
//!   done when no host is updating and every live host that runs the component serves the tag.
//!   No host can mark another's rollout done or halted, and a new rollout (a new sequence)
//!   reads none of the old one's halts.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use super::records::{
    now_ms, state, HaltRecord, HostRecord, MemberRecord, RefusalsRecord, RolloutSpec, StatusRecord,
    StopSpec, TurnRecord, UpdatingRecord,
};
use super::sealed::{Envelope, Stored};
use super::store::{Cond, Op, Store};
use super::Keys;

/// One consistent read of a fleet (one etcd revision): what the agents, `fleet update` and
/// `fleet list` decide from. The spec is as stored, not yet admitted by anyone.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub revision: i64,
    pub config: Option<Stored>,
    pub rollout: Option<Stored>,
    /// The stops, by component.
    pub stops: BTreeMap<String, Stored>,
    /// Held turns: slot and holder.
    pub turns: Vec<(u32, TurnRecord)>,
    /// Hosts in the middle of an update, by name.
    pub updating: BTreeMap<String, UpdatingRecord>,
    /// The hosts' halts, by host.
    pub halts: BTreeMap<String, HaltRecord>,
    /// Hosts whose lease is alive, by name.
    pub alive: BTreeMap<String, HostRecord>,
    /// Every host ever registered, by name: when it was last seen.
    pub members: BTreeMap<String, MemberRecord>,
    /// (host, component) -> status.
    pub statuses: BTreeMap<(String, String), StatusRecord>,
    /// What each host refused of the spec, by host.
    pub refusals: BTreeMap<String, RefusalsRecord>,
}

/// A rollout as its envelope names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub spec: RolloutSpec,
    pub sequence: u64,
}

impl Rollout {
    /// The rollout an envelope holds; why not.
    pub fn from_envelope(envelope: &Envelope) -> std::result::Result<Rollout, String> {
        let spec = serde_json::from_str(&envelope.body)
            .map_err(|e| format!("the rollout record is not valid: {e}"))?;
        Ok(Rollout {
            spec,
            sequence: envelope.sequence,
        })
    }
}

/// The stop an envelope holds; why not.
pub fn stop_of(envelope: &Envelope) -> std::result::Result<StopSpec, String> {
    serde_json::from_str(&envelope.body).map_err(|e| format!("the stop record is not valid: {e}"))
}

/// Where a rollout stands, as the hosts' records say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Running,
    Halted { host: String, reason: String },
    Done,
}

/// A record a host wrote; `None` when it is not one (a host's report never stops a read).
fn json<T: serde::de::DeserializeOwned>(value: &[u8]) -> Option<T> {
    serde_json::from_slice(value).ok()
}

impl Snapshot {
    pub fn read(store: &mut dyn Store, keys: &Keys) -> Result<Snapshot> {
        let (entries, revision) = store.range(keys.root())?;
        let mut snapshot = Snapshot {
            revision,
            ..Snapshot::default()
        };
        let mut signatures = BTreeMap::new();
        for entry in &entries {
            if let Some(relative) = entry.key.strip_prefix(&keys.signatures()) {
                let signature = String::from_utf8_lossy(&entry.value).into_owned();
                signatures.insert(format!("{}{relative}", keys.spec()), signature);
            }
        }
        for entry in entries {
            let (key, value) = (entry.key.as_str(), entry.value.as_slice());
            let stored = || Stored {
                bytes: value.to_vec(),
                signature: signatures.get(key).cloned(),
                mod_revision: entry.mod_revision,
            };
            if key == keys.config() {
                snapshot.config = Some(stored());
            } else if key == keys.rollout() {
                snapshot.rollout = Some(stored());
            } else if let Some(component) = key.strip_prefix(&keys.stops()) {
                snapshot.stops.insert(component.to_string(), stored());
            } else if let Some(slot) = key.strip_prefix(&keys.turns()) {
                if let (Ok(slot), Some(turn)) = (slot.parse(), json(value)) {
                    snapshot.turns.push((slot, turn));
                }
            } else if let Some(host) = key.strip_prefix(&keys.updatings()) {
                if let Some(record) = json(value) {
                    snapshot.updating.insert(host.to_string(), record);
                }
            } else if let Some(host) = key.strip_prefix(&keys.halts()) {
                if let Some(record) = json(value) {
                    snapshot.halts.insert(host.to_string(), record);
                }
            } else if let Some(host) = key.strip_prefix(&keys.hosts()) {
                if let Some(record) = json(value) {
                    snapshot.alive.insert(host.to_string(), record);
                }
            } else if let Some(host) = key.strip_prefix(&keys.refusals()) {
                if let Some(record) = json(value) {
                    snapshot.refusals.insert(host.to_string(), record);
                }
            } else if let Some(host) = key.strip_prefix(&keys.members()) {
                if let Some(record) = json(value) {
                    snapshot.members.insert(host.to_string(), record);
                }
            } else if let Some(rest) = key.strip_prefix(&keys.statuses()) {
                // Keyed by where it is stored, not by what it says: a host writes its own.
                if let (Some((host, component)), Some(status)) =
                    (rest.split_once('/'), json::<StatusRecord>(value))
                {
                    if status.component == component {
                        snapshot
                            .statuses
                            .insert((host.to_string(), component.to_string()), status);
                    }
                }
            }
        }
        Ok(snapshot)
    }

    /// The rollout as stored, whoever wrote it: an operator's view. An agent admits it first.
    pub fn stored_rollout(&self) -> Option<Rollout> {
        Rollout::from_envelope(&self.rollout.as_ref()?.envelope()?).ok()
    }

    /// The stop of `component` as stored, whoever wrote it: an operator's view.
    pub fn stored_stop(&self, component: &str) -> Option<StopSpec> {
        stop_of(&self.stops.get(component)?.envelope()?).ok()
    }

    /// Where `rollout` stands: halted by a host, or by a host lost mid-update; done when no
    /// host is updating and every live host that reports the component serves the tag or is
    /// held by a stop (a host that has not reported it yet starts at the tag:
    /// [`desired_tag`]); else running.
    pub fn progress(&self, rollout: &Rollout) -> Progress {
        if let Some(halt) = self.halts.values().find(|h| h.rollout == rollout.sequence) {
            return Progress::Halted {
                host: halt.host.clone(),
                reason: halt.reason.clone(),
            };
        }
        if let Some(lost) = self.lost_updaters(rollout.sequence).first() {
            return Progress::Halted {
                host: lost.clone(),
                reason: format!("host {lost} was lost during its update"),
            };
        }
        let component = &rollout.spec.component;
        let updating = self
            .updating
            .values()
            .any(|u| u.rollout == rollout.sequence);
        let reporting: Vec<&StatusRecord> = self
            .alive
            .keys()
            .filter_map(|h| self.status(h, component))
            .collect();
        // A host where an operator's stop holds the component neither holds the rollout
        // back nor finishes it: when started it starts at the rollout's tag.
        let all_serve = reporting
            .iter()
            .filter(|s| !state::HELD_BY_STOP.contains(&s.state.as_str()))
            .all(|s| s.state == state::READY && s.tag.as_ref() == Some(&rollout.spec.tag));
        if !updating && !reporting.is_empty() && all_serve {
            Progress::Done
        } else {
            Progress::Running
        }
    }

    /// Hosts marked updating in rollout `sequence` that hold no turn in it: their lease
    /// expired in the middle of their update.
    pub fn lost_updaters(&self, sequence: u64) -> Vec<String> {
        self.updating
            .values()
            .filter(|u| u.rollout == sequence)
            .filter(|u| {
                !self
                    .turns
                    .iter()
                    .any(|(_, t)| t.host == u.host && t.rollout == sequence)
            })
            .map(|u| u.host.clone())
            .collect()
    }

    pub fn status(&self, host: &str, component: &str) -> Option<&StatusRecord> {
        self.statuses
            .get(&(host.to_string(), component.to_string()))
    }

    /// The tag `host` serves `component` at, if it reports serving.
    pub fn serving_tag(&self, host: &str, component: &str) -> Option<&str> {
        self.status(host, component)
            .filter(|s| s.state == state::READY)
            .and_then(|s| s.tag.as_deref())
    }

    /// The state `host` last reported for `component`.
    pub fn state_of(&self, host: &str, component: &str) -> Option<&str> {
        self.status(host, component).map(|s| s.state.as_str())
    }

    /// Hosts holding a turn, once each.
    pub fn turn_holders(&self) -> BTreeSet<&str> {
        self.turns.iter().map(|(_, t)| t.host.as_str()).collect()
    }
}

/// The tag a host should start `component` at when nothing of it runs there: the config's;
/// with a rollout of it, the rollout's tag once the rollout is done or once this host had its
/// turn (it last reported that tag), and the tag before the rollout otherwise.
pub fn desired_tag(
    config_tag: &str,
    rollout: Option<(&Rollout, &Progress)>,
    reported: Option<&str>,
) -> String {
    match rollout {
        None => config_tag.to_string(),
        Some((r, Progress::Done)) => r.spec.tag.clone(),
        Some((r, _)) if reported == Some(r.spec.tag.as_str()) => r.spec.tag.clone(),
        Some((r, _)) => r.spec.previous.clone(),
    }
}

/// A turn taken: its slot and the etcd revision it was taken at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    pub slot: u32,
    pub revision: i64,
}

/// Take a free turn in `rollout` (stored at revision `rollout_revision`) for `host`
/// (registered under `lease`).
pub fn take_turn(
    store: &mut dyn Store,
    keys: &Keys,
    snapshot: &Snapshot,
    rollout: &Rollout,
    rollout_revision: i64,
    host: &str,
    lease: i64,
) -> Result<Option<Turn>> {
    let since_ms = now_ms();
    let turn = serde_json::to_vec(&TurnRecord {
        host: host.to_string(),
        rollout: rollout.sequence,
        since_ms,
    })?;
    let marker = serde_json::to_vec(&UpdatingRecord {
        host: host.to_string(),
        rollout: rollout.sequence,
        since_ms,
    })?;
    for slot in 0..rollout.spec.max_parallel.max(1) {
        if snapshot.turns.iter().any(|(s, _)| *s == slot) {
            continue;
        }
        let taken = store.txn(
            vec![
                Cond::unchanged(keys.rollout(), rollout_revision),
                Cond::nothing_under_since(keys.halts(), rollout_revision),
                Cond::absent(keys.turn(slot)),
                Cond::leased(keys.host(host), lease),
            ],
            vec![
                Op::put_leased(keys.turn(slot), turn.clone(), lease),
                Op::put(keys.updating(host), marker.clone()),
            ],
        )?;
        if let Some(revision) = taken {
            return Ok(Some(Turn { slot, revision }));
        }
    }
    Ok(None)
}

/// End `host`'s turn in `slot`: free the slot, clear the marker and write `status`, only while
/// its lease still holds the slot; with `halt`, halt the rollout too (a failed update). The
/// etcd revision the turn ended at; `None` when the lease no longer held the slot.
pub fn end_turn(
    store: &mut dyn Store,
    keys: &Keys,
    turn: Turn,
    host: &str,
    lease: i64,
    status: &StatusRecord,
    halt: Option<&HaltRecord>,
) -> Result<Option<i64>> {
    let mut operations = vec![
        Op::delete(keys.turn(turn.slot)),
        Op::delete(keys.updating(host)),
        Op::put(
            keys.status(host, &status.component),
            serde_json::to_vec(status)?,
        ),
    ];
    if let Some(halt) = halt {
        operations.push(Op::put(keys.halt(host), serde_json::to_vec(halt)?));
    }
    store.txn(vec![Cond::leased(keys.turn(turn.slot), lease)], operations)
}

/// `host` halts rollout `sequence` with `reason` (it refused the rollout, or found its own
/// update cut short by a lost lease), clearing its marker in the same write.
pub fn halt(
    store: &mut dyn Store,
    keys: &Keys,
    host: &str,
    sequence: u64,
    reason: &str,
) -> Result<()> {
    let record = HaltRecord {
        host: host.to_string(),
        rollout: sequence,
        reason: reason.to_string(),
        at_ms: now_ms(),
    };
    store.txn(
        vec![],
        vec![
            Op::put(keys.halt(host), serde_json::to_vec(&record)?),
            Op::delete(keys.updating(host)),
        ],
    )?;
    Ok(())
}

/// A marker of `host`'s that outlived its turn (an agent killed mid-update, now back): in the
/// rollout still stored it becomes the host's halt, so the rollout stays halted with its
/// reason after the marker goes; in any other it is just cleared. Whether there was one.
pub fn settle_own_marker(
    store: &mut dyn Store,
    keys: &Keys,
    snapshot: &Snapshot,
    host: &str,
) -> Result<bool> {
    let Some(marker) = snapshot.updating.get(host) else {
        return Ok(false);
    };
    if snapshot.turn_holders().contains(host) {
        return Ok(false);
    }
    match snapshot.stored_rollout() {
        Some(rollout) if rollout.sequence == marker.rollout => {
            let reason = format!("host {host} was lost during its update");
            halt(store, keys, host, marker.rollout, &reason)?;
        }
        _ => {
            store.txn(vec![], vec![Op::delete(keys.updating(host))])?;
        }
    }
    Ok(true)
}

#[cfg(test)]
#[path = "rollout_tests.rs"]
mod tests;
