//! `handoff fleet [--etcd URLS] [--fleet NAME] [--cacert FILE] [--cert FILE --key FILE]
//! [--user NAME --password-file FILE] SUBCOMMAND`: gantryd's distributed mode, on etcd v3 (the
//! store and its key layout: [`crate::fleet`]; TLS and logins: [`crate::fleet::access`]). One
//! file per subcommand.

pub mod agent;
pub mod getconfig;
pub mod grant_host;
pub mod grant_operator;
pub mod kill;
pub mod list;
pub mod revoke;
pub mod rollback;
pub mod setconfig;
pub mod start;
pub mod stop;
pub mod update;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;

use super::Globals;
use crate::config::{self, Config};
use crate::error::Failure;
use crate::fleet::access::{Access, Settings};
use crate::fleet::admission::{describe, Required, DEFAULT_SIGNERS};
use crate::fleet::rollout::Snapshot;
use crate::fleet::sealed::Stored;
use crate::fleet::signing::Signers;
use crate::fleet::store::Store;
use crate::fleet::{Etcd, Keys, DEFAULT_ENDPOINTS, DEFAULT_FLEET};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// etcd endpoints, comma-separated http://HOST:PORT, or https://HOST:PORT (then --cacert
    /// is needed); all of one scheme.
    #[arg(long, env = "HANDOFF_ETCD", default_value = DEFAULT_ENDPOINTS, value_name = "URLS")]
    pub etcd: String,
    /// The fleet: independent fleets can share one etcd.
    #[arg(long, env = "HANDOFF_FLEET", default_value = DEFAULT_FLEET, value_name = "NAME")]
    pub fleet: String,
    /// The CA certificate(s) that etcd's server certificate must be signed by (https://).
    #[arg(long, env = "HANDOFF_ETCD_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Our client certificate, for etcd's --client-cert-auth (its CN is the etcd user).
    #[arg(long, env = "HANDOFF_ETCD_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert: readable by its owner only.
    #[arg(long, env = "HANDOFF_ETCD_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The etcd user to log in as, with --password-file.
    #[arg(long, env = "HANDOFF_ETCD_USER", value_name = "NAME")]
    pub user: Option<String>,
    /// The file holding the user's password (its first line; readable by its owner only). A
    /// password is never taken on the command line.
    #[arg(long, env = "HANDOFF_ETCD_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
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
    /// Create (or check) HOST's etcd user and role: write its own keys and the turns, read the
    /// fleet, nothing else. Run with etcd's root login.
    GrantHost(grant_host::Args),
    /// Create (or check) operator NAME's etcd user and role: write the fleet's spec, read the
    /// rest. Run with etcd's root login.
    GrantOperator(grant_operator::Args),
    /// Delete a host's (or with --operator, an operator's) etcd user and role.
    Revoke(revoke::Args),
}

/// What every fleet subcommand needs: where etcd is, how to reach it, and which fleet.
pub struct Fleet {
    pub access: Access,
    pub keys: Keys,
    pub name: String,
}

impl Fleet {
    pub fn connect(&self) -> Result<Etcd> {
        Etcd::connect(&self.access)
    }

    /// The error of a command that needs the stored config when there is none.
    pub fn no_config(&self) -> anyhow::Error {
        Failure::input(format!(
            "fleet {}: no config stored (handoff fleet setconfig FILE)",
            self.name
        ))
        .into()
    }

    /// The fleet's stored config, parsed (as stored: an operator's view, not a host's).
    pub fn stored_config(&self, snapshot: &Snapshot) -> Result<Config> {
        let Some(envelope) = snapshot.config.as_ref().and_then(Stored::envelope) else {
            return Err(self.no_config());
        };
        config::parse(&envelope.body)
    }

    /// Read the fleet until `decide` says what to return, watching the fleet between reads
    /// (no polling): a write anywhere under the fleet's root wakes it.
    pub fn wait_for<T>(
        &self,
        etcd: &mut Etcd,
        mut decide: impl FnMut(&Snapshot) -> Result<Option<T>>,
    ) -> Result<T> {
        loop {
            let snapshot = Snapshot::read(etcd, &self.keys)?;
            if let Some(answer) = decide(&snapshot)? {
                return Ok(answer);
            }
            etcd.watch(&[self.keys.root().to_string()], snapshot.revision)?;
            while !etcd.changed(Duration::from_secs(5))? {}
        }
    }
}

/// `--sign KEY` of the commands that write the spec.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// Sign what is stored with this OpenSSH ed25519 private key (or a public key whose
    /// private half ssh-agent holds), as `ssh-keygen -Y sign -n handoff-fleet` would: hosts
    /// with a signers file refuse what is not signed by a key listed there.
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,
}

/// `--signers FILE` of the commands that show who signed what.
#[derive(Debug, clap::Args)]
pub struct SignersArgs {
    /// Check signatures against this allowed_signers file [default:
    /// /etc/handoff/fleet-signers, when it exists]; without one, a signature's key is shown
    /// unchecked.
    #[arg(long, value_name = "FILE")]
    pub signers: Option<PathBuf>,
}

impl SignersArgs {
    pub fn load(&self) -> Result<Option<Required>> {
        let file = match &self.signers {
            Some(file) => file.clone(),
            None if Path::new(DEFAULT_SIGNERS).exists() => PathBuf::from(DEFAULT_SIGNERS),
            None => return Ok(None),
        };
        Ok(Some(Required {
            signers: Signers::load(&file)?,
            file,
        }))
    }
}

/// Who signed `stored`, in a few words.
pub fn signed_by(stored: Option<&Stored>, required: Option<&Required>) -> String {
    stored.map_or_else(|| "not stored".to_string(), |s| describe(s, required))
}

pub fn run(args: &Args, globals: &Globals) -> Result<()> {
    let fleet = Fleet {
        access: Access::new(&Settings {
            endpoints: args.etcd.clone(),
            cacert: args.cacert.clone(),
            cert: args.cert.clone(),
            key: args.key.clone(),
            user: args.user.clone(),
            password_file: args.password_file.clone(),
        })?,
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
        FleetCommand::GrantHost(args) => grant_host::run(args, &fleet),
        FleetCommand::GrantOperator(args) => grant_operator::run(args, &fleet),
        FleetCommand::Revoke(args) => revoke::run(args, &fleet),
    }
}
