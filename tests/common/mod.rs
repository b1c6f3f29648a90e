//! A sandbox per test: a gateway namespace (where handoff runs, like a host) with a bridge to
//! two backend namespaces and a veth to a client namespace. Unique names, so tests run in
//! parallel; everything (processes, namespaces, temp files) is torn down on drop, also when the
//! test fails.
//!
//! ```text
//!   client 10.0.2.2 ── veth ── 10.0.2.1 gateway 10.0.1.1 ── br0 ─┬─ a 10.0.1.11
//!                                                                └─ b 10.0.1.12
//! ```
//! Traffic goes only to these addresses, inside namespaces the test made.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod docker;
pub mod etcd;
pub mod stalls;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const HANDOFF: &str = env!("CARGO_BIN_EXE_handoff");

/// The variable that names handoff's crash point (src/crash.rs). The points exist only in a
/// build with the `test-hooks` feature (scripts/test.sh turns it on): a crash test run without
/// it fails here, saying so, rather than waiting for a crash that cannot come.
pub fn crash_at() -> &'static str {
    if !cfg!(feature = "test-hooks") {
        panic!(
            "the crash points need `cargo test --features test-hooks` (as scripts/test.sh runs it)"
        );
    }
    "HANDOFF_CRASH_AT"
}
pub const NETKIT: &str = env!("CARGO_BIN_EXE_handoff-netkit");

/// The gateway's address as clients see it.
pub const GATEWAY: &str = "10.0.2.1";
/// The gateway's address on the backends' bridge.
pub const BRIDGE_GATEWAY: &str = "10.0.1.1";
pub const BACKEND_A: &str = "10.0.1.11";
pub const BACKEND_B: &str = "10.0.1.12";
/// An address on the bridge where no namespace lives.
pub const NOBODY: &str = "10.0.1.13";
/// The same topology over IPv6 (see [`Sandbox::add_ipv6`]).
pub const GATEWAY6: &str = "fd00:2::1";
pub const BRIDGE_GATEWAY6: &str = "fd00:1::1";
pub const BACKEND_A6: &str = "fd00:1::11";
pub const BACKEND_B6: &str = "fd00:1::12";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Root is needed for namespaces, nftables, conntrack and Docker.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The kernel and Docker tests need root. They are `#[ignore]`d with that reason, so that a
/// plain `cargo test` reports them as not run; `scripts/test.sh` runs them as root
/// (`--include-ignored`). Run without root anyway, they fail: a test that did not run must
/// not say "ok".
#[macro_export]
macro_rules! require_root {
    () => {
        assert!(
            common::is_root(),
            "this test needs root (network namespaces, nftables, conntrack): run `sudo \
             scripts/test.sh`"
        );
    };
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

pub struct Sandbox {
    pub gateway: String,
    pub a: String,
    pub b: String,
    pub client: String,
    pub dir: tempfile::TempDir,
    children: Vec<Child>,
}

/// A config with one address component `web`: external 80 -> backend 8080, an http ready check.
pub fn web_config(ready_timeout_ms: u64, drain_timeout_ms: u64) -> String {
    format!(
        r#"{{"components": [{{"name": "web", "ports": [{{"external": 80, "container": 8080}}],
            "readyChecks": [{{"kind": "http", "port": 8080, "path": "/"}}],
            "readyTimeout": {ready_timeout_ms}, "drainTimeout": {drain_timeout_ms}}}]}}"#
    )
}

impl Sandbox {
    pub fn new(config: &str) -> Sandbox {
        let id = format!(
            "ho{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("handoff.json"), config).expect("config");
        let sandbox = Sandbox {
            gateway: format!("{id}-gw"),
            a: format!("{id}-a"),
            b: format!("{id}-b"),
            client: format!("{id}-c"),
            dir,
            children: Vec::new(),
        };
        sandbox.build();
        sandbox
    }

    fn build(&self) {
        for ns in [&self.gateway, &self.a, &self.b, &self.client] {
            run("ip", &["netns", "add", ns]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        let gw = self.gateway.as_str();
        run("ip", &["-n", gw, "link", "add", "br0", "type", "bridge"]);
        run(
            "ip",
            &["-n", gw, "addr", "add", "10.0.1.1/24", "dev", "br0"],
        );
        run("ip", &["-n", gw, "link", "set", "br0", "up"]);
        for (ns, host, port) in [(&self.a, BACKEND_A, "va"), (&self.b, BACKEND_B, "vb")] {
            run(
                "ip",
                &[
                    "-n", gw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns",
                    ns,
                ],
            );
            run(
                "ip",
                &["-n", gw, "link", "set", port, "master", "br0", "up"],
            );
            // As Docker does for its veths: with br_netfilter loaded, a backend reaching itself
            // through the host is bridged back out of the port it came in on.
            run(
                "ip",
                &[
                    "-n",
                    gw,
                    "link",
                    "set",
                    port,
                    "type",
                    "bridge_slave",
                    "hairpin",
                    "on",
                ],
            );
            run(
                "ip",
                &[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{host}/24"),
                    "dev",
                    "eth0",
                ],
            );
            run("ip", &["-n", ns, "link", "set", "eth0", "up"]);
            run(
                "ip",
                &["-n", ns, "route", "add", "default", "via", BRIDGE_GATEWAY],
            );
        }
        let client = self.client.as_str();
        run(
            "ip",
            &[
                "-n", gw, "link", "add", "vc", "type", "veth", "peer", "name", "eth0", "netns",
                client,
            ],
        );
        run("ip", &["-n", gw, "addr", "add", "10.0.2.1/24", "dev", "vc"]);
        run("ip", &["-n", gw, "link", "set", "vc", "up"]);
        run(
            "ip",
            &["-n", client, "addr", "add", "10.0.2.2/24", "dev", "eth0"],
        );
        run("ip", &["-n", client, "link", "set", "eth0", "up"]);
        run(
            "ip",
            &["-n", client, "route", "add", "default", "via", GATEWAY],
        );
        run(
            "ip",
            &[
                "netns",
                "exec",
                gw,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        );
    }

    /// Give every namespace its IPv6 address beside its IPv4 one (no duplicate address
    /// detection: the addresses are usable at once), the routes, and forwarding.
    pub fn add_ipv6(&self) {
        let (gw, client) = (self.gateway.as_str(), self.client.as_str());
        for (ns, address, dev) in [
            (gw, "fd00:1::1/64", "br0"),
            (gw, "fd00:2::1/64", "vc"),
            (self.a.as_str(), "fd00:1::11/64", "eth0"),
            (self.b.as_str(), "fd00:1::12/64", "eth0"),
            (client, "fd00:2::2/64", "eth0"),
        ] {
            run(
                "ip",
                &["-n", ns, "addr", "add", address, "dev", dev, "nodad"],
            );
        }
        for (ns, via) in [
            (self.a.as_str(), BRIDGE_GATEWAY6),
            (self.b.as_str(), BRIDGE_GATEWAY6),
            (client, GATEWAY6),
        ] {
            run(
                "ip",
                &["-n", ns, "-6", "route", "add", "default", "via", via],
            );
        }
        run(
            "ip",
            &[
                "netns",
                "exec",
                gw,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.forwarding=1",
            ],
        );
        // The link-local addresses of the links just brought up are still tentative (duplicate
        // address detection, ~1 s): until then the gateway cannot send a neighbour
        // solicitation from br0, and the first forwarded connections time out.
        for ns in [gw, self.a.as_str(), self.b.as_str(), client] {
            wait_for(
                Duration::from_secs(10),
                || {
                    let listed = Command::new("ip")
                        .args(["-n", ns, "-6", "addr", "show", "tentative"])
                        .output()
                        .expect("ip");
                    listed.stdout.is_empty()
                },
                "IPv6 duplicate address detection to end",
            );
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("handoff.json")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Start a netkit HTTP server named `name` on port 8080 in `ns` (and its UDP answerer on
    /// 8053) and wait until it listens.
    pub fn serve(&mut self, ns: &str, name: &str) {
        self.serve_on(ns, name, "0.0.0.0");
    }

    /// The same on `[::]`: one socket for both families (IPv4 clients arrive mapped).
    pub fn serve_both_families(&mut self, ns: &str, name: &str) {
        self.serve_on(ns, name, "[::]");
    }

    fn serve_on(&mut self, ns: &str, name: &str, any: &str) {
        self.serve_at(
            ns,
            name,
            &format!("{any}:8080"),
            &["--udp", &format!("{any}:8053")],
            "the test server to listen",
        );
    }

    /// Start a netkit HTTP server named `name` listening on `listen` in `ns` (netkit's
    /// `extra` arguments after), and wait until it listens; `what` names it in a time-out.
    pub fn serve_at(&mut self, ns: &str, name: &str, listen: &str, extra: &[&str], what: &str) {
        let ready = self.dir.path().join(format!("{name}.ready"));
        let child = Command::new("ip")
            .args(["netns", "exec", ns, NETKIT, "serve", "--listen", listen])
            .args(["--name", name])
            .args(extra)
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("netkit serve");
        self.children.push(child);
        wait_for(Duration::from_secs(10), || ready.exists(), what);
    }

    /// Spawn `command`; it is killed when the sandbox goes.
    pub fn spawn_child(&mut self, command: &mut Command) {
        self.children.push(command.spawn().expect("spawn"));
    }

    fn handoff_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.gateway, HANDOFF, "--config"])
            .arg(self.config_path())
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// Serve "a" and "b" and point web at a: where most tests start.
    pub fn serve_both_on_a(&mut self) {
        self.serve(&self.a.clone(), "a");
        self.serve(&self.b.clone(), "b");
        self.handoff_ok(&["switch", "web", "--to", BACKEND_A]);
    }

    /// Open a connection to web (served by a) from the client, keep it `ms` milliseconds, and
    /// switch web to b meanwhile: a flow that a now has to drain.
    pub fn hold_on_a_then_switch_to_b(&self, ms: u64) -> Child {
        let mut hold = self.spawn_netkit(
            &self.client,
            &[
                "hold",
                "--target",
                &format!("{GATEWAY}:80"),
                "--ms",
                &ms.to_string(),
            ],
        );
        let line = read_line(&mut hold);
        assert!(line.contains(r#""backend":"a""#), "{line}");
        self.handoff_ok(&["switch", "web", "--to", BACKEND_B]);
        hold
    }

    /// Run handoff in the gateway namespace and wait for it.
    pub fn handoff(&self, args: &[&str]) -> Output {
        self.handoff_command(args).output().expect("run handoff")
    }

    /// Run handoff and insist on success.
    pub fn handoff_ok(&self, args: &[&str]) -> String {
        succeeded(args, self.handoff(args))
    }

    /// Start handoff in the gateway namespace without waiting (stdout and stderr piped).
    pub fn spawn_handoff(&self, args: &[&str]) -> Child {
        self.handoff_command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn handoff")
    }

    fn netkit_command(&self, ns: &str, args: &[&str]) -> Command {
        stalls::watch_the_machine();
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns, NETKIT])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// Run netkit in `ns` and parse the JSON line it prints.
    pub fn netkit(&self, ns: &str, args: &[&str]) -> serde_json::Value {
        let output = self.netkit_command(ns, args).output().expect("run netkit");
        parse_json_line(&output.stdout)
    }

    /// Start netkit in `ns` without waiting.
    pub fn spawn_netkit(&self, ns: &str, args: &[&str]) -> Child {
        self.netkit_command(ns, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn netkit")
    }

    /// A short burst of new-connection requests from `ns` to `target`.
    pub fn requests(&self, ns: &str, target: &str, millis: u64) -> serde_json::Value {
        self.netkit(
            ns,
            &[
                "load",
                "--target",
                target,
                "--connections",
                "2",
                "--duration-ms",
                &millis.to_string(),
            ],
        )
    }

    /// The whole ruleset of the gateway namespace.
    pub fn ruleset(&self) -> String {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.gateway, "nft", "list", "ruleset"])
            .output()
            .expect("nft list ruleset");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Run an nft command in the gateway namespace.
    pub fn nft(&self, script: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.gateway, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write nft script");
        assert!(
            child.wait().expect("nft").success(),
            "nft script failed: {script}"
        );
    }

    /// Run handoff with extra environment (the `ip` binary is resolved before, so PATH can be
    /// taken away from handoff itself). Also writes `docker.json`, a config with a Docker
    /// component, next to the main config.
    pub fn handoff_with_env(
        &self,
        config: Option<&Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Output {
        self.handoff_custom(config, None, args, env)
    }

    /// Like `handoff_with_env`, with another state directory too.
    pub fn handoff_custom(
        &self,
        config: Option<&Path>,
        state: Option<&Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Output {
        std::fs::write(
            self.dir.path().join("docker.json"),
            r#"{"components": [{"name": "app", "repo": "handoff-none", "pull": "never",
                "ports": [{"external": 81, "container": 80}]}]}"#,
        )
        .expect("docker.json");
        let ip = which("ip");
        let mut command = Command::new(ip);
        command
            .args(["netns", "exec", &self.gateway, HANDOFF, "--config"])
            .arg(
                config
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| self.config_path()),
            )
            .arg("--state-dir")
            .arg(
                state
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| self.state_dir()),
            )
            .args(args)
            .stdin(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().expect("run handoff")
    }

    pub fn list_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.handoff_ok(&["list", "--json"])).expect("list --json is JSON")
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in [&self.client, &self.a, &self.b, &self.gateway] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Insist that handoff run with `args` succeeded; its stdout.
pub fn succeeded(args: &[&str], output: Output) -> String {
    assert!(
        output.status.success(),
        "handoff {args:?} failed ({:?}): {}{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Parse the last non-empty line of a process's stdout as JSON.
pub fn parse_json_line(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// How long after `drain --wait` returns a held connection may still take to report that it
/// closed: the drain sees the flow end in conntrack as the FINs pass, a moment before the
/// hold process exits.
const HOLD_EXIT_GRACE: Duration = Duration::from_millis(200);

/// Watch a held connection and a `drain --wait` started after the switch: the hold must end
/// cleanly (it proves its connection survived, see netkit `hold`), the drain must not return
/// while the hold is open, and must exit 0. Returns the drain's lag after the hold closed
/// (zero when the drain was first by less than [`HOLD_EXIT_GRACE`]). Both are killed on failure.
pub fn drain_outlives_hold(mut hold: Child, mut drain: Child, limit: Duration) -> Duration {
    let started = Instant::now();
    let kill_both = |hold: &mut Child, drain: &mut Child| {
        for child in [hold, drain] {
            let _ = child.kill();
            let _ = child.wait();
        }
    };
    loop {
        if started.elapsed() > limit {
            kill_both(&mut hold, &mut drain);
            panic!("neither the hold nor the drain ended within {limit:?}");
        }
        if let Some(hold_status) = hold.try_wait().expect("hold") {
            let closed = Instant::now();
            let output = hold.wait_with_output().expect("hold output");
            assert!(
                hold_status.success(),
                "the held connection did not survive: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            return finish_drain_after(drain, closed, limit);
        }
        if drain.try_wait().expect("drain").is_some() {
            let returned = Instant::now();
            while returned.elapsed() < HOLD_EXIT_GRACE {
                if hold.try_wait().expect("hold").is_some() {
                    return finish_drain_after(drain, Instant::now(), limit);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            kill_both(&mut hold, &mut drain);
            panic!("drain --wait returned while the held flow was still open");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Wait for the drain after the hold closed at `hold_closed`; insist it exits 0.
fn finish_drain_after(mut drain: Child, hold_closed: Instant, limit: Duration) -> Duration {
    loop {
        if let Some(status) = drain.try_wait().expect("drain") {
            let lag = hold_closed.elapsed();
            let output = drain.wait_with_output().expect("drain output");
            assert!(
                status.success(),
                "drain --wait failed ({status}): {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            return lag;
        }
        if hold_closed.elapsed() > limit {
            let _ = drain.kill();
            let _ = drain.wait();
            panic!("drain --wait did not return within {limit:?} of the last flow closing");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A netkit load report with no failed request and none that stalled: a request that needed a
/// second SYN (1 s) or more is a fault here, even when it ended well — unless the machine
/// itself was paused for enough of it ([`stalls`] says when, and prints it).
pub fn assert_nothing_failed_or_stalled(load: &serde_json::Value, what: &str) {
    assert_eq!(load["failed"], 0, "{what}: {load}; {}", stalls::counters());
    let slowest = load["slowest_ms"].as_u64().unwrap_or(u64::MAX);
    if slowest < stalls::STALL_MS {
        return;
    }
    let (explained, report) = stalls::explained(load);
    assert!(
        explained,
        "{what}: a request took {slowest} ms: {load}; {report}; {}",
        stalls::counters()
    );
    eprintln!(
        "{what}: the slowest request took {slowest} ms, within a pause of the whole machine \
         (excused): {report}; {}",
        stalls::counters()
    );
}

/// A load report with no failure and some requests answered by `backend`.
pub fn assert_served_by(load: &serde_json::Value, backend: &str) {
    assert_eq!(load["failed"], 0, "{load}");
    assert!(
        load["by_backend"][backend].as_u64().unwrap_or(0) > 0,
        "{backend} answered: {load}"
    );
}

/// Reads a child's output line by line on a thread, noting when each line arrived, so a test
/// can time one step of a run (not its whole run).
pub fn timed_lines(
    output: impl std::io::Read + Send + 'static,
) -> std::thread::JoinHandle<Vec<(String, Instant)>> {
    use std::io::BufRead;
    std::thread::spawn(move || {
        std::io::BufReader::new(output)
            .lines()
            .map_while(Result::ok)
            .map(|line| (line, Instant::now()))
            .collect()
    })
}

/// Wait for a spawned child and parse its JSON line.
pub fn finish_json(child: Child) -> serde_json::Value {
    let output = child.wait_with_output().expect("wait");
    parse_json_line(&output.stdout)
}

/// Poll `done` every 10 ms for up to `limit`; panic naming `what` when it never holds.
pub fn wait_for(limit: Duration, mut done: impl FnMut() -> bool, what: &str) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Read one line from a child's stdout (blocking).
pub fn read_line(child: &mut Child) -> String {
    use std::io::{BufRead, BufReader, Read};
    let stdout = child.stdout.as_mut().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout.by_ref().take(4096))
        .read_line(&mut line)
        .expect("read line");
    line
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The absolute path of a program on PATH.
pub fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{program} not found on PATH"))
}

/// A 64 KiB tmpfs mounted over a directory for the test's lifetime: a disk that fills up.
pub struct TinyTmpfs(PathBuf);

impl TinyTmpfs {
    pub fn mount(dir: &Path) -> TinyTmpfs {
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=64k,mode=0700",
                "tmpfs",
                path_str(dir),
            ],
        );
        TinyTmpfs(dir.to_path_buf())
    }
}

impl Drop for TinyTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fill the filesystem holding `dir` until writes fail.
pub fn fill(dir: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(dir.join("ballast")).expect("ballast");
    let chunk = [0u8; 4096];
    for _ in 0..10_000 {
        if file.write_all(&chunk).is_err() || file.sync_all().is_err() {
            return;
        }
    }
    panic!("the tmpfs never filled up");
}
