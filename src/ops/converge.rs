//! A fleet agent's convergence: every Docker component of the fleet's config serves on this
//! host. A component with no serving container here is started (`start`: pull per policy,
//! ready checks, the switch); one that serves is reported as it is. Nothing is ever stopped
//! or torn down here: convergence only adds what is missing, so a stale view of the fleet (or
//! an etcd that is gone) can never take a running service away. Like every step it first
//! reconciles the state with what runs, so a container left by an update that died (an agent
//! SIGKILLed during its turn) is marked draining, for the agent's drains to retire.

use std::net::IpAddr;

use anyhow::Result;

use super::reconcile::reconcile;
use super::session::Session;
use super::update::start;
use super::Env;
use crate::config::{Component, Config};

/// What serves a component on this host after convergence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serving {
    /// The image tag of the active container.
    pub tag: String,
    pub address: IpAddr,
    /// Started by this convergence (else it was serving already).
    pub started: bool,
}

/// Converge every Docker component of `config`, in the config's order; one failure does not
/// stop the others.
pub fn converge(env: &Env, config: &Config) -> Vec<(String, Result<Serving>)> {
    config
        .components
        .iter()
        .filter(|c| c.repo.is_some())
        .map(|c| (c.name.clone(), converge_component(env, c)))
        .collect()
}

fn converge_component(env: &Env, component: &Component) -> Result<Serving> {
    if let Some(serving) = serving(env, component)? {
        return Ok(serving);
    }
    let switched = start(env, component)?;
    Ok(Serving {
        tag: component.tag.clone(),
        address: switched.address,
        started: true,
    })
}

/// The active, running container of `component`, if the kernel routes to one.
fn serving(env: &Env, component: &Component) -> Result<Option<Serving>> {
    let mut session = Session::open(env, component, "converge")?;
    reconcile(env, &mut session, component)?;
    Ok(session.routes.active().and_then(|address| {
        session.container_at(address).map(|container| Serving {
            tag: container
                .image
                .rsplit_once(':')
                .map(|(_, tag)| tag.to_string())
                .unwrap_or_default(),
            address,
            started: false,
        })
    }))
}
