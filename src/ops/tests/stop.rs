use super::super::stop::stop;
use super::super::testkit::{docker_address, Kit};
use super::super::update::start;
use super::update::flow;
use crate::kernel::conntrack::fake::FakeConntrack;
use crate::kernel::conntrack::FlowState;

#[test]
fn stop_unroutes_drains_signals_and_retires_everything() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    let report = stop(&env, kit.web(), true).unwrap();
    assert_eq!(report.drain.unwrap().retired.len(), 1);
    assert_eq!(kit.routed(), None);
    assert!(kit.runtime.all().is_empty());
    assert_eq!(kit.probe.posts.borrow().len(), 1, "the termination signal");
    let web = kit.state().component("web");
    assert!(web.active.is_none() && web.draining.is_empty());
}

#[test]
fn kill_signals_nothing_stops_at_once_and_expires_the_live_flows_too() {
    let kit = Kit::docker();
    start(&kit.quiet_env(), kit.web()).unwrap();
    let id = kit.runtime.running()[0].id.clone();
    let live = flow(40000, docker_address(2), FlowState::Established);
    let env = kit.env(FakeConntrack::with_table(vec![live]));
    let report = stop(&env, kit.web(), false).unwrap();
    assert_eq!(report.killed.len(), 1);
    assert!(kit.probe.posts.borrow().is_empty());
    assert!(kit.runtime.calls().contains(&format!("stop {id} 0s")));
    assert!(kit.runtime.all().is_empty());
}

#[test]
fn stop_with_a_container_that_already_stopped_succeeds() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    let id = kit.runtime.running()[0].id.clone();
    kit.runtime.stop_behind_our_back(&id);
    stop(&env, kit.web(), true).unwrap();
    assert!(kit.runtime.all().is_empty());
    assert!(kit.state().component("web").draining.is_empty());
}

#[test]
fn kill_with_a_container_that_vanished_succeeds() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    let id = kit.runtime.running()[0].id.clone();
    kit.runtime.vanish(&id);
    let report = stop(&env, kit.web(), false).unwrap();
    assert!(report
        .killed
        .iter()
        .all(|r| !matches!(r.retirement, crate::ops::retire::Retirement::Failed(_))));
    assert!(kit.state().component("web").draining.is_empty());
    assert_eq!(kit.routed(), None);
}

#[test]
fn stopping_an_address_component_unroutes_it_and_forgets_its_backend() {
    let kit = Kit::address();
    let env = kit.quiet_env();
    let address = "10.0.1.11".parse().unwrap();
    crate::ops::switch::switch_address(&env, kit.web(), address).unwrap();
    stop(&env, kit.web(), true).unwrap();
    assert_eq!(kit.routed(), None);
    let web = kit.state().component("web");
    assert!(web.active.is_none() && web.draining.is_empty());
}
