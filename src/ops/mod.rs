//! The use cases — switch, launch, reconcile, retire, drain, update, stop, monitor, restore,
//! inspect — as explicit steps over the outside worlds, each behind a trait: the kernel's
//! firewall ([`Firewall`]) and connection tracking ([`Conntrack`]), the container runtime
//! ([`Runtime`]), the network checks ([`Probe`]). They take an [`Env`], return data, and print
//! nothing: what a person should see on the way goes to the [`Reporter`], and the CLI decides
//! how it looks. Unit tests run every use case against in-memory fakes of those worlds (see
//! `testkit`); the integration tests in `tests/` run them against the real ones.
//!
//! Every step starts from what is observed — the kernel's map for the active backend, the
//! runtime's labels for the containers, the state file for what is draining — so a rerun after
//! a failure continues from where things are, not from a log of intentions. Under one lock hold
//! each of those is read once ([`session::Session`]).

pub mod canary;
pub mod converge;
pub mod drain;
pub mod gateway;
pub mod inspect;
pub mod launch;
pub mod monitor;
pub mod reconcile;
pub mod restore;
pub mod retire;
pub mod rollback;
pub mod session;
pub mod stop;
pub mod switch;
pub mod update;
pub mod watch;

#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

use std::cell::{OnceCell, RefCell, RefMut};
use std::time::Duration;

use anyhow::Result;

use crate::health::Probe;
use crate::kernel::conntrack::Conntrack;
use crate::kernel::netfilter::Firewall;
use crate::runtime::Runtime;
use crate::state::{BackendRecord, LockGuard, StateDir};

/// Where handoff keeps what it owns, and how long it waits for another run's lock.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Our nftables table (family inet); also the label that marks our containers.
    pub table: String,
    pub state: StateDir,
    pub lock_timeout: Duration,
}

/// Something a person should know while a use case runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A step begins or ends (a container starts, a check waits, a container is removed).
    Step(String),
    /// Something went wrong that does not stop the run.
    Warning(String),
}

/// Receives what the use cases have to say on the way. The CLI prints it; tests collect it.
pub trait Reporter {
    fn note(&self, note: Note);
    /// A drain's live flows left (called whenever the count changes, and on each tick).
    fn drain_progress(&self, component: &str, remaining: usize, waited: Duration);
}

/// How the runtime is had: handed in (tests), or connected on first use (a command on address
/// components must not need Docker).
pub enum RuntimeSource<'a> {
    Given(&'a dyn Runtime),
    Connect(fn() -> Result<Box<dyn Runtime>>),
}

/// The outside worlds and the settings, for one run.
pub struct Env<'a> {
    pub settings: Settings,
    pub firewall: &'a dyn Firewall,
    pub probe: &'a dyn Probe,
    pub reporter: &'a dyn Reporter,
    conntrack: RefCell<Box<dyn Conntrack + 'a>>,
    runtime_source: RuntimeSource<'a>,
    connected: OnceCell<Box<dyn Runtime>>,
}

impl<'a> Env<'a> {
    pub fn new(
        settings: Settings,
        firewall: &'a dyn Firewall,
        probe: &'a dyn Probe,
        reporter: &'a dyn Reporter,
        conntrack: Box<dyn Conntrack + 'a>,
        runtime_source: RuntimeSource<'a>,
    ) -> Self {
        Env {
            settings,
            firewall,
            probe,
            reporter,
            conntrack: RefCell::new(conntrack),
            runtime_source,
            connected: OnceCell::new(),
        }
    }

    /// The container runtime, connected on first use.
    pub fn runtime(&self) -> Result<&dyn Runtime> {
        match &self.runtime_source {
            RuntimeSource::Given(runtime) => Ok(*runtime),
            RuntimeSource::Connect(connect) => {
                if self.connected.get().is_none() {
                    let runtime = connect()?;
                    let _ = self.connected.set(runtime);
                }
                match self.connected.get() {
                    Some(runtime) => Ok(runtime.as_ref()),
                    None => anyhow::bail!("the container runtime could not be kept"),
                }
            }
        }
    }

    /// The kernel's connection tracking (one handle for the run).
    pub fn conntrack(&self) -> RefMut<'_, Box<dyn Conntrack + 'a>> {
        self.conntrack.borrow_mut()
    }

    pub fn lock(&self, what: &str) -> Result<LockGuard> {
        self.settings.state.lock(self.settings.lock_timeout, what)
    }

    /// The draining backends of `component`, read without the lock (a drain waits without
    /// it; whatever retires them takes it and reads again).
    pub fn draining_of(&self, component: &str) -> Result<Vec<BackendRecord>> {
        Ok(self.settings.state.load()?.component(component).draining)
    }

    pub fn step(&self, text: impl Into<String>) {
        self.reporter.note(Note::Step(text.into()));
    }

    pub fn warn(&self, text: impl Into<String>) {
        self.reporter.note(Note::Warning(text.into()));
    }
}

/// `12.3 s`, `4 min`, `2.0 h`: short human durations for messages.
pub fn human_duration(ms: u64) -> String {
    let secs = ms as f64 / 1000.0;
    if secs < 120.0 {
        format!("{secs:.1} s")
    } else if secs < 7200.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}
