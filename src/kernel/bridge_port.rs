//! Hairpin mode on a container's bridge port, so that the container reaches its *own*
//! component through the host (self-hairpin).
//!
//! With `br_netfilter` (which Docker loads), our DNAT runs while the container's frame is still
//! inside the bridge; when the new destination is the sender itself, the bridge must send the
//! frame back out of the port it came in on, which it refuses unless that port is in hairpin
//! mode. Docker sets it only when its userland proxy is off, so handoff sets it on the ports of
//! the containers it starts (and `restore` again after a reboot, when the veths are new).
//!
//! Everything is asked from the host's network namespace, through route netlink: the kernel
//! names the container's namespace by an id (`RTM_GETNSID` for the container's PID), lists
//! the container's addresses by that id (`IFA_TARGET_NETNSID`) to find the interface holding
//! the routed address, and the host's own link list shows which veth has that interface as
//! its peer (`IFLA_LINK_NETNSID` and `IFLA_LINK`); that veth is the bridge port
//! (`IFLA_MASTER`). Nothing enters the container's namespace, so it works under the shipped
//! systemd units, which keep only CAP_NET_ADMIN and CAP_NET_RAW and forbid `setns`
//! (`RestrictNamespaces=yes`): an earlier version joined the namespace and failed there with
//! EACCES on `/proc/PID/ns/net`.

use std::net::IpAddr;

use anyhow::{Context, Result};
use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoPortData, InfoPortKind, LinkAttribute, LinkInfo, LinkMessage,
};
use netlink_packet_route::nsid::{NsidAttribute, NsidMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::Socket;

use super::route_netlink::{ask, open};

/// The id of a namespace the host has not named yet (`NETNSA_NSID_NOT_ASSIGNED`).
const NOT_ASSIGNED: i32 = -1;

/// What setting hairpin mode found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hairpin {
    /// The port (its host-side index) is in hairpin mode now.
    Set(u32),
    /// The container's interface is not a veth on a bridge (macvlan, ipvlan, the host's
    /// network, ...): there is no bridge port, and nothing to set.
    NoBridgePort,
}

/// Put the bridge port of the container whose first process is `pid`, on the interface
/// holding `address`, in hairpin mode. Setting it again is harmless.
pub fn allow_hairpin(pid: u32, address: IpAddr) -> Result<Hairpin> {
    let socket = open()?;
    let namespace = namespace_id(&socket, pid)?;
    let Some(inside) = index_of(&socket, namespace, address)? else {
        anyhow::bail!("no interface of the container holds {address}");
    };
    let Some((port, bridged)) = host_peer(&socket, namespace, inside)? else {
        return Ok(Hairpin::NoBridgePort);
    };
    if !bridged {
        return Ok(Hairpin::NoBridgePort);
    }
    let mut request = link(port);
    request.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::PortKind(InfoPortKind::Bridge),
        LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
            true,
        )])),
    ]));
    ask(
        &socket,
        NLM_F_REQUEST | NLM_F_ACK,
        RouteNetlinkMessage::NewLink(request),
    )
    .with_context(|| format!("setting hairpin mode on bridge port {port}"))?;
    Ok(Hairpin::Set(port))
}

/// The id by which the host's namespace names the network namespace of process `pid`,
/// assigned first if it has none yet.
fn namespace_id(socket: &Socket, pid: u32) -> Result<i32> {
    let ask_id = || -> Result<i32> {
        let mut request = NsidMessage::default();
        request.attributes.push(NsidAttribute::Pid(pid));
        let answer = ask(socket, NLM_F_REQUEST, RouteNetlinkMessage::GetNsId(request))
            .with_context(|| format!("asking for the id of process {pid}'s network namespace"))?;
        Ok(answer
            .iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewNsId(message) => {
                    message.attributes.iter().find_map(|a| match a {
                        NsidAttribute::Id(id) => Some(*id),
                        _ => None,
                    })
                }
                _ => None,
            })
            .unwrap_or(NOT_ASSIGNED))
    };
    let id = ask_id()?;
    if id != NOT_ASSIGNED {
        return Ok(id);
    }
    let mut request = NsidMessage::default();
    request.attributes.push(NsidAttribute::Pid(pid));
    request.attributes.push(NsidAttribute::Id(NOT_ASSIGNED));
    match ask(
        socket,
        NLM_F_REQUEST | NLM_F_ACK,
        RouteNetlinkMessage::NewNsId(request),
    ) {
        Ok(_) => {}
        // Assigned meanwhile (a link listing assigns ids too).
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .and_then(|e| e.raw_os_error())
                == Some(nix::libc::EEXIST) => {}
        Err(error) => {
            return Err(error.context(format!(
                "assigning an id to process {pid}'s network namespace"
            )))
        }
    }
    match ask_id()? {
        NOT_ASSIGNED => anyhow::bail!("process {pid}'s network namespace has no id"),
        id => Ok(id),
    }
}

/// The index, inside namespace `namespace`, of the interface holding `address`.
fn index_of(socket: &Socket, namespace: i32, address: IpAddr) -> Result<Option<u32>> {
    let mut request = AddressMessage::default();
    request.header.family = match address {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    request
        .attributes
        .push(AddressAttribute::TargetNetNsId(namespace));
    let answer = ask(
        socket,
        NLM_F_REQUEST | NLM_F_DUMP,
        RouteNetlinkMessage::GetAddress(request),
    )
    .context("listing the container's addresses")?;
    Ok(answer.iter().find_map(|m| match m {
        RouteNetlinkMessage::NewAddress(message) => message
            .attributes
            .iter()
            .any(|a| {
                matches!(a, AddressAttribute::Address(held)
                         | AddressAttribute::Local(held) if *held == address)
            })
            .then_some(message.header.index),
        _ => None,
    }))
}

/// The host's interface whose peer is interface `inside` of namespace `namespace` (the
/// host side of the container's veth), and whether it is a port of a bridge.
fn host_peer(socket: &Socket, namespace: i32, inside: u32) -> Result<Option<(u32, bool)>> {
    let answer = ask(
        socket,
        NLM_F_REQUEST | NLM_F_DUMP,
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
    )
    .context("listing the host's interfaces")?;
    Ok(answer.iter().find_map(|m| {
        let RouteNetlinkMessage::NewLink(link) = m else {
            return None;
        };
        let has = |wanted: &LinkAttribute| link.attributes.contains(wanted);
        (has(&LinkAttribute::LinkNetNsId(namespace)) && has(&LinkAttribute::Link(inside))).then(
            || {
                let bridged = link
                    .attributes
                    .iter()
                    .any(|a| matches!(a, LinkAttribute::Controller(_)));
                (link.header.index, bridged)
            },
        )
    }))
}

fn link(index: u32) -> LinkMessage {
    let mut message = LinkMessage::default();
    message.header.index = index;
    message
}
