//! The firewall layer: where a component's new connections go, and the hole in Docker's
//! FORWARD policy. Commands talk to the [`Firewall`] trait; [`nft::NftFirewall`] implements it
//! with one atomic nftables transaction per change. The table layout lives in [`ruleset`].

pub mod docker_user;
pub mod netlink;
pub mod nft;
pub mod ruleset;

use std::collections::HashMap;
use std::net::Ipv4Addr;

use anyhow::Result;

use crate::config::PortPair;

/// Where one external port of a component currently sends new connections, read from the
/// kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub external: u16,
    pub address: Ipv4Addr,
    pub backend_port: u16,
}

/// What the kernel says about a component's routing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentRoutes {
    pub routes: Vec<Route>,
}

impl ComponentRoutes {
    /// The active backend: the address every port points at. `None` when the component is not
    /// routed. Ports pointing at different addresses (a table edited by hand) yield the first.
    pub fn active(&self) -> Option<Ipv4Addr> {
        self.routes.first().map(|r| r.address)
    }
}

pub trait Firewall {
    /// Point every port of `component` at `backend` and make the hairpin set exactly
    /// `hairpin_sources`, in one transaction: either all of it happens or none.
    ///
    /// `current` is what the caller read of the component's routes under the lock: when it
    /// already routes exactly these external ports, only the map's elements change.
    fn switch(
        &self,
        component: &str,
        current: &ComponentRoutes,
        ports: &[PortPair],
        backend: Ipv4Addr,
        hairpin_sources: &[Ipv4Addr],
    ) -> Result<()>;

    /// Take `component` out of the ruleset (new connections to its ports are no longer
    /// forwarded; existing ones carry on) and make the hairpin set exactly `hairpin_sources`.
    fn unroute(
        &self,
        component: &str,
        ports: &[PortPair],
        hairpin_sources: &[Ipv4Addr],
    ) -> Result<()>;

    /// Make the hairpin set exactly `sources` (after backends finished draining).
    fn set_hairpin_sources(&self, sources: &[Ipv4Addr]) -> Result<()>;

    /// The kernel's routes for `component` (empty when it has none, or no table exists).
    fn routes(&self, component: &str) -> Result<ComponentRoutes>;

    /// The kernel's routes of every component, keyed by backend map name (one listing).
    fn all_routes(&self) -> Result<HashMap<String, ComponentRoutes>>;
}
