//! What `load` counts: per-worker tallies, merged, and turned into the printed report
//! (percentiles, the slowest attempt, failures and stalls in full, client-tuple reuse).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::stop_requested;

/// How many error strings `load` keeps.
const MAX_ERRORS: usize = 5;
/// How many failures are reported in full (address, time, phase).
const MAX_FAILURE_RECORDS: usize = 100;

/// Which step of a request failed.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Phase {
    Connect,
    Response,
    Close,
}

/// One failed or stalled request, as reported.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FailureRecord {
    /// When the request started, µs since the epoch (conntrack's event timestamps are too).
    pub(crate) started_us: u64,
    /// The client's address and port, when the kernel got as far as choosing one.
    pub(crate) local: Option<SocketAddr>,
    /// The step that failed; `None` for a request that succeeded, slowly.
    pub(crate) phase: Option<Phase>,
    /// How far the request had got, and when: a stall in the handshake (a SYN sent twice)
    /// shows as a late `connected_ms`, one at the server as a late `answered_ms`.
    #[serde(flatten)]
    pub(crate) steps: Steps,
    pub(crate) error: String,
    pub(crate) elapsed_ms: u64,
}

/// Milliseconds from a new connection's start to its steps, when it reached them.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Steps {
    pub(crate) connected_ms: Option<u64>,
    pub(crate) answered_ms: Option<u64>,
}

/// What became of the requests: counted, and the first failures and stalls in full.
#[derive(Default, Serialize)]
pub(crate) struct Outcomes {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) by_backend: BTreeMap<String, u64>,
    pub(crate) errors: Vec<String>,
    /// The first failures in full.
    pub(crate) failures: Vec<FailureRecord>,
    /// Requests that succeeded after more than `--stall-ms`, in full.
    pub(crate) stalls: Vec<FailureRecord>,
}

impl Outcomes {
    fn merge(&mut self, other: Outcomes) {
        self.ok += other.ok;
        self.failed += other.failed;
        for (backend, count) in other.by_backend {
            *self.by_backend.entry(backend).or_default() += count;
        }
        let room = MAX_ERRORS.saturating_sub(self.errors.len());
        self.errors.extend(other.errors.into_iter().take(room));
        let room = MAX_FAILURE_RECORDS.saturating_sub(self.failures.len());
        self.failures.extend(other.failures.into_iter().take(room));
        let room = MAX_FAILURE_RECORDS.saturating_sub(self.stalls.len());
        self.stalls.extend(other.stalls.into_iter().take(room));
    }
}

/// Per-worker (and merged) results of `load`.
#[derive(Default)]
pub(crate) struct LoadStats {
    pub(crate) outcomes: Outcomes,
    pub(crate) latencies_us: Vec<u32>,
    /// The longest attempt, ok or not.
    pub(crate) slowest: Duration,
    /// (µs since the run started, local address) of every connection.
    pub(crate) tuples: Vec<(u64, SocketAddr)>,
}

impl LoadStats {
    pub(crate) fn record_ok(&mut self, backend: String, latency: Duration) {
        self.outcomes.ok += 1;
        *self.outcomes.by_backend.entry(backend).or_default() += 1;
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.latencies_us.push(micros);
        self.slowest = self.slowest.max(latency);
    }

    pub(crate) fn record_failure(&mut self, failure: FailureRecord, took: Duration) {
        let outcomes = &mut self.outcomes;
        outcomes.failed += 1;
        self.slowest = self.slowest.max(took);
        if outcomes.errors.len() < MAX_ERRORS {
            outcomes.errors.push(failure.error.clone());
        }
        if outcomes.failures.len() < MAX_FAILURE_RECORDS {
            outcomes.failures.push(failure);
        }
    }

    /// A request that succeeded, after more than the stall threshold.
    pub(crate) fn record_stall(&mut self, stall: FailureRecord) {
        if self.outcomes.stalls.len() < MAX_FAILURE_RECORDS {
            self.outcomes.stalls.push(stall);
        }
    }

    pub(crate) fn merge(&mut self, other: LoadStats) {
        self.outcomes.merge(other.outcomes);
        self.latencies_us.extend(other.latencies_us);
        self.slowest = self.slowest.max(other.slowest);
        self.tuples.extend(other.tuples);
    }
}

/// How often the run's client tuples repeated.
#[derive(Debug, Default, PartialEq, Serialize)]
pub(crate) struct TupleReuse {
    /// Connections whose local address and port an earlier connection of the run had used.
    pub(crate) reused: u64,
    /// The shortest time between two uses of one tuple.
    pub(crate) min_gap_ms: Option<u64>,
    /// The median number of connections opened between two uses of one tuple.
    pub(crate) median_gap_connections: Option<u64>,
}

/// Reuse statistics of `tuples` ((µs since start, local address), any order).
pub(crate) fn tuple_reuse(mut tuples: Vec<(u64, SocketAddr)>) -> TupleReuse {
    tuples.sort_unstable();
    let mut last_use: HashMap<SocketAddr, (u64, usize)> = HashMap::with_capacity(tuples.len());
    let mut gaps_us = Vec::new();
    let mut gaps_connections = Vec::new();
    for (index, (at_us, local)) in tuples.into_iter().enumerate() {
        if let Some((previous_us, previous_index)) = last_use.insert(local, (at_us, index)) {
            gaps_us.push(at_us - previous_us);
            gaps_connections.push((index - previous_index) as u64);
        }
    }
    gaps_connections.sort_unstable();
    TupleReuse {
        reused: gaps_us.len() as u64,
        min_gap_ms: gaps_us.iter().min().map(|us| us / 1000),
        median_gap_connections: gaps_connections.get(gaps_connections.len() / 2).copied(),
    }
}

/// The JSON line printed by `load`. `requests_per_sec` counts every attempt
/// (ok and failed); latencies (connect included) are those of ok requests.
#[derive(Serialize)]
pub(crate) struct LoadReport {
    #[serde(flatten)]
    pub(crate) outcomes: Outcomes,
    pub(crate) elapsed_ms: u64,
    pub(crate) requests_per_sec: f64,
    pub(crate) latency_p50_us: u64,
    pub(crate) latency_p99_us: u64,
    /// The longest attempt of the run, failed ones included.
    pub(crate) slowest_ms: u64,
    pub(crate) tuples: TupleReuse,
    /// Stopped early by SIGTERM or SIGINT.
    pub(crate) stopped: bool,
}

/// Turns merged stats into the printed report.
pub(crate) fn load_report(mut stats: LoadStats, elapsed: Duration) -> LoadReport {
    stats.latencies_us.sort_unstable();
    let mut outcomes = stats.outcomes;
    outcomes.failures.sort_by_key(|f| f.started_us);
    outcomes.stalls.sort_by_key(|f| f.started_us);
    let total = outcomes.ok + outcomes.failed;
    let secs = elapsed.as_secs_f64();
    LoadReport {
        outcomes,
        requests_per_sec: if secs > 0.0 { total as f64 / secs } else { 0.0 },
        latency_p50_us: percentile(&stats.latencies_us, 50),
        latency_p99_us: percentile(&stats.latencies_us, 99),
        slowest_ms: stats.slowest.as_millis() as u64,
        tuples: tuple_reuse(stats.tuples),
        elapsed_ms: elapsed.as_millis() as u64,
        stopped: stop_requested(),
    }
}

/// The `pct` percentile of sorted samples (0 when empty).
pub(crate) fn percentile(sorted: &[u32], pct: usize) -> u64 {
    match sorted.len() {
        0 => 0,
        len => u64::from(sorted[(len - 1) * pct / 100]),
    }
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

    fn at(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 2], port))
    }

    #[test]
    fn reused_tuples_are_counted_with_their_gaps() {
        assert_eq!(tuple_reuse(Vec::new()), TupleReuse::default());
        // Ports 1, 2, 3, then 1 again 3 connections and 3 ms later, then 2 again.
        let tuples = vec![
            (4_000, at(1)),
            (0, at(1)),
            (1_000, at(2)),
            (2_000, at(3)),
            (9_000, at(2)),
        ];
        assert_eq!(
            tuple_reuse(tuples),
            TupleReuse {
                reused: 2,
                min_gap_ms: Some(4),
                median_gap_connections: Some(3),
            }
        );
    }
}
