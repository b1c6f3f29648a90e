//! Host port ranges, the rule that `ports` (the host ports a component's `ports` take over) and
//! `linkPorts` (the gateway ports of `defineComponentLinks`) share: their grammar, which takes a
//! JSON number as well as a string, and how a refusal lists them.

use std::fmt;

use serde::Deserialize;

use crate::config::Protocol;

/// Host ports `first..=last` of one protocol: `80`, `443/tcp`, `8000-8099`, `53/udp`, or a
/// JSON number. Without a protocol, `tcp` (as a config's port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PortRange {
    protocol: Protocol,
    first: u16,
    last: u16,
}

impl PortRange {
    /// The one TCP port `port`.
    pub(super) fn tcp(port: u16) -> PortRange {
        PortRange {
            protocol: Protocol::Tcp,
            first: port,
            last: port,
        }
    }

    pub(super) fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub(super) fn contains(&self, protocol: Protocol, port: u16) -> bool {
        self.protocol == protocol && (self.first..=self.last).contains(&port)
    }

    fn parse(text: &str) -> Result<PortRange, String> {
        let invalid =
            || format!("{text:?} is not a port or port range (80, 443/tcp, 8000-8099, 53/udp)");
        let (ports, protocol) = match text.split_once('/') {
            None => (text, Protocol::Tcp),
            Some((ports, "tcp")) => (ports, Protocol::Tcp),
            Some((ports, "udp")) => (ports, Protocol::Udp),
            Some(_) => return Err(invalid()),
        };
        let (first, last) = ports.split_once('-').unwrap_or((ports, ports));
        // Digits only: `u16::from_str` would take `+80`.
        let port = |p: &str| match p.parse::<u16>() {
            Ok(n) if n >= 1 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
            _ => Err(invalid()),
        };
        let (first, last) = (port(first)?, port(last)?);
        if first > last {
            return Err(format!("{text:?}: the range ends before it starts"));
        }
        Ok(PortRange {
            protocol,
            first,
            last,
        })
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = PortRange;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port (80), a port range (\"8000-8099\"), with \"/udp\" for UDP")
            }

            fn visit_u64<E: serde::de::Error>(self, port: u64) -> Result<PortRange, E> {
                PortRange::parse(&port.to_string()).map_err(E::custom)
            }

            fn visit_i64<E: serde::de::Error>(self, port: i64) -> Result<PortRange, E> {
                PortRange::parse(&port.to_string()).map_err(E::custom)
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<PortRange, E> {
                PortRange::parse(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.first == self.last {
            true => write!(f, "{}/{}", self.first, self.protocol),
            false => write!(f, "{}-{}/{}", self.first, self.last, self.protocol),
        }
    }
}
