//! The config's parsing and validation, case by case: gantry's fields, handoff's additions,
//! and every refusal with the place it names.

use super::*;

/// The production config from the Quay.io article, as gantry ran it.
const QUAY: &str = include_str!("../../examples/quay.json");

fn error_of(text: &str) -> String {
    format!("{:#}", parse(text).unwrap_err())
}

fn one(component: &str) -> String {
    format!(r#"{{"components": [{component}]}}"#)
}

#[test]
fn the_seed_production_config_passes_unchanged() {
    let config = parse(QUAY).expect("quay config");
    let quay = config.component("quay").unwrap();
    assert_eq!(quay.repo.as_deref(), Some("quay.io/quay/quay"));
    assert_eq!(quay.ready_timeout, 100_000);
    assert_eq!(quay.ready_checks[0].kind, CheckKind::Https);
    assert_eq!(
        quay.port_pairs(),
        vec![PortPair::tcp(80, 80), PortPair::tcp(443, 443)]
    );
    assert_eq!(quay.bindings.len(), 2);
}

#[test]
fn gantry_defaults_apply() {
    let config = parse(&one(
        r#"{"name":"web","ports":[{"external":80,"container":8080}]}"#,
    ))
    .unwrap();
    let web = &config.components[0];
    assert_eq!(web.tag, "latest");
    assert_eq!(web.ready_timeout, 10_000);
    assert_eq!(web.termination_checks.len(), 1);
    assert_eq!(web.ports[0].kind, PortKind::Tcp);
    assert_eq!(web.drain_timeout_ms(), DEFAULT_DRAIN_TIMEOUT_MS);
}

#[test]
fn every_gantry_field_is_accepted() {
    let text = one(
        r#"{"name":"full","repo":"r","tag":"v1","command":["a","b"],"user":"nobody",
        "privileged":true,"ports":[{"external":80,"container":80,"kind":"http"}],
        "bindings":[{"external":"/srv/{container_id}","volume":"/data"}],
        "volumesFrom":["other"],"environmentVariables":[{"name":"A","value":"1"}],
        "readyChecks":[{"id":"r","kind":"http","port":80,"path":"/ok","timeout":2}],
        "healthChecks":[{"kind":"tcp","port":80}],"readyTimeout":5000,
        "terminationSignals":[{"kind":"http","port":80,"path":"/quit","timeout":1},
                              {"kind":"exec","exec_command":["kill","1"]}],
        "terminationChecks":[{"kind":"connection"}],
        "defineComponentLinks":[{"name":"db","port":5432,"kind":"tcp"}],
        "requireComponentLinks":[{"name":"db","alias":"database"}],"drainTimeout":1000,
        "pull":"never","network":"backend","stopTimeout":5}"#,
    );
    parse(&text).expect("all fields");
}

#[test]
fn unknown_fields_name_the_field_and_position() {
    let message = error_of(&one(r#"{"name":"web","ports":[], "readyTimout": 5}"#));
    assert!(message.contains("unknown field `readyTimout`"), "{message}");
    assert!(message.contains("line 1 column"), "{message}");
    let nested = error_of(&one(
        r#"{"name":"web","ports":[{"external":80,"contianer":1}]}"#,
    ));
    assert!(nested.contains("components[0].ports[0]"), "{nested}");
    assert!(nested.contains("unknown field `contianer`"), "{nested}");
}

#[test]
fn empty_and_non_json_files_are_refused() {
    assert!(error_of("").contains("empty"));
    assert!(error_of("  \n").contains("empty"));
    let message = error_of("components: []");
    assert!(message.contains("line 1 column 1"), "{message}");
    assert!(error_of(r#"{"components": []} trailing"#).contains("after the JSON object"));
}

#[test]
fn missing_name_is_refused() {
    let message = error_of(&one(r#"{"repo":"x"}"#));
    assert!(message.contains("missing field `name`"), "{message}");
}

#[test]
fn bad_names_are_refused() {
    for name in ["Web", "-web", "", "we b", "web/1", &"a".repeat(65)] {
        let message = error_of(&one(&format!(r#"{{"name":"{name}","repo":"r"}}"#)));
        assert!(message.contains("components[0].name"), "{name}: {message}");
        assert!(message.contains("not a valid component name"), "{message}");
    }
    parse(&one(r#"{"name":"web-1.v2_x","repo":"r"}"#)).unwrap();
}

#[test]
fn ports_outside_the_range_are_refused() {
    for (port, field) in [
        ("0", "external"),
        ("65536", "external"),
        ("-1", "container"),
    ] {
        let ports = if field == "external" {
            format!(r#"{{"external":{port},"container":80}}"#)
        } else {
            format!(r#"{{"external":80,"container":{port}}}"#)
        };
        let message = error_of(&one(&format!(r#"{{"name":"web","ports":[{ports}]}}"#)));
        assert!(message.contains(&format!("ports[0].{field}")), "{message}");
        assert!(message.contains("outside 1..65535"), "{message}");
    }
}

#[test]
fn duplicate_names_and_shared_external_ports_are_refused() {
    let twice = r#"{"components":[{"name":"a","repo":"r"},{"name":"a","repo":"r"}]}"#;
    assert!(error_of(twice).contains("defined twice"));
    let shared = r#"{"components":[
        {"name":"a","ports":[{"external":80,"container":1}]},
        {"name":"b","ports":[{"external":80,"container":2}]}]}"#;
    let message = error_of(shared);
    assert!(
        message.contains("components[1].ports[0].external"),
        "{message}"
    );
    assert!(
        message.contains("already claimed by components[0] (\"a\")"),
        "{message}"
    );
}

#[test]
fn unknown_check_kinds_are_refused() {
    let message = error_of(&one(
        r#"{"name":"web","repo":"r","readyChecks":[{"kind":"grpc","port":1}]}"#,
    ));
    assert!(
        message.contains("components[0].readyChecks[0].kind"),
        "{message}"
    );
    assert!(message.contains("unknown variant `grpc`"), "{message}");
}

#[test]
fn non_numeric_timeouts_are_refused() {
    let message = error_of(&one(r#"{"name":"web","repo":"r","readyTimeout":"10s"}"#));
    assert!(message.contains("components[0].readyTimeout"), "{message}");
    assert!(message.contains("invalid type: string"), "{message}");
    let check = error_of(&one(
        r#"{"name":"web","repo":"r","readyChecks":[{"kind":"tcp","port":1,"timeout":"3"}]}"#,
    ));
    assert!(check.contains("readyChecks[0].timeout"), "{check}");
    let drain = error_of(&one(r#"{"name":"web","repo":"r","drainTimeout":-5}"#));
    assert!(drain.contains("drainTimeout"), "{drain}");
}

#[test]
fn zero_timeouts_are_refused() {
    for (field, json) in [
        (
            "components[0].readyTimeout",
            r#"{"name":"web","repo":"r","readyTimeout":0}"#,
        ),
        (
            "components[0].drainTimeout",
            r#"{"name":"web","repo":"r","drainTimeout":0}"#,
        ),
        (
            "components[0].readyChecks[0].timeout",
            r#"{"name":"web","repo":"r","readyChecks":[{"kind":"tcp","port":1,"timeout":0}]}"#,
        ),
        (
            "components[0].terminationSignals[0].timeout",
            r#"{"name":"web","repo":"r","terminationSignals":[{"kind":"http","port":1,"timeout":0}]}"#,
        ),
    ] {
        let message = error_of(&one(json));
        assert!(
            message.contains(field) && message.contains("must be at least 1"),
            "{field}: {message}"
        );
    }
}

#[test]
fn checks_and_signals_need_their_fields() {
    let no_port = error_of(&one(
        r#"{"name":"w","repo":"r","readyChecks":[{"kind":"http"}]}"#,
    ));
    assert!(no_port.contains("readyChecks[0].port"), "{no_port}");
    let tcp_path = error_of(&one(
        r#"{"name":"w","repo":"r","healthChecks":[{"kind":"tcp","port":1,"path":"/"}]}"#,
    ));
    assert!(tcp_path.contains("healthChecks[0].path"), "{tcp_path}");
    let exec = error_of(&one(
        r#"{"name":"w","repo":"r","terminationSignals":[{"kind":"exec"}]}"#,
    ));
    assert!(
        exec.contains("terminationSignals[0].exec_command"),
        "{exec}"
    );
}

#[test]
fn http_paths_cannot_end_or_split_the_request_line() {
    for (list, extra) in [
        ("readyChecks", r#""kind":"http","port":80"#),
        ("terminationSignals", r#""kind":"http","port":80"#),
    ] {
        for bad in [r"/quit\r\nHost: evil", "/a b", "quit", r"/\u0000"] {
            let text = one(&format!(
                r#"{{"name":"w","repo":"r","{list}":[{{{extra},"path":"{bad}"}}]}}"#
            ));
            let message = error_of(&text);
            assert!(
                message.contains(&format!("{list}[0].path"))
                    && message.contains("must start with /"),
                "{list} {bad}: {message}"
            );
        }
        let good = one(&format!(
            r#"{{"name":"w","repo":"r","{list}":[{{{extra},"path":"/quit?now=1"}}]}}"#
        ));
        parse(&good).unwrap();
    }
}

#[test]
fn pull_policy_defaults_follow_the_tag() {
    let config = parse(&one(r#"{"name":"web","repo":"r","tag":"v2"}"#)).unwrap();
    let web = &config.components[0];
    assert_eq!(web.pull_policy("latest"), PullPolicy::Always);
    assert_eq!(web.pull_policy("v2"), PullPolicy::Missing);
    let never = parse(&one(r#"{"name":"web","repo":"r","pull":"never"}"#)).unwrap();
    assert_eq!(never.components[0].pull_policy("latest"), PullPolicy::Never);
    let bad = error_of(&one(r#"{"name":"web","repo":"r","pull":"sometimes"}"#));
    assert!(bad.contains("components[0].pull"), "{bad}");
    assert_ne!(web.config_hash(), never.components[0].config_hash());
}

#[test]
fn address_components_need_ports() {
    let message = error_of(&one(r#"{"name":"web"}"#));
    assert!(message.contains("no repo and no ports"), "{message}");
}

#[test]
fn unknown_component_lists_the_known_ones() {
    let config = parse(&one(r#"{"name":"web","repo":"r"}"#)).unwrap();
    let message = format!("{:#}", config.component("api").unwrap_err());
    assert_eq!(
        message,
        "unknown component \"api\" (the config defines: web)"
    );
}

#[test]
fn group_writable_config_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("handoff.json");
    fs::write(&path, one(r#"{"name":"web","repo":"r"}"#)).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o664)).unwrap();
    let message = format!("{:#}", load(&path).unwrap_err());
    assert!(message.contains("writable by group or others"), "{message}");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    load(&path).unwrap();
}

fn two(first: &str, second: &str) -> String {
    format!(r#"{{"components": [{first}, {second}]}}"#)
}

const API: &str = r#"{"name":"api","repo":"r","ports":[{"external":80,"container":8080}],
    "defineComponentLinks":[{"name":"db","port":5432,"kind":"tcp"}]}"#;

#[test]
fn a_required_link_is_resolved_and_its_variables_are_gantrys() {
    let config = parse(&two(
        API,
        r#"{"name":"app","repo":"r","requireComponentLinks":[{"name":"db","alias":"my-db"}]}"#,
    ))
    .unwrap();
    let app = config.component("app").unwrap();
    assert_eq!(
        app.link_environment("172.17.0.1".parse().unwrap()),
        vec![
            "MY_DB_CLINK=tcp://172.17.0.1:5432",
            "MY_DB_CLINK_5432_TCP=tcp://172.17.0.1:5432",
            "MY_DB_CLINK_5432_TCP_PROTO=tcp",
            "MY_DB_CLINK_5432_TCP_ADDR=172.17.0.1",
            "MY_DB_CLINK_5432_TCP_PORT=5432",
        ]
    );
    // The defining component routes the link's port with its own.
    let api = config.component("api").unwrap();
    assert_eq!(api.link_ports(), vec![5432]);
    assert_eq!(
        api.port_pairs(),
        vec![PortPair::tcp(80, 8080), PortPair::tcp(5432, 5432),]
    );
}

#[test]
fn a_link_at_another_host_port_keeps_its_port_in_the_variable_names() {
    let config = parse(&two(
        r#"{"name":"api","repo":"r","defineComponentLinks":[{"name":"db","port":5432,"hostPort":15432}]}"#,
        r#"{"name":"app","repo":"r","requireComponentLinks":[{"name":"db","alias":"db"}]}"#,
    ))
    .unwrap();
    let variables = config
        .component("app")
        .unwrap()
        .link_environment("10.0.0.1".parse().unwrap());
    assert!(
        variables.contains(&"DB_CLINK_5432_TCP_PORT=15432".to_string()),
        "{variables:?}"
    );
    assert_eq!(
        config.component("api").unwrap().port_pairs(),
        vec![PortPair::tcp(15432, 5432)]
    );
}

#[test]
fn links_without_a_definition_a_shared_network_or_a_free_port_are_refused() {
    for (text, expected) in [
        (
            two(API, r#"{"name":"app","repo":"r","requireComponentLinks":[{"name":"cache","alias":"c"}]}"#),
            "components[1].requireComponentLinks[0].name: no component defines the link \"cache\"",
        ),
        (
            two(API, r#"{"name":"app","repo":"r","network":"other","requireComponentLinks":[{"name":"db","alias":"d"}]}"#),
            "both must be on the same network",
        ),
        (
            two(API, r#"{"name":"app","ports":[{"external":81,"container":1}],"requireComponentLinks":[{"name":"db","alias":"d"}]}"#),
            "only containers are given links",
        ),
        (
            two(API, r#"{"name":"app","repo":"r","ports":[{"external":5432,"container":1}]}"#),
            "port 5432/tcp is already claimed by components[0] (\"api\", link \"db\")",
        ),
        (
            two(API, r#"{"name":"b","repo":"r","defineComponentLinks":[{"name":"db","port":1}]}"#),
            "components[1].defineComponentLinks[0].name: link \"db\" is already defined by components[0]",
        ),
        (
            two(API, r#"{"name":"app","repo":"r","requireComponentLinks":[{"name":"db","alias":"a-b"},{"name":"db","alias":"a_b"}]}"#),
            "names the same variables (A_B_CLINK...)",
        ),
        (
            two(API, r#"{"name":"app","repo":"r","requireComponentLinks":[{"name":"db","alias":"9"}]}"#),
            "cannot start an environment variable's name",
        ),
    ] {
        let message = error_of(&text);
        assert!(message.contains(expected), "{expected:?} not in {message:?}");
    }
}

#[test]
fn without_links_a_components_config_hash_is_what_it_was() {
    // The resolved links are part of the hash only when there are some: containers that
    // an earlier handoff started are not replaced for nothing.
    let config = parse(&one(r#"{"name":"web","repo":"r"}"#)).unwrap();
    assert!(!serde_json::to_string(&config.components[0])
        .unwrap()
        .contains("linkTargets"));
    let linked = parse(&two(
        API,
        r#"{"name":"app","repo":"r","requireComponentLinks":[{"name":"db","alias":"d"}]}"#,
    ))
    .unwrap();
    assert!(serde_json::to_string(linked.component("app").unwrap())
        .unwrap()
        .contains("linkTargets"));
}

#[test]
fn a_udp_port_may_share_its_number_with_a_tcp_port_but_not_with_another_udp_port() {
    let both = parse(&one(
        r#"{"name":"dns","repo":"r","ports":[{"external":53,"container":5353},
           {"external":53,"container":5353,"protocol":"udp"}]}"#,
    ))
    .unwrap();
    let pairs = both.components[0].port_pairs();
    assert_eq!(pairs[0], PortPair::tcp(53, 5353));
    assert_eq!(pairs[1].protocol, Protocol::Udp);
    for (text, expected) in [
        (
            two(
                r#"{"name":"a","repo":"r","ports":[{"external":53,"container":1,"protocol":"udp"}],
                   "readyChecks":[{"kind":"tcp","port":1}]}"#,
                r#"{"name":"b","repo":"r","ports":[{"external":53,"container":1,"protocol":"udp"}],
                   "readyChecks":[{"kind":"tcp","port":1}]}"#,
            ),
            "components[1].ports[0].external: port 53/udp is already claimed by components[0]",
        ),
        (
            one(
                r#"{"name":"a","repo":"r","ports":[{"external":53,"container":1,"protocol":"udp","kind":"http"}]}"#,
            ),
            "components[0].ports[0].kind: \"http\" is a TCP mode",
        ),
        (
            one(
                r#"{"name":"a","repo":"r","ports":[{"external":53,"container":1,"protocol":"sctp"}]}"#,
            ),
            "components[0].ports[0].protocol: unknown variant `sctp`",
        ),
    ] {
        let message = error_of(&text);
        assert!(
            message.contains(expected),
            "{expected:?} not in {message:?}"
        );
    }
    // Only UDP ports: a connect cannot tell readiness, so readyChecks are required.
    let message = error_of(&one(
        r#"{"name":"syslog","repo":"r","ports":[{"external":514,"container":514,"protocol":"udp"}]}"#,
    ));
    assert!(
        message.contains("components[0].readyChecks: every port of component \"syslog\" is UDP"),
        "{message}"
    );
    // A TCP port serializes as before: containers started by an earlier handoff keep
    // their config hash.
    let tcp = parse(&one(
        r#"{"name":"w","repo":"r","ports":[{"external":80,"container":1}]}"#,
    ))
    .unwrap();
    assert!(!serde_json::to_string(&tcp.components[0])
        .unwrap()
        .contains("protocol"));
}
