//! `handoff fleet update COMPONENT [--tag TAG] [--max-parallel N] [--sign KEY] [--no-wait]`: a
//! rollout across the fleet (`crate::fleet::rollout`). Waits, with progress on stderr, until
//! every live host serves the tag (exit 0) or the rollout halts (exit 3, naming the host and
//! the reason — a failed update, a host lost mid-update, or a host that refused the rollout).
//! Running it again after a fix starts it again where it halted.

use std::collections::BTreeSet;

use anyhow::Result;

use super::{Fleet, SignArgs};
use crate::config::Component;
use crate::error::{ExitCode, Failure};
use crate::fleet::rollout::{Progress, Rollout, Snapshot};
use crate::fleet::spec::begin;
use crate::fleet::Etcd;
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
    #[command(flatten)]
    pub sign: SignArgs,
}

pub fn run(args: &Args, fleet: &Fleet) -> Result<()> {
    let mut etcd = fleet.connect()?;
    let snapshot = Snapshot::read(&mut etcd, &fleet.keys)?;
    let config = fleet.stored_config(&snapshot)?;
    let component = config.component(&args.component)?;
    repo_of(component)?;
    let tag = args.tag.clone().unwrap_or_else(|| component.tag.clone());
    let wanted = Wanted {
        tag: &tag,
        max_parallel: args.max_parallel,
        no_wait: args.no_wait,
        sign: &args.sign,
    };
    roll(&mut etcd, fleet, &snapshot, component, wanted)
}

/// What a rollout is asked for.
pub struct Wanted<'a> {
    pub tag: &'a str,
    pub max_parallel: u32,
    pub no_wait: bool,
    pub sign: &'a SignArgs,
}

/// Start (or resume) the rollout of `component` to `wanted.tag`, then wait for it unless
/// `no_wait`.
pub fn roll(
    etcd: &mut Etcd,
    fleet: &Fleet,
    snapshot: &Snapshot,
    component: &Component,
    wanted: Wanted,
) -> Result<()> {
    let tag = wanted.tag;
    let rollout = begin(
        etcd,
        &fleet.keys,
        snapshot,
        &component.name,
        tag,
        wanted.max_parallel,
        &component.tag,
        wanted.sign.sign.as_deref(),
    )?
    .map_err(|refused| Failure::new(ExitCode::Busy, refused))?;
    eprintln!(
        "handoff: fleet: rollout of {} to {tag} started (sequence {}): at most {} host(s) at a \
         time, {} live host(s)",
        rollout.spec.component,
        rollout.sequence,
        rollout.spec.max_parallel,
        snapshot.alive.len()
    );
    if wanted.no_wait {
        println!(
            "fleet {}: rollout of {} to {tag} running; `handoff fleet list` shows it",
            fleet.name, rollout.spec.component
        );
        return Ok(());
    }
    wait(etcd, fleet, &rollout)
}

fn wait(etcd: &mut Etcd, fleet: &Fleet, started: &Rollout) -> Result<()> {
    let mut reported = BTreeSet::new();
    let (component, tag) = (&started.spec.component, &started.spec.tag);
    let progress =
        fleet.wait_for(etcd, |snapshot| {
            if snapshot.stored_rollout().map(|r| r.sequence) != Some(started.sequence) {
                anyhow::bail!(
                    "another rollout replaced this one: {}",
                    snapshot.stored_rollout().map_or(
                        "the record is gone".to_string(),
                        |r| format!("{} to {}", r.spec.component, r.spec.tag)
                    )
                );
            }
            for host in snapshot.alive.keys() {
                if snapshot.serving_tag(host, component) == Some(tag.as_str())
                    && reported.insert(host.clone())
                {
                    eprintln!(
                        "handoff: fleet: {host}: {component} serves {tag} ({}/{} live hosts)",
                        reported.len(),
                        snapshot.alive.len()
                    );
                }
            }
            Ok(match snapshot.progress(started) {
                Progress::Running => None,
                done_or_halted => Some((done_or_halted, snapshot.alive.len())),
            })
        })?;
    match progress {
        (Progress::Halted { reason, .. }, _) => Err(Failure::new(
            ExitCode::NotReady,
            format!(
                "the rollout of {component} to {tag} halted: {reason}; the other hosts were left \
                 as they were (run the command again after a fix to resume)"
            ),
        )
        .into()),
        (_, hosts) => {
            println!(
                "fleet {}: every live host serves {component} {tag} ({hosts} host(s))",
                fleet.name
            );
            Ok(())
        }
    }
}
