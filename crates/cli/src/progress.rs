//! The progress line of a long command (run, compare, bench): the step it
//! is at, and the orders answered while it places them. Drawn on stderr
//! only when stderr is a terminal, so JSON and CI logs are unchanged.

use std::io::IsTerminal;
use std::time::Duration;

use foodlab_lab::Observer;
use foodlab_lab::measure::Sample;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};

/// What a lab is doing once its last order is answered: the engine settles
/// the accepted orders, then reads the part's figures.
pub const AFTER_WORKLOAD: &str = "settling, measuring";

/// Clones draw the same line.
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A line drawn when `wanted` and stderr is a terminal, hidden
    /// otherwise; `what` heads it (`lab x: `).
    pub fn new(wanted: bool, what: impl Into<String>) -> Self {
        let target = if wanted && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        // Also cleared when a command returns early (an error) without `finish`.
        let bar = ProgressBar::with_draw_target(None, target)
            .with_prefix(what.into())
            .with_finish(ProgressFinish::AndClear);
        bar.set_style(step_style());
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar }
    }

    /// Names the step under way (a spinner, no count).
    pub fn step(&self, step: impl Into<String>) {
        self.bar.set_style(step_style());
        self.bar.set_message(step.into());
    }

    /// A step that counts `total` orders, each counted by `order_done`.
    pub fn orders(&self, step: impl Into<String>, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.bar.set_message(step.into());
        self.bar.set_style(orders_style());
    }

    pub fn order_done(&self) {
        self.bar.inc(1);
    }

    /// How many orders the current step has counted.
    pub fn orders_done(&self) -> u64 {
        self.bar.position()
    }

    /// A line for people on stderr, above the progress line; with the line
    /// drawn or not.
    pub fn say(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    /// Clears the line for good.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Observer for Progress {
    fn workload_started(&self, orders: u64) {
        self.orders("placing orders", orders);
    }

    fn order_answered(&self, _sample: &Sample) {
        self.order_done();
        if self
            .bar
            .length()
            .is_some_and(|total| self.orders_done() >= total)
        {
            self.step(AFTER_WORKLOAD);
        }
    }

    /// The engine's notes (faults applied, a service restarted, what it
    /// waits for) are shown only with the line.
    fn note(&self, message: &str) {
        self.bar.println(format!("  {message}"));
    }
}

fn step_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix}{msg}  {elapsed}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn orders_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} {prefix}{msg:<24} [{bar:30}] {pos}/{len} orders  {elapsed}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered() -> Sample {
        Sample {
            status: Some(201),
            latency: Duration::from_millis(3),
            order_status: None,
        }
    }

    #[test]
    fn the_line_names_the_step_after_the_last_order_is_answered() {
        let progress = Progress::new(false, "lab x: ");
        assert_eq!(progress.bar.message(), "");
        progress.step("preparing");
        assert_eq!(progress.bar.message(), "preparing");
        progress.workload_started(2);
        assert_eq!(progress.bar.message(), "placing orders");
        progress.order_answered(&answered());
        assert_eq!(progress.bar.message(), "placing orders");
        assert_eq!(progress.orders_done(), 1);
        progress.order_answered(&answered());
        assert_eq!(progress.bar.message(), AFTER_WORKLOAD);
        assert_eq!(progress.orders_done(), 2);
    }

    #[test]
    fn a_line_not_wanted_is_never_drawn() {
        assert!(Progress::new(false, "lab x: ").bar.is_hidden());
    }
}
