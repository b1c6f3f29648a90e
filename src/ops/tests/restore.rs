use super::super::restore::{restore, Restored};
use super::super::testkit::{docker_address, update_and_drain, Kit};
use super::super::update::start;
use crate::ops::drain::finish_drain;
use crate::ops::retire::Retirement;
use crate::runtime::Runtime;
use crate::state::BackendRecord;

#[test]
fn after_a_reboot_the_active_container_is_started_again_and_nothing_of_it_is_drained() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    update_and_drain(&env, kit.web(), Some("v2"));
    let active = kit.runtime.running()[0].clone();
    assert_eq!(active.address, Some(docker_address(3)));
    // A reboot: our table is gone, the container stopped; started again, it gets the lowest
    // free address, .2, not .3.
    kit.firewall.lose_table();
    kit.runtime.stop_behind_our_back(&active.id);
    let report = restore(&env, &kit.config.components).unwrap();
    assert!(report.failed().is_empty());
    let Ok(Restored::Routed(switched)) = &report.components[0].1 else {
        panic!("not routed: {:?}", report.components)
    };
    assert_eq!(switched.len(), 1, "one family: {switched:?}");
    assert_eq!(
        switched[0].previous, None,
        "its old address is not reported draining"
    );
    let running = kit.runtime.running();
    assert_eq!(running.len(), 1, "the restarted container was not retired");
    assert_eq!(running[0].id, active.id);
    assert_eq!(kit.routed(), Some(docker_address(2)));
    let web = kit.state().component("web");
    assert!(web.draining.is_empty(), "{web:?}");
    assert_eq!(web.active.unwrap().container, Some(active.id.clone()));
    assert_eq!(kit.firewall.forward_path_opened(), 1);
    let pid = kit.runtime.pid(&active.id).unwrap();
    assert!(
        kit.firewall
            .log()
            .contains(&format!("hairpin mode {pid} {}", docker_address(2))),
        "its new bridge port lets it reach itself again: {:?}",
        kit.firewall.log()
    );
}

#[test]
fn after_a_reboot_a_container_docker_restarted_gets_hairpin_mode_again() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    let active = kit.runtime.running()[0].id.clone();
    let pid = kit.runtime.pid(&active).unwrap();
    let hairpin = format!("hairpin mode {pid} {}", docker_address(2));
    let count = |kit: &Kit| kit.firewall.log().iter().filter(|c| **c == hairpin).count();
    assert_eq!(count(&kit), 1, "set when the container started");
    kit.firewall.lose_table();
    restore(&env, &kit.config.components).unwrap();
    assert_eq!(
        count(&kit),
        2,
        "set again: a restarted container has a new veth"
    );
}

#[test]
fn restore_replaces_a_recorded_container_that_vanished() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    let gone = kit.runtime.running()[0].id.clone();
    kit.firewall.lose_table();
    kit.runtime.vanish(&gone);
    restore(&env, &kit.config.components).unwrap();
    let running = kit.runtime.running();
    assert_eq!(running.len(), 1);
    assert_ne!(running[0].id, gone);
    assert_eq!(kit.routed(), running[0].address);
}

#[test]
fn restore_routes_an_address_component_as_recorded() {
    let kit = Kit::address();
    let env = kit.quiet_env();
    let address = "10.0.1.11".parse().unwrap();
    crate::ops::switch::switch_address(&env, kit.web(), address).unwrap();
    kit.firewall.lose_table();
    restore(&env, &kit.config.components).unwrap();
    assert_eq!(kit.routed(), Some(address));
}

#[test]
fn restore_leaves_a_routed_component_routed_and_reasserts_it() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    let report = restore(&env, &kit.config.components).unwrap();
    assert!(matches!(
        report.components[0].1,
        Ok(Restored::Refreshed(address)) if address == docker_address(2)
    ));
    assert_eq!(kit.runtime.all().len(), 1);
}

/// What restore wrote before the fix, after a restart at another address: the active
/// container's old address, draining. Whatever drains next must not retire the container.
#[test]
fn a_draining_record_of_the_active_container_is_forgotten_never_retired() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    let active = kit.runtime.running()[0].clone();
    let mut state = kit.state();
    let web = state.components.get_mut("web").unwrap();
    web.draining.push(BackendRecord {
        address: docker_address(9),
        address6: None,
        ports: kit.web().port_pairs(),
        since_ms: 0,
        container: Some(active.id.clone()),
    });
    kit.state_dir().save(&state).unwrap();
    let report = finish_drain(&env, kit.web(), None).unwrap();
    assert_eq!(report.retired.len(), 1, "{report:?}");
    assert_eq!(report.retired[0].retirement, Retirement::Active);
    let running = kit.runtime.running();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].id, active.id, "the active container still runs");
    assert!(kit.probe.posts.borrow().is_empty(), "and got no signal");
    assert!(kit.state().component("web").draining.is_empty());
    assert_eq!(kit.routed(), active.address);
}
