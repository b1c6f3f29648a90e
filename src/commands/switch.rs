//! `handoff switch NAME --to ADDR`: check that ADDR is ready, then point every external port
//! of NAME at it in one nftables transaction. The previous backend starts draining.
//!
//! Everything that can be refused (config, address, readiness) is checked before anything is
//! written, so bad input changes nothing.

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

    health::wait_component_ready(component, address)?;
    let switched = deploy::switch_to(ctx, &firewall, component, &routes, address, None, &|_| None)?;
    println!("{}", deploy::describe_switch(name, address, &switched));
    Ok(())
}
