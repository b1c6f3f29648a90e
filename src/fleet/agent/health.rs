//! The agent's health rounds between changes: `monitor`'s rounds for every component serving
//! here; a container that failed too many rounds in a row is replaced at the tag it serves,
//! and its new status written.

use anyhow::Result;

use super::{status, Agent, Host};
use crate::config::Component;
use crate::fleet::records::state;
use crate::fleet::store::Store;

impl<S: Store, H: Host> Agent<S, H> {
    pub(super) fn health_round(&mut self) -> Result<()> {
        // Each component as it serves here: a replacement keeps its tag.
        let checked: Vec<(Component, u32)> = self
            .checked
            .iter()
            .filter_map(|c| {
                let mut serving = c.clone();
                serving.tag = self.health.serving.get(&c.name)?.0.clone();
                let failures = self.health.failures.get(&c.name).copied().unwrap_or(0);
                Some((serving, failures))
            })
            .collect();
        if checked.is_empty() {
            return Ok(());
        }
        let rounds = self
            .host
            .health_round(&checked, self.health.settings.failures_allowed)?;
        for ((component, _), round) in checked.iter().zip(rounds) {
            let (name, tag) = (&component.name, &component.tag);
            let round = match round {
                Ok(round) => round,
                Err(error) => {
                    self.say(format!("{name}: health round: {error:#}"));
                    continue;
                }
            };
            self.health.failures.insert(name.clone(), round.failures);
            let record = match round.replaced {
                None => continue,
                Some(Ok(address)) => {
                    self.say(format!(
                        "{name}: unhealthy; replaced by a new {tag} container at {}",
                        address.as_deref().unwrap_or("-")
                    ));
                    self.health
                        .serving
                        .insert(name.clone(), (tag.clone(), address.clone()));
                    status(name, Some(tag.clone()), address, state::READY, None)
                }
                Some(Err(error)) => {
                    self.say(format!("{name}: unhealthy; replacing failed: {error:#}"));
                    status(name, None, None, state::FAILED, Some(format!("{error:#}")))
                }
            };
            self.write_status(&record, None)?;
        }
        Ok(())
    }
}
