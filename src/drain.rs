//! Waiting for draining backends to lose their last live flow.
//!
//! A flow belongs to a draining backend when conntrack shows it DNAT'd from one of the
//! component's external ports to that backend's address and port. The watcher subscribes to
//! conntrack events *before* it dumps the table, so no flow can end unseen in between; after
//! that it is driven by events (a backend is declared drained within one event of its last
//! flow ending), with a periodic dump as a safety net and a full resync when the kernel
//! reports that events were dropped.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::conntrack::{self, Change, EventStream, Events, Flow, FlowKey};
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

/// Does `flow` go to the draining `backend` through one of its external ports?
pub fn belongs(flow: &Flow, backend: &BackendRecord) -> bool {
    flow.is_dnat()
        && *flow.backend.ip() == backend.address
        && backend
            .ports
            .iter()
            .any(|p| p.external == flow.destination.port() && p.backend == flow.backend.port())
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
    fn resync(&mut self) -> Result<()> {
        let flows = conntrack::dump()?;
        self.live.clear();
        for flow in flows {
            self.observe(Change::Present(flow));
        }
        Ok(())
    }

    fn observe(&mut self, change: Change) {
        let flow = change.flow();
        let Some(index) = self.targets.iter().position(|t| belongs(flow, &t.backend)) else {
            return;
        };
        match change {
            Change::Present(flow) if flow.is_live() => {
                self.live.insert(flow.key(), (index, flow));
            }
            Change::Present(flow) | Change::Destroyed(flow) => {
                self.live.remove(&flow.key());
            }
        }
    }

    /// Look each tracked flow up; drop the ones that ended or are gone.
    fn recheck(&mut self, socket: &netlink_sys::Socket) -> Result<()> {
        if self.live.len() > RECHECK_LIMIT {
            return Ok(());
        }
        let keys: Vec<FlowKey> = self.live.keys().copied().collect();
        for key in keys {
            match conntrack::lookup(socket, key)? {
                Some(flow) => self.observe(Change::Present(flow)),
                None => {
                    self.live.remove(&key);
                }
            }
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
    targets: Vec<Target>,
    timeout: Option<Duration>,
    progress: &mut dyn Progress,
) -> Result<Outcome> {
    let started = Instant::now();
    let mut events = EventStream::subscribe()?;
    let mut watch = Watch {
        targets,
        live: HashMap::new(),
    };
    watch.resync()?;
    let mut last_resync = Instant::now();
    let lookups = crate::nfnetlink::open()?;
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
        match events.wait(pause)? {
            Events::Changes(changes) => {
                for change in changes {
                    watch.observe(change);
                }
            }
            Events::Idle => {}
            Events::Overrun => {
                watch.resync()?;
                last_resync = Instant::now();
            }
        }
        if last_resync.elapsed() >= RESYNC_EVERY {
            watch.resync()?;
            last_resync = Instant::now();
        } else if last_recheck.elapsed() >= RECHECK_EVERY {
            // A failed lookup only loses the shortcut: the periodic dump still follows.
            if let Err(error) = watch.recheck(&lookups) {
                eprintln!("handoff: warning: looking flows up failed: {error:#}");
            }
            last_recheck = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PortPair;
    use crate::conntrack::TcpState;
    use std::net::Ipv4Addr;

    fn backend() -> BackendRecord {
        BackendRecord {
            address: Ipv4Addr::new(10, 0, 1, 11),
            ports: vec![PortPair {
                external: 80,
                backend: 8080,
            }],
            since_ms: 0,
            container: None,
        }
    }

    fn flow(destination: &str, backend: &str, state: TcpState, status: u32) -> Flow {
        Flow {
            id: None,
            client: "10.0.2.2:40000".parse().unwrap(),
            destination: destination.parse().unwrap(),
            backend: backend.parse().unwrap(),
            state,
            timeout_secs: None,
            status,
            bytes: None,
            start_ns: None,
        }
    }

    const DNAT: u32 = 1 << 5;

    #[test]
    fn only_dnat_flows_through_the_components_ports_belong() {
        let b = backend();
        assert!(belongs(
            &flow("10.0.2.1:80", "10.0.1.11:8080", TcpState::Established, DNAT),
            &b
        ));
        // Straight to the backend, not through us.
        assert!(!belongs(
            &flow("10.0.1.11:8080", "10.0.1.11:8080", TcpState::Established, 0),
            &b
        ));
        // Another external port, another backend port, another address.
        assert!(!belongs(
            &flow("10.0.2.1:81", "10.0.1.11:8080", TcpState::Established, DNAT),
            &b
        ));
        assert!(!belongs(
            &flow("10.0.2.1:80", "10.0.1.11:9090", TcpState::Established, DNAT),
            &b
        ));
        assert!(!belongs(
            &flow("10.0.2.1:80", "10.0.1.12:8080", TcpState::Established, DNAT),
            &b
        ));
    }

    #[test]
    fn finished_flows_are_not_live() {
        let flows = vec![
            flow("10.0.2.1:80", "10.0.1.11:8080", TcpState::Established, DNAT),
            flow("10.0.2.1:80", "10.0.1.11:8080", TcpState::TimeWait, DNAT),
        ];
        assert_eq!(live_flows(&flows, &backend()).len(), 1);
    }

    #[test]
    fn events_add_and_remove_flows() {
        let mut watch = Watch {
            targets: vec![Target {
                backend: backend(),
                give_up_at_ms: u64::MAX,
            }],
            live: HashMap::new(),
        };
        let open = flow("10.0.2.1:80", "10.0.1.11:8080", TcpState::Established, DNAT);
        watch.observe(Change::Present(open.clone()));
        assert_eq!(watch.flows_of(0).len(), 1);
        let mut closing = open.clone();
        closing.state = TcpState::TimeWait;
        watch.observe(Change::Present(closing));
        assert!(watch.flows_of(0).is_empty());
        watch.observe(Change::Present(open.clone()));
        watch.observe(Change::Destroyed(open));
        assert!(watch.flows_of(0).is_empty());
    }
}
