//! The unit tests of signing, against keys and signatures that OpenSSH itself made: here those
//! fixtures and the helpers the tests share, and beside them one module per part of the code.

mod agent;
mod allowed_signers;
mod key_files;
mod verify;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Signers;

// Made once with OpenSSH 9.2 (`ssh-keygen -t ed25519 -N '' -C alice@test -f alice`, and so on;
// carol's passphrase is "secret", dave is ecdsa-sha2-nistp256), the signatures with
// `ssh-keygen -Y sign -n NAMESPACE -f KEY` over MESSAGE. Test keys only.
const MESSAGE: &[u8] = b"fleet spec v1\n";
const ALICE: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACC3SRzOOEMx2Vlani9lJ2XT/0eaCThWDMTq2Bt25qN5xQAAAJD9ldZ+/ZXW
fgAAAAtzc2gtZWQyNTUxOQAAACC3SRzOOEMx2Vlani9lJ2XT/0eaCThWDMTq2Bt25qN5xQ
AAAEBJ/94dl/LivqB8gAz9GjE15xGnCK1eCZVwWUzqbYNWs7dJHM44QzHZWVqeL2UnZdP/
R5oJOFYMxOrYG3bmo3nFAAAACmFsaWNlQHRlc3QBAgM=
-----END OPENSSH PRIVATE KEY-----
";
const ALICE_PUB: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILdJHM44QzHZWVqeL2UnZdP/R5oJOFYMxOrYG3bmo3nF alice@test";
const ALICE_FINGERPRINT: &str = "SHA256:1P9yXXQE2L0zc5VGrBaFWJmdjtg6gZxbYrviJ/zlTR4";
const BOB_PUB: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJoV8AQW4JYsAGxTPCEwXpdvGUHxOAiWjMONLnBDejN+ bob@test";
const BOB_FINGERPRINT: &str = "SHA256:J/WGuQJUyhE0dEWv8eCN10qaCVUp9n+QsX4ijkFbrfY";
const CAROL_ENCRYPTED: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABAU2sVE9X
aazxiHLlnCbLhcAAAAEAAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5AAAAIIy5c02KJ8W80Yzm
2Dql/ctEkGruilBd4SXZfcgGNsuxAAAAkHAW6BV6MW4weDRWI1KHVsgll1yBo22umQ1QTT
ANOHViCW0wJvqg2qVa0ByCUyHjoK/3kDMD8Tdgndzogy+SIYHp92PQFXY2vUAtYp2Rt/yW
YyDB1N8Exfe6vm4rJ9pyJoZmp4rasvSc/P51N3VvhTzki+LF9bD/M0S9innsHaHoCqrAkg
zNosZqkpjuEDYxTg==
-----END OPENSSH PRIVATE KEY-----
";
const DAVE_ECDSA: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAaAAAABNlY2RzYS
1zaGEyLW5pc3RwMjU2AAAACG5pc3RwMjU2AAAAQQTBMqhZbO/Ir5cISwcFsrxXGC+aq885
Z3MnQRLofvcRpWe5jnCLlptah5znkH7IfVA2wYqipSO/guV9W1ZOUd42AAAAqNH1HfzR9R
38AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBMEyqFls78ivlwhL
BwWyvFcYL5qrzzlncydBEuh+9xGlZ7mOcIuWm1qHnOeQfsh9UDbBiqKlI7+C5X1bVk5R3j
YAAAAhAIzzmx8Mg8jd5biuVRNa6AYA8+asv8gT3ZLQJwtMrQsOAAAACWRhdmVAdGVzdAEC
AwQFBg==
-----END OPENSSH PRIVATE KEY-----
";
const DAVE_PUB: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBMEyqFls78ivlwhLBwWyvFcYL5qrzzlncydBEuh+9xGlZ7mOcIuWm1qHnOeQfsh9UDbBiqKlI7+C5X1bVk5R3jY= dave@test";
const ALICE_SIGNATURE: &str = "-----BEGIN SSH SIGNATURE-----
U1NIU0lHAAAAAQAAADMAAAALc3NoLWVkMjU1MTkAAAAgt0kczjhDMdlZWp4vZSdl0/9Hmg
k4VgzE6tgbduajecUAAAANaGFuZG9mZi1mbGVldAAAAAAAAAAGc2hhNTEyAAAAUwAAAAtz
c2gtZWQyNTUxOQAAAED7NHXkYZj3/pR2iU2QC57bD+0fNJG78xkjxB+mYFsGuuDp2eP09L
Xz9IzwNw+IyPwzPAII+DWiGJv/NTtGEeEI
-----END SSH SIGNATURE-----
";
/// `-O hashalg=sha256`, which `ssh-keygen -Y verify` accepts too.
const ALICE_SHA256_SIGNATURE: &str = "-----BEGIN SSH SIGNATURE-----
U1NIU0lHAAAAAQAAADMAAAALc3NoLWVkMjU1MTkAAAAgt0kczjhDMdlZWp4vZSdl0/9Hmg
k4VgzE6tgbduajecUAAAANaGFuZG9mZi1mbGVldAAAAAAAAAAGc2hhMjU2AAAAUwAAAAtz
c2gtZWQyNTUxOQAAAEDEviMrzvqSpFlNKBroYmbUgfvI0A0xR9YxgtAXCw5G2e7JnacROJ
gZGVRinLluZbRWjLe0RaYhY8HVcjypaLYA
-----END SSH SIGNATURE-----
";
/// Namespace "git": what `git commit -S` makes with the same key.
const ALICE_GIT_SIGNATURE: &str = "-----BEGIN SSH SIGNATURE-----
U1NIU0lHAAAAAQAAADMAAAALc3NoLWVkMjU1MTkAAAAgt0kczjhDMdlZWp4vZSdl0/9Hmg
k4VgzE6tgbduajecUAAAADZ2l0AAAAAAAAAAZzaGE1MTIAAABTAAAAC3NzaC1lZDI1NTE5
AAAAQMtpXFvUZgmbj8cB7FBzw+EhCTAG1aEX5G62q3Ud0davmCMBIwIyYCC9BN29slQuem
DQKzZxIfl/9ZTwe3xE/gQ=
-----END SSH SIGNATURE-----
";
const BOB_SIGNATURE: &str = "-----BEGIN SSH SIGNATURE-----
U1NIU0lHAAAAAQAAADMAAAALc3NoLWVkMjU1MTkAAAAgmhXwBBbgliwAbFM8ITBel28ZQf
E4CJaMw40ucEN6M34AAAANaGFuZG9mZi1mbGVldAAAAAAAAAAGc2hhNTEyAAAAUwAAAAtz
c2gtZWQyNTUxOQAAAEBahD1DQwUjJn9GNYMuv3NrRX7QcEv1YPvFFs5x0gjtWBTnF1Zspx
271mkM4/Ap3WVDyxvp/4alckiARl6thZUO
-----END SSH SIGNATURE-----
";
const DAVE_SIGNATURE: &str = "-----BEGIN SSH SIGNATURE-----
U1NIU0lHAAAAAQAAAGgAAAATZWNkc2Etc2hhMi1uaXN0cDI1NgAAAAhuaXN0cDI1NgAAAE
EEwTKoWWzvyK+XCEsHBbK8VxgvmqvPOWdzJ0ES6H73EaVnuY5wi5abWoec55B+yH1QNsGK
oqUjv4LlfVtWTlHeNgAAAA1oYW5kb2ZmLWZsZWV0AAAAAAAAAAZzaGE1MTIAAABkAAAAE2
VjZHNhLXNoYTItbmlzdHAyNTYAAABJAAAAIFzm1n98q/qON3mMwor+XnWVxpxiJWWX8+LD
BA0Ox+xKAAAAIQDh12PTMoJGrVQjQf4v4AvTfBDVnjbHFWRO83jO7Qxiug==
-----END SSH SIGNATURE-----
";

const ORIGIN: &str = "/etc/handoff/fleet-signers";

fn parsed(text: &str) -> Signers {
    Signers::parse(text, Path::new(ORIGIN)).expect("parses")
}

/// 2026-06-01T00:00:00Z.
fn june_2026() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_780_272_000)
}

fn write_key(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}
