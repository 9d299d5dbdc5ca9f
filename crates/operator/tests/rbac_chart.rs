//! The operator chart grants exactly the permissions the code uses.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use foodlab_operator::rbac::RULES;
use serde_json::Value;

#[test]
fn the_chart_grants_exactly_what_the_operator_uses() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../charts/foodlab-operator/values.yaml"
    );
    let values: Value = serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // (group, resource, verb, resource names: none for any)
    let mut granted = BTreeSet::new();
    for rule in values["rbac"]["rules"].as_array().unwrap() {
        let names: Vec<String> = rule["resourceNames"]
            .as_array()
            .map(|names| {
                names
                    .iter()
                    .map(|n| n.as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    let triple = (
                        group.as_str().unwrap(),
                        resource.as_str().unwrap(),
                        verb.as_str().unwrap(),
                    );
                    assert!(
                        !triple.0.contains('*')
                            && !triple.1.contains('*')
                            && !triple.2.contains('*'),
                        "{triple:?}"
                    );
                    granted.insert((
                        triple.0.to_owned(),
                        triple.1.to_owned(),
                        triple.2.to_owned(),
                        names.clone(),
                    ));
                }
            }
        }
    }
    let used: BTreeSet<_> = RULES
        .iter()
        .flat_map(|(g, r, verbs, names)| {
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            verbs.iter().map(move |v| {
                (
                    (*g).to_owned(),
                    (*r).to_owned(),
                    (*v).to_owned(),
                    names.clone(),
                )
            })
        })
        .collect();
    let missing: Vec<_> = used.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&used).collect();
    assert!(missing.is_empty(), "the chart does not grant {missing:?}");
    assert!(
        extra.is_empty(),
        "the chart grants more than the operator uses: {extra:?}"
    );
}
