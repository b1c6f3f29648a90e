//! `handoff update NAME [--tag TAG] [--no-wait] [--canary PCT [--sticky]]`: gantry's update —
//! the new container beside the old one, the switch when it is ready, then the drain and
//! retirement of the old one. With --canary, the new one takes only PCT % of new connections
//! until `promote`.

use anyhow::Result;

use super::{output, retire_drained, with_env, Globals};
use crate::ops::canary::canary_update;
use crate::ops::update::update;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub name: String,
    /// Image tag to deploy instead of the config's `tag`.
    #[arg(long)]
    pub tag: Option<String>,
    /// Return right after the switch; `drain NAME --wait` retires the old container later.
    #[arg(long)]
    pub no_wait: bool,
    /// Start the new version as a canary: PCT % of new connections go to it, the rest to the
    /// running one (`promote` or `rollback` end it). Given again, changes the share.
    #[arg(long, value_name = "PCT", value_parser = clap::value_parser!(u8).range(1..=99))]
    pub canary: Option<u8>,
    /// Split by client address (a fixed-seed hash) instead of per connection.
    #[arg(long, requires = "canary")]
    pub sticky: bool,
}

pub fn run(args: &Args, globals: &Globals) -> Result<()> {
    let config = globals.config()?;
    let component = globals.component_to_change(&config, &args.name)?;
    let name = &component.name;
    with_env(globals, |env| {
        if let Some(weight) = args.canary {
            let split = canary_update(env, component, args.tag.as_deref(), weight, args.sticky)?;
            println!("{}", output::split(&split));
            // A canary this one replaced (or one an interrupted run left) drains and is
            // retired, as an update's old version; the active one keeps serving the rest.
            return retire_drained(env, component, args.no_wait);
        }
        let report = update(env, component, args.tag.as_deref())?;
        if let Some(serving) = &report.already_serving {
            println!("{name}: {serving} already serves this version; finishing the drain of the previous version");
        }
        // Printed now, not after the drain: an operator (or the journal) sees the switch the
        // moment it happens, though the drain may last hours.
        if let Some(switched) = &report.switched {
            println!("{}", output::switched(switched));
        }
        if args.no_wait {
            println!(
                "{name}: not waiting for the drain; `handoff drain {name} --wait` (or the next \
                 update) retires the old container"
            );
        }
        retire_drained(env, component, args.no_wait)
    })
}
