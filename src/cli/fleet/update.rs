//! `handoff fleet update COMPONENT [--tag TAG] [--max-parallel N] [--no-wait]`: a rollout
//! across the fleet (`crate::fleet::rollout`). Waits, with progress on stderr, until every
//! live host serves the tag (exit 0) or the rollout halts (exit 3, naming the host and the
//! reason). Running it again after a fix resumes a halted rollout.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;

use super::Fleet;
use crate::config::{self, Component, Config};
use crate::error::{ExitCode, Failure};
use crate::fleet::rollout::{self, Snapshot, DONE, HALTED};
use crate::fleet::{Etcd, RolloutRecord};
use crate::ops::launch::repo_of;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub component: String,
    /// Image tag to roll out instead of the config's `tag`.
    #[arg(long)]
    pub tag: Option<String>,
    /// How many hosts may update at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_parallel: u32,
    /// Return once the rollout is started; `fleet list` shows how it goes.
    #[arg(long)]
    pub no_wait: bool,
}

/// The fleet's stored config, parsed.
pub fn stored_config(fleet: &Fleet, snapshot: &Snapshot) -> Result<Config> {
    let Some(text) = &snapshot.config else {
        return Err(fleet.no_config());
    };
    config::parse(text)
}

pub fn run(args: &Args, fleet: &Fleet) -> Result<()> {
    let mut etcd = fleet.connect()?;
    let snapshot = Snapshot::read(&mut etcd, &fleet.keys)?;
    let config = stored_config(fleet, &snapshot)?;
    let component = config.component(&args.component)?;
    repo_of(component)?;
    let tag = args.tag.clone().unwrap_or_else(|| component.tag.clone());
    roll(
        &mut etcd,
        fleet,
        &snapshot,
        component,
        &tag,
        args.max_parallel,
        args.no_wait,
    )
}

/// Start (or resume) the rollout of `component` to `tag`, then wait for it unless `no_wait`.
pub fn roll(
    etcd: &mut Etcd,
    fleet: &Fleet,
    snapshot: &Snapshot,
    component: &Component,
    tag: &str,
    max_parallel: u32,
    no_wait: bool,
) -> Result<()> {
    let record = match rollout::begin(
        etcd,
        &fleet.keys,
        snapshot,
        &component.name,
        tag,
        max_parallel,
        &component.tag,
    )? {
        Ok(record) => record,
        Err(refused) => return Err(Failure::new(ExitCode::Busy, refused).into()),
    };
    eprintln!(
        "handoff: fleet: rollout of {} to {tag} started: at most {} host(s) at a time, {} live host(s)",
        record.component,
        record.max_parallel,
        snapshot.alive.len()
    );
    if no_wait {
        println!(
            "fleet {}: rollout of {} to {tag} running; `handoff fleet list` shows it",
            fleet.name, record.component
        );
        return Ok(());
    }
    wait(etcd, fleet, &record)
}

fn wait(etcd: &mut Etcd, fleet: &Fleet, started: &RolloutRecord) -> Result<()> {
    let mut reported = BTreeSet::new();
    loop {
        let snapshot = Snapshot::read(etcd, &fleet.keys)?;
        let Some((rollout, _)) = &snapshot.rollout else {
            anyhow::bail!("the rollout record disappeared");
        };
        if rollout.component != started.component || rollout.tag != started.tag {
            anyhow::bail!(
                "another rollout replaced this one ({} to {})",
                rollout.component,
                rollout.tag
            );
        }
        for host in snapshot.alive.keys() {
            if snapshot.serving_tag(host, &rollout.component) == Some(rollout.tag.as_str())
                && reported.insert(host.clone())
            {
                eprintln!(
                    "handoff: fleet: {host}: {} serves {} ({}/{} live hosts)",
                    rollout.component,
                    rollout.tag,
                    reported.len(),
                    snapshot.alive.len()
                );
            }
        }
        match rollout.state.as_str() {
            DONE => {
                println!(
                    "fleet {}: every live host serves {} {} ({} host(s))",
                    fleet.name,
                    rollout.component,
                    rollout.tag,
                    snapshot.alive.len()
                );
                return Ok(());
            }
            HALTED => {
                return Err(Failure::new(
                    ExitCode::NotReady,
                    format!(
                        "the rollout of {} to {} halted: {}; the other hosts were left as they \
                         were (run the command again after a fix to resume)",
                        rollout.component,
                        rollout.tag,
                        rollout.reason.as_deref().unwrap_or("no reason recorded")
                    ),
                )
                .into());
            }
            _ => {
                // Halting a lost host and marking the end are everyone's job: this command's
                // too, so that it ends even if no agent is left to notice.
                if rollout::check(etcd, &fleet.keys, &snapshot)?.is_none() {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}
