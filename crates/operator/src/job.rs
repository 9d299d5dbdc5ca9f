//! The workload Job: the lab engine, from the same image, placing the lab's
//! orders against the in-cluster services. Its report comes back as the
//! container's termination message (no API access needed inside the Job).

use foodlab_lab::FoodLab;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Resource;
use kube::api::ObjectMeta;

/// Environment variable carrying the lab's spec (JSON) into the Job.
pub const SPEC_ENV: &str = "FOODLAB_LAB_SPEC";

pub fn job_name(lab: &FoodLab) -> String {
    format!(
        "{}-workload",
        lab.metadata.name.as_deref().unwrap_or("foodlab")
    )
}

/// The Job for a lab: faults and chaos stay with the operator, so the Job
/// gets the workload, injections and expectations only.
pub fn workload_job(
    lab: &FoodLab,
    image: &str,
    pull_policy: &str,
) -> Result<Job, serde_json::Error> {
    let mut spec = lab.spec.clone();
    spec.chaos.clear();
    spec.faults = Default::default();
    let labels = std::collections::BTreeMap::from([
        (
            "app.kubernetes.io/name".to_owned(),
            "foodlab-workload".to_owned(),
        ),
        ("app.kubernetes.io/part-of".to_owned(), "foodlab".to_owned()),
        (
            "foodlab.dev/lab".to_owned(),
            lab.metadata.name.clone().unwrap_or_default(),
        ),
    ]);
    let quantity = |q: &str| Quantity(q.to_owned());
    let container = Container {
        name: "workload".into(),
        image: Some(image.to_owned()),
        image_pull_policy: Some(pull_policy.to_owned()),
        command: Some(vec!["foodlab-operator".into(), "lab-job".into()]),
        env: Some(vec![
            EnvVar {
                name: SPEC_ENV.into(),
                value: Some(serde_json::to_string(&spec)?),
                ..EnvVar::default()
            },
            EnvVar {
                name: "FOODLAB_NAMESPACE".into(),
                value: lab.metadata.namespace.clone(),
                ..EnvVar::default()
            },
        ]),
        termination_message_policy: Some("File".into()),
        resources: Some(ResourceRequirements {
            requests: Some(
                [
                    ("cpu".into(), quantity("100m")),
                    ("memory".into(), quantity("64Mi")),
                ]
                .into(),
            ),
            limits: Some(
                [
                    ("cpu".into(), quantity("1")),
                    ("memory".into(), quantity("256Mi")),
                ]
                .into(),
            ),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(job_name(lab)),
            namespace: lab.metadata.namespace.clone(),
            labels: Some(labels.clone()),
            owner_references: lab.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            ttl_seconds_after_finished: Some(3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(10001),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![container],
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}

/// What the workload container reports back (its termination message).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobReport {
    pub results: foodlab_lab::results::LabResults,
    pub verdict: foodlab_lab::Verdict,
}
