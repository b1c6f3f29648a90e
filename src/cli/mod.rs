//! The command line: one file per subcommand, holding its arguments and how its result is
//! shown. A subcommand checks its input, calls one use case of [`crate::ops`] with the real
//! outside worlds ([`with_env`]), and renders what comes back; messages on the way go to stderr
//! through [`StderrReporter`].

pub mod app;
pub mod check;
pub mod completions;
pub mod drain;
pub mod fleet;
pub mod flows;
pub mod kill;
pub mod list;
pub mod man;
pub mod monitor;
mod output;
mod progress;
pub mod promote;
pub mod restore;
pub mod rollback;
pub mod start;
pub mod stop;
pub mod switch;
pub mod teardown;
pub mod update;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;

use crate::config::{self, Component, Config};
use crate::error::Failure;
use crate::health::Network;
use crate::kernel::conntrack::Netlink;
use crate::kernel::netfilter::script::NftFirewall;
use crate::ops::{Env, Note, Reporter, RuntimeSource, Settings};
use crate::runtime::docker::Docker;
use crate::runtime::Runtime;
use crate::state::StateDir;
use progress::DrainProgress;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config and print a short summary.
    Check(check::Args),
    /// Point a component's ports at a new backend address once it passes its readyChecks.
    Switch(switch::Args),
    /// Show a component's draining backends and their live flows; --wait until none is left.
    Drain(drain::Args),
    /// The live flows per backend.
    Flows(flows::Args),
    /// Components, their active backend and their draining backends (and containers).
    List(list::Args),
    /// Start a Docker component's first container and route its ports to it.
    Start(start::Args),
    /// Start the new container beside the old one, switch when ready, drain and retire the old.
    Update(update::Args),
    /// Route the component back to its most recent draining backend (ready-checked again);
    /// the active one drains and, for a Docker component, is retired. During a canary: end it.
    Rollback(rollback::Args),
    /// Give the canary every new connection; the active backend drains and is retired.
    Promote(promote::Args),
    /// Take the component's ports out of the ruleset, drain, stop and remove its containers.
    Stop(stop::Args),
    /// Like stop, without draining: remove the containers now.
    Kill(kill::Args),
    /// Rebuild the ruleset from the state file (after a reboot or a deleted table) and resume
    /// draining.
    Restore(restore::Args),
    /// Run healthChecks periodically; replace an unhealthy active container through update.
    Monitor(monitor::Args),
    /// Remove handoff's table and its rules in Docker's chains (containers and state stay;
    /// `restore` routes again). The package runs it on removal.
    Teardown(teardown::Args),
    /// Print the shell completion script for SHELL.
    Completions(completions::Args),
    /// Print the man page handoff(8), or write every page into --dir.
    Man(man::Args),
    /// Many hosts, one config, on etcd v3 (gantryd's distributed mode).
    Fleet(fleet::Args),
}

/// The one argument of `start`, `stop` and `kill`.
#[derive(Debug, clap::Args)]
pub struct ComponentName {
    /// Component name.
    pub name: String,
}

/// The options every subcommand shares.
#[derive(Debug, Clone)]
pub struct Globals {
    pub config_path: PathBuf,
    pub table: String,
    pub state: StateDir,
    pub lock_timeout: Duration,
}

impl Globals {
    pub fn config(&self) -> Result<Config> {
        config::load(&self.config_path)
    }

    /// The component `name` of `config`, for a command that changes it: root only.
    pub fn component_to_change<'c>(&self, config: &'c Config, name: &str) -> Result<&'c Component> {
        let component = config.component(name)?;
        self.require_root()?;
        Ok(component)
    }

    /// Mutating commands change the kernel's ruleset: root only.
    pub fn require_root(&self) -> Result<()> {
        if !nix::unistd::geteuid().is_root() {
            return Err(
                Failure::host("this command changes the kernel's ruleset: run it as root").into(),
            );
        }
        Ok(())
    }
}

pub fn run(command: &Command, globals: &Globals) -> Result<()> {
    match command {
        Command::Check(args) => check::run(args, globals),
        Command::Switch(args) => switch::run(args, globals),
        Command::Drain(args) => drain::run(args, globals),
        Command::Flows(args) => flows::run(args, globals),
        Command::List(args) => list::run(args, globals),
        Command::Start(args) => start::run(args, globals),
        Command::Update(args) => update::run(args, globals),
        Command::Rollback(args) => rollback::run(args, globals),
        Command::Promote(args) => promote::run(args, globals),
        Command::Stop(args) => stop::run(args, globals),
        Command::Kill(args) => kill::run(args, globals),
        Command::Restore(args) => restore::run(args, globals),
        Command::Monitor(args) => monitor::run(args, globals),
        Command::Teardown(args) => teardown::run(args, globals),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
        Command::Fleet(args) => fleet::run(args, globals),
    }
}

fn connect_docker() -> Result<Box<dyn Runtime>> {
    Ok(Box::new(Docker::connect()?))
}

/// Run `use_case` against the real outside worlds: nftables, conntrack over netlink, the
/// network, and Docker (connected only if the use case needs it).
pub fn with_env<T>(globals: &Globals, use_case: impl FnOnce(&Env) -> Result<T>) -> Result<T> {
    let firewall = NftFirewall::new(&globals.table, globals.state.path());
    let reporter = StderrReporter::default();
    let env = Env::new(
        Settings {
            table: globals.table.clone(),
            state: globals.state.clone(),
            lock_timeout: globals.lock_timeout,
        },
        &firewall,
        &Network,
        &reporter,
        Box::new(Netlink::new()),
        RuntimeSource::Connect(connect_docker),
    );
    let result = use_case(&env);
    reporter.finish();
    result
}

/// After a switch that left a backend draining: wait for its drain and retire it (what
/// `update`, `promote` and `rollback` do), unless `no_wait`; an address backend is never
/// waited for here (`drain NAME --wait` does).
fn retire_drained(env: &Env, component: &Component, no_wait: bool) -> Result<()> {
    if no_wait || component.repo.is_none() {
        return Ok(());
    }
    let drain = crate::ops::drain::finish_drain(env, component, None)?;
    output::drain(&component.name, &drain, None)
}

/// Messages on stderr, one line each (journal-friendly), `handoff:` first; drain progress as
/// a bar on a terminal, as rate-limited lines otherwise.
#[derive(Default)]
pub struct StderrReporter {
    drains: RefCell<HashMap<String, DrainProgress>>,
}

impl StderrReporter {
    fn finish(&self) {
        for progress in self.drains.borrow().values() {
            progress.finish();
        }
    }
}

impl Reporter for StderrReporter {
    fn note(&self, note: Note) {
        match note {
            Note::Step(text) => eprintln!("handoff: {text}"),
            Note::Warning(text) => eprintln!("handoff: warning: {text}"),
        }
    }

    fn drain_progress(&self, component: &str, remaining: usize, waited: Duration) {
        self.drains
            .borrow_mut()
            .entry(component.to_string())
            .or_insert_with(|| DrainProgress::new(component))
            .update(remaining, waited);
    }
}

/// `--table`: an nft identifier of our own choosing, short and plain.
pub fn parse_table_name(text: &str) -> Result<String> {
    let valid = !text.is_empty()
        && text.len() <= 32
        && text.starts_with(|c: char| c.is_ascii_lowercase())
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(Failure::input(format!(
            "--table: {text:?} is not a valid table name (use [a-z][a-z0-9_]*, at most 32 characters)"
        ))
        .into());
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{exit_code_of, ExitCode};

    #[test]
    fn table_names_are_plain_identifiers() {
        assert_eq!(parse_table_name("handoff_2").unwrap(), "handoff_2");
        for bad in ["", "2x", "Handoff", "a-b", "a b", &"a".repeat(33)] {
            assert_eq!(
                exit_code_of(&parse_table_name(bad).unwrap_err()),
                ExitCode::Input
            );
        }
    }
}
