//! The ports a component takes on the host, as the config, the state file and the kernel layer
//! all speak of them: the protocol, the external port (its key on the host) and the backend
//! port behind it, with the one local address it is bound to, if any. A module of its own so
//! that the kernel layer does not depend on the config's schema.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The transport protocol of a port.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn is_tcp(&self) -> bool {
        *self == Protocol::Tcp
    }

    /// nftables' and conntrack's name: `tcp`, `udp`.
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One external port of a component (with its protocol) and the backend port behind it,
/// both validated. Ordered by protocol, then external port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortPair {
    /// Absent in state files written before UDP: `tcp`.
    #[serde(default, skip_serializing_if = "Protocol::is_tcp")]
    pub protocol: Protocol,
    pub external: u16,
    pub backend: u16,
    /// The one local address the port is the component's on (`ports[].address`); `None`:
    /// every local address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
}

impl PortPair {
    pub fn tcp(external: u16, backend: u16) -> PortPair {
        PortPair {
            protocol: Protocol::Tcp,
            external,
            backend,
            address: None,
        }
    }

    /// What identifies the port on the host: protocol and external port.
    pub fn key(&self) -> PortKey {
        PortKey {
            protocol: self.protocol,
            port: self.external,
        }
    }
}

/// A port on the host: 53/udp is not 53/tcp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    pub protocol: Protocol,
    pub port: u16,
}

impl std::fmt::Display for PortKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}
