//! `hold`: one keep-alive connection held open across a switch, to prove that the switch left
//! it where it was.
//!
//! An idle socket proves nothing (a connection whose NAT binding vanished looks idle too), so
//! after its hold time the connection is *used*: a second request on it must be answered, by
//! the same backend as the first, and then closed by the server as asked. Only then does
//! `hold` exit 0.

use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::client::{await_server_close, connect, get_root, REQUEST_TIMEOUT};
use crate::{print_json, report_fatal, HoldArgs};

/// The JSON lines printed by `hold`: the first as soon as the first response arrives
/// (`backend`), the second at the end (`again`: who answered on the same connection after the
/// hold), or `error` when a step failed.
#[derive(Serialize, Default)]
pub(crate) struct HoldReport {
    pub(crate) backend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) again: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// `hold`: one keep-alive request, print the backend; after `--ms`, a second request on the
/// same connection; exit 0 only if the same backend answered it and closed cleanly.
pub(crate) fn hold(args: &HoldArgs) -> bool {
    let mut report = HoldReport::default();
    let (backend, mut reader) = match hold_request(args.target) {
        Ok(held) => held,
        Err(err) => {
            report.error = Some(format!("{err:#}"));
            report_fatal(print_json(&report));
            return report_fatal(Err(err));
        }
    };
    report.backend = Some(backend.clone());
    if !report_fatal(print_json(&report)) {
        return false;
    }
    thread::sleep(Duration::from_millis(args.ms));
    let result = use_again(&mut reader, &backend);
    match &result {
        Ok(again) => report.again = Some(again.clone()),
        Err(err) => report.error = Some(format!("{err:#}")),
    }
    report_fatal(print_json(&report)) && report_fatal(result.map(drop))
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

/// A second request on the held connection (asking the server to close after it): it must be
/// answered by `backend`, and the server's FIN must follow.
pub(crate) fn use_again(reader: &mut BufReader<TcpStream>, backend: &str) -> Result<String> {
    let (again, _) = get_root(reader, true)
        .map_err(|e| e.context("the held connection did not survive: a second request on it"))?;
    if again != backend {
        bail!("the held connection now reaches {again:?}, not {backend:?}");
    }
    await_server_close(reader)?;
    Ok(again)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A server answering `names` in turn, one per request, on one connection, the last with
    /// `Connection: close`; with `cut`, it answers the first only and then drops the connection.
    fn serve(names: &'static [&'static str], cut: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            for (i, name) in names.iter().enumerate() {
                let mut request = [0u8; 512];
                let _ = stream.read(&mut request).unwrap();
                let last = i + 1 == names.len();
                let connection = if last && !cut { "close" } else { "keep-alive" };
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{name}",
                    name.len()
                );
                stream.write_all(response.as_bytes()).unwrap();
                if cut {
                    return;
                }
            }
        });
        address
    }

    #[test]
    fn a_held_connection_survives_only_if_the_same_backend_answers_again() {
        let (backend, mut reader) = hold_request(serve(&["a", "a"], false)).unwrap();
        assert_eq!(use_again(&mut reader, &backend).unwrap(), "a");

        let (backend, mut reader) = hold_request(serve(&["a", "b"], false)).unwrap();
        let error = use_again(&mut reader, &backend).unwrap_err();
        assert!(format!("{error:#}").contains("now reaches"), "{error:#}");
    }

    #[test]
    fn a_held_connection_cut_while_held_fails() {
        // The server answers once and closes: the second request finds the connection gone.
        let (backend, mut reader) = hold_request(serve(&["a"], true)).unwrap();
        let error = use_again(&mut reader, &backend).unwrap_err();
        assert!(
            format!("{error:#}").contains("did not survive"),
            "{error:#}"
        );
    }
}
