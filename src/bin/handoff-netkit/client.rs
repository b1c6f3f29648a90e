//! What every client mode shares: connecting with bounded timeouts and reading small
//! responses.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use socket2::{Domain, Protocol, Socket, Type};

use crate::http::{read_head, Response};

/// Largest response body the `load` and `hold` clients accept (backend names).
const MAX_SMALL_BODY: u64 = 1024 * 1024;
/// Connect timeout for every client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Read/write timeout for `load` and `hold` requests.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `target` with the standard connect timeout and I/O `timeout`.
pub(crate) fn connect(target: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    connect_from(target, None, timeout).1
}

/// Connects to `target` from `source` (the kernel picks when `None`), with the standard connect
/// timeout and I/O `timeout`. Also returns the local address the attempt used, known even when
/// the connect itself failed, so that a failure can be matched with the kernel's records.
pub(crate) fn connect_from(
    target: SocketAddr,
    source: Option<SocketAddr>,
    timeout: Duration,
) -> (Option<SocketAddr>, Result<TcpStream>) {
    let socket = match Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    ) {
        Ok(socket) => socket,
        Err(e) => {
            return (
                None,
                Err(anyhow::Error::new(e).context("creating a socket")),
            )
        }
    };
    if let Some(source) = source {
        // A chosen port may still be held by the connection that used it last (closing):
        // the kernel lets the bind through, and refuses the connect only if the whole tuple is
        // still taken.
        let _ = socket.set_reuse_address(true);
        if let Err(e) = socket.bind(&source.into()) {
            return (
                None,
                Err(anyhow::Error::new(e).context(format!("bind {source}"))),
            );
        }
    }
    let connected = socket.connect_timeout(&target.into(), CONNECT_TIMEOUT);
    let local = socket.local_addr().ok().and_then(|a| a.as_socket());
    let stream = connected
        .with_context(|| format!("connect {target}"))
        .and_then(|()| configure(TcpStream::from(socket), timeout));
    (local, stream)
}

fn configure(stream: TcpStream, timeout: Duration) -> Result<TcpStream> {
    stream
        .set_read_timeout(Some(timeout))
        .context("set read timeout")?;
    stream
        .set_write_timeout(Some(timeout))
        .context("set write timeout")?;
    stream.set_nodelay(true).context("set TCP_NODELAY")?;
    Ok(stream)
}

/// Reads and parses a response head.
pub(crate) fn read_response(reader: &mut impl BufRead) -> Result<Response> {
    let head = read_head(reader)
        .context("reading response head")?
        .ok_or_else(|| anyhow!("connection closed before response"))?;
    Response::parse(&head)
}

/// Reads a small response body (bounded by [`MAX_SMALL_BODY`]).
pub(crate) fn read_small_body(reader: &mut impl BufRead, response: &Response) -> Result<Vec<u8>> {
    if response.headers.get("transfer-encoding").is_some() {
        bail!("chunked responses unsupported");
    }
    let mut body = Vec::new();
    match response.headers.content_length()? {
        Some(len) if len > MAX_SMALL_BODY => bail!("response body too large ({len} bytes)"),
        Some(len) => {
            reader
                .take(len)
                .read_to_end(&mut body)
                .context("reading response body")?;
            if (body.len() as u64) < len {
                bail!("short body: {} of {len} bytes", body.len());
            }
        }
        None => {
            reader
                .take(MAX_SMALL_BODY)
                .read_to_end(&mut body)
                .context("reading response body")?;
        }
    }
    Ok(body)
}

/// Sends a `GET /` and returns (backend name, whether the server keeps the
/// connection open). Non-200 answers are errors.
pub(crate) fn get_root(reader: &mut BufReader<TcpStream>, close: bool) -> Result<(String, bool)> {
    let request: &[u8] = if close {
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    } else {
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    };
    reader
        .get_mut()
        .write_all(request)
        .context("sending request")?;
    let response = read_response(reader)?;
    let body = read_small_body(reader, &response)?;
    if response.status != 200 {
        bail!("HTTP status {}", response.status);
    }
    let backend = String::from_utf8_lossy(&body).into_owned();
    Ok((backend, response.keep_alive()))
}

/// Waits for the server to close first (so the server side, not ours, keeps the TIME_WAIT
/// state), within the read timeout. Anything but a clean end of stream — more bytes, a reset,
/// no FIN in time — means the exchange was cut or stalled on the way, and is an error.
pub(crate) fn await_server_close(reader: &mut impl Read) -> Result<()> {
    let mut sink = [0u8; 512];
    loop {
        return match reader.read(&mut sink) {
            Ok(0) => Ok(()),
            Ok(n) => Err(anyhow!("{n} unexpected bytes after the response")),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(anyhow!("no FIN from the server within the read timeout"))
            }
            Err(e) => Err(anyhow::Error::new(e).context("waiting for the server to close")),
        };
    }
}
