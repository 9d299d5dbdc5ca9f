//! `foodlab run --reuse-part`: the labs of a part run one after another on
//! one running part, as on a cluster install.

#![allow(clippy::unwrap_used)]

use std::process::Command;

fn example(name: &str) -> String {
    format!(
        "{}/../../manifests/examples/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn a_baseline_after_a_failure_lab_on_the_same_part_passes() {
    let output = Command::new(env!("CARGO_BIN_EXE_foodlab"))
        .args(["run", "--json", "--reuse-part"])
        .args(["sync-failure", "sync-baseline", "sync-failure"].map(example))
        .env_remove("FOODLAB_STOCK")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let reports: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let verdicts: Vec<(&str, &str)> = reports
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap(),
                r["report"]["verdict"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("sync-failure", "Pass"),
            ("sync-baseline", "Pass"),
            ("sync-failure", "Pass")
        ],
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(reports[1]["report"]["results"]["statusCodes"]["201"], 100);
    // One part served the three labs.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.matches("part up for").count(), 1, "{stderr}");
    assert!(
        stderr.contains("sync-rest part up for 3 lab(s)"),
        "{stderr}"
    );
    assert!(output.status.success(), "{}", output.status);
}
