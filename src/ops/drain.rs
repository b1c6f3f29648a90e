//! Finishing a drain: wait (see [`watch`](super::watch)) until the component's draining
//! backends have no live flow left, or are given up on at drainTimeout, then retire them; and
//! the clean-up of a retired backend's conntrack entries that makes retiring safe for the
//! connections that went elsewhere.

use std::time::Duration;

use anyhow::Result;

use super::retire::{self, Retired};
use super::watch::{self, belongs, dump_flows_of, Progress, Target};
use super::Env;
use crate::config::{Component, TerminationCheckKind};
use crate::kernel::conntrack::{Conntrack, Flow};
use crate::state::BackendRecord;

/// How a drain ended, and what retiring its backends did.
#[derive(Debug, Default)]
pub struct DrainReport {
    /// Backends with no live flow left.
    pub drained: Vec<BackendRecord>,
    /// Backends given up on at drainTimeout, with the flows they still had.
    pub given_up: Vec<(BackendRecord, Vec<Flow>)>,
    /// Backends the caller's `--timeout` left waiting, with their flows: not retired.
    pub still_open: Vec<(BackendRecord, Vec<Flow>)>,
    /// What retiring the drained and given-up backends did.
    pub retired: Vec<Retired>,
    pub drain_timeout_ms: u64,
}

impl DrainReport {
    pub fn nothing_was_draining(&self) -> bool {
        self.drained.is_empty() && self.given_up.is_empty() && self.still_open.is_empty()
    }
}

/// Passes a drain's progress on to the reporter.
struct Reported<'e, 'a> {
    env: &'e Env<'a>,
    component: &'e str,
}

impl Progress for Reported<'_, '_> {
    fn update(&mut self, remaining: usize, waited: Duration) {
        self.env
            .reporter
            .drain_progress(self.component, remaining, waited);
    }
}

/// Wait for the draining backends of `component` (up to `timeout`, when given), then retire
/// the drained and the given-up ones. The wait holds no lock; retiring takes it briefly.
///
/// gantry's `terminationChecks` decide whether there is anything to wait for: with a
/// `connection` check (the default) the drain waits for the flows to end; with none (`[]`)
/// the old backends are retired at once, their flows listed as given up.
pub fn finish_drain(
    env: &Env,
    component: &Component,
    timeout: Option<Duration>,
) -> Result<DrainReport> {
    let draining = env.draining_of(&component.name)?;
    let drain_timeout_ms = component.drain_timeout_ms();
    let mut report = DrainReport {
        drain_timeout_ms,
        ..DrainReport::default()
    };
    if draining.is_empty() {
        return Ok(report);
    }
    let waits = component
        .termination_checks
        .iter()
        .any(|check| check.kind == TerminationCheckKind::Connection);
    let targets: Vec<Target> = draining
        .iter()
        .map(|backend| Target {
            backend: backend.clone(),
            give_up_at_ms: if waits {
                backend.since_ms.saturating_add(drain_timeout_ms)
            } else {
                0
            },
        })
        .collect();
    let mut progress = Reported {
        env,
        component: &component.name,
    };
    let outcome = {
        let mut conntrack = env.conntrack();
        watch::wait(conntrack.as_mut(), targets, timeout, &mut progress)?
    };
    let finished: Vec<BackendRecord> = outcome
        .drained
        .iter()
        .chain(outcome.given_up.iter().map(|(b, _)| b))
        .cloned()
        .collect();
    if !finished.is_empty() {
        report.retired = retire::retire_finished(env, component, &finished, true)?;
    }
    report.drained = outcome.drained;
    report.given_up = outcome.given_up;
    report.still_open = outcome.still_open;
    Ok(report)
}

/// What [`forget_flows`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Forgotten {
    /// Entries expired.
    pub expired: usize,
    /// Entries that were gone by the time their expiry arrived.
    pub already_gone: usize,
    /// Live flows left in place (`include_live` was false).
    pub live_kept: usize,
}

/// Set to `1` to skip [`forget_flows`]: only for `scripts/update-stall-proof.sh`, whose control
/// arms show what happens without it, and only in a binary built with the `test-hooks` feature
/// (the product ignores it).
#[cfg(feature = "test-hooks")]
const SKIP_FORGET_ENV: &str = "HANDOFF_UNSAFE_SKIP_CONNTRACK_CLEANUP";

/// Expire the conntrack entries of a backend that is about to be retired, so that nothing else
/// later deletes them by a tuple that a client has reused since.
///
/// Why: when a container stops, dockerd deletes the entries of its address by their *original*
/// tuple (client -> host:port) and the id it dumped. A client reusing that tuple for a new
/// connection (Linux walks its ephemeral ports, so one client's tuple towards one host port
/// comes back after a few thousand connections) gets a new entry with the same original tuple
/// — and often the same id, which hashes the entry's memory address and original tuple, and
/// the allocator hands the freed entry's memory straight back. dockerd then deletes the new
/// connection, which went to the new backend, and its packets stop being translated: the
/// request hangs. Expired here first, found by their *reply* tuple (which names the retired
/// backend and so cannot match a connection that went elsewhere), the entries are gone from
/// dockerd's dump. Expired rather than deleted: see [`crate::kernel::conntrack::expire_request`].
///
/// Only flows of `backend` through its external ports are touched. Finished ones (TIME_WAIT,
/// CLOSE) always; live ones only with `include_live` (a backend retired without draining):
/// otherwise flows given up on after drainTimeout keep their binding for the stop's grace.
pub fn forget_flows(
    conntrack: &mut dyn Conntrack,
    backend: &BackendRecord,
    include_live: bool,
) -> Result<Forgotten> {
    let mut forgotten = Forgotten::default();
    #[cfg(feature = "test-hooks")]
    if std::env::var_os(SKIP_FORGET_ENV).is_some_and(|v| v == "1") {
        return Ok(forgotten);
    }
    for flow in dump_flows_of(conntrack, backend)? {
        if !belongs(&flow, backend) {
            continue;
        }
        if flow.is_live() && !include_live {
            forgotten.live_kept += 1;
        } else if conntrack.expire(&flow)? {
            forgotten.expired += 1;
        } else {
            forgotten.already_gone += 1;
        }
    }
    Ok(forgotten)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::conntrack::fake::{dnat_flow, FakeConntrack};
    use crate::kernel::conntrack::FlowState;

    use crate::ops::testkit::{old_record as backend, NEW, OLD};

    #[test]
    fn forgetting_a_retired_backend_expires_its_finished_entries_by_reply_tuple_only() {
        // Port 40000: the retired backend's TIME_WAIT entry, and the same client tuple reused
        // since for a live request to the new backend (same original tuple, same id).
        let finished = dnat_flow(40000, OLD, FlowState::TimeWait);
        let reused = dnat_flow(40000, NEW, FlowState::Established);
        let live = dnat_flow(40001, OLD, FlowState::Established);
        let mut unrelated = dnat_flow(40002, OLD, FlowState::TimeWait);
        unrelated.destination = "10.0.2.1:81".parse().unwrap();
        let table = vec![
            finished.clone(),
            reused.clone(),
            live.clone(),
            unrelated.clone(),
        ];
        let mut fake = FakeConntrack::with_table(table);
        let forgotten = forget_flows(&mut fake, &backend(), false).unwrap();
        assert_eq!(
            forgotten,
            Forgotten {
                expired: 1,
                already_gone: 0,
                live_kept: 1
            }
        );
        assert_eq!(fake.expired, vec![finished]);
        let forgotten = forget_flows(&mut fake, &backend(), true).unwrap();
        assert_eq!(
            forgotten.expired, 1,
            "without a drain the live flow goes too"
        );
        assert_eq!(fake.table, vec![reused, unrelated]);
    }
}
