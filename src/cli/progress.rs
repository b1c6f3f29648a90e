//! Drain progress on stderr: a progress bar on a terminal, plain journal-friendly lines (only
//! when the count changes, at most every few seconds) otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Plain lines are rate-limited to one per this interval unless the count reaches zero.
const LINE_INTERVAL: Duration = Duration::from_secs(2);

pub enum DrainProgress {
    Bar {
        bar: ProgressBar,
        initial: Option<u64>,
    },
    Lines {
        label: String,
        last: Option<(usize, Instant)>,
    },
}

impl DrainProgress {
    pub fn new(label: &str) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} flows closed, {msg} ({elapsed})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(label.to_string());
            DrainProgress::Bar { bar, initial: None }
        } else {
            DrainProgress::Lines {
                label: label.to_string(),
                last: None,
            }
        }
    }

    pub fn finish(&self) {
        if let DrainProgress::Bar { bar, .. } = self {
            bar.finish_and_clear();
        }
    }
}

impl DrainProgress {
    pub fn update(&mut self, remaining: usize, waited: Duration) {
        match self {
            DrainProgress::Bar { bar, initial } => {
                let total = *initial.get_or_insert(remaining as u64);
                let total = total.max(remaining as u64);
                bar.set_length(total);
                bar.set_position(total - remaining as u64);
                bar.set_message(format!("{remaining} live"));
            }
            DrainProgress::Lines { label, last } => {
                let due = match last {
                    None => true,
                    Some((count, at)) => {
                        *count != remaining && (remaining == 0 || at.elapsed() >= LINE_INTERVAL)
                    }
                };
                if due {
                    eprintln!(
                        "handoff: {label}: {remaining} live flow(s) left after {:.1} s",
                        waited.as_secs_f64()
                    );
                    *last = Some((remaining, Instant::now()));
                }
            }
        }
    }
}
