//! The agent's part in fleet-wide stops, and its drains: acting on `spec/stopped/` (withdraw
//! and drain, or kill), reporting each drain's end, and draining what a previous run left.

use anyhow::Result;

use super::super::super::with_env;
use super::{failed, say, status, Agent};
use crate::config::Config;
use crate::fleet::records::now_ms;
use crate::fleet::rollout::Snapshot;
use crate::fleet::stops::{self, Action, KILLED, STOPPED, STOPPING};
use crate::ops::stop::{stop, withdraw};

impl Agent<'_> {
    /// Act on the fleet-wide stops of the config's components: withdraw a stopped one and
    /// drain it in the background (reporting `stopping`, then `stopped`); kill a killed one at
    /// once (`killed`). A component that is no longer stopped drops what its drains were to
    /// report, so a `fleet start` is never overwritten by an old stop's end.
    pub(super) fn hold_stopped(&mut self, config: &Config, snapshot: &Snapshot) -> Result<()> {
        for component in config.components.iter().filter(|c| c.repo.is_some()) {
            let name = &component.name;
            let Some(asked) = snapshot.stopped.get(name) else {
                self.drains.forget_status(name);
                continue;
            };
            self.health.serving.remove(name);
            self.health.failures.remove(name);
            let action = stops::action(asked, snapshot.state_of(self.host, name));
            let record = match action {
                Action::Nothing => continue,
                Action::Withdraw if self.drains.stopping(name) => continue,
                Action::Withdraw => {
                    match with_env(self.globals, |env| withdraw(env, component, "fleet stop")) {
                        Ok(()) => {
                            say(format!(
                                "{name}: stopped fleet-wide: out of the ruleset, draining"
                            ));
                            let stopped = status(name, None, None, STOPPED, None);
                            self.drains.start(self.globals, component, Some(stopped))?;
                            status(name, None, None, STOPPING, None)
                        }
                        Err(error) => failed(name, "fleet stop", &error),
                    }
                }
                Action::Kill => {
                    self.drains.forget_status(name);
                    match with_env(self.globals, |env| stop(env, component, false)) {
                        Ok(_) => {
                            say(format!("{name}: killed fleet-wide"));
                            status(name, None, None, KILLED, None)
                        }
                        Err(error) => failed(name, "fleet kill", &error),
                    }
                }
            };
            self.write_status(&record)?;
        }
        Ok(())
    }

    /// Every draining backend has a drain under way: start one for a component whose backends
    /// wait with none running (left by a previous agent, or by an update that died).
    pub(super) fn drain_leftovers(&mut self, config: &Config) -> Result<()> {
        let state = self.globals.state.load()?;
        for component in config.components.iter().filter(|c| c.repo.is_some()) {
            if !state.component(&component.name).draining.is_empty()
                && !self.drains.draining(&component.name)
            {
                say(format!(
                    "{}: draining what a previous run left draining",
                    component.name
                ));
                self.drains.start(self.globals, component, None)?;
            }
        }
        Ok(())
    }

    /// Report the drains that ended; a stop's drain writes its final status (a kill or a start
    /// since has made it forget it: see `hold_stopped`).
    pub(super) fn reap_drains(&mut self) -> Result<()> {
        for ended in self.drains.reap() {
            let name = &ended.component;
            match &ended.result {
                Ok(report) => say(format!(
                    "{name}: drain finished: {} drained, {} given up at drainTimeout, {} retired",
                    report.drained.len(),
                    report.given_up.len(),
                    report.retired.len()
                )),
                Err(error) => say(format!("{name}: drain failed: {error:#}")),
            }
            if let Some(mut record) = ended.then {
                if let Err(error) = &ended.result {
                    record = failed(name, "fleet stop", error);
                }
                record.at_ms = now_ms();
                self.write_status(&record)?;
            }
        }
        Ok(())
    }
}
