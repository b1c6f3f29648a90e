//! `handoff check`: validate the config and print a short summary, with a warning for what
//! is valid but unwise (environment values — often secrets — in a file others can read).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Result;

use super::Globals;
use crate::config::Protocol;
use crate::health;
use crate::kernel::netfilter::localnet;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: &Args, globals: &Globals) -> Result<()> {
    let config = globals.config()?;
    println!(
        "{}: {} component(s), valid",
        globals.config_path.display(),
        config.components.len()
    );
    if let Some(warning) = secrets_warning(&globals.config_path, &config.components) {
        eprintln!("{warning}");
    }
    for warning in bind_address_warnings(&config.components) {
        eprintln!("{warning}");
    }
    if localnet::on_everywhere() {
        eprintln!(
            "warning: net.ipv4.conf.all.route_localnet is 1: every interface lets packets to \
             127.0.0.0/8 in, and only a firewall's guard keeps the LAN from the host's loopback \
             services. handoff no longer needs it host-wide (an older handoff set it): set it to \
             0 unless other software needs it (kube-proxy does)"
        );
    }
    for component in &config.components {
        let ports: Vec<String> = component
            .port_pairs()
            .iter()
            .map(|p| match p.protocol {
                Protocol::Tcp => format!("{}->{}", p.external, p.backend),
                Protocol::Udp => format!("{}/udp->{}", p.external, p.backend),
            })
            .collect();
        let backend = match &component.repo {
            Some(repo) => format!("image {repo}:{}", component.tag),
            None => "address backends".to_string(),
        };
        println!(
            "  {}: {backend}; ports {}; {} ready check(s), readyTimeout {} ms, drainTimeout {} ms",
            component.name,
            if ports.is_empty() {
                "none".to_string()
            } else {
                ports.join(", ")
            },
            health::ready_checks(component).len(),
            component.ready_timeout,
            component.drain_timeout_ms()
        );
    }
    Ok(())
}

/// A warning for each bind address that is not (yet) one of the host's: until it is, that
/// port takes no traffic (an address added later, by DHCP or a failover, starts to).
fn bind_address_warnings(components: &[crate::config::Component]) -> Vec<String> {
    components
        .iter()
        .flat_map(|c| c.ports.iter().map(move |p| (c, p)))
        .filter_map(|(component, port)| {
            let address = port.address?;
            let local = std::net::UdpSocket::bind((address, 0)).is_ok();
            (!local).then(|| {
                format!(
                    "warning: {}: port {}/{} is bound to {address}, which is not an address of \
                     this host (yet): it takes no traffic until it is",
                    component.name, port.external, port.protocol
                )
            })
        })
        .collect()
}

/// The warning for a config file readable by users other than its owner and group while
/// components set environment values in it: those values are often passwords and tokens.
fn secrets_warning(path: &Path, components: &[crate::config::Component]) -> Option<String> {
    let with_values: Vec<&str> = components
        .iter()
        .filter(|c| !c.environment_variables.is_empty())
        .map(|c| c.name.as_str())
        .collect();
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (!with_values.is_empty() && mode & 0o004 != 0).then(|| {
        format!(
            "warning: {}: readable by every user (mode {:04o}) and it holds environmentVariables \
             of {}; if they are secrets, chmod o-r it",
            path.display(),
            mode & 0o7777,
            with_values.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bind_address_the_host_does_not_have_is_warned_about() {
        let config = crate::config::parse(
            r#"{"components": [{"name": "web", "repo": "r", "localhostClients": true, "ports": [
                {"external": 80, "container": 80, "address": "127.0.0.1"},
                {"external": 81, "container": 80, "address": "192.0.2.77"}]}]}"#,
        )
        .unwrap();
        let warnings = bind_address_warnings(&config.components);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("port 81/tcp is bound to 192.0.2.77"),
            "{warnings:?}"
        );
    }

    #[test]
    fn environment_values_in_a_file_others_can_read_are_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("handoff.json");
        let with_env = r#"{"components":[{"name":"web","repo":"r","tag":"1","ports":[{"external":80,"container":80}],
            "environmentVariables":[{"name":"TOKEN","value":"s3cret"}]}]}"#;
        std::fs::write(&path, with_env).unwrap();
        let config = crate::config::load(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let warning = secrets_warning(&path, &config.components).expect("a warning");
        assert!(
            warning.contains("mode 0644") && warning.contains("of web"),
            "{warning}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(secrets_warning(&path, &config.components), None);

        let without_env = r#"{"components":[{"name":"web","repo":"r","tag":"1","ports":[{"external":80,"container":80}]}]}"#;
        std::fs::write(&path, without_env).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let config = crate::config::load(&path).unwrap();
        assert_eq!(secrets_warning(&path, &config.components), None);
    }
}
