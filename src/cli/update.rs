//! `handoff update NAME [--tag TAG] [--no-wait]`: gantry's update — the new container beside
//! the old one, the switch when it is ready, then the drain and retirement of the old one.

use anyhow::Result;

use super::{output, with_env, Globals};
use crate::ops::drain::finish_drain;
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
}

pub fn run(args: &Args, globals: &Globals) -> Result<()> {
    let config = globals.config()?;
    let component = globals.component_to_change(&config, &args.name)?;
    let name = &component.name;
    with_env(globals, |env| {
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
            return Ok(());
        }
        let drain = finish_drain(env, component, None)?;
        output::drain(name, &drain, None)
    })
}
