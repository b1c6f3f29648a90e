//! The operator's side of the fleet against a real etcd (and Docker where a host must act):
//! `--no-wait`, `HANDOFF_FLEET`, the agent's default `--host`, the human-readable `fleet
//! list`, the refusals (exit 5), a host that fails what was asked (exit 1), and an etcd
//! outage in the middle of a rollout.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::etcd::{
    component_status, docker_fleet, freeze_process, spawn_docker_agent, thaw_process, wait_state,
    EtcdSandbox, KillOnDrop,
};
use common::HANDOFF;
use handoff::fleet::records::HaltRecord;
use handoff::fleet::rollout::Snapshot;
use handoff::fleet::spec;
use handoff::fleet::store::{Op, Store};
use handoff::fleet::{Keys, StatusRecord};

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn write(etcd: &EtcdSandbox, name: &str, text: &str) -> String {
    let path = etcd.dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    path.to_str().expect("path").to_string()
}

/// `handoff fleet --etcd ENDPOINT ARGS` from the Docker sandbox's host, as an operator there.
fn fleet_command(endpoint: &str, args: &[&str]) -> Command {
    let mut command = Command::new(HANDOFF);
    command
        .args(["fleet", "--etcd", endpoint])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Run `command`, and kill it if it has not returned within `limit`: its output, or `None`.
fn output_within(mut command: Command, limit: Duration) -> Option<Output> {
    let mut child = KillOnDrop(command.spawn().expect("spawn"));
    let started = Instant::now();
    while child.0.try_wait().expect("try_wait").is_none() {
        if started.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut output = Output {
        status: child.0.wait().expect("wait"),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    std::io::Read::read_to_end(child.0.stdout.as_mut().expect("stdout"), &mut output.stdout)
        .expect("stdout");
    std::io::Read::read_to_end(child.0.stderr.as_mut().expect("stderr"), &mut output.stderr)
        .expect("stderr");
    Some(output)
}

/// `fleet list --json`.
fn listed(etcd: &EtcdSandbox) -> serde_json::Value {
    serde_json::from_str(&etcd.fleet_ok(&["list", "--json"])).expect("list --json")
}

/// Wait until `fleet list --json` satisfies `done`, for at most `limit`.
fn wait_listed(
    etcd: &EtcdSandbox,
    what: &str,
    limit: Duration,
    log: &dyn Fn() -> String,
    done: impl Fn(&serde_json::Value) -> bool,
) {
    let started = Instant::now();
    loop {
        let now = listed(etcd);
        if done(&now) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "not {what} within {limit:?}: {now}\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "needs root, etcd and Docker: run by sudo scripts/test.sh"]
fn update_rollback_kill_and_start_with_no_wait_return_at_once_and_the_fleet_gets_there_after() {
    let (etcd, docker) = docker_fleet();
    let endpoint = etcd.endpoint();
    let agent_log = etcd.dir.path().join("agent.log");
    let log = || std::fs::read_to_string(&agent_log).unwrap_or_default();
    let agent = spawn_docker_agent(&docker, &endpoint, &agent_log, &[]);
    let pid = agent.0.id();
    wait_state(&etcd, "ready", Duration::from_secs(30), &agent_log);
    let web = |listed: &serde_json::Value| listed["hosts"][0]["components"][0].clone();

    // Each asked while the agent is frozen: a command that waited for the host could not
    // return, and the host has not moved when it does. Thawed, the host gets there.
    let no_wait = |args: &[&str], before: &dyn Fn(&serde_json::Value) -> bool| {
        freeze_process(pid);
        let output = output_within(fleet_command(&endpoint, args), Duration::from_secs(5));
        let now = listed(&etcd);
        thaw_process(pid);
        let output = output.unwrap_or_else(|| panic!("fleet {args:?} did not return at once"));
        assert!(output.status.success(), "{args:?}: {output:?}");
        assert!(
            before(&now),
            "{args:?}: the host moved before the command returned: {now}"
        );
        output
    };

    // update --no-wait: the rollout runs after the command returned.
    let asked = no_wait(&["update", "web", "--tag", "v3", "--no-wait"], &|l| {
        l["rollout"]["state"] == "running" && web(l)["tag"] == "v1"
    });
    assert!(
        stdout(&asked).contains("rollout of web to v3 running"),
        "{asked:?}"
    );
    wait_listed(
        &etcd,
        "web v3 everywhere",
        Duration::from_secs(30),
        &log,
        |l| l["rollout"]["state"] == "done" && web(l)["tag"] == "v3" && web(l)["state"] == "ready",
    );
    common::assert_served_by(&docker.load(2, 1000, &[]), "v3");

    // rollback --no-wait (from v2, back to v3).
    let rolled = fleet_command(&endpoint, &["update", "web", "--tag", "v2"])
        .output()
        .expect("update");
    assert!(rolled.status.success(), "{rolled:?}\n{}", log());
    no_wait(&["rollback", "web", "--no-wait"], &|l| {
        l["rollout"]["state"] == "running" && l["rollout"]["tag"] == "v3" && web(l)["tag"] == "v2"
    });
    wait_listed(
        &etcd,
        "web back at v3",
        Duration::from_secs(30),
        &log,
        |l| l["rollout"]["state"] == "done" && web(l)["tag"] == "v3" && web(l)["state"] == "ready",
    );
    common::assert_served_by(&docker.load(2, 1000, &[]), "v3");

    // kill --no-wait: killed after the command returned.
    no_wait(&["kill", "web", "--no-wait"], &|l| {
        l["stopped"][0]["kill"] == true && web(l)["state"] == "ready"
    });
    wait_state(&etcd, "killed", Duration::from_secs(20), &agent_log);
    let running = || docker.containers().into_iter().filter(|c| c.2).count();
    assert_eq!(running(), 0, "{:?}", docker.containers());
    // A kill is not a rollout: the finished one stays finished.
    let now = listed(&etcd);
    assert_eq!(now["rollout"]["state"], "done", "{now}");

    // start --no-wait: serving again after the command returned, at the fleet's tag.
    no_wait(&["start", "web", "--no-wait"], &|l| {
        l["stopped"].as_array().is_some_and(|s| s.is_empty()) && web(l)["state"] == "killed"
    });
    let status = wait_state(&etcd, "ready", Duration::from_secs(30), &agent_log);
    assert_eq!(status["tag"], "v3", "{status}");
    common::assert_served_by(&docker.load(2, 1000, &[]), "v3");
    drop(agent);
}

#[test]
#[ignore = "needs root and etcd: run by sudo scripts/test.sh"]
fn handoff_fleet_selects_the_fleet_and_a_second_fleet_in_the_same_etcd_is_independent() {
    let mut sandbox = EtcdSandbox::new();
    let blue = [("HANDOFF_FLEET", "blue")];
    let config = common::web_config(3000, 1000);
    let file = write(&sandbox, "blue.json", &config);
    let stored = sandbox.fleet_with_env(&blue, &["setconfig", &file]);
    assert!(stored.status.success(), "{stored:?}");

    // Stored in fleet blue, and only there.
    let got = sandbox.fleet_with_env(&blue, &["getconfig"]);
    assert_eq!(stdout(&got), config, "{got:?}");
    assert_eq!(sandbox.fleet_ok(&["--fleet", "blue", "getconfig"]), config);
    let default = sandbox.fleet(&["getconfig"]);
    assert_eq!(default.status.code(), Some(2), "{default:?}");
    assert!(stderr(&default).contains("fleet default: no config stored"));
    // --fleet names the fleet over the environment.
    let named = sandbox.fleet_with_env(&blue, &["--fleet", "default", "getconfig"]);
    assert_eq!(named.status.code(), Some(2), "{named:?}");
    let (entries, _) = sandbox.client().range("/handoff/").expect("range");
    assert!(
        !entries.is_empty()
            && entries
                .iter()
                .all(|e| e.key.starts_with("/handoff/fleets/blue/")),
        "{:?}",
        entries.iter().map(|e| &e.key).collect::<Vec<_>>()
    );

    // One host name in each fleet, two agents: each registers in its own.
    let blue_agent = sandbox.spawn_agent_with("h1-blue", &blue, &["--host", "h1"]);
    sandbox.spawn_agent("h1");
    let blue_log = || sandbox.agent_log("h1-blue");
    let (in_blue, _) =
        sandbox.wait_registration("blue", "h1", true, Duration::from_secs(10), &blue_log);
    let (in_default, _) =
        sandbox.wait_registration("default", "h1", true, Duration::from_secs(10), &|| {
            sandbox.agent_log("h1")
        });
    let (in_blue, in_default) = (in_blue.unwrap(), in_default.unwrap());
    assert_eq!(in_blue.0.pid, sandbox.agents[blue_agent].id());
    assert_ne!(in_blue.0.pid, in_default.0.pid);
    assert_ne!(in_blue.1, in_default.1, "one lease each");
    assert!(
        blue_log().contains("h1 registered in fleet blue"),
        "{}",
        blue_log()
    );

    // The blue agent stops: h1 is lost in blue, and still alive in default.
    let pid = sandbox.agents[blue_agent].id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let hosts = |env: &[(&str, &str)]| {
        let output = sandbox.fleet_with_env(env, &["list", "--json"]);
        let listed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
        listed["hosts"].clone()
    };
    let started = Instant::now();
    while hosts(&blue)[0]["alive"] != false {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}",
            hosts(&blue)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let default_hosts = hosts(&[]);
    assert_eq!(
        default_hosts.as_array().map(Vec::len),
        Some(1),
        "{default_hosts}"
    );
    assert_eq!(default_hosts[0]["alive"], true, "{default_hosts}");
}

#[test]
#[ignore = "needs root and etcd: run by sudo scripts/test.sh"]
fn an_agent_without_host_registers_under_its_hostname() {
    let mut sandbox = EtcdSandbox::new();
    let ours = nix::unistd::gethostname().expect("hostname");
    let hostname = format!("hf-uts-{}", std::process::id());
    sandbox.spawn_agent_with_hostname(&hostname);
    let log = || sandbox.agent_log(&hostname);
    let (registered, _) =
        sandbox.wait_registration("default", &hostname, true, Duration::from_secs(10), &log);
    let (record, _) = registered.expect("registered");
    assert_eq!(record.name, hostname);
    let hosts = sandbox.hosts();
    assert_eq!(hosts, [(hostname.clone(), true)], "{}", log());
    assert!(
        log().contains(&format!("{hostname} registered in fleet default")),
        "{}",
        log()
    );
    // The hostname was the agent's UTS namespace's, not this machine's.
    assert_eq!(nix::unistd::gethostname().expect("hostname"), ours);
}

/// The fields of the line of `text` whose first fields are `first`.
fn line_starting<'a>(text: &'a str, first: &[&str]) -> Option<(usize, Vec<&'a str>)> {
    text.lines().enumerate().find_map(|(i, line)| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.starts_with(first).then_some((i, fields))
    })
}

#[test]
#[ignore = "needs root and etcd: run by sudo scripts/test.sh"]
fn fleet_list_shows_each_host_alive_or_lost_with_its_components_and_the_rollout_with_its_reason() {
    let mut sandbox = EtcdSandbox::new();
    let file = write(&sandbox, "web.json", &common::web_config(3000, 1000));
    sandbox.fleet_ok(&["setconfig", &file]);
    sandbox.spawn_agent("h1");
    let lost = sandbox.spawn_agent("h2");
    sandbox.wait_host("h1", true, Duration::from_secs(10));
    sandbox.wait_host("h2", true, Duration::from_secs(10));
    // h2 stops (its lease revoked): lost, its member record left.
    let pid = sandbox.agents[lost].id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    sandbox.wait_host("h2", false, Duration::from_secs(5));
    // What h1 reports of web (an address component: its agent leaves it alone), and a
    // rollout of web.
    let keys = Keys::new("default").unwrap();
    let mut etcd = sandbox.client();
    let status = StatusRecord {
        component: "web".into(),
        tag: Some("v1".into()),
        active: Some("10.0.1.11".into()),
        state: "ready".into(),
        reason: None,
        at_ms: 0,
    };
    etcd.txn(
        vec![],
        vec![Op::put(
            keys.status("h1", "web"),
            serde_json::to_vec(&status).unwrap(),
        )],
    )
    .unwrap();
    let snapshot = Snapshot::read(&mut etcd, &keys).unwrap();
    let rollout = spec::begin(&mut etcd, &keys, &snapshot, "web", "v2", 1, "v1", None)
        .unwrap()
        .expect("begun");

    let shown = sandbox.fleet_ok(&["list"]);
    eprintln!("{shown}");
    assert!(shown.lines().any(|l| l == "config: unsigned"), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("rollout: web v1 -> v2, running (unsigned)")),
        "{shown}"
    );
    let (header, _) = line_starting(&shown, &["HOST", "STATE", "SINCE"]).expect(&shown);
    let (h1, fields) = line_starting(&shown, &["h1", "alive", "registered"]).expect(&shown);
    assert_eq!(fields.last(), Some(&"ago"), "{shown}");
    let (web, _) = line_starting(&shown, &["web", "ready", "v1", "10.0.1.11"]).expect(&shown);
    let (h2, fields) = line_starting(&shown, &["h2", "lost", "last", "seen"]).expect(&shown);
    assert_eq!(fields.last(), Some(&"ago"), "{shown}");
    assert!(header < h1 && h1 < web && web < h2, "{shown}");
    assert_eq!(
        shown.lines().count(),
        6,
        "config, rollout, header, h1, its component, h2:\n{shown}"
    );

    // A host halts the rollout: the line says so, with its reason.
    let halt = HaltRecord {
        host: "h1".into(),
        rollout: rollout.sequence,
        reason: "host h1: web v2 not ready".into(),
        at_ms: 0,
    };
    etcd.txn(
        vec![],
        vec![Op::put(keys.halt("h1"), serde_json::to_vec(&halt).unwrap())],
    )
    .unwrap();
    let shown = sandbox.fleet_ok(&["list"]);
    assert!(
        shown.lines().any(|l| l
            .starts_with("rollout: web v1 -> v2, halted: host h1: web v2 not ready (unsigned)")),
        "{shown}"
    );
}

/// Two Docker components (no host runs them here: these refusals are the operator's).
const TWO_COMPONENTS: &str = r#"{"components": [
    {"name": "web", "repo": "127.0.0.1:1/handoff-test", "tag": "v1",
     "ports": [{"external": 20080, "container": 8080}],
     "readyChecks": [{"kind": "http", "port": 8080, "path": "/"}]},
    {"name": "api", "repo": "127.0.0.1:1/handoff-test", "tag": "v1",
     "ports": [{"external": 20081, "container": 8080}],
     "readyChecks": [{"kind": "http", "port": 8080, "path": "/"}]}
]}"#;

#[test]
#[ignore = "needs root and etcd: run by sudo scripts/test.sh"]
fn a_rollout_refuses_another_and_a_stop_of_its_component_with_exit_5_and_changes_nothing() {
    let sandbox = EtcdSandbox::new();
    let file = write(&sandbox, "two.json", TWO_COMPONENTS);
    sandbox.fleet_ok(&["setconfig", &file]);
    sandbox.fleet_ok(&["update", "web", "--tag", "v2", "--no-wait"]);
    let before = listed(&sandbox)["rollout"].clone();
    assert_eq!(before["state"], "running", "{before}");

    for (args, said) in [
        (
            vec!["update", "api", "--tag", "v2"],
            "a rollout of web to v2 is running",
        ),
        (
            vec!["update", "web", "--tag", "v3"],
            "a rollout of web to v2 is running",
        ),
        (vec!["stop", "web"], "a rollout of web to v2 is running"),
        (vec!["kill", "web"], "a rollout of web to v2 is running"),
    ] {
        let refused = sandbox.fleet(&args);
        assert_eq!(refused.status.code(), Some(5), "{args:?}: {refused:?}");
        assert!(stderr(&refused).contains(said), "{args:?}: {refused:?}");
    }
    let after = listed(&sandbox);
    assert_eq!(after["rollout"], before, "{after}");
    assert_eq!(after["stopped"], serde_json::json!([]), "{after}");

    // The other component can be stopped (and started) meanwhile; the same rollout asked again
    // is resumed, not refused.
    sandbox.fleet_ok(&["stop", "api", "--no-wait"]);
    assert_eq!(listed(&sandbox)["stopped"][0]["component"], "api");
    sandbox.fleet_ok(&["start", "api", "--no-wait"]);
    sandbox.fleet_ok(&["update", "web", "--tag", "v2", "--no-wait"]);
    assert_eq!(listed(&sandbox)["rollout"], before);
}

#[test]
#[ignore = "needs root, etcd and Docker: run by sudo scripts/test.sh"]
fn a_fleet_stop_that_fails_on_a_host_exits_1_naming_the_host_and_why_and_can_be_asked_again() {
    let (etcd, docker) = docker_fleet();
    let endpoint = etcd.endpoint();
    let agent_log = etcd.dir.path().join("agent.log");
    let log = || std::fs::read_to_string(&agent_log).unwrap_or_default();
    // The agent waits 1 s for the state lock, where the default is 10 minutes.
    let _agent = spawn_docker_agent(&docker, &endpoint, &agent_log, &["--lock-timeout", "1"]);
    wait_state(&etcd, "ready", Duration::from_secs(30), &agent_log);

    // Another handoff run holds h1's state lock: its stop fails there.
    let lock = docker.hold_state_lock();
    let failed = output_within(
        fleet_command(&endpoint, &["stop", "web"]),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|| panic!("fleet stop did not end:\n{}", log()));
    assert_eq!(failed.status.code(), Some(1), "{failed:?}\n{}", log());
    let said = stderr(&failed);
    assert!(
        said.contains("h1: stop of web failed") && said.contains("lock"),
        "{said}"
    );
    let status = component_status(&etcd, "h1", "web").expect("status");
    assert_eq!(status["state"], "failed", "{status}");
    // Nothing was torn down: web still serves.
    common::assert_served_by(&docker.load(2, 1000, &[]), "v1");

    // The lock released, the same stop asked again goes through.
    drop(lock);
    let stopped = output_within(
        fleet_command(&endpoint, &["stop", "web"]),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|| panic!("fleet stop did not end:\n{}", log()));
    assert!(stopped.status.success(), "{stopped:?}\n{}", log());
    assert_eq!(
        component_status(&etcd, "h1", "web").expect("status")["state"],
        "stopped"
    );
    assert_eq!(
        docker.containers().into_iter().filter(|c| c.2).count(),
        0,
        "{:?}",
        docker.containers()
    );
}

#[test]
#[ignore = "needs root, etcd and Docker: run by sudo scripts/test.sh"]
fn a_rollout_completes_after_an_etcd_outage_during_a_hosts_turn_and_nothing_fails_under_load() {
    let (mut etcd, docker) = docker_fleet();
    let endpoint = etcd.endpoint();
    let agent_log = etcd.dir.path().join("agent.log");
    let log = || std::fs::read_to_string(&agent_log).unwrap_or_default();
    let _agent = spawn_docker_agent(&docker, &endpoint, &agent_log, &[]);
    wait_state(&etcd, "ready", Duration::from_secs(30), &agent_log);
    let load = KillOnDrop(docker.spawn_load(4, 25_000));
    std::thread::sleep(Duration::from_secs(1));

    let asked = fleet_command(&endpoint, &["update", "web", "--tag", "v3", "--no-wait"])
        .output()
        .expect("update");
    assert!(asked.status.success(), "{asked:?}");
    let started = Instant::now();
    while !log()
        .lines()
        .any(|l| l.contains("my turn (slot 0, etcd revision") && l.ends_with("to v3"))
    {
        assert!(started.elapsed() < Duration::from_secs(10), "{}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
    // etcd down for 8 s from the start of h1's turn: the update here (v3 is ready 2 s after
    // it starts) ends while etcd is away.
    etcd.stop_etcd();
    std::thread::sleep(Duration::from_secs(8));
    etcd.start_etcd();

    wait_listed(
        &etcd,
        "the rollout done",
        Duration::from_secs(40),
        &log,
        |l| {
            l["rollout"]["state"] == "done"
                && l["hosts"][0]["components"][0]["tag"] == "v3"
                && l["hosts"][0]["components"][0]["state"] == "ready"
        },
    );
    let report = report_of(load, Duration::from_secs(40));
    common::assert_nothing_failed_or_stalled(&report, "the rollout across the outage");
    common::assert_served_by(&report, "v3");
    common::assert_served_by(&docker.load(2, 1000, &[]), "v3");
}

/// The report of a netkit run, once it ended by itself (within `limit`).
fn report_of(mut run: KillOnDrop, limit: Duration) -> serde_json::Value {
    let started = Instant::now();
    while run.0.try_wait().expect("try_wait").is_none() {
        assert!(started.elapsed() < limit, "netkit did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = Vec::new();
    std::io::Read::read_to_end(run.0.stdout.as_mut().expect("stdout"), &mut out).expect("read");
    common::parse_json_line(&out)
}
