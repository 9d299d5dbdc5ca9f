//! The names and labels of a lab's objects: `<lab>-<what>-<uid8>`, so a lab
//! recreated under the same name gets objects of its own.

use std::collections::BTreeMap;

use foodlab_lab::FoodLab;

/// `<lab>-<what>-<first 8 of the UID>`, within the 63 characters a label holds.
pub fn named(lab: &FoodLab, what: &str) -> String {
    let name = lab.metadata.name.as_deref().unwrap_or("foodlab");
    let uid = lab.metadata.uid.as_deref().unwrap_or("");
    let uid: String = uid.chars().filter(|c| *c != '-').take(8).collect();
    let name: String = name.chars().take(63 - what.len() - uid.len() - 2).collect();
    format!("{}-{what}-{uid}", name.trim_end_matches('-'))
}

/// The labels of a lab's run ConfigMap, its Job and the Job's pod.
pub fn labels(lab: &FoodLab) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "foodlab-workload".to_owned(),
        ),
        ("app.kubernetes.io/part-of".to_owned(), "foodlab".to_owned()),
        (
            "foodlab.dev/lab".to_owned(),
            lab.metadata.name.clone().unwrap_or_default(),
        ),
    ])
}
