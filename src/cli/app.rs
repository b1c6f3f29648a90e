//! The whole command line as one clap definition: parsed by `main`, and rendered by `man` and
//! `completions`, so the man pages and completions the package ships are the ones a user
//! generates from the same binary.

use std::path::PathBuf;

use clap::Parser;

use super::Command;
use crate::kernel::netfilter::ruleset::DEFAULT_TABLE;
use crate::state::DEFAULT_STATE_DIR;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  runtime failure: the kernel, nft or netlink refused an operation (the message says which)
  2  bad input: config file, command line, unknown component, bad address; nothing was changed
  3  the new backend did not pass its readyChecks within readyTimeout; nothing was changed
  4  drain --wait --timeout expired with flows still open (they are listed)
  5  another handoff run held the lock longer than --lock-timeout; nothing was changed
  6  the host lacks something: root, the nft binary, ctnetlink/conntrack
  7  fleet: etcd cannot be reached or refused us (TLS, login, permission)

Files:
  /etc/handoff/handoff.json     the config (gantry's JSON format)
  /etc/handoff/fleet-signers    whose signatures a fleet agent accepts (allowed_signers)
  /etc/handoff/policy.json      what a fleet agent may run on this host
  /var/lib/handoff/             the state file, the lock, the fleet spec accepted here

Messages go to stderr, one line per event, `handoff: ...`; results go to stdout.";

/// Zero-downtime updates with kernel DNAT and conntrack draining: no proxy in the data path.
#[derive(Debug, Parser)]
#[command(name = "handoff", version, about, long_about = None, after_long_help = EXIT_CODES)]
pub struct Cli {
    /// Config file [default: /etc/handoff/handoff.json]. gantry's form `handoff FILE COMMAND`
    /// works too.
    #[arg(
        short,
        long,
        global = true,
        env = "HANDOFF_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Where the state file and the lock live.
    #[arg(long, global = true, env = "HANDOFF_STATE_DIR", default_value = DEFAULT_STATE_DIR, value_name = "DIR")]
    pub state_dir: PathBuf,

    /// Our nftables table (family inet): one per independent installation.
    #[arg(long, global = true, env = "HANDOFF_TABLE", default_value = DEFAULT_TABLE, value_name = "NAME")]
    pub table: String,

    /// How long a mutating command waits for another run's lock before giving up (exit 5).
    #[arg(long, global = true, default_value_t = 600, value_name = "SECS")]
    pub lock_timeout: u64,

    #[command(subcommand)]
    pub command: Command,
}
