//! Rollouts from the agents' side: turns, halts, a lost host, a refused rollout, a late host.

use super::*;
use crate::fleet::records::state;
use crate::fleet::rollout::{self, Progress, Rollout};

/// Two hosts serving web and api at v1.
fn two_hosts(trust: Trust, signed: bool) -> (Bench, TestAgent, TestAgent) {
    let mut bench = Bench::new();
    bench.set_config(CONFIG, signed);
    let mut h1 = bench.agent("h1", trust);
    let mut h2 = bench.agent("h2", trust);
    settle(&mut h1);
    settle(&mut h2);
    (bench, h1, h2)
}

#[test]
fn each_host_takes_a_turn_updates_and_the_rollout_is_done_when_every_host_serves_the_tag() {
    let (bench, mut h1, mut h2) = two_hosts(Trust::Signed, true);
    let rollout = bench.update("web", "v2", 1, true);
    settle(&mut h1);
    assert_eq!(h1.host.tag("web"), Some("v2"));
    assert_eq!(
        h1.host.called("drain web"),
        1,
        "the old version drains here"
    );
    assert!(bench
        .log("h1")
        .contains("web: my turn (slot 0, etcd revision"));
    assert!(bench
        .log("h1")
        .contains("web: my turn ended (etcd revision"));
    assert_eq!(bench.snapshot().progress(&rollout), Progress::Running);
    settle(&mut h2);
    assert_eq!(h2.host.tag("web"), Some("v2"));
    assert_eq!(bench.snapshot().progress(&rollout), Progress::Done);
    assert!(bench.snapshot().turns.is_empty() && bench.snapshot().updating.is_empty());
}

#[test]
fn a_host_cannot_take_a_turn_while_max_parallel_hosts_hold_one() {
    let (bench, _h1, mut h2) = two_hosts(Trust::Anything, false);
    let rollout = bench.update("web", "v2", 1, false);
    // h1 holds the only slot (its update under way).
    let snapshot = bench.snapshot();
    let revision = snapshot.rollout.as_ref().unwrap().mod_revision;
    let turn = rollout::take_turn(
        &mut bench.store.client(),
        &bench.keys,
        &snapshot,
        &rollout,
        revision,
        "h1",
        bench.leases["h1"],
    )
    .unwrap();
    assert!(turn.is_some());
    settle(&mut h2);
    assert_eq!(h2.host.called("update web v2"), 0);
    assert_eq!(h2.host.tag("web"), Some("v1"));
}

#[test]
fn a_failed_update_halts_the_rollout_with_the_hosts_reason_and_no_other_host_starts() {
    let (bench, mut h1, mut h2) = two_hosts(Trust::Anything, false);
    h1.host.broken_tags.insert("v2".into());
    let rollout = bench.update("web", "v2", 1, false);
    settle(&mut h1);
    let Progress::Halted { host, reason } = bench.snapshot().progress(&rollout) else {
        panic!("not halted");
    };
    assert_eq!(host, "h1");
    assert!(
        reason.starts_with("host h1: ") && reason.contains("v2 did not become ready"),
        "{reason}"
    );
    // The old version still serves there, and says so; the halt keeps the reason.
    assert_eq!(
        bench.state("h1", "web"),
        (state::READY.into(), Some("v1".into()))
    );
    settle(&mut h2);
    assert_eq!(h2.host.called("update web v2"), 0);
}

#[test]
fn a_host_that_read_the_rollout_before_another_halted_it_cannot_take_a_turn() {
    let (bench, _h1, _h2) = two_hosts(Trust::Anything, false);
    let rollout = bench.update("web", "v2", 2, false);
    let before = bench.snapshot();
    let revision = before.rollout.as_ref().unwrap().mod_revision;
    rollout::halt(
        &mut bench.store.client(),
        &bench.keys,
        "h1",
        rollout.sequence,
        "broken",
    )
    .unwrap();
    let turn = rollout::take_turn(
        &mut bench.store.client(),
        &bench.keys,
        &before,
        &rollout,
        revision,
        "h2",
        bench.leases["h2"],
    )
    .unwrap();
    assert_eq!(
        turn, None,
        "a halt written since the rollout guards every turn"
    );
}

#[test]
fn a_host_lost_mid_update_halts_the_rollout_and_its_return_keeps_it_halted() {
    let (mut bench, _h1, mut h2) = two_hosts(Trust::Anything, false);
    let rollout = bench.update("web", "v2", 1, false);
    let snapshot = bench.snapshot();
    let revision = snapshot.rollout.as_ref().unwrap().mod_revision;
    rollout::take_turn(
        &mut bench.store.client(),
        &bench.keys,
        &snapshot,
        &rollout,
        revision,
        "h1",
        bench.leases["h1"],
    )
    .unwrap()
    .expect("turn");
    // h1's agent is SIGKILLed mid-update: its lease runs out, its marker stays.
    bench.store.expire(bench.leases["h1"]);
    let halted = Progress::Halted {
        host: "h1".into(),
        reason: "host h1 was lost during its update".into(),
    };
    assert_eq!(bench.snapshot().progress(&rollout), halted);
    settle(&mut h2);
    assert_eq!(h2.host.called("update web v2"), 0);
    // h1 comes back: its marker becomes its halt, and the rollout stays halted.
    let mut back = bench.agent("h1", Trust::Anything);
    back.host
        .serving
        .insert("web".into(), ("v1".into(), "172.17.0.2".into()));
    back.host
        .serving
        .insert("api".into(), ("v1".into(), "172.17.0.3".into()));
    settle(&mut back);
    let snapshot = bench.snapshot();
    assert!(snapshot.updating.is_empty());
    assert_eq!(snapshot.halts["h1"].rollout, rollout.sequence);
    assert_eq!(snapshot.progress(&rollout), halted);
    assert_eq!(back.host.called("update web v2"), 0);
    assert!(bench.log("h1").contains("my update was cut short"));
}

#[test]
fn running_the_rollout_again_after_a_halt_starts_afresh_and_reads_none_of_the_old_halts() {
    let (bench, mut h1, mut h2) = two_hosts(Trust::Anything, false);
    h1.host.broken_tags.insert("v2".into());
    let first = bench.update("web", "v2", 1, false);
    settle(&mut h1);
    assert!(matches!(
        bench.snapshot().progress(&first),
        Progress::Halted { .. }
    ));
    h1.host.broken_tags.clear();
    let again = bench.update("web", "v2", 1, false);
    assert!(again.sequence > first.sequence);
    assert_eq!(again.spec.previous, "v1");
    settle(&mut h1);
    settle(&mut h2);
    assert_eq!(bench.snapshot().progress(&again), Progress::Done);
    assert_eq!(
        (h1.host.tag("web"), h2.host.tag("web")),
        (Some("v2"), Some("v2"))
    );
}

#[test]
fn a_host_that_joins_after_the_rollout_is_done_starts_at_the_rollouts_tag() {
    let (mut bench, mut h1, mut h2) = two_hosts(Trust::Anything, false);
    let rollout = bench.update("web", "v2", 2, false);
    settle(&mut h1);
    settle(&mut h2);
    assert_eq!(bench.snapshot().progress(&rollout), Progress::Done);
    let mut h3 = bench.agent("h3", Trust::Anything);
    settle(&mut h3);
    assert_eq!(h3.host.calls, ["start web v2", "start api v1"]);
    assert_eq!(bench.snapshot().progress(&rollout), Progress::Done);
}

#[test]
fn a_host_whose_container_dies_mid_rollout_restarts_the_version_it_last_served() {
    let (bench, mut h1, mut h2) = two_hosts(Trust::Anything, false);
    bench.update("web", "v2", 1, false);
    settle(&mut h1);
    // h1 had its turn (v2); h2 has not (v1). Both lose their web container.
    h1.host.serving.remove("web");
    h2.host.serving.remove("web");
    h2.host.broken_tags.insert("v2".into());
    settle(&mut h1);
    h2.round().unwrap();
    assert_eq!(h1.host.called("start web v2"), 1);
    assert_eq!(h2.host.called("start web v1"), 2);
}

#[test]
fn an_unsigned_rollout_is_refused_and_halted_by_the_host_it_reaches() {
    let (bench, mut h1, _h2) = two_hosts(Trust::Signed, true);
    let forged = bench.update("web", "evil", 1, false);
    settle(&mut h1);
    assert_eq!(h1.host.called("update web evil"), 0);
    let Progress::Halted { host, reason } = bench.snapshot().progress(&forged) else {
        panic!("not halted");
    };
    assert_eq!(host, "h1");
    assert!(reason.contains("refused: unsigned spec"), "{reason}");
    assert!(bench.refusals("h1")[&bench.keys.rollout()].starts_with("unsigned spec"));
}

#[test]
fn a_forged_rollout_over_a_signed_running_one_takes_no_turn_anywhere() {
    let (bench, mut h1, mut h2) = two_hosts(Trust::Signed, true);
    bench.update("web", "v2", 1, true);
    settle(&mut h1);
    // h2 has not had its turn; the signed rollout is replaced by a forgery.
    let forged = r#"{"component": "api", "tag": "evil", "previous": "v1", "max_parallel": 1,
        "started_ms": 1}"#;
    let snapshot = bench.snapshot();
    let (_, ops) = crate::fleet::sealed::seal(
        &bench.keys,
        &bench.keys.rollout(),
        forged.into(),
        snapshot.rollout.as_ref(),
        None,
    )
    .unwrap();
    bench.store.client().txn(vec![], ops).unwrap();
    settle(&mut h2);
    assert_eq!(
        h2.host.called("update web v2"),
        0,
        "the kept rollout is not the one stored"
    );
    assert_eq!(h2.host.called("update api evil"), 0);
}

#[test]
fn a_rollout_is_refused_while_another_runs_and_resumed_as_it_is_when_the_same() {
    let (bench, _h1, _h2) = two_hosts(Trust::Anything, false);
    let first = bench.update("web", "v2", 1, false);
    let same = bench.update("web", "v2", 1, false);
    assert_eq!(
        same.sequence, first.sequence,
        "the same rollout is resumed, not rewritten"
    );
    let refused = bench.try_update("api", "v2", 1, false).unwrap_err();
    assert!(
        refused.contains("a rollout of web to v2 is running"),
        "{refused}"
    );
}

/// Etcd goes down while h1 updates: the turn's end cannot be written, and the lease outlives
/// the outage. Once etcd answers, h1 ends the turn it still holds with what serves here.
fn a_turn_whose_end_failed(broken: bool) -> (Bench, TestAgent, TestAgent, Rollout) {
    let (bench, mut h1, h2) = two_hosts(Trust::Anything, false);
    if broken {
        h1.host.broken_tags.insert("v2".into());
    }
    h1.host.outage_during_update = Some(bench.store.client());
    let rollout = bench.update("web", "v2", 1, false);
    assert!(h1.round().is_err(), "the turn's end cannot be written");
    bench.store.set_down(false);
    let snapshot = bench.snapshot();
    assert!(
        snapshot.turn_holders().contains("h1") && snapshot.updating.contains_key("h1"),
        "the turn and the marker outlived the outage"
    );
    settle(&mut h1);
    assert!(bench.snapshot().turns.is_empty() && bench.snapshot().updating.is_empty());
    (bench, h1, h2, rollout)
}

#[test]
fn a_turn_whose_end_failed_in_an_outage_is_ended_when_etcd_answers_and_the_rollout_goes_on() {
    let (bench, h1, mut h2, rollout) = a_turn_whose_end_failed(false);
    assert!(
        bench
            .log("h1")
            .contains("web: my turn ended (its end written after an etcd failure)"),
        "{}",
        bench.log("h1")
    );
    assert_eq!(h1.host.called("update web v2"), 1, "updated once");
    assert_eq!(
        bench.status("h1", "web").map(|s| s.state),
        Some(state::READY.to_string())
    );
    settle(&mut h2);
    assert_eq!(h2.host.tag("web"), Some("v2"));
    assert_eq!(bench.snapshot().progress(&rollout), Progress::Done);
}

#[test]
fn a_failed_update_whose_end_failed_in_an_outage_halts_the_rollout_when_etcd_answers() {
    let (bench, _h1, mut h2, rollout) = a_turn_whose_end_failed(true);
    let Progress::Halted { host, reason } = bench.snapshot().progress(&rollout) else {
        panic!("not halted: {}", bench.log("h1"));
    };
    assert_eq!(host, "h1");
    assert!(reason.contains("does not serve v2"), "{reason}");
    settle(&mut h2);
    assert_eq!(h2.host.called("update web v2"), 0, "no other host starts");
}
