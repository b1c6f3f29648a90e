//! The host's policy: a component it forbids is refused, reported, and never started; a
//! rollout of it halts when it reaches the host.

use super::*;
use crate::fleet::records::state;
use crate::fleet::rollout::Progress;

const PRIVILEGED: &str = r#"{"components": [
    {"name": "web", "repo": "registry.example/web", "tag": "v1", "privileged": true,
     "ports": [{"external": 80, "container": 8080}]},
    {"name": "api", "repo": "registry.example/api", "tag": "v1",
     "ports": [{"external": 443, "container": 8080}]}]}"#;

#[test]
fn a_component_the_policy_forbids_is_refused_with_the_reason_and_the_others_run() {
    let mut bench = Bench::new();
    bench.set_config(PRIVILEGED, false);
    let mut agent = bench.agent("h1", Trust::Policy(POLICY));
    settle(&mut agent);
    assert_eq!(agent.host.calls, ["start api v1"]);
    let web = bench.status("h1", "web").expect("web");
    assert_eq!(web.state, state::REFUSED);
    assert_eq!(
        web.reason.as_deref(),
        Some("privileged not allowed by /etc/handoff/policy.json")
    );
    assert!(bench
        .log("h1")
        .contains("web: refused: privileged not allowed"));
}

#[test]
fn an_image_outside_the_allowed_repositories_is_refused() {
    let mut bench = Bench::new();
    bench.set_config(
        &CONFIG.replace("registry.example/web", "evil.example/web"),
        false,
    );
    let mut agent = bench.agent("h1", Trust::Policy(POLICY));
    settle(&mut agent);
    assert_eq!(agent.host.calls, ["start api v1"]);
    let reason = bench.status("h1", "web").unwrap().reason.unwrap();
    assert!(
        reason.contains("evil.example/web") && reason.contains("not allowed"),
        "{reason}"
    );
}

#[test]
fn a_component_made_forbidden_keeps_what_runs_and_reports_it_refused_with_its_tag() {
    let mut bench = Bench::new();
    bench.set_config(CONFIG, false);
    let mut agent = bench.agent("h1", Trust::Policy(POLICY));
    settle(&mut agent);
    bench.set_config(PRIVILEGED, false);
    settle(&mut agent);
    assert_eq!(agent.host.tag("web"), Some("v1"), "what ran is kept");
    assert!(!agent
        .host
        .calls
        .iter()
        .any(|c| c.starts_with("kill") || c.starts_with("withdraw")));
    let web = bench.status("h1", "web").unwrap();
    assert_eq!(
        (web.state.as_str(), web.tag.as_deref()),
        (state::REFUSED, Some("v1"))
    );
}

#[test]
fn a_rollout_of_a_forbidden_component_halts_with_the_policy_reason_when_it_reaches_the_host() {
    let mut bench = Bench::new();
    bench.set_config(CONFIG, false);
    let mut h1 = bench.agent("h1", Trust::Anything);
    let mut h2 = bench.agent(
        "h2",
        Trust::Policy(r#"{"images": ["registry.example/api"], "ports": [80, 443]}"#),
    );
    settle(&mut h1);
    settle(&mut h2);
    let rollout = bench.update("web", "v2", 1, false);
    settle(&mut h2);
    let progress = bench.snapshot().progress(&rollout);
    let Progress::Halted { host, reason } = progress else {
        panic!("not halted: {progress:?}");
    };
    assert_eq!(host, "h2");
    assert!(
        reason.starts_with("host h2: refused: image registry.example/web not allowed"),
        "{reason}"
    );
    settle(&mut h1);
    assert_eq!(
        h1.host.called("update web v2"),
        0,
        "no host updates once it halted"
    );
}
