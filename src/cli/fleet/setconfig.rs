//! `handoff fleet setconfig FILE`: the config every agent converges to. Validated exactly as
//! `check` validates a local one; a bad file is exit 2 and nothing is stored.

use std::path::PathBuf;

use anyhow::Result;

use super::Fleet;
use crate::config;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file (gantry's JSON, as for `check`).
    pub file: PathBuf,
}

pub fn run(args: &Args, fleet: &Fleet) -> Result<()> {
    let parsed = config::load(&args.file)?;
    // The file as written (its formatting and order), once it has passed.
    let text = std::fs::read_to_string(&args.file)?;
    let revision = fleet.connect()?.put(&fleet.keys.config(), text)?;
    println!(
        "fleet {}: config stored, {} component(s), revision {revision}",
        fleet.name,
        parsed.components.len()
    );
    Ok(())
}
