//! `handoff monitor NAME`: health checks against the active container every SECS; after N
//! failed rounds in a row it is replaced through `update`. Runs until stopped (a systemd
//! service with `Restart=always`).

use std::time::Duration;

use anyhow::Result;

use super::{with_env, Globals};
use crate::ops::{launch::repo_of, monitor};

#[derive(Debug, clap::Args)]
pub struct Args {
    pub name: String,
    /// Seconds between rounds of health checks.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub interval: u64,
    /// Consecutive failed rounds before the container is replaced.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub failures: u32,
}

pub fn run(args: &Args, globals: &Globals) -> Result<()> {
    let config = globals.config()?;
    let component = config.component(&args.name)?;
    repo_of(component)?;
    globals.require_root()?;
    with_env(globals, |env| {
        monitor::run(
            env,
            component,
            Duration::from_secs(args.interval.max(1)),
            args.failures.max(1),
        )
    })
}
