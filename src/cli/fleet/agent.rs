//! `handoff fleet agent [--host NAME] [--signers FILE] [--policy FILE]`: the long-running
//! agent of one host (what it does: [`crate::fleet::agent`]). This file gives it its parts:
//! the host's name, its signers file and policy (refusing to start with neither, unless
//! `--insecure-accept-any-spec` accepts the risk), what it accepted before, a registration
//! under a lease kept alive through etcd outages, and the real host ([`ops_host`]). SIGTERM
//! or SIGINT revoke the lease, so the host shows as lost at once.

mod ops_host;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{signal, SigHandler, Signal};

use super::super::Globals;
use super::Fleet;
use crate::error::Failure;
use crate::fleet::accepted::Accepted;
use crate::fleet::admission::{Admission, Required, DEFAULT_SIGNERS};
use crate::fleet::agent::{Agent, HealthSettings, Parts};
use crate::fleet::keys::valid_host;
use crate::fleet::policy::{self, Policy};
use crate::fleet::registration::{Liveness, Registration};
use crate::fleet::signing::Signers;
use crate::fleet::LEASE_TTL_SECS;
use ops_host::OpsHost;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// This host's name in the fleet [default: the hostname].
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Seconds between rounds of health checks of the components serving here.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub health_interval: u64,
    /// Consecutive failed rounds before a component's container is replaced (as `monitor`).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub health_failures: u32,
    /// The keys whose signatures this host accepts on the fleet's spec (OpenSSH
    /// allowed_signers, as git uses) [default: /etc/handoff/fleet-signers, when it exists].
    #[arg(long, value_name = "FILE")]
    pub signers: Option<PathBuf>,
    /// What the fleet may run on this host [default: /etc/handoff/policy.json, when it
    /// exists].
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Run with neither a signers file nor a policy: whoever can write the fleet's keys in
    /// etcd then chooses what runs here, as root.
    #[arg(long)]
    pub insecure_accept_any_spec: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn say<T: AsRef<str>>(line: T) {
    eprintln!("handoff: fleet: {}", line.as_ref());
}

/// The file given, or the default when it exists; `None` when neither.
fn chosen(given: &Option<PathBuf>, default: &str) -> Option<PathBuf> {
    given
        .clone()
        .or_else(|| Path::new(default).exists().then(|| PathBuf::from(default)))
}

pub fn run(args: &Args, fleet: &Fleet, globals: &Globals) -> Result<()> {
    let host = match &args.host {
        Some(host) => host.clone(),
        None => nix::unistd::gethostname()
            .context("reading the hostname")?
            .to_string_lossy()
            .into_owned(),
    };
    valid_host("--host", &host)?;
    let signers = chosen(&args.signers, DEFAULT_SIGNERS);
    let policy_file = chosen(&args.policy, policy::DEFAULT_PATH);
    if signers.is_none() && policy_file.is_none() && !args.insecure_accept_any_spec {
        return Err(Failure::input(format!(
            "neither a signers file ({DEFAULT_SIGNERS}, or --signers FILE) nor a policy ({}, \
             or --policy FILE): this agent would run, as root, whatever anyone able to write \
             the fleet's keys in etcd stores there. Give one or both (README, \"Fleet\"), or \
             accept that risk with --insecure-accept-any-spec",
            policy::DEFAULT_PATH
        ))
        .into());
    }
    let required = match &signers {
        Some(file) => Some(Required {
            signers: Signers::load(file)?,
            file: file.clone(),
        }),
        None => None,
    };
    let policy = policy_file.as_deref().map(Policy::load).transpose()?;
    globals.require_root()?;
    let accepted = Accepted::open(globals.state.path(), &fleet.name)?;
    for stop_signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { signal(stop_signal, SigHandler::Handler(request_stop)) }
            .context("installing the stop signal handlers")?;
    }
    // Connected before registering: once the host is registered, nothing at start-up depends on
    // etcd any more (an etcd that goes away just then is retried like any outage).
    let store = fleet.connect()?;
    let liveness = Liveness::default();
    let registration = std::sync::Arc::new(Registration::start(
        &fleet.access,
        &fleet.keys,
        &host,
        liveness.clone(),
        Box::new(|line: String| say(line)),
    )?);
    let trust = match (&signers, &policy_file) {
        (Some(s), Some(p)) => format!("signed by {}, allowed by {}", s.display(), p.display()),
        (Some(s), None) => format!("signed by {}, no policy", s.display()),
        (None, Some(p)) => format!("unsigned, allowed by {}", p.display()),
        (None, None) => "ANY SPEC (--insecure-accept-any-spec)".to_string(),
    };
    say(format!(
        "{host} registered in fleet {} (lease {LEASE_TTL_SECS} s, kept alive); accepting: {trust}",
        fleet.name
    ));
    let lease = registration.clone();
    let mut agent = Agent::new(Parts {
        store,
        host: OpsHost::new(globals.clone()),
        keys: fleet.keys.clone(),
        name: host.clone(),
        lease: Box::new(move || lease.lease()),
        admission: Admission::new(&fleet.name, required, accepted),
        policy,
        say: Box::new(say::<String>),
        liveness,
        health: HealthSettings {
            interval: Duration::from_secs(args.health_interval.max(1)),
            failures_allowed: args.health_failures.max(1),
        },
    });
    agent.run(&|| STOP.load(Ordering::SeqCst));
    drop(agent);
    drop(registration);
    say(format!("{host} left fleet {} (lease revoked)", fleet.name));
    Ok(())
}
