//! Where links are reached when Docker names no gateway: the decision between the runtime's
//! word and the bridge's addresses, with the kernel's answer given.

use std::cell::Cell;
use std::net::Ipv4Addr;

use super::super::gateway::resolve;
use crate::error::{exit_code_of, ExitCode};
use crate::runtime::{Gateway, Ipv4Subnet};

fn on_bridge(interface: &str, subnet: &str) -> Gateway {
    Gateway::OnBridge {
        interface: interface.to_string(),
        subnet: Ipv4Subnet::parse(subnet).unwrap().unwrap(),
    }
}

#[test]
fn a_gateway_the_runtime_names_is_used_without_asking_the_kernel() {
    let asked = Cell::new(false);
    let gateway = resolve(
        "bridge",
        Gateway::Named(Ipv4Addr::new(172, 17, 0, 1)),
        |_| {
            asked.set(true);
            Ok(None)
        },
    )
    .unwrap();
    assert_eq!(gateway, Ipv4Addr::new(172, 17, 0, 1));
    assert!(!asked.get());
}

#[test]
fn without_one_it_is_the_bridge_address_inside_the_network_subnet() {
    let asked = Cell::new(String::new());
    let gateway = resolve("bridge", on_bridge("docker0", "172.17.0.0/16"), |name| {
        asked.set(name.to_string());
        // An address outside the subnet first: it is passed over.
        Ok(Some(vec![
            (Ipv4Addr::new(10, 0, 0, 1), 8),
            (Ipv4Addr::new(172, 17, 0, 1), 16),
            (Ipv4Addr::new(172, 17, 0, 9), 16),
        ]))
    })
    .unwrap();
    assert_eq!(gateway, Ipv4Addr::new(172, 17, 0, 1));
    assert_eq!(asked.take(), "docker0");
}

#[test]
fn a_bridge_without_an_address_in_the_subnet_is_a_clear_error_not_a_default() {
    let error = resolve("mine", on_bridge("br-377f692b1866", "10.9.0.0/24"), |_| {
        Ok(Some(vec![(Ipv4Addr::new(10, 9, 1, 1), 24)]))
    })
    .unwrap_err();
    assert_eq!(
        format!("{error:#}"),
        "Docker network \"mine\" names no IPv4 gateway, and its bridge interface \
         br-377f692b1866 has no IPv4 address in the network's subnet 10.9.0.0/24 (it has \
         10.9.1.1/24)"
    );
    assert_eq!(exit_code_of(&error), ExitCode::Host);
    let bare = resolve("mine", on_bridge("br-377f692b1866", "10.9.0.0/24"), |_| {
        Ok(Some(Vec::new()))
    })
    .unwrap_err();
    assert!(format!("{bare:#}").ends_with("(it has none)"), "{bare:#}");
}

#[test]
fn a_bridge_that_does_not_exist_is_named() {
    let error = resolve("bridge", on_bridge("docker0", "172.17.0.0/16"), |_| {
        Ok(None)
    })
    .unwrap_err();
    assert_eq!(
        format!("{error:#}"),
        "Docker network \"bridge\" names no IPv4 gateway, and its bridge interface docker0, \
         where the gateway would be, does not exist"
    );
}

#[test]
fn a_kernel_that_cannot_be_asked_is_an_error_that_names_the_network_and_the_bridge() {
    let error = resolve("bridge", on_bridge("docker0", "172.17.0.0/16"), |_| {
        anyhow::bail!("opening a route netlink socket")
    })
    .unwrap_err();
    assert_eq!(
        format!("{error:#}"),
        "Docker network \"bridge\" names no IPv4 gateway; reading the addresses of its bridge \
         interface docker0: opening a route netlink socket"
    );
}
