//! Bind addresses (`ports[].address`): which are accepted, and every refusal with the field
//! it names.

use super::*;

fn error_of(text: &str) -> String {
    format!("{:#}", parse(text).unwrap_err())
}

#[test]
fn bind_addresses_share_a_port_across_addresses_and_refuse_what_cannot_work() {
    let two = |first: &str, second: &str| {
        format!(
            r#"{{"components": [
                {{"name": "a", "repo": "r", "ports": [{first}]}},
                {{"name": "b", "repo": "r", "ports": [{second}]}}]}}"#
        )
    };
    let at =
        |address: &str| format!(r#"{{"external": 80, "container": 80, "address": "{address}"}}"#);
    let all = r#"{"external": 80, "container": 80}"#;
    // One port, two addresses, two components: Docker's -p 203.0.113.5:80:80 beside
    // -p 203.0.113.6:80:80.
    let config = parse(&two(&at("203.0.113.5"), &at("fd00::6"))).unwrap();
    assert_eq!(
        config.components[0].port_pairs()[0].address,
        Some("203.0.113.5".parse().unwrap())
    );
    for (text, said) in [
        (
            two(&at("203.0.113.5"), &at("203.0.113.5")),
            "components[1].ports[0].external: port 80/tcp is already claimed by components[0] \
             (\"a\") (it holds it on 203.0.113.5, this one asks for 203.0.113.5)",
        ),
        (
            two(all, &at("203.0.113.5")),
            "it holds it on every address, this one asks for 203.0.113.5",
        ),
        (
            two(&at("203.0.113.5"), all),
            "it holds it on 203.0.113.5, this one asks for every address",
        ),
        (
            two(&at("not-an-address"), all),
            "components[0].ports[0].address: invalid IP address syntax",
        ),
        (
            two(&at("0.0.0.0"), &at("10.0.0.1")),
            "components[0].ports[0].address: 0.0.0.0 means every address",
        ),
        (
            two(&at("224.0.0.1"), &at("10.0.0.1")),
            "components[0].ports[0].address: 224.0.0.1 cannot be a local address",
        ),
        (
            two(&at("::1"), &at("10.0.0.1")),
            "components[0].ports[0].address: ::1 cannot be DNAT'd off the host",
        ),
        (
            two(&at("127.0.0.1"), &at("10.0.0.1")),
            "components[0].ports[0].address: 127.0.0.1 is a loopback address: it needs \
             \"localhostClients\": true",
        ),
        (
            format!(
                r#"{{"components": [{{"name": "a", "repo": "r", "ports": [{}, {}]}}]}}"#,
                at("10.0.0.1"),
                at("10.0.0.2")
            ),
            "components[0].ports[1]: port 80/tcp is listed twice (also ports[0])",
        ),
    ] {
        let error = error_of(&text);
        assert!(error.contains(said), "{said:?} not in {error:?}");
    }
    let loopback = r#"{"components": [{"name": "a", "repo": "r", "localhostClients": true,
        "ports": [{"external": 80, "container": 80, "address": "127.0.0.1"}]}]}"#;
    assert!(parse(loopback).is_ok());
}
