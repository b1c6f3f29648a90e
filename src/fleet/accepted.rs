//! What an agent has accepted of its fleet's spec, kept on the host
//! (`{state dir}/fleet-{fleet}-accepted.json`): per key, the last record it admitted. An
//! agent acts on these, not on whatever etcd holds now, so a record deleted from etcd, or put
//! back from an older backup, changes nothing here; and the sequence number it holds is the
//! one a newer record must pass. Replaced atomically (temp file, fsync, rename), 0600.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::sealed::Envelope;
use crate::trust;

/// One admitted record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admitted {
    pub sequence: u64,
    /// The envelope's bytes, as stored in etcd (UTF-8: an envelope is text).
    pub record: String,
    /// Who signed it (the signers file's principals), when signatures were required.
    pub signer: Option<String>,
}

impl Admitted {
    pub fn envelope(&self) -> Option<Envelope> {
        Envelope::decode(self.record.as_bytes()).ok()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File1 {
    version: u32,
    records: BTreeMap<String, Admitted>,
}

const VERSION: u32 = 1;

pub struct Accepted {
    path: PathBuf,
    records: BTreeMap<String, Admitted>,
}

impl Accepted {
    /// The records `fleet`'s agent accepted on this host, kept in `directory` (the state
    /// directory, which must not be replaceable by anyone but root).
    pub fn open(directory: &Path, fleet: &str) -> Result<Accepted> {
        if directory.exists() {
            trust::refuse_replaceable(directory, "state directory")?;
        } else {
            trust::refuse_replaceable_directories_above(directory, "state directory")?;
        }
        let path = directory.join(format!("fleet-{fleet}-accepted.json"));
        let records = match fs::read_to_string(&path) {
            Ok(text) => {
                let file: File1 = serde_json::from_str(&text).with_context(|| {
                    format!(
                        "{} is corrupt (left as it is: it holds the highest spec records this \
                         host accepted; move it aside only if you trust every record in etcd)",
                        path.display()
                    )
                })?;
                if file.version != VERSION {
                    anyhow::bail!(
                        "{} has version {}, this handoff understands {VERSION}",
                        path.display(),
                        file.version
                    );
                }
                file.records
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Accepted { path, records })
    }

    pub fn keys_under(&self, prefix: &str) -> Vec<String> {
        self.records
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    pub fn get(&self, key: &str) -> Option<&Admitted> {
        self.records.get(key)
    }

    /// Remember `admitted` for `key`, on disk before it is acted on.
    pub fn keep(&mut self, key: &str, admitted: Admitted) -> Result<()> {
        let mut records = self.records.clone();
        records.insert(key.to_string(), admitted);
        self.save(&records)?;
        self.records = records;
        Ok(())
    }

    fn save(&self, records: &BTreeMap<String, Admitted>) -> Result<()> {
        let directory = self.path.parent().unwrap_or(Path::new("."));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(directory)
            .with_context(|| format!("creating {}", directory.display()))?;
        let temp = self
            .path
            .with_extension(format!("{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut out = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)?;
            let file = File1 {
                version: VERSION,
                records: records.clone(),
            };
            let mut text = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
            text.push(b'\n');
            out.write_all(&text)?;
            out.sync_all()?;
            fs::rename(&temp, &self.path)?;
            File::open(directory)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&temp);
            anyhow::Error::new(e).context(format!(
                "writing {} (what was accepted before is unchanged)",
                self.path.display()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_accepted_survives_a_restart_and_a_corrupt_file_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut accepted = Accepted::open(&state, "prod").unwrap();
        assert!(accepted.get("k").is_none());
        let admitted = Admitted {
            sequence: 3,
            record: "r".into(),
            signer: Some("alice".into()),
        };
        accepted.keep("k", admitted.clone()).unwrap();
        assert_eq!(
            Accepted::open(&state, "prod").unwrap().get("k"),
            Some(&admitted)
        );
        assert!(Accepted::open(&state, "other").unwrap().get("k").is_none());
        let file = state.join("fleet-prod-accepted.json");
        fs::write(&file, "{").unwrap();
        let error = Accepted::open(&state, "prod").err().expect("corrupt");
        assert!(format!("{error:#}").contains("corrupt"), "{error:#}");
        assert_eq!(fs::read_to_string(&file).unwrap(), "{");
    }
}
