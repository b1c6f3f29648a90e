//! Fleet-wide stop, kill and start from the agents' side.

use super::*;
use crate::fleet::records::state;

fn serving(trust: Trust, signed: bool) -> (Bench, TestAgent) {
    let mut bench = Bench::new();
    bench.set_config(CONFIG, signed);
    let mut agent = bench.agent("h1", trust);
    settle(&mut agent);
    (bench, agent)
}

#[test]
fn a_stop_withdraws_drains_and_reports_stopped_when_the_drain_ends() {
    let (bench, mut agent) = serving(Trust::Anything, false);
    assert!(matches!(
        bench.ask("web", StopAction::Stop, false),
        Ok(Asked::Written(_))
    ));
    settle(&mut agent);
    assert_eq!(agent.host.called("withdraw web"), 1);
    assert_eq!(agent.host.called("drain web"), 1);
    assert_eq!(bench.state("h1", "web").0, state::STOPPING);
    settle(&mut agent);
    assert_eq!(
        agent.host.called("withdraw web"),
        1,
        "withdrawn once while it drains"
    );
    agent.host.finish_drains();
    agent.reap_drains().unwrap();
    assert_eq!(bench.state("h1", "web").0, state::STOPPED);
    settle(&mut agent);
    assert_eq!(
        agent.host.called("start web v1"),
        1,
        "a stopped component is not started"
    );
}

#[test]
fn a_kill_cuts_a_stops_drain_short_and_the_drains_end_does_not_overwrite_it() {
    let (bench, mut agent) = serving(Trust::Anything, false);
    bench.ask("web", StopAction::Stop, false).unwrap();
    settle(&mut agent);
    bench.ask("web", StopAction::Kill, false).unwrap();
    settle(&mut agent);
    assert_eq!(agent.host.called("kill web"), 1);
    assert_eq!(bench.state("h1", "web").0, state::KILLED);
    agent.host.finish_drains();
    agent.reap_drains().unwrap();
    assert_eq!(bench.state("h1", "web").0, state::KILLED);
    // A stop asked after the kill stays a kill.
    bench.ask("web", StopAction::Stop, false).unwrap();
    assert!(bench.snapshot().stored_stop("web").unwrap().kill());
}

#[test]
fn a_start_serves_again_and_a_late_drain_end_of_the_stop_is_not_reported() {
    let (bench, mut agent) = serving(Trust::Anything, false);
    bench.ask("web", StopAction::Stop, false).unwrap();
    settle(&mut agent);
    bench.ask("web", StopAction::Start, false).unwrap();
    settle(&mut agent);
    assert_eq!(agent.host.called("start web v1"), 2);
    agent.host.finish_drains();
    agent.reap_drains().unwrap();
    assert_eq!(bench.state("h1", "web").0, state::READY);
    assert!(matches!(
        bench.ask("web", StopAction::Start, false),
        Ok(Asked::NotStopped)
    ));
}

#[test]
fn a_signed_stop_deleted_from_the_store_still_holds_on_a_host_that_accepted_it() {
    let (bench, mut agent) = serving(Trust::Signed, true);
    bench.ask("web", StopAction::Kill, true).unwrap();
    settle(&mut agent);
    assert_eq!(agent.host.called("kill web"), 1);
    bench.store.delete(&bench.keys.stop("web"));
    bench
        .store
        .delete(&bench.keys.signature(&bench.keys.stop("web")));
    settle(&mut agent);
    assert_eq!(
        agent.host.called("start web v1"),
        1,
        "a deletion cannot start it again"
    );
}

#[test]
fn an_unsigned_start_does_not_lift_a_signed_stop() {
    let (bench, mut agent) = serving(Trust::Signed, true);
    bench.ask("web", StopAction::Kill, true).unwrap();
    settle(&mut agent);
    bench.ask("web", StopAction::Start, false).unwrap();
    settle(&mut agent);
    assert_eq!(agent.host.called("start web v1"), 1);
    let refused = &bench.refusals("h1")[&bench.keys.stop("web")];
    assert!(refused.starts_with("unsigned spec"), "{refused}");
}

#[test]
fn a_stop_is_refused_during_a_rollout_of_the_component_and_a_rollout_while_it_is_stopped() {
    let (bench, _agent) = serving(Trust::Anything, false);
    bench.update("web", "v2", 1, false);
    let refused = bench
        .ask("web", StopAction::Stop, false)
        .err()
        .expect("refused");
    assert!(
        refused.contains("a rollout of web to v2 is running"),
        "{refused}"
    );
    bench.ask("api", StopAction::Stop, false).unwrap();
    let refused = bench.try_update("api", "v2", 1, false).unwrap_err();
    assert!(refused.contains("api is stopped fleet-wide"), "{refused}");
}
