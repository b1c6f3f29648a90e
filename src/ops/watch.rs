//! Waiting for draining backends to lose their last live flow.
//!
//! A flow belongs to a draining backend when conntrack shows it DNAT'd from one of the
//! component's external ports to that backend's address and port. The watcher subscribes to
//! conntrack events *before* it dumps the table, so no flow can end unseen in between; after
//! that it is driven by events (a backend is declared drained within one event of its last
//! flow ending), with a periodic dump as a safety net and a full resync when the kernel
//! reports that events were dropped.
//!
//! A flow leaves the tracked set only when the kernel confirms it: an event saying that a
//! tracked key ended is checked with a lookup. A key (zone and original tuple) is not unique
//! over time — a client that reuses a tuple gets a new entry, with the same id as often as not
//! — so an event about an earlier use of the tuple (a late DESTROY, redelivered by the kernel)
//! must not end a newer flow that still lives.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::kernel::conntrack::{Change, Conntrack, Events, Flow, FlowKey};
use crate::state::{now_ms, BackendRecord};

/// How often the table is dumped again even though events are flowing: a safety net for flows
/// that carry no event extension (created before events were enabled).
const RESYNC_EVERY: Duration = Duration::from_secs(5);
/// Longest wait between progress updates.
const TICK: Duration = Duration::from_millis(500);
/// How often the flows still tracked are looked up one by one: if an event was lost (a
/// receive buffer overrun under heavy churn, an entry without the event extension), the drain
/// still ends within about this long, at a cost bounded by the flows left, not the table.
const RECHECK_EVERY: Duration = Duration::from_secs(1);
/// Above this many live flows the per-flow lookups are left to the periodic dump.
const RECHECK_LIMIT: usize = 256;

/// Does `flow` go to the draining `backend` (at either of its addresses) through one of its
/// external ports?
pub fn belongs(flow: &Flow, backend: &BackendRecord) -> bool {
    flow.is_dnat()
        && backend.is_at(flow.backend.ip())
        && backend.ports.iter().any(|p| {
            p.protocol == flow.protocol
                && p.external == flow.destination.port()
                && p.backend == flow.backend.port()
        })
}

/// Every flow answered from one of `backend`'s addresses (one dump per address, filtered by
/// the kernel where it can).
pub fn dump_flows_of(conntrack: &mut dyn Conntrack, backend: &BackendRecord) -> Result<Vec<Flow>> {
    let mut flows = Vec::new();
    for address in backend.addresses() {
        flows.extend(conntrack.dump_replies_from(address)?);
    }
    Ok(flows)
}

/// The live flows of `backend` among `flows`.
pub fn live_flows<'a>(flows: &'a [Flow], backend: &BackendRecord) -> Vec<&'a Flow> {
    flows
        .iter()
        .filter(|f| f.is_live() && belongs(f, backend))
        .collect()
}

/// A draining backend and the moment after which it is given up on (drainTimeout).
#[derive(Debug, Clone)]
pub struct Target {
    pub backend: BackendRecord,
    pub give_up_at_ms: u64,
}

/// How a wait ended, per backend.
#[derive(Debug, Default)]
pub struct Outcome {
    /// No live flow left.
    pub drained: Vec<BackendRecord>,
    /// drainTimeout passed; these flows were still live.
    pub given_up: Vec<(BackendRecord, Vec<Flow>)>,
    /// The caller's timeout expired first; these flows are still live.
    pub still_open: Vec<(BackendRecord, Vec<Flow>)>,
}

/// Receives the number of live flows left whenever it changes (and on each tick).
pub trait Progress {
    fn update(&mut self, remaining: usize, waited: Duration);
}

struct Watch {
    targets: Vec<Target>,
    /// Live flows by key, with the index of the target they belong to.
    live: HashMap<FlowKey, (usize, Flow)>,
}

impl Watch {
    fn target_of(&self, flow: &Flow) -> Option<usize> {
        self.targets.iter().position(|t| belongs(flow, &t.backend))
    }

    /// Start over from the kernel: one dump per draining address, filtered by the kernel.
    fn resync(&mut self, conntrack: &mut dyn Conntrack) -> Result<()> {
        let mut addresses: Vec<IpAddr> = self
            .targets
            .iter()
            .flat_map(|t| t.backend.addresses())
            .collect();
        addresses.sort();
        addresses.dedup();
        self.live.clear();
        for address in addresses {
            for flow in conntrack.dump_replies_from(address)? {
                self.track(flow);
            }
        }
        Ok(())
    }

    /// Track `flow` if it is live and belongs to a target; forget its key otherwise.
    fn track(&mut self, flow: Flow) {
        match self.target_of(&flow) {
            Some(index) if flow.is_live() => {
                self.live.insert(flow.key(), (index, flow));
            }
            _ => {
                self.live.remove(&flow.key());
            }
        }
    }

    /// Apply one event. A flow appearing is taken as it is; a tracked key said to have ended
    /// is looked up first (see the module comment).
    fn observe(&mut self, conntrack: &mut dyn Conntrack, change: Change) -> Result<()> {
        match change {
            Change::Present(flow) if flow.is_live() => {
                if self.target_of(&flow).is_some() {
                    self.track(flow);
                }
                Ok(())
            }
            Change::Present(flow) | Change::Destroyed(flow) => {
                let key = flow.key();
                if self.live.contains_key(&key) {
                    self.recheck_one(conntrack, key)?;
                }
                Ok(())
            }
        }
    }

    fn recheck_one(&mut self, conntrack: &mut dyn Conntrack, key: FlowKey) -> Result<()> {
        match conntrack.lookup(key)? {
            Some(flow) => self.track(flow),
            None => {
                self.live.remove(&key);
            }
        }
        Ok(())
    }

    /// Look each tracked flow up; drop the ones that ended or are gone.
    fn recheck(&mut self, conntrack: &mut dyn Conntrack) -> Result<()> {
        if self.live.len() > RECHECK_LIMIT {
            return Ok(());
        }
        let keys: Vec<FlowKey> = self.live.keys().copied().collect();
        for key in keys {
            self.recheck_one(conntrack, key)?;
        }
        Ok(())
    }

    fn flows_of(&self, index: usize) -> Vec<Flow> {
        let mut flows: Vec<Flow> = self
            .live
            .values()
            .filter(|(i, _)| *i == index)
            .map(|(_, f)| f.clone())
            .collect();
        flows.sort_by_key(|f| f.client);
        flows
    }
}

/// Wait until every target has drained or been given up on, or `timeout` expires.
pub fn wait(
    conntrack: &mut dyn Conntrack,
    targets: Vec<Target>,
    timeout: Option<Duration>,
    progress: &mut dyn Progress,
) -> Result<Outcome> {
    let started = Instant::now();
    let mut addresses: Vec<IpAddr> = targets.iter().flat_map(|t| t.backend.addresses()).collect();
    addresses.sort();
    addresses.dedup();
    conntrack.subscribe(&addresses)?;
    let mut watch = Watch {
        targets,
        live: HashMap::new(),
    };
    watch.resync(conntrack)?;
    let mut last_resync = Instant::now();
    let mut last_recheck = Instant::now();
    let mut finished = vec![false; watch.targets.len()];
    let mut outcome = Outcome::default();
    loop {
        let now = now_ms();
        for (index, target) in watch.targets.iter().enumerate() {
            if finished[index] {
                continue;
            }
            let flows = watch.flows_of(index);
            if flows.is_empty() {
                outcome.drained.push(target.backend.clone());
                finished[index] = true;
            } else if now >= target.give_up_at_ms {
                outcome.given_up.push((target.backend.clone(), flows));
                finished[index] = true;
            }
        }
        let remaining: usize = (0..watch.targets.len())
            .filter(|i| !finished[*i])
            .map(|i| watch.flows_of(i).len())
            .sum();
        progress.update(remaining, started.elapsed());
        if finished.iter().all(|f| *f) {
            return Ok(outcome);
        }
        let mut pause = TICK;
        if let Some(timeout) = timeout {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                for (index, target) in watch.targets.iter().enumerate() {
                    if !finished[index] {
                        outcome
                            .still_open
                            .push((target.backend.clone(), watch.flows_of(index)));
                    }
                }
                return Ok(outcome);
            }
            pause = pause.min(left);
        }
        let next_give_up = watch
            .targets
            .iter()
            .enumerate()
            .filter(|(i, _)| !finished[*i])
            .map(|(_, t)| t.give_up_at_ms.saturating_sub(now))
            .min()
            .unwrap_or(u64::MAX);
        pause = pause.min(Duration::from_millis(next_give_up.max(1)));
        match conntrack.events(pause)? {
            Events::Changes(changes) => {
                for change in changes {
                    // A failed lookup only loses the shortcut: the recheck and the periodic
                    // dump still follow.
                    if let Err(error) = watch.observe(conntrack, change) {
                        eprintln!("handoff: warning: looking a flow up failed: {error:#}");
                    }
                }
            }
            Events::Idle => {}
            Events::Overrun => {
                // What is still queued is older than the dump that follows.
                conntrack.discard_queued()?;
                watch.resync(conntrack)?;
                last_resync = Instant::now();
            }
        }
        if last_resync.elapsed() >= RESYNC_EVERY {
            watch.resync(conntrack)?;
            last_resync = Instant::now();
        } else if last_recheck.elapsed() >= RECHECK_EVERY {
            if let Err(error) = watch.recheck(conntrack) {
                eprintln!("handoff: warning: looking flows up failed: {error:#}");
            }
            last_recheck = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::conntrack::fake::{dnat_flow, event, FakeConntrack};
    use crate::kernel::conntrack::FlowState;

    use crate::ops::testkit::{old_record as backend, NEW, OLD};

    fn with_state(flow: &Flow, state: FlowState) -> Flow {
        Flow {
            state,
            ..flow.clone()
        }
    }

    struct Silent;
    impl Progress for Silent {
        fn update(&mut self, _: usize, _: Duration) {}
    }

    fn drain(fake: &mut FakeConntrack) -> Outcome {
        let target = Target {
            backend: backend(),
            give_up_at_ms: u64::MAX,
        };
        wait(
            fake,
            vec![target],
            Some(Duration::from_secs(10)),
            &mut Silent,
        )
        .unwrap()
    }

    #[test]
    fn only_dnat_flows_through_the_components_ports_belong() {
        let b = backend();
        let mut f = dnat_flow(40000, OLD, FlowState::Established);
        assert!(belongs(&f, &b));
        // Straight to the backend, not through us.
        f.status = 0;
        assert!(!belongs(&f, &b));
        // Another external port, another backend port, another address.
        let mut f = dnat_flow(40000, OLD, FlowState::Established);
        f.destination = "10.0.2.1:81".parse().unwrap();
        assert!(!belongs(&f, &b));
        assert!(!belongs(
            &dnat_flow(40000, "10.0.1.11:9090", FlowState::Established),
            &b
        ));
        assert!(!belongs(&dnat_flow(40000, NEW, FlowState::Established), &b));
        // The same port numbers over UDP are another port.
        let mut f = dnat_flow(40000, OLD, FlowState::Udp);
        f.protocol = crate::config::Protocol::Udp;
        assert!(!belongs(&f, &b));
    }

    #[test]
    fn a_udp_flow_is_live_until_its_entry_goes() {
        let mut b = backend();
        b.ports[0].protocol = crate::config::Protocol::Udp;
        let mut f = dnat_flow(40000, OLD, FlowState::Udp);
        f.protocol = crate::config::Protocol::Udp;
        assert!(belongs(&f, &b));
        assert_eq!(live_flows(std::slice::from_ref(&f), &b).len(), 1);
    }

    #[test]
    fn finished_flows_are_not_live() {
        let flows = vec![
            dnat_flow(40000, OLD, FlowState::Established),
            dnat_flow(40001, OLD, FlowState::TimeWait),
        ];
        assert_eq!(live_flows(&flows, &backend()).len(), 1);
    }

    #[test]
    fn the_drain_subscribes_to_its_backends_before_it_dumps() {
        let mut fake = FakeConntrack::default();
        let outcome = drain(&mut fake);
        assert_eq!(outcome.drained, vec![backend()]);
        assert_eq!(fake.calls[..2], ["subscribe 10.0.1.11", "dump 10.0.1.11"]);
    }

    #[test]
    fn a_backend_drains_when_its_last_flow_ends() {
        let open = dnat_flow(40000, OLD, FlowState::Established);
        let closing = with_state(&open, FlowState::TimeWait);
        let mut fake = FakeConntrack::with_table(vec![open.clone()]).then(move |table| {
            table[0] = closing.clone();
            vec![event(Change::Present(closing))]
        });
        assert_eq!(drain(&mut fake).drained, vec![backend()]);
        assert!(fake.played_all());
    }

    #[test]
    fn a_late_destroy_of_an_earlier_use_of_a_tuple_does_not_end_the_flow_that_reuses_it() {
        // The client reused port 40000 while OLD still took new connections: the earlier
        // entry (TIME_WAIT) was destroyed and a new one, with the same tuple and the same id,
        // carries a live request. The earlier entry's DESTROY reaches us late.
        let earlier = dnat_flow(40000, OLD, FlowState::TimeWait);
        let reused = dnat_flow(40000, OLD, FlowState::Established);
        let reused_done = with_state(&reused, FlowState::TimeWait);
        let mut fake = FakeConntrack::with_table(vec![reused.clone()])
            .then(move |_| vec![event(Change::Destroyed(earlier))])
            .then(move |table| {
                table[0] = reused_done.clone();
                vec![event(Change::Present(reused_done))]
            });
        let outcome = drain(&mut fake);
        assert_eq!(outcome.drained, vec![backend()]);
        assert!(
            fake.played_all(),
            "the drain ended on the late DESTROY while the reusing flow was live"
        );
    }

    #[test]
    fn events_queued_before_an_overrun_are_dropped_not_replayed_over_the_new_dump() {
        // The flow ended while the socket overflowed; a stale "live" event for it was still
        // queued. Replayed after the fresh dump, it would keep the drain waiting for a flow
        // that is gone until the next per-flow recheck.
        let open = dnat_flow(40000, OLD, FlowState::Established);
        let stale = open.clone();
        let mut fake = FakeConntrack::with_table(vec![open]).then(move |table| {
            table.clear();
            vec![Events::Overrun, event(Change::Present(stale))]
        });
        let outcome = drain(&mut fake);
        assert_eq!(outcome.drained, vec![backend()]);
        assert!(fake.calls.contains(&"discard".to_string()));
        assert!(
            !fake.calls.contains(&"lookup".to_string()),
            "the drain waited for a recheck: the stale event was replayed ({:?})",
            fake.calls
        );
    }

    #[test]
    fn flows_in_different_zones_are_different_flows() {
        let in_zone_0 = dnat_flow(40000, OLD, FlowState::Established);
        let in_zone_5 = Flow {
            zone: 5,
            ..in_zone_0.clone()
        };
        let mut fake = FakeConntrack::with_table(vec![in_zone_0, in_zone_5]);
        let mut watch = Watch {
            targets: vec![Target {
                backend: backend(),
                give_up_at_ms: u64::MAX,
            }],
            live: HashMap::new(),
        };
        watch.resync(&mut fake).unwrap();
        assert_eq!(watch.flows_of(0).len(), 2);
    }
}
