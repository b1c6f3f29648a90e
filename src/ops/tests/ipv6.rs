//! IPv6: a container on a network with IPv6 takes both families in one switch and drains in
//! both; an address component's IPv6 backend is switched, stopped and restored on its own.

use std::net::IpAddr;

use super::super::drain::finish_drain;
use super::super::restore::restore;
use super::super::stop::stop;
use super::super::switch::switch_address;
use super::super::testkit::{docker_address, update_and_drain, Kit};
use super::super::update::start;
use crate::kernel::conntrack::fake::{dnat_flow, event, FakeConntrack};
use crate::kernel::conntrack::{Change, Flow, FlowState};
use crate::kernel::netfilter::Firewall;

/// fd00:dd::N, the fake runtime's IPv6 address of the container at 172.17.0.N.
fn docker_address6(n: u16) -> IpAddr {
    IpAddr::from([0xfd00, 0xdd, 0, 0, 0, 0, 0, n])
}

/// An IPv6 client's flow to the host's port 80, answered by `backend`:8080.
fn flow6(port: u16, backend: IpAddr, state: FlowState) -> Flow {
    let mut flow = dnat_flow(port, &format!("[{backend}]:8080"), state);
    flow.client = format!("[fd00:2::2]:{port}").parse().unwrap();
    flow.reply_to = flow.client;
    flow.destination = "[fd00:2::1]:80".parse().unwrap();
    flow
}

#[test]
fn a_container_with_an_ipv6_address_takes_both_families_in_one_transaction() {
    let kit = Kit::docker();
    kit.runtime.with_ipv6();
    let env = kit.quiet_env();
    let started = start(&env, kit.web()).unwrap();
    assert_eq!(started.address6, Some(docker_address6(2)));
    let switches: Vec<String> = kit
        .firewall
        .log()
        .into_iter()
        .filter(|entry| entry.starts_with("switch "))
        .collect();
    assert_eq!(switches, ["switch web 172.17.0.2 fd00:dd::2"]);
    // Both addresses were checked ready.
    let routes = kit.firewall.routes("web").unwrap();
    assert_eq!(routes.active6(), Some(docker_address6(2)));
    let web = kit.state().component("web");
    assert_eq!(web.active.unwrap().address6, Some(docker_address6(2)));
    assert_eq!(web.active6, None, "one backend, both families");
    assert_eq!(
        kit.firewall.hairpin(),
        vec![docker_address(2), docker_address6(2)]
    );
}

#[test]
fn an_update_waits_for_the_old_containers_ipv6_flow_before_retiring_it() {
    let kit = Kit::docker();
    kit.runtime.with_ipv6();
    start(&kit.quiet_env(), kit.web()).unwrap();
    let old6 = docker_address6(2);
    let open = flow6(40000, old6, FlowState::Established);
    let closing = flow6(40000, old6, FlowState::TimeWait);
    let conntrack = FakeConntrack::with_table(vec![open]).then(move |table| {
        table[0] = closing.clone();
        vec![event(Change::Present(closing))]
    });
    let env = kit.env(conntrack);
    let (report, drain) = update_and_drain(&env, kit.web(), Some("v2"));
    let switched = report.switched.unwrap();
    assert_eq!(switched.address6, Some(docker_address6(3)));
    assert_eq!(switched.previous.unwrap().address6, Some(old6));
    let log = kit.firewall.log();
    assert!(
        log.contains(&"switch web 172.17.0.3 fd00:dd::3".to_string()),
        "{log:?}"
    );
    assert_eq!(drain.drained.len(), 1);
    assert_eq!(drain.drained[0].address6, Some(old6));
    assert_eq!(
        kit.runtime.running().len(),
        1,
        "retired once its flow ended"
    );
}

#[test]
fn an_ipv6_flow_keeps_the_old_container_until_the_drain_sees_it_end() {
    let kit = Kit::docker();
    kit.runtime.with_ipv6();
    start(&kit.quiet_env(), kit.web()).unwrap();
    let live = flow6(40000, docker_address6(2), FlowState::Established);
    let env = kit.env(FakeConntrack::with_table(vec![live]));
    super::super::update::update(&env, kit.web(), Some("v2")).unwrap();
    let drain = finish_drain(&env, kit.web(), Some(std::time::Duration::from_millis(50))).unwrap();
    assert!(drain.drained.is_empty(), "{drain:?}");
    assert_eq!(drain.still_open.len(), 1);
    assert_eq!(
        kit.runtime.running().len(),
        2,
        "the old container still runs"
    );
}

#[test]
fn an_address_components_ipv6_backend_is_switched_stopped_and_restored_on_its_own() {
    let kit = Kit::address();
    let env = kit.quiet_env();
    let v4: IpAddr = "10.0.1.11".parse().unwrap();
    let (a6, b6): (IpAddr, IpAddr) = ("fd00:1::11".parse().unwrap(), "fd00:1::12".parse().unwrap());
    switch_address(&env, kit.web(), v4).unwrap();
    switch_address(&env, kit.web(), a6).unwrap();
    let switched = switch_address(&env, kit.web(), b6).unwrap();
    assert_eq!(switched.previous.unwrap().address, a6);
    let routes = kit.firewall.routes("web").unwrap();
    assert_eq!((routes.active(), routes.active6()), (Some(v4), Some(b6)));
    let web = kit.state().component("web");
    assert_eq!(web.active.unwrap().address, v4);
    assert_eq!(web.active6.unwrap().address, b6);
    assert_eq!(web.draining[0].address, a6, "only the IPv6 backend drains");

    kit.firewall.lose_table();
    restore(&env, &kit.config.components).unwrap();
    let routes = kit.firewall.routes("web").unwrap();
    assert_eq!((routes.active(), routes.active6()), (Some(v4), Some(b6)));

    stop(&env, kit.web(), true).unwrap();
    assert!(!kit.firewall.routes("web").unwrap().is_routed());
    let web = kit.state().component("web");
    assert_eq!((web.active, web.active6), (None, None));
}
