//! SSHSIG interop with OpenSSH itself: what `ssh-keygen -Y sign -n handoff-fleet` makes, handoff
//! verifies; what handoff signs, from a key file or through a real ssh-agent, `ssh-keygen -Y
//! verify` accepts; a tampered message, signature or namespace fails both ways. Each test makes
//! its own keys in a temporary directory; the agent is killed on drop, also when a test fails.
//! Needs ssh-keygen, ssh-agent and ssh-add (openssh-client).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use handoff::fleet::signing::{self, Signer, Signers, NAMESPACE};

const PRINCIPAL: &str = "operator@example.com";
const MESSAGE: &[u8] = b"{\"component\":\"web\",\"tag\":\"v2\"}\n";

/// An operator's key pair (made by ssh-keygen) and the signers file listing it.
struct Operator {
    dir: tempfile::TempDir,
    key: PathBuf,
    public: PathBuf,
    signers: PathBuf,
    fingerprint: String,
}

fn operator() -> Operator {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("operator");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "operator key", "-f"])
        .arg(&key));
    let public = dir.path().join("operator.pub");
    let public_line = fs::read_to_string(&public).unwrap();
    // Options both sides must read alike: a namespace list and a UTC time.
    let signers = dir.path().join("allowed_signers");
    fs::write(
        &signers,
        format!(
            "# who may sign fleet records\n{PRINCIPAL} \
             namespaces=\"git,{NAMESPACE}\",valid-after=\"20200101Z\" {public_line}"
        ),
    )
    .unwrap();
    let listed = run(Command::new("ssh-keygen").arg("-lf").arg(&public));
    let fingerprint = String::from_utf8(listed.stdout).unwrap();
    let fingerprint = fingerprint.split_whitespace().nth(1).unwrap().to_string();
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
    Operator {
        dir,
        key,
        public,
        signers,
        fingerprint,
    }
}

impl Operator {
    /// `ssh-keygen -Y sign -n namespace -f key` over `message`: the armored signature.
    fn ssh_keygen_sign(&self, message: &[u8], namespace: &str) -> String {
        let file = self.dir.path().join("message");
        fs::write(&file, message).unwrap();
        run(Command::new("ssh-keygen")
            .args(["-Y", "sign", "-n", namespace, "-f"])
            .arg(&self.key)
            .arg(&file));
        let signature_file = self.dir.path().join("message.sig");
        let signature = fs::read_to_string(&signature_file).unwrap();
        fs::remove_file(&signature_file).unwrap();
        signature
    }

    /// `ssh-keygen -Y verify -f allowed_signers -I principal -n namespace -s sig < message`.
    fn ssh_keygen_verify(&self, signature: &str, message: &[u8], namespace: &str) -> Output {
        let signature_file = self.dir.path().join("handoff.sig");
        fs::write(&signature_file, signature).unwrap();
        let mut verify = Command::new("ssh-keygen")
            .args(["-Y", "verify", "-f"])
            .arg(&self.signers)
            .args(["-I", PRINCIPAL, "-n", namespace, "-s"])
            .arg(&signature_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ssh-keygen (openssh-client) runs");
        use std::io::Write;
        verify.stdin.take().unwrap().write_all(message).unwrap();
        verify.wait_with_output().unwrap()
    }

    fn handoff_verify(&self, signature: &str, message: &[u8]) -> Result<Signer, String> {
        let signers = Signers::load(&self.signers).unwrap();
        signing::verify(&signers, message, signature, SystemTime::now())
    }
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?} (openssh-client): {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn assert_ssh_keygen_accepts(output: &Output) {
    assert!(
        output.status.success(),
        "ssh-keygen -Y verify refused: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(
        said.contains(&format!("Good \"{NAMESPACE}\" signature for {PRINCIPAL}")),
        "{said}"
    );
}

/// The last base64 line of an armored signature holds the end of the signature bytes: change one
/// character there.
fn tampered(armored: &str) -> String {
    let mut lines: Vec<String> = armored.lines().map(str::to_string).collect();
    let last = lines.len() - 2;
    let line = &mut lines[last];
    let at = line.len() / 2;
    let replacement = if &line[at..=at] == "A" { "B" } else { "A" };
    line.replace_range(at..=at, replacement);
    lines.join("\n") + "\n"
}

#[test]
#[ignore = "needs ssh-keygen: run by sudo scripts/test.sh"]
fn a_signature_by_ssh_keygen_verifies_with_handoff() {
    let operator = operator();
    let signature = operator.ssh_keygen_sign(MESSAGE, NAMESPACE);
    assert_eq!(
        operator.handoff_verify(&signature, MESSAGE),
        Ok(Signer {
            principal: PRINCIPAL.to_string(),
            fingerprint: operator.fingerprint.clone(),
        })
    );
    assert_eq!(
        signing::fingerprint_of(&signature).unwrap(),
        operator.fingerprint
    );
}

#[test]
#[ignore = "needs ssh-keygen: run by sudo scripts/test.sh"]
fn a_signature_by_handoff_verifies_with_ssh_keygen_and_is_the_same_text() {
    let operator = operator();
    let signature = signing::sign(&operator.key, MESSAGE).unwrap();
    assert_ssh_keygen_accepts(&operator.ssh_keygen_verify(&signature, MESSAGE, NAMESPACE));
    // ed25519 is deterministic: the same key and message give ssh-keygen's very bytes.
    assert_eq!(signature, operator.ssh_keygen_sign(MESSAGE, NAMESPACE));
}

#[test]
#[ignore = "needs ssh-keygen: run by sudo scripts/test.sh"]
fn a_tampered_message_signature_or_namespace_fails_both_ways() {
    let operator = operator();
    let other_message = b"{\"component\":\"web\",\"tag\":\"v3\"}\n";

    // Made by ssh-keygen, checked by handoff.
    let by_ssh_keygen = operator.ssh_keygen_sign(MESSAGE, NAMESPACE);
    assert_eq!(
        operator.handoff_verify(&by_ssh_keygen, other_message),
        Err(format!(
            "bad signature by {} ({PRINCIPAL})",
            operator.fingerprint
        ))
    );
    let reason = operator
        .handoff_verify(&tampered(&by_ssh_keygen), MESSAGE)
        .unwrap_err();
    assert!(
        reason.starts_with("bad signature by") || reason.starts_with("malformed signature"),
        "{reason}"
    );
    let for_git = operator.ssh_keygen_sign(MESSAGE, "git");
    assert_eq!(
        operator.handoff_verify(&for_git, MESSAGE),
        Err(format!(
            "signature for namespace \"git\", not \"{NAMESPACE}\""
        ))
    );

    // Made by handoff, checked by ssh-keygen.
    let by_handoff = signing::sign(&operator.key, MESSAGE).unwrap();
    assert_ssh_keygen_accepts(&operator.ssh_keygen_verify(&by_handoff, MESSAGE, NAMESPACE));
    for (signature, message, namespace) in [
        (by_handoff.clone(), &other_message[..], NAMESPACE),
        (tampered(&by_handoff), MESSAGE, NAMESPACE),
        (by_handoff.clone(), MESSAGE, "git"),
    ] {
        let output = operator.ssh_keygen_verify(&signature, message, namespace);
        assert!(
            !output.status.success(),
            "ssh-keygen accepted a tampered signature (namespace {namespace})"
        );
    }
}

/// A real ssh-agent on a socket of the test's own, killed on drop.
struct Agent {
    child: Child,
    socket: PathBuf,
}

impl Agent {
    fn start(dir: &Path) -> Agent {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ssh-agent (openssh-client) runs");
        // The guard exists before the wait, so a failed wait still kills the agent.
        let agent = Agent { child, socket };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !agent.socket.exists() {
            assert!(
                Instant::now() < deadline,
                "ssh-agent did not make its socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    fn ssh_add(&self, args: &[&std::ffi::OsStr]) {
        run(Command::new("ssh-add")
            .args(args)
            .env("SSH_AUTH_SOCK", &self.socket));
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs ssh-keygen: run by sudo scripts/test.sh"]
fn signing_with_a_public_key_goes_through_ssh_agent() {
    let operator = operator();
    let agent = Agent::start(operator.dir.path());
    agent.ssh_add(&[operator.key.as_os_str()]);
    // `sign` reads the socket from the environment, as an operator's shell gives it. Only this
    // test sets it, and std serializes its own environment reads (Command spawns included).
    std::env::set_var("SSH_AUTH_SOCK", &agent.socket);

    let through_agent = signing::sign(&operator.public, MESSAGE).unwrap();
    assert_ssh_keygen_accepts(&operator.ssh_keygen_verify(&through_agent, MESSAGE, NAMESPACE));
    assert_eq!(
        operator
            .handoff_verify(&through_agent, MESSAGE)
            .unwrap()
            .fingerprint,
        operator.fingerprint
    );
    assert_eq!(
        through_agent,
        signing::sign(&operator.key, MESSAGE).unwrap()
    );

    // The agent no longer holds the key: named, with the fix.
    agent.ssh_add(&["-D".as_ref()]);
    let error = signing::sign(&operator.public, MESSAGE).unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("does not hold the key"), "{message}");
    assert!(message.contains(&operator.fingerprint), "{message}");
    assert!(
        message.contains(&format!("ssh-add {}", operator.key.display())),
        "{message}"
    );

    // No agent at all.
    drop(agent);
    let error = signing::sign(&operator.public, MESSAGE).unwrap_err();
    assert!(
        format!("{error:#}").contains("cannot reach ssh-agent"),
        "{error:#}"
    );
}
