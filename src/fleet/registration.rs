//! An agent's registration: `hosts/{host}` under a lease that a thread of its own keeps alive
//! (every third of the TTL), with `members/{host}` refreshed at each renewal so a lost host is
//! listed with when it was last seen.
//!
//! etcd unreachable is not a reason to stop: the thread retries with backoff (1 s doubling to
//! 5 s) and, when etcd answers again, renews the lease — or, if the lease expired meanwhile,
//! registers again under a new one. Stopping the registration revokes the lease, so a host
//! whose agent stops cleanly shows as lost at once rather than after the TTL.
//!
//! Alive means following the fleet: while the agent's watch has been broken for longer than
//! [`WATCH_BROKEN_GRACE`] (its reads fail, its connection died), the lease is not renewed, so
//! the host shows as lost rather than alive and deaf; it renews (or registers again) once the
//! watch works.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::access::Access;
use super::records::{now_ms, HostRecord, MemberRecord};
use super::store::{Cond, Op, Store};
use super::{Etcd, Keys, LEASE_TTL_SECS};
use crate::error::Failure;

/// Something worth a line in the agent's log (etcd lost, back, registered again).
pub type Notify = Box<dyn Fn(String) + Send>;

/// How long the agent's watch may stay broken before the host stops renewing its lease: past
/// the agent's retry backoff (5 s) and a dead connection's notice (9 s), so one outage of the
/// store alone never costs the registration.
pub const WATCH_BROKEN_GRACE: Duration = Duration::from_secs(15);

/// Whether the agent's watch works, shared by the agent (which says) and the registration
/// (which renews only while it does).
#[derive(Debug, Clone, Default)]
pub struct Liveness {
    /// When the watch broke (ms since the epoch); 0 while it works.
    broken_since_ms: Arc<AtomicU64>,
}

impl Liveness {
    /// The watch is open.
    pub fn watching(&self) {
        self.broken_since_ms.store(0, Ordering::SeqCst);
    }

    /// The watch failed (kept from the first failure on).
    pub fn broken(&self) {
        let _ = self.broken_since_ms.compare_exchange(
            0,
            now_ms().max(1),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// How long the watch has been broken, if it is.
    pub fn broken_for(&self) -> Option<Duration> {
        match self.broken_since_ms.load(Ordering::SeqCst) {
            0 => None,
            since => Some(Duration::from_millis(now_ms().saturating_sub(since))),
        }
    }
}

pub struct Registration {
    /// Dropped to stop the thread: it sleeps on the other end until its next renewal, so an
    /// idle agent wakes only to renew (measured: polling a flag every 100 ms cost more CPU
    /// than the renewals).
    stop: Option<Sender<()>>,
    lease: Arc<AtomicI64>,
    thread: Option<JoinHandle<()>>,
}

impl Registration {
    /// Register `host` now (an error when etcd cannot be reached, or another live agent holds
    /// the name), then keep the registration alive until dropped.
    pub fn start(
        access: &Access,
        keys: &Keys,
        host: &str,
        liveness: Liveness,
        notify: Notify,
    ) -> Result<Self> {
        let mut etcd = Etcd::connect(access)?;
        let lease = Arc::new(AtomicI64::new(register(&mut etcd, keys, host)?));
        let (stop, stopped) = mpsc::channel();
        let keeper = Keeper {
            etcd,
            keys: keys.clone(),
            host: host.to_string(),
            lease: lease.clone(),
            stopped,
            liveness,
            deaf: false,
            notify,
        };
        let thread = std::thread::Builder::new()
            .name("fleet-lease".into())
            .spawn(move || keeper.run())?;
        Ok(Registration {
            stop: Some(stop),
            lease,
            thread: Some(thread),
        })
    }

    /// The lease the registration holds now (it changes when it had to register again).
    pub fn lease(&self) -> i64 {
        self.lease.load(Ordering::SeqCst)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Grant a lease and write the host's registration under it; the lease.
fn register(etcd: &mut Etcd, keys: &Keys, host: &str) -> Result<i64> {
    let lease = etcd.grant(LEASE_TTL_SECS)?;
    let record = HostRecord {
        name: host.to_string(),
        since_ms: now_ms(),
        pid: std::process::id(),
    };
    // The registration and the member record in one transaction: an etcd that goes away in
    // between cannot leave a host registered whose start-up then fails.
    let registered = etcd.txn(
        vec![Cond::absent(keys.host(host))],
        vec![
            Op::put_leased(keys.host(host), serde_json::to_vec(&record)?, lease),
            Op::put(keys.member(host), member(host)?),
        ],
    )?;
    if registered.is_none() {
        let _ = etcd.revoke(lease);
        return Err(Failure::input(format!(
            "another live agent is registered as host {host:?} in this fleet (--host names must be unique)"
        ))
        .into());
    }
    Ok(lease)
}

/// `members/{host}`, seen now.
fn member(host: &str) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&MemberRecord {
        name: host.to_string(),
        last_seen_ms: now_ms(),
    })?)
}

fn seen(etcd: &mut Etcd, keys: &Keys, host: &str) -> Result<()> {
    etcd.put(&keys.member(host), member(host)?)?;
    Ok(())
}

struct Keeper {
    etcd: Etcd,
    keys: Keys,
    host: String,
    lease: Arc<AtomicI64>,
    stopped: Receiver<()>,
    liveness: Liveness,
    /// Renewals are held back because the agent's watch is broken.
    deaf: bool,
    notify: Notify,
}

impl Keeper {
    fn run(mut self) {
        let period = Duration::from_millis(LEASE_TTL_SECS as u64 * 1000 / 3);
        let mut backoff = Duration::from_secs(1);
        let mut failing_since: Option<Instant> = None;
        let mut next = Instant::now() + period;
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            if self.stopped.recv_timeout(wait) != Err(RecvTimeoutError::Timeout) {
                let _ = self.etcd.revoke(self.lease.load(Ordering::SeqCst));
                return;
            }
            match self.renew() {
                Ok(Renewal::HeldBack) => next = Instant::now() + period,
                Ok(Renewal::Done) => {
                    if let Some(since) = failing_since.take() {
                        (self.notify)(format!(
                            "etcd answers again after {:.1} s; registration of {} renewed",
                            since.elapsed().as_secs_f64(),
                            self.host
                        ));
                    }
                    backoff = Duration::from_secs(1);
                    next = Instant::now() + period;
                }
                Err(error) => {
                    if failing_since.is_none() {
                        failing_since = Some(Instant::now());
                        (self.notify)(format!(
                            "cannot renew the registration ({error:#}); the data path is unaffected, retrying"
                        ));
                    }
                    next = Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Renew the lease; register again under a new one if it expired. Nothing while the
    /// agent's watch has been broken for longer than the grace.
    fn renew(&mut self) -> Result<Renewal> {
        match self.liveness.broken_for() {
            Some(broken) if broken > WATCH_BROKEN_GRACE => {
                if !std::mem::replace(&mut self.deaf, true) {
                    (self.notify)(format!(
                        "the watch has been broken for {:.0} s: the registration of {} is not \
                         renewed, so the host shows as lost until it follows the fleet again",
                        broken.as_secs_f64(),
                        self.host
                    ));
                }
                return Ok(Renewal::HeldBack);
            }
            _ => self.deaf = false,
        }
        if self.etcd.keep_alive(self.lease.load(Ordering::SeqCst))? > 0 {
            seen(&mut self.etcd, &self.keys, &self.host)?;
            return Ok(Renewal::Done);
        }
        let lease = register(&mut self.etcd, &self.keys, &self.host)?;
        self.lease.store(lease, Ordering::SeqCst);
        (self.notify)(format!(
            "the lease had expired; {} registered again",
            self.host
        ));
        Ok(Renewal::Done)
    }
}

/// What a renewal did: held back while the watch is broken (etcd was not asked, so nothing
/// is known about it: an outage already reported stays reported), or done.
enum Renewal {
    HeldBack,
    Done,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_is_broken_from_its_first_failure_until_it_works_again() {
        let liveness = Liveness::default();
        assert_eq!(liveness.broken_for(), None);
        liveness.broken();
        let first = liveness.broken_since_ms.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(5));
        liveness.broken();
        assert_eq!(
            liveness.broken_since_ms.load(Ordering::SeqCst),
            first,
            "kept from the first failure"
        );
        assert!(liveness
            .broken_for()
            .is_some_and(|d| d >= Duration::from_millis(5)));
        liveness.watching();
        assert_eq!(liveness.broken_for(), None);
    }
}
