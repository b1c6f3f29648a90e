use std::net::IpAddr;

use super::super::drain::finish_drain;
use super::super::rollback::{rollback, Rollback};
use super::super::switch::switch_address;
use super::super::switch::Switched;
use super::super::testkit::{docker_address, Kit};
use super::super::update::{start, update};
use crate::error::{exit_code_of, ExitCode};

fn switched(rolled: Rollback) -> Switched {
    match rolled {
        Rollback::Switched(switched) => switched,
        other => panic!("no switch: {other:?}"),
    }
}

#[test]
fn a_rollback_routes_back_to_the_draining_version_and_the_active_one_drains() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    let v1 = kit.runtime.running()[0].id.clone();
    update(&env, kit.web(), Some("v2")).unwrap();
    assert_eq!(kit.routed(), Some(docker_address(3)));
    let switched = switched(rollback(&env, kit.web()).unwrap());
    assert_eq!(switched.address, docker_address(2));
    assert_eq!(switched.previous.unwrap().address, docker_address(3));
    assert_eq!(kit.routed(), Some(docker_address(2)));
    let web = kit.state().component("web");
    assert_eq!(web.active.unwrap().container, Some(v1));
    let draining: Vec<IpAddr> = web.draining.iter().map(|b| b.address).collect();
    assert_eq!(draining, vec![docker_address(3)]);
    // Run again (after a crash, or by a doubtful operator) it is done: it does not flip web
    // forward to v2, which still drains.
    let log = kit.firewall.log();
    match rollback(&env, kit.web()).unwrap() {
        Rollback::AlreadyDone(done) => {
            assert_eq!((done.to, done.from), (docker_address(2), docker_address(3)))
        }
        other => panic!("flipped again: {other:?}"),
    }
    assert_eq!(kit.firewall.log(), log);
    assert_eq!(kit.routed(), Some(docker_address(2)));
    // Once the drain retired v2, there is nothing left to roll back to.
    let drain = finish_drain(&env, kit.web(), None).unwrap();
    assert_eq!(drain.retired.len(), 1);
    assert_eq!(
        kit.serving(),
        vec![("repo:v1".to_string(), Some(docker_address(2)))]
    );
    let error = rollback(&env, kit.web()).unwrap_err();
    assert_eq!(exit_code_of(&error), ExitCode::Input);
}

#[test]
fn an_address_component_rolls_back_to_its_previous_address() {
    let kit = Kit::address();
    let env = kit.quiet_env();
    let (a, b) = (IpAddr::from([10, 0, 1, 11]), IpAddr::from([10, 0, 1, 12]));
    switch_address(&env, kit.web(), a).unwrap();
    switch_address(&env, kit.web(), b).unwrap();
    assert_eq!(switched(rollback(&env, kit.web()).unwrap()).address, a);
    assert_eq!(kit.routed(), Some(a));
    let draining: Vec<IpAddr> = kit
        .state()
        .component("web")
        .draining
        .iter()
        .map(|b| b.address)
        .collect();
    assert_eq!(draining, vec![b]);
}

#[test]
fn with_nothing_draining_a_rollback_is_refused_and_changes_nothing() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    let (state, log) = (kit.state(), kit.firewall.log());
    let error = rollback(&env, kit.web()).unwrap_err();
    assert_eq!(exit_code_of(&error), ExitCode::Input);
    assert!(
        format!("{error:#}").starts_with("nothing to roll back to: web has no draining backend"),
        "{error:#}"
    );
    assert_eq!(kit.state(), state);
    assert_eq!(kit.firewall.log(), log);
}

#[test]
fn a_previous_container_that_is_gone_or_not_ready_is_refused_and_changes_nothing() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    let v1 = kit.runtime.running()[0].id.clone();
    update(&env, kit.web(), Some("v2")).unwrap();
    let (state, log) = (kit.state(), kit.firewall.log());

    kit.probe.never_ready(docker_address(2));
    let error = rollback(&env, kit.web()).unwrap_err();
    assert_eq!(exit_code_of(&error), ExitCode::NotReady, "{error:#}");
    assert_eq!(kit.routed(), Some(docker_address(3)));
    assert_eq!(
        (kit.state(), kit.firewall.log()),
        (state.clone(), log.clone())
    );

    kit.runtime.vanish(&v1);
    let error = rollback(&env, kit.web()).unwrap_err();
    assert_eq!(exit_code_of(&error), ExitCode::Input, "{error:#}");
    assert!(
        format!("{error:#}").contains("previous backend 172.17.0.2 is gone"),
        "{error:#}"
    );
    assert_eq!(kit.routed(), Some(docker_address(3)));
    assert_eq!(kit.firewall.log(), log);
}

#[test]
fn an_update_after_a_rollback_ends_it_and_the_next_rollback_returns_to_the_rolled_back_to() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    update(&env, kit.web(), Some("v2")).unwrap();
    switched(rollback(&env, kit.web()).unwrap());
    finish_drain(&env, kit.web(), None).unwrap();
    update(&env, kit.web(), Some("v2")).unwrap();
    assert_eq!(kit.state().component("web").rolled_back, None);
    let back = switched(rollback(&env, kit.web()).unwrap());
    assert_eq!(kit.runtime.running().len(), 2);
    assert_eq!(Some(back.address), kit.routed());
    assert_eq!(
        kit.runtime
            .running()
            .into_iter()
            .find(|c| c.address == Some(back.address))
            .unwrap()
            .image,
        "repo:v1"
    );
}
