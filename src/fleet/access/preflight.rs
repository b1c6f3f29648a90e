//! The TLS handshake tried with every endpoint before the gRPC channel connects
//! ([`Access::verify_endpoints`](super::Access::verify_endpoints)): the channel reports a refused
//! certificate only as "transport error" after its request timeout, while this handshake can
//! say which certificate was refused, by whom, and why, in words that name the file to fix.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::CertificateError;

use super::tls::Tls;

/// What the handshake with one endpoint found.
#[derive(Debug)]
pub(super) enum Handshake {
    Verified,
    /// No TLS answer at all (refused, timed out, no route): the connection's business.
    Unreachable,
    /// A certificate was refused, by us or by etcd: the reason.
    Refused(String),
}

/// The HTTP/2 client preface and an empty SETTINGS frame: a client certificate that etcd
/// refuses (TLS 1.3) is only told after our handshake is done, in answer to what we send.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

pub(super) fn handshake(endpoint: &str, tls: &Tls, timeout: Duration) -> Handshake {
    let Some((host, tcp)) = connect(endpoint, timeout) else {
        return Handshake::Unreachable;
    };
    let Ok(name) = ServerName::try_from(host.clone()) else {
        return Handshake::Refused(format!("{host:?} is neither an IP address nor a DNS name"));
    };
    let _ = tcp.set_read_timeout(Some(timeout));
    let _ = tcp.set_write_timeout(Some(timeout));
    let connection = match rustls::ClientConnection::new(tls.config.clone(), name) {
        Ok(connection) => connection,
        Err(e) => return Handshake::Refused(format!("cannot start TLS: {e}")),
    };
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    let mut answer = [0u8; 9];
    let outcome = stream
        .write_all(H2_PREFACE)
        .and_then(|()| stream.flush())
        .and_then(|()| stream.read_exact(&mut answer));
    match outcome {
        Ok(()) => {
            stream.conn.send_close_notify();
            let _ = stream.flush();
            Handshake::Verified
        }
        Err(error) => match error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls_error) => Handshake::Refused(explain(tls_error, tls)),
            None if stream.conn.is_handshaking() => Handshake::Unreachable,
            // The handshake was done and then the connection went: with TLS 1.3 that is how
            // some servers refuse a client certificate without an alert.
            None => Handshake::Refused(format!(
                "the connection was closed right after the TLS handshake ({error}): etcd may \
                 have refused {}",
                tls.identity.as_ref().map_or(
                    "to serve without a client certificate (--cert, --key)".to_string(),
                    |i| { format!("our client certificate --cert {}", i.cert.display()) }
                )
            )),
        },
    }
}

/// A TCP connection to `https://HOST:PORT`, and the HOST; `None` when there is none to be had.
fn connect(endpoint: &str, timeout: Duration) -> Option<(String, TcpStream)> {
    let (host, port) = endpoint.trim_start_matches("https://").rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let address = (host, port.parse::<u16>().ok()?)
        .to_socket_addrs()
        .ok()?
        .next()?;
    let tcp = TcpStream::connect_timeout(&address, timeout).ok()?;
    Some((host.to_string(), tcp))
}

/// A refused handshake in words: what was wrong, and with which file.
fn explain(error: &rustls::Error, tls: &Tls) -> String {
    let ca = tls.cacert.display();
    match error {
        rustls::Error::InvalidCertificate(certificate) => {
            let (kind, hint) = match certificate {
                CertificateError::UnknownIssuer => (
                    "UnknownIssuer",
                    format!("its certificate is not signed by the CA in --cacert {ca}"),
                ),
                CertificateError::BadSignature => (
                    "BadSignature",
                    format!("its certificate's signature does not verify against --cacert {ca}"),
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    ("Expired", "its certificate has expired".to_string())
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => (
                    "NotValidYet",
                    "its certificate is not valid yet (check the clocks)".to_string(),
                ),
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => (
                    "NotValidForName",
                    "its certificate is issued for another name or address (subjectAltName)"
                        .to_string(),
                ),
                CertificateError::InvalidPurpose
                | CertificateError::InvalidPurposeContext { .. } => (
                    "InvalidPurpose",
                    "its certificate is not for a TLS server (extendedKeyUsage)".to_string(),
                ),
                _ => (
                    "InvalidCertificate",
                    "its certificate was refused".to_string(),
                ),
            };
            let detail = certificate.to_string();
            if detail == kind {
                format!("{hint} ({kind})")
            } else {
                format!("{hint} ({kind}: {detail})")
            }
        }
        rustls::Error::AlertReceived(alert) => {
            use rustls::AlertDescription as A;
            let ours = match &tls.identity {
                Some(identity) => {
                    format!("our client certificate --cert {}", identity.cert.display())
                }
                None => "our connection without a client certificate (--cert, --key)".to_string(),
            };
            match alert {
                A::BadCertificate
                | A::UnknownCA
                | A::CertificateExpired
                | A::CertificateRevoked
                | A::CertificateUnknown
                | A::UnsupportedCertificate
                | A::CertificateRequired
                | A::HandshakeFailure
                | A::AccessDenied => format!("etcd refused {ours} (TLS alert {alert:?})"),
                _ => format!("etcd ended the TLS handshake (TLS alert {alert:?})"),
            }
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            format!("it does not answer in TLS ({error}): is it a plain http:// endpoint?")
        }
        other => format!("the TLS handshake failed: {other}"),
    }
}
