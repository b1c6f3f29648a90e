//! `handoff kill NAME`: like `stop`, without draining and without termination signals.

use anyhow::Result;

use super::{output, with_env, Globals};
use crate::ops::stop::stop;

pub type Args = super::ComponentName;

pub fn run(args: &Args, globals: &Globals) -> Result<()> {
    let config = globals.config()?;
    let component = globals.component_to_change(&config, &args.name)?;
    let report = with_env(globals, |env| stop(env, component, false))?;
    output::retired(&component.name, &report.killed)
        .map_err(|e| anyhow::anyhow!("killing containers: {e:#}"))
}
