//! The `handoff` command line: parse, dispatch, map errors to documented exit codes. Each
//! subcommand lives in its own file under `src/cli/`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode as ProcessExitCode;
use std::time::Duration;

use clap::Parser;

use handoff::cli;
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
    #[arg(long, global = true, env = "HANDOFF_TABLE", default_value = handoff::kernel::netfilter::ruleset::DEFAULT_TABLE, value_name = "NAME")]
    table: String,

    /// How long a mutating command waits for another run's lock before giving up (exit 5).
    #[arg(long, global = true, default_value_t = 600, value_name = "SECS")]
    lock_timeout: u64,

    #[command(subcommand)]
    command: cli::Command,
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
    let args = Cli::parse_from(gantry_form(std::env::args_os().collect()));
    let result = cli::parse_table_name(&args.table).and_then(|table| {
        let globals = cli::Globals {
            config_path: config::resolve_path(args.config.as_deref()),
            table,
            state: StateDir::new(args.state_dir),
            lock_timeout: Duration::from_secs(args.lock_timeout),
        };
        cli::run(&args.command, &globals)
    });
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
