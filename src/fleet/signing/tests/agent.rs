//! Signing through ssh-agent, against a fake agent on a socket: an agent holding the key signs as
//! the key file would, and one without the key, one answering with a wrong signature and one
//! that never answers are each told apart.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ssh_key::{LineEnding, PrivateKey, PublicKey, SshSig};

use super::{ALICE, ALICE_FINGERPRINT, ALICE_PUB, ALICE_SIGNATURE, BOB_PUB, MESSAGE};
use crate::error::{exit_code_of, ExitCode};
use crate::fleet::signing::agent::{
    put_string, sign_with_agent, Wire, SSH_AGENTC_REQUEST_IDENTITIES, SSH_AGENTC_SIGN_REQUEST,
    SSH_AGENT_FAILURE, SSH_AGENT_IDENTITIES_ANSWER, SSH_AGENT_SIGN_RESPONSE,
};
use crate::fleet::signing::{HASH, NAMESPACE};

/// A fake ssh-agent on a socket in `dir`: it holds `held` (key blobs) and answers a sign
/// request with `signature`; it serves one connection.
fn fake_agent(
    dir: &Path,
    held: Vec<Vec<u8>>,
    signature: Vec<u8>,
    expected_data: Vec<u8>,
) -> (PathBuf, std::thread::JoinHandle<()>) {
    let socket = dir.join("agent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let serve = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        loop {
            let mut length = [0; 4];
            if stream.read_exact(&mut length).is_err() {
                return;
            }
            let mut request = vec![0; u32::from_be_bytes(length) as usize];
            stream.read_exact(&mut request).unwrap();
            let mut answer = Vec::new();
            match request[0] {
                SSH_AGENTC_REQUEST_IDENTITIES => {
                    answer.push(SSH_AGENT_IDENTITIES_ANSWER);
                    answer.extend((held.len() as u32).to_be_bytes());
                    for blob in &held {
                        put_string(&mut answer, blob);
                        put_string(&mut answer, b"a comment");
                    }
                }
                SSH_AGENTC_SIGN_REQUEST => {
                    let mut wire = Wire(&request[1..]);
                    let blob = wire.string().unwrap();
                    assert!(held.iter().any(|held| held == blob));
                    assert_eq!(wire.string().unwrap(), expected_data);
                    assert_eq!(wire.u32(), Some(0));
                    answer.push(SSH_AGENT_SIGN_RESPONSE);
                    put_string(&mut answer, &signature);
                }
                _ => answer.push(SSH_AGENT_FAILURE),
            }
            let mut framed = Vec::new();
            put_string(&mut framed, &answer);
            stream.write_all(&framed).unwrap();
        }
    });
    (socket, serve)
}

fn alice_public() -> PublicKey {
    PublicKey::from_openssh(ALICE_PUB).unwrap()
}

/// What an agent holding alice's key answers: the raw signature over the SSHSIG data.
fn alice_agent_signature() -> Vec<u8> {
    let private = PrivateKey::from_openssh(ALICE).unwrap();
    let made = SshSig::sign(&private, NAMESPACE, HASH, MESSAGE).unwrap();
    Vec::<u8>::try_from(made.signature().clone()).unwrap()
}

#[test]
fn an_agent_holding_the_key_signs_as_the_key_file_would() {
    let dir = tempfile::tempdir().unwrap();
    let public = alice_public();
    let expected_data = SshSig::signed_data(NAMESPACE, HASH, MESSAGE).unwrap();
    let held = vec![
        PublicKey::from_openssh(BOB_PUB)
            .unwrap()
            .to_bytes()
            .unwrap(),
        public.to_bytes().unwrap(),
    ];
    let (socket, serve) = fake_agent(dir.path(), held, alice_agent_signature(), expected_data);
    let key = dir.path().join("alice.pub");
    let signature =
        sign_with_agent(&socket, &key, &public, MESSAGE, Duration::from_secs(5)).unwrap();
    assert_eq!(signature.to_pem(LineEnding::LF).unwrap(), ALICE_SIGNATURE);
    serve.join().unwrap();
}

#[test]
fn an_agent_without_the_key_is_told_apart_and_the_fix_named() {
    let dir = tempfile::tempdir().unwrap();
    let bob = PublicKey::from_openssh(BOB_PUB)
        .unwrap()
        .to_bytes()
        .unwrap();
    let (socket, serve) = fake_agent(dir.path(), vec![bob], Vec::new(), Vec::new());
    let key = dir.path().join("alice.pub");
    let error = sign_with_agent(
        &socket,
        &key,
        &alice_public(),
        MESSAGE,
        Duration::from_secs(5),
    )
    .expect_err("refused");
    assert_eq!(exit_code_of(&error), ExitCode::Input);
    let message = format!("{error:#}");
    assert!(message.contains("does not hold the key of"), "{message}");
    assert!(message.contains(ALICE_FINGERPRINT), "{message}");
    assert!(
        message.contains(&format!("ssh-add {}", dir.path().join("alice").display())),
        "{message}"
    );
    serve.join().unwrap();
}

#[test]
fn an_agent_answering_with_a_wrong_signature_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let public = alice_public();
    let mut signature = alice_agent_signature();
    let last = signature.len() - 1;
    signature[last] ^= 1;
    let expected_data = SshSig::signed_data(NAMESPACE, HASH, MESSAGE).unwrap();
    let (socket, serve) = fake_agent(
        dir.path(),
        vec![public.to_bytes().unwrap()],
        signature,
        expected_data,
    );
    let error = sign_with_agent(
        &socket,
        Path::new("alice.pub"),
        &public,
        MESSAGE,
        Duration::from_secs(5),
    )
    .expect_err("refused");
    assert!(
        format!("{error:#}").contains("does not verify"),
        "{error:#}"
    );
    serve.join().unwrap();
}

#[test]
fn a_silent_agent_is_given_up_on_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    // Listening, accepting (the backlog does) and never answering.
    let _listener = UnixListener::bind(&socket).unwrap();
    let started = Instant::now();
    let error = sign_with_agent(
        &socket,
        Path::new("alice.pub"),
        &alice_public(),
        MESSAGE,
        Duration::from_millis(300),
    )
    .expect_err("refused");
    let waited = started.elapsed();
    assert!(
        format!("{error:#}").contains("did not answer within 0.3 s"),
        "{error:#}"
    );
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    let missing = dir.path().join("no-agent.sock");
    let error = sign_with_agent(
        &missing,
        Path::new("a.pub"),
        &alice_public(),
        MESSAGE,
        Duration::from_secs(1),
    )
    .expect_err("refused");
    assert!(
        format!("{error:#}").contains("cannot reach ssh-agent at"),
        "{error:#}"
    );
}
