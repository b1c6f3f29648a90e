//! One request to nftables over nfnetlink and its whole answer: the objects of a get or a
//! dump, within a deadline, the kernel's error turned into ours (a missing object is
//! [`Missing`], a refusal for want of privileges is a host error). Below the batches
//! (`batch.rs`, `generations.rs`) and above the attribute encoding (`raw.rs`), which both use
//! it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use netlink_sys::Socket;

use super::raw::{answers, Answer};
use crate::error::Failure;
use crate::kernel::nfnetlink;

/// How long to wait for the kernel's answers and acknowledgements.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// The map (or its table) does not exist: the caller must set the component up first.
#[derive(Debug, thiserror::Error)]
#[error("the nftables map {0} does not exist")]
pub struct Missing(pub String);

/// The error for the kernel's errno `code` while doing `what` to `map`.
pub fn errno_error(code: i32, what: &str, map: &str) -> anyhow::Error {
    if code == nix::libc::ENOENT {
        return Missing(map.to_string()).into();
    }
    if code == nix::libc::EPERM {
        return Failure::host(format!(
            "{what}: operation not permitted (handoff must run as root)"
        ))
        .into();
    }
    anyhow::Error::new(std::io::Error::from_raw_os_error(code)).context(what.to_string())
}

/// Send `request` (a get or a dump) on `socket` and collect every object of the answer; `what`
/// names it in errors, `object` names the table object for [`Missing`].
pub fn exchange(socket: &Socket, request: &[u8], what: &str, object: &str) -> Result<Vec<Vec<u8>>> {
    socket
        .send(request, 0)
        .with_context(|| format!("asking nftables for {what}"))?;
    let deadline = Instant::now() + ACK_TIMEOUT;
    let mut objects = Vec::new();
    let mut buffer = Vec::with_capacity(nfnetlink::RECV_BUFFER);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if !nfnetlink::wait_readable(socket, left)? {
            anyhow::bail!("no answer from nftables when reading {what}");
        }
        nfnetlink::receive(socket, &mut buffer).with_context(|| format!("reading {what}"))?;
        let mut finished = false;
        for answer in answers(&buffer) {
            match answer {
                Answer::Object { attributes, .. } => objects.push(attributes),
                Answer::Error { code: 0, .. } | Answer::Done => finished = true,
                Answer::Error { code, .. } => {
                    return Err(errno_error(-code, &format!("reading {what}"), object))
                }
            }
        }
        if finished {
            return Ok(objects);
        }
    }
}
