//! The agent's part in fleet-wide stops, and its drains: acting on `spec/stops/` (withdraw
//! and drain, or kill), reporting each component's drains' end, and draining what a previous
//! run left.

use anyhow::Result;

use super::spec_view::Effective;
use super::{failed, status, Agent, Host};
use crate::config::Component;
use crate::fleet::records::{now_ms, state, StatusRecord};
use crate::fleet::rollout::Snapshot;
use crate::fleet::stops::{self, Action};
use crate::fleet::store::Store;

impl<S: Store, H: Host> Agent<S, H> {
    /// Act on the fleet-wide stops of `components`: withdraw a stopped one and drain it in
    /// the background (reporting `stopping`, then `stopped`); kill a killed one at once
    /// (`killed`). A component that is no longer stopped drops the status its drains were to
    /// report, so a `fleet start` is never overwritten by an old stop's end.
    pub(super) fn hold_stopped(
        &mut self,
        components: &[Component],
        spec: &Effective,
        snapshot: &Snapshot,
    ) -> Result<()> {
        for component in components {
            let name = &component.name;
            let Some(asked) = spec.stops.get(name).filter(|s| s.holds()) else {
                self.drains.then.remove(name);
                continue;
            };
            self.health.serving.remove(name);
            self.health.failures.remove(name);
            let record = match stops::action(asked, snapshot.state_of(&self.name, name)) {
                Action::Nothing => continue,
                Action::Withdraw if self.drains.then.contains_key(name) => continue,
                Action::Withdraw => match self.host.withdraw(component) {
                    Ok(()) => {
                        self.say(format!(
                            "{name}: stopped fleet-wide: out of the ruleset, draining"
                        ));
                        let stopped = status(name, None, None, state::STOPPED, None);
                        self.start_drain(component, Some(stopped))?;
                        status(name, None, None, state::STOPPING, None)
                    }
                    Err(error) => failed(name, "fleet stop", &error),
                },
                Action::Kill => {
                    self.drains.then.remove(name);
                    match self.host.kill(component) {
                        Ok(()) => {
                            self.say(format!("{name}: killed fleet-wide"));
                            status(name, None, None, state::KILLED, None)
                        }
                        Err(error) => failed(name, "fleet kill", &error),
                    }
                }
            };
            self.write_status(&record, None)?;
        }
        Ok(())
    }

    /// Drain (then retire) the draining backends of `component` in the background; when its
    /// drains have all ended, report `then`.
    pub(super) fn start_drain(
        &mut self,
        component: &Component,
        then: Option<StatusRecord>,
    ) -> Result<()> {
        self.host.start_drain(component)?;
        *self
            .drains
            .running
            .entry(component.name.clone())
            .or_default() += 1;
        if let Some(then) = then {
            self.drains.then.insert(component.name.clone(), then);
        }
        Ok(())
    }

    /// Every draining backend has a drain under way: start one for a component whose backends
    /// wait with none running (left by a previous agent, or by an update that died).
    pub(super) fn drain_leftovers(&mut self, components: &[Component]) -> Result<()> {
        for component in components {
            let idle = !self.drains.running.contains_key(&component.name);
            if idle && self.host.has_draining(&component.name)? {
                self.say(format!(
                    "{}: draining what a previous run left draining",
                    component.name
                ));
                self.start_drain(component, None)?;
            }
        }
        Ok(())
    }

    /// Report the drains that ended; a component whose last drain ended writes the status it
    /// was to report (a stop's `stopped`, or `failed` when the drain failed).
    pub(super) fn reap_drains(&mut self) -> Result<()> {
        for (name, result) in self.host.reap_drains() {
            match &result {
                Ok(drained) => self.say(format!(
                    "{name}: drain finished: {} drained, {} given up at drainTimeout, {} retired",
                    drained.drained, drained.given_up, drained.retired
                )),
                Err(error) => self.say(format!("{name}: drain failed: {error:#}")),
            }
            let left = self.drains.running.get_mut(&name).map(|n| {
                *n = n.saturating_sub(1);
                *n
            });
            if left.unwrap_or(0) > 0 {
                continue;
            }
            self.drains.running.remove(&name);
            if let Some(mut record) = self.drains.then.remove(&name) {
                if let Err(error) = &result {
                    record = failed(&name, "fleet stop", error);
                }
                record.at_ms = now_ms();
                self.write_status(&record, None)?;
            }
        }
        Ok(())
    }
}
