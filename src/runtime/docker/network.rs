//! Where a Docker network's IPv4 gateway is, read from its inspection alone.
//!
//! IPAM does not always name it: a fresh dockerd (Debian's docker.io 20.10) gives its default
//! bridge `{"Subnet": "172.17.0.0/16"}` only on its first start (a restart names 172.17.0.1,
//! read back from docker0), and a user network created with `--subnet` but no `--gateway`
//! never names one, though Docker put the subnet's first address on the bridge. The gateway is
//! then the host's address inside the subnet on the network's bridge interface; this module
//! says which interface and subnet, and the use cases ask the kernel (the runtime does not
//! reach it).

use anyhow::Result;
use bollard::models::NetworkInspect;

use crate::error::Failure;
use crate::runtime::{Gateway, Ipv4Subnet};

/// The network option that names a bridge network's interface (docker0 for `bridge`).
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";
/// What Docker names a user bridge network's interface when the option is absent:
/// `br-` and the first 12 characters of the network's id.
const USER_BRIDGE_PREFIX: &str = "br-";

/// The gateway of `network` (as the config names it), from its inspection: IPAM's IPv4
/// gateway when it names one, else the bridge interface and the IPv4 subnet it is found in.
pub(super) fn gateway_of(network: &str, inspect: &NetworkInspect) -> Result<Gateway> {
    let configs = inspect
        .ipam
        .as_ref()
        .and_then(|ipam| ipam.config.as_deref())
        .unwrap_or_default();
    let mut subnet = None;
    for config in configs {
        if let Some(gateway) = config.gateway.as_deref().filter(|g| !g.is_empty()) {
            match gateway.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(gateway)) => return Ok(Gateway::Named(gateway)),
                Ok(std::net::IpAddr::V6(_)) => {}
                Err(_) => anyhow::bail!(
                    "Docker network {network:?} names the gateway {gateway:?}, which is not an \
                     address"
                ),
            }
        }
        if let Some(text) = config.subnet.as_deref().filter(|s| !s.is_empty()) {
            let parsed = Ipv4Subnet::parse(text)
                .map_err(|e| anyhow::anyhow!("Docker network {network:?}: its subnet {e}"))?;
            subnet = subnet.or(parsed);
        }
    }
    let driver = inspect.driver.as_deref().unwrap_or_default();
    if driver != "bridge" {
        return Err(Failure::input(format!(
            "Docker network {network:?} names no IPv4 gateway, and its driver is {driver:?}, not \
             \"bridge\": only a bridge network's gateway can be read from the host's interface"
        ))
        .into());
    }
    let Some(subnet) = subnet else {
        return Err(Failure::host(format!(
            "Docker network {network:?} names neither an IPv4 gateway nor an IPv4 subnet in its \
             IPAM config: its gateway cannot be found"
        ))
        .into());
    };
    let named = inspect
        .options
        .as_ref()
        .and_then(|options| options.get(BRIDGE_NAME_OPTION))
        .filter(|name| !name.is_empty());
    let interface = match named {
        Some(name) => name.clone(),
        None => {
            let id = inspect.id.as_deref().unwrap_or_default();
            let short = id.get(..12).ok_or_else(|| {
                anyhow::anyhow!(
                    "Docker network {network:?} names no IPv4 gateway, no {BRIDGE_NAME_OPTION} \
                     option and no id to name its bridge by (its id is {id:?})"
                )
            })?;
            format!("{USER_BRIDGE_PREFIX}{short}")
        }
    };
    Ok(Gateway::OnBridge { interface, subnet })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::error::{exit_code_of, ExitCode};

    /// A network as `docker network inspect` shows it (the fields that matter here).
    fn inspect(json: &str) -> NetworkInspect {
        serde_json::from_str(json).expect("an inspection")
    }

    fn subnet(text: &str) -> Ipv4Subnet {
        Ipv4Subnet::parse(text).unwrap().unwrap()
    }

    /// The default bridge of a fresh Debian docker.io 20.10, first start (as inspected here).
    const FIRST_START_BRIDGE: &str = r#"{
        "Name": "bridge", "Id": "854ac6861627d256312987c1edc5cc09eeb0dc46bc38ba556919b28e5f37abf1",
        "Driver": "bridge",
        "IPAM": {"Driver": "default", "Options": null, "Config": [{"Subnet": "172.17.0.0/16"}]},
        "Options": {"com.docker.network.bridge.default_bridge": "true",
                    "com.docker.network.bridge.name": "docker0"}}"#;

    #[test]
    fn a_gateway_named_by_ipam_is_used() {
        let restarted = FIRST_START_BRIDGE.replace(
            r#"{"Subnet": "172.17.0.0/16"}"#,
            r#"{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}"#,
        );
        assert_eq!(
            gateway_of("bridge", &inspect(&restarted)).unwrap(),
            Gateway::Named(Ipv4Addr::new(172, 17, 0, 1))
        );
    }

    #[test]
    fn an_ipv6_gateway_is_passed_over_for_the_ipv4_one() {
        let network = inspect(
            r#"{"Id": "cacafbdf41aaa0926bce", "Driver": "bridge", "IPAM": {"Config": [
                {"Subnet": "fd00:1::/64", "Gateway": "fd00:1::1"},
                {"Subnet": "10.9.0.0/24", "Gateway": "10.9.0.1"}]}}"#,
        );
        assert_eq!(
            gateway_of("mine", &network).unwrap(),
            Gateway::Named(Ipv4Addr::new(10, 9, 0, 1))
        );
    }

    #[test]
    fn without_a_gateway_the_bridge_named_by_the_option_is_asked() {
        assert_eq!(
            gateway_of("bridge", &inspect(FIRST_START_BRIDGE)).unwrap(),
            Gateway::OnBridge {
                interface: "docker0".to_string(),
                subnet: subnet("172.17.0.0/16"),
            }
        );
    }

    #[test]
    fn without_a_gateway_or_the_option_a_user_network_bridge_is_br_and_its_short_id() {
        // `docker network create --subnet 10.239.250.0/24 x` on 20.10, as inspected here.
        let network = inspect(
            r#"{"Name": "x",
                "Id": "377f692b1866afcf2e2a3ea8ed6b76bb67413dfd113d877f8db63f425aa4dad0",
                "Driver": "bridge", "Options": {},
                "IPAM": {"Driver": "default", "Options": {},
                         "Config": [{"Subnet": "fd00:7::/64"}, {"Subnet": "10.239.250.0/24"}]}}"#,
        );
        assert_eq!(
            gateway_of("x", &network).unwrap(),
            Gateway::OnBridge {
                interface: "br-377f692b1866".to_string(),
                subnet: subnet("10.239.250.0/24"),
            }
        );
    }

    #[test]
    fn a_network_that_is_no_bridge_and_names_no_gateway_is_refused_by_name() {
        let error = gateway_of(
            "vlan",
            &inspect(r#"{"Id": "377f692b1866afcf", "Driver": "macvlan", "IPAM": {"Config": []}}"#),
        )
        .unwrap_err();
        let text = format!("{error:#}");
        assert!(
            text.contains("\"vlan\"") && text.contains("macvlan"),
            "{text}"
        );
        assert_eq!(exit_code_of(&error), ExitCode::Input);
    }

    #[test]
    fn a_bridge_with_neither_gateway_nor_subnet_is_an_error_not_a_guess() {
        let error = gateway_of(
            "bare",
            &inspect(r#"{"Id": "377f692b1866afcf", "Driver": "bridge", "IPAM": {"Config": null}}"#),
        )
        .unwrap_err();
        assert!(
            format!("{error:#}")
                .contains("\"bare\" names neither an IPv4 gateway nor an IPv4 subnet"),
            "{error:#}"
        );
    }

    #[test]
    fn a_gateway_or_subnet_that_does_not_parse_is_named() {
        for (config, named) in [
            (
                r#"{"Subnet": "10.0.0.0/24", "Gateway": "10.0.0.x"}"#,
                "10.0.0.x",
            ),
            (r#"{"Subnet": "10.0.0.0/33"}"#, "10.0.0.0/33"),
            (r#"{"Subnet": "10.0.0.0"}"#, "10.0.0.0"),
        ] {
            let json = format!(
                r#"{{"Id": "0123456789abcdef", "Driver": "bridge", "IPAM": {{"Config": [{config}]}}}}"#
            );
            let error = gateway_of("odd", &inspect(&json)).unwrap_err();
            assert!(format!("{error:#}").contains(named), "{error:#}");
        }
    }

    #[test]
    fn a_subnet_holds_exactly_its_addresses() {
        let docker = subnet("172.17.0.0/16");
        assert!(docker.contains(Ipv4Addr::new(172, 17, 0, 1)));
        assert!(docker.contains(Ipv4Addr::new(172, 17, 255, 255)));
        assert!(!docker.contains(Ipv4Addr::new(172, 18, 0, 1)));
        assert!(subnet("0.0.0.0/0").contains(Ipv4Addr::new(8, 8, 8, 8)));
        assert!(subnet("10.0.0.1/32").contains(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(!subnet("10.0.0.1/32").contains(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(Ipv4Subnet::parse("fd00::/64").unwrap(), None);
        assert_eq!(docker.to_string(), "172.17.0.0/16");
    }
}
