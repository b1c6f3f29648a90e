//! `handoff man [--dir DIR]`: the man pages, rendered from the clap definition (clap_mangen):
//! handoff(8) on stdout, or handoff(8) and one handoff-SUBCOMMAND(8) per subcommand written
//! into DIR (what the Debian package ships).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_mangen::Man;

use super::app::Cli;

/// Section 8: system administration commands (handoff runs as root).
const SECTION: &str = "8";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write handoff.8 and handoff-SUBCOMMAND.8 into DIR instead of handoff(8) to stdout.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    let mut command = Cli::command();
    command.build();
    match &args.dir {
        None => {
            let mut page = Vec::new();
            render(&command, &mut page)?;
            std::io::stdout()
                .write_all(&page)
                .context("writing the man page to stdout")
        }
        Some(dir) => {
            write_page(dir, "handoff", &command)?;
            for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
                let name = format!("handoff-{}", sub.get_name());
                let sub = sub.clone().name(name.clone());
                write_page(dir, &name, &sub)?;
            }
            Ok(())
        }
    }
}

fn render(command: &clap::Command, out: &mut Vec<u8>) -> Result<()> {
    Man::new(command.clone())
        .section(SECTION)
        .manual("handoff manual")
        .render(out)
        .context("rendering the man page")
}

fn write_page(dir: &Path, name: &str, command: &clap::Command) -> Result<()> {
    let mut page = Vec::new();
    render(command, &mut page)?;
    let path = dir.join(format!("{name}.{SECTION}"));
    fs::write(&path, page).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_every_subcommand_and_the_exit_codes() {
        let mut command = Cli::command();
        command.build();
        let mut page = Vec::new();
        render(&command, &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.starts_with(".ie"), "{page}");
        assert!(page.contains(".TH handoff 8"), "{page}");
        for sub in ["update", "restore", "monitor", "teardown", "completions"] {
            assert!(page.contains(sub), "{sub} missing from the page");
        }
        assert!(page.contains("Exit codes"));
    }

    #[test]
    fn a_directory_gets_one_page_per_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        run(&Args {
            dir: Some(dir.path().to_path_buf()),
        })
        .unwrap();
        let update = fs::read_to_string(dir.path().join("handoff-update.8")).unwrap();
        assert!(update.contains("\\-\\-no\\-wait"), "{update}");
        assert!(dir.path().join("handoff.8").is_file());
        assert!(!dir.path().join("handoff-help.8").exists());
    }
}
