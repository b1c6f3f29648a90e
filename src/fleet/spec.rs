//! What operators write: the config, a rollout, a stop (or kill, or start). Each is sealed
//! for its key and signed when the operator says `--sign KEY` ([`super::sealed`]), and written
//! in one transaction guarded by what it was decided from, so of two operators acting at once
//! one wins and the other is told to run the command again. The refusals an operator can
//! meet — a rollout of a stopped component, a stop during a rollout of it, another rollout
//! running — are decided here.

use std::path::Path;

use anyhow::Result;

use super::records::{now_ms, RolloutSpec, StopAction, StopSpec};
use super::rollout::{Progress, Rollout, Snapshot};
use super::sealed::{seal, Envelope, Stored};
use super::store::{Cond, Store};
use super::Keys;

/// The record at a key is still the one read (or still absent).
fn as_read(key: String, stored: Option<&Stored>) -> Cond {
    match stored {
        Some(stored) => Cond::unchanged(key, stored.mod_revision),
        None => Cond::absent(key),
    }
}

const CHANGED: &str =
    "the fleet's spec changed while this was being written; run the command again";

/// Store `text` (a config already validated) as the fleet's config.
pub fn store_config(
    store: &mut dyn Store,
    keys: &Keys,
    snapshot: &Snapshot,
    text: String,
    sign: Option<&Path>,
) -> Result<std::result::Result<(Envelope, i64), String>> {
    let key = keys.config();
    let (envelope, ops) = seal(keys, &key, text, snapshot.config.as_ref(), sign)?;
    let guard = as_read(key, snapshot.config.as_ref());
    Ok(match store.txn(vec![guard], ops)? {
        Some(revision) => Ok((envelope, revision)),
        None => Err(CHANGED.into()),
    })
}

/// Start (or resume) a rollout of `component` to `tag`. Refused (`Err` says why) while the
/// component is stopped fleet-wide or another rollout runs; the same rollout running is
/// resumed as it is; a halted or finished one is replaced (a new sequence: hosts read none of
/// the old one's halts).
#[allow(clippy::too_many_arguments)]
pub fn begin(
    store: &mut dyn Store,
    keys: &Keys,
    snapshot: &Snapshot,
    component: &str,
    tag: &str,
    max_parallel: u32,
    config_tag: &str,
    sign: Option<&Path>,
) -> Result<std::result::Result<Rollout, String>> {
    if snapshot.stored_stop(component).is_some_and(|s| s.holds()) {
        return Ok(Err(format!(
            "{component} is stopped fleet-wide; `handoff fleet start {component}` first"
        )));
    }
    let previous = match snapshot.stored_rollout() {
        None => config_tag.to_string(),
        Some(last) => {
            let progress = snapshot.progress(&last);
            let same = last.spec.component == component && last.spec.tag == tag;
            match progress {
                Progress::Running if same => return Ok(Ok(last)),
                Progress::Running => {
                    return Ok(Err(format!(
                        "a rollout of {} to {} is running; wait for it or let it halt",
                        last.spec.component, last.spec.tag
                    )))
                }
                _ if last.spec.component != component => config_tag.to_string(),
                Progress::Done => last.spec.tag,
                Progress::Halted { .. } => last.spec.previous,
            }
        }
    };
    let spec = RolloutSpec {
        component: component.to_string(),
        tag: tag.to_string(),
        previous,
        max_parallel: max_parallel.max(1),
        started_ms: now_ms(),
    };
    let key = keys.rollout();
    let (envelope, ops) = seal(
        keys,
        &key,
        serde_json::to_string(&spec)?,
        snapshot.rollout.as_ref(),
        sign,
    )?;
    let guards = vec![
        as_read(key, snapshot.rollout.as_ref()),
        // A stop asked since the read wins: the rollout is not started.
        as_read(keys.stop(component), snapshot.stops.get(component)),
    ];
    Ok(match store.txn(guards, ops)? {
        Some(_) => Ok(Rollout {
            spec,
            sequence: envelope.sequence,
        }),
        None => Err(CHANGED.into()),
    })
}

/// What an operator asked of a component: stop, kill, or start again.
pub enum Asked {
    /// Written: the record every host now acts on.
    Written(StopSpec),
    /// `start` of a component that is not stopped: nothing was written.
    NotStopped,
}

/// Stop, kill or start `component` fleet-wide. A stop or kill is refused while a rollout of it
/// runs (`Err` says so); a kill replaces a stop, a stop never turns a kill back into a drain.
pub fn ask(
    store: &mut dyn Store,
    keys: &Keys,
    snapshot: &Snapshot,
    component: &str,
    action: StopAction,
    sign: Option<&Path>,
) -> Result<std::result::Result<Asked, String>> {
    let earlier = snapshot.stored_stop(component).filter(StopSpec::holds);
    let action = match (action, &earlier) {
        (StopAction::Start, None) => return Ok(Ok(Asked::NotStopped)),
        (StopAction::Start, Some(_)) => StopAction::Start,
        (_, Some(earlier)) if earlier.kill() => StopAction::Kill,
        (asked, _) => {
            if let Some(rollout) = snapshot
                .stored_rollout()
                .filter(|r| r.spec.component == component)
            {
                if snapshot.progress(&rollout) == Progress::Running {
                    return Ok(Err(format!(
                        "a rollout of {component} to {} is running; wait for it or let it halt",
                        rollout.spec.tag
                    )));
                }
            }
            asked
        }
    };
    let record = StopSpec {
        component: component.to_string(),
        action,
        since_ms: match (&earlier, action) {
            (Some(earlier), StopAction::Stop | StopAction::Kill) => earlier.since_ms,
            _ => now_ms(),
        },
    };
    let key = keys.stop(component);
    let (_, ops) = seal(
        keys,
        &key,
        serde_json::to_string(&record)?,
        snapshot.stops.get(component),
        sign,
    )?;
    let guards = vec![
        as_read(key, snapshot.stops.get(component)),
        as_read(keys.rollout(), snapshot.rollout.as_ref()),
    ];
    Ok(match store.txn(guards, ops)? {
        Some(_) => Ok(Asked::Written(record)),
        None => Err(CHANGED.into()),
    })
}
