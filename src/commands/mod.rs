//! One file per subcommand; each is a thin sequence over the library modules.

pub mod check;
pub mod docker;
pub mod drain;
pub mod flows;
pub mod list;
pub mod switch;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::config::{self, Component, Config};
use crate::error::Failure;
use crate::netfilter::{nft::NftFirewall, ComponentRoutes};
use crate::state::{BackendRecord, LockGuard, StateDir};

/// What every command needs: where the config and the state are, how long to wait for the lock.
#[derive(Debug, Clone)]
pub struct Context {
    pub config_path: PathBuf,
    /// Our nftables table (family inet).
    pub table: String,
    pub state: StateDir,
    pub lock_timeout: Duration,
}

impl Context {
    pub fn config(&self) -> Result<Config> {
        config::load(&self.config_path)
    }

    /// Mutating commands change the kernel's ruleset: root only.
    pub fn require_root(&self) -> Result<()> {
        if !nix::unistd::geteuid().is_root() {
            return Err(
                Failure::host("this command changes the kernel's ruleset: run it as root").into(),
            );
        }
        Ok(())
    }

    pub fn lock(&self, what: &str) -> Result<LockGuard> {
        self.state.lock(self.lock_timeout, what)
    }

    pub fn firewall(&self) -> NftFirewall {
        NftFirewall::new(&self.table)
    }
}

/// The active backend as a record, from the kernel's routes (ports as the kernel has them).
pub fn active_record(routes: &ComponentRoutes, since_ms: u64) -> Option<BackendRecord> {
    let address = routes.active()?;
    Some(BackendRecord {
        address,
        ports: routes
            .routes
            .iter()
            .filter(|r| r.address == address)
            .map(|r| config::PortPair {
                external: r.external,
                backend: r.backend_port,
            })
            .collect(),
        since_ms,
        container: None,
    })
}

/// `--table`: an nft identifier of our own choosing, short and plain.
pub fn parse_table_name(text: &str) -> Result<String> {
    let valid = !text.is_empty()
        && text.len() <= 32
        && text.starts_with(|c: char| c.is_ascii_lowercase())
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(Failure::input(format!(
            "--table: {text:?} is not a valid table name (use [a-z][a-z0-9_]*, at most 32 characters)"
        ))
        .into());
    }
    Ok(text.to_string())
}

/// A backend address from the command line: a unicast IPv4 address that can be routed to.
pub fn parse_backend_address(text: &str) -> Result<Ipv4Addr> {
    let address: Ipv4Addr = text.trim().parse().map_err(|_| {
        Failure::input(format!(
            "--to: {text:?} is not an IPv4 address (give the backend's address, e.g. 10.0.0.12; \
             ports come from the config)"
        ))
    })?;
    let refuse = |why: &str| -> Result<Ipv4Addr> {
        Err(Failure::input(format!("--to: {address} is {why}; it cannot be a backend")).into())
    };
    if address.is_unspecified() {
        return refuse("the unspecified address");
    }
    if address.is_loopback() {
        return refuse("a loopback address (DNAT'd traffic cannot be routed to it)");
    }
    if address.is_multicast() || address.is_broadcast() {
        return refuse("not a unicast address");
    }
    Ok(address)
}

/// The component's validated external -> backend ports, refusing a component without any.
pub fn ports_of(component: &Component) -> Result<Vec<config::PortPair>> {
    let ports = component.port_pairs();
    if ports.is_empty() {
        return Err(Failure::input(format!(
            "component {:?} has no ports in the config: there is nothing to switch",
            component.name
        ))
        .into());
    }
    Ok(ports)
}

/// `12.3 s`, `4 min`, `2.0 h`: short human durations for listings.
pub fn human_duration(ms: u64) -> String {
    let secs = ms as f64 / 1000.0;
    if secs < 120.0 {
        format!("{secs:.1} s")
    } else if secs < 7200.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{exit_code_of, ExitCode};

    #[test]
    fn backend_addresses_are_validated() {
        assert_eq!(
            parse_backend_address("10.0.0.12").unwrap(),
            Ipv4Addr::new(10, 0, 0, 12)
        );
        for bad in [
            "",
            "10.0.0",
            "10.0.0.12:80",
            "::1",
            "web",
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            let error = parse_backend_address(bad).unwrap_err();
            assert_eq!(exit_code_of(&error), ExitCode::Input, "{bad}");
            assert!(format!("{error:#}").starts_with("--to: "), "{error:#}");
        }
    }

    #[test]
    fn table_names_are_plain_identifiers() {
        assert_eq!(parse_table_name("handoff_2").unwrap(), "handoff_2");
        for bad in ["", "2x", "Handoff", "a-b", "a b", &"a".repeat(33)] {
            assert_eq!(
                exit_code_of(&parse_table_name(bad).unwrap_err()),
                ExitCode::Input
            );
        }
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(human_duration(1_500), "1.5 s");
        assert_eq!(human_duration(600_000), "10 min");
        assert_eq!(human_duration(36_000_000), "10.0 h");
    }
}
