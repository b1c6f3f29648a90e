//! The `handoff` command line: parse, dispatch, map errors to documented exit codes.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode as ProcessExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use handoff::commands::{self, Context};
use handoff::config;
use handoff::error::exit_code_of;
use handoff::state::{StateDir, DEFAULT_STATE_DIR};

/// Zero-downtime updates with kernel DNAT and conntrack draining: no proxy in the data path.
#[derive(Debug, Parser)]
#[command(name = "handoff", version, about, long_about = None)]
struct Cli {
    /// Config file [default: /etc/handoff/handoff.json]. gantry's form `handoff FILE COMMAND`
    /// works too.
    #[arg(
        short,
        long,
        global = true,
        env = "HANDOFF_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,

    /// Where the state file and the lock live.
    #[arg(long, global = true, env = "HANDOFF_STATE_DIR", default_value = DEFAULT_STATE_DIR, value_name = "DIR")]
    state_dir: PathBuf,

    /// Our nftables table (family inet): one per independent installation.
    #[arg(long, global = true, env = "HANDOFF_TABLE", default_value = handoff::netfilter::ruleset::DEFAULT_TABLE, value_name = "NAME")]
    table: String,

    /// How long a mutating command waits for another run's lock before giving up (exit 5).
    #[arg(long, global = true, default_value_t = 600, value_name = "SECS")]
    lock_timeout: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the config and print a short summary.
    Check,
    /// Point a component's ports at a new backend address once it passes its readyChecks.
    Switch {
        /// Component name.
        name: String,
        /// The new backend's IPv4 address (ports come from the config).
        #[arg(long, value_name = "ADDR")]
        to: String,
    },
    /// Show a component's draining backends and their live flows; --wait until none is left.
    Drain {
        name: String,
        /// Return as soon as no draining backend has a live flow.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after SECS (exit 4, listing the flows still open).
        #[arg(long, value_name = "SECS", requires = "wait")]
        timeout: Option<u64>,
    },
    /// The live flows per backend.
    Flows {
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Components, their active backend and their draining backends (and containers).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Start a Docker component's first container and route its ports to it.
    Start { name: String },
    /// Start the new container beside the old one, switch when ready, drain and retire the old.
    Update {
        name: String,
        /// Image tag to deploy instead of the config's `tag`.
        #[arg(long)]
        tag: Option<String>,
        /// Return right after the switch; `drain NAME --wait` retires the old container later.
        #[arg(long)]
        no_wait: bool,
    },
    /// Take the component's ports out of the ruleset, drain, stop and remove its containers.
    Stop { name: String },
    /// Like stop, without draining: remove the containers now.
    Kill { name: String },
    /// Rebuild the ruleset from the state file (after a reboot or a deleted table) and resume
    /// draining.
    Restore,
    /// Run healthChecks periodically; replace an unhealthy active container through update.
    Monitor {
        name: String,
        /// Seconds between rounds of health checks.
        #[arg(long, default_value_t = 10, value_name = "SECS")]
        interval: u64,
        /// Consecutive failed rounds before the container is replaced.
        #[arg(long, default_value_t = 3, value_name = "N")]
        failures: u32,
    },
}

const SUBCOMMANDS: &[&str] = &[
    "check", "switch", "drain", "flows", "list", "start", "update", "stop", "kill", "monitor",
    "restore", "help",
];

/// gantry is run as `gantry CONFIG ACTION ...`: turn a leading config path into `-c CONFIG`.
fn gantry_form(args: Vec<OsString>) -> Vec<OsString> {
    let Some(first) = args.get(1).and_then(|a| a.to_str()) else {
        return args;
    };
    let looks_like_config = !first.starts_with('-')
        && !SUBCOMMANDS.contains(&first)
        && (first.ends_with(".json") || std::path::Path::new(first).is_file());
    if !looks_like_config {
        return args;
    }
    let mut rewritten = vec![args[0].clone(), OsString::from("--config")];
    rewritten.extend(args[1..].iter().cloned());
    rewritten
}

fn main() -> ProcessExitCode {
    let cli = Cli::parse_from(gantry_form(std::env::args_os().collect()));
    let table = match commands::parse_table_name(&cli.table) {
        Ok(table) => table,
        Err(error) => {
            eprintln!("handoff: error: {error:#}");
            return ProcessExitCode::from(exit_code_of(&error) as u8);
        }
    };
    let ctx = Context {
        config_path: config::resolve_path(cli.config.as_deref()),
        table,
        state: StateDir::new(cli.state_dir),
        lock_timeout: Duration::from_secs(cli.lock_timeout),
    };
    let result = match &cli.command {
        Command::Check => commands::check::run(&ctx),
        Command::Switch { name, to } => commands::switch::run(&ctx, name, to),
        Command::Drain {
            name,
            wait,
            timeout,
        } => commands::drain::run(&ctx, name, *wait, *timeout),
        Command::Flows { name, json } => commands::flows::run(&ctx, name.as_deref(), *json),
        Command::List { json } => commands::list::run(&ctx, *json),
        Command::Start { name } => commands::docker::start(&ctx, name),
        Command::Update { name, tag, no_wait } => {
            commands::docker::update(&ctx, name, tag.as_deref(), *no_wait)
        }
        Command::Stop { name } => commands::docker::stop(&ctx, name),
        Command::Kill { name } => commands::docker::kill(&ctx, name),
        Command::Restore => commands::docker::restore(&ctx),
        Command::Monitor {
            name,
            interval,
            failures,
        } => commands::docker::monitor(&ctx, name, *interval, *failures),
    };
    match result {
        Ok(()) => ProcessExitCode::SUCCESS,
        Err(error) => {
            eprintln!("handoff: error: {error:#}");
            ProcessExitCode::from(exit_code_of(&error) as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn a_leading_config_file_becomes_the_config_option() {
        assert_eq!(
            gantry_form(args(&[
                "handoff",
                "production.json",
                "switch",
                "quay",
                "--to",
                "10.0.0.2"
            ])),
            args(&[
                "handoff",
                "--config",
                "production.json",
                "switch",
                "quay",
                "--to",
                "10.0.0.2"
            ])
        );
        assert_eq!(
            gantry_form(args(&["handoff", "list", "--json"])),
            args(&["handoff", "list", "--json"])
        );
        assert_eq!(
            gantry_form(args(&["handoff", "-c", "x.json", "list"])),
            args(&["handoff", "-c", "x.json", "list"])
        );
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
