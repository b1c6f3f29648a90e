//! `handoff drain NAME [--wait] [--timeout SECS]`: report NAME's draining backends and their
//! live flows; with `--wait`, return as soon as none has a live flow left (and retire their
//! containers, for Docker components).

use std::time::Duration;

use anyhow::Result;

use super::{human_duration, Context};
use crate::conntrack;
use crate::deploy;
use crate::drain;
use crate::state::now_ms;

pub fn run(ctx: &Context, name: &str, wait: bool, timeout: Option<u64>) -> Result<()> {
    let config = ctx.config()?;
    let component = config.component(name)?;
    if wait {
        ctx.require_root()?;
        return deploy::finish_drain(ctx, component, timeout.map(Duration::from_secs));
    }
    let draining = ctx.state.load()?.component(name).draining;
    if draining.is_empty() {
        println!("{name}: nothing is draining");
        return Ok(());
    }
    let flows = conntrack::dump()?;
    for backend in &draining {
        let live = drain::live_flows(&flows, backend);
        println!(
            "{name}: {} draining for {}, {} live flow(s)",
            backend.address,
            human_duration(now_ms().saturating_sub(backend.since_ms)),
            live.len()
        );
        deploy::print_flows(live.into_iter());
    }
    Ok(())
}
