//! `handoff start NAME`: run a Docker component's first container and route its ports to it.

use anyhow::Result;

use super::{output, with_env, Globals};
use crate::ops::update::start;

pub type Args = super::ComponentName;

pub fn run(args: &Args, globals: &Globals) -> Result<()> {
    let config = globals.config()?;
    let component = globals.component_to_change(&config, &args.name)?;
    let switched = with_env(globals, |env| start(env, component))?;
    println!("{}", output::switched(&switched));
    Ok(())
}
