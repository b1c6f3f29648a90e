//! The largest value each of a component's waits may take. Every wait of an update has a total
//! deadline, so a whole update has one too: the sum of these maxima, which is what
//! `handoff-update@.service` gets as its `TimeoutStartSec` (a unit with `infinity` would hang a
//! boot or a deploy pipeline for ever on a registry that stalls). A value above its maximum is
//! bad input (exit 2, naming the field), never silently cut.

use anyhow::Result;

use super::Component;

/// `readyTimeout`, milliseconds: one hour.
pub const MAX_READY_TIMEOUT_MS: u64 = 3_600_000;
/// `drainTimeout`, milliseconds: a day (a 3 GB upload on a slow link still fits).
pub const MAX_DRAIN_TIMEOUT_MS: u64 = 86_400_000;
/// `stopTimeout`, seconds: an hour between SIGTERM and SIGKILL.
pub const MAX_STOP_TIMEOUT_S: u64 = 3_600;
/// `pullTimeout`, seconds: an hour for one image.
pub const MAX_PULL_TIMEOUT_S: u64 = 3_600;
/// The default `pullTimeout`, seconds.
pub const DEFAULT_PULL_TIMEOUT_S: u64 = 600;
/// A check's or a termination signal's `timeout`, seconds.
pub const MAX_CHECK_TIMEOUT_S: u64 = 300;
/// How many termination signals a component may have (each sent in turn, each bounded).
pub const MAX_TERMINATION_SIGNALS: usize = 10;
/// The default `--lock-timeout`, seconds (the units do not change it).
pub const DEFAULT_LOCK_TIMEOUT_S: u64 = 600;

/// The longest one `handoff update NAME` can take with the default lock timeout: waiting for the
/// lock, a pull, readiness, the drain, every termination signal, the stop — each at its
/// maximum — plus an hour for everything that is bounded by Docker's and the kernel's own
/// timeouts (container create, inspect, netlink). `handoff-update@.service` says this, as
/// `TimeoutStartSec=29h` (a test checks they agree).
pub const fn max_update_seconds() -> u64 {
    DEFAULT_LOCK_TIMEOUT_S
        + MAX_PULL_TIMEOUT_S
        + MAX_READY_TIMEOUT_MS / 1000
        + MAX_DRAIN_TIMEOUT_MS / 1000
        + MAX_TERMINATION_SIGNALS as u64 * MAX_CHECK_TIMEOUT_S
        + MAX_STOP_TIMEOUT_S
        + 3_600
}

/// Refuse any of `component`'s waits above its maximum, or a `pullTimeout` of 0.
pub fn check(at: &str, component: &Component) -> Result<()> {
    let over = |field: &str, value: u64, max: u64, unit: &str| -> Result<()> {
        if value > max {
            anyhow::bail!("{at}.{field}: {value} is more than the maximum, {max} ({unit})");
        }
        Ok(())
    };
    over(
        "readyTimeout",
        component.ready_timeout,
        MAX_READY_TIMEOUT_MS,
        "milliseconds",
    )?;
    if let Some(drain) = component.drain_timeout {
        over("drainTimeout", drain, MAX_DRAIN_TIMEOUT_MS, "milliseconds")?;
    }
    over(
        "stopTimeout",
        component.stop_timeout,
        MAX_STOP_TIMEOUT_S,
        "seconds",
    )?;
    if component.pull_timeout == 0 {
        anyhow::bail!("{at}.pullTimeout: must be at least 1 (seconds)");
    }
    over(
        "pullTimeout",
        component.pull_timeout,
        MAX_PULL_TIMEOUT_S,
        "seconds",
    )?;
    for (list, checks) in [
        ("readyChecks", &component.ready_checks),
        ("healthChecks", &component.health_checks),
    ] {
        for (i, check) in checks.iter().enumerate() {
            let field = format!("{list}[{i}].timeout");
            over(&field, check.timeout, MAX_CHECK_TIMEOUT_S, "seconds")?;
        }
    }
    if component.termination_signals.len() > MAX_TERMINATION_SIGNALS {
        anyhow::bail!(
            "{at}.terminationSignals: {} signals, more than the maximum, \
             {MAX_TERMINATION_SIGNALS}",
            component.termination_signals.len()
        );
    }
    for (i, signal) in component.termination_signals.iter().enumerate() {
        let field = format!("terminationSignals[{i}].timeout");
        over(&field, signal.timeout, MAX_CHECK_TIMEOUT_S, "seconds")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_update_unit_is_given_the_sum_of_the_maxima() {
        let unit = include_str!("../../systemd/handoff-update@.service");
        let hours = max_update_seconds().div_ceil(3_600);
        assert_eq!(hours, 29);
        assert!(
            unit.lines()
                .any(|l| l == format!("TimeoutStartSec={hours}h")),
            "handoff-update@.service must say TimeoutStartSec={hours}h:\n{unit}"
        );
    }

    #[test]
    fn a_wait_above_its_maximum_or_a_pull_timeout_of_zero_is_refused_naming_the_field() {
        let component = |fields: &str| {
            let text = format!(
                r#"{{"components": [{{"name": "web", "repo": "r", "tag": "1", {fields}
                   "ports": [{{"external": 80, "container": 80}}]}}]}}"#
            );
            crate::config::parse(&text)
                .map(|_| ())
                .map_err(|e| format!("{e:#}"))
        };
        assert!(component("").is_ok());
        assert!(component(r#""pullTimeout": 3600, "stopTimeout": 3600,"#).is_ok());
        for (fields, said) in [
            (
                r#""pullTimeout": 0,"#,
                "components[0].pullTimeout: must be at least 1",
            ),
            (
                r#""pullTimeout": 3601,"#,
                "components[0].pullTimeout: 3601 is more than",
            ),
            (
                r#""stopTimeout": 86400,"#,
                "components[0].stopTimeout: 86400 is more than",
            ),
            (
                r#""readyTimeout": 3600001,"#,
                "components[0].readyTimeout: 3600001 is more",
            ),
            (
                r#""drainTimeout": 86400001,"#,
                "components[0].drainTimeout: 86400001 is more",
            ),
            (
                r#""healthChecks": [{"kind": "tcp", "port": 80, "timeout": 301}],"#,
                "components[0].healthChecks[0].timeout: 301 is more than the maximum, 300",
            ),
        ] {
            let error = component(fields).expect_err(fields);
            assert!(error.contains(said), "{fields}: {error}");
        }
    }
}
