//! Hairpin mode on a container's bridge port, so that the container reaches its *own*
//! component through the host (self-hairpin).
//!
//! With `br_netfilter` (which Docker loads), our DNAT runs while the container's frame is still
//! inside the bridge; when the new destination is the sender itself, the bridge must send the
//! frame back out of the port it came in on, which it refuses unless that port is in hairpin
//! mode. Docker sets it only when its userland proxy is off, so handoff sets it on the ports of
//! the containers it starts (and `restore` again after a reboot, when the veths are new).
//!
//! The container's side of its veth lives in the container's network namespace: a thread
//! joins that namespace to find the interface holding the routed address and its peer's index
//! (`IFLA_LINK`); the peer, in the host's namespace, is the bridge port (`IFLA_MASTER`).

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoPortData, InfoPortKind, LinkAttribute, LinkInfo, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::nfnetlink;

/// How long the kernel has to answer one request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What setting hairpin mode found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hairpin {
    /// The port (its host-side index) is in hairpin mode now.
    Set(u32),
    /// The container's interface is not a veth on a bridge (macvlan, ipvlan, the host's
    /// network, ...): there is no bridge port, and nothing to set.
    NoBridgePort,
}

/// Put the bridge port of the container whose network namespace is `/proc/{pid}/ns/net`, on
/// the interface holding `address`, in hairpin mode. Setting it again is harmless.
pub fn allow_hairpin(pid: u32, address: IpAddr) -> Result<Hairpin> {
    let Some(peer) = veth_peer(pid, address)? else {
        return Ok(Hairpin::NoBridgePort);
    };
    let socket = open()?;
    let port = ask(
        &socket,
        NLM_F_REQUEST,
        RouteNetlinkMessage::GetLink(link(peer)),
    )
    .with_context(|| format!("reading interface {peer}, the host side of the container's"))?;
    let bridged = port.iter().any(|m| match m {
        RouteNetlinkMessage::NewLink(link) => link
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::Controller(_))),
        _ => false,
    });
    if !bridged {
        return Ok(Hairpin::NoBridgePort);
    }
    let mut request = link(peer);
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
    .with_context(|| format!("setting hairpin mode on bridge port {peer}"))?;
    Ok(Hairpin::Set(peer))
}

/// The host-side index of the veth whose container side holds `address`, read inside the
/// container's network namespace; `None` when that interface is not a veth with a peer.
fn veth_peer(pid: u32, address: IpAddr) -> Result<Option<u32>> {
    let path = format!("/proc/{pid}/ns/net");
    let namespace = std::fs::File::open(&path)
        .with_context(|| format!("opening the container's network namespace {path}"))?;
    // Joining a namespace changes the calling thread only: a thread of its own, which ends
    // right after, keeps handoff's other threads in the host's namespace.
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("joining the network namespace {path}"))?;
                let socket = open()?;
                let Some(index) = index_of(&socket, address)? else {
                    anyhow::bail!("no interface of the container holds {address}");
                };
                let answer = ask(
                    &socket,
                    NLM_F_REQUEST,
                    RouteNetlinkMessage::GetLink(link(index)),
                )
                .context("reading the container's interface")?;
                Ok(answer.iter().find_map(|m| match m {
                    RouteNetlinkMessage::NewLink(link) => {
                        link.attributes.iter().find_map(|a| match a {
                            LinkAttribute::Link(peer) => Some(*peer),
                            _ => None,
                        })
                    }
                    _ => None,
                }))
            })
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the namespace thread panicked")))
    })
}

/// The index of the interface holding `address`, from an address dump.
fn index_of(socket: &Socket, address: IpAddr) -> Result<Option<u32>> {
    let mut request = AddressMessage::default();
    request.header.family = match address {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
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

fn link(index: u32) -> LinkMessage {
    let mut message = LinkMessage::default();
    message.header.index = index;
    message
}

fn open() -> Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE).context("opening a route netlink socket")?;
    socket
        .bind_auto()
        .context("binding the route netlink socket")?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .context("connecting the route netlink socket")?;
    Ok(socket)
}

/// Send one request and collect its answer: every message up to the end of a dump, the
/// acknowledgement of a change, or the one message a plain get returns.
fn ask(
    socket: &Socket,
    flags: u16,
    message: RouteNetlinkMessage,
) -> Result<Vec<RouteNetlinkMessage>> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = 1;
    let mut request = NetlinkMessage::new(header, NetlinkPayload::from(message));
    request.finalize();
    let mut bytes = vec![0; request.buffer_len()];
    request.serialize(&mut bytes);
    socket.send(&bytes, 0).context("sending to route netlink")?;
    let multipart = flags & NLM_F_DUMP == NLM_F_DUMP;
    let acknowledged = flags & NLM_F_ACK == NLM_F_ACK;
    let mut answer = Vec::new();
    let mut buffer = Vec::with_capacity(nfnetlink::RECV_BUFFER);
    loop {
        if !nfnetlink::wait_readable(socket, ANSWER_TIMEOUT)? {
            anyhow::bail!("no answer from route netlink");
        }
        nfnetlink::receive(socket, &mut buffer).context("reading route netlink")?;
        for message in nfnetlink::parse_datagram::<RouteNetlinkMessage>(&buffer) {
            let message = message.context("a malformed route netlink message")?;
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(answer),
                NetlinkPayload::Error(error) => match error.code {
                    Some(code) => return Err(std::io::Error::from_raw_os_error(-code.get()).into()),
                    None => return Ok(answer),
                },
                NetlinkPayload::InnerMessage(inner) => {
                    answer.push(inner);
                    if !multipart && !acknowledged {
                        return Ok(answer);
                    }
                }
                _ => {}
            }
        }
    }
}
