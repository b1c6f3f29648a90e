//! `handoff fleet grant-host HOST [--new-password-file FILE] [--reset]`: the etcd user and role
//! of one host, with exactly what its agent needs (`Keys::host_grants`): read the fleet, write
//! its own registration, member record, statuses, refusals, halt and updating marker, and the
//! turns. Idempotent: run again, it changes nothing and says so. Run with etcd's root login.

use std::path::PathBuf;

use anyhow::Result;

use super::Fleet;
use crate::fleet::access::{self, Granted};
use crate::fleet::keys::valid_host;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The host, as its agent's --host.
    pub host: String,
    /// The password of a user created now, or to set on an existing one (the file's first
    /// line; readable by its owner only). Without it, a new user has no password and logs in
    /// with a client certificate whose CN is its name.
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
    /// Take away whatever else a role or user of that name already holds, instead of refusing.
    #[arg(long)]
    pub reset: bool,
}

pub fn run(args: &Args, fleet: &Fleet) -> Result<()> {
    valid_host("HOST", &args.host)?;
    let user = fleet.keys.host_user(&args.host);
    let grants = fleet.keys.host_grants(&args.host);
    grant(
        fleet,
        &user,
        &grants,
        args.new_password_file.as_ref(),
        args.reset,
    )
}

/// Grant `user` exactly `grants` and show what changed (shared with `grant-operator`).
pub(super) fn grant(
    fleet: &Fleet,
    user: &str,
    grants: &[crate::fleet::keys::Grant],
    new_password_file: Option<&PathBuf>,
    reset: bool,
) -> Result<()> {
    let password = new_password_file
        .map(|file| access::read_secret(file, "--new-password-file"))
        .transpose()?;
    let granted = access::grant(
        &mut fleet.connect()?,
        user,
        grants,
        password.as_ref(),
        reset,
    )?;
    show(user, &granted, password.is_some());
    Ok(())
}

fn show(user: &str, granted: &Granted, password: bool) {
    if granted.changes.is_empty() {
        println!("{user}: nothing to change: the user and its role already grant exactly this");
    }
    for change in &granted.changes {
        println!("{change}");
    }
    if !granted.enforced {
        println!(
            "{user}: etcd's authentication is off, so these rights are not enforced yet: run \
             `etcdctl user add root`, `etcdctl user grant-role root root`, `etcdctl auth enable`"
        );
    }
    if !password {
        println!(
            "{user}: with client-certificate authentication (etcd --client-cert-auth), its \
             certificate's subject must be CN={user}, e.g. openssl req -new -subj /CN={user} ..."
        );
    }
}
