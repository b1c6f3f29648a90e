//! `handoff teardown`: take everything handoff put in the kernel out of it — its table (every
//! component's routes) and its rules in Docker's chains. Containers, config and state file
//! stay, so `restore` routes everything again. The Debian package runs it on removal, so that
//! no table is left behind by a binary that is gone.

use anyhow::Result;

use super::{with_env, Globals};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: &Args, globals: &Globals) -> Result<()> {
    globals.require_root()?;
    with_env(globals, |env| {
        let _lock = env.lock("teardown")?;
        env.firewall.remove_all()
    })?;
    println!(
        "table inet {} and its rules in Docker's chains removed; `handoff restore` routes the \
         components again",
        globals.table
    );
    Ok(())
}
