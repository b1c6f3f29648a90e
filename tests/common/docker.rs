//! A Docker sandbox per test: images built locally with `docker import` (busybox-static plus
//! the netkit server, whose name tells which version answered), a client namespace reaching
//! the host over a veth, and a handoff table, component, external port and state directory of
//! its own. Drop removes the containers, images, table, DOCKER-USER rule and namespace, also
//! when the test fails.
//!
//! ```text
//!   client 10.231.N.2 ── veth ── 10.231.N.1 host (dockerd, handoff) ── docker0 ── containers
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use handoff::kernel::netfilter::label::flow_label;

use super::{parse_json_line, succeeded, HANDOFF, NETKIT};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The conntrack label bits of the sandboxes' tables that exist now. handoff derives a table's
/// bit from its name and refuses a second table with a bit another handoff table on the host
/// has (63 bits for named tables: parallel sandboxes would meet one another by the birthday
/// rule), so each sandbox takes a name whose bit is free, and gives it back when it goes.
static LABELS_IN_USE: Mutex<BTreeSet<u8>> = Mutex::new(BTreeSet::new());

/// `id`, or `id` with a letter after it, whose label bit neither another sandbox of this run
/// nor a table left on the host has.
fn table_with_a_free_label(id: &str) -> String {
    let listed = sh("nft", &["list", "tables", "inet"]);
    let on_the_host: BTreeSet<u8> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("table inet "))
        .map(|name| flow_label(name.trim()))
        .collect();
    let mut in_use = LABELS_IN_USE.lock().unwrap_or_else(|e| e.into_inner());
    let table = std::iter::once(id.to_string())
        .chain(('a'..='z').map(|letter| format!("{id}{letter}")))
        .find(|name| {
            let label = flow_label(name);
            !in_use.contains(&label) && !on_the_host.contains(&label)
        })
        .expect("a free label bit among 27 names");
    in_use.insert(flow_label(&table));
    table
}

/// Is a Docker daemon answering? The suite needs one (scripts/test.sh starts it).
pub fn docker_available() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn sh(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

pub fn must(program: &str, args: &[&str]) -> String {
    let output = sh(program, args);
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The IPv4 address of the host's interface `interface`.
pub fn ipv4_of(interface: &str) -> String {
    let listed = must("ip", &["-4", "-o", "addr", "show", "dev", interface]);
    listed
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .unwrap_or_else(|| panic!("{interface} has no IPv4 address: {listed}"))
        .to_string()
}

/// The label of the containers a test runs itself (not handoff's), so that they go with the
/// sandbox.
const FOREIGN_LABEL: &str = "handoff-test.sandbox";

pub struct DockerSandbox {
    pub id: String,
    pub table: String,
    pub repo: String,
    pub client: String,
    pub host_address: String,
    /// The component's external port: `20000 + (pid % 1000) * 10 + n` for the run's n-th
    /// sandbox, so `port + 1` is the next sandbox's. A test that needs a second port takes
    /// one more than the run's sandboxes away (see the link test).
    pub port: u16,
    pub dir: tempfile::TempDir,
}

/// Options of the component under test.
pub struct ComponentOptions {
    pub ready_timeout_ms: u64,
    pub drain_timeout_ms: u64,
    pub pull: &'static str,
    pub stop_timeout_s: u64,
    /// A user-defined Docker network of the sandbox's own instead of `bridge`, where a test
    /// can hand out addresses itself (`docker run --ip`).
    pub own_network: bool,
    /// That network has IPv6 too (fd00:232:S::/64), and so has the client (fd00:231:S::2,
    /// the host's side fd00:231:S::1: [`DockerSandbox::target6`]).
    pub ipv6: bool,
}

impl Default for ComponentOptions {
    fn default() -> Self {
        ComponentOptions {
            ready_timeout_ms: 10_000,
            drain_timeout_ms: 60_000,
            pull: "never",
            stop_timeout_s: 2,
            own_network: false,
            ipv6: false,
        }
    }
}

impl DockerSandbox {
    pub fn new(options: ComponentOptions) -> DockerSandbox {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("hd{}x{n}", std::process::id());
        let subnet = 1 + (std::process::id() as usize + n) % 250;
        let sandbox = DockerSandbox {
            table: table_with_a_free_label(&id),
            // A registry on loopback that refuses at once: pulls fail fast and locally, and no
            // traffic leaves the machine.
            repo: format!("127.0.0.1:1/handoff-test-{id}"),
            client: format!("{id}-c"),
            host_address: format!("10.231.{subnet}.1"),
            port: 20_000 + (std::process::id() % 1000) as u16 * 10 + n as u16,
            dir: tempfile::tempdir().expect("tempdir"),
            id,
        };
        sandbox.build_images();
        sandbox.build_client(subnet);
        if options.own_network || options.ipv6 {
            let subnet4 = format!("10.232.{subnet}.0/24");
            let subnet6 = format!("fd00:232:{subnet}::/64");
            let mut args = vec!["network", "create", "--subnet", &subnet4];
            if options.ipv6 {
                args.extend(["--ipv6", "--subnet", &subnet6]);
                sandbox.add_client_ipv6(subnet);
            }
            args.push(&sandbox.id);
            must("docker", &args);
        }
        sandbox.write_config(&options);
        sandbox
    }

    /// v1 and v2 serve with their name (HTTP on 8080, UDP on 8053); v3 too, but only two
    /// seconds after it starts (a window to interrupt an update before its new container is
    /// ready); `stubborn` serves under a PID 1 that ignores SIGTERM (only the stop's SIGKILL
    /// ends it); `broken` never listens.
    fn build_images(&self) {
        let root = self.dir.path().join("rootfs");
        for dir in [
            "bin",
            "usr/local/bin",
            "lib/x86_64-linux-gnu",
            "lib64",
            "tmp",
            "signals",
        ] {
            std::fs::create_dir_all(root.join(dir)).expect("rootfs dir");
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static");
        for applet in ["sh", "sleep", "echo", "cat", "wget"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("applet");
        }
        std::fs::copy(NETKIT, root.join("usr/local/bin/handoff-netkit")).expect("netkit");
        // netkit is linked against the host's glibc: carry its libraries along.
        let ldd = must("ldd", &[NETKIT]);
        for path in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
            let target = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(target.parent().expect("parent")).expect("lib dir");
            std::fs::copy(path, &target).expect("copy library");
        }
        let tarball = self.dir.path().join("rootfs.tar");
        must("tar", &["-C", path(&root), "-cf", path(&tarball), "."]);
        for (tag, cmd) in [
            ("v1", serve_cmd("v1")),
            ("v2", serve_cmd("v2")),
            ("v3", slow_serve_cmd("v3")),
            ("stubborn", stubborn_serve_cmd("stubborn")),
            (
                "broken",
                r#"CMD ["/bin/sh", "-c", "echo broken: never listens; exec sleep 3600"]"#
                    .to_string(),
            ),
        ] {
            must(
                "docker",
                &[
                    "import",
                    "-c",
                    &cmd,
                    path(&tarball),
                    &format!("{}:{tag}", self.repo),
                ],
            );
        }
    }

    fn build_client(&self, subnet: usize) {
        let host_if = format!("{}h", self.id);
        must("ip", &["netns", "add", &self.client]);
        must("ip", &["-n", &self.client, "link", "set", "lo", "up"]);
        must(
            "ip",
            &[
                "link",
                "add",
                &host_if,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &self.client,
            ],
        );
        must(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", self.host_address),
                "dev",
                &host_if,
            ],
        );
        must("ip", &["link", "set", &host_if, "up"]);
        let client_address = format!("10.231.{subnet}.2/24");
        must(
            "ip",
            &[
                "-n",
                &self.client,
                "addr",
                "add",
                &client_address,
                "dev",
                "eth0",
            ],
        );
        must("ip", &["-n", &self.client, "link", "set", "eth0", "up"]);
        must(
            "ip",
            &[
                "-n",
                &self.client,
                "route",
                "add",
                "default",
                "via",
                &self.host_address,
            ],
        );
    }

    /// The client's IPv6 side: fd00:231:S::2, routed through the host's fd00:231:S::1.
    fn add_client_ipv6(&self, subnet: usize) {
        let host_if = format!("{}h", self.id);
        let host = format!("fd00:231:{subnet}::1");
        must(
            "ip",
            &[
                "addr",
                "add",
                &format!("{host}/64"),
                "dev",
                &host_if,
                "nodad",
            ],
        );
        let client = format!("fd00:231:{subnet}::2/64");
        must(
            "ip",
            &[
                "-n",
                &self.client,
                "addr",
                "add",
                &client,
                "dev",
                "eth0",
                "nodad",
            ],
        );
        must(
            "ip",
            &[
                "-n",
                &self.client,
                "-6",
                "route",
                "add",
                "default",
                "via",
                &host,
            ],
        );
    }

    /// The component's port at the host's IPv6 address on the client's link.
    pub fn target6(&self) -> String {
        let subnet = self.host_address.split('.').nth(2).expect("10.231.S.1");
        format!("[fd00:231:{subnet}::1]:{}", self.port)
    }

    fn write_config(&self, options: &ComponentOptions) {
        let signals = self.dir.path().join("signals");
        let config = format!(
            r#"{{"components": [{{
                "name": "web", "repo": "{repo}", "tag": "v1", "pull": "{pull}",
                "ports": [{{"external": {port}, "container": 8080}}],
                "readyChecks": [{{"kind": "http", "port": 8080, "path": "/"}}],
                "healthChecks": [{{"kind": "http", "port": 8080, "path": "/health", "timeout": 1}}],
                "readyTimeout": {ready}, "drainTimeout": {drain}, "stopTimeout": {stop},
                "network": "{network}",
                "bindings": [{{"external": "{signals}/{{container_id}}", "volume": "/signals"}}],
                "environmentVariables": [{{"name": "HANDOFF_TEST", "value": "1"}}],
                "terminationSignals": [
                    {{"kind": "http", "port": 8080, "path": "/quit"}},
                    {{"kind": "exec", "exec_command": ["/bin/sh", "-c", "echo exec >> /signals/exec.log"]}}
                ]
            }}]}}"#,
            repo = self.repo,
            port = self.port,
            ready = options.ready_timeout_ms,
            drain = options.drain_timeout_ms,
            pull = options.pull,
            stop = options.stop_timeout_s,
            network = if options.own_network || options.ipv6 {
                &self.id
            } else {
                "bridge"
            },
            signals = path(&signals),
        );
        std::fs::write(self.config_path(), config).expect("config");
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("handoff.json")
    }

    /// Where container instance `instance` recorded the signals it received.
    pub fn signals_of(&self, instance: &str) -> PathBuf {
        self.dir.path().join("signals").join(instance)
    }

    /// When container instance `instance` recorded its first `POST /quit` (the http
    /// termination signal), if it did.
    pub fn quit_signal_at(&self, instance: &str) -> Option<SystemTime> {
        let log = std::fs::read_to_string(self.signals_of(instance).join("requests.log")).ok()?;
        let ms: u64 = log
            .lines()
            .find_map(|line| line.strip_prefix("POST /quit "))?
            .trim()
            .parse()
            .ok()?;
        Some(UNIX_EPOCH + Duration::from_millis(ms))
    }

    /// The client namespace's address.
    pub fn client_address(&self) -> String {
        let (network, _) = self.host_address.rsplit_once('.').expect("an IPv4 address");
        format!("{network}.2")
    }

    pub fn target(&self) -> String {
        format!("{}:{}", self.host_address, self.port)
    }

    pub fn handoff_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(HANDOFF);
        command
            .arg("--config")
            .arg(self.config_path())
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .args(["--table", &self.table])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// The state directory [`DockerSandbox::handoff_command`] gives handoff.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Take the state lock as another handoff run would (flock on `STATE_DIR/lock`), until
    /// the guard is dropped: a mutating run meanwhile waits up to its `--lock-timeout`, then
    /// fails.
    pub fn hold_state_lock(&self) -> nix::fcntl::Flock<std::fs::File> {
        std::fs::create_dir_all(self.state_dir()).expect("state dir");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.state_dir().join("lock"))
            .expect("lock file");
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| errno)
            .expect("the state lock is free")
    }

    pub fn handoff(&self, args: &[&str]) -> Output {
        self.handoff_command(args).output().expect("run handoff")
    }

    /// Run handoff with only the capabilities the shipped systemd units leave it
    /// (`CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW`, no new privileges), insist on
    /// success, and return what it wrote to stderr.
    pub fn handoff_as_the_units_run_it(&self, args: &[&str]) -> String {
        let plain = self.handoff_command(args);
        let mut command = Command::new("setpriv");
        command
            .args([
                "--bounding-set",
                "-all,+net_admin,+net_raw",
                "--inh-caps",
                "-all",
                "--no-new-privs",
                "--",
            ])
            .arg(plain.get_program())
            .args(plain.get_args())
            .stdin(Stdio::null());
        let output = command.output().expect("run handoff under setpriv");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        succeeded(args, output);
        stderr
    }

    pub fn handoff_ok(&self, args: &[&str]) -> String {
        succeeded(args, self.handoff(args))
    }

    pub fn list_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.handoff_ok(&["list", "--json"])).expect("list --json")
    }

    /// Narrow the client's ephemeral ports to `low..=high`: one client tuple comes back after
    /// a few thousand connections instead of tens of thousands, so that under load a tuple
    /// that went to the old container is reused while that container is being retired.
    pub fn narrow_client_ports(&self, low: u16, high: u16) {
        must(
            "ip",
            &[
                "netns",
                "exec",
                &self.client,
                "sysctl",
                "-qw",
                &format!("net.ipv4.ip_local_port_range={low} {high}"),
            ],
        );
    }

    /// netkit in the client namespace.
    pub fn client_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.client, NETKIT])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    pub fn client_json(&self, args: &[&str]) -> serde_json::Value {
        parse_json_line(&self.client_command(args).output().expect("netkit").stdout)
    }

    /// The arguments of a netkit load from the client towards the component: `connections`
    /// workers, each request a new connection, for `ms`; then `extra`.
    fn load_args<'a>(
        &'a self,
        target: &'a str,
        connections: &'a str,
        ms: &'a str,
        extra: &[&'a str],
    ) -> Vec<&'a str> {
        let mut args = vec![
            "load",
            "--target",
            target,
            "--connections",
            connections,
            "--duration-ms",
            ms,
        ];
        args.extend_from_slice(extra);
        args
    }

    /// A load from the client in the background; `finish_json` gives its report.
    pub fn spawn_load(&self, connections: u32, ms: u64) -> std::process::Child {
        self.spawn_load_to(&self.target(), connections, ms)
    }

    /// The same towards `target` (e.g. [`DockerSandbox::target6`]).
    pub fn spawn_load_to(&self, target: &str, connections: u32, ms: u64) -> std::process::Child {
        super::stalls::watch_the_machine();
        let (connections, ms) = (connections.to_string(), ms.to_string());
        self.client_command(&self.load_args(target, &connections, &ms, &[]))
            .spawn()
            .expect("load")
    }

    /// A load from the client, waited for: its report.
    pub fn load(&self, connections: u32, ms: u64, extra: &[&str]) -> serde_json::Value {
        self.load_to(&self.target(), connections, ms, extra)
    }

    /// The same towards `target`.
    pub fn load_to(
        &self,
        target: &str,
        connections: u32,
        ms: u64,
        extra: &[&str],
    ) -> serde_json::Value {
        super::stalls::watch_the_machine();
        let (connections, ms) = (connections.to_string(), ms.to_string());
        self.client_json(&self.load_args(target, &connections, &ms, extra))
    }

    /// (id, image, running) of every container of this sandbox.
    pub fn containers(&self) -> Vec<(String, String, bool)> {
        let filter = format!("label=handoff.table={}", self.table);
        let listing = must(
            "docker",
            &[
                "ps",
                "-a",
                "--filter",
                &filter,
                "--format",
                "{{.ID}} {{.Image}} {{.State}}",
            ],
        );
        listing
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                Some((
                    parts.next()?.to_string(),
                    parts.next()?.to_string(),
                    parts.next()? == "running",
                ))
            })
            .collect()
    }

    /// The instance label of a container.
    pub fn instance_of(&self, id: &str) -> String {
        must(
            "docker",
            &[
                "inspect",
                "--format",
                "{{index .Config.Labels \"handoff.instance\"}}",
                id,
            ],
        )
    }

    /// Our rule in DOCKER-USER, if present.
    pub fn docker_user_rule(&self) -> bool {
        self.docker_user_rules() > 0
    }

    /// How many copies of our rule DOCKER-USER holds.
    pub fn docker_user_rules(&self) -> usize {
        self.our_rules("DOCKER-USER")
    }

    /// How many copies of our fallback rule the end of FORWARD holds.
    pub fn forward_fallback_rules(&self) -> usize {
        self.our_rules("FORWARD")
    }

    /// Our accept rules in `chain` (in DOCKER-USER, our jump to Docker's isolation chain is
    /// not counted: it opens nothing).
    fn our_rules(&self, chain: &str) -> usize {
        let comment = format!("handoff:{}", self.table);
        must("iptables", &["-S", chain])
            .lines()
            .filter(|line| {
                line.ends_with("-j ACCEPT")
                    && line
                        .split_whitespace()
                        .any(|w| w.trim_matches('"') == comment)
            })
            .count()
    }

    /// The address the kernel's map sends web's new connections to.
    pub fn routed_address(&self) -> Option<String> {
        // The map that the chain's first IPv4 rule looks up: a switch puts a new generation of
        // it in front of the old one (src/kernel/netfilter/generations.rs).
        let chain = sh(
            "nft",
            &["list", "chain", "inet", &self.table, "component_web"],
        );
        let chain = String::from_utf8_lossy(&chain.stdout);
        let map = chain
            .split("map @")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next())
            .find(|map| map.starts_with("backend_web"))?;
        let output = sh("nft", &["-j", "list", "map", "inet", &self.table, map]);
        let listing: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        listing["nftables"]
            .as_array()?
            .iter()
            .find_map(|o| o.get("map"))?["elem"][0][1]["concat"][0]
            .as_str()
            .map(str::to_string)
    }

    /// The hairpin set's elements.
    pub fn hairpin_sources(&self) -> Vec<String> {
        let output = sh(
            "nft",
            &["-j", "list", "set", "inet", &self.table, "hairpin_sources"],
        );
        let listing: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        listing["nftables"]
            .as_array()
            .and_then(|a| a.iter().find_map(|o| o.get("set")))
            .and_then(|s| s["elem"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e.as_str().map(str::to_string))
            .collect()
    }

    /// The address of a container on the default bridge.
    pub fn address_of(&self, id: &str) -> String {
        must(
            "docker",
            &[
                "inspect",
                "--format",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                id,
            ],
        )
    }

    /// Run a container that is not handoff's (someone else's service) from image `tag`, with
    /// `args` for `docker run` (e.g. `--network`, `--ip`); removed with the sandbox. Its id.
    pub fn run_foreign(&self, tag: &str, args: &[&str]) -> String {
        let label = format!("{FOREIGN_LABEL}={}", self.table);
        let image = format!("{}:{tag}", self.repo);
        let mut all = vec!["run", "-d", "--label", &label];
        all.extend_from_slice(args);
        all.push(&image);
        must("docker", &all)
    }

    /// Delete handoff's table, as a reboot or an operator would.
    pub fn delete_table(&self) {
        must("nft", &["delete", "table", "inet", &self.table]);
    }

    pub fn table_exists(&self) -> bool {
        sh("nft", &["list", "table", "inet", &self.table])
            .status
            .success()
    }
}

fn serve_cmd(name: &str) -> String {
    format!(
        r#"CMD ["/usr/local/bin/handoff-netkit", "serve", "--listen", "[::]:8080", "--name", "{name}", "--record-dir", "/signals", "--udp", "0.0.0.0:8053"]"#
    )
}

fn slow_serve_cmd(name: &str) -> String {
    format!(
        r#"CMD ["/bin/sh", "-c", "sleep 2; exec /usr/local/bin/handoff-netkit serve --listen 0.0.0.0:8080 --name {name} --record-dir /signals"]"#
    )
}

fn stubborn_serve_cmd(name: &str) -> String {
    format!(
        r#"CMD ["/bin/sh", "-c", "trap '' TERM; /usr/local/bin/handoff-netkit serve --listen 0.0.0.0:8080 --name {name} --record-dir /signals & wait"]"#
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

impl Drop for DockerSandbox {
    fn drop(&mut self) {
        // handoff's containers, and the test's own (see `run_foreign`).
        for label in ["handoff.table", FOREIGN_LABEL] {
            let filter = format!("label={label}={}", self.table);
            if let Ok(output) = Command::new("docker")
                .args(["ps", "-aq", "--filter", &filter])
                .output()
            {
                for id in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                    let _ = sh("docker", &["rm", "-f", "-v", id]);
                }
            }
        }
        for tag in ["v1", "v2", "v3", "stubborn", "broken"] {
            let _ = sh("docker", &["rmi", "-f", &format!("{}:{tag}", self.repo)]);
        }
        // The sandbox's own network, if it has one (a missing one is only an error message).
        let _ = sh("docker", &["network", "rm", &self.id]);
        let _ = sh("nft", &["delete", "table", "inet", &self.table]);
        let comment = format!("handoff:{}", self.table);
        // Our rules, whatever their label and target: each listed line, turned into its -D.
        for chain in ["DOCKER-USER", "FORWARD"] {
            let Ok(listing) = Command::new("iptables").args(["-S", chain]).output() else {
                continue;
            };
            for line in String::from_utf8_lossy(&listing.stdout).lines() {
                let words: Vec<&str> = line
                    .split_whitespace()
                    .map(|w| w.trim_matches('"'))
                    .collect();
                if words.first() == Some(&"-A") && words.contains(&comment.as_str()) {
                    let _ = sh("iptables", &[&["-D"][..], &words[1..]].concat());
                }
            }
        }
        let _ = sh("ip", &["netns", "del", &self.client]);
        let _ = sh("ip", &["link", "del", &format!("{}h", self.id)]);
        // The table is gone: its bit is free again.
        if let Ok(mut in_use) = LABELS_IN_USE.lock() {
            in_use.remove(&flow_label(&self.table));
        }
    }
}
