//! `handoff switch NAME --to ADDR [--weight PCT [--sticky]]`: check that ADDR is ready, then
//! point every external port of NAME at it in one nftables transaction, for the clients of
//! ADDR's family (IPv4 or IPv6; the other family keeps its backend); the previous backend of
//! that family starts draining. With --weight, ADDR (IPv4) becomes a canary taking PCT % of
//! new IPv4 connections.
//!
//! Everything that can be refused (config, address, readiness) is checked before anything is
//! written, so bad input changes nothing.

use std::net::IpAddr;

use anyhow::Result;

use super::{output, with_env, Globals};
use crate::error::Failure;
use crate::ops::canary::canary_address;
use crate::ops::switch::{ports_of, switch_address};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Component name.
    pub name: String,
    /// The new backend's IPv4 or IPv6 address (ports come from the config): the clients of
    /// its family go to it, the other family's stay where they go.
    #[arg(long, value_name = "ADDR")]
    pub to: String,
    /// Make ADDR a canary: PCT % of new connections go to it, the rest to the active backend
    /// (`promote` or `rollback` end it). Given again, changes the share.
    #[arg(long, value_name = "PCT", value_parser = clap::value_parser!(u8).range(1..=99))]
    pub weight: Option<u8>,
    /// Split by client address (a fixed-seed hash) instead of per connection.
    #[arg(long, requires = "weight")]
    pub sticky: bool,
}

pub fn run(args: &Args, globals: &Globals) -> Result<()> {
    let config = globals.config()?;
    let component = config.component(&args.name)?;
    let address = parse_backend_address(&args.to)?;
    ports_of(component)?;
    globals.require_root()?;
    if let Some(weight) = args.weight {
        let split = with_env(globals, |env| {
            canary_address(env, component, address, weight, args.sticky)
        })?;
        println!("{}", output::split(&split));
        return Ok(());
    }
    let switched = with_env(globals, |env| switch_address(env, component, address))?;
    println!("{}", output::switched(&switched));
    Ok(())
}

/// A backend address from the command line: a unicast IPv4 or IPv6 address that can be
/// routed to (IPv6 without brackets or a zone).
pub fn parse_backend_address(text: &str) -> Result<IpAddr> {
    let address: IpAddr = text.trim().parse().map_err(|_| {
        Failure::input(format!(
            "--to: {text:?} is not an IPv4 or IPv6 address (give the backend's address, e.g. \
             10.0.0.12 or fd00::12; ports come from the config)"
        ))
    })?;
    let refuse = |why: &str| -> Result<IpAddr> {
        Err(Failure::input(format!("--to: {address} is {why}; it cannot be a backend")).into())
    };
    if address.is_unspecified() {
        return refuse("the unspecified address");
    }
    if address.is_loopback() {
        return refuse("a loopback address (DNAT'd traffic cannot be routed to it)");
    }
    if address.is_multicast() || address == IpAddr::V4(std::net::Ipv4Addr::BROADCAST) {
        return refuse("not a unicast address");
    }
    if let IpAddr::V6(v6) = address {
        if v6.to_ipv4_mapped().is_some() {
            return refuse("an IPv4-mapped IPv6 address (give the IPv4 address itself)");
        }
        if v6.is_unicast_link_local() {
            return refuse("a link-local address (it names no interface: use a routable one)");
        }
    }
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{exit_code_of, ExitCode};

    #[test]
    fn backend_addresses_are_validated() {
        assert_eq!(
            parse_backend_address("10.0.0.12").unwrap(),
            IpAddr::from([10, 0, 0, 12])
        );
        assert_eq!(
            parse_backend_address(" fd00::12").unwrap(),
            "fd00::12".parse::<IpAddr>().unwrap()
        );
        for bad in [
            "",
            "10.0.0",
            "10.0.0.12:80",
            "[fd00::12]",
            "fd00::12%eth0",
            "::",
            "::1",
            "ff02::1",
            "fe80::1",
            "::ffff:10.0.0.12",
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
}
