//! The use cases' test bench: an [`Env`] over in-memory fakes of every outside world — the
//! firewall, the container runtime, the network probe, conntrack — and a real state directory
//! in a temporary folder. No root, no kernel, no Docker.

use std::cell::RefCell;
use std::net::IpAddr;
use std::time::Duration;

use super::{Env, Note, Reporter, RuntimeSource, Settings};
use crate::config::{self, Component, Config, PortPair};
use crate::health::fake::FakeProbe;
use crate::kernel::conntrack::fake::FakeConntrack;
use crate::kernel::netfilter::fake::FakeFirewall;
use crate::kernel::netfilter::Firewall;
use crate::runtime::fake::FakeRuntime;
use crate::state::{BackendRecord, State, StateDir};

/// Notes collected instead of printed.
#[derive(Default)]
pub struct Collected {
    pub notes: RefCell<Vec<Note>>,
}

impl Reporter for Collected {
    fn note(&self, note: Note) {
        self.notes.borrow_mut().push(note);
    }

    fn drain_progress(&self, _component: &str, _remaining: usize, _waited: Duration) {}
}

pub struct Kit {
    pub firewall: FakeFirewall,
    pub runtime: FakeRuntime,
    pub probe: FakeProbe,
    pub reporter: Collected,
    pub config: Config,
    dir: tempfile::TempDir,
}

/// A Docker component `web` (images `repo:v1` and `repo:v2` present locally), port 80 -> 8080,
/// an http and an exec termination signal.
const DOCKER: &str = r#"{"components": [{"name": "web", "repo": "repo", "tag": "v1",
    "pull": "never", "ports": [{"external": 80, "container": 8080}],
    "readyChecks": [{"kind": "http", "port": 8080}], "drainTimeout": 60000, "stopTimeout": 2,
    "terminationSignals": [{"kind": "http", "port": 8080, "path": "/quit"},
                           {"kind": "exec", "exec_command": "echo bye"}]}]}"#;

/// An address component `web`, port 80 -> 8080.
const ADDRESS: &str = r#"{"components": [{"name": "web",
    "ports": [{"external": 80, "container": 8080}], "drainTimeout": 60000}]}"#;

impl Kit {
    pub fn docker() -> Kit {
        Kit::with_config(DOCKER)
    }

    pub fn address() -> Kit {
        Kit::with_config(ADDRESS)
    }

    pub fn with_config(text: &str) -> Kit {
        Kit {
            firewall: FakeFirewall::default(),
            runtime: FakeRuntime::with_images(&["repo:v1", "repo:v2"]),
            probe: FakeProbe::default(),
            reporter: Collected::default(),
            config: config::parse(text).expect("test config"),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn web(&self) -> &Component {
        &self.config.components[0]
    }

    pub fn state_dir(&self) -> StateDir {
        StateDir::new(self.dir.path().join("state"))
    }

    pub fn state(&self) -> State {
        self.state_dir().load().expect("state")
    }

    /// An Env over the fakes, with `conntrack` as the kernel's table.
    pub fn env(&self, conntrack: FakeConntrack) -> Env<'_> {
        Env::new(
            Settings {
                table: "handoff".to_string(),
                state: self.state_dir(),
                lock_timeout: Duration::from_secs(1),
            },
            &self.firewall,
            &self.probe,
            &self.reporter,
            Box::new(conntrack),
            RuntimeSource::Given(&self.runtime),
        )
    }

    /// An Env whose conntrack table is empty: every drain ends at once.
    pub fn quiet_env(&self) -> Env<'_> {
        self.env(FakeConntrack::default())
    }

    /// Where the kernel sends web's new connections.
    pub fn routed(&self) -> Option<IpAddr> {
        self.firewall.routes("web").expect("routes").active()
    }

    /// (image, address) of every running container.
    pub fn serving(&self) -> Vec<(String, Option<IpAddr>)> {
        self.runtime
            .running()
            .into_iter()
            .map(|c| (c.image, c.address))
            .collect()
    }

    pub fn warnings(&self) -> Vec<String> {
        self.reporter
            .notes
            .borrow()
            .iter()
            .filter_map(|n| match n {
                Note::Warning(text) => Some(text.clone()),
                Note::Step(_) => None,
            })
            .collect()
    }
}

/// 172.17.0.N, as the fake runtime hands addresses out (lowest free first, from .2).
pub fn docker_address(n: u8) -> IpAddr {
    IpAddr::from([172, 17, 0, n])
}

/// The old and the new backend of the drain tests, as conntrack shows them.
pub const OLD: &str = "10.0.1.11:8080";
pub const NEW: &str = "10.0.1.12:8080";

/// The old backend's record: 10.0.1.11, serving port 80 on 8080.
pub fn old_record() -> BackendRecord {
    record_of(IpAddr::from([10, 0, 1, 11]))
}

/// A backend record at `address`, serving port 80 on 8080.
pub fn record_of(address: IpAddr) -> BackendRecord {
    BackendRecord {
        address,
        address6: None,
        ports: vec![PortPair::tcp(80, 8080)],
        since_ms: 0,
        container: None,
    }
}

/// `update` and then the drain, as the CLI runs them without `--no-wait`.
pub fn update_and_drain(
    env: &Env,
    component: &Component,
    tag: Option<&str>,
) -> (super::update::UpdateReport, super::drain::DrainReport) {
    let report = super::update::update(env, component, tag).expect("update");
    let drain = super::drain::finish_drain(env, component, None).expect("drain");
    (report, drain)
}
