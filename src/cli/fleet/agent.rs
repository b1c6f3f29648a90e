//! `handoff fleet agent [--host NAME]`: the long-running agent of one host. It registers the
//! host under a lease kept alive through etcd outages, and converges the host to the fleet's
//! config — every Docker component started here, at the config's tag — at start and whenever
//! the config changes (an etcd watch from the revision it read: no polling), writing each
//! component's status under its lease (fencing). In a running rollout it takes a turn when
//! its host needs the new tag and a slot is free (`crate::fleet::rollout`), updates locally
//! (the same use case as `update`), ends the turn at the switch — or halts the rollout with
//! its reason when the new version is not ready — and drains the old version here while the
//! rollout moves on. etcd unreachable never tears anything down: it retries with backoff and
//! starts again from a fresh read when etcd answers. SIGTERM or SIGINT revoke the lease, so
//! the host shows as lost at once. Between changes it runs `monitor`'s health rounds for the
//! components serving here (every --health-interval s), replacing a container that failed
//! --health-failures rounds in a row, at the tag it serves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{signal, SigHandler, Signal};

mod stops;

use super::super::{with_env, Globals};
use super::drains::Drains;
use super::Fleet;
use crate::config::{self, Component, Config};
use crate::fleet::keys::valid_name;
use crate::fleet::records::{now_ms, StatusRecord};
use crate::fleet::registration::Registration;
use crate::fleet::rollout::{self, Snapshot, DONE};
use crate::fleet::{Etcd, LEASE_TTL_SECS};
use crate::ops::converge::converge;
use crate::ops::monitor::round;
use crate::ops::update::update;

/// The config with each component's tag as the fleet wants it: a finished rollout's tag
/// replaces the config's (a host that joins later starts at what the fleet runs).
fn desired(mut config: Config, snapshot: &Snapshot) -> Config {
    if let Some((rollout, _)) = snapshot.rollout.as_ref().filter(|(r, _)| r.state == DONE) {
        for component in &mut config.components {
            if component.name == rollout.component {
                component.tag = rollout.tag.clone();
            }
        }
    }
    config
}

fn status(
    component: &str,
    tag: Option<String>,
    active: Option<String>,
    state: &str,
    reason: Option<String>,
) -> StatusRecord {
    StatusRecord {
        component: component.to_string(),
        tag,
        active,
        state: state.to_string(),
        reason,
        at_ms: now_ms(),
    }
}

/// The status of a component whose `what` failed here.
fn failed(component: &str, what: &str, error: &anyhow::Error) -> StatusRecord {
    status(
        component,
        None,
        None,
        "failed",
        Some(format!("{what}: {error:#}")),
    )
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// This host's name in the fleet [default: the hostname].
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Seconds between rounds of health checks of the components serving here.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub health_interval: u64,
    /// Consecutive failed rounds before a component's container is replaced (as `monitor`).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub health_failures: u32,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn say(line: impl AsRef<str>) {
    eprintln!("handoff: fleet: {}", line.as_ref());
}

pub fn run(args: &Args, fleet: &Fleet, globals: &Globals) -> Result<()> {
    let host = match &args.host {
        Some(host) => host.clone(),
        None => nix::unistd::gethostname()
            .context("reading the hostname")?
            .to_string_lossy()
            .into_owned(),
    };
    valid_name("--host", &host)?;
    globals.require_root()?;
    for stop_signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { signal(stop_signal, SigHandler::Handler(request_stop)) }
            .context("installing the stop signal handlers")?;
    }
    // Connected before registering: once the host is registered, nothing at start-up depends on
    // etcd any more (an etcd that goes away just then is retried like any outage).
    let etcd = fleet.connect()?;
    let registration = Registration::start(
        &fleet.endpoints,
        &fleet.keys,
        &host,
        Box::new(|line: String| say(line)),
    )?;
    say(format!(
        "{host} registered in fleet {} (lease {LEASE_TTL_SECS} s, kept alive)",
        fleet.name
    ));
    let mut agent = Agent {
        etcd,
        fleet,
        globals,
        host: &host,
        registration: &registration,
        health: Health {
            interval: Duration::from_secs(args.health_interval.max(1)),
            failures_allowed: args.health_failures.max(1),
            last: Instant::now(),
            failures: HashMap::new(),
            serving: HashMap::new(),
        },
        drains: Drains::default(),
    };
    agent.run();
    drop(registration);
    say(format!("{host} left fleet {} (lease revoked)", fleet.name));
    Ok(())
}

struct Agent<'a> {
    etcd: Etcd,
    fleet: &'a Fleet,
    globals: &'a Globals,
    host: &'a str,
    registration: &'a Registration,
    health: Health,
    drains: Drains,
}

/// The agent's health checks: `monitor`'s rounds, for every component serving here.
struct Health {
    interval: Duration,
    failures_allowed: u32,
    last: Instant,
    /// Failed rounds in a row, per component.
    failures: HashMap<String, u32>,
    /// The tag each component serves here (a replacement keeps it, whatever the config says).
    serving: HashMap<String, String>,
}

impl Agent<'_> {
    /// Read, converge, watch; again from a fresh read after every change or etcd failure.
    fn run(&mut self) {
        let mut backoff = Duration::from_secs(1);
        let mut failing = false;
        while !STOP.load(Ordering::SeqCst) {
            match self.read_converge_and_watch() {
                Ok(()) => {
                    backoff = Duration::from_secs(1);
                    if std::mem::take(&mut failing) {
                        say("etcd answers again; converged from a fresh read");
                    }
                }
                Err(error) => {
                    if !failing {
                        failing = true;
                        say(format!(
                            "{error:#}; nothing is torn down, retrying with backoff"
                        ));
                    }
                    let until = std::time::Instant::now() + backoff;
                    while std::time::Instant::now() < until && !STOP.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One round: the fleet as of now (one read), convergence, a turn in a running rollout
    /// when this host needs one, then a watch on `spec/` from that revision until something
    /// changes (`Ok`) or the watch fails (`Err`).
    fn read_converge_and_watch(&mut self) -> Result<()> {
        let keys = &self.fleet.keys;
        let snapshot = Snapshot::read(&mut self.etcd, keys)?;
        if let Some(state) = rollout::check(&mut self.etcd, keys, &snapshot)? {
            say(format!("the rollout is {state}"));
            return Ok(());
        }
        let mut config = None;
        match &snapshot.config {
            None => say(format!("fleet {}: no config stored yet", self.fleet.name)),
            Some(text) => match config::parse(text) {
                Ok(parsed) => {
                    let parsed = desired(parsed, &snapshot);
                    self.hold_stopped(&parsed, &snapshot)?;
                    let mut running = parsed.clone();
                    running
                        .components
                        .retain(|c| !snapshot.stopped.contains_key(&c.name));
                    self.converge(&running)?;
                    self.drain_leftovers(&running)?;
                    if self.take_part(&parsed, &snapshot)? {
                        return Ok(());
                    }
                    config = Some(running);
                }
                // setconfig validates; a config written around it is reported, never applied.
                Err(error) => say(format!(
                    "the stored config is not valid, ignored: {error:#}"
                )),
            },
        }
        let mut watch = self.etcd.watch(&keys.spec(), snapshot.revision)?;
        while !STOP.load(Ordering::SeqCst) {
            if self.etcd.changed(&mut watch, Duration::from_secs(1))? {
                return Ok(());
            }
            self.reap_drains()?;
            if let Some(config) = &config {
                if self.health.last.elapsed() >= self.health.interval {
                    self.health.last = Instant::now();
                    self.health_round(config)?;
                }
            }
        }
        Ok(())
    }

    /// Update this host in the running rollout if it needs it and a turn is free; whether it
    /// took a turn.
    fn take_part(&mut self, config: &Config, snapshot: &Snapshot) -> Result<bool> {
        let Some((rollout, _)) = snapshot.running() else {
            return Ok(false);
        };
        let Ok(component) = config.component(&rollout.component) else {
            return Ok(false);
        };
        let serving = snapshot.serving_tag(self.host, &component.name);
        if serving.is_none()
            || serving == Some(rollout.tag.as_str())
            || snapshot.updating.contains(self.host)
        {
            return Ok(false);
        }
        let lease = self.registration.lease();
        let keys = &self.fleet.keys;
        let Some(turn) = rollout::take_turn(&mut self.etcd, keys, snapshot, self.host, lease)?
        else {
            return Ok(false);
        };
        let name = &component.name;
        say(format!(
            "{name}: my turn (slot {}, etcd revision {}) in the rollout to {}",
            turn.slot, turn.revision, rollout.tag
        ));
        let result = with_env(self.globals, |env| {
            update(env, component, Some(&rollout.tag))
        });
        let (status, halt_reason) = match &result {
            Ok(report) => {
                let address = report.switched.as_ref().map(|s| s.address.to_string());
                say(format!(
                    "{name}: {} now serves (switched); the previous version drains here",
                    rollout.tag
                ));
                (
                    status(name, Some(rollout.tag.clone()), address, "ready", None),
                    None,
                )
            }
            Err(error) => {
                let reason = format!("host {}: {error:#}", self.host);
                say(format!(
                    "{name}: update failed, halting the rollout: {reason}"
                ));
                (
                    status(name, None, None, "failed", Some(reason.clone())),
                    Some(reason),
                )
            }
        };
        let ended = rollout::end_turn(
            &mut self.etcd,
            keys,
            turn.slot,
            self.host,
            lease,
            &status,
            halt_reason.as_deref().map(|r| (rollout, r)),
        )?;
        match ended {
            Some(revision) => say(format!("{name}: my turn ended (etcd revision {revision})")),
            None => say(format!(
                "{name}: my turn had ended meanwhile (lease lost); the rollout was halted or moved on"
            )),
        }
        if result.is_ok() {
            // The old container drains here while the rollout moves on to the next host.
            self.drains.start(self.globals, component, None)?;
        }
        Ok(true)
    }

    /// One round of health checks for every component serving here; a component whose
    /// container failed too many rounds in a row is replaced (at the tag it serves) and its
    /// new status written.
    fn health_round(&mut self, config: &Config) -> Result<()> {
        // Each component as it serves here: a replacement keeps its tag.
        let checked: Vec<(Component, u32)> = config
            .components
            .iter()
            .filter(|c| c.repo.is_some())
            .filter_map(|c| {
                let mut serving = c.clone();
                serving.tag = self.health.serving.get(&c.name)?.clone();
                let failures = self.health.failures.get(&c.name).copied().unwrap_or(0);
                Some((serving, failures))
            })
            .collect();
        let allowed = self.health.failures_allowed;
        // One connection to the outside worlds for the whole round.
        let rounds = with_env(self.globals, |env| {
            Ok(checked
                .iter()
                .map(|(component, failures)| round(env, component, allowed, *failures))
                .collect::<Vec<_>>())
        })?;
        for ((component, _), round) in checked.iter().zip(rounds) {
            let (name, tag) = (&component.name, &component.tag);
            let round = match round {
                Ok(round) => round,
                Err(error) => {
                    say(format!("{name}: health round: {error:#}"));
                    continue;
                }
            };
            self.health.failures.insert(name.clone(), round.failures);
            let record = match round.replaced {
                None => continue,
                Some(Ok(report)) => {
                    let address = report.switched.as_ref().map(|s| s.address.to_string());
                    say(format!(
                        "{name}: unhealthy; replaced by a new {tag} container at {}",
                        address.as_deref().unwrap_or("-")
                    ));
                    status(name, Some(tag.clone()), address, "ready", None)
                }
                Some(Err(error)) => {
                    say(format!("{name}: unhealthy; replacing failed: {error:#}"));
                    status(name, None, None, "failed", Some(format!("{error:#}")))
                }
            };
            self.write_status(&record)?;
        }
        Ok(())
    }

    /// Write this host's status of a component, only while this agent's lease holds the
    /// host's registration (fencing); says so when it no longer does.
    fn write_status(&mut self, record: &StatusRecord) -> Result<()> {
        let written = self.etcd.put_fenced(
            &self.fleet.keys.status(self.host, &record.component),
            serde_json::to_vec(record)?,
            &self.fleet.keys.host(self.host),
            self.registration.lease(),
        )?;
        if !written {
            say(format!(
                "{}: status not written: this agent's lease no longer holds {}",
                record.component, self.host
            ));
        }
        Ok(())
    }

    fn converge(&mut self, config: &Config) -> Result<()> {
        let results = with_env(self.globals, |env| Ok(converge(env, config)))?;
        for (component, result) in results {
            let record = match &result {
                Ok(serving) => {
                    self.health
                        .serving
                        .insert(component.clone(), serving.tag.clone());
                    say(format!(
                        "{component}: {} {} at {}",
                        if serving.started {
                            "started"
                        } else {
                            "serving"
                        },
                        serving.tag,
                        serving.address
                    ));
                    status(
                        &component,
                        Some(serving.tag.clone()),
                        Some(serving.address.to_string()),
                        "ready",
                        None,
                    )
                }
                Err(error) => {
                    say(format!("{component}: failed: {error:#}"));
                    status(&component, None, None, "failed", Some(format!("{error:#}")))
                }
            };
            self.write_status(&record)?;
        }
        Ok(())
    }
}
