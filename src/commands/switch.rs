//! `handoff switch NAME --to ADDR`: check that ADDR is ready, then point every external port
//! of NAME at it in one nftables transaction. The previous backend starts draining.
//!
//! Everything that can be refused (config, address, readiness) is checked before anything is
//! written, so bad input changes nothing.

use std::time::Duration;

use anyhow::Result;

use super::{parse_backend_address, ports_of, Context};
use crate::deploy;
use crate::health;
use crate::netfilter::Firewall;

pub fn run(ctx: &Context, name: &str, to: &str) -> Result<()> {
    let config = ctx.config()?;
    let component = config.component(name)?;
    let address = parse_backend_address(to)?;
    ports_of(component)?;
    ctx.require_root()?;
    let _lock = ctx.lock(&format!("switch {name} --to {address}"))?;
    let firewall = ctx.firewall();
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
    let switched = deploy::switch_to(ctx, &firewall, component, &routes, address, None, &|_| None)?;
    println!("{}", deploy::describe_switch(name, address, &switched));
    Ok(())
}
