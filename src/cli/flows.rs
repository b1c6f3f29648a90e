//! `handoff flows [NAME] [--json]`: the live flows of each backend, active and draining:
//! client, backend, state (a TCP state, or UDP), idle time (age when conntrack timestamps are
//! on), bytes (when conntrack accounting is on).

use anyhow::Result;
use serde_json::json;

use super::{with_env, Globals};
use crate::kernel::conntrack::StateTimeouts;
use crate::ops::inspect::{self as view, BackendView, FlowView};

/// A component's backends with their role, active first.
fn backends(c: &view::ComponentView) -> Vec<(&'static str, &BackendView)> {
    c.active
        .iter()
        .chain(&c.active6)
        .map(|a| ("active", a))
        .chain(c.draining.iter().map(|d| ("draining", d)))
        .collect()
}

#[derive(Debug, clap::Args)]
pub struct Args {
    pub name: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args, globals: &Globals) -> Result<()> {
    let config = globals.config()?;
    if let Some(name) = &args.name {
        config.component(name)?;
    }
    let as_json = args.json;
    let names: Vec<&str> = args.name.as_deref().into_iter().collect();
    let views = with_env(globals, |env| view::build(env, &config, &names))?;
    let timeouts = StateTimeouts::read();
    if as_json {
        let components: Vec<_> = views
            .iter()
            .map(|c| {
                let list: Vec<_> = backends(c)
                    .into_iter()
                    .map(|(role, b)| {
                        json!({
                            "address": b.address.to_string(),
                            "role": role,
                            "flows": b.flows.iter().map(|f| FlowView::new(f, &timeouts)).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                json!({"name": c.name, "backends": list})
            })
            .collect();
        println!("{}", json!({ "components": components }));
        return Ok(());
    }
    println!(
        "{:<16} {:<15} {:<9} {:<21} {:<21} {:<12} {:>8} {:>12}",
        "COMPONENT", "BACKEND", "ROLE", "CLIENT", "BACKEND ADDR", "STATE", "IDLE", "BYTES"
    );
    for c in &views {
        for (role, backend) in backends(c) {
            for flow in &backend.flows {
                let view = FlowView::new(flow, &timeouts);
                println!(
                    "{:<16} {:<15} {:<9} {:<21} {:<21} {:<12} {:>8} {:>12}",
                    c.name,
                    backend.address,
                    role,
                    view.client,
                    view.backend,
                    view.state,
                    view.idle_secs
                        .map(|s| format!("{s} s"))
                        .unwrap_or("-".into()),
                    view.bytes.map(|b| b.to_string()).unwrap_or("-".into()),
                );
            }
        }
    }
    Ok(())
}
