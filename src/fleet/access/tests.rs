//! The checks `Access::new` makes on its flags and files, the CN reader, and how a grant is
//! spelt as etcd's key ranges: all without an etcd (those are in `tests/fleet_access.rs`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::common_name::common_name;
use super::tls::certificates;
use super::{prefix_end, Access, Held, Settings, WRITE};
use crate::error::{exit_code_of, ExitCode};
use crate::fleet::Keys;

/// A throwaway certificate (`openssl req -x509 -newkey ec -subj
/// /O=handoff/CN=handoff-prod-h1`) and its key; another key that does not go with it.
const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBrzCCAVWgAwIBAgIUZc8ALCkKS8g6VDV7ss67F4BLjTgwCgYIKoZIzj0EAwIw
LDEQMA4GA1UECgwHaGFuZG9mZjEYMBYGA1UEAwwPaGFuZG9mZi1wcm9kLWgxMCAX
DTI2MTIwNDE5NTc0NFoYDzIxMjYxMTEwMTk1NzQ0WjAsMRAwDgYDVQQKDAdoYW5k
b2ZmMRgwFgYDVQQDDA9oYW5kb2ZmLXByb2QtaDEwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAASlFyRy2pLKFsek34Ytm34gXRDRZltdY1ShkMx5CmP9FICD+uZGzJA3
n97xjGaXaGQ5Llxiz8vNEVceS+gsQygio1MwUTAdBgNVHQ4EFgQUq05Q9fSjjHJQ
Z5WlBKMm9JFAWnAwHwYDVR0jBBgwFoAUq05Q9fSjjHJQZ5WlBKMm9JFAWnAwDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEAojHqE1k+07Qkjxw5+6IS
KZVaXUGT/ePUWn7VwyAI/VgCIBCHRk/4vEZkoPISqV0aahJwIENjMBMtwl7oCodY
BDMU
-----END CERTIFICATE-----
";
const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgs+7kkvuIZmbgiCbg
k0E29sVgC8pvg8tqQ1bgLool+zahRANCAASlFyRy2pLKFsek34Ytm34gXRDRZltd
Y1ShkMx5CmP9FICD+uZGzJA3n97xjGaXaGQ5Llxiz8vNEVceS+gsQygi
-----END PRIVATE KEY-----
";
const OTHER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+t4uwXdk5Y6CpiJV
k0ItRRgenxj52eUMbDChLaSrlWyhRANCAARdM2FCHbO7LNbuuOJyVEi32RGl7dQa
w0ue2VHyZy8e3F7jmm+l3xfUIFocyfeo927mJUPL2vYlGogUNtbDL9wU
-----END PRIVATE KEY-----
";

fn file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn refusal(settings: &Settings) -> String {
    let error = Access::new(settings).expect_err("refused");
    assert_eq!(exit_code_of(&error), ExitCode::Input, "{error:#}");
    format!("{error:#}")
}

#[test]
fn the_common_name_of_a_certificate_is_read() {
    let chain = certificates(CERT.as_bytes(), Path::new("c"), "--cert").unwrap();
    assert_eq!(common_name(&chain[0]).as_deref(), Some("handoff-prod-h1"));
    assert_eq!(common_name(b"\x30\x03\x02\x01"), None);
}

#[test]
fn tls_settings_are_checked_before_etcd_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = file(d, "ca.pem", CERT, 0o644);
    let cert = file(d, "h1.pem", CERT, 0o644);
    let key = file(d, "h1.key", KEY, 0o600);
    let https = "https://10.0.0.1:2379".to_string();
    let tls = Settings {
        endpoints: https.clone(),
        cacert: Some(ca.clone()),
        cert: Some(cert.clone()),
        key: Some(key.clone()),
        ..Settings::default()
    };
    let access = Access::new(&tls).unwrap();
    assert!(access.is_tls());
    assert_eq!(access.identity().as_deref(), Some("CN=handoff-prod-h1"));
    // The user is the certificate's CN: no password needed.
    let as_h1 = Settings {
        user: Some("handoff-prod-h1".into()),
        ..tls.clone()
    };
    assert!(Access::new(&as_h1).is_ok());

    let cases: Vec<(Settings, &[&str])> = vec![
        (
            Settings {
                endpoints: "http://10.0.0.1:2379".into(),
                ..tls.clone()
            },
            &[
                "http://10.0.0.1:2379",
                "--cacert, --cert, --key given",
                "https://",
            ],
        ),
        (
            Settings {
                endpoints: format!("{https},http://10.0.0.2:2379"),
                ..tls.clone()
            },
            &["mixes", "http://10.0.0.2:2379"],
        ),
        (
            Settings {
                key: None,
                ..tls.clone()
            },
            &["--cert", "without --key"],
        ),
        (
            Settings {
                cert: None,
                ..tls.clone()
            },
            &["--key", "without --cert"],
        ),
        (
            Settings {
                cacert: None,
                ..tls.clone()
            },
            &["https:// needs --cacert"],
        ),
        (
            Settings {
                user: Some("alice".into()),
                ..tls.clone()
            },
            &["--user \"alice\"", "CN=handoff-prod-h1"],
        ),
        (
            Settings {
                endpoints: https.clone(),
                cacert: Some(ca.clone()),
                user: Some("alice".into()),
                ..Settings::default()
            },
            &["--user \"alice\" needs --password-file"],
        ),
        (
            Settings {
                cacert: Some(key.clone()),
                ..tls.clone()
            },
            &["--cacert", "no PEM certificate"],
        ),
        (
            Settings {
                key: Some(file(d, "other.key", OTHER_KEY, 0o600)),
                ..tls.clone()
            },
            &["other.key does not go with --cert", "h1.pem"],
        ),
    ];
    for (settings, words) in cases {
        let message = refusal(&settings);
        for word in words {
            assert!(message.contains(word), "{word:?} not in {message:?}");
        }
    }

    // A key others can read, or write: refused, showing the mode.
    let open = file(d, "open.key", KEY, 0o640);
    let message = refusal(&Settings {
        key: Some(open.clone()),
        ..tls.clone()
    });
    assert!(
        message.contains("readable by group or others (mode 0640)")
            && message.contains(&open.display().to_string()),
        "{message}"
    );
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o602)).unwrap();
    let message = refusal(&Settings {
        key: Some(open),
        ..tls.clone()
    });
    assert!(
        message.contains("writable by group or others (mode 0602)"),
        "{message}"
    );
    // A CA file others could replace.
    let replaceable = file(d, "open-ca.pem", CERT, 0o666);
    let message = refusal(&Settings {
        cacert: Some(replaceable),
        ..tls.clone()
    });
    assert!(message.contains("--cacert file"), "{message}");
}

#[test]
fn a_password_is_the_first_line_of_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plain = |file: PathBuf| Settings {
        endpoints: "http://127.0.0.1:2379".into(),
        user: Some("root".into()),
        password_file: Some(file),
        ..Settings::default()
    };
    let good = file(d, "pw", "s3cret\r\nignored\n", 0o600);
    let access = Access::new(&plain(good.clone())).unwrap();
    assert_eq!(access.login.as_ref().unwrap().password.expose(), "s3cret");
    assert_eq!(access.identity().as_deref(), Some("root"));
    assert!(!format!("{access:?}").contains("s3cret"));
    for (text, mode, words) in [
        ("\nsecond\n", 0o600, "the first line is empty"),
        ("", 0o600, "the first line is empty"),
        ("s3cret\n", 0o640, "readable by group or others (mode 0640)"),
        ("s3cret\n", 0o604, "readable by group or others (mode 0604)"),
    ] {
        let path = file(d, "bad-pw", text, mode);
        let message = refusal(&plain(path));
        assert!(message.contains(words), "{message}");
    }
    let message = refusal(&Settings {
        user: None,
        ..plain(good)
    });
    assert!(message.contains("without --user"), "{message}");
}

#[test]
fn a_prefix_grant_is_the_range_to_the_next_key() {
    assert_eq!(prefix_end(b"/a/"), b"/a0");
    assert_eq!(prefix_end(b"a\xff"), b"b");
    assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    let keys = Keys::new("prod").unwrap();
    let held: Vec<String> = keys
        .host_grants("h1")
        .iter()
        .map(|g| Held::of(g).to_string())
        .collect();
    assert!(
        held.contains(&"readwrite /handoff/fleets/prod/status/h1/*".to_string()),
        "{held:?}"
    );
    assert!(
        held.contains(&"read /handoff/fleets/prod/*".to_string()),
        "{held:?}"
    );
    assert!(
        held.contains(&"readwrite /handoff/fleets/prod/hosts/h1".to_string()),
        "{held:?}"
    );
    let foreign = Held {
        key: b"/a".to_vec(),
        range_end: b"/z".to_vec(),
        kind: WRITE,
    };
    assert_eq!(foreign.to_string(), "write [/a, /z)");
}
