//! `stop` (drain first) and `kill` (no drain, no termination signals): take the component's
//! ports out of the ruleset and retire all its backends.

use anyhow::Result;

use super::drain::{finish_drain, DrainReport};
use super::reconcile::sweep_stopped;
use super::retire::{retire_finished, Retired};
use super::session::Session;
use super::switch::{active6_record, active_record};
use super::Env;
use crate::config::{Component, PortPair};
use crate::state::{now_ms, BackendRecord};

#[derive(Debug, Default)]
pub struct StopReport {
    /// `stop`: the drain and the retirement after it.
    pub drain: Option<DrainReport>,
    /// `kill`: what retiring at once did.
    pub killed: Vec<Retired>,
}

pub fn stop(env: &Env, component: &Component, drain_first: bool) -> Result<StopReport> {
    withdraw(env, component, if drain_first { "stop" } else { "kill" })?;
    if drain_first {
        return Ok(StopReport {
            drain: Some(finish_drain(env, component, None)?),
            killed: Vec::new(),
        });
    }
    let draining = env.draining_of(&component.name)?;
    Ok(StopReport {
        drain: None,
        killed: retire_finished(env, component, &draining, false)?,
    })
}

/// The first half of `stop` and `kill`, under the lock: take the component's ports out of the
/// ruleset and mark every backend (the active one and any running container of the component)
/// draining, so that nothing new reaches them and retiring them is what is left. `what` names
/// the command to whoever waits for the lock.
pub fn withdraw(env: &Env, component: &Component, what: &str) -> Result<()> {
    let name = &component.name;
    let mut session = Session::open(env, component, what)?;
    let now = now_ms();
    let mut active = active_record(&session.routes, now);
    // A container's IPv6 address is part of its record; an address component's IPv6 backend
    // is a backend of its own.
    let mut active6 = active6_record(&session.routes, now);
    if component.repo.is_some() {
        if let Some(record) = &mut active {
            record.address6 = active6.take().map(|r| r.address);
        }
    }
    for record in active.iter_mut().chain(active6.iter_mut()) {
        record.container = session.container_at(record.address).map(|c| c.id.clone());
    }
    let running: Vec<(std::net::IpAddr, Option<std::net::IpAddr>, String)> = session
        .containers
        .iter()
        .filter(|c| c.running)
        .filter_map(|c| Some((c.address?, c.address6, c.id.clone())))
        .collect();
    let entry = session.state.components.entry(name.clone()).or_default();
    if let Some(canary) = entry.canary.take() {
        let mut backend = canary.backend;
        backend.since_ms = now;
        if !entry.draining.iter().any(|b| b.address == backend.address) {
            entry.draining.push(backend);
        }
    }
    let recorded = (entry.active.take(), entry.active6.take());
    for mut record in [active.or(recorded.0), active6.or(recorded.1)]
        .into_iter()
        .flatten()
    {
        record.since_ms = now;
        if !entry.draining.iter().any(|b| b.address == record.address) {
            entry.draining.push(record);
        }
    }
    // Containers of the component that nothing tracks yet are retired with the rest.
    for (address, address6, id) in running {
        if !entry.draining.iter().any(|b| b.address == address) {
            entry.draining.push(BackendRecord {
                address,
                address6,
                ports: component.port_pairs(),
                since_ms: now,
                container: Some(id),
            });
        }
    }
    let mut ports: Vec<PortPair> = session
        .routes
        .routes
        .iter()
        .chain(&session.routes.routes6)
        .map(|r| r.pair())
        .chain(component.port_pairs())
        .collect();
    ports.sort_by_key(PortPair::key);
    ports.dedup_by_key(|p| p.key());
    session.save(env)?;
    let known = session.state.known_addresses();
    env.firewall.unroute(name, &ports, &known)?;
    env.step(format!("{name}: new connections are no longer forwarded"));
    sweep_stopped(env, &mut session, component);
    Ok(())
}
