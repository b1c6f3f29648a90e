//! Just enough HTTP/1.1 for the test traffic: message heads of requests and responses.

use std::io::{self, BufRead, ErrorKind, Read};

use anyhow::{anyhow, bail, Context, Result};

/// Largest accepted request/response head (request line plus headers).
pub(crate) const MAX_HEAD_BYTES: u64 = 64 * 1024;

/// Header fields of a request or response, in arrival order.
#[derive(Debug, Default)]
pub(crate) struct Headers(Vec<(String, String)>);

impl Headers {
    /// Parses `Name: value` lines.
    pub(crate) fn parse<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Self> {
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
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the `Connection` header lists `token`.
    pub(crate) fn connection_has(&self, token: &str) -> bool {
        self.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The `Content-Length`, if present; an error if it is not a number.
    pub(crate) fn content_length(&self) -> Result<Option<u64>> {
        self.get("content-length")
            .map(|v| {
                v.parse::<u64>()
                    .with_context(|| format!("invalid Content-Length {v:?}"))
            })
            .transpose()
    }

    /// Whether the connection persists after this message, given its version.
    pub(crate) fn keep_alive(&self, http10: bool) -> bool {
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
pub(crate) fn parse_version(version: &str) -> Result<bool> {
    match version {
        "HTTP/1.1" => Ok(false),
        "HTTP/1.0" => Ok(true),
        _ => bail!("unsupported HTTP version {version:?}"),
    }
}

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) http10: bool,
    pub(crate) headers: Headers,
}

impl Request {
    /// Parses a request head (lines without their CRLF terminators).
    pub(crate) fn parse(head: &str) -> Result<Self> {
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
    pub(crate) fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    pub(crate) fn keep_alive(&self) -> bool {
        self.headers.keep_alive(self.http10)
    }
}

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) http10: bool,
    pub(crate) headers: Headers,
}

impl Response {
    /// Parses a response head (lines without their CRLF terminators).
    pub(crate) fn parse(head: &str) -> Result<Self> {
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

    pub(crate) fn keep_alive(&self) -> bool {
        self.headers.keep_alive(self.http10)
    }
}

/// Reads one message head up to and including the blank line.
///
/// Returns `Ok(None)` on a clean EOF before any byte. A head that is too
/// large or not UTF-8 yields an [`ErrorKind::InvalidData`] error.
pub(crate) fn read_head(reader: &mut impl BufRead) -> io::Result<Option<String>> {
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
pub(crate) fn response_head(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
