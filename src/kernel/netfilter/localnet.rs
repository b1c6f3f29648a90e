//! `route_localnet`, per interface: without it the kernel will not route a packet whose source
//! or destination is 127.0.0.0/8 off the loopback device, so a DNAT of a host client's
//! 127.0.0.1:PORT to a backend goes nowhere (the request leaves with source 127.0.0.1 and the
//! reply comes back to it). Needed only by components that say `localhostClients`, and only on
//! the interfaces their backends are reached by (a Docker bridge, say), never on `all`.
//!
//! Why not `all`, as kube-proxy does: route_localnet on an interface lets whatever is on the
//! other side of it send packets to the host's 127.0.0.0/8 (CVE-2020-8558). handoff's table
//! carries kube-proxy's guard against that (`localnet_guard`), but a table can disappear — `nft
//! flush ruleset` (Debian's `systemctl restart nftables`), a deleted table, a failed layout —
//! and an interface facing the LAN must then still refuse: only the kernel's own check,
//! route_localnet off there, outlives the table. What remains open while the flag is on is the
//! backends' own bridge, as with Docker's `--userland-proxy=false` (which sets route_localnet on
//! docker0): the guard covers it while the table stands.
//!
//! The order keeps a window from ever opening: the table and its guard first, then the flag.
//! What each interface had before is recorded, before it changes, in the state directory
//! (`route_localnet-TABLE.json`, with the boot it belongs to: a reboot resets the flags, and a
//! record from an earlier boot is dropped), and put back when no component on the host needs
//! it any more — the last such component unrouted, `teardown`, the package removed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::Failure;
use crate::kernel::interface;

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// `net.ipv4.conf.<interface>.route_localnet`.
fn flag_path(interface: &str) -> PathBuf {
    Path::new("/proc/sys/net/ipv4/conf")
        .join(interface)
        .join("route_localnet")
}

/// What the interfaces had before handoff turned their route_localnet on, in this boot.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    boot: String,
    /// Interface name -> the value it had (`0` in practice: an interface already on is not
    /// recorded, and so not turned off by us).
    interfaces: BTreeMap<String, String>,
}

/// The route_localnet flags one table turned on, and the record of what they were.
#[derive(Debug, Clone)]
pub struct Localnet {
    record: PathBuf,
}

impl Localnet {
    pub fn new(state_dir: &Path, table: &str) -> Self {
        Localnet {
            record: state_dir.join(format!("route_localnet-{table}.json")),
        }
    }

    /// The interfaces that `backends` are reached by whose route_localnet is off: those that
    /// [`Localnet::turn_on`] must change before host clients can reach them.
    pub fn missing(&self, backends: &[Ipv4Addr]) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        for backend in backends {
            let Some(name) = interface::egress_interface(*backend)? else {
                continue;
            };
            if name == "lo" || missing.contains(&name) {
                continue;
            }
            if read_flag(&name)? != "1" {
                missing.push(name);
            }
        }
        Ok(missing)
    }

    /// Turn route_localnet on on `interfaces`, each recorded first. Refused (a read-only
    /// /proc/sys) is a host error that says what it costs.
    pub fn turn_on(&self, interfaces: &[String]) -> Result<()> {
        let mut record = self.read_record()?;
        for name in interfaces {
            let before = read_flag(name)?;
            if before == "1" {
                continue;
            }
            record.interfaces.entry(name.clone()).or_insert(before);
            self.write_record(&record)?;
            std::fs::write(flag_path(name), "1").map_err(|error| {
                Failure::host(format!(
                    "localhostClients: cannot set net.ipv4.conf.{name}.route_localnet to 1 \
                     ({error}); without it clients on the host cannot reach the component at \
                     127.0.0.1 (set it, or drop localhostClients from the config)"
                ))
            })?;
        }
        Ok(())
    }

    /// Whether this table turned any flag on (and so may have something to put back).
    pub fn has_record(&self) -> bool {
        self.record.exists()
    }

    /// Put back every flag this table turned on; then forget the record. An interface that is
    /// gone (its Docker network removed) has nothing to put back. Keeps going past a failure,
    /// then reports the first.
    pub fn put_back(&self) -> Result<()> {
        let record = self.read_record()?;
        let mut first_error = None;
        for (name, before) in &record.interfaces {
            let path = flag_path(name);
            if !path.exists() {
                continue;
            }
            if let Err(error) = std::fs::write(&path, before) {
                first_error.get_or_insert(anyhow::anyhow!(
                    "putting net.ipv4.conf.{name}.route_localnet back to {before}: {error}"
                ));
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        match std::fs::remove_file(&self.record) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(error).with_context(|| format!("removing {}", self.record.display()))
            }
            _ => Ok(()),
        }
    }

    /// The record of this boot (empty when there is none, or it is from an earlier boot).
    fn read_record(&self) -> Result<Record> {
        let boot = std::fs::read_to_string(BOOT_ID)
            .with_context(|| format!("reading {BOOT_ID}"))?
            .trim()
            .to_string();
        let record = match std::fs::read(&self.record) {
            Ok(bytes) => serde_json::from_slice::<Record>(&bytes).with_context(|| {
                format!("{}: not a route_localnet record", self.record.display())
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Record::default(),
            Err(error) => {
                return Err(error).with_context(|| format!("reading {}", self.record.display()))
            }
        };
        Ok(match record.boot == boot {
            true => record,
            false => Record {
                boot,
                interfaces: BTreeMap::new(),
            },
        })
    }

    /// Write the record atomically (a crash leaves the old one or the new one).
    fn write_record(&self, record: &Record) -> Result<()> {
        let partial = self.record.with_extension("json.partial");
        let text = serde_json::to_vec(record).context("encoding the route_localnet record")?;
        std::fs::write(&partial, text)
            .and_then(|()| std::fs::rename(&partial, &self.record))
            .with_context(|| format!("writing {}", self.record.display()))
    }
}

/// The interface's route_localnet now (`0` or `1`).
fn read_flag(interface: &str) -> Result<String> {
    let path = flag_path(interface);
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_string())
}

/// Whether `net.ipv4.conf.all.route_localnet` is on: host-wide, every interface then lets
/// packets to 127.0.0.0/8 in, and only a firewall's guard stands in their way (an older
/// handoff set it so; `check` warns).
pub fn on_everywhere() -> bool {
    std::fs::read_to_string(flag_path("all")).is_ok_and(|v| v.trim() == "1")
}
