//! `hold`: one keep-alive connection held open, to prove that a switch leaves existing
//! connections where they are.

use std::io::{BufReader, ErrorKind};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::client::{await_server_close, connect, get_root, REQUEST_TIMEOUT};
use crate::{print_json, report_fatal, HoldArgs};

/// The JSON line printed by `hold` as soon as the response arrives (or,
/// with `error` set, when the request fails).
#[derive(Serialize)]
pub(crate) struct HoldReport {
    pub(crate) backend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// `hold`: one keep-alive request, print the backend, then keep the
/// connection open `--ms` and close it cleanly.
///
/// Fails if the request fails, or (reported on stderr only, since the result
/// line is already out) if the peer closed or reset the connection while it
/// was held.
pub(crate) fn hold(args: &HoldArgs) -> bool {
    let reader = match hold_request(args.target) {
        Ok((backend, reader)) => {
            let report = HoldReport {
                backend: Some(backend),
                error: None,
            };
            if !report_fatal(print_json(&report)) {
                return false;
            }
            reader
        }
        Err(err) => {
            let report = HoldReport {
                backend: None,
                error: Some(format!("{err:#}")),
            };
            report_fatal(print_json(&report));
            return report_fatal(Err(err));
        }
    };
    thread::sleep(Duration::from_millis(args.ms));
    report_fatal(close_held(reader.into_inner()))
}

/// Makes the keep-alive request; returns the backend and the open connection.
pub(crate) fn hold_request(target: SocketAddr) -> Result<(String, BufReader<TcpStream>)> {
    let mut reader = BufReader::new(connect(target, REQUEST_TIMEOUT)?);
    let (backend, keep) = get_root(&mut reader, false)?;
    if !keep {
        bail!("server refused to keep the connection alive");
    }
    Ok((backend, reader))
}

/// Checks that the held connection survived, then closes it gracefully.
pub(crate) fn close_held(stream: TcpStream) -> Result<()> {
    check_alive(&stream)?;
    stream.shutdown(Shutdown::Write).context("shutdown")?;
    await_server_close(&mut &stream)
}

/// Fails if the peer has closed or reset `stream`.
pub(crate) fn check_alive(stream: &TcpStream) -> Result<()> {
    stream.set_nonblocking(true).context("set nonblocking")?;
    let state = stream.peek(&mut [0u8; 1]);
    stream.set_nonblocking(false).context("set blocking")?;
    match state {
        Ok(0) => bail!("connection closed by peer while held"),
        Ok(_) => Ok(()),
        Err(err) if err.kind() == ErrorKind::WouldBlock => Ok(()),
        Err(err) => Err(err).context("connection broken while held"),
    }
}
