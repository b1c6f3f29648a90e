//! A synchronous etcd v3 client for the `fleet` commands and the agent: etcd-client (gRPC)
//! driven by a current-thread tokio runtime of its own, as the Docker client is, so the rest of
//! handoff stays synchronous. Every call is bounded by a timeout: an unreachable etcd is an
//! error that names the endpoints, never a hang.

use std::time::Duration;

use anyhow::{Context, Result};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, Txn, TxnOp, WatchOptions, WatchStream,
};

use crate::error::Failure;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Parse `--etcd`: comma-separated `http://HOST:PORT` endpoints.
pub fn parse_endpoints(text: &str) -> Result<Vec<String>> {
    let endpoints: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect();
    if endpoints.is_empty() {
        return Err(Failure::input("--etcd: no endpoint given").into());
    }
    for endpoint in &endpoints {
        let Some(rest) = endpoint.strip_prefix("http://") else {
            return Err(Failure::input(format!(
                "--etcd: {endpoint:?} is not an http://HOST:PORT endpoint (TLS is not supported yet)"
            ))
            .into());
        };
        let port_ok = rest.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            return Err(Failure::input(format!(
                "--etcd: {endpoint:?} has no HOST:PORT after http://"
            ))
            .into());
        }
    }
    Ok(endpoints)
}

/// A key, its value and its mod revision.
pub type Entry = (String, Vec<u8>, i64);

pub struct Etcd {
    runtime: tokio::runtime::Runtime,
    client: Client,
    endpoints: Vec<String>,
    /// The open keep-alive stream and the lease it renews: one stream for a registration's
    /// life, not one per renewal.
    keep_alive: Option<(i64, LeaseKeeper, LeaseKeepAliveStream)>,
}

impl Etcd {
    pub fn connect(endpoints: &[String]) -> Result<Etcd> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the etcd client runtime")?;
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        let client = runtime
            .block_on(Client::connect(endpoints, Some(options)))
            .with_context(|| format!("cannot reach etcd at {}", endpoints.join(",")))?;
        Ok(Etcd {
            runtime,
            client,
            endpoints: endpoints.to_vec(),
            keep_alive: None,
        })
    }

    fn context(&self, what: &str) -> String {
        format!("etcd at {}: {what}", self.endpoints.join(","))
    }

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

    /// Every key under `prefix` with its value and mod revision, and the store's revision at
    /// the read.
    pub fn snapshot(&mut self, prefix: &str) -> Result<(Vec<Entry>, i64)> {
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
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                    kv.mod_revision(),
                )
            })
            .collect();
        Ok((entries, revision))
    }

    /// One transaction: `Ok(true)` when its comparisons held and its operations were applied.
    pub fn txn(&mut self, compares: Vec<Compare>, operations: Vec<TxnOp>) -> Result<bool> {
        Ok(self.txn_revision(compares, operations)?.is_some())
    }

    /// [`Etcd::txn`], with the revision it was applied at when it succeeded: etcd orders
    /// every write by it, whatever clock each host keeps.
    pub fn txn_revision(
        &mut self,
        compares: Vec<Compare>,
        operations: Vec<TxnOp>,
    ) -> Result<Option<i64>> {
        let context = self.context("a transaction");
        let txn = Txn::new().when(compares).and_then(operations);
        let response = self
            .runtime
            .block_on(self.client.txn(txn))
            .context(context)?;
        Ok(response
            .succeeded()
            .then(|| response.header().map(|h| h.revision()).unwrap_or(0)))
    }

    /// Store `value` at `key`; the revision of the write.
    pub fn put(&mut self, key: &str, value: impl Into<Vec<u8>>) -> Result<i64> {
        let context = self.context(&format!("writing {key}"));
        let response = self
            .runtime
            .block_on(self.client.put(key, value.into(), None))
            .context(context)?;
        Ok(response.header().map(|h| h.revision()).unwrap_or(0))
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
        let (ttl, keeper, stream) = self
            .runtime
            .block_on(async {
                let (mut keeper, mut stream) = match open {
                    Some((_, keeper, stream)) => (keeper, stream),
                    None => client.lease_keep_alive(lease).await?,
                };
                keeper.keep_alive().await?;
                let ttl = stream.message().await?.map(|r| r.ttl()).unwrap_or(0);
                Ok::<_, etcd_client::Error>((ttl, keeper, stream))
            })
            .context(context)?;
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

    /// Write `value` at `key` under `lease`, only if no one holds the key under another lease
    /// (a key held by a live lease of someone else is refused: `Ok(false)`); `also` is written
    /// in the same transaction, or not at all.
    pub fn put_if_absent_or_ours(
        &mut self,
        key: &str,
        value: Vec<u8>,
        lease: i64,
        also: Vec<TxnOp>,
    ) -> Result<bool> {
        let context = self.context(&format!("registering {key}"));
        let mut puts = vec![TxnOp::put(
            key,
            value,
            Some(PutOptions::new().with_lease(lease)),
        )];
        puts.extend(also);
        let absent = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then(puts.clone());
        let ours = Txn::new()
            .when([Compare::lease(key, CompareOp::Equal, lease)])
            .and_then(puts);
        let client = &mut self.client;
        self.runtime
            .block_on(async {
                if client.txn(absent).await?.succeeded() {
                    return Ok(true);
                }
                Ok::<bool, etcd_client::Error>(client.txn(ours).await?.succeeded())
            })
            .context(context)
    }
}

/// A watch on one key, opened by [`Etcd::watch`].
pub struct Watch {
    stream: WatchStream,
}

impl Etcd {
    /// Watch `key` (every key under it when it ends with `/`) for changes after `revision` (no
    /// change between the read and the watch can be missed).
    pub fn watch(&mut self, key: &str, revision: i64) -> Result<Watch> {
        let context = self.context(&format!("watching {key}"));
        let mut options = WatchOptions::new().with_start_revision(revision + 1);
        if key.ends_with('/') {
            options = options.with_prefix();
        }
        let stream = self
            .runtime
            .block_on(self.client.watch(key, Some(options)))
            .context(context)?;
        Ok(Watch { stream })
    }

    /// Wait up to `timeout` for a change; `Ok(true)` when one came. An error means the watch
    /// is gone (etcd went away, or the revision was compacted): read afresh and watch again.
    pub fn changed(&mut self, watch: &mut Watch, timeout: Duration) -> Result<bool> {
        let context = self.context("waiting for a change");
        match self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, watch.stream.message()).await })
        {
            Err(_elapsed) => Ok(false),
            Ok(Ok(Some(response))) if response.canceled() => Err(anyhow::anyhow!(
                "the watch was cancelled: {}",
                response.cancel_reason()
            ))
            .context(context),
            Ok(Ok(Some(response))) => Ok(!response.events().is_empty()),
            Ok(Ok(None)) => Err(anyhow::anyhow!("the watch stream ended")).context(context),
            Ok(Err(error)) => Err(error).context(context),
        }
    }

    /// Write `value` at `key` only while `lease` holds `holder` (the writer's registration):
    /// a paused agent whose lease expired cannot write. `Ok(false)` when fenced off.
    pub fn put_fenced(
        &mut self,
        key: &str,
        value: Vec<u8>,
        holder: &str,
        lease: i64,
    ) -> Result<bool> {
        let context = self.context(&format!("writing {key}"));
        let txn = Txn::new()
            .when([Compare::lease(holder, CompareOp::Equal, lease)])
            .and_then([TxnOp::put(key, value, None)]);
        let response = self
            .runtime
            .block_on(self.client.txn(txn))
            .context(context)?;
        Ok(response.succeeded())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{exit_code_of, ExitCode};

    #[test]
    fn endpoints_are_http_host_port_lists() {
        assert_eq!(
            parse_endpoints("http://10.0.0.1:2379, http://10.0.0.2:2379").unwrap(),
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        for bad in [
            "",
            ",",
            "10.0.0.1:2379",
            "https://e:2379",
            "http://e",
            "http://:2379",
            "http://e:0",
        ] {
            let error = parse_endpoints(bad).unwrap_err();
            assert_eq!(exit_code_of(&error), ExitCode::Input, "{bad:?}");
        }
    }
}
