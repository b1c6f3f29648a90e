use super::super::converge::{converge, Serving};
use super::super::launch::launch;
use super::super::session::Session;
use super::super::testkit::{docker_address, Kit};
use super::super::update::update;

#[test]
fn a_component_missing_here_is_started_at_the_configs_tag() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    let results = converge(&env, &kit.config);
    assert_eq!(results.len(), 1);
    assert_eq!(
        *results[0].1.as_ref().unwrap(),
        Serving {
            tag: kit.web().tag.clone(),
            address: docker_address(2),
            started: true,
        }
    );
    assert_eq!(kit.routed(), Some(docker_address(2)));
}

#[test]
fn a_serving_component_is_reported_as_it_is_and_nothing_is_touched() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    converge(&env, &kit.config);
    update(&env, kit.web(), Some("v2")).unwrap();
    let changes = |calls: Vec<String>| calls.into_iter().filter(|c| c != "list").count();
    let calls_before = changes(kit.runtime.calls());
    let log_before = kit.firewall.log();
    let results = converge(&env, &kit.config);
    let serving = results[0].1.as_ref().unwrap();
    assert_eq!(serving.tag, "v2", "the tag that serves, not the config's");
    assert!(!serving.started);
    assert_eq!(kit.firewall.log(), log_before, "no transaction");
    assert_eq!(
        changes(kit.runtime.calls()),
        calls_before,
        "no container started or stopped: {:?}",
        kit.runtime.calls()
    );
}

#[test]
fn a_component_that_fails_to_start_is_reported_and_the_others_still_converge() {
    let kit = Kit::with_config(
        r#"{"components":[
            {"name":"web","repo":"missing","tag":"v1","ports":[{"external":80,"container":8080}]},
            {"name":"api","repo":"repo","tag":"v1","ports":[{"external":81,"container":8080}]}]}"#,
    );
    let env = kit.quiet_env();
    kit.runtime.fail_pulls();
    let results = converge(&env, &kit.config);
    assert_eq!(results[0].0, "web");
    assert!(results[0].1.is_err(), "web's image cannot be pulled");
    let api = results[1].1.as_ref().unwrap();
    assert!(api.started);
}

#[test]
fn a_container_left_by_an_update_that_died_is_marked_draining_for_the_agent_to_retire() {
    let kit = Kit::docker();
    let env = kit.quiet_env();
    converge(&env, &kit.config);
    // An update that launched its container and died before the switch (an agent SIGKILLed
    // during its turn): the container runs, nothing records it.
    {
        let mut session = Session::open(&env, kit.web(), "update").unwrap();
        launch(&env, &mut session, kit.web(), "v2").unwrap();
    }
    assert!(kit.state().component("web").draining.is_empty());
    let results = converge(&env, &kit.config);
    let serving = results[0].1.as_ref().unwrap();
    assert_eq!(
        serving.address,
        docker_address(2),
        "the old one still serves"
    );
    let draining = kit.state().component("web").draining;
    assert_eq!(draining.len(), 1, "{draining:?}");
    assert_eq!(draining[0].address, docker_address(3));
    assert_eq!(kit.routed(), Some(docker_address(2)));
}
