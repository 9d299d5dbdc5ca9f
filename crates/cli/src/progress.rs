//! The progress line of a long command (run, compare, bench): the step it
//! is at, and the orders answered while it places them. Drawn on stderr
//! only when stderr is a terminal, so JSON and CI logs are unchanged.

use std::io::IsTerminal;
use std::time::Duration;

use foodlab_lab::measure::Sample;
use foodlab_lab::{LabStep, Observer};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};

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
    /// The workload's step is drawn by `workload_started`, with its count.
    fn step_started(&self, step: LabStep) {
        match step {
            LabStep::Prepare => self.step("preparing"),
            LabStep::Baseline => self.step("reading the baseline"),
            LabStep::Workload => {}
            LabStep::Settle => self.step("settling the accepted orders"),
            LabStep::Measure => self.step("measuring"),
        }
    }

    fn workload_started(&self, orders: u64) {
        self.orders("placing orders", orders);
    }

    fn order_answered(&self, _sample: &Sample) {
        self.order_done();
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
    fn the_line_names_each_step_the_engine_starts() {
        let progress = Progress::new(false, "lab x: ");
        assert_eq!(progress.bar.message(), "");
        progress.step_started(LabStep::Prepare);
        assert_eq!(progress.bar.message(), "preparing");
        progress.step_started(LabStep::Baseline);
        assert_eq!(progress.bar.message(), "reading the baseline");
        progress.step_started(LabStep::Workload);
        progress.workload_started(2);
        assert_eq!(progress.bar.message(), "placing orders");
        progress.order_answered(&answered());
        progress.order_answered(&answered());
        // Chaos may still be undone after the last answer: the step is the engine's to end.
        assert_eq!(progress.bar.message(), "placing orders");
        assert_eq!(progress.bar.position(), 2);
        progress.step_started(LabStep::Settle);
        assert_eq!(progress.bar.message(), "settling the accepted orders");
        progress.step_started(LabStep::Measure);
        assert_eq!(progress.bar.message(), "measuring");
    }

    #[test]
    fn a_line_not_wanted_is_never_drawn() {
        assert!(Progress::new(false, "lab x: ").bar.is_hidden());
    }
}
