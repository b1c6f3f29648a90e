//! `handoff fleet setconfig FILE [--sign KEY]`: the config every agent converges to. Validated
//! exactly as `check` validates a local one; a bad file (or key) is exit 2 and nothing is
//! stored. Stored as written, sealed for this fleet and key, signed with `--sign`.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{Fleet, SignArgs};
use crate::config;
use crate::error::{ExitCode, Failure};
use crate::fleet::rollout::Snapshot;
use crate::fleet::spec::store_config;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file (gantry's JSON, as for `check`).
    pub file: PathBuf,
    #[command(flatten)]
    pub sign: SignArgs,
}

pub fn run(args: &Args, fleet: &Fleet) -> Result<()> {
    let parsed = config::load(&args.file)?;
    // The file as written (its formatting and order), once it has passed.
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let mut etcd = fleet.connect()?;
    let snapshot = Snapshot::read(&mut etcd, &fleet.keys)?;
    let stored = store_config(
        &mut etcd,
        &fleet.keys,
        &snapshot,
        text,
        args.sign.sign.as_deref(),
    )?;
    let (envelope, revision) = stored.map_err(|why| Failure::new(ExitCode::Busy, why))?;
    println!(
        "fleet {}: config stored, {} component(s), sequence {}, {}, revision {revision}",
        fleet.name,
        parsed.components.len(),
        envelope.sequence,
        match &args.sign.sign {
            Some(key) => format!("signed with {}", key.display()),
            None => "unsigned".to_string(),
        }
    );
    Ok(())
}
