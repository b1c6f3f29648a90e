//! Where a component's links are reached: the IPv4 gateway of its Docker network. The runtime
//! says what Docker says; when Docker names no gateway (a fresh dockerd's default bridge, a
//! user network created with `--subnet` alone), it is the host's address inside the network's
//! subnet on the network's bridge, asked of the kernel here, one floor above both.

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result};

use super::Env;
use crate::error::Failure;
use crate::kernel::interface::ipv4_addresses;
use crate::runtime::{Gateway, Ipv4Subnet};

/// The IPv4 gateway of Docker network `network`.
pub fn gateway(env: &Env, network: &str) -> Result<Ipv4Addr> {
    resolve(network, env.runtime()?.gateway(network)?, ipv4_addresses)
}

/// The gateway the runtime `reported` for `network`, the addresses of a bridge asked of
/// `addresses` (an interface's IPv4 addresses and prefix lengths, `None` when it does not
/// exist) when the runtime names none.
pub fn resolve(
    network: &str,
    reported: Gateway,
    addresses: impl FnOnce(&str) -> Result<Option<Vec<(Ipv4Addr, u8)>>>,
) -> Result<Ipv4Addr> {
    let (interface, subnet) = match reported {
        Gateway::Named(address) => return Ok(address),
        Gateway::OnBridge { interface, subnet } => (interface, subnet),
    };
    let silent = format!("Docker network {network:?} names no IPv4 gateway");
    let held = addresses(&interface).with_context(|| {
        format!("{silent}; reading the addresses of its bridge interface {interface}")
    })?;
    let Some(held) = held else {
        return Err(Failure::host(format!(
            "{silent}, and its bridge interface {interface}, where the gateway would be, does \
             not exist"
        ))
        .into());
    };
    first_in(subnet, &held).ok_or_else(|| {
        let held: Vec<String> = held
            .iter()
            .map(|(address, prefix_len)| format!("{address}/{prefix_len}"))
            .collect();
        let held = match held.is_empty() {
            true => "none".to_string(),
            false => held.join(", "),
        };
        Failure::host(format!(
            "{silent}, and its bridge interface {interface} has no IPv4 address in the \
             network's subnet {subnet} (it has {held})"
        ))
        .into()
    })
}

/// The first of `held` inside `subnet`: the interface's primary address there.
fn first_in(subnet: Ipv4Subnet, held: &[(Ipv4Addr, u8)]) -> Option<Ipv4Addr> {
    held.iter()
        .map(|(address, _)| *address)
        .find(|address| subnet.contains(*address))
}
