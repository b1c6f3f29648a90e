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
//!     # external port -> the chain of the component that owns it: one lookup dispatches
//!     # every component, however many there are
//!     map dispatch { type inet_service : verdict }
//!
//!     # per component: external port -> backend address . backend port
//!     map backend_web { type inet_service : ipv4_addr . inet_service }
//!
//!     # backend addresses whose own connections to a component are masqueraded (hairpin:
//!     # without it the reply would go straight back over the bridge, bypassing the host)
//!     set hairpin_sources { type ipv4_addr }
//!
//!     # traffic from other hosts to the host's own addresses; over IPv6, which no backend
//!     # serves, a component's ports are refused (a TCP reset) instead of reaching whatever
//!     # the host itself runs on [::]:PORT
//!     chain prerouting { type nat hook prerouting priority dstnat - 10; policy accept;
//!         meta nfproto ipv4 fib daddr type local meta l4proto tcp tcp dport vmap @dispatch
//!         meta nfproto ipv6 fib daddr type local meta l4proto tcp tcp dport @dispatch
//!             reject with tcp reset }
//!     # clients on the host itself (127.0.0.0/8 and ::1 are left alone: their replies
//!     # cannot be routed)
//!     chain output { type nat hook output priority -110; policy accept;
//!         meta nfproto ipv4 ip daddr != 127.0.0.0/8 fib daddr type local
//!         meta l4proto tcp tcp dport vmap @dispatch
//!         meta nfproto ipv6 ip6 daddr != ::1 fib daddr type local meta l4proto tcp
//!         tcp dport @dispatch reject with tcp reset }
//!     # the rule that carries the component's traffic: one map lookup; the label lets
//!     # Docker's FORWARD chain accept exactly our flows (see docker_user.rs)
//!     chain component_web { ct label set 127 dnat ip to tcp dport map @backend_web }
//!
//!     # during a canary only: its map, and a rule ahead of the main one that sends PCT % of
//!     # new connections there, decided by the kernel per connection (a random number) or,
//!     # sticky, by client address (a hash with a fixed seed: the same side every time)
//!     map canary_web { type inet_service : ipv4_addr . inet_service }
//!     chain component_web {
//!         ct label set 127 numgen random mod 100 < PCT dnat ip to tcp dport map @canary_web
//!         ct label set 127 dnat ip to tcp dport map @backend_web }
//!     # a backend calling a component through the host (hairpin): only our own flows (their
//!     # label), so that Docker's published ports keep their clients' addresses
//!     chain postrouting { type nat hook postrouting priority srcnat - 10; policy accept;
//!         ct label 127 ct status dnat ip saddr @hairpin_sources masquerade }
//! }
//! ```
//!
//! NAT chains only see the first packet of a connection; conntrack carries every later packet
//! with the binding it recorded. That is why replacing `backend_web`'s elements moves *new*
//! connections while every existing one stays on the backend it started with.
//!
//! A `dnat` ends the chain for its packet, so a connection the canary rule takes never reaches
//! the main rule; conntrack then keeps it on the canary like any other flow.
//!
//! A switch flushes and refills the component's map in the same transaction that re-asserts
//! the base chains (add is idempotent for tables, chains and maps; rules are flushed and added
//! again so a rerun never duplicates them). Changing an element in place is not possible: the
//! kernel refuses an `add` whose key exists with other data.

use std::net::Ipv4Addr;

use super::Canary;
use crate::config::PortPair;
use crate::identity::{self, Identity};

pub use identity::component_of_map;

/// The default name of our table (family `inet`); `--table` picks another, so that two
/// independent installations (or parallel tests) never share one.
pub const DEFAULT_TABLE: &str = "handoff";
/// The conntrack label bit set on every flow we DNAT. Docker's FORWARD policy drops forwarded
/// flows to unpublished container ports; `docker_user` accepts exactly the flows carrying it.
pub const FLOW_LABEL: u8 = 127;
pub const DISPATCH_MAP: &str = "dispatch";
pub const HAIRPIN_SET: &str = "hairpin_sources";
/// Priority of our NAT chains: just before the usual `dstnat` (-100) so that our DNAT is the
/// one that decides, ahead of Docker's or anyone else's.
pub const DSTNAT_PRIORITY: i32 = -110;
/// Just before the usual `srcnat` (100).
pub const SRCNAT_PRIORITY: i32 = 90;

pub fn backend_map(component: &str) -> String {
    identity::backend_map(component)
}

pub fn canary_map(component: &str) -> String {
    identity::canary_map(component)
}

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
const DISPATCH: &str = "fib daddr type local meta l4proto tcp tcp dport vmap @dispatch";
/// The same ports over IPv6: refused. No backend serves IPv6, and without this rule the
/// traffic would *fail open* — pass our chains untouched and reach whatever the host itself
/// listens with on [::]:PORT. A reset rather than a drop, so a client tries IPv4 at once.
const REFUSE_IPV6: &str =
    "fib daddr type local meta l4proto tcp tcp dport @dispatch reject with tcp reset";

/// Table, maps, sets and base chains with their rules, idempotently: `add` of an existing
/// table, chain, map or set is a no-op, and base chains are flushed before their rule is added
/// again, so a rerun never duplicates a rule.
pub fn base(table: &str) -> Vec<String> {
    let t = format!("inet {table}");
    vec![
        format!("add table {t}"),
        format!("add map {t} {DISPATCH_MAP} {{ type inet_service : verdict ; }}"),
        format!("add set {t} {HAIRPIN_SET} {{ type ipv4_addr ; }}"),
        format!(
            "add chain {t} prerouting {{ type nat hook prerouting priority {DSTNAT_PRIORITY} ; \
             policy accept ; }}"
        ),
        format!("flush chain {t} prerouting"),
        format!("add rule {t} prerouting meta nfproto ipv4 {DISPATCH}"),
        format!("add rule {t} prerouting meta nfproto ipv6 {REFUSE_IPV6}"),
        format!(
            "add chain {t} output {{ type nat hook output priority {DSTNAT_PRIORITY} ; \
             policy accept ; }}"
        ),
        format!("flush chain {t} output"),
        format!("add rule {t} output meta nfproto ipv4 ip daddr != 127.0.0.0/8 {DISPATCH}"),
        format!("add rule {t} output meta nfproto ipv6 ip6 daddr != ::1 {REFUSE_IPV6}"),
        format!(
            "add chain {t} postrouting {{ type nat hook postrouting priority {SRCNAT_PRIORITY} ; \
             policy accept ; }}"
        ),
        format!("flush chain {t} postrouting"),
        format!(
            "add rule {t} postrouting ct label {FLOW_LABEL} ct status dnat ip saddr \
             @{HAIRPIN_SET} masquerade"
        ),
    ]
}

/// Point every external port of `component` at `backend`: flush its map and refill it, make
/// sure its chain and dispatch entries exist, and take out the dispatch entries of `stale`
/// ports (routed to it before, no longer in its config: left there, they would send their
/// traffic into a map that no longer has them).
pub fn route(
    table: &str,
    component: &str,
    ports: &[PortPair],
    stale: &[u16],
    backend: Ipv4Addr,
    canary: Option<&Canary>,
) -> Vec<String> {
    let t = format!("inet {table}");
    let map = backend_map(component);
    let canaries = canary_map(component);
    let chain = component_chain(component);
    let backend_elements: Vec<String> = ports
        .iter()
        .map(|p| format!("{} : {backend} . {}", p.external, p.backend))
        .collect();
    let dispatch_elements: Vec<String> = ports
        .iter()
        .map(|p| format!("{} : goto {chain}", p.external))
        .collect();
    let mut commands = vec![
        format!("add map {t} {map} {{ type inet_service : ipv4_addr . inet_service ; }}"),
        format!("add map {t} {canaries} {{ type inet_service : ipv4_addr . inet_service ; }}"),
        format!("add chain {t} {chain}"),
        format!("flush chain {t} {chain}"),
        format!("flush map {t} {canaries}"),
    ];
    match canary {
        Some(canary) => {
            let elements: Vec<String> = ports
                .iter()
                .map(|p| format!("{} : {} . {}", p.external, canary.backend, p.backend))
                .collect();
            commands.push(format!(
                "add element {t} {canaries} {{ {} }}",
                elements.join(", ")
            ));
            commands.push(format!(
                "add rule {t} {chain} ct label set {FLOW_LABEL} {} dnat ip to tcp dport map \
                 @{canaries}",
                split(canary)
            ));
        }
        // No canary: its map goes (nothing refers to it once the chain is flushed).
        None => commands.push(format!("delete map {t} {canaries}")),
    }
    commands.extend([
        format!("add rule {t} {chain} ct label set {FLOW_LABEL} dnat ip to tcp dport map @{map}"),
        format!("flush map {t} {map}"),
        format!(
            "add element {t} {map} {{ {} }}",
            backend_elements.join(", ")
        ),
        format!(
            "add element {t} {DISPATCH_MAP} {{ {} }}",
            dispatch_elements.join(", ")
        ),
    ]);
    commands.extend(remove_dispatch(&t, &chain, stale));
    commands
}

/// Delete the dispatch entries of `externals`. Added first, so that the delete cannot fail
/// the transaction when they are gone already.
fn remove_dispatch(t: &str, chain: &str, externals: &[u16]) -> Vec<String> {
    if externals.is_empty() {
        return Vec::new();
    }
    let elements: Vec<String> = externals
        .iter()
        .map(|external| format!("{external} : goto {chain}"))
        .collect();
    let keys: Vec<String> = externals.iter().map(u16::to_string).collect();
    vec![
        format!(
            "add element {t} {DISPATCH_MAP} {{ {} }}",
            elements.join(", ")
        ),
        format!(
            "delete element {t} {DISPATCH_MAP} {{ {} }}",
            keys.join(", ")
        ),
    ]
}

/// Take `component` out of the ruleset: its dispatch entries, chain and map. Every object is
/// added before it is deleted, so removal is idempotent (deleting a missing object would fail
/// the whole transaction).
pub fn unroute(table: &str, component: &str, ports: &[PortPair]) -> Vec<String> {
    let t = format!("inet {table}");
    let map = backend_map(component);
    let canaries = canary_map(component);
    let chain = component_chain(component);
    let mut commands = vec![
        format!("add map {t} {map} {{ type inet_service : ipv4_addr . inet_service ; }}"),
        format!("add map {t} {canaries} {{ type inet_service : ipv4_addr . inet_service ; }}"),
        format!("add chain {t} {chain}"),
    ];
    let externals: Vec<u16> = ports.iter().map(|p| p.external).collect();
    commands.extend(remove_dispatch(&t, &chain, &externals));
    commands.push(format!("flush chain {t} {chain}"));
    commands.push(format!("delete chain {t} {chain}"));
    commands.push(format!("delete map {t} {map}"));
    commands.push(format!("delete map {t} {canaries}"));
    commands
}

/// Replace the hairpin set with exactly `sources`.
pub fn hairpin(table: &str, sources: &[Ipv4Addr]) -> Vec<String> {
    let mut commands = vec![format!("flush set inet {table} {HAIRPIN_SET}")];
    if !sources.is_empty() {
        let elements: Vec<String> = sources.iter().map(Ipv4Addr::to_string).collect();
        commands.push(format!(
            "add element inet {table} {HAIRPIN_SET} {{ {} }}",
            elements.join(", ")
        ));
    }
    commands
}

/// Join commands into one nft script: one script is one kernel transaction.
pub fn document(commands: &[String]) -> String {
    let mut script = commands.join("\n");
    script.push('\n');
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> Vec<PortPair> {
        vec![
            PortPair {
                external: 80,
                backend: 8080,
            },
            PortPair {
                external: 443,
                backend: 8443,
            },
        ]
    }

    fn position(commands: &[String], wanted: &str) -> usize {
        commands
            .iter()
            .position(|c| c == wanted)
            .unwrap_or_else(|| panic!("{wanted:?} not in {commands:#?}"))
    }

    #[test]
    fn a_port_dropped_from_the_config_leaves_the_dispatch_map() {
        let commands = route(
            DEFAULT_TABLE,
            "web",
            &ports(),
            &[81],
            Ipv4Addr::new(10, 0, 0, 12),
            None,
        );
        let added = position(
            &commands,
            "add element inet handoff dispatch { 81 : goto component_web }",
        );
        let deleted = position(&commands, "delete element inet handoff dispatch { 81 }");
        assert!(added < deleted, "idempotent: added before it is deleted");
        assert!(!route(
            DEFAULT_TABLE,
            "web",
            &ports(),
            &[],
            Ipv4Addr::new(10, 0, 0, 12),
            None,
        )
        .iter()
        .any(|c| c.starts_with("delete element")));
    }

    /// web's ports routed to 10.0.0.12, nothing stale.
    fn web_to_12() -> Vec<String> {
        route(
            DEFAULT_TABLE,
            "web",
            &ports(),
            &[],
            Ipv4Addr::new(10, 0, 0, 12),
            None,
        )
    }

    #[test]
    fn route_refills_the_component_map_and_dispatches_its_ports() {
        let commands = web_to_12();
        let flush = position(&commands, "flush map inet handoff backend_web");
        let fill = position(
            &commands,
            "add element inet handoff backend_web { 80 : 10.0.0.12 . 8080, 443 : 10.0.0.12 . 8443 }",
        );
        assert!(flush < fill, "flush before refill");
        position(
            &commands,
            "add element inet handoff dispatch { 80 : goto component_web, 443 : goto component_web }",
        );
    }

    #[test]
    fn the_traffic_rule_is_one_map_lookup() {
        let commands = web_to_12();
        let rules: Vec<&String> = commands
            .iter()
            .filter(|c| c.starts_with("add rule inet handoff component_web"))
            .collect();
        assert_eq!(
            rules,
            [
                "add rule inet handoff component_web ct label set 127 dnat ip to tcp dport map \
              @backend_web"
            ]
        );
        let flushed = position(&commands, "flush chain inet handoff component_web");
        let added = position(&commands, rules[0]);
        assert!(flushed < added, "reruns never duplicate the rule");
    }

    #[test]
    fn a_canary_rule_comes_before_the_main_one_and_without_a_canary_its_map_goes() {
        let canary = Canary {
            backend: Ipv4Addr::new(10, 0, 0, 13),
            weight: 10,
            sticky: false,
        };
        let commands = route(
            DEFAULT_TABLE,
            "web",
            &ports(),
            &[],
            Ipv4Addr::new(10, 0, 0, 12),
            Some(&canary),
        );
        let split = position(
            &commands,
            "add rule inet handoff component_web ct label set 127 numgen random mod 100 < 10 \
             dnat ip to tcp dport map @canary_web",
        );
        let main = position(
            &commands,
            "add rule inet handoff component_web ct label set 127 dnat ip to tcp dport map \
             @backend_web",
        );
        assert!(split < main, "the canary's share is taken first");
        position(
            &commands,
            "add element inet handoff canary_web { 80 : 10.0.0.13 . 8080, 443 : 10.0.0.13 . 8443 }",
        );
        assert!(!commands.iter().any(|c| c.starts_with("delete map")));
        let sticky = route(
            DEFAULT_TABLE,
            "web",
            &ports(),
            &[],
            Ipv4Addr::new(10, 0, 0, 12),
            Some(&Canary {
                sticky: true,
                ..canary
            }),
        );
        position(
            &sticky,
            "add rule inet handoff component_web ct label set 127 jhash ip saddr mod 100 seed \
             0x68616e64 < 10 dnat ip to tcp dport map @canary_web",
        );
        let ended = web_to_12();
        let flushed = position(&ended, "flush chain inet handoff component_web");
        let added = position(
            &ended,
            "add map inet handoff canary_web { type inet_service : ipv4_addr . inet_service ; }",
        );
        let deleted = position(&ended, "delete map inet handoff canary_web");
        assert!(
            added < deleted && flushed < deleted,
            "idempotent, and nothing refers to it"
        );
    }

    #[test]
    fn base_chains_are_reasserted_idempotently_in_our_table_only() {
        let commands = base(DEFAULT_TABLE);
        for command in &commands {
            assert!(
                command.contains(" inet handoff"),
                "touches only our table: {command}"
            );
            assert!(!command.starts_with("delete") && !command.starts_with("flush ruleset"));
        }
        for name in ["prerouting", "output", "postrouting"] {
            let added = commands
                .iter()
                .position(|c| c.starts_with(&format!("add chain inet handoff {name} ")))
                .unwrap();
            let flushed = position(&commands, &format!("flush chain inet handoff {name}"));
            let rules: Vec<usize> = commands
                .iter()
                .enumerate()
                .filter(|(_, c)| c.starts_with(&format!("add rule inet handoff {name} ")))
                .map(|(i, _)| i)
                .collect();
            let expected = if name == "postrouting" { 1 } else { 2 };
            assert!(
                added < flushed && rules.len() == expected && flushed < rules[0],
                "{name}"
            );
        }
        assert!(commands[3].contains("type nat hook prerouting priority -110"));
        assert!(commands[3].contains("policy accept"));
    }

    #[test]
    fn a_components_ports_are_refused_over_ipv6_from_outside_and_from_the_host() {
        let commands = base(DEFAULT_TABLE);
        position(
            &commands,
            "add rule inet handoff prerouting meta nfproto ipv6 fib daddr type local meta \
             l4proto tcp tcp dport @dispatch reject with tcp reset",
        );
        position(
            &commands,
            "add rule inet handoff output meta nfproto ipv6 ip6 daddr != ::1 fib daddr type \
             local meta l4proto tcp tcp dport @dispatch reject with tcp reset",
        );
    }

    #[test]
    fn output_leaves_loopback_alone_and_hairpin_is_masqueraded() {
        let commands = base(DEFAULT_TABLE);
        position(
            &commands,
            "add rule inet handoff output meta nfproto ipv4 ip daddr != 127.0.0.0/8 fib daddr \
             type local meta l4proto tcp tcp dport vmap @dispatch",
        );
        position(
            &commands,
            "add rule inet handoff postrouting ct label 127 ct status dnat ip saddr \
             @hairpin_sources masquerade",
        );
    }

    #[test]
    fn unroute_removes_the_component_idempotently() {
        let commands = unroute(DEFAULT_TABLE, "web", &ports());
        let add = position(&commands, "add chain inet handoff component_web");
        let delete = position(&commands, "delete chain inet handoff component_web");
        let undispatch = position(
            &commands,
            "delete element inet handoff dispatch { 80, 443 }",
        );
        assert!(add < undispatch && undispatch < delete, "{commands:#?}");
        position(&commands, "delete map inet handoff backend_web");
        assert!(
            commands.iter().all(|c| c.contains(" inet handoff ")),
            "{commands:#?}"
        );
    }

    #[test]
    fn another_table_name_is_used_everywhere() {
        let mut commands = base("handoff_test");
        commands.extend(route(
            "handoff_test",
            "web",
            &ports(),
            &[81],
            Ipv4Addr::new(10, 0, 0, 1),
            None,
        ));
        commands.extend(hairpin("handoff_test", &[Ipv4Addr::new(10, 0, 0, 1)]));
        assert!(
            commands.iter().all(|c| c.contains(" inet handoff_test")),
            "{commands:#?}"
        );
    }

    #[test]
    fn hairpin_set_is_replaced_whole() {
        let commands = hairpin(
            DEFAULT_TABLE,
            &[Ipv4Addr::new(10, 0, 0, 11), Ipv4Addr::new(10, 0, 0, 12)],
        );
        assert_eq!(
            commands,
            [
                "flush set inet handoff hairpin_sources",
                "add element inet handoff hairpin_sources { 10.0.0.11, 10.0.0.12 }"
            ]
        );
        assert_eq!(
            hairpin(DEFAULT_TABLE, &[]).len(),
            1,
            "an empty element list is not sent"
        );
    }

    #[test]
    fn a_document_is_one_command_per_line() {
        let script = document(&[
            "add table inet handoff".into(),
            "flush chain inet handoff x".into(),
        ]);
        assert_eq!(
            script,
            "add table inet handoff\nflush chain inet handoff x\n"
        );
    }
}
