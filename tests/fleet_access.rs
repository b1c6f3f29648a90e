//! How handoff reaches the fleet's etcd, against a real one (tests/common/etcd.rs): TLS with
//! certificates made by `openssl` here (a CA, etcd's certificate for its namespace's address, an
//! expired one, another CA, client certificates whose CN is the etcd user), client-certificate
//! and password logins, least-privilege users (`grant-host`, `grant-operator`, `revoke`)
//! checked with `etcdctl` as an outside witness, and a member that vanishes without closing
//! its connections (frozen by SIGSTOP, or its packets dropped) noticed within ~10 s.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::etcd::{EtcdSandbox, Pair, Pki, ServerTls};
use common::HANDOFF;
use handoff::error::{exit_code_of, ExitCode};
use handoff::fleet::access::Access;
use handoff::fleet::store::Store;
use handoff::fleet::{Etcd, Keys};

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Assert `output` exited with `code` and its error says every one of `words`.
fn assert_refused(output: &Output, code: i32, words: &[&str]) {
    let said = stderr(output);
    eprint!("exit {:?}: {said}", output.status.code());
    assert_eq!(output.status.code(), Some(code), "{said}");
    for word in words {
        assert!(said.contains(word), "{word:?} not in: {said}");
    }
}

/// A file of `text` with `mode`.
fn file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

fn path(p: &Path) -> &str {
    p.to_str().expect("path")
}

/// `handoff fleet ARGS list`, never reaching any etcd (192.0.2.1 is TEST-NET-1).
fn fleet_offline(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(HANDOFF)
        .arg("fleet")
        .args(args)
        .arg("list")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("handoff")
}

/// Needs neither root nor etcd: every bad flag and file is exit 2, naming it and the reason,
/// before anything is sent anywhere.
#[test]
fn bad_tls_and_login_settings_are_exit_2_naming_the_flag_or_file_before_etcd_is_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pki = Pki::new(d);
    let ca = pki.ca("ca");
    let client = pki.client(&ca, "h1", "handoff-default-h1");
    let https = "https://192.0.2.1:2379";
    let (ca_pem, cert, key) = (path(&ca.cert), path(&client.cert), path(&client.key));
    let pw = file(d, "pw", "secret\n", 0o600);
    let open_pw = file(d, "open-pw", "secret\n", 0o644);
    let empty_pw = file(d, "empty-pw", "\n", 0o600);
    let open_key = file(d, "open.key", &std::fs::read_to_string(key).unwrap(), 0o640);

    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--etcd", "http://192.0.2.1:2379", "--cacert", ca_pem],
            vec!["http://192.0.2.1:2379", "--cacert given", "use https://"],
        ),
        (
            vec![
                "--etcd",
                "https://192.0.2.1:2379,http://192.0.2.2:2379",
                "--cacert",
                ca_pem,
            ],
            vec!["mixes https://192.0.2.1:2379 and http://192.0.2.2:2379"],
        ),
        (
            vec!["--etcd", https],
            vec!["https://192.0.2.1:2379", "needs --cacert"],
        ),
        (
            vec!["--etcd", https, "--cacert", ca_pem, "--cert", cert],
            vec!["--cert", cert, "without --key"],
        ),
        (
            vec!["--etcd", https, "--cacert", ca_pem, "--key", key],
            vec!["--key", key, "without --cert"],
        ),
        (
            vec!["--etcd", https, "--cacert", ca_pem, "--user", "root"],
            vec!["--user \"root\" needs --password-file"],
        ),
        (
            vec![
                "--etcd",
                https,
                "--cacert",
                ca_pem,
                "--cert",
                cert,
                "--key",
                path(&open_key),
            ],
            vec![path(&open_key), "readable by group or others (mode 0640)"],
        ),
        (
            vec![
                "--etcd",
                https,
                "--cacert",
                ca_pem,
                "--user",
                "root",
                "--password-file",
                path(&open_pw),
            ],
            vec![path(&open_pw), "readable by group or others (mode 0644)"],
        ),
        (
            vec![
                "--etcd",
                https,
                "--cacert",
                ca_pem,
                "--user",
                "root",
                "--password-file",
                path(&empty_pw),
            ],
            vec![path(&empty_pw), "the first line is empty"],
        ),
        (
            vec!["--etcd", https, "--cacert", key],
            vec!["--cacert", key, "no PEM certificate"],
        ),
    ];
    for (args, words) in &cases {
        let output = fleet_offline(args, &[]);
        assert_refused(&output, 2, words);
    }
    // The same from the environment (as the agent's unit passes /etc/default/handoff).
    let output = fleet_offline(
        &[],
        &[
            ("HANDOFF_ETCD", https),
            ("HANDOFF_ETCD_CACERT", ca_pem),
            ("HANDOFF_ETCD_CERT", cert),
        ],
    );
    assert_refused(&output, 2, &["--cert", "without --key"]);
    let output = fleet_offline(
        &[],
        &[
            ("HANDOFF_ETCD", "http://192.0.2.1:2379"),
            ("HANDOFF_ETCD_USER", "root"),
            ("HANDOFF_ETCD_PASSWORD_FILE", path(&open_pw)),
        ],
    );
    assert_refused(&output, 2, &["readable by group or others"]);
    // And a good setting is not refused for its files: it goes on to ask etcd.
    let output = fleet_offline(
        &[
            "--etcd",
            "http://127.0.0.1:9",
            "--user",
            "root",
            "--password-file",
            path(&pw),
        ],
        &[],
    );
    assert_refused(&output, 7, &["http://127.0.0.1:9"]);
}

/// A CA, etcd's certificate for the sandbox's address, and client certificates; etcd started
/// with them (`--client-cert-auth` when `client_certs`).
struct Tls {
    pki: Pki,
    ca: Pair,
    server: Pair,
}

fn tls_sandbox(client_certs: bool) -> (EtcdSandbox, Tls) {
    let mut sandbox = EtcdSandbox::unstarted();
    let pki = Pki::new(sandbox.dir.path());
    let ca = pki.ca("ca");
    let server = pki.server(&ca, "etcd", &sandbox.address);
    sandbox.tls = Some(ServerTls {
        cert: server.cert.clone(),
        key: server.key.clone(),
        ca: ca.cert.clone(),
        client_cert_auth: client_certs,
    });
    sandbox.client_args = vec!["--cacert".into(), path(&ca.cert).into()];
    (sandbox, Tls { pki, ca, server })
}

/// etcd with TLS and client-certificate authentication, `auth enable`d with a root user that
/// has no password (its certificate's CN is `root`); `fleet` runs as root.
fn client_cert_sandbox() -> (EtcdSandbox, Tls, Pair) {
    let (mut sandbox, tls) = tls_sandbox(true);
    let root = tls.pki.client(&tls.ca, "root", "root");
    sandbox.client_args.extend(root.args());
    sandbox.start_etcd();
    let as_root: Vec<String> = root.args();
    let as_root: Vec<&str> = as_root.iter().map(String::as_str).collect();
    sandbox.etcdctl_ok(&as_root, &["user", "add", "root", "--no-password"]);
    sandbox.etcdctl_ok(&as_root, &["user", "grant-role", "root", "root"]);
    sandbox.etcdctl_ok(&as_root, &["auth", "enable"]);
    (sandbox, tls, root)
}

#[test]
#[ignore = "needs root and etcd: run by sudo scripts/test.sh"]
fn tls_failures_are_exit_7_naming_the_endpoint_and_the_reason() {
    let (mut sandbox, tls, root) = client_cert_sandbox();
    let endpoint = sandbox.endpoint();
    let listed = sandbox.fleet(&["list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));

    let other_ca = tls.pki.ca("other-ca");
    let stranger = tls.pki.client(&other_ca, "stranger", "root");
    let nobody = tls.pki.client(&tls.ca, "nobody", "nobody");
    let fleet = |endpoint: &str, args: &[&str]| {
        sandbox
            .exec(HANDOFF, &["fleet", "--etcd", endpoint])
            .args(args)
            .arg("list")
            .stdin(Stdio::null())
            .output()
            .expect("handoff")
    };
    let (ca, cert, key) = (path(&tls.ca.cert), path(&root.cert), path(&root.key));

    // Not signed by the CA we trust.
    let output = fleet(
        &endpoint,
        &[
            "--cacert",
            path(&other_ca.cert),
            "--cert",
            cert,
            "--key",
            key,
        ],
    );
    assert_refused(
        &output,
        7,
        &[
            &endpoint,
            "not signed by the CA in --cacert",
            path(&other_ca.cert),
            "UnknownIssuer",
        ],
    );
    // Issued for the namespace's address, reached at 127.0.0.1.
    let loopback = sandbox.loopback_endpoint();
    let output = fleet(&loopback, &["--cacert", ca, "--cert", cert, "--key", key]);
    assert_refused(
        &output,
        7,
        &[
            &loopback,
            "issued for another name or address",
            "NotValidForName",
            "127.0.0.1",
        ],
    );
    // etcd wants a client certificate and gets none, or one it does not trust.
    let output = fleet(&endpoint, &["--cacert", ca]);
    assert_refused(
        &output,
        7,
        &[
            &endpoint,
            "etcd refused our connection without a client certificate",
        ],
    );
    let output = fleet(
        &endpoint,
        &[
            "--cacert",
            ca,
            "--cert",
            path(&stranger.cert),
            "--key",
            path(&stranger.key),
        ],
    );
    assert_refused(
        &output,
        7,
        &[
            &endpoint,
            "etcd refused our client certificate",
            path(&stranger.cert),
        ],
    );
    // A trusted certificate of a user etcd does not know: the request is refused.
    let output = fleet(
        &endpoint,
        &[
            "--cacert",
            ca,
            "--cert",
            path(&nobody.cert),
            "--key",
            path(&nobody.key),
        ],
    );
    assert_refused(&output, 7, &[&endpoint, "permission denied"]);
    // A plain-text request to the TLS port: refused by etcd, never answered in plain text.
    let plain = endpoint.replace("https://", "http://");
    let output = fleet(&plain, &[]);
    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));

    // etcd restarted with a certificate that expired in 2020.
    let expired = tls.pki.expired_server(&tls.ca, "expired", &sandbox.address);
    sandbox.stop_etcd();
    sandbox.tls = Some(ServerTls {
        cert: expired.cert.clone(),
        key: expired.key.clone(),
        ca: tls.ca.cert.clone(),
        client_cert_auth: true,
    });
    sandbox.start_etcd_unchecked();
    let output = sandbox.fleet(&["list"]);
    assert_refused(&output, 7, &[&endpoint, "has expired", "Expired"]);
    let _ = tls.server;
}

/// `etcdctl put KEY v` with `credentials`: `Ok` when etcd took it, `Err(stderr)` otherwise.
fn put(sandbox: &EtcdSandbox, credentials: &[&str], key: &str) -> Result<(), String> {
    let output = sandbox.etcdctl(credentials, &["put", key, "v"]);
    if output.status.success() {
        Ok(())
    } else {
        Err(stderr(&output))
    }
}

fn assert_denied(sandbox: &EtcdSandbox, who: &str, credentials: &[&str], key: &str) {
    match put(sandbox, credentials, key) {
        Ok(()) => panic!("{who} could write {key}"),
        Err(said) => assert!(said.contains("permission denied"), "{who}, {key}: {said}"),
    }
}

fn assert_allowed(sandbox: &EtcdSandbox, who: &str, credentials: &[&str], key: &str) {
    if let Err(said) = put(sandbox, credentials, key) {
        panic!("{who} could not write {key}: {said}");
    }
}

/// What a host's credentials may write, and what not, checked with etcdctl.
fn assert_host_rights(sandbox: &EtcdSandbox, keys: &Keys, who: &str, credentials: &[&str]) {
    for key in [
        keys.config(),
        keys.rollout(),
        keys.status("h2", "web"),
        keys.host("h2"),
    ] {
        assert_denied(sandbox, who, credentials, &key);
    }
    for key in [keys.status("h1", "web"), keys.host("h1"), keys.turn(0)] {
        assert_allowed(sandbox, who, credentials, &key);
    }
    let read = sandbox.etcdctl(credentials, &["get", "--prefix", keys.root()]);
    assert!(
        read.status.success(),
        "{who} reads the fleet: {}",
        stderr(&read)
    );
}

#[test]
#[ignore = "needs root and etcd: run by sudo scripts/test.sh"]
fn granted_hosts_and_operators_write_only_their_own_keys_with_client_certificates() {
    let (sandbox, tls, root) = client_cert_sandbox();
    let keys = Keys::new("default").unwrap();
    let h1_cert = tls.pki.client(&tls.ca, "h1", "handoff-default-h1");
    let h1_args = h1_cert.args();
    let h1: Vec<&str> = h1_args.iter().map(String::as_str).collect();
    let alice_cert = tls.pki.client(&tls.ca, "alice", "handoff-default-op-alice");
    let alice_args = alice_cert.args();
    let alice: Vec<&str> = alice_args.iter().map(String::as_str).collect();

    // Before the grant, h1's certificate is nobody to etcd.
    assert_denied(&sandbox, "h1", &h1, &keys.status("h1", "web"));

    let granted = sandbox.fleet_ok(&["grant-host", "h1"]);
    eprint!("grant-host h1:\n{granted}");
    assert!(
        granted.contains("user handoff-default-h1 created without a password")
            && granted.contains("CN=handoff-default-h1"),
        "{granted}"
    );
    assert_host_rights(&sandbox, &keys, "h1", &h1);
    // `fleet` itself as h1: it reads the fleet.
    let listed = sandbox
        .exec(HANDOFF, &["fleet", "--etcd", &sandbox.endpoint()])
        .args(["--cacert", path(&tls.ca.cert)])
        .args(&h1)
        .arg("list")
        .output()
        .expect("list");
    assert!(listed.status.success(), "{}", stderr(&listed));

    // Twice: nothing changes, and it says so.
    let again = sandbox.fleet_ok(&["grant-host", "h1"]);
    eprint!("grant-host h1, again:\n{again}");
    assert!(again.contains("nothing to change"), "{again}");
    assert!(
        !again.contains("granted") && !again.contains("created"),
        "{again}"
    );

    let granted = sandbox.fleet_ok(&["grant-operator", "alice"]);
    assert!(granted.contains("handoff-default-op-alice"), "{granted}");
    assert_allowed(&sandbox, "alice", &alice, &keys.config());
    assert_allowed(&sandbox, "alice", &alice, &keys.stop("web"));
    assert_denied(&sandbox, "alice", &alice, &keys.status("h1", "web"));
    assert_denied(&sandbox, "alice", &alice, &keys.host("h1"));

    // A role of that name holding more (another fleet's, say): refused, naming it, until
    // --reset takes it away.
    let root_args = root.args();
    let root: Vec<&str> = root_args.iter().map(String::as_str).collect();
    sandbox.etcdctl_ok(
        &root,
        &[
            "role",
            "grant-permission",
            "handoff-default-h1",
            "readwrite",
            &keys.spec(),
            "--prefix=true",
        ],
    );
    let refused = sandbox.fleet(&["grant-host", "h1"]);
    assert_refused(
        &refused,
        2,
        &[
            "role handoff-default-h1 also grants readwrite /handoff/fleets/default/spec/*",
            "--reset",
        ],
    );
    assert_allowed(&sandbox, "h1 (widened by hand)", &h1, &keys.config());
    let reset = sandbox.fleet_ok(&["grant-host", "h1", "--reset"]);
    eprint!("grant-host h1 --reset:\n{reset}");
    assert!(reset.contains("taken away (--reset)"), "{reset}");
    assert_host_rights(&sandbox, &keys, "h1", &h1);

    // Revoked: etcd refuses h1's certificate again; twice is not an error.
    let revoked = sandbox.fleet_ok(&["revoke", "h1"]);
    eprint!("revoke h1:\n{revoked}");
    assert!(
        revoked.contains("user handoff-default-h1 deleted")
            && revoked.contains("role handoff-default-h1 deleted"),
        "{revoked}"
    );
    assert_denied(&sandbox, "revoked h1", &h1, &keys.status("h1", "web"));
    let again = sandbox.fleet_ok(&["revoke", "h1"]);
    assert!(again.contains("nothing to revoke"), "{again}");
    let revoked = sandbox.fleet_ok(&["revoke", "--operator", "alice"]);
    assert!(
        revoked.contains("user handoff-default-op-alice deleted"),
        "{revoked}"
    );
    assert_denied(&sandbox, "revoked alice", &alice, &keys.config());
    // A host named like an operator cannot exist, so `revoke op-alice` is not alice.
    assert_refused(
        &sandbox.fleet(&["revoke", "op-alice"]),
        2,
        &["revoke --operator alice"],
    );
}

#[test]
#[ignore = "needs root and etcd: run by sudo scripts/test.sh"]
fn password_logins_work_over_tls_and_a_wrong_one_is_exit_7_naming_the_user() {
    let (mut sandbox, _tls) = tls_sandbox(false);
    sandbox.start_etcd();
    let d = sandbox.dir.path().to_path_buf();
    // Before `auth enable`, a grant says that nothing is enforced yet.
    let h0_pw = file(&d, "h0-pw", "h0-secret\n", 0o600);
    let granted = sandbox.fleet_ok(&["grant-host", "h0", "--new-password-file", path(&h0_pw)]);
    assert!(granted.contains("not enforced yet"), "{granted}");
    sandbox.etcdctl_ok(&[], &["user", "add", "root:r00t-pw"]);
    sandbox.etcdctl_ok(&[], &["user", "grant-role", "root", "root"]);
    sandbox.etcdctl_ok(&[], &["auth", "enable"]);
    let root_pw = file(&d, "root-pw", "r00t-pw\n", 0o600);
    let wrong_pw = file(&d, "wrong-pw", "guess\n", 0o600);
    let anonymous = sandbox.fleet(&["list"]);
    assert_refused(&anonymous, 7, &[&sandbox.endpoint(), "user name is empty"]);
    sandbox
        .client_args
        .extend(["--user".into(), "root".into(), "--password-file".into()]);
    let mut wrong = sandbox.client_args.clone();
    wrong.push(path(&wrong_pw).into());
    sandbox.client_args.push(path(&root_pw).into());
    sandbox.fleet_ok(&["list"]);

    let output = sandbox
        .exec(HANDOFF, &["fleet", "--etcd", &sandbox.endpoint()])
        .args(&wrong)
        .arg("list")
        .output()
        .expect("list");
    assert_refused(
        &output,
        7,
        &[
            &sandbox.endpoint(),
            "refused the login of user \"root\"",
            path(&wrong_pw),
        ],
    );

    let keys = Keys::new("default").unwrap();
    let h1_pw = file(&d, "h1-pw", "h1-secret\n", 0o600);
    let granted = sandbox.fleet_ok(&["grant-host", "h1", "--new-password-file", path(&h1_pw)]);
    assert!(
        granted.contains("created with the password given"),
        "{granted}"
    );
    assert_host_rights(
        &sandbox,
        &keys,
        "h1",
        &["--user", "handoff-default-h1:h1-secret"],
    );
    let again = sandbox.fleet_ok(&["grant-host", "h1", "--new-password-file", path(&h1_pw)]);
    assert!(again.contains("nothing to change"), "{again}");
    assert!(!again.contains("not enforced"), "{again}");
    let new_pw = file(&d, "h1-pw2", "h1-other\n", 0o600);
    let changed = sandbox.fleet_ok(&["grant-host", "h1", "--new-password-file", path(&new_pw)]);
    assert!(changed.contains("password changed"), "{changed}");
    assert_allowed(
        &sandbox,
        "h1 (new password)",
        &["--user", "handoff-default-h1:h1-other"],
        &keys.status("h1", "web"),
    );

    sandbox.fleet_ok(&["revoke", "h1"]);
    let refused = put(
        &sandbox,
        &["--user", "handoff-default-h1:h1-other"],
        &keys.status("h1", "web"),
    );
    assert!(refused.is_err(), "a revoked user still writes");
}

/// What one connection notices after etcd is cut off, and when.
#[derive(Debug)]
struct Noticed {
    after: Duration,
    error: String,
    code: ExitCode,
}

fn noticed(started: Instant, error: anyhow::Error) -> Noticed {
    Noticed {
        after: started.elapsed(),
        code: exit_code_of(&error),
        error: format!("{error:#}"),
    }
}

/// Whether `etcd`'s watch reports a change within `limit` (its first answer, that it was
/// created, is not one).
fn sees_change(etcd: &mut Etcd, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if etcd.changed(Duration::from_millis(200)).expect("changed") {
            return true;
        }
    }
    false
}

/// A watch, a lease renewal and a request, each on its own connection as the agent and a
/// command hold them, when `cut` makes etcd vanish without closing anything: each must fail
/// (exit code 7), the watch within 15 s (the agent re-watches then), and a watch opened
/// after `restore` works again.
fn a_vanished_etcd_is_noticed(cut: fn(&mut EtcdSandbox), restore: fn(&mut EtcdSandbox)) {
    let mut sandbox = EtcdSandbox::new();
    let access = Access::plain(&sandbox.endpoint()).expect("access");
    let keys = Keys::new("default").unwrap();
    let mut watcher = Etcd::connect(&access).expect("etcd");
    let (_, revision) = watcher.range(&keys.spec()).expect("read");
    watcher.watch(&[keys.spec()], revision).expect("watch");
    let mut leaser = Etcd::connect(&access).expect("etcd");
    let lease = leaser.grant(60).expect("lease");
    assert!(leaser.keep_alive(lease).expect("renew") > 0);
    let mut requester = Etcd::connect(&access).expect("etcd");
    requester.get(&keys.config()).expect("get");

    // Waiting on the watch for longer than etcd's ping policy takes to send GOAWAY (three
    // pings closer than 5 s): our pings are not refused, the watch stays; the others, idle
    // meanwhile, still answer at once.
    let waited = Instant::now();
    while waited.elapsed() < Duration::from_secs(22) {
        assert!(!watcher
            .changed(Duration::from_secs(1))
            .expect("a watch waited on for 22 s"));
    }
    let asked = Instant::now();
    requester
        .put(&keys.config(), "x")
        .expect("put after 22 s idle");
    eprintln!("a request after 22 s idle took {:?}", asked.elapsed());
    assert!(
        sees_change(&mut watcher, Duration::from_secs(5)),
        "the watch still works"
    );
    assert!(leaser.keep_alive(lease).expect("renew") > 0);

    cut(&mut sandbox);
    let started = Instant::now();
    let watching = std::thread::spawn(move || loop {
        match watcher.changed(Duration::from_millis(500)) {
            Err(error) => return Some(noticed(started, error)),
            Ok(_) if started.elapsed() > Duration::from_secs(30) => return None,
            Ok(_) => {}
        }
    });
    let renewing = std::thread::spawn(move || match leaser.keep_alive(lease) {
        Ok(ttl) => Err(format!(
            "renewed (ttl {ttl}) {:?} after the cut",
            started.elapsed()
        )),
        Err(error) => Ok(noticed(started, error)),
    });
    let config = keys.config();
    let requesting = std::thread::spawn(move || match requester.get(&config) {
        Ok(_) => Err(format!("answered {:?} after the cut", started.elapsed())),
        Err(error) => Ok(noticed(started, error)),
    });
    let cli_started = Instant::now();
    let listed = sandbox.fleet(&["list"]);
    let cli_after = cli_started.elapsed();
    let watch = watching
        .join()
        .expect("watch thread")
        .expect("the watch noticed nothing within 30 s");
    let renewal = renewing.join().expect("lease thread").expect("the renewal");
    let request = requesting
        .join()
        .expect("request thread")
        .expect("the request");
    eprintln!("watch: {watch:?}\nlease renewal: {renewal:?}\nrequest: {request:?}");
    eprintln!("fleet list: {cli_after:?}, {}", stderr(&listed));
    for (what, noticed, limit) in [
        ("the watch", &watch, Duration::from_secs(15)),
        ("the lease renewal", &renewal, Duration::from_secs(15)),
        ("the request", &request, Duration::from_secs(8)),
    ] {
        assert!(
            noticed.after <= limit,
            "{what} failed after {:?}",
            noticed.after
        );
        assert_eq!(noticed.code, ExitCode::Store, "{what}: {}", noticed.error);
    }
    assert_refused(&listed, 7, &[&sandbox.endpoint()]);
    assert!(
        cli_after <= Duration::from_secs(8),
        "fleet list took {cli_after:?}"
    );

    restore(&mut sandbox);
    let access = Access::plain(&sandbox.endpoint()).expect("access");
    let started = Instant::now();
    let mut etcd = Etcd::connect(&access).expect("etcd");
    loop {
        let watched = etcd
            .range(&keys.spec())
            .and_then(|(_, revision)| etcd.watch(&[keys.spec()], revision));
        match watched {
            Ok(()) => {
                etcd.put(&keys.config(), "y").expect("put");
                assert!(sees_change(&mut etcd, Duration::from_secs(5)));
                break;
            }
            Err(error) => assert!(
                started.elapsed() < Duration::from_secs(15),
                "no watch 15 s after etcd came back: {error:#}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "watching again {:?} after etcd came back",
        started.elapsed()
    );
}

#[test]
#[ignore = "needs root and etcd: run by sudo scripts/test.sh"]
fn a_frozen_etcd_is_noticed_by_a_watch_a_lease_renewal_and_a_request_within_15_s() {
    a_vanished_etcd_is_noticed(EtcdSandbox::freeze, EtcdSandbox::thaw);
}

#[test]
#[ignore = "needs root and etcd: run by sudo scripts/test.sh"]
fn an_etcd_whose_packets_are_dropped_is_noticed_within_15_s() {
    a_vanished_etcd_is_noticed(EtcdSandbox::drop_traffic, EtcdSandbox::restore_traffic);
}
