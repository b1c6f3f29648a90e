//! `handoff fleet revoke HOST` / `revoke --operator NAME`: delete the etcd user and role that
//! `grant-host` / `grant-operator` made. Its credentials are refused by etcd afterwards; what
//! was already gone is not an error. Run with etcd's root login.

use anyhow::Result;

use super::Fleet;
use crate::error::Failure;
use crate::fleet::access;
use crate::fleet::keys::{valid_host, valid_name};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The host (or, with --operator, the operator) whose user and role go.
    pub name: String,
    /// NAME is an operator (user handoff-FLEET-op-NAME), not a host.
    #[arg(long)]
    pub operator: bool,
}

pub fn run(args: &Args, fleet: &Fleet) -> Result<()> {
    let user = if args.operator {
        valid_name("NAME", &args.name)?;
        fleet.keys.operator_user(&args.name)
    } else {
        if let Some(operator) = args.name.strip_prefix("op-") {
            return Err(Failure::input(format!(
                "revoke {:?}: no host is named op-* (those are the operators' etcd users); \
                 for operator {operator:?}, run `handoff fleet revoke --operator {operator}`",
                args.name
            ))
            .into());
        }
        valid_host("HOST", &args.name)?;
        fleet.keys.host_user(&args.name)
    };
    let revoked = access::revoke(&mut fleet.connect()?, &user)?;
    match (revoked.user, revoked.role) {
        (false, false) => println!("{user}: nothing to revoke: no such user or role"),
        (user_deleted, role_deleted) => {
            if user_deleted {
                println!("user {user} deleted");
            }
            if role_deleted {
                println!("role {user} deleted");
            }
        }
    }
    Ok(())
}
