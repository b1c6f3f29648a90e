//! `ports` and `linkPorts`: which host ports a component may take over, publicly or at a
//! network's gateway, and which entries a policy cannot name.

use super::{parse_error, policy, web, AT};

#[test]
fn ports_are_ranges_of_one_protocol_and_replace_the_default() {
    let policy = policy(
        r#"{"images": ["registry.example.com/web"],
            "ports": ["8000-8099", "53/udp", 8443, "9000/tcp"]}"#,
    );
    let port = |external: u16, protocol: &str| {
        web(&format!(
            r#""ports": [{{"external": {external}, "container": 80, "protocol": "{protocol}"}}],
               "readyChecks": [{{"kind": "tcp", "port": 80}}]"#
        ))
    };
    for (external, protocol) in [
        (8000, "tcp"),
        (8099, "tcp"),
        (53, "udp"),
        (8443, "tcp"),
        (9000, "tcp"),
    ] {
        policy.check(&port(external, protocol)).expect("allowed");
    }
    for (external, protocol) in [(8100, "tcp"), (7999, "tcp"), (53, "tcp"), (80, "tcp")] {
        assert_eq!(
            policy.check(&port(external, protocol)),
            Err(format!(
                "port {external}/{protocol} not allowed by {AT} (allowed: 8000-8099/tcp, \
                 53/udp, 8443/tcp, 9000/tcp)"
            ))
        );
    }
}

#[test]
fn bad_port_entries_are_refused_with_their_place() {
    for entry in [
        "0",
        "70000",
        "-1",
        r#""0""#,
        r#""90-80""#,
        r#""80/sctp""#,
        r#""+80""#,
        r#""http""#,
        r#""80-""#,
        "true",
    ] {
        let message = parse_error(&format!(r#"{{"images": [], "ports": [{entry}]}}"#));
        assert!(message.contains("ports[0]: "), "{entry}: {message}");
        assert!(message.contains("line 1 column"), "{entry}: {message}");
    }
}

#[test]
fn a_link_is_checked_at_its_port_on_the_gateway() {
    let policy = policy(r#"{"images": ["registry.example.com/web"], "linkPorts": [6432]}"#);
    policy
        .check(&web(
            r#""defineComponentLinks": [{"name": "db", "port": 5432, "hostPort": 6432}]"#,
        ))
        .unwrap();
    assert_eq!(
        policy.check(&web(
            r#""defineComponentLinks": [{"name": "db", "port": 5432}]"#
        )),
        Err(format!(
            "link db at port 5432/tcp not allowed by {AT} (allowed linkPorts: 6432/tcp)"
        ))
    );
    let message = parse_error(r#"{"images": [], "linkPorts": ["5432", "53/udp"]}"#);
    assert!(
        message.contains("linkPorts[1]: \"53/udp\": component links are TCP only"),
        "{message}"
    );
}
