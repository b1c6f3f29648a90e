//! The operational files shipped with handoff: systemd units (checked with
//! `systemd-analyze verify`; scripts/vagrant-test.sh runs them under systemd) and the Vagrant
//! machines (`vagrant validate`; scripts/vagrant-test.sh boots one). The tools are installed
//! by scripts/test.sh; the tests that need them are ignored by a plain `cargo test` and fail,
//! rather than pass, when asked to run without them.

use std::path::Path;
use std::process::Command;

fn available(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

const UNITS: &[&str] = &[
    "handoff-restore.service",
    "handoff-update@.service",
    "handoff-monitor@.service",
    "handoff-fleet-agent.service",
];

#[test]
fn the_units_run_the_installed_binary_with_the_right_commands() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let read = |name: &str| std::fs::read_to_string(root.join(name)).expect(name);
    assert!(read("handoff-restore.service").contains("ExecStart=/usr/sbin/handoff restore"));
    assert!(read("handoff-restore.service").contains("After=network-online.target docker.service"));
    assert!(read("handoff-restore.service").contains("Type=oneshot"));
    assert!(read("handoff-update@.service").contains("ExecStart=/usr/sbin/handoff update %i"));
    assert!(read("handoff-update@.service").contains("Type=oneshot"));
    assert!(read("handoff-monitor@.service").contains("ExecStart=/usr/sbin/handoff monitor %i"));
    assert!(read("handoff-monitor@.service").contains("Restart=always"));
}

#[test]
#[ignore = "needs systemd-analyze: run by scripts/test.sh, which installs it"]
fn systemd_analyze_accepts_the_units() {
    assert!(
        available("systemd-analyze"),
        "systemd-analyze is not installed (apt-get install systemd)"
    );
    // Verify copies whose ExecStart points at the freshly built binary, so the check does not
    // depend on an installed handoff; template units are verified as instances.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let mut paths = Vec::new();
    for unit in UNITS {
        let text = std::fs::read_to_string(root.join(unit))
            .expect("unit")
            .replace("/usr/sbin/handoff", env!("CARGO_BIN_EXE_handoff"));
        let name = unit.replace("@.", "@web.");
        std::fs::write(dir.path().join(&name), text).expect("copy unit");
        // Templates must be present under their own name for the instance to resolve.
        if name != *unit {
            std::fs::write(
                dir.path().join(unit),
                std::fs::read_to_string(dir.path().join(&name)).expect("instance"),
            )
            .expect("template");
        }
        paths.push(dir.path().join(name));
    }
    // Documentation= names man pages: verify finds them in the pages this binary renders.
    let man8 = dir.path().join("man/man8");
    std::fs::create_dir_all(&man8).expect("man dir");
    let rendered = Command::new(env!("CARGO_BIN_EXE_handoff"))
        .args(["man", "--dir"])
        .arg(&man8)
        .status()
        .expect("handoff man");
    assert!(rendered.success());
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .env("MANPATH", dir.path().join("man"))
        .output()
        .expect("systemd-analyze");
    assert!(
        output.status.success(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_provider_installs_the_package_with_the_same_provisioning_script() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("vagrant/Vagrantfile")).expect("Vagrantfile");
    assert!(text.contains("config.vm.provider \"docker\""));
    assert!(text.contains("debian/bookworm64"));
    assert!(text.contains("path: \"provision.sh\""));
    let test = std::fs::read_to_string(root.join("scripts/vagrant-test.sh")).expect("script");
    assert!(test.contains("bash /handoff/vagrant/provision.sh"));
}

#[test]
#[ignore = "needs vagrant: run by scripts/test.sh, which installs it"]
fn vagrant_validates_the_vm_definition() {
    let vagrantfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("vagrant/Vagrantfile");
    assert!(
        available("vagrant"),
        "vagrant is not installed (apt-get install vagrant)"
    );
    let output = Command::new("vagrant")
        .arg("validate")
        .current_dir(vagrantfile.parent().expect("dir"))
        .output()
        .expect("vagrant validate");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
