//! The fleet agent's drains, each in a thread of its own. A drain can last up to the
//! component's drainTimeout (an hour in the example config); the agent must meanwhile take its
//! turn in the next rollout, act on a stop, run health rounds and keep its statuses current.
//! `finish_drain` holds no lock while it waits, and retiring tolerates a backend that another
//! run retired first, so a drain here never blocks the agent's other work.
//!
//! A drain left unfinished when the agent exits (its backends stay `draining` in the state
//! file) is started again by the next agent (`resume`).

use std::thread::JoinHandle;

use anyhow::Result;

use super::super::{with_env, Globals};
use crate::config::Component;
use crate::fleet::StatusRecord;
use crate::ops::drain::{finish_drain, DrainReport};

struct Drain {
    component: String,
    thread: JoinHandle<Result<DrainReport>>,
    /// The status to report when it ends (the end of a fleet-wide stop).
    then: Option<StatusRecord>,
}

/// The drains under way.
#[derive(Default)]
pub struct Drains {
    running: Vec<Drain>,
}

/// A drain that ended: its component, how it went, and the status it was to report.
pub struct Ended {
    pub component: String,
    pub result: Result<DrainReport>,
    pub then: Option<StatusRecord>,
}

impl Drains {
    /// Drain (and then retire) every draining backend of `component`, in the background; on
    /// its end, report `then`.
    pub fn start(
        &mut self,
        globals: &Globals,
        component: &Component,
        then: Option<StatusRecord>,
    ) -> Result<()> {
        let (globals, owned) = (globals.clone(), component.clone());
        let thread = std::thread::Builder::new()
            .name(format!("drain {}", component.name))
            .spawn(move || with_env(&globals, |env| finish_drain(env, &owned, None)))?;
        self.running.push(Drain {
            component: component.name.clone(),
            thread,
            then,
        });
        Ok(())
    }

    /// Whether a drain that will report a status (a stop's) runs for `component`.
    pub fn stopping(&self, component: &str) -> bool {
        self.running
            .iter()
            .any(|d| d.component == component && d.then.is_some())
    }

    /// Whether any drain runs for `component`.
    pub fn draining(&self, component: &str) -> bool {
        self.running.iter().any(|d| d.component == component)
    }

    /// The drains of `component` no longer report a status when they end (a kill or a start
    /// overtook the stop they belong to).
    pub fn forget_status(&mut self, component: &str) {
        for drain in self.running.iter_mut().filter(|d| d.component == component) {
            drain.then = None;
        }
    }

    /// The drains that have ended since the last call.
    pub fn reap(&mut self) -> Vec<Ended> {
        let (ended, running) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|d| d.thread.is_finished());
        self.running = running;
        ended
            .into_iter()
            .map(|drain: Drain| Ended {
                component: drain.component,
                result: drain
                    .thread
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the drain thread panicked"))),
                then: drain.then,
            })
            .collect()
    }
}
