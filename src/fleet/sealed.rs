//! Spec records sealed for a place and a moment: every record an operator writes under
//! `spec/` (the config, a rollout, a stop) is stored as an [`Envelope`] naming the fleet, the
//! key it is stored under and a sequence number, followed by the record itself, and signed
//! (SSHSIG, namespace `handoff-fleet`) over exactly those bytes, the signature kept beside it
//! (`spec/signatures/...`). So a signature cannot be moved: not to another fleet, not to
//! another key, and — since an agent keeps the highest sequence it accepted for each key —
//! not back in time. The bytes signed are the bytes stored, so `etcdctl get
//! --print-value-only` piped to `ssh-keygen -Y verify` checks a record with stock tools.
//!
//! ```text
//! handoff-fleet-record 1
//! fleet prod
//! key /handoff/fleets/prod/spec/config
//! sequence 1764870000123
//!
//! {"components": [...]}
//! ```

use std::path::Path;

use anyhow::{Context, Result};

use super::records::now_ms;
use super::signing;
use super::store::Op;
use super::Keys;

/// The first line of every envelope: the format and its version.
const MAGIC: &str = "handoff-fleet-record 1";

/// A spec record and where it belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub fleet: String,
    pub key: String,
    /// Grows with every record written at `key`: at least the previous one's plus one, and
    /// at least the time of writing in ms, so that a key wiped and written again still goes
    /// up.
    pub sequence: u64,
    /// The record: the config's text, or a JSON record.
    pub body: String,
}

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "{MAGIC}\nfleet {}\nkey {}\nsequence {}\n\n{}",
            self.fleet, self.key, self.sequence, self.body
        )
        .into_bytes()
    }

    /// Read stored bytes; the reason when they are not an envelope.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Envelope, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
        let (header, body) = text
            .split_once("\n\n")
            .ok_or("no blank line after the header")?;
        let mut lines = header.lines();
        if lines.next() != Some(MAGIC) {
            return Err(format!(
                "not a spec record (the first line is not {MAGIC:?})"
            ));
        }
        let mut field = |name: &str| -> std::result::Result<String, String> {
            lines
                .next()
                .and_then(|line| line.strip_prefix(name))
                .and_then(|rest| rest.strip_prefix(' '))
                .map(str::to_string)
                .ok_or_else(|| format!("no {name:?} line where the header needs it"))
        };
        let fleet = field("fleet")?;
        let key = field("key")?;
        let sequence = field("sequence")?;
        let sequence = sequence
            .parse()
            .map_err(|_| format!("sequence {sequence:?} is not a number"))?;
        if lines.next().is_some() {
            return Err("the header has more lines than fleet, key and sequence".into());
        }
        Ok(Envelope {
            fleet,
            key,
            sequence,
            body: body.to_string(),
        })
    }
}

/// A spec record as stored: its bytes, the signature beside it, the revision of its write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub bytes: Vec<u8>,
    pub signature: Option<String>,
    pub mod_revision: i64,
}

impl Stored {
    /// The envelope, whatever its signature: for an operator's view and for the next
    /// sequence number.
    pub fn envelope(&self) -> Option<Envelope> {
        Envelope::decode(&self.bytes).ok()
    }
}

/// The next sequence number at a key whose record is `previous`.
pub fn next_sequence(previous: Option<&Stored>) -> u64 {
    let after = previous
        .and_then(Stored::envelope)
        .map_or(0, |e| e.sequence.saturating_add(1));
    after.max(now_ms())
}

/// The writes that store `body` at `key` (a key under `spec/`) after `previous`, signed with
/// `sign` (an OpenSSH private key file, or a public one whose key ssh-agent holds) or not: the
/// envelope, and its signature or the removal of a stale one. One transaction must carry
/// them, so a record and its signature are never seen apart.
pub fn seal(
    keys: &Keys,
    key: &str,
    body: String,
    previous: Option<&Stored>,
    sign: Option<&Path>,
) -> Result<(Envelope, Vec<Op>)> {
    let envelope = Envelope {
        fleet: keys.fleet().to_string(),
        key: key.to_string(),
        sequence: next_sequence(previous),
        body,
    };
    let bytes = envelope.encode();
    let signature_key = keys.signature(key);
    let signature = match sign {
        Some(path) => Op::put(
            signature_key,
            signing::sign(path, &bytes)
                .with_context(|| format!("signing {key} with {}", path.display()))?,
        ),
        None => Op::delete(signature_key),
    };
    Ok((envelope, vec![Op::put(key, bytes), signature]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            fleet: "prod".into(),
            key: "/handoff/fleets/prod/spec/config".into(),
            sequence: 7,
            body: "{\"components\": []}\n\n{trailing}".into(),
        }
    }

    #[test]
    fn an_envelope_survives_its_encoding_and_keeps_its_body_byte_for_byte() {
        let bytes = envelope().encode();
        assert!(bytes.starts_with(b"handoff-fleet-record 1\nfleet prod\n"));
        assert_eq!(Envelope::decode(&bytes).unwrap(), envelope());
    }

    #[test]
    fn bytes_that_are_not_an_envelope_say_why() {
        for (bytes, why) in [
            (&b"{\"components\": []}"[..], "no blank line"),
            (b"hello\n\nbody", "not a spec record"),
            (b"handoff-fleet-record 1\nfleet p\n\nx", "\"key\""),
            (
                b"handoff-fleet-record 1\nfleet p\nkey k\nsequence -1\n\nx",
                "not a number",
            ),
            (
                b"handoff-fleet-record 1\nfleet p\nkey k\nsequence 1\nextra\n\nx",
                "more lines",
            ),
            (b"\xff\xfe", "UTF-8"),
        ] {
            let reason = Envelope::decode(bytes).unwrap_err();
            assert!(reason.contains(why), "{reason}");
        }
    }

    #[test]
    fn the_sequence_grows_past_the_previous_record_and_the_clock() {
        let keys = Keys::new("prod").unwrap();
        let ahead = Envelope {
            sequence: u64::MAX - 1,
            ..envelope()
        };
        let previous = Stored {
            bytes: ahead.encode(),
            signature: None,
            mod_revision: 3,
        };
        assert_eq!(next_sequence(Some(&previous)), u64::MAX);
        let fresh = next_sequence(None);
        assert!(fresh >= now_ms() - 1000);
        let (sealed, ops) = seal(&keys, &keys.config(), "{}".into(), None, None).unwrap();
        assert_eq!(sealed.key, keys.config());
        assert_eq!(
            ops,
            vec![
                Op::put(keys.config(), sealed.encode()),
                Op::delete(keys.signature(&keys.config()))
            ]
        );
    }
}
