//! `serve`: the test backend. It answers with its name, so a client can tell which backend a
//! connection reached; it streams and verifies payloads, and can record termination signals.

use std::fs;
use std::io::{self, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use crate::http::{read_head, response_head, Request};
use crate::payload::{read_verified, write_payload, Pacer, Verifier, FAST_CHUNK};
use crate::ServeArgs;

/// Where `serve --record-dir` records POSTs; set once at startup.
static RECORD_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// SIGTERM handler for `serve`: a server running as a container's PID 1 gets no default
/// action for SIGTERM, so without this `docker stop` would wait out its whole grace period.
extern "C" fn exit_on_sigterm(_: nix::libc::c_int) {
    // SAFETY: _exit is async-signal-safe; nothing needs flushing.
    unsafe { nix::libc::_exit(0) }
}

/// Binds, signals readiness, then serves each connection on its own thread.
pub(crate) fn serve(args: &ServeArgs) -> Result<()> {
    // SAFETY: the handler only calls _exit, which is async-signal-safe.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGTERM,
            nix::sys::signal::SigHandler::Handler(exit_on_sigterm),
        )
    }
    .context("installing the SIGTERM handler")?;
    let listener =
        TcpListener::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
    let bound = listener.local_addr().context("reading bound address")?;
    if let Some(dir) = &args.record_dir {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let _ = RECORD_DIR.set(dir.clone());
    }
    let name: Arc<str> = Arc::from(args.name.as_str());
    if let Some(udp) = args.udp {
        crate::udp::spawn_server(udp, Arc::clone(&name))?;
    }
    if let Some(path) = &args.ready_file {
        write_ready_file(path, &bound.to_string())?;
    }
    eprintln!(
        "handoff-netkit: backend {:?} listening on {bound}",
        args.name
    );
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => spawn_connection(stream, Arc::clone(&name)),
            Err(err) => {
                eprintln!("handoff-netkit: accept: {err}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    Ok(())
}

/// Atomically creates the readiness file containing `contents`.
pub(crate) fn write_ready_file(path: &Path, contents: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    fs::write(&tmp, contents).with_context(|| format!("writing {}", path.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("creating {}", path.display()))
}

/// Handles `stream` on a new thread; connection errors are logged, not fatal.
pub(crate) fn spawn_connection(stream: TcpStream, name: Arc<str>) {
    let spawned = thread::Builder::new().name("conn".into()).spawn(move || {
        if let Err(err) = handle_connection(stream, &name) {
            if !is_disconnect(&err) {
                eprintln!("handoff-netkit: connection: {err}");
            }
        }
    });
    if let Err(err) = spawned {
        eprintln!("handoff-netkit: cannot spawn connection thread: {err}");
    }
}

/// Whether `err` just means the peer went away.
pub(crate) fn is_disconnect(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof
    )
}

/// Serves requests on one connection until it closes.
pub(crate) fn handle_connection(stream: TcpStream, name: &str) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::with_capacity(FAST_CHUNK, stream.try_clone()?);
    let mut writer = stream;
    loop {
        let request = match read_head(&mut reader) {
            Ok(Some(head)) => Request::parse(&head),
            Ok(None) => return Ok(()),
            Err(err) if err.kind() == ErrorKind::InvalidData => Err(anyhow!(err)),
            Err(err) => return Err(err),
        };
        let keep_alive = match request {
            Ok(request) => respond(&request, &mut reader, &mut writer, name)?,
            Err(err) => {
                let body = format!("bad request: {err:#}\n");
                send(
                    &mut writer,
                    400,
                    "Bad Request",
                    false,
                    name,
                    body.as_bytes(),
                )?;
                false
            }
        };
        if !keep_alive {
            return writer.shutdown(Shutdown::Write);
        }
    }
}

/// Writes a complete response with a small body in a single write.
pub(crate) fn send(
    writer: &mut TcpStream,
    status: u16,
    reason: &str,
    keep_alive: bool,
    name: &str,
    body: &[u8],
) -> io::Result<()> {
    let extra = [("Content-Type", "text/plain"), ("X-Backend", name)];
    let mut message = response_head(status, reason, body.len() as u64, keep_alive, &extra);
    message.extend_from_slice(body);
    writer.write_all(&message)
}

/// A 411 that closes the connection.
fn length_required(writer: &mut TcpStream, name: &str, body: &[u8]) -> io::Result<bool> {
    send(writer, 411, "Length Required", false, name, body)?;
    Ok(false)
}

/// Answers one request; returns whether the connection stays open.
pub(crate) fn respond(
    request: &Request,
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    name: &str,
) -> io::Result<bool> {
    if request.headers.get("transfer-encoding").is_some() {
        return length_required(writer, name, b"chunked bodies unsupported\n");
    }
    let body_len = match request.headers.content_length() {
        Ok(len) => len,
        Err(err) => {
            let body = format!("bad request: {err:#}\n");
            send(writer, 400, "Bad Request", false, name, body.as_bytes())?;
            return Ok(false);
        }
    };
    let keep_alive = request.keep_alive();
    match (request.method.as_str(), request.path.as_str()) {
        ("POST", "/upload") => match body_len {
            Some(len) => serve_upload(request, reader, writer, name, len).map(|()| keep_alive),
            None => length_required(writer, name, b"Content-Length required\n"),
        },
        ("POST", path) if RECORD_DIR.get().is_some() => {
            discard(reader, body_len.unwrap_or(0))?;
            if let Some(dir) = RECORD_DIR.get() {
                let mut log = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("requests.log"))?;
                let at_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0);
                writeln!(log, "POST {path} {at_ms}")?;
            }
            send(writer, 200, "OK", keep_alive, name, b"recorded\n")?;
            Ok(keep_alive)
        }
        ("GET", path) => {
            discard(reader, body_len.unwrap_or(0))?;
            if path == "/download" {
                serve_download(request, writer, name, keep_alive)?;
            } else if path == "/health" && unhealthy() {
                send(
                    writer,
                    503,
                    "Service Unavailable",
                    keep_alive,
                    name,
                    b"unhealthy\n",
                )?;
            } else {
                send(writer, 200, "OK", keep_alive, name, name.as_bytes())?;
            }
            Ok(keep_alive)
        }
        _ => {
            send(
                writer,
                405,
                "Method Not Allowed",
                false,
                name,
                b"unsupported\n",
            )?;
            Ok(false)
        }
    }
}

/// Reads and drops `len` request body bytes.
pub(crate) fn discard(reader: &mut impl Read, len: u64) -> io::Result<()> {
    let copied = io::copy(&mut reader.take(len), &mut io::sink())?;
    if copied < len {
        return Err(io::Error::new(
            ErrorKind::UnexpectedEof,
            "request body cut short",
        ));
    }
    Ok(())
}

/// Whether `<record-dir>/unhealthy` exists: then `GET /health` answers 503 (how tests make a
/// backend fail its health checks, and recover, at a moment of their choosing).
fn unhealthy() -> bool {
    RECORD_DIR
        .get()
        .is_some_and(|dir| dir.join("unhealthy").exists())
}

/// Body of the `/upload` response, also parsed by the `upload` client.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct UploadReply {
    pub(crate) backend: String,
    pub(crate) bytes: u64,
    pub(crate) intact: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) first_bad_offset: Option<u64>,
}

/// `POST /upload`: verifies the streamed body against the payload.
pub(crate) fn serve_upload(
    request: &Request,
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    name: &str,
    len: u64,
) -> io::Result<()> {
    if request
        .headers
        .get("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let mut verifier = Verifier::new();
    let (bytes, result) = read_verified(reader, len, &mut verifier);
    result?;
    let reply = UploadReply {
        backend: name.to_string(),
        bytes,
        intact: verifier.first_bad.is_none(),
        first_bad_offset: verifier.first_bad,
    };
    let body = serde_json::to_vec(&reply).map_err(io::Error::other)?;
    let keep_alive = request.keep_alive();
    let extra = [("Content-Type", "application/json"), ("X-Backend", name)];
    let mut message = response_head(200, "OK", body.len() as u64, keep_alive, &extra);
    message.extend_from_slice(&body);
    writer.write_all(&message)
}

/// `GET /download?bytes=N[&rate=R]`: streams the payload, optionally paced.
pub(crate) fn serve_download(
    request: &Request,
    writer: &mut TcpStream,
    name: &str,
    keep_alive: bool,
) -> io::Result<()> {
    let Some(len) = request
        .query_param("bytes")
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return send(
            writer,
            400,
            "Bad Request",
            keep_alive,
            name,
            b"need bytes=N\n",
        );
    };
    let rate = match request.query_param("rate").map(str::parse::<u64>) {
        None => None,
        Some(Ok(rate)) if rate > 0 => Some(rate),
        Some(_) => return send(writer, 400, "Bad Request", keep_alive, name, b"bad rate\n"),
    };
    let extra = [
        ("Content-Type", "application/octet-stream"),
        ("X-Backend", name),
    ];
    writer.write_all(&response_head(200, "OK", len, keep_alive, &extra))?;
    write_payload(writer, len, &Pacer::new(rate)).map(drop)
}
