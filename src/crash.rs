//! Crash points: named places where a run can be made to die as if by `kill -9`, so that tests
//! can prove that a rerun converges from exactly there (a kill from outside can only aim at
//! windows that last long enough to hit, like a drain; these cannot be missed).
//!
//! `HANDOFF_CRASH_AT=<point>` makes the run send itself SIGKILL when it reaches `<point>`:
//! nothing is cleaned up, no destructor runs, the kernel releases the lock — a real crash.
//! Only in a binary built with the `test-hooks` feature (scripts/test.sh): the product
//! (`cargo build --release`, the Debian package) compiles a crash point to nothing, so no
//! environment of a production host can make it die half-way.

/// Every crash point, in the order an `update` passes them.
pub const POINTS: &[&str] = &[
    // The new container runs but has not passed its ready checks.
    "before-ready",
    // The state file records the switch; the kernel's map does not have it yet.
    "before-switch",
    // The kernel's map points at the new backend; the drain has not started.
    "after-switch",
    // The old backend drained; its conntrack entries are expired; it still runs.
    "before-stop",
    // The old container is stopped, not yet removed.
    "before-remove",
    // The old container is gone; the state still lists it as draining.
    "before-forget",
];

/// The environment variable naming the point to crash at.
#[cfg(feature = "test-hooks")]
const ENV: &str = "HANDOFF_CRASH_AT";

/// Die here, like `kill -9`, if `HANDOFF_CRASH_AT` names this point (`test-hooks` builds only).
pub fn point(name: &str) {
    debug_assert!(POINTS.contains(&name), "unknown crash point {name}");
    #[cfg(feature = "test-hooks")]
    if std::env::var_os(ENV).is_some_and(|at| at == name) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
