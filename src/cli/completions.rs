//! `handoff completions SHELL`: the shell completion script on stdout, rendered from the clap
//! definition (clap_complete); the Debian package ships the same output.

use anyhow::Result;
use clap::CommandFactory;
use clap_complete::Shell;

use super::app::Cli;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

pub fn run(args: &Args) -> Result<()> {
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "handoff", &mut std::io::stdout());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_completion_offers_the_subcommands() {
        let mut script = Vec::new();
        clap_complete::generate(Shell::Bash, &mut Cli::command(), "handoff", &mut script);
        let script = String::from_utf8(script).unwrap();
        assert!(script.contains("complete -F _handoff"), "{script}");
        for sub in ["update", "restore", "monitor", "teardown"] {
            assert!(script.contains(sub), "{sub} missing");
        }
    }
}
