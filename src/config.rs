//! The gantry-compatible JSON configuration: schema, defaults and validation.
//!
//! Every field gantry accepts is accepted here with gantry's meaning and defaults, so a gantry
//! `production.json` works unchanged. Unlike gantry, an unknown or misspelt field is an error
//! (handoff runs as root: a typo must not silently drop a port or a check). Syntax and type
//! errors name the JSON path, line and column; semantic errors name the path and the value.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::error::Failure;

/// The default config location when neither `-c` nor `$HANDOFF_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/handoff/handoff.json";

/// Longest accepted component name; it becomes part of nftables object names.
const MAX_NAME_LEN: usize = 64;

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
    /// handoff's addition: the Docker network whose address becomes the backend address.
    #[serde(default = "default_network")]
    pub network: String,
    /// handoff's addition: seconds an old container gets between SIGTERM and SIGKILL.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: u64,
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DefinedComponentLink {
    pub name: String,
    pub port: i64,
    #[serde(default = "default_port_kind")]
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

/// One external port of a component and the backend port behind it, both validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortPair {
    pub external: u16,
    pub backend: u16,
}

impl Component {
    /// The validated external -> backend port pairs, sorted by external port.
    pub fn port_pairs(&self) -> Vec<PortPair> {
        let mut pairs: Vec<PortPair> = self
            .ports
            .iter()
            .filter_map(|p| {
                Some(PortPair {
                    external: u16::try_from(p.external).ok()?,
                    backend: u16::try_from(p.container).ok()?,
                })
            })
            .collect();
        pairs.sort();
        pairs
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

/// Which file to read: `-c`, else `$HANDOFF_CONFIG` (clap fills both into one option), else the
/// default path.
pub fn resolve_path(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

/// Read, parse and validate a config file. Every error is a [`Failure::input`] naming the file.
pub fn load(path: &Path) -> Result<Config> {
    let metadata = fs::metadata(path)
        .map_err(|e| Failure::input(format!("cannot read config {}: {e}", path.display())))?;
    refuse_unsafe_permissions(path, &metadata)?;
    let text = fs::read_to_string(path)
        .map_err(|e| Failure::input(format!("cannot read config {}: {e}", path.display())))?;
    parse(&text)
        .map_err(|e| anyhow::Error::new(Failure::input(format!("{}: {e:#}", path.display()))))
}

/// A config that others can write would let them choose what root runs and where traffic goes.
fn refuse_unsafe_permissions(path: &Path, metadata: &fs::Metadata) -> Result<()> {
    let mode = metadata.mode();
    if mode & 0o022 != 0 {
        return Err(Failure::input(format!(
            "config {} is writable by group or others (mode {:04o}); handoff runs as root and \
             refuses it: run `chmod go-w {}`",
            path.display(),
            mode & 0o7777,
            path.display()
        ))
        .into());
    }
    let me = nix::unistd::geteuid().as_raw();
    if metadata.uid() != me && metadata.uid() != 0 {
        return Err(Failure::input(format!(
            "config {} is owned by uid {}, neither root nor the user running handoff",
            path.display(),
            metadata.uid()
        ))
        .into());
    }
    Ok(())
}

/// Parse and validate config text.
pub fn parse(text: &str) -> Result<Config> {
    if text.trim().is_empty() {
        anyhow::bail!("the file is empty; expected a JSON object with a \"components\" list");
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let config: Config = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            anyhow::anyhow!("{inner}")
        } else {
            anyhow::anyhow!("{path}: {inner}")
        }
    })?;
    deserializer
        .end()
        .map_err(|e| anyhow::anyhow!("unexpected text after the JSON object: {e}"))?;
    validate(&config)?;
    Ok(config)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
        && name.len() <= MAX_NAME_LEN
}

fn check_port(field: &str, value: i64) -> Result<()> {
    if !(1..=65535).contains(&value) {
        anyhow::bail!("{field}: port {value} is outside 1..65535");
    }
    Ok(())
}

/// Semantic rules that the schema alone cannot express.
fn validate(config: &Config) -> Result<()> {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut external_ports: BTreeMap<i64, String> = BTreeMap::new();
    for (index, component) in config.components.iter().enumerate() {
        let at = format!("components[{index}]");
        if !valid_name(&component.name) {
            anyhow::bail!(
                "{at}.name: {:?} is not a valid component name (use [a-z0-9][a-z0-9_.-]*, at \
                 most {MAX_NAME_LEN} characters)",
                component.name
            );
        }
        if let Some(first) = names.insert(&component.name, index) {
            anyhow::bail!(
                "{at}.name: component {:?} is defined twice (also components[{first}])",
                component.name
            );
        }
        if component.repo.is_none() && component.ports.is_empty() {
            anyhow::bail!(
                "{at}.ports: component {:?} has no repo and no ports; an address backend needs \
                 at least one port to forward",
                component.name
            );
        }
        if component.ready_timeout == 0 {
            anyhow::bail!("{at}.readyTimeout: must be at least 1 (milliseconds)");
        }
        if component.network.trim().is_empty() {
            anyhow::bail!("{at}.network: must name a Docker network");
        }
        if let Some(repo) = &component.repo {
            if repo.trim().is_empty() || repo.contains(char::is_whitespace) {
                anyhow::bail!("{at}.repo: {repo:?} is not an image repository");
            }
            if component.tag.is_empty() || component.tag.contains(char::is_whitespace) {
                anyhow::bail!("{at}.tag: {:?} is not an image tag", component.tag);
            }
        }
        if component.drain_timeout == Some(0) {
            anyhow::bail!("{at}.drainTimeout: must be at least 1 (milliseconds)");
        }
        for (i, port) in component.ports.iter().enumerate() {
            check_port(&format!("{at}.ports[{i}].external"), port.external)?;
            check_port(&format!("{at}.ports[{i}].container"), port.container)?;
            let owner = format!("{at} ({:?})", component.name);
            if let Some(previous) = external_ports.insert(port.external, owner) {
                anyhow::bail!(
                    "{at}.ports[{i}].external: port {} is already claimed by {previous}",
                    port.external
                );
            }
        }
        for (list, checks) in [
            ("readyChecks", &component.ready_checks),
            ("healthChecks", &component.health_checks),
        ] {
            for (i, check) in checks.iter().enumerate() {
                validate_check(&format!("{at}.{list}[{i}]"), check)?;
            }
        }
        for (i, signal) in component.termination_signals.iter().enumerate() {
            validate_signal(&format!("{at}.terminationSignals[{i}]"), signal)?;
        }
        for (i, link) in component.define_component_links.iter().enumerate() {
            check_port(&format!("{at}.defineComponentLinks[{i}].port"), link.port)?;
        }
        for (i, env) in component.environment_variables.iter().enumerate() {
            if env.name.is_empty() || env.name.contains('=') {
                anyhow::bail!(
                    "{at}.environmentVariables[{i}].name: {:?} is not a valid variable name",
                    env.name
                );
            }
        }
    }
    Ok(())
}

fn validate_check(at: &str, check: &Check) -> Result<()> {
    match check.port {
        None => anyhow::bail!("{at}.port: a {:?} check needs a port", check.kind),
        Some(port) => check_port(&format!("{at}.port"), port)?,
    }
    if check.kind == CheckKind::Tcp && check.path.is_some() {
        anyhow::bail!("{at}.path: only http and https checks take a path");
    }
    if let Some(path) = &check.path {
        if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            anyhow::bail!("{at}.path: {path:?} must start with / and contain no spaces");
        }
    }
    if check.timeout == 0 {
        anyhow::bail!("{at}.timeout: must be at least 1 (seconds)");
    }
    Ok(())
}

fn validate_signal(at: &str, signal: &TerminationSignal) -> Result<()> {
    match signal.kind {
        SignalKind::Http => match signal.port {
            None => anyhow::bail!("{at}.port: an http termination signal needs a port"),
            Some(port) => check_port(&format!("{at}.port"), port)?,
        },
        SignalKind::Exec => {
            let empty = match &signal.exec_command {
                None => true,
                Some(ExecCommand::Shell(s)) => s.trim().is_empty(),
                Some(ExecCommand::Argv(argv)) => argv.is_empty(),
            };
            if empty {
                anyhow::bail!("{at}.exec_command: an exec termination signal needs a command");
            }
        }
    }
    if signal.timeout == 0 {
        anyhow::bail!("{at}.timeout: must be at least 1 (seconds)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The production config from the Quay.io article, as gantry ran it.
    const QUAY: &str = include_str!("../examples/quay.json");

    fn error_of(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    fn one(component: &str) -> String {
        format!(r#"{{"components": [{component}]}}"#)
    }

    #[test]
    fn the_seed_production_config_passes_unchanged() {
        let config = parse(QUAY).expect("quay config");
        let quay = config.component("quay").unwrap();
        assert_eq!(quay.repo.as_deref(), Some("quay.io/quay/quay"));
        assert_eq!(quay.ready_timeout, 100_000);
        assert_eq!(quay.ready_checks[0].kind, CheckKind::Https);
        assert_eq!(
            quay.port_pairs(),
            vec![
                PortPair {
                    external: 80,
                    backend: 80
                },
                PortPair {
                    external: 443,
                    backend: 443
                }
            ]
        );
        assert_eq!(quay.bindings.len(), 2);
    }

    #[test]
    fn gantry_defaults_apply() {
        let config = parse(&one(
            r#"{"name":"web","ports":[{"external":80,"container":8080}]}"#,
        ))
        .unwrap();
        let web = &config.components[0];
        assert_eq!(web.tag, "latest");
        assert_eq!(web.ready_timeout, 10_000);
        assert_eq!(web.termination_checks.len(), 1);
        assert_eq!(web.ports[0].kind, PortKind::Tcp);
        assert_eq!(web.drain_timeout_ms(), DEFAULT_DRAIN_TIMEOUT_MS);
    }

    #[test]
    fn every_gantry_field_is_accepted() {
        let text = one(
            r#"{"name":"full","repo":"r","tag":"v1","command":["a","b"],"user":"nobody",
            "privileged":true,"ports":[{"external":80,"container":80,"kind":"http"}],
            "bindings":[{"external":"/srv/{container_id}","volume":"/data"}],
            "volumesFrom":["other"],"environmentVariables":[{"name":"A","value":"1"}],
            "readyChecks":[{"id":"r","kind":"http","port":80,"path":"/ok","timeout":2}],
            "healthChecks":[{"kind":"tcp","port":80}],"readyTimeout":5000,
            "terminationSignals":[{"kind":"http","port":80,"path":"/quit","timeout":1},
                                  {"kind":"exec","exec_command":["kill","1"]}],
            "terminationChecks":[{"kind":"connection"}],
            "defineComponentLinks":[{"name":"db","port":5432,"kind":"tcp"}],
            "requireComponentLinks":[{"name":"db","alias":"database"}],"drainTimeout":1000,
            "pull":"never","network":"backend","stopTimeout":5}"#,
        );
        parse(&text).expect("all fields");
    }

    #[test]
    fn unknown_fields_name_the_field_and_position() {
        let message = error_of(&one(r#"{"name":"web","ports":[], "readyTimout": 5}"#));
        assert!(message.contains("unknown field `readyTimout`"), "{message}");
        assert!(message.contains("line 1 column"), "{message}");
        let nested = error_of(&one(
            r#"{"name":"web","ports":[{"external":80,"contianer":1}]}"#,
        ));
        assert!(nested.contains("components[0].ports[0]"), "{nested}");
        assert!(nested.contains("unknown field `contianer`"), "{nested}");
    }

    #[test]
    fn empty_and_non_json_files_are_refused() {
        assert!(error_of("").contains("empty"));
        assert!(error_of("  \n").contains("empty"));
        let message = error_of("components: []");
        assert!(message.contains("line 1 column 1"), "{message}");
        assert!(error_of(r#"{"components": []} trailing"#).contains("after the JSON object"));
    }

    #[test]
    fn missing_name_is_refused() {
        let message = error_of(&one(r#"{"repo":"x"}"#));
        assert!(message.contains("missing field `name`"), "{message}");
    }

    #[test]
    fn bad_names_are_refused() {
        for name in ["Web", "-web", "", "we b", "web/1", &"a".repeat(65)] {
            let message = error_of(&one(&format!(r#"{{"name":"{name}","repo":"r"}}"#)));
            assert!(message.contains("components[0].name"), "{name}: {message}");
            assert!(message.contains("not a valid component name"), "{message}");
        }
        parse(&one(r#"{"name":"web-1.v2_x","repo":"r"}"#)).unwrap();
    }

    #[test]
    fn ports_outside_the_range_are_refused() {
        for (port, field) in [
            ("0", "external"),
            ("65536", "external"),
            ("-1", "container"),
        ] {
            let ports = if field == "external" {
                format!(r#"{{"external":{port},"container":80}}"#)
            } else {
                format!(r#"{{"external":80,"container":{port}}}"#)
            };
            let message = error_of(&one(&format!(r#"{{"name":"web","ports":[{ports}]}}"#)));
            assert!(message.contains(&format!("ports[0].{field}")), "{message}");
            assert!(message.contains("outside 1..65535"), "{message}");
        }
    }

    #[test]
    fn duplicate_names_and_shared_external_ports_are_refused() {
        let twice = r#"{"components":[{"name":"a","repo":"r"},{"name":"a","repo":"r"}]}"#;
        assert!(error_of(twice).contains("defined twice"));
        let shared = r#"{"components":[
            {"name":"a","ports":[{"external":80,"container":1}]},
            {"name":"b","ports":[{"external":80,"container":2}]}]}"#;
        let message = error_of(shared);
        assert!(
            message.contains("components[1].ports[0].external"),
            "{message}"
        );
        assert!(
            message.contains("already claimed by components[0] (\"a\")"),
            "{message}"
        );
    }

    #[test]
    fn unknown_check_kinds_are_refused() {
        let message = error_of(&one(
            r#"{"name":"web","repo":"r","readyChecks":[{"kind":"grpc","port":1}]}"#,
        ));
        assert!(
            message.contains("components[0].readyChecks[0].kind"),
            "{message}"
        );
        assert!(message.contains("unknown variant `grpc`"), "{message}");
    }

    #[test]
    fn non_numeric_timeouts_are_refused() {
        let message = error_of(&one(r#"{"name":"web","repo":"r","readyTimeout":"10s"}"#));
        assert!(message.contains("components[0].readyTimeout"), "{message}");
        assert!(message.contains("invalid type: string"), "{message}");
        let check = error_of(&one(
            r#"{"name":"web","repo":"r","readyChecks":[{"kind":"tcp","port":1,"timeout":"3"}]}"#,
        ));
        assert!(check.contains("readyChecks[0].timeout"), "{check}");
        let drain = error_of(&one(r#"{"name":"web","repo":"r","drainTimeout":-5}"#));
        assert!(drain.contains("drainTimeout"), "{drain}");
    }

    #[test]
    fn zero_timeouts_are_refused() {
        for (field, json) in [
            (
                "components[0].readyTimeout",
                r#"{"name":"web","repo":"r","readyTimeout":0}"#,
            ),
            (
                "components[0].drainTimeout",
                r#"{"name":"web","repo":"r","drainTimeout":0}"#,
            ),
            (
                "components[0].readyChecks[0].timeout",
                r#"{"name":"web","repo":"r","readyChecks":[{"kind":"tcp","port":1,"timeout":0}]}"#,
            ),
            (
                "components[0].terminationSignals[0].timeout",
                r#"{"name":"web","repo":"r","terminationSignals":[{"kind":"http","port":1,"timeout":0}]}"#,
            ),
        ] {
            let message = error_of(&one(json));
            assert!(
                message.contains(field) && message.contains("must be at least 1"),
                "{field}: {message}"
            );
        }
    }

    #[test]
    fn checks_and_signals_need_their_fields() {
        let no_port = error_of(&one(
            r#"{"name":"w","repo":"r","readyChecks":[{"kind":"http"}]}"#,
        ));
        assert!(no_port.contains("readyChecks[0].port"), "{no_port}");
        let tcp_path = error_of(&one(
            r#"{"name":"w","repo":"r","healthChecks":[{"kind":"tcp","port":1,"path":"/"}]}"#,
        ));
        assert!(tcp_path.contains("healthChecks[0].path"), "{tcp_path}");
        let exec = error_of(&one(
            r#"{"name":"w","repo":"r","terminationSignals":[{"kind":"exec"}]}"#,
        ));
        assert!(
            exec.contains("terminationSignals[0].exec_command"),
            "{exec}"
        );
    }

    #[test]
    fn pull_policy_defaults_follow_the_tag() {
        let config = parse(&one(r#"{"name":"web","repo":"r","tag":"v2"}"#)).unwrap();
        let web = &config.components[0];
        assert_eq!(web.pull_policy("latest"), PullPolicy::Always);
        assert_eq!(web.pull_policy("v2"), PullPolicy::Missing);
        let never = parse(&one(r#"{"name":"web","repo":"r","pull":"never"}"#)).unwrap();
        assert_eq!(never.components[0].pull_policy("latest"), PullPolicy::Never);
        let bad = error_of(&one(r#"{"name":"web","repo":"r","pull":"sometimes"}"#));
        assert!(bad.contains("components[0].pull"), "{bad}");
        assert_ne!(web.config_hash(), never.components[0].config_hash());
    }

    #[test]
    fn address_components_need_ports() {
        let message = error_of(&one(r#"{"name":"web"}"#));
        assert!(message.contains("no repo and no ports"), "{message}");
    }

    #[test]
    fn unknown_component_lists_the_known_ones() {
        let config = parse(&one(r#"{"name":"web","repo":"r"}"#)).unwrap();
        let message = format!("{:#}", config.component("api").unwrap_err());
        assert_eq!(
            message,
            "unknown component \"api\" (the config defines: web)"
        );
    }

    #[test]
    fn group_writable_config_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("handoff.json");
        fs::write(&path, one(r#"{"name":"web","repo":"r"}"#)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o664)).unwrap();
        let message = format!("{:#}", load(&path).unwrap_err());
        assert!(message.contains("writable by group or others"), "{message}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        load(&path).unwrap();
    }
}
