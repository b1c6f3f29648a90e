//! `handoff fleet stop COMPONENT [--no-wait]`: the local `stop` on every host of the fleet
//! (`crate::fleet::stops`): new connections no longer reach the component anywhere, its flows
//! drain, then its containers are retired. Waits, with progress on stderr, until every live
//! host reports it stopped (exit 0); a host that fails to is exit 1, naming it and why.
//! Refused (exit 5) while a rollout of the component runs.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;

use super::update::stored_config;
use super::Fleet;
use crate::error::{ExitCode, Failure};
use crate::fleet::rollout::Snapshot;
use crate::fleet::stops;
use crate::ops::launch::repo_of;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub component: String,
    /// Return once the stop is stored; `fleet list` shows how it goes.
    #[arg(long)]
    pub no_wait: bool,
}

pub fn run(args: &Args, fleet: &Fleet) -> Result<()> {
    stop_everywhere(args, fleet, false)
}

/// `fleet stop` (`kill` false) and `fleet kill` (true).
pub fn stop_everywhere(args: &Args, fleet: &Fleet, kill: bool) -> Result<()> {
    let what = if kill { "kill" } else { "stop" };
    let mut etcd = fleet.connect()?;
    let snapshot = Snapshot::read(&mut etcd, &fleet.keys)?;
    let config = stored_config(fleet, &snapshot)?;
    let name = &config.component(&args.component)?.name;
    repo_of(config.component(name)?)?;
    let stop = match stops::request(&mut etcd, &fleet.keys, &snapshot, name, kill)? {
        Ok(stop) => stop,
        Err(refused) => return Err(Failure::new(ExitCode::Busy, refused).into()),
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
    let mut reported = BTreeSet::new();
    loop {
        let snapshot = Snapshot::read(&mut etcd, &fleet.keys)?;
        if !snapshot.stopped.contains_key(name) {
            anyhow::bail!("{name} was started again (fleet start) before every host stopped it");
        }
        for host in snapshot.alive.keys() {
            let status = snapshot.statuses.get(&(host.clone(), name.clone()));
            if let Some(failed) = status.filter(|s| s.state == "failed" && s.at_ms >= stop.since_ms)
            {
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
            if stops::satisfied(&stop, state) && reported.insert(host.clone()) {
                eprintln!(
                    "handoff: fleet: {host}: {name} {} ({}/{} live hosts)",
                    state.unwrap_or_default(),
                    reported.len(),
                    snapshot.alive.len()
                );
            }
        }
        if snapshot
            .alive
            .keys()
            .all(|host| stops::satisfied(&stop, snapshot.state_of(host, name)))
        {
            println!(
                "fleet {}: {name} is {} on every live host ({} host(s))",
                fleet.name,
                if kill { stops::KILLED } else { stops::STOPPED },
                snapshot.alive.len()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
