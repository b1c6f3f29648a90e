//! The sockets: one-shot requests (dump, lookup, expiry) and the event subscription.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use netlink_sys::Socket;
use nix::sys::socket::{getsockopt, setsockopt, sockopt};

use super::decode::decode_datagram;
use super::filter;
use super::flow::{Change, Flow, FlowKey};
use super::request::{dump_request, expire_request, lookup_request};
use super::Conntrack;
use crate::error::Failure;
use crate::kernel::nfnetlink;

/// Multicast groups of ctnetlink events (linux/netfilter/nfnetlink.h).
const NFNLGRP_CONNTRACK_NEW: u32 = 1;
const NFNLGRP_CONNTRACK_UPDATE: u32 = 2;
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;

/// Receive buffer for events: large, so that a burst of unrelated flows rarely overruns it.
pub const EVENT_RCVBUF: usize = 8 << 20;

/// Every TCP and UDP flow conntrack knows now, both families (all states).
pub fn dump() -> Result<Vec<Flow>> {
    run_dump(&dump_request(None))
}

/// The TCP and UDP flows whose reply comes from `address` (all states), filtered by the
/// kernel where it can (see [`dump_request`]) and here in any case.
pub fn dump_replies_from(address: IpAddr) -> Result<Vec<Flow>> {
    let mut flows = run_dump(&dump_request(Some(address)))?;
    flows.retain(|f| f.backend.ip() == address);
    Ok(flows)
}

/// Send a dump request (see [`dump_request`]) and decode every entry the kernel sends back,
/// as it sends them.
pub fn run_dump(request: &[u8]) -> Result<Vec<Flow>> {
    let socket = nfnetlink::open()?;
    socket.send(request, 0).map_err(|e| {
        Failure::host(format!(
            "cannot query conntrack ({e}); is the nf_conntrack module loaded?"
        ))
    })?;
    let mut flows = Vec::new();
    let mut buffer = Vec::with_capacity(nfnetlink::RECV_BUFFER);
    let mut skipped = 0;
    loop {
        nfnetlink::receive(&socket, &mut buffer).map_err(|e| {
            Failure::host(format!(
                "reading the conntrack table failed ({e}); is the nf_conntrack_netlink module \
                 available?"
            ))
        })?;
        let batch = decode_datagram(&buffer, &mut skipped)
            .map_err(|e| Failure::host(format!("cannot dump conntrack: {e:#}")))?;
        flows.extend(batch.changes.into_iter().filter_map(|change| match change {
            Change::Present(flow) => Some(flow),
            Change::Destroyed(_) => None,
        }));
        if batch.done {
            return Ok(flows);
        }
    }
}

/// Send one request and read its answer: the flows it carried, `None` when the kernel said
/// the entry does not exist (ENOENT).
fn ask(socket: &Socket, request: &[u8], doing: &str) -> Result<Option<Vec<Flow>>> {
    socket
        .send(request, 0)
        .with_context(|| format!("{doing}: sending the request"))?;
    if !nfnetlink::wait_readable(socket, Duration::from_secs(1))? {
        anyhow::bail!("{doing}: conntrack did not answer within 1 s");
    }
    let mut buffer = Vec::with_capacity(nfnetlink::RECV_BUFFER);
    nfnetlink::receive(socket, &mut buffer).with_context(|| format!("{doing}: reading"))?;
    let mut skipped = 0;
    match decode_datagram(&buffer, &mut skipped) {
        Ok(batch) => Ok(Some(
            batch
                .changes
                .into_iter()
                .filter_map(|change| match change {
                    Change::Present(flow) => Some(flow),
                    Change::Destroyed(_) => None,
                })
                .collect(),
        )),
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::raw_os_error)
                == Some(nix::libc::ENOENT) =>
        {
            Ok(None)
        }
        Err(error) => Err(error.context(doing.to_string())),
    }
}

/// The entry for one flow now, looked up by its zone and original tuple: `None` when conntrack
/// no longer has it. Costs one request per flow, whatever the size of the table.
pub fn lookup(socket: &Socket, key: FlowKey) -> Result<Option<Flow>> {
    Ok(
        ask(socket, &lookup_request(key), "looking up a conntrack entry")?
            .and_then(|flows| flows.into_iter().next()),
    )
}

/// Expire `flow`'s entry now, found by its reply tuple (see [`expire_request`]). `false` when
/// it was already gone.
pub fn expire(socket: &Socket, flow: &Flow) -> Result<bool> {
    Ok(ask(socket, &expire_request(flow), "expiring a conntrack entry")?.is_some())
}

/// What waiting for events produced.
#[derive(Debug)]
pub enum Events {
    Changes(Vec<Change>),
    /// Nothing arrived within the timeout.
    Idle,
    /// The kernel dropped events (receive buffer full): the caller must dump again.
    Overrun,
}

/// A subscription to conntrack NEW, UPDATE and DESTROY events.
pub struct EventStream {
    socket: Socket,
    buffer: Vec<u8>,
    skipped: usize,
}

impl EventStream {
    /// Subscribe to the events of flows answered by `backends` (all flows when empty). Subscribe
    /// before dumping, so that nothing ending in between is missed.
    ///
    /// The kernel filters (a socket filter, see [`filter`]): a host opening thousands of
    /// unrelated connections a second costs the drain nothing and cannot overrun its buffer.
    /// The buffer is forced to [`EVENT_RCVBUF`] (root may exceed `net.core.rmem_max`, which
    /// would otherwise cap it at a few hundred KiB).
    pub fn subscribe(backends: &[IpAddr]) -> Result<Self> {
        let socket = nfnetlink::open()?;
        if let Some(program) = filter::reply_source_in(backends) {
            filter::attach(&socket, &program).context("filtering conntrack events")?;
        }
        for group in [
            NFNLGRP_CONNTRACK_NEW,
            NFNLGRP_CONNTRACK_UPDATE,
            NFNLGRP_CONNTRACK_DESTROY,
        ] {
            socket.add_membership(group).map_err(|e| {
                Failure::host(format!(
                    "cannot subscribe to conntrack events ({e}); handoff must run as root"
                ))
            })?;
        }
        if setsockopt(&socket, sockopt::RcvBufForce, &EVENT_RCVBUF).is_err() {
            // Not root after all, or a kernel without it: a smaller buffer only means more
            // resyncs.
            let _ = socket.set_rx_buf_sz(EVENT_RCVBUF);
        }
        socket
            .set_non_blocking(true)
            .context("making the event socket non-blocking")?;
        Ok(EventStream {
            socket,
            buffer: Vec::with_capacity(nfnetlink::RECV_BUFFER),
            skipped: 0,
        })
    }

    /// The receive buffer the kernel granted, in bytes (it reports twice what was set: the
    /// other half is its own bookkeeping).
    pub fn receive_buffer(&self) -> Result<usize> {
        getsockopt(&self.socket, sockopt::RcvBuf).context("reading SO_RCVBUF")
    }

    /// Wait up to `timeout` for events and return all that are queued.
    pub fn wait(&mut self, timeout: Duration) -> Result<Events> {
        if !nfnetlink::wait_readable(&self.socket, timeout)? {
            return Ok(Events::Idle);
        }
        let mut changes = Vec::new();
        loop {
            match nfnetlink::receive(&self.socket, &mut self.buffer) {
                Ok(_) => {
                    let batch = decode_datagram(&self.buffer, &mut self.skipped)?;
                    changes.extend(batch.changes);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    return Ok(Events::Overrun)
                }
                Err(e) => return Err(anyhow::Error::new(e).context("reading conntrack events")),
            }
        }
        Ok(Events::Changes(changes))
    }

    /// Read and drop everything queued.
    pub fn discard_queued(&mut self) -> Result<()> {
        loop {
            match nfnetlink::receive(&self.socket, &mut self.buffer) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {}
                Err(e) => return Err(anyhow::Error::new(e).context("reading conntrack events")),
            }
        }
    }
}

/// The kernel's conntrack through ctnetlink: the real [`Conntrack`].
#[derive(Default)]
pub struct Netlink {
    requests: Option<Socket>,
    events: Option<EventStream>,
}

impl Netlink {
    pub fn new() -> Self {
        Netlink::default()
    }

    fn requests(&mut self) -> Result<&Socket> {
        if self.requests.is_none() {
            self.requests = Some(nfnetlink::open()?);
        }
        self.requests
            .as_ref()
            .context("the conntrack request socket")
    }

    fn stream(&mut self) -> Result<&mut EventStream> {
        self.events
            .as_mut()
            .context("conntrack events were read before subscribing")
    }
}

impl Conntrack for Netlink {
    fn dump(&mut self) -> Result<Vec<Flow>> {
        dump()
    }

    fn dump_replies_from(&mut self, address: IpAddr) -> Result<Vec<Flow>> {
        dump_replies_from(address)
    }

    fn lookup(&mut self, key: FlowKey) -> Result<Option<Flow>> {
        lookup(self.requests()?, key)
    }

    fn expire(&mut self, flow: &Flow) -> Result<bool> {
        expire(self.requests()?, flow)
    }

    fn subscribe(&mut self, backends: &[IpAddr]) -> Result<()> {
        self.events = Some(EventStream::subscribe(backends)?);
        Ok(())
    }

    fn events(&mut self, timeout: Duration) -> Result<Events> {
        self.stream()?.wait(timeout)
    }

    fn discard_queued(&mut self) -> Result<()> {
        self.stream()?.discard_queued()
    }
}
