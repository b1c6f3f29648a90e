//! gantry's workflow on the kernel path, as explicit steps: launch a new backend beside the
//! old one, switch when it is ready, drain the old one, retire it.
//!
//! Every step starts from what is observed — the kernel's map for the active backend, Docker's
//! labels for the containers, the state file for what is draining — so a rerun after a failure
//! continues from where things are, not from a log of intentions.

use std::collections::HashMap;
use std::io::Read;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::commands::{active_record, human_duration, ports_of, Context};
use crate::config::{Component, ExecCommand, PullPolicy, SignalKind};
use crate::conntrack::{self, Flow};
use crate::crash;
use crate::drain::{self, Target};
use crate::error::{ExitCode, Failure};
use crate::health;
use crate::netfilter::{ComponentRoutes, Firewall};
use crate::progress::DrainProgress;
use crate::runtime::docker::{
    Container, ContainerSpec, Docker, LABEL_COMPONENT, LABEL_CONFIG_HASH, LABEL_GENERATION,
    LABEL_INSTANCE, LABEL_TABLE,
};
use crate::state::{now_ms, BackendRecord};

/// Lines of a failed container's log printed with the failure.
const FAILED_LOG_LINES: usize = 20;

/// What a switch replaced.
#[derive(Debug)]
pub struct Switched {
    pub previous: Option<BackendRecord>,
    /// The kernel transaction and the state update, without the ready check.
    pub elapsed: Duration,
}

/// Point `component` at `address` (already checked ready) in one transaction; the previous
/// backend starts draining. The state is written first and restored if the kernel refuses.
pub fn switch_to(
    ctx: &Context,
    firewall: &dyn Firewall,
    component: &Component,
    routes: &ComponentRoutes,
    address: Ipv4Addr,
    container: Option<String>,
    container_of: &dyn Fn(Ipv4Addr) -> Option<String>,
) -> Result<Switched> {
    let started = Instant::now();
    let name = &component.name;
    let ports = ports_of(component)?;
    let original = ctx.state.load()?;
    let now = now_ms();
    // The kernel says what is active; the state's record only stands in when our table was
    // deleted (its flows may still be alive and must drain).
    let previous = active_record(routes, now)
        .map(|mut record| {
            record.container = container_of(record.address);
            record
        })
        .or_else(|| {
            original.component(name).active.map(|mut record| {
                record.since_ms = now;
                record
            })
        });
    let mut state = original.clone();
    state.record_switch(
        name,
        previous.clone(),
        BackendRecord {
            address,
            ports: ports.clone(),
            since_ms: now,
            container,
        },
    );
    ctx.state.save(&state)?;
    crash::point("before-switch");
    if let Err(error) = firewall.switch(name, routes, &ports, address, &state.known_addresses()) {
        if let Err(restore) = ctx.state.save(&original) {
            eprintln!("handoff: warning: could not restore the previous state: {restore:#}");
        }
        return Err(error).context(format!(
            "switching {name} to {address}; nothing was changed"
        ));
    }
    crash::point("after-switch");
    // After the transaction: by now the NAT ruleset has loaded conntrack for sure.
    if let Some(warning) = conntrack::ensure_events_for_new_flows().warning() {
        eprintln!("handoff: warning: {warning}");
    }
    Ok(Switched {
        previous,
        elapsed: started.elapsed(),
    })
}

pub fn describe_switch(name: &str, address: Ipv4Addr, switched: &Switched) -> String {
    let ms = switched.elapsed.as_millis();
    match &switched.previous {
        Some(previous) if previous.address != address => format!(
            "{name}: new connections now go to {address}; {} is draining (switched in {ms} ms)",
            previous.address
        ),
        Some(_) => format!("{name}: already pointed at {address}; ruleset re-asserted ({ms} ms)"),
        None => format!("{name}: new connections now go to {address} (switched in {ms} ms)"),
    }
}

fn repo_of(component: &Component) -> Result<&str> {
    component.repo.as_deref().ok_or_else(|| {
        Failure::input(format!(
            "component {:?} has no repo: it has address backends, use `handoff switch {} --to \
             ADDR`",
            component.name, component.name
        ))
        .into()
    })
}

/// Make the image available according to the pull policy.
fn ensure_image(docker: &Docker, component: &Component, repo: &str, tag: &str) -> Result<String> {
    let image = format!("{repo}:{tag}");
    let policy = component.pull_policy(tag);
    let present = docker.image_present(&image)?;
    let pull = match policy {
        PullPolicy::Always => true,
        PullPolicy::Missing => !present,
        PullPolicy::Never => false,
    };
    if pull {
        eprintln!("handoff: {}: pulling {image}", component.name);
        if let Err(error) = docker.pull(repo, tag) {
            if !present {
                return Err(Failure::input(format!(
                    "image {image} is not available: not present locally and the pull failed: \
                     {error:#}"
                ))
                .into());
            }
            eprintln!(
                "handoff: warning: pulling {image} failed ({error:#}); using the local image"
            );
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

/// A new container beside the old one, ready: created, started, given its address, passed its
/// readyChecks. On any failure it is removed again (its last log lines printed): nothing is
/// left behind.
pub fn launch(
    ctx: &Context,
    docker: &Docker,
    component: &Component,
    tag: &str,
) -> Result<(Container, Ipv4Addr)> {
    let repo = repo_of(component)?;
    let image = ensure_image(docker, component, repo, tag)?;
    let existing = docker.containers(&ctx.table, Some(&component.name), &component.network)?;
    let generation = existing
        .iter()
        .map(Container::generation)
        .max()
        .unwrap_or(0)
        + 1;
    let instance = instance_id()?;
    let labels = HashMap::from([
        (LABEL_TABLE.to_string(), ctx.table.clone()),
        (LABEL_COMPONENT.to_string(), component.name.clone()),
        (LABEL_CONFIG_HASH.to_string(), component.config_hash()),
        (LABEL_GENERATION.to_string(), generation.to_string()),
        (LABEL_INSTANCE.to_string(), instance.clone()),
    ]);
    let spec = ContainerSpec {
        name: format!("{}-{}-{instance}", ctx.table, component.name),
        image: image.clone(),
        command: component.command.clone(),
        user: component.user.clone(),
        privileged: component.privileged,
        env: component
            .environment_variables
            .iter()
            .map(|v| format!("{}={}", v.name, v.value))
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
        labels,
    };
    eprintln!(
        "handoff: {}: starting {} from {image}",
        component.name, spec.name
    );
    let id = docker.create_and_start(&spec)?;
    crash::point("before-ready");
    let ready = docker
        .address(&id, &component.network)
        .and_then(|address| health::wait_component_ready(component, address).map(|()| address));
    match ready {
        Ok(address) => {
            let container = docker
                .containers(&ctx.table, Some(&component.name), &component.network)?
                .into_iter()
                .find(|c| c.id == id)
                .context("the new container vanished")?;
            Ok((container, address))
        }
        Err(error) => {
            let logs = docker.logs_tail(&id, FAILED_LOG_LINES);
            if !logs.trim().is_empty() {
                eprintln!(
                    "handoff: {}: last log lines of {}:",
                    component.name, spec.name
                );
                for line in logs.lines() {
                    eprintln!("  | {line}");
                }
            }
            if let Err(remove) = docker.remove(&id) {
                eprintln!(
                    "handoff: warning: could not remove {}: {remove:#}",
                    spec.name
                );
            }
            Err(error.context(format!(
                "{} was removed; the running version keeps serving",
                spec.name
            )))
        }
    }
}

/// The running container of `component` at `address`, if any.
fn container_at(containers: &[Container], address: Ipv4Addr) -> Option<&Container> {
    containers
        .iter()
        .find(|c| c.running && c.address == Some(address))
}

/// Bring the state file in line with what is observed, under the lock, before any step:
/// the kernel's map says what is active; a draining entry for the active address is dropped;
/// running containers of the component that are neither active nor draining (left by a run
/// that died before or during its switch) become draining, so the normal drain retires them
/// without cutting anything; containers that are not running are removed.
fn reconcile(
    ctx: &Context,
    docker: &Docker,
    component: &Component,
    routes: &ComponentRoutes,
    containers: &[Container],
) -> Result<()> {
    let name = &component.name;
    let mut state = ctx.state.load()?;
    let before = state.clone();
    let now = now_ms();
    let entry = state.components.entry(name.clone()).or_default();
    let active = routes.active();
    match (active, &entry.active) {
        (Some(address), Some(record)) if record.address == address => {}
        (Some(_), _) => {
            entry.active = active_record(routes, now).map(|mut record| {
                record.container = active
                    .and_then(|a| container_at(containers, a))
                    .map(|c| c.id.clone());
                record
            });
        }
        (None, Some(record)) if container_at(containers, record.address).is_none() => {
            entry.active = None;
        }
        (None, _) => {}
    }
    entry.draining.retain(|b| Some(b.address) != active);
    for container in containers.iter().filter(|c| c.running) {
        let Some(address) = container.address else {
            continue;
        };
        let known = Some(address) == active
            || entry.active.as_ref().is_some_and(|a| a.address == address)
            || entry.draining.iter().any(|b| b.address == address);
        if !known {
            eprintln!(
                "handoff: {name}: {} ({address}) is neither active nor draining (left by an \
                 interrupted run); draining it",
                container.name
            );
            entry.draining.push(BackendRecord {
                address,
                ports: component.port_pairs(),
                since_ms: now,
                container: Some(container.id.clone()),
            });
        }
    }
    if state != before {
        ctx.state.save(&state)?;
    }
    sweep_failed(docker, component, containers);
    Ok(())
}

/// `start`: run the first container of a component and route its ports to it.
pub fn start(ctx: &Context, component: &Component) -> Result<()> {
    repo_of(component)?;
    ports_of(component)?;
    ctx.require_root()?;
    let docker = Docker::connect()?;
    let _lock = ctx.lock(&format!("start {}", component.name))?;
    let firewall = ctx.firewall();
    let routes = firewall.routes(&component.name)?;
    let containers = docker.containers(&ctx.table, Some(&component.name), &component.network)?;
    reconcile(ctx, &docker, component, &routes, &containers)?;
    if let Some(running) = routes.active().and_then(|a| container_at(&containers, a)) {
        return Err(Failure::input(format!(
            "{} already runs (container {} at {}); use `handoff update {}`",
            component.name,
            running.name,
            routes.active().map(|a| a.to_string()).unwrap_or_default(),
            component.name
        ))
        .into());
    }
    launch_and_switch(
        ctx,
        &docker,
        &firewall,
        component,
        &routes,
        &containers,
        &component.tag,
    )
}

/// Launch a container of `tag` beside the running ones (`containers`) and, once it is
/// ready, switch the component to it.
fn launch_and_switch(
    ctx: &Context,
    docker: &Docker,
    firewall: &dyn Firewall,
    component: &Component,
    routes: &ComponentRoutes,
    containers: &[Container],
    tag: &str,
) -> Result<()> {
    let (container, address) = launch(ctx, docker, component, tag)?;
    let lookup = |a: Ipv4Addr| container_at(containers, a).map(|c| c.id.clone());
    let switched = switch_to(
        ctx,
        firewall,
        component,
        routes,
        address,
        Some(container.id),
        &lookup,
    )?;
    println!("{}", describe_switch(&component.name, address, &switched));
    Ok(())
}

/// `update`: a new container beside the old one; switch when ready; drain and retire the old.
pub fn update(ctx: &Context, component: &Component, tag: Option<&str>, wait: bool) -> Result<()> {
    repo_of(component)?;
    ports_of(component)?;
    ctx.require_root()?;
    let docker = Docker::connect()?;
    {
        let _lock = ctx.lock(&format!("update {}", component.name))?;
        let firewall = ctx.firewall();
        let routes = firewall.routes(&component.name)?;
        let containers =
            docker.containers(&ctx.table, Some(&component.name), &component.network)?;
        reconcile(ctx, &docker, component, &routes, &containers)?;
        let tag = tag.unwrap_or(&component.tag);
        let image = format!("{}:{tag}", repo_of(component)?);
        let draining = !ctx
            .state
            .load()?
            .component(&component.name)
            .draining
            .is_empty();
        let current = routes.active().and_then(|a| container_at(&containers, a));
        let already_there = current.filter(|c| {
            draining
                && c.image == image
                && c.labels.get(LABEL_CONFIG_HASH) == Some(&component.config_hash())
        });
        if let Some(current) = already_there {
            // An earlier update of the same version got past its switch and did not finish
            // (it died, or is still draining): converge by finishing the drain.
            println!(
                "{}: {} already serves {image}; finishing the drain of the previous version",
                component.name, current.name
            );
        } else {
            launch_and_switch(
                ctx,
                &docker,
                &firewall,
                component,
                &routes,
                &containers,
                tag,
            )?;
        }
    }
    if !wait {
        println!(
            "{}: not waiting for the drain; `handoff drain {} --wait` (or the next update) \
             retires the old container",
            component.name, component.name
        );
        return Ok(());
    }
    finish_drain(ctx, component, None)
}

/// Containers of the component that are not running (failed or stopped by hand) are removed:
/// nothing piles up.
fn sweep_failed(docker: &Docker, component: &Component, containers: &[Container]) {
    for container in containers.iter().filter(|c| !c.running) {
        eprintln!(
            "handoff: {}: removing {} ({})",
            component.name, container.name, container.state
        );
        if let Err(error) = docker.remove(&container.id) {
            eprintln!("handoff: warning: {error:#}");
        }
    }
}

/// Wait for the draining backends of `component`, then retire their containers. The wait holds
/// no lock; recording the result takes it briefly.
pub fn finish_drain(ctx: &Context, component: &Component, timeout: Option<Duration>) -> Result<()> {
    let name = &component.name;
    let draining = ctx.state.load()?.component(name).draining;
    if draining.is_empty() {
        println!("{name}: nothing is draining");
        return Ok(());
    }
    let drain_timeout = component.drain_timeout_ms();
    let targets: Vec<Target> = draining
        .iter()
        .map(|backend| Target {
            backend: backend.clone(),
            give_up_at_ms: backend.since_ms.saturating_add(drain_timeout),
        })
        .collect();
    let mut progress = DrainProgress::new(name);
    let outcome = drain::wait(
        &mut conntrack::Netlink::new(),
        targets,
        timeout,
        &mut progress,
    )?;
    progress.finish();

    for backend in &outcome.drained {
        println!("{name}: {} drained", backend.address);
    }
    for (backend, flows) in &outcome.given_up {
        eprintln!(
            "handoff: {name}: {} still had {} live flow(s) after drainTimeout ({drain_timeout} ms); \
             giving up on them:",
            backend.address,
            flows.len()
        );
        print_flows(flows.iter());
    }
    let finished: Vec<BackendRecord> = outcome
        .drained
        .iter()
        .chain(outcome.given_up.iter().map(|(b, _)| b))
        .cloned()
        .collect();
    let retire_errors = if finished.is_empty() {
        Vec::new()
    } else {
        retire_finished(ctx, component, &finished, true)?
    };
    if !outcome.still_open.is_empty() {
        let open: usize = outcome.still_open.iter().map(|(_, f)| f.len()).sum();
        for (backend, flows) in &outcome.still_open {
            println!(
                "{name}: {} still has {} live flow(s):",
                backend.address,
                flows.len()
            );
            print_flows(flows.iter());
        }
        return Err(Failure::new(
            ExitCode::DrainTimeout,
            format!(
                "{name}: {open} flow(s) still open after --timeout {} s",
                timeout.map(|t| t.as_secs()).unwrap_or(0)
            ),
        )
        .into());
    }
    if !retire_errors.is_empty() {
        anyhow::bail!("retiring old containers: {}", retire_errors.join("; "));
    }
    Ok(())
}

/// Under the lock, retire (signal when `graceful`, stop, remove) the containers of the
/// `finished` backends that are still draining — another run may have retired some meanwhile —
/// and forget them. Returns the retirement failures (teardown keeps going past them).
fn retire_finished(
    ctx: &Context,
    component: &Component,
    finished: &[BackendRecord],
    graceful: bool,
) -> Result<Vec<String>> {
    let name = &component.name;
    let _lock = ctx.lock(&format!("retire {name}"))?;
    let state = ctx.state.load()?;
    let still_draining = state.component(name).draining;
    let mine: Vec<BackendRecord> = finished
        .iter()
        .filter(|b| still_draining.contains(b))
        .cloned()
        .collect();
    let mut errors = Vec::new();
    // An address backend may be a container or a host that someone else stops later (and
    // dockerd would then clear its entries by their original tuple): forget its finished
    // flows now, unless the address serves again.
    let serving: Vec<Ipv4Addr> = state
        .components
        .values()
        .filter_map(|c| c.active.as_ref().map(|a| a.address))
        .collect();
    for backend in mine
        .iter()
        .filter(|b| b.container.is_none() && !serving.contains(&b.address))
    {
        if let Err(error) = drain::forget_flows(&mut conntrack::Netlink::new(), backend, false) {
            eprintln!(
                "handoff: warning: {name}: could not clear the conntrack entries of {}: {error:#}",
                backend.address
            );
        }
    }
    if mine.iter().any(|b| b.container.is_some()) {
        let docker = Docker::connect()?;
        for backend in &mine {
            let Some(id) = &backend.container else {
                continue;
            };
            match retire(&docker, component, id, backend, graceful) {
                Ok(()) => println!(
                    "{name}: container {} at {} removed",
                    &id[..id.len().min(12)],
                    backend.address
                ),
                Err(error) => errors.push(format!("{error:#}")),
            }
        }
    }
    crash::point("before-forget");
    forget_locked(ctx, name, &mine)?;
    Ok(errors)
}

/// Drop finished backends from the state and from the hairpin set; the caller holds the lock.
fn forget_locked(ctx: &Context, name: &str, finished: &[BackendRecord]) -> Result<()> {
    let mut state = ctx.state.load()?;
    state.finish_draining(name, finished);
    ctx.state.save(&state)?;
    // Only touch the kernel when there is something to route: set_hairpin_sources would
    // otherwise create an empty table.
    let known = state.known_addresses();
    let firewall = ctx.firewall();
    if !known.is_empty() || firewall.routes(name)?.active().is_some() {
        firewall.set_hairpin_sources(&known)?;
    }
    Ok(())
}

/// Forget the backend's conntrack entries while its container still holds the address (see
/// [`drain::forget_flows`]), send the termination signals (when `graceful`), stop with the
/// grace period, remove. Keeps going past a failing step, like any teardown, and reports every
/// failure at the end.
pub fn retire(
    docker: &Docker,
    component: &Component,
    id: &str,
    backend: &BackendRecord,
    graceful: bool,
) -> Result<()> {
    let address = backend.address;
    let mut errors = Vec::new();
    // Only while the container runs at that address: once it stopped, dockerd has already
    // cleaned up, and Docker may have given the address to another container, whose flows and
    // whose termination signals these are not.
    let holds_address = match docker.running_address(id, &component.network) {
        Ok(current) => current == Some(address),
        Err(error) => {
            errors.push(format!("{error:#}"));
            false
        }
    };
    if holds_address {
        if let Err(error) = drain::forget_flows(&mut conntrack::Netlink::new(), backend, !graceful)
        {
            eprintln!(
                "handoff: warning: {}: could not clear the conntrack entries of {address}: \
                 {error:#}",
                component.name
            );
        }
    } else {
        eprintln!(
            "handoff: {}: container {} no longer runs at {address} (stopped or gone): no \
             termination signal",
            component.name,
            &id[..id.len().min(12)]
        );
    }
    if graceful && holds_address {
        for signal in &component.termination_signals {
            let timeout = Duration::from_secs(signal.timeout);
            let sent = match signal.kind {
                SignalKind::Http => {
                    let port = signal.port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0);
                    let path = signal.path.as_deref().unwrap_or("/");
                    health::http_post(address, port, path, timeout)
                }
                SignalKind::Exec => {
                    let argv = match &signal.exec_command {
                        Some(ExecCommand::Argv(argv)) => argv.clone(),
                        Some(ExecCommand::Shell(line)) => {
                            vec!["/bin/sh".to_string(), "-c".to_string(), line.clone()]
                        }
                        None => Vec::new(),
                    };
                    docker.exec(id, argv, timeout).and_then(|code| {
                        if code == 0 {
                            Ok(())
                        } else {
                            anyhow::bail!("exited with {code}")
                        }
                    })
                }
            };
            if let Err(error) = sent {
                eprintln!(
                    "handoff: warning: {}: termination signal {:?} failed: {error:#}",
                    component.name, signal.kind
                );
            }
        }
    }
    let grace = if graceful {
        Duration::from_secs(component.stop_timeout)
    } else {
        Duration::ZERO
    };
    crash::point("before-stop");
    if let Err(error) = docker.stop(id, grace) {
        errors.push(format!("{error:#}"));
    }
    crash::point("before-remove");
    if let Err(error) = docker.remove(id) {
        errors.push(format!("{error:#}"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", errors.join("; "))
    }
}

/// `stop` (drain first) and `kill` (no drain, no signals): take the component's ports out of
/// the ruleset and retire all its containers.
pub fn stop(ctx: &Context, component: &Component, drain_first: bool) -> Result<()> {
    let name = &component.name;
    ctx.require_root()?;
    let docker = if component.repo.is_some() {
        Some(Docker::connect()?)
    } else {
        None
    };
    {
        let _lock = ctx.lock(&format!(
            "{} {name}",
            if drain_first { "stop" } else { "kill" }
        ))?;
        let firewall = ctx.firewall();
        let routes = firewall.routes(name)?;
        let mut state = ctx.state.load()?;
        let containers = match &docker {
            Some(docker) => docker.containers(&ctx.table, Some(name), &component.network)?,
            None => Vec::new(),
        };
        let now = now_ms();
        let entry = state.components.entry(name.clone()).or_default();
        if let Some(mut active) = active_record(&routes, now).or(entry.active.take()) {
            active.since_ms = now;
            active.container = container_at(&containers, active.address).map(|c| c.id.clone());
            if !entry.draining.iter().any(|b| b.address == active.address) {
                entry.draining.push(active);
            }
        }
        entry.active = None;
        // Containers of the component that nothing tracks yet are retired with the rest.
        for container in containers.iter().filter(|c| c.running) {
            if let Some(address) = container.address {
                if !entry.draining.iter().any(|b| b.address == address) {
                    entry.draining.push(BackendRecord {
                        address,
                        ports: component.port_pairs(),
                        since_ms: now,
                        container: Some(container.id.clone()),
                    });
                }
            }
        }
        let mut ports: Vec<_> = routes
            .routes
            .iter()
            .map(|r| crate::config::PortPair {
                external: r.external,
                backend: r.backend_port,
            })
            .chain(component.port_pairs())
            .collect();
        ports.sort_by_key(|p| p.external);
        ports.dedup_by_key(|p| p.external);
        ctx.state.save(&state)?;
        firewall.unroute(name, &ports, &state.known_addresses())?;
        println!("{name}: new connections are no longer forwarded");
        if let Some(docker) = &docker {
            sweep_failed(docker, component, &containers);
        }
    }
    if drain_first {
        return finish_drain(ctx, component, None);
    }
    drop(docker);
    let draining = ctx.state.load()?.component(name).draining;
    let errors = retire_finished(ctx, component, &draining, false)?;
    if !errors.is_empty() {
        anyhow::bail!("killing containers: {}", errors.join("; "));
    }
    Ok(())
}

pub fn print_flows<'a>(flows: impl Iterator<Item = &'a Flow>) {
    let timeouts = conntrack::StateTimeouts::read();
    for flow in flows {
        let idle = flow
            .idle_secs(&timeouts)
            .map(|s| format!(", idle {s} s"))
            .unwrap_or_default();
        let bytes = flow
            .bytes
            .map(|b| format!(", {b} bytes"))
            .unwrap_or_default();
        println!(
            "  {} -> {} via {} {}{idle}{bytes}",
            flow.client,
            flow.backend,
            flow.destination,
            flow.state.name()
        );
    }
}

/// `monitor`: run healthChecks against the active backend every `interval`; after
/// `failures_allowed` consecutive failures, replace it through `update` (without waiting for
/// the drain), and retire drained containers along the way. Runs until killed.
pub fn monitor(
    ctx: &Context,
    component: &Component,
    interval: Duration,
    failures_allowed: u32,
) -> Result<()> {
    repo_of(component)?;
    let name = &component.name;
    let mut failures = 0;
    eprintln!(
        "handoff: monitoring {name}: {} health check(s) every {} s",
        component.health_checks.len(),
        interval.as_secs()
    );
    loop {
        let active = ctx.firewall().routes(name)?.active();
        match active {
            None => eprintln!("handoff: {name}: not routed; waiting"),
            Some(address) => {
                let failed = component.health_checks.iter().find_map(|check| {
                    health::run_check(check, address, Duration::from_secs(check.timeout))
                        .err()
                        .map(|e| format!("{}: {e:#}", check.title()))
                });
                match failed {
                    None => failures = 0,
                    Some(problem) => {
                        failures += 1;
                        eprintln!(
                            "handoff: {name}: {address} failed a health check ({failures}/{failures_allowed}): {problem}"
                        );
                    }
                }
                if failures >= failures_allowed {
                    eprintln!("handoff: {name}: replacing the unhealthy backend {address}");
                    match update(ctx, component, None, false) {
                        Ok(()) => failures = 0,
                        Err(error) => eprintln!("handoff: {name}: update failed: {error:#}"),
                    }
                }
            }
        }
        reap_drained(ctx, component);
        std::thread::sleep(interval);
    }
}

/// Retire draining backends that have no live flow left (one dump, no waiting).
fn reap_drained(ctx: &Context, component: &Component) {
    let result = (|| -> Result<()> {
        let draining = ctx.state.load()?.component(&component.name).draining;
        if draining.is_empty() {
            return Ok(());
        }
        let flows = conntrack::dump()?;
        let now = now_ms();
        let done: Vec<BackendRecord> = draining
            .into_iter()
            .filter(|b| {
                drain::live_flows(&flows, b).is_empty()
                    || now >= b.since_ms.saturating_add(component.drain_timeout_ms())
            })
            .collect();
        if done.is_empty() {
            return Ok(());
        }
        let errors = retire_finished(ctx, component, &done, true)?;
        for backend in &done {
            eprintln!(
                "handoff: {}: retired {} after draining for {}",
                component.name,
                backend.address,
                human_duration(now.saturating_sub(backend.since_ms))
            );
        }
        if !errors.is_empty() {
            anyhow::bail!("{}", errors.join("; "));
        }
        Ok(())
    })();
    if let Err(error) = result {
        eprintln!(
            "handoff: {}: retiring drained backends failed: {error:#}",
            component.name
        );
    }
}

/// `restore`: rebuild the ruleset from the state file (after a reboot, or after our table was
/// deleted), then resume draining. For each component the kernel does not route, the
/// recorded active backend is routed again: an address as it is; a container started again if
/// it is stopped (its address may have changed), or replaced by a new one if it is gone.
pub fn restore(ctx: &Context, components: &[Component]) -> Result<()> {
    ctx.require_root()?;
    let needs_docker = components.iter().any(|c| c.repo.is_some());
    let docker = if needs_docker {
        Some(Docker::connect()?)
    } else {
        None
    };
    let mut errors = Vec::new();
    for component in components {
        let result = (|| -> Result<()> {
            let _lock = ctx.lock(&format!("restore {}", component.name))?;
            let firewall = ctx.firewall();
            let routes = firewall.routes(&component.name)?;
            let state = ctx.state.load()?;
            let Some(active) = state.component(&component.name).active else {
                return Ok(());
            };
            if let Some(address) = routes.active() {
                // Routed already: refresh its map (the elements only, when its ports are
                // unchanged) and the hairpin set.
                return firewall.switch(
                    &component.name,
                    &routes,
                    &ports_of(component)?,
                    address,
                    &state.known_addresses(),
                );
            }
            let (address, container) = match (&docker, &active.container) {
                (Some(docker), Some(id)) => {
                    let containers =
                        docker.containers(&ctx.table, Some(&component.name), &component.network)?;
                    match containers.iter().find(|c| &c.id == id) {
                        Some(c) if c.running => {
                            (c.address.unwrap_or(active.address), Some(id.clone()))
                        }
                        Some(c) => {
                            eprintln!("handoff: {}: starting {} again", component.name, c.name);
                            docker.start(id)?;
                            let address = docker.address(id, &component.network)?;
                            health::wait_component_ready(component, address)?;
                            (address, Some(id.clone()))
                        }
                        None => {
                            let (c, address) = launch(ctx, docker, component, &component.tag)?;
                            (address, Some(c.id))
                        }
                    }
                }
                _ => (active.address, None),
            };
            let switched = switch_to(
                ctx,
                &firewall,
                component,
                &ComponentRoutes::default(),
                address,
                container,
                &|_| None,
            )?;
            println!("{}", describe_switch(&component.name, address, &switched));
            Ok(())
        })();
        if let Err(error) = result {
            eprintln!("handoff: error: restoring {}: {error:#}", component.name);
            errors.push(component.name.clone());
        }
    }
    for component in components {
        if !ctx
            .state
            .load()?
            .component(&component.name)
            .draining
            .is_empty()
        {
            if let Err(error) = finish_drain(ctx, component, None) {
                eprintln!("handoff: error: draining {}: {error:#}", component.name);
                errors.push(component.name.clone());
            }
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("restore failed for: {}", errors.join(", "));
    }
    Ok(())
}
