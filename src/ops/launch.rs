//! A new container beside the old one, ready: its image made available per the pull policy,
//! created, started, given its address, passed its readyChecks. On any failure it is removed
//! again, its last log lines kept for the error: nothing is left behind.

use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::gateway::gateway;
use super::session::Session;
use super::switch::wait_until_ready;
use super::Env;
use crate::config::{Component, PullPolicy};
use crate::crash;
use crate::error::Failure;
use crate::identity::Identity;
use crate::runtime::{
    Container, ContainerSpec, LABEL_COMPONENT, LABEL_CONFIG_HASH, LABEL_GENERATION, LABEL_INSTANCE,
    LABEL_TABLE,
};

/// Lines of a failed container's log kept with the failure.
const FAILED_LOG_LINES: usize = 20;

/// The component's image repository, refusing an address component.
pub fn repo_of(component: &Component) -> Result<&str> {
    component.repo.as_deref().ok_or_else(|| {
        Failure::input(format!(
            "component {:?} has no repo: it has address backends, use `handoff switch {} --to \
             ADDR`",
            component.name, component.name
        ))
        .into()
    })
}

/// Make the image available according to the pull policy; its reference.
fn ensure_image(env: &Env, component: &Component, repo: &str, tag: &str) -> Result<String> {
    let runtime = env.runtime()?;
    let image = format!("{repo}:{tag}");
    let policy = component.pull_policy(tag);
    let present = runtime.image_present(&image)?;
    let pull = match policy {
        PullPolicy::Always => true,
        PullPolicy::Missing => !present,
        PullPolicy::Never => false,
    };
    if pull {
        env.step(format!(
            "{}: pulling {image} (pullTimeout {} s)",
            component.name, component.pull_timeout
        ));
        let timeout = Duration::from_secs(component.pull_timeout);
        let mut progress = |line: String| env.step(format!("{}: {line}", component.name));
        if let Err(error) = runtime.pull(repo, tag, timeout, &mut progress) {
            if !present {
                return Err(Failure::input(format!(
                    "image {image} is not available: not present locally and the pull failed: \
                     {error:#}"
                ))
                .into());
            }
            env.warn(format!(
                "pulling {image} failed ({error:#}); using the local image"
            ));
        }
    } else if !present {
        return Err(Failure::input(format!(
            "image {image} is not present locally and the pull policy is {policy:?}"
        ))
        .into());
    }
    Ok(image)
}

/// 12 hex digits from the kernel's random source: a container's instance id.
fn instance_id() -> Result<String> {
    let mut bytes = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Start a container of `tag` beside the session's containers and wait until it is ready; it
/// joins the session's containers.
pub fn launch(
    env: &Env,
    session: &mut Session,
    component: &Component,
    tag: &str,
) -> Result<Container> {
    let runtime = env.runtime()?;
    let repo = repo_of(component)?;
    let image = ensure_image(env, component, repo, tag)?;
    let generation = session
        .containers
        .iter()
        .map(Container::generation)
        .max()
        .unwrap_or(0)
        + 1;
    let instance = instance_id()?;
    let table = &env.settings.table;
    let labels = HashMap::from([
        (LABEL_TABLE.to_string(), table.clone()),
        (LABEL_COMPONENT.to_string(), component.name.clone()),
        (LABEL_CONFIG_HASH.to_string(), component.config_hash()),
        (LABEL_GENERATION.to_string(), generation.to_string()),
        (LABEL_INSTANCE.to_string(), instance.clone()),
    ]);
    // Where its required links are: at its network's gateway (gantry's variables).
    let links = match component.link_targets.is_empty() {
        true => Vec::new(),
        false => component.link_environment(gateway(env, &component.network)?),
    };
    let spec = ContainerSpec {
        name: Identity::new(table, &component.name).container_name(&instance),
        image: image.clone(),
        command: component.command.clone(),
        user: component.user.clone(),
        privileged: component.privileged,
        env: component
            .environment_variables
            .iter()
            .map(|v| format!("{}={}", v.name, v.value))
            .chain(links)
            .collect(),
        // gantry's `{container_id}`: Docker fixes binds before it assigns an id, so the
        // placeholder becomes the container's instance id (also in its name and labels).
        binds: component
            .bindings
            .iter()
            .map(|b| {
                format!(
                    "{}:{}",
                    b.external.replace("{container_id}", &instance),
                    b.volume
                )
            })
            .collect(),
        volumes_from: component.volumes_from.clone(),
        network: component.network.clone(),
        labels: labels.clone(),
    };
    env.step(format!(
        "{}: starting {} from {image}",
        component.name, spec.name
    ));
    let id = runtime.create_and_start(&spec)?;
    crash::point("before-ready");
    // On a network with IPv6 the container serves both families: ready on both, or not
    // routed at all.
    let ready = runtime
        .address(&id, &component.network)
        .and_then(|address| {
            let address6 = runtime.address6(&id, &component.network)?;
            allow_hairpin(env, component, &id, address);
            for ready in std::iter::once(address).chain(address6) {
                wait_until_ready(env, component, ready)?;
            }
            Ok((address, address6))
        });
    match ready {
        Ok((address, address6)) => {
            let container = Container {
                id,
                name: spec.name,
                image,
                running: true,
                state: "running".to_string(),
                created: 0,
                address: Some(address),
                address6,
                labels,
            };
            session.containers.push(container.clone());
            Ok(container)
        }
        Err(error) => {
            let logs = runtime.logs_tail(&id, FAILED_LOG_LINES);
            if !logs.trim().is_empty() {
                let quoted: Vec<String> = logs.lines().map(|l| format!("  | {l}")).collect();
                env.step(format!(
                    "{}: last log lines of {}:\n{}",
                    component.name,
                    spec.name,
                    quoted.join("\n")
                ));
            }
            if let Err(remove) = runtime.remove(&id) {
                env.warn(format!("could not remove {}: {remove:#}", spec.name));
            }
            Err(error.context(format!(
                "{} was removed; the running version keeps serving",
                spec.name
            )))
        }
    }
}

/// Let a container just started (or started again) reach its own component through the host
/// (self-hairpin). A failure is a warning: every other client path works without it.
pub fn allow_hairpin(env: &Env, component: &Component, id: &str, address: IpAddr) {
    let allowed = env
        .runtime()
        .and_then(|runtime| runtime.pid(id))
        .and_then(|pid| env.firewall.allow_hairpin(pid, address));
    if let Err(error) = allowed {
        env.warn(format!(
            "{}: {} cannot reach its own component through the host: {error:#}",
            component.name,
            crate::runtime::short_id(id)
        ));
    }
}
