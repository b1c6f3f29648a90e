//! The nft text handoff writes, read into the [`super::Table`]: its commands, element lists
//! and rule matches. Anything outside that vocabulary is an error.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{bail, Context, Result};

use super::{Chain, Data, Table, Value};
use crate::ports::Protocol;

/// One rule: its text as written and its matches and statements, in order.
#[derive(Debug, Clone)]
pub(super) struct Rule {
    pub text: String,
    pub exprs: Vec<Expr>,
}

#[derive(Debug, Clone)]
pub(super) enum Expr {
    /// `meta nfproto ipv6` (true) or `ipv4`.
    Family(bool),
    /// `ip daddr [!=] @set`, or `ip daddr [!=] 127.0.0.0/8` / `ip6 daddr [!=] ::1` (no set).
    Daddr {
        set: Option<String>,
        not: bool,
    },
    FibLocal,
    FibLocalOnIif,
    Protocols(Vec<Protocol>),
    /// `meta l4proto . th dport [!=] @set`.
    PortIn {
        set: String,
        not: bool,
    },
    /// `[ip daddr .] meta l4proto . th dport vmap @map`.
    Vmap {
        map: String,
        by_address: bool,
    },
    /// `tcp dport vmap @links`.
    LinkVmap(String),
    LabelSet(u8),
    LabelIs(u8),
    StatusDnat,
    /// `ct status & dnat == 0 ct state != { established, related }`: a new flow, not DNAT'd.
    NotDnatNotKnown,
    IifNotLo,
    SaddrIn(String),
    SaddrLoopback,
    OriginalDaddrIn(String),
    /// The canary's split: `numgen random mod 100 < N` or `jhash ... mod 100 ... < N`.
    Draw(u8),
    Dnat(String),
    Reject,
    Drop,
    Masquerade,
}

impl Table {
    /// Apply one command to this (working) copy of the table.
    pub(super) fn command(&mut self, command: &str) -> Result<()> {
        let words: Vec<&str> = command.split_whitespace().collect();
        let [verb, kind, family, table, rest @ ..] = &words[..] else {
            bail!("not a command of ours");
        };
        if *family != "inet" || *table != self.name {
            bail!("not our table: {family} {table}");
        }
        if *kind == "table" {
            match *verb {
                "add" => self.exists = true,
                "delete" if self.exists => *self = Table::new(&self.name),
                _ => bail!("cannot {verb} the table"),
            }
            return Ok(());
        }
        if !self.exists {
            bail!("No such file or directory: the table does not exist");
        }
        let name = rest.first().context("no object name")?.to_string();
        let body = command
            .split_once('{')
            .map(|(_, b)| b.trim_end().trim_end_matches('}').trim());
        match (*verb, *kind) {
            ("add", "map") => {
                self.maps.entry(name).or_default();
            }
            ("add", "set") => {
                self.sets.entry(name).or_default();
            }
            ("add", "chain") => {
                let hook = body.map(hook_of).transpose()?;
                let chain = self.chains.entry(name).or_default();
                if chain.hook.is_none() {
                    chain.hook = hook;
                }
            }
            ("flush", "chain") => self.chain(&name)?.rules.clear(),
            ("flush", "map") => self.map(&name)?.clear(),
            ("flush", "set") => self.set_mut(&name)?.clear(),
            ("delete", "chain") => {
                if !self.chain(&name)?.rules.is_empty() {
                    bail!("Device or resource busy: chain {name} has rules");
                }
                self.chains.remove(&name);
            }
            ("delete", "map") => {
                self.map(&name)?;
                self.maps.remove(&name);
            }
            ("add", "rule") => {
                let text = words[5..].join(" ");
                let exprs = parse_rule(&text)?;
                self.chain(&name)?.rules.push(Rule { text, exprs });
            }
            ("add", "element") => self.add_elements(&name, body.context("no elements")?)?,
            ("delete", "element") => self.delete_elements(&name, body.context("no elements")?)?,
            _ => bail!("not a command of ours"),
        }
        Ok(())
    }

    fn chain(&mut self, name: &str) -> Result<&mut Chain> {
        self.chains
            .get_mut(name)
            .with_context(|| format!("No such file or directory: chain {name}"))
    }

    fn map(&mut self, name: &str) -> Result<&mut BTreeMap<Vec<Value>, Data>> {
        self.maps
            .get_mut(name)
            .with_context(|| format!("No such file or directory: map {name}"))
    }

    fn set_mut(&mut self, name: &str) -> Result<&mut std::collections::BTreeSet<Vec<Value>>> {
        self.sets
            .get_mut(name)
            .with_context(|| format!("No such file or directory: set {name}"))
    }

    fn add_elements(&mut self, name: &str, body: &str) -> Result<()> {
        for element in body.split(", ") {
            match element.split_once(" : ") {
                Some((key, data)) => {
                    let key = values(key)?;
                    let data = match data.strip_prefix("goto ") {
                        Some(chain) => Data::Goto(chain.to_string()),
                        None => Data::Values(values(data)?),
                    };
                    let map = self.map(name)?;
                    match map.get(&key) {
                        Some(held) if *held != data => {
                            bail!("File exists: {name} holds {key:?} with other data")
                        }
                        _ => map.insert(key, data),
                    };
                }
                None => {
                    let key = values(element)?;
                    self.set_mut(name)?.insert(key);
                }
            }
        }
        Ok(())
    }

    fn delete_elements(&mut self, name: &str, body: &str) -> Result<()> {
        for element in body.split(", ") {
            let key = values(element)?;
            let gone = match self.maps.get_mut(name) {
                Some(map) => map.remove(&key).is_some(),
                None => self.set_mut(name)?.remove(&key),
            };
            if !gone {
                bail!("No such file or directory: {key:?} is not in {name}");
            }
        }
        Ok(())
    }
}

/// `type nat hook prerouting priority -110 ; policy accept ;` -> (`prerouting`, -110).
fn hook_of(body: &str) -> Result<(String, i32)> {
    let words: Vec<&str> = body.split_whitespace().collect();
    let after = |word: &str| {
        words
            .iter()
            .position(|w| *w == word)
            .and_then(|i| words.get(i + 1))
            .with_context(|| format!("no {word} in {body:?}"))
    };
    let hook = after("hook")?.to_string();
    let priority = match *after("priority")? {
        "filter" => 0,
        number => number
            .parse()
            .with_context(|| format!("priority {number}"))?,
    };
    Ok((hook, priority))
}

/// `203.0.113.5 . tcp . 80`, `tcp . 80`, `10.0.0.12 . 8080`, `80`.
fn values(text: &str) -> Result<Vec<Value>> {
    text.split(" . ")
        .map(|part| {
            let part = part.trim();
            Ok(match part {
                "tcp" => Value::Protocol(Protocol::Tcp),
                "udp" => Value::Protocol(Protocol::Udp),
                _ => match part.parse::<u16>() {
                    Ok(port) => Value::Port(port),
                    Err(_) => Value::Address(
                        part.parse::<IpAddr>()
                            .with_context(|| format!("not a value: {part:?}"))?,
                    ),
                },
            })
        })
        .collect()
}

/// The phrases of handoff's rules, longest first where one begins another.
const PHRASES: &[&str] = &[
    "meta nfproto ipv4",
    "meta nfproto ipv6",
    "ip daddr . meta l4proto . th dport vmap @",
    "ip6 daddr . meta l4proto . th dport vmap @",
    "ip daddr != 127.0.0.0/8",
    "ip daddr 127.0.0.0/8",
    "ip6 daddr != ::1",
    "ip daddr @",
    "fib daddr . iif type local",
    "fib daddr type local",
    "meta l4proto { tcp, udp }",
    "meta l4proto . th dport vmap @",
    "meta l4proto . th dport != @",
    "meta l4proto . th dport @",
    "meta l4proto tcp",
    "meta l4proto udp",
    "tcp dport vmap @",
    "ct label set ",
    "ct label ",
    "ct status & dnat == 0 ct state != { established, related }",
    "ct status dnat",
    "ct original ip daddr @",
    "iifname != \"lo\"",
    "ip saddr 127.0.0.0/8",
    "ip saddr @",
    "ip6 saddr @",
    "numgen random mod 100 < ",
    "jhash ip saddr mod 100 seed ",
    "dnat ip to meta l4proto . th dport map @",
    "dnat ip6 to meta l4proto . th dport map @",
    "reject with tcp reset",
    "reject",
    "drop",
    "masquerade",
];

fn parse_rule(text: &str) -> Result<Vec<Expr>> {
    let mut exprs = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let phrase = PHRASES
            .iter()
            .find(|p| rest.starts_with(**p))
            .with_context(|| format!("a match the trace does not know: {rest:?}"))?;
        rest = &rest[phrase.len()..];
        // The word that completes a phrase ending in `@` or a space: a name or a number.
        let mut word = || {
            let end = rest.find(' ').unwrap_or(rest.len());
            let word = rest[..end].to_string();
            rest = rest[end..].trim_start();
            word
        };
        let number = |word: String| word.parse::<u8>().with_context(|| format!("{word:?}"));
        exprs.push(match *phrase {
            "meta nfproto ipv4" => Expr::Family(false),
            "meta nfproto ipv6" => Expr::Family(true),
            "ip daddr . meta l4proto . th dport vmap @"
            | "ip6 daddr . meta l4proto . th dport vmap @" => Expr::Vmap {
                map: word(),
                by_address: true,
            },
            "ip daddr != 127.0.0.0/8" | "ip6 daddr != ::1" => Expr::Daddr {
                set: None,
                not: true,
            },
            "ip daddr 127.0.0.0/8" => Expr::Daddr {
                set: None,
                not: false,
            },
            "ip daddr @" => Expr::Daddr {
                set: Some(word()),
                not: false,
            },
            "fib daddr . iif type local" => Expr::FibLocalOnIif,
            "fib daddr type local" => Expr::FibLocal,
            "meta l4proto { tcp, udp }" => Expr::Protocols(vec![Protocol::Tcp, Protocol::Udp]),
            "meta l4proto . th dport vmap @" => Expr::Vmap {
                map: word(),
                by_address: false,
            },
            "meta l4proto . th dport != @" => Expr::PortIn {
                set: word(),
                not: true,
            },
            "meta l4proto . th dport @" => Expr::PortIn {
                set: word(),
                not: false,
            },
            "meta l4proto tcp" => Expr::Protocols(vec![Protocol::Tcp]),
            "meta l4proto udp" => Expr::Protocols(vec![Protocol::Udp]),
            "tcp dport vmap @" => Expr::LinkVmap(word()),
            "ct label set " => Expr::LabelSet(number(word())?),
            "ct label " => Expr::LabelIs(number(word())?),
            "ct status & dnat == 0 ct state != { established, related }" => Expr::NotDnatNotKnown,
            "ct status dnat" => Expr::StatusDnat,
            "ct original ip daddr @" => Expr::OriginalDaddrIn(word()),
            "iifname != \"lo\"" => Expr::IifNotLo,
            "ip saddr 127.0.0.0/8" => Expr::SaddrLoopback,
            "ip saddr @" | "ip6 saddr @" => Expr::SaddrIn(word()),
            "numgen random mod 100 < " => Expr::Draw(number(word())?),
            "jhash ip saddr mod 100 seed " => {
                let _seed = word();
                if word() != "<" {
                    bail!("jhash without its share: {text:?}");
                }
                Expr::Draw(number(word())?)
            }
            "dnat ip to meta l4proto . th dport map @"
            | "dnat ip6 to meta l4proto . th dport map @" => Expr::Dnat(word()),
            "reject with tcp reset" => Expr::Reject,
            "reject" => {
                // `reject with icmpv6 port-unreachable` and the like: still a refusal.
                if rest.starts_with("with ") {
                    rest = "";
                }
                Expr::Reject
            }
            "drop" => Expr::Drop,
            "masquerade" => Expr::Masquerade,
            _ => bail!("unhandled phrase {phrase:?}"),
        });
        rest = rest.trim_start();
    }
    Ok(exprs)
}
