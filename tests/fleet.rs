//! The fleet against a real etcd (Debian's etcd-server): each test makes a network namespace of
//! its own, runs its own etcd there on 127.0.0.1:2379, and runs `handoff fleet` in it, so tests
//! run in parallel and the traffic never leaves the namespace. Everything is killed and deleted
//! on drop, also when the test fails.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::docker::DockerSandbox;
use common::etcd::{
    component_status, docker_fleet, spawn_docker_agent, wait_state, EtcdSandbox, KillOnDrop,
};
use common::HANDOFF;
use handoff::fleet::access::Access;
use handoff::fleet::rollout::{self, Progress, Snapshot};
use handoff::fleet::spec;
use handoff::fleet::store::{Cond, Op, Store};
use handoff::fleet::{Etcd, HostRecord, Keys, StatusRecord};

/// The agent's lease TTL (src/fleet/mod.rs).
const TTL: Duration = Duration::from_secs(10);

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.to_str().expect("path").to_string()
}

#[test]
#[ignore = "needs root and etcd: run by sudo scripts/test.sh"]
fn setconfig_validates_like_check_and_a_bad_file_stores_nothing() {
    let sandbox = EtcdSandbox::new();
    let dir = sandbox.dir.path();
    let none = sandbox.fleet(&["getconfig"]);
    assert_eq!(none.status.code(), Some(2), "{none:?}");
    assert!(String::from_utf8_lossy(&none.stderr).contains("no config stored"));

    let good = write(dir, "good.json", &common::web_config(3000, 1000));
    let bad = write(
        dir,
        "bad.json",
        r#"{"components":[{"name":"web","portz":[]}]}"#,
    );
    let refused = sandbox.fleet(&["setconfig", &bad]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("portz"),
        "the error names the field: {refused:?}"
    );
    assert_eq!(sandbox.fleet(&["getconfig"]).status.code(), Some(2));

    sandbox.fleet_ok(&["setconfig", &good]);
    assert_eq!(
        sandbox.fleet_ok(&["getconfig"]),
        std::fs::read_to_string(&good).expect("good")
    );
    // A bad file later leaves the stored config as it was.
    assert_eq!(sandbox.fleet(&["setconfig", &bad]).status.code(), Some(2));
    assert_eq!(
        sandbox.fleet_ok(&["getconfig"]),
        std::fs::read_to_string(&good).expect("good")
    );
    // Fleets are independent.
    let other = sandbox.fleet(&["--fleet", "other", "getconfig"]);
    assert_eq!(other.status.code(), Some(2), "{other:?}");
}

#[test]
#[ignore = "needs root and etcd: run by sudo scripts/test.sh"]
fn a_killed_agent_is_lost_within_the_ttl_a_stopped_one_at_once_and_names_are_unique() {
    let mut sandbox = EtcdSandbox::new();
    let h1 = sandbox.spawn_agent("h1");
    sandbox.spawn_agent("h2");
    sandbox.wait_host("h1", true, Duration::from_secs(10));
    sandbox.wait_host("h2", true, Duration::from_secs(10));

    // Secure by default: with neither a signers file nor a policy, an agent does not start.
    let naive = sandbox.fleet(&["agent", "--host", "h9"]);
    assert_eq!(naive.status.code(), Some(2), "{naive:?}");
    let said = String::from_utf8_lossy(&naive.stderr);
    for named in [
        "/etc/handoff/fleet-signers",
        "/etc/handoff/policy.json",
        "--insecure-accept-any-spec",
    ] {
        assert!(said.contains(named), "{named} not named: {said}");
    }
    assert!(
        !sandbox.hosts().iter().any(|(h, _)| h == "h9"),
        "h9 registered"
    );

    let twin = sandbox.fleet(&["agent", "--host", "h1", "--insecure-accept-any-spec"]);
    assert_eq!(
        twin.status.code(),
        Some(2),
        "a second h1 is refused: {twin:?}"
    );
    assert!(String::from_utf8_lossy(&twin.stderr).contains("another live agent"));

    // SIGKILL: nothing revokes the lease; it must expire.
    let killed = &mut sandbox.agents[h1];
    killed.kill().expect("kill");
    killed.wait().expect("wait");
    let lost_after = sandbox.wait_host("h1", false, TTL + Duration::from_secs(5));
    eprintln!("killed agent listed as lost after {lost_after:?}");
    assert!(
        lost_after <= TTL + Duration::from_secs(2),
        "h1 listed as lost after {lost_after:?}"
    );

    // SIGTERM: the agent revokes its lease on the way out.
    let pid = sandbox.agents[1].id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let lost_after = sandbox.wait_host("h2", false, Duration::from_secs(5));
    assert!(
        lost_after < Duration::from_secs(2),
        "h2 lost after {lost_after:?}"
    );
    let status = sandbox.agents[1].wait().expect("wait");
    assert!(status.success(), "a stopped agent exits 0: {status:?}");
    assert!(sandbox.agent_log("h2").contains("lease revoked"));
}

#[test]
#[ignore = "needs root and etcd: run by sudo scripts/test.sh"]
fn an_agent_outlives_etcd_being_down_for_20_s_and_is_registered_again_after() {
    let mut sandbox = EtcdSandbox::new();
    sandbox.spawn_agent("h1");
    sandbox.wait_host("h1", true, Duration::from_secs(10));
    sandbox.stop_etcd();
    std::thread::sleep(Duration::from_secs(20));
    assert!(
        sandbox.agents[0].try_wait().expect("try_wait").is_none(),
        "the agent exited while etcd was down: {}",
        sandbox.agent_log("h1")
    );
    sandbox.start_etcd();
    sandbox.wait_host("h1", true, TTL + Duration::from_secs(10));
    // Still alive a lease later: it renews, not just re-registers once.
    std::thread::sleep(TTL + Duration::from_secs(2));
    sandbox.wait_host("h1", true, Duration::from_secs(1));
    let log = sandbox.agent_log("h1");
    eprintln!("agent log:\n{log}");
    assert!(log.contains("cannot renew the registration"), "{log}");
    assert!(
        log.contains("etcd answers again") || log.contains("registered again"),
        "{log}"
    );
}

#[test]
#[ignore = "needs root, etcd and Docker: run by sudo scripts/test.sh"]
fn an_agent_starts_the_fleets_components_starts_nothing_twice_and_replaces_a_dead_container() {
    let (etcd, docker) = docker_fleet();
    let endpoint = etcd.endpoint();
    let agent_log = etcd.dir.path().join("agent.log");
    let spawn_agent = || spawn_docker_agent(&docker, &endpoint, &agent_log, &[]);
    let mut agent = spawn_agent();
    let ready = |etcd: &EtcdSandbox| {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Some(status) = component_status(etcd, "h1", "web") {
                if status["state"] == "ready" {
                    return status;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "web not ready on h1: {}",
            std::fs::read_to_string(&agent_log).unwrap_or_default()
        );
    };
    let status = ready(&etcd);
    assert_eq!(status["tag"], "v1", "{status}");
    let load = docker.load(4, 1500, &[]);
    common::assert_served_by(&load, "v1");
    assert_eq!(docker.containers().len(), 1);
    let log = std::fs::read_to_string(&agent_log).unwrap_or_default();
    assert!(log.contains("web: started v1"), "{log}");

    // A SIGKILLed agent, started again: it reports what serves and starts nothing.
    agent.0.kill().expect("kill");
    agent.0.wait().expect("wait");
    // Its old registration must expire before the name is free again.
    etcd.wait_host("h1", false, TTL + Duration::from_secs(5));
    let agent = spawn_agent();
    let started = Instant::now();
    while !std::fs::read_to_string(&agent_log)
        .unwrap_or_default()
        .contains("web: serving v1")
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            std::fs::read_to_string(&agent_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(docker.containers().len(), 1, "nothing started twice");
    common::assert_served_by(&docker.load(4, 1000, &[]), "v1");

    // The container dies: the agent's health rounds replace it (the new one may get the same
    // address), and the status says it serves again.
    let (dead, _, _) = docker.containers().remove(0);
    common::docker::must("docker", &["kill", &dead]);
    let started = Instant::now();
    let replaced = "unhealthy; replaced by a new v1 container";
    while !std::fs::read_to_string(&agent_log)
        .unwrap_or_default()
        .contains(replaced)
    {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "not replaced: {}",
            std::fs::read_to_string(&agent_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("replaced {:?} after the kill", started.elapsed());
    let status = component_status(&etcd, "h1", "web").expect("status");
    assert_eq!(status["state"], "ready", "{status}");
    let running: Vec<_> = docker.containers().into_iter().filter(|c| c.2).collect();
    assert_eq!(running.len(), 1, "{running:?}");
    assert_ne!(running[0].0, dead);
    common::assert_served_by(&docker.load(4, 1000, &[]), "v1");
    drop(agent);
}

/// Hosts registered by the test itself (a lease each), all serving `web` at v1.
fn register_hosts(etcd: &mut Etcd, keys: &Keys, names: &[&str]) -> Vec<i64> {
    names
        .iter()
        .map(|name| {
            let lease = etcd.grant(30).expect("lease");
            let record = HostRecord {
                name: name.to_string(),
                since_ms: 0,
                pid: 0,
            };
            let status = StatusRecord {
                component: "web".into(),
                tag: Some("v1".into()),
                active: None,
                state: "ready".into(),
                reason: None,
                at_ms: 0,
            };
            let registered = etcd
                .txn(
                    vec![Cond::absent(keys.host(name))],
                    vec![
                        Op::put_leased(
                            keys.host(name),
                            serde_json::to_vec(&record).unwrap(),
                            lease,
                        ),
                        Op::put(
                            keys.status(name, "web"),
                            serde_json::to_vec(&status).unwrap(),
                        ),
                    ],
                )
                .expect("register");
            assert!(registered.is_some(), "{name} registered");
            lease
        })
        .collect()
}

#[test]
#[ignore = "needs root and etcd: run by sudo scripts/test.sh"]
fn competing_hosts_never_hold_more_turns_than_max_parallel_and_a_lost_holder_halts_the_rollout() {
    let sandbox = EtcdSandbox::new();
    let endpoints = Access::plain(&sandbox.endpoint()).expect("access");
    let keys = Keys::new("default").unwrap();
    let mut etcd = Etcd::connect(&endpoints).expect("etcd");
    let names = ["h1", "h2", "h3", "h4", "h5"];
    let leases = register_hosts(&mut etcd, &keys, &names);
    let config = common::web_config(3000, 1000);
    let snapshot = Snapshot::read(&mut etcd, &keys).unwrap();
    spec::store_config(&mut etcd, &keys, &snapshot, config, None)
        .unwrap()
        .expect("stored");
    let snapshot = Snapshot::read(&mut etcd, &keys).unwrap();
    let rollout = spec::begin(&mut etcd, &keys, &snapshot, "web", "v2", 2, "v1", None)
        .unwrap()
        .expect("begun");

    // Five hosts race for a turn, each on its own connection, from one snapshot each.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(names.len()));
    let racers: Vec<_> = names
        .iter()
        .zip(&leases)
        .map(|(name, lease)| {
            let (endpoints, keys, barrier) = (endpoints.clone(), keys.clone(), barrier.clone());
            let (name, lease, rollout) = (name.to_string(), *lease, rollout.clone());
            std::thread::spawn(move || {
                let mut etcd = Etcd::connect(&endpoints).expect("etcd");
                let snapshot = Snapshot::read(&mut etcd, &keys).unwrap();
                let revision = snapshot.rollout.as_ref().unwrap().mod_revision;
                barrier.wait();
                rollout::take_turn(
                    &mut etcd, &keys, &snapshot, &rollout, revision, &name, lease,
                )
                .unwrap()
                .map(|turn| (name, lease, turn))
            })
        })
        .collect();
    let turns: Vec<_> = racers
        .into_iter()
        .filter_map(|r| r.join().unwrap())
        .collect();
    // Every racer saw both slots free: exactly two win, no third squeezes in.
    assert_eq!(turns.len(), 2, "turns taken: {turns:?}");
    let held = Snapshot::read(&mut etcd, &keys).unwrap();
    assert_eq!(held.turns.len(), turns.len());
    assert_eq!(held.updating.len(), turns.len());
    assert_eq!(held.progress(&rollout), Progress::Running);

    // A holder dies (its lease goes): every reader sees the rollout halted, naming it; and its
    // turn can no longer be ended under the dead lease.
    let (lost, lease, turn) = &turns[0];
    etcd.revoke(*lease).unwrap();
    let after = Snapshot::read(&mut etcd, &keys).unwrap();
    assert_eq!(
        after.progress(&rollout),
        Progress::Halted {
            host: lost.clone(),
            reason: format!("host {lost} was lost during its update"),
        }
    );
    let status = StatusRecord {
        component: "web".into(),
        tag: Some("v2".into()),
        active: None,
        state: "ready".into(),
        reason: None,
        at_ms: 0,
    };
    let ended = rollout::end_turn(&mut etcd, &keys, *turn, lost, *lease, &status, None).unwrap();
    assert_eq!(ended, None, "a turn ends only while its lease holds it");
    // The other holder ends its turn; the rollout stays halted by the lost one.
    let (other, other_lease, other_turn) = &turns[1];
    let ended = rollout::end_turn(
        &mut etcd,
        &keys,
        *other_turn,
        other,
        *other_lease,
        &status,
        None,
    )
    .unwrap();
    assert!(ended.is_some());
    let after = Snapshot::read(&mut etcd, &keys).unwrap();
    assert!(matches!(after.progress(&rollout), Progress::Halted { host, .. } if &host == lost));
}

#[test]
#[ignore = "needs root, etcd and Docker: run by sudo scripts/test.sh"]
fn a_rollout_under_load_fails_nothing_a_bad_version_halts_and_a_lost_host_halts_within_the_ttl() {
    let (etcd, docker) = docker_fleet();
    let endpoint = etcd.endpoint();
    let agent_log = etcd.dir.path().join("agent.log");
    let log = || std::fs::read_to_string(&agent_log).unwrap_or_default();
    let mut agent = spawn_docker_agent(&docker, &endpoint, &agent_log, &[]);
    let started = Instant::now();
    while component_status(&etcd, "h1", "web").is_none_or(|s| s["state"] != "ready") {
        assert!(started.elapsed() < Duration::from_secs(30), "{}", log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let fleet = |args: &[&str]| {
        let mut command = Command::new(HANDOFF);
        command
            .args(["fleet", "--etcd", &endpoint])
            .args(args)
            .stdin(Stdio::null());
        command
    };

    // v1 -> v2 under load: nothing fails, the command returns 0 when the host serves v2.
    let load = docker.spawn_load(4, 6000);
    std::thread::sleep(Duration::from_millis(1000));
    let rolled = fleet(&["update", "web", "--tag", "v2"])
        .output()
        .expect("update");
    assert!(rolled.status.success(), "{rolled:?}\n{}", log());
    let load = common::finish_json(load);
    common::assert_nothing_failed_or_stalled(&load, "the rollout");
    common::assert_served_by(&load, "v2");
    assert_eq!(component_status(&etcd, "h1", "web").unwrap()["tag"], "v2");

    // rollback: v1 again.
    let back = fleet(&["rollback", "web"]).output().expect("rollback");
    assert!(back.status.success(), "{back:?}\n{}", log());
    common::assert_served_by(&docker.load(2, 1000, &[]), "v1");

    // A version that cannot start: exit 3, the rollout halted with the host's reason, v1 serves.
    let bad = fleet(&["update", "web", "--tag", "missing"])
        .output()
        .expect("update");
    assert_eq!(bad.status.code(), Some(3), "{bad:?}\n{}", log());
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(
        said.contains("halted") && said.contains("host h1"),
        "{said}"
    );
    common::assert_served_by(&docker.load(2, 1000, &[]), "v1");

    // The agent killed during its update (v3 answers 2 s after it starts): the rollout halts
    // with "lost" within the lease's TTL (+ 2 s), and the command exits 3 saying so.
    let mut waiting = KillOnDrop(
        fleet(&["update", "web", "--tag", "v3"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("update"),
    );
    let started = Instant::now();
    let turn_taken = || {
        log()
            .lines()
            .any(|l| l.contains("my turn (slot 0, etcd revision") && l.ends_with("to v3"))
    };
    while !turn_taken() {
        assert!(started.elapsed() < Duration::from_secs(10), "{}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.0.kill().expect("kill");
    agent.0.wait().expect("wait");
    let killed_at = Instant::now();
    let started = Instant::now();
    while waiting.0.try_wait().expect("try_wait").is_none() {
        assert!(
            started.elapsed() < TTL + Duration::from_secs(10),
            "fleet update did not end after the agent was killed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let halted_after = killed_at.elapsed();
    let status = waiting.0.wait().expect("update");
    let mut said = String::new();
    std::io::Read::read_to_string(&mut waiting.0.stderr.take().expect("stderr"), &mut said)
        .expect("stderr");
    eprintln!("the rollout halted {halted_after:?} after the agent was killed");
    assert_eq!(status.code(), Some(3), "{said}");
    assert!(
        said.contains("host h1 was lost during its update"),
        "{said}"
    );
    assert!(
        halted_after <= TTL + Duration::from_secs(2),
        "halted {halted_after:?} after the kill"
    );
}

/// One keep-alive connection to the component held open by netkit `hold` from the client
/// namespace: after `ms` it asks again on the same connection, and reports how the
/// connection ended — `again` (the same backend answered, then closed it cleanly) or `error`.
struct Hold {
    child: KillOnDrop,
    /// Before the hold started: its second request goes out `ms` after this, at the earliest.
    opened: SystemTime,
    ms: u64,
}

/// How a held connection ended.
#[derive(Debug)]
struct Ended {
    /// netkit's exit status: 0 only for a clean end.
    clean_exit: bool,
    report: serde_json::Value,
}

impl Hold {
    fn open(docker: &DockerSandbox, ms: u64, backend: &str) -> Hold {
        let opened = SystemTime::now();
        let mut child = KillOnDrop(
            docker
                .client_command(&[
                    "hold",
                    "--target",
                    &docker.target(),
                    "--ms",
                    &ms.to_string(),
                ])
                .spawn()
                .expect("hold"),
        );
        let first = common::read_line(&mut child.0);
        assert!(
            first.contains(&format!(r#""backend":"{backend}""#)),
            "the held connection reached {first:?}, not {backend}"
        );
        Hold { child, opened, ms }
    }

    /// When the second request went out, at the earliest.
    fn asked_again(&self) -> SystemTime {
        self.opened + Duration::from_millis(self.ms)
    }

    /// Wait for the hold to end (it is bounded: `ms` and then its 5-s timeouts).
    fn ended(mut self) -> Ended {
        let limit = Duration::from_millis(self.ms) + Duration::from_secs(15);
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.0.try_wait().expect("try_wait") {
                break status;
            }
            assert!(started.elapsed() < limit, "the hold did not end");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut rest = String::new();
        std::io::Read::read_to_string(
            self.child.0.stdout.as_mut().expect("piped stdout"),
            &mut rest,
        )
        .expect("hold output");
        Ended {
            clean_exit: status.success(),
            report: common::parse_json_line(rest.as_bytes()),
        }
    }
}

#[test]
#[ignore = "needs root, etcd and Docker: run by sudo scripts/test.sh"]
fn a_fleet_stop_drains_before_retiring_a_kill_cuts_it_short_and_a_start_serves_again() {
    let (etcd, docker) = docker_fleet();
    let endpoint = etcd.endpoint();
    let agent_log = etcd.dir.path().join("agent.log");
    let log = || std::fs::read_to_string(&agent_log).unwrap_or_default();
    let _agent = spawn_docker_agent(&docker, &endpoint, &agent_log, &[]);
    wait_state(&etcd, "ready", Duration::from_secs(30), &agent_log);
    let fleet = |args: &[&str]| {
        let mut command = Command::new(HANDOFF);
        command
            .args(["fleet", "--etcd", &endpoint])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    };
    let running = || docker.containers().into_iter().filter(|c| c.2).count();
    let serving_instance = || {
        let running: Vec<_> = docker.containers().into_iter().filter(|c| c.2).collect();
        assert_eq!(running.len(), 1, "{running:?}");
        docker.instance_of(&running[0].0)
    };

    // stop: out of the ruleset at once, `stopping` while the held connection lives, then
    // retired; the command returns when the host reports `stopped`.
    let instance = serving_instance();
    let held = Hold::open(&docker, 3000, "v1");
    let asked = Instant::now();
    let stopped = fleet(&["stop", "web"]).output().expect("stop");
    let took = asked.elapsed();
    assert!(stopped.status.success(), "{stopped:?}\n{}", log());
    // The held flow ended by itself, on the old container: asked again after its 3 s, v1
    // answered on the same connection and closed it cleanly.
    let asked_again = held.asked_again();
    let ended = held.ended();
    assert!(
        ended.clean_exit && ended.report["again"] == "v1" && ended.report.get("error").is_none(),
        "the held connection did not end normally on v1: {ended:?}\n{}",
        log()
    );
    // ... and only then was the container retired: its termination signal came after the
    // held connection's last request.
    let quit = docker.quit_signal_at(&instance).unwrap_or_else(|| {
        panic!("the stopped container got no POST /quit:\n{}", log());
    });
    assert!(
        quit >= asked_again,
        "retired {:?} before the held connection asked again",
        asked_again.duration_since(quit).unwrap_or_default()
    );
    assert!(
        took >= Duration::from_millis(2000),
        "fleet stop returned after {took:?}, before the held connection ended"
    );
    assert!(log().contains("web: stopped fleet-wide: out of the ruleset, draining"));
    assert_eq!(running(), 0, "{:?}", docker.containers());
    assert_eq!(docker.routed_address(), None);
    // Health rounds (every second here) and convergence leave a stopped component alone.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        component_status(&etcd, "h1", "web").unwrap()["state"],
        "stopped"
    );
    assert_eq!(running(), 0);
    // A rollout of a stopped component is refused (exit 5), nothing changes.
    let refused = fleet(&["update", "web", "--tag", "v2"])
        .output()
        .expect("update");
    assert_eq!(refused.status.code(), Some(5), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("fleet start web"));

    // start: the agent starts it again, at the fleet's tag.
    let started = fleet(&["start", "web"]).output().expect("start");
    assert!(started.status.success(), "{started:?}\n{}", log());
    assert_eq!(component_status(&etcd, "h1", "web").unwrap()["tag"], "v1");
    common::assert_served_by(&docker.load(2, 1000, &[]), "v1");

    // A kill during a stop's drain: retired at once, the held flow cut, and the drain's end
    // does not turn `killed` back into `stopped`.
    let instance = serving_instance();
    let held = Hold::open(&docker, 8000, "v1");
    let asked = fleet(&["stop", "web", "--no-wait"]).output().expect("stop");
    assert!(asked.status.success(), "{asked:?}");
    wait_state(&etcd, "stopping", Duration::from_secs(10), &agent_log);
    let asked = Instant::now();
    let killed = fleet(&["kill", "web"]).output().expect("kill");
    assert!(killed.status.success(), "{killed:?}\n{}", log());
    let took = asked.elapsed();
    // The held connection, asked again after its 8 s, finds it cut: no answer, an error.
    let ended = held.ended();
    eprintln!("the held connection after the kill: {ended:?}");
    assert!(
        !ended.clean_exit
            && ended.report.get("again").is_none()
            && ended.report["error"]
                .as_str()
                .is_some_and(|e| e.contains("did not survive")),
        "the held connection was not cut by the kill: {ended:?}\n{}",
        log()
    );
    assert!(took < Duration::from_secs(5), "fleet kill took {took:?}");
    assert_eq!(running(), 0, "{:?}", docker.containers());
    assert_eq!(
        docker.quit_signal_at(&instance),
        None,
        "a kill sends no termination signal"
    );
    assert_eq!(
        component_status(&etcd, "h1", "web").unwrap()["state"],
        "killed"
    );
    fleet(&["start", "web"]).output().expect("start");
    wait_state(&etcd, "ready", Duration::from_secs(30), &agent_log);
    common::assert_served_by(&docker.load(2, 1000, &[]), "v1");
}
