//! Talks to the `nft` binary: a script on stdin per change (applied by the kernel as one
//! transaction), JSON listings to read the kernel's maps back.

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use serde_json::Value;

use super::listing::parse_backend_maps;
use super::localnet::Localnet;
use super::{
    batch, bindings, docker_user, generations, label, migrate, ruleset, ComponentRoutes, Firewall,
    Switch,
};
use crate::error::Failure;
use crate::ports::PortPair;

/// nftables through the `nft` binary, in one table of our own; and the route_localnet flags
/// that the table's host clients need (see [`localnet`]), recorded in `state_dir`.
#[derive(Debug, Clone)]
pub struct NftFirewall {
    table: String,
    localnet: Localnet,
}

impl NftFirewall {
    pub fn new(table: &str, state_dir: &Path) -> Self {
        NftFirewall {
            table: table.to_string(),
            localnet: Localnet::new(state_dir, table),
        }
    }

    /// Before a switch that gives host clients `backends`: route_localnet on the interfaces
    /// they are reached by — the table with its guard first, when one is still off.
    fn open_localnet(&self, backends: &[Ipv4Addr]) -> Result<()> {
        let missing = self.localnet.missing(backends)?;
        if !missing.is_empty() {
            self.apply(ruleset::base(&self.table))?;
            self.localnet.turn_on(&missing)?;
        }
        Ok(())
    }

    /// After a change that may have taken the last host clients away: put back the
    /// route_localnet flags this table turned on, unless a component of any handoff table on
    /// the host still has host clients (tables share the interfaces' flags).
    fn close_localnet_if_unneeded(&self) -> Result<()> {
        if self.localnet.has_record() && !self.loopback_clients_anywhere()? {
            self.localnet.put_back()?;
        }
        Ok(())
    }

    /// The names of the host's `inet` tables: ours, other installations', anyone's.
    fn inet_tables(&self) -> Result<Vec<String>> {
        let listing = self.list(&["tables", "inet"])?.unwrap_or_default();
        Ok(listing["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| Some(item["table"]["name"].as_str()?.to_string()))
            .collect())
    }

    /// Whether any table on the host (ours, or another installation's) lets host clients
    /// reach a component at 127.0.0.1: its `localhost_ports` set has an element.
    fn loopback_clients_anywhere(&self) -> Result<bool> {
        for table in &self.inet_tables()? {
            match batch::read_ports(table, ruleset::LOCALHOST_SET) {
                Ok(ports) if !ports.is_empty() => return Ok(true),
                Ok(_) => {}
                Err(error) if error.downcast_ref::<batch::Missing>().is_some() => {}
                Err(error) => return Err(error),
            }
        }
        Ok(false)
    }

    /// Apply one script as one transaction.
    fn apply(&self, commands: Vec<String>) -> Result<()> {
        let script = ruleset::document(&commands);
        let output = run_nft(&["-f", "-"], Some(script.as_bytes()))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(nft_failure(&stderr, "applying the handoff ruleset"));
        }
        Ok(())
    }

    /// Apply a script that lays the table out (it begins with [`ruleset::base`]). Refused
    /// because the table is from before UDP, it is applied again after a rebuild of the table
    /// in the same transaction (see [`migrate`]); the layout is looked at only then, never on
    /// the way of a change that goes through.
    fn apply_layout(&self, commands: Vec<String>) -> Result<()> {
        let Err(error) = self.apply(commands.clone()) else {
            return Ok(());
        };
        let dispatch = self.list(&["map", "inet", &self.table, ruleset::DISPATCH_MAP])?;
        if !dispatch.as_ref().is_some_and(migrate::needs_rebuild) {
            return Err(error);
        }
        let Some(listing) = self.list(&["table", "inet", &self.table])? else {
            return Err(error);
        };
        let mut rebuilt = migrate::rebuild(&self.table, &listing)?;
        rebuilt.extend(commands);
        self.apply(rebuilt)
            .context("rebuilding the table laid out by an earlier handoff (ports without protocol)")
    }

    /// Commands that delete the maps of `component`'s older generations: for a transaction
    /// that lays its chain out again (or takes it away), which leaves them without a rule.
    fn delete_older_maps(&self, component: &str) -> Result<Vec<String>> {
        let maps = match generations::older_maps(&self.table, component) {
            Ok(maps) => maps,
            Err(error) if error.downcast_ref::<batch::Missing>().is_some() => Vec::new(),
            Err(error) => return Err(error),
        };
        Ok(maps
            .iter()
            .map(|map| format!("delete map inet {} {map}", self.table))
            .collect())
    }

    /// `nft -j list ...`; `Ok(None)` when the object does not exist.
    fn list(&self, what: &[&str]) -> Result<Option<Value>> {
        let mut args = vec!["-j", "list"];
        args.extend_from_slice(what);
        let output = run_nft(&args, None)?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(nft_failure(
                &stderr,
                &format!("nft list {}", what.join(" ")),
            ));
        }
        let value = serde_json::from_slice(&output.stdout)
            .context("nft printed JSON that could not be parsed")?;
        Ok(Some(value))
    }
}

fn run_nft(args: &[&str], stdin: Option<&[u8]>) -> Result<std::process::Output> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                anyhow::Error::new(Failure::host(
                    "the nft binary was not found in PATH (install the nftables package)",
                ))
            } else {
                anyhow::Error::new(e).context("cannot run nft")
            }
        })?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("nft stdin")?;
        pipe.write_all(input)
            .context("writing the ruleset to nft")?;
    }
    child.wait_with_output().context("waiting for nft")
}

fn nft_failure(stderr: &str, doing: &str) -> anyhow::Error {
    let message = format!("{doing}: nft said: {}", stderr.trim());
    if stderr.contains("Operation not permitted") {
        Failure::host(format!("{message} (handoff must run as root)")).into()
    } else {
        anyhow::anyhow!(message)
    }
}

/// A port bound to an address of a family the switch has no backend for would take that
/// address's traffic into a refusal: bad input (exit 2), nothing changed.
fn refuse_unserved_bindings(change: &Switch) -> Result<()> {
    for binding in bindings::wanted(change.ports) {
        let served = match binding.address {
            IpAddr::V4(_) => change.backends.v4.is_some(),
            IpAddr::V6(_) => change.backends.v6.is_some(),
        };
        if !served {
            return Err(Failure::input(format!(
                "{}: port {} is bound to {}, but the switch gives it no backend of that family",
                change.component, binding.key, binding.address
            ))
            .into());
        }
    }
    Ok(())
}

impl Firewall for NftFirewall {
    fn switch(&self, change: &Switch) -> Result<()> {
        let Switch {
            component,
            current,
            localhost,
            hairpin_sources,
            ..
        } = *change;
        refuse_unserved_bindings(change)?;
        if localhost {
            let canary = change.canary.map(|c| c.backend);
            let backends: Vec<Ipv4Addr> = change
                .backends
                .v4
                .into_iter()
                .chain(canary.and_then(|c| match c {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                }))
                .collect();
            self.open_localnet(&backends)?;
        }
        // The hot path: the component is routed already on exactly these external ports, with
        // no canary before or after, so only its maps (and the hairpin sets) change, in one
        // netlink batch that only adds (see `generations.rs`).
        let routes = (change.routes(), change.routes6());
        if change.only_elements_change() {
            match generations::switch(
                &self.table,
                component,
                &routes.0,
                &routes.1,
                hairpin_sources,
            ) {
                Ok(()) => return Ok(()),
                Err(error) if error.downcast_ref::<batch::Unconfirmed>().is_some() => {
                    // The batch went out but its answer did not come back: the kernel may
                    // have committed it. Say what the maps hold, not "nothing was changed".
                    let now = generations::current_routes(&self.table, component)?;
                    if now == routes {
                        return Ok(());
                    }
                    if now != (current.routes.clone(), current.routes6.clone()) {
                        return Err(error.context(format!(
                            "the maps of {component:?} now hold neither the old routes nor \
                             the new ones: {now:?}"
                        )));
                    }
                    return Err(error);
                }
                // A damaged table: lay it out again below.
                Err(error) if error.downcast_ref::<batch::Missing>().is_some() => {}
                // Refused: try the whole layout once, the hole in FORWARD included.
                Err(_) => {}
            }
        }
        // First routing, changed ports, a canary, or a damaged table: the hole in Docker's FORWARD
        // policy first (accepting our flows before they exist is harmless, routing before it
        // would drop new connections meanwhile), then the whole layout, through nft. Refused
        // before anything changes when another handoff table has our flows' label bit.
        let has_dispatch = |t: &str| batch::read_elements(t, ruleset::DISPATCH_MAP).is_ok();
        label::refuse_clash(&self.table, &self.inet_tables()?, has_dispatch)?;
        self.open_forward_path()?;
        let mut commands = ruleset::base(&self.table);
        commands.extend(ruleset::route(&self.table, change));
        commands.extend(self.delete_older_maps(component)?);
        commands.extend(ruleset::hairpin(&self.table, hairpin_sources));
        self.apply_layout(commands).map_err(|e| {
            if format!("{e:#}").contains("File exists") {
                e.context(format!(
                    "an external port of {component:?} is routed to another component in the \
                     kernel (was it moved in the config? switch or stop the other component \
                     first)"
                ))
            } else {
                e
            }
        })?;
        if !localhost {
            self.close_localnet_if_unneeded()?;
        }
        Ok(())
    }

    fn unroute(
        &self,
        component: &str,
        ports: &[PortPair],
        hairpin_sources: &[IpAddr],
    ) -> Result<()> {
        let mut commands = ruleset::base(&self.table);
        let chain = ruleset::component_chain(component);
        let bound = bindings::read(&self.table, &chain)?;
        commands.extend(ruleset::unroute(&self.table, component, ports, &bound));
        commands.extend(self.delete_older_maps(component)?);
        commands.extend(ruleset::hairpin(&self.table, hairpin_sources));
        self.apply_layout(commands)?;
        self.close_localnet_if_unneeded()?;
        let still_routed = self.all_routes()?.values().any(ComponentRoutes::is_routed);
        if !still_routed {
            docker_user::remove(&self.table)?;
        }
        Ok(())
    }

    fn allow_hairpin(&self, pid: u32, address: IpAddr) -> Result<()> {
        super::super::bridge_port::allow_hairpin(pid, address)?;
        Ok(())
    }

    fn set_hairpin_sources(&self, sources: &[IpAddr]) -> Result<()> {
        let mut commands = ruleset::base(&self.table);
        commands.extend(ruleset::hairpin(&self.table, sources));
        self.apply_layout(commands)?;
        generations::compact(&self.table)
    }

    fn all_routes(&self) -> Result<HashMap<String, ComponentRoutes>> {
        match self.list(&["table", "inet", &self.table])? {
            None => Ok(HashMap::new()),
            Some(listing) => parse_backend_maps(&listing),
        }
    }

    fn open_forward_path(&self) -> Result<()> {
        docker_user::ensure(&self.table)
    }

    /// Keeps going past a failure (the table, the route_localnet flags, the hole in FORWARD),
    /// then reports the first.
    fn remove_all(&self) -> Result<()> {
        let table = match self.list(&["table", "inet", &self.table]) {
            Ok(Some(_)) => self.apply(vec![format!("delete table inet {}", self.table)]),
            Ok(None) => Ok(()),
            Err(error) => Err(error),
        };
        let localnet = self.close_localnet_if_unneeded();
        let forward = docker_user::remove(&self.table);
        table.and(localnet).and(forward)
    }

    fn routes(&self, component: &str) -> Result<ComponentRoutes> {
        let read = |map: String| match batch::read_routes(&self.table, &map) {
            Ok(routes) => Ok(routes),
            Err(error) if error.downcast_ref::<batch::Missing>().is_some() => Ok(Vec::new()),
            Err(error) => Err(error),
        };
        let (map, map6) = generations::current_maps(&self.table, component)?;
        let routes = read(map)?;
        let routes6 = read(map6)?;
        if routes.is_empty() && routes6.is_empty() {
            return Ok(ComponentRoutes::default());
        }
        let canary = read(ruleset::canary_map(component))?;
        let localhost = match batch::read_ports(&self.table, ruleset::LOCALHOST_SET) {
            Ok(ports) => routes.iter().any(|r| ports.contains(&r.key())),
            Err(error) if error.downcast_ref::<batch::Missing>().is_some() => false,
            Err(error) => return Err(error),
        };
        let bound = bindings::read(&self.table, &ruleset::component_chain(component))?;
        Ok(ComponentRoutes {
            routes,
            routes6,
            canary,
            localhost,
            bound,
        })
    }
}
