//! What a host admits of its fleet's spec. etcd is input, not instruction: a record under
//! `spec/` is acted on only when it is an envelope for this fleet and the key it is stored
//! under, signed by a key in the host's signers file (when it has one), and newer than what
//! the host accepted before. Anything else is refused with a reason the agent reports, and
//! the host keeps acting on what it accepted last ([`super::accepted`]): a record deleted,
//! replaced by a forgery or rolled back to an old signed one changes nothing on the host.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Result;

use super::accepted::{Accepted, Admitted};
use super::sealed::{Envelope, Stored};
use super::signing::{self, Signers};

/// Where a host lists the keys whose signatures it accepts (OpenSSH `allowed_signers`).
pub const DEFAULT_SIGNERS: &str = "/etc/handoff/fleet-signers";

/// The signers a host requires, and the file they came from (named in refusals).
pub struct Required {
    pub signers: Signers,
    pub file: PathBuf,
}

/// The verdict on one key's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// What to act on: the record admitted now, or the one accepted before.
    pub record: Option<Envelope>,
    /// The record in etcd is the one acted on (an agent takes part in a rollout only then:
    /// its turn is guarded by that record's revision).
    pub current: bool,
    /// Who signed what is acted on.
    pub signer: Option<String>,
    /// Why the record in etcd was not admitted.
    pub refused: Option<String>,
}

/// Judge `stored` (what etcd holds at `key`) against `before` (what this host accepted
/// there), for `fleet`: the verdict, and the record to remember when it is newly admitted.
pub fn judge(
    fleet: &str,
    key: &str,
    stored: Option<&Stored>,
    required: Option<&Required>,
    before: Option<&Admitted>,
    valid: &dyn Fn(&Envelope) -> std::result::Result<(), String>,
    now: SystemTime,
) -> (Verdict, Option<Admitted>) {
    let kept = |refused: Option<String>| Verdict {
        record: before.and_then(Admitted::envelope),
        current: false,
        signer: before.and_then(|b| b.signer.clone()),
        refused,
    };
    let Some(stored) = stored else {
        return (kept(None), None);
    };
    let envelope = match Envelope::decode(&stored.bytes) {
        Ok(envelope) => envelope,
        Err(why) => return (kept(Some(format!("malformed spec at {key}: {why}"))), None),
    };
    if envelope.fleet != fleet || envelope.key != key {
        let why = format!(
            "misplaced spec: the record at {key} was written for fleet {} at {}",
            envelope.fleet, envelope.key
        );
        return (kept(Some(why)), None);
    }
    let signer = match required {
        None => None,
        Some(required) => {
            let Some(signature) = &stored.signature else {
                return (kept(Some(format!("unsigned spec at {key}"))), None);
            };
            match signing::verify(&required.signers, &stored.bytes, signature, now) {
                Ok(signer) => Some(signer.principal),
                Err(why) => return (kept(Some(format!("{why} (at {key})"))), None),
            }
        }
    };
    let record = String::from_utf8_lossy(&stored.bytes).into_owned();
    match before {
        Some(before) if envelope.sequence < before.sequence => {
            let why = format!(
                "replayed spec at {key}: sequence {} is older than {} accepted here",
                envelope.sequence, before.sequence
            );
            (kept(Some(why)), None)
        }
        Some(before) if envelope.sequence == before.sequence => {
            if before.record == record {
                let verdict = Verdict {
                    current: true,
                    ..kept(None)
                };
                (verdict, None)
            } else {
                let why = format!(
                    "conflicting spec at {key}: sequence {} was accepted here for another record",
                    envelope.sequence
                );
                (kept(Some(why)), None)
            }
        }
        _ => {
            if let Err(why) = valid(&envelope) {
                return (kept(Some(format!("invalid spec at {key}: {why}"))), None);
            }
            let admitted = Admitted {
                sequence: envelope.sequence,
                record,
                signer: signer.clone(),
            };
            let verdict = Verdict {
                record: Some(envelope),
                current: true,
                signer,
                refused: None,
            };
            (verdict, Some(admitted))
        }
    }
}

/// A host's admission: its signers (if it requires signatures) and what it accepted.
pub struct Admission {
    fleet: String,
    required: Option<Required>,
    accepted: Accepted,
}

impl Admission {
    pub fn new(fleet: &str, required: Option<Required>, accepted: Accepted) -> Admission {
        Admission {
            fleet: fleet.to_string(),
            required,
            accepted,
        }
    }

    pub fn signers_file(&self) -> Option<&Path> {
        self.required.as_ref().map(|r| r.file.as_path())
    }

    /// The keys under `prefix` this host accepted a record at.
    pub fn accepted_under(&self, prefix: &str) -> Vec<String> {
        self.accepted.keys_under(prefix)
    }

    /// The verdict on `stored` at `key`, whose body must pass `valid` to be admitted; a newly
    /// admitted record is on disk before this returns (an error only when it could not be
    /// written: then nothing is acted on).
    pub fn admit(
        &mut self,
        key: &str,
        stored: Option<&Stored>,
        valid: &dyn Fn(&Envelope) -> std::result::Result<(), String>,
    ) -> Result<Verdict> {
        let (verdict, admitted) = judge(
            &self.fleet,
            key,
            stored,
            self.required.as_ref(),
            self.accepted.get(key),
            valid,
            SystemTime::now(),
        );
        if let Some(admitted) = admitted {
            self.accepted.keep(key, admitted)?;
        }
        Ok(verdict)
    }
}

/// Who signed `stored`, for an operator: checked against `required` when given, else the
/// signature's key, unchecked.
pub fn describe(stored: &Stored, required: Option<&Required>) -> String {
    let Some(signature) = &stored.signature else {
        return "unsigned".to_string();
    };
    match required {
        Some(required) => {
            match signing::verify(
                &required.signers,
                &stored.bytes,
                signature,
                SystemTime::now(),
            ) {
                Ok(signer) => format!("signed by {} ({})", signer.principal, signer.fingerprint),
                Err(why) => format!("signature refused: {why}"),
            }
        }
        None => match signing::fingerprint_of(signature) {
            Ok(fingerprint) => {
                format!("signed by key {fingerprint} (not checked: no signers file)")
            }
            Err(error) => format!("malformed signature: {error:#}"),
        },
    }
}
