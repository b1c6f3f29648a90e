//! Bringing the state in line with what is observed, under the lock, before any step: the
//! kernel's map says what is active; a draining entry for the active address is dropped;
//! running containers of the component that are neither active nor draining (left by a run
//! that died before or during its switch) become draining, so that the normal drain retires
//! them without cutting anything; containers that are not running are removed. A canary the
//! state records but the kernel does not route (a run died between the two) becomes draining.

use anyhow::Result;

use super::session::Session;
use super::switch::{active6_record, active_record};
use super::Env;
use crate::config::Component;
use crate::state::{now_ms, BackendRecord};

pub fn reconcile(env: &Env, session: &mut Session, component: &Component) -> Result<()> {
    let name = &component.name;
    let now = now_ms();
    let active = session.routes.active();
    let active_container = active
        .and_then(|a| session.container_at(a))
        .map(|c| c.id.clone());
    let recorded_active = session
        .state
        .component(name)
        .active
        .map(|r| session.container_at(r.address).is_some());
    let containers = component.repo.is_some();
    let active6 = session.routes.active6();
    let entry = session.state.components.entry(name.clone()).or_default();
    match (active, &entry.active) {
        (Some(address), Some(record)) if record.address == address => {}
        (Some(_), _) => {
            entry.active = active_record(&session.routes, now).map(|mut record| {
                record.container = active_container.clone();
                // A container's IPv6 address is part of its record.
                record.address6 = active6.filter(|_| containers);
                record
            });
        }
        (None, Some(_)) if recorded_active == Some(false) => entry.active = None,
        (None, _) => {}
    }
    // An address component's IPv6 backend: the kernel's map is the authority, as for IPv4 (a
    // record the kernel no longer routes is dropped, nothing of it runs here to drain).
    if !containers && entry.active6.as_ref().map(|r| r.address) != active6 {
        entry.active6 = active6_record(&session.routes, now);
    }
    if let Some(canary) = entry
        .canary
        .take_if(|c| session.routes.canary() != Some(c.backend.address))
    {
        if !entry
            .draining
            .iter()
            .any(|b| b.address == canary.backend.address)
        {
            let mut backend = canary.backend;
            backend.since_ms = now;
            entry.draining.push(backend);
        }
    }
    entry
        .draining
        .retain(|b| Some(b.address) != active && Some(b.address) != active6);
    for container in session.containers.iter().filter(|c| c.running) {
        let Some(address) = container.address else {
            continue;
        };
        let known = Some(address) == active
            || Some(address) == active6
            || Some(address) == session.routes.canary()
            || entry.active.as_ref().is_some_and(|a| a.address == address)
            || entry.draining.iter().any(|b| b.address == address);
        if !known {
            env.step(format!(
                "{name}: {} ({address}) is neither active nor draining (left by an \
                 interrupted run); draining it",
                container.name
            ));
            entry.draining.push(BackendRecord {
                address,
                address6: container.address6,
                ports: component.port_pairs(),
                since_ms: now,
                container: Some(container.id.clone()),
            });
        }
    }
    session.save(env)?;
    sweep_stopped(env, session, component);
    Ok(())
}

/// Containers of the component that are not running (failed, or stopped by hand) are removed:
/// nothing piles up.
pub(super) fn sweep_stopped(env: &Env, session: &mut Session, component: &Component) {
    let Ok(runtime) = env.runtime() else {
        return;
    };
    session.containers.retain(|container| {
        if container.running {
            return true;
        }
        env.step(format!(
            "{}: removing {} ({})",
            component.name, container.name, container.state
        ));
        if let Err(error) = runtime.remove(&container.id) {
            env.warn(format!("{error:#}"));
        }
        false
    });
}
