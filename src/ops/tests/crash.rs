//! A rerun of `update` after a run that died at each of its steps (state × kernel map ×
//! containers as that step left them) converges: one container of the new version serves,
//! nothing drains, nothing is orphaned.

use std::collections::HashMap;

use super::super::testkit::{docker_address, update_and_drain, Kit};
use super::super::update::{start, update};
use crate::kernel::netfilter::{ComponentRoutes, Firewall, Switch};
use crate::runtime::{ContainerSpec, Runtime, LABEL_COMPONENT, LABEL_GENERATION, LABEL_TABLE};

/// After a rerun of `update --tag v2`: exactly one container, of v2, routed; nothing draining;
/// the hairpin set holds just it.
fn converged(kit: &Kit) -> String {
    let running = kit.runtime.running();
    assert_eq!(running.len(), 1, "{running:?}");
    assert_eq!(kit.runtime.all().len(), 1, "nothing stopped is left");
    assert_eq!(running[0].image, "repo:v2");
    assert_eq!(kit.routed(), running[0].address);
    let web = kit.state().component("web");
    assert!(web.draining.is_empty(), "{web:?}");
    assert_eq!(web.active.unwrap().address, running[0].address.unwrap());
    assert_eq!(kit.firewall.hairpin(), vec![running[0].address.unwrap()]);
    running[0].id.clone()
}

/// Route web back to `address`, as if the kernel had never seen the switch.
fn route_back(kit: &Kit, address: std::net::IpAddr) {
    let ports = kit.web().port_pairs();
    kit.firewall
        .switch(&Switch {
            component: "web",
            current: &ComponentRoutes::default(),
            ports: &ports,
            backends: crate::kernel::netfilter::Backends::default().with(address),
            canary: None,
            localhost: false,
            links: None,
            hairpin_sources: &[address],
        })
        .unwrap();
}

/// A plain container on the bridge network.
fn container(name: &str, image: &str, labels: HashMap<String, String>) -> ContainerSpec {
    ContainerSpec {
        name: name.to_string(),
        image: image.to_string(),
        command: Vec::new(),
        user: String::new(),
        privileged: false,
        env: Vec::new(),
        binds: Vec::new(),
        volumes_from: Vec::new(),
        network: "bridge".to_string(),
        labels,
    }
}

/// v1 started, then updated to v2 without waiting for the drain (the old container is left
/// draining, as a run killed during the drain leaves it); returns the old container's id.
fn updated_without_waiting(kit: &Kit) -> String {
    start(&kit.quiet_env(), kit.web()).unwrap();
    let old = kit.runtime.running()[0].id.clone();
    update(&kit.quiet_env(), kit.web(), Some("v2")).unwrap();
    old
}

#[test]
fn a_rerun_after_the_new_container_started_but_was_never_switched_to_converges() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    // The dead run's container: labelled, running, unknown to the state and the kernel.
    let labels = HashMap::from([
        (LABEL_TABLE.to_string(), "handoff".to_string()),
        (LABEL_COMPONENT.to_string(), "web".to_string()),
        (LABEL_GENERATION.to_string(), "2".to_string()),
    ]);
    kit.runtime
        .create_and_start(&container("handoff-web-orphan", "repo:v2", labels))
        .unwrap();
    update_and_drain(&env, kit.web(), Some("v2"));
    converged(&kit);
}

#[test]
fn a_rerun_after_the_state_recorded_the_switch_but_the_kernel_did_not_converges() {
    let kit = Kit::docker();
    updated_without_waiting(&kit);
    route_back(&kit, docker_address(2));
    update_and_drain(&kit.quiet_env(), kit.web(), Some("v2"));
    converged(&kit);
}

#[test]
fn a_rerun_after_the_switch_finishes_that_drain_and_keeps_the_routed_container() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    let first = update(&env, kit.web(), Some("v2")).unwrap();
    let routed = kit.routed();
    assert_eq!(routed, Some(first.switched.unwrap().address));
    let (rerun, _) = update_and_drain(&env, kit.web(), Some("v2"));
    assert!(rerun.already_serving.is_some() && rerun.switched.is_none());
    let serving = converged(&kit);
    assert_eq!(kit.runtime.running()[0].address, routed);
    assert!(!serving.is_empty());
}

#[test]
fn a_rerun_after_the_old_container_stopped_but_was_not_removed_converges() {
    let kit = Kit::docker();
    let old = updated_without_waiting(&kit);
    kit.runtime.stop_behind_our_back(&old);
    update_and_drain(&kit.quiet_env(), kit.web(), Some("v2"));
    converged(&kit);
    assert!(
        kit.probe.posts.borrow().is_empty(),
        "a stopped container gets no termination signal"
    );
}

#[test]
fn a_rerun_after_the_old_container_vanished_before_the_state_forgot_it_converges() {
    let kit = Kit::docker();
    let old = updated_without_waiting(&kit);
    kit.runtime.vanish(&old);
    update_and_drain(&kit.quiet_env(), kit.web(), Some("v2"));
    converged(&kit);
}

#[test]
fn an_address_taken_over_by_another_container_gets_neither_signal_nor_expiry() {
    let kit = Kit::docker();
    let old = updated_without_waiting(&kit);
    // The old container vanishes; someone else's container gets its address.
    kit.runtime.vanish(&old);
    let squatter = kit
        .runtime
        .create_and_start(&container("someone-else", "repo:v1", HashMap::new()))
        .unwrap();
    assert_eq!(
        kit.runtime.running_address(&squatter, "bridge").unwrap(),
        Some(docker_address(2))
    );
    let theirs = super::update::flow(
        40000,
        docker_address(2),
        crate::kernel::conntrack::FlowState::TimeWait,
    );
    let env = kit.env(crate::kernel::conntrack::fake::FakeConntrack::with_table(
        vec![theirs],
    ));
    super::super::drain::finish_drain(&env, kit.web(), None).unwrap();
    assert!(
        kit.probe.posts.borrow().is_empty(),
        "no signal to the squatter"
    );
    assert!(kit
        .runtime
        .running_address(&squatter, "bridge")
        .unwrap()
        .is_some());
}

#[test]
fn a_rerun_after_the_state_file_was_lost_converges() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    update_and_drain(&env, kit.web(), Some("v2"));
    std::fs::remove_file(kit.state_dir().path().join("state.json")).unwrap();
    update_and_drain(&env, kit.web(), Some("v2"));
    converged(&kit);
}
