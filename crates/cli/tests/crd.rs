//! The checked-in CRD is the one the Rust types generate, and every example
//! FoodLab is valid against its schema.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn generated_crd() -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_foodlab"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn checked_in_crd_matches_the_rust_types() {
    let checked_in = std::fs::read_to_string(repo().join("manifests/crds/foodlab.yaml")).unwrap();
    assert!(
        checked_in == generated_crd(),
        "manifests/crds/foodlab.yaml is stale: run `cargo run -p foodlab-cli -- crd > manifests/crds/foodlab.yaml`"
    );
}

/// Kubernetes prunes unknown fields instead of rejecting them; for the
/// examples an unknown field is a typo, so the test schema forbids them.
fn forbid_unknown_fields(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let closes = map.contains_key("properties")
                && !map.contains_key("additionalProperties")
                && !map.contains_key("x-kubernetes-preserve-unknown-fields");
            if closes {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(forbid_unknown_fields);
        }
        Value::Array(items) => items.iter_mut().for_each(forbid_unknown_fields),
        _ => {}
    }
}

fn example_validator() -> jsonschema::Validator {
    let crd: Value = serde_norway::from_str(&generated_crd()).unwrap();
    let mut schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    forbid_unknown_fields(&mut schema);
    // apiVersion, kind and metadata are the API server's business.
    schema["properties"]["apiVersion"] = serde_json::json!({"type": "string"});
    schema["properties"]["kind"] = serde_json::json!({"type": "string"});
    schema["properties"]["metadata"] = serde_json::json!({"type": "object"});
    jsonschema::validator_for(&schema).unwrap()
}

#[test]
fn every_example_and_scale_out_lab_is_valid_against_the_crd_schema() {
    let validator = example_validator();
    let mut examples: Vec<_> = ["manifests/examples", "manifests/scale-out"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(repo().join(dir)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 7, "{examples:?}");
    for path in examples {
        let text = std::fs::read_to_string(&path).unwrap();
        let document: Value = serde_norway::from_str(&text).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&document)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        assert_eq!(document["kind"], "FoodLab", "{}", path.display());
        let lab: foodlab_lab::FoodLab = serde_norway::from_str(&text).unwrap();
        assert_eq!(lab.spec.validate(), Ok(()), "{}", path.display());
    }
}

#[test]
fn the_schema_rejects_what_admission_should() {
    let validator = example_validator();
    let base = serde_json::json!({
        "apiVersion": "foodlab.dev/v1alpha1",
        "kind": "FoodLab",
        "metadata": {"name": "x"},
        "spec": {"transport": "rest", "workload": {"orders": 5}}
    });
    assert!(validator.is_valid(&base));
    let mut bad_rate = base.clone();
    bad_rate["spec"]["faults"] = serde_json::json!({"inventory": {"failRate": 1.5}});
    assert!(!validator.is_valid(&bad_rate));
    let mut bad_target = base.clone();
    bad_target["spec"]["chaos"] =
        serde_json::json!([{"action": "ScaleToZero", "target": "kitchen", "duration": "5s"}]);
    assert!(!validator.is_valid(&bad_target));
    let mut bad_transport = base.clone();
    bad_transport["spec"]["transport"] = "carrier-pigeon".into();
    assert!(!validator.is_valid(&bad_transport));
    let mut typo = base;
    typo["spec"]["workload"]["order"] = 5.into();
    assert!(!validator.is_valid(&typo));
}
