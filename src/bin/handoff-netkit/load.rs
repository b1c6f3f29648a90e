//! `load`: many requests from a few concurrent workers, tallied per backend that answered.
//!
//! A request is ok only when the whole exchange completed within its timeouts: the connect,
//! the response and — with a new connection per request — the server's FIN (the server closes
//! first, so a missing FIN means the connection was cut or stalled on the way). Every failure
//! is kept with its client address and start time, so that it can be matched with a conntrack
//! event log. A request that succeeds but takes longer than `--stall-ms` (a lost SYN costs a
//! second before it is sent again) is kept the same way, and the slowest attempt is reported:
//! a stall shows even when it ends in success.
//!
//! The report also says how often the client reused a tuple (local address and port) that the
//! run had used before: under a steady new-connection load to one destination, the kernel's
//! ephemeral ports wrap around after a few thousand connections, and a reused tuple is what
//! meets stale kernel state. `--unique-sources` takes the choice of port away from the kernel
//! so that no tuple repeats within a run.

use std::io::BufReader;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};

use crate::client::{await_server_close, connect_from, get_root, REQUEST_TIMEOUT};
use crate::tally::{load_report, FailureRecord, LoadStats, Phase, Steps};
use crate::{install_stop_handler, print_json, stop_requested, LoadArgs};

/// Pause after a failed `load` request, so a refusing target does not turn
/// the workers into busy loops that starve the machine.
const FAILURE_BACKOFF: Duration = Duration::from_millis(1);
/// The first local port `--unique-sources` hands out (below it, many systems run services).
const FIRST_UNIQUE_PORT: u16 = 10_000;

/// Where each worker's connections come from.
#[derive(Debug, Clone)]
pub(crate) enum Sources {
    /// The kernel picks the local port (it walks the ephemeral range).
    Kernel,
    /// Always this local address and port.
    Fixed(SocketAddr),
    /// Worker `worker` of `workers` binds its k-th connection to the tuple numbered
    /// `worker + k * workers` over `addresses` × ports from [`FIRST_UNIQUE_PORT`]: no tuple repeats.
    Unique {
        addresses: Vec<IpAddr>,
        worker: usize,
        workers: usize,
    },
}

impl Sources {
    /// The local address of connection `k` of this worker (`Ok(None)`: the kernel's choice).
    pub(crate) fn nth(&self, k: u64) -> Result<Option<SocketAddr>> {
        let (addresses, worker, workers) = match self {
            Sources::Kernel => return Ok(None),
            Sources::Fixed(source) => return Ok(Some(*source)),
            Sources::Unique {
                addresses,
                worker,
                workers,
            } => (addresses, worker, workers),
        };
        let index = *worker as u64 + k * *workers as u64;
        let count = addresses.len() as u64;
        let port = u64::from(FIRST_UNIQUE_PORT) + index / count;
        let port = u16::try_from(port).map_err(|_| {
            anyhow!(
                "--unique-sources: all {} tuples used; give more addresses",
                count * u64::from(u16::MAX - FIRST_UNIQUE_PORT)
            )
        })?;
        Ok(Some(SocketAddr::new(
            addresses[(index % count) as usize],
            port,
        )))
    }
}

/// Shared stop conditions for the load workers.
pub(crate) struct LoadLimits {
    pub(crate) deadline: Instant,
    pub(crate) max_requests: Option<u64>,
    pub(crate) issued: AtomicU64,
}

impl LoadLimits {
    /// Claims the next request slot; false once time or budget is used up, or a stop was asked.
    pub(crate) fn next_request(&self) -> bool {
        if Instant::now() >= self.deadline || stop_requested() {
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
    install_stop_handler()?;
    if args.keepalive && (!args.unique_sources.is_empty() || args.source.is_some()) {
        bail!(
            "--unique-sources and --source apply to a new connection per request, not --keepalive"
        );
    }
    let start = Instant::now();
    let limits = Arc::new(LoadLimits {
        deadline: start + Duration::from_millis(args.duration_ms),
        max_requests: args.max_requests,
        issued: AtomicU64::new(0),
    });
    let workers = args.connections as usize;
    let mut handles = Vec::new();
    for worker in 0..workers {
        let limits = Arc::clone(&limits);
        let (target, keepalive) = (args.target, args.keepalive);
        let stall = Duration::from_millis(args.stall_ms);
        let sources = match args.source {
            Some(source) => Sources::Fixed(source),
            None if args.unique_sources.is_empty() => Sources::Kernel,
            None => Sources::Unique {
                addresses: args.unique_sources.clone(),
                worker,
                workers,
            },
        };
        let handle = thread::Builder::new()
            .name(format!("load-{worker}"))
            .spawn(move || load_worker(target, keepalive, stall, &sources, start, &limits))
            .context("spawning load worker")?;
        handles.push(handle);
    }
    let mut stats = LoadStats::default();
    for handle in handles {
        let worker_stats = handle.join().map_err(|_| anyhow!("load worker panicked"))?;
        stats.merge(worker_stats);
    }
    print_json(&load_report(stats, start.elapsed()))
}

fn epoch_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// One load worker: issues requests until the limits say stop.
pub(crate) fn load_worker(
    target: SocketAddr,
    keepalive: bool,
    stall: Duration,
    sources: &Sources,
    run_start: Instant,
    limits: &LoadLimits,
) -> LoadStats {
    let mut stats = LoadStats::default();
    let mut conn: Option<BufReader<TcpStream>> = None;
    let mut k = 0;
    while limits.next_request() {
        let started_us = epoch_us();
        let begin = Instant::now();
        let outcome = if keepalive {
            keepalive_request(target, &mut conn)
        } else {
            match sources.nth(k) {
                Ok(source) => {
                    k += 1;
                    let outcome = fresh_request(target, source, REQUEST_TIMEOUT);
                    if let Some(local) = outcome.local {
                        let at = begin.saturating_duration_since(run_start).as_micros() as u64;
                        stats.tuples.push((at, local));
                    }
                    outcome
                }
                Err(error) => {
                    stats.record_failure(
                        FailureRecord {
                            started_us,
                            local: None,
                            steps: Steps::default(),
                            phase: Some(Phase::Connect),
                            error: format!("{error:#}"),
                            elapsed_ms: 0,
                        },
                        Duration::ZERO,
                    );
                    break;
                }
            }
        };
        let took = begin.elapsed();
        match outcome.result {
            Ok(backend) => {
                if took > stall {
                    stats.record_stall(FailureRecord {
                        started_us,
                        local: outcome.local,
                        steps: outcome.steps,
                        phase: None,
                        error: format!("answered by {backend} after a stall"),
                        elapsed_ms: took.as_millis() as u64,
                    });
                }
                stats.record_ok(backend, took);
            }
            Err((phase, error)) => {
                stats.record_failure(
                    FailureRecord {
                        started_us,
                        local: outcome.local,
                        steps: outcome.steps,
                        phase: Some(phase),
                        error: format!("{error:#}"),
                        elapsed_ms: took.as_millis() as u64,
                    },
                    took,
                );
                thread::sleep(FAILURE_BACKOFF);
            }
        }
    }
    stats
}

/// What one request produced: the backend that answered, or the failed phase.
pub(crate) struct Outcome {
    pub(crate) local: Option<SocketAddr>,
    pub(crate) result: Result<String, (Phase, anyhow::Error)>,
    /// Where a new connection's time went, for the report of a stall or a failure.
    pub(crate) steps: Steps,
}

/// One `GET /` on a new connection that the server closes.
pub(crate) fn fresh_request(
    target: SocketAddr,
    source: Option<SocketAddr>,
    timeout: Duration,
) -> Outcome {
    let begin = Instant::now();
    let mut steps = Steps::default();
    let (local, stream) = connect_from(target, source, timeout);
    let result = (|| {
        let mut reader = BufReader::new(stream.map_err(|e| (Phase::Connect, e))?);
        steps.connected_ms = Some(begin.elapsed().as_millis() as u64);
        let (backend, _) = get_root(&mut reader, true).map_err(|e| (Phase::Response, e))?;
        steps.answered_ms = Some(begin.elapsed().as_millis() as u64);
        await_server_close(&mut reader).map_err(|e| (Phase::Close, e))?;
        Ok(backend)
    })();
    Outcome {
        local,
        result,
        steps,
    }
}

/// One `GET /` on the worker's persistent connection, (re)connecting as
/// needed. The connection is dropped after an error or a server close.
pub(crate) fn keepalive_request(
    target: SocketAddr,
    conn: &mut Option<BufReader<TcpStream>>,
) -> Outcome {
    let (local, reader) = match conn.take() {
        Some(reader) => (reader.get_ref().local_addr().ok(), Ok(reader)),
        None => {
            let (local, stream) = connect_from(target, None, REQUEST_TIMEOUT);
            (local, stream.map(BufReader::new))
        }
    };
    let result = reader
        .map_err(|e| (Phase::Connect, e))
        .and_then(|mut reader| {
            let (backend, keep) = get_root(&mut reader, false).map_err(|e| (Phase::Response, e))?;
            if keep {
                *conn = Some(reader);
            }
            Ok(backend)
        });
    Outcome {
        local,
        result,
        steps: Steps::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_sources_never_repeat_a_tuple_across_workers() {
        let addresses: Vec<IpAddr> = vec![[10, 0, 0, 2].into(), [10, 0, 0, 3].into()];
        let mut seen = std::collections::HashSet::new();
        for worker in 0..3 {
            let sources = Sources::Unique {
                addresses: addresses.clone(),
                worker,
                workers: 3,
            };
            for k in 0..1000 {
                let tuple = sources.nth(k).unwrap().unwrap();
                assert!(tuple.port() >= FIRST_UNIQUE_PORT);
                assert!(seen.insert(tuple), "{tuple} twice");
            }
        }
        let last = Sources::Unique {
            addresses,
            worker: 0,
            workers: 1,
        };
        assert!(last.nth(2 * 55_535).unwrap().is_some());
        assert!(last.nth(2 * 55_536).is_err(), "ports run out: an error");
        assert_eq!(Sources::Kernel.nth(5).unwrap(), None);
    }

    #[test]
    fn a_server_that_never_closes_fails_the_request() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 256];
            let _ = stream.read(&mut request).unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nv1")
                .unwrap();
            // No close: keep the connection open past the client's read timeout.
            thread::sleep(Duration::from_millis(600));
        });
        let outcome = fresh_request(target, None, Duration::from_millis(200));
        let Err((phase, error)) = outcome.result else {
            panic!("a request without the server's FIN counted as ok")
        };
        assert!(matches!(phase, Phase::Close), "{phase:?}: {error:#}");
        assert!(outcome.local.is_some());
        server.join().unwrap();
    }
}
