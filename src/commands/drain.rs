//! `handoff drain NAME [--wait] [--timeout SECS]`: report NAME's draining backends and their
//! live flows; with `--wait`, return as soon as none has a live flow left.
//!
//! The wait holds no lock (it can take hours); only the final state update takes it briefly.

use std::time::Duration;

use anyhow::Result;

use super::{human_duration, Context};
use crate::conntrack::{self, Flow};
use crate::drain::{self, Target};
use crate::error::{ExitCode, Failure};
use crate::netfilter::{nft::NftFirewall, Firewall};
use crate::progress::DrainProgress;
use crate::state::{now_ms, BackendRecord};

pub fn run(ctx: &Context, name: &str, wait: bool, timeout: Option<u64>) -> Result<()> {
    let config = ctx.config()?;
    let component = config.component(name)?;
    let draining = ctx.state.load()?.component(name).draining;
    if draining.is_empty() {
        println!("{name}: nothing is draining");
        return Ok(());
    }
    if !wait {
        let flows = conntrack::dump()?;
        for backend in &draining {
            let live = drain::live_flows(&flows, backend);
            println!(
                "{name}: {} draining for {}, {} live flow(s)",
                backend.address,
                human_duration(now_ms().saturating_sub(backend.since_ms)),
                live.len()
            );
            print_flows(live.into_iter());
        }
        return Ok(());
    }
    ctx.require_root()?;
    let drain_timeout = component.drain_timeout_ms();
    let targets: Vec<Target> = draining
        .iter()
        .map(|backend| Target {
            backend: backend.clone(),
            give_up_at_ms: backend.since_ms.saturating_add(drain_timeout),
        })
        .collect();
    let mut progress = DrainProgress::new(name);
    let outcome = drain::wait(targets, timeout.map(Duration::from_secs), &mut progress)?;
    progress.finish();

    for backend in &outcome.drained {
        println!("{name}: {} drained", backend.address);
    }
    for (backend, flows) in &outcome.given_up {
        eprintln!(
            "handoff: {name}: {} still had {} live flow(s) after drainTimeout ({drain_timeout} ms); \
             giving up on them:",
            backend.address,
            flows.len()
        );
        print_flows(flows.iter());
    }
    let finished: Vec<BackendRecord> = outcome
        .drained
        .iter()
        .chain(outcome.given_up.iter().map(|(b, _)| b))
        .cloned()
        .collect();
    if !finished.is_empty() {
        forget(ctx, name, &finished)?;
    }
    if !outcome.still_open.is_empty() {
        let open: usize = outcome.still_open.iter().map(|(_, f)| f.len()).sum();
        for (backend, flows) in &outcome.still_open {
            println!(
                "{name}: {} still has {} live flow(s):",
                backend.address,
                flows.len()
            );
            print_flows(flows.iter());
        }
        return Err(Failure::new(
            ExitCode::DrainTimeout,
            format!(
                "{name}: {open} flow(s) still open after --timeout {} s",
                timeout.unwrap_or(0)
            ),
        )
        .into());
    }
    Ok(())
}

/// Drop finished backends from the state and from the hairpin set.
fn forget(ctx: &Context, name: &str, finished: &[BackendRecord]) -> Result<()> {
    let _lock = ctx.lock(&format!("drain {name}"))?;
    let mut state = ctx.state.load()?;
    state.finish_draining(name, finished);
    ctx.state.save(&state)?;
    NftFirewall::new().set_hairpin_sources(&state.known_addresses())
}

fn print_flows<'a>(flows: impl Iterator<Item = &'a Flow>) {
    let timeouts = conntrack::StateTimeouts::read();
    for flow in flows {
        let idle = flow
            .idle_secs(&timeouts)
            .map(|s| format!(", idle {s} s"))
            .unwrap_or_default();
        let bytes = flow
            .bytes
            .map(|b| format!(", {b} bytes"))
            .unwrap_or_default();
        println!(
            "  {} -> {} via {} {}{idle}{bytes}",
            flow.client,
            flow.backend,
            flow.destination,
            flow.state.name()
        );
    }
}
