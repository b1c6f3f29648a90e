use super::super::drain::finish_drain;
use super::super::testkit::{docker_address, update_and_drain, Kit};
use super::super::update::{start, update};
use crate::error::{exit_code_of, ExitCode};
use crate::kernel::conntrack::fake::{dnat_flow, event, FakeConntrack};
use crate::kernel::conntrack::{Change, Flow, FlowState};
use crate::ops::retire::Retirement;

/// A flow from 10.0.2.2:`port` to the host's port 80, answered by `backend`:8080.
pub fn flow(port: u16, backend: std::net::IpAddr, state: FlowState) -> Flow {
    dnat_flow(port, &format!("{backend}:8080"), state)
}

#[test]
fn an_update_switches_to_the_new_version_then_drains_signals_and_retires_the_old() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    assert_eq!(kit.routed(), Some(docker_address(2)));
    let old = kit.runtime.running()[0].id.clone();
    let (report, drain) = update_and_drain(&env, kit.web(), Some("v2"));
    assert_eq!(report.switched.unwrap().address, docker_address(3));
    assert_eq!(kit.routed(), Some(docker_address(3)));
    assert_eq!(
        kit.serving(),
        vec![("repo:v2".to_string(), Some(docker_address(3)))]
    );
    assert_eq!(drain.drained.len(), 1);
    assert_eq!(drain.retired[0].retirement, Retirement::Done);
    assert_eq!(
        *kit.probe.posts.borrow(),
        vec![(docker_address(2), 8080, "/quit".to_string())]
    );
    let calls = kit.runtime.calls();
    assert!(
        calls.contains(&format!("exec {old} /bin/sh -c echo bye")),
        "{calls:?}"
    );
    assert!(calls.contains(&format!("stop {old} 2s")), "{calls:?}");
    assert!(calls.contains(&format!("remove {old}")), "{calls:?}");
    let web = kit.state().component("web");
    assert_eq!(web.active.unwrap().address, docker_address(3));
    assert!(web.draining.is_empty());
    assert_eq!(kit.firewall.hairpin(), vec![docker_address(3)]);
}

#[test]
fn a_version_that_never_becomes_ready_is_removed_and_changes_nothing() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    let before = kit.state();
    kit.probe.never_ready(docker_address(3));
    let error = update(&env, kit.web(), Some("v2")).unwrap_err();
    assert_eq!(exit_code_of(&error), ExitCode::NotReady, "{error:#}");
    assert!(format!("{error:#}").contains("the running version keeps serving"));
    assert_eq!(kit.runtime.all().len(), 1, "the unready container is gone");
    assert_eq!(kit.routed(), Some(docker_address(2)));
    assert_eq!(kit.state(), before);
}

#[test]
fn start_refuses_a_component_that_already_runs() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    let error = start(&env, kit.web()).unwrap_err();
    assert_eq!(exit_code_of(&error), ExitCode::Input);
    assert_eq!(kit.runtime.all().len(), 1);
}

#[test]
fn an_image_that_cannot_be_had_is_refused_before_anything_starts() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    kit.runtime.fail_pulls();
    let error = update(&env, kit.web(), Some("v9")).unwrap_err();
    assert_eq!(exit_code_of(&error), ExitCode::Input, "{error:#}");
    assert_eq!(kit.runtime.all().len(), 1);
}

#[test]
fn without_waiting_the_old_version_stays_draining_until_a_drain_retires_it() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    let report = update(&env, kit.web(), Some("v2")).unwrap();
    assert_eq!(report.switched.unwrap().address, docker_address(3));
    assert_eq!(kit.runtime.running().len(), 2);
    assert_eq!(kit.state().component("web").draining.len(), 1);
    let drain = finish_drain(&env, kit.web(), None).unwrap();
    assert_eq!(drain.retired.len(), 1);
    assert_eq!(kit.runtime.running().len(), 1);
}

#[test]
fn the_drain_waits_for_the_old_versions_flow_then_expires_its_finished_entries() {
    let kit = Kit::docker();
    start(&kit.quiet_env(), kit.web()).unwrap();
    let old = docker_address(2);
    let open = flow(40000, old, FlowState::Established);
    let finished = flow(40001, old, FlowState::TimeWait);
    let closing = flow(40000, old, FlowState::TimeWait);
    let conntrack = FakeConntrack::with_table(vec![open, finished.clone()]).then(move |table| {
        table[0] = closing.clone();
        vec![event(Change::Present(closing))]
    });
    let env = kit.env(conntrack);
    let (_, drain) = update_and_drain(&env, kit.web(), Some("v2"));
    assert_eq!(drain.drained.len(), 1);
    assert_eq!(kit.runtime.running().len(), 1);
}

#[test]
fn at_drain_timeout_the_old_version_is_given_up_on_its_live_flow_kept_for_the_grace() {
    let kit = Kit::with_config(
        r#"{"components": [{"name": "web", "repo": "repo", "tag": "v1", "pull": "never",
            "ports": [{"external": 80, "container": 8080}], "drainTimeout": 1}]}"#,
    );
    start(&kit.quiet_env(), kit.web()).unwrap();
    let live = flow(40000, docker_address(2), FlowState::Established);
    let env = kit.env(FakeConntrack::with_table(vec![live]));
    let (_, drain) = update_and_drain(&env, kit.web(), Some("v2"));
    assert_eq!(drain.given_up.len(), 1);
    assert_eq!(drain.given_up[0].1.len(), 1, "the flow is listed");
    assert_eq!(kit.runtime.running().len(), 1, "retired anyway");
}

#[test]
fn with_no_connection_termination_check_the_old_version_is_retired_at_once() {
    let kit = Kit::with_config(
        r#"{"components": [{"name": "web", "repo": "repo", "tag": "v1", "pull": "never",
            "ports": [{"external": 80, "container": 8080}], "terminationChecks": []}]}"#,
    );
    start(&kit.quiet_env(), kit.web()).unwrap();
    let live = flow(40000, docker_address(2), FlowState::Established);
    let env = kit.env(FakeConntrack::with_table(vec![live]));
    let (_, drain) = update_and_drain(&env, kit.web(), Some("v2"));
    assert_eq!(drain.given_up.len(), 1);
    assert_eq!(kit.runtime.running().len(), 1);
}

#[test]
fn a_failed_pull_of_an_image_present_locally_warns_and_goes_on() {
    let kit = Kit::with_config(
        r#"{"components": [{"name": "web", "repo": "repo", "tag": "v1", "pull": "always",
            "ports": [{"external": 80, "container": 8080}]}]}"#,
    );
    kit.runtime.fail_pulls();
    start(&kit.quiet_env(), kit.web()).unwrap();
    let warnings = kit.warnings();
    assert!(
        warnings.iter().any(|w| w.contains("using the local image")),
        "{warnings:?}"
    );
    assert_eq!(kit.serving().len(), 1);
}

/// One read per lock hold: an update holds the lock twice (launch and switch; retirement),
/// and reads the kernel's map and lists the containers once in each.
#[test]
fn an_update_reads_the_map_and_lists_the_containers_once_per_lock_hold() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    start(&env, kit.web()).unwrap();
    let (reads, lists) = (kit.firewall.reads(), listed(&kit));
    update_and_drain(&env, kit.web(), Some("v2"));
    assert_eq!(kit.firewall.reads() - reads, 2, "{:?}", kit.firewall.log());
    assert_eq!(listed(&kit) - lists, 2, "{:?}", kit.runtime.calls());
}

fn listed(kit: &Kit) -> usize {
    kit.runtime.calls().iter().filter(|c| *c == "list").count()
}
