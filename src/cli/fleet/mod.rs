//! `handoff fleet [--etcd URLS] [--fleet NAME] SUBCOMMAND`: gantryd's distributed mode, on
//! etcd v3 (the store and its key layout: [`crate::fleet`]). One file per subcommand.

pub mod agent;
mod drains;
pub mod getconfig;
pub mod kill;
pub mod list;
pub mod rollback;
pub mod setconfig;
pub mod start;
pub mod stop;
pub mod update;

use anyhow::Result;
use clap::Subcommand;

use super::Globals;
use crate::error::Failure;
use crate::fleet::etcd::parse_endpoints;
use crate::fleet::{Etcd, Keys, DEFAULT_ENDPOINTS, DEFAULT_FLEET};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// etcd endpoints, comma-separated http://HOST:PORT.
    #[arg(long, env = "HANDOFF_ETCD", default_value = DEFAULT_ENDPOINTS, value_name = "URLS")]
    pub etcd: String,
    /// The fleet: independent fleets can share one etcd.
    #[arg(long, env = "HANDOFF_FLEET", default_value = DEFAULT_FLEET, value_name = "NAME")]
    pub fleet: String,
    #[command(subcommand)]
    pub command: FleetCommand,
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Validate FILE exactly as `check` does and store it as the fleet's config.
    Setconfig(setconfig::Args),
    /// Print the fleet's stored config.
    Getconfig(getconfig::Args),
    /// The agent of one host: registers it under a lease, keeps it alive, and converges the
    /// host to the fleet's config (every component started here) whenever the config changes.
    Agent(agent::Args),
    /// The fleet's hosts: alive or lost, and since when.
    List(list::Args),
    /// Roll COMPONENT out to a tag across the fleet, at most --max-parallel hosts at once.
    Update(update::Args),
    /// Roll COMPONENT back to the tag the fleet ran before its last rollout.
    Rollback(rollback::Args),
    /// Stop COMPONENT on every host: out of the ruleset, drained, then retired.
    Stop(stop::Args),
    /// Kill COMPONENT on every host: out of the ruleset and retired at once, without draining.
    Kill(kill::Args),
    /// Lift a fleet-wide stop or kill: every host starts COMPONENT again.
    Start(start::Args),
}

/// What every fleet subcommand needs: where etcd is and which fleet.
pub struct Fleet {
    pub endpoints: Vec<String>,
    pub keys: Keys,
    pub name: String,
}

impl Fleet {
    pub fn connect(&self) -> Result<Etcd> {
        Etcd::connect(&self.endpoints)
    }

    /// The error of a command that needs the stored config when there is none.
    pub fn no_config(&self) -> anyhow::Error {
        Failure::input(format!(
            "fleet {}: no config stored (handoff fleet setconfig FILE)",
            self.name
        ))
        .into()
    }
}

pub fn run(args: &Args, globals: &Globals) -> Result<()> {
    let fleet = Fleet {
        endpoints: parse_endpoints(&args.etcd)?,
        keys: Keys::new(&args.fleet)?,
        name: args.fleet.clone(),
    };
    match &args.command {
        FleetCommand::Setconfig(args) => setconfig::run(args, &fleet),
        FleetCommand::Getconfig(args) => getconfig::run(args, &fleet),
        FleetCommand::Agent(args) => agent::run(args, &fleet, globals),
        FleetCommand::List(args) => list::run(args, &fleet),
        FleetCommand::Update(args) => update::run(args, &fleet),
        FleetCommand::Rollback(args) => rollback::run(args, &fleet),
        FleetCommand::Stop(args) => stop::run(args, &fleet),
        FleetCommand::Kill(args) => kill::run(args, &fleet),
        FleetCommand::Start(args) => start::run(args, &fleet),
    }
}
