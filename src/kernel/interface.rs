//! The host's interfaces through route netlink: the IPv4 addresses of one, by its name
//! (`RTM_GETLINK` for its index, `RTM_GETADDR` for its addresses) — where a Docker network's
//! gateway is when Docker does not name it, the address of the network's bridge; and the one a
//! packet to an address leaves by (`RTM_GETROUTE`, as `ip route get`) — the interface whose
//! `route_localnet` a backend of host clients needs (see `netfilter::localnet`).

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result};
use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::route::{RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::Socket;

use super::route_netlink::{ask, open};

/// The longest interface name the kernel holds (`IFNAMSIZ` less its terminating NUL); it
/// refuses to look up a longer one (ERANGE) rather than say there is none.
const MAX_NAME_LEN: usize = 15;

/// The IPv4 addresses of interface `name` with their prefix lengths (`10.0.1.1`, 24), as the
/// kernel lists them (the primary address of a subnet first); `None` when there is no such
/// interface.
pub fn ipv4_addresses(name: &str) -> Result<Option<Vec<(Ipv4Addr, u8)>>> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Ok(None);
    }
    let socket = open()?;
    let Some(index) = index_of(&socket, name)? else {
        return Ok(None);
    };
    let mut request = AddressMessage::default();
    request.header.family = AddressFamily::Inet;
    // A strictly checked dump lists this interface's addresses only; they are checked below
    // all the same.
    request.header.index = index;
    let answer = ask(
        &socket,
        NLM_F_REQUEST | NLM_F_DUMP,
        RouteNetlinkMessage::GetAddress(request),
    )
    .with_context(|| format!("listing the addresses of interface {name}"))?;
    Ok(Some(
        answer
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(message) if message.header.index == index => {
                    local_ipv4(message).map(|address| (address, message.header.prefix_len))
                }
                _ => None,
            })
            .collect(),
    ))
}

/// The interface's own address: `IFA_LOCAL` (on a point-to-point link `IFA_ADDRESS` is the
/// peer's), else `IFA_ADDRESS`.
fn local_ipv4(message: &AddressMessage) -> Option<Ipv4Addr> {
    let find = |local: bool| {
        message.attributes.iter().find_map(|a| match (a, local) {
            (AddressAttribute::Local(IpAddr::V4(address)), true)
            | (AddressAttribute::Address(IpAddr::V4(address)), false) => Some(*address),
            _ => None,
        })
    };
    find(true).or_else(|| find(false))
}

/// The index of interface `name`; `None` when the kernel has none of that name.
fn index_of(socket: &Socket, name: &str) -> Result<Option<u32>> {
    let mut request = LinkMessage::default();
    request
        .attributes
        .push(LinkAttribute::IfName(name.to_string()));
    match ask(socket, NLM_F_REQUEST, RouteNetlinkMessage::GetLink(request)) {
        Ok(answer) => answer
            .iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => Some(Some(link.header.index)),
                _ => None,
            })
            .with_context(|| format!("route netlink did not describe interface {name}")),
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .and_then(|e| e.raw_os_error())
                == Some(nix::libc::ENODEV) =>
        {
            Ok(None)
        }
        Err(error) => Err(error.context(format!("asking for interface {name}"))),
    }
}

/// The name of the interface a packet from the host to `address` leaves by, as the kernel
/// routes it now; `None` when it has no route there.
pub fn egress_interface(address: Ipv4Addr) -> Result<Option<String>> {
    let socket = open()?;
    let mut request = RouteMessage::default();
    request.header.address_family = AddressFamily::Inet;
    request.header.destination_prefix_length = 32;
    request
        .attributes
        .push(RouteAttribute::Destination(IpAddr::V4(address).into()));
    let answer = match ask(
        &socket,
        NLM_F_REQUEST,
        RouteNetlinkMessage::GetRoute(request),
    ) {
        Ok(answer) => answer,
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .and_then(|e| e.raw_os_error())
                == Some(nix::libc::ENETUNREACH) =>
        {
            return Ok(None)
        }
        Err(error) => return Err(error.context(format!("asking the kernel's route to {address}"))),
    };
    let index = answer.iter().find_map(|m| match m {
        RouteNetlinkMessage::NewRoute(route) => route.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(index) => Some(*index),
            _ => None,
        }),
        _ => None,
    });
    let Some(index) = index else {
        return Ok(None);
    };
    let mut request = LinkMessage::default();
    request.header.index = index;
    let answer = ask(
        &socket,
        NLM_F_REQUEST,
        RouteNetlinkMessage::GetLink(request),
    )
    .with_context(|| format!("asking for interface {index}, the way to {address}"))?;
    Ok(answer.iter().find_map(|m| match m {
        RouteNetlinkMessage::NewLink(link) => link.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        }),
        _ => None,
    }))
}
