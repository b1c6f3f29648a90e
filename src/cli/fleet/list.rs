//! `handoff fleet list [--json]`: the fleet's hosts, alive (their lease key exists) or lost
//! (only their member record is left), and since when; per host, each component as its agent
//! last reported it; the current (or last) rollout; the components stopped fleet-wide.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::json;

use super::Fleet;
use crate::fleet::records::now_ms;
use crate::fleet::rollout::Snapshot;
use crate::fleet::StatusRecord;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON document (see README, "Fleet").
    #[arg(long)]
    pub json: bool,
}

struct Host {
    name: String,
    alive: bool,
    /// Alive: registered since; lost: last seen.
    since_ms: u64,
    components: Vec<StatusRecord>,
}

pub fn run(args: &Args, fleet: &Fleet) -> Result<()> {
    let snapshot = Snapshot::read(&mut fleet.connect()?, &fleet.keys)?;
    let lost = snapshot.members.values().map(|m| Host {
        name: m.name.clone(),
        alive: false,
        since_ms: m.last_seen_ms,
        components: Vec::new(),
    });
    let alive = snapshot.alive.values().map(|h| Host {
        name: h.name.clone(),
        alive: true,
        since_ms: h.since_ms,
        components: Vec::new(),
    });
    // A live registration replaces the member record of the same host.
    let mut hosts: BTreeMap<String, Host> =
        lost.chain(alive).map(|h| (h.name.clone(), h)).collect();
    for ((host, _), status) in &snapshot.statuses {
        if let Some(entry) = hosts.get_mut(host) {
            entry.components.push(status.clone());
        }
    }
    let rollout = snapshot.rollout.map(|(record, _)| record);
    let stopped = snapshot.stopped;
    if args.json {
        let hosts: Vec<_> = hosts
            .values()
            .map(|h| {
                json!({
                    "name": h.name,
                    "alive": h.alive,
                    "since_ms": h.since_ms,
                    "components": h.components.iter().map(|c| json!({
                        "name": c.component,
                        "tag": c.tag,
                        "active": c.active,
                        "state": c.state,
                        "reason": c.reason,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "fleet": fleet.name,
                "rollout": rollout.as_ref().map(|r| json!({
                    "component": r.component,
                    "tag": r.tag,
                    "previous": r.previous,
                    "max_parallel": r.max_parallel,
                    "state": r.state,
                    "reason": r.reason,
                })),
                "stopped": stopped.values().map(|s| json!({
                    "component": s.component,
                    "kill": s.kill,
                    "since_ms": s.since_ms,
                })).collect::<Vec<_>>(),
                "hosts": hosts,
            })
        );
        return Ok(());
    }
    if let Some(r) = &rollout {
        println!(
            "rollout: {} {} -> {}, {}{}",
            r.component,
            r.previous,
            r.tag,
            r.state,
            r.reason
                .as_deref()
                .map(|reason| format!(": {reason}"))
                .unwrap_or_default()
        );
    }
    let now = now_ms();
    for stop in stopped.values() {
        println!(
            "{}: {} fleet-wide {} ago (handoff fleet start {} lifts it)",
            stop.component,
            if stop.kill { "killed" } else { "stopped" },
            crate::ops::human_duration(now.saturating_sub(stop.since_ms)),
            stop.component
        );
    }
    println!("{:<24} {:<6} SINCE", "HOST", "STATE");
    for host in hosts.values() {
        let (state, since) = if host.alive {
            ("alive", "registered")
        } else {
            ("lost", "last seen")
        };
        println!(
            "{:<24} {:<6} {since} {} ago",
            host.name,
            state,
            crate::ops::human_duration(now.saturating_sub(host.since_ms))
        );
        for c in &host.components {
            println!(
                "    {:<20} {:<8} {:<12} {}{}",
                c.component,
                c.state,
                c.tag.as_deref().unwrap_or("-"),
                c.active.as_deref().unwrap_or("-"),
                c.reason
                    .as_deref()
                    .map(|r| format!("  ({r})"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}
