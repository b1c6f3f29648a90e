//! nfnetlink plumbing shared by the conntrack reader (`conntrack/`) and the nftables hot path
//! (`netfilter/batch.rs`): opening a socket, splitting a datagram into messages, waiting for
//! data with a timeout. The last two serve route netlink (`route_netlink.rs`) too.

use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::{Context, Result};
use netlink_packet_core::{NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterMessageInner};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::error::Failure;

/// Smallest netlink message: its header.
const HEADER_LEN: usize = 16;
/// Room for one received datagram (a dump sends many messages per datagram).
pub const RECV_BUFFER: usize = 256 * 1024;

/// A bound, connected NETLINK_NETFILTER socket.
pub fn open() -> Result<Socket> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(|e| {
        Failure::host(format!(
            "cannot open a netfilter netlink socket ({e}); is this Linux with nfnetlink?"
        ))
    })?;
    socket.bind_auto().context("binding the nfnetlink socket")?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .context("connecting the nfnetlink socket")?;
    Ok(socket)
}

/// One request, serialized: netlink header (`flags`, `sequence`), nfgenmsg `header`, `inner`.
pub fn request(
    flags: u16,
    sequence: u32,
    header: NetfilterHeader,
    inner: impl Into<NetfilterMessageInner>,
) -> Vec<u8> {
    let mut netlink_header = NetlinkHeader::default();
    netlink_header.flags = flags;
    netlink_header.sequence_number = sequence;
    let mut message = NetlinkMessage::new(
        netlink_header,
        NetlinkPayload::from(NetfilterMessage::new(header, inner)),
    );
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// Receive one datagram into `buffer` (its previous content is discarded).
pub fn receive(socket: &Socket, buffer: &mut Vec<u8>) -> std::io::Result<usize> {
    buffer.clear();
    buffer.reserve(RECV_BUFFER);
    socket.recv(buffer, 0)
}

/// Every message of a datagram: `None` for one that cannot be decoded (a malformed length
/// ends the walk with one `None`). Never panics, whatever the bytes.
pub fn parse_datagram<T: NetlinkDeserializable>(datagram: &[u8]) -> Vec<Option<NetlinkMessage<T>>> {
    let mut out = Vec::new();
    let mut offset = 0;
    while datagram.len().saturating_sub(offset) >= HEADER_LEN {
        let rest = &datagram[offset..];
        let length = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if length < HEADER_LEN || length > rest.len() {
            out.push(None);
            break;
        }
        out.push(NetlinkMessage::<T>::deserialize(&rest[..length]).ok());
        offset += (length + 3) & !3;
    }
    out
}

/// Wait up to `timeout` for the socket to become readable; `false` on timeout.
pub fn wait_readable(socket: &Socket, timeout: Duration) -> Result<bool> {
    let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, PollTimeout::from(millis)) {
        Ok(ready) => Ok(ready > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context("waiting for nfnetlink")),
    }
}
