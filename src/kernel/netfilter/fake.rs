//! An in-memory [`Firewall`] for the use cases' unit tests (kube-proxy tests its proxier against
//! `knftables.NewFake` the same way): the routes and hairpin set as the kernel would hold them,
//! a log of every transaction, and a switch to make the next transaction fail.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;

use anyhow::Result;

use super::{ComponentRoutes, Firewall, Switch};
use crate::ports::PortPair;

#[derive(Debug, Default)]
struct Inner {
    routes: HashMap<String, ComponentRoutes>,
    hairpin: Vec<IpAddr>,
    forward_path_opened: usize,
    /// How often the routes were read (`routes` or `all_routes`).
    reads: usize,
    fail_next: bool,
    /// `switch web 172.17.0.3`, `switch db 172.17.0.2 links 172.17.0.1:5432`, `unroute web`,
    /// `hairpin ...`, in order.
    log: Vec<String>,
}

#[derive(Debug, Default)]
pub struct FakeFirewall {
    inner: RefCell<Inner>,
}

impl FakeFirewall {
    /// The next transaction is refused (and changes nothing).
    pub fn fail_next(&self) {
        self.inner.borrow_mut().fail_next = true;
    }

    pub fn hairpin(&self) -> Vec<IpAddr> {
        self.inner.borrow().hairpin.clone()
    }

    pub fn log(&self) -> Vec<String> {
        self.inner.borrow().log.clone()
    }

    /// How often the kernel's routes were read.
    pub fn reads(&self) -> usize {
        self.inner.borrow().reads
    }

    /// How often the hole in Docker's FORWARD policy was asserted.
    pub fn forward_path_opened(&self) -> usize {
        self.inner.borrow().forward_path_opened
    }

    /// The kernel no longer routes `component`'s canary.
    pub fn lose_canary(&self, component: &str) {
        if let Some(routes) = self.inner.borrow_mut().routes.get_mut(component) {
            routes.canary.clear();
        }
    }

    /// Our table was deleted (by hand, or a reboot).
    pub fn lose_table(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.routes.clear();
        inner.hairpin.clear();
    }

    fn transaction(&self, entry: String) -> Result<std::cell::RefMut<'_, Inner>> {
        let mut inner = self.inner.borrow_mut();
        if std::mem::take(&mut inner.fail_next) {
            anyhow::bail!("the kernel refused the transaction");
        }
        inner.log.push(entry);
        Ok(inner)
    }
}

impl Firewall for FakeFirewall {
    fn switch(&self, change: &Switch) -> Result<()> {
        let component = change.component;
        let backends: Vec<String> = change
            .backends
            .addresses()
            .iter()
            .map(ToString::to_string)
            .collect();
        let backends = backends.join(" ");
        let entry = match change.canary {
            Some(c) => format!(
                "switch {component} {backends} canary {} {}%{}",
                c.backend,
                c.weight,
                if c.sticky { " sticky" } else { "" }
            ),
            None => format!("switch {component} {backends}"),
        };
        let entry = match change.links {
            Some(links) => {
                let ports: Vec<String> = links.ports.iter().map(u16::to_string).collect();
                format!("{entry} links {}:{}", links.gateway, ports.join(","))
            }
            None => entry,
        };
        let mut inner = self.transaction(entry)?;
        let routing = ComponentRoutes {
            routes: change.routes(),
            routes6: change.routes6(),
            canary: change.canary_routes(),
            localhost: change.localhost,
            bound: super::bindings::wanted(change.ports),
        };
        inner.routes.insert(component.to_string(), routing);
        inner.hairpin = change.hairpin_sources.to_vec();
        Ok(())
    }

    fn unroute(
        &self,
        component: &str,
        _ports: &[PortPair],
        hairpin_sources: &[IpAddr],
    ) -> Result<()> {
        let mut inner = self.transaction(format!("unroute {component}"))?;
        inner.routes.remove(component);
        inner.hairpin = hairpin_sources.to_vec();
        Ok(())
    }

    fn allow_hairpin(&self, pid: u32, address: IpAddr) -> Result<()> {
        self.inner
            .borrow_mut()
            .log
            .push(format!("hairpin mode {pid} {address}"));
        Ok(())
    }

    fn set_hairpin_sources(&self, sources: &[IpAddr]) -> Result<()> {
        let list: Vec<String> = sources.iter().map(ToString::to_string).collect();
        let mut inner = self.transaction(format!("hairpin {}", list.join(",")))?;
        inner.hairpin = sources.to_vec();
        Ok(())
    }

    fn routes(&self, component: &str) -> Result<ComponentRoutes> {
        self.inner.borrow_mut().reads += 1;
        Ok(self
            .inner
            .borrow()
            .routes
            .get(component)
            .cloned()
            .unwrap_or_default())
    }

    fn all_routes(&self) -> Result<HashMap<String, ComponentRoutes>> {
        self.inner.borrow_mut().reads += 1;
        Ok(self.inner.borrow().routes.clone())
    }

    fn open_forward_path(&self) -> Result<()> {
        self.inner.borrow_mut().forward_path_opened += 1;
        Ok(())
    }

    fn remove_all(&self) -> Result<()> {
        let mut inner = self.transaction("remove all".to_string())?;
        inner.routes.clear();
        inner.hairpin.clear();
        Ok(())
    }
}
