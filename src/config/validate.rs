//! The rules the schema alone cannot express: names, ports, checks, signals and links, each error
//! naming its JSON path and the value at fault.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use anyhow::Result;

use super::schema::{
    env_name, Check, CheckKind, Component, Config, DefinedComponentLink, ExecCommand, LinkTarget,
    PortKind, Protocol, SignalKind, TerminationSignal,
};

/// Longest accepted component name; it becomes part of nftables object names.
const MAX_NAME_LEN: usize = 64;

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
        && name.len() <= MAX_NAME_LEN
}

fn check_port(field: &str, value: i64) -> Result<()> {
    if !(1..=65535).contains(&value) {
        anyhow::bail!("{field}: port {value} is outside 1..65535");
    }
    Ok(())
}

/// Semantic rules that the schema alone cannot express.
pub(super) fn validate(config: &Config) -> Result<()> {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut external_ports: Claims = BTreeMap::new();
    let mut links: HashMap<&str, String> = HashMap::new();
    for (index, component) in config.components.iter().enumerate() {
        let at = format!("components[{index}]");
        if !valid_name(&component.name) {
            anyhow::bail!(
                "{at}.name: {:?} is not a valid component name (use [a-z0-9][a-z0-9_.-]*, at \
                 most {MAX_NAME_LEN} characters)",
                component.name
            );
        }
        if let Some(first) = names.insert(&component.name, index) {
            anyhow::bail!(
                "{at}.name: component {:?} is defined twice (also components[{first}])",
                component.name
            );
        }
        if component.repo.is_none() && component.ports.is_empty() {
            anyhow::bail!(
                "{at}.ports: component {:?} has no repo and no ports; an address backend needs \
                 at least one port to forward",
                component.name
            );
        }
        if component.ready_timeout == 0 {
            anyhow::bail!("{at}.readyTimeout: must be at least 1 (milliseconds)");
        }
        if component.network.trim().is_empty() {
            anyhow::bail!("{at}.network: must name a Docker network");
        }
        if let Some(repo) = &component.repo {
            if repo.trim().is_empty() || repo.contains(char::is_whitespace) {
                anyhow::bail!("{at}.repo: {repo:?} is not an image repository");
            }
            if component.tag.is_empty() || component.tag.contains(char::is_whitespace) {
                anyhow::bail!("{at}.tag: {:?} is not an image tag", component.tag);
            }
        }
        if component.drain_timeout == Some(0) {
            anyhow::bail!("{at}.drainTimeout: must be at least 1 (milliseconds)");
        }
        super::limits::check(&at, component)?;
        for (i, port) in component.ports.iter().enumerate() {
            check_port(&format!("{at}.ports[{i}].external"), port.external)?;
            check_port(&format!("{at}.ports[{i}].container"), port.container)?;
            let owner = format!("{at} ({:?})", component.name);
            if let Some(address) = port.address {
                check_bind_address(&format!("{at}.ports[{i}].address"), address, component)?;
            }
            claim(
                &mut external_ports,
                (port.protocol, port.external),
                port.address,
                owner,
                &format!("{at}.ports[{i}].external"),
            )?;
            if let Some(j) = component.ports[..i]
                .iter()
                .position(|p| (p.protocol, p.external) == (port.protocol, port.external))
            {
                anyhow::bail!(
                    "{at}.ports[{i}]: port {}/{} is listed twice (also ports[{j}]); a component \
                     takes one port on one address, or on all of them",
                    port.external,
                    port.protocol
                );
            }
            if port.protocol == Protocol::Udp && port.kind == PortKind::Http {
                anyhow::bail!(
                    "{at}.ports[{i}].kind: \"http\" is a TCP mode; a udp port is \"tcp\" (the \
                     default) in gantry's kind"
                );
            }
        }
        let udp_only = !component.ports.is_empty()
            && component.define_component_links.is_empty()
            && component.ports.iter().all(|p| p.protocol == Protocol::Udp);
        if udp_only && component.ready_checks.is_empty() {
            anyhow::bail!(
                "{at}.readyChecks: every port of component {:?} is UDP, which a connect cannot \
                 check; say how its readiness is checked (a tcp or http check on a port it \
                 serves)",
                component.name
            );
        }
        for (list, checks) in [
            ("readyChecks", &component.ready_checks),
            ("healthChecks", &component.health_checks),
        ] {
            for (i, check) in checks.iter().enumerate() {
                validate_check(&format!("{at}.{list}[{i}]"), check)?;
            }
        }
        for (i, signal) in component.termination_signals.iter().enumerate() {
            validate_signal(&format!("{at}.terminationSignals[{i}]"), signal)?;
        }
        for (i, link) in component.define_component_links.iter().enumerate() {
            let field = format!("{at}.defineComponentLinks[{i}]");
            check_port(&format!("{field}.port"), link.port)?;
            if let Some(host_port) = link.host_port {
                check_port(&format!("{field}.hostPort"), host_port)?;
            }
            if link.name.trim().is_empty() {
                anyhow::bail!("{field}.name: a component link needs a name");
            }
            if let Some(previous) = links.insert(&link.name, at.clone()) {
                anyhow::bail!(
                    "{field}.name: link {:?} is already defined by {previous}",
                    link.name
                );
            }
            let host_port = i64::from(link.port_pair().external);
            let owner = format!("{at} ({:?}, link {:?})", component.name, link.name);
            claim(
                &mut external_ports,
                (Protocol::Tcp, host_port),
                None,
                owner,
                &field,
            )
            .map_err(|e| {
                anyhow::anyhow!(
                    "{e} (a link is reached at the gateway's port `hostPort`, by default its \
                     `port`: give it another)"
                )
            })?;
        }
        for (i, env) in component.environment_variables.iter().enumerate() {
            if env.name.is_empty() || env.name.contains('=') {
                anyhow::bail!(
                    "{at}.environmentVariables[{i}].name: {:?} is not a valid variable name",
                    env.name
                );
            }
        }
    }
    for (index, component) in config.components.iter().enumerate() {
        validate_required_links(config, index, component)?;
    }
    Ok(())
}

/// A required link must be defined, by a component on the same Docker network (its address
/// is that network's gateway), and only containers can be told where it is.
fn validate_required_links(config: &Config, index: usize, component: &Component) -> Result<()> {
    let mut aliases: HashMap<String, usize> = HashMap::new();
    for (i, required) in component.require_component_links.iter().enumerate() {
        let field = format!("components[{index}].requireComponentLinks[{i}]");
        let Some(definer) = config.components.iter().find(|c| {
            c.define_component_links
                .iter()
                .any(|l| l.name == required.name)
        }) else {
            anyhow::bail!(
                "{field}.name: no component defines the link {:?}",
                required.name
            );
        };
        if component.repo.is_none() {
            anyhow::bail!(
                "{field}: component {:?} has no repo; only containers are given links (their \
                 environment says where the link is)",
                component.name
            );
        }
        if definer.network != component.network {
            anyhow::bail!(
                "{field}: the link {:?} is on Docker network {:?} (component {:?}), component \
                 {:?} on {:?}; a link is reached at its network's gateway, so both must be on \
                 the same network",
                required.name,
                definer.network,
                definer.name,
                component.name,
                component.network
            );
        }
        let alias = env_name(&required.alias);
        if alias.is_empty() || alias.starts_with(|c: char| c.is_ascii_digit()) {
            anyhow::bail!(
                "{field}.alias: {:?} cannot start an environment variable's name",
                required.alias
            );
        }
        if let Some(first) = aliases.insert(alias.clone(), i) {
            anyhow::bail!(
                "{field}.alias: {:?} names the same variables ({alias}_CLINK...) as \
                 requireComponentLinks[{first}]",
                required.alias
            );
        }
    }
    Ok(())
}

/// Fill each component's [`Component::link_targets`] from the links it requires (the config
/// is valid: every required link is defined).
pub(super) fn resolve_links(config: &mut Config) {
    let defined: Vec<(String, DefinedComponentLink)> = config
        .components
        .iter()
        .flat_map(|c| {
            c.define_component_links
                .iter()
                .map(|l| (c.name.clone(), l.clone()))
        })
        .collect();
    for component in &mut config.components {
        component.link_targets = component
            .require_component_links
            .iter()
            .filter_map(|required| {
                let (definer, link) = defined.iter().find(|(_, l)| l.name == required.name)?;
                let pair = link.port_pair();
                Some(LinkTarget {
                    alias: required.alias.clone(),
                    component: definer.clone(),
                    host_port: pair.external,
                    port: pair.backend,
                    kind: link.kind,
                })
            })
            .collect();
    }
}

/// A path that goes into an HTTP request line as it is: it must not be able to end the line
/// (CR, LF) or split it (spaces).
fn check_http_path(field: &str, path: &str) -> Result<()> {
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        anyhow::bail!(
            "{field}: {path:?} must start with / and contain no spaces or control characters"
        );
    }
    Ok(())
}

/// Who holds each host port, on which address (`None`: every address).
type Claims = BTreeMap<(Protocol, i64), Vec<(Option<IpAddr>, String)>>;

/// Claim `port` on `address` for `owner`: refused when someone holds it on that address, or on
/// every address, or when `address` is every address and someone holds it on any.
fn claim(
    claims: &mut Claims,
    port: (Protocol, i64),
    address: Option<IpAddr>,
    owner: String,
    field: &str,
) -> Result<()> {
    let holders = claims.entry(port).or_default();
    if let Some((held, previous)) = holders
        .iter()
        .find(|(held, _)| held.is_none() || address.is_none() || *held == address)
    {
        let on = |a: &Option<IpAddr>| a.map_or("every address".to_string(), |a| a.to_string());
        let addresses = match (held, address) {
            (None, None) => String::new(),
            _ => format!(
                " (it holds it on {}, this one asks for {})",
                on(held),
                on(&address)
            ),
        };
        anyhow::bail!(
            "{field}: port {}/{} is already claimed by {previous}{addresses}",
            port.1,
            port.0
        );
    }
    holders.push((address, owner));
    Ok(())
}

/// A bind address must be one a host can have as its own, and reachable the way the
/// component is: 127.0.0.0/8 only for a component with host clients (`localhostClients`,
/// which takes the loopback path); `::1` never (IPv6 has no route_localnet).
fn check_bind_address(field: &str, address: IpAddr, component: &Component) -> Result<()> {
    if address.is_unspecified() {
        anyhow::bail!("{field}: {address} means every address: leave `address` out instead");
    }
    if address.is_multicast() || address == IpAddr::from([255, 255, 255, 255]) {
        anyhow::bail!("{field}: {address} cannot be a local address of the host");
    }
    if address == IpAddr::from(std::net::Ipv6Addr::LOCALHOST) {
        anyhow::bail!(
            "{field}: ::1 cannot be DNAT'd off the host (IPv6 has no route_localnet); bind to \
             127.0.0.1 with localhostClients, or to another address"
        );
    }
    if address.is_loopback() && !component.localhost_clients {
        anyhow::bail!(
            "{field}: {address} is a loopback address: it needs \"localhostClients\": true \
             (see README, \"Clients on the host at 127.0.0.1\")"
        );
    }
    Ok(())
}

fn validate_check(at: &str, check: &Check) -> Result<()> {
    match check.port {
        None => anyhow::bail!("{at}.port: a {:?} check needs a port", check.kind),
        Some(port) => check_port(&format!("{at}.port"), port)?,
    }
    if check.kind == CheckKind::Tcp && check.path.is_some() {
        anyhow::bail!("{at}.path: only http and https checks take a path");
    }
    if let Some(path) = &check.path {
        check_http_path(&format!("{at}.path"), path)?;
    }
    if check.timeout == 0 {
        anyhow::bail!("{at}.timeout: must be at least 1 (seconds)");
    }
    Ok(())
}

fn validate_signal(at: &str, signal: &TerminationSignal) -> Result<()> {
    match signal.kind {
        SignalKind::Http => {
            match signal.port {
                None => anyhow::bail!("{at}.port: an http termination signal needs a port"),
                Some(port) => check_port(&format!("{at}.port"), port)?,
            }
            if let Some(path) = &signal.path {
                check_http_path(&format!("{at}.path"), path)?;
            }
        }
        SignalKind::Exec => {
            let empty = match &signal.exec_command {
                None => true,
                Some(ExecCommand::Shell(s)) => s.trim().is_empty(),
                Some(ExecCommand::Argv(argv)) => argv.is_empty(),
            };
            if empty {
                anyhow::bail!("{at}.exec_command: an exec termination signal needs a command");
            }
        }
    }
    if signal.timeout == 0 {
        anyhow::bail!("{at}.timeout: must be at least 1 (seconds)");
    }
    Ok(())
}
