//! handoff's nftables layout, built as data (a list of nft commands) so it can be unit-tested
//! and applied in one atomic transaction (`nft -f -` applies a whole script as one).
//!
//! Commands are nft's text syntax, not its JSON: the `nft` 1.0.6 of Debian 12 cannot create a
//! map with concatenated data (`ipv4_addr . inet_service`) from JSON (it rejects or crashes),
//! while the text form works on every version. Every value placed in a command is typed
//! (addresses, ports) or an encoded component name, so nothing can inject syntax.
//!
//! One table of our own; nothing outside it is ever touched:
//!
//! ```text
//! table inet handoff {
//!     # protocol . external port -> the chain of the component that owns it: one lookup
//!     # dispatches every component, however many there are (53/udp is not 53/tcp)
//!     map dispatch { type inet_proto . inet_service : verdict }
//!     # the same for IPv6 clients, holding only the ports of components with an IPv6 backend
//!     map dispatch6 { type inet_proto . inet_service : verdict }
//!     # ports bound to one address (`ports[].address`, see bindings.rs): address . protocol
//!     # . port -> chain, looked up first; a bound port is never in dispatch or dispatch6
//!     map dispatch_bound { type ipv4_addr . inet_proto . inet_service : verdict }
//!     map dispatch6_bound { type ipv6_addr . inet_proto . inet_service : verdict }
//!
//!     # per component and family: protocol . external port -> backend address . port
//!     map backend_web { type inet_proto . inet_service : ipv4_addr . inet_service }
//!     map backend6_web { type inet_proto . inet_service : ipv6_addr . inet_service }
//!
//!     # backend addresses whose own connections to a component are masqueraded (hairpin:
//!     # without it the reply would go straight back over the bridge, bypassing the host)
//!     set hairpin_sources { type ipv4_addr }
//!     set hairpin_sources6 { type ipv6_addr }
//!
//!     # component links: reached only at a Docker network's gateway, from that network
//!     # (`fib daddr . iif`: the address must be local *on the interface the packet came
//!     # in by*, so no other host reaches them); link port -> the defining component's chain
//!     set link_gateways { type ipv4_addr }
//!     map links { type inet_service : verdict }
//!
//!     # traffic from other hosts to the host's own addresses; over IPv6, the ports of a
//!     # component without an IPv6 backend are refused (a TCP reset, ICMPv6 port unreachable
//!     # for UDP) instead of reaching whatever the host itself runs on [::]:PORT
//!     chain prerouting { type nat hook prerouting priority dstnat - 10; policy accept;
//!         meta nfproto ipv4 ip daddr @link_gateways fib daddr . iif type local
//!             meta l4proto tcp tcp dport vmap @links
//!         meta nfproto ipv4 fib daddr type local meta l4proto { tcp, udp }
//!             ip daddr . meta l4proto . th dport vmap @dispatch_bound
//!         meta nfproto ipv6 ... ip6 daddr . meta l4proto . th dport vmap @dispatch6_bound
//!         meta nfproto ipv4 fib daddr type local meta l4proto { tcp, udp }
//!             meta l4proto . th dport vmap @dispatch
//!         meta nfproto ipv6 fib daddr type local meta l4proto { tcp, udp }
//!             meta l4proto . th dport vmap @dispatch6
//!         meta nfproto ipv6 fib daddr type local meta l4proto tcp
//!             meta l4proto . th dport @dispatch reject with tcp reset
//!         meta nfproto ipv6 fib daddr type local meta l4proto udp
//!             meta l4proto . th dport @dispatch reject }
//!     # clients on the host itself; 127.0.0.0/8 only for the ports of components that say
//!     # `localhostClients` (their replies need route_localnet and a masquerade); ::1 is left
//!     # alone (IPv6 has no route_localnet: ::1 cannot be DNAT'd off the host)
//!     set localhost_ports { type inet_proto . inet_service }
//!     chain output { type nat hook output priority -110; policy accept;
//!         meta nfproto ipv4 ip daddr != 127.0.0.0/8 fib daddr type local
//!             meta l4proto { tcp, udp } meta l4proto . th dport vmap @dispatch
//!         meta nfproto ipv4 ip daddr 127.0.0.0/8 meta l4proto { tcp, udp }
//!             meta l4proto . th dport @localhost_ports meta l4proto . th dport vmap @dispatch
//!         meta nfproto ipv6 ip6 daddr != ::1 ... the IPv6 rules of prerouting }
//!     # kube-proxy's guard for route_localnet (CVE-2020-8558): a packet to 127.0.0.0/8 that
//!     # came in from outside is dropped unless it was DNAT'd or belongs to a known flow
//!     # (harmless while route_localnet is off: the kernel drops such packets before input;
//!     # handoff turns it on only on the backends' interfaces, see localnet.rs)
//!     chain localnet_guard { type filter hook input priority filter; policy accept;
//!         iifname != "lo" ip daddr 127.0.0.0/8 ct status & dnat == 0
//!         ct state != { established, related } drop }
//!     # the rules that carry the component's traffic: one map lookup per family; the label
//!     # lets Docker's FORWARD chain accept exactly our flows (see docker_user.rs). Its bit is
//!     # the table's own (127 for the default table; see label.rs), written 127 here. A family
//!     # whose map is empty falls through to the refusals, never to the host's own listeners.
//!     chain component_web {
//!         meta nfproto ipv4 ct label set 127 dnat ip to meta l4proto . th dport map @backend_web
//!         meta nfproto ipv6 ct label set 127
//!             dnat ip6 to meta l4proto . th dport map @backend6_web
//!         meta l4proto tcp reject with tcp reset
//!         reject }
//!
//!     # during a canary only: its map, and a rule ahead of the main one that sends PCT % of
//!     # new IPv4 connections there, decided by the kernel per connection (a random number)
//!     # or, sticky, by client address (a hash with a fixed seed: the same side every time)
//!     map canary_web { type inet_proto . inet_service : ipv4_addr . inet_service }
//!     chain component_web {
//!         meta nfproto ipv4 ct label set 127 numgen random mod 100 < PCT
//!             dnat ip to meta l4proto . th dport map @canary_web
//!         ... the rules above }
//!     # a backend calling a component through the host (hairpin): only our own flows (their
//!     # label), so that Docker's published ports keep their clients' addresses
//!     chain postrouting { type nat hook postrouting priority srcnat - 10; policy accept;
//!         ct label 127 ct status dnat ip saddr @hairpin_sources masquerade
//!         ct label 127 ct status dnat ip6 saddr @hairpin_sources6 masquerade
//!         # a client on the host at 127.0.0.1: its source cannot leave the host as it is
//!         ct label 127 ct status dnat ip saddr 127.0.0.0/8 masquerade
//!         # a container calling a link: the backend is on its own bridge and would answer
//!         # it directly, from an address it never called
//!         ct label 127 ct status dnat ct original ip daddr @link_gateways masquerade }
//! }
//! ```
//!
//! Why IPv6 has a dispatch map of its own rather than sharing `dispatch`: a component chain
//! laid out by a handoff from before IPv6 has no IPv6 rule and no refusal, so an IPv6 packet
//! sent into it would fall through to the host. Only chains laid out with an IPv6 backend are
//! in `dispatch6`; every other component's IPv6 clients meet the refusals of the base chain.
//!
//! NAT chains only see the first packet of a connection; conntrack carries every later packet
//! with the binding it recorded. That is why replacing `backend_web`'s elements moves *new*
//! connections while every existing one stays on the backend it started with.
//!
//! A `dnat` ends the chain for its packet, so a connection the canary rule takes never reaches
//! the main rule; conntrack then keeps it on the canary like any other flow.
//!
//! A change of the layout (a first routing, changed ports, a canary, IPv6 backends coming or
//! going) flushes the component's chain and lays it out again here, in the same transaction
//! that re-asserts the base chains (add is idempotent for tables, chains and maps; rules are
//! flushed and added again so a rerun never duplicates them). A plain switch does not come
//! here: it adds a new *generation* of the component's maps and rules at the head of its
//! chain (`backend_web_g7`, ...; see `generations.rs`), so that it deletes nothing and never
//! waits for an RCU grace period. Changing an element in place is not possible: the kernel
//! refuses an `add` whose key exists with other data.
//!
//! A table from before UDP (its ports keyed without their protocol) cannot be changed into
//! this layout object by object: `migrate.rs` rebuilds it in the transaction of its next
//! change.

use std::net::IpAddr;

use super::bindings::{self, Binding, DISPATCH6_BOUND_MAP, DISPATCH_BOUND_MAP};
use super::label::flow_label;
use super::{Canary, Switch};
use crate::identity::{self, Identity};
use crate::ports::{PortKey, PortPair};

pub use identity::{component_of_backend6_map, component_of_canary_map, component_of_map};

mod base;
mod entries;
pub use base::base;
use entries::{
    add_verdicts, dispatch_keys, elements, fill, link_keys, localhost_ports, remove_dispatch,
    remove_verdicts, tcp,
};

pub use super::DEFAULT_TABLE;
pub const DISPATCH_MAP: &str = "dispatch";
/// IPv6 clients' dispatch: the ports of components with an IPv6 backend.
pub const DISPATCH6_MAP: &str = "dispatch6";
/// External ports that clients on the host reach at 127.0.0.1 too (`localhostClients`).
pub const LOCALHOST_SET: &str = "localhost_ports";
pub const HAIRPIN_SET: &str = "hairpin_sources";
pub const HAIRPIN6_SET: &str = "hairpin_sources6";
/// Link port -> the defining component's chain (see the layout above).
pub const LINKS_MAP: &str = "links";
pub const LINK_GATEWAYS_SET: &str = "link_gateways";
/// Priority of our NAT chains: just before the usual `dstnat` (-100) so that our DNAT is the
/// one that decides, ahead of Docker's or anyone else's.
pub const DSTNAT_PRIORITY: i32 = -110;
/// Just before the usual `srcnat` (100).
pub const SRCNAT_PRIORITY: i32 = 90;

pub fn backend_map(component: &str) -> String {
    identity::backend_map(component)
}

pub fn backend6_map(component: &str) -> String {
    identity::backend6_map(component)
}

pub fn canary_map(component: &str) -> String {
    identity::canary_map(component)
}

/// The guard that route_localnet needs (see the layout above).
pub const LOCALNET_GUARD: &str = "localnet_guard";

/// The seed of the sticky canary's hash: fixed, so a client lands on the same side across
/// connections, reruns and reboots.
pub const STICKY_SEED: u32 = 0x6861_6e64;

/// The canary rule's match: true for `weight` % of new connections.
fn split(canary: &Canary) -> String {
    let weight = canary.weight;
    if canary.sticky {
        format!("jhash ip saddr mod 100 seed {STICKY_SEED:#x} < {weight}")
    } else {
        format!("numgen random mod 100 < {weight}")
    }
}

pub fn component_chain(component: &str) -> String {
    Identity::new("", component).chain()
}

/// The dispatch rule's matches, shared by prerouting and output.
const DISPATCH: &str =
    "fib daddr type local meta l4proto { tcp, udp } meta l4proto . th dport vmap @dispatch";
/// The same for IPv6 clients.
const DISPATCH6: &str =
    "fib daddr type local meta l4proto { tcp, udp } meta l4proto . th dport vmap @dispatch6";
/// The ports of a component without an IPv6 backend, over IPv6: refused. Without these rules
/// the traffic would *fail open* — pass our chains untouched and reach whatever the host
/// itself listens with on [::]:PORT. A reset (TCP) or port-unreachable (UDP) rather than a
/// drop, so a client tries IPv4 at once.
const REFUSE_IPV6: [&str; 2] = [
    "fib daddr type local meta l4proto tcp meta l4proto . th dport @dispatch \
     reject with tcp reset",
    "fib daddr type local meta l4proto udp meta l4proto . th dport @dispatch reject",
];
/// The key type of the port maps and sets: protocol and port (53/udp is not 53/tcp).
const PORT_KEY: &str = "inet_proto . inet_service";
/// A backend map's type: a port on the host -> backend address and port.
const BACKEND_MAP_TYPE: &str = "inet_proto . inet_service : ipv4_addr . inet_service";
const BACKEND6_MAP_TYPE: &str = "inet_proto . inet_service : ipv6_addr . inet_service";
/// The end of every component chain: a family without a backend is refused, as the base
/// chains refuse IPv6 (a packet of a family whose map is empty falls through to here).
const REFUSE: [&str; 2] = ["meta l4proto tcp reject with tcp reset", "reject"];

/// Make `change`: point every external port of its component at its backend (flush the
/// component's map and refill it), make sure its chain and dispatch entries exist (public
/// ports in `dispatch`, the ports of its links in `links`, each out of the other), and take
/// out the entries of its stale ports (routed before, no longer in the config: left there,
/// they would send their traffic into a map that no longer has them).
pub fn route(table: &str, change: &Switch) -> Vec<String> {
    let Switch {
        component,
        ports,
        backends,
        canary,
        localhost,
        links,
        ..
    } = *change;
    let stale = change.stale_ports();
    let t = format!("inet {table}");
    let label = flow_label(table);
    let map = backend_map(component);
    let map6 = backend6_map(component);
    let canaries = canary_map(component);
    let chain = component_chain(component);
    let link_ports: Vec<PortKey> = links
        .map(|l| l.ports.iter().map(|&port| tcp(port)).collect())
        .unwrap_or_default();
    let public: Vec<PortKey> = ports
        .iter()
        .map(PortPair::key)
        .filter(|key| !link_ports.contains(key))
        .collect();
    // Bound ports (see bindings.rs) are dispatched by address, never by port alone.
    let bound = bindings::wanted(ports);
    let (bound_keys, unbound): (Vec<PortKey>, Vec<PortKey>) = public
        .iter()
        .partition(|key| bound.iter().any(|b| b.key == **key));
    let mut commands = vec![
        format!("add map {t} {map} {{ type {BACKEND_MAP_TYPE} ; }}"),
        format!("add map {t} {map6} {{ type {BACKEND6_MAP_TYPE} ; }}"),
        format!("add map {t} {canaries} {{ type {BACKEND_MAP_TYPE} ; }}"),
        format!("add chain {t} {chain}"),
        format!("flush chain {t} {chain}"),
        format!("flush map {t} {canaries}"),
    ];
    match canary {
        Some(ref canary) => {
            commands.push(format!(
                "add element {t} {canaries} {{ {} }}",
                elements(ports, canary.backend)
            ));
            commands.push(format!(
                "add rule {t} {chain} meta nfproto ipv4 ct label set {label} {} dnat ip \
                 to meta l4proto . th dport map @{canaries}",
                split(canary)
            ));
        }
        // No canary: its map goes (nothing refers to it once the chain is flushed).
        None => commands.push(format!("delete map {t} {canaries}")),
    }
    commands.extend([
        format!(
            "add rule {t} {chain} meta nfproto ipv4 ct label set {label} dnat ip to \
             meta l4proto . th dport map @{map}"
        ),
        format!(
            "add rule {t} {chain} meta nfproto ipv6 ct label set {label} dnat ip6 to \
             meta l4proto . th dport map @{map6}"
        ),
        format!("add rule {t} {chain} {}", REFUSE[0]),
        format!("add rule {t} {chain} {}", REFUSE[1]),
        format!("flush map {t} {map}"),
        format!("flush map {t} {map6}"),
    ]);
    commands.extend(fill(&t, &map, ports, backends.v4.map(IpAddr::V4)));
    commands.extend(fill(&t, &map6, ports, backends.v6.map(IpAddr::V6)));
    commands.extend(add_verdicts(
        &t,
        DISPATCH_MAP,
        &chain,
        &dispatch_keys(&unbound),
    ));
    match backends.v6 {
        Some(_) => commands.extend(add_verdicts(
            &t,
            DISPATCH6_MAP,
            &chain,
            &dispatch_keys(&unbound),
        )),
        None => commands.extend(remove_verdicts(
            &t,
            DISPATCH6_MAP,
            &chain,
            &dispatch_keys(&unbound),
        )),
    }
    for dispatch in [DISPATCH_MAP, DISPATCH6_MAP] {
        commands.extend(remove_verdicts(
            &t,
            dispatch,
            &chain,
            &dispatch_keys(&bound_keys),
        ));
    }
    commands.extend(rebind(&t, &chain, &change.current.bound, &bound));
    commands.extend(remove_verdicts(&t, LINKS_MAP, &chain, &link_keys(&public)));
    commands.extend(localhost_ports(&t, &public, localhost));
    if let Some(links) = links {
        commands.push(format!(
            "add element {t} {LINK_GATEWAYS_SET} {{ {} }}",
            links.gateway
        ));
        commands.extend(add_verdicts(&t, LINKS_MAP, &chain, &link_keys(&link_ports)));
        for dispatch in [DISPATCH_MAP, DISPATCH6_MAP] {
            commands.extend(remove_verdicts(
                &t,
                dispatch,
                &chain,
                &dispatch_keys(&link_ports),
            ));
        }
        commands.extend(localhost_ports(&t, &link_ports, false));
    }
    commands.extend(remove_dispatch(&t, &chain, &stale));
    commands
}

/// Take `component` out of the ruleset: its dispatch entries, chain and map. Every object is
/// added before it is deleted, so removal is idempotent (deleting a missing object would fail
/// the whole transaction).
pub fn unroute(table: &str, component: &str, ports: &[PortPair], bound: &[Binding]) -> Vec<String> {
    let t = format!("inet {table}");
    let map = backend_map(component);
    let map6 = backend6_map(component);
    let canaries = canary_map(component);
    let chain = component_chain(component);
    let mut commands = vec![
        format!("add map {t} {map} {{ type {BACKEND_MAP_TYPE} ; }}"),
        format!("add map {t} {map6} {{ type {BACKEND6_MAP_TYPE} ; }}"),
        format!("add map {t} {canaries} {{ type {BACKEND_MAP_TYPE} ; }}"),
        format!("add chain {t} {chain}"),
    ];
    let keys: Vec<PortKey> = ports.iter().map(PortPair::key).collect();
    commands.extend(remove_dispatch(&t, &chain, &keys));
    // What the config binds and what the kernel holds, each once.
    let mut gone = bindings::wanted(ports);
    gone.extend_from_slice(bound);
    gone.sort();
    gone.dedup();
    commands.extend(rebind(&t, &chain, &gone, &[]));
    commands.push(format!("flush chain {t} {chain}"));
    commands.push(format!("delete chain {t} {chain}"));
    commands.push(format!("delete map {t} {map}"));
    commands.push(format!("delete map {t} {map6}"));
    commands.push(format!("delete map {t} {canaries}"));
    commands
}

/// Take `chain`'s bindings `from` out of the bound dispatch maps, then put `to` in.
fn rebind(t: &str, chain: &str, from: &[Binding], to: &[Binding]) -> Vec<String> {
    let mut commands = Vec::new();
    for (old, wanted) in [(true, from), (false, to)] {
        for map in [DISPATCH_BOUND_MAP, DISPATCH6_BOUND_MAP] {
            let keys: Vec<String> = wanted
                .iter()
                .filter(|b| b.map() == map)
                .map(Binding::nft_key)
                .collect();
            commands.extend(match old {
                true => remove_verdicts(t, map, chain, &keys),
                false => add_verdicts(t, map, chain, &keys),
            });
        }
    }
    commands
}

/// Replace the hairpin sets with exactly `sources` (each address in its family's set).
pub fn hairpin(table: &str, sources: &[IpAddr]) -> Vec<String> {
    let mut commands = Vec::new();
    for (set, members) in hairpin_sets(sources) {
        commands.push(format!("flush set inet {table} {set}"));
        let elements: Vec<String> = members.iter().map(IpAddr::to_string).collect();
        if !elements.is_empty() {
            commands.push(format!(
                "add element inet {table} {set} {{ {} }}",
                elements.join(", ")
            ));
        }
    }
    commands
}

/// Each hairpin set and the `sources` of its family.
pub fn hairpin_sets(sources: &[IpAddr]) -> [(&'static str, Vec<IpAddr>); 2] {
    let (v6, v4): (Vec<IpAddr>, Vec<IpAddr>) = sources.iter().partition(|a| a.is_ipv6());
    [(HAIRPIN_SET, v4), (HAIRPIN6_SET, v6)]
}

/// Join commands into one nft script: one script is one kernel transaction.
pub fn document(commands: &[String]) -> String {
    let mut script = commands.join("\n");
    script.push('\n');
    script
}

#[cfg(test)]
mod bound_tests;
#[cfg(test)]
mod ipv6_tests;
#[cfg(test)]
mod tests;
