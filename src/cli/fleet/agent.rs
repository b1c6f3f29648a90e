//! `handoff fleet agent [--host NAME]`: the long-running agent of one host. Today it registers
//! the host under a lease and keeps the registration alive (through etcd outages) until
//! SIGTERM or SIGINT, when it revokes the lease so the host shows as lost at once. Converging
//! the host's components and taking part in rollouts come next (README, "Fleet").

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{signal, SigHandler, Signal};

use super::Fleet;
use crate::fleet::keys::valid_name;
use crate::fleet::registration::Registration;
use crate::fleet::LEASE_TTL_SECS;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// This host's name in the fleet [default: the hostname].
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn run(args: &Args, fleet: &Fleet) -> Result<()> {
    let host = match &args.host {
        Some(host) => host.clone(),
        None => nix::unistd::gethostname()
            .context("reading the hostname")?
            .to_string_lossy()
            .into_owned(),
    };
    valid_name("--host", &host)?;
    for stop_signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { signal(stop_signal, SigHandler::Handler(request_stop)) }
            .context("installing the stop signal handlers")?;
    }
    let registration = Registration::start(
        &fleet.endpoints,
        &fleet.keys,
        &host,
        Box::new(|line| eprintln!("handoff: fleet: {line}")),
    )?;
    eprintln!(
        "handoff: fleet: {host} registered in fleet {} (lease {LEASE_TTL_SECS} s, kept alive)",
        fleet.name
    );
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(registration);
    eprintln!(
        "handoff: fleet: {host} left fleet {} (lease revoked)",
        fleet.name
    );
    Ok(())
}
