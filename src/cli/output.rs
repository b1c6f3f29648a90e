//! How use-case results look on stdout: one line per fact, `NAME: ...`, flows indented below
//! their backend.

use anyhow::Result;

use crate::error::{ExitCode, Failure};
use crate::kernel::conntrack::{Flow, StateTimeouts};
use crate::ops::canary::Split;
use crate::ops::drain::DrainReport;
use crate::ops::retire::{Retired, Retirement};
use crate::ops::switch::Switched;
use crate::runtime::short_id;

pub fn split(split: &Split) -> String {
    format!(
        "{}: {} % of new connections now go to the canary {} ({}), the rest to {}",
        split.component,
        split.weight,
        split.canary,
        if split.sticky {
            "by client address"
        } else {
            "per connection"
        },
        split.active
    )
}

pub fn switched(switched: &Switched) -> String {
    let name = &switched.component;
    let address = match switched.address6 {
        Some(v6) => format!("{} and {v6}", switched.address),
        None => switched.address.to_string(),
    };
    let ms = switched.elapsed.as_millis();
    match &switched.previous {
        Some(previous) if previous.address != switched.address => format!(
            "{name}: new connections now go to {address}; {} is draining (switched in {ms} ms)",
            previous.address
        ),
        Some(_) => format!("{name}: already pointed at {address}; ruleset re-asserted ({ms} ms)"),
        None => format!("{name}: new connections now go to {address} (switched in {ms} ms)"),
    }
}

pub fn print_flows<'a>(flows: impl Iterator<Item = &'a Flow>) {
    let timeouts = StateTimeouts::read();
    for flow in flows {
        let idle = flow
            .idle_secs(&timeouts)
            .map(|s| format!(", idle {s} s"))
            .unwrap_or_default();
        let bytes = flow
            .bytes
            .map(|b| format!(", {b} bytes"))
            .unwrap_or_default();
        println!(
            "  {} -> {} via {} {}{idle}{bytes}",
            flow.client,
            flow.backend,
            flow.destination,
            flow.state.name()
        );
    }
}

/// The retirements, one line each; the failures as one error.
pub fn retired(name: &str, retired: &[Retired]) -> Result<()> {
    let mut failures = Vec::new();
    for one in retired {
        let what = match &one.container {
            Some(id) => format!("container {} at {}", short_id(id), one.address),
            None => one.address.to_string(),
        };
        match &one.retirement {
            Retirement::Done if one.container.is_some() => println!("{name}: {what} removed"),
            Retirement::Done => println!("{name}: {what} retired"),
            Retirement::AlreadyGone => println!("{name}: {what} was already gone; forgotten"),
            Retirement::Active => println!("{name}: {what} is the active container; forgotten"),
            Retirement::Failed(error) => failures.push(format!("{what}: {error}")),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("retiring old containers: {}", failures.join("; "))
    }
}

/// A drain's outcome: drained backends, given-up ones with their flows, retirements; the
/// flows a `--timeout` left open end the run with exit 4.
pub fn drain(name: &str, report: &DrainReport, timeout_secs: Option<u64>) -> Result<()> {
    if report.nothing_was_draining() {
        println!("{name}: nothing is draining");
        return Ok(());
    }
    for backend in &report.drained {
        println!("{name}: {} drained", backend.address);
    }
    for (backend, flows) in &report.given_up {
        eprintln!(
            "handoff: {name}: {} still had {} live flow(s) after drainTimeout ({} ms); giving \
             up on them:",
            backend.address,
            flows.len(),
            report.drain_timeout_ms
        );
        print_flows(flows.iter());
    }
    let retiring = retired(name, &report.retired);
    if !report.still_open.is_empty() {
        let open: usize = report.still_open.iter().map(|(_, f)| f.len()).sum();
        for (backend, flows) in &report.still_open {
            println!(
                "{name}: {} still has {} live flow(s):",
                backend.address,
                flows.len()
            );
            print_flows(flows.iter());
        }
        return Err(Failure::new(
            ExitCode::DrainTimeout,
            format!(
                "{name}: {open} flow(s) still open after --timeout {} s",
                timeout_secs.unwrap_or(0)
            ),
        )
        .into());
    }
    retiring
}
