//! The hole in Docker's FORWARD policy.
//!
//! Docker sets the FORWARD policy to DROP and accepts forwarded traffic only to *published*
//! container ports. A flow we DNAT from another host to a container's unpublished port is
//! therefore dropped, and an accept in our own nftables table cannot help (a drop in any base
//! chain wins). Docker's answer for its users is the `DOCKER-USER` chain, which it jumps to
//! first and never touches: we insert one rule there accepting exactly the flows carrying our
//! conntrack label (set by our DNAT rule, see `ruleset.rs`), tagged with a comment naming our
//! table. It is added idempotently, removed when our table routes nothing any more, and
//! Docker's own chains are never flushed or reordered.
//!
//! The rule goes through the `iptables` command, the same one Docker uses, so it lands in the
//! right place on hosts with iptables-nft and with iptables-legacy alike.

use std::process::{Command, Output};

use anyhow::{Context, Result};

use super::ruleset::FLOW_LABEL;

const CHAIN: &str = "DOCKER-USER";

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

fn iptables(args: &[&str], rule: &[String]) -> Result<Output> {
    Command::new("iptables")
        .args(["-w", "5"])
        .args(args)
        .args(rule)
        .output()
        .context("running iptables")
}

/// The rules of DOCKER-USER (`None` when there is no such chain, i.e. no Docker managing this
/// host's FORWARD policy, or no iptables at all).
fn chain_rules() -> Option<String> {
    let output = Command::new("iptables")
        .args(["-w", "5", "-S", CHAIN])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Does an `iptables -S` listing hold our rule? (iptables-nft quotes the comment, legacy may
/// not.)
fn has_our_rule(rules: &str, table: &str) -> bool {
    let comment = format!("handoff:{table}");
    rules.lines().any(|line| {
        line.contains("connlabel")
            && line
                .split_whitespace()
                .any(|w| w.trim_matches('"') == comment)
    })
}

fn chain_exists() -> bool {
    chain_rules().is_some()
}

/// Make sure our accept rule is in DOCKER-USER, when Docker is there. Returns whether it is.
/// One `iptables -S` in the usual case (the rule is already there).
pub fn ensure(table: &str) -> Result<bool> {
    let Some(rules) = chain_rules() else {
        return Ok(false);
    };
    let rule = rule(table);
    if has_our_rule(&rules, table) {
        return Ok(true);
    }
    let output = iptables(&["-I", CHAIN, "1"], &rule)?;
    if !output.status.success() {
        anyhow::bail!(
            "cannot add the accept rule for handoff's flows to {CHAIN}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(true)
}

/// Remove our rule (every copy of it) from DOCKER-USER; nothing else is touched.
pub fn remove(table: &str) -> Result<()> {
    if !chain_exists() {
        return Ok(());
    }
    let rule = rule(table);
    // Bounded: one deletion per copy, and there is at most one unless someone duplicated it.
    for _ in 0..16 {
        if !iptables(&["-C", CHAIN], &rule)?.status.success() {
            return Ok(());
        }
        let output = iptables(&["-D", CHAIN], &rule)?;
        if !output.status.success() {
            anyhow::bail!(
                "cannot remove handoff's rule from {CHAIN}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
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
    }

    #[test]
    fn the_rule_accepts_only_labelled_flows_and_names_its_table() {
        assert_eq!(
            rule("handoff").join(" "),
            "-m connlabel --label 127 -m comment --comment handoff:handoff -j ACCEPT"
        );
    }
}
