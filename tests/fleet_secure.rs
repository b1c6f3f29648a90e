//! A fleet set up the way the README tells an operator to: etcd with TLS and client
//! certificates, `auth enable`d; the host's etcd user made by `grant-host`, the operator's by
//! `grant-operator`; specs signed by the operator's SSH key; a signers file and a policy on the
//! host. One Docker host (a Docker sandbox) and etcd in its client namespace; everything is
//! torn down on drop, also when the test fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::docker::{ComponentOptions, DockerSandbox};
use common::etcd::{EtcdSandbox, Pair, Pki, ServerTls};

/// A process killed when the test ends, also when it fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(path: &Path) -> &str {
    path.to_str().expect("path")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The secured fleet: etcd, the host's and the operator's credentials, the operator's SSH key
/// and the host's trust files.
struct Secured {
    docker: DockerSandbox,
    etcd: EtcdSandbox,
    ca: PathBuf,
    root: Pair,
    host: Pair,
    operator: Pair,
    /// The operator's SSH signing key (and `.pub`).
    ssh_key: PathBuf,
    signers: PathBuf,
    policy: PathBuf,
    agent_log: PathBuf,
}

impl Secured {
    fn new() -> Secured {
        let docker = DockerSandbox::new(ComponentOptions::default());
        let mut etcd = EtcdSandbox::in_namespace(&docker.client, &docker.client_address(), false);
        let pki = Pki::new(etcd.dir.path());
        let ca = pki.ca("ca");
        let server = pki.server(&ca, "etcd", &etcd.address);
        etcd.tls = Some(ServerTls {
            cert: server.cert.clone(),
            key: server.key.clone(),
            ca: ca.cert.clone(),
            client_cert_auth: true,
        });
        let root = pki.client(&ca, "root", "root");
        etcd.client_args = vec!["--cacert".into(), text(&ca.cert).into()];
        etcd.client_args.extend(root.args());
        etcd.start_etcd();
        let as_root = root.args();
        let as_root: Vec<&str> = as_root.iter().map(String::as_str).collect();
        etcd.etcdctl_ok(&as_root, &["user", "add", "root", "--no-password"]);
        etcd.etcdctl_ok(&as_root, &["user", "grant-role", "root", "root"]);
        etcd.etcdctl_ok(&as_root, &["auth", "enable"]);
        let host = pki.client(&ca, "h1", "handoff-default-h1");
        let operator = pki.client(&ca, "ci", "handoff-default-op-ci");

        let dir = etcd.dir.path().to_path_buf();
        let ssh_key = dir.join("operator-ssh");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "ci@test", "-f"])
            .arg(&ssh_key)
            .status()
            .expect("ssh-keygen (apt-get install openssh-client)");
        assert!(made.success());
        let public = std::fs::read_to_string(ssh_key.with_extension("pub")).expect("pub");
        let signers = dir.join("fleet-signers");
        std::fs::write(&signers, format!("ci@test {public}")).expect("signers");
        // What this host may run: the sandbox's image, its port, its signal directory.
        let policy = dir.join("policy.json");
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(docker.config_path()).expect("config"))
                .expect("json");
        let web = &config["components"][0];
        let signals = web["bindings"][0]["external"]
            .as_str()
            .expect("binding")
            .trim_end_matches("/{container_id}");
        std::fs::write(
            &policy,
            serde_json::json!({
                "images": [web["repo"]],
                "ports": [web["ports"][0]["external"]],
                "bindings": [signals],
            })
            .to_string(),
        )
        .expect("policy");
        let agent_log = dir.join("agent.log");
        Secured {
            docker,
            etcd,
            ca: ca.cert,
            root,
            host,
            operator,
            ssh_key,
            signers,
            policy,
            agent_log,
        }
    }

    /// `handoff fleet` with `who`'s certificate.
    fn fleet_as(&self, who: &Pair, args: &[&str]) -> Output {
        let endpoint = self.etcd.endpoint();
        self.etcd
            .exec(common::HANDOFF, &["fleet", "--etcd", &endpoint])
            .args(["--cacert", text(&self.ca)])
            .args(who.args())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("handoff fleet")
    }

    /// `handoff fleet` as the operator, signing what it writes.
    fn operate(&self, args: &[&str]) -> Output {
        let mut args = args.to_vec();
        args.extend(["--sign", text(&self.ssh_key)]);
        self.fleet_as(&self.operator, &args)
    }

    fn operate_ok(&self, args: &[&str]) -> String {
        let output = self.operate(args);
        assert!(
            output.status.success(),
            "fleet {args:?}: {}\nagent: {}",
            stderr(&output),
            self.log()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.agent_log).unwrap_or_default()
    }

    /// The host's agent, with its own certificate, signers file and policy.
    fn spawn_agent(&self) -> KillOnDrop {
        let file = std::fs::File::create(&self.agent_log).expect("log");
        let endpoint = self.etcd.endpoint();
        let mut args = vec!["fleet", "--etcd", &endpoint, "--cacert", text(&self.ca)];
        let host = self.host.args();
        args.extend(host.iter().map(String::as_str));
        args.extend([
            "agent",
            "--host",
            "h1",
            "--signers",
            text(&self.signers),
            "--policy",
            text(&self.policy),
            "--health-interval",
            "1",
        ]);
        KillOnDrop(
            self.docker
                .handoff_command(&args)
                .stdout(file.try_clone().expect("log"))
                .stderr(file)
                .spawn()
                .expect("agent"),
        )
    }

    /// `fleet list --json`, as the operator.
    fn listed(&self) -> serde_json::Value {
        let output = self.fleet_as(&self.operator, &["list", "--json"]);
        assert!(output.status.success(), "{}", stderr(&output));
        serde_json::from_slice(&output.stdout).expect("json")
    }

    /// Wait until `check` holds of `fleet list --json`.
    fn wait_listed(&self, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
        let started = Instant::now();
        while !check(&self.listed()) {
            assert!(
                started.elapsed() < Duration::from_secs(40),
                "{what}: {}\nagent: {}",
                self.listed(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `etcdctl put KEY VALUE` with `who`'s certificate: whether etcd took it.
    fn put(&self, who: &Pair, key: &str, value: &str) -> Result<(), String> {
        let credentials = who.args();
        let credentials: Vec<&str> = credentials.iter().map(String::as_str).collect();
        let output = self.etcd.etcdctl(&credentials, &["put", "--", key, value]);
        match output.status.success() {
            true => Ok(()),
            false => Err(stderr(&output)),
        }
    }

    fn get(&self, key: &str) -> Vec<u8> {
        let credentials = self.root.args();
        let credentials: Vec<&str> = credentials.iter().map(String::as_str).collect();
        let output = self
            .etcd
            .etcdctl(&credentials, &["get", "--print-value-only", key]);
        assert!(output.status.success(), "{}", stderr(&output));
        // etcdctl ends the value with a newline of its own.
        let mut value = output.stdout;
        value.pop();
        value
    }
}

fn web(listed: &serde_json::Value) -> serde_json::Value {
    listed["hosts"][0]["components"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "web"))
        .cloned()
        .unwrap_or_default()
}

fn refused(listed: &serde_json::Value, key: &str) -> String {
    listed["hosts"][0]["refused"][key]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
#[ignore = "needs root, etcd, Docker and ssh-keygen: run by sudo scripts/test.sh"]
fn a_secured_fleet_runs_only_what_its_operator_signed_and_its_host_allows() {
    let fleet = Secured::new();
    let keys = handoff::fleet::Keys::new("default").unwrap();
    for granted in [
        fleet.fleet_as(&fleet.root, &["grant-host", "h1"]),
        fleet.fleet_as(&fleet.root, &["grant-operator", "ci"]),
    ] {
        assert!(granted.status.success(), "{}", stderr(&granted));
    }
    let config = fleet.docker.config_path();
    fleet.operate_ok(&["setconfig", text(&config)]);
    let _agent = fleet.spawn_agent();
    fleet.wait_listed("web ready", |l| web(l)["state"] == "ready");
    common::assert_served_by(&fleet.docker.load(2, 1000, &[]), "v1");
    let log = fleet.log();
    assert!(
        log.contains(&format!("accepting: signed by {}", text(&fleet.signers))),
        "{log}"
    );

    // The host's credentials cannot write what another host runs, nor another host's reports.
    for key in [
        keys.config(),
        keys.rollout(),
        keys.status("h2", "web"),
        keys.stop("web"),
    ] {
        let denied = fleet.put(&fleet.host, &key, "x");
        assert!(
            denied
                .as_ref()
                .is_err_and(|e| e.contains("permission denied")),
            "h1 wrote {key}: {denied:?}"
        );
    }
    fleet
        .put(&fleet.host, &keys.status("h1", "probe"), "{}")
        .expect("h1 writes its own status");

    // A signed rollout under load: the agent takes its turn, reports, nothing fails.
    let load = fleet.docker.spawn_load(4, 6000);
    std::thread::sleep(Duration::from_millis(1000));
    fleet.operate_ok(&["update", "web", "--tag", "v2"]);
    let load = common::finish_json(load);
    common::assert_nothing_failed_or_stalled(&load, "the signed rollout");
    common::assert_served_by(&load, "v2");

    // The stored record verifies with stock OpenSSH.
    let record = fleet.etcd.dir.path().join("record");
    let signature = fleet.etcd.dir.path().join("record.sig");
    std::fs::write(&record, fleet.get(&keys.rollout())).expect("record");
    std::fs::write(&signature, fleet.get(&keys.signature(&keys.rollout()))).expect("signature");
    let verified = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-f", text(&fleet.signers), "-I", "ci@test"])
        .args(["-n", "handoff-fleet", "-s", text(&signature)])
        .stdin(std::fs::File::open(&record).expect("record"))
        .output()
        .expect("ssh-keygen");
    assert!(verified.status.success(), "{}", stderr(&verified));

    // etcd's root (or anyone holding it) writes an unsigned spec: refused, nothing changes.
    let unsigned = fleet.fleet_as(&fleet.root, &["setconfig", text(&config)]);
    assert!(unsigned.status.success(), "{}", stderr(&unsigned));
    fleet.wait_listed("the unsigned config refused", |l| {
        refused(l, &keys.config()).starts_with("unsigned spec")
    });
    let unsigned_rollout = fleet.fleet_as(&fleet.operator, &["update", "web", "--tag", "v3"]);
    assert_eq!(
        unsigned_rollout.status.code(),
        Some(3),
        "{}",
        stderr(&unsigned_rollout)
    );
    assert!(
        stderr(&unsigned_rollout).contains("host h1: refused: unsigned spec"),
        "{}",
        stderr(&unsigned_rollout)
    );
    common::assert_served_by(&fleet.docker.load(2, 1000, &[]), "v2");
    // A raw JSON config put by hand: refused as malformed.
    fleet
        .put(&fleet.root, &keys.config(), r#"{"components": []}"#)
        .expect("root writes");
    fleet.wait_listed("the raw config refused", |l| {
        refused(l, &keys.config()).starts_with("malformed spec")
    });

    // A signed config the host's policy forbids: refused with the policy's reason, nothing of
    // it started, what ran keeps serving.
    let privileged = fleet.etcd.dir.path().join("privileged.json");
    let text_config = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &privileged,
        text_config.replacen(
            "\"name\": \"web\",",
            "\"name\": \"web\", \"privileged\": true,",
            1,
        ),
    )
    .expect("privileged");
    let containers = fleet.docker.containers().len();
    fleet.operate_ok(&["setconfig", text(&privileged)]);
    fleet.wait_listed("web refused by the policy", |l| {
        web(l)["state"] == "refused"
    });
    let refusal = web(&fleet.listed());
    assert_eq!(
        refusal["reason"],
        format!("privileged not allowed by {}", text(&fleet.policy)),
        "{refusal}"
    );
    assert_eq!(refusal["tag"], "v2", "what runs is reported: {refusal}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        fleet.docker.containers().len(),
        containers,
        "nothing started"
    );
    common::assert_served_by(&fleet.docker.load(2, 1000, &[]), "v2");
    fleet.operate_ok(&["setconfig", text(&config)]);
    fleet.wait_listed("web allowed again", |l| {
        web(l)["state"] == "ready" && refused(l, &keys.config()).is_empty()
    });
    // The unsigned rollout stored earlier is still refused: nothing but a signed one replaces it.
    assert!(refused(&fleet.listed(), &keys.rollout()).starts_with("unsigned spec"));

    // A stop signed by stock OpenSSH (ssh-keygen -Y sign) is obeyed: handoff verifies it.
    let stop_key = keys.stop("web");
    let envelope = format!(
        "handoff-fleet-record 1\nfleet default\nkey {stop_key}\nsequence {}\n\n{}",
        u64::MAX / 2,
        r#"{"component": "web", "action": "kill", "since_ms": 1}"#
    );
    let stop = fleet.etcd.dir.path().join("stop");
    std::fs::write(&stop, &envelope).expect("stop");
    let signed = Command::new("ssh-keygen")
        .args([
            "-Y",
            "sign",
            "-n",
            "handoff-fleet",
            "-f",
            text(&fleet.ssh_key),
        ])
        .arg(&stop)
        .output()
        .expect("ssh-keygen");
    assert!(signed.status.success(), "{}", stderr(&signed));
    let sig = std::fs::read_to_string(stop.with_extension("sig")).expect("sig");
    fleet
        .put(&fleet.operator, &keys.signature(&stop_key), &sig)
        .expect("signature");
    fleet
        .put(&fleet.operator, &stop_key, &envelope)
        .expect("stop");
    fleet.wait_listed("web killed", |l| web(l)["state"] == "killed");
    assert_eq!(
        fleet
            .docker
            .containers()
            .into_iter()
            .filter(|c| c.2)
            .count(),
        0,
        "{:?}",
        fleet.docker.containers()
    );
}

#[test]
#[ignore = "needs root, etcd, Docker and ssh-keygen: run by sudo scripts/test.sh"]
fn a_host_that_can_no_longer_follow_the_fleet_is_not_reported_alive() {
    let fleet = Secured::new();
    for granted in [
        fleet.fleet_as(&fleet.root, &["grant-host", "h1"]),
        fleet.fleet_as(&fleet.root, &["grant-operator", "ci"]),
    ] {
        assert!(granted.status.success(), "{}", stderr(&granted));
    }
    fleet.operate_ok(&["setconfig", text(&fleet.docker.config_path())]);
    let _agent = fleet.spawn_agent();
    fleet.wait_listed("web ready", |l| web(l)["state"] == "ready");
    let alive = |l: &serde_json::Value| l["hosts"][0]["alive"] == true;
    assert!(alive(&fleet.listed()));

    // Its reads of the fleet refused (the role's read permission taken away), while its lease
    // keep-alives still work: its watch is broken, so it must not be reported alive.
    let root = fleet.root.args();
    let root: Vec<&str> = root.iter().map(String::as_str).collect();
    let fleet_root = "/handoff/fleets/default/";
    fleet.etcd.etcdctl_ok(
        &root,
        &[
            "role",
            "revoke-permission",
            "handoff-default-h1",
            fleet_root,
            "--prefix=true",
        ],
    );
    let cut = Instant::now();
    // An open watch outlives the revocation in etcd 3.4; the next change makes the agent read.
    fleet.operate_ok(&["setconfig", text(&fleet.docker.config_path())]);
    let started = Instant::now();
    while alive(&fleet.listed()) {
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "still alive {:?} after its reads were refused: {}",
            cut.elapsed(),
            fleet.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let lost_after = cut.elapsed();
    eprintln!("listed as lost {lost_after:?} after its reads were refused");
    // The grace (15 s) and the lease's TTL (10 s), not sooner: an outage of a few seconds
    // never costs the registration.
    assert!(lost_after >= Duration::from_secs(15), "{lost_after:?}");
    assert!(
        fleet.log().contains("the watch has been broken for"),
        "{}",
        fleet.log()
    );
    common::assert_served_by(&fleet.docker.load(2, 1000, &[]), "v1");

    // Its rights back: it follows the fleet again, and registers again.
    let granted = fleet.fleet_as(&fleet.root, &["grant-host", "h1"]);
    assert!(granted.status.success(), "{}", stderr(&granted));
    fleet.wait_listed("h1 alive again", alive);
    assert!(fleet.log().contains("registered again"), "{}", fleet.log());
}
