use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use foodlab_lab::measure::Sample;
use foodlab_lab::{FoodLab, LocalOptions, LocalPlatform, Observer, Verdict, run_lab};
use indicatif::{ProgressBar, ProgressStyle};

use crate::report;

pub async fn run(files: &[PathBuf], json: bool) -> anyhow::Result<ExitCode> {
    let mut all_pass = true;
    for file in files {
        let lab = load(file)?;
        let name = lab
            .metadata
            .name
            .clone()
            .unwrap_or_else(|| file.display().to_string());
        let platform = LocalPlatform::start(LocalOptions::for_lab(&lab.spec))
            .await
            .with_context(|| format!("cannot start the {} part", lab.spec.transport.part()))?;
        let progress = Arc::new(Progress::new(json));
        let outcome = tokio::select! {
            outcome = run_lab(&platform, &lab.spec, progress.clone()) => Some(outcome),
            () = super::interrupted() => None,
        };
        progress.bar.finish_and_clear();
        platform.shutdown().await;
        let Some(outcome) = outcome else {
            eprintln!("interrupted; services stopped");
            return Ok(ExitCode::from(130));
        };
        let report = outcome.with_context(|| format!("lab {name} could not run"))?;
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({"name": name, "report": report}))?
            );
        } else {
            report::print(&name, &report);
        }
        all_pass &= report.verdict == Verdict::Pass;
    }
    Ok(if all_pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn load(file: &Path) -> anyhow::Result<FoodLab> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    serde_norway::from_str(&text).with_context(|| format!("{} is not a FoodLab", file.display()))
}

struct Progress {
    bar: ProgressBar,
}

impl Progress {
    fn new(hidden: bool) -> Self {
        let bar = if hidden {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(0)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg:<24} [{bar:30}] {pos}/{len} orders  {elapsed}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Self { bar }
    }
}

impl Observer for Progress {
    fn workload_started(&self, orders: u64) {
        self.bar.set_length(orders);
        self.bar.set_message("placing orders");
        self.bar
            .enable_steady_tick(std::time::Duration::from_millis(200));
    }

    fn order_answered(&self, _sample: &Sample) {
        self.bar.inc(1);
    }

    fn note(&self, message: &str) {
        self.bar.println(format!("  {message}"));
    }
}
