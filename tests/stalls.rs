//! The harness's one excuse for a slow request, proven both ways (`common::stalls`): a stall
//! during which the whole machine paused — here, the test process and the load frozen
//! together — is excused and printed; the same stall with only the load frozen fails.

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use common::*;

/// A load of four new-connection workers for 3 s through the sandbox's switch; after 500 ms
/// the load — and the test process too when `whole_machine` — is frozen (SIGSTOP) for 1.5 s.
fn load_frozen_for_a_while(whole_machine: bool) -> serde_json::Value {
    let mut sandbox = Sandbox::new(&web_config(3000, 60_000));
    sandbox.serve_both_on_a();
    let load: Child = sandbox.spawn_netkit(
        &sandbox.client,
        &[
            "load",
            "--target",
            &format!("{GATEWAY}:80"),
            "--connections",
            "4",
            "--duration-ms",
            "3000",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let frozen = if whole_machine {
        format!("{} {}", load.id(), std::process::id())
    } else {
        load.id().to_string()
    };
    // `ip netns exec` execs netkit: the child's pid is the load's own.
    let thawed = Command::new("sh")
        .args(["-c", "kill -STOP $0; sleep 1.5; kill -CONT $0", &frozen])
        .status()
        .expect("run the freezer");
    assert!(thawed.success(), "the freezer: {thawed}");
    let result = finish_json(load);
    let slowest = result["slowest_ms"].as_u64().unwrap_or(0);
    assert!(
        slowest >= 1500,
        "the freeze did not stall a request: {result}"
    );
    result
}

/// One test, in this order: the watchdog is the test process's, and a pause it saw for one
/// load would excuse another's stall at the same moment.
#[test]
#[ignore = "needs root: run by sudo scripts/test.sh"]
fn a_stall_fails_the_test_unless_the_whole_machine_paused_through_it() {
    require_root!();
    let result = load_frozen_for_a_while(false);
    // The expected panic is caught, not printed.
    std::panic::set_hook(Box::new(|_| {}));
    let checked = std::panic::catch_unwind(|| {
        assert_nothing_failed_or_stalled(&result, "only the load frozen");
    });
    drop(std::panic::take_hook());
    let message = checked
        .expect_err("a stall the machine does not explain must fail")
        .downcast::<String>()
        .map(|m| *m)
        .unwrap_or_default();
    assert!(
        message.contains("a request took") && message.contains("the machine paused 0 ms"),
        "{message}"
    );

    let result = load_frozen_for_a_while(true);
    assert_nothing_failed_or_stalled(&result, "frozen with the test process");
}
