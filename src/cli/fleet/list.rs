//! `handoff fleet list [--json] [--signers FILE]`: the fleet's hosts, alive (their lease key
//! exists) or lost (only their member record is left), and since when; per host, each
//! component as its agent last reported it and what it refuses of the spec; the current (or
//! last) rollout and where it stands; the components stopped fleet-wide; who signed what.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::json;

use super::{signed_by, Fleet, SignersArgs};
use crate::fleet::records::now_ms;
use crate::fleet::rollout::{Progress, Snapshot};
use crate::fleet::StatusRecord;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON document (see README, "Fleet").
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub signers: SignersArgs,
}

struct Host {
    name: String,
    alive: bool,
    /// Alive: registered since; lost: last seen.
    since_ms: u64,
    components: Vec<StatusRecord>,
    refused: BTreeMap<String, String>,
}

/// A rollout's state and reason, as `list` shows them.
fn state_of(progress: &Progress) -> (&'static str, Option<&str>) {
    match progress {
        Progress::Running => ("running", None),
        Progress::Halted { reason, .. } => ("halted", Some(reason)),
        Progress::Done => ("done", None),
    }
}

pub fn run(args: &Args, fleet: &Fleet) -> Result<()> {
    let required = args.signers.load()?;
    let snapshot = Snapshot::read(&mut fleet.connect()?, &fleet.keys)?;
    let lost = snapshot.members.values().map(|m| Host {
        name: m.name.clone(),
        alive: false,
        since_ms: m.last_seen_ms,
        components: Vec::new(),
        refused: BTreeMap::new(),
    });
    let alive = snapshot.alive.values().map(|h| Host {
        name: h.name.clone(),
        alive: true,
        since_ms: h.since_ms,
        components: Vec::new(),
        refused: BTreeMap::new(),
    });
    // A live registration replaces the member record of the same host.
    let mut hosts: BTreeMap<String, Host> =
        lost.chain(alive).map(|h| (h.name.clone(), h)).collect();
    for ((host, _), status) in &snapshot.statuses {
        if let Some(entry) = hosts.get_mut(host) {
            entry.components.push(status.clone());
        }
    }
    for (host, refusals) in &snapshot.refusals {
        if let Some(entry) = hosts.get_mut(host) {
            entry.refused = refusals.refused.clone();
        }
    }
    let rollout = snapshot.stored_rollout().map(|r| {
        let progress = snapshot.progress(&r);
        (r, progress)
    });
    let sign = |stored| signed_by(stored, required.as_ref());
    let stopped: Vec<_> = snapshot
        .stops
        .keys()
        .filter_map(|c| Some((snapshot.stored_stop(c)?, sign(snapshot.stops.get(c)))))
        .filter(|(s, _)| s.holds())
        .collect();
    if args.json {
        let hosts: Vec<_> = hosts
            .values()
            .map(|h| {
                json!({
                    "name": h.name,
                    "alive": h.alive,
                    "since_ms": h.since_ms,
                    "refused": h.refused,
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
        let config = snapshot.config.as_ref().map(|stored| {
            json!({
                "sequence": stored.envelope().map(|e| e.sequence),
                "signed": sign(Some(stored)),
            })
        });
        println!(
            "{}",
            json!({
                "fleet": fleet.name,
                "config": config,
                "rollout": rollout.as_ref().map(|(r, progress)| {
                    let (state, reason) = state_of(progress);
                    json!({
                        "component": r.spec.component,
                        "tag": r.spec.tag,
                        "previous": r.spec.previous,
                        "max_parallel": r.spec.max_parallel,
                        "sequence": r.sequence,
                        "state": state,
                        "reason": reason,
                        "signed": sign(snapshot.rollout.as_ref()),
                    })
                }),
                "stopped": stopped.iter().map(|(s, signed)| json!({
                    "component": s.component,
                    "kill": s.kill(),
                    "since_ms": s.since_ms,
                    "signed": signed,
                })).collect::<Vec<_>>(),
                "hosts": hosts,
            })
        );
        return Ok(());
    }
    if let Some(stored) = &snapshot.config {
        println!("config: {}", sign(Some(stored)));
    }
    if let Some((r, progress)) = &rollout {
        let (state, reason) = state_of(progress);
        println!(
            "rollout: {} {} -> {}, {state}{} ({})",
            r.spec.component,
            r.spec.previous,
            r.spec.tag,
            reason
                .map(|reason| format!(": {reason}"))
                .unwrap_or_default(),
            sign(snapshot.rollout.as_ref())
        );
    }
    let now = now_ms();
    for (stop, signed) in &stopped {
        println!(
            "{}: {} fleet-wide {} ago, {signed} (handoff fleet start {} lifts it)",
            stop.component,
            if stop.kill() { "killed" } else { "stopped" },
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
        for (key, reason) in &host.refused {
            let key = key.strip_prefix(fleet.keys.root()).unwrap_or(key);
            println!("    refuses {key}: {reason}");
        }
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
