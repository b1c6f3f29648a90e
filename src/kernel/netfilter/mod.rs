//! The firewall layer: where a component's new connections go, and the hole in Docker's
//! FORWARD policy. The use cases talk to the [`Firewall`] trait; [`script::NftFirewall`]
//! implements it with one atomic nftables transaction per change (an nft script to lay the
//! table out, a netlink [`batch`] on the hot path), and the use cases' unit tests use
//! [`fake::FakeFirewall`]. The table layout is documented in [`ruleset`], which builds it;
//! [`trace`] takes the same commands into an in-memory table and traces packets through it,
//! so the layout is unit-tested without root.

pub mod batch;
pub mod bindings;
pub mod docker_user;
mod exchange;
#[cfg(test)]
pub mod fake;
mod generations;
pub mod label;
mod listing;
pub mod localnet;
mod migrate;
mod raw;
pub mod ruleset;
pub mod script;
#[cfg(any(test, feature = "test-hooks"))]
pub mod trace;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Result;

use crate::ports::{PortKey, PortPair, Protocol};
use bindings::Binding;

/// The default name of our table (family `inet`); `--table` picks another, so that two
/// independent installations (or parallel tests) never share one.
pub const DEFAULT_TABLE: &str = "handoff";

/// Where one external port of a component currently sends new connections, read from the
/// kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub protocol: Protocol,
    pub external: u16,
    pub address: IpAddr,
    pub backend_port: u16,
}

impl Route {
    /// The port pair this route serves.
    pub fn pair(&self) -> PortPair {
        PortPair {
            protocol: self.protocol,
            external: self.external,
            backend: self.backend_port,
            address: None,
        }
    }

    pub fn key(&self) -> PortKey {
        self.pair().key()
    }
}

/// What the kernel says about a component's routing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentRoutes {
    /// Where its IPv4 clients go.
    pub routes: Vec<Route>,
    /// Where its IPv6 clients go (empty: they are refused).
    pub routes6: Vec<Route>,
    /// The canary's routes, when a share of new connections goes to a canary (empty: none).
    pub canary: Vec<Route>,
    /// Whether clients on the host reach it at 127.0.0.1 (its ports are in the loopback set).
    pub localhost: bool,
    /// The ports it holds on one address only (see [`bindings`]), sorted.
    pub bound: Vec<Binding>,
}

impl ComponentRoutes {
    /// The active IPv4 backend: the address every port points at. `None` when the component
    /// has none. Ports pointing at different addresses (a table edited by hand) yield the first.
    pub fn active(&self) -> Option<IpAddr> {
        self.routes.first().map(|r| r.address)
    }

    /// The active IPv6 backend.
    pub fn active6(&self) -> Option<IpAddr> {
        self.routes6.first().map(|r| r.address)
    }

    /// The active backend of `address`'s family.
    pub fn active_of_family(&self, address: IpAddr) -> Option<IpAddr> {
        match address {
            IpAddr::V4(_) => self.active(),
            IpAddr::V6(_) => self.active6(),
        }
    }

    /// The routes of `address`'s family.
    pub fn routes_of_family(&self, address: IpAddr) -> &[Route] {
        match address {
            IpAddr::V4(_) => &self.routes,
            IpAddr::V6(_) => &self.routes6,
        }
    }

    /// Whether new connections of either family go anywhere.
    pub fn is_routed(&self) -> bool {
        !self.routes.is_empty() || !self.routes6.is_empty()
    }

    /// The backends both families are routed to now.
    pub fn backends(&self) -> Backends {
        Backends {
            v4: self.active().and_then(|a| match a {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            }),
            v6: self.active6().and_then(|a| match a {
                IpAddr::V6(v6) => Some(v6),
                IpAddr::V4(_) => None,
            }),
        }
    }

    /// The external ports routed now (those of IPv4, or of IPv6 for a component that has no
    /// IPv4 backend).
    fn port_keys(&self) -> impl Iterator<Item = PortKey> + '_ {
        let routes = match self.routes.is_empty() {
            true => &self.routes6,
            false => &self.routes,
        };
        routes.iter().map(Route::key)
    }

    /// The canary backend, if a share of new connections goes to one.
    pub fn canary(&self) -> Option<IpAddr> {
        self.canary.first().map(|r| r.address)
    }
}

/// Where a component's new connections go, per family (`None`: that family is refused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backends {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl Backends {
    /// These backends with `address` in place of its family's.
    pub fn with(self, address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => Backends {
                v4: Some(v4),
                ..self
            },
            IpAddr::V6(v6) => Backends {
                v6: Some(v6),
                ..self
            },
        }
    }

    /// These backends with `address`, if any, in place of its family's.
    pub fn with_optional(self, address: Option<IpAddr>) -> Self {
        match address {
            Some(address) => self.with(address),
            None => self,
        }
    }

    /// The addresses, IPv4 first.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let v4 = self.v4.map(IpAddr::V4);
        let v6 = self.v6.map(IpAddr::V6);
        v4.into_iter().chain(v6).collect()
    }
}

/// A canary: `weight` % of the component's new connections go to `backend`, the rest to the
/// active one; per connection, or by client address when `sticky`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canary {
    /// An IPv4 address: a canary splits IPv4 clients only (IPv6 ones go to the active IPv6
    /// backend, see `ops::canary`).
    pub backend: IpAddr,
    /// 1..=99.
    pub weight: u8,
    pub sticky: bool,
}

/// The component links a component defines: reached at `gateway` (its Docker network's),
/// on `ports`, which are among the switch's external ports — their backend map entries are
/// switched with the others; only the way in differs (no public dispatch entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Links<'a> {
    pub gateway: Ipv4Addr,
    pub ports: &'a [u16],
}

/// One switch: every port of `component` to `backends` (each family to its own; a family
/// without one is refused), and the hairpin sets made exactly `hairpin_sources`.
#[derive(Debug, Clone, Copy)]
pub struct Switch<'a> {
    pub component: &'a str,
    /// What the caller read of the component's routes under the lock: when it already routes
    /// exactly these external ports, only the map's elements change.
    pub current: &'a ComponentRoutes,
    pub ports: &'a [PortPair],
    pub backends: Backends,
    /// The canary after the switch; `None` ends any canary.
    pub canary: Option<Canary>,
    /// Whether clients on the host reach the component at 127.0.0.1 after the switch.
    pub localhost: bool,
    /// The links the component defines, if any.
    pub links: Option<Links<'a>>,
    pub hairpin_sources: &'a [IpAddr],
}

impl Switch<'_> {
    /// The IPv4 routes the switch makes: each port to the IPv4 backend.
    pub fn routes(&self) -> Vec<Route> {
        routes_to(self.ports, self.backends.v4.map(IpAddr::V4))
    }

    /// The IPv6 routes the switch makes.
    pub fn routes6(&self) -> Vec<Route> {
        routes_to(self.ports, self.backends.v6.map(IpAddr::V6))
    }

    /// The canary's routes the switch makes: each port to the canary.
    pub fn canary_routes(&self) -> Vec<Route> {
        self.canary
            .map(|canary| {
                self.ports
                    .iter()
                    .map(|p| Route {
                        protocol: p.protocol,
                        external: p.external,
                        address: canary.backend,
                        backend_port: p.backend,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether only the main map's elements change: no canary before or after (a canary
    /// changes the component's rule, which the map-only fast path does not touch), the bind
    /// addresses as they are, and the
    /// loopback set keeps or lacks the component's ports as before, and IPv6 stays routed or
    /// refused as before (its ports are in `dispatch6` only while it has a backend).
    pub fn only_elements_change(&self) -> bool {
        self.keeps_ports()
            && self.current.bound == bindings::wanted(self.ports)
            && self.backends.v6.is_some() != self.current.routes6.is_empty()
            && self.canary.is_none()
            && self.current.canary.is_empty()
            && self.localhost == self.current.localhost
    }

    /// Whether the component is routed now on exactly the external ports of the switch.
    pub fn keeps_ports(&self) -> bool {
        self.current.is_routed()
            && self
                .current
                .port_keys()
                .eq(self.ports.iter().map(PortPair::key))
    }

    /// External ports routed now that the switch no longer routes (dropped from the config).
    pub fn stale_ports(&self) -> Vec<PortKey> {
        let mut stale: Vec<PortKey> = self
            .current
            .routes
            .iter()
            .chain(&self.current.routes6)
            .map(Route::key)
            .filter(|key| !self.ports.iter().any(|p| p.key() == *key))
            .collect();
        stale.sort();
        stale.dedup();
        stale
    }
}

/// Each of `ports` to `backend` (none without one).
fn routes_to(ports: &[PortPair], backend: Option<IpAddr>) -> Vec<Route> {
    let Some(address) = backend else {
        return Vec::new();
    };
    ports
        .iter()
        .map(|p| Route {
            protocol: p.protocol,
            external: p.external,
            address,
            backend_port: p.backend,
        })
        .collect()
}

pub trait Firewall {
    /// Make `change`, in one transaction: either all of it happens or none.
    fn switch(&self, change: &Switch) -> Result<()>;

    /// Take `component` out of the ruleset (new connections to its ports are no longer
    /// forwarded; existing ones carry on) and make the hairpin set exactly `hairpin_sources`.
    fn unroute(
        &self,
        component: &str,
        ports: &[PortPair],
        hairpin_sources: &[IpAddr],
    ) -> Result<()>;

    /// Let the container whose first process is `pid` reach its own
    /// component through the host: hairpin mode on the bridge port behind its `address` (see
    /// [`super::bridge_port`]). Nothing to do, and no error, when it is not on a bridge.
    fn allow_hairpin(&self, pid: u32, address: IpAddr) -> Result<()>;

    /// Make the hairpin sets exactly `sources` (after backends finished draining).
    fn set_hairpin_sources(&self, sources: &[IpAddr]) -> Result<()>;

    /// The kernel's routes for `component` (empty when it has none, or no table exists).
    fn routes(&self, component: &str) -> Result<ComponentRoutes>;

    /// The kernel's routes of every component, keyed by component name (one listing).
    fn all_routes(&self) -> Result<HashMap<String, ComponentRoutes>>;

    /// Make sure forwarded flows to backends can pass the host's FORWARD policy (Docker's
    /// DROP: see [`docker_user`]). Called where that can change — a first routing, `start`,
    /// `restore`, a switch that failed — not on every switch.
    fn open_forward_path(&self) -> Result<()>;

    /// Take everything of ours out of the kernel: the table (every component's routes) and
    /// the hole in Docker's FORWARD policy. Nothing else; done already is not an error.
    fn remove_all(&self) -> Result<()>;
}
