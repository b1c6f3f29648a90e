//! Exit codes and the typed failures that select them.
//!
//! Every command returns `anyhow::Result`; a [`Failure`] anywhere in the error chain decides the
//! process exit code, so scripts and systemd units can tell "your input is wrong" from "the
//! backend never became ready" from "the host is missing something". Anything else exits 1.

use std::fmt;

/// The documented exit codes (see README, "Exit codes"). Success is 0 and needs no variant:
/// it is the absence of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// A runtime failure: the kernel, `nft` or netlink refused an operation.
    Runtime = 1,
    /// Bad input: config file, command-line argument, unknown component, bad address.
    Input = 2,
    /// The new backend did not pass its readyChecks within readyTimeout; nothing was changed.
    NotReady = 3,
    /// `drain --wait --timeout` expired while flows were still open.
    DrainTimeout = 4,
    /// Another handoff run held the lock for longer than `--lock-timeout`.
    Busy = 5,
    /// The host lacks something handoff needs: root, the `nft` binary, ctnetlink.
    Host = 6,
}

/// A failure whose kind decides the exit code. The message names the problem.
#[derive(Debug, thiserror::Error)]
pub struct Failure {
    pub code: ExitCode,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Failure {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub fn input(message: impl Into<String>) -> Self {
        Failure::new(ExitCode::Input, message)
    }

    pub fn host(message: impl Into<String>) -> Self {
        Failure::new(ExitCode::Host, message)
    }
}

/// The exit code for an error: the first [`Failure`] in its chain, else [`ExitCode::Runtime`].
pub fn exit_code_of(error: &anyhow::Error) -> ExitCode {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Failure>())
        .map(|failure| failure.code)
        .unwrap_or(ExitCode::Runtime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_first_failure_in_the_chain_picks_the_code() {
        let error = Err::<(), _>(Failure::new(ExitCode::NotReady, "not ready"))
            .context("switching web")
            .unwrap_err();
        assert_eq!(exit_code_of(&error), ExitCode::NotReady);
        assert_eq!(format!("{error:#}"), "switching web: not ready");
    }

    #[test]
    fn untyped_errors_are_runtime_failures() {
        assert_eq!(exit_code_of(&anyhow::anyhow!("boom")), ExitCode::Runtime);
    }
}
