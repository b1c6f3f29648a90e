//! Keys, transactions, the watch and leases: the [`Store`] the fleet reads and writes through,
//! its conditions and operations turned into etcd's, and the lease calls the registration
//! makes.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};

use super::{Etcd, REQUEST_TIMEOUT};
use crate::error::Failure;
use crate::fleet::store::{Cmp, Cond, Entry, Op, Store};

fn compare(cond: Cond) -> Compare {
    let op = |cmp: Cmp| match cmp {
        Cmp::Equal => CompareOp::Equal,
        Cmp::Less => CompareOp::Less,
        Cmp::Greater => CompareOp::Greater,
    };
    match cond {
        Cond::Modified {
            key,
            prefix,
            cmp,
            revision,
        } => {
            let compare = Compare::mod_revision(key, op(cmp), revision);
            match prefix {
                true => compare.with_prefix(),
                false => compare,
            }
        }
        Cond::Created { key, revision } => {
            Compare::create_revision(key, CompareOp::Equal, revision)
        }
        Cond::Leased { key, lease } => Compare::lease(key, CompareOp::Equal, lease),
    }
}

fn operation(op: Op) -> TxnOp {
    match op {
        Op::Put { key, value, lease } => {
            let options = (lease != 0).then(|| PutOptions::new().with_lease(lease));
            TxnOp::put(key, value, options)
        }
        Op::Delete { key } => TxnOp::delete(key, None),
    }
}

impl Store for Etcd {
    fn range(&mut self, prefix: &str) -> Result<(Vec<Entry>, i64)> {
        let context = self.context(&format!("reading {prefix}"));
        let response = self
            .runtime
            .block_on(
                self.client
                    .get(prefix, Some(GetOptions::new().with_prefix())),
            )
            .context(context)?;
        let revision = response.header().map(|h| h.revision()).unwrap_or(0);
        let entries = response
            .kvs()
            .iter()
            .map(|kv| Entry {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                value: kv.value().to_vec(),
                mod_revision: kv.mod_revision(),
                lease: kv.lease(),
            })
            .collect();
        Ok((entries, revision))
    }

    fn txn(&mut self, conds: Vec<Cond>, ops: Vec<Op>) -> Result<Option<i64>> {
        let context = self.context("a transaction");
        let txn = Txn::new()
            .when(conds.into_iter().map(compare).collect::<Vec<_>>())
            .and_then(ops.into_iter().map(operation).collect::<Vec<_>>());
        let response = self
            .runtime
            .block_on(self.client.txn(txn))
            .context(context)?;
        Ok(response
            .succeeded()
            .then(|| response.header().map(|h| h.revision()).unwrap_or(0)))
    }

    /// One watch stream, one watch per prefix on it, each from `revision + 1` (no write
    /// between the read and the watch can be missed).
    fn watch(&mut self, prefixes: &[String], revision: i64) -> Result<()> {
        let context = self.context(&format!("watching {}", prefixes.join(", ")));
        self.watch = None;
        let options = || {
            WatchOptions::new()
                .with_start_revision(revision + 1)
                .with_prefix()
        };
        let client = &mut self.client;
        let stream = self
            .runtime
            .block_on(async {
                let Some((first, rest)) = prefixes.split_first() else {
                    return Err(etcd_client::Error::WatchError("nothing to watch".into()));
                };
                let mut stream = client.watch(first.as_str(), Some(options())).await?;
                for prefix in rest {
                    stream.watch(prefix.as_str(), Some(options())).await?;
                }
                Ok(stream)
            })
            .context(context)?;
        self.watch = Some(stream);
        Ok(())
    }

    fn changed(&mut self, timeout: Duration) -> Result<bool> {
        let context = self.context("waiting for a change");
        let Some(stream) = self.watch.as_mut() else {
            return Err(anyhow!("no watch is open")).context(context);
        };
        let answer = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, stream.message()).await });
        let failure = match answer {
            Err(_elapsed) => return Ok(false),
            Ok(Ok(Some(response))) if response.canceled() => {
                anyhow!("the watch was cancelled: {}", response.cancel_reason())
            }
            Ok(Ok(Some(response))) => return Ok(!response.events().is_empty()),
            Ok(Ok(None)) => anyhow!("the watch stream ended"),
            Ok(Err(error)) => anyhow::Error::new(error),
        };
        self.watch = None;
        Err(failure).context(context)
    }
}

impl Etcd {
    /// The value of `key` and its mod revision, or `None`.
    pub fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, i64)>> {
        let context = self.context(&format!("reading {key}"));
        let response = self
            .runtime
            .block_on(self.client.get(key, None))
            .context(context)?;
        Ok(response
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision())))
    }

    /// Store `value` at `key`, unconditionally; the revision of the write.
    pub fn put(&mut self, key: &str, value: impl Into<Vec<u8>>) -> Result<i64> {
        let written = self.txn(vec![], vec![Op::put(key, value)])?;
        Ok(written.unwrap_or(0))
    }

    /// Grant a lease of `ttl` seconds; its id.
    pub fn grant(&mut self, ttl: i64) -> Result<i64> {
        let context = self.context("granting a lease");
        let response = self
            .runtime
            .block_on(self.client.lease_grant(ttl, None))
            .context(context)?;
        Ok(response.id())
    }

    /// Renew `lease` once; the TTL left (0: the lease is gone). The stream stays open for the
    /// next renewal of the same lease; after an error the next renewal opens a new one.
    pub fn keep_alive(&mut self, lease: i64) -> Result<i64> {
        let context = self.context("renewing the lease");
        let open = self.keep_alive.take().filter(|(id, _, _)| *id == lease);
        let client = &mut self.client;
        // A total deadline: the request timeout covers opening the stream, not an answer on
        // it, and a renewal sent to an etcd frozen right after a restart waited out the whole
        // freeze (20 s, scripts/fleet-test.sh step 5) instead of failing.
        let exchange = async {
            let (mut keeper, mut stream) = match open {
                Some((_, keeper, stream)) => (keeper, stream),
                None => match client.lease_keep_alive(lease).await {
                    Ok(opened) => opened,
                    // Opening a stream renews once and reads the answer: an expired lease is
                    // refused there, as an error, not with a TTL of 0 (an agent cut off from
                    // etcd past its TTL never registered again: tests/fleet_leases.rs).
                    Err(etcd_client::Error::LeaseKeepAliveError(why))
                        if why == "lease not found" =>
                    {
                        return Ok(None)
                    }
                    Err(error) => return Err(error),
                },
            };
            keeper.keep_alive().await?;
            let ttl = stream.message().await?.map(|r| r.ttl()).unwrap_or(0);
            Ok::<_, etcd_client::Error>(Some((ttl, keeper, stream)))
        };
        let renewed = self
            .runtime
            .block_on(async { tokio::time::timeout(REQUEST_TIMEOUT, exchange).await })
            .map_err(|_| {
                let silent = format!("no answer within {} s", REQUEST_TIMEOUT.as_secs());
                anyhow::Error::new(Failure::store(silent))
            })
            .context(context.clone())?
            .context(context)?;
        let Some((ttl, keeper, stream)) = renewed else {
            return Ok(0);
        };
        if ttl > 0 {
            self.keep_alive = Some((lease, keeper, stream));
        }
        Ok(ttl)
    }

    pub fn revoke(&mut self, lease: i64) -> Result<()> {
        let context = self.context("revoking the lease");
        self.runtime
            .block_on(self.client.lease_revoke(lease))
            .context(context)?;
        Ok(())
    }
}
