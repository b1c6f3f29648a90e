//! `rollback`: route a component back to the backend it served from before, while that one
//! still drains — no proxy can do this, since for a proxy the old backend is gone once its
//! config is. The most recent draining backend passes the component's ready checks again,
//! then takes the switch in one transaction; the backend that was active starts draining. It
//! is a switch, not a reset: every existing flow stays on the backend it started on, in both
//! directions.
//!
//! The most recent draining backend may be of either family (an address component switched
//! over IPv6): the rollback switches that family, the other keeps its backend.
//!
//! During a canary, a rollback ends it: every new connection goes to the active backend again
//! and the canary drains (no ready check: nothing new is routed to).
//!
//! A rollback is recorded with the switch (in the same state write), so that running it again
//! — after a crash, or by an operator unsure it happened — finds it done and does not flip the
//! component forward to the version it left; to go forward, run `update` (or `switch`).

use anyhow::Result;

use super::canary::end_canary;
use super::reconcile::reconcile;
use super::session::Session;
use super::switch::{ports_of, switch_to, wait_until_ready, Switched};
use super::Env;
use crate::config::Component;
use crate::error::Failure;
use crate::state::RolledBack;

/// What a `rollback` did.
#[derive(Debug)]
pub enum Rollback {
    /// The switch back.
    Switched(Switched),
    /// The component was already rolled back (by an earlier run): to this address, from the
    /// one that still drains.
    AlreadyDone(RolledBack),
    /// The component had a canary: every new connection goes to the active backend again,
    /// and the canary (this address) drains.
    CanaryEnded(std::net::IpAddr),
}

/// Switch `component` back to its most recent draining backend (ready-checked first). Bad
/// input — nothing draining, or its container gone — is refused with nothing changed.
pub fn rollback(env: &Env, component: &Component) -> Result<Rollback> {
    let name = &component.name;
    ports_of(component)?;
    let mut session = Session::open(env, component, "rollback")?;
    if component.repo.is_some() {
        reconcile(env, &mut session, component)?;
    }
    let nothing = |why: String| -> anyhow::Error {
        Failure::input(format!("nothing to roll back to: {why}")).into()
    };
    if let Some(canary) = end_canary(env, &mut session, component)? {
        return Ok(Rollback::CanaryEnded(canary.address));
    }
    let routes = session.routes.clone();
    let active = |address| routes.active_of_family(address);
    let entry = session.state.component(name);
    if let Some(done) = entry.rolled_back.filter(|r| {
        Some(r.to) == active(r.to) && entry.draining.iter().any(|b| b.address == r.from)
    }) {
        return Ok(Rollback::AlreadyDone(done));
    }
    let Some(target) = session
        .state
        .component(name)
        .draining
        .into_iter()
        .filter(|b| Some(b.address) != active(b.address))
        .max_by_key(|b| b.since_ms)
    else {
        return Err(nothing(format!(
            "{name} has no draining backend (the previous one was retired, or there never was one)"
        )));
    };
    let container = match (&component.repo, &target.container) {
        (None, _) => None,
        (Some(_), recorded) => {
            let running = session
                .container_at(target.address)
                .filter(|c| recorded.is_none() || recorded.as_ref() == Some(&c.id));
            match running {
                Some(container) => Some(container.id.clone()),
                None => {
                    return Err(nothing(format!(
                        "the container of {name}'s previous backend {} is gone",
                        target.address
                    )))
                }
            }
        }
    };
    for address in target.addresses() {
        wait_until_ready(env, component, address)?;
    }
    if let Some(from) = active(target.address) {
        // Saved by the switch, with it; a refused switch leaves it stale, which is harmless
        // (it only counts while the kernel routes to `to`).
        session
            .state
            .components
            .entry(name.clone())
            .or_default()
            .rolled_back = Some(RolledBack {
            from,
            to: target.address,
        });
    }
    switch_to(env, &mut session, component, target.address, container).map(Rollback::Switched)
}
