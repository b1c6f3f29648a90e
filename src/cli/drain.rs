//! `handoff drain NAME [--wait] [--timeout SECS]`: report NAME's draining backends and their
//! live flows; with `--wait`, return as soon as none has a live flow left (and retire them).

use std::time::Duration;

use anyhow::Result;

use super::{output, with_env, Globals};
use crate::ops::{drain::finish_drain, human_duration, inspect};
use crate::state::now_ms;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub name: String,
    /// Return as soon as no draining backend has a live flow.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after SECS (exit 4, listing the flows still open).
    #[arg(long, value_name = "SECS", requires = "wait")]
    pub timeout: Option<u64>,
}

pub fn run(args: &Args, globals: &Globals) -> Result<()> {
    let config = globals.config()?;
    let component = config.component(&args.name)?;
    let name = &component.name;
    if args.wait {
        globals.require_root()?;
        let report = with_env(globals, |env| {
            finish_drain(env, component, args.timeout.map(Duration::from_secs))
        })?;
        return output::drain(name, &report, args.timeout);
    }
    let views = with_env(globals, |env| inspect::build(env, &config, &[name]))?;
    let draining = views.iter().flat_map(|v| v.draining.iter());
    let mut any = false;
    for backend in draining {
        any = true;
        println!(
            "{name}: {} draining for {}, {} live flow(s)",
            backend.address,
            human_duration(now_ms().saturating_sub(backend.since_ms.unwrap_or(0))),
            backend.flows.len()
        );
        output::print_flows(backend.flows.iter());
    }
    if !any {
        println!("{name}: nothing is draining");
    }
    Ok(())
}
