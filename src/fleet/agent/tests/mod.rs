//! The agent's test bench: agents over one in-memory store ([`FakeStore`]) and each over a
//! fake host, operators writing the spec through the same functions `handoff fleet` uses
//! (signed with fixed test keys), and real admission, policy and accepted-record files in a
//! temporary directory. No etcd, no root, no Docker.

mod admission;
mod convergence;
mod policy;
mod rollouts;
mod stops;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{anyhow, Result};

use super::{Agent, Checked, Drained, HealthSettings, Host, Parts, Serving};
use crate::config::{self, Component};
use crate::fleet::accepted::Accepted;
use crate::fleet::admission::{Admission, Required};
use crate::fleet::policy::Policy;
use crate::fleet::records::{StatusRecord, StopAction};
use crate::fleet::registration::Liveness;
use crate::fleet::rollout::{Rollout, Snapshot};
use crate::fleet::signing::Signers;
use crate::fleet::spec::{self, Asked};
use crate::fleet::store::fake::FakeStore;
use crate::fleet::store::{Cond, Op, Store};
use crate::fleet::Keys;

/// The operators' key: listed in every signed host's signers file.
pub const OPERATOR_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACALQYo0TY6+T42sh63ICpECN/gcY2MD3OxuKxkjmFs7+AAAAJCjKOS1oyjk
tQAAAAtzc2gtZWQyNTUxOQAAACALQYo0TY6+T42sh63ICpECN/gcY2MD3OxuKxkjmFs7+A
AAAEDpb4O9+pxjXAWLWBy3jWQaAuTNPYJEE2a0DWdfDHBlEwtBijRNjr5PjayHrcgKkQI3
+BxjYwPc7G4rGSOYWzv4AAAAC29wc0BleGFtcGxlAQI=
-----END OPENSSH PRIVATE KEY-----
";
const OPERATOR_PUBLIC: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAtBijRNjr5PjayHrcgKkQI3+BxjYwPc7G4rGSOYWzv4";

/// A key no host lists.
pub const STRANGER_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACBUQhc2Tidd4Biy93YiJAuCyo5NtVHGJZSO7CtFeYPY1gAAAJgP2vggD9r4
IAAAAAtzc2gtZWQyNTUxOQAAACBUQhc2Tidd4Biy93YiJAuCyo5NtVHGJZSO7CtFeYPY1g
AAAEB4nm9fhYf7YVrO/Wk6sHqden2KbWyMXkONk+/04bw3EVRCFzZOJ13gGLL3diIkC4LK
jk21UcYllI7sK0V5g9jWAAAAEHN0cmFuZ2VyQGV4YW1wbGUBAgMEBQ==
-----END OPENSSH PRIVATE KEY-----
";

/// `web` (port 80) and `api` (port 8080), images under registry.example/.
pub const CONFIG: &str = r#"{"components": [
    {"name": "web", "repo": "registry.example/web", "tag": "v1",
     "ports": [{"external": 80, "container": 8080}]},
    {"name": "api", "repo": "registry.example/api", "tag": "v1",
     "ports": [{"external": 443, "container": 8080}]}]}"#;

/// A policy that allows CONFIG.
pub const POLICY: &str = r#"{"images": ["registry.example/*"], "ports": [80, 443]}"#;

/// A host's containers, as far as the agent can tell them apart.
#[derive(Default)]
pub struct FakeHost {
    /// component -> (tag, address) of what serves.
    pub serving: BTreeMap<String, (String, String)>,
    /// What the agent asked, in order: `start web v1`, `update web v2`, `withdraw web`,
    /// `kill web`, `drain web`.
    pub calls: Vec<String>,
    /// Tags whose containers never become ready.
    pub broken_tags: BTreeSet<String>,
    /// Drains running, and drains ended but not reaped yet.
    pub draining: Vec<String>,
    pub ended: Vec<(String, Result<Drained>)>,
    /// Components with backends left draining by an earlier run.
    pub left_draining: BTreeSet<String>,
    /// Components whose health checks fail.
    pub unhealthy: BTreeSet<String>,
    /// A store that goes down while an update runs (etcd lost during a turn).
    pub outage_during_update: Option<FakeStore>,
    next: u8,
}

impl FakeHost {
    fn address(&mut self) -> String {
        self.next += 1;
        format!("172.17.0.{}", self.next + 1)
    }

    /// Every drain running ends (well).
    pub fn finish_drains(&mut self) {
        for name in std::mem::take(&mut self.draining) {
            let drained = Drained {
                drained: 1,
                given_up: 0,
                retired: 1,
            };
            self.ended.push((name, Ok(drained)));
        }
    }

    pub fn tag(&self, component: &str) -> Option<&str> {
        self.serving.get(component).map(|(tag, _)| tag.as_str())
    }

    pub fn called(&self, call: &str) -> usize {
        self.calls.iter().filter(|c| *c == call).count()
    }
}

impl Host for FakeHost {
    fn converge(&mut self, components: &[Component]) -> Vec<(String, Result<Serving>)> {
        let mut results = Vec::new();
        for c in components {
            let result = match self.serving.get(&c.name) {
                Some((tag, address)) => Ok(Serving {
                    tag: tag.clone(),
                    address: address.clone(),
                    started: false,
                }),
                None if self.broken_tags.contains(&c.tag) => {
                    Err(anyhow!("{}:{} did not become ready", c.name, c.tag))
                }
                None => {
                    self.calls.push(format!("start {} {}", c.name, c.tag));
                    let address = self.address();
                    self.serving
                        .insert(c.name.clone(), (c.tag.clone(), address.clone()));
                    Ok(Serving {
                        tag: c.tag.clone(),
                        address,
                        started: true,
                    })
                }
            };
            results.push((c.name.clone(), result));
        }
        results
    }

    fn update(&mut self, component: &Component) -> Result<Option<String>> {
        self.calls
            .push(format!("update {} {}", component.name, component.tag));
        if let Some(store) = self.outage_during_update.take() {
            store.set_down(true);
        }
        if self.broken_tags.contains(&component.tag) {
            return Err(anyhow!("{} did not become ready", component.tag));
        }
        let address = self.address();
        self.serving.insert(
            component.name.clone(),
            (component.tag.clone(), address.clone()),
        );
        Ok(Some(address))
    }

    fn withdraw(&mut self, component: &Component) -> Result<()> {
        self.calls.push(format!("withdraw {}", component.name));
        self.serving.remove(&component.name);
        Ok(())
    }

    fn kill(&mut self, component: &Component) -> Result<()> {
        self.calls.push(format!("kill {}", component.name));
        self.serving.remove(&component.name);
        Ok(())
    }

    fn health_round(
        &mut self,
        checked: &[(Component, u32)],
        failures_allowed: u32,
    ) -> Result<Vec<Result<Checked>>> {
        let mut rounds = Vec::new();
        for (component, failures) in checked {
            if !self.unhealthy.contains(&component.name) {
                rounds.push(Ok(Checked {
                    failures: 0,
                    replaced: None,
                }));
                continue;
            }
            let failures = failures + 1;
            let replaced = (failures >= failures_allowed).then(|| {
                self.unhealthy.remove(&component.name);
                self.update(component)
            });
            let failures = if replaced.is_some() { 0 } else { failures };
            rounds.push(Ok(Checked { failures, replaced }));
        }
        Ok(rounds)
    }

    fn start_drain(&mut self, component: &Component) -> Result<()> {
        self.calls.push(format!("drain {}", component.name));
        self.left_draining.remove(&component.name);
        self.draining.push(component.name.clone());
        Ok(())
    }

    fn reap_drains(&mut self) -> Vec<(String, Result<Drained>)> {
        std::mem::take(&mut self.ended)
    }

    fn has_draining(&mut self, component: &str) -> Result<bool> {
        Ok(self.left_draining.contains(component))
    }
}

/// What a host trusts.
#[derive(Clone, Copy)]
pub enum Trust {
    /// Specs signed by the operators' key.
    Signed,
    /// POLICY, unsigned specs.
    Policy(&'static str),
    /// Anything (`--insecure-accept-any-spec`).
    Anything,
}

pub type TestAgent = Agent<FakeStore, FakeHost>;

/// One fleet: its store, its operators' keys, and the directory where hosts keep state.
pub struct Bench {
    pub store: FakeStore,
    pub keys: Keys,
    dir: tempfile::TempDir,
    pub operator: PathBuf,
    pub stranger: PathBuf,
    /// Each host's log lines.
    pub logs: BTreeMap<String, Rc<RefCell<Vec<String>>>>,
    /// Each host's lease.
    pub leases: BTreeMap<String, i64>,
}

fn private_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

impl Bench {
    pub fn new() -> Bench {
        let dir = tempfile::tempdir().expect("tempdir");
        let operator = private_file(dir.path(), "operator", OPERATOR_KEY);
        let stranger = private_file(dir.path(), "stranger", STRANGER_KEY);
        Bench {
            store: FakeStore::new(),
            keys: Keys::new("prod").expect("keys"),
            dir,
            operator,
            stranger,
            logs: BTreeMap::new(),
            leases: BTreeMap::new(),
        }
    }

    /// The agent of `host`, registered (its lease holds `hosts/{host}`), trusting `trust`.
    /// A host started again keeps its state directory, so what it accepted before.
    pub fn agent(&mut self, host: &str, trust: Trust) -> TestAgent {
        let lease = self.register(host);
        let required = |_: ()| Required {
            signers: Signers::parse(
                &format!("ops@example {OPERATOR_PUBLIC}\n"),
                Path::new("/etc/handoff/fleet-signers"),
            )
            .expect("signers"),
            file: PathBuf::from("/etc/handoff/fleet-signers"),
        };
        let policy = |text: &str| {
            Policy::parse(text, Path::new("/etc/handoff/policy.json")).expect("policy")
        };
        let (required, policy) = match trust {
            Trust::Signed => (Some(required(())), None),
            Trust::Policy(text) => (None, Some(policy(text))),
            Trust::Anything => (None, None),
        };
        let state = self.dir.path().join(format!("state-{host}"));
        let accepted = Accepted::open(&state, self.keys.fleet()).expect("accepted");
        let log = self.logs.entry(host.to_string()).or_default().clone();
        Agent::new(Parts {
            store: self.store.client(),
            host: FakeHost::default(),
            keys: self.keys.clone(),
            name: host.to_string(),
            lease: Box::new(move || lease),
            admission: Admission::new(self.keys.fleet(), required, accepted),
            policy,
            say: Box::new(move |line| log.borrow_mut().push(line)),
            liveness: Liveness::default(),
            health: HealthSettings {
                interval: Duration::ZERO,
                failures_allowed: 2,
            },
        })
    }

    /// `hosts/{host}` under a new lease, as the registration writes it.
    pub fn register(&mut self, host: &str) -> i64 {
        let lease = self.store.grant();
        let record = format!(r#"{{"name": "{host}", "since_ms": 1, "pid": 1}}"#);
        let mut store = self.store.client();
        store
            .txn(
                vec![],
                vec![Op::put_leased(self.keys.host(host), record, lease)],
            )
            .expect("register");
        self.leases.insert(host.to_string(), lease);
        lease
    }

    pub fn log(&self, host: &str) -> String {
        self.logs
            .get(host)
            .map(|l| l.borrow().join("\n"))
            .unwrap_or_default()
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot::read(&mut self.store.client(), &self.keys).expect("read")
    }

    fn key(&self, signed: bool) -> Option<&Path> {
        signed.then_some(self.operator.as_path())
    }

    /// `fleet setconfig` of `text`, signed or not.
    pub fn set_config(&self, text: &str, signed: bool) {
        let snapshot = self.snapshot();
        spec::store_config(
            &mut self.store.client(),
            &self.keys,
            &snapshot,
            text.to_string(),
            self.key(signed),
        )
        .expect("setconfig")
        .expect("stored");
    }

    /// `fleet update COMPONENT --tag TAG --max-parallel N --no-wait`.
    pub fn update(&self, component: &str, tag: &str, max_parallel: u32, signed: bool) -> Rollout {
        self.try_update(component, tag, max_parallel, signed)
            .expect("the rollout began")
    }

    pub fn try_update(
        &self,
        component: &str,
        tag: &str,
        max_parallel: u32,
        signed: bool,
    ) -> std::result::Result<Rollout, String> {
        let snapshot = self.snapshot();
        let config = config::parse(&snapshot.config.as_ref().unwrap().envelope().unwrap().body)
            .expect("config");
        let config_tag = &config.component(component).expect("component").tag;
        spec::begin(
            &mut self.store.client(),
            &self.keys,
            &snapshot,
            component,
            tag,
            max_parallel,
            config_tag,
            self.key(signed),
        )
        .expect("begin")
    }

    /// `fleet stop|kill|start COMPONENT --no-wait`.
    pub fn ask(
        &self,
        component: &str,
        action: StopAction,
        signed: bool,
    ) -> std::result::Result<Asked, String> {
        let snapshot = self.snapshot();
        spec::ask(
            &mut self.store.client(),
            &self.keys,
            &snapshot,
            component,
            action,
            self.key(signed),
        )
        .expect("ask")
    }

    pub fn status(&self, host: &str, component: &str) -> Option<StatusRecord> {
        self.snapshot().status(host, component).cloned()
    }

    /// `host`'s state of `component`, and its tag.
    pub fn state(&self, host: &str, component: &str) -> (String, Option<String>) {
        let status = self.status(host, component).expect("a status");
        (status.state, status.tag)
    }

    pub fn refusals(&self, host: &str) -> BTreeMap<String, String> {
        self.snapshot()
            .refusals
            .get(host)
            .map(|r| r.refused.clone())
            .unwrap_or_default()
    }

    /// Write `value` at `key` with no conditions: someone with etcd's root.
    pub fn forge(&self, key: &str, value: impl Into<Vec<u8>>) {
        self.store.put(key, value);
    }
}

/// Rounds until the agent has nothing left to do this moment (a round that took a turn or
/// settled something asks for another), at most ten.
pub fn settle(agent: &mut TestAgent) {
    for _ in 0..10 {
        if agent.round().expect("round").is_some() {
            return;
        }
    }
    panic!("the agent did not settle in ten rounds");
}

/// Whether `host`'s lease still holds its registration (the agent could write).
pub fn registered(bench: &Bench, host: &str) -> bool {
    let lease = bench.leases[host];
    bench
        .store
        .client()
        .txn(vec![Cond::leased(bench.keys.host(host), lease)], vec![])
        .expect("txn")
        .is_some()
}
