//! `handoff fleet getconfig`: the fleet's stored config, as it was stored.

use std::io::Write;

use anyhow::{Context, Result};

use super::Fleet;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: &Args, fleet: &Fleet) -> Result<()> {
    let Some((text, _)) = fleet.connect()?.get(&fleet.keys.config())? else {
        return Err(fleet.no_config());
    };
    std::io::stdout()
        .write_all(&text)
        .context("writing the config to stdout")
}
