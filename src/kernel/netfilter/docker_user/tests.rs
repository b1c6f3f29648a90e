//! The rules handoff keeps in Docker's chains, as `iptables -S` lists them: recognised, placed
//! and checked in place.

use super::*;

#[test]
fn our_rules_are_recognised_quoted_or_not_and_only_for_our_table() {
    let nft = "-N DOCKER-USER\n-A DOCKER-USER -m connlabel --label \"127\" -m comment \
               --comment \"handoff:handoff\" -j DOCKER-ISOLATION-STAGE-1\n\
               -A DOCKER-USER -m connlabel --label \"127\" -m comment \
               --comment \"handoff:handoff\" -j ACCEPT\n-A DOCKER-USER -j RETURN\n";
    let legacy = "-A DOCKER-USER -m connlabel --label 90 -m comment --comment handoff:x -j ACCEPT";
    assert_eq!(
        ours(nft, "handoff"),
        [
            OurRule::new(127, ISOLATION_CHAIN),
            OurRule::new(127, "ACCEPT")
        ]
    );
    assert_eq!(ours(nft, "handoff2"), []);
    assert_eq!(ours(legacy, "x"), [OurRule::new(90, "ACCEPT")]);
    assert_eq!(ours("-A DOCKER-USER -j RETURN", "handoff"), []);
    assert_eq!(ours(&format!("{legacy}\n{legacy}\n"), "x").len(), 2);
    assert_eq!(
        others(nft, "handoff"),
        "-N DOCKER-USER\n-A DOCKER-USER -j RETURN\n"
    );
}

#[test]
fn our_rules_are_in_place_only_together_and_before_dockers_return() {
    let wanted = wanted("handoff", CHAIN, true);
    let jump = "-A DOCKER-USER -m connlabel --label 127 -m comment --comment handoff:handoff \
                -j DOCKER-ISOLATION-STAGE-1";
    let accept = "-A DOCKER-USER -m connlabel --label 127 -m comment --comment \
                  handoff:handoff -j ACCEPT";
    let other = "-A DOCKER-USER -s 10.9.0.0/16 -j DROP";
    let back = "-A DOCKER-USER -j RETURN";
    let chain = |lines: &[&str]| format!("-N DOCKER-USER\n{}\n", lines.join("\n"));
    assert!(in_place(
        &chain(&[other, jump, accept, back]),
        CHAIN,
        &wanted,
        "handoff"
    ));
    assert!(!in_place(
        &chain(&[jump, back, accept]),
        CHAIN,
        &wanted,
        "handoff"
    ));
    assert!(!in_place(
        &chain(&[jump, other, accept, back]),
        CHAIN,
        &wanted,
        "handoff"
    ));
    assert!(!in_place(
        &chain(&[other, back, jump, accept]),
        CHAIN,
        &wanted,
        "handoff"
    ));
    assert!(!in_place(
        &chain(&[accept, back]),
        CHAIN,
        &wanted,
        "handoff"
    ));
    assert!(
        in_place(&chain(&[jump, accept]), CHAIN, &wanted, "handoff"),
        "no RETURN"
    );
}

#[test]
fn the_rules_pass_dockers_isolation_then_accept_only_the_tables_own_flows() {
    let spec = |rule: &OurRule| rule.spec("handoff").join(" ");
    let user = wanted("handoff", CHAIN, true);
    assert_eq!(
        user.iter().map(spec).collect::<Vec<_>>(),
        [
            "-m connlabel --label 127 -m comment --comment handoff:handoff \
             -j DOCKER-ISOLATION-STAGE-1",
            "-m connlabel --label 127 -m comment --comment handoff:handoff -j ACCEPT"
        ]
    );
    // No isolation chain (no Docker network to isolate), and FORWARD's end (after
    // Docker's own jump to it): the accept alone.
    assert_eq!(
        wanted("handoff", CHAIN, false),
        [OurRule::new(127, "ACCEPT")]
    );
    assert_eq!(
        wanted("handoff", FALLBACK_CHAIN, true),
        [OurRule::new(127, "ACCEPT")]
    );
    // Another table, another bit.
    let other = wanted("blue", FALLBACK_CHAIN, false);
    assert_eq!(other, [OurRule::new(flow_label("blue"), "ACCEPT")]);
    assert_ne!(flow_label("blue"), 127);
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
