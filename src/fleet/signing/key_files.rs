//! The key file `sign` is given, read and refused as ssh would refuse it: a private key that
//! group or others can read, an encrypted one (handoff asks for no passphrase: ssh-agent does),
//! one not in OpenSSH's format, or not ed25519. Also the size and text checks every file here
//! gets, the signers file included, so a wrong path is named as such rather than parsed.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Result;
use ssh_key::{Algorithm, PrivateKey, PublicKey};

use crate::error::Failure;

/// Key and signers files are small; a larger one is not what it claims to be.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// A small text file, and its mode, read from one open handle (no race between the two).
pub(super) fn read_small_text(path: &Path, what: &str) -> Result<(String, u32)> {
    let cannot =
        |e: std::io::Error| Failure::input(format!("cannot read {what} {}: {e}", path.display()));
    let file = File::open(path).map_err(cannot)?;
    let metadata = file.metadata().map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Failure::input(format!(
            "{what} {} is larger than {} KiB: not a {what}",
            path.display(),
            MAX_FILE_BYTES / 1024
        ))
        .into());
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        Failure::input(format!(
            "{what} {} is not text: not a {what}",
            path.display()
        ))
    })?;
    Ok((text, metadata.mode()))
}

/// The ed25519 private key in `text`, read from `path` with file mode `mode`.
pub(super) fn private_key(path: &Path, text: &str, mode: u32) -> Result<PrivateKey> {
    let shown = path.display();
    if mode & 0o077 != 0 {
        return Err(Failure::input(format!(
            "private key {shown} is accessible by group or others (mode {:04o}); like ssh, \
             handoff refuses it: run `chmod 600 {shown}`",
            mode & 0o7777
        ))
        .into());
    }
    if !text
        .trim_start()
        .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----")
    {
        return Err(Failure::input(format!(
            "{shown} is a private key but not in OpenSSH's format; handoff signs with OpenSSH \
             ed25519 keys (ssh-keygen -t ed25519)"
        ))
        .into());
    }
    let private = PrivateKey::from_openssh(text).map_err(|e| {
        Failure::input(format!(
            "{shown} is not a readable OpenSSH private key: {e}"
        ))
    })?;
    refuse_unless_ed25519(path, private.algorithm())?;
    if private.is_encrypted() {
        return Err(Failure::input(format!(
            "private key {shown} is encrypted and handoff does not ask for passphrases: load it \
             into ssh-agent with `ssh-add {shown}` and pass its public key file ({shown}.pub) \
             as KEY"
        ))
        .into());
    }
    Ok(private)
}

/// The ed25519 public key in `text` (an OpenSSH one-line public key), read from `path`.
pub(super) fn public_key(path: &Path, text: &str) -> Result<PublicKey> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .unwrap_or_default();
    let public = PublicKey::from_openssh(line).map_err(|e| {
        Failure::input(format!(
            "{} is neither an OpenSSH private key nor an OpenSSH public key ({e})",
            path.display()
        ))
    })?;
    refuse_unless_ed25519(path, public.algorithm())?;
    Ok(public)
}

fn refuse_unless_ed25519(path: &Path, algorithm: Algorithm) -> Result<()> {
    if algorithm == Algorithm::Ed25519 {
        return Ok(());
    }
    Err(Failure::input(format!(
        "{} is a {} key; handoff signs with ed25519 keys only (ssh-keygen -t ed25519)",
        path.display(),
        algorithm.as_str()
    ))
    .into())
}
