//! gantry's container commands: `start`, `update`, `stop`, `kill`, `monitor`, and `restore`
//! after a reboot. Each is a thin
//! call into [`crate::deploy`], where the steps live.

use std::time::Duration;

use anyhow::Result;

use super::Context;
use crate::deploy;

pub fn start(ctx: &Context, name: &str) -> Result<()> {
    let config = ctx.config()?;
    deploy::start(ctx, config.component(name)?)
}

pub fn update(ctx: &Context, name: &str, tag: Option<&str>, no_wait: bool) -> Result<()> {
    let config = ctx.config()?;
    deploy::update(ctx, config.component(name)?, tag, !no_wait)
}

pub fn stop(ctx: &Context, name: &str) -> Result<()> {
    let config = ctx.config()?;
    deploy::stop(ctx, config.component(name)?, true)
}

pub fn kill(ctx: &Context, name: &str) -> Result<()> {
    let config = ctx.config()?;
    deploy::stop(ctx, config.component(name)?, false)
}

pub fn restore(ctx: &Context) -> Result<()> {
    let config = ctx.config()?;
    deploy::restore(ctx, &config.components)
}

pub fn monitor(ctx: &Context, name: &str, interval: u64, failures: u32) -> Result<()> {
    let config = ctx.config()?;
    ctx.require_root()?;
    deploy::monitor(
        ctx,
        config.component(name)?,
        Duration::from_secs(interval.max(1)),
        failures.max(1),
    )
}
