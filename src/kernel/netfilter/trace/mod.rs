//! An in-memory nftables table that takes the very commands handoff's layout emits (the nft
//! text of `ruleset.rs` and `migrate.rs`) and traces a packet through them, with no root:
//! which rules match, where the packet is DNAT'd, which label it gets, whether it is accepted,
//! refused or dropped, and whether its reply path masquerades it. kube-proxy tests its nftables
//! proxier against `knftables.Fake` the same way.
//!
//! It understands the vocabulary handoff writes, and refuses anything else (a command or a
//! match it cannot read is a test failure, never a silent pass). Two things are modelled, not
//! computed as the kernel does: `fib daddr type local` asks the [`Host`]'s addresses, and the
//! canary's draw (`numgen random`, `jhash`) is the packet's `draw` (0..=99). The hot path's map
//! generations go over netlink (`generations.rs`) and are not text: they are not modelled here.

mod parse;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_layout;
#[cfg(test)]
mod tests_reach;
#[cfg(test)]
mod tests_switch;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use anyhow::{bail, Context, Result};

use crate::ports::Protocol;
use parse::{Expr, Rule};

/// A value in a key or in a map's data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    Address(IpAddr),
    Protocol(Protocol),
    Port(u16),
}

/// What a map element maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Data {
    Goto(String),
    Values(Vec<Value>),
}

#[derive(Debug, Default)]
struct Chain {
    /// `Some((hook, priority))` for a base chain.
    hook: Option<(String, i32)>,
    rules: Vec<Rule>,
}

/// The table, as the commands made it.
#[derive(Debug, Default)]
pub struct Table {
    pub name: String,
    exists: bool,
    sets: BTreeMap<String, BTreeSet<Vec<Value>>>,
    maps: BTreeMap<String, BTreeMap<Vec<Value>, Data>>,
    chains: BTreeMap<String, Chain>,
}

/// The host the table runs on: its addresses, by interface.
#[derive(Debug, Clone)]
pub struct Host {
    pub addresses: Vec<(&'static str, IpAddr)>,
}

impl Host {
    fn is_local(&self, address: IpAddr) -> bool {
        address.is_loopback() || self.addresses.iter().any(|(_, a)| *a == address)
    }

    fn is_local_on(&self, address: IpAddr, interface: &str) -> bool {
        self.addresses
            .iter()
            .any(|(i, a)| *i == interface && *a == address)
    }
}

/// A new connection's first packet.
#[derive(Debug, Clone)]
pub struct Packet {
    pub protocol: Protocol,
    pub source: IpAddr,
    pub destination: IpAddr,
    pub port: u16,
    /// The interface it came in by; `None`: sent by the host itself (the output hook).
    pub iif: Option<&'static str>,
    /// The canary's draw for this connection (0..=99).
    pub draw: u8,
}

/// What became of a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// A TCP reset or an ICMP unreachable.
    Refused,
    Dropped,
}

/// A packet's way through the table.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Each rule that matched, as written, with its chain: `prerouting: ...`.
    pub matched: Vec<String>,
    pub verdict: Verdict,
    /// Where it was DNAT'd to.
    pub dnat: Option<(IpAddr, u16)>,
    /// The conntrack label bit its flow got.
    pub label: Option<u8>,
    /// Whether postrouting masquerades it (its source becomes the host's).
    pub masqueraded: bool,
}

impl Table {
    pub fn new(name: &str) -> Self {
        Table {
            name: name.to_string(),
            ..Table::default()
        }
    }

    /// Apply `commands` as one transaction: all of them, or (on the first refused) none.
    pub fn apply(&mut self, commands: &[String]) -> Result<()> {
        let mut next = self.snapshot();
        for command in commands {
            next.command(command)
                .with_context(|| format!("command {command:?}"))?;
        }
        *self = next;
        Ok(())
    }

    fn snapshot(&self) -> Table {
        Table {
            name: self.name.clone(),
            exists: self.exists,
            sets: self.sets.clone(),
            maps: self.maps.clone(),
            chains: self
                .chains
                .iter()
                .map(|(name, chain)| {
                    let copy = Chain {
                        hook: chain.hook.clone(),
                        rules: chain.rules.clone(),
                    };
                    (name.clone(), copy)
                })
                .collect(),
        }
    }

    /// The elements of set `name` (keys only), for assertions.
    pub fn set(&self, name: &str) -> Vec<Vec<Value>> {
        self.sets
            .get(name)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The keys of map `name`, for assertions.
    pub fn map_keys(&self, name: &str) -> Vec<Vec<Value>> {
        self.maps
            .get(name)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn has_chain(&self, name: &str) -> bool {
        self.chains.contains_key(name)
    }

    /// Trace `packet` from `host`'s point of view: the NAT hook it meets first (prerouting for
    /// a packet that came in, output for the host's own), the chains it is sent to, then the
    /// input guard (a packet to 127.0.0.0/8 from outside) and postrouting's masquerade.
    pub fn trace(&self, host: &Host, packet: &Packet) -> Result<Trace> {
        let mut trace = Trace {
            matched: Vec::new(),
            verdict: Verdict::Accepted,
            dnat: None,
            label: None,
            masqueraded: false,
        };
        let hook = match packet.iif {
            Some(_) => "prerouting",
            None => "output",
        };
        for chain in self.base_chains(hook) {
            self.run(&chain, host, packet, &mut trace)?;
            if trace.verdict != Verdict::Accepted || trace.dnat.is_some() {
                break;
            }
        }
        if trace.verdict != Verdict::Accepted {
            return Ok(trace);
        }
        if trace.dnat.is_none() && packet.iif.is_some() && host.is_local(packet.destination) {
            for chain in self.base_chains("input") {
                self.run(&chain, host, packet, &mut trace)?;
            }
        }
        if trace.verdict == Verdict::Accepted && trace.dnat.is_some() {
            for chain in self.base_chains("postrouting") {
                self.run(&chain, host, packet, &mut trace)?;
            }
        }
        Ok(trace)
    }

    /// The base chains on `hook`, by priority.
    fn base_chains(&self, hook: &str) -> Vec<String> {
        let mut chains: Vec<(i32, String)> = self
            .chains
            .iter()
            .filter_map(|(name, chain)| {
                let (on, priority) = chain.hook.as_ref()?;
                (on == hook).then(|| (*priority, name.clone()))
            })
            .collect();
        chains.sort();
        chains.into_iter().map(|(_, name)| name).collect()
    }

    /// Run `chain`'s rules on `packet` until one ends it (a verdict, a DNAT, a goto).
    fn run(&self, chain: &str, host: &Host, packet: &Packet, trace: &mut Trace) -> Result<()> {
        let rules = &self.chains.get(chain).context("no such chain")?.rules;
        for rule in rules {
            if let Some(end) = self.evaluate(rule, host, packet, trace)? {
                trace.matched.push(format!("{chain}: {}", rule.text));
                if let Some(next) = end {
                    return self.run(&next, host, packet, trace);
                }
                return Ok(());
            }
        }
        Ok(())
    }

    /// `None` when the rule does not match; `Some(None)` when it matched and ended the chain
    /// (or set what it sets and went on: then the trace says so and the rule is not final);
    /// `Some(Some(chain))` for a goto.
    fn evaluate(
        &self,
        rule: &Rule,
        host: &Host,
        packet: &Packet,
        trace: &mut Trace,
    ) -> Result<Option<Option<String>>> {
        let source = packet.source;
        for expr in &rule.exprs {
            let matched = match expr {
                Expr::Family(v6) => packet.destination.is_ipv6() == *v6,
                Expr::Daddr {
                    set: Some(set),
                    not,
                } => self.set_has(set, &[Value::Address(packet.destination)]) != *not,
                Expr::Daddr { set: None, not } => {
                    let loopback = match packet.destination {
                        IpAddr::V4(a) => a.is_loopback(),
                        IpAddr::V6(a) => a.is_loopback(),
                    };
                    loopback != *not
                }
                Expr::FibLocal => host.is_local(packet.destination),
                Expr::FibLocalOnIif => packet
                    .iif
                    .is_some_and(|i| host.is_local_on(packet.destination, i)),
                Expr::Protocols(protocols) => protocols.contains(&packet.protocol),
                Expr::PortIn { set, not } => {
                    let key = [Value::Protocol(packet.protocol), Value::Port(packet.port)];
                    self.set_has(set, &key) != *not
                }
                Expr::Draw(below) => packet.draw < *below,
                Expr::IifNotLo => packet.iif.is_some_and(|i| i != "lo"),
                Expr::NotDnatNotKnown => trace.dnat.is_none(),
                Expr::LabelIs(bit) => trace.label == Some(*bit),
                Expr::StatusDnat => trace.dnat.is_some(),
                Expr::SaddrIn(set) => self.set_has(set, &[Value::Address(source)]),
                Expr::SaddrLoopback => source.is_loopback(),
                Expr::OriginalDaddrIn(set) => {
                    self.set_has(set, &[Value::Address(packet.destination)])
                }
                Expr::LabelSet(bit) => {
                    trace.label = Some(*bit);
                    true
                }
                Expr::Vmap { map, by_address } => {
                    let key = self.key(packet, *by_address);
                    return Ok(match self.maps.get(map).and_then(|m| m.get(&key)) {
                        Some(Data::Goto(chain)) => Some(Some(chain.clone())),
                        _ => None,
                    });
                }
                Expr::LinkVmap(map) => {
                    let key = vec![Value::Port(packet.port)];
                    return Ok(match self.maps.get(map).and_then(|m| m.get(&key)) {
                        Some(Data::Goto(chain)) if packet.protocol == Protocol::Tcp => {
                            Some(Some(chain.clone()))
                        }
                        _ => None,
                    });
                }
                Expr::Dnat(map) => {
                    let key = vec![Value::Protocol(packet.protocol), Value::Port(packet.port)];
                    match self.maps.get(map).and_then(|m| m.get(&key)) {
                        Some(Data::Values(to)) => match to[..] {
                            [Value::Address(address), Value::Port(port)] => {
                                trace.dnat = Some((address, port));
                                return Ok(Some(None));
                            }
                            _ => bail!("{map}: data {to:?} is not an address and a port"),
                        },
                        // No element: the DNAT does not happen and the rule ends there (the
                        // label it set stays, as in the kernel).
                        _ => false,
                    }
                }
                Expr::Reject => {
                    trace.verdict = Verdict::Refused;
                    return Ok(Some(None));
                }
                Expr::Drop => {
                    trace.verdict = Verdict::Dropped;
                    return Ok(Some(None));
                }
                Expr::Masquerade => {
                    trace.masqueraded = true;
                    return Ok(Some(None));
                }
            };
            if !matched {
                return Ok(None);
            }
        }
        Ok(None)
    }

    fn key(&self, packet: &Packet, by_address: bool) -> Vec<Value> {
        let mut key = Vec::new();
        if by_address {
            key.push(Value::Address(packet.destination));
        }
        key.extend([Value::Protocol(packet.protocol), Value::Port(packet.port)]);
        key
    }

    /// Whether set `name` (or map `name`, used as a set) holds `key`.
    fn set_has(&self, name: &str, key: &[Value]) -> bool {
        self.sets.get(name).is_some_and(|s| s.contains(key))
            || self.maps.get(name).is_some_and(|m| m.contains_key(key))
    }
}
