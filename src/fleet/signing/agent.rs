//! Signing through ssh-agent, so that a key which stays in the agent (one with a passphrase, or
//! one on the operator's own machine behind a forwarded socket) can sign fleet records: the two
//! requests signing needs (draft-miller-ssh-agent) spoken on `$SSH_AUTH_SOCK`, with one deadline
//! over the whole exchange, so that an agent which never answers cannot hang a command.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use ssh_key::{HashAlg, PublicKey, Signature, SshSig};

use super::{HASH, NAMESPACE};
use crate::error::Failure;

/// How long one exchange with ssh-agent may take, connecting included.
pub(super) const AGENT_DEADLINE: Duration = Duration::from_secs(5);

/// OpenSSH's own limit on an agent message (`AGENT_MAX_LEN`).
const AGENT_MAX_MESSAGE: usize = 256 * 1024;

// The agent protocol (draft-miller-ssh-agent), the four messages signing needs.
pub(super) const SSH_AGENT_FAILURE: u8 = 5;
pub(super) const SSH_AGENTC_REQUEST_IDENTITIES: u8 = 11;
pub(super) const SSH_AGENT_IDENTITIES_ANSWER: u8 = 12;
pub(super) const SSH_AGENTC_SIGN_REQUEST: u8 = 13;
pub(super) const SSH_AGENT_SIGN_RESPONSE: u8 = 14;

/// Sign through the agent at `socket` with the private half of `public` (read from `key`), the
/// whole exchange within `deadline`.
pub(super) fn sign_with_agent(
    socket: &Path,
    key: &Path,
    public: &PublicKey,
    message: &[u8],
    deadline: Duration,
) -> Result<SshSig> {
    let fingerprint = public.fingerprint(HashAlg::Sha256);
    let blob = public
        .to_bytes()
        .map_err(|e| anyhow!("encoding {}: {e}", key.display()))?;
    let mut agent = Agent::connect(socket, deadline)?;
    if !agent.identities()?.contains(&blob) {
        let private = match key.extension() {
            Some(extension) if extension == "pub" => key.with_extension("").display().to_string(),
            _ => "PRIVATE-KEY-FILE".to_string(),
        };
        return Err(Failure::input(format!(
            "the ssh-agent at {} does not hold the key of {} ({fingerprint}): add it with \
             `ssh-add {private}`",
            socket.display(),
            key.display(),
        ))
        .into());
    }
    let data = SshSig::signed_data(NAMESPACE, HASH, message)
        .map_err(|e| anyhow!("preparing the data to sign: {e}"))?;
    let signature = agent.sign(&blob, &data, &fingerprint.to_string())?;
    let signature = SshSig::new(public.key_data().clone(), NAMESPACE, HASH, signature)
        .map_err(|e| anyhow!("building the signature: {e}"))?;
    // An agent answering with the wrong key or a broken signature is caught here, not by every
    // host that later refuses the record.
    public.verify(NAMESPACE, message, &signature).map_err(|_| {
        anyhow!(
            "the ssh-agent at {} answered with a signature that does not verify with \
                 {fingerprint}",
            socket.display()
        )
    })?;
    Ok(signature)
}

/// One connection to ssh-agent; every read and write stops at the same deadline.
struct Agent {
    stream: UnixStream,
    socket: PathBuf,
    deadline: Instant,
    wait: Duration,
}

impl Agent {
    fn connect(socket: &Path, wait: Duration) -> Result<Agent> {
        let unreachable =
            |e: std::io::Error| anyhow!("cannot reach ssh-agent at {}: {e}", socket.display());
        let address = socket2::SockAddr::unix(socket).map_err(unreachable)?;
        let connection = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)
            .map_err(unreachable)?;
        connection
            .connect_timeout(&address, wait)
            .map_err(unreachable)?;
        Ok(Agent {
            stream: connection.into(),
            socket: socket.to_path_buf(),
            deadline: Instant::now() + wait,
            wait,
        })
    }

    /// The key blobs the agent holds.
    fn identities(&mut self) -> Result<Vec<Vec<u8>>> {
        let (kind, body) = self.exchange(&[SSH_AGENTC_REQUEST_IDENTITIES])?;
        if kind != SSH_AGENT_IDENTITIES_ANSWER {
            return Err(self.unexpected("the list of keys", kind));
        }
        let mut reader = Wire(&body);
        let count = reader.u32().ok_or_else(|| self.malformed("list of keys"))?;
        let mut blobs = Vec::new();
        for _ in 0..count {
            let (Some(blob), Some(_comment)) = (reader.string(), reader.string()) else {
                return Err(self.malformed("list of keys"));
            };
            blobs.push(blob.to_vec());
        }
        Ok(blobs)
    }

    fn sign(&mut self, blob: &[u8], data: &[u8], fingerprint: &str) -> Result<Signature> {
        let mut request = vec![SSH_AGENTC_SIGN_REQUEST];
        put_string(&mut request, blob);
        put_string(&mut request, data);
        request.extend(0u32.to_be_bytes()); // flags: none (they choose RSA hashes)
        let (kind, body) = self.exchange(&request)?;
        match kind {
            SSH_AGENT_SIGN_RESPONSE => {
                let signature = Wire(&body)
                    .string()
                    .ok_or_else(|| self.malformed("signature"))?;
                Signature::try_from(signature)
                    .map_err(|e| anyhow!("{}: {e}", self.malformed("signature")))
            }
            SSH_AGENT_FAILURE => Err(anyhow!(
                "the ssh-agent at {} refused to sign with {fingerprint} (a key added with \
                 `ssh-add -c` needs its confirmation)",
                self.socket.display()
            )),
            kind => Err(self.unexpected("a signature", kind)),
        }
    }

    /// Send one message and read the answer: its type and body.
    fn exchange(&mut self, request: &[u8]) -> Result<(u8, Vec<u8>)> {
        let mut framed = Vec::with_capacity(4 + request.len());
        put_string(&mut framed, request);
        self.write_all(&framed)?;
        let mut length = [0; 4];
        self.read_exact(&mut length)?;
        let length = u32::from_be_bytes(length) as usize;
        if length == 0 || length > AGENT_MAX_MESSAGE {
            return Err(anyhow!(
                "the ssh-agent at {} answered with a message of {length} bytes",
                self.socket.display()
            ));
        }
        let mut answer = vec![0; length];
        self.read_exact(&mut answer)?;
        let body = answer.split_off(1);
        Ok((answer[0], body))
    }

    fn remaining(&self) -> Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timed_out());
        }
        Ok(left)
    }

    fn write_all(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let left = self.remaining()?;
            match self
                .stream
                .set_write_timeout(Some(left))
                .and_then(|()| self.stream.write(bytes))
            {
                Ok(0) => return Err(self.closed()),
                Ok(written) => bytes = &bytes[written..],
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
        Ok(())
    }

    fn read_exact(&mut self, buffer: &mut [u8]) -> Result<()> {
        let mut filled = 0;
        while filled < buffer.len() {
            let left = self.remaining()?;
            match self
                .stream
                .set_read_timeout(Some(left))
                .and_then(|()| self.stream.read(&mut buffer[filled..]))
            {
                Ok(0) => return Err(self.closed()),
                Ok(read) => filled += read,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
        Ok(())
    }

    fn io_error(&self, e: std::io::Error) -> anyhow::Error {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => self.timed_out(),
            _ => anyhow!("talking to ssh-agent at {}: {e}", self.socket.display()),
        }
    }

    fn timed_out(&self) -> anyhow::Error {
        anyhow!(
            "the ssh-agent at {} did not answer within {} s",
            self.socket.display(),
            self.wait.as_secs_f64()
        )
    }

    fn closed(&self) -> anyhow::Error {
        anyhow!(
            "the ssh-agent at {} closed the connection",
            self.socket.display()
        )
    }

    fn malformed(&self, what: &str) -> anyhow::Error {
        anyhow!(
            "the ssh-agent at {} answered with a malformed {what}",
            self.socket.display()
        )
    }

    fn unexpected(&self, wanted: &str, kind: u8) -> anyhow::Error {
        anyhow!(
            "the ssh-agent at {} answered with message type {kind} where {wanted} was due",
            self.socket.display()
        )
    }
}

/// An SSH wire `string`: a big-endian u32 length, then the bytes.
pub(super) fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend((bytes.len() as u32).to_be_bytes());
    out.extend(bytes);
}

/// Reads SSH wire values off the front of a byte slice; `None` when it is too short.
pub(super) struct Wire<'a>(pub(super) &'a [u8]);

impl<'a> Wire<'a> {
    pub(super) fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*head))
    }

    pub(super) fn string(&mut self) -> Option<&'a [u8]> {
        let length = self.u32()? as usize;
        if length > self.0.len() {
            return None;
        }
        let (string, rest) = self.0.split_at(length);
        self.0 = rest;
        Some(string)
    }
}
