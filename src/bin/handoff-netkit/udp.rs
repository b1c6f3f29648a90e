//! UDP: `serve --udp ADDR` answers every datagram with the backend's name (as a DNS or syslog
//! backend would answer, one datagram each way), and `udp-load` sends queries and counts the
//! answers per backend. Each *session* is one socket, so one conntrack flow: with
//! `--per-session 1` every query is a new flow (a new DNAT decision), with more the session
//! keeps its flow, and its backend, for that many queries.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::{print_json, UdpLoadArgs};

/// Answer each datagram on `listen` with `name`, on a thread of its own.
pub(crate) fn spawn_server(listen: SocketAddr, name: Arc<str>) -> Result<()> {
    let socket = UdpSocket::bind(listen).with_context(|| format!("binding udp {listen}"))?;
    thread::Builder::new()
        .name("udp".into())
        .spawn(move || {
            let mut buffer = [0u8; 1500];
            loop {
                match socket.recv_from(&mut buffer) {
                    Ok((_, peer)) => {
                        if let Err(err) = socket.send_to(name.as_bytes(), peer) {
                            eprintln!("handoff-netkit: udp answer to {peer}: {err}");
                        }
                    }
                    Err(err) => eprintln!("handoff-netkit: udp receive: {err}"),
                }
            }
        })
        .context("starting the udp server")?;
    eprintln!("handoff-netkit: udp on {listen}");
    Ok(())
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct UdpReport {
    pub(crate) ok: u64,
    /// Queries without an answer within the timeout.
    pub(crate) failed: u64,
    pub(crate) by_backend: BTreeMap<String, u64>,
    /// Sessions whose answers came from more than one backend (a flow that moved).
    pub(crate) sessions_that_moved: u64,
    pub(crate) errors: Vec<String>,
}

impl UdpReport {
    fn add(&mut self, other: UdpReport) {
        self.ok += other.ok;
        self.failed += other.failed;
        for (backend, count) in other.by_backend {
            *self.by_backend.entry(backend).or_default() += count;
        }
        self.sessions_that_moved += other.sessions_that_moved;
        for error in other.errors {
            if self.errors.len() < 10 && !self.errors.contains(&error) {
                self.errors.push(error);
            }
        }
    }
}

/// `udp-load`: `--sessions` threads, each opening sessions of `--per-session` queries one
/// after the other, until `--duration-ms` has passed. Exit status 1 when a query failed.
pub(crate) fn udp_load(args: &UdpLoadArgs) -> bool {
    let deadline = Instant::now() + Duration::from_millis(args.duration_ms);
    let workers: Vec<_> = (0..args.sessions)
        .map(|_| {
            let (target, per_session, gap) = (
                args.target,
                args.per_session,
                Duration::from_millis(args.gap_ms),
            );
            thread::spawn(move || worker(target, per_session, gap, deadline))
        })
        .collect();
    let mut report = UdpReport::default();
    for worker in workers {
        match worker.join() {
            Ok(part) => report.add(part),
            Err(_) => report.errors.push("a worker panicked".to_string()),
        }
    }
    let printed = print_json(&report);
    printed.is_ok() && report.failed == 0 && report.ok > 0
}

fn worker(target: SocketAddr, per_session: u32, gap: Duration, deadline: Instant) -> UdpReport {
    let mut report = UdpReport::default();
    while Instant::now() < deadline {
        let session = match open(target) {
            Ok(socket) => socket,
            Err(err) => {
                report.failed += 1;
                report.errors.push(format!("{err:#}"));
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let mut answered_by: Option<String> = None;
        let mut moved = false;
        for query in 0..per_session {
            if query > 0 && !gap.is_zero() {
                thread::sleep(gap);
            }
            match ask(&session) {
                Ok(backend) => {
                    report.ok += 1;
                    moved |= answered_by.as_ref().is_some_and(|first| *first != backend);
                    answered_by.get_or_insert_with(|| backend.clone());
                    *report.by_backend.entry(backend).or_default() += 1;
                }
                Err(err) => {
                    report.failed += 1;
                    let text = format!("{err:#}");
                    if !report.errors.contains(&text) && report.errors.len() < 10 {
                        report.errors.push(text);
                    }
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        report.sessions_that_moved += u64::from(moved);
    }
    report
}

fn open(target: SocketAddr) -> Result<UdpSocket> {
    let socket = UdpSocket::bind("0.0.0.0:0").context("binding a udp socket")?;
    socket
        .connect(target)
        .with_context(|| format!("connecting udp to {target}"))?;
    socket
        .set_read_timeout(Some(Duration::from_millis(1000)))
        .context("setting the udp timeout")?;
    Ok(socket)
}

/// One query: a datagram out, the backend's name back.
fn ask(socket: &UdpSocket) -> Result<String> {
    socket.send(b"who").context("sending a udp query")?;
    let mut buffer = [0u8; 256];
    let length = socket
        .recv(&mut buffer)
        .context("no udp answer within 1 s")?;
    Ok(String::from_utf8_lossy(&buffer[..length]).into_owned())
}
