//! `monitor`: health checks against the active backend every interval; after enough failed
//! rounds in a row, the backend is replaced through `update` (without waiting for the drain),
//! and drained backends are retired as the rounds go by. Meant for a systemd service.

use std::time::Duration;

use anyhow::Result;

use super::retire::{retire_finished, Retired};
use super::update::{update, UpdateReport};
use super::watch::{dump_flows_of, live_flows};
use super::{human_duration, Env};
use crate::config::Component;
use crate::state::{now_ms, BackendRecord};

/// What one round saw and did.
#[derive(Debug, Default)]
pub struct Round {
    /// Failed health checks in a row, this round included.
    pub failures: u32,
    /// The replacement, when this round's failure was one too many.
    pub replaced: Option<Result<UpdateReport>>,
    /// Draining backends retired this round.
    pub retired: Vec<Retired>,
}

/// One round: check the active backend, replace it after `failures_allowed` failed rounds in
/// a row (counting from `failures` before this round), retire what finished draining.
pub fn round(
    env: &Env,
    component: &Component,
    failures_allowed: u32,
    failures: u32,
) -> Result<Round> {
    let name = &component.name;
    let mut round = Round {
        failures,
        ..Round::default()
    };
    match env.firewall.routes(name)?.active() {
        None => env.step(format!("{name}: not routed; waiting")),
        Some(address) => match env.probe.healthy(component, address) {
            Ok(()) => round.failures = 0,
            Err(problem) => {
                round.failures += 1;
                env.warn(format!(
                    "{name}: {address} failed a health check ({}/{failures_allowed}): \
                     {problem:#}",
                    round.failures
                ));
                if round.failures >= failures_allowed {
                    env.step(format!("{name}: replacing the unhealthy backend {address}"));
                    let replaced = update(env, component, None);
                    if replaced.is_ok() {
                        round.failures = 0;
                    }
                    round.replaced = Some(replaced);
                }
            }
        },
    }
    match reap_drained(env, component) {
        Ok(retired) => round.retired = retired,
        Err(error) => env.warn(format!(
            "{name}: retiring drained backends failed: {error:#}"
        )),
    }
    Ok(round)
}

/// Run rounds every `interval` until the process is stopped.
pub fn run(env: &Env, component: &Component, interval: Duration, failures_allowed: u32) -> ! {
    env.step(format!(
        "monitoring {}: {} health check(s) every {} s",
        component.name,
        component.health_checks.len(),
        interval.as_secs()
    ));
    let mut failures = 0;
    loop {
        match round(env, component, failures_allowed, failures) {
            Ok(done) => {
                failures = done.failures;
                if let Some(Err(error)) = done.replaced {
                    env.warn(format!("{}: update failed: {error:#}", component.name));
                }
            }
            Err(error) => env.warn(format!("{}: {error:#}", component.name)),
        }
        std::thread::sleep(interval);
    }
}

/// Retire draining backends that have no live flow left, or whose drainTimeout passed (one
/// filtered dump per backend, no waiting).
fn reap_drained(env: &Env, component: &Component) -> Result<Vec<Retired>> {
    let draining = env.draining_of(&component.name)?;
    if draining.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let mut done: Vec<BackendRecord> = Vec::new();
    for backend in draining {
        let flows = dump_flows_of(env.conntrack().as_mut(), &backend)?;
        let timed_out = now
            >= backend
                .since_ms
                .saturating_add(component.drain_timeout_ms());
        if live_flows(&flows, &backend).is_empty() || timed_out {
            done.push(backend);
        }
    }
    if done.is_empty() {
        return Ok(Vec::new());
    }
    for backend in &done {
        env.step(format!(
            "{}: retiring {} after draining for {}",
            component.name,
            backend.address,
            human_duration(now.saturating_sub(backend.since_ms))
        ));
    }
    retire_finished(env, component, &done, true)
}
