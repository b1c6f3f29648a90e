//! `handoff restore`: rebuild the ruleset from the state file (after a reboot, or after our
//! table was deleted) and resume draining.

use anyhow::Result;

use super::{output, with_env, Globals};
use crate::ops::restore::{restore, Restored};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: &Args, globals: &Globals) -> Result<()> {
    let config = globals.config()?;
    globals.require_root()?;
    let report = with_env(globals, |env| restore(env, &config.components))?;
    for (name, restored) in &report.components {
        match restored {
            Ok(Restored::NothingRecorded) => {}
            Ok(Restored::Refreshed(address)) => {
                println!("{name}: routed to {address} already; ruleset re-asserted")
            }
            Ok(Restored::Routed(switched)) => {
                for one in switched {
                    println!("{}", output::switched(one));
                }
            }
            Err(error) => eprintln!("handoff: error: restoring {name}: {error:#}"),
        }
    }
    for (name, drain) in &report.drains {
        let shown = match drain {
            Ok(report) => output::drain(name, report, None),
            Err(error) => Err(anyhow::anyhow!("{error:#}")),
        };
        if let Err(error) = shown {
            eprintln!("handoff: error: draining {name}: {error:#}");
        }
    }
    let failed = report.failed();
    if !failed.is_empty() {
        anyhow::bail!("restore failed for: {}", failed.join(", "));
    }
    Ok(())
}
