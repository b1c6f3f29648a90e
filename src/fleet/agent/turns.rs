//! The agent's part in a rollout: take a turn when this host needs the rollout's tag and a slot
//! is free, update, end the turn (or halt the rollout with the host's reason), and drain the
//! old version while the rollout moves on. A rollout this host refused (its record, or the
//! component by the host's policy) is halted with the reason, when it would reach this host.

use std::collections::BTreeMap;

use anyhow::Result;

use super::spec_view::Effective;
use super::{status, Agent, Host};
use crate::fleet::records::{now_ms, state, HaltRecord, StatusRecord};
use crate::fleet::rollout::{self, Progress, Rollout, Snapshot, Turn};
use crate::fleet::store::{Cond, Op, Store};

impl<S: Store, H: Host> Agent<S, H> {
    /// Whether this host has written its halt of rollout `sequence` already.
    fn halted(&self, snapshot: &Snapshot, sequence: u64) -> bool {
        snapshot
            .halts
            .get(&self.name)
            .is_some_and(|h| h.rollout == sequence)
    }

    /// Halt `rollout` (running, of a component this host runs) with `reason`, once.
    fn refuse_rollout(
        &mut self,
        snapshot: &Snapshot,
        rollout: &Rollout,
        reason: &str,
    ) -> Result<()> {
        if self.halted(snapshot, rollout.sequence) {
            return Ok(());
        }
        let reason = format!("host {}: refused: {reason}", self.name);
        self.say(format!(
            "{}: halting the rollout to {}: {reason}",
            rollout.spec.component, rollout.spec.tag
        ));
        rollout::halt(
            &mut self.store,
            &self.keys,
            &self.name,
            rollout.sequence,
            &reason,
        )
    }

    /// What ending a turn in `rollout` writes: the component serving the rollout's tag at
    /// `outcome`'s address, or failed with `outcome`'s reason and this host's halt of the
    /// rollout.
    fn turn_end(
        &self,
        rollout: &Rollout,
        outcome: std::result::Result<Option<String>, String>,
    ) -> (StatusRecord, Option<HaltRecord>) {
        let name = &rollout.spec.component;
        match outcome {
            Ok(address) => {
                let tag = Some(rollout.spec.tag.clone());
                (status(name, tag, address, state::READY, None), None)
            }
            Err(reason) => {
                let halt = HaltRecord {
                    host: self.name.clone(),
                    rollout: rollout.sequence,
                    reason: reason.clone(),
                    at_ms: now_ms(),
                };
                let record = status(name, None, None, state::FAILED, Some(reason));
                (record, Some(halt))
            }
        }
    }

    /// End a turn this host still holds when a round begins: its update ran, but writing the
    /// turn's end failed (etcd went away) while the lease lived on. Without this the turn and
    /// the marker would stay, and the rollout would wait on this host for ever. The status
    /// written is what serves here; when that is not the rollout's tag the update did not
    /// happen, and the rollout is halted with that reason. Whether there was such a turn.
    pub(super) fn end_leftover_turn(&mut self, snapshot: &Snapshot) -> Result<bool> {
        let Some((slot, held)) = snapshot.turns.iter().find(|(_, t)| t.host == self.name) else {
            return Ok(false);
        };
        let rollout = snapshot
            .stored_rollout()
            .filter(|r| r.sequence == held.rollout);
        let Some(rollout) = rollout else {
            // The rollout it belonged to was replaced: nothing to report to it.
            let lease = (self.lease)();
            let released = self.store.txn(
                vec![Cond::leased(self.keys.turn(*slot), lease)],
                vec![
                    Op::delete(self.keys.turn(*slot)),
                    Op::delete(self.keys.updating(&self.name)),
                ],
            )?;
            if released.is_some() {
                self.say("a turn of a rollout since replaced was left held here; released");
            }
            return Ok(released.is_some());
        };
        let name = &rollout.spec.component;
        let tag = &rollout.spec.tag;
        let outcome = match self.health.serving.get(name) {
            Some((serving, address)) if serving == tag => Ok(address.clone()),
            _ => Err(format!(
                "host {}: its update's end was not recorded (etcd failed) and it does not serve \
                 {tag}",
                self.name
            )),
        };
        let (record, halt) = self.turn_end(&rollout, outcome);
        let turn = Turn {
            slot: *slot,
            revision: snapshot.revision,
        };
        let lease = (self.lease)();
        let ended = rollout::end_turn(
            &mut self.store,
            &self.keys,
            turn,
            &self.name,
            lease,
            &record,
            halt.as_ref(),
        )?;
        // Not ended: the turn is under an earlier agent's lease (this one restarted), and it
        // becomes the host's halt when that lease expires (`settle_own_marker`).
        if ended.is_none() {
            return Ok(false);
        }
        self.say(format!(
            "{name}: my turn ended (its end written after an etcd failure)"
        ));
        Ok(true)
    }

    /// Update this host in the running rollout if it needs it and a turn is free; whether it
    /// took a turn. `forbidden`: the components the host's policy refuses, and why.
    pub(super) fn take_part(
        &mut self,
        spec: &Effective,
        snapshot: &Snapshot,
        forbidden: &BTreeMap<String, String>,
    ) -> Result<bool> {
        let Some(config) = &spec.config else {
            return Ok(false);
        };
        let runs = |component: &str| {
            config
                .components
                .iter()
                .any(|c| c.name == component && c.repo.is_some())
                && !spec.stop_holds(component)
        };
        // A rollout record refused here halts the rollout it claims to be, when it would
        // reach this host.
        if let Some(reason) = spec.refused.get(&self.keys.rollout()) {
            if let Some(claimed) = snapshot.stored_rollout() {
                if runs(&claimed.spec.component) && snapshot.progress(&claimed) == Progress::Running
                {
                    self.refuse_rollout(snapshot, &claimed, reason)?;
                }
            }
            return Ok(false);
        }
        let Some((rollout, Some(revision))) = &spec.rollout else {
            return Ok(false);
        };
        let name = &rollout.spec.component;
        if !runs(name) || snapshot.progress(rollout) != Progress::Running {
            return Ok(false);
        }
        if let Some(reason) = forbidden.get(name) {
            self.refuse_rollout(snapshot, rollout, reason)?;
            return Ok(false);
        }
        let serving = snapshot.serving_tag(&self.name, name);
        if serving.is_none()
            || serving == Some(rollout.spec.tag.as_str())
            || snapshot.updating.contains_key(&self.name)
        {
            return Ok(false);
        }
        let lease = (self.lease)();
        let Some(turn) = rollout::take_turn(
            &mut self.store,
            &self.keys,
            snapshot,
            rollout,
            *revision,
            &self.name,
            lease,
        )?
        else {
            return Ok(false);
        };
        self.say(format!(
            "{name}: my turn (slot {}, etcd revision {}) in the rollout to {}",
            turn.slot, turn.revision, rollout.spec.tag
        ));
        let mut component = config.component(name)?.clone();
        component.tag = rollout.spec.tag.clone();
        let result = self.host.update(&component);
        let outcome = match &result {
            Ok(address) => {
                self.say(format!(
                    "{name}: {} now serves (switched); the previous version drains here",
                    rollout.spec.tag
                ));
                self.health
                    .serving
                    .insert(name.clone(), (rollout.spec.tag.clone(), address.clone()));
                Ok(address.clone())
            }
            Err(error) => {
                let reason = format!("host {}: {error:#}", self.name);
                self.say(format!(
                    "{name}: update failed, halting the rollout: {reason}"
                ));
                Err(reason)
            }
        };
        let (record, halt) = self.turn_end(rollout, outcome);
        let ended = rollout::end_turn(
            &mut self.store,
            &self.keys,
            turn,
            &self.name,
            lease,
            &record,
            halt.as_ref(),
        )?;
        match ended {
            Some(revision) => self.say(format!("{name}: my turn ended (etcd revision {revision})")),
            None => self.say(format!(
                "{name}: my turn had ended meanwhile (lease lost); the rollout was halted or moved on"
            )),
        }
        if result.is_ok() {
            // The old container drains here while the rollout moves on to the next host.
            self.start_drain(&component, None)?;
        }
        Ok(true)
    }
}
