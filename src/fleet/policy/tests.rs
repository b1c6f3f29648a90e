//! The policy's unit tests, through `Policy::parse` and `Policy::check` as the agent calls them:
//! here the helpers and what concerns the whole policy (its defaults, its file, its JSON), and
//! one module per rule beside them, as the rules have a file each.

mod bind_sources;
mod images;
mod ports;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::Policy;
use crate::config::Component;
use crate::error::{exit_code_of, ExitCode};

const AT: &str = "/etc/handoff/policy.json";

fn policy(text: &str) -> Policy {
    Policy::parse(text, Path::new(AT)).expect("policy")
}

fn parse_error(text: &str) -> String {
    let error = Policy::parse(text, Path::new(AT)).expect_err("refused");
    assert_eq!(exit_code_of(&error), ExitCode::Input, "{error:#}");
    let message = format!("{error:#}");
    assert!(message.starts_with(AT), "{message}");
    message
}

/// A component as the config describes it: `fields` follow its name.
fn component(fields: &str) -> Component {
    let text = format!(r#"{{"components": [{{"name": "web", {fields}}}]}}"#);
    crate::config::parse(&text)
        .expect("config")
        .components
        .remove(0)
}

/// The image `registry.example.com/web` with `fields`.
fn web(fields: &str) -> Component {
    let separator = if fields.is_empty() { "" } else { ", " };
    component(&format!(
        r#""repo": "registry.example.com/web"{separator}{fields}"#
    ))
}

const WEB_ONLY: &str = r#"{"images": ["registry.example.com/web"]}"#;

#[test]
fn a_policy_naming_only_the_image_runs_a_plain_web_component() {
    let plain = web(
        r#""tag": "v2", "ports": [{"external": 80, "container": 8080, "kind": "http"},
                                  {"external": 443, "container": 8443}],
           "readyChecks": [{"kind": "http", "port": 8080}]"#,
    );
    policy(WEB_ONLY).check(&plain).unwrap();
}

#[test]
fn the_defaults_refuse_whatever_widens_a_components_reach_into_the_host() {
    let policy = policy(WEB_ONLY);
    for (fields, refusal) in [
        (
            r#""privileged": true"#,
            format!("privileged not allowed by {AT}"),
        ),
        (
            r#""network": "host""#,
            format!("network host not allowed by {AT} (allowed: bridge)"),
        ),
        (
            r#""ports": [{"external": 22, "container": 22}]"#,
            format!("port 22/tcp not allowed by {AT} (allowed: 80/tcp, 443/tcp)"),
        ),
        (
            r#""ports": [{"external": 443, "container": 443, "protocol": "udp"}],
               "readyChecks": [{"kind": "tcp", "port": 443}]"#,
            format!("port 443/udp not allowed by {AT} (allowed: 80/tcp, 443/tcp)"),
        ),
        (
            r#""defineComponentLinks": [{"name": "db", "port": 5432}]"#,
            format!("link db at port 5432/tcp not allowed by {AT} (allowed linkPorts: none)"),
        ),
        (
            r#""localhostClients": true"#,
            format!("localhostClients not allowed by {AT}"),
        ),
        (
            r#""bindings": [{"external": "/srv/data", "volume": "/data"}]"#,
            format!("binding /srv/data not allowed by {AT} (allowed: none)"),
        ),
        (
            r#""bindings": [{"external": "cache", "volume": "/cache"}]"#,
            format!(
                "binding cache not allowed by {AT} (a named volume; allowed namedVolumes: \
                 none)"
            ),
        ),
        (
            r#""volumesFrom": ["other"]"#,
            format!("volumesFrom (other) not allowed by {AT}"),
        ),
    ] {
        assert_eq!(policy.check(&web(fields)), Err(refusal), "{fields}");
    }
}

#[test]
fn every_field_allows_what_it_names() {
    let everything = web(
        r#""privileged": true, "network": "backend", "localhostClients": true,
           "ports": [{"external": 22, "container": 22},
                     {"external": 53, "container": 53, "protocol": "udp"}],
           "defineComponentLinks": [{"name": "db", "port": 5432}],
           "bindings": [{"external": "/srv/data/{container_id}", "volume": "/data"},
                        {"external": "cache", "volume": "/cache"}],
           "volumesFrom": ["other:ro"]"#,
    );
    let open = policy(
        r#"{"images": ["registry.example.com/*"], "privileged": true,
            "networks": ["backend"], "ports": [22, "53/udp"], "linkPorts": ["5432"],
            "localhostClients": true, "bindings": ["/srv/data"],
            "namedVolumes": ["cache"], "volumesFrom": true}"#,
    );
    open.check(&everything).unwrap();
    assert!(policy(WEB_ONLY).check(&everything).is_err());
}

#[test]
fn a_component_without_repo_is_refused() {
    let address = component(r#""ports": [{"external": 80, "container": 80}]"#);
    let refusal = policy(WEB_ONLY).check(&address).unwrap_err();
    assert_eq!(
        refusal,
        format!(
            "component web without repo (an address backend) not allowed by {AT}: a fleet \
             agent runs only images"
        )
    );
}

#[test]
fn networks_are_matched_by_exact_name() {
    let policy =
        policy(r#"{"images": ["registry.example.com/web"], "networks": ["backend", "bridge"]}"#);
    policy.check(&web(r#""network": "backend""#)).unwrap();
    policy.check(&web("")).unwrap();
    for refused in ["host", "Backend", "container:other", "backend2"] {
        assert_eq!(
            policy.check(&web(&format!(r#""network": "{refused}""#))),
            Err(format!(
                "network {refused} not allowed by {AT} (allowed: backend, bridge)"
            ))
        );
    }
}

#[test]
fn an_unknown_field_is_refused_with_its_name_and_position() {
    let message = parse_error("{\"images\": [],\n  \"privilegd\": true}");
    assert!(message.contains("unknown field `privilegd`"), "{message}");
    assert!(message.contains("line 2 column"), "{message}");
}

#[test]
fn malformed_json_is_refused_with_its_line_and_column() {
    let message = parse_error("{\n  \"images\": [\"nginx\",\n}");
    assert!(message.contains("line 3 column 1"), "{message}");
    let wrong_type = parse_error(r#"{"images": [], "privileged": "yes"}"#);
    assert!(
        wrong_type.contains("privileged: invalid type: string \"yes\", expected a boolean"),
        "{wrong_type}"
    );
    assert!(parse_error(" \n").contains("the file is empty"));
    assert!(parse_error(r#"{"images": []} {}"#).contains("after the JSON object"));
}

#[test]
fn a_policy_file_writable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.json");
    fs::write(&file, WEB_ONLY).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o666)).unwrap();
    let error = Policy::load(&file).unwrap_err();
    assert_eq!(exit_code_of(&error), ExitCode::Input);
    let message = format!("{error:#}");
    assert!(
        message.contains(&format!("policy {} is writable", file.display())),
        "{message}"
    );
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let loaded = Policy::load(&file).unwrap();
    assert_eq!(
        loaded.check(&web(r#""privileged": true"#)),
        Err(format!("privileged not allowed by {}", file.display()))
    );
}

#[test]
fn a_missing_policy_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let error = Policy::load(&dir.path().join("policy.json")).unwrap_err();
    assert_eq!(exit_code_of(&error), ExitCode::Input);
    assert!(
        format!("{error:#}").contains("cannot read policy"),
        "{error:#}"
    );
}
