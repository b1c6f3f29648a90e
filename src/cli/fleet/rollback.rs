//! `handoff fleet rollback COMPONENT [--sign KEY] [--no-wait]`: the fleet back to the tag it
//! ran before the last rollout of COMPONENT, with the same rules as `fleet update`.

use anyhow::Result;

use super::update::{roll, Wanted};
use super::{Fleet, SignArgs};
use crate::error::Failure;
use crate::fleet::rollout::Snapshot;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub component: String,
    /// Return once the rollback is started.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub sign: SignArgs,
}

pub fn run(args: &Args, fleet: &Fleet) -> Result<()> {
    let mut etcd = fleet.connect()?;
    let snapshot = Snapshot::read(&mut etcd, &fleet.keys)?;
    let config = fleet.stored_config(&snapshot)?;
    let component = config.component(&args.component)?;
    let Some(last) = snapshot
        .stored_rollout()
        .filter(|r| r.spec.component == args.component)
    else {
        return Err(Failure::input(format!(
            "fleet {}: no rollout of {} to roll back",
            fleet.name, args.component
        ))
        .into());
    };
    let wanted = Wanted {
        tag: &last.spec.previous,
        max_parallel: last.spec.max_parallel,
        no_wait: args.no_wait,
        sign: &args.sign,
    };
    roll(&mut etcd, fleet, &snapshot, component, wanted)
}
