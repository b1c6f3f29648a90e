//! One lock hold on one component, and what it reads once: the state file, the kernel's routes
//! of the component, the component's containers. Every step under the lock works on these; the
//! state is written back only when a step changed it.

use anyhow::Result;

use super::Env;
use crate::config::Component;
use crate::kernel::netfilter::ComponentRoutes;
use crate::runtime::Container;
use crate::state::{LockGuard, State};

pub struct Session {
    _lock: LockGuard,
    pub state: State,
    /// The state as the file holds it now.
    saved: State,
    /// The component's routes in the kernel.
    pub routes: ComponentRoutes,
    /// The component's containers (none for an address component).
    pub containers: Vec<Container>,
}

impl Session {
    /// Take the lock (saying `what` to whoever waits for it) and read what `component` needs.
    pub fn open(env: &Env, component: &Component, what: &str) -> Result<Session> {
        let lock = env.lock(&format!("{what} {}", component.name))?;
        let state = env.settings.state.load()?;
        let routes = env.firewall.routes(&component.name)?;
        let containers = match component.repo {
            Some(_) => env.runtime()?.containers(
                &env.settings.table,
                Some(&component.name),
                &component.network,
            )?,
            None => Vec::new(),
        };
        Ok(Session {
            _lock: lock,
            saved: state.clone(),
            state,
            routes,
            containers,
        })
    }

    /// Write the state back if a step changed it (atomically: see `state.rs`).
    pub fn save(&mut self, env: &Env) -> Result<()> {
        if self.state != self.saved {
            env.settings.state.save(&self.state)?;
            self.saved = self.state.clone();
        }
        Ok(())
    }

    /// The kernel refused a step whose state was already written: put the file back to `to`.
    pub fn revert(&mut self, env: &Env, to: State) -> Result<()> {
        env.settings.state.save(&to)?;
        self.saved = to.clone();
        self.state = to;
        Ok(())
    }

    /// The running container of this component at `address`, if any.
    pub fn container_at(&self, address: std::net::IpAddr) -> Option<&Container> {
        self.containers
            .iter()
            .find(|c| c.running && (c.address == Some(address) || c.address6 == Some(address)))
    }
}
