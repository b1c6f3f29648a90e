//! `load`: many requests from a few concurrent workers, tallied per backend that answered.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde::Serialize;

use crate::client::{await_server_close, connect, get_root, REQUEST_TIMEOUT};
use crate::{print_json, LoadArgs};

/// How many error strings `load` keeps.
const MAX_ERRORS: usize = 5;
/// Pause after a failed `load` request, so a refusing target does not turn
/// the workers into busy loops that starve the machine.
const FAILURE_BACKOFF: Duration = Duration::from_millis(1);

/// Per-worker (and merged) results of `load`.
#[derive(Default)]
pub(crate) struct LoadStats {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) by_backend: BTreeMap<String, u64>,
    pub(crate) errors: Vec<String>,
    pub(crate) latencies_us: Vec<u32>,
}

impl LoadStats {
    pub(crate) fn record_ok(&mut self, backend: String, latency: Duration) {
        self.ok += 1;
        *self.by_backend.entry(backend).or_default() += 1;
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.latencies_us.push(micros);
    }

    pub(crate) fn record_failure(&mut self, err: &anyhow::Error) {
        self.failed += 1;
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(format!("{err:#}"));
        }
    }

    pub(crate) fn merge(&mut self, other: LoadStats) {
        self.ok += other.ok;
        self.failed += other.failed;
        for (backend, count) in other.by_backend {
            *self.by_backend.entry(backend).or_default() += count;
        }
        let room = MAX_ERRORS.saturating_sub(self.errors.len());
        self.errors.extend(other.errors.into_iter().take(room));
        self.latencies_us.extend(other.latencies_us);
    }
}

/// The JSON line printed by `load`. `requests_per_sec` counts every attempt
/// (ok and failed); latencies (connect included) are those of ok requests.
#[derive(Serialize)]
pub(crate) struct LoadReport {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) by_backend: BTreeMap<String, u64>,
    pub(crate) errors: Vec<String>,
    pub(crate) elapsed_ms: u64,
    pub(crate) requests_per_sec: f64,
    pub(crate) latency_p50_us: u64,
    pub(crate) latency_p99_us: u64,
}

/// Shared stop conditions for the load workers.
pub(crate) struct LoadLimits {
    pub(crate) deadline: Instant,
    pub(crate) max_requests: Option<u64>,
    pub(crate) issued: AtomicU64,
}

impl LoadLimits {
    /// Claims the next request slot; false once time or budget is used up.
    pub(crate) fn next_request(&self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        match self.max_requests {
            Some(max) => self.issued.fetch_add(1, Ordering::Relaxed) < max,
            None => true,
        }
    }
}

/// Runs the load workers and prints the merged report.
pub(crate) fn load(args: &LoadArgs) -> Result<()> {
    let start = Instant::now();
    let limits = Arc::new(LoadLimits {
        deadline: start + Duration::from_millis(args.duration_ms),
        max_requests: args.max_requests,
        issued: AtomicU64::new(0),
    });
    let mut workers = Vec::new();
    for i in 0..args.connections {
        let limits = Arc::clone(&limits);
        let (target, keepalive) = (args.target, args.keepalive);
        let worker = thread::Builder::new()
            .name(format!("load-{i}"))
            .spawn(move || load_worker(target, keepalive, &limits))
            .context("spawning load worker")?;
        workers.push(worker);
    }
    let mut stats = LoadStats::default();
    for worker in workers {
        let worker_stats = worker.join().map_err(|_| anyhow!("load worker panicked"))?;
        stats.merge(worker_stats);
    }
    print_json(&load_report(stats, start.elapsed()))
}

/// Turns merged stats into the printed report.
pub(crate) fn load_report(mut stats: LoadStats, elapsed: Duration) -> LoadReport {
    stats.latencies_us.sort_unstable();
    let total = stats.ok + stats.failed;
    let secs = elapsed.as_secs_f64();
    LoadReport {
        ok: stats.ok,
        failed: stats.failed,
        requests_per_sec: if secs > 0.0 { total as f64 / secs } else { 0.0 },
        latency_p50_us: percentile(&stats.latencies_us, 50),
        latency_p99_us: percentile(&stats.latencies_us, 99),
        by_backend: stats.by_backend,
        errors: stats.errors,
        elapsed_ms: elapsed.as_millis() as u64,
    }
}

/// The `pct` percentile of sorted samples (0 when empty).
pub(crate) fn percentile(sorted: &[u32], pct: usize) -> u64 {
    match sorted.len() {
        0 => 0,
        len => u64::from(sorted[(len - 1) * pct / 100]),
    }
}

/// One load worker: issues requests until the limits say stop.
pub(crate) fn load_worker(target: SocketAddr, keepalive: bool, limits: &LoadLimits) -> LoadStats {
    let mut stats = LoadStats::default();
    let mut conn: Option<BufReader<TcpStream>> = None;
    while limits.next_request() {
        let begin = Instant::now();
        let result = if keepalive {
            keepalive_request(target, &mut conn)
        } else {
            fresh_request(target)
        };
        match result {
            Ok(backend) => stats.record_ok(backend, begin.elapsed()),
            Err(err) => {
                stats.record_failure(&err);
                thread::sleep(FAILURE_BACKOFF);
            }
        }
    }
    stats
}

/// One `GET /` on a new connection that the server closes.
pub(crate) fn fresh_request(target: SocketAddr) -> Result<String> {
    let mut reader = BufReader::new(connect(target, REQUEST_TIMEOUT)?);
    let (backend, _) = get_root(&mut reader, true)?;
    await_server_close(&mut reader);
    Ok(backend)
}

/// One `GET /` on the worker's persistent connection, (re)connecting as
/// needed. The connection is dropped after an error or a server close.
pub(crate) fn keepalive_request(
    target: SocketAddr,
    conn: &mut Option<BufReader<TcpStream>>,
) -> Result<String> {
    let mut reader = match conn.take() {
        Some(reader) => reader,
        None => BufReader::new(connect(target, REQUEST_TIMEOUT)?),
    };
    let (backend, keep) = get_root(&mut reader, false)?;
    if keep {
        *conn = Some(reader);
    }
    Ok(backend)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_picks_nearest_rank() {
        assert_eq!(percentile(&[], 50), 0);
        let samples: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&samples, 50), 50);
        assert_eq!(percentile(&samples, 99), 99);
    }
}
