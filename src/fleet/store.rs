//! What the fleet needs of its store, as a small trait: reads of one key or one prefix at one
//! revision, transactions guarded by revisions and leases, leases, and one watch over a few
//! prefixes. [`super::Etcd`] is the real one; `fake::FakeStore` keeps the same semantics in
//! memory, so the agent's and the rollout's decisions are unit-tested without an etcd.
//!
//! The conditions and operations are handoff's own ([`Cond`], [`Op`]) rather than
//! etcd-client's, so the fake can evaluate them and the decisions never name the client.

use std::time::Duration;

use anyhow::Result;

#[cfg(test)]
pub mod fake;

/// A key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision of its last write.
    pub mod_revision: i64,
    /// The lease it is attached to (0: none).
    pub lease: i64,
}

/// How a revision is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Equal,
    Less,
    Greater,
}

impl Cmp {
    pub fn holds(self, left: i64, right: i64) -> bool {
        match self {
            Cmp::Equal => left == right,
            Cmp::Less => left < right,
            Cmp::Greater => left > right,
        }
    }
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    /// The key's last write (0 when absent) compares so to `revision`. With `prefix`, every
    /// key under it must (none at all compares as 0: etcd's rule for ranges).
    Modified {
        key: String,
        prefix: bool,
        cmp: Cmp,
        revision: i64,
    },
    /// The key was created at `revision` (0: it does not exist).
    Created { key: String, revision: i64 },
    /// The key is attached to `lease`.
    Leased { key: String, lease: i64 },
}

impl Cond {
    pub fn absent(key: impl Into<String>) -> Cond {
        Cond::Created {
            key: key.into(),
            revision: 0,
        }
    }

    pub fn unchanged(key: impl Into<String>, revision: i64) -> Cond {
        Cond::Modified {
            key: key.into(),
            prefix: false,
            cmp: Cmp::Equal,
            revision,
        }
    }

    /// Nothing under `prefix` was written after `revision`.
    pub fn nothing_under_since(prefix: impl Into<String>, revision: i64) -> Cond {
        Cond::Modified {
            key: prefix.into(),
            prefix: true,
            cmp: Cmp::Less,
            revision: revision + 1,
        }
    }

    pub fn leased(key: impl Into<String>, lease: i64) -> Cond {
        Cond::Leased {
            key: key.into(),
            lease,
        }
    }
}

/// An operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Write `value` at `key`, attached to `lease` when not 0.
    Put {
        key: String,
        value: Vec<u8>,
        lease: i64,
    },
    Delete {
        key: String,
    },
}

impl Op {
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: 0,
        }
    }

    pub fn put_leased(key: impl Into<String>, value: impl Into<Vec<u8>>, lease: i64) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease,
        }
    }

    pub fn delete(key: impl Into<String>) -> Op {
        Op::Delete { key: key.into() }
    }
}

/// The fleet's store. Every call is bounded in time; an error means the store could not be
/// asked (the caller retries from a fresh read), never a refused condition.
pub trait Store {
    /// Every key under `prefix`, and the store's revision at the read.
    fn range(&mut self, prefix: &str) -> Result<(Vec<Entry>, i64)>;
    /// Apply `ops` if every condition holds: the revision they were applied at, or `None`.
    fn txn(&mut self, conds: Vec<Cond>, ops: Vec<Op>) -> Result<Option<i64>>;
    /// Watch every key under each of `prefixes` for writes after `revision`, replacing the
    /// watch opened before.
    fn watch(&mut self, prefixes: &[String], revision: i64) -> Result<()>;
    /// Wait up to `timeout` for a write the watch covers: `Ok(true)` when one came. An error
    /// means the watch is gone (the store went away, or stopped answering): read afresh and
    /// watch again.
    fn changed(&mut self, timeout: Duration) -> Result<bool>;
}
