//! `handoff fleet list [--json]`: the fleet's hosts, alive (their lease key exists) or lost
//! (only their member record is left), and since when; per host, each component as its agent
//! last reported it; the current (or last) rollout.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::json;

use super::Fleet;
use crate::fleet::records::now_ms;
use crate::fleet::{HostRecord, MemberRecord, RolloutRecord, StatusRecord};

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
    let mut etcd = fleet.connect()?;
    let mut hosts: BTreeMap<String, Host> = BTreeMap::new();
    for (_, value) in etcd.get_prefix(&fleet.keys.members())? {
        if let Ok(member) = serde_json::from_slice::<MemberRecord>(&value) {
            hosts.insert(
                member.name.clone(),
                Host {
                    name: member.name,
                    alive: false,
                    since_ms: member.last_seen_ms,
                    components: Vec::new(),
                },
            );
        }
    }
    for (_, value) in etcd.get_prefix(&fleet.keys.hosts())? {
        if let Ok(record) = serde_json::from_slice::<HostRecord>(&value) {
            hosts.insert(
                record.name.clone(),
                Host {
                    name: record.name,
                    alive: true,
                    since_ms: record.since_ms,
                    components: Vec::new(),
                },
            );
        }
    }
    let statuses = fleet.keys.statuses();
    for (key, value) in etcd.get_prefix(&statuses)? {
        let host = key[statuses.len()..].split('/').next().unwrap_or_default();
        if let (Some(entry), Ok(status)) = (
            hosts.get_mut(host),
            serde_json::from_slice::<StatusRecord>(&value),
        ) {
            entry.components.push(status);
        }
    }
    let rollout = etcd
        .get(&fleet.keys.rollout())?
        .and_then(|(value, _)| serde_json::from_slice::<RolloutRecord>(&value).ok());
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
    println!("{:<24} {:<6} SINCE", "HOST", "STATE");
    let now = now_ms();
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
