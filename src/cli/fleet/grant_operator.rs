//! `handoff fleet grant-operator NAME [--new-password-file FILE] [--reset]`: the etcd user and
//! role of one operator, with exactly what the fleet's commands need (`Keys::operator_grants`):
//! write the fleet's spec (config, rollouts, stops and their signatures), read the rest. What
//! hosts report (registrations, statuses, turns) stays theirs. Idempotent, like `grant-host`.

use std::path::PathBuf;

use anyhow::Result;

use super::Fleet;
use crate::fleet::keys::valid_name;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The operator's name; the etcd user is handoff-FLEET-op-NAME.
    pub name: String,
    /// As for `grant-host`: the password of a user created now (or to set on an existing one).
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
    /// Take away whatever else a role or user of that name already holds, instead of refusing.
    #[arg(long)]
    pub reset: bool,
}

pub fn run(args: &Args, fleet: &Fleet) -> Result<()> {
    valid_name("NAME", &args.name)?;
    let user = fleet.keys.operator_user(&args.name);
    let grants = fleet.keys.operator_grants();
    super::grant_host::grant(
        fleet,
        &user,
        &grants,
        args.new_password_file.as_ref(),
        args.reset,
    )
}
