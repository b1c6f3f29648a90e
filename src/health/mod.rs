//! Ready and health checks against a backend address: tcp (connect), http and https (a GET
//! that must answer 2xx or 3xx). Every check has a timeout; readiness is retried until the
//! component's readyTimeout.
//!
//! https checks do not verify the certificate (see [`tls`]).

#[cfg(test)]
pub mod fake;
mod tls;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustls::pki_types::ServerName;

use crate::config::{Check, CheckKind, Component, Protocol};
use crate::error::{ExitCode, Failure};
use tls::tls_config;

/// What the use cases need of the network: readiness, health, gantry's http termination
/// signal. [`Network`] is the real one; the use cases' unit tests use [`fake::FakeProbe`].
pub trait Probe {
    /// Wait until `address` passes `component`'s ready checks, within its readyTimeout (else a
    /// [`ExitCode::NotReady`] failure naming the last failing check).
    fn wait_ready(&self, component: &Component, address: IpAddr) -> Result<()>;
    /// One round of `component`'s health checks; the error names the first that failed.
    fn healthy(&self, component: &Component, address: IpAddr) -> Result<()>;
    /// A POST to the backend, 2xx/3xx expected.
    fn post(&self, address: IpAddr, port: u16, path: &str, timeout: Duration) -> Result<()>;
}

/// Checks over the real network.
#[derive(Debug, Default, Clone, Copy)]
pub struct Network;

impl Probe for Network {
    fn wait_ready(&self, component: &Component, address: IpAddr) -> Result<()> {
        wait_ready(
            &component.name,
            &ready_checks(component),
            address,
            Duration::from_millis(component.ready_timeout),
        )
    }

    fn healthy(&self, component: &Component, address: IpAddr) -> Result<()> {
        for check in &component.health_checks {
            run_check(check, address, Duration::from_secs(check.timeout))
                .with_context(|| check.title())?;
        }
        Ok(())
    }

    fn post(&self, address: IpAddr, port: u16, path: &str, timeout: Duration) -> Result<()> {
        http_post(address, port, path, timeout)
    }
}

/// Pause between rounds of ready checks.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Largest response head read from an http check.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// The checks that decide readiness: the component's readyChecks, or a tcp connect to every
/// TCP backend port when it has none (a UDP port cannot be checked by a connect; validation
/// insists on readyChecks for a component with UDP ports only).
pub fn ready_checks(component: &Component) -> Vec<Check> {
    if !component.ready_checks.is_empty() {
        return component.ready_checks.clone();
    }
    let mut ports: Vec<u16> = component
        .port_pairs()
        .into_iter()
        .filter(|pair| pair.protocol == Protocol::Tcp)
        .map(|pair| pair.backend)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
        .into_iter()
        .map(|port| Check {
            id: String::new(),
            kind: CheckKind::Tcp,
            port: Some(i64::from(port)),
            path: None,
            timeout: 3,
        })
        .collect()
}

/// Run `checks` against `address` until all pass in one round, or `ready_timeout` elapses
/// (then a [`ExitCode::NotReady`] failure naming the last failing check).
pub fn wait_ready(
    component: &str,
    checks: &[Check],
    address: IpAddr,
    ready_timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + ready_timeout;
    loop {
        let failure = checks.iter().find_map(|check| {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let timeout =
                Duration::from_secs(check.timeout).min(remaining.max(Duration::from_millis(100)));
            run_check(check, address, timeout)
                .err()
                .map(|e| format!("{}: {e:#}", check.title()))
        });
        let Some(failure) = failure else {
            return Ok(());
        };
        if Instant::now() + RETRY_PAUSE >= deadline {
            return Err(Failure::new(
                ExitCode::NotReady,
                format!(
                    "{component} is not ready at {address} after {} ms (last failure: {failure})",
                    ready_timeout.as_millis()
                ),
            )
            .into());
        }
        std::thread::sleep(RETRY_PAUSE);
    }
}

/// One attempt of one check, all of it — connect, TLS handshake, request, answer — within
/// `timeout`: a server that trickles a byte now and then cannot hold it longer.
fn run_check(check: &Check, address: IpAddr, timeout: Duration) -> Result<()> {
    let stream = Bounded::connect(SocketAddr::new(address, check.port_number()), timeout)?;
    match check.kind {
        CheckKind::Tcp => Ok(()),
        CheckKind::Http => http_request(stream, "GET", address, check.request_path()),
        CheckKind::Https => {
            let server_name = ServerName::IpAddress(address.into());
            let connection =
                rustls::ClientConnection::new(tls_config(), server_name).context("starting TLS")?;
            let tls = rustls::StreamOwned::new(connection, stream);
            http_request(tls, "GET", address, check.request_path())
        }
    }
}

/// gantry's http termination signal: a POST to the backend, 2xx/3xx expected, all of it within
/// `timeout`.
fn http_post(address: IpAddr, port: u16, path: &str, timeout: Duration) -> Result<()> {
    let stream = Bounded::connect(SocketAddr::new(address, port), timeout)?;
    http_request(stream, "POST", address, path)
}

/// A TCP stream with a total deadline: every read and write waits at most for what is left of
/// it, and fails once it has passed (a per-read timeout alone is reset by every byte).
struct Bounded {
    stream: TcpStream,
    deadline: Instant,
    timeout: Duration,
}

impl Bounded {
    fn connect(target: SocketAddr, timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        let stream = TcpStream::connect_timeout(&target, timeout)
            .with_context(|| format!("connecting to {target}"))?;
        Ok(Bounded {
            stream,
            deadline,
            timeout,
        })
    }

    /// What is left of the deadline, or the error that says it passed.
    fn remaining(&self) -> std::io::Result<Duration> {
        match self.deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(left),
            _ => Err(self.expired()),
        }
    }

    fn expired(&self) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no complete answer within {} ms", self.timeout.as_millis()),
        )
    }

    /// A socket timeout (EAGAIN, as Linux reports it) is the deadline passing: say so.
    fn timed_out<T>(&self, result: std::io::Result<T>) -> std::io::Result<T> {
        result.map_err(|error| match error.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => self.expired(),
            _ => error,
        })
    }
}

impl Read for Bounded {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        self.stream.set_read_timeout(Some(self.remaining()?))?;
        let read = self.stream.read(buffer);
        self.timed_out(read)
    }
}

impl Write for Bounded {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        self.stream.set_write_timeout(Some(self.remaining()?))?;
        let written = self.stream.write(buffer);
        self.timed_out(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

fn http_request(
    mut stream: impl Read + Write,
    method: &str,
    address: IpAddr,
    path: &str,
) -> Result<()> {
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {address}\r\nUser-Agent: handoff\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .context("sending the request")?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < MAX_RESPONSE_HEAD {
        let n = stream.read(&mut chunk).context("reading the response")?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or("").trim();
    let status: u16 = parse_status(status_line)
        .with_context(|| format!("not an HTTP response: {status_line:?}"))?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        anyhow::bail!("{path} answered {status_line:?}")
    }
}

/// The status code of an HTTP status line (`HTTP/1.1 200 OK` -> 200).
fn parse_status(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn without_ready_checks_readiness_is_a_connect_to_each_tcp_backend_port_once() {
        let config = crate::config::parse(
            r#"{"components": [{"name": "dns", "repo": "r", "ports": [
                {"external": 53, "container": 5353},
                {"external": 53, "container": 5353, "protocol": "udp"},
                {"external": 8053, "container": 8080}]}]}"#,
        )
        .unwrap();
        let ports: Vec<Option<i64>> = ready_checks(&config.components[0])
            .iter()
            .map(|c| c.port)
            .collect();
        assert_eq!(ports, vec![Some(5353), Some(8080)]);
    }

    fn check(kind: CheckKind, port: u16, path: Option<&str>) -> Check {
        Check {
            id: String::new(),
            kind,
            port: Some(i64::from(port)),
            path: path.map(str::to_string),
            timeout: 1,
        }
    }

    /// A one-shot HTTP server on loopback answering with `status_line`.
    fn serve_once(status_line: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                let _ = write!(stream, "{status_line}\r\nContent-Length: 0\r\n\r\n");
            }
        });
        port
    }

    #[test]
    fn status_lines_are_parsed() {
        assert_eq!(parse_status("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status("HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(parse_status("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status(""), None);
    }

    #[test]
    fn http_checks_pass_on_2xx_and_fail_on_5xx() {
        let localhost = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        let ok = serve_once("HTTP/1.1 200 OK");
        run_check(
            &check(CheckKind::Http, ok, Some("/health")),
            localhost,
            Duration::from_secs(1),
        )
        .unwrap();
        let bad = serve_once("HTTP/1.1 503 Service Unavailable");
        let error = run_check(
            &check(CheckKind::Http, bad, None),
            localhost,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("503"), "{error:#}");
    }

    /// A server that answers one byte every 300 ms, for ever: with a per-read timeout of 1 s it
    /// would hold the check as long as it likes; the check's timeout bounds the whole of it.
    #[test]
    fn a_server_that_trickles_its_answer_fails_the_check_at_its_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    for byte in b"HTTP/1.1 200 OK".iter().cycle().take(1000) {
                        std::thread::sleep(Duration::from_millis(300));
                        if stream.write_all(&[*byte]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let address = IpAddr::from([127, 0, 0, 1]);
        for (what, result) in [
            ("http check", {
                let started = Instant::now();
                let check = Check {
                    id: String::new(),
                    kind: CheckKind::Http,
                    port: Some(i64::from(port)),
                    path: Some("/".into()),
                    timeout: 1,
                };
                (run_check(&check, address, Duration::from_secs(1)), started)
            }),
            ("http termination signal", {
                let started = Instant::now();
                (
                    http_post(address, port, "/quit", Duration::from_secs(1)),
                    started,
                )
            }),
        ] {
            let (result, started) = result;
            let error = format!("{:#}", result.expect_err(what));
            assert!(error.contains("within 1000 ms"), "{what}: {error}");
            let took = started.elapsed();
            // Unbounded, the trickle would hold it for 300 s.
            assert!(
                took < Duration::from_secs(5),
                "{what} took {took:?}, its timeout is 1 s"
            );
        }
    }

    #[test]
    fn a_closed_port_is_not_ready_within_the_timeout() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let started = Instant::now();
        let error = wait_ready(
            "web",
            &[check(CheckKind::Tcp, port, None)],
            IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            Duration::from_millis(600),
        )
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(crate::error::exit_code_of(&error), ExitCode::NotReady);
        let message = format!("{error:#}");
        assert!(
            message.contains("web is not ready at 127.0.0.1"),
            "{message}"
        );
    }

    #[test]
    fn components_without_ready_checks_get_tcp_checks_on_their_ports() {
        let config = crate::config::parse(
            r#"{"components":[{"name":"web","ports":[{"external":80,"container":8080}]}]}"#,
        )
        .unwrap();
        let checks = ready_checks(&config.components[0]);
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].kind, CheckKind::Tcp);
        assert_eq!(checks[0].port_number(), 8080);
    }
}
