//! `handoff fleet rollback COMPONENT [--no-wait]`: the fleet back to the tag it ran before the
//! last rollout of COMPONENT, with the same rules as `fleet update`.

use anyhow::Result;

use super::update::{roll, stored_config};
use super::Fleet;
use crate::error::Failure;
use crate::fleet::rollout::Snapshot;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub component: String,
    /// Return once the rollback is started.
    #[arg(long)]
    pub no_wait: bool,
}

pub fn run(args: &Args, fleet: &Fleet) -> Result<()> {
    let mut etcd = fleet.connect()?;
    let snapshot = Snapshot::read(&mut etcd, &fleet.keys)?;
    let config = stored_config(fleet, &snapshot)?;
    let component = config.component(&args.component)?;
    let Some((last, _)) = snapshot
        .rollout
        .as_ref()
        .filter(|(r, _)| r.component == args.component)
    else {
        return Err(Failure::input(format!(
            "fleet {}: no rollout of {} to roll back",
            fleet.name, args.component
        ))
        .into());
    };
    let previous = last.previous.clone();
    let max_parallel = last.max_parallel;
    roll(
        &mut etcd,
        fleet,
        &snapshot,
        component,
        &previous,
        max_parallel,
        args.no_wait,
    )
}
