//! `bindings` and `namedVolumes`: which bind sources a policy lets a component mount, written
//! or reached through a symbolic link, and which policy entries are refused.

use std::fs;

use super::{parse_error, policy, web, AT};
use crate::config::Component;

/// The image `registry.example.com/web` with one bind mount from `external`.
fn bind(external: &str) -> Component {
    web(&format!(
        r#""bindings": [{{"external": "{external}", "volume": "/data"}}]"#
    ))
}

#[test]
fn a_binding_is_allowed_under_an_allowed_path_component_by_component() {
    let policy = policy(r#"{"images": ["registry.example.com/web"], "bindings": ["/srv/data/"]}"#);
    for allowed in [
        "/srv/data",
        "/srv/data/",
        "/srv/data/x",
        "/srv/data/./x",
        "/srv//data/x/",
        "/srv/data/{container_id}",
    ] {
        policy.check(&bind(allowed)).expect(allowed);
    }
    for (refused, why) in [
        ("/srv/database", "(allowed: /srv/data)"),
        ("/srv", "(allowed: /srv/data)"),
        ("/", "(allowed: /srv/data)"),
        ("/srv/data/../etc", "(it contains \"..\")"),
        ("/srv/data/x/../..", "(it contains \"..\")"),
        ("/srv/data:/etc", "(a bind source cannot contain \":\")"),
        (
            "srv/data",
            "(neither an absolute host path nor a Docker volume name)",
        ),
        (
            "",
            "(neither an absolute host path nor a Docker volume name)",
        ),
    ] {
        assert_eq!(
            policy.check(&bind(refused)),
            Err(format!("binding {refused} not allowed by {AT} {why}")),
            "{refused}"
        );
    }
}

#[test]
fn the_root_allows_every_host_path_only_when_named() {
    let everything = policy(r#"{"images": ["registry.example.com/web"], "bindings": ["/"]}"#);
    everything.check(&bind("/")).unwrap();
    everything.check(&bind("/etc")).unwrap();
    assert!(everything.check(&bind("cache")).is_err(), "not a host path");
}

#[test]
fn relative_or_dotted_policy_paths_are_refused() {
    for (path, why) in [
        ("srv/data", "\"srv/data\" is not an absolute path"),
        ("", "\"\" is not an absolute path"),
        ("/srv/../etc", "\"/srv/../etc\" contains \"..\""),
    ] {
        let message = parse_error(&format!(
            r#"{{"images": [], "bindings": ["/srv/data", "{path}"]}}"#
        ));
        assert!(
            message.contains(&format!("bindings[1]: {why} at line 1 column")),
            "{message}"
        );
    }
}

#[test]
fn a_binding_through_a_symbolic_link_out_of_the_allowed_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("allowed");
    let outside = dir.path().join("outside");
    fs::create_dir_all(allowed.join("real")).unwrap();
    fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, allowed.join("escape")).unwrap();
    std::os::unix::fs::symlink(allowed.join("real"), allowed.join("inner")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("gone"), allowed.join("dangling")).unwrap();
    let policy = policy(&format!(
        r#"{{"images": ["registry.example.com/web"], "bindings": ["{}"]}}"#,
        allowed.display()
    ));
    policy
        .check(&bind(&format!("{}/inner/x", allowed.display())))
        .unwrap();
    for name in ["escape", "escape/not-yet"] {
        let path = format!("{}/{name}", allowed.display());
        let refusal = policy.check(&bind(&path)).unwrap_err();
        let resolved = fs::canonicalize(&outside).unwrap();
        assert!(
            refusal.starts_with(&format!(
                "binding {path} not allowed by {AT} (it resolves to {}",
                resolved.display()
            )),
            "{refusal}"
        );
    }
    let dangling = format!("{}/dangling", allowed.display());
    let refusal = policy.check(&bind(&dangling)).unwrap_err();
    assert!(refusal.contains("(cannot resolve"), "{refusal}");
}

#[test]
fn named_volumes_are_allowed_by_exact_name() {
    let policy = policy(
        r#"{"images": ["registry.example.com/web"],
            "namedVolumes": ["cache", "scratch-{container_id}"]}"#,
    );
    policy.check(&bind("cache")).unwrap();
    policy.check(&bind("scratch-{container_id}")).unwrap();
    for refused in ["cache2", "scratch-x", "Cache"] {
        assert_eq!(
            policy.check(&bind(refused)),
            Err(format!(
                "binding {refused} not allowed by {AT} (a named volume; allowed \
                 namedVolumes: cache, scratch-{{container_id}})"
            ))
        );
    }
    for bad in ["-x", "x", "/srv/data", "a/b"] {
        let message = parse_error(&format!(r#"{{"images": [], "namedVolumes": ["{bad}"]}}"#));
        assert!(
            message.contains("namedVolumes[0]: ")
                && message.contains("is not a Docker volume name"),
            "{message}"
        );
    }
}
