//! Retiring backends that finished draining: their conntrack entries expired first (see
//! [`drain::forget_flows`](super::drain::forget_flows)), the termination signals sent, the
//! container stopped with its grace period and removed, the backend forgotten by the state and
//! the hairpin set. Like any teardown it keeps going past a failing step and reports every
//! failure; something that is already gone is done, not an error.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;

use super::drain::forget_flows;
use super::session::Session;
use super::Env;
use crate::config::{Component, ExecCommand, SignalKind};
use crate::crash;
use crate::runtime::short_id;
use crate::state::BackendRecord;

/// What retiring one backend came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retirement {
    /// Its container was stopped and removed (or it was an address backend: forgotten).
    Done,
    /// Its container had already stopped or vanished: only removed and forgotten.
    AlreadyGone,
    /// A step failed; the backend was forgotten all the same.
    Failed(String),
    /// It was the active container, recorded at an older address: forgotten, left running.
    Active,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retired {
    pub address: IpAddr,
    pub container: Option<String>,
    pub retirement: Retirement,
}

/// Under the lock, retire (signal when `graceful`, stop, remove) the containers of the
/// `finished` backends that are still draining — another run may have retired some meanwhile —
/// and forget them.
pub fn retire_finished(
    env: &Env,
    component: &Component,
    finished: &[BackendRecord],
    graceful: bool,
) -> Result<Vec<Retired>> {
    let name = &component.name;
    let mut session = Session::open(env, component, "retire")?;
    let still_draining = session.state.component(name).draining;
    let mine: Vec<BackendRecord> = finished
        .iter()
        .filter(|b| still_draining.contains(b))
        .cloned()
        .collect();
    // The active container is never retired, whatever the state says: a record of it at an
    // older address (restarted after a reboot, as written by handoff before 0.1's fix) is
    // forgotten, not drained.
    let active_containers: Vec<String> = session
        .state
        .component(name)
        .active
        .and_then(|a| a.container)
        .into_iter()
        .chain(
            session
                .routes
                .active()
                .and_then(|address| session.container_at(address))
                .map(|c| c.id.clone()),
        )
        .collect();
    // An address backend may be a container or a host that someone else stops later (and
    // dockerd would then clear its entries by their original tuple): forget its finished
    // flows now, unless the address serves again.
    let serving: Vec<IpAddr> = session
        .state
        .components
        .values()
        .flat_map(|c| c.active.iter().chain(&c.active6))
        .flat_map(BackendRecord::addresses)
        .collect();
    let mut retired = Vec::new();
    for backend in &mine {
        let retirement = match &backend.container {
            None => {
                if !backend.addresses().any(|a| serving.contains(&a)) {
                    let mut conntrack = env.conntrack();
                    if let Err(error) = forget_flows(conntrack.as_mut(), backend, false) {
                        env.warn(format!(
                            "{name}: could not clear the conntrack entries of {}: {error:#}",
                            backend.address
                        ));
                    }
                }
                Retirement::Done
            }
            Some(id) if active_containers.contains(id) => {
                env.warn(format!(
                    "{name}: {} at {} is the active container (started again at another \
                     address); it is not retired",
                    short_id(id),
                    backend.address
                ));
                Retirement::Active
            }
            Some(id) => retire_container(env, component, id, backend, graceful),
        };
        retired.push(Retired {
            address: backend.address,
            container: backend.container.clone(),
            retirement,
        });
    }
    crash::point("before-forget");
    session.state.finish_draining(name, &mine);
    session.save(env)?;
    // Only touch the kernel when there is something to route: setting the hairpin set would
    // otherwise create an empty table.
    let known = session.state.known_addresses();
    if !known.is_empty() || session.routes.is_routed() {
        env.firewall.set_hairpin_sources(&known)?;
    }
    Ok(retired)
}

/// Retire one container. Its conntrack entries are expired and its termination signals sent
/// only while it still runs at the backend's address: once it stopped, dockerd has cleaned up
/// already, and the address may belong to another container by now, whose flows and whose
/// signals these are not.
pub fn retire_container(
    env: &Env,
    component: &Component,
    id: &str,
    backend: &BackendRecord,
    graceful: bool,
) -> Retirement {
    let name = &component.name;
    let address = backend.address;
    let short = &id[..id.len().min(12)];
    let runtime = match env.runtime() {
        Ok(runtime) => runtime,
        Err(error) => return Retirement::Failed(format!("{error:#}")),
    };
    let mut errors = Vec::new();
    let holds_address = match runtime.running_address(id, &component.network) {
        Ok(current) => current == Some(address),
        Err(error) => {
            errors.push(format!("{error:#}"));
            false
        }
    };
    if holds_address {
        let mut conntrack = env.conntrack();
        if let Err(error) = forget_flows(conntrack.as_mut(), backend, !graceful) {
            env.warn(format!(
                "{name}: could not clear the conntrack entries of {address}: {error:#}"
            ));
        }
    } else {
        env.step(format!(
            "{name}: container {short} no longer runs at {address} (stopped or gone): no \
             termination signal"
        ));
    }
    if graceful && holds_address {
        for signal in &component.termination_signals {
            let timeout = Duration::from_secs(signal.timeout);
            let sent = match signal.kind {
                SignalKind::Http => {
                    let port = signal.port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
                    let path = signal.path.as_deref().unwrap_or("/");
                    env.probe.post(address, port, path, timeout)
                }
                SignalKind::Exec => {
                    let argv = match &signal.exec_command {
                        Some(ExecCommand::Argv(argv)) => argv.clone(),
                        Some(ExecCommand::Shell(line)) => {
                            vec!["/bin/sh".to_string(), "-c".to_string(), line.clone()]
                        }
                        None => Vec::new(),
                    };
                    runtime.exec(id, argv, timeout).and_then(|code| {
                        if code == 0 {
                            Ok(())
                        } else {
                            anyhow::bail!("exited with {code}")
                        }
                    })
                }
            };
            if let Err(error) = sent {
                env.warn(format!(
                    "{name}: termination signal {:?} failed: {error:#}",
                    signal.kind
                ));
            }
        }
    }
    let grace = if graceful {
        Duration::from_secs(component.stop_timeout)
    } else {
        Duration::ZERO
    };
    crash::point("before-stop");
    if let Err(error) = runtime.stop(id, grace) {
        errors.push(format!("{error:#}"));
    }
    crash::point("before-remove");
    if let Err(error) = runtime.remove(id) {
        errors.push(format!("{error:#}"));
    }
    if !errors.is_empty() {
        Retirement::Failed(errors.join("; "))
    } else if holds_address {
        Retirement::Done
    } else {
        Retirement::AlreadyGone
    }
}
