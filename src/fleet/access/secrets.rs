//! The files that hold a secret, our private key and a password: refused before they are used
//! if anyone else could read or replace them. The password itself is kept out of `Debug`
//! output, so that it never reaches a log.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Result;

use crate::error::Failure;
use crate::trust;

/// A password: never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A private key or a password: readable by its owner only, as ssh requires of a key, and
/// replaceable by no one else.
pub(super) fn read_private(path: &Path, flag: &str) -> Result<Vec<u8>> {
    let what = format!("{flag} file");
    trust::refuse_replaceable(path, &what)?;
    let metadata = std::fs::metadata(path)
        .map_err(|e| Failure::input(format!("cannot read {what} {}: {e}", path.display())))?;
    let mode = metadata.mode() & 0o7777;
    if mode & 0o044 != 0 {
        return Err(Failure::input(format!(
            "{what} {} is readable by group or others (mode {mode:04o}); it holds a secret, so \
             handoff refuses it: run `chmod go-r {}`",
            path.display(),
            path.display()
        ))
        .into());
    }
    std::fs::read(path)
        .map_err(|e| Failure::input(format!("cannot read {what} {}: {e}", path.display())).into())
}

/// A password file: checked as a private key is, its first line without the line ending; an
/// empty one is refused.
pub fn read_secret(path: &Path, flag: &str) -> Result<Secret> {
    let bytes = read_private(path, flag)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Failure::input(format!("{flag} {}: not UTF-8 text", path.display())))?;
    let first = text.split('\n').next().unwrap_or("");
    let first = first.strip_suffix('\r').unwrap_or(first);
    if first.is_empty() {
        return Err(Failure::input(format!(
            "{flag} {}: the first line is empty; it must hold the password",
            path.display()
        ))
        .into());
    }
    Ok(Secret(first.to_string()))
}
