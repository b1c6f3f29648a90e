//! Signed fleet records: SSHSIG signatures (`ssh-keygen -Y sign`), checked against an OpenSSH
//! `allowed_signers` file (`ssh-keygen -Y verify`).
//!
//! Why SSHSIG rather than a key format of our own: operators already sign their git commits with
//! these SSH keys, and git checks those signatures against an `allowed_signers` file of exactly
//! this format. So a fleet needs no new keys, no PKI and no new tool: `handoff` checks what
//! `ssh-keygen -Y sign -n handoff-fleet` made, `ssh-keygen -Y verify -n handoff-fleet` checks what
//! `--sign` made, and a key can stay in ssh-agent (or on a machine handoff never sees). The
//! namespace, [`NAMESPACE`], is inside what is signed, so a signed commit never passes for a signed
//! fleet record, nor the other way round.
//!
//! Narrower than OpenSSH, on purpose, and each refused aloud rather than skipped:
//! - ed25519 only. Other keys (RSA, ECDSA, security keys) may stay in a shared signers file; a
//!   signature by one is refused as "key type … not supported".
//! - No certificates: a `cert-authority` line is an error in the file.
//! - `valid-after`/`valid-before` must be UTC (`…Z`): OpenSSH reads a time without `Z` in each
//!   host's own time zone, so hosts in different zones would disagree about a key.

mod agent;
mod allowed_signers;
mod key_files;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, HashAlg, LineEnding, PublicKey, SshSig};

use self::agent::{sign_with_agent, AGENT_DEADLINE};
use self::allowed_signers::{parse_line, Entry};
use self::key_files::{private_key, public_key, read_small_text};
use crate::error::Failure;

/// The SSHSIG namespace of fleet records: `ssh-keygen -Y sign -n handoff-fleet`.
pub const NAMESPACE: &str = "handoff-fleet";

/// What `ssh-keygen -Y sign` uses by default.
const HASH: HashAlg = HashAlg::Sha512;

/// Sign `message`; the armored SSHSIG text, as `ssh-keygen -Y sign -n handoff-fleet -f key`
/// writes it (ed25519 is deterministic: the same bytes).
///
/// `key` is an OpenSSH ed25519 private key file, or a public key file (`*.pub`) whose private
/// key is in the ssh-agent at `$SSH_AUTH_SOCK`.
pub fn sign(key: &Path, message: &[u8]) -> Result<String> {
    let (text, mode) = read_small_text(key, "key")?;
    let signature = if text.contains("PRIVATE KEY-----") {
        let private = private_key(key, &text, mode)?;
        SshSig::sign(&private, NAMESPACE, HASH, message)
            .map_err(|e| anyhow!("signing with {}: {e}", key.display()))?
    } else {
        let public = public_key(key, &text)?;
        let socket = std::env::var_os("SSH_AUTH_SOCK")
            .filter(|socket| !socket.is_empty())
            .ok_or_else(|| {
                Failure::input(format!(
                    "{} is a public key, so handoff signs through ssh-agent, but SSH_AUTH_SOCK \
                     is not set (sudo clears it: `sudo --preserve-env=SSH_AUTH_SOCK`); or pass \
                     the private key file",
                    key.display()
                ))
            })?;
        sign_with_agent(Path::new(&socket), key, &public, message, AGENT_DEADLINE)?
    };
    signature
        .to_pem(LineEnding::LF)
        .map_err(|e| anyhow!("armoring the signature: {e}"))
}

/// A parsed `allowed_signers` file (man ssh-keygen, ALLOWED SIGNERS).
#[derive(Debug, Clone)]
pub struct Signers {
    origin: PathBuf,
    entries: Vec<Entry>,
}

/// Who made a signature that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The principals field of the `allowed_signers` line that allowed it, as written.
    pub principal: String,
    /// The signing key's fingerprint, `SHA256:…` as `ssh-keygen -l` shows it.
    pub fingerprint: String,
}

impl Signers {
    /// Read and parse the signers file at `path`, refusing one that someone other than root (or
    /// the user running handoff) could replace.
    pub fn load(path: &Path) -> Result<Signers> {
        crate::trust::refuse_replaceable(path, "signers file")?;
        let (text, _) = read_small_text(path, "signers file")?;
        Signers::parse(&text, path)
    }

    /// Parse `text`, an `allowed_signers` file read from `origin` (named in errors).
    pub fn parse(text: &str, origin: &Path) -> Result<Signers> {
        let mut entries = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim_matches([' ', '\t', '\r']);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let entry = parse_line(line, index + 1).map_err(|problem| {
                Failure::input(format!("{}:{}: {problem}", origin.display(), index + 1))
            })?;
            entries.push(entry);
        }
        Ok(Signers {
            origin: origin.to_path_buf(),
            entries,
        })
    }
}

/// Check `armored` over `message` (namespace [`NAMESPACE`]) against `signers` at time `now`.
///
/// The error is a short reason, for `refused: <reason>`.
pub fn verify(
    signers: &Signers,
    message: &[u8],
    armored: &str,
    now: SystemTime,
) -> Result<Signer, String> {
    let signature = parse_armor(armored)?;
    let fingerprint = fingerprint(signature.public_key());
    if signature.namespace() != NAMESPACE {
        return Err(format!(
            "signature for namespace {:?}, not {NAMESPACE:?}",
            signature.namespace()
        ));
    }
    let entries: Vec<&Entry> = signers
        .entries
        .iter()
        .filter(|entry| &entry.key == signature.public_key())
        .collect();
    let Some(first) = entries.first() else {
        return Err(format!(
            "signature by {fingerprint} whose key is not in {}",
            signers.origin.display()
        ));
    };
    let algorithm = signature.public_key().algorithm();
    if algorithm != Algorithm::Ed25519 {
        return Err(format!(
            "signature by {fingerprint} ({}): key type {} not supported (ed25519 only)",
            first.principals,
            algorithm.as_str()
        ));
    }
    let public = PublicKey::from(signature.public_key().clone());
    // The ed25519 verifier would also take a security key's signature type; only the plain one
    // belongs with this key.
    if signature.signature().algorithm() != Algorithm::Ed25519
        || public.verify(NAMESPACE, message, &signature).is_err()
    {
        return Err(format!(
            "bad signature by {fingerprint} ({})",
            first.principals
        ));
    }
    let now = match now.duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_secs(),
        Err(_) => return Err("the clock is before 1970".to_string()),
    };
    let mut first_refusal = None;
    for entry in entries {
        match entry.refusal(now, &signers.origin) {
            None => {
                return Ok(Signer {
                    principal: entry.principals.clone(),
                    fingerprint,
                })
            }
            Some(refusal) => {
                first_refusal.get_or_insert(refusal);
            }
        }
    }
    Err(first_refusal.unwrap_or_else(|| format!("signature by {fingerprint} not allowed")))
}

/// Who made a signature (its key's fingerprint, `SHA256:…`), without checking it: for display.
pub fn fingerprint_of(armored: &str) -> Result<String> {
    let signature = parse_armor(armored).map_err(|reason| anyhow!(reason))?;
    Ok(fingerprint(signature.public_key()))
}

fn parse_armor(armored: &str) -> Result<SshSig, String> {
    let signature =
        SshSig::from_pem(armored.trim()).map_err(|e| format!("malformed signature: {e}"))?;
    // The version is not signed and OpenSSH takes any up to 1; nothing writes another, and one
    // signature should have one text.
    if signature.version() != SshSig::VERSION {
        return Err(format!(
            "malformed signature: version {}, not {}",
            signature.version(),
            SshSig::VERSION
        ));
    }
    Ok(signature)
}

fn fingerprint(key: &KeyData) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}
