//! `foodlab compare`: one workload (and at most one fault or chaos step)
//! on each part in turn, on this machine, side by side.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use foodlab_lab::chaos::Direct;
use foodlab_lab::spec::{
    BrokerShape, ChaosStep, Expectations, Replicas, ServiceFaults, Settings, Workload,
};
use foodlab_lab::validated::ValidatedLab;
use foodlab_lab::{
    FoodLabSpec, LabError, LabReport, LocalOptions, LocalPlatform, Transport, run_lab_with,
};
use serde::Deserialize;

use crate::progress::Progress;

/// A comparison file: `kind: FoodLabComparison`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Comparison {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: CompareSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompareSpec {
    /// The parts to run on, in order; default rest, rabbitmq, kafka.
    #[serde(default)]
    pub parts: Option<Vec<Transport>>,
    pub workload: Workload,
    /// Faults for the whole run, the same on every part.
    #[serde(default)]
    pub faults: ServiceFaults,
    /// At most one chaos step, timed from the first order.
    #[serde(default)]
    pub chaos: Vec<ChaosStep>,
    #[serde(default)]
    pub settings: Settings,
    /// The shapes to run each part at, one row each (e.g. `[{inventory: 1},
    /// {inventory: 3}]`); one row per part at one replica when empty. More
    /// than one replica needs `--database-url`.
    #[serde(default)]
    pub replicas: Vec<Replicas>,
    /// The broker shapes to run each part with a broker at, one row each
    /// (e.g. `[1, 3]`: what replication costs); one node when empty. A part
    /// without a broker runs once.
    #[serde(default)]
    pub broker_nodes: Vec<u32>,
    /// How long each part's run may take (default 180s).
    #[serde(default, with = "humantime_serde")]
    pub within: Option<Duration>,
}

const ALL_PARTS: [Transport; 3] = [Transport::Rest, Transport::Rabbitmq, Transport::Kafka];

/// One row of a comparison: a part at one shape, on a broker of some nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub transport: Transport,
    pub replicas: Replicas,
    pub broker_nodes: u32,
}

impl Row {
    /// The part, and its shape and broker when the comparison names them.
    fn name(&self, brokers_named: bool) -> String {
        let mut name = self.transport.part().to_owned();
        if !self.replicas.is_empty() {
            name = format!("{name} {}", self.replicas);
        }
        if brokers_named && self.transport.broker().is_some() {
            name = format!("{name}, {} broker node(s)", self.broker_nodes);
        }
        name
    }
}

impl Comparison {
    pub fn load(file: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        Self::parse(&text).with_context(|| format!("{} is not a valid comparison", file.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let comparison: Self = serde_norway::from_str(text)?;
        comparison.check()?;
        Ok(comparison)
    }

    fn check(&self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        if self.api_version != "foodlab.dev/v1alpha1" {
            problems.push(format!(
                "apiVersion must be foodlab.dev/v1alpha1, not {}",
                self.api_version
            ));
        }
        if self.kind != "FoodLabComparison" {
            problems.push(format!("kind must be FoodLabComparison, not {}", self.kind));
        }
        let parts = self.parts();
        if parts.is_empty() {
            problems.push("spec.parts names no part".into());
        }
        for (i, part) in parts.iter().enumerate() {
            if parts[..i].contains(part) {
                problems.push(format!("spec.parts names {} twice", part.part()));
            }
        }
        let disruptions = self.spec.chaos.len() + self.spec.faults.declared().count();
        if disruptions > 1 {
            problems.push(format!(
                "a comparison takes at most one fault or chaos step, not {disruptions}"
            ));
        }
        for (i, shape) in self.spec.replicas.iter().enumerate() {
            if self.spec.replicas[..i].contains(shape) {
                problems.push(format!("spec.replicas names {{{shape}}} twice"));
            }
        }
        for (i, nodes) in self.spec.broker_nodes.iter().enumerate() {
            if self.spec.broker_nodes[..i].contains(nodes) {
                problems.push(format!("spec.brokerNodes names {nodes} twice"));
            }
        }
        // Each row's lab must be valid too (workload, chaos step, faults, shape).
        for row in self.rows() {
            if let Err(errors) = ValidatedLab::new(&self.lab(&row)) {
                for error in errors {
                    if !problems.contains(&error) {
                        problems.push(error);
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("{}", problems.join("; "))
        }
    }

    /// The rows: each part at each shape and broker shape, part by part.
    pub fn rows(&self) -> Vec<Row> {
        let shapes = if self.spec.replicas.is_empty() {
            vec![Replicas::default()]
        } else {
            self.spec.replicas.clone()
        };
        let nodes = if self.spec.broker_nodes.is_empty() {
            vec![1]
        } else {
            self.spec.broker_nodes.clone()
        };
        let mut rows = Vec::new();
        for transport in self.parts() {
            for replicas in &shapes {
                let nodes: &[u32] = match transport.broker() {
                    Some(_) => &nodes,
                    None => &[1],
                };
                for broker_nodes in nodes {
                    rows.push(Row {
                        transport,
                        replicas: replicas.clone(),
                        broker_nodes: *broker_nodes,
                    });
                }
            }
        }
        rows
    }

    pub fn parts(&self) -> Vec<Transport> {
        self.spec
            .parts
            .clone()
            .unwrap_or_else(|| ALL_PARTS.to_vec())
    }

    /// The lab one row runs: the workload and disruption on a part at a
    /// shape, every order to a final status within the time allowed.
    pub fn lab(&self, row: &Row) -> FoodLabSpec {
        FoodLabSpec {
            transport: row.transport,
            faults: self.spec.faults.clone(),
            workload: self.spec.workload.clone(),
            inject: None,
            chaos: self.spec.chaos.clone(),
            expect: Expectations {
                all_orders_terminal: Some(true),
                within: Some(self.spec.within.unwrap_or(Duration::from_secs(180))),
                ..Expectations::default()
            },
            settings: self.spec.settings.clone(),
            replay: false,
            replicas: row.replicas.clone(),
            broker: (row.broker_nodes != 1).then_some(BrokerShape {
                nodes: row.broker_nodes,
            }),
        }
    }
}

pub async fn run(
    file: &Path,
    json: bool,
    report_dir: Option<&PathBuf>,
    database_url: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let comparison = Comparison::load(file)?;
    let interrupt = crate::interrupt::flag();
    let mut reports: Vec<(String, LabReport)> = Vec::new();
    let rows = comparison.rows();
    let brokers_named = !comparison.spec.broker_nodes.is_empty();
    for (i, row) in rows.iter().enumerate() {
        let lab = comparison.lab(row);
        let row = row.name(brokers_named);
        eprintln!("{}: {} on {row}", comparison.metadata.name, describe(&lab));
        let progress = Progress::new(!json, format!("[{}/{}] {row}: ", i + 1, rows.len()));
        progress.step("starting the part");
        let mut options = LocalOptions::for_lab(&lab);
        options.database_url = database_url.map(str::to_owned);
        let platform = LocalPlatform::start(options)
            .await
            .with_context(|| format!("cannot start {row}"))?;
        progress.step("preparing");
        let direct = match Direct::new(&platform) {
            Ok(direct) => direct,
            Err(error) => {
                platform.shutdown().await;
                return Err(error.into());
            }
        };
        let mut stop = interrupt.clone();
        let outcome = run_lab_with(
            &platform,
            &direct,
            &lab,
            Arc::new(progress.clone()),
            async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            },
        )
        .await;
        progress.step("stopping the part");
        platform.shutdown().await;
        progress.finish();
        match outcome {
            Ok(report) => {
                if json {
                    println!("{}", crate::report::json_line(&row, &report)?);
                }
                reports.push((row, report));
            }
            Err(LabError::Interrupted) => {
                eprintln!("interrupted; {row} released and stopped");
                return Ok(crate::exit::code(crate::exit::INTERRUPTED));
            }
            Err(error) => {
                return Err(error).with_context(|| format!("the run of {row} failed"));
            }
        }
    }
    if !json {
        println!(
            "\n== compare {}\n{}",
            comparison.metadata.name,
            table(&reports)
        );
    }
    if let Some(dir) = report_dir {
        let title = format!("compare {}", comparison.metadata.name);
        let path = crate::html::write(dir, &title, &reports)?;
        eprintln!("report: {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(lab: &FoodLabSpec) -> String {
    let w = &lab.workload;
    let pace = match (w.rate_per_second, w.concurrency) {
        (Some(rate), _) => format!("{rate}/s"),
        (None, c) => format!("concurrency {}", c.unwrap_or(1)),
    };
    format!("{} orders at {pace}", w.orders)
}

/// One row per part.
pub fn table(reports: &[(String, LabReport)]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "part",
        "accepted",
        "succeeded",
        "failed",
        "client p50/p95/p99 ms",
        "end-to-end p50/p95/p99 ms",
        "throughput /s",
        "peak backlog",
        "drain s",
        "lost",
        "duplicated",
    ]);
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "—".to_owned());
    for (part, report) in reports {
        let r = &report.results;
        table.add_row([
            part.clone(),
            r.accepted.to_string(),
            r.reserved.to_string(),
            r.failed.to_string(),
            format!(
                "{:.1} / {:.1} / {:.1}",
                r.latency_ms.p50, r.latency_ms.p95, r.latency_ms.p99
            ),
            or_dash(
                r.end_to_end_ms
                    .as_ref()
                    .map(|l| format!("{:.1} / {:.1} / {:.1}", l.p50, l.p95, l.p99)),
            ),
            format!("{:.1}", r.throughput_per_second),
            or_dash(r.max_backlog.map(|n| n.to_string())),
            or_dash(r.drain_seconds.map(|s| format!("{s:.2}"))),
            or_dash(report.results.lost().map(|n| n.to_string())),
            or_dash(report.results.duplicated().map(|n| n.to_string())),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BASE: &str = "apiVersion: foodlab.dev/v1alpha1\nkind: FoodLabComparison\nmetadata: {name: t}\nspec:\n  workload: {orders: 5}\n";

    fn error_of(text: &str) -> String {
        format!("{:#}", Comparison::parse(text).unwrap_err())
    }

    #[test]
    fn a_minimal_comparison_runs_on_the_three_parts() {
        let comparison = Comparison::parse(BASE).unwrap();
        assert_eq!(comparison.parts(), ALL_PARTS);
        let lab = comparison.lab(&Row {
            transport: Transport::Kafka,
            replicas: Replicas::default(),
            broker_nodes: 1,
        });
        assert_eq!(lab.transport, Transport::Kafka);
        assert_eq!(lab.expect.all_orders_terminal, Some(true));
        assert_eq!(lab.expect.within, Some(Duration::from_secs(180)));
    }

    #[test]
    fn mistakes_are_named() {
        assert!(
            error_of(&BASE.replace("FoodLabComparison", "FoodLab"))
                .contains("kind must be FoodLabComparison, not FoodLab")
        );
        assert!(
            error_of(&format!("{BASE}  transport: rest\n")).contains("unknown field `transport`")
        );
        assert!(
            error_of(&format!("{BASE}  parts: [rest, rest]\n"))
                .contains("spec.parts names sync-rest twice")
        );
        let two = format!(
            "{BASE}  faults: {{inventory: {{delaySeconds: 2}}}}\n  chaos:\n    - {{action: ScaleToZero, target: inventory, duration: 5s}}\n"
        );
        assert!(error_of(&two).contains("at most one fault or chaos step, not 2"));
    }

    #[test]
    fn the_example_comparisons_are_valid() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../manifests/compare");
        for name in [
            "baseline",
            "slow-inventory",
            "inventory-down",
            "competing-consumers",
            "broker-nodes",
        ] {
            let comparison = Comparison::load(Path::new(&format!("{dir}/{name}.yaml"))).unwrap();
            assert_eq!(comparison.metadata.name, name);
        }
    }

    #[test]
    fn each_part_runs_at_each_shape_one_row_each() {
        let comparison = Comparison::parse(&format!(
            "{BASE}  parts: [rabbitmq, kafka]\n  replicas:\n    - {{inventory: 1}}\n    - {{inventory: 3, order: 2}}\n"
        ))
        .unwrap();
        let rows: Vec<String> = comparison
            .rows()
            .iter()
            .map(|row| row.name(false))
            .collect();
        assert_eq!(
            rows,
            [
                "async-rabbitmq inventory=1",
                "async-rabbitmq order=2,inventory=3",
                "streaming-kafka inventory=1",
                "streaming-kafka order=2,inventory=3",
            ]
        );
        let lab = comparison.lab(&comparison.rows()[3]);
        assert_eq!(lab.transport, Transport::Kafka);
        assert_eq!(lab.replicas.get(foodlab_lab::Service::Inventory), Some(3));
        assert!(
            Comparison::parse(&format!("{BASE}  replicas:\n    - {{inventory: 99}}\n"))
                .unwrap_err()
                .to_string()
                .contains("replicas.inventory must be 1 to")
        );
    }

    #[test]
    fn each_part_with_a_broker_runs_on_each_broker_shape() {
        let comparison = Comparison::parse(&format!(
            "{BASE}  brokerNodes: [1, 3]
"
        ))
        .unwrap();
        let rows: Vec<(String, Option<u32>)> = comparison
            .rows()
            .iter()
            .map(|row| {
                let lab = comparison.lab(row);
                (row.name(true), lab.broker.map(|b| b.nodes))
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("sync-rest".to_owned(), None),
                ("async-rabbitmq, 1 broker node(s)".to_owned(), None),
                ("async-rabbitmq, 3 broker node(s)".to_owned(), Some(3)),
                ("streaming-kafka, 1 broker node(s)".to_owned(), None),
                ("streaming-kafka, 3 broker node(s)".to_owned(), Some(3)),
            ]
        );
        assert!(
            Comparison::parse(&format!(
                "{BASE}  brokerNodes: [2]
"
            ))
            .unwrap_err()
            .to_string()
            .contains("broker.nodes is 1 or 3, not 2")
        );
    }
}
