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
    /// The fleet's store (etcd) cannot be reached, or refused us: no endpoint answers, a
    /// connection died, a request timed out, its TLS certificate (or ours) failed
    /// verification, our login or a request was refused. The flags and files were fine: they
    /// are exit 2, checked before etcd is asked.
    Store = 7,
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

    pub fn store(message: impl Into<String>) -> Self {
        Failure::new(ExitCode::Store, message)
    }
}

/// The exit code for an error: the first [`Failure`] in its chain, or an etcd client error that
/// says the store could not be reached or refused us ([`ExitCode::Store`]), else
/// [`ExitCode::Runtime`].
pub fn exit_code_of(error: &anyhow::Error) -> ExitCode {
    error
        .chain()
        .find_map(|cause| {
            cause
                .downcast_ref::<Failure>()
                .map(|failure| failure.code)
                .or_else(|| {
                    cause
                        .downcast_ref::<etcd_client::Error>()
                        .and_then(store_code)
                })
        })
        .unwrap_or(ExitCode::Runtime)
}

/// [`ExitCode::Store`] for what the etcd client reports when the store cannot be reached or
/// refuses us, wherever in the fleet code the request was made: every request goes through
/// etcd-client, so its error is the one place to tell.
fn store_code(error: &etcd_client::Error) -> Option<ExitCode> {
    use etcd_client::Error;
    use tonic::Code;
    let store = match error {
        Error::TransportError(_) | Error::IoError(_) => true,
        // A stream that ended under us (its channel closed): the connection went.
        Error::WatchError(_) => true,
        Error::LeaseKeepAliveError(reason) => reason != "lease not found",
        Error::GRpcStatus(status) => match status.code() {
            // Unreachable, a dead connection, a request that timed out (tonic reports its
            // own timeout as Cancelled), h2 errors (Unknown), a refused login or request.
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Unauthenticated
            | Code::PermissionDenied => true,
            // etcd's own codes for "no user given while auth is on" and a wrong password.
            Code::InvalidArgument | Code::FailedPrecondition => {
                status.message().contains("etcdserver: user name is empty")
                    || status
                        .message()
                        .contains("etcdserver: authentication failed")
                    || status
                        .message()
                        .contains("etcdserver: authentication is not enabled")
                    || status.message().contains("etcdserver: permission denied")
            }
            _ => false,
        },
        _ => false,
    };
    store.then_some(ExitCode::Store)
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

    #[test]
    fn an_unreachable_or_refusing_etcd_is_a_store_failure_wherever_it_is_wrapped() {
        use etcd_client::Error;
        use tonic::{Code, Status};
        for (error, code) in [
            (
                Error::GRpcStatus(Status::new(Code::Unavailable, "tcp connect error")),
                ExitCode::Store,
            ),
            (
                Error::GRpcStatus(Status::new(Code::Cancelled, "Timeout expired")),
                ExitCode::Store,
            ),
            (
                Error::GRpcStatus(Status::new(
                    Code::PermissionDenied,
                    "etcdserver: permission denied",
                )),
                ExitCode::Store,
            ),
            (
                Error::GRpcStatus(Status::new(
                    Code::InvalidArgument,
                    "etcdserver: authentication failed, invalid user ID or password",
                )),
                ExitCode::Store,
            ),
            (
                Error::LeaseKeepAliveError("channel closed".into()),
                ExitCode::Store,
            ),
            (
                Error::GRpcStatus(Status::new(
                    Code::InvalidArgument,
                    "etcdserver: key is not provided",
                )),
                ExitCode::Runtime,
            ),
            (
                Error::LeaseKeepAliveError("lease not found".into()),
                ExitCode::Runtime,
            ),
        ] {
            let text = error.to_string();
            let wrapped = Err::<(), _>(error)
                .context("etcd at http://10.0.0.1:2379: reading /handoff/x")
                .unwrap_err();
            assert_eq!(exit_code_of(&wrapped), code, "{text}");
        }
    }
}
