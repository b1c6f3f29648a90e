//! `monitor`'s rounds and `switch` to address backends.

use super::super::monitor::round;
use super::super::switch::switch_address;
use super::super::testkit::{docker_address, Kit};
use super::super::update::start;
use crate::error::{exit_code_of, ExitCode};

#[test]
fn monitor_replaces_only_after_the_allowed_number_of_failed_rounds() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    kit.probe.set_healthy(docker_address(2), false);
    let first = round(&env, kit.web(), 3, 0).unwrap();
    assert_eq!(first.failures, 1);
    let second = round(&env, kit.web(), 3, first.failures).unwrap();
    assert_eq!(second.failures, 2);
    assert!(second.replaced.is_none());
    // Healthy again: the count starts over.
    kit.probe.set_healthy(docker_address(2), true);
    let healthy = round(&env, kit.web(), 3, second.failures).unwrap();
    assert_eq!(healthy.failures, 0);
    kit.probe.set_healthy(docker_address(2), false);
    let mut failures = 0;
    for _ in 0..2 {
        let r = round(&env, kit.web(), 3, failures).unwrap();
        assert!(r.replaced.is_none());
        failures = r.failures;
    }
    let third = round(&env, kit.web(), 3, failures).unwrap();
    assert!(matches!(third.replaced, Some(Ok(_))));
    assert_eq!(kit.routed(), Some(docker_address(3)));
    // The next round retires the replaced container, which had nothing left to drain.
    round(&env, kit.web(), 3, 0).unwrap();
    assert_eq!(kit.runtime.running().len(), 1);
}

#[test]
fn a_switch_drains_the_previous_address_and_switching_back_takes_it_out_of_draining() {
    let kit = Kit::address();
    let env = kit.quiet_env();
    let (a, b) = ("10.0.1.11".parse().unwrap(), "10.0.1.12".parse().unwrap());
    switch_address(&env, kit.web(), a).unwrap();
    let switched = switch_address(&env, kit.web(), b).unwrap();
    assert_eq!(switched.previous.unwrap().address, a);
    assert_eq!(kit.state().component("web").draining[0].address, a);
    switch_address(&env, kit.web(), a).unwrap();
    let web = kit.state().component("web");
    assert_eq!(web.draining.len(), 1);
    assert_eq!(web.draining[0].address, b);
}

#[test]
fn a_switch_the_kernel_refuses_leaves_the_state_as_it_was() {
    let kit = Kit::address();
    let env = kit.quiet_env();
    switch_address(&env, kit.web(), "10.0.1.11".parse().unwrap()).unwrap();
    let before = kit.state();
    kit.firewall.fail_next();
    let error = switch_address(&env, kit.web(), "10.0.1.12".parse().unwrap()).unwrap_err();
    assert!(
        format!("{error:#}").contains("nothing was changed"),
        "{error:#}"
    );
    assert_eq!(kit.state(), before);
    assert_eq!(kit.routed(), Some("10.0.1.11".parse().unwrap()));
}

#[test]
fn an_unready_address_is_refused_with_exit_3_and_changes_nothing() {
    let kit = Kit::address();
    let env = kit.quiet_env();
    let nobody = "10.0.1.13".parse().unwrap();
    kit.probe.never_ready(nobody);
    let error = switch_address(&env, kit.web(), nobody).unwrap_err();
    assert_eq!(exit_code_of(&error), ExitCode::NotReady);
    assert_eq!(kit.routed(), None);
    assert!(kit.firewall.log().is_empty());
}
