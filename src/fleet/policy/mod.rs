//! The host policy: what a fleet agent may run on this host, whatever the fleet's config says.
//!
//! The agent runs as root and starts what the config in etcd describes. Without a limit of the
//! host's own, whoever can write that one key gets root on every host of the fleet: a
//! privileged container, `/` bind-mounted, the host's network, its port 22 taken over. The
//! policy is a file on the host, owned by root, that the config cannot change; every component
//! is checked against it before the agent starts anything, and what it does not name is
//! refused.
//!
//! It limits exactly what widens a component's reach into the host: the image, `privileged`,
//! the Docker network (`host` shares the host's network stack), the host ports taken over
//! (public `ports` and the gateway ports of `defineComponentLinks`), `localhostClients` (it
//! turns on `route_localnet` on the backends' bridge), bind mounts and named volumes, and `volumesFrom`
//! (another container's mounts, which may be anything). The defaults let a plain web component
//! on 80 and 443 run with a policy that names only its image. See docs/policy.md.

mod bind_sources;
mod images;
mod ports;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Deserialize;

use crate::config::{Component, Protocol};
use crate::error::Failure;

use bind_sources::{HostPath, VolumeName};
use images::{ImagePattern, ImageRef};
use ports::PortRange;

/// Where the policy is read from unless `--policy` names another file.
pub const DEFAULT_PATH: &str = "/etc/handoff/policy.json";

/// What this host lets a fleet agent run (docs/policy.md). Anything not named is refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    /// The file it was read from, named in every refusal.
    #[serde(skip)]
    origin: PathBuf,
    /// Image repositories: exact, or `PREFIX/*`. Required: a policy naming none allows none.
    images: Vec<ImagePattern>,
    #[serde(default)]
    privileged: bool,
    #[serde(default = "default_networks")]
    networks: Vec<String>,
    /// Host ports a component's `ports` may take over.
    #[serde(default = "default_ports")]
    ports: Vec<PortRange>,
    /// Ports at a Docker network's gateway that `defineComponentLinks` may take over.
    #[serde(default)]
    link_ports: Vec<PortRange>,
    #[serde(default)]
    localhost_clients: bool,
    /// Host paths (each with everything under it) that bind mounts may name.
    #[serde(default)]
    bindings: Vec<HostPath>,
    /// Docker volumes, by exact name, that bind mounts may name.
    #[serde(default)]
    named_volumes: Vec<VolumeName>,
    #[serde(default)]
    volumes_from: bool,
}

fn default_networks() -> Vec<String> {
    vec!["bridge".to_string()]
}

fn default_ports() -> Vec<PortRange> {
    [80, 443].map(PortRange::tcp).to_vec()
}

impl Policy {
    /// Read and parse the policy at `path`, refusing a file that anyone but root could replace.
    /// Every error is a [`Failure::input`] naming the file.
    pub fn load(path: &Path) -> Result<Policy> {
        crate::trust::refuse_replaceable(path, "policy")?;
        let text = fs::read_to_string(path)
            .map_err(|e| Failure::input(format!("cannot read policy {}: {e}", path.display())))?;
        Policy::parse(&text, path)
    }

    /// Parse policy text read from `origin` (named in errors and refusals). Errors are
    /// [`Failure::input`]: the file, the field's JSON path, the problem, its line and column.
    pub fn parse(text: &str, origin: &Path) -> Result<Policy> {
        let at = origin.display();
        if text.trim().is_empty() {
            return Err(Failure::input(format!(
                "{at}: the file is empty; expected a JSON object with an \"images\" list"
            ))
            .into());
        }
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let mut policy: Policy =
            serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if path == "." || path.is_empty() {
                    Failure::input(format!("{at}: {inner}"))
                } else {
                    Failure::input(format!("{at}: {path}: {inner}"))
                }
            })?;
        deserializer.end().map_err(|e| {
            Failure::input(format!("{at}: unexpected text after the JSON object: {e}"))
        })?;
        if let Some((i, range)) = policy
            .link_ports
            .iter()
            .enumerate()
            .find(|(_, r)| r.protocol() != Protocol::Tcp)
        {
            return Err(Failure::input(format!(
                "{at}: linkPorts[{i}]: \"{range}\": component links are TCP only"
            ))
            .into());
        }
        policy.origin = origin.to_path_buf();
        Ok(policy)
    }

    /// Whether this host may run `component` (as the config describes it, with the tag it would
    /// run); Err: one line naming the first thing refused and the policy file.
    ///
    /// A component without `repo` (an address backend) is refused: a fleet agent runs only
    /// images, and its ports would forward this host's traffic to addresses no policy names.
    /// Bind sources that exist are resolved through symbolic links here, on this host: both
    /// the path as written and the path it resolves to must be allowed.
    pub fn check(&self, component: &Component) -> Result<(), String> {
        let by = self.origin.display();
        let Some(repo) = &component.repo else {
            return Err(format!(
                "component {} without repo (an address backend) not allowed by {by}: a fleet \
                 agent runs only images",
                component.name
            ));
        };
        match ImageRef::parse(repo) {
            None => {
                return Err(format!(
                    "image {repo} not allowed by {by} (not a Docker image repository)"
                ))
            }
            Some(image) if !self.images.iter().any(|p| p.matches(&image)) => {
                return Err(format!(
                    "image {repo} not allowed by {by} (allowed: {})",
                    listed(&self.images)
                ))
            }
            Some(_) => {}
        }
        if component.privileged && !self.privileged {
            return Err(format!("privileged not allowed by {by}"));
        }
        if !self.networks.contains(&component.network) {
            return Err(format!(
                "network {} not allowed by {by} (allowed: {})",
                component.network,
                listed(&self.networks)
            ));
        }
        for port in &component.ports {
            let allowed = u16::try_from(port.external)
                .is_ok_and(|p| self.ports.iter().any(|r| r.contains(port.protocol, p)));
            if !allowed {
                return Err(format!(
                    "port {}/{} not allowed by {by} (allowed: {})",
                    port.external,
                    port.protocol,
                    listed(&self.ports)
                ));
            }
        }
        for link in &component.define_component_links {
            let port = link.port_pair().external;
            if !self
                .link_ports
                .iter()
                .any(|r| r.contains(Protocol::Tcp, port))
            {
                return Err(format!(
                    "link {} at port {port}/tcp not allowed by {by} (allowed linkPorts: {})",
                    link.name,
                    listed(&self.link_ports)
                ));
            }
        }
        if component.localhost_clients && !self.localhost_clients {
            return Err(format!("localhostClients not allowed by {by}"));
        }
        for binding in &component.bindings {
            bind_sources::check(&binding.external, &self.bindings, &self.named_volumes)
                .map_err(|why| format!("binding {} not allowed by {by}{why}", binding.external))?;
        }
        if !component.volumes_from.is_empty() && !self.volumes_from {
            return Err(format!(
                "volumesFrom ({}) not allowed by {by}",
                component.volumes_from.join(", ")
            ));
        }
        Ok(())
    }
}

/// The entries of a policy list as the refusals show them: `a, b`, or `none`.
fn listed<T: fmt::Display>(items: &[T]) -> String {
    match items.is_empty() {
        true => "none".to_string(),
        false => items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}
