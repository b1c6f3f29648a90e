//! `upload` and `download`: one long transfer, verified byte for byte against the payload.

use std::io::{self, BufReader, Write};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::client::{connect, read_response, read_small_body};
use crate::payload::{read_verified, write_payload, Pacer, Verifier, FAST_CHUNK};
use crate::serve::UploadReply;
use crate::{print_json, report_fatal, TransferArgs};

/// Read/write timeout for `upload` and `download` transfers.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);

/// The JSON line printed by `upload` and `download`.
#[derive(Serialize, Default)]
pub(crate) struct TransferReport {
    pub(crate) backend: Option<String>,
    pub(crate) bytes: u64,
    pub(crate) intact: bool,
    pub(crate) elapsed_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) first_bad_offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// Prints a transfer report (adding `elapsed_ms`) and returns success.
pub(crate) fn finish_transfer(
    mut report: TransferReport,
    result: Result<()>,
    start: Instant,
) -> bool {
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
pub(crate) fn upload(args: &TransferArgs) -> bool {
    let start = Instant::now();
    let mut report = TransferReport::default();
    let result = run_upload(args, &mut report);
    finish_transfer(report, result, start)
}

pub(crate) fn run_upload(args: &TransferArgs, report: &mut TransferReport) -> Result<()> {
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
pub(crate) struct CountingWriter<W> {
    pub(crate) inner: W,
    pub(crate) written: u64,
}

impl<W> CountingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
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
pub(crate) fn download(args: &TransferArgs) -> bool {
    let start = Instant::now();
    let mut report = TransferReport::default();
    let result = run_download(args, &mut report);
    finish_transfer(report, result, start)
}

pub(crate) fn run_download(args: &TransferArgs, report: &mut TransferReport) -> Result<()> {
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
