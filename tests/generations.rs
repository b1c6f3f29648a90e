//! The switch's transaction only adds (a new generation of the component's maps and rules in
//! front of the old one: `src/kernel/netfilter/generations.rs`), on the real kernel: what
//! nftables reports while a switch commits, where new connections go, and when the older
//! generations are deleted.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// `generations::KEPT`: older generations a switch leaves before it deletes them itself.
const KEPT: usize = 8;

/// The maps the rules of web's chain look up, first rule first.
fn chain_maps(sandbox: &Sandbox) -> Vec<String> {
    let ruleset = sandbox.ruleset();
    let chain = ruleset
        .split("chain component_web {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap_or_else(|| panic!("no chain component_web: {ruleset}"));
    chain
        .split("map @")
        .skip(1)
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

/// What `nft monitor` reports in the gateway namespace while `during` runs.
fn monitored(sandbox: &Sandbox, during: impl FnOnce()) -> String {
    let mut monitor = Command::new("ip")
        .args(["netns", "exec", &sandbox.gateway, "nft", "monitor"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("nft monitor");
    std::thread::sleep(Duration::from_millis(300));
    during();
    std::thread::sleep(Duration::from_millis(300));
    let _ = monitor.kill();
    let _ = monitor.wait();
    let mut events = String::new();
    if let Some(mut stdout) = monitor.stdout.take() {
        let _ = stdout.read_to_string(&mut events);
    }
    events
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn a_switch_only_adds_and_the_older_generations_go_after_the_drain() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    sandbox.serve_both_on_a();
    assert_eq!(chain_maps(&sandbox), ["backend_web", "backend6_web"]);

    let events = monitored(&sandbox, || {
        sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_B]);
    });
    assert!(
        events.contains("create map inet handoff backend_web_g1")
            && events.contains("insert rule inet handoff component_web"),
        "the switch added a generation: {events}"
    );
    assert!(
        !events.contains("delete"),
        "the switch deleted something (its transaction then waits for an RCU grace period): \
         {events}"
    );
    assert_eq!(
        chain_maps(&sandbox),
        [
            "backend_web_g1",
            "backend6_web_g1",
            "backend_web",
            "backend6_web"
        ]
    );
    let load = sandbox.requests(&sandbox.client, &format!("{GATEWAY}:80"), 300);
    assert_served_by(&load, "b");
    assert_eq!(load["by_backend"]["a"].as_u64().unwrap_or(0), 0, "{load}");
    let listed = sandbox.list_json();
    assert_eq!(listed["components"][0]["active"], BACKEND_B, "{listed}");

    // Switches with no drain between them leave at most KEPT older generations.
    let mut most = 0;
    for round in 0..2 * KEPT + 2 {
        let to = if round % 2 == 0 { BACKEND_A } else { BACKEND_B };
        sandbox.handoff_ok(&["switch", "web", "--to", to]);
        most = most.max(chain_maps(&sandbox).len() / 2);
    }
    assert!(
        most <= KEPT + 1,
        "{most} generations in the chain: {:?}",
        chain_maps(&sandbox)
    );
    let newest = chain_maps(&sandbox)[0].clone();
    assert_served_by(
        &sandbox.requests(&sandbox.client, &format!("{GATEWAY}:80"), 300),
        "b",
    );

    // The drain's end takes the older generations away: their rules and their maps.
    sandbox.handoff_ok(&["drain", "web", "--wait", "--timeout", "20"]);
    assert_eq!(
        chain_maps(&sandbox),
        [newest.clone(), newest.replace("backend_", "backend6_")]
    );
    let ruleset = sandbox.ruleset();
    assert_eq!(
        ruleset.matches("map backend_web").count(),
        1,
        "only the newest IPv4 map is left: {ruleset}"
    );
    assert_served_by(
        &sandbox.requests(&sandbox.client, &format!("{GATEWAY}:80"), 300),
        "b",
    );

    // A change of the layout (a canary) lays the chain out again, from generation 0.
    sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_A, "--weight", "50"]);
    let maps = chain_maps(&sandbox);
    assert_eq!(maps, ["canary_web", "backend_web", "backend6_web"]);
    let ruleset = sandbox.ruleset();
    assert!(
        !ruleset.contains("backend_web_g") && !ruleset.contains("backend6_web_g"),
        "a generation is left: {ruleset}"
    );
}
