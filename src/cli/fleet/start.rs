//! `handoff fleet start COMPONENT [--no-wait]`: lift a fleet-wide stop or kill. Every agent
//! then starts the component on its host again, at the tag the fleet runs (the config's, or
//! that of the component's last finished rollout). Waits until every live host serves it.

use std::time::Duration;

use anyhow::Result;

use super::update::stored_config;
use super::Fleet;
use crate::fleet::rollout::Snapshot;
use crate::fleet::stops;

pub type Args = super::stop::Args;

pub fn run(args: &Args, fleet: &Fleet) -> Result<()> {
    let mut etcd = fleet.connect()?;
    let snapshot = Snapshot::read(&mut etcd, &fleet.keys)?;
    let config = stored_config(fleet, &snapshot)?;
    let name = &config.component(&args.component)?.name;
    if !stops::release(&mut etcd, &fleet.keys, name)? {
        println!(
            "fleet {}: {name} is not stopped fleet-wide; nothing to do",
            fleet.name
        );
        return Ok(());
    }
    eprintln!(
        "handoff: fleet: {name}: start asked of {} live host(s)",
        snapshot.alive.len()
    );
    if args.no_wait {
        println!(
            "fleet {}: {name}: start asked; `handoff fleet list` shows it",
            fleet.name
        );
        return Ok(());
    }
    loop {
        let snapshot = Snapshot::read(&mut etcd, &fleet.keys)?;
        if snapshot.stopped.contains_key(name) {
            anyhow::bail!("{name} was stopped again before every host started it");
        }
        if snapshot
            .alive
            .keys()
            .all(|host| snapshot.serving_tag(host, name).is_some())
        {
            println!(
                "fleet {}: {name} serves on every live host ({} host(s))",
                fleet.name,
                snapshot.alive.len()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
