//! Convergence: what an agent starts, reports and leaves alone.

use super::*;
use crate::fleet::records::state;

#[test]
fn an_agent_starts_every_component_of_the_config_and_reports_each_ready() {
    let mut bench = Bench::new();
    bench.set_config(CONFIG, false);
    let mut agent = bench.agent("h1", Trust::Anything);
    settle(&mut agent);
    assert_eq!(agent.host.calls, ["start web v1", "start api v1"]);
    assert_eq!(
        bench.state("h1", "web"),
        ("ready".into(), Some("v1".into()))
    );
    assert_eq!(
        bench.state("h1", "api"),
        ("ready".into(), Some("v1".into()))
    );
}

#[test]
fn a_second_round_starts_nothing_and_writes_nothing() {
    let mut bench = Bench::new();
    bench.set_config(CONFIG, false);
    let mut agent = bench.agent("h1", Trust::Anything);
    settle(&mut agent);
    let writes = bench.store.txns();
    settle(&mut agent);
    assert_eq!(agent.host.calls.len(), 2, "{:?}", agent.host.calls);
    assert_eq!(bench.store.txns(), writes, "a round with nothing new wrote");
}

#[test]
fn with_no_config_an_agent_starts_nothing_and_says_so() {
    let mut bench = Bench::new();
    let mut agent = bench.agent("h1", Trust::Anything);
    settle(&mut agent);
    assert!(agent.host.calls.is_empty());
    assert!(bench.log("h1").contains("no config accepted yet"));
}

#[test]
fn a_component_that_fails_to_start_is_reported_failed_and_the_others_still_start() {
    let mut bench = Bench::new();
    bench.set_config(CONFIG, false);
    let mut agent = bench.agent("h1", Trust::Anything);
    agent.host.broken_tags.insert("v1".into());
    agent
        .host
        .serving
        .insert("api".into(), ("v1".into(), "172.17.0.9".into()));
    settle(&mut agent);
    let web = bench.status("h1", "web").expect("web");
    assert_eq!(web.state, state::FAILED);
    assert!(web.reason.unwrap().contains("did not become ready"));
    assert_eq!(bench.state("h1", "api").0, state::READY);
}

#[test]
fn a_status_is_not_written_once_the_lease_no_longer_holds_the_registration() {
    let mut bench = Bench::new();
    bench.set_config(CONFIG, false);
    let mut agent = bench.agent("h1", Trust::Anything);
    bench.store.expire(bench.leases["h1"]);
    assert!(!registered(&bench, "h1"));
    settle(&mut agent);
    assert!(bench.status("h1", "web").is_none());
    assert!(bench.log("h1").contains("lease no longer holds h1"));
}

#[test]
fn a_store_that_cannot_be_reached_tears_nothing_down() {
    let mut bench = Bench::new();
    bench.set_config(CONFIG, false);
    let mut agent = bench.agent("h1", Trust::Anything);
    settle(&mut agent);
    bench.store.set_down(true);
    assert!(agent.round().is_err());
    assert_eq!(agent.host.calls, ["start web v1", "start api v1"]);
    assert_eq!(agent.host.serving.len(), 2);
    bench.store.set_down(false);
    settle(&mut agent);
    assert_eq!(agent.host.calls.len(), 2);
}

/// fleet-test.sh step 5 once failed on this: after an outage ended with no change to the
/// fleet, the agent watched again but still counted itself failing, so the next outage (a
/// frozen etcd) went unsaid.
#[test]
fn each_outage_is_said_and_so_is_the_watch_standing_again_without_any_change() {
    let mut bench = Bench::new();
    bench.set_config(CONFIG, false);
    let mut agent = bench.agent("h1", Trust::Anything);
    let store = bench.store.clone();
    let lines = Rc::clone(&bench.logs["h1"]);
    let said = |text: &str| lines.borrow().iter().filter(|l| l.contains(text)).count();
    // `stopping` is asked between each step of the agent's loop: it drives the outages from
    // what the agent has said so far. Down once the agent watches; up once it said so; down
    // again once it said that etcd answers (no change is written in between); stop once it
    // said the second outage, or after 500 questions.
    let asked = std::cell::Cell::new(0);
    let stopping = || {
        asked.set(asked.get() + 1);
        let (failures, back) = (said("retrying with backoff"), said("etcd answers again"));
        match (failures, back) {
            (0, 0) if asked.get() == 3 => store.set_down(true),
            (1, 0) => store.set_down(false),
            (1, 1) => store.set_down(true),
            _ => {}
        }
        failures == 2 || asked.get() >= 500
    };
    agent.run(&stopping);
    let log = bench.log("h1");
    assert_eq!(log.matches("retrying with backoff").count(), 2, "{log}");
    assert_eq!(log.matches("etcd answers again").count(), 1, "{log}");
    let again = log.find("etcd answers again").expect("said");
    assert!(
        log[..again].contains("retrying") && log[again..].contains("retrying"),
        "{log}"
    );
}

#[test]
fn an_unhealthy_container_is_replaced_at_the_tag_it_serves_after_too_many_failed_rounds() {
    let mut bench = Bench::new();
    bench.set_config(CONFIG, false);
    let mut agent = bench.agent("h1", Trust::Anything);
    settle(&mut agent);
    agent.host.unhealthy.insert("web".into());
    agent.health_round().expect("round");
    assert_eq!(
        agent.host.called("update web v1"),
        0,
        "one failed round is allowed"
    );
    agent.health_round().expect("round");
    assert_eq!(agent.host.called("update web v1"), 1);
    let web = bench.status("h1", "web").expect("web");
    assert_eq!(
        web.active.as_deref(),
        Some(agent.host.serving["web"].1.as_str())
    );
}

#[test]
fn backends_left_draining_by_an_earlier_run_are_drained() {
    let mut bench = Bench::new();
    bench.set_config(CONFIG, false);
    let mut agent = bench.agent("h1", Trust::Anything);
    agent.host.left_draining.insert("web".into());
    settle(&mut agent);
    assert_eq!(agent.host.called("drain web"), 1);
    settle(&mut agent);
    assert_eq!(agent.host.called("drain web"), 1, "one drain at a time");
}
