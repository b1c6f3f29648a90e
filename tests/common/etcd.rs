//! A real etcd (Debian's etcd-server) for the fleet tests: each sandbox makes a network
//! namespace of its own (or uses one a Docker sandbox made), runs its own etcd there, and runs
//! `handoff fleet` in it, so tests run in parallel and the traffic never leaves the namespace.
//! etcd can serve TLS (certificates made by `openssl` at test time, [`Pki`]) and require client
//! certificates; it can be frozen (SIGSTOP) or cut off (its packets dropped by an nftables table
//! in its namespace), as a member that lost power looks. Everything is killed and deleted on
//! drop, also when the test fails, and a frozen etcd is thawed first.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use handoff::fleet::access::Access;
use handoff::fleet::store::Store;
use handoff::fleet::{Etcd, HostRecord, Keys, MemberRecord};

use super::docker::{ComponentOptions, DockerSandbox};
use super::{is_root, HANDOFF};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// etcd's own TLS: its certificate and key, and the CA that signed it (which clients trust)
/// and that their certificates must be signed by, with `--client-cert-auth`.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub client_cert_auth: bool,
}

pub struct EtcdSandbox {
    pub ns: String,
    /// Where etcd listens (client port 2379, peer port 2380).
    pub address: String,
    /// The namespace is the test's own (deleted on drop), not a Docker sandbox's.
    own_namespace: bool,
    pub dir: tempfile::TempDir,
    etcd: Option<Child>,
    pub agents: Vec<Child>,
    /// etcd serves https:// with these, on 127.0.0.1 of its namespace as well as on
    /// [`EtcdSandbox::address`].
    pub tls: Option<ServerTls>,
    /// What [`EtcdSandbox::fleet`] passes after `--etcd`: certificates, a login.
    pub client_args: Vec<String>,
    /// What [`EtcdSandbox::spawn_agent`] passes after `agent --host H`: by default
    /// `--insecure-accept-any-spec` (these tests are about the store, not about trust).
    pub agent_args: Vec<String>,
    frozen: bool,
    /// The nftables table dropping etcd's client traffic, while it exists.
    dropping: bool,
}

impl EtcdSandbox {
    /// A namespace of the test's own, reached from the host over a veth (10.233.N.1 here,
    /// 10.233.N.2 there), with etcd on its end.
    pub fn new() -> EtcdSandbox {
        EtcdSandbox::unstarted().started()
    }

    /// [`EtcdSandbox::new`]'s namespace, etcd not started yet: set [`EtcdSandbox::tls`]
    /// (certificates need the address) and start it.
    pub fn unstarted() -> EtcdSandbox {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let ns = format!("hf-{}-{n}", std::process::id());
        let subnet = 1 + (std::process::id() as usize + n) % 250;
        let veth = format!("hf{}x{n}", std::process::id() % 100_000);
        let (here, there) = (format!("{veth}a"), format!("{veth}b"));
        let ok = Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .expect("ip");
        assert!(ok.success(), "ip netns add {ns}");
        let address = format!("10.233.{subnet}.2");
        let sandbox = EtcdSandbox::in_namespace(&ns, &address, true);
        for args in [
            vec![
                "link", "add", &here, "type", "veth", "peer", "name", &there, "netns", &ns,
            ],
            vec![
                "addr",
                "add",
                &format!("10.233.{subnet}.1/30"),
                "dev",
                &here,
            ],
            vec!["link", "set", &here, "up"],
        ] {
            let ok = Command::new("ip").args(&args).status().expect("ip");
            assert!(ok.success(), "ip {args:?}");
        }
        sandbox.exec_ok("ip", &["link", "set", "lo", "up"]);
        sandbox.exec_ok(
            "ip",
            &["addr", "add", &format!("{address}/30"), "dev", &there],
        );
        sandbox.exec_ok("ip", &["link", "set", &there, "up"]);
        sandbox
    }

    /// etcd in an existing namespace `ns`, listening on `address`.
    pub fn in_namespace(ns: &str, address: &str, own_namespace: bool) -> EtcdSandbox {
        assert!(
            is_root(),
            "this test needs root (a network namespace): run `sudo scripts/test.sh`"
        );
        assert!(
            Command::new("sh")
                .args(["-c", "command -v etcd >/dev/null"])
                .status()
                .is_ok_and(|s| s.success()),
            "etcd is not installed (apt-get install etcd-server; scripts/test.sh does it)"
        );
        EtcdSandbox {
            ns: ns.to_string(),
            address: address.to_string(),
            own_namespace,
            dir: tempfile::tempdir().expect("tempdir"),
            etcd: None,
            agents: Vec::new(),
            tls: None,
            client_args: Vec::new(),
            agent_args: vec!["--insecure-accept-any-spec".to_string()],
            frozen: false,
            dropping: false,
        }
    }

    pub fn started(mut self) -> EtcdSandbox {
        self.start_etcd();
        self
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub fn endpoint(&self) -> String {
        format!("{}://{}:2379", self.scheme(), self.address)
    }

    /// The same etcd at 127.0.0.1 in its namespace (TLS only): an address its certificate
    /// does not name.
    pub fn loopback_endpoint(&self) -> String {
        format!("{}://127.0.0.1:2379", self.scheme())
    }

    pub fn exec(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.ns, program])
            .args(args);
        command
    }

    pub fn exec_ok(&self, program: &str, args: &[&str]) {
        let output = self.exec(program, args).output().expect(program);
        assert!(output.status.success(), "{program} {args:?}: {output:?}");
    }

    /// Start etcd and return when `handoff fleet getconfig` (with [`EtcdSandbox::client_args`])
    /// gets an answer from it.
    pub fn start_etcd(&mut self) {
        self.spawn_etcd();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.fleet(&["getconfig"]).status.code() == Some(2)
                || self.fleet(&["getconfig"]).status.success()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd did not answer: {}", self.etcd_log());
    }

    /// Start etcd and return when it says it serves, without asking it anything (its
    /// certificate may be one no client accepts).
    pub fn start_etcd_unchecked(&mut self) {
        let before = self
            .etcd_log()
            .matches("ready to serve client requests")
            .count();
        self.spawn_etcd();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self
                .etcd_log()
                .matches("ready to serve client requests")
                .count()
                > before
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd did not start: {}", self.etcd_log());
    }

    /// etcd on its address (and with TLS, on 127.0.0.1 too) in the namespace, its data in the
    /// test's directory (kept across a restart), its log appended to etcd.log.
    fn spawn_etcd(&mut self) {
        let data = self.dir.path().join("etcd");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("log");
        let client = self.endpoint();
        let listen = match &self.tls {
            Some(_) => format!("{client},{}", self.loopback_endpoint()),
            None => client.clone(),
        };
        let peer = format!("http://{}:2380", self.address);
        let cluster = format!("default={peer}");
        let mut args: Vec<String> = [
            "--data-dir",
            data.to_str().expect("path"),
            "--listen-client-urls",
            &listen,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &cluster,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(tls) = &self.tls {
            let mut files = vec![("--cert-file", &tls.cert), ("--key-file", &tls.key)];
            // etcd 3.4 requires a client certificate from everyone as soon as it has a
            // --trusted-ca-file, --client-cert-auth or not.
            if tls.client_cert_auth {
                files.push(("--trusted-ca-file", &tls.ca));
                args.push("--client-cert-auth".to_string());
            }
            for (flag, path) in files {
                args.push(flag.to_string());
                args.push(path.to_str().expect("path").to_string());
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = self
            .exec("etcd", &args)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("etcd");
        self.etcd = Some(child);
    }

    pub fn stop_etcd(&mut self) {
        self.thaw();
        if let Some(mut etcd) = self.etcd.take() {
            let _ = etcd.kill();
            let _ = etcd.wait();
        }
    }

    /// SIGSTOP etcd: its sockets stay open and the kernel still acknowledges what arrives,
    /// but nothing answers — a member that froze or lost power, not one that closed.
    /// Returns when every thread of etcd is stopped: a thread running on the other core
    /// could otherwise still answer a request sent just after the signal.
    pub fn freeze(&mut self) {
        self.frozen = true;
        freeze_process(self.etcd.as_ref().expect("etcd runs").id());
    }

    pub fn thaw(&mut self) {
        if self.frozen {
            self.signal("-CONT");
            self.frozen = false;
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.etcd.as_ref().expect("etcd runs").id().to_string();
        let ok = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill {signal} {pid}");
    }

    /// Drop every packet to and from etcd's client port in its namespace (an nftables table
    /// of the test's own): no FIN, no RST, no answer — a member cut off by a dead link.
    pub fn drop_traffic(&mut self) {
        self.exec_ok("nft", &["add table inet handoff_test_cut"]);
        self.exec_ok(
            "nft",
            &["add chain inet handoff_test_cut input { type filter hook input priority -10 ; }"],
        );
        self.exec_ok(
            "nft",
            &["add chain inet handoff_test_cut output { type filter hook output priority -10 ; }"],
        );
        self.exec_ok(
            "nft",
            &["add rule inet handoff_test_cut input tcp dport 2379 drop"],
        );
        self.exec_ok(
            "nft",
            &["add rule inet handoff_test_cut output tcp sport 2379 drop"],
        );
        self.dropping = true;
    }

    pub fn restore_traffic(&mut self) {
        if self.dropping {
            let _ = self
                .exec("nft", &["delete table inet handoff_test_cut"])
                .status();
            self.dropping = false;
        }
    }

    /// Drop every packet between etcd's client port and `address` alone (an nftables table
    /// of the test's own in etcd's namespace): that host is cut off by a dead link, while
    /// `handoff fleet` run in etcd's namespace ([`EtcdSandbox::fleet`]) still gets answers.
    pub fn cut_off(&mut self, address: &str) {
        let table = cut_table(address);
        self.exec_ok("nft", &[&format!("add table inet {table}")]);
        for (chain, hook, rule) in [
            (
                "input",
                "input",
                format!("ip saddr {address} tcp dport 2379 drop"),
            ),
            (
                "output",
                "output",
                format!("ip daddr {address} tcp sport 2379 drop"),
            ),
        ] {
            self.exec_ok(
                "nft",
                &[&format!(
                    "add chain inet {table} {chain} {{ type filter hook {hook} priority -10 ; }}"
                )],
            );
            self.exec_ok("nft", &[&format!("add rule inet {table} {chain} {rule}")]);
        }
    }

    /// Lift [`EtcdSandbox::cut_off`]. (The table goes with etcd's namespace anyway.)
    pub fn reconnect(&mut self, address: &str) {
        self.exec_ok("nft", &["delete", "table", "inet", &cut_table(address)]);
    }

    pub fn etcd_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// `handoff fleet --etcd ENDPOINT CLIENT_ARGS... ARGS...` in the namespace.
    pub fn fleet(&self, args: &[&str]) -> Output {
        let endpoint = self.endpoint();
        self.exec(HANDOFF, &["fleet", "--etcd", &endpoint])
            .args(&self.client_args)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("handoff fleet")
    }

    pub fn fleet_ok(&self, args: &[&str]) -> String {
        let output = self.fleet(args);
        assert!(
            output.status.success(),
            "handoff fleet {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `etcdctl` in the namespace against this etcd (its CA when TLS), with `credentials`
    /// (`--cert F --key F`, `--user U:P`, or none).
    pub fn etcdctl(&self, credentials: &[&str], args: &[&str]) -> Output {
        let endpoint = self.endpoint();
        let mut command = self.exec("etcdctl", &["--endpoints", &endpoint]);
        if let Some(tls) = &self.tls {
            command.args(["--cacert", tls.ca.to_str().expect("path")]);
        }
        command
            .env("ETCDCTL_API", "3")
            .args(credentials)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("etcdctl (apt-get install etcd-client)")
    }

    pub fn etcdctl_ok(&self, credentials: &[&str], args: &[&str]) -> String {
        let output = self.etcdctl(credentials, args);
        assert!(
            output.status.success(),
            "etcdctl {credentials:?} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `handoff fleet agent --host HOST` in the namespace, with a state directory of its own
    /// (what it accepted of the spec is kept there), its output in `agent-HOST.log`.
    pub fn spawn_agent(&mut self, host: &str) -> usize {
        self.spawn_agent_with(host, &[], &["--host", host])
    }

    pub fn agent_log(&self, host: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("agent-{host}.log")))
            .unwrap_or_default()
    }

    /// `handoff fleet agent ARGS...` in the namespace with `env` set, with a state directory
    /// of its own (`state-NAME`) and its output in `agent-NAME.log` ([`EtcdSandbox::agent_log`]).
    pub fn spawn_agent_with(&mut self, name: &str, env: &[(&str, &str)], args: &[&str]) -> usize {
        let command = self.agent_command(name, env, args, &[]);
        self.spawn_logged(name, command)
    }

    /// The agent without `--host`, in a UTS namespace of its own whose hostname is
    /// `hostname` (`unshare --uts`, then `hostname`; the agent's pid is unshare's, which
    /// execs): its name in the fleet must be the hostname. Its log is `agent-HOSTNAME.log`.
    pub fn spawn_agent_with_hostname(&mut self, hostname: &str) -> usize {
        let wrapper = [
            "unshare",
            "--uts",
            "--",
            "sh",
            "-c",
            r#"hostname "$0" && exec "$@""#,
            hostname,
        ];
        let command = self.agent_command(hostname, &[], &[], &wrapper);
        self.spawn_logged(hostname, command)
    }

    /// `[WRAPPER...] handoff --state-dir DIR/state-NAME fleet --etcd E CLIENT_ARGS agent
    /// ARGS AGENT_ARGS` in the namespace.
    fn agent_command(
        &self,
        name: &str,
        env: &[(&str, &str)],
        args: &[&str],
        wrapper: &[&str],
    ) -> Command {
        let state = self.dir.path().join(format!("state-{name}"));
        self.agent_command_in(&self.ns, &state, env, args, wrapper)
    }

    /// The same in namespace `ns` (an [`AgentHost`]'s), with state directory `state`.
    fn agent_command_in(
        &self,
        ns: &str,
        state: &Path,
        env: &[(&str, &str)],
        args: &[&str],
        wrapper: &[&str],
    ) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns])
            .args(wrapper)
            .args([HANDOFF, "--state-dir", state.to_str().expect("path")])
            .args(["fleet", "--etcd", &self.endpoint()])
            .args(&self.client_args)
            .arg("agent")
            .args(args)
            .args(&self.agent_args)
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        command
    }

    fn spawn_logged(&mut self, name: &str, mut command: Command) -> usize {
        let log =
            std::fs::File::create(self.dir.path().join(format!("agent-{name}.log"))).expect("log");
        let child = command
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("agent");
        self.agents.push(child);
        self.agents.len() - 1
    }

    /// `handoff fleet ARGS...` in the namespace with `env` set (`HANDOFF_FLEET`, ...).
    pub fn fleet_with_env(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let endpoint = self.endpoint();
        self.exec(HANDOFF, &["fleet", "--etcd", &endpoint])
            .args(&self.client_args)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("handoff fleet")
    }

    /// A client of this etcd in the test itself (plain text, no login), to read what is
    /// stored as it is — leases included — rather than as `fleet list` shows it.
    pub fn client(&self) -> Etcd {
        assert!(self.tls.is_none(), "a plain-text sandbox only");
        let access = Access::plain(&self.endpoint()).expect("endpoint");
        Etcd::connect(&access).expect("connect to the sandbox's etcd")
    }

    /// `hosts/{host}` of `fleet` as stored: the record and the lease it is attached to.
    pub fn registration(&self, fleet: &str, host: &str) -> Option<(HostRecord, i64)> {
        let keys = Keys::new(fleet).expect("fleet name");
        let (entries, _) = self.client().range(&keys.host(host)).expect("range");
        entries
            .into_iter()
            .find(|e| e.key == keys.host(host))
            .map(|e| {
                (
                    serde_json::from_slice(&e.value).expect("a host record"),
                    e.lease,
                )
            })
    }

    /// `members/{host}` of `fleet`: when its agent was last seen (registered or renewed).
    pub fn last_seen_ms(&self, fleet: &str, host: &str) -> Option<u64> {
        let keys = Keys::new(fleet).expect("fleet name");
        let (entries, _) = self.client().range(&keys.member(host)).expect("range");
        entries
            .into_iter()
            .find(|e| e.key == keys.member(host))
            .map(|e| {
                let member: MemberRecord =
                    serde_json::from_slice(&e.value).expect("a member record");
                member.last_seen_ms
            })
    }

    /// Wait until `host`'s agent has renewed its lease since now (its member record is
    /// refreshed at each renewal, every third of the TTL): a live agent, past its start.
    pub fn wait_renewed(&self, fleet: &str, host: &str, log: &dyn Fn() -> String) {
        let before = self.last_seen_ms(fleet, host);
        let started = Instant::now();
        while self.last_seen_ms(fleet, host) == before {
            assert!(
                started.elapsed() < Duration::from_secs(8),
                "{host} did not renew its lease: {before:?}\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until `hosts/{host}` of `fleet` is stored (`true`) or gone (`false`), reading etcd
    /// every 100 ms for at most `limit`; what is stored then, and how long it took. A failure
    /// shows `log()` (the agent's).
    pub fn wait_registration(
        &self,
        fleet: &str,
        host: &str,
        stored: bool,
        limit: Duration,
        log: &dyn Fn() -> String,
    ) -> (Option<(HostRecord, i64)>, Duration) {
        let started = Instant::now();
        loop {
            let registration = self.registration(fleet, host);
            if registration.is_some() == stored {
                return (registration, started.elapsed());
            }
            assert!(
                started.elapsed() < limit,
                "hosts/{host} of fleet {fleet} not {} within {limit:?}: {registration:?}\n{}",
                if stored { "stored" } else { "gone" },
                log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `fleet list --json`'s hosts, by name: alive or not.
    pub fn hosts(&self) -> Vec<(String, bool)> {
        let output = self.fleet(&["list", "--json"]);
        if !output.status.success() {
            return Vec::new();
        }
        let listed: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("list --json is JSON");
        listed["hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .map(|h| {
                (
                    h["name"].as_str().expect("name").to_string(),
                    h["alive"].as_bool().expect("alive"),
                )
            })
            .collect()
    }

    /// Wait until `host` is listed as `alive`; how long that took.
    pub fn wait_host(&self, host: &str, alive: bool, limit: Duration) -> Duration {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.hosts().iter().any(|(h, a)| h == host && *a == alive) {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{host} not listed as alive={alive} within {limit:?}: {:?}\nagent log: {}",
            self.hosts(),
            self.agent_log(host)
        );
    }
}

impl Drop for EtcdSandbox {
    fn drop(&mut self) {
        for agent in &mut self.agents {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        self.restore_traffic();
        self.stop_etcd();
        if self.own_namespace {
            let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        }
    }
}

/// The name of the table [`EtcdSandbox::cut_off`] makes for `address`.
fn cut_table(address: &str) -> String {
    format!("handoff_test_cut_{}", address.replace(['.', ':'], "_"))
}

/// SIGSTOP process `pid` and return when each of its threads is stopped: a thread running on
/// the other core could otherwise still act (answer, renew, write) just after the signal.
/// Its sockets stay open; it is a process frozen, as a VM paused or a host swapping hard is.
pub fn freeze_process(pid: u32) {
    let ok = Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill -STOP {pid}");
    let tasks = PathBuf::from(format!("/proc/{pid}/task"));
    let stopped = || {
        std::fs::read_dir(&tasks).expect("tasks").all(|task| {
            let stat = std::fs::read_to_string(task.expect("task").path().join("stat"))
                .unwrap_or_default();
            // The state follows the command's closing parenthesis.
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !stopped() {
        assert!(Instant::now() < deadline, "process {pid} did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGCONT process `pid`.
pub fn thaw_process(pid: u32) {
    let ok = Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill -CONT {pid}");
}

static HOSTS: AtomicUsize = AtomicUsize::new(0);

/// A host of the test's own for one agent: a network namespace linked to etcd's by a veth
/// (10.234.S.2 here, 10.234.S.1 on etcd's side), so that its traffic to etcd, and only its,
/// can be cut ([`EtcdSandbox::cut_off`] with [`AgentHost::address`]). The agent and the
/// namespace go on drop, also when the test fails.
pub struct AgentHost {
    pub ns: String,
    pub address: String,
    pub log: PathBuf,
    agent: Option<Child>,
    dir: tempfile::TempDir,
}

impl AgentHost {
    pub fn linked_to(etcd: &EtcdSandbox) -> AgentHost {
        let n = HOSTS.fetch_add(1, Ordering::SeqCst);
        let ns = format!("hfa-{}-{n}", std::process::id());
        let subnet = 1 + (std::process::id() as usize + n) % 250;
        let veth = format!("hfa{}x{n}", std::process::id() % 100_000);
        let (here, there) = (format!("{veth}a"), format!("{veth}b"));
        let dir = tempfile::tempdir().expect("tempdir");
        let host = AgentHost {
            address: format!("10.234.{subnet}.2"),
            log: dir.path().join("agent.log"),
            agent: None,
            dir,
            ns: ns.clone(),
        };
        let ok = Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .expect("ip");
        assert!(ok.success(), "ip netns add {ns}");
        let etcd_side = format!("10.234.{subnet}.1");
        for (namespace, args) in [
            (
                ns.as_str(),
                vec![
                    "link", "add", &here, "type", "veth", "peer", "name", &there, "netns", &etcd.ns,
                ],
            ),
            (ns.as_str(), vec!["link", "set", "lo", "up"]),
            (
                ns.as_str(),
                vec!["addr", "add", &format!("{}/30", host.address), "dev", &here],
            ),
            (ns.as_str(), vec!["link", "set", &here, "up"]),
            (
                ns.as_str(),
                vec!["route", "add", &etcd.address, "via", &etcd_side],
            ),
            (
                etcd.ns.as_str(),
                vec!["addr", "add", &format!("{etcd_side}/30"), "dev", &there],
            ),
            (etcd.ns.as_str(), vec!["link", "set", &there, "up"]),
        ] {
            let ok = Command::new("ip")
                .args(["-n", namespace])
                .args(&args)
                .status()
                .expect("ip");
            assert!(ok.success(), "ip -n {namespace} {args:?}");
        }
        host
    }

    /// `handoff fleet agent --host HOST` here, against `etcd`, with a state directory of its
    /// own, its output in [`AgentHost::log`].
    pub fn spawn_agent(&mut self, etcd: &EtcdSandbox, host: &str) {
        assert!(self.agent.is_none(), "one agent per host");
        let log = std::fs::File::create(&self.log).expect("log");
        let state = self.dir.path().join("state");
        let child = etcd
            .agent_command_in(&self.ns, &state, &[], &["--host", host], &[])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("agent");
        self.agent = Some(child);
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentHost {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        // The veth goes with the namespace, its other end in etcd's too.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// A process killed when the test ends, also when it fails.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Docker sandbox (one host) and an etcd in its client namespace, which the host reaches
/// over its veth, with the sandbox's config stored as the fleet's. etcd goes first on drop.
pub fn docker_fleet() -> (EtcdSandbox, DockerSandbox) {
    let docker = DockerSandbox::new(ComponentOptions::default());
    let etcd = EtcdSandbox::in_namespace(&docker.client, &docker.client_address(), false).started();
    let config = docker.config_path();
    etcd.fleet_ok(&["setconfig", config.to_str().expect("path")]);
    (etcd, docker)
}

/// `handoff GLOBALS... fleet agent --host h1` for a Docker sandbox's host (health rounds
/// every second, two failed ones replace), its output in `log`.
pub fn spawn_docker_agent(
    docker: &DockerSandbox,
    endpoint: &str,
    log: &Path,
    globals: &[&str],
) -> KillOnDrop {
    let file = std::fs::File::create(log).expect("log");
    let mut args = globals.to_vec();
    args.extend([
        "fleet",
        "--etcd",
        endpoint,
        "agent",
        "--host",
        "h1",
        "--health-interval",
        "1",
        "--health-failures",
        "2",
        "--insecure-accept-any-spec",
    ]);
    KillOnDrop(
        docker
            .handoff_command(&args)
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("agent"),
    )
}

/// `fleet list --json`'s component `name` on `host`, if reported.
pub fn component_status(etcd: &EtcdSandbox, host: &str, name: &str) -> Option<serde_json::Value> {
    let output = etcd.fleet(&["list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    listed["hosts"]
        .as_array()?
        .iter()
        .find(|h| h["name"] == host)?["components"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
}

/// Wait until h1 reports `state` for web; the status.
pub fn wait_state(
    etcd: &EtcdSandbox,
    state: &str,
    limit: Duration,
    log: &Path,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        if let Some(status) = component_status(etcd, "h1", "web") {
            if status["state"] == state {
                return status;
            }
        }
        assert!(
            started.elapsed() < limit,
            "web not {state} on h1 within {limit:?}: {:?}\n{}",
            component_status(etcd, "h1", "web"),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A certificate and its private key (mode 0600).
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pair {
    /// `--cert CERT --key KEY`, for `handoff fleet` and etcdctl alike.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--cert".into(),
            self.cert.to_str().expect("path").into(),
            "--key".into(),
            self.key.to_str().expect("path").into(),
        ]
    }
}

/// Certificates made by `openssl` at test time, in a directory of the test's own: CAs, server
/// certificates with an IP address (subjectAltName), expired ones, client certificates whose
/// CN is an etcd user.
pub struct Pki {
    dir: PathBuf,
    serial: AtomicUsize,
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).expect("pki dir");
        Pki {
            dir,
            serial: AtomicUsize::new(1),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("openssl");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A self-signed CA `name`.
    pub fn ca(&self, name: &str) -> Pair {
        let pair = Pair {
            cert: self.path(&format!("{name}.pem")),
            key: self.path(&format!("{name}.key")),
        };
        let subject = format!("/CN={name}");
        let mut args = vec!["req", "-x509", "-nodes"];
        args.extend(EC);
        args.extend([
            "-keyout",
            pair.key.to_str().expect("path"),
            "-out",
            pair.cert.to_str().expect("path"),
            "-days",
            "2",
            "-subj",
            &subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        self.openssl(&args);
        self.private(&pair.key);
        pair
    }

    /// A key and a certificate request for `cn`.
    fn request(&self, name: &str, cn: &str) -> (PathBuf, PathBuf) {
        let key = self.path(&format!("{name}.key"));
        let csr = self.path(&format!("{name}.csr"));
        let subject = format!("/CN={cn}");
        let mut args = vec!["req", "-new", "-nodes"];
        args.extend(EC);
        args.extend([
            "-keyout",
            key.to_str().expect("path"),
            "-out",
            csr.to_str().expect("path"),
            "-subj",
            &subject,
        ]);
        self.openssl(&args);
        self.private(&key);
        (key, csr)
    }

    fn extensions(&self, name: &str, usage: &str, ip: Option<&str>) -> PathBuf {
        let path = self.path(&format!("{name}.ext"));
        let mut text = format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage={usage}\n"
        );
        if let Some(ip) = ip {
            text.push_str(&format!("subjectAltName=IP:{ip}\n"));
        }
        std::fs::write(&path, text).expect("ext");
        path
    }

    fn sign(&self, ca: &Pair, name: &str, cn: &str, usage: &str, ip: Option<&str>) -> Pair {
        let (key, csr) = self.request(name, cn);
        let ext = self.extensions(name, usage, ip);
        let cert = self.path(&format!("{name}.pem"));
        let serial = (self.serial.fetch_add(1, Ordering::SeqCst) + 1000).to_string();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            csr.to_str().expect("path"),
            "-CA",
            ca.cert.to_str().expect("path"),
            "-CAkey",
            ca.key.to_str().expect("path"),
            "-set_serial",
            &serial,
            "-days",
            "2",
            "-extfile",
            ext.to_str().expect("path"),
            "-out",
            cert.to_str().expect("path"),
        ]);
        Pair { cert, key }
    }

    /// etcd's certificate, valid for the IP address `ip` only (it serves clients and, as its
    /// own gateway's client, itself).
    pub fn server(&self, ca: &Pair, name: &str, ip: &str) -> Pair {
        self.sign(ca, name, "etcd", "serverAuth,clientAuth", Some(ip))
    }

    /// A client certificate whose CN is the etcd user `cn`.
    pub fn client(&self, ca: &Pair, name: &str, cn: &str) -> Pair {
        self.sign(ca, name, cn, "clientAuth", None)
    }

    /// A server certificate for `ip` that expired in 2020: `openssl ca` sets the dates
    /// (`x509 -req` in OpenSSL 3.0 cannot), from a CA configuration of its own.
    pub fn expired_server(&self, ca: &Pair, name: &str, ip: &str) -> Pair {
        let (key, csr) = self.request(name, "etcd");
        let ext = self.extensions(name, "serverAuth,clientAuth", Some(ip));
        let database = self.path(&format!("{name}.index"));
        std::fs::write(&database, "").expect("index");
        let serial = self.path(&format!("{name}.serial"));
        std::fs::write(&serial, "01\n").expect("serial");
        let config = self.path(&format!("{name}.cnf"));
        std::fs::write(
            &config,
            format!(
                "[ca]\ndefault_ca = test\n[test]\ndatabase = {}\nnew_certs_dir = {}\n\
                 serial = {}\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n",
                database.display(),
                self.dir.display(),
                serial.display()
            ),
        )
        .expect("ca config");
        let cert = self.path(&format!("{name}.pem"));
        self.openssl(&[
            "ca",
            "-batch",
            "-notext",
            "-config",
            config.to_str().expect("path"),
            "-cert",
            ca.cert.to_str().expect("path"),
            "-keyfile",
            ca.key.to_str().expect("path"),
            "-in",
            csr.to_str().expect("path"),
            "-out",
            cert.to_str().expect("path"),
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20200102000000Z",
            "-extfile",
            ext.to_str().expect("path"),
        ]);
        Pair { cert, key }
    }

    fn private(&self, key: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
}
