//! `handoff list [--json]`: components, their active backend and their draining backends.
//!
//! The JSON shape is a contract scripts rely on:
//! `{"components":[{"name":"web","active":"10.0.0.12","draining":[{"address":"10.0.0.11",
//! "flows":1}]}]}`, with more fields alongside; `"active6"` (and `"active6_flows"`) is the
//! IPv6 backend, else `null`; `"canary"` is `{"address", "weight", "sticky", "flows"}` during
//! a canary, else `null` (`active` stays the backend that takes the rest).

use anyhow::Result;
use serde_json::json;

use super::{with_env, Globals};
use crate::ops::human_duration;
use crate::ops::inspect as view;
use crate::state::now_ms;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args, globals: &Globals) -> Result<()> {
    let config = globals.config()?;
    let as_json = args.json;
    let views = with_env(globals, |env| view::build(env, &config, &[]))?;
    let now = now_ms();
    if as_json {
        let components: Vec<_> = views
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "active": c.active.as_ref().map(|a| a.address.to_string()),
                    "active_flows": c.active.as_ref().map(|a| a.flows.len()),
                    "ports": c.active.as_ref().or(c.active6.as_ref()).map(|a| &a.ports),
                    "active_since_ms": c.active.as_ref().and_then(|a| a.since_ms),
                    "active6": c.active6.as_ref().map(|a| a.address.to_string()),
                    "active6_flows": c.active6.as_ref().map(|a| a.flows.len()),
                    "canary": c.canary.as_ref().map(|k| json!({
                        "address": k.backend.address.to_string(),
                        "weight": k.weight,
                        "sticky": k.sticky,
                        "flows": k.backend.flows.len(),
                    })),
                    "draining": c.draining.iter().map(|d| json!({
                        "address": d.address.to_string(),
                        "flows": d.flows.len(),
                        "since_ms": d.since_ms,
                        "ports": d.ports,
                    })).collect::<Vec<_>>(),
                    "containers": c.containers,
                })
            })
            .collect();
        println!("{}", json!({ "components": components }));
        return Ok(());
    }
    println!(
        "{:<20} {:<16} {:>6}  DRAINING",
        "COMPONENT", "ACTIVE", "FLOWS"
    );
    for c in &views {
        let (active, flows) = match &c.active {
            Some(a) => (a.address.to_string(), a.flows.len().to_string()),
            None => ("-".to_string(), "-".to_string()),
        };
        let draining: Vec<String> = c
            .draining
            .iter()
            .map(|d| {
                let age = d
                    .since_ms
                    .map(|s| format!(", {}", human_duration(now.saturating_sub(s))))
                    .unwrap_or_default();
                format!("{} ({} flows{age})", d.address, d.flows.len())
            })
            .collect();
        println!(
            "{:<20} {:<16} {:>6}  {}",
            c.name,
            active,
            flows,
            if draining.is_empty() {
                "-".to_string()
            } else {
                draining.join(", ")
            }
        );
        if let Some(a) = &c.active6 {
            println!("{:<20} {:<16} {:>6}", "", a.address, a.flows.len());
        }
        if let Some(k) = &c.canary {
            println!(
                "{:<20} canary {} takes {} of new connections ({}), {} flows",
                "",
                k.backend.address,
                k.weight
                    .map(|w| format!("{w} %"))
                    .unwrap_or_else(|| "an unknown share".into()),
                if k.sticky {
                    "by client address"
                } else {
                    "per connection"
                },
                k.backend.flows.len()
            );
        }
        for container in &c.containers {
            println!(
                "    container {} {:<32} {:<15} {:<9} {:>4} flows, up {}  {}",
                container.id,
                container.image,
                container
                    .address
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "-".to_string()),
                container.state,
                container.flows,
                human_duration(container.age_secs * 1000),
                container.name
            );
        }
    }
    Ok(())
}
