//! The spec as this host acts on it: each record under `spec/` put through the host's
//! admission, the config parsed and validated as `check` does, and what was refused, with why.

use std::collections::BTreeMap;

use anyhow::Result;

use super::{Agent, Host};
use crate::config::{self, Config};
use crate::fleet::records::StopSpec;
use crate::fleet::rollout::{stop_of, Rollout, Snapshot};
use crate::fleet::sealed::Envelope;
use crate::fleet::store::Store;

/// What the host acts on this round.
pub(super) struct Effective {
    pub config: Option<Config>,
    /// The rollout, and the revision it is stored at when etcd holds exactly it (a turn is
    /// taken only then).
    pub rollout: Option<(Rollout, Option<i64>)>,
    /// Fleet-wide stops, by component.
    pub stops: BTreeMap<String, StopSpec>,
    /// Spec keys whose record was refused, and why.
    pub refused: BTreeMap<String, String>,
}

fn valid_config(envelope: &Envelope) -> Result<(), String> {
    config::parse(&envelope.body)
        .map(drop)
        .map_err(|e| format!("{e:#}"))
}

fn valid_rollout(envelope: &Envelope) -> Result<(), String> {
    Rollout::from_envelope(envelope).map(drop)
}

impl<S: Store, H: Host> Agent<S, H> {
    pub(super) fn admit(&mut self, snapshot: &Snapshot) -> Result<Effective> {
        let mut refused = BTreeMap::new();
        let keys = self.keys.clone();

        let verdict =
            self.admission
                .admit(&keys.config(), snapshot.config.as_ref(), &valid_config)?;
        refused.extend(verdict.refused.map(|why| (keys.config(), why)));
        let config = match verdict.record {
            Some(envelope) => Some(config::parse(&envelope.body)?),
            None => None,
        };

        let verdict =
            self.admission
                .admit(&keys.rollout(), snapshot.rollout.as_ref(), &valid_rollout)?;
        refused.extend(verdict.refused.map(|why| (keys.rollout(), why)));
        let rollout = match verdict.record {
            Some(envelope) => {
                let revision = snapshot
                    .rollout
                    .as_ref()
                    .filter(|_| verdict.current)
                    .map(|stored| stored.mod_revision);
                Some((
                    Rollout::from_envelope(&envelope).map_err(anyhow::Error::msg)?,
                    revision,
                ))
            }
            None => None,
        };

        let mut stops = BTreeMap::new();
        let mut stop_keys: Vec<String> = snapshot.stops.keys().map(|c| keys.stop(c)).collect();
        stop_keys.extend(self.admission.accepted_under(&keys.stops()));
        stop_keys.sort();
        stop_keys.dedup();
        for key in stop_keys {
            let component = key.strip_prefix(&keys.stops()).unwrap_or(&key).to_string();
            let valid = |envelope: &Envelope| -> Result<(), String> {
                let stop = stop_of(envelope)?;
                match stop.component == component {
                    true => Ok(()),
                    false => Err(format!("it names component {}", stop.component)),
                }
            };
            let verdict = self
                .admission
                .admit(&key, snapshot.stops.get(&component), &valid)?;
            refused.extend(verdict.refused.map(|why| (key.clone(), why)));
            if let Some(envelope) = verdict.record {
                stops.insert(component, stop_of(&envelope).map_err(anyhow::Error::msg)?);
            }
        }
        Ok(Effective {
            config,
            rollout,
            stops,
            refused,
        })
    }
}
