//! Docker through its Engine API (bollard), behind the synchronous [`Runtime`] trait: the rest
//! of handoff is a sequence of blocking steps, so the async client runs on a private
//! current-thread tokio runtime.

mod network;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummaryStateEnum, EndpointSettings,
    ExecConfig, HostConfig, ProgressDetail,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectNetworkOptions,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures_util::StreamExt;

use super::{Container, ContainerSpec, Gateway, Runtime, LABEL_COMPONENT, LABEL_TABLE};
use crate::error::Failure;

/// How often a pull says how it is getting on.
const PULL_PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How much longer than a stop's grace the client waits for Docker's answer.
const STOP_ANSWER_SLACK: Duration = Duration::from_secs(60);

pub struct Docker {
    runtime: tokio::runtime::Runtime,
    client: bollard::Docker,
}

fn docker_failure(error: impl std::fmt::Display) -> anyhow::Error {
    Failure::host(format!(
        "Docker is not reachable ({error}); is dockerd running? (DOCKER_HOST or \
         /var/run/docker.sock)"
    ))
    .into()
}

impl Docker {
    /// Connect and negotiate the API version (Debian's docker.io 20.10 speaks 1.41).
    pub fn connect() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the Docker client runtime")?;
        let client = bollard::Docker::connect_with_local_defaults().map_err(docker_failure)?;
        let client = runtime
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.negotiate_version()).await
            })
            .map_err(|_| docker_failure("no answer within 10 s"))?
            .map_err(docker_failure)?;
        Ok(Docker { runtime, client })
    }

    fn inspect(&self, id: &str) -> Result<ContainerInspectResponse> {
        self.runtime
            .block_on(self.client.inspect_container(id, None))
            .with_context(|| format!("inspecting container {id}"))
    }
}

/// The container's endpoint on `network`, as an inspection shows it.
fn endpoint(inspect: &ContainerInspectResponse, network: &str) -> Option<EndpointSettings> {
    inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .and_then(|n| n.get(network).cloned())
}

impl Runtime for Docker {
    /// The containers labelled for `table` (and `component`, when given), running or not.
    fn containers(
        &self,
        table: &str,
        component: Option<&str>,
        network: &str,
    ) -> Result<Vec<Container>> {
        let mut labels = vec![format!("{LABEL_TABLE}={table}")];
        if let Some(component) = component {
            labels.push(format!("{LABEL_COMPONENT}={component}"));
        }
        let filters: HashMap<String, Vec<String>> = HashMap::from([("label".to_string(), labels)]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .runtime
            .block_on(self.client.list_containers(Some(options)))
            .context("listing containers")?;
        let mut containers: Vec<Container> = summaries
            .into_iter()
            .map(|s| {
                let endpoint = s
                    .network_settings
                    .as_ref()
                    .and_then(|n| n.networks.as_ref())
                    .and_then(|n| n.get(network));
                let address = endpoint
                    .and_then(|e| e.ip_address.as_deref())
                    .and_then(|ip| ip.parse().ok());
                let address6 = endpoint
                    .and_then(|e| e.global_ipv6_address.as_deref())
                    .and_then(|ip| ip.parse().ok());
                let state = s.state.unwrap_or(ContainerSummaryStateEnum::EMPTY);
                Container {
                    id: s.id.unwrap_or_default(),
                    name: s
                        .names
                        .and_then(|n| n.into_iter().next())
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_string(),
                    image: s.image.unwrap_or_default(),
                    running: state == ContainerSummaryStateEnum::RUNNING,
                    state: state.to_string(),
                    created: s.created.unwrap_or(0),
                    address,
                    address6,
                    labels: s.labels.unwrap_or_default(),
                }
            })
            .collect();
        containers.sort_by_key(|c| (c.generation(), c.created));
        Ok(containers)
    }

    fn image_present(&self, image: &str) -> Result<bool> {
        match self.runtime.block_on(self.client.inspect_image(image)) {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(anyhow::Error::new(e).context(format!("inspecting image {image}"))),
        }
    }

    /// Pull `repo:tag` from its registry.
    fn pull(
        &self,
        repo: &str,
        tag: &str,
        timeout: Duration,
        progress: &mut dyn FnMut(String),
    ) -> Result<()> {
        let options = CreateImageOptionsBuilder::default()
            .from_image(repo)
            .tag(tag)
            .build();
        self.runtime.block_on(async {
            // The client's own timeout covers only the answer's head: the stream of a pull
            // from a registry that stalls would never end without this.
            let pulling = async {
                let mut stream = self.client.create_image(Some(options), None, None);
                let mut said = None::<Instant>;
                while let Some(item) = stream.next().await {
                    let info = item?;
                    if let Some(detail) = info.error_detail {
                        anyhow::bail!("{}", detail.message.unwrap_or_default());
                    }
                    if said.is_none_or(|at| at.elapsed() >= PULL_PROGRESS_EVERY) {
                        if let Some(status) = info.status {
                            let layer = info.id.map(|id| format!("{id}: ")).unwrap_or_default();
                            let detail = match info.progress_detail {
                                Some(ProgressDetail {
                                    current: Some(current),
                                    total: Some(total),
                                }) if total > 0 => {
                                    format!("{} of {} MB", current >> 20, total >> 20)
                                }
                                _ => String::new(),
                            };
                            progress(format!("{layer}{status} {detail}").trim_end().to_string());
                            said = Some(Instant::now());
                        }
                    }
                }
                Ok(())
            };
            tokio::time::timeout(timeout, pulling).await.map_err(|_| {
                anyhow::anyhow!(
                    "no complete pull within {} s (pullTimeout)",
                    timeout.as_secs()
                )
            })?
        })
    }

    /// Create and start a container; on a failed start the container is removed again.
    fn create_and_start(&self, spec: &ContainerSpec) -> Result<String> {
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            user: (!spec.user.is_empty()).then(|| spec.user.clone()),
            env: Some(spec.env.clone()),
            labels: Some(spec.labels.clone()),
            host_config: Some(HostConfig {
                binds: Some(spec.binds.clone()),
                volumes_from: Some(spec.volumes_from.clone()),
                privileged: Some(spec.privileged),
                network_mode: Some(spec.network.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .runtime
            .block_on(self.client.create_container(Some(options), body))
            .with_context(|| format!("creating container {} from {}", spec.name, spec.image))?;
        let started = self.runtime.block_on(self.client.start_container(
            &created.id,
            None::<bollard::query_parameters::StartContainerOptions>,
        ));
        if let Err(error) = started {
            // Never leave the unstarted container behind silently.
            let left_behind = match self.remove(&created.id) {
                Ok(()) => String::new(),
                Err(removal) => format!(
                    " (and removing the unstarted container {} failed: {removal:#}; remove it \
                     with `docker rm {}`)",
                    spec.name, spec.name
                ),
            };
            return Err(anyhow::Error::new(error)
                .context(format!("starting container {}{left_behind}", spec.name)));
        }
        Ok(created.id)
    }

    /// Start an existing (stopped) container again, e.g. after a reboot.
    fn start(&self, id: &str) -> Result<()> {
        self.runtime
            .block_on(
                self.client
                    .start_container(id, None::<bollard::query_parameters::StartContainerOptions>),
            )
            .with_context(|| format!("starting container {id}"))
    }

    /// The container's address on `network`, waiting briefly for Docker to assign it.
    fn address(&self, id: &str, network: &str) -> Result<IpAddr> {
        for _ in 0..50 {
            let inspect = self.inspect(id)?;
            let address = endpoint(&inspect, network)
                .and_then(|e| e.ip_address)
                .filter(|ip| !ip.is_empty());
            if let Some(address) = address {
                return address
                    .parse()
                    .with_context(|| format!("container {id} has address {address:?}"));
            }
            if inspect.state.and_then(|s| s.running) == Some(false) {
                anyhow::bail!("the container exited right after it started");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        anyhow::bail!("container {id} has no IPv4 address on network {network:?}")
    }

    /// The container's address on `network` while it runs; `None` when it is stopped, gone,
    /// or has no address there.
    fn running_address(&self, id: &str, network: &str) -> Result<Option<IpAddr>> {
        let inspect = match self
            .runtime
            .block_on(self.client.inspect_container(id, None))
        {
            Ok(inspect) => inspect,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(anyhow::Error::new(e).context(format!("inspecting {id}"))),
        };
        if inspect.state.and_then(|s| s.running) != Some(true) {
            return Ok(None);
        }
        Ok(inspect
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.get(network).cloned())
            .and_then(|e| e.ip_address)
            .and_then(|ip| ip.parse().ok()))
    }

    fn address6(&self, id: &str, network: &str) -> Result<Option<IpAddr>> {
        let address = endpoint(&self.inspect(id)?, network)
            .and_then(|e| e.global_ipv6_address)
            .filter(|ip| !ip.is_empty());
        address
            .map(|a| {
                a.parse()
                    .with_context(|| format!("container {id} has IPv6 address {a:?}"))
            })
            .transpose()
    }

    fn pid(&self, id: &str) -> Result<u32> {
        self.inspect(id)?
            .state
            .and_then(|s| s.pid)
            .and_then(|pid| u32::try_from(pid).ok())
            .filter(|pid| *pid > 0)
            .with_context(|| format!("container {id} is not running"))
    }

    fn gateway(&self, network: &str) -> Result<Gateway> {
        let inspect = self
            .runtime
            .block_on(
                self.client
                    .inspect_network(network, None::<InspectNetworkOptions>),
            )
            .map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                } => Failure::input(format!("Docker has no network {network:?}")).into(),
                e => anyhow::Error::new(e).context(format!("inspecting Docker network {network}")),
            })?;
        network::gateway_of(network, &inspect)
    }

    /// SIGTERM, then SIGKILL after `grace`. A container already stopped (304) or gone (404) is
    /// done, not an error.
    fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        let options = StopContainerOptionsBuilder::default()
            .t(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX))
            .build();
        // Docker answers the stop only once the container is gone, up to `grace` later: the
        // client waits that long and a minute more (its default of 120 s would give up on a
        // longer grace, and the container would then be removed by force).
        let client = self.client.clone().with_timeout(grace + STOP_ANSWER_SLACK);
        match self
            .runtime
            .block_on(client.stop_container(id, Some(options)))
        {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => Ok(()),
            Err(e) => Err(anyhow::Error::new(e).context(format!("stopping container {id}"))),
        }
    }

    /// Remove the container (and its anonymous volumes), stopping it first if needed.
    fn remove(&self, id: &str) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self
            .runtime
            .block_on(self.client.remove_container(id, Some(options)))
        {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            // Another run is removing it right now: the outcome is the same.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message,
            }) if message.contains("already in progress") => Ok(()),
            Err(e) => Err(anyhow::Error::new(e).context(format!("removing container {id}"))),
        }
    }

    /// The last `lines` lines of the container's output, for a failure report.
    fn logs_tail(&self, id: &str, lines: usize) -> String {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        self.runtime.block_on(async {
            let mut text = String::new();
            let mut stream = self.client.logs(id, Some(options));
            while let Some(Ok(chunk)) = stream.next().await {
                text.push_str(&chunk.to_string());
            }
            text
        })
    }

    /// Run `command` in the container and wait (up to `timeout`) for its exit code.
    fn exec(&self, id: &str, command: Vec<String>, timeout: Duration) -> Result<i64> {
        self.runtime.block_on(async {
            let exec = self
                .client
                .create_exec(
                    id,
                    ExecConfig {
                        cmd: Some(command),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        ..Default::default()
                    },
                )
                .await?;
            let run = async {
                if let bollard::exec::StartExecResults::Attached { mut output, .. } =
                    self.client.start_exec(&exec.id, None).await?
                {
                    while let Some(item) = output.next().await {
                        item?;
                    }
                }
                Ok::<_, anyhow::Error>(())
            };
            tokio::time::timeout(timeout, run)
                .await
                .map_err(|_| anyhow::anyhow!("still running after {} s", timeout.as_secs()))??;
            let inspect = self.client.inspect_exec(&exec.id).await?;
            Ok(inspect.exit_code.unwrap_or(-1))
        })
    }
}
