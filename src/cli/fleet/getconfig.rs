//! `handoff fleet getconfig`: the fleet's stored config, as it was stored.

use std::io::Write;

use anyhow::{Context, Result};

use super::Fleet;
use crate::error::Failure;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: &Args, fleet: &Fleet) -> Result<()> {
    let Some((text, _)) = fleet.connect()?.get(&fleet.keys.config())? else {
        return Err(Failure::input(format!(
            "fleet {}: no config stored (handoff fleet setconfig FILE)",
            fleet.name
        ))
        .into());
    };
    std::io::stdout()
        .write_all(&text)
        .context("writing the config to stdout")
}
