//! The picture `list` and `flows` show: for each component, the active backend read from the
//! kernel's map, the draining backends from the state file, its containers, and the live flows
//! of each backend, from one listing of the table and one conntrack dump.

use std::net::IpAddr;

use anyhow::Result;
use serde::Serialize;

use super::switch::{active6_record, active_record};
use super::watch::live_flows;
use super::Env;
use crate::config::{Config, PortPair};
use crate::kernel::conntrack::{Flow, StateTimeouts};
use crate::runtime::Container;
use crate::state::{now_ms, BackendRecord};

#[derive(Debug, Serialize)]
pub struct BackendView {
    pub address: IpAddr,
    pub ports: Vec<PortPair>,
    /// When it became active (active) or started draining (draining), ms since the epoch;
    /// `null` when the state file does not know.
    pub since_ms: Option<u64>,
    #[serde(skip)]
    pub flows: Vec<Flow>,
}

/// A canary beside the active backend: where the kernel sends its share, and the share.
#[derive(Debug, Serialize)]
pub struct CanaryView {
    pub backend: BackendView,
    /// % of new connections; `None` when the state file does not know it.
    pub weight: Option<u8>,
    pub sticky: bool,
}

#[derive(Debug, Serialize)]
pub struct ComponentView {
    pub name: String,
    /// The active IPv4 backend.
    pub active: Option<BackendView>,
    /// The active IPv6 backend, if IPv6 clients have one.
    pub active6: Option<BackendView>,
    pub canary: Option<CanaryView>,
    pub draining: Vec<BackendView>,
    /// Docker components: their containers, found by label.
    pub containers: Vec<ContainerView>,
}

/// A container of a component and its role.
#[derive(Debug, Serialize)]
pub struct ContainerView {
    pub id: String,
    pub name: String,
    pub image: String,
    pub tag: String,
    pub address: Option<IpAddr>,
    /// `active`, `canary`, `draining`, `failed` (not running) or `idle` (running, not
    /// routed).
    pub state: &'static str,
    pub flows: usize,
    pub age_secs: u64,
}

/// Build the views of `names` (all components when empty).
pub fn build(env: &Env, config: &Config, names: &[&str]) -> Result<Vec<ComponentView>> {
    let state = env.settings.state.load()?;
    let routes = env.firewall.all_routes()?;
    let flows = env.conntrack().dump()?;
    let runtime = if config.components.iter().any(|c| c.repo.is_some()) {
        match env.runtime() {
            Ok(runtime) => Some(runtime),
            Err(error) => {
                env.warn(format!("containers not listed: {error:#}"));
                None
            }
        }
    } else {
        None
    };
    let now = now_ms();
    let mut views = Vec::new();
    for component in &config.components {
        if !names.is_empty() && !names.contains(&component.name.as_str()) {
            continue;
        }
        let recorded = state.component(&component.name);
        let routed = routes.get(&component.name);
        let view_of = |record: Option<BackendRecord>, known: Option<&BackendRecord>| {
            record.map(|mut record| {
                let since = known
                    .filter(|a| a.address == record.address)
                    .map(|a| a.since_ms);
                record.since_ms = since.unwrap_or(0);
                backend_view(record, since, &flows)
            })
        };
        let active = view_of(
            routed.and_then(|r| active_record(r, now)),
            recorded.active.as_ref(),
        );
        let active6 = view_of(
            routed.and_then(|r| active6_record(r, now)),
            recorded.active6.as_ref(),
        );
        let canary = routes
            .get(&component.name)
            .and_then(|r| {
                let address = r.canary()?;
                Some(BackendRecord {
                    address,
                    address6: None,
                    ports: r.canary.iter().map(|route| route.pair()).collect(),
                    since_ms: 0,
                    container: None,
                })
            })
            .map(|record| {
                let known = recorded
                    .canary
                    .as_ref()
                    .filter(|c| c.backend.address == record.address);
                let since = known.map(|c| c.backend.since_ms);
                CanaryView {
                    weight: known.map(|c| c.weight),
                    sticky: known.is_some_and(|c| c.sticky),
                    backend: backend_view(record, since, &flows),
                }
            });
        let draining: Vec<BackendView> = recorded
            .draining
            .into_iter()
            .map(|record| {
                let since = Some(record.since_ms);
                backend_view(record, since, &flows)
            })
            .collect();
        let containers = match (runtime, &component.repo) {
            (Some(runtime), Some(_)) => runtime
                .containers(
                    &env.settings.table,
                    Some(&component.name),
                    &component.network,
                )?
                .into_iter()
                .map(|c| {
                    container_view(
                        c,
                        active.as_ref().or(active6.as_ref()),
                        canary.as_ref().map(|c| &c.backend),
                        &draining,
                        now,
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        views.push(ComponentView {
            name: component.name.clone(),
            active,
            active6,
            canary,
            draining,
            containers,
        });
    }
    Ok(views)
}

fn container_view(
    container: Container,
    active: Option<&BackendView>,
    canary: Option<&BackendView>,
    draining: &[BackendView],
    now_ms: u64,
) -> ContainerView {
    let at = |b: &&BackendView| {
        Some(b.address) == container.address || Some(b.address) == container.address6
    };
    let (state, flows) = if !container.running {
        ("failed", 0)
    } else if let Some(active) = active.filter(at) {
        ("active", active.flows.len())
    } else if let Some(canary) = canary.filter(at) {
        ("canary", canary.flows.len())
    } else if let Some(backend) = draining.iter().find(at) {
        ("draining", backend.flows.len())
    } else {
        ("idle", 0)
    };
    ContainerView {
        id: container.short_id().to_string(),
        name: container.name.clone(),
        image: container.image.clone(),
        tag: image_tag(&container.image).to_string(),
        address: container.address,
        state,
        flows,
        age_secs: (now_ms / 1000).saturating_sub(u64::try_from(container.created).unwrap_or(0)),
    }
}

/// The tag of an image reference (`registry:5000/repo:v2` -> `v2`; `latest` when none).
fn image_tag(image: &str) -> &str {
    let name = image.rsplit('/').next().unwrap_or(image);
    name.split_once(':').map(|(_, tag)| tag).unwrap_or("latest")
}

fn backend_view(record: BackendRecord, since_ms: Option<u64>, flows: &[Flow]) -> BackendView {
    let live = live_flows(flows, &record).into_iter().cloned().collect();
    BackendView {
        address: record.address,
        ports: record.ports,
        since_ms,
        flows: live,
    }
}

/// One flow as `flows --json` prints it.
#[derive(Debug, Serialize)]
pub struct FlowView {
    pub client: String,
    pub destination: String,
    pub backend: String,
    pub state: &'static str,
    pub idle_secs: Option<u32>,
    pub age_secs: Option<u64>,
    pub bytes: Option<u64>,
}

impl FlowView {
    pub fn new(flow: &Flow, timeouts: &StateTimeouts) -> Self {
        let now_ns = u128::from(now_ms()) * 1_000_000;
        FlowView {
            client: flow.client.to_string(),
            destination: flow.destination.to_string(),
            backend: flow.backend.to_string(),
            state: flow.state.name(),
            idle_secs: flow.idle_secs(timeouts),
            age_secs: flow
                .start_ns
                .map(|start| (now_ns.saturating_sub(u128::from(start)) / 1_000_000_000) as u64),
            bytes: flow.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::image_tag;

    #[test]
    fn tags_are_read_past_a_registry_port() {
        assert_eq!(image_tag("127.0.0.1:1/handoff-test:v2"), "v2");
        assert_eq!(image_tag("quay.io/quay/quay:latest"), "latest");
        assert_eq!(image_tag("busybox"), "latest");
    }
}
