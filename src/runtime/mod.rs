//! Container runtimes, behind the [`Runtime`] trait: Docker (through its Engine API) is the one
//! handoff manages, and the use cases are unit-tested against [`fake::FakeRuntime`]. A component
//! without `repo` has plain address backends and needs no runtime.
//!
//! Containers are found again by their labels, never by a local cache: any command can rebuild
//! the picture from the runtime and the kernel.

pub mod docker;
#[cfg(test)]
pub mod fake;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::Result;

/// Labels that tie a container to its component.
pub const LABEL_TABLE: &str = "handoff.table";
pub const LABEL_COMPONENT: &str = "handoff.component";
pub const LABEL_CONFIG_HASH: &str = "handoff.config-hash";
pub const LABEL_GENERATION: &str = "handoff.generation";
pub const LABEL_INSTANCE: &str = "handoff.instance";

/// A container of a component, as Docker reports it.
#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub image: String,
    pub running: bool,
    /// Docker's state word (`running`, `exited`, ...).
    pub state: String,
    /// Seconds since the epoch.
    pub created: i64,
    /// Its IPv4 address on the component's network.
    pub address: Option<IpAddr>,
    /// Its IPv6 address there, on a network with IPv6.
    pub address6: Option<IpAddr>,
    pub labels: HashMap<String, String>,
}

impl Container {
    /// Whether this container runs `image` with `component`'s config as it is now (the hash
    /// its creator labelled it with).
    pub fn runs(&self, image: &str, component: &crate::config::Component) -> bool {
        self.image == image && self.labels.get(LABEL_CONFIG_HASH) == Some(&component.config_hash())
    }

    pub fn generation(&self) -> u64 {
        self.labels
            .get(LABEL_GENERATION)
            .and_then(|g| g.parse().ok())
            .unwrap_or(0)
    }

    pub fn short_id(&self) -> &str {
        short_id(&self.id)
    }
}

/// A container id as Docker shows it: its first 12 characters.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Where a network's IPv4 gateway is, as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gateway {
    /// The runtime names it.
    Named(Ipv4Addr),
    /// The runtime names none (a fresh dockerd's default bridge, a user network created with
    /// `--subnet` but no `--gateway`): it is the host's address inside `subnet` on the network's
    /// bridge `interface`, which only the kernel knows.
    OnBridge {
        interface: String,
        subnet: Ipv4Subnet,
    },
}

/// An IPv4 subnet, `172.17.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Subnet {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
}

impl Ipv4Subnet {
    /// `text` as `ADDRESS/PREFIX`; `None` when it is not IPv4 (an IPv6 subnet).
    pub fn parse(text: &str) -> Result<Option<Ipv4Subnet>> {
        let bad = || anyhow::anyhow!("{text:?} is not a subnet (ADDRESS/PREFIX)");
        let (address, prefix_len) = text.split_once('/').ok_or_else(bad)?;
        let address = match address.parse::<IpAddr>().map_err(|_| bad())? {
            IpAddr::V4(address) => address,
            IpAddr::V6(_) => return Ok(None),
        };
        let prefix_len = prefix_len
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(bad)?;
        Ok(Some(Ipv4Subnet {
            address,
            prefix_len,
        }))
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0);
        u32::from(address) & mask == u32::from(self.address) & mask
    }
}

impl fmt::Display for Ipv4Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// What to create.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub user: String,
    pub privileged: bool,
    pub env: Vec<String>,
    pub binds: Vec<String>,
    pub volumes_from: Vec<String>,
    pub network: String,
    pub labels: HashMap<String, String>,
}

/// What the use cases need of a container runtime. "Already gone" is success wherever a
/// teardown asks for it (stop and remove of a missing container).
pub trait Runtime {
    /// The containers labelled for `table` (and `component`, when given), running or not; their
    /// address is the one on `network`.
    fn containers(
        &self,
        table: &str,
        component: Option<&str>,
        network: &str,
    ) -> Result<Vec<Container>>;
    fn image_present(&self, image: &str) -> Result<bool>;
    /// Pull `repo:tag` from its registry, all of it within `timeout`, saying how it is getting
    /// on through `progress` now and then.
    fn pull(
        &self,
        repo: &str,
        tag: &str,
        timeout: Duration,
        progress: &mut dyn FnMut(String),
    ) -> Result<()>;
    /// Create and start a container; on a failed start it is removed again. Its id.
    fn create_and_start(&self, spec: &ContainerSpec) -> Result<String>;
    /// Start an existing (stopped) container again, e.g. after a reboot.
    fn start(&self, id: &str) -> Result<()>;
    /// The container's address on `network`, waiting briefly for the runtime to assign it.
    fn address(&self, id: &str, network: &str) -> Result<IpAddr>;
    /// The container's address on `network` while it runs; `None` when it is stopped, gone,
    /// or has no address there.
    fn running_address(&self, id: &str, network: &str) -> Result<Option<IpAddr>>;
    /// The container's IPv6 address on `network`; `None` on a network without IPv6.
    fn address6(&self, id: &str, network: &str) -> Result<Option<IpAddr>>;
    /// The PID of the running container's first process: the kernel names the container's
    /// network namespace by it.
    fn pid(&self, id: &str) -> Result<u32>;
    /// Where `network`'s IPv4 gateway is (on a bridge network, the host's own address there):
    /// where component links are reached. What the runtime says, nothing looked up elsewhere.
    fn gateway(&self, network: &str) -> Result<Gateway>;
    /// SIGTERM, then SIGKILL after `grace`. Already stopped or gone is done.
    fn stop(&self, id: &str, grace: Duration) -> Result<()>;
    /// Remove the container (and its anonymous volumes). Already gone is done.
    fn remove(&self, id: &str) -> Result<()>;
    /// The last `lines` lines of the container's output, for a failure report.
    fn logs_tail(&self, id: &str, lines: usize) -> String;
    /// Run `command` in the container and wait (up to `timeout`) for its exit code.
    fn exec(&self, id: &str, command: Vec<String>, timeout: Duration) -> Result<i64>;
}
