//! The etcd users and roles of a fleet: one user and one role of the same name per host and
//! per operator, granted exactly the permissions drawn by [`Keys`](crate::fleet::Keys), and
//! revoked together. A role found with more is refused, never widened or silently narrowed,
//! unless asked to `reset` it.

use std::collections::BTreeSet;
use std::fmt;

use anyhow::Result;

use super::secrets::Secret;
use crate::error::Failure;
use crate::fleet::etcd::Etcd;
use crate::fleet::keys::{Access as Rights, Grant};

/// A permission as etcd holds it: a key, the end of its range (empty: the key alone) and its
/// type (etcd's numbers: 0 read, 1 write, 2 readwrite).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Held {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub kind: i32,
}

/// etcd's permission types.
pub const READ: i32 = 0;
pub const WRITE: i32 = 1;
pub const READWRITE: i32 = 2;

impl Held {
    pub(super) fn of(grant: &Grant) -> Held {
        Held {
            key: grant.key.as_bytes().to_vec(),
            range_end: if grant.prefix {
                prefix_end(grant.key.as_bytes())
            } else {
                Vec::new()
            },
            kind: match grant.access {
                Rights::Read => READ,
                Rights::ReadWrite => READWRITE,
            },
        }
    }
}

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            READ => "read",
            WRITE => "write",
            READWRITE => "readwrite",
            _ => "unknown",
        };
        let key = String::from_utf8_lossy(&self.key);
        if self.range_end.is_empty() {
            write!(f, "{kind} {key}")
        } else if self.range_end == prefix_end(&self.key) {
            write!(f, "{kind} {key}*")
        } else if self.range_end == b"\0" {
            write!(f, "{kind} every key from {key}")
        } else {
            write!(
                f,
                "{kind} [{key}, {})",
                String::from_utf8_lossy(&self.range_end)
            )
        }
    }
}

/// The end of the range of every key that starts with `prefix`: etcd's `[key, key+1)`, the
/// last byte that can be incremented incremented and what follows it dropped.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: to the end of the keyspace.
    vec![0]
}

/// What [`grant`] found and did.
#[derive(Debug, Default)]
pub struct Granted {
    /// What was changed, one line each; empty when everything already was as asked.
    pub changes: Vec<String>,
    /// Whether etcd enforces users and roles at all (`etcdctl auth enable`).
    pub enforced: bool,
}

/// Make `user` exist with a role of the same name holding exactly `grants`: create what is
/// missing, add what the role lacks. A role (or user) that already holds more is refused,
/// naming what, unless `reset`, which takes it away. `password`: set for a new user, and
/// for an existing one whose password differs; `None` creates the user without a password
/// (client-certificate authentication only).
pub fn grant(
    etcd: &mut Etcd,
    user: &str,
    grants: &[Grant],
    password: Option<&Secret>,
    reset: bool,
) -> Result<Granted> {
    let role = user;
    let wanted: BTreeSet<Held> = grants.iter().map(Held::of).collect();
    let held = etcd.role_permissions(role)?;
    let roles = etcd.user_roles(user)?;
    let extra: Vec<Held> = held
        .iter()
        .flatten()
        .filter(|p| !wanted.contains(p))
        .cloned()
        .collect();
    let other_roles: Vec<String> = roles
        .iter()
        .flatten()
        .filter(|r| r.as_str() != role)
        .cloned()
        .collect();
    if !reset && (!extra.is_empty() || !other_roles.is_empty()) {
        let mut found = Vec::new();
        if !extra.is_empty() {
            found.push(format!(
                "role {role} also grants {}",
                extra
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !other_roles.is_empty() {
            found.push(format!(
                "user {user} also has the role(s) {}",
                other_roles.join(", ")
            ));
        }
        return Err(Failure::input(format!(
            "{}: more than this user should have; nothing was changed (another fleet's user \
             of the same name? --reset replaces them with exactly what it needs)",
            found.join("; ")
        ))
        .into());
    }
    let mut granted = Granted::default();
    if held.is_none() {
        etcd.add_role(role)?;
        granted.changes.push(format!("role {role} created"));
    }
    for permission in &extra {
        etcd.revoke_permission(role, &permission.key, &permission.range_end)?;
        granted
            .changes
            .push(format!("role {role}: {permission} taken away (--reset)"));
    }
    let have: BTreeSet<Held> = held.into_iter().flatten().collect();
    for permission in wanted.difference(&have) {
        etcd.grant_permission(role, permission)?;
        granted
            .changes
            .push(format!("role {role}: {permission} granted"));
    }
    match &roles {
        None => {
            etcd.add_user(user, password.map(Secret::expose))?;
            granted.changes.push(format!(
                "user {user} created {}",
                if password.is_some() {
                    "with the password given"
                } else {
                    "without a password (client-certificate authentication only)"
                }
            ));
        }
        Some(_) => {
            if let Some(password) = password {
                match etcd.password_is(user, password.expose())? {
                    Some(true) => {}
                    Some(false) => {
                        etcd.change_password(user, password.expose())?;
                        granted
                            .changes
                            .push(format!("user {user}: password changed"));
                    }
                    None => {
                        etcd.change_password(user, password.expose())?;
                        granted.changes.push(format!(
                            "user {user}: password set (with etcd's authentication off, \
                             whether it differed cannot be checked)"
                        ));
                    }
                }
            }
        }
    }
    for other in &other_roles {
        etcd.revoke_role(user, other)?;
        granted
            .changes
            .push(format!("user {user}: role {other} taken away (--reset)"));
    }
    if !roles.iter().flatten().any(|r| r == role) {
        etcd.grant_role(user, role)?;
        granted
            .changes
            .push(format!("user {user}: role {role} granted"));
    }
    granted.enforced = etcd.auth_enabled()?;
    Ok(granted)
}

/// What [`revoke`] deleted: the user, the role (each `false` when there was none).
#[derive(Debug)]
pub struct Revoked {
    pub user: bool,
    pub role: bool,
}

/// Delete `user` and its role of the same name; what was not there is not an error.
pub fn revoke(etcd: &mut Etcd, user: &str) -> Result<Revoked> {
    let user_deleted = etcd.delete_user(user)?;
    let role_deleted = etcd.delete_role(user)?;
    Ok(Revoked {
        user: user_deleted,
        role: role_deleted,
    })
}
