//! The hole in Docker's FORWARD policy.
//!
//! Docker sets the FORWARD policy to DROP and accepts forwarded traffic only to *published*
//! container ports. A flow we DNAT from another host to a container's unpublished port is
//! therefore dropped, and an accept in our own nftables table cannot help (a drop in any base
//! chain wins). Docker's answer for its users is the `DOCKER-USER` chain, which it jumps to
//! first and never touches: we add one rule there accepting exactly the flows carrying our
//! conntrack label (set by our DNAT rule, see `ruleset.rs`), tagged with a comment naming our
//! table. It is added idempotently, removed when our table routes nothing any more, and
//! Docker's own chains are never flushed or reordered.
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

use super::ruleset::FLOW_LABEL;
use crate::error::Failure;

const CHAIN: &str = "DOCKER-USER";
/// Where the fallback goes: the end of FORWARD.
const FALLBACK_CHAIN: &str = "FORWARD";
/// The flavours of iptables Docker may be using, the default first.
const FLAVOURS: &[&str] = &["iptables", "iptables-legacy", "iptables-nft"];
/// How long to wait for the xtables lock.
const LOCK_WAIT: &str = "5";

fn rule(table: &str) -> Vec<String> {
    vec![
        "-m".into(),
        "connlabel".into(),
        "--label".into(),
        FLOW_LABEL.to_string(),
        "-m".into(),
        "comment".into(),
        "--comment".into(),
        format!("handoff:{table}"),
        "-j".into(),
        "ACCEPT".into(),
    ]
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

/// Does an `iptables -S` listing hold our rule? (iptables-nft quotes the comment, legacy may
/// not.)
fn has_our_rule(rules: &str, table: &str) -> bool {
    copies(rules, table) > 0
}

fn copies(rules: &str, table: &str) -> usize {
    let comment = format!("handoff:{table}");
    rules
        .lines()
        .filter(|line| {
            line.contains("connlabel")
                && line
                    .split_whitespace()
                    .any(|w| w.trim_matches('"') == comment)
        })
        .count()
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

/// Make sure our accept rule is in DOCKER-USER, and its fallback at the end of FORWARD,
/// wherever Docker's chains are, or that none is needed. One `iptables -S` per chain.
pub fn ensure(table: &str) -> Result<()> {
    let mut installed = Vec::new();
    for iptables in FLAVOURS {
        match list(iptables, CHAIN)? {
            Listing::Rules(rules) => {
                if !has_our_rule(&rules, table) {
                    let position = insert_position(&rules).to_string();
                    add(iptables, &["-I", CHAIN, &position], table)?;
                }
                if let Listing::Rules(forward) = list(iptables, FALLBACK_CHAIN)? {
                    if !has_our_rule(&forward, table) {
                        add(iptables, &["-A", FALLBACK_CHAIN], table)?;
                    }
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

/// Add our rule with `iptables` at `place` (`-I CHAIN N` or `-A CHAIN`).
fn add(iptables: &str, place: &[&str], table: &str) -> Result<()> {
    let output = run(iptables, place, &rule(table))?;
    if !output.status.success() {
        return Err(Failure::host(format!(
            "cannot add the accept rule for handoff's flows to {} with {iptables}: {}",
            place[1],
            String::from_utf8_lossy(&output.stderr).trim()
        ))
        .into());
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
            for _ in 0..copies(&rules, table) {
                let output = run(iptables, &["-D", chain], &rule(table))?;
                if !output.status.success() {
                    anyhow::bail!(
                        "cannot remove handoff's rule from {chain} with {iptables}: {}",
                        String::from_utf8_lossy(&output.stderr).trim()
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_rule_is_recognised_quoted_or_not_and_only_for_our_table() {
        let nft = "-N DOCKER-USER\n-A DOCKER-USER -m connlabel --label \"127\" -m comment \
                   --comment \"handoff:handoff\" -j ACCEPT\n-A DOCKER-USER -j RETURN\n";
        let legacy =
            "-A DOCKER-USER -m connlabel --label 127 -m comment --comment handoff:x -j ACCEPT";
        assert!(has_our_rule(nft, "handoff"));
        assert!(!has_our_rule(nft, "handoff2"));
        assert!(has_our_rule(legacy, "x"));
        assert!(!has_our_rule("-A DOCKER-USER -j RETURN", "handoff"));
        assert_eq!(copies(&format!("{legacy}\n{legacy}\n"), "x"), 2);
    }

    #[test]
    fn the_rule_accepts_only_labelled_flows_and_names_its_table() {
        assert_eq!(
            rule("handoff").join(" "),
            "-m connlabel --label 127 -m comment --comment handoff:handoff -j ACCEPT"
        );
    }

    #[test]
    fn the_rule_goes_after_the_administrators_rules_and_before_dockers_return() {
        let docker_default = "-N DOCKER-USER\n-A DOCKER-USER -j RETURN\n";
        assert_eq!(insert_position(docker_default), 1);
        let restricted = "-N DOCKER-USER\n-A DOCKER-USER -s 10.9.0.0/16 -j DROP\n\
                          -A DOCKER-USER -i eth1 -j DROP\n-A DOCKER-USER -j RETURN\n";
        assert_eq!(
            insert_position(restricted),
            3,
            "after both drops, before RETURN"
        );
        assert_eq!(insert_position("-N DOCKER-USER\n"), 1);
        let no_return = "-N DOCKER-USER\n-A DOCKER-USER -s 10.9.0.0/16 -j DROP\n";
        assert_eq!(insert_position(no_return), 2, "at the end");
    }
}
