//! `handoff promote NAME [--no-wait]`: the canary, ready-checked again, takes every new
//! connection in one transaction; the backend that was active drains and, for a Docker
//! component, is retired as `update` retires the old version (not with --no-wait; an address
//! backend is left draining: `drain NAME --wait`).

use anyhow::Result;

use super::{output, retire_drained, with_env, Globals};
use crate::ops::canary::promote;

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
    with_env(globals, |env| {
        let switched = promote(env, component)?;
        println!("{}", output::switched(&switched));
        retire_drained(env, component, args.no_wait)
    })
}
