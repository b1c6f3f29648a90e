//! An in-memory [`Probe`] for the use cases' unit tests: every address is ready and healthy
//! unless a test says otherwise; termination signals are recorded.

use std::cell::RefCell;
use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;

use super::Probe;
use crate::config::Component;
use crate::error::{ExitCode, Failure};

#[derive(Debug, Default)]
pub struct FakeProbe {
    unready: RefCell<HashSet<IpAddr>>,
    unhealthy: RefCell<HashSet<IpAddr>>,
    /// (address, port, path) of every http termination signal.
    pub posts: RefCell<Vec<(IpAddr, u16, String)>>,
}

impl FakeProbe {
    pub fn never_ready(&self, address: IpAddr) {
        self.unready.borrow_mut().insert(address);
    }

    pub fn set_healthy(&self, address: IpAddr, healthy: bool) {
        let mut unhealthy = self.unhealthy.borrow_mut();
        if healthy {
            unhealthy.remove(&address);
        } else {
            unhealthy.insert(address);
        }
    }
}

impl Probe for FakeProbe {
    fn wait_ready(&self, component: &Component, address: IpAddr) -> Result<()> {
        if self.unready.borrow().contains(&address) {
            return Err(Failure::new(
                ExitCode::NotReady,
                format!("{} is not ready at {address}", component.name),
            )
            .into());
        }
        Ok(())
    }

    fn healthy(&self, _component: &Component, address: IpAddr) -> Result<()> {
        if self.unhealthy.borrow().contains(&address) {
            anyhow::bail!("http check on port 8080: answered 503");
        }
        Ok(())
    }

    fn post(&self, address: IpAddr, port: u16, path: &str, _timeout: Duration) -> Result<()> {
        self.posts
            .borrow_mut()
            .push((address, port, path.to_string()));
        Ok(())
    }
}
