//! The kernel's connection tracking table, read through ctnetlink: a dump of the flows that
//! exist now, one entry looked up or expired, and NEW/UPDATE/DESTROY events that say the moment
//! one ends. No `/proc` parsing and no `conntrack` binary.
//!
//! Split by concern: [`flow`] (the model), [`decode`] (what the kernel sends), [`request`] (what handoff asks),
//! [`socket`] (requests and the event subscription), [`sysctl`] (timeouts and event delivery).
//! The drain and the retirement talk to the [`Conntrack`] trait, so that their decisions can be
//! tested against [`fake::FakeConntrack`] as well as against the kernel.

mod decode;
pub mod filter;
mod flow;
mod request;
mod socket;
mod sysctl;

#[cfg(test)]
pub mod fake;

pub use decode::{decode, decode_datagram, Batch};
pub use flow::{Change, Flow, FlowKey, FlowState};
pub use request::{dump_request, expire_request, lookup_request};
pub use socket::{
    dump, dump_replies_from, expire, lookup, run_dump, EventStream, Events, Netlink, EVENT_RCVBUF,
};
pub use sysctl::{ensure_events_for_new_flows_once, EventsSetting, StateTimeouts};

use anyhow::Result;
use std::time::Duration;

/// What the drain and the retirement need of the kernel's conntrack.
pub trait Conntrack {
    /// Every TCP and UDP flow now, both families, all states.
    fn dump(&mut self) -> Result<Vec<Flow>>;
    /// The TCP and UDP flows whose reply comes from `address`, all states (the kernel filters
    /// where it can: one backend's flows without copying the whole table).
    fn dump_replies_from(&mut self, address: std::net::IpAddr) -> Result<Vec<Flow>>;
    /// One entry now, by zone and original tuple; `None` when it is gone.
    fn lookup(&mut self, key: FlowKey) -> Result<Option<Flow>>;
    /// Expire one entry now, found by its reply tuple and zone; `false` when it was already
    /// gone.
    fn expire(&mut self, flow: &Flow) -> Result<bool>;
    /// Start receiving events about flows answered by `backends` (called before the first
    /// dump, so that nothing ending in between is missed).
    fn subscribe(&mut self, backends: &[std::net::IpAddr]) -> Result<()>;
    /// Wait up to `timeout` for events and return all that are queued.
    fn events(&mut self, timeout: Duration) -> Result<Events>;
    /// Drop every queued event: after an overrun they are older than the next dump, and
    /// replaying them on top of it could resurrect a flow or end one that lives.
    fn discard_queued(&mut self) -> Result<()>;
}
