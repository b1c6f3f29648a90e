use std::net::IpAddr;

use super::super::canary::{canary_address, canary_update, promote};
use super::super::drain::finish_drain;
use super::super::rollback::{rollback, Rollback};
use super::super::stop::stop;
use super::super::switch::switch_address;
use super::super::testkit::{docker_address, Kit};
use super::super::update::{start, update};
use crate::error::{exit_code_of, ExitCode};

const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 1, 11));
const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 1, 12));
const C: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 1, 13));

#[test]
fn a_canary_takes_its_share_beside_the_active_backend_and_its_share_changes_in_place() {
    let kit = Kit::address();
    let env = kit.quiet_env();
    switch_address(&env, kit.web(), A).unwrap();
    let split = canary_address(&env, kit.web(), B, 10, false).unwrap();
    assert_eq!((split.active, split.canary, split.weight), (A, B, 10));
    assert_eq!(kit.routed(), Some(A), "the active backend stays");
    assert_eq!(
        kit.firewall.log().last().unwrap(),
        "switch web 10.0.1.11 canary 10.0.1.12 10%"
    );
    let recorded = kit.state().component("web");
    assert_eq!(recorded.canary.as_ref().unwrap().weight, 10);
    assert!(recorded.draining.is_empty(), "nothing drains: A keeps 90 %");
    assert!(kit.firewall.hairpin().contains(&B));

    canary_address(&env, kit.web(), B, 50, true).unwrap();
    assert_eq!(
        kit.firewall.log().last().unwrap(),
        "switch web 10.0.1.11 canary 10.0.1.12 50% sticky"
    );
    // Another canary replaces this one, which drains.
    let split = canary_address(&env, kit.web(), C, 5, false).unwrap();
    assert_eq!(split.replaced.unwrap().address, B);
    let draining: Vec<IpAddr> = kit
        .state()
        .component("web")
        .draining
        .iter()
        .map(|b| b.address)
        .collect();
    assert_eq!(draining, vec![B]);
}

#[test]
fn promote_gives_the_canary_everything_and_the_old_active_drains() {
    let kit = Kit::address();
    let env = kit.quiet_env();
    switch_address(&env, kit.web(), A).unwrap();
    canary_address(&env, kit.web(), B, 10, false).unwrap();
    let switched = promote(&env, kit.web()).unwrap();
    assert_eq!(switched.address, B);
    assert_eq!(kit.routed(), Some(B));
    assert_eq!(kit.firewall.log().last().unwrap(), "switch web 10.0.1.12");
    let recorded = kit.state().component("web");
    assert_eq!(recorded.canary, None);
    assert_eq!(recorded.draining[0].address, A);
    let error = promote(&env, kit.web()).unwrap_err();
    assert_eq!(exit_code_of(&error), ExitCode::Input);
    assert!(format!("{error:#}").contains("has no canary to promote"));
}

#[test]
fn rollback_during_a_canary_ends_it_and_the_canary_drains() {
    let kit = Kit::address();
    let env = kit.quiet_env();
    switch_address(&env, kit.web(), A).unwrap();
    canary_address(&env, kit.web(), B, 10, false).unwrap();
    match rollback(&env, kit.web()).unwrap() {
        Rollback::CanaryEnded(canary) => assert_eq!(canary, B),
        other => panic!("{other:?}"),
    }
    assert_eq!(kit.routed(), Some(A));
    assert_eq!(kit.firewall.log().last().unwrap(), "switch web 10.0.1.11");
    let recorded = kit.state().component("web");
    assert_eq!(recorded.canary, None);
    assert_eq!(recorded.draining[0].address, B);
}

#[test]
fn a_plain_switch_or_update_during_a_canary_is_refused_and_changes_nothing() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    canary_update(&env, kit.web(), Some("v2"), 20, false).unwrap();
    let (state, log) = (kit.state(), kit.firewall.log());
    let error = update(&env, kit.web(), Some("v2")).unwrap_err();
    assert_eq!(exit_code_of(&error), ExitCode::Input);
    assert!(
        format!("{error:#}").contains("has a canary at 172.17.0.3"),
        "{error:#}"
    );
    assert_eq!((kit.state(), kit.firewall.log()), (state, log));
    assert_eq!(kit.runtime.running().len(), 2, "no container started");
}

#[test]
fn bad_canaries_are_refused_with_nothing_changed() {
    let kit = Kit::address();
    let env = kit.quiet_env();
    // Nothing routed yet: a canary needs an active backend beside it.
    let error = canary_address(&env, kit.web(), B, 10, false).unwrap_err();
    assert_eq!(exit_code_of(&error), ExitCode::Input);
    switch_address(&env, kit.web(), A).unwrap();
    let (state, log) = (kit.state(), kit.firewall.log());
    // The active backend itself.
    let error = canary_address(&env, kit.web(), A, 10, false).unwrap_err();
    assert_eq!(exit_code_of(&error), ExitCode::Input);
    // Not ready.
    kit.probe.never_ready(B);
    let error = canary_address(&env, kit.web(), B, 10, false).unwrap_err();
    assert_eq!(exit_code_of(&error), ExitCode::NotReady);
    assert_eq!((kit.state(), kit.firewall.log()), (state, log));
}

#[test]
fn a_docker_canary_runs_beside_the_old_version_and_a_rerun_only_changes_its_share() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    let split = canary_update(&env, kit.web(), Some("v2"), 10, false).unwrap();
    assert_eq!(split.canary, docker_address(3));
    assert_eq!(kit.runtime.running().len(), 2);
    // The same version again: only the share changes, no new container.
    canary_update(&env, kit.web(), Some("v2"), 30, true).unwrap();
    assert_eq!(kit.runtime.running().len(), 2);
    assert_eq!(
        kit.firewall.log().last().unwrap(),
        "switch web 172.17.0.2 canary 172.17.0.3 30% sticky"
    );
    // The canary's container is not an orphan to the next step's reconcile.
    promote(&env, kit.web()).unwrap();
    finish_drain(&env, kit.web(), None).unwrap();
    assert_eq!(
        kit.serving(),
        vec![("repo:v2".to_string(), Some(docker_address(3)))]
    );
}

#[test]
fn a_canary_recorded_but_not_routed_after_a_crash_drains_on_the_next_step() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    canary_update(&env, kit.web(), Some("v2"), 10, false).unwrap();
    // The kernel lost the canary (a run died after writing the state, before the kernel).
    kit.firewall.lose_canary("web");
    let error = promote(&env, kit.web()).unwrap_err();
    assert_eq!(exit_code_of(&error), ExitCode::Input);
    let recorded = kit.state().component("web");
    assert_eq!(recorded.canary, None);
    assert_eq!(recorded.draining[0].address, docker_address(3));
}

#[test]
fn stop_during_a_canary_drains_and_retires_both() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    canary_update(&env, kit.web(), Some("v2"), 10, false).unwrap();
    stop(&env, kit.web(), true).unwrap();
    assert!(kit.runtime.running().is_empty());
    assert_eq!(kit.routed(), None);
    let recorded = kit.state().component("web");
    assert_eq!((recorded.canary, recorded.draining.len()), (None, 0));
}
