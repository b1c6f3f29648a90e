//! The switch as a transaction that only adds: a new generation of the component's maps and
//! rules, in front of the old one.
//!
//! Why: an nftables transaction that deletes anything (an element, a rule, a map) hands what
//! it deleted to a work queue that frees it after an RCU grace period, and the kernel flushes
//! that queue, grace period included, whenever a netfilter netlink socket is closed
//! (`nft_rcv_nl_event`). So a switch that flushes its map and refills it waits ~10 ms in the
//! `close()` of its socket, or at the latest in its own exit: measured with
//! `scripts/switch-cost.sh` (delete 18.6 ms, add 8.8 ms, no-op 7.9 ms whole-process `nft -f`;
//! with `rcu_expedited=1` the delete costs 7.4 ms) and seen in `strace -T`: `close(4)
//! <0.008168>` after the batch. A transaction that only adds frees nothing later.
//!
//! How, for component `web` whose chain starts with the rules of generation N:
//!
//! ```text
//! map backend_web_gN+1  { same type as backend_web_gN ; elements = the new routes }
//! map backend6_web_gN+1 { ... the new IPv6 routes }
//! insert rule component_web   # at the head, ahead of generation N
//!     meta nfproto ipv4 ct label set 127 dnat ip to meta l4proto . th dport map @backend_web_gN+1
//! insert rule component_web  meta nfproto ipv6 ... map @backend6_web_gN+1
//! ```
//!
//! One batch, so one atomic transaction for every port of the component. The new rules are
//! copies of generation N's (their bytes as the kernel lists them, the map's name changed),
//! so they cannot drift from what `ruleset.rs` lays out. Generation 0 is the plain name
//! `backend_web`, laid out by `ruleset.rs`.
//!
//! Why the older rules never see a packet: a component's chain is entered only for its own
//! ports, the new map holds every one of them (the fast path runs only when the ports are
//! unchanged), and a `dnat` ends the chain. An IPv6 map is empty in every generation or
//! full in every generation (a change of that goes through `ruleset.rs`, which lays the chain
//! out again).
//!
//! The older generations are deleted later, off the switch's path: by [`compact`] after a
//! drain (`Firewall::set_hairpin_sources`), by the layout of any other change, and by a switch
//! that finds [`KEPT`] of them already (that one switch pays the grace period).

use std::net::IpAddr;

use anyhow::Result;
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST};
use netlink_sys::Socket;

use super::batch::{self, Batch, Missing};
use super::{exchange, label, raw, ruleset, Route};
use crate::identity;
use crate::kernel::nfnetlink;

/// How many older generations a switch leaves in place before it deletes them itself.
pub const KEPT: usize = 8;

const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_DELSET: u16 = 11;
const RULE_TABLE: u16 = 1;
const RULE_CHAIN: u16 = 2;
const RULE_HANDLE: u16 = 3;
const RULE_EXPRESSIONS: u16 = 4;
const RULE_USERDATA: u16 = 7;
const LIST_ELEM: u16 = 1;
const EXPR_NAME: u16 = 1;
const EXPR_DATA: u16 = 2;
const LOOKUP_SET: u16 = 1;
const LOOKUP_SET_ID: u16 = 4;
const SET_TABLE: u16 = 1;
const SET_NAME: u16 = 2;
const SET_ID: u16 = 10;
const SET_DESC: u16 = 9;
/// What a new generation's map copies from the one before: flags, key and data types and
/// lengths, policy, description, user data (nft's type names).
const SET_DEFINITION: [u16; 8] = [3, 4, 5, 6, 7, 8, SET_DESC, 13];

/// The name of generation `n` of backend map `base`.
pub fn map_name(base: &str, n: u32) -> String {
    match n {
        0 => base.to_string(),
        n => format!("{base}_g{n}"),
    }
}

/// A rule of a component's chain, as the kernel lists it.
struct ChainRule {
    handle: u64,
    expressions: Vec<u8>,
    userdata: Option<Vec<u8>>,
    /// The map this rule looks up, if any.
    map: Option<String>,
}

impl ChainRule {
    fn parse(attributes: &[u8]) -> Option<(String, ChainRule)> {
        let chain = raw::string(raw::find(attributes, RULE_CHAIN)?)?.to_string();
        let handle = u64::from_be_bytes(raw::find(attributes, RULE_HANDLE)?.try_into().ok()?);
        let expressions = raw::find(attributes, RULE_EXPRESSIONS)?.to_vec();
        let map = raw::attributes(&expressions)
            .into_iter()
            .find_map(|element| {
                let data = lookup_data(element.payload)?;
                raw::string(raw::find(data, LOOKUP_SET)?).map(str::to_string)
            });
        let userdata = raw::find(attributes, RULE_USERDATA).map(<[u8]>::to_vec);
        Some((
            chain,
            ChainRule {
                handle,
                expressions,
                userdata,
                map,
            },
        ))
    }
}

/// The data of a `lookup` expression (one element of a rule's expression list).
fn lookup_data(element: &[u8]) -> Option<&[u8]> {
    (raw::string(raw::find(element, EXPR_NAME)?)? == "lookup")
        .then(|| raw::find(element, EXPR_DATA))
        .flatten()
}

/// `rule`'s expressions with its lookup of `from` turned into a lookup of `to`.
fn renamed(expressions: &[u8], from: &str, to: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(expressions.len() + 8);
    for element in raw::attributes(expressions) {
        let data = lookup_data(element.payload)
            .filter(|data| raw::find(data, LOOKUP_SET).and_then(raw::string) == Some(from));
        let Some(data) = data else {
            raw::put(&mut out, LIST_ELEM | raw::NESTED, element.payload);
            continue;
        };
        let mut lookup = Vec::new();
        raw::put_string(&mut lookup, LOOKUP_SET, to);
        for attribute in raw::attributes(data) {
            if attribute.kind != LOOKUP_SET && attribute.kind != LOOKUP_SET_ID {
                raw::put(&mut lookup, attribute.kind, attribute.payload);
            }
        }
        let mut expression = Vec::new();
        raw::put_string(&mut expression, EXPR_NAME, "lookup");
        raw::put(&mut expression, EXPR_DATA | raw::NESTED, &lookup);
        raw::put(&mut out, LIST_ELEM | raw::NESTED, &expression);
    }
    out
}

/// Every rule of `table` (of `chain` only, when given), with its chain's name, in order.
fn rules(socket: &Socket, table: &str, chain: Option<&str>) -> Result<Vec<(String, ChainRule)>> {
    let mut request = Vec::new();
    raw::put_string(&mut request, RULE_TABLE, table);
    if let Some(chain) = chain {
        raw::put_string(&mut request, RULE_CHAIN, chain);
    }
    let request = raw::message(NFT_MSG_GETRULE, NLM_F_REQUEST | NLM_F_DUMP, 1, &request);
    let answers = exchange::exchange(socket, &request, "the component's rules", table)?;
    Ok(answers.iter().filter_map(|a| ChainRule::parse(a)).collect())
}

/// A component's chain, read as generations of its two backend maps.
struct Generations {
    chain: String,
    /// The rule that decides, and its map, for IPv4 and for IPv6: the first rule (the newest
    /// generation) that looks up a generation of that family's backend map.
    heads: [Option<(ChainRule, String)>; 2],
    /// Every older rule that looks up a generation of either map, and that map.
    older: Vec<(u64, String)>,
    newest: u32,
}

impl Generations {
    fn of(component: &str, chain: String, rules: Vec<ChainRule>) -> Generations {
        let bases = [
            ruleset::backend_map(component),
            ruleset::backend6_map(component),
        ];
        let mut found = Generations {
            chain,
            heads: [None, None],
            older: Vec::new(),
            newest: 0,
        };
        for rule in rules {
            let Some(map) = rule.map.clone() else {
                continue;
            };
            let (base, generation) = identity::split_generation(&map);
            let Some(family) = bases.iter().position(|b| b == base) else {
                continue;
            };
            found.newest = found.newest.max(generation);
            match found.heads[family] {
                None => found.heads[family] = Some((rule, map)),
                Some(_) => found.older.push((rule.handle, map)),
            }
        }
        found
    }

    fn read(socket: &Socket, table: &str, component: &str) -> Result<Generations> {
        let chain = ruleset::component_chain(component);
        // No table: no rules (what reads them says what is missing).
        let rules = match rules(socket, table, Some(&chain)) {
            Ok(rules) => rules,
            Err(error) if error.downcast_ref::<Missing>().is_some() => Vec::new(),
            Err(error) => return Err(error),
        };
        let rules = rules.into_iter().map(|(_, rule)| rule).collect();
        Ok(Generations::of(component, chain, rules))
    }

    /// The maps that decide now (IPv4, IPv6); the plain names when the chain has no rules.
    fn current_maps(&self, component: &str) -> (String, String) {
        let name = |family: usize, base: String| {
            self.heads[family]
                .as_ref()
                .map_or(base, |(_, map)| map.clone())
        };
        (
            name(0, ruleset::backend_map(component)),
            name(1, ruleset::backend6_map(component)),
        )
    }

    /// Delete the older generations' rules and maps in `batch`.
    fn delete_older(&self, table: &str, batch: &mut Batch) {
        for (handle, _) in &self.older {
            let mut rule = Vec::new();
            raw::put_string(&mut rule, RULE_TABLE, table);
            raw::put_string(&mut rule, RULE_CHAIN, &self.chain);
            raw::put(&mut rule, RULE_HANDLE, &handle.to_be_bytes());
            batch.push_raw(NFT_MSG_DELRULE, 0, &rule);
        }
        let mut maps: Vec<&String> = self.older.iter().map(|(_, map)| map).collect();
        maps.sort();
        maps.dedup();
        for map in maps {
            let mut set = Vec::new();
            raw::put_string(&mut set, SET_TABLE, table);
            raw::put_string(&mut set, SET_NAME, map);
            batch.push_raw(NFT_MSG_DELSET, 0, &set);
        }
    }
}

/// The definition of map `name` as the kernel lists it.
fn map_definition(socket: &Socket, table: &str, name: &str) -> Result<Vec<u8>> {
    let mut request = Vec::new();
    raw::put_string(&mut request, SET_TABLE, table);
    raw::put_string(&mut request, SET_NAME, name);
    let request = raw::message(NFT_MSG_GETSET, NLM_F_REQUEST | NLM_F_ACK, 1, &request);
    exchange::exchange(socket, &request, name, name)?
        .into_iter()
        .next()
        .ok_or_else(|| Missing(name.to_string()).into())
}

/// The maps that route `component` now (IPv4, IPv6), by name.
pub fn current_maps(table: &str, component: &str) -> Result<(String, String)> {
    let socket = nfnetlink::open()?;
    Ok(Generations::read(&socket, table, component)?.current_maps(component))
}

/// The routes of `component` now (IPv4, IPv6); [`Missing`] when it has no maps.
pub fn current_routes(table: &str, component: &str) -> Result<(Vec<Route>, Vec<Route>)> {
    let (map, map6) = current_maps(table, component)?;
    Ok((
        batch::read_routes(table, &map)?,
        batch::read_routes(table, &map6)?,
    ))
}

/// The maps of `component`'s older generations (what a new layout of its chain leaves without
/// a rule, to be deleted in the same transaction).
pub fn older_maps(table: &str, component: &str) -> Result<Vec<String>> {
    let socket = nfnetlink::open()?;
    let generations = Generations::read(&socket, table, component)?;
    let (map, map6) = (
        ruleset::backend_map(component),
        ruleset::backend6_map(component),
    );
    let mut maps: Vec<String> = generations
        .heads
        .iter()
        .flatten()
        .map(|(_, map)| map.clone())
        .chain(generations.older.into_iter().map(|(_, map)| map))
        .filter(|name| *name != map && *name != map6)
        .collect();
    maps.sort();
    maps.dedup();
    Ok(maps)
}

/// Switch `component` to `routes` (IPv4) and `routes6` by adding a generation (see above),
/// and make the hairpin sets exactly `hairpin_sources` — by adding, unless a member must go.
/// [`Missing`] when the component's chain is not laid out (the caller lays it out).
pub fn switch(
    table: &str,
    component: &str,
    routes: &[Route],
    routes6: &[Route],
    hairpin_sources: &[IpAddr],
) -> Result<()> {
    let socket = nfnetlink::open()?;
    let generations = Generations::read(&socket, table, component)?;
    let next = generations.newest + 1;
    let mut batch = Batch::default();
    // IPv6 first: each insert goes to the head, so the IPv4 rule ends up first.
    let bases = [
        ruleset::backend6_map(component),
        ruleset::backend_map(component),
    ];
    for (id, (head, (base, routes))) in [&generations.heads[1], &generations.heads[0]]
        .into_iter()
        .zip(bases.iter().zip([routes6, routes]))
        .enumerate()
    {
        let Some((rule, map)) = head else {
            return Err(Missing(generations.chain.clone()).into());
        };
        // A rule that does not set this table's label (laid out by an older handoff): copied,
        // its flows would miss Docker's FORWARD hole. The layout makes it again.
        if !label::sets(&rule.expressions, label::flow_label(table)) {
            return Err(Missing(generations.chain.clone()).into());
        }
        let name = map_name(base, next);
        let definition = map_definition(&socket, table, map)?;
        let mut set = Vec::new();
        raw::put_string(&mut set, SET_TABLE, table);
        raw::put_string(&mut set, SET_NAME, &name);
        raw::put(&mut set, SET_ID, &(id as u32 + 1).to_be_bytes());
        for attribute in raw::attributes(&definition) {
            if attribute.kind == SET_DESC && attribute.payload.is_empty() {
                continue;
            }
            if SET_DEFINITION.contains(&attribute.kind) {
                let nested = if attribute.kind == SET_DESC {
                    raw::NESTED
                } else {
                    0
                };
                raw::put(&mut set, attribute.kind | nested, attribute.payload);
            }
        }
        batch.push_raw(NFT_MSG_NEWSET, NLM_F_CREATE | NLM_F_EXCL, &set);
        batch.add_elements(table, &name, batch::route_elements(routes));
        let mut copy = Vec::new();
        raw::put_string(&mut copy, RULE_TABLE, table);
        raw::put_string(&mut copy, RULE_CHAIN, &generations.chain);
        raw::put(
            &mut copy,
            RULE_EXPRESSIONS | raw::NESTED,
            &renamed(&rule.expressions, map, &name),
        );
        if let Some(userdata) = &rule.userdata {
            raw::put(&mut copy, RULE_USERDATA, userdata);
        }
        batch.push_raw(NFT_MSG_NEWRULE, NLM_F_CREATE, &copy);
    }
    for (set, members) in ruleset::hairpin_sets(hairpin_sources) {
        let wanted = batch::address_elements(members);
        let now = batch::read_elements(table, set)?;
        if now.iter().all(|element| wanted.contains(element)) {
            let missing = wanted.into_iter().filter(|e| !now.contains(e)).collect();
            batch.add_elements(table, set, missing);
        } else {
            batch.replace_elements(table, set, wanted);
        }
    }
    if generations.older.len() / 2 >= KEPT {
        generations.delete_older(table, &mut batch);
    }
    batch.commit(&ruleset::backend_map(component))
}

/// Delete the older generations of every component in `table` (one transaction; nothing to do
/// is not an error).
pub fn compact(table: &str) -> Result<()> {
    let socket = nfnetlink::open()?;
    let rules = match rules(&socket, table, None) {
        Ok(rules) => rules,
        Err(error) if error.downcast_ref::<Missing>().is_some() => return Ok(()),
        Err(error) => return Err(error),
    };
    let mut by_chain: Vec<(String, Vec<ChainRule>)> = Vec::new();
    for (chain, rule) in rules {
        match by_chain.iter_mut().find(|(name, _)| *name == chain) {
            Some((_, list)) => list.push(rule),
            None => by_chain.push((chain, vec![rule])),
        }
    }
    let mut batch = Batch::default();
    let mut any = false;
    for (chain, rules) in by_chain {
        let Some(component) = identity::component_of_chain(&chain) else {
            continue;
        };
        let generations = Generations::of(&component, chain, rules);
        any |= !generations.older.is_empty();
        generations.delete_older(table, &mut batch);
    }
    match any {
        true => batch.commit("the older generations of the backend maps"),
        false => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(set: &str) -> Vec<u8> {
        let mut data = Vec::new();
        raw::put_string(&mut data, LOOKUP_SET, set);
        raw::put(&mut data, 2, &1u32.to_be_bytes());
        raw::put(&mut data, LOOKUP_SET_ID, &9u32.to_be_bytes());
        let mut expression = Vec::new();
        raw::put_string(&mut expression, EXPR_NAME, "lookup");
        raw::put(&mut expression, EXPR_DATA | raw::NESTED, &data);
        expression
    }

    fn rule(handle: u64, set: Option<&str>) -> ChainRule {
        let mut meta = Vec::new();
        raw::put_string(&mut meta, EXPR_NAME, "meta");
        let mut expressions = Vec::new();
        raw::put(&mut expressions, LIST_ELEM | raw::NESTED, &meta);
        if let Some(set) = set {
            raw::put(&mut expressions, LIST_ELEM | raw::NESTED, &lookup(set));
        }
        let map = set.map(str::to_string);
        ChainRule {
            handle,
            expressions,
            userdata: None,
            map,
        }
    }

    #[test]
    fn a_copied_rule_looks_up_the_new_map_and_keeps_everything_else() {
        let old = rule(1, Some("backend_web_g3")).expressions;
        let new = renamed(&old, "backend_web_g3", "backend_web_g4");
        let elements = raw::attributes(&new);
        assert_eq!(elements.len(), 2);
        assert_eq!(elements[0].payload, raw::attributes(&old)[0].payload);
        let data = lookup_data(elements[1].payload).unwrap();
        assert_eq!(
            raw::find(data, LOOKUP_SET).and_then(raw::string),
            Some("backend_web_g4")
        );
        assert_eq!(raw::find(data, 2), Some(&1u32.to_be_bytes()[..]));
        assert_eq!(
            raw::find(data, LOOKUP_SET_ID),
            None,
            "an id of the old transaction"
        );
        assert_eq!(renamed(&old, "other", "x"), old);
    }

    #[test]
    fn the_first_rule_of_each_family_decides_and_the_rest_are_older() {
        let rules = vec![
            rule(9, Some("backend_web_g2")),
            rule(8, Some("backend6_web_g2")),
            rule(5, Some("canary_web")),
            rule(4, Some("backend_web_g1")),
            rule(3, Some("backend6_web_g1")),
            rule(2, Some("backend_web")),
            rule(1, None),
        ];
        let generations = Generations::of("web", "component_web".into(), rules);
        assert_eq!(
            generations.current_maps("web"),
            ("backend_web_g2".into(), "backend6_web_g2".into())
        );
        assert_eq!(generations.newest, 2);
        let older: Vec<u64> = generations.older.iter().map(|(h, _)| *h).collect();
        assert_eq!(older, [4, 3, 2]);
    }

    #[test]
    fn a_chain_without_rules_routes_through_the_plain_names() {
        let generations = Generations::of("web", "component_web".into(), Vec::new());
        assert_eq!(
            generations.current_maps("web"),
            ("backend_web".into(), "backend6_web".into())
        );
        assert_eq!(generations.newest, 0);
    }
}
