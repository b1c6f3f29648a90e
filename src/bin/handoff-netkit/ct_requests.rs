//! `ct-requests`: who deleted or expired which conntrack entry. One JSON line per entry that a
//! userspace request deleted or changed — dockerd clearing a stopped container's address,
//! `conntrack -D`, handoff's own clean-up (which expires entries) — with the entry's state and
//! tuples, the requester's netlink port id and, when it can still be found, its program name.
//!
//! This is the evidence behind the update stall (README, "Known limits"): a live entry of the
//! *new* backend deleted by dockerd. `conntrack -E` can show the same, but it receives every
//! event of the host and loses some under load; here the kernel passes only the events that a
//! request caused (see `handoff::kernel::conntrack::filter::requested_by_userspace`), a handful a
//! second.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use handoff::kernel::conntrack::{self, filter, Change};
use handoff::kernel::nfnetlink;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner};
use nix::sys::socket::{setsockopt, sockopt};
use serde::Serialize;

use crate::{install_stop_handler, stop_requested, CtRequestsArgs};

/// ctnetlink's UPDATE and DESTROY event groups (linux/netfilter/nfnetlink.h).
const NFNLGRP_CONNTRACK_UPDATE: u32 = 2;
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;
/// Netlink protocol number of NETLINK_NETFILTER, as /proc/net/netlink lists it.
const NETLINK_NETFILTER: &str = "12";

#[derive(Serialize)]
struct Requested {
    at_us: u64,
    /// `deleted`, `expired` (timeout set to 0) or `changed`.
    action: &'static str,
    portid: u32,
    program: String,
    state: &'static str,
    id: Option<u32>,
    zone: u16,
    client: String,
    destination: String,
    backend: String,
}

pub(crate) fn ct_requests(args: &CtRequestsArgs) -> Result<()> {
    install_stop_handler()?;
    let socket = nfnetlink::open()?;
    filter::attach(&socket, &filter::requested_by_userspace())
        .context("filtering conntrack events")?;
    for group in [NFNLGRP_CONNTRACK_UPDATE, NFNLGRP_CONNTRACK_DESTROY] {
        socket
            .add_membership(group)
            .context("subscribing to conntrack events (root needed)")?;
    }
    let _ = setsockopt(&socket, sockopt::RcvBufForce, &(8usize << 20));
    socket
        .set_non_blocking(true)
        .context("making the socket non-blocking")?;
    if let Some(path) = &args.ready_file {
        fs::write(path, "ready").with_context(|| format!("writing {}", path.display()))?;
    }
    let mut programs: HashMap<u32, String> = HashMap::new();
    let mut buffer = Vec::new();
    let mut out = io::stdout().lock();
    while !stop_requested() {
        if !nfnetlink::wait_readable(&socket, Duration::from_millis(200))? {
            continue;
        }
        loop {
            match nfnetlink::receive(&socket, &mut buffer) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    eprintln!("handoff-netkit: ct-requests: events were lost (ENOBUFS)");
                    continue;
                }
                Err(e) => return Err(anyhow::Error::new(e).context("reading conntrack events")),
            }
            let at_us = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0);
            for message in nfnetlink::parse_datagram(&buffer).into_iter().flatten() {
                let portid = message.header.port_number;
                let NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::Conntrack(ct),
                    ..
                }) = &message.payload
                else {
                    continue;
                };
                let (action, flow) = match conntrack::decode(ct) {
                    Some(Change::Destroyed(flow)) => ("deleted", flow),
                    Some(Change::Present(flow)) if flow.timeout_secs == Some(0) => {
                        ("expired", flow)
                    }
                    Some(Change::Present(flow)) => ("changed", flow),
                    None => continue,
                };
                let client = flow.client.to_string();
                if args
                    .client_prefix
                    .as_deref()
                    .is_some_and(|prefix| !client.starts_with(prefix))
                {
                    continue;
                }
                let program = programs
                    .entry(portid)
                    .or_insert_with(|| program_of(portid))
                    .clone();
                let line = serde_json::to_string(&Requested {
                    at_us,
                    action,
                    portid,
                    program,
                    state: flow.state.name(),
                    id: flow.id,
                    zone: flow.zone,
                    client,
                    destination: flow.destination.to_string(),
                    backend: flow.backend.to_string(),
                })?;
                writeln!(out, "{line}")?;
            }
            out.flush()?;
        }
    }
    Ok(())
}

/// The program holding the NETLINK_NETFILTER socket with port id `portid` (`"?"` when it is
/// gone): /proc/net/netlink maps the port id to a socket inode, /proc/*/fd to its holder.
fn program_of(portid: u32) -> String {
    let inode = fs::read_to_string("/proc/net/netlink")
        .ok()
        .and_then(|table| {
            table.lines().skip(1).find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.get(1) == Some(&NETLINK_NETFILTER)
                    && fields.get(2) == Some(&portid.to_string().as_str()))
                .then(|| fields.get(9).map(|inode| format!("socket:[{inode}]")))
                .flatten()
            })
        });
    let Some(inode) = inode else {
        return "?".to_string();
    };
    let holder = fs::read_dir("/proc").ok().and_then(|processes| {
        processes.flatten().find_map(|process| {
            let fds = fs::read_dir(process.path().join("fd")).ok()?;
            fds.flatten()
                .any(|fd| {
                    fs::read_link(fd.path())
                        .is_ok_and(|target| target.as_os_str() == inode.as_str())
                })
                .then(|| fs::read_to_string(process.path().join("comm")).ok())
                .flatten()
        })
    });
    holder.map_or_else(|| "?".to_string(), |name| name.trim().to_string())
}
