//! A synchronous etcd v3 client for the `fleet` commands and the agent: etcd-client (gRPC)
//! driven by a current-thread tokio runtime of its own, as the Docker client is, so the rest of
//! handoff stays synchronous. Every call is bounded by a timeout: an unreachable etcd is an
//! error that names the endpoints, never a hang. The fleet reads and writes through the
//! [`super::store::Store`] trait it implements ([`kv`]); leases ([`kv`]) and users and roles
//! ([`auth`]) are etcd's own.

mod auth;
mod kv;

use std::time::Duration;

use anyhow::{Context, Result};
use etcd_client::{Client, ConnectOptions, LeaseKeepAliveStream, LeaseKeeper};

use super::access::Access;
use crate::error::Failure;

/// How long one request may take.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 pings, so that a member that vanishes without a FIN or RST (power lost, frozen,
/// packets dropped) is noticed by a watch being waited on, a lease renewal and a request
/// alike: a ping goes out after this long without anything received, and the connection is
/// given up when its answer does not come within [`KEEP_ALIVE_TIMEOUT`] — at most 9 s after
/// the last frame (measured: 9.0 s for a watch and a renewal, SIGSTOP and dropped packets
/// alike; tests/fleet_access.rs). Not shorter: etcd answers pings more frequent than its
/// `--grpc-keepalive-min-time` (5 s by default) with GOAWAY "too_many_pings". The connection
/// is driven by this client's current-thread runtime, so pings go out only while a call runs
/// (an idle connection sends nothing, measured); a call on a connection that died meanwhile
/// pings at once and fails within the timeout.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(4);

/// Parse `--etcd`: comma-separated `http://HOST:PORT` or `https://HOST:PORT` endpoints, all
/// of one scheme (TLS to some members and plain text to others is refused).
pub fn parse_endpoints(text: &str) -> Result<Vec<String>> {
    let endpoints: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect();
    if endpoints.is_empty() {
        return Err(Failure::input("--etcd: no endpoint given").into());
    }
    let scheme_of = |endpoint: &str| {
        ["http://", "https://"]
            .into_iter()
            .find(|scheme| endpoint.starts_with(scheme))
    };
    for endpoint in &endpoints {
        let Some(scheme) = scheme_of(endpoint) else {
            return Err(Failure::input(format!(
                "--etcd: {endpoint:?} is not an http://HOST:PORT or https://HOST:PORT endpoint"
            ))
            .into());
        };
        let rest = &endpoint[scheme.len()..];
        let port_ok = rest.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            return Err(Failure::input(format!(
                "--etcd: {endpoint:?} has no HOST:PORT after {scheme}"
            ))
            .into());
        }
    }
    let first = &endpoints[0];
    if let Some(other) = endpoints.iter().find(|e| scheme_of(e) != scheme_of(first)) {
        return Err(Failure::input(format!(
            "--etcd mixes {first} and {other}: every endpoint must be https:// (or every one \
             http://); a member reached in plain text would see what TLS hides from the others"
        ))
        .into());
    }
    Ok(endpoints)
}

pub struct Etcd {
    runtime: tokio::runtime::Runtime,
    client: Client,
    endpoints: Vec<String>,
    /// The open keep-alive stream and the lease it renews: one stream for a registration's
    /// life, not one per renewal.
    keep_alive: Option<(i64, LeaseKeeper, LeaseKeepAliveStream)>,
    /// The open watch ([`super::store::Store::watch`]).
    watch: Option<etcd_client::WatchStream>,
}

impl Etcd {
    /// Connect with `access`'s TLS and login. With TLS, each endpoint's handshake is tried
    /// first, so that a certificate refused either way is an error naming the endpoint and
    /// why (exit 7), not a timeout; with a login, etcd is asked at once (a refused login is
    /// exit 7 too). Plain text without a login asks nothing until the first request.
    pub fn connect(access: &Access) -> Result<Etcd> {
        access.verify_endpoints(CONNECT_TIMEOUT)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the etcd client runtime")?;
        let options: ConnectOptions = access
            .connect_options()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true);
        let client = runtime
            .block_on(Client::connect(access.endpoints(), Some(options)))
            .map_err(|error| access.connect_failed(error))?;
        Ok(Etcd {
            runtime,
            client,
            endpoints: access.endpoints().to_vec(),
            keep_alive: None,
            watch: None,
        })
    }

    fn context(&self, what: &str) -> String {
        format!("etcd at {}: {what}", self.endpoints.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{exit_code_of, ExitCode};

    #[test]
    fn endpoints_are_host_port_lists_of_one_scheme() {
        assert_eq!(
            parse_endpoints("http://10.0.0.1:2379, http://10.0.0.2:2379").unwrap(),
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(
            parse_endpoints("https://e1:2379,https://10.0.0.2:2379").unwrap(),
            ["https://e1:2379", "https://10.0.0.2:2379"]
        );
        for bad in [
            "",
            ",",
            "10.0.0.1:2379",
            "ftp://e:2379",
            "http://e",
            "https://e",
            "http://:2379",
            "http://e:0",
            "https://e1:2379,http://e2:2379",
            "http://e1:2379,https://e2:2379",
        ] {
            let error = parse_endpoints(bad).unwrap_err();
            assert_eq!(exit_code_of(&error), ExitCode::Input, "{bad:?}");
        }
        let mixed = parse_endpoints("https://e1:2379,http://e2:2379").unwrap_err();
        assert!(
            format!("{mixed:#}").contains("mixes https://e1:2379 and http://e2:2379"),
            "{mixed:#}"
        );
    }

    #[test]
    fn a_refused_login_names_the_user_and_the_file_and_is_a_store_failure() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "wrong\n").unwrap();
        let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&file, private).unwrap();
        let access = Access::new(&crate::fleet::access::Settings {
            endpoints: "http://127.0.0.1:2379".into(),
            user: Some("root".into()),
            password_file: Some(file.clone()),
            ..Default::default()
        })
        .unwrap();
        let refused = access.connect_failed(etcd_client::Error::GRpcStatus(
            tonic::Status::invalid_argument(
                "etcdserver: authentication failed, invalid user ID or password",
            ),
        ));
        assert_eq!(exit_code_of(&refused), ExitCode::Store);
        let message = format!("{refused:#}");
        assert!(
            message.contains("http://127.0.0.1:2379")
                && message.contains("\"root\"")
                && message.contains(&file.display().to_string()),
            "{message}"
        );
    }
}
