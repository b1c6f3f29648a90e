//! The `allowed_signers` file: what its options allow (validity times, namespaces, several
//! lines for one key), every line it refuses and why, and a file others could replace.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{june_2026, parsed, write_key, ALICE_PUB, ALICE_SIGNATURE, MESSAGE, ORIGIN};
use crate::error::{exit_code_of, ExitCode};
use crate::fleet::signing::allowed_signers::{format_utc, parse_time};
use crate::fleet::signing::{verify, Signers};

fn refusal_of(text: &str) -> String {
    let error = Signers::parse(text, Path::new(ORIGIN)).expect_err("refused");
    assert_eq!(exit_code_of(&error), ExitCode::Input, "{error:#}");
    format!("{error:#}")
}

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

#[test]
fn valid_after_and_valid_before_bound_the_key_both_ends_included() {
    // 2026-01-01T00:00:00Z = 1767225600, 2027-01-01T00:00:00Z = 1798761600.
    let signers = parsed(&format!(
        r#"alice@test valid-after="20260101Z",valid-before="20270101000000Z" {ALICE_PUB}"#
    ));
    let check = |seconds| verify(&signers, MESSAGE, ALICE_SIGNATURE, at(seconds));
    assert_eq!(
        check(1_767_225_599).unwrap_err(),
        format!("key of alice@test not valid before 2026-01-01T00:00:00Z ({ORIGIN}:1)")
    );
    check(1_767_225_600).unwrap();
    check(1_798_761_600).unwrap();
    assert_eq!(
        check(1_798_761_601).unwrap_err(),
        format!("key of alice@test not valid after 2027-01-01T00:00:00Z ({ORIGIN}:1)")
    );
}

#[test]
fn a_later_line_for_the_same_key_can_allow_what_an_expired_one_does_not() {
    let signers = parsed(&format!(
        "old@test valid-before=\"20250101Z\" {ALICE_PUB}\nnew@test valid-after=\"202501010000UTC\" {ALICE_PUB}\n"
    ));
    let signer = verify(&signers, MESSAGE, ALICE_SIGNATURE, june_2026()).unwrap();
    assert_eq!(signer.principal, "new@test");
    // Before 2025 only the first line allows it.
    let signer = verify(&signers, MESSAGE, ALICE_SIGNATURE, at(1_700_000_000)).unwrap();
    assert_eq!(signer.principal, "old@test");
}

#[test]
fn the_namespaces_option_allows_only_matching_namespaces() {
    let check = |namespaces: &str| {
        let signers = parsed(&format!(
            "alice@test namespaces=\"{namespaces}\" {ALICE_PUB}"
        ));
        verify(&signers, MESSAGE, ALICE_SIGNATURE, june_2026())
    };
    check("handoff-fleet").unwrap();
    check("git,handoff-*").unwrap();
    check("handoff-fle?t").unwrap();
    check("*").unwrap();
    assert_eq!(
        check("git").unwrap_err(),
        format!(
            "key of alice@test not allowed for namespace \"handoff-fleet\" \
             (namespaces=\"git\", {ORIGIN}:1)"
        )
    );
    check("*,!handoff-fleet").unwrap_err();
    check("handoff").unwrap_err();
    // Options are case-insensitive, and a quoted principal may hold spaces.
    let signers = parsed(&format!(
        "\"alice smith\" NAMESPACES=\"handoff-fleet\" {ALICE_PUB}"
    ));
    let signer = verify(&signers, MESSAGE, ALICE_SIGNATURE, june_2026()).unwrap();
    assert_eq!(signer.principal, "alice smith");
}

#[test]
fn every_refused_line_is_named_with_its_problem() {
    let good = format!("alice@test {ALICE_PUB}\n");
    let cases: &[(&str, &str)] = &[
        (
            "alice@test cert-authority {KEY}",
            "cert-authority: handoff does not verify certificates",
        ),
        (
            "alice@test namespaces=\"x\",cert-authority {KEY}",
            "cert-authority",
        ),
        ("alice@test", "no key after \"alice@test\""),
        ("alice@test ssh-ed25519", "no key in"),
        ("alice@test ssh-ed25519 AAAA!!!!", "invalid ssh-ed25519 key"),
        (
            "alice@test ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILdJHM44",
            "invalid ssh-ed25519 key",
        ),
        (
            "alice@test ssh-foo AAAAC3NzaC1lZDI1NTE5",
            "unknown key type or option \"ssh-foo\"",
        ),
        (
            "alice@test no-touch-required {KEY}",
            "unknown key type or option \"no-touch-required\"",
        ),
        (
            "alice@test principals=\"x\" {KEY}",
            "unknown option \"principals\"",
        ),
        (
            "alice@test namespaces=git {KEY}",
            "namespaces= needs a quoted value",
        ),
        ("alice@test namespaces=\"git {KEY}", "unterminated quote"),
        ("\"alice {KEY}", "unterminated quote"),
        (
            "alice@test namespaces=\"a\",namespaces=\"b\" {KEY}",
            "namespaces given twice",
        ),
        (
            "alice@test namespaces=\"a\", {KEY}",
            "options end with a comma",
        ),
        (
            "alice@test valid-after=\"20270101\" {KEY}",
            "valid-after=\"20270101\" has no time zone",
        ),
        (
            "alice@test valid-after=\"2027010\" {KEY}",
            "valid-after=\"2027010\" is not a time",
        ),
        (
            "alice@test valid-before=\"20270231Z\" {KEY}",
            "valid-before=\"20270231Z\" is not a time",
        ),
        (
            "alice@test valid-before=\"20271301Z\" {KEY}",
            "is not a time",
        ),
        (
            "alice@test valid-before=\"202701012400Z\" {KEY}",
            "is not a time",
        ),
        (
            "alice@test valid-before=\"19700101Z\" {KEY}",
            "is not a time",
        ),
        (
            "alice@test valid-before=\"2027O101Z\" {KEY}",
            "is not a time",
        ),
        (
            "alice@test valid-after=\"20270101Z\",valid-before=\"20260101Z\" {KEY}",
            "valid-before is not after valid-after",
        ),
    ];
    for (line, problem) in cases {
        let line = line.replace("{KEY}", ALICE_PUB);
        let message = refusal_of(&format!("# header\n{good}{line}\n{good}"));
        assert!(
            message.starts_with(&format!("{ORIGIN}:3: ")) && message.contains(problem),
            "{line}\n  gave: {message}\n  wanted line 3 and: {problem}"
        );
    }
}

#[test]
fn times_read_as_utc_in_every_spelling_openssh_accepts() {
    assert_eq!(parse_time("20260101Z", "t"), Ok(1_767_225_600));
    assert_eq!(parse_time("20260101z", "t"), Ok(1_767_225_600));
    assert_eq!(parse_time("202601010000UTC", "t"), Ok(1_767_225_600));
    assert_eq!(parse_time("20260101000001Z", "t"), Ok(1_767_225_601));
    assert_eq!(parse_time("20240229123456Z", "t"), Ok(1_709_210_096));
    assert!(parse_time("20230229Z", "t").is_err());
    assert_eq!(format_utc(1_709_210_096), "2024-02-29T12:34:56Z");
    assert_eq!(format_utc(1), "1970-01-01T00:00:01Z");
    assert_eq!(format_utc(253_402_300_799), "9999-12-31T23:59:59Z");
    assert_eq!(parse_time("99991231235959Z", "t"), Ok(253_402_300_799));
}

#[test]
fn no_mangled_signers_line_panics() {
    let line = format!("\"al ice\" namespaces=\"a\\\"b,*\",valid-after=\"20260101Z\" {ALICE_PUB}");
    for cut in 0..line.len() {
        let _ = Signers::parse(&line[..cut], Path::new(ORIGIN));
    }
    for (at, _) in line.char_indices() {
        for c in ['"', '\\', ' ', ',', '=', 'é', '\t'] {
            let mut mangled = line.clone();
            mangled.replace_range(at..at + 1, c.encode_utf8(&mut [0; 4]));
            let _ = Signers::parse(&mangled, Path::new(ORIGIN));
        }
    }
}

#[test]
fn a_signers_file_others_could_replace_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_key(
        dir.path(),
        "fleet-signers",
        &format!("alice@test {ALICE_PUB}\n"),
        0o664,
    );
    let error = Signers::load(&path).expect_err("refused");
    assert!(format!("{error:#}").contains("signers file"), "{error:#}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let signers = Signers::load(&path).unwrap();
    verify(&signers, MESSAGE, ALICE_SIGNATURE, june_2026()).unwrap();
}
