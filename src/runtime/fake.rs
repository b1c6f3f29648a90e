//! An in-memory [`Runtime`] for the use cases' unit tests: containers with labels, images, an
//! address allocator that hands out the lowest free address (as Docker's does — the reason a
//! restarted container may come back at another address), and switches to make things go
//! wrong: a pull that fails, a container that vanishes or stops behind handoff's back.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::Result;

use super::{Container, ContainerSpec, Gateway, Runtime, LABEL_COMPONENT, LABEL_TABLE};

#[derive(Debug, Clone)]
struct Entry {
    container: Container,
    /// The last log lines, as `logs_tail` returns them.
    logs: String,
    /// The environment it was created with.
    env: Vec<String>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: Vec<Entry>,
    images: HashSet<String>,
    created: i64,
    pull_fails: bool,
    /// Containers get an IPv6 address too (a network with IPv6).
    ipv6: bool,
    /// Every call that changes something, in order (`stop ID`, `remove ID`, `exec ID`, ...).
    calls: Vec<String>,
}

#[derive(Debug, Default)]
pub struct FakeRuntime {
    inner: RefCell<Inner>,
}

impl FakeRuntime {
    /// A runtime that has these images locally.
    pub fn with_images(images: &[&str]) -> Self {
        let runtime = FakeRuntime::default();
        runtime.inner.borrow_mut().images = images.iter().map(|i| i.to_string()).collect();
        runtime
    }

    /// Give every container started from now on an IPv6 address beside its IPv4 one:
    /// fd00:dd::N for 172.17.0.N.
    pub fn with_ipv6(&self) {
        self.inner.borrow_mut().ipv6 = true;
    }

    /// The IPv6 address a container at `address` gets, if IPv6 is on.
    fn address6_for(inner: &Inner, address: IpAddr) -> Option<IpAddr> {
        let IpAddr::V4(v4) = address else {
            return None;
        };
        let last = u16::from(v4.octets()[3]);
        inner
            .ipv6
            .then(|| IpAddr::from([0xfd00, 0xdd, 0, 0, 0, 0, 0, last]))
    }

    /// Container `id`, if it runs.
    fn running_one(&self, id: &str) -> Option<Container> {
        self.inner
            .borrow()
            .entries
            .iter()
            .find(|e| e.container.id == id && e.container.running)
            .map(|e| e.container.clone())
    }

    pub fn fail_pulls(&self) {
        self.inner.borrow_mut().pull_fails = true;
    }

    /// Every container, running or not.
    pub fn all(&self) -> Vec<Container> {
        self.inner
            .borrow()
            .entries
            .iter()
            .map(|e| e.container.clone())
            .collect()
    }

    /// The environment container `id` was created with.
    pub fn env_of(&self, id: &str) -> Vec<String> {
        self.inner
            .borrow()
            .entries
            .iter()
            .find(|e| e.container.id == id)
            .map(|e| e.env.clone())
            .unwrap_or_default()
    }

    pub fn running(&self) -> Vec<Container> {
        self.all().into_iter().filter(|c| c.running).collect()
    }

    pub fn calls(&self) -> Vec<String> {
        self.inner.borrow().calls.clone()
    }

    /// The container disappears (removed by hand, `docker system prune`).
    pub fn vanish(&self, id: &str) {
        self.inner
            .borrow_mut()
            .entries
            .retain(|e| e.container.id != id);
    }

    /// The container stops on its own (a crash, a reboot): it loses its address.
    pub fn stop_behind_our_back(&self, id: &str) {
        let mut inner = self.inner.borrow_mut();
        if let Some(entry) = inner.entries.iter_mut().find(|e| e.container.id == id) {
            entry.container.running = false;
            entry.container.state = "exited".to_string();
            entry.container.address = None;
            entry.container.address6 = None;
        }
    }

    /// The lowest free address of 172.17.0.2.., as Docker's IPAM picks.
    fn free_address(inner: &Inner) -> IpAddr {
        let taken: BTreeSet<IpAddr> = inner
            .entries
            .iter()
            .filter_map(|e| e.container.address)
            .collect();
        (2..=254)
            .map(|host| IpAddr::from([172, 17, 0, host]))
            .find(|a| !taken.contains(a))
            .unwrap_or(IpAddr::from([172, 17, 0, 255]))
    }
}

impl Runtime for FakeRuntime {
    fn containers(
        &self,
        table: &str,
        component: Option<&str>,
        _network: &str,
    ) -> Result<Vec<Container>> {
        self.inner.borrow_mut().calls.push("list".to_string());
        let mut containers: Vec<Container> = self
            .all()
            .into_iter()
            .filter(|c| c.labels.get(LABEL_TABLE).map(String::as_str) == Some(table))
            .filter(|c| {
                component.is_none()
                    || c.labels.get(LABEL_COMPONENT).map(String::as_str) == component
            })
            .collect();
        containers.sort_by_key(|c| (c.generation(), c.created));
        Ok(containers)
    }

    fn image_present(&self, image: &str) -> Result<bool> {
        Ok(self.inner.borrow().images.contains(image))
    }

    fn pull(
        &self,
        repo: &str,
        tag: &str,
        _timeout: Duration,
        _progress: &mut dyn FnMut(String),
    ) -> Result<()> {
        let mut inner = self.inner.borrow_mut();
        inner.calls.push(format!("pull {repo}:{tag}"));
        if inner.pull_fails {
            anyhow::bail!("no registry answers");
        }
        inner.images.insert(format!("{repo}:{tag}"));
        Ok(())
    }

    fn create_and_start(&self, spec: &ContainerSpec) -> Result<String> {
        let mut inner = self.inner.borrow_mut();
        if !inner.images.contains(&spec.image) {
            anyhow::bail!("no such image {}", spec.image);
        }
        inner.created += 1;
        let id = format!("{:064x}", inner.created);
        let address = FakeRuntime::free_address(&inner);
        let address6 = FakeRuntime::address6_for(&inner, address);
        inner.calls.push(format!("create {}", spec.name));
        let container = Container {
            id: id.clone(),
            name: spec.name.clone(),
            image: spec.image.clone(),
            running: true,
            state: "running".to_string(),
            created: inner.created,
            address: Some(address),
            address6,
            labels: spec.labels.clone(),
        };
        inner.entries.push(Entry {
            container,
            logs: format!("{} starting\n", spec.name),
            env: spec.env.clone(),
        });
        Ok(id)
    }

    fn start(&self, id: &str) -> Result<()> {
        let mut inner = self.inner.borrow_mut();
        inner.calls.push(format!("start {id}"));
        let address = FakeRuntime::free_address(&inner);
        let address6 = FakeRuntime::address6_for(&inner, address);
        let entry = inner
            .entries
            .iter_mut()
            .find(|e| e.container.id == id)
            .ok_or_else(|| anyhow::anyhow!("no such container {id}"))?;
        if !entry.container.running {
            entry.container.running = true;
            entry.container.state = "running".to_string();
            entry.container.address = Some(address);
            entry.container.address6 = address6;
        }
        Ok(())
    }

    fn pid(&self, id: &str) -> Result<u32> {
        let inner = self.inner.borrow();
        let index = inner
            .entries
            .iter()
            .position(|e| e.container.id == id && e.container.running)
            .ok_or_else(|| anyhow::anyhow!("container {id} is not running"))?;
        Ok(1000 + index as u32)
    }

    fn gateway(&self, _network: &str) -> Result<Gateway> {
        Ok(Gateway::Named(Ipv4Addr::new(172, 17, 0, 1)))
    }

    fn address(&self, id: &str, network: &str) -> Result<IpAddr> {
        self.running_address(id, network)?
            .ok_or_else(|| anyhow::anyhow!("container {id} has no address"))
    }

    fn running_address(&self, id: &str, _network: &str) -> Result<Option<IpAddr>> {
        Ok(self.running_one(id).and_then(|c| c.address))
    }

    fn address6(&self, id: &str, _network: &str) -> Result<Option<IpAddr>> {
        Ok(self.running_one(id).and_then(|c| c.address6))
    }

    fn stop(&self, id: &str, grace: Duration) -> Result<()> {
        self.inner
            .borrow_mut()
            .calls
            .push(format!("stop {id} {}s", grace.as_secs()));
        self.stop_behind_our_back(id);
        Ok(())
    }

    fn remove(&self, id: &str) -> Result<()> {
        self.inner.borrow_mut().calls.push(format!("remove {id}"));
        self.vanish(id);
        Ok(())
    }

    fn logs_tail(&self, id: &str, _lines: usize) -> String {
        self.inner
            .borrow()
            .entries
            .iter()
            .find(|e| e.container.id == id)
            .map(|e| e.logs.clone())
            .unwrap_or_default()
    }

    fn exec(&self, id: &str, command: Vec<String>, _timeout: Duration) -> Result<i64> {
        self.inner
            .borrow_mut()
            .calls
            .push(format!("exec {id} {}", command.join(" ")));
        Ok(0)
    }
}
