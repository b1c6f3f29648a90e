//! A live agent that loses its lease — frozen past the TTL, frozen in the middle of its turn,
//! or cut off from etcd — against a real etcd (and Docker for the turn): what it wrote under
//! the old lease can no longer be written, its turn ends without it, and it registers again
//! under a new lease. Each claim is read from etcd itself (the lease a key is attached to),
//! not from the agent's own report alone.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::etcd::{
    docker_fleet, freeze_process, spawn_docker_agent, thaw_process, wait_state, AgentHost,
    EtcdSandbox, KillOnDrop,
};
use common::HANDOFF;
use handoff::fleet::records::HaltRecord;
use handoff::fleet::rollout::{self, Snapshot};
use handoff::fleet::spec;
use handoff::fleet::store::{Cond, Op, Store};
use handoff::fleet::{Keys, StatusRecord};

/// The agent's lease TTL (src/fleet/mod.rs).
const TTL: Duration = Duration::from_secs(10);

fn web_status(tag: &str) -> Vec<u8> {
    serde_json::to_vec(&StatusRecord {
        component: "web".into(),
        tag: Some(tag.into()),
        active: None,
        state: "ready".into(),
        reason: None,
        at_ms: 0,
    })
    .expect("json")
}

/// Wait until `log()` contains `line`, for at most `limit`.
fn wait_logged(log: &dyn Fn() -> String, line: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    while !log().contains(line) {
        assert!(
            started.elapsed() < limit,
            "{line:?} not logged within {limit:?}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

#[test]
#[ignore = "needs root and etcd: run by sudo scripts/test.sh"]
fn an_agent_frozen_past_its_ttl_registers_again_under_a_new_lease_and_its_old_lease_is_fenced() {
    let mut sandbox = EtcdSandbox::new();
    let agent = sandbox.spawn_agent("h1");
    let pid = sandbox.agents[agent].id();
    sandbox.wait_host("h1", true, Duration::from_secs(10));
    let (before, old_lease) = sandbox.registration("default", "h1").expect("registered");
    assert_eq!(before.pid, pid, "{before:?}");

    // A rollout h1 could take a turn in (of an address component, which the agent itself
    // never updates: the turns below are the test's own, in h1's name).
    let keys = Keys::new("default").unwrap();
    let mut etcd = sandbox.client();
    let snapshot = Snapshot::read(&mut etcd, &keys).unwrap();
    spec::store_config(
        &mut etcd,
        &keys,
        &snapshot,
        common::web_config(3000, 1000),
        None,
    )
    .unwrap()
    .expect("stored");
    let snapshot = Snapshot::read(&mut etcd, &keys).unwrap();
    let rollout = spec::begin(&mut etcd, &keys, &snapshot, "web", "v2", 1, "v1", None)
        .unwrap()
        .expect("begun");
    let fenced_write = |etcd: &mut handoff::fleet::Etcd, lease: i64| {
        etcd.txn(
            vec![Cond::leased(keys.host("h1"), lease)],
            vec![Op::put(keys.status("h1", "web"), web_status("v1"))],
        )
        .expect("txn")
    };
    assert!(
        fenced_write(&mut etcd, old_lease).is_some(),
        "a write guarded by the live lease goes through"
    );

    // A live agent: it has renewed its lease at least once.
    sandbox.wait_renewed("default", "h1", &|| sandbox.agent_log("h1"));

    // The agent frozen (every thread): nothing renews its lease, which expires.
    freeze_process(pid);
    let agent_log = || sandbox.agent_log("h1");
    let (_, expired_after) = sandbox.wait_registration(
        "default",
        "h1",
        false,
        TTL + Duration::from_secs(5),
        &agent_log,
    );
    eprintln!("hosts/h1 gone {expired_after:?} after the agent froze");
    assert!(
        expired_after <= TTL + Duration::from_secs(2),
        "{expired_after:?}"
    );
    assert!(sandbox.hosts().contains(&("h1".to_string(), false)));
    // Under the old lease, h1 can write nothing fenced any more, nor take a turn.
    assert_eq!(
        fenced_write(&mut etcd, old_lease),
        None,
        "a status write under the expired lease"
    );
    let snapshot = Snapshot::read(&mut etcd, &keys).unwrap();
    let revision = snapshot.rollout.as_ref().unwrap().mod_revision;
    let turn = rollout::take_turn(
        &mut etcd, &keys, &snapshot, &rollout, revision, "h1", old_lease,
    )
    .unwrap();
    assert_eq!(turn, None, "a turn taken under the expired lease");

    // Thawed: the same agent registers again, under a new lease, since now.
    thaw_process(pid);
    let (again, _) =
        sandbox.wait_registration("default", "h1", true, Duration::from_secs(15), &agent_log);
    let (again, new_lease) = again.expect("registered");
    assert!(
        sandbox.agents[agent]
            .try_wait()
            .expect("try_wait")
            .is_none(),
        "the agent exited: {}",
        sandbox.agent_log("h1")
    );
    let log = || sandbox.agent_log("h1");
    wait_logged(&log, "registered again", Duration::from_secs(5));
    assert_ne!(new_lease, old_lease, "{}", log());
    assert_eq!(again.pid, pid, "the same agent: {again:?}");
    assert!(again.since_ms > before.since_ms, "{again:?} {before:?}");
    // The new lease writes and takes turns: the refusals above were the old lease's.
    assert!(fenced_write(&mut etcd, new_lease).is_some());
    assert_eq!(fenced_write(&mut etcd, old_lease), None);
    let snapshot = Snapshot::read(&mut etcd, &keys).unwrap();
    let turn = rollout::take_turn(
        &mut etcd, &keys, &snapshot, &rollout, revision, "h1", new_lease,
    )
    .unwrap()
    .expect("a turn under the live lease");
    let status = serde_json::from_slice(&web_status("v2")).unwrap();
    rollout::end_turn(&mut etcd, &keys, turn, "h1", new_lease, &status, None)
        .unwrap()
        .expect("ended under the live lease");

    // A lease later it is still that registration: the new lease is the one renewed.
    std::thread::sleep(TTL + Duration::from_secs(2));
    let (_, lease) = sandbox
        .registration("default", "h1")
        .expect("still registered");
    assert_eq!(lease, new_lease, "{}", log());
}

#[test]
#[ignore = "needs root, etcd and Docker: run by sudo scripts/test.sh"]
fn an_agent_frozen_during_its_turn_cannot_end_it_and_the_rollout_halts_with_the_host_lost() {
    let (etcd, docker) = docker_fleet();
    let endpoint = etcd.endpoint();
    let agent_log = etcd.dir.path().join("agent.log");
    let log = || std::fs::read_to_string(&agent_log).unwrap_or_default();
    let agent = spawn_docker_agent(&docker, &endpoint, &agent_log, &[]);
    let pid = agent.0.id();
    wait_state(&etcd, "ready", Duration::from_secs(30), &agent_log);
    let (_, old_lease) = etcd.registration("default", "h1").expect("registered");
    // A live agent: it has renewed its lease at least once.
    etcd.wait_renewed("default", "h1", &log);

    // v3 answers 2 s after it starts: the agent is frozen inside its update.
    let mut waiting = KillOnDrop(
        Command::new(HANDOFF)
            .args(["fleet", "--etcd", &endpoint, "update", "web", "--tag", "v3"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("update"),
    );
    let started = Instant::now();
    while !log()
        .lines()
        .any(|l| l.contains("my turn (slot 0, etcd revision") && l.ends_with("to v3"))
    {
        assert!(started.elapsed() < Duration::from_secs(10), "{}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
    freeze_process(pid);
    let frozen = Instant::now();

    // Its lease expires with its turn: every reader sees the rollout halted with h1 lost,
    // and `fleet update` exits 3 saying so.
    while waiting.0.try_wait().expect("try_wait").is_none() {
        assert!(
            frozen.elapsed() < TTL + Duration::from_secs(10),
            "fleet update did not end while the agent was frozen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = waiting.0.wait().expect("update");
    let mut said = String::new();
    std::io::Read::read_to_string(&mut waiting.0.stderr.take().expect("stderr"), &mut said)
        .expect("stderr");
    eprintln!("fleet update ended {:?} after the freeze", frozen.elapsed());
    assert_eq!(status.code(), Some(3), "{said}");
    assert!(
        said.contains("host h1 was lost during its update"),
        "{said}"
    );
    assert_eq!(etcd.registration("default", "h1"), None);
    let listed: serde_json::Value =
        serde_json::from_str(&etcd.fleet_ok(&["list", "--json"])).expect("json");
    assert_eq!(listed["rollout"]["state"], "halted", "{listed}");
    assert_eq!(
        listed["rollout"]["reason"], "host h1 was lost during its update",
        "{listed}"
    );
    let sequence = listed["rollout"]["sequence"].as_u64().expect("sequence");

    // Thawed, it finishes what it was doing here, but ending its turn is fenced by the lease
    // it held then: it says so, and records its own halt ("lost") for that rollout.
    thaw_process(pid);
    wait_logged(
        &log,
        "web: my turn had ended meanwhile (lease lost)",
        Duration::from_secs(30),
    );
    assert!(
        !log().contains("web: my turn ended (etcd revision"),
        "a turn ended under an expired lease:\n{}",
        log()
    );
    let keys = Keys::new("default").unwrap();
    let mut client = etcd.client();
    let started = Instant::now();
    let halt: HaltRecord = loop {
        let (entries, _) = client.range(&keys.halts()).expect("range");
        if let Some(entry) = entries.iter().find(|e| e.key == keys.halt("h1")) {
            break serde_json::from_slice(&entry.value).expect("a halt record");
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no halt of h1's:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(halt.rollout, sequence, "{halt:?}");
    assert_eq!(
        halt.reason, "host h1 was lost during its update",
        "{halt:?}"
    );
    let (entries, _) = client.range(&keys.coordination()).expect("range");
    assert!(
        !entries.iter().any(|e| e.key == keys.updating("h1")),
        "the marker outlived the halt: {entries:?}"
    );
    // ... and registers again, under a new lease.
    let (again, _) = etcd.wait_registration("default", "h1", true, Duration::from_secs(15), &log);
    let (_, new_lease) = again.expect("registered");
    assert_ne!(new_lease, old_lease);
    wait_logged(&log, "registered again", Duration::from_secs(5));
    // The rollout still reads halted, with its reason: the host's halt holds it now.
    let listed: serde_json::Value =
        serde_json::from_str(&etcd.fleet_ok(&["list", "--json"])).expect("json");
    assert_eq!(listed["rollout"]["state"], "halted", "{listed}");
    assert_eq!(
        listed["rollout"]["reason"], "host h1 was lost during its update",
        "{listed}"
    );
    drop(agent);
}

/// Wait until `fleet list` shows h1 `alive` (or lost); how long that took. A failure shows
/// `log()` (the agent's).
fn wait_listed(
    etcd: &EtcdSandbox,
    alive: bool,
    limit: Duration,
    log: &dyn Fn() -> String,
) -> Duration {
    let started = Instant::now();
    while !etcd.hosts().contains(&("h1".to_string(), alive)) {
        assert!(
            started.elapsed() < limit,
            "h1 not listed as alive={alive} within {limit:?}: {:?}\n{}",
            etcd.hosts(),
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

#[test]
#[ignore = "needs root and etcd: run by sudo scripts/test.sh"]
fn an_agent_cut_off_from_etcd_is_listed_lost_within_the_ttl_and_alive_again_once_it_reaches_etcd() {
    let mut etcd = EtcdSandbox::new();
    let mut host = AgentHost::linked_to(&etcd);
    host.spawn_agent(&etcd, "h1");
    etcd.wait_host("h1", true, Duration::from_secs(10));
    let (_, old_lease) = etcd.registration("default", "h1").expect("registered");
    // A live agent: it has renewed its lease at least once.
    etcd.wait_renewed("default", "h1", &|| host.agent_log());

    // Every packet between etcd and h1's address dropped: h1's lease is no longer renewed,
    // while `fleet list` (from etcd's namespace) still answers.
    etcd.cut_off(&host.address);
    let log = || host.agent_log();
    let lost_after = wait_listed(&etcd, false, TTL + Duration::from_secs(10), &log);
    eprintln!("h1 listed as lost {lost_after:?} after it was cut off");
    assert!(
        lost_after <= TTL + Duration::from_secs(2),
        "h1 listed as lost after {lost_after:?}"
    );
    // And it stays lost while it cannot reach etcd.
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        etcd.hosts().contains(&("h1".to_string(), false)),
        "{:?}\n{}",
        etcd.hosts(),
        host.agent_log()
    );

    // The link back: it follows the fleet again and registers again, under a new lease.
    etcd.reconnect(&host.address);
    let back_after = wait_listed(&etcd, true, Duration::from_secs(30), &log);
    eprintln!("h1 alive again {back_after:?} after the cut was lifted");
    let (_, new_lease) = etcd.registration("default", "h1").expect("registered");
    assert_ne!(new_lease, old_lease);
    wait_logged(&log, "registered again", Duration::from_secs(5));
}
