//! `restore`: rebuild the ruleset from the state file (after a reboot, or after our table was
//! deleted), then resume draining. For each component the kernel does not route, the recorded
//! active backend is routed again: an address as it is; a container started again if it is
//! stopped (its address may have changed: the container is still the active one, and nothing
//! of it is drained), or replaced by a new one if it is gone.

use std::net::IpAddr;

use anyhow::Result;

use super::drain::{finish_drain, DrainReport};
use super::launch::{allow_hairpin, launch};
use super::session::Session;
use super::switch::{commit_routing, switch_to, Switched};
use super::Env;
use crate::config::Component;
use crate::kernel::netfilter::Canary;
use crate::state::BackendRecord;

/// What restoring one component did.
#[derive(Debug)]
pub enum Restored {
    /// Nothing was recorded as active: nothing to route.
    NothingRecorded,
    /// The kernel routes it already: its map and the hairpin set were asserted again.
    Refreshed(IpAddr),
    /// Routed again (to a container started again, replaced, or an address as recorded): one
    /// switch per family it had a backend of.
    Routed(Vec<Switched>),
}

#[derive(Debug, Default)]
pub struct RestoreReport {
    /// Per component, in the config's order.
    pub components: Vec<(String, Result<Restored>)>,
    /// Per component with backends draining, the drain that was resumed.
    pub drains: Vec<(String, Result<DrainReport>)>,
}

impl RestoreReport {
    /// The components whose restore or drain failed.
    pub fn failed(&self) -> Vec<&str> {
        let mut failed: Vec<&str> = self
            .components
            .iter()
            .filter(|(_, result)| result.is_err())
            .map(|(name, _)| name.as_str())
            .chain(
                self.drains
                    .iter()
                    .filter(|(_, result)| result.is_err())
                    .map(|(name, _)| name.as_str()),
            )
            .collect();
        failed.sort_unstable();
        failed.dedup();
        failed
    }
}

pub fn restore(env: &Env, components: &[Component]) -> Result<RestoreReport> {
    let mut report = RestoreReport::default();
    for component in components {
        report
            .components
            .push((component.name.clone(), restore_one(env, component)));
    }
    for component in components {
        let drain = finish_drain(env, component, None);
        if drain
            .as_ref()
            .map_or(true, |drain| !drain.nothing_was_draining())
        {
            report.drains.push((component.name.clone(), drain));
        }
    }
    Ok(report)
}

fn restore_one(env: &Env, component: &Component) -> Result<Restored> {
    let mut session = Session::open(env, component, "restore")?;
    let recorded = session.state.component(&component.name);
    if recorded.active.is_none() && recorded.active6.is_none() {
        return Ok(Restored::NothingRecorded);
    }
    // The hole in Docker's FORWARD policy does not survive a reboot; routing does not look
    // for it on its hot path.
    env.firewall.open_forward_path()?;
    if let Some(address) = session.routes.active().or(session.routes.active6()) {
        // A canary the kernel still routes is asserted again with its recorded share.
        let canary = session
            .state
            .component(&component.name)
            .canary
            .filter(|c| session.routes.canary() == Some(c.backend.address))
            .map(|c| Canary {
                backend: c.backend.address,
                weight: c.weight,
                sticky: c.sticky,
            });
        let before = session.state.clone();
        let backends = session.routes.backends();
        commit_routing(
            env,
            &mut session,
            before,
            component,
            backends,
            canary,
            || format!("routing {} again", component.name),
        )?;
        return Ok(Restored::Refreshed(address));
    }
    // The table is gone (a reboot): the active backend is routed again, a canary is not — it
    // drains and is retired, and `update --canary` starts a new one when wanted.
    let entry = session
        .state
        .components
        .entry(component.name.clone())
        .or_default();
    if let Some(canary) = entry.canary.take() {
        env.warn(format!(
            "{}: the canary at {} is not restored; it is retired (start another with --canary)",
            component.name, canary.backend.address
        ));
        if !entry
            .draining
            .iter()
            .any(|b| b.address == canary.backend.address)
        {
            entry.draining.push(canary.backend);
        }
    }
    let mut switched = Vec::new();
    if let Some(active) = recorded.active {
        switched.push(route_again(env, &mut session, component, active)?);
    }
    // An address component's IPv6 backend (a container's IPv6 address came with it).
    if let Some(active6) = recorded.active6 {
        switched.push(switch_to(
            env,
            &mut session,
            component,
            active6.address,
            None,
        )?);
    }
    Ok(Restored::Routed(switched))
}

/// Route `component` to its recorded `active` IPv4 backend again: an address as it is, a
/// container started again or replaced.
fn route_again(
    env: &Env,
    session: &mut Session,
    component: &Component,
    active: BackendRecord,
) -> Result<Switched> {
    let (address, container) = match (&component.repo, &active.container) {
        (Some(_), Some(id)) => {
            let runtime = env.runtime()?;
            let recorded = session.containers.iter().find(|c| &c.id == id).cloned();
            match recorded {
                Some(c) if c.running => {
                    // Restarted by Docker after a reboot: its veth is new.
                    let address = c.address.unwrap_or(active.address);
                    allow_hairpin(env, component, id, address);
                    (address, Some(id.clone()))
                }
                Some(c) => {
                    env.step(format!("{}: starting {} again", component.name, c.name));
                    runtime.start(id)?;
                    let address = runtime.address(id, &component.network)?;
                    let address6 = runtime.address6(id, &component.network)?;
                    allow_hairpin(env, component, id, address);
                    for ready in std::iter::once(address).chain(address6) {
                        env.probe.wait_ready(component, ready)?;
                    }
                    // Where it runs now, for the switch (IPv6 clients follow it).
                    if let Some(listed) = session.containers.iter_mut().find(|c| &c.id == id) {
                        listed.running = true;
                        listed.address = Some(address);
                        listed.address6 = address6;
                    }
                    (address, Some(id.clone()))
                }
                None => {
                    let c = launch(env, session, component, &component.tag)?;
                    (c.address.unwrap_or(active.address), Some(c.id))
                }
            }
        }
        _ => (active.address, None),
    };
    switch_to(env, session, component, address, container)
}
