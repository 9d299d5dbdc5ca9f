//! The workload Job: the lab engine, from the same image, placing the lab's
//! orders against the in-cluster services. It talks to the operator through
//! the lab's run ConfigMap (`run_channel`), as a ServiceAccount of its own
//! (`run_channel_access`): it may read and patch that ConfigMap and list
//! EndpointSlices, nothing else, so no Job can write another lab's report.

use std::time::Duration;

use foodlab_lab::FoodLab;
use foodlab_lab::validated::ValidatedLab;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvFromSource, EnvVar, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecretEnvSource, SecurityContext, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Resource;
use kube::api::ObjectMeta;

use foodlab_run_channel::channel;
use foodlab_run_channel::names::{labels, named};

/// Environment variable carrying the lab's spec (JSON) into the Job.
pub const SPEC_ENV: &str = "FOODLAB_LAB_SPEC";
/// Environment variable naming the lab's run ConfigMap.
pub const RUN_CONFIG_MAP_ENV: &str = "FOODLAB_RUN_CONFIGMAP";
/// The operator's variable naming the lab's Secret (the admin token the services
/// ask for, the RabbitMQ user), which the Job gets as its environment too.
pub const LAB_SECRET_ENV: &str = "FOODLAB_LAB_SECRET";
/// Time the Job may take beyond the lab's own deadline: pulling the image, starting.
const JOB_START_SLACK: Duration = Duration::from_secs(120);

/// A recreated lab (same name, new UID) gets a Job of its own.
pub fn job_name(lab: &FoodLab) -> String {
    named(lab, "workload")
}

/// `activeDeadlineSeconds`: the lab's own deadline (`expect.within` and the
/// engine's slack) plus time to start the pod.
pub fn active_deadline(lab: &ValidatedLab) -> i64 {
    i64::try_from((lab.deadline() + JOB_START_SLACK).as_secs()).unwrap_or(i64::MAX)
}

/// The Job for a lab. It gets the whole spec: it applies the settings, and
/// waits for the chaos the operator runs; the faults stay with the operator.
pub fn workload_job(
    lab: &FoodLab,
    validated: &ValidatedLab,
    image: &str,
    pull_policy: &str,
) -> Result<Job, serde_json::Error> {
    let spec = lab.spec.clone();
    let labels = labels(lab);
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
            EnvVar {
                name: RUN_CONFIG_MAP_ENV.into(),
                value: Some(channel::name(lab)),
                ..EnvVar::default()
            },
        ]),
        env_from: lab_secret(std::env::var(LAB_SECRET_ENV).ok()),
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
            active_deadline_seconds: Some(active_deadline(validated)),
            ttl_seconds_after_finished: Some(3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    // The Job writes its start and its report to the run ConfigMap.
                    service_account_name: Some(job_name(lab)),
                    automount_service_account_token: Some(true),
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

/// The Job's identity: a ServiceAccount, a Role that lets it read and patch
/// its lab's run ConfigMap and list EndpointSlices (the settings go to every
/// ready pod), and the binding of the two; all named as the Job and owned by
/// the lab, so they go with it.
pub fn run_channel_access(lab: &FoodLab) -> (ServiceAccount, Role, RoleBinding) {
    let metadata = ObjectMeta {
        name: Some(job_name(lab)),
        namespace: lab.metadata.namespace.clone(),
        labels: Some(labels(lab)),
        owner_references: lab.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    };
    let account = ServiceAccount {
        metadata: metadata.clone(),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    };
    let rule =
        |group: &str, resource: &str, names: Option<Vec<String>>, verbs: &[&str]| PolicyRule {
            api_groups: Some(vec![group.to_owned()]),
            resources: Some(vec![resource.to_owned()]),
            resource_names: names,
            verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
            ..PolicyRule::default()
        };
    let role = Role {
        metadata: metadata.clone(),
        rules: Some(vec![
            rule(
                "",
                "configmaps",
                Some(vec![channel::name(lab)]),
                &["get", "patch"],
            ),
            rule("discovery.k8s.io", "endpointslices", None, &["list"]),
        ]),
    };
    let binding = RoleBinding {
        metadata,
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: job_name(lab),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: job_name(lab),
            namespace: lab.metadata.namespace.clone(),
            ..Subject::default()
        }]),
    };
    (account, role, binding)
}

/// The lab's Secret as the Job's environment, as the operator has it (the chart
/// names it); none outside a chart install.
fn lab_secret(name: Option<String>) -> Option<Vec<EnvFromSource>> {
    let name = name.filter(|n| !n.is_empty())?;
    Some(vec![EnvFromSource {
        secret_ref: Some(SecretEnvSource {
            name,
            optional: Some(false),
        }),
        ..EnvFromSource::default()
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_gets_the_lab_secret_the_operator_was_given() {
        assert_eq!(lab_secret(None), None);
        assert_eq!(lab_secret(Some(String::new())), None);
        let from = lab_secret(Some("foodlab-lab".into())).unwrap_or_default();
        assert_eq!(from.len(), 1);
        let secret = from[0].secret_ref.clone().unwrap_or_default();
        assert_eq!(secret.name, "foodlab-lab");
        assert_eq!(secret.optional, Some(false));
    }

    fn lab(name: &str, uid: &str) -> FoodLab {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "foodlab.dev/v1alpha1", "kind": "FoodLab",
            "metadata": {"name": name, "namespace": "default", "uid": uid},
            "spec": {"transport": "rest", "workload": {"orders": 1}}
        }))
        .unwrap()
    }

    #[test]
    fn names_carry_the_uid_and_fit_in_a_label() {
        let first = lab("sync-baseline", "0b7e4c1e-1111-2222-3333-444455556666");
        let again = lab("sync-baseline", "9f00aa11-1111-2222-3333-444455556666");
        assert_eq!(job_name(&first), "sync-baseline-workload-0b7e4c1e");
        assert_ne!(job_name(&first), job_name(&again));
        let long = lab(&"x".repeat(200), "0b7e4c1e-1111");
        let name = job_name(&long);
        assert_eq!(name.len(), 63, "{name}");
        assert!(name.ends_with("-workload-0b7e4c1e"), "{name}");
    }

    #[test]
    fn the_deadline_comes_from_within() {
        let mut spec = lab("a", "b").spec;
        spec.expect.within = Some(Duration::from_secs(60));
        let validated = ValidatedLab::new(&spec).unwrap();
        assert_eq!(active_deadline(&validated), 60 + 180 + 120);
    }
}
