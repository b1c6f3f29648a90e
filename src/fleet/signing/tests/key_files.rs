//! `sign` with a key file: the very bytes `ssh-keygen -Y sign` makes, and each key file refused
//! with what to do instead.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{write_key, ALICE, ALICE_SIGNATURE, CAROL_ENCRYPTED, DAVE_ECDSA, DAVE_PUB, MESSAGE};
use crate::error::{exit_code_of, ExitCode};
use crate::fleet::signing::sign;

fn sign_refusal(key: &Path) -> String {
    let error = sign(key, MESSAGE).expect_err("refused");
    assert_eq!(exit_code_of(&error), ExitCode::Input, "{error:#}");
    format!("{error:#}")
}

#[test]
fn sign_makes_the_very_bytes_ssh_keygen_makes() {
    let dir = tempfile::tempdir().unwrap();
    let key = write_key(dir.path(), "alice", ALICE, 0o600);
    // ed25519 is deterministic: same key, namespace, hash and message, same signature.
    assert_eq!(sign(&key, MESSAGE).unwrap(), ALICE_SIGNATURE);
}

#[test]
fn a_private_key_others_can_read_is_refused_with_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    let key = write_key(dir.path(), "alice", ALICE, 0o640);
    let message = sign_refusal(&key);
    assert!(message.contains(&key.display().to_string()), "{message}");
    assert!(message.contains("mode 0640"), "{message}");
    assert!(message.contains("chmod 600"), "{message}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o604)).unwrap();
    assert!(sign_refusal(&key).contains("mode 0604"));
}

#[test]
fn an_encrypted_key_is_refused_with_the_way_through_ssh_agent() {
    let dir = tempfile::tempdir().unwrap();
    let key = write_key(dir.path(), "carol", CAROL_ENCRYPTED, 0o600);
    let message = sign_refusal(&key);
    assert!(message.contains("is encrypted"), "{message}");
    assert!(
        message.contains(&format!("ssh-add {}", key.display())),
        "{message}"
    );
    assert!(
        message.contains(&format!("{}.pub", key.display())),
        "{message}"
    );
}

#[test]
fn keys_other_than_ed25519_and_files_that_are_not_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dave = write_key(dir.path(), "dave", DAVE_ECDSA, 0o600);
    let message = sign_refusal(&dave);
    assert!(
        message.contains("is a ecdsa-sha2-nistp256 key; handoff signs with ed25519 keys only"),
        "{message}"
    );
    let dave_pub = write_key(dir.path(), "dave.pub", DAVE_PUB, 0o644);
    assert!(sign_refusal(&dave_pub).contains("ed25519 keys only"));
    let notes = write_key(dir.path(), "notes.txt", "hello\n", 0o600);
    let message = sign_refusal(&notes);
    assert!(
        message.contains(&format!(
            "{} is neither an OpenSSH private key",
            notes.display()
        )),
        "{message}"
    );
    let pem = write_key(
        dir.path(),
        "rsa.pem",
        "-----BEGIN RSA PRIVATE KEY-----\nMII=\n-----END RSA PRIVATE KEY-----\n",
        0o600,
    );
    assert!(sign_refusal(&pem).contains("not in OpenSSH's format"));
    let binary = dir.path().join("binary");
    std::fs::write(&binary, [0xff, 0xfe, 0]).unwrap();
    assert!(sign_refusal(&binary).contains("is not text"));
    assert!(sign_refusal(&dir.path().join("missing")).contains("cannot read key"));
}
