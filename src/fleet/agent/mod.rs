//! The fleet agent of one host: it converges the host to the fleet's spec — every Docker
//! component of the config started here, at the tag the fleet runs — at start and whenever
//! the spec or the rollout changes (an etcd watch from the revision it read: no polling),
//! writing each component's status only while its lease holds the host's registration
//! (fencing). In a running rollout it takes a turn when its host needs the new tag and a slot
//! is free ([`crate::fleet::rollout`]), updates locally, ends the turn at the switch — or
//! halts the rollout with its reason when the new version is not ready — and drains the old
//! version here while the rollout moves on. It acts on fleet-wide stops, and between changes
//! runs health rounds, replacing a container that failed too many in a row.
//!
//! What it reads is input, not instruction. A spec record is acted on only once admitted
//! ([`crate::fleet::admission`]: this fleet's, this key's, signed by a listed key when the host
//! requires signatures, newer than what it accepted); a component only when the host's policy
//! allows it ([`crate::fleet::policy`]). Anything else is refused and reported —
//! `refusals/{host}` for a spec record, a `refused` status for a component, a halt for a
//! rollout — and nothing of it is started: the host keeps what runs and what it accepted.
//!
//! etcd unreachable never tears anything down: the agent retries with backoff and starts again
//! from a fresh read. The store and the host are traits ([`Store`], [`Host`]), so every
//! decision here is unit-tested against fakes.

mod health;
pub mod host;
mod spec_view;
mod stops;
mod turns;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::Result;

pub use self::host::{Checked, Drained, Host, Serving};
use self::spec_view::Effective;
use super::admission::Admission;
use super::policy::Policy;
use super::records::{now_ms, state, StatusRecord};
use super::registration::Liveness;
use super::rollout::{self, desired_tag, Snapshot};
use super::store::{Cond, Op, Store};
use super::Keys;
use crate::config::Component;

/// How often and how strictly the components serving here are checked.
#[derive(Debug, Clone, Copy)]
pub struct HealthSettings {
    pub interval: Duration,
    /// Consecutive failed rounds before a component's container is replaced.
    pub failures_allowed: u32,
}

/// Where the agent writes its log lines (stderr, or a test's list).
pub type Say = Box<dyn Fn(String)>;

pub struct Agent<S: Store, H: Host> {
    pub store: S,
    pub host: H,
    keys: Keys,
    name: String,
    /// The lease that holds this host's registration now (it changes after an outage).
    lease: Box<dyn Fn() -> i64>,
    admission: Admission,
    policy: Option<Policy>,
    say: Say,
    liveness: Liveness,
    health: Health,
    drains: Drains,
    /// The refusals last written to `refusals/{host}`.
    refusals_written: Option<BTreeMap<String, String>>,
    /// The components to check between changes: those serving here at the last round.
    checked: Vec<Component>,
    /// The store failed and the agent has not watched since: said once, at the first failure.
    failing: bool,
}

/// The agent's health checks: `monitor`'s rounds, for every component serving here.
struct Health {
    settings: HealthSettings,
    last: Instant,
    /// Failed rounds in a row, per component.
    failures: HashMap<String, u32>,
    /// The tag and address each component serves at here (a replacement keeps the tag,
    /// whatever the config says).
    serving: HashMap<String, (String, Option<String>)>,
}

/// The drains under way, and the status each component reports when its drains have ended
/// (a fleet-wide stop's `stopped`).
#[derive(Default)]
struct Drains {
    running: BTreeMap<String, usize>,
    then: BTreeMap<String, StatusRecord>,
}

/// Everything an agent is made of.
pub struct Parts<S: Store, H: Host> {
    pub store: S,
    pub host: H,
    pub keys: Keys,
    pub name: String,
    pub lease: Box<dyn Fn() -> i64>,
    pub admission: Admission,
    pub policy: Option<Policy>,
    pub say: Say,
    pub liveness: Liveness,
    pub health: HealthSettings,
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
        state::FAILED,
        Some(format!("{what}: {error:#}")),
    )
}

impl<S: Store, H: Host> Agent<S, H> {
    pub fn new(parts: Parts<S, H>) -> Self {
        Agent {
            store: parts.store,
            host: parts.host,
            keys: parts.keys,
            name: parts.name,
            lease: parts.lease,
            admission: parts.admission,
            policy: parts.policy,
            say: parts.say,
            liveness: parts.liveness,
            health: Health {
                settings: parts.health,
                last: Instant::now(),
                failures: HashMap::new(),
                serving: HashMap::new(),
            },
            drains: Drains::default(),
            refusals_written: None,
            checked: Vec::new(),
            failing: false,
        }
    }

    fn say(&self, line: impl Into<String>) {
        (self.say)(line.into())
    }

    /// Read, act, watch; again from a fresh read after every change or store failure, until
    /// `stopping` says so.
    pub fn run(&mut self, stopping: &dyn Fn() -> bool) {
        let mut backoff = Duration::from_secs(1);
        while !stopping() {
            match self.round_and_watch(stopping) {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(error) => {
                    self.liveness.broken();
                    if !self.failing {
                        self.failing = true;
                        self.say(format!(
                            "{error:#}; nothing is torn down, retrying with backoff"
                        ));
                    }
                    let until = Instant::now() + backoff;
                    while Instant::now() < until && !stopping() {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One round, then a watch on the spec and the rollout's coordination from the round's
    /// revision, with health rounds and reaped drains while nothing changes. `Ok` when
    /// something changed, `Err` when the store failed.
    fn round_and_watch(&mut self, stopping: &dyn Fn() -> bool) -> Result<()> {
        let Some(revision) = self.round()? else {
            return Ok(());
        };
        let prefixes = [self.keys.spec(), self.keys.coordination()];
        self.store.watch(&prefixes, revision)?;
        self.liveness.watching();
        // Said when the watch stands again, not at the next change: a failure after this one
        // is a new outage and gets its own line.
        if std::mem::take(&mut self.failing) {
            self.say("etcd answers again; converged from a fresh read, watching");
        }
        while !stopping() {
            if self.store.changed(Duration::from_secs(1))? {
                return Ok(());
            }
            self.reap_drains()?;
            if self.health.last.elapsed() >= self.health.settings.interval {
                self.health.last = Instant::now();
                self.health_round()?;
            }
        }
        Ok(())
    }

    /// One round of decisions from one read of the fleet: the spec admitted, stops acted on,
    /// what is missing started, a turn taken when this host needs one. The revision to watch
    /// from; `None` when the round wrote something its decisions depend on (read again).
    pub fn round(&mut self) -> Result<Option<i64>> {
        let snapshot = Snapshot::read(&mut self.store, &self.keys)?;
        if rollout::settle_own_marker(&mut self.store, &self.keys, &snapshot, &self.name)? {
            self.say(
                "my update was cut short (the agent stopped during its turn); recorded as this \
                 host's halt of that rollout",
            );
            return Ok(None);
        }
        if self.end_leftover_turn(&snapshot)? {
            return Ok(None);
        }
        let spec = self.admit(&snapshot)?;
        self.report_refusals(&spec.refused)?;
        let Some(config) = &spec.config else {
            self.say(format!(
                "fleet {}: no config accepted yet",
                self.keys.fleet()
            ));
            self.checked.clear();
            return Ok(Some(snapshot.revision));
        };
        let progress = spec
            .rollout
            .as_ref()
            .map(|(r, _)| (r.clone(), snapshot.progress(r)));
        let mut allowed = Vec::new();
        let mut forbidden = BTreeMap::new();
        for component in config.components.iter().filter(|c| c.repo.is_some()) {
            let mut desired = component.clone();
            let reported = snapshot
                .status(&self.name, &component.name)
                .and_then(|s| s.tag.as_deref());
            let rollout = progress
                .as_ref()
                .filter(|(r, _)| r.spec.component == component.name)
                .map(|(r, p)| (r, p));
            desired.tag = desired_tag(&component.tag, rollout, reported);
            match self.policy.as_ref().map(|p| p.check(&desired)) {
                Some(Err(reason)) => {
                    forbidden.insert(component.name.clone(), reason);
                }
                _ => allowed.push(desired),
            }
        }
        self.hold_stopped(&allowed, &spec, &snapshot)?;
        allowed.retain(|c| !spec.stop_holds(&c.name));
        self.converge(&allowed, &snapshot)?;
        self.report_forbidden(&forbidden, &snapshot)?;
        self.drain_leftovers(&allowed)?;
        if self.take_part(&spec, &snapshot, &forbidden)? {
            return Ok(None);
        }
        self.checked = allowed;
        Ok(Some(snapshot.revision))
    }

    /// Write this host's status of a component — unless it says what the store already
    /// holds — only while this agent's lease holds the host's registration (fencing).
    fn write_status(&mut self, record: &StatusRecord, snapshot: Option<&Snapshot>) -> Result<()> {
        let same = |held: &StatusRecord| {
            (&held.tag, &held.active, &held.state, &held.reason)
                == (&record.tag, &record.active, &record.state, &record.reason)
        };
        if snapshot
            .and_then(|s| s.status(&self.name, &record.component))
            .is_some_and(same)
        {
            return Ok(());
        }
        let written = self.store.txn(
            vec![Cond::leased(self.keys.host(&self.name), (self.lease)())],
            vec![Op::put(
                self.keys.status(&self.name, &record.component),
                serde_json::to_vec(record)?,
            )],
        )?;
        if written.is_none() {
            self.say(format!(
                "{}: status not written: this agent's lease no longer holds {}",
                record.component, self.name
            ));
        }
        Ok(())
    }

    fn converge(&mut self, components: &[Component], snapshot: &Snapshot) -> Result<()> {
        for (name, result) in self.host.converge(components) {
            let record = match &result {
                Ok(serving) => {
                    let known = self.health.serving.insert(
                        name.clone(),
                        (serving.tag.clone(), Some(serving.address.clone())),
                    );
                    // Said once: when started, or when first found serving (an agent that
                    // came back after a restart).
                    if serving.started || known.is_none() {
                        let how = if serving.started {
                            "started"
                        } else {
                            "serving"
                        };
                        self.say(format!(
                            "{name}: {how} {} at {}",
                            serving.tag, serving.address
                        ));
                    }
                    status(
                        &name,
                        Some(serving.tag.clone()),
                        Some(serving.address.clone()),
                        state::READY,
                        None,
                    )
                }
                Err(error) => {
                    self.say(format!("{name}: failed: {error:#}"));
                    status(&name, None, None, state::FAILED, Some(format!("{error:#}")))
                }
            };
            self.write_status(&record, Some(snapshot))?;
        }
        Ok(())
    }

    /// Report each component the host's policy forbids: `refused`, with what still serves.
    fn report_forbidden(
        &mut self,
        forbidden: &BTreeMap<String, String>,
        snapshot: &Snapshot,
    ) -> Result<()> {
        for (name, reason) in forbidden {
            let (tag, active) = self.health.serving.get(name).cloned().unzip();
            let record = status(
                name,
                tag,
                active.flatten(),
                state::REFUSED,
                Some(reason.clone()),
            );
            if snapshot.state_of(&self.name, name) != Some(state::REFUSED) {
                self.say(format!(
                    "{name}: refused: {reason}; nothing of it is started"
                ));
            }
            self.write_status(&record, Some(snapshot))?;
        }
        Ok(())
    }

    /// `refusals/{host}`: what this host refuses of the spec now, written when it changes.
    fn report_refusals(&mut self, refused: &BTreeMap<String, String>) -> Result<()> {
        if self.refusals_written.as_ref() == Some(refused) {
            return Ok(());
        }
        for (key, reason) in refused {
            self.say(format!(
                "refused: {reason}; acting on what was accepted before ({key})"
            ));
        }
        let key = self.keys.refusal(&self.name);
        let op = match refused.is_empty() {
            true => Op::delete(key),
            false => Op::put(
                key,
                serde_json::to_vec(&super::records::RefusalsRecord {
                    host: self.name.clone(),
                    refused: refused.clone(),
                    at_ms: now_ms(),
                })?,
            ),
        };
        self.store.txn(vec![], vec![op])?;
        self.refusals_written = Some(refused.clone());
        Ok(())
    }
}

impl Effective {
    fn stop_holds(&self, component: &str) -> bool {
        self.stops.get(component).is_some_and(|s| s.holds())
    }
}
