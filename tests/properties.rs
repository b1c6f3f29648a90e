//! Property tests: the config parser and the ctnetlink decoder take any input without
//! panicking (bad input must always become a clear error, never a crash of a root process);
//! map elements decode exactly when they have a known shape, and every route survives its
//! encoding.

use handoff::config;
use handoff::kernel::conntrack::decode_datagram;
use handoff::kernel::netfilter::batch::{decode_route, encode_route};
use handoff::kernel::netfilter::Route;
use proptest::prelude::*;

/// JSON-shaped text built from the config's own vocabulary, so that the parser's deeper paths
/// (fields, kinds, numbers) are reached, not only its first syntax check.
fn config_like() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "name",
        "repo",
        "tag",
        "ports",
        "external",
        "container",
        "kind",
        "readyChecks",
        "healthChecks",
        "port",
        "path",
        "timeout",
        "readyTimeout",
        "drainTimeout",
        "pull",
        "terminationSignals",
        "exec_command",
        "bindings",
        "volume",
        "components",
        "bogus",
    ]);
    let scalar = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "[a-z0-9_.-]{0,8}".prop_map(|s| format!("{s:?}")),
        Just("null".to_string()),
        Just("true".to_string()),
        Just("\"tcp\"".to_string()),
        Just("\"https\"".to_string()),
    ];
    let leaf = (key.clone(), scalar).prop_map(|(k, v)| format!("{k:?}: {v}"));
    let object =
        prop::collection::vec(leaf, 0..6).prop_map(|fields| format!("{{{}}}", fields.join(",")));
    let list = prop::collection::vec(object.clone(), 0..4)
        .prop_map(|items| format!("[{}]", items.join(",")));
    (key, list, object).prop_map(|(k, list, object)| {
        format!(r#"{{"components": [{{"name": "web", {k:?}: {list}}}, {object}]}}"#)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_config_parser_never_panics_on_arbitrary_text(text in ".{0,400}") {
        let _ = config::parse(&text);
    }

    #[test]
    fn the_config_parser_never_panics_on_config_shaped_json(text in config_like()) {
        let _ = config::parse(&text);
    }

    #[test]
    fn the_ctnetlink_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut skipped = 0;
        let _ = decode_datagram(&bytes, &mut skipped);
    }

    #[test]
    fn the_ctnetlink_decoder_never_panics_on_plausible_headers(
        length in 16u32..600,
        message_type in prop_oneof![Just(0x0100u16), Just(0x0102u16), Just(2u16), Just(3u16), any::<u16>()],
        body in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut bytes = length.to_ne_bytes().to_vec();
        bytes.extend_from_slice(&message_type.to_ne_bytes());
        bytes.extend_from_slice(&[0; 10]);
        bytes.extend(body);
        let mut skipped = 0;
        let _ = decode_datagram(&bytes, &mut skipped);
    }

    #[test]
    fn map_elements_of_any_shape_decode_or_are_refused(
        key in prop::collection::vec(any::<u8>(), 0..10),
        data in prop::collection::vec(any::<u8>(), 0..24),
    ) {
        // A key is 2 bytes (the layout before UDP: a TCP port) or 8 (protocol, padded, then
        // the port, padded), the protocol TCP (6) or UDP (17); the data an IPv4 address and a
        // padded port (8 bytes) or an IPv6 one and a padded port (20).
        let decoded = decode_route(&key, &data);
        let known_key = key.len() == 2 || (key.len() == 8 && matches!(key[0], 6 | 17));
        let known_data = data.len() == 8 || data.len() == 20;
        prop_assert_eq!(decoded.is_some(), known_key && known_data);
    }

    #[test]
    fn every_route_survives_its_encoding(
        udp in any::<bool>(),
        external in any::<u16>(),
        address in prop_oneof![
            any::<[u8; 4]>().prop_map(std::net::IpAddr::from),
            any::<[u8; 16]>().prop_map(std::net::IpAddr::from),
        ],
        backend_port in any::<u16>(),
    ) {
        let route = Route {
            protocol: if udp { config::Protocol::Udp } else { config::Protocol::Tcp },
            external,
            address,
            backend_port,
        };
        let (key, data) = encode_route(&route);
        prop_assert_eq!(decode_route(&key, &data), Some(route));
    }
}
