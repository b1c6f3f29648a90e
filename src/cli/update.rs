//! `handoff update NAME [--tag TAG] [--no-wait]`: gantry's update — the new container beside
//! the old one, the switch when it is ready, then the drain and retirement of the old one.

use anyhow::Result;

use super::{output, with_env, Globals};
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
    let report = with_env(globals, |env| {
        update(env, component, args.tag.as_deref(), !args.no_wait)
    })?;
    if let Some(serving) = &report.already_serving {
        println!("{name}: {serving} already serves this version; finishing the drain of the previous version");
    }
    if let Some(switched) = &report.switched {
        println!("{}", output::switched(switched));
    }
    match &report.drain {
        Some(drain) => output::drain(name, drain, None),
        None => {
            println!(
                "{name}: not waiting for the drain; `handoff drain {name} --wait` (or the next \
                 update) retires the old container"
            );
            Ok(())
        }
    }
}
