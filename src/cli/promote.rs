//! `handoff promote NAME [--no-wait]`: the canary, ready-checked again, takes every new
//! connection in one transaction; the backend that was active drains and, for a Docker
//! component, is retired as `update` retires the old version (not with --no-wait; an address
//! backend is left draining: `drain NAME --wait`).

use anyhow::Result;

use super::{output, with_env, Globals};
use crate::ops::canary::promote;
use crate::ops::drain::finish_drain;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub name: String,
    /// Return right after the switch; `drain NAME --wait` retires the old container later.
    #[arg(long)]
    pub no_wait: bool,
}

pub fn run(args: &Args, globals: &Globals) -> Result<()> {
    let config = globals.config()?;
    let component = globals.component_to_change(&config, &args.name)?;
    let name = &component.name;
    with_env(globals, |env| {
        let switched = promote(env, component)?;
        println!("{}", output::switched(&switched));
        if args.no_wait || component.repo.is_none() {
            return Ok(());
        }
        let drain = finish_drain(env, component, None)?;
        output::drain(name, &drain, None)
    })
}
