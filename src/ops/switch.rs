//! The switch: point a component's ports at a new backend in one kernel transaction; the
//! previous backend starts draining. The state is written first and put back if the kernel
//! refuses, so a crash in between leaves a backend listed as draining, never one forgotten.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use super::canary::refuse_during_canary;
use super::gateway::gateway;
use super::session::Session;
use super::Env;
use crate::config::{Component, PortPair};
use crate::crash;
use crate::error::Failure;
use crate::kernel::conntrack::ensure_events_for_new_flows_once;
use crate::kernel::netfilter::bindings::{self, Binding};
use crate::kernel::netfilter::{Backends, Canary, ComponentRoutes, Links, Route, Switch};
use crate::state::{now_ms, BackendRecord, State};

/// What a switch did.
#[derive(Debug, Clone, PartialEq)]
pub struct Switched {
    pub component: String,
    pub address: IpAddr,
    /// A container's IPv6 address, switched with `address` (IPv6 clients follow it).
    pub address6: Option<IpAddr>,
    /// The backend that was active before (now draining, unless it is the same address).
    pub previous: Option<BackendRecord>,
    /// The kernel transaction and the state update, without the ready check.
    pub elapsed: Duration,
}

/// The component's validated external -> backend ports, refusing a component without any.
pub fn ports_of(component: &Component) -> Result<Vec<PortPair>> {
    let ports = component.port_pairs();
    if ports.is_empty() {
        return Err(Failure::input(format!(
            "component {:?} has no ports in the config: there is nothing to switch",
            component.name
        ))
        .into());
    }
    Ok(ports)
}

/// The active IPv4 backend as a record, from the kernel's routes (ports as the kernel has
/// them).
pub fn active_record(routes: &ComponentRoutes, since_ms: u64) -> Option<BackendRecord> {
    record_of(&routes.routes, &routes.bound, since_ms)
}

/// The active IPv6 backend as a record.
pub fn active6_record(routes: &ComponentRoutes, since_ms: u64) -> Option<BackendRecord> {
    record_of(&routes.routes6, &routes.bound, since_ms)
}

/// The backend of `routes` as a record, each port with the address it is bound to in `bound`.
fn record_of(routes: &[Route], bound: &[Binding], since_ms: u64) -> Option<BackendRecord> {
    let address = routes.first()?.address;
    Some(BackendRecord {
        address,
        address6: None,
        ports: routes
            .iter()
            .filter(|r| r.address == address)
            .map(|r| PortPair {
                address: bound.iter().find(|b| b.key == r.key()).map(|b| b.address),
                ..r.pair()
            })
            .collect(),
        since_ms,
        container: None,
    })
}

/// Point `component`'s clients of `address`'s family at `address` (already checked ready),
/// running as `container` when it is one, in one transaction. An address backend switches
/// its family only; the other keeps its backend. A container serves both families: IPv6
/// clients go to its IPv6 address in the same transaction (refused when it has none). The
/// previous backend of that family — what the kernel routes to, or, when our table is gone,
/// what the state says was active — starts draining, unless it is the same container
/// (restarted at another address: nothing of it is left to drain).
pub fn switch_to(
    env: &Env,
    session: &mut Session,
    component: &Component,
    address: IpAddr,
    container: Option<String>,
) -> Result<Switched> {
    let started = Instant::now();
    let name = &component.name;
    let ports = ports_of(component)?;
    let before = session.state.clone();
    let now = now_ms();
    let address6 = container
        .as_ref()
        .and_then(|id| session.containers.iter().find(|c| &c.id == id))
        .and_then(|c| c.address6);
    let backends = match container {
        Some(_) => Backends::default().with(address).with_optional(address6),
        None => session.routes.backends().with(address),
    };
    let routed = record_of(
        session.routes.routes_of_family(address),
        &session.routes.bound,
        now,
    );
    let recorded = match address {
        IpAddr::V4(_) => before.component(name).active,
        IpAddr::V6(_) => before.component(name).active6,
    };
    let previous = routed
        .map(|mut record| {
            record.container = session.container_at(record.address).map(|c| c.id.clone());
            if container.is_some() {
                // The container IPv6 clients went to: the same backend.
                record.address6 = session.routes.active6();
            }
            record
        })
        .or_else(|| {
            recorded.map(|mut record| {
                record.since_ms = now;
                record
            })
        })
        .filter(|record| container.is_none() || record.container != container);
    session.state.record_switch(
        name,
        previous.clone(),
        BackendRecord {
            address,
            address6,
            ports: ports.clone(),
            since_ms: now,
            container: container.clone(),
        },
    );
    if let Some(id) = &container {
        // Earlier records of this very container (at another address) are not backends to
        // drain: the container is the new active one.
        let entry = session.state.components.entry(name.clone()).or_default();
        entry
            .draining
            .retain(|b| b.container.as_ref() != Some(id) || b.address == address);
    }
    session.save(env)?;
    crash::point("before-switch");
    commit_routing(env, session, before, component, backends, None, || {
        format!("switching {name} to {address}")
    })?;
    crash::point("after-switch");
    // After the transaction: by now the NAT ruleset has loaded conntrack for sure.
    if let Some(warning) = ensure_events_for_new_flows_once().and_then(|found| found.warning()) {
        env.warn(warning);
    }
    Ok(Switched {
        component: name.clone(),
        address,
        address6,
        previous,
        elapsed: started.elapsed(),
    })
}

/// Make the kernel route `component`'s clients to `backends` (and `canary`, if any) in one
/// transaction, the state as the caller saved it in `session` already. Refused, the state is put back to
/// `before` and the error says what was being `done` and that nothing was changed; done, the
/// session's routes are what the transaction made.
pub(super) fn commit_routing(
    env: &Env,
    session: &mut Session,
    before: State,
    component: &Component,
    backends: Backends,
    canary: Option<Canary>,
    doing: impl FnOnce() -> String,
) -> Result<()> {
    let ports = ports_of(component)?;
    let known = session.state.known_addresses();
    let link_ports = component.link_ports();
    let links = match link_ports.is_empty() {
        true => None,
        false => Some(Links {
            gateway: gateway(env, &component.network)?,
            ports: &link_ports,
        }),
    };
    let change = Switch {
        component: &component.name,
        current: &session.routes,
        ports: &ports,
        backends,
        canary,
        localhost: component.localhost_clients,
        links,
        hairpin_sources: &known,
    };
    if let Err(error) = env.firewall.switch(&change) {
        if let Err(restore) = session.revert(env, before) {
            env.warn(format!("could not restore the previous state: {restore:#}"));
        }
        return Err(error).context(format!("{}; nothing was changed", doing()));
    }
    let routes = ComponentRoutes {
        routes: change.routes(),
        routes6: change.routes6(),
        canary: change.canary_routes(),
        localhost: change.localhost,
        bound: bindings::wanted(change.ports),
    };
    session.routes = routes;
    Ok(())
}

/// Say that `address` is being checked, and wait until it passes `component`'s readyChecks
/// (within readyTimeout): what every step does before it routes to a backend.
pub fn wait_until_ready(env: &Env, component: &Component, address: IpAddr) -> Result<()> {
    env.step(format!(
        "{}: waiting for {address} to pass its ready checks (readyTimeout {} ms)",
        component.name, component.ready_timeout
    ));
    env.probe.wait_ready(component, address)
}

/// `switch NAME --to ADDR`: check that ADDR is ready (within readyTimeout), then switch.
pub fn switch_address(env: &Env, component: &Component, address: IpAddr) -> Result<Switched> {
    ports_of(component)?;
    let mut session = Session::open(env, component, &format!("switch --to {address}"))?;
    refuse_during_canary(&session, component)?;
    wait_until_ready(env, component, address)?;
    switch_to(env, &mut session, component, address, None)
}
