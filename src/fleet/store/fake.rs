//! An in-memory [`Store`] with etcd's semantics where the fleet relies on them: one revision
//! counter for every write, transactions whose conditions compare revisions (of a range too)
//! and leases, keys that vanish with their lease, and a watch that sees every write after its
//! revision. Clones share one store, as several agents share one etcd; the test plays the
//! passing of time (a lease expiring) and outages (`set_down`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Result};

use super::{Cond, Entry, Op, Store};

#[derive(Default)]
struct Inner {
    revision: i64,
    keys: BTreeMap<String, Entry>,
    /// Every write and delete: its revision and key.
    log: Vec<(i64, String)>,
    leases: BTreeSet<i64>,
    next_lease: i64,
    down: bool,
    /// Transactions applied, for tests that count writes.
    txns: usize,
}

impl Inner {
    fn record(&mut self, key: &str) -> i64 {
        self.revision += 1;
        self.log.push((self.revision, key.to_string()));
        self.revision
    }

    fn holds(&self, cond: &Cond) -> bool {
        match cond {
            Cond::Modified {
                key,
                prefix: false,
                cmp,
                revision,
            } => cmp.holds(self.keys.get(key).map_or(0, |e| e.mod_revision), *revision),
            Cond::Modified {
                key,
                prefix: true,
                cmp,
                revision,
            } => {
                let mut under = self
                    .keys
                    .range(key.clone()..)
                    .take_while(|(k, _)| k.starts_with(key));
                match under.next() {
                    None => cmp.holds(0, *revision),
                    Some(first) => std::iter::once(first)
                        .chain(under)
                        .all(|(_, e)| cmp.holds(e.mod_revision, *revision)),
                }
            }
            Cond::Created { key, revision } => match self.keys.get(key) {
                None => *revision == 0,
                Some(_) => *revision != 0,
            },
            Cond::Leased { key, lease } => self.keys.get(key).is_some_and(|e| e.lease == *lease),
        }
    }
}

/// Where the watch of one clone stands.
#[derive(Default)]
struct Watching {
    prefixes: Vec<String>,
    seen: i64,
}

#[derive(Clone, Default)]
pub struct FakeStore {
    inner: Arc<Mutex<Inner>>,
    watching: Arc<Mutex<Option<Watching>>>,
}

impl FakeStore {
    pub fn new() -> FakeStore {
        FakeStore::default()
    }

    /// Another client of the same store, with a watch of its own.
    pub fn client(&self) -> FakeStore {
        FakeStore {
            inner: self.inner.clone(),
            watching: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn reachable(&self) -> Result<MutexGuard<'_, Inner>> {
        let inner = self.lock();
        if inner.down {
            bail!("the store is down");
        }
        Ok(inner)
    }

    /// Every call fails while down, as when etcd cannot be reached.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    pub fn grant(&self) -> i64 {
        let mut inner = self.lock();
        inner.next_lease += 1;
        let lease = inner.next_lease;
        inner.leases.insert(lease);
        lease
    }

    /// The lease ran out: its keys go, each a write of its own, as etcd's are.
    pub fn expire(&self, lease: i64) {
        let mut inner = self.lock();
        inner.leases.remove(&lease);
        let gone: Vec<String> = inner
            .keys
            .iter()
            .filter(|(_, e)| e.lease == lease)
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            inner.keys.remove(&key);
            inner.record(&key);
        }
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().keys.get(key).map(|e| e.value.clone())
    }

    pub fn keys_under(&self, prefix: &str) -> Vec<String> {
        self.lock()
            .keys
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Write as someone else would (an operator, an attacker with etcd's root): no conditions.
    pub fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> i64 {
        let mut inner = self.lock();
        let revision = inner.record(key);
        inner.keys.insert(
            key.to_string(),
            Entry {
                key: key.to_string(),
                value: value.into(),
                mod_revision: revision,
                lease: 0,
            },
        );
        revision
    }

    pub fn delete(&self, key: &str) {
        let mut inner = self.lock();
        if inner.keys.remove(key).is_some() {
            inner.record(key);
        }
    }

    pub fn txns(&self) -> usize {
        self.lock().txns
    }

    pub fn revision(&self) -> i64 {
        self.lock().revision
    }
}

impl Store for FakeStore {
    fn range(&mut self, prefix: &str) -> Result<(Vec<Entry>, i64)> {
        let inner = self.reachable()?;
        let entries = inner
            .keys
            .values()
            .filter(|e| e.key.starts_with(prefix))
            .cloned()
            .collect();
        Ok((entries, inner.revision))
    }

    fn txn(&mut self, conds: Vec<Cond>, ops: Vec<Op>) -> Result<Option<i64>> {
        let mut inner = self.reachable()?;
        if !conds.iter().all(|c| inner.holds(c)) {
            return Ok(None);
        }
        for op in &ops {
            if let Op::Put { key, lease, .. } = op {
                if *lease != 0 && !inner.leases.contains(lease) {
                    bail!("writing {key}: lease {lease} not found");
                }
            }
        }
        inner.txns += 1;
        // One transaction is one revision, as in etcd.
        inner.revision += 1;
        let revision = inner.revision;
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    inner.log.push((revision, key.clone()));
                    inner.keys.insert(
                        key.clone(),
                        Entry {
                            key,
                            value,
                            mod_revision: revision,
                            lease,
                        },
                    );
                }
                Op::Delete { key } => {
                    if inner.keys.remove(&key).is_some() {
                        inner.log.push((revision, key));
                    }
                }
            }
        }
        Ok(Some(revision))
    }

    fn watch(&mut self, prefixes: &[String], revision: i64) -> Result<()> {
        drop(self.reachable()?);
        *self.watching.lock().unwrap_or_else(|p| p.into_inner()) = Some(Watching {
            prefixes: prefixes.to_vec(),
            seen: revision,
        });
        Ok(())
    }

    /// Answers at once: a write since the last look, or none (the test has no time to wait).
    fn changed(&mut self, _timeout: Duration) -> Result<bool> {
        let inner = self.reachable()?;
        let mut watching = self.watching.lock().unwrap_or_else(|p| p.into_inner());
        let Some(watch) = watching.as_mut() else {
            bail!("no watch is open");
        };
        let changed = inner.log.iter().any(|(revision, key)| {
            *revision > watch.seen && watch.prefixes.iter().any(|p| key.starts_with(p))
        });
        watch.seen = inner.revision;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_condition_holds_for_no_keys_and_fails_for_one_written_since() {
        let mut store = FakeStore::new();
        let before = store.revision();
        let quiet = Cond::nothing_under_since("/h/", before);
        assert!(store.txn(vec![quiet.clone()], vec![]).unwrap().is_some());
        store.put("/h/a", "x");
        assert!(store.txn(vec![quiet], vec![]).unwrap().is_none());
        let now = store.revision();
        assert!(store
            .txn(vec![Cond::nothing_under_since("/h/", now)], vec![])
            .unwrap()
            .is_some());
    }

    #[test]
    fn keys_go_with_their_lease_and_the_watch_sees_it() {
        let mut store = FakeStore::new();
        let lease = store.grant();
        let written = store
            .txn(
                vec![Cond::absent("/t/0")],
                vec![Op::put_leased("/t/0", "h1", lease)],
            )
            .unwrap();
        assert!(written.is_some());
        assert!(store
            .txn(vec![Cond::leased("/t/0", lease)], vec![])
            .unwrap()
            .is_some());
        store.watch(&["/t/".to_string()], store.revision()).unwrap();
        assert!(!store.changed(Duration::ZERO).unwrap());
        store.expire(lease);
        assert!(store.changed(Duration::ZERO).unwrap());
        assert!(store.get("/t/0").is_none());
        let error = store
            .txn(vec![], vec![Op::put_leased("/t/0", "h1", lease)])
            .unwrap_err();
        assert!(format!("{error}").contains("lease"), "{error}");
        store.set_down(true);
        assert!(store.range("/").is_err());
    }
}
