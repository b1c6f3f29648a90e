//! `handoff check`: validate the config and print a short summary.

use anyhow::Result;

use super::Globals;
use crate::config::Protocol;
use crate::health;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: &Args, globals: &Globals) -> Result<()> {
    let config = globals.config()?;
    println!(
        "{}: {} component(s), valid",
        globals.config_path.display(),
        config.components.len()
    );
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
