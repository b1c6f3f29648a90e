//! `handoff fleet agent [--host NAME]`: the long-running agent of one host. It registers the
//! host under a lease kept alive through etcd outages, and converges the host to the fleet's
//! config — every Docker component started here, at the config's tag — at start and whenever
//! the config changes (an etcd watch from the revision it read: no polling), writing each
//! component's status under its lease (fencing). etcd unreachable never tears anything down:
//! it retries with backoff and converges again from a fresh read when etcd answers. SIGTERM or
//! SIGINT revoke the lease, so the host shows as lost at once. Rollouts (`fleet update`) and
//! health checks come next (README, "Fleet").

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{signal, SigHandler, Signal};

use super::super::{with_env, Globals};
use super::Fleet;
use crate::config::{self, Config};
use crate::fleet::keys::valid_name;
use crate::fleet::records::{now_ms, StatusRecord};
use crate::fleet::registration::Registration;
use crate::fleet::{Etcd, LEASE_TTL_SECS};
use crate::ops::converge::converge;

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

fn say(line: impl AsRef<str>) {
    eprintln!("handoff: fleet: {}", line.as_ref());
}

pub fn run(args: &Args, fleet: &Fleet, globals: &Globals) -> Result<()> {
    let host = match &args.host {
        Some(host) => host.clone(),
        None => nix::unistd::gethostname()
            .context("reading the hostname")?
            .to_string_lossy()
            .into_owned(),
    };
    valid_name("--host", &host)?;
    globals.require_root()?;
    for stop_signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { signal(stop_signal, SigHandler::Handler(request_stop)) }
            .context("installing the stop signal handlers")?;
    }
    let registration = Registration::start(
        &fleet.endpoints,
        &fleet.keys,
        &host,
        Box::new(|line: String| say(line)),
    )?;
    say(format!(
        "{host} registered in fleet {} (lease {LEASE_TTL_SECS} s, kept alive)",
        fleet.name
    ));
    let mut agent = Agent {
        etcd: fleet.connect()?,
        fleet,
        globals,
        host: &host,
        registration: &registration,
    };
    agent.run();
    drop(registration);
    say(format!("{host} left fleet {} (lease revoked)", fleet.name));
    Ok(())
}

struct Agent<'a> {
    etcd: Etcd,
    fleet: &'a Fleet,
    globals: &'a Globals,
    host: &'a str,
    registration: &'a Registration,
}

impl Agent<'_> {
    /// Read, converge, watch; again from a fresh read after every change or etcd failure.
    fn run(&mut self) {
        let mut backoff = Duration::from_secs(1);
        let mut failing = false;
        while !STOP.load(Ordering::SeqCst) {
            match self.read_converge_and_watch() {
                Ok(()) => {
                    backoff = Duration::from_secs(1);
                    if std::mem::take(&mut failing) {
                        say("etcd answers again; converged from a fresh read");
                    }
                }
                Err(error) => {
                    if !failing {
                        failing = true;
                        say(format!(
                            "{error:#}; nothing is torn down, retrying with backoff"
                        ));
                    }
                    let until = std::time::Instant::now() + backoff;
                    while std::time::Instant::now() < until && !STOP.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One round: the config as of now, convergence, then a watch from that revision until
    /// the config changes (`Ok`) or the watch fails (`Err`).
    fn read_converge_and_watch(&mut self) -> Result<()> {
        let key = self.fleet.keys.config();
        let (text, revision) = self.etcd.get_at(&key)?;
        match text {
            None => say(format!("fleet {}: no config stored yet", self.fleet.name)),
            Some(text) => match config::parse(&String::from_utf8_lossy(&text)) {
                Ok(config) => self.converge(&config)?,
                // setconfig validates; a config written around it is reported, never applied.
                Err(error) => say(format!(
                    "the stored config is not valid, ignored: {error:#}"
                )),
            },
        }
        let mut watch = self.etcd.watch(&key, revision)?;
        while !STOP.load(Ordering::SeqCst) {
            if self.etcd.changed(&mut watch, Duration::from_secs(1))? {
                say(format!("fleet {}: the config changed", self.fleet.name));
                return Ok(());
            }
        }
        Ok(())
    }

    fn converge(&mut self, config: &Config) -> Result<()> {
        let results = with_env(self.globals, |env| Ok(converge(env, config)))?;
        for (component, result) in results {
            let status = match &result {
                Ok(serving) => {
                    say(format!(
                        "{component}: {} {} at {}",
                        if serving.started {
                            "started"
                        } else {
                            "serving"
                        },
                        serving.tag,
                        serving.address
                    ));
                    StatusRecord {
                        component: component.clone(),
                        tag: Some(serving.tag.clone()),
                        active: Some(serving.address.to_string()),
                        state: "ready".into(),
                        reason: None,
                        at_ms: now_ms(),
                    }
                }
                Err(error) => {
                    say(format!("{component}: failed: {error:#}"));
                    StatusRecord {
                        component: component.clone(),
                        tag: None,
                        active: None,
                        state: "failed".into(),
                        reason: Some(format!("{error:#}")),
                        at_ms: now_ms(),
                    }
                }
            };
            let written = self.etcd.put_fenced(
                &self.fleet.keys.status(self.host, &component),
                serde_json::to_vec(&status)?,
                &self.fleet.keys.host(self.host),
                self.registration.lease(),
            )?;
            if !written {
                say(format!(
                    "{component}: status not written: this agent's lease no longer holds {}",
                    self.host
                ));
            }
        }
        Ok(())
    }
}
