//! `handoff switch NAME --to ADDR`: check that ADDR is ready, then point every external port
//! of NAME at it in one nftables transaction. The previous backend starts draining.
//!
//! Order matters for "bad input changes nothing": everything that can be refused (config,
//! address, readiness) is checked before anything is written. The state is written before the
//! kernel transaction and restored if the transaction fails, so a crash in between leaves a
//! backend listed as draining (harmless, and visible) rather than a draining backend forgotten.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use super::{active_record, parse_backend_address, ports_of, Context};
use crate::conntrack;
use crate::health;
use crate::netfilter::{nft::NftFirewall, Firewall};
use crate::state::{now_ms, BackendRecord};

pub fn run(ctx: &Context, name: &str, to: &str) -> Result<()> {
    let config = ctx.config()?;
    let component = config.component(name)?;
    let address = parse_backend_address(to)?;
    let ports = ports_of(component)?;
    ctx.require_root()?;
    let _lock = ctx.lock(&format!("switch {name} --to {address}"))?;
    let firewall = NftFirewall::new();
    let routes = firewall.routes(name)?;

    let checks = health::ready_checks(component);
    eprintln!(
        "handoff: {name}: waiting for {address} to pass {} ready check(s) (readyTimeout {} ms)",
        checks.len(),
        component.ready_timeout
    );
    health::wait_ready(
        name,
        &checks,
        address,
        Duration::from_millis(component.ready_timeout),
    )?;

    let started = Instant::now();
    conntrack::ensure_events_for_new_flows()?;
    let original = ctx.state.load()?;
    let now = now_ms();
    // The kernel says what is active; the state's record only stands in when our table was
    // deleted (its flows may still be alive and must drain).
    let previous = active_record(&routes, now).or_else(|| {
        original.component(name).active.map(|mut record| {
            record.since_ms = now;
            record
        })
    });
    let mut state = original.clone();
    state.record_switch(
        name,
        previous.clone(),
        BackendRecord {
            address,
            ports: ports.clone(),
            since_ms: now,
        },
    );
    ctx.state.save(&state)?;
    if let Err(error) = firewall.switch(name, &ports, address, &state.known_addresses()) {
        if let Err(restore) = ctx.state.save(&original) {
            eprintln!("handoff: warning: could not restore the previous state: {restore:#}");
        }
        return Err(error).context(format!(
            "switching {name} to {address}; nothing was changed"
        ));
    }
    let elapsed = started.elapsed();
    match previous {
        Some(previous) if previous.address != address => println!(
            "{name}: new connections now go to {address}; {} is draining (switched in {} ms)",
            previous.address,
            elapsed.as_millis()
        ),
        Some(_) => println!(
            "{name}: already pointed at {address}; ruleset re-asserted ({} ms)",
            elapsed.as_millis()
        ),
        None => println!(
            "{name}: new connections now go to {address} (switched in {} ms)",
            elapsed.as_millis()
        ),
    }
    Ok(())
}
