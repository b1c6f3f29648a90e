//! `handoff stop NAME`: take NAME's ports out of the ruleset, drain, signal, stop and remove
//! its containers.

use anyhow::Result;

use super::{output, with_env, Globals};
use crate::ops::stop::stop;

pub type Args = super::ComponentName;

pub fn run(args: &Args, globals: &Globals) -> Result<()> {
    let config = globals.config()?;
    let component = globals.component_to_change(&config, &args.name)?;
    let report = with_env(globals, |env| stop(env, component, true))?;
    match &report.drain {
        Some(drain) => output::drain(&component.name, drain, None),
        None => Ok(()),
    }
}
