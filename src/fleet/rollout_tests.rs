use super::*;
use crate::fleet::records::StopAction;

fn rollout(sequence: u64) -> Rollout {
    Rollout {
        spec: RolloutSpec {
            component: "web".into(),
            tag: "v2".into(),
            previous: "v1".into(),
            max_parallel: 1,
            started_ms: 1,
        },
        sequence,
    }
}

fn serving(snapshot: &mut Snapshot, host: &str, tag: &str) {
    snapshot.alive.insert(
        host.into(),
        HostRecord {
            name: host.into(),
            since_ms: 1,
            pid: 1,
        },
    );
    snapshot.statuses.insert(
        (host.into(), "web".into()),
        StatusRecord {
            component: "web".into(),
            tag: Some(tag.into()),
            active: None,
            state: state::READY.into(),
            reason: None,
            at_ms: 1,
        },
    );
}

#[test]
fn a_rollout_is_done_when_every_reporting_live_host_serves_its_tag() {
    let mut snapshot = Snapshot::default();
    assert_eq!(
        snapshot.progress(&rollout(5)),
        Progress::Running,
        "no host: not done"
    );
    serving(&mut snapshot, "h1", "v2");
    serving(&mut snapshot, "h2", "v1");
    assert_eq!(snapshot.progress(&rollout(5)), Progress::Running);
    serving(&mut snapshot, "h2", "v2");
    assert_eq!(snapshot.progress(&rollout(5)), Progress::Done);
    // A live host that has not reported the component yet starts at the tag: still done.
    snapshot.alive.insert(
        "h3".into(),
        HostRecord {
            name: "h3".into(),
            since_ms: 1,
            pid: 1,
        },
    );
    assert_eq!(snapshot.progress(&rollout(5)), Progress::Done);
}

#[test]
fn a_host_held_by_a_stop_neither_holds_a_rollout_back_nor_finishes_it() {
    let held = |snapshot: &mut Snapshot, host: &str, held: &str| {
        let status = snapshot
            .statuses
            .get_mut(&(host.into(), "web".into()))
            .expect("reported");
        (status.tag, status.state) = (None, held.into());
    };
    let mut snapshot = Snapshot::default();
    serving(&mut snapshot, "h1", "v2");
    serving(&mut snapshot, "h2", "v2");
    held(&mut snapshot, "h2", state::KILLED);
    assert_eq!(
        snapshot.progress(&rollout(5)),
        Progress::Done,
        "killed after"
    );
    held(&mut snapshot, "h1", state::STOPPED);
    assert_eq!(
        snapshot.progress(&rollout(5)),
        Progress::Done,
        "all stopped"
    );
    serving(&mut snapshot, "h1", "v1");
    assert_eq!(
        snapshot.progress(&rollout(5)),
        Progress::Running,
        "h1 at v1"
    );
    held(&mut snapshot, "h1", state::FAILED);
    assert_eq!(
        snapshot.progress(&rollout(5)),
        Progress::Running,
        "a failure is not a stop"
    );
}

#[test]
fn only_the_rollouts_own_halts_and_markers_halt_it() {
    let mut snapshot = Snapshot::default();
    serving(&mut snapshot, "h1", "v2");
    snapshot.halts.insert(
        "h1".into(),
        HaltRecord {
            host: "h1".into(),
            rollout: 4,
            reason: "old".into(),
            at_ms: 1,
        },
    );
    snapshot.updating.insert(
        "h2".into(),
        UpdatingRecord {
            host: "h2".into(),
            rollout: 3,
            since_ms: 1,
        },
    );
    assert_eq!(snapshot.progress(&rollout(5)), Progress::Done);
    snapshot.updating.insert(
        "h2".into(),
        UpdatingRecord {
            host: "h2".into(),
            rollout: 5,
            since_ms: 1,
        },
    );
    let lost = Progress::Halted {
        host: "h2".into(),
        reason: "host h2 was lost during its update".into(),
    };
    assert_eq!(snapshot.progress(&rollout(5)), lost);
    snapshot.turns.push((
        0,
        TurnRecord {
            host: "h2".into(),
            rollout: 5,
            since_ms: 1,
        },
    ));
    assert_eq!(snapshot.progress(&rollout(5)), Progress::Running);
}

#[test]
fn the_tag_to_start_follows_the_rollout_for_hosts_that_had_their_turn() {
    let r = rollout(5);
    assert_eq!(desired_tag("v0", None, None), "v0");
    assert_eq!(desired_tag("v0", Some((&r, &Progress::Done)), None), "v2");
    assert_eq!(
        desired_tag("v0", Some((&r, &Progress::Running)), Some("v2")),
        "v2"
    );
    assert_eq!(
        desired_tag("v0", Some((&r, &Progress::Running)), Some("v1")),
        "v1"
    );
    assert_eq!(
        desired_tag("v0", Some((&r, &Progress::Running)), None),
        "v1"
    );
    let halted = Progress::Halted {
        host: "h1".into(),
        reason: "x".into(),
    };
    assert_eq!(desired_tag("v0", Some((&r, &halted)), Some("v2")), "v2");
    assert_eq!(desired_tag("v0", Some((&r, &halted)), None), "v1");
}

#[test]
fn a_status_stored_under_another_components_key_is_not_read() {
    let keys = Keys::new("prod").unwrap();
    let mut store = crate::fleet::store::fake::FakeStore::new();
    let status = r#"{"component": "api", "tag": "v9", "active": null, "state": "ready",
        "reason": null, "at_ms": 1}"#;
    store.put(&keys.status("h1", "web"), status);
    let stop = r#"{"component": "web", "action": "start", "since_ms": 1}"#;
    assert!(!serde_json::from_str::<StopSpec>(stop).unwrap().holds());
    assert_eq!(
        serde_json::from_str::<StopSpec>(&stop.replace("start", "kill"))
            .unwrap()
            .action,
        StopAction::Kill
    );
    let snapshot = Snapshot::read(&mut store, &keys).unwrap();
    assert!(snapshot.statuses.is_empty());
}
