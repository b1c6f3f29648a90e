//! The hole in Docker's FORWARD policy.
//!
//! Docker sets the FORWARD policy to DROP and accepts forwarded traffic only to *published*
//! container ports. A flow we DNAT from another host to a container's unpublished port is
//! therefore dropped, and an accept in our own nftables table cannot help (a drop in any base
//! chain wins). Docker's answer for its users is the `DOCKER-USER` chain, which it jumps to
//! first and never touches: we add one rule there accepting exactly the flows carrying our
//! table's conntrack label (set by our DNAT rule, see `ruleset.rs` and `label.rs`), tagged with
//! a comment naming our table. It is added idempotently, removed when our table routes nothing
//! any more, and Docker's own chains are never flushed or reordered.
//!
//! Docker's isolation first: DOCKER-USER runs before Docker's isolation chains, so an accept
//! there would let a container on an `--internal` network, or on a network Docker isolates from
//! the backend's, reach the component — where it cannot reach a `docker run -p` port. So right
//! before the accept, our flows jump to `DOCKER-ISOLATION-STAGE-1` (Docker's own verdict on
//! forwarding between its networks: it drops what it isolates and returns the rest), when that
//! chain exists. A rule of ours with another label (a table laid out by an older handoff, or
//! an earlier name's bit) is replaced, not kept beside it.
//!
//! Where it goes: just before the chain's final `-j RETURN` (Docker's default), so that the
//! administrator's own rules — usually inserted at the top — still come first and can drop
//! what they drop; it only accepts flows that handoff itself DNAT'd.
//!
//! The same rule at the *end* of FORWARD, as a fallback: whenever a Docker network is created
//! (`docker network create`, `docker compose up`), dockerd re-arranges the jump to DOCKER-USER
//! by deleting it and inserting it again, two separate commands (libnetwork's
//! `EnsureJumpRule`). In between, FORWARD has no jump to DOCKER-USER and every new flow to a
//! container meets the DROP policy: the client's SYN is lost and sent again a second later
//! (measured: 75 connects stalled for ~1 s in 60 s under a network create/remove every 0.3 s,
//! none without; README, "Docker's FORWARD policy"). Appended at the end, the fallback is
//! reached only by a flow that nothing before it accepted or dropped — in Docker 20.10's chains
//! none of ours, except in that gap — so it never overrides the administrator's rules in
//! DOCKER-USER.
//!
//! Which iptables: the one whose tables hold Docker's chains. Docker drives whichever
//! `iptables` it finds, and a host can have both the legacy and the nf_tables flavour; a rule
//! in the other one would sit beside Docker's, unseen. So each flavour is asked for
//! DOCKER-USER, and the one that has it gets the rules. When none has it, no rule is needed
//! if forwarding is not dropped — and when it is (or Docker runs its nftables backend, which
//! has no DOCKER-USER), the hole cannot be made and handoff says so (exit 6) rather than route
//! traffic into a drop. A command that fails for another reason (the xtables lock held too
//! long) is an error, never "the rule is absent".

use std::process::{Command, Output};

use anyhow::{Context, Result};

use super::label::flow_label;
use crate::error::Failure;

const CHAIN: &str = "DOCKER-USER";
/// Docker's verdict on forwarding between its networks (`--internal`, isolated bridges).
const ISOLATION_CHAIN: &str = "DOCKER-ISOLATION-STAGE-1";
/// Where the fallback goes: the end of FORWARD.
const FALLBACK_CHAIN: &str = "FORWARD";
/// The flavours of iptables Docker may be using, the default first.
const FLAVOURS: &[&str] = &["iptables", "iptables-legacy", "iptables-nft"];
/// How long to wait for the xtables lock.
const LOCK_WAIT: &str = "5";

/// One of our rules: flows with conntrack label `label` go to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OurRule {
    label: String,
    target: String,
}

impl OurRule {
    fn new(label: u8, target: &str) -> Self {
        OurRule {
            label: label.to_string(),
            target: target.to_string(),
        }
    }

    /// The rule's iptables arguments, its comment naming `table`.
    fn spec(&self, table: &str) -> Vec<String> {
        [
            "-m",
            "connlabel",
            "--label",
            &self.label,
            "-m",
            "comment",
            "--comment",
            &format!("handoff:{table}"),
            "-j",
            &self.target,
        ]
        .map(str::to_string)
        .to_vec()
    }
}

/// The rules `table` wants in `chain`: in DOCKER-USER, Docker's isolation verdict (when
/// `isolation`) and then the accept; at the end of FORWARD, the accept (Docker's isolation
/// ran before it there).
fn wanted(table: &str, chain: &str, isolation: bool) -> Vec<OurRule> {
    let label = flow_label(table);
    let mut rules = Vec::new();
    if chain == CHAIN && isolation {
        rules.push(OurRule::new(label, ISOLATION_CHAIN));
    }
    rules.push(OurRule::new(label, "ACCEPT"));
    rules
}

fn run(iptables: &str, args: &[&str], rule: &[String]) -> Result<Output> {
    Command::new(iptables)
        .args(["-w", LOCK_WAIT])
        .args(args)
        .args(rule)
        .output()
        .with_context(|| format!("running {iptables}"))
}

/// What `iptables -S CHAIN` said.
#[derive(Debug, PartialEq)]
enum Listing {
    Rules(String),
    /// The chain does not exist in this flavour's tables.
    NoChain,
    /// This flavour is not installed.
    NoBinary,
}

/// The legacy (x_tables) tables that exist in this network namespace.
const LEGACY_TABLES: &str = "/proc/net/ip_tables_names";

/// Whether `iptables` is the legacy flavour and this namespace has no legacy filter table, so
/// no Docker chain can be there. Asking anyway would *create* the table (listing loads it): a
/// host with Docker on iptables-nft would get empty legacy tables, and iptables-nft would warn
/// "iptables-legacy tables present" from then on.
fn no_legacy_filter_table(iptables: &str) -> bool {
    let legacy = iptables.ends_with("-legacy")
        || Command::new(iptables)
            .arg("-V")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("legacy"))
            .unwrap_or(false);
    legacy
        && std::fs::read_to_string(LEGACY_TABLES)
            .map(|names| !names.lines().any(|name| name == "filter"))
            // No file: the x_tables module is not even loaded.
            .unwrap_or(true)
}

fn list(iptables: &str, chain: &str) -> Result<Listing> {
    if no_legacy_filter_table(iptables) {
        return Ok(Listing::NoChain);
    }
    let output = match Command::new(iptables)
        .args(["-w", LOCK_WAIT, "-S", chain])
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Listing::NoBinary),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("running {iptables}"))),
    };
    if output.status.success() {
        return Ok(Listing::Rules(
            String::from_utf8_lossy(&output.stdout).into_owned(),
        ));
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    // How each flavour says "no such chain" (iptables-nft 1.8.9 calls a chain it cannot find
    // "incompatible").
    if ["No chain/target/match", "does not exist", "is incompatible"]
        .iter()
        .any(|said| stderr.contains(said))
    {
        return Ok(Listing::NoChain);
    }
    anyhow::bail!(
        "{iptables} -S {chain} failed: {}",
        stderr.trim().lines().next().unwrap_or("no message")
    )
}

/// Our rules in an `iptables -S` listing (iptables-nft quotes the label and the comment,
/// legacy may not), in their order.
fn ours(rules: &str, table: &str) -> Vec<OurRule> {
    rules
        .lines()
        .filter(|line| is_ours(line, table))
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let after = |flag: &str| {
                let at = words.iter().position(|w| *w == flag)?;
                Some(words.get(at + 1)?.trim_matches('"').to_string())
            };
            Some(OurRule {
                label: after("--label")?,
                target: after("-j")?,
            })
        })
        .collect()
}

fn is_ours(line: &str, table: &str) -> bool {
    let comment = format!("handoff:{table}");
    line.contains("connlabel")
        && line
            .split_whitespace()
            .any(|w| w.trim_matches('"') == comment)
}

/// The listing without our rules (where ours go is decided among the others).
fn others(rules: &str, table: &str) -> String {
    rules
        .lines()
        .filter(|line| !is_ours(line, table))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Where to insert our rule: the position of the chain's final `-j RETURN` (so it lands just
/// before it, after the administrator's rules), else the end.
fn insert_position(rules: &str) -> usize {
    let rules: Vec<&str> = rules.lines().filter(|l| l.starts_with("-A ")).collect();
    match rules.last() {
        Some(last) if last.trim_end().ends_with("-j RETURN") => rules.len(),
        _ => rules.len() + 1,
    }
}

/// Is forwarded traffic dropped by default on this host (Docker's FORWARD policy)?
fn forward_dropped(iptables: &str) -> bool {
    // A legacy flavour without a filter table drops nothing (and asking would create one).
    !no_legacy_filter_table(iptables)
        && Command::new(iptables)
            .args(["-w", LOCK_WAIT, "-S", "FORWARD"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("-P FORWARD DROP"))
            .unwrap_or(false)
}

/// Does Docker run its nftables firewall backend (no iptables chains at all)?
fn docker_on_nftables() -> bool {
    Command::new("nft")
        .args(["list", "tables"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("docker-bridges"))
        .unwrap_or(false)
}

/// Make sure our rules are in DOCKER-USER, and the fallback at the end of FORWARD, wherever
/// Docker's chains are, or that none is needed. One `iptables -S` per chain.
pub fn ensure(table: &str) -> Result<()> {
    let mut installed = Vec::new();
    for iptables in FLAVOURS {
        match list(iptables, CHAIN)? {
            Listing::Rules(rules) => {
                let isolation = matches!(list(iptables, ISOLATION_CHAIN)?, Listing::Rules(_));
                put(
                    iptables,
                    CHAIN,
                    &rules,
                    &wanted(table, CHAIN, isolation),
                    table,
                )?;
                if let Listing::Rules(forward) = list(iptables, FALLBACK_CHAIN)? {
                    let fallback = wanted(table, FALLBACK_CHAIN, false);
                    put(iptables, FALLBACK_CHAIN, &forward, &fallback, table)?;
                }
                return Ok(());
            }
            Listing::NoChain => installed.push(*iptables),
            Listing::NoBinary => {}
        }
    }
    if docker_on_nftables() {
        return Err(Failure::host(
            "Docker runs its nftables firewall backend, which has no DOCKER-USER chain: \
             handoff cannot let its forwarded flows through Docker's FORWARD policy",
        )
        .into());
    }
    if installed.iter().any(|iptables| forward_dropped(iptables)) {
        return Err(Failure::host(format!(
            "forwarding is dropped by default on this host but no {CHAIN} chain exists (in \
             {}): handoff cannot let its forwarded flows through",
            installed.join(", ")
        ))
        .into());
    }
    // No Docker managing FORWARD (or no iptables at all): nothing to open.
    Ok(())
}

/// How often [`put`] lays its rules again when the chain changed under it: other tables' runs
/// add and take out their own rules between our listing and our insert (seen in CI as
/// "Index of insertion too big" when two sandboxes' tables came and went at once).
const PUT_ATTEMPTS: usize = 5;

/// Make our rules in `chain` (listed as `rules`) exactly `wanted`, in place: when they are not,
/// every one of ours there goes and `wanted` is inserted in order — in DOCKER-USER just before
/// Docker's final RETURN, in FORWARD at the end — and the chain is listed again to check; a
/// chain that changed meanwhile gets another try.
fn put(iptables: &str, chain: &str, rules: &str, wanted: &[OurRule], table: &str) -> Result<()> {
    let mut listing = rules.to_string();
    let mut refused = None;
    for _ in 0..PUT_ATTEMPTS {
        if in_place(&listing, chain, wanted, table) {
            return Ok(());
        }
        if let Err(error) = lay(iptables, chain, &listing, wanted, table) {
            refused = Some(error);
        }
        listing = match list(iptables, chain)? {
            Listing::Rules(rules) => rules,
            _ => anyhow::bail!("{chain} went away while handoff added its rules to it"),
        };
    }
    if in_place(&listing, chain, wanted, table) {
        return Ok(());
    }
    Err(refused.unwrap_or_else(|| {
        Failure::host(format!(
            "handoff's rules in {chain} were not in place after {PUT_ATTEMPTS} tries (the \
             chain kept changing): {iptables} -S {chain} shows them"
        ))
        .into()
    }))
}

/// Whether `listing` holds exactly `wanted` of ours, one after the other, and in DOCKER-USER
/// before Docker's final RETURN (a rule after it is never reached).
fn in_place(listing: &str, chain: &str, wanted: &[OurRule], table: &str) -> bool {
    if ours(listing, table) != wanted {
        return false;
    }
    let rules: Vec<&str> = listing.lines().filter(|l| l.starts_with("-A ")).collect();
    let Some(first) = rules.iter().position(|l| is_ours(l, table)) else {
        return true;
    };
    let last = first + wanted.len();
    let consecutive = rules[first..last].iter().all(|l| is_ours(l, table));
    let before_return = chain != CHAIN
        || rules[last..]
            .iter()
            .any(|l| l.trim_end().ends_with("-j RETURN"))
        || !rules.iter().any(|l| l.trim_end().ends_with("-j RETURN"));
    consecutive && before_return
}

/// Take ours out of `chain` (as `listing` shows it) and insert `wanted` where they belong.
fn lay(iptables: &str, chain: &str, listing: &str, wanted: &[OurRule], table: &str) -> Result<()> {
    for rule in ours(listing, table) {
        delete(iptables, chain, &rule, table)?;
    }
    let first = match chain {
        CHAIN => insert_position(&others(listing, table)),
        _ => {
            others(listing, table)
                .lines()
                .filter(|l| l.starts_with("-A "))
                .count()
                + 1
        }
    };
    for (offset, rule) in wanted.iter().enumerate() {
        let position = (first + offset).to_string();
        let output = run(iptables, &["-I", chain, &position], &rule.spec(table))?;
        if !output.status.success() {
            return Err(Failure::host(format!(
                "cannot add handoff's rule for its flows (-j {}) to {chain} with {iptables}: {}",
                rule.target,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
            .into());
        }
    }
    Ok(())
}

fn delete(iptables: &str, chain: &str, rule: &OurRule, table: &str) -> Result<()> {
    let output = run(iptables, &["-D", chain], &rule.spec(table))?;
    if !output.status.success() {
        anyhow::bail!(
            "cannot remove handoff's rule from {chain} with {iptables}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Remove our rule (every copy of it) from DOCKER-USER and from the end of FORWARD, in every
/// flavour; nothing else is touched. A chain or binary that is gone is done, not an error.
pub fn remove(table: &str) -> Result<()> {
    for iptables in FLAVOURS {
        for chain in [CHAIN, FALLBACK_CHAIN] {
            let Listing::Rules(rules) = list(iptables, chain)? else {
                continue;
            };
            for rule in ours(&rules, table) {
                delete(iptables, chain, &rule, table)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
