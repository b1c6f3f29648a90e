//! What the agent asks of its host: the local use cases (start what is missing, update,
//! withdraw, kill, health rounds, drains), behind a trait so that the agent's decisions are
//! unit-tested against a fake host. The command line gives it the real one (`ops` on this
//! host's kernel and Docker); the fleet layer never names `ops`.

use anyhow::Result;

use crate::config::Component;

/// What serves a component after convergence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serving {
    pub tag: String,
    pub address: String,
    /// Started by this convergence (else it was serving already).
    pub started: bool,
}

/// One health round of a component.
#[derive(Debug)]
pub struct Checked {
    /// Failed rounds in a row, this one included.
    pub failures: u32,
    /// The container was replaced (at the tag it served): the new active address, or why the
    /// replacement failed.
    pub replaced: Option<Result<Option<String>>>,
}

/// How a drain ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drained {
    pub drained: usize,
    pub given_up: usize,
    pub retired: usize,
}

pub trait Host {
    /// Start every component of `components` that does not serve here (at its `tag`); report
    /// each. Nothing that runs is stopped.
    fn converge(&mut self, components: &[Component]) -> Vec<(String, Result<Serving>)>;
    /// Update `component` to its `tag` (the local `update`): the new active address.
    fn update(&mut self, component: &Component) -> Result<Option<String>>;
    /// Take `component` out of the ruleset (a fleet-wide stop); its backends drain.
    fn withdraw(&mut self, component: &Component) -> Result<()>;
    /// Retire everything of `component` at once (a fleet-wide kill).
    fn kill(&mut self, component: &Component) -> Result<()>;
    /// One health round of each component (as it serves here) with the failed rounds it had;
    /// a component replaced after `failures_allowed` failed rounds in a row.
    fn health_round(
        &mut self,
        checked: &[(Component, u32)],
        failures_allowed: u32,
    ) -> Result<Vec<Result<Checked>>>;
    /// Drain and retire the draining backends of `component` in the background.
    fn start_drain(&mut self, component: &Component) -> Result<()>;
    /// The drains that ended since the last call.
    fn reap_drains(&mut self) -> Vec<(String, Result<Drained>)>;
    /// Whether `component` has backends waiting to drain (left by an earlier run).
    fn has_draining(&mut self, component: &str) -> Result<bool>;
}
