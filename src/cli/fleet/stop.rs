//! `handoff fleet stop COMPONENT [--sign KEY] [--no-wait]`: the local `stop` on every host of
//! the fleet (`crate::fleet::stops`): new connections no longer reach the component anywhere,
//! its flows drain, then its containers are retired. Waits, with progress on stderr, until
//! every live host reports it stopped (exit 0); a host that fails to is exit 1, naming it and
//! why. Refused (exit 5) while a rollout of the component runs.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use super::{Fleet, SignArgs};
use crate::error::{ExitCode, Failure};
use crate::fleet::records::{state, StopAction};
use crate::fleet::rollout::Snapshot;
use crate::fleet::spec::{ask, Asked};
use crate::fleet::stops;
use crate::ops::launch::repo_of;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub component: String,
    /// Return once the request is stored; `fleet list` shows how it goes.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub sign: SignArgs,
}

pub fn run(args: &Args, fleet: &Fleet) -> Result<()> {
    stop_everywhere(args, fleet, StopAction::Stop)
}

/// `fleet stop`, `fleet kill` and `fleet start`: store what is asked of the component, then
/// wait until every live host has done it.
pub fn stop_everywhere(args: &Args, fleet: &Fleet, action: StopAction) -> Result<()> {
    let what = match action {
        StopAction::Stop => "stop",
        StopAction::Kill => "kill",
        StopAction::Start => "start",
    };
    let mut etcd = fleet.connect()?;
    let snapshot = Snapshot::read(&mut etcd, &fleet.keys)?;
    let config = fleet.stored_config(&snapshot)?;
    let name = config.component(&args.component)?.name.clone();
    repo_of(config.component(&name)?)?;
    let sign = args.sign.sign.as_deref();
    let asked = ask(&mut etcd, &fleet.keys, &snapshot, &name, action, sign)?
        .map_err(|refused| Failure::new(ExitCode::Busy, refused))?;
    let stop = match asked {
        Asked::NotStopped => {
            println!(
                "fleet {}: {name} is not stopped fleet-wide; nothing to do",
                fleet.name
            );
            return Ok(());
        }
        Asked::Written(stop) => stop,
    };
    eprintln!(
        "handoff: fleet: {name}: {what} asked of {} live host(s)",
        snapshot.alive.len()
    );
    if args.no_wait {
        println!(
            "fleet {}: {name}: {what} asked; `handoff fleet list` shows it",
            fleet.name
        );
        return Ok(());
    }
    // A failure reported before this request (the same stop asked again after it failed) is
    // not this request's: only a status written since counts.
    let before: BTreeMap<&String, u64> = snapshot
        .alive
        .keys()
        .filter_map(|host| Some((host, snapshot.status(host, &name)?.at_ms)))
        .collect();
    let mut reported = BTreeSet::new();
    let hosts = fleet.wait_for(&mut etcd, |snapshot| {
        if snapshot.stored_stop(&name).as_ref() != Some(&stop) {
            anyhow::bail!("{name}: another stop, kill or start replaced this {what}");
        }
        for host in snapshot.alive.keys() {
            let status = snapshot.status(host, &name);
            if let Some(failed) = status.filter(|s| {
                s.state == state::FAILED
                    && s.at_ms >= stop.since_ms
                    && before.get(host) != Some(&s.at_ms)
                    && action != StopAction::Start
            }) {
                return Err(Failure::new(
                    ExitCode::Runtime,
                    format!(
                        "{host}: {what} of {name} failed: {}",
                        failed.reason.as_deref().unwrap_or("no reason recorded")
                    ),
                )
                .into());
            }
            let state = status.map(|s| s.state.as_str());
            if done(&stop, action, state) && reported.insert(host.clone()) {
                eprintln!(
                    "handoff: fleet: {host}: {name} {} ({}/{} live hosts)",
                    state.unwrap_or_default(),
                    reported.len(),
                    snapshot.alive.len()
                );
            }
        }
        Ok(snapshot
            .alive
            .keys()
            .all(|host| done(&stop, action, snapshot.state_of(host, &name)))
            .then_some(snapshot.alive.len()))
    })?;
    let outcome = match action {
        StopAction::Stop => "stopped",
        StopAction::Kill => "killed",
        StopAction::Start => "serving",
    };
    println!(
        "fleet {}: {name} is {outcome} on every live host ({hosts} host(s))",
        fleet.name
    );
    Ok(())
}

/// Whether a host that reports `reported` has done what was asked.
fn done(
    stop: &crate::fleet::records::StopSpec,
    action: StopAction,
    reported: Option<&str>,
) -> bool {
    match action {
        StopAction::Start => reported == Some(state::READY),
        _ => stops::satisfied(stop, reported),
    }
}
