//! The lab's full report (results, verdict, chaos and the bounded series)
//! kept beside the lab, in its run ConfigMap, for `foodlab report NAME`.
//!
//! It is gzip-compressed JSON under `binaryData` (`labReport.json.gz`): the
//! series alone is about 100 KiB of JSON at its bounds and compresses about
//! tenfold, well within the 1 MiB a ConfigMap holds. A report that would
//! still not fit keeps every other point of its series until it does.

use std::io::{Read as _, Write as _};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use foodlab_lab::LabReport;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::channel::{self as run_channel, JOB_FIELD_MANAGER};

/// The key of the full report in the run ConfigMap's `binaryData`.
pub const KEY: &str = "labReport.json.gz";
/// Most the compressed report may take: the ConfigMap's 1 MiB, less room for
/// the summary (`report`), the chaos records and the metadata.
pub const MAX_BYTES: usize = 640 * 1024;
/// Halvings of the series before giving up.
const MAX_THINNING: u32 = 8;
/// Largest report read back (uncompressed), against a corrupt or hostile value.
const MAX_JSON_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot encode the report: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot compress the report: {0}")]
    Gzip(#[from] std::io::Error),
    #[error(
        "the report takes {0} bytes compressed even with its series thinned (at most {MAX_BYTES})"
    )]
    TooLarge(usize),
}

/// The report, compressed, within `MAX_BYTES`; with how many times its
/// series was halved to fit (0 almost always).
pub fn encode(report: &LabReport) -> Result<(Vec<u8>, u32), EncodeError> {
    let mut report = report.clone();
    let mut halvings = 0;
    loop {
        let bytes = gzip(&serde_json::to_vec(&report)?)?;
        if bytes.len() <= MAX_BYTES {
            return Ok((bytes, halvings));
        }
        if halvings == MAX_THINNING {
            return Err(EncodeError::TooLarge(bytes.len()));
        }
        thin(&mut report.series);
        halvings += 1;
    }
}

fn gzip(json: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(json)?;
    encoder.finish()
}

/// Keeps every other bin and reading (the charts stay the same shape, coarser).
fn thin(series: &mut foodlab_lab::series::LabSeries) {
    fn halve<T>(items: &mut Vec<T>) {
        let mut index = 0;
        items.retain(|_| {
            index += 1;
            index % 2 == 1
        });
    }
    halve(&mut series.latency);
    halve(&mut series.end_to_end);
    halve(&mut series.backlog);
    series.bin_seconds *= 2.0;
}

pub fn decode(bytes: &[u8]) -> Result<LabReport, String> {
    let mut json = Vec::new();
    GzDecoder::new(bytes)
        .take(MAX_JSON_BYTES)
        .read_to_end(&mut json)
        .map_err(|e| format!("the report is not gzip data: {e}"))?;
    serde_json::from_slice(&json).map_err(|e| format!("the report is not a lab report: {e}"))
}

/// The full report of a run ConfigMap: `None` before the Job wrote it.
pub fn read(config_map: &ConfigMap) -> Option<Result<LabReport, String>> {
    let bytes = config_map.binary_data.as_ref()?.get(KEY)?;
    Some(decode(&bytes.0))
}

/// The merge patch writing the summary (`data.report`, which the operator
/// copies to status) and the full report together, so a reader that sees
/// the lab done finds both. Nothing else: other keys and the metadata stay.
pub fn patch(summary_json: String, full: Option<Vec<u8>>) -> serde_json::Value {
    let mut patch = serde_json::json!({ "data": { run_channel::REPORT: summary_json } });
    if let Some(bytes) = full {
        // ByteString serializes as base64, as `binaryData` wants.
        patch["binaryData"] = serde_json::json!({ KEY: ByteString(bytes) });
    }
    patch
}

pub async fn write(
    api: &Api<ConfigMap>,
    name: &str,
    patch: &serde_json::Value,
) -> Result<(), kube::Error> {
    let params = PatchParams {
        field_manager: Some(JOB_FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    api.patch(name, &params, &Patch::Merge(patch))
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use foodlab_lab::results::{ChaosRecord, Check, LabResults, LatencySummary};
    use foodlab_lab::series::{LabSeries, LatencyBin, MAX_BINS, MAX_POINTS, Point, Window};
    use foodlab_lab::spec::{ChaosAction, Service};
    use foodlab_lab::stats::Bucket;
    use foodlab_lab::{Transport, Verdict};

    use super::*;

    fn bin(i: usize) -> LatencyBin {
        LatencyBin {
            at_seconds: i as f64 * 0.25,
            answers: 40 + i as u64 % 7,
            p50_ms: 2.5 + (i % 13) as f64 * 0.125,
            p95_ms: 9.75 + (i % 5) as f64,
            p99_ms: 20.5 + (i % 11) as f64,
            max_ms: 50.0 + (i % 17) as f64,
            status_codes: [("201".to_owned(), 38), ("503".to_owned(), i as u64 % 3)].into(),
        }
    }

    fn histogram() -> Vec<Bucket> {
        (0..140)
            .map(|i| Bucket {
                from_ms: i as f64 * 0.5,
                to_ms: (i + 1) as f64 * 0.5,
                count: (i * 37 % 101) as u64,
            })
            .collect()
    }

    /// A report at the series' bounds, with many checks and a long chaos list.
    fn large_report() -> LabReport {
        let at = |s: i64| jiff::Timestamp::from_second(1_780_000_000 + s).unwrap_or_default();
        let chaos: Vec<ChaosRecord> = (0..64)
            .map(|step| ChaosRecord {
                step,
                action: ChaosAction::ScaleToZero,
                target: Service::Inventory.into(),
                disrupted: true,
                original_replicas: Some(2),
                pods: Vec::new(),
                started_at: at(i64::from(step) * 10),
                restore_at: Some(at(i64::from(step) * 10 + 5)),
                restored_at: Some(at(i64::from(step) * 10 + 6)),
                error: (step % 9 == 0).then(|| format!("step {step}: deployment not ready")),
            })
            .collect();
        let checks = (0..400)
            .map(|i| Check {
                name: format!("expectation {i}: p99 latency below {} ms", 100 + i),
                passed: i % 3 != 0,
                detail: format!("measured {}.5 ms over {} answers", i * 3, 1000 + i),
            })
            .collect();
        LabReport {
            transport: Transport::Kafka,
            results: LabResults {
                accepted: 1_000_000,
                failed: 12,
                latency_ms: LatencySummary {
                    p50: 2.5,
                    p95: 9.75,
                    p99: 20.5,
                    max: 120.0,
                },
                checks,
                ..LabResults::default()
            },
            chaos,
            verdict: Verdict::Fail,
            elapsed_seconds: 812.5,
            series: LabSeries {
                bin_seconds: 0.25,
                latency: (0..MAX_BINS).map(bin).collect(),
                latency_histogram: histogram(),
                end_to_end: (0..MAX_BINS)
                    .map(|i| LatencyBin {
                        status_codes: Default::default(),
                        ..bin(i)
                    })
                    .collect(),
                end_to_end_histogram: Some(histogram()),
                backlog: (0..MAX_POINTS)
                    .map(|i| Point {
                        at_seconds: i as f64 * 0.5,
                        value: (i * 7919 % 5000) as u64,
                    })
                    .collect(),
                windows: (0..64)
                    .map(|i| Window {
                        kind: "chaos".into(),
                        label: format!("ScaleToZero inventory #{i}"),
                        from_seconds: i as f64 * 10.0,
                        to_seconds: Some(i as f64 * 10.0 + 6.0),
                    })
                    .collect(),
            },
            unreleased: vec!["inventory: replicas not restored".into()],
        }
    }

    fn json(report: &LabReport) -> serde_json::Value {
        serde_json::to_value(report).unwrap()
    }

    #[test]
    fn a_large_report_round_trips_through_the_config_map_as_the_api_stores_it() {
        let report = large_report();
        let (bytes, halvings) = encode(&report).unwrap();
        assert_eq!(halvings, 0);
        assert!(bytes.len() < MAX_BYTES, "{} bytes", bytes.len());
        let patch = patch("{\"summary\":true}".into(), Some(bytes));
        // What the API server stores and returns: JSON, binaryData in base64.
        let wire = serde_json::to_string(&patch).unwrap();
        assert!(wire.len() < 1024 * 1024, "{} bytes on the wire", wire.len());
        let stored: ConfigMap = serde_json::from_str(&wire).unwrap();
        assert!(stored.metadata.name.is_none());
        assert_eq!(
            stored.data.clone().unwrap_or_default()[run_channel::REPORT],
            "{\"summary\":true}"
        );
        let back = read(&stored).unwrap().unwrap();
        assert_eq!(json(&back), json(&report));
        assert_eq!(back.series.latency.len(), MAX_BINS);
        assert_eq!(back.series.backlog.len(), MAX_POINTS);
        assert_eq!(back.results.checks.len(), 400);
        assert_eq!(back.chaos.len(), 64);
    }

    #[test]
    fn a_report_too_large_for_the_config_map_gets_a_thinner_series() {
        let mut report = large_report();
        // Incompressible, unbounded: forty thousand bins of distinct figures.
        report.series.latency = (0..40_000)
            .map(|i| LatencyBin {
                p50_ms: (i as f64).sqrt(),
                p99_ms: (i as f64).ln_1p(),
                ..bin(i)
            })
            .collect();
        let (bytes, halvings) = encode(&report).unwrap();
        assert!(halvings > 0);
        assert!(bytes.len() <= MAX_BYTES);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.series.latency.len(), 40_000 >> halvings);
        assert_eq!(
            back.series.latency[1].at_seconds,
            report.series.latency[1 << halvings].at_seconds
        );
        assert_eq!(back.series.bin_seconds, 0.25 * f64::from(1 << halvings));
        assert_eq!(back.results.checks.len(), 400);
    }

    #[test]
    fn no_full_report_until_the_job_writes_it_and_garbage_is_an_error() {
        let empty = ConfigMap::default();
        assert!(read(&empty).is_none());
        let garbage = ConfigMap {
            binary_data: Some([(KEY.to_owned(), ByteString(b"not gzip".to_vec()))].into()),
            ..ConfigMap::default()
        };
        let error = read(&garbage).unwrap().unwrap_err();
        assert!(error.starts_with("the report is not gzip data"), "{error}");
        let not_a_report = gzip(b"{\"transport\": \"rest\"}").unwrap();
        let error = decode(&not_a_report).unwrap_err();
        assert!(
            error.starts_with("the report is not a lab report"),
            "{error}"
        );
    }
}
