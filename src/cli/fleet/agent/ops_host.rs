//! The agent's [`Host`] on this host: the local use cases (`ops`) on its kernel and Docker,
//! each through one `with_env`, and the drains, each in a thread of its own. A drain can last
//! up to the component's drainTimeout (an hour in the example config); the agent must
//! meanwhile take its turn in the next rollout, act on a stop, run health rounds and keep its
//! statuses current. `finish_drain` holds no lock while it waits, and retiring tolerates a
//! backend that another run retired first, so a drain here never blocks the agent's other work.

use std::thread::JoinHandle;

use anyhow::Result;

use super::super::super::{with_env, Globals};
use crate::config::{Component, Config};
use crate::fleet::agent::{Checked, Drained, Host, Serving};
use crate::ops::converge::converge;
use crate::ops::drain::{finish_drain, DrainReport};
use crate::ops::monitor::round;
use crate::ops::stop::{stop, withdraw};
use crate::ops::update::update;

pub struct OpsHost {
    pub globals: Globals,
    drains: Vec<(String, JoinHandle<Result<DrainReport>>)>,
}

impl OpsHost {
    pub fn new(globals: Globals) -> OpsHost {
        OpsHost {
            globals,
            drains: Vec::new(),
        }
    }
}

impl Host for OpsHost {
    fn converge(&mut self, components: &[Component]) -> Vec<(String, Result<Serving>)> {
        let config = Config {
            components: components.to_vec(),
        };
        let results = with_env(&self.globals, |env| Ok(converge(env, &config)));
        match results {
            Ok(results) => results
                .into_iter()
                .map(|(name, result)| {
                    let serving = result.map(|s| Serving {
                        tag: s.tag,
                        address: s.address.to_string(),
                        started: s.started,
                    });
                    (name, serving)
                })
                .collect(),
            Err(error) => components
                .iter()
                .map(|c| (c.name.clone(), Err(anyhow::anyhow!("{error:#}"))))
                .collect(),
        }
    }

    fn update(&mut self, component: &Component) -> Result<Option<String>> {
        let report = with_env(&self.globals, |env| update(env, component, None))?;
        Ok(report.switched.map(|s| s.address.to_string()))
    }

    fn withdraw(&mut self, component: &Component) -> Result<()> {
        with_env(&self.globals, |env| withdraw(env, component, "fleet stop"))
    }

    fn kill(&mut self, component: &Component) -> Result<()> {
        with_env(&self.globals, |env| stop(env, component, false)).map(drop)
    }

    fn health_round(
        &mut self,
        checked: &[(Component, u32)],
        failures_allowed: u32,
    ) -> Result<Vec<Result<Checked>>> {
        // One connection to the outside worlds for the whole round.
        with_env(&self.globals, |env| {
            Ok(checked
                .iter()
                .map(|(component, failures)| {
                    round(env, component, failures_allowed, *failures).map(|round| Checked {
                        failures: round.failures,
                        replaced: round
                            .replaced
                            .map(|r| r.map(|u| u.switched.map(|s| s.address.to_string()))),
                    })
                })
                .collect())
        })
    }

    fn start_drain(&mut self, component: &Component) -> Result<()> {
        let (globals, owned) = (self.globals.clone(), component.clone());
        let thread = std::thread::Builder::new()
            .name(format!("drain {}", component.name))
            .spawn(move || with_env(&globals, |env| finish_drain(env, &owned, None)))?;
        self.drains.push((component.name.clone(), thread));
        Ok(())
    }

    fn reap_drains(&mut self) -> Vec<(String, Result<Drained>)> {
        let (ended, running) = std::mem::take(&mut self.drains)
            .into_iter()
            .partition(|(_, thread)| thread.is_finished());
        self.drains = running;
        let ended: Vec<(String, JoinHandle<Result<DrainReport>>)> = ended;
        ended
            .into_iter()
            .map(|(name, thread)| {
                let result = thread
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the drain thread panicked")))
                    .map(|report| Drained {
                        drained: report.drained.len(),
                        given_up: report.given_up.len(),
                        retired: report.retired.len(),
                    });
                (name, result)
            })
            .collect()
    }

    fn has_draining(&mut self, component: &str) -> Result<bool> {
        Ok(!self
            .globals
            .state
            .load()?
            .component(component)
            .draining
            .is_empty())
    }
}
