//! gantry's `start` and `update`: a new container beside the old one; when it is ready, the
//! switch. The drain and the retirement of the old one are `drain::finish_drain`, the caller's
//! next step, so that the switch can be reported the moment it happens (a drain can last as
//! long as a 3 GB upload).

use anyhow::Result;

use super::canary::refuse_during_canary;
use super::launch::{launch, repo_of};
use super::reconcile::reconcile;
use super::session::Session;
use super::switch::{ports_of, switch_to, Switched};
use super::Env;
use crate::config::Component;
use crate::error::Failure;

/// `start`: run the first container of a component and route its ports to it.
pub fn start(env: &Env, component: &Component) -> Result<Switched> {
    repo_of(component)?;
    ports_of(component)?;
    let mut session = Session::open(env, component, "start")?;
    reconcile(env, &mut session, component)?;
    if let Some(address) = session.routes.active() {
        if let Some(running) = session.container_at(address) {
            return Err(Failure::input(format!(
                "{} already runs (container {} at {address}); use `handoff update {}`",
                component.name, running.name, component.name
            ))
            .into());
        }
    }
    let container = launch(env, &mut session, component, &component.tag)?;
    let address = container
        .address
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    switch_to(env, &mut session, component, address, Some(container.id))
}

/// What an `update` did.
#[derive(Debug, Default)]
pub struct UpdateReport {
    /// The switch to the new container; `None` when the version was already serving.
    pub switched: Option<Switched>,
    /// A container of this version and config already served (an earlier update got past its
    /// switch and did not finish): its name; what is left is the drain of the previous version.
    pub already_serving: Option<String>,
}

/// `update`: a new container of `tag` (default: the config's) beside the old one; switch when
/// it is ready. Returns with the lock released; the old version is still draining.
pub fn update(env: &Env, component: &Component, tag: Option<&str>) -> Result<UpdateReport> {
    let repo = repo_of(component)?;
    ports_of(component)?;
    let mut report = UpdateReport::default();
    let mut session = Session::open(env, component, "update")?;
    reconcile(env, &mut session, component)?;
    refuse_during_canary(&session, component)?;
    let tag = tag.unwrap_or(&component.tag);
    let image = format!("{repo}:{tag}");
    let draining = !session.state.component(&component.name).draining.is_empty();
    let already_there = session
        .routes
        .active()
        .and_then(|a| session.container_at(a))
        .filter(|c| draining && c.runs(&image, component))
        .map(|c| c.name.clone());
    match already_there {
        Some(name) => report.already_serving = Some(name),
        None => {
            let container = launch(env, &mut session, component, tag)?;
            let address = container
                .address
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
            report.switched = Some(switch_to(
                env,
                &mut session,
                component,
                address,
                Some(container.id),
            )?);
        }
    }
    Ok(report)
}
