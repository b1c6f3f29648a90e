//! Bind sources, the rule of `bindings` and `namedVolumes`: a component's bind mount names a host
//! path or a Docker volume, and a host path is allowed only when it stays under an allowed one
//! both as written and once this host's symbolic links are resolved.

use std::fmt;
use std::fs;
use std::path::{Component as PathPart, Path, PathBuf};

use serde::Deserialize;

use super::listed;

/// gantry's placeholder in `bindings[].external`, replaced by the container's instance id
/// (hex digits) after the check: it stays one path component, never `..` or a `/`.
const CONTAINER_ID: &str = "{container_id}";

/// Err: why `external` (a bind's source) is refused, as ` (…)` to follow "not allowed by".
pub(super) fn check(
    external: &str,
    bindings: &[HostPath],
    named_volumes: &[VolumeName],
) -> Result<(), String> {
    // Docker splits a bind at `:` (source:target:options): a colon here would make the
    // source something other than what is checked.
    if external.contains(':') {
        return Err(" (a bind source cannot contain \":\")".to_string());
    }
    if !external.starts_with('/') {
        // Docker takes a source that is not an absolute path for a named volume.
        return match named_volumes.iter().any(|v| v.0 == external) {
            true => Ok(()),
            false if VolumeName::try_from(external.to_string()).is_err() => {
                Err(" (neither an absolute host path nor a Docker volume name)".to_string())
            }
            false => Err(format!(
                " (a named volume; allowed namedVolumes: {})",
                listed(named_volumes)
            )),
        };
    }
    let path = Path::new(external);
    if path.components().any(|c| c == PathPart::ParentDir) {
        return Err(" (it contains \"..\")".to_string());
    }
    let path = normalize(path);
    if !bindings.iter().any(|b| path.starts_with(&b.0)) {
        return Err(format!(" (allowed: {})", listed(bindings)));
    }
    let resolved = resolve(&path)?;
    let inside = bindings
        .iter()
        .filter_map(|b| resolve(&b.0).ok())
        .any(|b| resolved.starts_with(b));
    match inside {
        true => Ok(()),
        false => Err(format!(
            " (it resolves to {}; allowed: {})",
            resolved.display(),
            listed(bindings)
        )),
    }
}

/// An absolute path without `.`, repeated or trailing slashes (the caller refuses `..`).
fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| *c != PathPart::CurDir)
        .collect()
}

/// `path` with the symbolic links of its longest existing ancestor resolved (Docker mounts
/// what a link points to, and creates what does not exist yet). A link that cannot be resolved
/// (dangling, a loop) is refused.
fn resolve(path: &Path) -> Result<PathBuf, String> {
    let existing = path
        .ancestors()
        .find(|p| fs::symlink_metadata(p).is_ok())
        .unwrap_or(Path::new("/"));
    let resolved = fs::canonicalize(existing)
        .map_err(|e| format!(" (cannot resolve {}: {e})", existing.display()))?;
    Ok(resolved.join(path.strip_prefix(existing).unwrap_or(Path::new(""))))
}

/// A host path the policy allows, with everything under it: absolute, normalized.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct HostPath(PathBuf);

impl TryFrom<String> for HostPath {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let path = Path::new(&text);
        if !path.is_absolute() {
            return Err(format!("{text:?} is not an absolute path"));
        }
        if path.components().any(|c| c == PathPart::ParentDir) {
            return Err(format!("{text:?} contains \"..\""));
        }
        Ok(HostPath(normalize(path)))
    }
}

impl fmt::Display for HostPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.display())
    }
}

/// A Docker volume name (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`), gantry's `{container_id}` allowed in it
/// and matched as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub(super) struct VolumeName(String);

impl TryFrom<String> for VolumeName {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let plain = text.replace(CONTAINER_ID, "0");
        let mut chars = plain.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && plain.len() >= 2
            && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        match valid {
            true => Ok(VolumeName(text)),
            false => Err(format!(
                "{text:?} is not a Docker volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)"
            )),
        }
    }
}

impl fmt::Display for VolumeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
