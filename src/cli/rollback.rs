//! `handoff rollback NAME [--no-wait]`: route NAME back to its most recent draining backend
//! (after it passes NAME's readyChecks again), in one transaction; the backend that was active
//! drains. For a Docker component the command then retires it the way `update` retires the
//! old version, unless --no-wait; an address backend is left draining (`drain NAME --wait`).
//! Run again, it finds the rollback done and only finishes the drain: it never flips NAME
//! forward to the version it left.

use anyhow::Result;

use super::{output, retire_drained, with_env, Globals};
use crate::ops::rollback::{rollback, Rollback};

#[derive(Debug, clap::Args)]
pub struct Args {
    pub name: String,
    /// Return right after the switch; `drain NAME --wait` retires the rolled-back-from
    /// container later.
    #[arg(long)]
    pub no_wait: bool,
}

pub fn run(args: &Args, globals: &Globals) -> Result<()> {
    let config = globals.config()?;
    let component = globals.component_to_change(&config, &args.name)?;
    let name = &component.name;
    with_env(globals, |env| {
        match rollback(env, component)? {
            Rollback::Switched(switched) => println!("{}", output::switched(&switched)),
            Rollback::CanaryEnded(canary) => println!(
                "{name}: canary {canary} ended: every new connection goes to the active backend; \
                 the canary drains"
            ),
            Rollback::AlreadyDone(done) => println!(
                "{name}: already rolled back to {} ({} drains); finishing what is left",
                done.to, done.from
            ),
        }
        retire_drained(env, component, args.no_wait)
    })
}
