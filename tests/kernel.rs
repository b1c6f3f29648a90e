//! The kernel path end to end: real namespaces, real nftables, real conntrack, the real
//! binary. Each test builds its own sandbox (see `common`).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn gateway_80() -> String {
    format!("{GATEWAY}:80")
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn a_switch_moves_new_connections_while_an_upload_finishes_byte_exact_on_the_old_backend() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    sandbox.serve_both_on_a();

    // 24 MB at 8 MB/s: about three seconds in flight, across the switch.
    let upload = sandbox.spawn_netkit(
        &sandbox.client,
        &[
            "upload",
            "--target",
            &gateway_80(),
            "--bytes",
            "24000000",
            "--rate",
            "8000000",
        ],
    );
    std::thread::sleep(Duration::from_millis(700));
    let switched = sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_B]);
    assert!(
        switched.contains(&format!("{BACKEND_A} is draining")),
        "{switched}"
    );

    let after = sandbox.requests(&sandbox.client, &gateway_80(), 700);
    assert_eq!(after["failed"], 0, "{after}");
    assert!(after["ok"].as_u64().unwrap() > 0, "{after}");
    assert_eq!(
        after["by_backend"].get("a"),
        None,
        "new connections went to b only: {after}"
    );

    let upload = finish_json(upload);
    assert_eq!(upload["backend"], "a", "{upload}");
    assert_eq!(upload["intact"], true, "{upload}");
    assert_eq!(upload["bytes"], 24_000_000, "{upload}");
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn no_request_fails_during_repeated_switches_under_new_connection_load() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    sandbox.serve_both_on_a();

    let load = sandbox.spawn_netkit(
        &sandbox.client,
        &[
            "load",
            "--target",
            &gateway_80(),
            "--connections",
            "20",
            "--duration-ms",
            "6000",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    for round in 0..20 {
        let to = if round % 2 == 0 { BACKEND_B } else { BACKEND_A };
        sandbox.handoff_ok(&["switch", "web", "--to", to]);
        std::thread::sleep(Duration::from_millis(100));
    }
    let result = finish_json(load);
    assert_nothing_failed_or_stalled(&result, "the load");
    assert!(
        result["by_backend"]["a"].as_u64().unwrap_or(0) > 0,
        "{result}"
    );
    assert!(
        result["by_backend"]["b"].as_u64().unwrap_or(0) > 0,
        "{result}"
    );
}

/// Event-driven: the lag is that of one conntrack event, far below the 1-s per-flow recheck
/// that would end the drain if events were lost.
#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn drain_wait_returns_right_after_the_last_flow_closes_and_not_before() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    sandbox.serve_both_on_a();
    let hold = sandbox.hold_on_a_then_switch_to_b(3000);
    let drain = sandbox.spawn_handoff(&["drain", "web", "--wait", "--timeout", "30"]);
    let lag = drain_outlives_hold(hold, drain, Duration::from_secs(20));
    assert!(lag < Duration::from_millis(500), "drain lag {lag:?}");
    let listed = sandbox.list_json();
    assert_eq!(
        listed["components"][0]["draining"],
        serde_json::json!([]),
        "{listed}"
    );
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn drain_timeout_lists_the_open_flows_and_exits_4() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    sandbox.serve_both_on_a();
    let hold = sandbox.hold_on_a_then_switch_to_b(6000);

    let output = sandbox.handoff(&["drain", "web", "--wait", "--timeout", "1"]);
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("10.0.2.2:"),
        "the open flow's client is listed: {stdout}"
    );
    assert!(stdout.contains("ESTABLISHED"), "{stdout}");

    // Still draining, with its flow, for the next look.
    let listed = sandbox.list_json();
    let web = &listed["components"][0];
    assert_eq!(web["active"], BACKEND_B, "{listed}");
    assert_eq!(web["draining"][0]["address"], BACKEND_A, "{listed}");
    assert_eq!(web["draining"][0]["flows"], 1, "{listed}");
    let flows: serde_json::Value =
        serde_json::from_str(&sandbox.handoff_ok(&["flows", "web", "--json"])).unwrap();
    let backends = flows["components"][0]["backends"].as_array().unwrap();
    let draining = backends.iter().find(|b| b["role"] == "draining").unwrap();
    assert_eq!(draining["flows"][0]["state"], "ESTABLISHED", "{flows}");
    assert_eq!(
        draining["flows"][0]["backend"],
        format!("{BACKEND_A}:8080"),
        "{flows}"
    );
    // A drain that gave up waiting cut nothing: the held connection still reaches a.
    let held = finish_json(hold);
    assert_eq!(held["again"], "a", "{held}");
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn a_switch_to_an_unready_address_is_refused_and_leaves_the_ruleset_as_it_was() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(1000, 60_000));
    sandbox.serve(&sandbox.a.clone(), "a");
    sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_A]);
    let before = sandbox.ruleset();

    // b exists but serves nothing; NOBODY does not exist at all.
    for target in [BACKEND_B, NOBODY] {
        let started = Instant::now();
        let output = sandbox.handoff(&["switch", "web", "--to", target]);
        assert_eq!(output.status.code(), Some(3), "{output:?}");
        // It kept trying for readyTimeout (1 s, less the last retry pause), then gave up.
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(700) && took < Duration::from_millis(1700),
            "refused after {took:?}, readyTimeout is 1 s"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("web is not ready at {target}")),
            "{stderr}"
        );
        assert_eq!(sandbox.ruleset(), before);
    }
    let after = sandbox.requests(&sandbox.client, &gateway_80(), 300);
    assert_eq!(after["failed"], 0, "{after}");
    assert_eq!(sandbox.list_json()["components"][0]["active"], BACKEND_A);
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn bad_input_gets_exit_2_and_changes_nothing() {
    require_root!();
    let sandbox = Sandbox::new(&web_config(1000, 60_000));
    let empty = sandbox.ruleset();
    for (args, message) in [
        (
            vec!["switch", "api", "--to", BACKEND_A],
            "unknown component \"api\"",
        ),
        (
            vec!["switch", "web", "--to", "10.0.1"],
            "--to: \"10.0.1\" is not an IPv4 or IPv6 address",
        ),
        (vec!["switch", "web", "--to", "127.0.0.1"], "loopback"),
        (vec!["drain", "api"], "unknown component"),
        (vec!["flows", "api"], "unknown component"),
    ] {
        let output = sandbox.handoff(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    std::fs::write(
        sandbox.config_path(),
        r#"{"components": [{"name": "web", "prots": []}]}"#,
    )
    .unwrap();
    let output = sandbox.handoff(&["switch", "web", "--to", BACKEND_A]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown field `prots`") && stderr.contains("line 1"),
        "{stderr}"
    );
    assert_eq!(sandbox.ruleset(), empty, "no table was created");
    assert!(!sandbox.state_dir().join("state.json").exists());

    // A good config, but in a directory anyone can write to; then a state directory anyone
    // can write to.
    use std::os::unix::fs::PermissionsExt;
    let open = |path: &std::path::Path| {
        std::fs::create_dir_all(path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
    };
    let shared = sandbox.state_dir().with_file_name("shared");
    open(&shared);
    let config = shared.join("handoff.json");
    std::fs::write(&config, web_config(1000, 60_000)).unwrap();
    let output =
        sandbox.handoff_with_env(Some(&config), &["switch", "web", "--to", BACKEND_A], &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "the directory {} above the config",
            shared.display()
        )),
        "{stderr}"
    );
    std::fs::write(sandbox.config_path(), web_config(1000, 60_000)).unwrap();
    let open_state = sandbox.state_dir().with_file_name("open-state");
    open(&open_state);
    let output = sandbox.handoff_custom(
        None,
        Some(&open_state),
        &["switch", "web", "--to", BACKEND_A],
        &[],
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("state directory") && stderr.contains("writable by group or others"),
        "{stderr}"
    );
    assert_eq!(sandbox.ruleset(), empty, "no table was created");
    assert_eq!(
        std::fs::read_dir(&open_state).unwrap().count(),
        0,
        "no lock, no state"
    );
}

/// Every table but ours, as nft lists it.
fn foreign_tables(sandbox: &Sandbox) -> String {
    let ruleset = sandbox.ruleset();
    let mut out = String::new();
    let mut ours = false;
    for line in ruleset.lines() {
        if line.starts_with("table ") {
            ours = line.starts_with("table inet handoff ");
        }
        if !ours {
            out.push_str(line);
            out.push('\n');
        }
    }
    // Legacy iptables tables are not in nft's listing: asking iptables-legacy for a chain
    // creates its table.
    let legacy = Command::new("ip")
        .args(["netns", "exec", &sandbox.gateway, "sh", "-c"])
        .arg("cat /proc/net/ip_tables_names 2>/dev/null")
        .output()
        .expect("legacy table names");
    out.push_str("legacy tables: ");
    out.push_str(&String::from_utf8_lossy(&legacy.stdout));
    out
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn nothing_outside_our_own_table_changes() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 1000));
    sandbox.nft(
        "table ip other {\n chain forward {\n type filter hook forward priority 0; policy accept;\n \
         ip saddr 10.9.9.9 counter drop\n }\n chain prerouting {\n type nat hook prerouting \
         priority -100; policy accept;\n tcp dport 9999 counter\n }\n}\n\
         table inet another {\n set s {\n type ipv4_addr\n elements = { 10.9.9.8 }\n }\n}\n",
    );
    sandbox.serve(&sandbox.a.clone(), "a");
    sandbox.serve(&sandbox.b.clone(), "b");
    let before = foreign_tables(&sandbox);
    assert!(before.contains("table ip other") && before.contains("table inet another"));

    // Every command an address component has, each followed by the check, with the exit
    // status it must have: this is the only integration run of `check`, plain `list`, plain
    // `flows` and `drain NAME`, so a failure here is theirs, not noise.
    let commands: &[(&[&str], i32)] = &[
        (&["check"], 0),
        (&["switch", "web", "--to", BACKEND_A], 0),
        (&["switch", "web", "--to", BACKEND_B], 0),
        (&["list"], 0),
        (&["flows"], 0),
        (&["drain", "web"], 0),
        (&["drain", "web", "--wait", "--timeout", "10"], 0),
        // Nobody answers there: never ready, refused with exit 3, nothing switched.
        (&["switch", "web", "--to", NOBODY], 3),
        (&["stop", "web"], 0),
        (&["switch", "web", "--to", BACKEND_A], 0),
        (&["kill", "web"], 0),
        (&["switch", "web", "--to", BACKEND_B], 0),
        (&["teardown"], 0),
        (&["restore"], 0),
    ];
    for (args, expected) in commands {
        let output = sandbox.handoff(args);
        assert_eq!(
            output.status.code(),
            Some(*expected),
            "handoff {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        sandbox.requests(&sandbox.client, &gateway_80(), 100);
        assert_eq!(foreign_tables(&sandbox), before, "after handoff {args:?}");
    }
    assert!(sandbox.ruleset().contains("table inet handoff"));
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn hairpin_and_host_local_clients_reach_the_component() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    sandbox.serve_both_on_a();
    let through_bridge = format!("{BRIDGE_GATEWAY}:80");

    // a reaches its own component through the host: only masquerading makes this work (a
    // packet from its own address would be dropped by a as a martian).
    let own = sandbox.requests(&sandbox.a, &through_bridge, 300);
    assert_eq!(own["failed"], 0, "{own}");
    assert!(own["by_backend"]["a"].as_u64().unwrap() > 0, "{own}");
    // b, on the same bridge, reaches the component that a serves.
    let neighbour = sandbox.requests(&sandbox.b, &through_bridge, 300);
    assert_eq!(neighbour["failed"], 0, "{neighbour}");
    assert!(
        neighbour["by_backend"]["a"].as_u64().unwrap() > 0,
        "{neighbour}"
    );
    // A client on the host itself, on either of the host's addresses.
    for target in [gateway_80(), through_bridge] {
        let local = sandbox.requests(&sandbox.gateway, &target, 300);
        assert_eq!(local["failed"], 0, "{target}: {local}");
        assert!(local["by_backend"]["a"].as_u64().unwrap() > 0, "{local}");
    }
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn list_json_keeps_its_contract() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    let unrouted = sandbox.list_json();
    assert_eq!(
        unrouted["components"][0],
        serde_json::json!({"name": "web", "active": null, "active_flows": null, "ports": null,
                           "active_since_ms": null, "active6": null, "active6_flows": null,
                           "canary": null, "draining": [], "containers": []})
    );
    sandbox.serve_both_on_a();
    let mut hold = sandbox.hold_on_a_then_switch_to_b(5000);
    let listed = sandbox.list_json();
    let web = &listed["components"][0];
    // Every field the README documents, with its type, routed and draining.
    let port = serde_json::json!([{"external": 80, "backend": 8080}]);
    assert_eq!(web["name"], "web");
    assert_eq!(web["active"], BACKEND_B);
    assert_eq!(web["active_flows"], 0);
    assert!(web["active_since_ms"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(web["ports"], port);
    assert_eq!(web["active6"], serde_json::Value::Null);
    assert_eq!(web["active6_flows"], serde_json::Value::Null);
    assert_eq!(web["canary"], serde_json::Value::Null);
    assert_eq!(web["containers"], serde_json::json!([]));
    assert_eq!(web["draining"][0]["address"], BACKEND_A);
    assert_eq!(web["draining"][0]["flows"], 1);
    assert!(web["draining"][0]["since_ms"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(web["draining"][0]["ports"], port);
    let _ = hold.kill();
    let _ = hold.wait();
    // During a canary: its address, weight, kind and flows.
    sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_A, "--weight", "30"]);
    let canary = &sandbox.list_json()["components"][0]["canary"];
    assert_eq!(
        *canary,
        serde_json::json!({"address": BACKEND_A, "weight": 30, "sticky": false, "flows": 0}),
        "{canary}"
    );
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn a_held_lock_makes_a_switch_wait_then_fail_with_exit_5_changing_nothing() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    sandbox.serve(&sandbox.a.clone(), "a");
    sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_A]);
    let before = sandbox.ruleset();
    let lock = sandbox.state_dir().join("lock");
    let mut holder = std::process::Command::new("flock")
        .arg(path_str(&lock))
        .args(["sleep", "30"])
        .spawn()
        .expect("flock");
    std::thread::sleep(Duration::from_millis(200));
    let output = sandbox.handoff(&["--lock-timeout", "1", "switch", "web", "--to", BACKEND_B]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(output.status.code(), Some(5), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("another handoff run holds the lock"),
        "{stderr}"
    );
    assert_eq!(sandbox.ruleset(), before);
    // Once the lock is free, the same command goes through.
    sandbox.serve(&sandbox.b.clone(), "b");
    sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_B]);
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn restore_rebuilds_a_deleted_table_and_resumes_draining() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    sandbox.serve_both_on_a();
    let hold = sandbox.hold_on_a_then_switch_to_b(2500);
    sandbox.nft("delete table inet handoff\n");
    let broken = sandbox.requests(&sandbox.client, &gateway_80(), 300);
    assert_eq!(
        broken["ok"], 0,
        "nothing is forwarded without the table: {broken}"
    );

    // Restore resumes the drain and waits for the held flow: it must not return before it.
    let restore = sandbox.spawn_handoff(&["restore"]);
    drain_outlives_hold(hold, restore, Duration::from_secs(20));
    let after = sandbox.requests(&sandbox.client, &gateway_80(), 300);
    assert_eq!(after["failed"], 0, "{after}");
    assert!(
        after["by_backend"]["b"].as_u64().unwrap_or(0) > 0,
        "{after}"
    );
    let listed = sandbox.list_json();
    assert_eq!(listed["components"][0]["active"], BACKEND_B, "{listed}");
    assert_eq!(
        listed["components"][0]["draining"],
        serde_json::json!([]),
        "{listed}"
    );
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn teardown_leaves_no_table_twice_over_and_restore_routes_again() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 1000));
    sandbox.serve(&sandbox.a.clone(), "a");
    sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_A]);
    assert!(sandbox.ruleset().contains("table inet handoff"));

    for round in ["first", "second (nothing left to remove)"] {
        sandbox.handoff_ok(&["teardown"]);
        let ruleset = sandbox.ruleset();
        assert!(
            !ruleset.contains("table inet handoff"),
            "{round} teardown: {ruleset}"
        );
    }
    let without = sandbox.requests(&sandbox.client, &gateway_80(), 300);
    assert_eq!(
        without["ok"], 0,
        "nothing is forwarded after teardown: {without}"
    );

    // The state file was kept: restore routes the component again.
    sandbox.handoff_ok(&["restore"]);
    let after = sandbox.requests(&sandbox.client, &gateway_80(), 300);
    assert_nothing_failed_or_stalled(&after, "after restore");
    assert_served_by(&after, "a");
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn a_broken_host_gets_exit_6_or_1_and_changes_nothing() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    sandbox.serve(&sandbox.a.clone(), "a");
    sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_A]);
    let before = sandbox.ruleset();
    let state = std::fs::read_to_string(sandbox.state_dir().join("state.json")).unwrap();

    // No nft binary, when the layout must be created (a switch of an already routed component
    // goes over netlink alone and does not need it).
    let output = sandbox.handoff_with_env(
        None,
        &["--table", "fresh", "switch", "web", "--to", BACKEND_A],
        &[("PATH", "/nonexistent")],
    );
    assert_eq!(output.status.code(), Some(6), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("nft binary was not found"));

    // Docker not running (a component with repo needs it).
    let docker_config = sandbox.dir.path().join("docker.json");
    let output = sandbox.handoff_with_env(
        Some(&docker_config),
        &["start", "app"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert_eq!(output.status.code(), Some(6), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("Docker is not reachable"));

    // A config that others may write.
    let loose = sandbox.dir.path().join("loose.json");
    std::fs::copy(sandbox.config_path(), &loose).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o666)).unwrap();
    let output = sandbox.handoff_with_env(Some(&loose), &["switch", "web", "--to", BACKEND_A], &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("writable by group or others"));

    // A full disk under the state directory: the state cannot be written, so nothing switches.
    let full = sandbox.dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    let _mount = common::TinyTmpfs::mount(&full);
    std::fs::copy(
        sandbox.state_dir().join("state.json"),
        full.join("state.json"),
    )
    .unwrap();
    common::fill(&full);
    sandbox.serve(&sandbox.b.clone(), "b");
    let output = sandbox.handoff_custom(
        None,
        Some(&full),
        &["switch", "web", "--to", BACKEND_B],
        &[],
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("writing the state file"));

    // Not root: a user without CAP_NET_ADMIN cannot change the ruleset (nor read conntrack).
    let output = Command::new("ip")
        .args(["netns", "exec", &sandbox.gateway])
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .args([
            "--inh-caps=-all",
            "--bounding-set=-all",
            HANDOFF,
            "--config",
        ])
        .arg(sandbox.config_path())
        .args([
            "--state-dir",
            "/nonexistent/state",
            "switch",
            "web",
            "--to",
            BACKEND_B,
        ])
        .output()
        .expect("setpriv");
    assert_eq!(output.status.code(), Some(6), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("root"),
        "{output:?}"
    );

    assert_eq!(sandbox.ruleset(), before);

    // A real kernel refusal: a table of that name whose prerouting chain is a filter chain on
    // another hook. The layout's transaction is refused whole (exit 1, the kernel's word
    // quoted) and that table stays exactly as it was.
    sandbox.nft(
        "table inet refused {\n chain prerouting {\n type filter hook input priority 0; \
         policy accept;\n }\n}\n",
    );
    let refused_before = sandbox.ruleset();
    let refused_state = sandbox.dir.path().join("refused-state");
    let output = sandbox.handoff_custom(
        None,
        Some(&refused_state),
        &["--table", "refused", "switch", "web", "--to", BACKEND_B],
        &[],
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("nothing was changed"),
        "{output:?}"
    );
    assert_eq!(sandbox.ruleset(), refused_before);
    sandbox.nft("delete table inet refused\n");
    assert_eq!(
        std::fs::read_to_string(sandbox.state_dir().join("state.json")).unwrap(),
        state
    );
    assert_eq!(
        std::fs::read_to_string(full.join("state.json")).unwrap(),
        state
    );
}

/// The events sysctl of the gateway namespace.
fn conntrack_events(sandbox: &Sandbox) -> String {
    let output = std::process::Command::new("ip")
        .args(["netns", "exec", &sandbox.gateway, "sysctl", "-n"])
        .arg("net.netfilter.nf_conntrack_events")
        .output()
        .expect("sysctl");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn drain_ends_by_lookups_when_flows_report_no_events() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    // Events turned off on purpose: handoff leaves the setting alone, so flows carry no event
    // extension and only the per-flow lookups (every second) can see the last one end.
    let set = std::process::Command::new("ip")
        .args(["netns", "exec", &sandbox.gateway, "sysctl", "-qw"])
        .arg("net.netfilter.nf_conntrack_events=0")
        .status()
        .expect("sysctl");
    assert!(set.success(), "turning events off");
    sandbox.serve_both_on_a();
    let hold = sandbox.hold_on_a_then_switch_to_b(2000);
    assert_eq!(conntrack_events(&sandbox), "0", "switch left events off");
    let drain = sandbox.spawn_handoff(&["drain", "web", "--wait", "--timeout", "30"]);
    let lag = drain_outlives_hold(hold, drain, Duration::from_secs(20));
    assert!(
        lag < Duration::from_millis(1500),
        "drain lag without events: {lag:?}"
    );
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn a_drain_waits_for_flows_in_a_non_default_conntrack_zone() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    // Every packet through the gateway is tracked in zone 5 (as on hosts that sort flows into
    // zones): a lookup that names no zone would find none of them and end the drain early.
    sandbox.nft(
        "table inet zones {
            chain pre { type filter hook prerouting priority raw; ct zone set 5; }
            chain out { type filter hook output priority raw; ct zone set 5; }
        }",
    );
    sandbox.serve_both_on_a();
    let hold = sandbox.hold_on_a_then_switch_to_b(2500);
    let drain = sandbox.spawn_handoff(&["drain", "web", "--wait", "--timeout", "30"]);
    let lag = drain_outlives_hold(hold, drain, Duration::from_secs(20));
    assert!(lag < Duration::from_secs(2), "drain lag {lag:?}");
}

/// Run `f` on a thread inside the network namespace `ns` (sockets it opens live there).
fn in_namespace<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("namespace file");
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("namespace thread")
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn the_event_socket_gets_its_whole_buffer_and_only_the_watched_backends_events() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    // Routed by handoff, so that the gateway namespace tracks connections at all.
    sandbox.serve_both_on_a();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watcher = std::thread::spawn({
        let gateway = sandbox.gateway.clone();
        move || {
            in_namespace(&gateway, move || {
                let watched = BACKEND_A.parse().unwrap();
                let mut events = handoff::kernel::conntrack::EventStream::subscribe(&[watched])
                    .expect("subscribe");
                let buffer = events.receive_buffer().expect("SO_RCVBUF");
                ready_tx.send(()).unwrap();
                done_rx.recv().unwrap();
                let mut backends = std::collections::BTreeSet::new();
                loop {
                    match events.wait(Duration::from_millis(200)).expect("events") {
                        handoff::kernel::conntrack::Events::Changes(changes) => {
                            backends.extend(changes.iter().map(|c| c.flow().backend.ip()))
                        }
                        handoff::kernel::conntrack::Events::Idle => break,
                        handoff::kernel::conntrack::Events::Overrun => {
                            panic!("the filtered socket overran")
                        }
                    }
                }
                (buffer, backends)
            })
        }
    });
    ready_rx.recv().unwrap();
    // Straight to each backend through the gateway (routed, not NAT'd): the reply source is
    // the backend either way.
    for backend in [BACKEND_A, BACKEND_B] {
        let result = sandbox.requests(&sandbox.client, &format!("{backend}:8080"), 300);
        assert_nothing_failed_or_stalled(&result, "the load");
    }
    done_tx.send(()).unwrap();
    let (buffer, backends) = watcher.join().expect("watcher");
    // The kernel reports twice the size set; net.core.rmem_max (usually far smaller) does not
    // cap it, because root forces it.
    assert!(
        buffer >= 2 * handoff::kernel::conntrack::EVENT_RCVBUF,
        "receive buffer {buffer}"
    );
    let expected: std::collections::BTreeSet<std::net::IpAddr> =
        [BACKEND_A.parse().unwrap()].into();
    assert_eq!(backends, expected, "events seen per backend");
}

/// A port dropped from the config leaves the kernel at the next switch; it used to stay in
/// the dispatch map, pointing at a chain whose map no longer had it (the port fell through to
/// the host), and `stop` then failed to delete that chain after saving the state.
#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn a_port_dropped_from_the_config_leaves_the_ruleset_and_stop_still_works() {
    require_root!();
    let two_ports = web_config(3000, 60_000).replace(
        r#""ports": [{"external": 80, "container": 8080}]"#,
        r#""ports": [{"external": 80, "container": 8080}, {"external": 81, "container": 8080}]"#,
    );
    assert!(two_ports.contains("81"), "{two_ports}");
    let mut sandbox = Sandbox::new(&two_ports);
    sandbox.serve_both_on_a();
    let on_81 = format!("{GATEWAY}:81");
    let before = sandbox.requests(&sandbox.client, &on_81, 200);
    assert_nothing_failed_or_stalled(&before, "port 81 while configured");

    std::fs::write(sandbox.config_path(), web_config(3000, 60_000)).unwrap();
    sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_B]);
    let ruleset = sandbox.ruleset();
    let dispatch = ruleset
        .split("map dispatch")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap_or_default()
        .to_string();
    assert!(dispatch.contains("80 : goto"), "{ruleset}");
    assert!(
        !dispatch.contains("81 : goto"),
        "81 left the dispatch map: {ruleset}"
    );
    let after = sandbox.netkit(
        &sandbox.client,
        &[
            "load",
            "--target",
            &on_81,
            "--connections",
            "1",
            "--duration-ms",
            "200",
            "--max-requests",
            "3",
        ],
    );
    assert_eq!(
        after["ok"], 0,
        "nothing is forwarded on 81 any more: {after}"
    );
    assert_nothing_failed_or_stalled(
        &sandbox.requests(&sandbox.client, &gateway_80(), 200),
        "port 80",
    );

    sandbox.handoff_ok(&["stop", "web"]);
    assert!(
        !sandbox.ruleset().contains("component_web"),
        "{}",
        sandbox.ruleset()
    );
}

/// The retirement, the drain's resync and the monitor dump one backend's flows; the kernel
/// must do the filtering (a whole-table copy per retirement cost 300 ms at 100k entries).
#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn a_dump_for_one_backend_is_filtered_by_the_kernel() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    sandbox.serve_both_on_a();
    for backend in [BACKEND_A, BACKEND_B] {
        let result = sandbox.requests(&sandbox.client, &format!("{backend}:8080"), 300);
        assert_nothing_failed_or_stalled(&result, "the load");
    }
    let (everything, of_a) = in_namespace(&sandbox.gateway, || {
        use handoff::kernel::conntrack::{dump_request, run_dump};
        let a = BACKEND_A.parse().unwrap();
        (
            run_dump(&dump_request(None)).expect("dump"),
            run_dump(&dump_request(Some(a))).expect("filtered dump"),
        )
    });
    let replies_from = |flows: &[handoff::kernel::conntrack::Flow], backend: &str| {
        flows
            .iter()
            .filter(|f| f.backend.ip().to_string() == backend)
            .count()
    };
    assert!(replies_from(&everything, BACKEND_B) > 10, "b was loaded");
    let a_in_table = replies_from(&everything, BACKEND_A);
    assert!(a_in_table > 10, "a was loaded");
    assert_eq!(of_a.len(), replies_from(&of_a, BACKEND_A), "only a's flows");
    // Flows may have ended between the two dumps; none of a's is new.
    assert!(
        of_a.len() <= a_in_table && of_a.len() > 10,
        "{}",
        of_a.len()
    );
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn a_drained_address_backend_leaves_no_conntrack_entry_behind() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    sandbox.serve_both_on_a();
    // Finished flows through a: their entries wait in TIME_WAIT for two minutes.
    let served = sandbox.requests(&sandbox.client, &gateway_80(), 300);
    assert_eq!(served["failed"], 0, "{served}");
    let entries_of_a = |sandbox: &Sandbox| {
        in_namespace(&sandbox.gateway, || {
            handoff::kernel::conntrack::dump()
                .expect("dump")
                .into_iter()
                .filter(|f| f.is_dnat() && f.backend.to_string() == format!("{BACKEND_A}:8080"))
                .count()
        })
    };
    assert!(entries_of_a(&sandbox) > 10, "the load left entries of a");
    sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_B]);
    sandbox.handoff_ok(&["drain", "web", "--wait", "--timeout", "10"]);
    // Whoever stops a later (dockerd, for a container) finds nothing to delete by a tuple
    // that a client may have reused since.
    assert_eq!(entries_of_a(&sandbox), 0);
}

/// handoff in the gateway, in a mount namespace of its own where /proc/sys is read-only (as in
/// containers used as hosts, or hardened hosts).
fn handoff_with_read_only_sysctls(sandbox: &Sandbox, args: &[&str]) -> std::process::Child {
    let command = format!(
        "mount -o bind,ro /proc/sys /proc/sys && exec {HANDOFF} --config {} --state-dir {} {}",
        sandbox.config_path().display(),
        sandbox.state_dir().display(),
        args.join(" ")
    );
    std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &sandbox.gateway,
            "unshare",
            "-m",
            "sh",
            "-c",
        ])
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("handoff under a read-only /proc/sys")
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn a_read_only_proc_sys_costs_a_warning_not_a_switch_and_drains_still_end() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    sandbox.serve(&sandbox.a.clone(), "a");
    sandbox.serve(&sandbox.b.clone(), "b");
    let switched = handoff_with_read_only_sysctls(&sandbox, &["switch", "web", "--to", BACKEND_A])
        .wait_with_output()
        .expect("switch");
    let stderr = String::from_utf8_lossy(&switched.stderr);
    assert!(switched.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("nf_conntrack_events"),
        "{stderr}"
    );
    assert_eq!(
        conntrack_events(&sandbox),
        "2",
        "the read-only setting was left as it was"
    );
    let hold = sandbox.hold_on_a_then_switch_to_b(2000);
    let drain =
        handoff_with_read_only_sysctls(&sandbox, &["drain", "web", "--wait", "--timeout", "30"]);
    let lag = drain_outlives_hold(hold, drain, Duration::from_secs(20));
    assert!(lag < Duration::from_secs(2), "drain lag {lag:?}");
}

/// A TLS server in namespace `ns` on 8443 (self-signed certificate: backends are addressed by
/// IP, so https checks do not verify it): `/ok` answers 200, anything else 503.
fn serve_tls(sandbox: &mut Sandbox, ns: &str) {
    let dir = sandbox.dir.path();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
        ])
        .arg("/CN=backend")
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{made:?}");
    let ready = dir.join("tls.ready");
    let script = format!(
        r#"
import http.server, ssl, pathlib
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status = 200 if self.path == "/ok" else 503
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("0.0.0.0", 8443), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("{cert}", "{key}")
server.socket = context.wrap_socket(server.socket, server_side=True)
pathlib.Path("{ready}").write_text("ready")
server.serve_forever()
"#,
        cert = cert.display(),
        key = key.display(),
        ready = ready.display()
    );
    sandbox.spawn_child(
        std::process::Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", &script])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    wait_for(Duration::from_secs(10), || ready.exists(), "the TLS server");
}

/// A config whose web component is checked with one ready check of `kind` on `port`/`path`.
fn checked_config(kind: &str, port: u16, path: &str) -> String {
    format!(
        r#"{{"components": [{{"name": "web", "ports": [{{"external": 443, "container": {port}}}],
            "readyChecks": [{{"kind": "{kind}", "port": {port}, "path": "{path}", "timeout": 1}}],
            "readyTimeout": 1500, "drainTimeout": 60000}}]}}"#
    )
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn https_ready_checks_pass_on_a_tls_200_and_fail_on_a_503_or_plain_http() {
    require_root!();
    let mut sandbox = Sandbox::new(&checked_config("https", 8443, "/ok"));
    let a = sandbox.a.clone();
    serve_tls(&mut sandbox, &a);
    sandbox.serve(&sandbox.b.clone(), "b");
    sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_A]);
    // The same TLS backend answering 503.
    std::fs::write(
        sandbox.config_path(),
        checked_config("https", 8443, "/unavailable"),
    )
    .expect("config");
    let unavailable = sandbox.handoff(&["switch", "web", "--to", BACKEND_A]);
    assert_eq!(unavailable.status.code(), Some(3), "{unavailable:?}");
    assert!(
        String::from_utf8_lossy(&unavailable.stderr).contains("503"),
        "{unavailable:?}"
    );
    // A plain HTTP backend (b's netkit on 8080) does not pass an https check.
    std::fs::write(sandbox.config_path(), checked_config("https", 8080, "/")).expect("config");
    let plain = sandbox.handoff(&["switch", "web", "--to", BACKEND_B]);
    assert_eq!(plain.status.code(), Some(3), "{plain:?}");
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn a_mutating_run_waits_for_the_lock_and_proceeds_once_it_is_free() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    sandbox.serve_both_on_a();
    let lock = sandbox.state_dir().join("lock");
    let mut holder = std::process::Command::new("flock")
        .arg(path_str(&lock))
        .args(["sleep", "1.5"])
        .spawn()
        .expect("flock");
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let output = sandbox.handoff(&["--lock-timeout", "10", "switch", "web", "--to", BACKEND_B]);
    let waited = started.elapsed();
    let _ = holder.wait();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("waiting for another run to finish"),
        "{stderr}"
    );
    assert!(
        waited >= Duration::from_millis(1000),
        "it went through after {waited:?}, while the lock was held"
    );
    assert_eq!(sandbox.list_json()["components"][0]["active"], BACKEND_B);
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn drain_wait_holds_no_lock_while_it_waits() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    sandbox.serve_both_on_a();
    let hold = sandbox.hold_on_a_then_switch_to_b(4000);
    let drain = sandbox.spawn_handoff(&["drain", "web", "--wait", "--timeout", "30"]);
    std::thread::sleep(Duration::from_millis(500));
    // A mutating command goes through at once while the drain waits (it would wait out the
    // whole drain, then fail with exit 5, if the drain held the lock).
    let started = Instant::now();
    let output = sandbox.handoff(&["--lock-timeout", "1", "switch", "web", "--to", BACKEND_B]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("waiting for another run"),
        "{output:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    drain_outlives_hold(hold, drain, Duration::from_secs(20));
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn a_rollback_under_load_routes_back_and_keeps_every_flow_where_it_started() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    sandbox.serve_both_on_a();
    let hold = |sandbox: &Sandbox, backend: &str| {
        let mut hold = sandbox.spawn_netkit(
            &sandbox.client,
            &["hold", "--target", &gateway_80(), "--ms", "4000"],
        );
        let line = read_line(&mut hold);
        assert!(
            line.contains(&format!(r#""backend":"{backend}""#)),
            "{line}"
        );
        hold
    };
    let on_a = hold(&sandbox, "a");
    sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_B]);
    let on_b = hold(&sandbox, "b");
    let load = sandbox.spawn_netkit(
        &sandbox.client,
        &[
            "load",
            "--target",
            &gateway_80(),
            "--connections",
            "8",
            "--duration-ms",
            "2000",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let said = sandbox.handoff_ok(&["rollback", "web"]);
    assert!(said.contains(BACKEND_A), "{said}");
    let result = finish_json(load);
    assert_nothing_failed_or_stalled(&result, "the load across the rollback");
    for backend in ["a", "b"] {
        assert!(
            result["by_backend"][backend].as_u64().unwrap_or(0) > 0,
            "{result}"
        );
    }
    // Both held connections lived on, each on the backend it started with.
    for (mut held, name) in [(on_a, "a"), (on_b, "b")] {
        let status = held.wait().expect("hold");
        assert!(status.success(), "the connection held on {name} was cut");
    }
    let listed = sandbox.list_json();
    assert_eq!(listed["components"][0]["active"], BACKEND_A, "{listed}");
    assert_eq!(
        listed["components"][0]["draining"][0]["address"], BACKEND_B,
        "{listed}"
    );
    let after = sandbox.requests(&sandbox.client, &gateway_80(), 300);
    assert_served_by(&after, "a");
    assert!(after["by_backend"].get("b").is_none(), "{after}");

    // Once b is retired there is nothing to roll back to: exit 2, the ruleset as it was.
    sandbox.handoff_ok(&["drain", "web", "--wait", "--timeout", "10"]);
    let before = sandbox.ruleset();
    let refused = sandbox.handoff(&["rollback", "web"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("nothing to roll back to"));
    assert_eq!(sandbox.ruleset(), before);
}

/// A component's ports over IPv6: no backend serves IPv6, so they are refused at once (a TCP
/// reset) instead of failing open to what the host itself runs on [::]:PORT; other ports and
/// IPv4 are untouched.
#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn a_components_ports_are_refused_over_ipv6_instead_of_reaching_the_hosts_own_listener() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    let (gw, client) = (sandbox.gateway.clone(), sandbox.client.clone());
    for (ns, address) in [(&gw, "fd00:2::1/64"), (&client, "fd00:2::2/64")] {
        let dev = if ns == &gw { "vc" } else { "eth0" };
        let ok = Command::new("ip")
            .args(["-n", ns, "addr", "add", address, "dev", dev, "nodad"])
            .status()
            .expect("ip");
        assert!(ok.success(), "{address}");
    }
    // The host's own services on [::]:80 (the component's port) and [::]:81 (not one).
    for (port, name) in [(80, "host80"), (81, "host81")] {
        let listen = format!("[::]:{port}");
        sandbox.serve_at(&gw, name, &listen, &[], "the host listener");
    }
    let over_ipv6 = |sandbox: &Sandbox, port: u16| {
        sandbox.requests(&sandbox.client, &format!("[fd00:2::1]:{port}"), 300)
    };
    // The control: before handoff routes web, IPv6 on port 80 reaches the host's listener.
    assert_served_by(&over_ipv6(&sandbox, 80), "host80");

    sandbox.serve_both_on_a();
    let refused = over_ipv6(&sandbox, 80);
    assert_eq!(refused["ok"], 0, "{refused}");
    assert!(refused["failed"].as_u64().unwrap_or(0) > 0, "{refused}");
    assert_served_by(&over_ipv6(&sandbox, 81), "host81");
    assert_served_by(&sandbox.requests(&sandbox.client, &gateway_80(), 300), "a");
    // The host itself too (not over ::1, left alone like 127.0.0.1).
    let local = sandbox.netkit(
        &gw,
        &[
            "load",
            "--target",
            "[fd00:2::1]:80",
            "--connections",
            "1",
            "--duration-ms",
            "200",
        ],
    );
    assert_eq!(local["ok"], 0, "{local}");

    // Once web is stopped its port is the host's again.
    sandbox.handoff_ok(&["stop", "web"]);
    assert_served_by(&over_ipv6(&sandbox, 80), "host80");
}

/// The share of a load's answers that came from `backend`, in percent.
fn share(load: &serde_json::Value, backend: &str) -> f64 {
    let by = &load["by_backend"];
    let total: u64 = ["a", "b"].iter().map(|b| by[b].as_u64().unwrap_or(0)).sum();
    by[backend].as_u64().unwrap_or(0) as f64 * 100.0 / total.max(1) as f64
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn a_canary_takes_its_share_in_the_kernel_and_promote_and_rollback_keep_every_flow() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    sandbox.serve_both_on_a();
    let load = |sandbox: &Sandbox, ms: &str| {
        sandbox.netkit(
            &sandbox.client,
            &[
                "load",
                "--target",
                &gateway_80(),
                "--connections",
                "8",
                "--duration-ms",
                ms,
            ],
        )
    };
    // Bad shares are refused by the command line, nothing changed.
    let before = sandbox.ruleset();
    for bad in [
        vec!["switch", "web", "--to", BACKEND_B, "--weight", "0"],
        vec!["switch", "web", "--to", BACKEND_B, "--weight", "100"],
        vec!["switch", "web", "--to", BACKEND_B, "--sticky"],
    ] {
        let refused = sandbox.handoff(&bad);
        assert_eq!(refused.status.code(), Some(2), "{bad:?}: {refused:?}");
    }
    assert_eq!(sandbox.ruleset(), before);

    // 20 % per connection, measured over at least 10,000 new connections.
    let said = sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_B, "--weight", "20"]);
    assert!(said.contains("20 % of new connections"), "{said}");
    let listed = sandbox.list_json();
    assert_eq!(listed["components"][0]["active"], BACKEND_A, "{listed}");
    assert_eq!(
        listed["components"][0]["canary"]["address"], BACKEND_B,
        "{listed}"
    );
    assert_eq!(listed["components"][0]["canary"]["weight"], 20, "{listed}");
    let measured = load(&sandbox, "4000");
    assert_nothing_failed_or_stalled(&measured, "the canary's load");
    assert!(measured["ok"].as_u64().unwrap() >= 10_000, "{measured}");
    let on_b = share(&measured, "b");
    eprintln!("20 % canary: {on_b:.2} % of {} connections", measured["ok"]);
    assert!(
        (on_b - 20.0).abs() <= 2.0,
        "{on_b:.2} % on the canary: {measured}"
    );

    // Sticky: one client address always lands on the same side, across reruns.
    sandbox.handoff_ok(&[
        "switch", "web", "--to", BACKEND_B, "--weight", "50", "--sticky",
    ]);
    let first = load(&sandbox, "300");
    let side = if share(&first, "b") > 50.0 { "b" } else { "a" };
    assert_eq!(share(&first, side), 100.0, "{first}");
    sandbox.handoff_ok(&[
        "switch", "web", "--to", BACKEND_B, "--weight", "50", "--sticky",
    ]);
    assert_eq!(share(&load(&sandbox, "300"), side), 100.0);

    // A plain switch during a canary is refused.
    let refused = sandbox.handoff(&["switch", "web", "--to", BACKEND_B]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");

    // Rollback ends the canary: a flow held on it lives on; new ones all go to a.
    sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_B, "--weight", "99"]);
    let mut held = sandbox.spawn_netkit(
        &sandbox.client,
        &["hold", "--target", &gateway_80(), "--ms", "2000"],
    );
    let line = read_line(&mut held);
    sandbox.handoff_ok(&["rollback", "web"]);
    assert_eq!(share(&load(&sandbox, "300"), "a"), 100.0);
    assert!(
        held.wait().expect("hold").success(),
        "the held flow ({line}) was cut"
    );
    assert_eq!(
        sandbox.list_json()["components"][0]["canary"],
        serde_json::Value::Null
    );

    // Promote under load: nothing fails, every new connection then goes to b.
    sandbox.handoff_ok(&["drain", "web", "--wait", "--timeout", "10"]);
    sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_B, "--weight", "10"]);
    let background = sandbox.spawn_netkit(
        &sandbox.client,
        &[
            "load",
            "--target",
            &gateway_80(),
            "--connections",
            "8",
            "--duration-ms",
            "1500",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    sandbox.handoff_ok(&["promote", "web"]);
    assert_nothing_failed_or_stalled(&finish_json(background), "the promote");
    assert_eq!(share(&load(&sandbox, "300"), "b"), 100.0);
    let listed = sandbox.list_json();
    assert_eq!(listed["components"][0]["active"], BACKEND_B, "{listed}");
    assert_eq!(
        listed["components"][0]["draining"][0]["address"], BACKEND_A,
        "{listed}"
    );
}

fn ns_sysctl(ns: &str, key: &str) -> String {
    let output = Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-n", key])
        .output()
        .expect("sysctl");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn ns_run(ns: &str, args: &[&str]) {
    let ok = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .status()
        .expect("ip netns exec");
    assert!(ok.success(), "{args:?}");
}

/// `localhostClients`: clients on the host reach the component at 127.0.0.1; route_localnet is
/// turned on for it on the backends' bridge only, never on `all` nor on the interface facing
/// the clients. Without the option, nothing of that changes. (What the flag opens and how it
/// is guarded: `the_loopback_guard_outlives_the_table`.)
#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn localhost_clients_reach_the_component_at_127_0_0_1() {
    require_root!();
    let plain = Sandbox::new(&web_config(3000, 60_000));
    let mut plain = plain;
    plain.serve_both_on_a();
    let gw = plain.gateway.clone();
    let local = |sandbox: &Sandbox, target: &str| {
        sandbox.netkit(
            &sandbox.gateway,
            &[
                "load",
                "--target",
                target,
                "--connections",
                "1",
                "--duration-ms",
                "300",
            ],
        )
    };
    assert_eq!(
        local(&plain, "127.0.0.1:80")["ok"],
        0,
        "not asked for: not reached"
    );
    assert_eq!(ns_sysctl(&gw, "net.ipv4.conf.all.route_localnet"), "0");
    drop(plain);

    let config = web_config(3000, 60_000).replace(
        r#""name": "web","#,
        r#""name": "web", "localhostClients": true,"#,
    );
    let mut sandbox = Sandbox::new(&config);
    sandbox.serve(&sandbox.a.clone(), "a");
    sandbox.serve(&sandbox.b.clone(), "b");
    // route_localnet cannot be set (a read-only /proc/sys): exit 6 naming it, nothing routed.
    let refused = handoff_with_read_only_sysctls(&sandbox, &["switch", "web", "--to", BACKEND_A])
        .wait_with_output()
        .expect("switch");
    assert_eq!(refused.status.code(), Some(6), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("route_localnet"),
        "{refused:?}"
    );
    assert_eq!(
        sandbox.list_json()["components"][0]["active"],
        serde_json::Value::Null
    );
    sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_A]);
    let gw = sandbox.gateway.clone();
    for (interface, flag) in [("all", "0"), ("vc", "0"), ("br0", "1")] {
        let key = format!("net.ipv4.conf.{interface}.route_localnet");
        assert_eq!(ns_sysctl(&gw, &key), flag, "{key}");
    }
    assert_served_by(&local(&sandbox, "127.0.0.1:80"), "a");
    sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_B]);
    assert_served_by(&local(&sandbox, "127.0.0.1:80"), "b");
    // The last component with host clients gone: the flag is put back.
    sandbox.handoff_ok(&["stop", "web"]);
    assert_eq!(ns_sysctl(&gw, "net.ipv4.conf.br0.route_localnet"), "0");
}

/// Make `ns` send packets for 127.0.0.2 to the host at `via` over its eth0, as a hostile
/// neighbour can (its own 127.0.0.1 keeps its /32 local route; the rest of 127/8 may leave).
fn route_loopback_to_the_host(ns: &str, via: &str) {
    for key in ["all", "eth0"] {
        let flag = format!("net.ipv4.conf.{key}.route_localnet=1");
        ns_run(ns, &["sysctl", "-qw", &flag]);
    }
    ns_run(
        ns,
        &[
            "ip",
            "route",
            "del",
            "local",
            "127.0.0.0/8",
            "dev",
            "lo",
            "table",
            "local",
        ],
    );
    ns_run(
        ns,
        &[
            "ip",
            "route",
            "add",
            "127.0.0.2/32",
            "via",
            via,
            "dev",
            "eth0",
        ],
    );
}

/// CVE-2020-8558: route_localnet lets packets to 127.0.0.0/8 in on an interface. A neighbour on
/// the LAN (the client namespace) and one on the backends' bridge (b's) both try a service
/// the host keeps on 127.0.0.2:9000, while web has host clients, and again after each way the
/// table can go: `nft delete table`, `nft flush ruleset` (Debian's `systemctl restart
/// nftables`), and `teardown` (what the package's removal runs). The LAN never gets in: its
/// interface's flag is never on, whatever happens to the table. The bridge is kept out by the
/// table's guard while it stands, and by the flag put back after teardown. Controls in the same
/// run: with the guard gone and the flag still on, b gets in (the residual that Docker's
/// `--userland-proxy=false` has too, named in the README); with the flag turned on by hand on
/// the LAN's interface, the client gets in — so every "no answer" above is the guard's.
#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn the_loopback_guard_outlives_the_table() {
    require_root!();
    let config = web_config(3000, 60_000).replace(
        r#""name": "web","#,
        r#""name": "web", "localhostClients": true,"#,
    );
    let mut sandbox = Sandbox::new(&config);
    sandbox.serve(&sandbox.a.clone(), "a");
    let (gw, client, b) = (
        sandbox.gateway.clone(),
        sandbox.client.clone(),
        sandbox.b.clone(),
    );
    sandbox.serve_at(&gw, "secret", "127.0.0.2:9000", &[], "the loopback service");
    route_loopback_to_the_host(&client, GATEWAY);
    route_loopback_to_the_host(&b, BRIDGE_GATEWAY);
    let reaches = |sandbox: &Sandbox, from: &str| {
        let load = sandbox.netkit(
            from,
            &[
                "load",
                "--target",
                "127.0.0.2:9000",
                "--connections",
                "1",
                "--duration-ms",
                "300",
            ],
        );
        load["ok"].as_u64().unwrap_or(0) > 0
    };
    let bridge_flag = || ns_sysctl(&gw, "net.ipv4.conf.br0.route_localnet");
    let lay_out = |sandbox: &Sandbox| {
        sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_A]);
        assert_eq!(bridge_flag(), "1");
    };

    lay_out(&sandbox);
    assert!(
        !reaches(&sandbox, &client),
        "the LAN reached 127.0.0.2 with the table there"
    );
    assert!(
        !reaches(&sandbox, &b),
        "the bridge reached 127.0.0.2 with the table there"
    );

    sandbox.nft("delete table inet handoff");
    assert!(
        !reaches(&sandbox, &client),
        "the LAN reached 127.0.0.2, table deleted"
    );
    // The control for the bridge: the guard gone, the flag on — the residual.
    assert!(
        reaches(&sandbox, &b),
        "the bridge's attempt is not a real one"
    );

    sandbox.handoff_ok(&["restore"]);
    sandbox.nft("flush ruleset");
    assert!(
        !reaches(&sandbox, &client),
        "the LAN reached 127.0.0.2 after a flush"
    );

    lay_out(&sandbox);
    sandbox.handoff_ok(&["teardown"]);
    assert_eq!(bridge_flag(), "0", "teardown did not put the flag back");
    assert!(
        !reaches(&sandbox, &client),
        "the LAN reached 127.0.0.2 after teardown"
    );
    assert!(
        !reaches(&sandbox, &b),
        "the bridge reached 127.0.0.2 after teardown"
    );

    // The control for the LAN: the flag on its interface (as `all=1` did), no guard.
    ns_run(&gw, &["sysctl", "-qw", "net.ipv4.conf.vc.route_localnet=1"]);
    assert!(
        reaches(&sandbox, &client),
        "the LAN's attempt is not a real one"
    );
}

/// web routed to a as a handoff from before UDP laid it out: ports keyed by `inet_service`
/// alone (nft's own text of that layout, trimmed to what web uses).
const TABLE_BEFORE_UDP: &str = "
add table inet handoff
add map inet handoff dispatch { type inet_service : verdict ; }
add map inet handoff backend_web { type inet_service : ipv4_addr . inet_service ; }
add set inet handoff hairpin_sources { type ipv4_addr ; }
add set inet handoff localhost_ports { type inet_service ; }
add chain inet handoff component_web
add rule inet handoff component_web ct label set 127 dnat ip to tcp dport map @backend_web
add chain inet handoff prerouting { type nat hook prerouting priority -110 ; policy accept ; }
add rule inet handoff prerouting meta nfproto ipv4 fib daddr type local meta l4proto tcp tcp dport vmap @dispatch
add chain inet handoff output { type nat hook output priority -110 ; policy accept ; }
add rule inet handoff output meta nfproto ipv4 ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto tcp tcp dport vmap @dispatch
add chain inet handoff postrouting { type nat hook postrouting priority 90 ; policy accept ; }
add rule inet handoff postrouting ct label 127 ct status dnat ip saddr @hairpin_sources masquerade
add element inet handoff backend_web { 80 : 10.0.1.11 . 8080 }
add element inet handoff dispatch { 80 : goto component_web }
add element inet handoff hairpin_sources { 10.0.1.11 }
";

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn a_table_from_before_udp_is_rebuilt_by_the_next_switch_and_no_flow_notices() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    sandbox.serve(&sandbox.a.clone(), "a");
    sandbox.serve(&sandbox.b.clone(), "b");
    sandbox.nft(TABLE_BEFORE_UDP);
    // Read as it is: web is routed to a.
    assert_eq!(sandbox.list_json()["components"][0]["active"], BACKEND_A);
    let before = sandbox.requests(&sandbox.client, &gateway_80(), 200);
    assert_served_by(&before, "a");
    // The switch rebuilds the table in its own transaction; a's open connection carries on.
    let hold = sandbox.hold_on_a_then_switch_to_b(2000);
    let ruleset = sandbox.ruleset();
    assert!(
        ruleset.contains("type inet_proto . inet_service : ipv4_addr . inet_service"),
        "{ruleset}"
    );
    assert!(
        ruleset.contains("10.0.1.11"),
        "the hairpin set is kept: {ruleset}"
    );
    let after = sandbox.requests(&sandbox.client, &gateway_80(), 200);
    assert_served_by(&after, "b");
    let held = finish_json(hold);
    assert_eq!(held["again"], "a", "the held connection was cut: {held}");
}

/// web with 53/udp beside 80/tcp (the servers answer UDP on 8053).
fn web_with_udp_config() -> String {
    r#"{"components": [{"name": "web", "ports": [{"external": 80, "container": 8080},
        {"external": 53, "container": 8053, "protocol": "udp"}],
        "readyChecks": [{"kind": "http", "port": 8080, "path": "/"}],
        "readyTimeout": 3000, "drainTimeout": 60000}]}"#
        .to_string()
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn a_udp_port_switches_with_the_component_and_a_udp_flow_drains_when_its_entry_goes() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_with_udp_config());
    // UDP flows end when their entry expires: shorter timeouts in the sandbox's namespace
    // keep the test short (the host's stay as they are).
    let set = Command::new("ip")
        .args([
            "netns",
            "exec",
            &sandbox.gateway,
            "sysctl",
            "-qw",
            "net.netfilter.nf_conntrack_udp_timeout=2",
            "net.netfilter.nf_conntrack_udp_timeout_stream=3",
        ])
        .status()
        .expect("sysctl");
    assert!(set.success(), "setting the sandbox's UDP timeouts");
    sandbox.serve_both_on_a();
    let dns = format!("{GATEWAY}:53");
    let udp_load = |sandbox: &Sandbox, per_session: &str, gap: &str, ms: &str| {
        sandbox.spawn_netkit(
            &sandbox.client,
            &[
                "udp-load",
                "--target",
                &dns,
                "--sessions",
                "2",
                "--per-session",
                per_session,
                "--gap-ms",
                gap,
                "--duration-ms",
                ms,
            ],
        )
    };
    let first = finish_json(udp_load(&sandbox, "1", "0", "300"));
    assert_eq!(first["failed"], 0, "{first}");
    assert!(
        first["by_backend"]["a"].as_u64().unwrap_or(0) > 0,
        "{first}"
    );
    // Two long sessions (one flow each, a query every 100 ms for 3 s), and new flows all
    // along, across the switch.
    let sessions = udp_load(&sandbox, "100", "100", "3000");
    let fresh = udp_load(&sandbox, "1", "0", "2000");
    std::thread::sleep(Duration::from_millis(700));
    sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_B]);
    let listed = sandbox.list_json();
    // The sessions' flows, and each one-query flow until its entry expires, are a's.
    let draining = listed["components"][0]["draining"][0]["flows"]
        .as_u64()
        .unwrap_or(0);
    assert!(draining >= 2, "a's UDP flows are counted: {listed}");
    let drain = sandbox.spawn_handoff(&["drain", "web", "--wait", "--timeout", "30"]);
    let fresh = finish_json(fresh);
    eprintln!("one-query UDP flows across the switch: {fresh}");
    assert_eq!(fresh["failed"], 0, "{fresh}");
    assert!(
        fresh["by_backend"]["b"].as_u64().unwrap_or(0) > 0,
        "{fresh}"
    );
    let started = Instant::now();
    let sessions = finish_json(sessions);
    eprintln!("UDP sessions across the switch: {sessions}");
    let ended = started.elapsed();
    assert_eq!(sessions["failed"], 0, "{sessions}");
    assert_eq!(
        sessions["sessions_that_moved"], 0,
        "a UDP flow stays on its backend: {sessions}"
    );
    assert!(sessions["by_backend"]["b"].is_null(), "{sessions}");
    // The drain ends when the sessions' entries expire (3 s after their last datagram), not
    // before they end.
    let output = drain.wait_with_output().expect("drain");
    let drained = started.elapsed();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        drained >= ended + Duration::from_secs(2),
        "the drain returned {drained:?} after the sessions' end at {ended:?}, before their \
         entries expired"
    );
    assert!(drained < ended + Duration::from_secs(10), "{drained:?}");
    eprintln!("the sessions ended at {ended:?}, the drain at {drained:?}");
}

/// A network namespace of a test's own, with nothing in it but loopback; deleted on drop, so
/// also when an assertion fails.
struct OwnNamespace(String);

impl OwnNamespace {
    fn new() -> OwnNamespace {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let namespace = OwnNamespace(format!("hi{}x{n}", std::process::id()));
        namespace.ip(&["netns", "add", &namespace.0]);
        namespace
    }

    /// `ip -n NS ARGS`, or `ip ARGS` for `netns` itself.
    fn ip(&self, args: &[&str]) {
        let mut command = Command::new("ip");
        if args.first() != Some(&"netns") {
            command.args(["-n", &self.0]);
        }
        let output = command.args(args).output().expect("ip");
        assert!(
            output.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for OwnNamespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn a_docker_network_without_a_named_gateway_is_reached_at_its_bridge_address() {
    require_root!();
    use handoff::kernel::interface::ipv4_addresses;
    use handoff::ops::gateway::resolve;
    use handoff::runtime::{Gateway, Ipv4Subnet};

    let namespace = OwnNamespace::new();
    // A user network's bridge as Docker names it, with a second address outside the network's
    // subnet, and another bridge whose address is in it: only the named bridge counts.
    let bridge = "br-377f692b1866";
    for args in [
        &["link", "add", bridge, "type", "bridge"][..],
        &["addr", "add", "192.0.2.7/24", "dev", bridge],
        &["addr", "add", "10.77.0.1/16", "dev", bridge],
        &["link", "set", bridge, "up"],
        &["link", "add", "br-other", "type", "bridge"],
        &["addr", "add", "10.77.9.9/16", "dev", "br-other"],
    ] {
        namespace.ip(args);
    }
    let subnet = |text: &str| Ipv4Subnet::parse(text).unwrap().unwrap();
    let on_bridge = move |interface: &str, text: &str| Gateway::OnBridge {
        interface: interface.to_string(),
        subnet: subnet(text),
    };
    let (listed, missing, found, outside, absent) = in_namespace(&namespace.0, move || {
        (
            ipv4_addresses(bridge).map_err(|e| format!("{e:#}")),
            [
                ipv4_addresses("br-nothere"),
                ipv4_addresses("br-377f692b1866a"),
            ]
            .map(|r| r.map_err(|e| format!("{e:#}"))),
            resolve("mine", on_bridge(bridge, "10.77.0.0/16"), ipv4_addresses)
                .map_err(|e| format!("{e:#}")),
            resolve("mine", on_bridge(bridge, "10.88.0.0/16"), ipv4_addresses)
                .map_err(|e| format!("{e:#}")),
            resolve(
                "bridge",
                on_bridge("docker0", "172.17.0.0/16"),
                ipv4_addresses,
            )
            .map_err(|e| format!("{e:#}")),
        )
    });
    assert_eq!(
        listed.unwrap(),
        Some(vec![
            ("192.0.2.7".parse().unwrap(), 24),
            ("10.77.0.1".parse().unwrap(), 16)
        ])
    );
    // Absent, and too long to be a name at all: neither exists.
    assert_eq!(missing, [Ok(None), Ok(None)]);
    assert_eq!(
        found.unwrap(),
        "10.77.0.1".parse::<std::net::Ipv4Addr>().unwrap()
    );
    let outside = outside.unwrap_err();
    assert!(
        outside.contains(bridge)
            && outside.contains("no IPv4 address in the network's subnet 10.88.0.0/16")
            && outside.contains("192.0.2.7/24, 10.77.0.1/16"),
        "{outside}"
    );
    let absent = absent.unwrap_err();
    assert!(
        absent.contains("docker0") && absent.contains("does not exist"),
        "{absent}"
    );
}

/// Docker's FORWARD policy in the gateway namespace, as dockerd lays it out: DROP, with a jump
/// to an empty DOCKER-USER first.
fn forward_dropped_as_docker_does(gw: &str) {
    for rule in [
        &["-P", "FORWARD", "DROP"][..],
        &["-N", "DOCKER-USER"],
        &["-A", "DOCKER-USER", "-j", "RETURN"],
        &["-I", "FORWARD", "-j", "DOCKER-USER"],
    ] {
        ns_run(gw, &[&["iptables", "-w", "5"][..], rule].concat());
    }
}

/// A label per table: two installations on one host (the default table with web on 80 -> a,
/// table `blue` with api on 81 -> b), behind Docker's FORWARD DROP. Each one's hole admits its
/// own flows only: with blue's rules taken out of Docker's chains (as a fault of blue's would),
/// blue's new connections are refused while web's go on; the control in the same run shows
/// blue's were served before. `teardown` of blue leaves web served.
#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn two_tables_each_admit_only_their_own_flows() {
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    let gw = sandbox.gateway.clone();
    forward_dropped_as_docker_does(&gw);
    sandbox.serve(&sandbox.a.clone(), "a");
    sandbox.serve(&sandbox.b.clone(), "b");
    let blue_config = sandbox.config_path().with_file_name("blue.json");
    std::fs::write(
        &blue_config,
        web_config(3000, 60_000)
            .replace(r#""name": "web""#, r#""name": "api""#)
            .replace(r#""external": 80"#, r#""external": 81"#),
    )
    .expect("blue.json");
    let blue_state = sandbox.state_dir().with_file_name("blue-state");
    let blue = |args: &[&str]| {
        let args = [&["--table", "blue"][..], args].concat();
        let output = sandbox.handoff_custom(Some(&blue_config), Some(&blue_state), &args, &[]);
        assert!(output.status.success(), "blue {args:?}: {output:?}");
    };
    sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_A]);
    blue(&["switch", "api", "--to", BACKEND_B]);
    let served = |port: u16| {
        let load = sandbox.requests(&sandbox.client, &format!("{GATEWAY}:{port}"), 300);
        load["ok"].as_u64().unwrap_or(0) > 0
    };
    assert!(
        served(80) && served(81),
        "both served through the DROP policy"
    );
    let ruleset = sandbox.ruleset();
    let blue_label = ruleset
        .lines()
        .skip_while(|line| !line.contains("table inet blue"))
        .find_map(|line| line.split("ct label set ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("blue's label")
        .to_string();
    assert_ne!(blue_label, "127", "blue has a bit of its own");

    for chain in ["DOCKER-USER", "FORWARD"] {
        ns_run(
            &gw,
            &[
                "sh",
                "-c",
                &format!(
                    "iptables -S {chain} | grep -- '--comment \"\\?handoff:blue' | \
                     sed 's/^-A/-D/' | xargs -L1 iptables -w 5"
                ),
            ],
        );
    }
    assert!(!served(81), "blue's flows got through another table's hole");
    assert!(served(80), "web's flows lost their hole");

    blue(&["teardown"]);
    assert!(
        served(80),
        "web's flows lost their hole with blue's teardown"
    );
    assert!(!sandbox.ruleset().contains("table inet blue"));
}

/// Bind addresses, as Docker's `-p ADDRESS:PORT:PORT`: web holds port 80 on 10.0.2.1 only,
/// api the same port on 10.0.2.3; on 10.0.2.4 port 80 stays the host's (a service of its own
/// answers there). Across a switch on the hot path the bindings hold; a changed address moves
/// the port (the old address is the component's no more); `stop` takes web's binding out and
/// leaves api's; `list --json` shows the address; an IPv6 binding with no IPv6 backend is
/// refused (exit 2) and changes nothing.
#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn a_bound_port_is_the_components_on_its_address_only() {
    require_root!();
    let config = |web_address: &str| {
        format!(
            r#"{{"components": [
            {{"name": "web", "ports": [{{"external": 80, "container": 8080, "address": "{web_address}"}}],
              "readyChecks": [{{"kind": "http", "port": 8080, "path": "/"}}]}},
            {{"name": "api", "ports": [{{"external": 80, "container": 8080, "address": "10.0.2.3"}}],
              "readyChecks": [{{"kind": "http", "port": 8080, "path": "/"}}]}}]}}"#
        )
    };
    let mut sandbox = Sandbox::new(&config("10.0.2.1"));
    let (gw, client) = (sandbox.gateway.clone(), sandbox.client.clone());
    for address in ["10.0.2.3/24", "10.0.2.4/24", "10.0.2.5/24"] {
        ns_run(&gw, &["ip", "addr", "add", address, "dev", "vc"]);
    }
    sandbox.serve(&sandbox.a.clone(), "a");
    sandbox.serve(&sandbox.b.clone(), "b");
    sandbox.serve_at(&gw, "host", "10.0.2.4:80", &[], "the host's own service");
    let served_by = |target: &str| -> String {
        let load = sandbox.requests(&client, target, 300);
        let by: Vec<String> = load["by_backend"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        by.join(",")
    };
    sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_A]);
    sandbox.handoff_ok(&["switch", "api", "--to", BACKEND_B]);
    assert_eq!(served_by("10.0.2.1:80"), "a");
    assert_eq!(served_by("10.0.2.3:80"), "b");
    assert_eq!(
        served_by("10.0.2.4:80"),
        "host",
        "port 80 elsewhere stays the host's"
    );
    let listed = sandbox.list_json();
    assert_eq!(
        listed["components"][0]["ports"][0]["address"], "10.0.2.1",
        "{listed}"
    );

    // The hot path (only backend maps change) keeps the binding.
    sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_B]);
    assert_eq!(served_by("10.0.2.1:80"), "b");
    assert_eq!(served_by("10.0.2.4:80"), "host");

    // Another address: the port moves with it.
    std::fs::write(sandbox.config_path(), config("10.0.2.5")).expect("config");
    sandbox.handoff_ok(&["switch", "web", "--to", BACKEND_A]);
    assert_eq!(served_by("10.0.2.5:80"), "a");
    assert_eq!(
        served_by("10.0.2.1:80"),
        "",
        "the old address is web's no more"
    );
    assert_eq!(served_by("10.0.2.3:80"), "b");

    sandbox.handoff_ok(&["stop", "web"]);
    assert_eq!(served_by("10.0.2.5:80"), "");
    assert_eq!(served_by("10.0.2.3:80"), "b", "api keeps its binding");
    assert!(!sandbox.ruleset().contains("goto component_web"));

    // An IPv6 address for a component switched to an IPv4 backend only: refused.
    std::fs::write(sandbox.config_path(), config("fd00:2::1")).expect("config");
    let before = sandbox.ruleset();
    let refused = sandbox.handoff(&["switch", "web", "--to", BACKEND_A]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("bound to fd00:2::1"),
        "{refused:?}"
    );
    assert_eq!(sandbox.ruleset(), before, "nothing changed");
}

/// The tracing table (`kernel::netfilter::trace`, what the layout's unit tests run against)
/// and the kernel, fed the same commands — web on 80 to a and on 82 bound to 10.0.2.1, api on
/// 82 bound to 10.0.2.3 to b, a's hairpin — agree packet by packet: for each probe, from the
/// LAN, from the bridge and from a backend itself, the backend the trace DNATs to is the one
/// that answers for real, and where the trace DNATs nothing, nothing answers.
#[cfg(feature = "test-hooks")]
#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn the_tracing_table_and_the_kernel_agree_on_the_same_commands() {
    use handoff::kernel::netfilter::trace::{Host, Packet, Table};
    use handoff::kernel::netfilter::{ruleset, Backends, ComponentRoutes, Switch};
    use handoff::ports::{PortPair, Protocol};
    require_root!();
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    let gw = sandbox.gateway.clone();
    ns_run(&gw, &["ip", "addr", "add", "10.0.2.3/24", "dev", "vc"]);
    sandbox.serve(&sandbox.a.clone(), "a");
    sandbox.serve(&sandbox.b.clone(), "b");
    let ip = |text: &str| -> std::net::IpAddr { text.parse().unwrap() };
    let bound = |port: u16, address: &str| PortPair {
        address: Some(ip(address)),
        ..PortPair::tcp(port, 8080)
    };
    let switch = |component: &str, ports: &[PortPair], backend: &str| {
        ruleset::route(
            "handoff",
            &Switch {
                component,
                current: &ComponentRoutes::default(),
                ports,
                backends: Backends {
                    v4: backend.parse().ok(),
                    v6: None,
                },
                canary: None,
                localhost: false,
                links: None,
                hairpin_sources: &[],
            },
        )
    };
    let mut commands = ruleset::base("handoff");
    commands.extend(switch(
        "web",
        &[PortPair::tcp(80, 8080), bound(82, GATEWAY)],
        BACKEND_A,
    ));
    commands.extend(switch("api", &[bound(82, "10.0.2.3")], BACKEND_B));
    commands.extend(ruleset::hairpin("handoff", &[ip(BACKEND_A)]));
    let mut table = Table::new("handoff");
    table
        .apply(&commands)
        .expect("the trace takes the commands");
    sandbox.nft(&ruleset::document(&commands));

    let host = Host {
        addresses: vec![
            ("vc", ip(GATEWAY)),
            ("vc", ip("10.0.2.3")),
            ("br0", ip(BRIDGE_GATEWAY)),
        ],
    };
    let name_of = |address: Option<std::net::IpAddr>| match address {
        Some(a) if a == ip(BACKEND_A) => "a",
        Some(a) if a == ip(BACKEND_B) => "b",
        Some(other) => panic!("the trace sent it to {other}"),
        None => "",
    };
    let (client, a, b) = (sandbox.client.clone(), sandbox.a.clone(), sandbox.b.clone());
    let probes: [(&str, &'static str, &str, &str, u16); 8] = [
        (&client, "vc", "10.0.2.2", GATEWAY, 80),
        (&client, "vc", "10.0.2.2", "10.0.2.3", 80),
        (&client, "vc", "10.0.2.2", GATEWAY, 82),
        (&client, "vc", "10.0.2.2", "10.0.2.3", 82),
        (&client, "vc", "10.0.2.2", GATEWAY, 81),
        (&b, "br0", BACKEND_B, BRIDGE_GATEWAY, 80),
        (&b, "br0", BACKEND_B, BRIDGE_GATEWAY, 82),
        (&a, "br0", BACKEND_A, BRIDGE_GATEWAY, 80),
    ];
    let mut disagreements = Vec::new();
    for (ns, iif, source, destination, port) in probes {
        let packet = Packet {
            protocol: Protocol::Tcp,
            source: ip(source),
            destination: ip(destination),
            port,
            iif: Some(iif),
            draw: 0,
        };
        let traced = table.trace(&host, &packet).expect("a trace");
        let expected = name_of(traced.dnat.map(|(address, _)| address));
        let load = sandbox.requests(ns, &format!("{destination}:{port}"), 300);
        let answered: Vec<String> = load["by_backend"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        if answered.join(",") != expected {
            disagreements.push(format!(
                "{source} -> {destination}:{port}: traced {expected:?}, answered by {answered:?}"
            ));
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}
