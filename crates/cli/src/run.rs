use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use foodlab_lab::chaos::Direct;
use foodlab_lab::spec::Replicas;
use foodlab_lab::validated::ValidatedLab;
use foodlab_lab::{
    FoodLab, FoodLabSpec, LabError, LabReport, LocalOptions, LocalPlatform, Observer, Transport,
    Verdict, run_lab_with,
};
use tokio::sync::broadcast::error::RecvError;

use crate::progress::Progress;
use crate::{exit, report};

/// How `foodlab run` reports.
pub struct RunOptions {
    /// One JSON document per lab per line instead of tables.
    pub json: bool,
    pub reuse_part: bool,
    /// Where the parts keep their data and logs (`<dir>/<part>`), kept
    /// after the run; temporary directories when `None`.
    pub data_dir: Option<PathBuf>,
    /// Where to write report.html and its data.
    pub report: Option<PathBuf>,
    /// Where to write the labs as JUnit XML.
    pub junit: Option<PathBuf>,
    /// The PostgreSQL the parts keep their state in; SQLite files when `None`.
    pub database_url: Option<String>,
}

pub async fn run(files: &[PathBuf], options: &RunOptions) -> anyhow::Result<ExitCode> {
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
        reuse: options.reuse_part,
        data_dir: options.data_dir.clone(),
        database_url: options.database_url.clone(),
        running: Vec::new(),
    };
    let mut done = Done::default();
    let outcome = run_all(&labs, options, &mut parts, &mut done).await;
    parts.shutdown().await;
    if let Some(path) = &options.junit {
        std::fs::write(path, crate::junit::document(&done.reports, &done.errors)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(dir) = &options.report
        && !done.reports.is_empty()
    {
        let path = crate::html::write(dir, "labs", &done.reports)?;
        eprintln!("report: {}", path.display());
    }
    outcome
}

/// What the labs of a run left, for the JUnit file and the report.
#[derive(Default)]
struct Done {
    reports: Vec<(String, LabReport)>,
    errors: Vec<(String, String)>,
}

async fn run_all(
    labs: &[(String, FoodLab)],
    options: &RunOptions,
    parts: &mut Parts,
    done: &mut Done,
) -> anyhow::Result<ExitCode> {
    let json = options.json;
    let interrupt = crate::interrupt::flag();
    let mut all_pass = true;
    // A lab that cannot run is said, as a JSON line too, and the batch goes on.
    let could_not_run = |done: &mut Done, name: &str, error: String| {
        if json {
            println!("{}", serde_json::json!({"name": name, "error": error}));
        } else {
            eprintln!("lab {name} could not run: {error}");
        }
        done.errors.push((name.to_owned(), error));
    };
    for (name, lab) in labs {
        if let Err(problems) = ValidatedLab::new(&lab.spec) {
            could_not_run(done, name, LabError::Invalid(problems).to_string());
            continue;
        }
        let of_part = labs
            .iter()
            .filter(|(_, other)| other.spec.transport == lab.spec.transport)
            .count();
        let platform = match parts.platform_for(&lab.spec, of_part).await {
            Ok(platform) => platform,
            Err(error) => {
                could_not_run(done, name, format!("{error:#}"));
                continue;
            }
        };
        let progress = Arc::new(Progress::new(!json, format!("lab {name}: ")));
        progress.step("preparing");
        let reporter = report_service_events(platform, progress.clone());
        // The engine releases the part (faults cleared, chaos undone) before
        // it returns on an interruption.
        let direct = match Direct::new(platform) {
            Ok(direct) => direct,
            Err(error) => {
                reporter.abort();
                could_not_run(done, name, error.to_string());
                continue;
            }
        };
        let mut stop = interrupt.clone();
        let outcome = run_lab_with(platform, &direct, &lab.spec, progress.clone(), async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })
        .await;
        reporter.abort();
        progress.finish();
        parts.done_with(lab.spec.transport).await;
        let report = match outcome {
            Ok(report) => report,
            Err(LabError::Interrupted) => {
                eprintln!("interrupted; lab {name} released, services stopped");
                return Ok(exit::code(exit::INTERRUPTED));
            }
            Err(error) => {
                could_not_run(done, name, error.to_string());
                continue;
            }
        };
        if json {
            println!("{}", report::json_line(name, &report)?);
        } else {
            report::print(name, &report);
        }
        all_pass &= report.verdict == Verdict::Pass;
        done.reports.push((name.clone(), report));
    }
    Ok(exit::code(if !done.errors.is_empty() {
        exit::COULD_NOT_RUN
    } else if all_pass {
        exit::PASS
    } else {
        exit::FAILED
    }))
}

/// The parts the labs run on: a fresh one per lab, or (`--reuse-part`) one
/// per transport kept running across the labs, as on a cluster install.
struct Parts {
    reuse: bool,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    /// Each part running, at the shape (`spec.replicas`) it was started with.
    running: Vec<(Transport, Replicas, LocalPlatform)>,
}

impl Parts {
    /// The part for a lab (`labs` of the run are for that part).
    async fn platform_for(
        &mut self,
        spec: &FoodLabSpec,
        labs: usize,
    ) -> anyhow::Result<&LocalPlatform> {
        let transport = spec.transport;
        let running = |(t, shape, _): &(Transport, Replicas, LocalPlatform)| {
            *t == transport && *shape == spec.replicas
        };
        let index = match self.running.iter().position(running) {
            Some(index) => index,
            None => {
                // A kept part at another shape makes way for this one.
                self.stop(transport).await;
                // Kept or not, the part takes each lab's settings at run time
                // (the engine's prepare step).
                let mut local = LocalOptions::for_lab(spec);
                local.data_dir = self.data_dir.as_ref().map(|d| d.join(transport.part()));
                local.database_url = self.database_url.clone();
                let platform = LocalPlatform::start(local)
                    .await
                    .with_context(|| format!("cannot start the {} part", transport.part()))?;
                if self.reuse {
                    eprintln!("{} part up for {labs} lab(s)", transport.part());
                }
                self.running
                    .push((transport, spec.replicas.clone(), platform));
                self.running.len() - 1
            }
        };
        Ok(&self.running[index].2)
    }

    /// Stops a lab's part, unless it is kept for the next labs.
    async fn done_with(&mut self, transport: Transport) {
        if !self.reuse {
            self.stop(transport).await;
        }
    }

    async fn stop(&mut self, transport: Transport) {
        if let Some(index) = self.running.iter().position(|(t, _, _)| *t == transport) {
            let (_, _, platform) = self.running.remove(index);
            platform.shutdown().await;
        }
    }

    async fn shutdown(&mut self) {
        for (_, _, platform) in self.running.drain(..) {
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
