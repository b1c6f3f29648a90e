//! Canaries, decided in the kernel: a share of a component's *new* connections goes to a
//! canary backend beside the active one (nftables `numgen`, or a hash of the client address
//! with a fixed seed when sticky: see `kernel::netfilter::ruleset`), while conntrack keeps every
//! flow on the backend it started on. `promote` makes the canary the active backend (the old
//! one drains); `rollback` during a canary ends it (the canary drains). Changing the share is
//! one transaction, like every change here.
//!
//! The state is written before the kernel changes and put back if the kernel refuses, as for
//! a switch, so a crash in between leaves a canary recorded that the kernel does not route —
//! which `reconcile` turns into a draining backend.

use std::net::IpAddr;

use anyhow::Result;

use super::launch::{launch, repo_of};
use super::reconcile::reconcile;
use super::session::Session;
use super::switch::{commit_routing, ports_of, switch_to, wait_until_ready, Switched};
use super::Env;
use crate::config::Component;
use crate::crash;
use crate::error::Failure;
use crate::kernel::netfilter::Canary;
use crate::state::{now_ms, BackendRecord, CanaryRecord};

/// What a canary change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub component: String,
    /// The active backend, which keeps the rest of the new connections.
    pub active: IpAddr,
    pub canary: IpAddr,
    pub weight: u8,
    pub sticky: bool,
    /// A canary this one replaced (now draining).
    pub replaced: Option<BackendRecord>,
}

/// Refuse a plain switch or update of a component that has a canary: it would end the canary
/// without saying so.
pub fn refuse_during_canary(session: &Session, component: &Component) -> Result<()> {
    if let Some(canary) = session.routes.canary() {
        return Err(Failure::input(format!(
            "{} has a canary at {canary}: `handoff promote {}` or `handoff rollback {}` first \
             (or change its share with --weight / --canary)",
            component.name, component.name, component.name
        ))
        .into());
    }
    Ok(())
}

/// `switch NAME --to ADDR --weight PCT [--sticky]`: ADDR, once ready, takes PCT % of new
/// connections beside the active backend.
pub fn canary_address(
    env: &Env,
    component: &Component,
    address: IpAddr,
    weight: u8,
    sticky: bool,
) -> Result<Split> {
    ports_of(component)?;
    if address.is_ipv6() {
        return Err(Failure::input(format!(
            "--weight: {address} is an IPv6 address; a canary splits IPv4 clients only (switch \
             IPv6 clients with `handoff switch {} --to {address}`)",
            component.name
        ))
        .into());
    }
    let mut session = Session::open(env, component, &format!("canary {address}"))?;
    let active = active_backend(&session, component)?;
    if active == address {
        return Err(Failure::input(format!(
            "{address} is {}'s active backend already; a canary is another backend",
            component.name
        ))
        .into());
    }
    wait_until_ready(env, component, address)?;
    let backend = BackendRecord {
        address,
        address6: None,
        ports: component.port_pairs(),
        since_ms: now_ms(),
        container: None,
    };
    split_to(
        env,
        &mut session,
        component,
        active,
        backend,
        weight,
        sticky,
    )
}

/// `update NAME [--tag T] --canary PCT [--sticky]`: a new container of the tag, once ready,
/// takes PCT % of new connections. When a canary of this very version and config runs
/// already, only its share changes.
pub fn canary_update(
    env: &Env,
    component: &Component,
    tag: Option<&str>,
    weight: u8,
    sticky: bool,
) -> Result<Split> {
    let repo = repo_of(component)?;
    ports_of(component)?;
    let mut session = Session::open(env, component, "update --canary")?;
    reconcile(env, &mut session, component)?;
    let active = active_backend(&session, component)?;
    let tag = tag.unwrap_or(&component.tag);
    let image = format!("{repo}:{tag}");
    let current = session
        .state
        .component(&component.name)
        .canary
        .filter(|c| session.routes.canary() == Some(c.backend.address));
    let same_version = current.as_ref().and_then(|c| {
        session
            .container_at(c.backend.address)
            .filter(|container| container.runs(&image, component))
            .map(|_| c.backend.clone())
    });
    let backend = match same_version {
        Some(backend) => backend,
        None => {
            let container = launch(env, &mut session, component, tag)?;
            BackendRecord {
                address: container
                    .address
                    .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()),
                address6: container.address6,
                ports: component.port_pairs(),
                since_ms: now_ms(),
                container: Some(container.id),
            }
        }
    };
    split_to(
        env,
        &mut session,
        component,
        active,
        backend,
        weight,
        sticky,
    )
}

/// The active backend, which a canary needs beside it.
fn active_backend(session: &Session, component: &Component) -> Result<IpAddr> {
    session.routes.active().ok_or_else(|| {
        Failure::input(format!(
            "{} is not routed: a canary needs an active backend beside it (`switch` or \
             `start` first)",
            component.name
        ))
        .into()
    })
}

/// Route `weight` % of `component`'s new connections to `backend`, the rest to `active`, in
/// one transaction; a different canary before it starts draining.
fn split_to(
    env: &Env,
    session: &mut Session,
    component: &Component,
    active: IpAddr,
    backend: BackendRecord,
    weight: u8,
    sticky: bool,
) -> Result<Split> {
    let name = &component.name;
    let before = session.state.clone();
    let entry = session.state.components.entry(name.clone()).or_default();
    let replaced = entry
        .canary
        .take()
        .map(|c| c.backend)
        .filter(|previous| previous.address != backend.address)
        .map(|mut previous| {
            previous.since_ms = now_ms();
            previous
        });
    if let Some(previous) = &replaced {
        if !entry.draining.iter().any(|b| b.address == previous.address) {
            entry.draining.push(previous.clone());
        }
    }
    entry.draining.retain(|b| b.address != backend.address);
    entry.canary = Some(CanaryRecord {
        backend: backend.clone(),
        weight,
        sticky,
    });
    session.save(env)?;
    crash::point("before-switch");
    let canary = Canary {
        backend: backend.address,
        weight,
        sticky,
    };
    let backends = session.routes.backends();
    commit_routing(
        env,
        session,
        before,
        component,
        backends,
        Some(canary),
        || format!("sending {weight} % of {name} to {}", backend.address),
    )?;
    crash::point("after-switch");
    Ok(Split {
        component: name.clone(),
        active,
        canary: backend.address,
        weight,
        sticky,
        replaced,
    })
}

/// End `component`'s canary under an open session: every new connection to the active
/// backend again, in one transaction; the canary starts draining. Its backend, if there was a
/// canary.
pub fn end_canary(
    env: &Env,
    session: &mut Session,
    component: &Component,
) -> Result<Option<BackendRecord>> {
    let name = &component.name;
    let (Some(_), Some(address)) = (session.routes.active(), session.routes.canary()) else {
        return Ok(None);
    };
    let before = session.state.clone();
    // The kernel's canary, as the state recorded it (or as it is, if the state lost it).
    let running = session.container_at(address);
    let unrecorded = BackendRecord {
        address,
        address6: running.and_then(|c| c.address6),
        ports: ports_of(component)?,
        since_ms: 0,
        container: running.map(|c| c.id.clone()),
    };
    let entry = session.state.components.entry(name.clone()).or_default();
    let mut backend = entry
        .canary
        .take()
        .map(|c| c.backend)
        .filter(|b| b.address == address)
        .unwrap_or(unrecorded);
    backend.since_ms = now_ms();
    if !entry.draining.iter().any(|b| b.address == address) {
        entry.draining.push(backend.clone());
    }
    session.save(env)?;
    let backends = session.routes.backends();
    commit_routing(env, session, before, component, backends, None, || {
        format!("ending {name}'s canary")
    })?;
    Ok(Some(backend))
}

/// `promote NAME`: the canary, ready-checked again, takes every new connection; the backend
/// that was active starts draining.
pub fn promote(env: &Env, component: &Component) -> Result<Switched> {
    let name = &component.name;
    ports_of(component)?;
    let mut session = Session::open(env, component, "promote")?;
    if component.repo.is_some() {
        reconcile(env, &mut session, component)?;
    }
    let Some(address) = session.routes.canary() else {
        return Err(Failure::input(format!(
            "{name} has no canary to promote (`update {name} --canary PCT` or `switch {name} \
             --to ADDR --weight PCT` starts one)"
        ))
        .into());
    };
    let container = match component.repo {
        None => None,
        Some(_) => match session.container_at(address) {
            Some(container) => Some(container.id.clone()),
            None => {
                return Err(Failure::input(format!(
                    "the container of {name}'s canary at {address} is gone; `handoff rollback \
                     {name}` ends the canary"
                ))
                .into())
            }
        },
    };
    wait_until_ready(env, component, address)?;
    switch_to(env, &mut session, component, address, container)
}
