use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use foodlab_lab::measure::Sample;
use foodlab_lab::{
    FoodLab, FoodLabSpec, LocalOptions, LocalPlatform, Observer, Transport, Verdict, run_lab,
};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::broadcast::error::RecvError;

use crate::report;

pub async fn run(files: &[PathBuf], json: bool, reuse_part: bool) -> anyhow::Result<ExitCode> {
    // Every file is read first: a typo in the last one costs no run.
    let mut labs = Vec::new();
    for file in files {
        let lab = load(file)?;
        let name = lab
            .metadata
            .name
            .clone()
            .unwrap_or_else(|| file.display().to_string());
        labs.push((name, lab));
    }
    let mut parts = Parts {
        reuse: reuse_part,
        running: Vec::new(),
    };
    let outcome = run_all(&labs, json, &mut parts).await;
    parts.shutdown().await;
    outcome
}

async fn run_all(
    labs: &[(String, FoodLab)],
    json: bool,
    parts: &mut Parts,
) -> anyhow::Result<ExitCode> {
    let mut all_pass = true;
    for (name, lab) in labs {
        let of_part = labs
            .iter()
            .filter(|(_, other)| other.spec.transport == lab.spec.transport)
            .count();
        let platform = parts.platform_for(&lab.spec, of_part).await?;
        let progress = Arc::new(Progress::new(json));
        let reporter = report_service_events(platform, progress.clone());
        let outcome = tokio::select! {
            outcome = run_lab(platform, &lab.spec, progress.clone()) => Some(outcome),
            () = super::interrupted() => None,
        };
        reporter.abort();
        progress.bar.finish_and_clear();
        parts.done_with(lab.spec.transport).await;
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
            report::print(name, &report);
        }
        all_pass &= report.verdict == Verdict::Pass;
    }
    Ok(if all_pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The parts the labs run on: a fresh one per lab, or (`--reuse-part`) one
/// per transport kept running across the labs, as on a cluster install.
struct Parts {
    reuse: bool,
    running: Vec<(Transport, LocalPlatform)>,
}

impl Parts {
    /// The part for a lab (`labs` of the run are for that part).
    async fn platform_for(
        &mut self,
        spec: &FoodLabSpec,
        labs: usize,
    ) -> anyhow::Result<&LocalPlatform> {
        let transport = spec.transport;
        let index = match self.running.iter().position(|(t, _)| *t == transport) {
            Some(index) => index,
            None => {
                // Kept or not, the part takes each lab's settings at run time
                // (the engine's prepare step).
                let platform = LocalPlatform::start(LocalOptions::for_lab(spec))
                    .await
                    .with_context(|| format!("cannot start the {} part", transport.part()))?;
                if self.reuse {
                    eprintln!("{} part up for {labs} lab(s)", transport.part());
                }
                self.running.push((transport, platform));
                self.running.len() - 1
            }
        };
        Ok(&self.running[index].1)
    }

    /// Stops a lab's part, unless it is kept for the next labs.
    async fn done_with(&mut self, transport: Transport) {
        if self.reuse {
            return;
        }
        if let Some(index) = self.running.iter().position(|(t, _)| *t == transport) {
            let (_, platform) = self.running.remove(index);
            platform.shutdown().await;
        }
    }

    async fn shutdown(&mut self) {
        for (_, platform) in self.running.drain(..) {
            platform.shutdown().await;
        }
    }
}

/// Shows what the supervisor reports (a service that died, its restart)
/// while a lab runs.
fn report_service_events(
    platform: &LocalPlatform,
    progress: Arc<Progress>,
) -> tokio::task::JoinHandle<()> {
    let mut events = platform.events();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => progress.note(&event.to_string()),
                Err(RecvError::Lagged(missed)) => {
                    progress.note(&format!("({missed} service events not shown)"));
                }
                Err(RecvError::Closed) => return,
            }
        }
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
