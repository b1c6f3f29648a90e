//! The schema: gantry's fields with gantry's defaults, and what the rest of handoff reads from
//! them (port pairs, the pull policy, a fingerprint of the config).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use crate::ports::{PortKey, PortPair, Protocol};

use anyhow::Result;

use crate::error::Failure;

/// Default `drainTimeout`: an hour. ESTABLISHED conntrack entries outlive a vanished peer by
/// five days, so a drain without a bound could wait forever.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 3_600_000;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub components: Vec<Component>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Component {
    pub name: String,
    /// Docker image repository. Without it, backends are addresses given on the command line.
    #[serde(default)]
    pub repo: Option<String>,
    #[serde(default = "default_tag")]
    pub tag: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    #[serde(default)]
    pub bindings: Vec<VolumeBinding>,
    #[serde(default)]
    pub volumes_from: Vec<String>,
    #[serde(default)]
    pub environment_variables: Vec<EnvironmentVariable>,
    #[serde(default)]
    pub ready_checks: Vec<Check>,
    #[serde(default)]
    pub health_checks: Vec<Check>,
    /// Milliseconds the new backend has to pass its readyChecks.
    #[serde(default = "default_ready_timeout")]
    pub ready_timeout: u64,
    #[serde(default)]
    pub termination_signals: Vec<TerminationSignal>,
    #[serde(default = "default_termination_checks")]
    pub termination_checks: Vec<TerminationCheck>,
    #[serde(default)]
    pub define_component_links: Vec<DefinedComponentLink>,
    #[serde(default)]
    pub require_component_links: Vec<RequiredComponentLink>,
    /// handoff's addition: milliseconds a draining backend may keep live flows before it is
    /// given up on (its remaining flows are listed and it is stopped anyway).
    #[serde(default)]
    pub drain_timeout: Option<u64>,
    /// handoff's addition: when to pull the image (`always`, `missing`, `never`); by default
    /// `always` for the tag `latest`, `missing` otherwise.
    #[serde(default)]
    pub pull: Option<PullPolicy>,
    /// handoff's addition: seconds a pull may take in all (1..=3600, default 600); then the
    /// update fails (exit 2) with the local image, if any, left as it was.
    /// Left out of the serialized form at its default, so existing containers' config hash
    /// holds.
    #[serde(
        default = "default_pull_timeout",
        skip_serializing_if = "is_default_pull_timeout"
    )]
    pub pull_timeout: u64,
    /// handoff's addition: the Docker network whose address becomes the backend address.
    #[serde(default = "default_network")]
    pub network: String,
    /// handoff's addition: seconds an old container gets between SIGTERM and SIGKILL.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: u64,
    /// handoff's addition: clients on the host reach the component at 127.0.0.1:PORT too.
    /// Needs `route_localnet` on the interfaces its backends are reached by, which handoff then
    /// sets (and puts back), behind kube-proxy's guard against what it opens (CVE-2020-8558):
    /// see README, "Clients on the host".
    /// Left out of the serialized form when false, so existing containers' config hash holds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub localhost_clients: bool,
    /// `requireComponentLinks` resolved when the config is loaded: never read from the file,
    /// but part of the config hash (a link's port that changes gives the requiring containers
    /// other environment variables: they are replaced on the next update).
    #[serde(skip_deserializing, skip_serializing_if = "Vec::is_empty")]
    pub link_targets: Vec<LinkTarget>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    Always,
    Missing,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    Tcp,
    Http,
}

/// An external (host) port and the backend port new connections on it are sent to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    pub external: i64,
    pub container: i64,
    /// gantry's HAProxy mode; on the kernel path both kinds are forwarded as plain TCP.
    #[serde(default = "default_port_kind")]
    pub kind: PortKind,
    /// handoff's addition: `tcp` (default) or `udp`. Left out of the serialized form when
    /// `tcp`, so existing containers' config hash holds.
    #[serde(default, skip_serializing_if = "Protocol::is_tcp")]
    pub protocol: Protocol,
    /// handoff's addition, Docker's `-p ADDRESS:PORT:PORT`: the port is the component's only
    /// for packets to this local address (IPv4 or IPv6); elsewhere it stays the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeBinding {
    /// Host path; gantry's `{container_id}` placeholder is honoured.
    pub external: String,
    pub volume: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentVariable {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Tcp,
    Http,
    Https,
}

/// A ready or health check, run against the backend's address.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    #[serde(default)]
    pub id: String,
    pub kind: CheckKind,
    /// Backend (container) port to check.
    #[serde(default)]
    pub port: Option<i64>,
    /// Request path for http/https checks; `/` when absent.
    #[serde(default)]
    pub path: Option<String>,
    /// Seconds, as in gantry.
    #[serde(default = "default_check_timeout")]
    pub timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalKind {
    Http,
    Exec,
}

/// gantry's `exec_command` may be one shell string or an argument list.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ExecCommand {
    Shell(String),
    Argv(Vec<String>),
}

/// Sent to an old backend once it has drained, before it is stopped.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TerminationSignal {
    #[serde(default)]
    pub id: String,
    pub kind: SignalKind,
    #[serde(default)]
    pub port: Option<i64>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub exec_command: Option<ExecCommand>,
    #[serde(default = "default_check_timeout")]
    pub timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TerminationCheckKind {
    /// Wait until the old backend has no live connection (the conntrack drain).
    Connection,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TerminationCheck {
    #[serde(default)]
    pub id: String,
    pub kind: TerminationCheckKind,
    #[serde(default = "default_check_timeout")]
    pub timeout: u64,
}

/// A port of this component that others reach through a component link: at the Docker
/// network's gateway, port `hostPort` (by default the same as `port`), DNAT'd to the active
/// container's `port`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DefinedComponentLink {
    pub name: String,
    pub port: i64,
    #[serde(default = "default_port_kind")]
    pub kind: PortKind,
    /// handoff's addition: the port at the gateway, when `port` is taken there (two
    /// components each defining a link on their port 8080). Left out of the serialized form
    /// when not given, so existing containers' config hash holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i64>,
}

impl DefinedComponentLink {
    /// The link's port at the gateway and the container port behind it (validated).
    pub fn port_pair(&self) -> PortPair {
        let port = u16::try_from(self.port).unwrap_or(0);
        PortPair::tcp(
            self.host_port
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(port),
            port,
        )
    }
}

/// A required link, resolved against the component that defines it: what the requiring
/// component's containers are told about it (see [`Component::link_environment`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkTarget {
    pub alias: String,
    /// The defining component.
    pub component: String,
    /// The link's port at the gateway, and its `port` and `kind` as defined.
    pub host_port: u16,
    pub port: u16,
    pub kind: PortKind,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequiredComponentLink {
    pub name: String,
    pub alias: String,
}

fn default_network() -> String {
    "bridge".to_string()
}
fn default_stop_timeout() -> u64 {
    10
}
fn default_pull_timeout() -> u64 {
    super::limits::DEFAULT_PULL_TIMEOUT_S
}
fn is_default_pull_timeout(seconds: &u64) -> bool {
    *seconds == super::limits::DEFAULT_PULL_TIMEOUT_S
}
fn default_tag() -> String {
    "latest".to_string()
}
fn default_ready_timeout() -> u64 {
    10_000
}
fn default_check_timeout() -> u64 {
    3
}
fn default_port_kind() -> PortKind {
    PortKind::Tcp
}
fn default_termination_checks() -> Vec<TerminationCheck> {
    vec![TerminationCheck {
        id: String::new(),
        kind: TerminationCheckKind::Connection,
        timeout: default_check_timeout(),
    }]
}

impl Component {
    /// The validated external -> backend port pairs, sorted by external port: the public
    /// ports and the ports of the links the component defines (their port at the gateway).
    pub fn port_pairs(&self) -> Vec<PortPair> {
        let mut pairs: Vec<PortPair> = self
            .ports
            .iter()
            .filter_map(|p| {
                Some(PortPair {
                    protocol: p.protocol,
                    external: u16::try_from(p.external).ok()?,
                    backend: u16::try_from(p.container).ok()?,
                    address: p.address,
                })
            })
            .chain(self.define_component_links.iter().map(|l| l.port_pair()))
            .collect();
        pairs.sort();
        pairs
    }

    /// The ports of the links the component defines, at the gateway (sorted).
    pub fn link_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .define_component_links
            .iter()
            .map(|l| l.port_pair().external)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// The environment variables that tell a container where its required links are, as
    /// gantry named them, with `gateway` the address of its network's gateway: for alias
    /// `db` and a tcp link on port 5432 reached at the gateway's port 5432, `DB_CLINK`,
    /// `DB_CLINK_5432_TCP` (both `tcp://GATEWAY:5432`), and `DB_CLINK_5432_TCP_PROTO`
    /// (`tcp`), `_ADDR` (the gateway) and `_PORT` (5432).
    pub fn link_environment(&self, gateway: std::net::Ipv4Addr) -> Vec<String> {
        let mut variables = Vec::new();
        for link in &self.link_targets {
            let alias = env_name(&link.alias);
            let kind = match link.kind {
                PortKind::Tcp => "TCP",
                PortKind::Http => "HTTP",
            };
            let url = format!("tcp://{gateway}:{}", link.host_port);
            let prefix = format!("{alias}_CLINK_{}_{kind}", link.port);
            variables.extend([
                format!("{alias}_CLINK={url}"),
                format!("{prefix}={url}"),
                format!("{prefix}_PROTO=tcp"),
                format!("{prefix}_ADDR={gateway}"),
                format!("{prefix}_PORT={}", link.host_port),
            ]);
        }
        variables
    }

    pub fn drain_timeout_ms(&self) -> u64 {
        self.drain_timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT_MS)
    }

    /// The pull policy in force for `tag`.
    pub fn pull_policy(&self, tag: &str) -> PullPolicy {
        self.pull.unwrap_or(if tag == "latest" {
            PullPolicy::Always
        } else {
            PullPolicy::Missing
        })
    }

    /// A stable fingerprint of the component's config, recorded on its containers.
    pub fn config_hash(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in text.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{hash:016x}")
    }
}

impl Check {
    /// The checked port; validation guarantees it is present and in range.
    pub fn port_number(&self) -> u16 {
        self.port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0)
    }

    pub fn request_path(&self) -> &str {
        self.path.as_deref().unwrap_or("/")
    }

    pub fn title(&self) -> String {
        if self.id.is_empty() {
            format!("{:?} check on port {}", self.kind, self.port_number()).to_lowercase()
        } else {
            self.id.clone()
        }
    }
}

impl Config {
    pub fn component(&self, name: &str) -> Result<&Component> {
        self.components
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.components.iter().map(|c| c.name.as_str()).collect();
                Failure::input(format!(
                    "unknown component {name:?} (the config defines: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
                .into()
            })
    }
}

/// An alias as an environment variable's name: upper case, anything but letters and digits
/// as `_`.
pub fn env_name(alias: &str) -> String {
    alias
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}
