//! Route netlink requests, one at a time: a socket, and one request with its whole answer.
//! Shared by [`super::bridge_port`] (hairpin mode) and [`super::interface`] (a bridge's
//! addresses); the framing and the waiting are [`super::nfnetlink`]'s.

use std::time::Duration;

use anyhow::{Context, Result};
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::nfnetlink;

/// How long the kernel has to answer one request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A bound, connected NETLINK_ROUTE socket whose requests the kernel checks strictly.
pub(super) fn open() -> Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE).context("opening a route netlink socket")?;
    // Dumps honour IFA_TARGET_NETNSID only when their requests are checked strictly.
    socket
        .set_netlink_get_strict_chk(true)
        .context("asking route netlink for strict checks")?;
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
pub(super) fn ask(
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
