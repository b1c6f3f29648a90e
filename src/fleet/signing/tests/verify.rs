//! `verify` and `fingerprint_of`: which signatures pass, and the reason each refused one gives
//! (bad, tampered, another namespace, an unlisted key, a key type handoff does not check,
//! malformed armor), whatever bytes the armor holds.

use super::{
    june_2026, parsed, ALICE_FINGERPRINT, ALICE_GIT_SIGNATURE, ALICE_PUB, ALICE_SHA256_SIGNATURE,
    ALICE_SIGNATURE, BOB_FINGERPRINT, BOB_PUB, BOB_SIGNATURE, DAVE_PUB, DAVE_SIGNATURE, MESSAGE,
    ORIGIN,
};
use crate::fleet::signing::{fingerprint_of, parse_armor, verify, Signer};

#[test]
fn a_signature_made_by_ssh_keygen_verifies_and_names_its_line() {
    let signers = parsed(&format!(
        "# fleet operators\n\nbob@test {BOB_PUB}\r\n  alice@test,ops@* {ALICE_PUB}\n"
    ));
    let signer = verify(&signers, MESSAGE, ALICE_SIGNATURE, june_2026()).unwrap();
    assert_eq!(
        signer,
        Signer {
            principal: "alice@test,ops@*".to_string(),
            fingerprint: ALICE_FINGERPRINT.to_string(),
        }
    );
    let signer = verify(&signers, MESSAGE, ALICE_SHA256_SIGNATURE, june_2026()).unwrap();
    assert_eq!(signer.principal, "alice@test,ops@*");
    // Without its trailing newline, as a record field might hold it.
    verify(&signers, MESSAGE, ALICE_SIGNATURE.trim(), june_2026()).unwrap();
}

#[test]
fn a_tampered_message_is_a_bad_signature_by_its_key() {
    let signers = parsed(&format!("alice@test {ALICE_PUB}\n"));
    let reason =
        verify(&signers, b"fleet spec v2\n", ALICE_SIGNATURE, june_2026()).expect_err("refused");
    assert_eq!(
        reason,
        format!("bad signature by {ALICE_FINGERPRINT} (alice@test)")
    );
}

#[test]
fn a_tampered_signature_never_verifies() {
    let signers = parsed(&format!("alice@test {ALICE_PUB}\n"));
    // The last base64 line holds the ed25519 signature's last bytes.
    let flipped = ALICE_SIGNATURE.replace("GEeEI", "GEeEJ");
    assert_ne!(flipped, ALICE_SIGNATURE);
    let reason = verify(&signers, MESSAGE, &flipped, june_2026()).expect_err("refused");
    assert!(
        reason.starts_with("bad signature by") || reason.starts_with("malformed"),
        "{reason}"
    );
}

#[test]
fn a_signature_for_another_namespace_is_refused_even_from_a_listed_key() {
    let signers = parsed(&format!("alice@test {ALICE_PUB}\n"));
    let reason = verify(&signers, MESSAGE, ALICE_GIT_SIGNATURE, june_2026()).expect_err("refused");
    assert_eq!(
        reason,
        r#"signature for namespace "git", not "handoff-fleet""#
    );
}

#[test]
fn a_key_not_in_the_file_is_named_by_its_fingerprint() {
    let signers = parsed(&format!("alice@test {ALICE_PUB}\n"));
    let reason = verify(&signers, MESSAGE, BOB_SIGNATURE, june_2026()).expect_err("refused");
    assert_eq!(
        reason,
        format!("signature by {BOB_FINGERPRINT} whose key is not in {ORIGIN}")
    );
    let empty = parsed("# nobody yet\n");
    assert!(verify(&empty, MESSAGE, ALICE_SIGNATURE, june_2026())
        .unwrap_err()
        .contains("whose key is not in"));
}

#[test]
fn a_listed_key_of_another_type_loads_but_its_signatures_are_not_supported() {
    let signers = parsed(&format!("dave@test {DAVE_PUB}\nalice@test {ALICE_PUB}\n"));
    let reason = verify(&signers, MESSAGE, DAVE_SIGNATURE, june_2026()).expect_err("refused");
    assert_eq!(
        reason,
        "signature by SHA256:i2pr/VUICahkPBnq/DB0+g73Z1EikomC7TvkHz3oiaE (dave@test): key \
         type ecdsa-sha2-nistp256 not supported (ed25519 only)"
    );
    let without_dave = parsed(&format!("alice@test {ALICE_PUB}\n"));
    assert!(verify(&without_dave, MESSAGE, DAVE_SIGNATURE, june_2026())
        .unwrap_err()
        .contains("whose key is not in"));
}

#[test]
fn malformed_armor_is_refused_as_malformed() {
    let signers = parsed(&format!("alice@test {ALICE_PUB}\n"));
    let body: String = ALICE_SIGNATURE
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let cases = [
        String::new(),
        "not a signature".to_string(),
        ALICE_SIGNATURE.replace("SSH SIGNATURE", "PGP SIGNATURE"),
        ALICE_SIGNATURE.replace("-----END SSH SIGNATURE-----\n", ""),
        format!(
            "-----BEGIN SSH SIGNATURE-----\n{}\n-----END SSH SIGNATURE-----\n",
            &body[..40]
        ),
        format!(
            "-----BEGIN SSH SIGNATURE-----\n{}é\n-----END SSH SIGNATURE-----\n",
            &body
        ),
        // A blob that is not SSHSIG: "SSHSIH".
        ALICE_SIGNATURE.replacen("U1NIU0lH", "U1NIU0lI", 1),
    ];
    for armored in &cases {
        let reason = verify(&signers, MESSAGE, armored, june_2026()).expect_err("refused");
        assert!(
            reason.starts_with("malformed signature: "),
            "{armored:?}: {reason}"
        );
        assert!(fingerprint_of(armored).is_err());
    }
}

#[test]
fn no_mangled_signature_panics_or_passes_for_the_original() {
    let signers = parsed(&format!("alice@test {ALICE_PUB}\ndave@test {DAVE_PUB}\n"));
    for signature in [ALICE_SIGNATURE, DAVE_SIGNATURE] {
        let original = parse_armor(signature).unwrap();
        for cut in 0..signature.len() {
            let _ = verify(&signers, MESSAGE, &signature[..cut], june_2026());
        }
        for (at, c) in signature.char_indices() {
            let mangle = |replacement: char| {
                let mut mangled = signature.to_string();
                mangled.replace_range(at..at + c.len_utf8(), replacement.encode_utf8(&mut [0; 4]));
                mangled
            };
            // Parsing is cheap, so every replacement; checking (ed25519 in a debug build)
            // is not, so one per position.
            for replacement in ['z', '/', '+', '=', '-', '\n', '\u{e9}'] {
                let _ = fingerprint_of(&mangle(replacement));
            }
            let mangled = mangle(if c == 'A' { 'B' } else { 'A' });
            if verify(&signers, MESSAGE, &mangled, june_2026()).is_ok() {
                // Only a change the decoder ignores may pass: the same signature.
                assert_eq!(parse_armor(&mangled), Ok(original.clone()), "{mangled}");
            }
        }
    }
}

#[test]
fn fingerprint_of_names_the_signing_key_without_checking() {
    assert_eq!(fingerprint_of(ALICE_SIGNATURE).unwrap(), ALICE_FINGERPRINT);
    assert_eq!(fingerprint_of(BOB_SIGNATURE).unwrap(), BOB_FINGERPRINT);
    assert_eq!(
        fingerprint_of(DAVE_SIGNATURE).unwrap(),
        "SHA256:i2pr/VUICahkPBnq/DB0+g73Z1EikomC7TvkHz3oiaE"
    );
}
