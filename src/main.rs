//! The `handoff` command line: parse, dispatch, map errors to documented exit codes. Each
//! subcommand lives in its own file under `src/cli/`.

use std::ffi::OsString;
use std::process::ExitCode as ProcessExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};

use handoff::cli;
use handoff::cli::app::Cli;
use handoff::config;
use handoff::error::exit_code_of;
use handoff::state::StateDir;

/// Whether `word` names a subcommand (`help` included), rather than gantry's leading config.
fn is_subcommand(word: &str) -> bool {
    word == "help"
        || Cli::command()
            .get_subcommands()
            .any(|sub| sub.get_name() == word)
}

/// gantry is run as `gantry CONFIG ACTION ...`: turn a leading config path into `-c CONFIG`.
fn gantry_form(args: Vec<OsString>) -> Vec<OsString> {
    let Some(first) = args.get(1).and_then(|a| a.to_str()) else {
        return args;
    };
    let looks_like_config = !first.starts_with('-')
        && !is_subcommand(first)
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
        Cli::command().debug_assert();
    }

    #[test]
    fn subcommand_names_are_not_taken_for_a_config_file() {
        for word in ["update", "teardown", "man", "help"] {
            assert!(is_subcommand(word), "{word}");
        }
        assert!(!is_subcommand("production.json"));
    }
}
