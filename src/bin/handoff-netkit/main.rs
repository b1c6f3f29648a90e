//! `handoff-netkit`: the sandbox traffic tool used by the integration tests,
//! the demo script and the benchmarks.
//!
//! It runs inside Linux network namespaces (`ip netns exec NS handoff-netkit ...`)
//! and provides:
//!
//! * `serve`: a tiny HTTP/1.1 server that reports which backend answered
//!   (its `--name`), serves deterministic downloads and verifies uploads;
//! * `load`: a load generator that counts successes per backend and failures;
//! * `upload` / `download`: single transfers verified byte-exact against the
//!   deterministic payload stream ([`payload::payload_byte`]);
//! * `hold`: opens one keep-alive connection and holds it open for a while;
//! * `udp-load`: UDP queries to `serve --udp`, tallied per backend.
//!
//! Every client subcommand prints exactly one line of JSON on stdout; all
//! diagnostics go to stderr. Exit status is 0 on success and 1 on failure.

mod client;
mod ct_requests;
mod hold;
mod http;
mod load;
mod payload;
mod serve;
mod tally;
mod transfer;
mod udp;

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

/// Sandbox traffic tool: servers that report which backend answered, load
/// generators that count failures, and byte-exact verified transfers.
#[derive(Parser, Debug)]
#[command(name = "handoff-netkit", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an HTTP/1.1 test backend until killed.
    Serve(ServeArgs),
    /// Generate `GET /` load and tally answers per backend.
    Load(LoadArgs),
    /// POST a verified payload to `/upload`.
    Upload(TransferArgs),
    /// GET a payload from `/download` and verify it byte by byte.
    Download(TransferArgs),
    /// Open a keep-alive connection, make one request and hold it open.
    Hold(HoldArgs),
    /// Send UDP queries to `serve --udp` backends and tally the answers per backend.
    UdpLoad(UdpLoadArgs),
    /// Print the conntrack entries that userspace deletes or expires (dockerd, conntrack -D,
    /// handoff), one JSON line each, until SIGTERM.
    CtRequests(CtRequestsArgs),
}

#[derive(Args, Debug)]
pub(crate) struct CtRequestsArgs {
    /// Only entries whose client (original source) address starts with this text.
    #[arg(long, value_name = "PREFIX")]
    pub(crate) client_prefix: Option<String>,
    /// File created once the subscription stands.
    #[arg(long)]
    pub(crate) ready_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// Address to listen on, e.g. 0.0.0.0:8080.
    #[arg(long)]
    pub(crate) listen: SocketAddr,
    /// Backend name reported in responses.
    #[arg(long)]
    pub(crate) name: String,
    /// File created (containing the bound address) once the socket listens.
    #[arg(long)]
    pub(crate) ready_file: Option<PathBuf>,
    /// Answer every other POST with 200 and append `POST <path> <ms since the epoch>` to
    /// DIR/requests.log (how tests see that, and when, a termination signal arrived); answer
    /// `GET /health` with 503 while DIR/unhealthy exists.
    #[arg(long, value_name = "DIR")]
    pub(crate) record_dir: Option<PathBuf>,
    /// Also answer UDP datagrams on this address with the backend's name.
    #[arg(long, value_name = "ADDR")]
    pub(crate) udp: Option<SocketAddr>,
}

#[derive(Args, Debug)]
pub(crate) struct UdpLoadArgs {
    /// Server address, IP:PORT.
    #[arg(long)]
    pub(crate) target: SocketAddr,
    /// Concurrent sessions (threads, one socket at a time each).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub(crate) sessions: u32,
    /// Queries per session (per socket, so per conntrack flow); 1: every query a new flow.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) per_session: u32,
    /// Pause between the queries of one session, in ms.
    #[arg(long, default_value_t = 0)]
    pub(crate) gap_ms: u64,
    /// Run for this many milliseconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) duration_ms: u64,
}

#[derive(Args, Debug)]
pub(crate) struct LoadArgs {
    /// Server address, IP:PORT.
    #[arg(long)]
    pub(crate) target: SocketAddr,
    /// Number of concurrent worker threads (one connection each).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) connections: u32,
    /// Run for this many milliseconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) duration_ms: u64,
    /// Stop after this many requests in total (still bounded by the duration).
    #[arg(long)]
    pub(crate) max_requests: Option<u64>,
    /// Reuse one connection per worker instead of one connection per request.
    #[arg(long)]
    pub(crate) keepalive: bool,
    /// Bind every connection to its own local address and port from these addresses, so that
    /// no client tuple repeats within the run (the kernel's choice wraps around after a few
    /// thousand connections to one destination).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "IP,...",
        conflicts_with = "source"
    )]
    pub(crate) unique_sources: Vec<IpAddr>,
    /// Bind every connection to this local address and port (a tuple reused on purpose).
    #[arg(long, value_name = "IP:PORT")]
    pub(crate) source: Option<SocketAddr>,
    /// A request that succeeds after more than this is reported as a stall (with its client
    /// address and start time), though it counts as ok.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub(crate) stall_ms: u64,
}

#[derive(Args, Debug)]
pub(crate) struct TransferArgs {
    /// Server address, IP:PORT.
    #[arg(long)]
    pub(crate) target: SocketAddr,
    /// Number of payload bytes to transfer.
    #[arg(long)]
    pub(crate) bytes: u64,
    /// Pace the transfer to about this many bytes per second.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) rate: Option<u64>,
}

#[derive(Args, Debug)]
pub(crate) struct HoldArgs {
    /// Server address, IP:PORT.
    #[arg(long)]
    pub(crate) target: SocketAddr,
    /// How long to keep the connection open after the response, in ms.
    #[arg(long)]
    pub(crate) ms: u64,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Usage errors exit 1 (not clap's 2); --help/--version exit 0.
            let code = if err.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
            let _ = err.print();
            return code;
        }
    };
    let succeeded = match cli.command {
        Command::Serve(args) => report_fatal(serve::serve(&args)),
        Command::Load(args) => report_fatal(load::load(&args)),
        Command::Upload(args) => transfer::upload(&args),
        Command::Download(args) => transfer::download(&args),
        Command::Hold(args) => hold::hold(&args),
        Command::UdpLoad(args) => udp::udp_load(&args),
        Command::CtRequests(args) => report_fatal(ct_requests::ct_requests(&args)),
    };
    if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints a fatal error on stderr; returns whether the command succeeded.
pub(crate) fn report_fatal(result: Result<()>) -> bool {
    match result {
        Ok(()) => true,
        Err(err) => {
            eprintln!("handoff-netkit: {err:#}");
            false
        }
    }
}

/// Set by SIGTERM or SIGINT in the modes that run until told to stop.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: nix::libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// On SIGTERM or SIGINT, [`stop_requested`] turns true: the mode finishes what is in flight
/// and reports, instead of dying with nothing said.
pub(crate) fn install_stop_handler() -> Result<()> {
    for signal in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::Handler(request_stop))
        }
        .context("installing the stop handler")?;
    }
    Ok(())
}

pub(crate) fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Prints `value` as the single JSON result line on stdout and flushes it.
pub(crate) fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let line = serde_json::to_string(value).context("serializing result")?;
    let mut out = io::stdout().lock();
    writeln!(out, "{line}").context("writing result")?;
    out.flush().context("flushing result")
}
