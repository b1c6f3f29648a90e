//! What every client mode shares: connecting with bounded timeouts and reading small
//! responses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::http::{read_head, Response};

/// Largest response body the `load` and `hold` clients accept (backend names).
const MAX_SMALL_BODY: u64 = 1024 * 1024;
/// Connect timeout for every client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Read/write timeout for `load` and `hold` requests.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `target` with the standard connect timeout and I/O `timeout`.
pub(crate) fn connect(target: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
        .with_context(|| format!("connect {target}"))?;
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

/// Waits (bounded by the read timeout) for the server to close first, so the
/// server side rather than ours keeps the TIME_WAIT state.
pub(crate) fn await_server_close(reader: &mut impl Read) {
    let mut sink = [0u8; 512];
    while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
}
