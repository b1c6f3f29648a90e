//! An in-memory [`Conntrack`] for unit tests: a table the test controls, scripted events, and a
//! record of what was asked (kube-proxy tests its proxier against `conntrack.NewFake` the same
//! way). Real-kernel tests in `tests/` cover the kernel itself.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;

use super::{Change, Conntrack, Events, Flow, FlowKey, FlowState};

/// One scripted step: change the table, then queue these events.
type Step = Box<dyn FnOnce(&mut Vec<Flow>) -> Vec<Events>>;

#[derive(Default)]
pub struct FakeConntrack {
    /// What the kernel holds now.
    pub table: Vec<Flow>,
    /// Played one per `events()` call; after the last, every call is `Idle`.
    steps: VecDeque<Step>,
    /// Events queued but not yet read: `discard_queued` drops them.
    pub queued: VecDeque<Events>,
    /// Every call, in order, for tests that care about the sequence.
    pub calls: Vec<String>,
    /// Entries `expire` removed.
    pub expired: Vec<Flow>,
}

impl FakeConntrack {
    pub fn with_table(table: Vec<Flow>) -> Self {
        FakeConntrack {
            table,
            ..FakeConntrack::default()
        }
    }

    /// Script the next `events()` call: `step` may change the table and says what is queued
    /// (the call returns the first of it).
    pub fn then(mut self, step: impl FnOnce(&mut Vec<Flow>) -> Vec<Events> + 'static) -> Self {
        self.steps.push_back(Box::new(step));
        self
    }

    /// Whether every scripted step was played.
    pub fn played_all(&self) -> bool {
        self.steps.is_empty()
    }
}

/// A DNAT'd flow from client 10.0.2.2:`port` to the host's 10.0.2.1:80, answered by `backend`
/// (address:port); its id is the client port.
pub fn dnat_flow(port: u16, backend: &str, state: FlowState) -> Flow {
    Flow {
        id: Some(u32::from(port)),
        protocol: crate::ports::Protocol::Tcp,
        client: format!("10.0.2.2:{port}").parse().expect("client"),
        destination: "10.0.2.1:80".parse().expect("destination"),
        backend: backend.parse().expect("backend address:port"),
        reply_to: format!("10.0.2.2:{port}").parse().expect("client"),
        zone: 0,
        state,
        timeout_secs: None,
        status: 1 << 5,
        bytes: None,
        start_ns: None,
    }
}

/// An event saying `change`.
pub fn event(change: Change) -> Events {
    Events::Changes(vec![change])
}

impl Conntrack for FakeConntrack {
    fn dump(&mut self) -> Result<Vec<Flow>> {
        self.calls.push("dump".into());
        Ok(self.table.clone())
    }

    fn dump_replies_from(&mut self, address: IpAddr) -> Result<Vec<Flow>> {
        self.calls.push(format!("dump {address}"));
        Ok(self
            .table
            .iter()
            .filter(|f| f.backend.ip() == address)
            .cloned()
            .collect())
    }

    fn lookup(&mut self, key: FlowKey) -> Result<Option<Flow>> {
        self.calls.push("lookup".into());
        Ok(self.table.iter().find(|f| f.key() == key).cloned())
    }

    fn expire(&mut self, flow: &Flow) -> Result<bool> {
        self.calls.push("expire".into());
        // As the kernel does: find the entry by reply tuple and zone. Expired, it is gone for
        // every later lookup and dump.
        let found = self.table.iter().position(|f| {
            f.zone == flow.zone && f.backend == flow.backend && f.reply_to == flow.reply_to
        });
        Ok(match found {
            Some(index) => {
                self.expired.push(self.table.remove(index));
                true
            }
            None => false,
        })
    }

    fn subscribe(&mut self, backends: &[IpAddr]) -> Result<()> {
        let list: Vec<String> = backends.iter().map(ToString::to_string).collect();
        self.calls.push(format!("subscribe {}", list.join(",")));
        Ok(())
    }

    fn events(&mut self, _timeout: Duration) -> Result<Events> {
        if let Some(step) = self.steps.pop_front() {
            let events = step(&mut self.table);
            self.queued.extend(events);
        }
        match self.queued.pop_front() {
            Some(events) => Ok(events),
            None => {
                // Idle: let real time pass a little, as the kernel's wait would.
                std::thread::sleep(Duration::from_millis(1));
                Ok(Events::Idle)
            }
        }
    }

    fn discard_queued(&mut self) -> Result<()> {
        self.calls.push("discard".into());
        self.queued.clear();
        Ok(())
    }
}
