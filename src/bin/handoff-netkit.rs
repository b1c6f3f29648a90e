//! `handoff-netkit`: the sandbox traffic tool used by the integration tests,
//! the demo script and the benchmarks.
//!
//! It runs inside Linux network namespaces (`ip netns exec NS handoff-netkit ...`)
//! and provides:
//!
//! * `serve`: a tiny HTTP/1.1 server that reports which backend answered
//!   (its `--name`), serves deterministic downloads and verifies uploads;
//! * `load`: a load generator that counts successes per backend and failures;
//! * `upload` / `download`: single transfers verified byte-exact against the
//!   deterministic payload stream ([`payload_byte`]);
//! * `hold`: opens one keep-alive connection and holds it open for a while.
//!
//! Every client subcommand prints exactly one line of JSON on stdout; all
//! diagnostics go to stderr. Exit status is 0 on success and 1 on failure.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

/// Largest accepted request/response head (request line plus headers).
const MAX_HEAD_BYTES: u64 = 64 * 1024;
/// Largest response body the `load` and `hold` clients accept (backend names).
const MAX_SMALL_BODY: u64 = 1024 * 1024;
/// Chunk size for paced transfers.
const PACED_CHUNK: usize = 16 * 1024;
/// Chunk size for unpaced transfers.
const FAST_CHUNK: usize = 128 * 1024;
/// Connect timeout for every client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Read/write timeout for `load` and `hold` requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Read/write timeout for `upload` and `download` transfers.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);
/// How many error strings `load` keeps.
const MAX_ERRORS: usize = 5;
/// Pause after a failed `load` request, so a refusing target does not turn
/// the workers into busy loops that starve the machine.
const FAILURE_BACKOFF: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

/// Sandbox traffic tool: servers that report which backend answered, load
/// generators that count failures, and byte-exact verified transfers.
#[derive(Parser, Debug)]
#[command(name = "handoff-netkit", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an HTTP/1.1 test backend until killed.
    Serve(ServeArgs),
    /// Generate `GET /` load and tally answers per backend.
    Load(LoadArgs),
    /// POST a verified payload to `/upload`.
    Upload(TransferArgs),
    /// GET a payload from `/download` and verify it byte by byte.
    Download(TransferArgs),
    /// Open a keep-alive connection, make one request and hold it open.
    Hold(HoldArgs),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on, e.g. 0.0.0.0:8080.
    #[arg(long)]
    listen: SocketAddr,
    /// Backend name reported in responses.
    #[arg(long)]
    name: String,
    /// File created (containing the bound address) once the socket listens.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Answer every other POST with 200 and append `POST <path>` to DIR/requests.log (how
    /// tests see that a termination signal arrived).
    #[arg(long, value_name = "DIR")]
    record_dir: Option<PathBuf>,
}

/// Where `serve --record-dir` records POSTs; set once at startup.
static RECORD_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

#[derive(Args, Debug)]
struct LoadArgs {
    /// Server address, IP:PORT.
    #[arg(long)]
    target: SocketAddr,
    /// Number of concurrent worker threads (one connection each).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    connections: u32,
    /// Run for this many milliseconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    duration_ms: u64,
    /// Stop after this many requests in total (still bounded by the duration).
    #[arg(long)]
    max_requests: Option<u64>,
    /// Reuse one connection per worker instead of one connection per request.
    #[arg(long)]
    keepalive: bool,
}

#[derive(Args, Debug)]
struct TransferArgs {
    /// Server address, IP:PORT.
    #[arg(long)]
    target: SocketAddr,
    /// Number of payload bytes to transfer.
    #[arg(long)]
    bytes: u64,
    /// Pace the transfer to about this many bytes per second.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
}

#[derive(Args, Debug)]
struct HoldArgs {
    /// Server address, IP:PORT.
    #[arg(long)]
    target: SocketAddr,
    /// How long to keep the connection open after the response, in ms.
    #[arg(long)]
    ms: u64,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Usage errors exit 1 (not clap's 2); --help/--version exit 0.
            let code = if err.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
            let _ = err.print();
            return code;
        }
    };
    let succeeded = match cli.command {
        Command::Serve(args) => report_fatal(serve(&args)),
        Command::Load(args) => report_fatal(load(&args)),
        Command::Upload(args) => upload(&args),
        Command::Download(args) => download(&args),
        Command::Hold(args) => hold(&args),
    };
    if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints a fatal error on stderr; returns whether the command succeeded.
fn report_fatal(result: Result<()>) -> bool {
    match result {
        Ok(()) => true,
        Err(err) => {
            eprintln!("handoff-netkit: {err:#}");
            false
        }
    }
}

/// Prints `value` as the single JSON result line on stdout and flushes it.
fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let line = serde_json::to_string(value).context("serializing result")?;
    let mut out = io::stdout().lock();
    writeln!(out, "{line}").context("writing result")?;
    out.flush().context("flushing result")
}

// ---------------------------------------------------------------------------
// Deterministic payload
// ---------------------------------------------------------------------------

/// SplitMix64 finalizer: a fast, well-mixed 64-bit hash.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The payload byte at stream position `offset`: byte `offset % 8` of
/// `splitmix64(offset / 8)`. Both ends of a transfer use it to verify content.
fn payload_byte(offset: u64) -> u8 {
    splitmix64(offset / 8).to_le_bytes()[(offset % 8) as usize]
}

/// Fills `buf` with the payload bytes starting at stream position `start`.
fn fill_payload(start: u64, buf: &mut [u8]) {
    let misalign = (start % 8) as usize;
    let head_len = if misalign == 0 { 0 } else { 8 - misalign }.min(buf.len());
    let (head, rest) = buf.split_at_mut(head_len);
    for (i, byte) in head.iter_mut().enumerate() {
        *byte = payload_byte(start + i as u64);
    }
    let aligned = start + head_len as u64;
    let mut words = rest.chunks_exact_mut(8);
    let mut word_index = aligned / 8;
    for word in &mut words {
        word.copy_from_slice(&splitmix64(word_index).to_le_bytes());
        word_index += 1;
    }
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte = payload_byte(word_index * 8 + i as u64);
    }
}

/// Incrementally checks a received byte stream against the payload.
struct Verifier {
    offset: u64,
    first_bad: Option<u64>,
    expected: Vec<u8>,
}

impl Verifier {
    fn new() -> Self {
        Verifier {
            offset: 0,
            first_bad: None,
            expected: Vec::new(),
        }
    }

    /// Checks the next `data` bytes of the stream.
    fn feed(&mut self, data: &[u8]) {
        if self.first_bad.is_none() {
            self.expected.resize(data.len(), 0);
            fill_payload(self.offset, &mut self.expected);
            if let Some(pos) = data.iter().zip(&self.expected).position(|(a, b)| a != b) {
                self.first_bad = Some(self.offset + pos as u64);
            }
        }
        self.offset += data.len() as u64;
    }
}

/// Sleeps as needed to hold a transfer to `rate` bytes per second.
struct Pacer {
    start: Instant,
    rate: Option<u64>,
}

impl Pacer {
    fn new(rate: Option<u64>) -> Self {
        Pacer {
            start: Instant::now(),
            rate,
        }
    }

    /// Chunk size to use for this transfer.
    fn chunk_size(&self) -> usize {
        if self.rate.is_some() {
            PACED_CHUNK
        } else {
            FAST_CHUNK
        }
    }

    /// Waits until `sent` bytes are due at the configured rate.
    fn wait(&self, sent: u64) {
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            let elapsed = self.start.elapsed();
            if due > elapsed {
                thread::sleep(due - elapsed);
            }
        }
    }
}

/// Writes payload bytes `0..len` to `out`, paced by `pacer`.
fn write_payload(out: &mut impl Write, len: u64, pacer: &Pacer) -> io::Result<u64> {
    let mut buf = vec![0u8; pacer.chunk_size()];
    let mut sent = 0u64;
    while sent < len {
        let n = (len - sent).min(buf.len() as u64) as usize;
        fill_payload(sent, &mut buf[..n]);
        out.write_all(&buf[..n])?;
        sent += n as u64;
        pacer.wait(sent);
    }
    out.flush()?;
    Ok(sent)
}

/// Reads exactly `len` bytes from `input`, feeding them to `verifier`.
/// Returns the number of bytes read before EOF or an error.
fn read_verified(
    input: &mut impl Read,
    len: u64,
    verifier: &mut Verifier,
) -> (u64, io::Result<()>) {
    let mut buf = vec![0u8; FAST_CHUNK];
    let mut received = 0u64;
    while received < len {
        let want = (len - received).min(buf.len() as u64) as usize;
        match input.read(&mut buf[..want]) {
            Ok(0) => {
                let err = io::Error::new(ErrorKind::UnexpectedEof, "connection closed early");
                return (received, Err(err));
            }
            Ok(n) => {
                verifier.feed(&buf[..n]);
                received += n as u64;
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return (received, Err(err)),
        }
    }
    (received, Ok(()))
}

// ---------------------------------------------------------------------------
// HTTP/1.1 message heads
// ---------------------------------------------------------------------------

/// Header fields of a request or response, in arrival order.
#[derive(Debug, Default)]
struct Headers(Vec<(String, String)>);

impl Headers {
    /// Parses `Name: value` lines.
    fn parse<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Self> {
        let mut fields = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| anyhow!("header without colon: {line:?}"))?;
            if name.is_empty() || name.contains(|c: char| c.is_ascii_whitespace()) {
                bail!("invalid header name: {name:?}");
            }
            fields.push((name.to_string(), value.trim().to_string()));
        }
        Ok(Headers(fields))
    }

    /// The first value of header `name` (case-insensitive).
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the `Connection` header lists `token`.
    fn connection_has(&self, token: &str) -> bool {
        self.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The `Content-Length`, if present; an error if it is not a number.
    fn content_length(&self) -> Result<Option<u64>> {
        self.get("content-length")
            .map(|v| {
                v.parse::<u64>()
                    .with_context(|| format!("invalid Content-Length {v:?}"))
            })
            .transpose()
    }

    /// Whether the connection persists after this message, given its version.
    fn keep_alive(&self, http10: bool) -> bool {
        if self.connection_has("close") {
            false
        } else if http10 {
            self.connection_has("keep-alive")
        } else {
            true
        }
    }
}

/// Parses the `HTTP/1.x` version token; returns whether it is HTTP/1.0.
fn parse_version(version: &str) -> Result<bool> {
    match version {
        "HTTP/1.1" => Ok(false),
        "HTTP/1.0" => Ok(true),
        _ => bail!("unsupported HTTP version {version:?}"),
    }
}

/// A parsed request head.
#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    query: String,
    http10: bool,
    headers: Headers,
}

impl Request {
    /// Parses a request head (lines without their CRLF terminators).
    fn parse(head: &str) -> Result<Self> {
        let mut lines = head.lines();
        let request_line = lines.next().ok_or_else(|| anyhow!("empty request"))?;
        let parts: Vec<&str> = request_line.split(' ').collect();
        let [method, target, version] = parts[..] else {
            bail!("malformed request line {request_line:?}");
        };
        if method.is_empty() || !target.starts_with('/') {
            bail!("malformed request line {request_line:?}");
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Ok(Request {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            http10: parse_version(version)?,
            headers: Headers::parse(lines)?,
        })
    }

    /// The value of query parameter `name`, if present.
    fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    fn keep_alive(&self) -> bool {
        self.headers.keep_alive(self.http10)
    }
}

/// A parsed response head.
#[derive(Debug)]
struct Response {
    status: u16,
    http10: bool,
    headers: Headers,
}

impl Response {
    /// Parses a response head (lines without their CRLF terminators).
    fn parse(head: &str) -> Result<Self> {
        let mut lines = head.lines();
        let status_line = lines.next().ok_or_else(|| anyhow!("empty response"))?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status = parts
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| anyhow!("malformed status line {status_line:?}"))?;
        Ok(Response {
            status,
            http10: parse_version(version)?,
            headers: Headers::parse(lines)?,
        })
    }

    fn keep_alive(&self) -> bool {
        self.headers.keep_alive(self.http10)
    }
}

/// Reads one message head up to and including the blank line.
///
/// Returns `Ok(None)` on a clean EOF before any byte. A head that is too
/// large or not UTF-8 yields an [`ErrorKind::InvalidData`] error.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut head = String::new();
    loop {
        let budget = MAX_HEAD_BYTES.saturating_sub(head.len() as u64);
        let mut line = String::new();
        let n = reader.by_ref().take(budget).read_line(&mut line)?;
        if n == 0 {
            if head.is_empty() && budget > 0 {
                return Ok(None);
            }
            let kind = if budget == 0 {
                ErrorKind::InvalidData
            } else {
                ErrorKind::UnexpectedEof
            };
            return Err(io::Error::new(kind, "incomplete message head"));
        }
        if !line.ends_with('\n') {
            let kind = if n as u64 == budget {
                ErrorKind::InvalidData
            } else {
                ErrorKind::UnexpectedEof
            };
            return Err(io::Error::new(kind, "incomplete message head"));
        }
        let trimmed = line.trim_end_matches(['\r', '\n']);
        if trimmed.is_empty() {
            return Ok(Some(head));
        }
        head.push_str(trimmed);
        head.push('\n');
    }
}

/// Serializes a response head with the given status and extra headers.
fn response_head(
    status: u16,
    reason: &str,
    content_length: u64,
    keep_alive: bool,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status} {reason}\r\nContent-Length: {content_length}\r\n");
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let connection = if keep_alive { "keep-alive" } else { "close" };
    head.push_str(&format!("Connection: {connection}\r\n\r\n"));
    head.into_bytes()
}

// ---------------------------------------------------------------------------
// serve
// ---------------------------------------------------------------------------

/// Binds, signals readiness, then serves each connection on its own thread.
/// SIGTERM handler for `serve`: a server running as a container's PID 1 gets no default
/// action for SIGTERM, so without this `docker stop` would wait out its whole grace period.
extern "C" fn exit_on_sigterm(_: nix::libc::c_int) {
    // SAFETY: _exit is async-signal-safe; nothing needs flushing.
    unsafe { nix::libc::_exit(0) }
}

fn serve(args: &ServeArgs) -> Result<()> {
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
    if let Some(path) = &args.ready_file {
        write_ready_file(path, &bound.to_string())?;
    }
    eprintln!(
        "handoff-netkit: backend {:?} listening on {bound}",
        args.name
    );
    let name: Arc<str> = Arc::from(args.name.as_str());
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
fn write_ready_file(path: &Path, contents: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    fs::write(&tmp, contents).with_context(|| format!("writing {}", path.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("creating {}", path.display()))
}

/// Handles `stream` on a new thread; connection errors are logged, not fatal.
fn spawn_connection(stream: TcpStream, name: Arc<str>) {
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
fn is_disconnect(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof
    )
}

/// Serves requests on one connection until it closes.
fn handle_connection(stream: TcpStream, name: &str) -> io::Result<()> {
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
fn send(
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

/// Answers one request; returns whether the connection stays open.
fn respond(
    request: &Request,
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    name: &str,
) -> io::Result<bool> {
    if request.headers.get("transfer-encoding").is_some() {
        send(
            writer,
            411,
            "Length Required",
            false,
            name,
            b"chunked bodies unsupported\n",
        )?;
        return Ok(false);
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
            None => {
                send(
                    writer,
                    411,
                    "Length Required",
                    false,
                    name,
                    b"Content-Length required\n",
                )?;
                Ok(false)
            }
        },
        ("POST", path) if RECORD_DIR.get().is_some() => {
            discard(reader, body_len.unwrap_or(0))?;
            if let Some(dir) = RECORD_DIR.get() {
                let mut log = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("requests.log"))?;
                writeln!(log, "POST {path}")?;
            }
            send(writer, 200, "OK", keep_alive, name, b"recorded\n")?;
            Ok(keep_alive)
        }
        ("GET", path) => {
            discard(reader, body_len.unwrap_or(0))?;
            if path == "/download" {
                serve_download(request, writer, name, keep_alive)?;
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
fn discard(reader: &mut impl Read, len: u64) -> io::Result<()> {
    let copied = io::copy(&mut reader.take(len), &mut io::sink())?;
    if copied < len {
        return Err(io::Error::new(
            ErrorKind::UnexpectedEof,
            "request body cut short",
        ));
    }
    Ok(())
}

/// Body of the `/upload` response, also parsed by the `upload` client.
#[derive(Serialize, Deserialize, Debug)]
struct UploadReply {
    backend: String,
    bytes: u64,
    intact: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_bad_offset: Option<u64>,
}

/// `POST /upload`: verifies the streamed body against the payload.
fn serve_upload(
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
fn serve_download(
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

// ---------------------------------------------------------------------------
// Client helpers
// ---------------------------------------------------------------------------

/// Connects to `target` with the standard connect timeout and I/O `timeout`.
fn connect(target: SocketAddr, timeout: Duration) -> Result<TcpStream> {
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
fn read_response(reader: &mut impl BufRead) -> Result<Response> {
    let head = read_head(reader)
        .context("reading response head")?
        .ok_or_else(|| anyhow!("connection closed before response"))?;
    Response::parse(&head)
}

/// Reads a small response body (bounded by [`MAX_SMALL_BODY`]).
fn read_small_body(reader: &mut impl BufRead, response: &Response) -> Result<Vec<u8>> {
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
fn get_root(reader: &mut BufReader<TcpStream>, close: bool) -> Result<(String, bool)> {
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
fn await_server_close(reader: &mut impl Read) {
    let mut sink = [0u8; 512];
    while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
}

// ---------------------------------------------------------------------------
// load
// ---------------------------------------------------------------------------

/// Per-worker (and merged) results of `load`.
#[derive(Default)]
struct LoadStats {
    ok: u64,
    failed: u64,
    by_backend: BTreeMap<String, u64>,
    errors: Vec<String>,
    latencies_us: Vec<u32>,
}

impl LoadStats {
    fn record_ok(&mut self, backend: String, latency: Duration) {
        self.ok += 1;
        *self.by_backend.entry(backend).or_default() += 1;
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.latencies_us.push(micros);
    }

    fn record_failure(&mut self, err: &anyhow::Error) {
        self.failed += 1;
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(format!("{err:#}"));
        }
    }

    fn merge(&mut self, other: LoadStats) {
        self.ok += other.ok;
        self.failed += other.failed;
        for (backend, count) in other.by_backend {
            *self.by_backend.entry(backend).or_default() += count;
        }
        let room = MAX_ERRORS.saturating_sub(self.errors.len());
        self.errors.extend(other.errors.into_iter().take(room));
        self.latencies_us.extend(other.latencies_us);
    }
}

/// The JSON line printed by `load`. `requests_per_sec` counts every attempt
/// (ok and failed); latencies (connect included) are those of ok requests.
#[derive(Serialize)]
struct LoadReport {
    ok: u64,
    failed: u64,
    by_backend: BTreeMap<String, u64>,
    errors: Vec<String>,
    elapsed_ms: u64,
    requests_per_sec: f64,
    latency_p50_us: u64,
    latency_p99_us: u64,
}

/// Shared stop conditions for the load workers.
struct LoadLimits {
    deadline: Instant,
    max_requests: Option<u64>,
    issued: AtomicU64,
}

impl LoadLimits {
    /// Claims the next request slot; false once time or budget is used up.
    fn next_request(&self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        match self.max_requests {
            Some(max) => self.issued.fetch_add(1, Ordering::Relaxed) < max,
            None => true,
        }
    }
}

/// Runs the load workers and prints the merged report.
fn load(args: &LoadArgs) -> Result<()> {
    let start = Instant::now();
    let limits = Arc::new(LoadLimits {
        deadline: start + Duration::from_millis(args.duration_ms),
        max_requests: args.max_requests,
        issued: AtomicU64::new(0),
    });
    let mut workers = Vec::new();
    for i in 0..args.connections {
        let limits = Arc::clone(&limits);
        let (target, keepalive) = (args.target, args.keepalive);
        let worker = thread::Builder::new()
            .name(format!("load-{i}"))
            .spawn(move || load_worker(target, keepalive, &limits))
            .context("spawning load worker")?;
        workers.push(worker);
    }
    let mut stats = LoadStats::default();
    for worker in workers {
        let worker_stats = worker.join().map_err(|_| anyhow!("load worker panicked"))?;
        stats.merge(worker_stats);
    }
    print_json(&load_report(stats, start.elapsed()))
}

/// Turns merged stats into the printed report.
fn load_report(mut stats: LoadStats, elapsed: Duration) -> LoadReport {
    stats.latencies_us.sort_unstable();
    let total = stats.ok + stats.failed;
    let secs = elapsed.as_secs_f64();
    LoadReport {
        ok: stats.ok,
        failed: stats.failed,
        requests_per_sec: if secs > 0.0 { total as f64 / secs } else { 0.0 },
        latency_p50_us: percentile(&stats.latencies_us, 50),
        latency_p99_us: percentile(&stats.latencies_us, 99),
        by_backend: stats.by_backend,
        errors: stats.errors,
        elapsed_ms: elapsed.as_millis() as u64,
    }
}

/// The `pct` percentile of sorted samples (0 when empty).
fn percentile(sorted: &[u32], pct: usize) -> u64 {
    match sorted.len() {
        0 => 0,
        len => u64::from(sorted[(len - 1) * pct / 100]),
    }
}

/// One load worker: issues requests until the limits say stop.
fn load_worker(target: SocketAddr, keepalive: bool, limits: &LoadLimits) -> LoadStats {
    let mut stats = LoadStats::default();
    let mut conn: Option<BufReader<TcpStream>> = None;
    while limits.next_request() {
        let begin = Instant::now();
        let result = if keepalive {
            keepalive_request(target, &mut conn)
        } else {
            fresh_request(target)
        };
        match result {
            Ok(backend) => stats.record_ok(backend, begin.elapsed()),
            Err(err) => {
                stats.record_failure(&err);
                thread::sleep(FAILURE_BACKOFF);
            }
        }
    }
    stats
}

/// One `GET /` on a new connection that the server closes.
fn fresh_request(target: SocketAddr) -> Result<String> {
    let mut reader = BufReader::new(connect(target, REQUEST_TIMEOUT)?);
    let (backend, _) = get_root(&mut reader, true)?;
    await_server_close(&mut reader);
    Ok(backend)
}

/// One `GET /` on the worker's persistent connection, (re)connecting as
/// needed. The connection is dropped after an error or a server close.
fn keepalive_request(
    target: SocketAddr,
    conn: &mut Option<BufReader<TcpStream>>,
) -> Result<String> {
    let mut reader = match conn.take() {
        Some(reader) => reader,
        None => BufReader::new(connect(target, REQUEST_TIMEOUT)?),
    };
    let (backend, keep) = get_root(&mut reader, false)?;
    if keep {
        *conn = Some(reader);
    }
    Ok(backend)
}

// ---------------------------------------------------------------------------
// upload / download
// ---------------------------------------------------------------------------

/// The JSON line printed by `upload` and `download`.
#[derive(Serialize, Default)]
struct TransferReport {
    backend: Option<String>,
    bytes: u64,
    intact: bool,
    elapsed_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_bad_offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Prints a transfer report (adding `elapsed_ms`) and returns success.
fn finish_transfer(mut report: TransferReport, result: Result<()>, start: Instant) -> bool {
    report.elapsed_ms = start.elapsed().as_millis() as u64;
    if let Err(err) = result {
        report.intact = false;
        report.error = Some(format!("{err:#}"));
    }
    let ok = report.error.is_none() && report.intact;
    if let Some(error) = &report.error {
        eprintln!("handoff-netkit: {error}");
    }
    report_fatal(print_json(&report)) && ok
}

/// `upload`: POSTs payload bytes and checks the server's verdict.
fn upload(args: &TransferArgs) -> bool {
    let start = Instant::now();
    let mut report = TransferReport::default();
    let result = run_upload(args, &mut report);
    finish_transfer(report, result, start)
}

fn run_upload(args: &TransferArgs, report: &mut TransferReport) -> Result<()> {
    let mut stream = connect(args.target, TRANSFER_TIMEOUT)?;
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        args.bytes
    );
    stream
        .write_all(head.as_bytes())
        .context("sending request")?;
    let mut counter = CountingWriter::new(&mut stream);
    let sent = write_payload(&mut counter, args.bytes, &Pacer::new(args.rate));
    report.bytes = counter.written;
    sent.context("sending body")?;
    let mut reader = BufReader::new(stream);
    let response = read_response(&mut reader)?;
    let body = read_small_body(&mut reader, &response)?;
    if response.status != 200 {
        let text = String::from_utf8_lossy(&body);
        bail!("HTTP status {}: {}", response.status, text.trim());
    }
    let reply: UploadReply = serde_json::from_slice(&body).context("parsing upload reply")?;
    report.backend = Some(reply.backend);
    report.intact = reply.intact;
    report.first_bad_offset = reply.first_bad_offset;
    if reply.bytes != args.bytes {
        bail!("server received {} of {} bytes", reply.bytes, args.bytes);
    }
    if !reply.intact {
        bail!("server found corrupted data");
    }
    Ok(())
}

/// Counts the bytes that reach the inner writer.
struct CountingWriter<W> {
    inner: W,
    written: u64,
}

impl<W> CountingWriter<W> {
    fn new(inner: W) -> Self {
        CountingWriter { inner, written: 0 }
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `download`: GETs payload bytes and verifies them.
fn download(args: &TransferArgs) -> bool {
    let start = Instant::now();
    let mut report = TransferReport::default();
    let result = run_download(args, &mut report);
    finish_transfer(report, result, start)
}

fn run_download(args: &TransferArgs, report: &mut TransferReport) -> Result<()> {
    let mut reader = BufReader::with_capacity(FAST_CHUNK, connect(args.target, TRANSFER_TIMEOUT)?);
    let rate = args.rate.map(|r| format!("&rate={r}")).unwrap_or_default();
    let request = format!(
        "GET /download?bytes={}{rate} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        args.bytes
    );
    reader
        .get_mut()
        .write_all(request.as_bytes())
        .context("sending request")?;
    let response = read_response(&mut reader)?;
    report.backend = response.headers.get("x-backend").map(str::to_string);
    if response.status != 200 {
        bail!("HTTP status {}", response.status);
    }
    let len = response
        .headers
        .content_length()?
        .ok_or_else(|| anyhow!("response has no Content-Length"))?;
    if len != args.bytes {
        bail!("server announced {len} bytes, expected {}", args.bytes);
    }
    let mut verifier = Verifier::new();
    let (received, result) = read_verified(&mut reader, len, &mut verifier);
    report.bytes = received;
    report.first_bad_offset = verifier.first_bad;
    report.intact = verifier.first_bad.is_none();
    result.with_context(|| format!("reading body after {received} of {len} bytes"))?;
    if let Some(offset) = verifier.first_bad {
        bail!("corrupted data at offset {offset}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// hold
// ---------------------------------------------------------------------------

/// The JSON line printed by `hold` as soon as the response arrives (or,
/// with `error` set, when the request fails).
#[derive(Serialize)]
struct HoldReport {
    backend: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `hold`: one keep-alive request, print the backend, then keep the
/// connection open `--ms` and close it cleanly.
///
/// Fails if the request fails, or (reported on stderr only, since the result
/// line is already out) if the peer closed or reset the connection while it
/// was held.
fn hold(args: &HoldArgs) -> bool {
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
fn hold_request(target: SocketAddr) -> Result<(String, BufReader<TcpStream>)> {
    let mut reader = BufReader::new(connect(target, REQUEST_TIMEOUT)?);
    let (backend, keep) = get_root(&mut reader, false)?;
    if !keep {
        bail!("server refused to keep the connection alive");
    }
    Ok((backend, reader))
}

/// Checks that the held connection survived, then closes it gracefully.
fn close_held(stream: TcpStream) -> Result<()> {
    check_alive(&stream)?;
    stream.shutdown(Shutdown::Write).context("shutdown")?;
    await_server_close(&mut &stream);
    Ok(())
}

/// Fails if the peer has closed or reset `stream`.
fn check_alive(stream: &TcpStream) -> Result<()> {
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

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_deterministic_and_varied() {
        let a: Vec<u8> = (0..4096).map(payload_byte).collect();
        let b: Vec<u8> = (0..4096).map(payload_byte).collect();
        assert_eq!(a, b);
        assert_eq!(payload_byte(0), splitmix64(0).to_le_bytes()[0]);
        assert_eq!(payload_byte(13), splitmix64(1).to_le_bytes()[5]);
        let distinct: std::collections::HashSet<u8> = a.iter().copied().collect();
        assert!(
            distinct.len() > 200,
            "payload should cover most byte values"
        );
    }

    #[test]
    fn fill_payload_matches_payload_byte_at_any_alignment() {
        for start in [0u64, 1, 5, 7, 8, 9, 1_000_003] {
            for len in [0usize, 1, 3, 8, 15, 64, 77] {
                let mut buf = vec![0u8; len];
                fill_payload(start, &mut buf);
                let expected: Vec<u8> = (start..start + len as u64).map(payload_byte).collect();
                assert_eq!(buf, expected, "start {start} len {len}");
            }
        }
    }

    #[test]
    fn verifier_reports_first_bad_offset_across_chunks() {
        let mut data = vec![0u8; 1000];
        fill_payload(0, &mut data);
        let mut ok = Verifier::new();
        data.chunks(7).for_each(|c| ok.feed(c));
        assert_eq!(ok.first_bad, None);
        data[500] ^= 0xff;
        data[700] ^= 0xff;
        let mut bad = Verifier::new();
        data.chunks(33).for_each(|c| bad.feed(c));
        assert_eq!(bad.first_bad, Some(500));
        assert_eq!(bad.offset, 1000);
    }

    #[test]
    fn parses_request_line_query_and_headers() {
        let req = Request::parse(
            "GET /download?bytes=42&rate=7 HTTP/1.1\nHost: x\nConnection: Keep-Alive, Close\n",
        )
        .expect("valid request");
        assert_eq!(req.method, "GET");
        assert_eq!(req.path, "/download");
        assert_eq!(req.query_param("bytes"), Some("42"));
        assert_eq!(req.query_param("rate"), Some("7"));
        assert_eq!(req.query_param("nope"), None);
        assert_eq!(req.headers.get("HOST"), Some("x"));
        assert!(!req.keep_alive());
    }

    #[test]
    fn keep_alive_defaults_follow_http_version() {
        let v11 = Request::parse("GET / HTTP/1.1\n").expect("valid");
        assert!(v11.keep_alive());
        let v10 = Request::parse("GET / HTTP/1.0\n").expect("valid");
        assert!(!v10.keep_alive());
        let v10_ka = Request::parse("GET / HTTP/1.0\nConnection: keep-alive\n").expect("valid");
        assert!(v10_ka.keep_alive());
    }

    #[test]
    fn rejects_malformed_requests() {
        for head in [
            "",
            "GET /\n",
            "GET / HTTP/2\n",
            "GET nopath HTTP/1.1\n",
            "GET / HTTP/1.1 extra\n",
            "GET / HTTP/1.1\nno colon here\n",
            "GET / HTTP/1.1\nbad name: v\n",
        ] {
            assert!(Request::parse(head).is_err(), "accepted {head:?}");
        }
        let bad_len = Request::parse("POST /upload HTTP/1.1\nContent-Length: abc\n").expect("head");
        assert!(bad_len.headers.content_length().is_err());
    }

    #[test]
    fn parses_response_status_and_length() {
        let resp = Response::parse("HTTP/1.1 503 Service Unavailable\nContent-Length: 12\n")
            .expect("valid response");
        assert_eq!(resp.status, 503);
        assert_eq!(resp.headers.content_length().expect("number"), Some(12));
        assert!(resp.keep_alive());
        assert!(Response::parse("HTTP/1.1 abc\n").is_err());
    }

    #[test]
    fn read_head_handles_eof_and_limits() {
        let mut empty: &[u8] = b"";
        assert!(read_head(&mut empty).expect("clean eof").is_none());
        let mut full: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest";
        let head = read_head(&mut full).expect("read").expect("head");
        assert_eq!(head, "GET / HTTP/1.1\nHost: x\n");
        assert_eq!(full, b"rest");
        let mut cut: &[u8] = b"GET / HTTP/1.1\r\nHost";
        let err = read_head(&mut cut).expect_err("truncated");
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
        let huge = vec![b'a'; MAX_HEAD_BYTES as usize + 10];
        let err = read_head(&mut huge.as_slice()).expect_err("too large");
        assert_eq!(err.kind(), ErrorKind::InvalidData);
    }

    #[test]
    fn percentile_picks_nearest_rank() {
        assert_eq!(percentile(&[], 50), 0);
        let samples: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&samples, 50), 50);
        assert_eq!(percentile(&samples, 99), 99);
    }
}
