//! How handoff reaches the fleet's etcd, and who may do what there.
//!
//! [`Access`] is where etcd is and how to talk to it: the endpoints, TLS (the CA that signed
//! etcd's certificate, and our own certificate and key) and the login (a user and the file
//! holding its password), in etcdctl's names. It is read and checked once, before etcd is
//! asked anything: a file someone else could replace or read, a key without its certificate,
//! a certificate given with a plain `http://` endpoint, endpoints that mix `http` and `https`,
//! a user without a password — each is refused with exit 2, naming the flag or file. Nothing
//! ever falls back to plain text.
//!
//! The TLS handshake itself is tried first, per endpoint ([`Access::verify_endpoints`]): the
//! gRPC channel reports a certificate it refused only as "transport error" after its request
//! timeout, so without it a wrong CA would read like an etcd that is down. The handshake names
//! the endpoint and what is wrong (not signed by `--cacert`, expired, issued for another name,
//! our client certificate refused): exit 7, with the store's other failures.
//!
//! [`grant`] and [`revoke`] keep one etcd user and one role of the same name per host and per
//! operator, with exactly the permissions that [`Keys::host_grants`] and
//! [`Keys::operator_grants`] draw: a role found with more is refused, never widened or
//! silently narrowed, unless asked to `reset` it.
//!
//! [`Keys::host_grants`]: crate::fleet::Keys::host_grants
//! [`Keys::operator_grants`]: crate::fleet::Keys::operator_grants
//!
//! The parts, each in its own file: `tls` reads the certificates and key into the rustls
//! configuration, `preflight` tries the handshake and says why it failed, `common_name` reads
//! the etcd user out of a client certificate, `secrets` reads key and password files that no
//! one else may read, and `grants` keeps the users and roles.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use super::etcd::parse_endpoints;
use crate::error::Failure;

mod common_name;
mod grants;
mod preflight;
mod secrets;
mod tls;

pub use grants::{grant, prefix_end, revoke, Granted, Held, Revoked, READ, READWRITE, WRITE};
pub use secrets::{read_secret, Secret};

use preflight::{handshake, Handshake};
use tls::Tls;

/// The flags (or their `HANDOFF_ETCD_*` variables) as given, before they are checked.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `--etcd`: comma-separated `http://HOST:PORT` or `https://HOST:PORT`.
    pub endpoints: String,
    /// `--cacert`: the CA certificate(s) that etcd's server certificate must be signed by.
    pub cacert: Option<PathBuf>,
    /// `--cert`: our client certificate (with `--key`).
    pub cert: Option<PathBuf>,
    /// `--key`: the private key of `--cert`.
    pub key: Option<PathBuf>,
    /// `--user`: the etcd user to log in as (with `--password-file`).
    pub user: Option<String>,
    /// `--password-file`: the user's password, the file's first line.
    pub password_file: Option<PathBuf>,
}

/// Where the fleet's etcd is and how to talk to it, checked: see the module's documentation.
#[derive(Clone)]
pub struct Access {
    endpoints: Vec<String>,
    tls: Option<Tls>,
    login: Option<Login>,
}

#[derive(Clone)]
struct Login {
    user: String,
    password: Secret,
    file: PathBuf,
}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("endpoints", &self.endpoints)
            .field("identity", &self.identity())
            .finish()
    }
}

impl Access {
    /// Check `settings` and read the files they name (exit 2 for anything wrong with them).
    pub fn new(settings: &Settings) -> Result<Access> {
        let endpoints = parse_endpoints(&settings.endpoints)?;
        let https = endpoints[0].starts_with("https://");
        let certificate_flags: Vec<&str> = [
            ("--cacert", settings.cacert.is_some()),
            ("--cert", settings.cert.is_some()),
            ("--key", settings.key.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect();
        if !https && !certificate_flags.is_empty() {
            return Err(Failure::input(format!(
                "--etcd {}: a plain-text http:// endpoint, but {} given: certificates are never \
                 ignored; use https://",
                endpoints[0],
                certificate_flags.join(", ")
            ))
            .into());
        }
        let tls = if https {
            Some(Tls::read(settings, &endpoints[0])?)
        } else {
            None
        };
        let common_name = tls
            .as_ref()
            .and_then(|t| t.identity.as_ref())
            .map(|i| i.common_name.clone());
        let login = match (&settings.user, &settings.password_file) {
            (Some(user), Some(file)) => Some(Login {
                user: user.clone(),
                password: read_secret(file, "--password-file")?,
                file: file.clone(),
            }),
            (Some(user), None) => match common_name {
                // The client certificate is the identity: etcd takes the user from its CN.
                Some(Some(cn)) if cn == *user => None,
                Some(cn) => {
                    return Err(Failure::input(format!(
                        "--user {user:?} without --password-file, and the certificate in --cert \
                         names {}: etcd would act as the certificate's CN, not as {user:?}; \
                         drop --user or give --password-file",
                        cn.map_or("no CN".to_string(), |cn| format!("CN={cn}")),
                    ))
                    .into())
                }
                None => {
                    return Err(Failure::input(format!(
                        "--user {user:?} needs --password-file FILE (the password is never \
                         taken on the command line), or a client certificate (--cert, --key) \
                         whose CN is {user:?}"
                    ))
                    .into())
                }
            },
            (None, Some(file)) => {
                return Err(Failure::input(format!(
                    "--password-file {} without --user: whose password is it?",
                    file.display()
                ))
                .into())
            }
            (None, None) => None,
        };
        Ok(Access {
            endpoints,
            tls,
            login,
        })
    }

    /// Plain-text endpoints, no login (the tests' etcd, a local one).
    pub fn plain(endpoints: &str) -> Result<Access> {
        Access::new(&Settings {
            endpoints: endpoints.to_string(),
            ..Settings::default()
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Who etcd sees: the login's user, the client certificate's CN, or nobody.
    pub fn identity(&self) -> Option<String> {
        if let Some(login) = &self.login {
            return Some(login.user.clone());
        }
        let identity = self.tls.as_ref()?.identity.as_ref()?;
        Some(identity.common_name.as_ref().map_or_else(
            || "a client certificate without CN".to_string(),
            |cn| format!("CN={cn}"),
        ))
    }

    /// The etcd-client options for TLS and the login; the caller adds timeouts and keep-alive.
    pub(crate) fn connect_options(&self) -> ConnectOptions {
        let mut options = ConnectOptions::new();
        if let Some(tls) = &self.tls {
            let mut config = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
            if let Some(identity) = &tls.identity {
                config = config.identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem));
            }
            options = options.with_tls(config);
        }
        if let Some(login) = &self.login {
            // etcd's tokens expire (5 min by default): a long-lived agent logs in again.
            options = options
                .with_user(login.user.clone(), login.password.expose())
                .with_auto_token_refresh(true);
        }
        options
    }

    /// Why connecting failed, for an error of etcd-client's connect (which logs in when there
    /// is a login): a refused login names the user and the file, exit 7.
    pub(crate) fn connect_failed(&self, error: etcd_client::Error) -> anyhow::Error {
        let at = self.endpoints.join(",");
        if let (Some(login), etcd_client::Error::GRpcStatus(status)) = (&self.login, &error) {
            let message = status.message();
            if message.contains("authentication failed") {
                return Failure::store(format!(
                    "etcd at {at} refused the login of user {:?}: wrong password (--password-file \
                     {}) or no such user ({message})",
                    login.user,
                    login.file.display()
                ))
                .into();
            }
            if message.contains("authentication is not enabled") {
                return Failure::store(format!(
                    "etcd at {at} has authentication disabled, but --user {:?} was given: \
                     refusing to go on unauthenticated (run `etcdctl auth enable`, or drop \
                     --user) ({message})",
                    login.user
                ))
                .into();
            }
        }
        anyhow::Error::new(error).context(format!("cannot reach etcd at {at}"))
    }

    /// Try the TLS handshake with every endpoint, with the same roots and identity as the
    /// connection (nothing for `http://`). A certificate refused, either way, is an error
    /// naming the endpoint and the reason, even when other endpoints are fine: it is a
    /// mistake to fix, not an outage to ride out. An endpoint that does not answer is left
    /// to the connection, as with `http://` (a cluster serves with a member down, and an
    /// etcd that is down is the first request's error).
    pub fn verify_endpoints(&self, timeout: Duration) -> Result<()> {
        let Some(tls) = &self.tls else {
            return Ok(());
        };
        let outcomes: Vec<(String, Handshake)> = std::thread::scope(|scope| {
            let tries: Vec<_> = self
                .endpoints
                .iter()
                .map(|endpoint| {
                    scope.spawn(move || (endpoint.clone(), handshake(endpoint, tls, timeout)))
                })
                .collect();
            tries
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| unreachable!("a handshake does not panic"))
                })
                .collect()
        });
        let refused: Vec<String> = outcomes
            .iter()
            .filter_map(|(endpoint, outcome)| match outcome {
                Handshake::Refused(reason) => {
                    Some(format!("etcd at {endpoint}: TLS refused: {reason}"))
                }
                _ => None,
            })
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        Err(Failure::store(refused.join("; ")).into())
    }
}

#[cfg(test)]
mod tests;
