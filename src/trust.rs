//! Refuse a config file or state directory that someone other than root could replace.
//!
//! handoff runs as root and does what its config and state say: which images run (privileged,
//! with host mounts), where traffic goes, which containers are stopped. Whoever can write the
//! file, or any directory above it, chooses that. The rule is ssh's and sudo's: the path itself
//! and every directory above it must be owned by root or by the user running handoff and must
//! not be writable by group or others. One exception, for the directories *above*: a sticky
//! directory such as `/tmp`, where others cannot rename or remove an entry they do not own.
//! Both the path as given and the path with its symbolic links resolved are checked.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use anyhow::Result;

use crate::error::Failure;

const GROUP_OR_OTHER_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// Refuse `path` (an existing file or directory, named `what` in errors: "config", "state
/// directory") when anyone but root or the current user could change it or replace it.
pub fn refuse_replaceable(path: &Path, what: &str) -> Result<()> {
    let metadata = fs::metadata(path)
        .map_err(|e| Failure::input(format!("cannot read {what} {}: {e}", path.display())))?;
    check_owner(path, &metadata, what, path)?;
    if metadata.mode() & GROUP_OR_OTHER_WRITE != 0 {
        return Err(Failure::input(format!(
            "{what} {} is writable by group or others (mode {:04o}); handoff runs as root and \
             refuses it: run `chmod go-w {}`",
            path.display(),
            metadata.mode() & 0o7777,
            path.display()
        ))
        .into());
    }
    refuse_replaceable_directories_above(path, what)
}

/// Refuse `path` (which may not exist yet) when a directory above it could be changed by
/// anyone but root or the current user.
pub fn refuse_replaceable_directories_above(path: &Path, what: &str) -> Result<()> {
    for directory in directories_above(path) {
        let metadata = match fs::metadata(&directory) {
            Ok(metadata) => metadata,
            // Not created yet: whoever creates it is handoff, with mode 0700.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Failure::input(format!(
                    "cannot check {} above the {what} {}: {e}",
                    directory.display(),
                    path.display()
                ))
                .into())
            }
        };
        check_owner(&directory, &metadata, what, path)?;
        let mode = metadata.mode();
        if mode & GROUP_OR_OTHER_WRITE != 0 && mode & STICKY == 0 {
            return Err(Failure::input(format!(
                "the directory {} above the {what} {} is writable by group or others (mode \
                 {:04o}): anyone able to write there could replace it, and handoff runs as \
                 root; run `chmod go-w {}` or move the {what}",
                directory.display(),
                path.display(),
                mode & 0o7777,
                directory.display()
            ))
            .into());
        }
    }
    Ok(())
}

fn check_owner(checked: &Path, metadata: &fs::Metadata, what: &str, path: &Path) -> Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    if metadata.uid() == 0 || metadata.uid() == me {
        return Ok(());
    }
    let which = if checked == path {
        format!("{what} {}", path.display())
    } else {
        format!(
            "the directory {} above the {what} {}",
            checked.display(),
            path.display()
        )
    };
    Err(Failure::input(format!(
        "{which} is owned by uid {}, neither root nor the user running handoff",
        metadata.uid()
    ))
    .into())
}

/// Every directory above `path`: those of the path as given (made absolute) and those of the
/// path with its links resolved as far as it exists, each once.
fn directories_above(path: &Path) -> BTreeSet<PathBuf> {
    let absolute = match std::env::current_dir() {
        Ok(cwd) => cwd.join(path),
        Err(_) => path.to_path_buf(),
    };
    let lexical = normalize(&absolute);
    let mut directories: BTreeSet<PathBuf> =
        lexical.ancestors().skip(1).map(Path::to_path_buf).collect();
    // Resolve the longest existing prefix, then add the rest back.
    for existing in lexical.ancestors() {
        if let Ok(resolved) = fs::canonicalize(existing) {
            let rest = lexical.strip_prefix(existing).unwrap_or(Path::new(""));
            let full = resolved.join(rest);
            directories.extend(full.ancestors().skip(1).map(Path::to_path_buf));
            break;
        }
    }
    directories
}

/// `.` and `..` taken out lexically (the resolved path covers what links do).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn refusal(path: &Path, what: &str) -> String {
        let error = refuse_replaceable(path, what).expect_err("refused");
        assert!(
            crate::error::exit_code_of(&error) == crate::error::ExitCode::Input,
            "{error:#}"
        );
        format!("{error:#}")
    }

    #[test]
    fn a_file_in_private_directories_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("handoff.json");
        fs::write(&file, "{}").unwrap();
        chmod(&file, 0o644);
        refuse_replaceable(&file, "config").unwrap();
    }

    #[test]
    fn a_file_writable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("handoff.json");
        fs::write(&file, "{}").unwrap();
        chmod(&file, 0o664);
        let message = refusal(&file, "config");
        assert!(
            message.contains("writable by group or others (mode 0664)"),
            "{message}"
        );
    }

    #[test]
    fn a_file_in_a_directory_writable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        chmod(&shared, 0o777);
        let file = shared.join("handoff.json");
        fs::write(&file, "{}").unwrap();
        chmod(&file, 0o600);
        let message = refusal(&file, "config");
        assert!(
            message.contains(&format!("directory {}", shared.display())),
            "{message}"
        );
        assert!(message.contains("mode 0777"), "{message}");
        // Sticky, like /tmp: others cannot replace what they do not own.
        chmod(&shared, 0o1777);
        refuse_replaceable(&file, "config").unwrap();
    }

    #[test]
    fn a_directory_writable_by_others_further_up_is_refused_through_dots_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        let deep = open.join("deep");
        fs::create_dir_all(&deep).unwrap();
        chmod(&open, 0o757);
        let file = deep.join("handoff.json");
        fs::write(&file, "{}").unwrap();
        let message = refusal(&file, "config");
        assert!(
            message.contains(&format!("directory {}", open.display())),
            "{message}"
        );
        // Named through `..` and through a link from a private directory: the same refusal.
        let dotted = deep.join("..").join("deep").join("handoff.json");
        assert!(refusal(&dotted, "config").contains("mode 0757"));
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(refusal(&link, "config").contains("mode 0757"));
    }

    #[test]
    fn a_state_directory_writable_by_others_is_refused_even_when_sticky() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        fs::create_dir(&state).unwrap();
        chmod(&state, 0o1777);
        let message = refusal(&state, "state directory");
        assert!(message.contains("state directory"), "{message}");
        chmod(&state, 0o700);
        refuse_replaceable(&state, "state directory").unwrap();
    }

    #[test]
    fn directories_not_created_yet_are_skipped_but_those_above_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("a").join("b").join("state");
        refuse_replaceable_directories_above(&missing, "state directory").unwrap();
        chmod(dir.path(), 0o777);
        let error = refuse_replaceable_directories_above(&missing, "state directory");
        chmod(dir.path(), 0o700);
        assert!(format!("{:#}", error.unwrap_err()).contains("mode 0777"));
    }
}
