//! `images`: which repository names a pattern lets through once they are read as Docker reads
//! them, and which patterns a policy cannot name.

use super::{component, parse_error, policy, web, AT};
use crate::config::Component;
use crate::fleet::policy::Policy;

/// A component running the image `repo`.
fn image(repo: &str) -> Component {
    component(&format!(r#""repo": "{repo}""#))
}

/// `policy` runs each image of `allowed` and refuses each of `refused`.
fn assert_allows_only(policy: &Policy, allowed: &[&str], refused: &[&str]) {
    for repo in allowed {
        policy.check(&image(repo)).expect(repo);
    }
    for repo in refused {
        assert!(policy.check(&image(repo)).is_err(), "{repo}");
    }
}

#[test]
fn a_prefix_pattern_matches_repositories_under_its_path_only() {
    let policy = policy(r#"{"images": ["registry.example.com/team/*"]}"#);
    assert_allows_only(
        &policy,
        &[
            "registry.example.com/team/web",
            "registry.example.com/team/sub/web",
            "REGISTRY.example.com/team/web",
        ],
        &[
            "registry.example.com/team",
            "registry.example.com/team-evil/web",
            "registry.example.com/teamx/web",
            "registry.example.com/web",
            "registry.example.com:5000/team/web",
            "registry.example.com.evil/team/web",
            "team/web",
        ],
    );
    assert_eq!(
        policy.check(&image("registry.evil/x")),
        Err(format!(
            "image registry.evil/x not allowed by {AT} (allowed: registry.example.com/team/*)"
        ))
    );
}

#[test]
fn a_registrys_port_is_part_of_the_registry_and_a_registry_is_named_as_docker_does() {
    // Docker's rule: a first part with `.` or `:`, `localhost`, or upper case is a
    // registry; anything else is a Docker Hub namespace (`reg/x` is docker.io/reg/x).
    let policy =
        policy(r#"{"images": ["reg:5000/x", "reg.local/*", "localhost:5000/*", "Intranet/*"]}"#);
    assert_allows_only(
        &policy,
        &[
            "reg:5000/x",
            "reg.local/y",
            "reg.local/y/z",
            "localhost:5000/y",
            "Intranet/y",
            "INTRANET/y",
        ],
        &[
            "reg:5000/y",
            "reg:5001/x",
            "reg:5000/x/y",
            "reg.local:5000/y",
            "reg/x",
            "localhost/y",
            "localhost:5001/y",
            "intranet/y",
        ],
    );
}

#[test]
fn docker_hub_names_are_compared_as_docker_resolves_them() {
    let policy = policy(
        r#"{"images": ["nginx", "docker.io/library/redis", "bitnami/*",
                       "index.docker.io/acme/app"]}"#,
    );
    assert_allows_only(
        &policy,
        &[
            "nginx",
            "library/nginx",
            "docker.io/library/nginx",
            "index.docker.io/library/nginx",
            "redis",
            "bitnami/postgresql",
            "docker.io/bitnami/redis",
            "acme/app",
        ],
        &[
            "nginxx",
            "evil/nginx",
            "registry.example.com/nginx",
            "bitnami",
            "library/bitnami",
        ],
    );
    let hub = self::policy(r#"{"images": ["docker.io/*"]}"#);
    assert_allows_only(&hub, &["nginx", "acme/app"], &["quay.io/acme/app"]);
}

#[test]
fn the_tag_is_not_part_of_the_match_but_a_repository_docker_reads_otherwise_is_refused() {
    let policy = policy(r#"{"images": ["registry.example.com/team/*"]}"#);
    policy
        .check(&component(
            r#""repo": "registry.example.com/team/web", "tag": "anything-1.2""#,
        ))
        .unwrap();
    for odd in [
        "registry.example.com/team/web:1.2",
        "registry.example.com/team/web@sha256:abcd",
        "registry.example.com/team/../evil",
        "registry.example.com//team/web",
        "registry.example.com/team/Web",
        "registry.example.com/team/web/",
        "registry.example.com/team/-web",
        "[::1]:5000/team/web",
    ] {
        let refusal = policy.check(&image(odd)).unwrap_err();
        assert_eq!(
            refusal,
            format!("image {odd} not allowed by {AT} (not a Docker image repository)")
        );
    }
}

#[test]
fn an_empty_image_list_allows_none_and_a_missing_one_is_refused() {
    assert_eq!(
        policy(r#"{"images": []}"#).check(&web("")),
        Err(format!(
            "image registry.example.com/web not allowed by {AT} (allowed: none)"
        ))
    );
    let message = parse_error(r#"{"privileged": true}"#);
    assert!(message.contains("missing field `images`"), "{message}");
}

#[test]
fn bad_image_patterns_are_refused_with_their_place() {
    for pattern in [
        "*",
        "registry.example.com/team*",
        "registry.example.com/*/web",
        "registry.example.com/team/**",
        "",
        "registry.example.com/Team/*",
        "registry.example.com/team/web:1.2",
    ] {
        let message = parse_error(&format!(r#"{{"images": ["nginx", "{pattern}"]}}"#));
        assert!(
            message.contains(&format!("{AT}: images[1]: {pattern:?} is not an image")),
            "{message}"
        );
        assert!(message.contains("line 1 column"), "{message}");
    }
}
