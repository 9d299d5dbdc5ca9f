//! The Kubernetes platform: services by their Service DNS names, every
//! ready pod of one by its EndpointSlices, replicas through each
//! Deployment's scale subresource; the broker's nodes are its StatefulSet's
//! pods.

use std::collections::{BTreeMap, BTreeSet};

use foodlab_lab::platform::rabbitmq::RabbitAdmin;
use foodlab_lab::spec::Broker;
use foodlab_lab::{Platform, PlatformError, Service};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::core::Selector;
use kube::{Api, ResourceExt};

pub const FIELD_MANAGER: &str = "foodlab-operator";
/// The label the charts give each service's pods: `postgres` or `sqlite`.
pub const DATABASE_LABEL: &str = "foodlab.dev/database";

#[derive(Clone)]
pub struct KubernetesPlatform {
    namespace: String,
    /// Without an API client (inside the workload Job) scaling is not possible.
    deployments: Option<Api<Deployment>>,
    rabbitmq: Option<RabbitAdmin>,
    /// Service URLs instead of Service DNS names (tests).
    endpoints: Option<BTreeMap<Service, String>>,
    /// Where each service's ready pods are listed; without it, what must
    /// reach every pod goes to the Service (one pod of several).
    endpoint_slices: Option<Api<EndpointSlice>>,
    /// Where a PodKill finds and deletes pods.
    pods: Option<Api<Pod>>,
    /// Where the part's broker (its StatefulSet) is read.
    stateful_sets: Option<Api<StatefulSet>>,
}

impl KubernetesPlatform {
    pub fn new(namespace: &str, deployments: Option<Api<Deployment>>, with_rabbitmq: bool) -> Self {
        let rabbitmq = with_rabbitmq.then(|| {
            RabbitAdmin::new(
                &format!("http://rabbitmq.{namespace}.svc:15672"),
                &format!("rabbitmq.{namespace}.svc:5672"),
                "/",
            )
        });
        Self {
            namespace: namespace.to_owned(),
            deployments,
            rabbitmq,
            endpoints: None,
            endpoint_slices: None,
            pods: None,
            stateful_sets: None,
        }
    }

    /// Reads the part's broker (its nodes: a StatefulSet's pods) through this API.
    pub fn with_stateful_sets(mut self, stateful_sets: Api<StatefulSet>) -> Self {
        self.stateful_sets = Some(stateful_sets);
        self
    }

    /// The broker's StatefulSet; `None` where there is none in the namespace.
    async fn broker_set(&self, broker: Broker) -> Result<Option<StatefulSet>, PlatformError> {
        let api = self
            .stateful_sets
            .as_ref()
            .ok_or_else(|| PlatformError::Broker {
                broker,
                reason: "no Kubernetes API client for StatefulSets here".into(),
            })?;
        api.get_opt(broker.name())
            .await
            .map_err(|e| broker_failed(broker, "reading its StatefulSet", &e))
    }

    /// The nodes the broker's StatefulSet runs (`spec.replicas`); `None`
    /// where there is no StatefulSet of that name in the namespace.
    pub async fn broker_replicas(&self, broker: Broker) -> Result<Option<u32>, PlatformError> {
        Ok(self.broker_set(broker).await?.map(|set| {
            let replicas = set.spec.and_then(|s| s.replicas).unwrap_or(1);
            u32::try_from(replicas).unwrap_or(0)
        }))
    }

    /// Every pod the broker's StatefulSet selects (`spec.selector`),
    /// whatever its state.
    async fn broker_pods(&self, broker: Broker) -> Result<Vec<Pod>, PlatformError> {
        let set = self
            .broker_set(broker)
            .await?
            .ok_or_else(|| no_stateful_set(broker))?;
        let selector = set
            .spec
            .map(|s| s.selector)
            .map(Selector::try_from)
            .transpose()
            .map_err(|e| PlatformError::Broker {
                broker,
                reason: format!("its StatefulSet's pod selector: {e}"),
            })?
            .filter(|s| !s.selects_all())
            .ok_or_else(|| PlatformError::Broker {
                broker,
                reason: "its StatefulSet has no pod selector".into(),
            })?;
        let list = self
            .broker_pod_api(broker)?
            .list(&ListParams::default().labels_from(&selector))
            .await
            .map_err(|e| broker_failed(broker, "listing its pods", &e))?;
        Ok(list.items)
    }

    /// Kills pods (PodKill) through this API.
    pub fn with_pods(mut self, pods: Api<Pod>) -> Self {
        self.pods = Some(pods);
        self
    }

    /// The Deployment's own pods: those its selector matches (the part's
    /// name and instance labels, as its scale subresource reports them),
    /// not those already terminating or ended.
    pub async fn live_pods(&self, service: Service) -> Result<Vec<Pod>, PlatformError> {
        let scale = self
            .api(service)?
            .get_scale(service.name())
            .await
            .map_err(|e| Self::failed(service, e))?;
        let selector = scale
            .status
            .map(|s| s.selector.unwrap_or_default())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| PlatformError::Api {
                service,
                reason: "its Deployment's scale reports no pod selector".into(),
            })?;
        let list = self
            .pod_api(service)?
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| Self::failed(service, e))?;
        Ok(list
            .items
            .into_iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .filter(|pod| {
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Succeeded" | "Failed"))
            })
            .collect())
    }

    /// Why `service` cannot run more than one replica, if it cannot: its
    /// pods must say (the charts' `foodlab.dev/database` label) that they
    /// share a PostgreSQL; on SQLite each would keep a stock of its own.
    pub async fn cannot_scale_out(
        &self,
        service: Service,
    ) -> Result<Option<String>, PlatformError> {
        let pods = self.live_pods(service).await?;
        let databases: BTreeSet<&str> = pods
            .iter()
            .map(|pod| {
                pod.labels()
                    .get(DATABASE_LABEL)
                    .map_or("unknown", String::as_str)
            })
            .collect();
        Ok(
            match databases.iter().copied().collect::<Vec<_>>().as_slice() {
                ["postgres"] => None,
                [] => Some(format!(
                    "{service} has no running pod to tell which database it uses"
                )),
                other => Some(format!(
                    "{service}'s pods run on {} ({DATABASE_LABEL}), not a shared PostgreSQL: each \
                 would keep a stock of its own; install the part with \
                 --set database.backend=postgres to run more than one",
                    other.join(", ")
                )),
            },
        )
    }

    fn broker_pod_api(&self, broker: Broker) -> Result<&Api<Pod>, PlatformError> {
        self.pods.as_ref().ok_or_else(|| PlatformError::Broker {
            broker,
            reason: "no Kubernetes API client for pods here".into(),
        })
    }

    fn pod_api(&self, service: Service) -> Result<&Api<Pod>, PlatformError> {
        self.pods
            .as_ref()
            .ok_or_else(|| PlatformError::Unsupported {
                service,
                reason: "no Kubernetes API client for pods here".into(),
            })
    }

    /// Reaches every ready pod of a service (faults, settings) through its
    /// EndpointSlices.
    pub fn with_endpoint_slices(mut self, endpoint_slices: Api<EndpointSlice>) -> Self {
        self.endpoint_slices = Some(endpoint_slices);
        self
    }

    /// Reaches the services at these URLs instead of their Service DNS names.
    pub fn with_endpoints(mut self, endpoints: BTreeMap<Service, String>) -> Self {
        self.endpoints = Some(endpoints);
        self
    }

    fn api(&self, service: Service) -> Result<&Api<Deployment>, PlatformError> {
        self.deployments
            .as_ref()
            .ok_or_else(|| PlatformError::Unsupported {
                service,
                reason: "no Kubernetes API client here".into(),
            })
    }

    fn failed(service: Service, error: kube::Error) -> PlatformError {
        match error {
            kube::Error::Api(status) if status.is_not_found() => {
                PlatformError::NotDeployed(service)
            }
            other => PlatformError::Api {
                service,
                reason: other.to_string(),
            },
        }
    }
}

impl Platform for KubernetesPlatform {
    fn endpoint(&self, service: Service) -> Result<String, PlatformError> {
        if let Some(endpoints) = &self.endpoints {
            return endpoints
                .get(&service)
                .cloned()
                .ok_or(PlatformError::NotDeployed(service));
        }
        Ok(format!(
            "http://{}.{}.svc:{}",
            service.name(),
            self.namespace,
            service.default_port()
        ))
    }

    async fn endpoints(&self, service: Service) -> Result<Vec<String>, PlatformError> {
        let slices = match (&self.endpoint_slices, &self.endpoints) {
            (Some(slices), None) => slices,
            _ => return Ok(vec![self.endpoint(service)?]),
        };
        let selector = format!("kubernetes.io/service-name={}", service.name());
        let list = slices
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| Self::failed(service, e))?;
        Ok(ready_pod_urls(service, &list.items))
    }

    async fn scale(&self, service: Service, replicas: u32) -> Result<(), PlatformError> {
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        self.api(service)?
            .patch_scale(
                service.name(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| Self::failed(service, e))?;
        Ok(())
    }

    fn rabbitmq(&self) -> Option<&RabbitAdmin> {
        self.rabbitmq.as_ref()
    }

    async fn replicas(&self, service: Service) -> Result<u32, PlatformError> {
        let scale = self
            .api(service)?
            .get_scale(service.name())
            .await
            .map_err(|e| Self::failed(service, e))?;
        let replicas = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
        Ok(u32::try_from(replicas).unwrap_or(0))
    }

    /// The names of the Deployment's live pods (`live_pods`).
    async fn pods(&self, service: Service) -> Result<Vec<String>, PlatformError> {
        let mut names: Vec<String> = self
            .live_pods(service)
            .await?
            .iter()
            .map(|pod| pod.name_any())
            .collect();
        names.sort();
        Ok(names)
    }

    async fn kill_pod(
        &self,
        service: Service,
        pod: &str,
        grace: Duration,
    ) -> Result<(), PlatformError> {
        delete_pod(self.pod_api(service)?, pod, grace)
            .await
            .map_err(|error| PlatformError::Api {
                service,
                reason: format!("deleting pod {pod}: {error}"),
            })
    }

    /// The broker StatefulSet's running pods not being deleted, by name.
    async fn broker_nodes(&self, broker: Broker) -> Result<Vec<String>, PlatformError> {
        let mut names: Vec<String> = self
            .broker_pods(broker)
            .await?
            .iter()
            .filter(|pod| running(pod))
            .map(|pod| pod.name_any())
            .collect();
        names.sort();
        Ok(names)
    }

    async fn kill_broker_node(
        &self,
        broker: Broker,
        node: &str,
        grace: Duration,
    ) -> Result<(), PlatformError> {
        delete_pod(self.broker_pod_api(broker)?, node, grace)
            .await
            .map_err(|error| broker_failed(broker, &format!("deleting pod {node}"), &error))
    }

    /// Those of `nodes` whose pod (the StatefulSet makes it again under the
    /// same name) is not there, is being deleted or is not Ready yet.
    async fn broker_nodes_down(
        &self,
        broker: Broker,
        nodes: &[String],
    ) -> Result<Vec<String>, PlatformError> {
        let pods = self.broker_pods(broker).await?;
        Ok(nodes
            .iter()
            .filter(|node| {
                !pods
                    .iter()
                    .any(|pod| pod.name_any() == **node && serving(pod))
            })
            .cloned()
            .collect())
    }
}

/// Deletes a pod, given `grace` to stop (zero: at once), as a pod kill does;
/// one gone already is what the kill wanted.
async fn delete_pod(pods: &Api<Pod>, name: &str, grace: Duration) -> Result<(), kube::Error> {
    let params = DeleteParams {
        grace_period_seconds: Some(u32::try_from(grace.as_secs()).unwrap_or(u32::MAX)),
        ..DeleteParams::default()
    };
    match pods.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(error) => Err(error),
    }
}

/// A pod that runs and is not on its way out.
fn running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// A pod not being deleted whose Ready condition is True.
fn serving(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
}

fn no_stateful_set(broker: Broker) -> PlatformError {
    PlatformError::Broker {
        broker,
        reason: format!("no StatefulSet {} in this namespace", broker.name()),
    }
}

fn broker_failed(broker: Broker, doing: &str, error: &kube::Error) -> PlatformError {
    PlatformError::Broker {
        broker,
        reason: format!("{doing}: {error}"),
    }
}

/// Why a lab that needs `needed` nodes of `broker` (`spec.broker.nodes`)
/// cannot run on the part as installed, whose StatefulSet runs `installed`
/// nodes (`None`: there is none); a lab of one node runs where there is no
/// StatefulSet, as it did before the broker had a shape.
pub fn broker_shape_mismatch(
    broker: Broker,
    part: &str,
    needed: u32,
    installed: Option<u32>,
) -> Option<String> {
    let has = match installed {
        Some(installed) if installed == needed => return None,
        None if needed == 1 => return None,
        Some(installed) => format!(
            "StatefulSet {broker} runs {installed} node{}",
            if installed == 1 { "" } else { "s" }
        ),
        None => format!("there is no StatefulSet {broker} in this namespace"),
    };
    Some(format!(
        "spec.broker.nodes: {needed}, but {has} (install {part} with --set {broker}.nodes={needed})"
    ))
}

/// `http://<pod ip>:<port>` of every ready endpoint of the slices (a pod
/// that is starting or terminating is not ready), each once.
fn ready_pod_urls(service: Service, slices: &[EndpointSlice]) -> Vec<String> {
    let mut urls = BTreeSet::new();
    for slice in slices {
        let port = slice
            .ports
            .iter()
            .flatten()
            .find_map(|port| port.port)
            .unwrap_or(i32::from(service.default_port()));
        for endpoint in &slice.endpoints {
            // An unknown readiness counts as ready (the API's rule).
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready);
            if ready == Some(false) {
                continue;
            }
            for address in &endpoint.addresses {
                let host = if address.contains(':') {
                    format!("[{address}]")
                } else {
                    address.clone()
                };
                urls.insert(format!("http://{host}:{port}"));
            }
        }
    }
    urls.into_iter().collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_ready_pod_of_the_slices_once() {
        let slices: Vec<EndpointSlice> = serde_json::from_value(serde_json::json!([
            {
                "addressType": "IPv4",
                "metadata": {"name": "inventory-a"},
                "ports": [{"name": "http", "port": 8001, "protocol": "TCP"}],
                "endpoints": [
                    {"addresses": ["10.244.0.7"], "conditions": {"ready": true}},
                    {"addresses": ["10.244.0.8"], "conditions": {"ready": false, "terminating": true}},
                    {"addresses": ["10.244.0.9"]}
                ]
            },
            {
                "addressType": "IPv6",
                "metadata": {"name": "inventory-b"},
                "ports": [{"name": "http", "port": 8001, "protocol": "TCP"}],
                "endpoints": [
                    {"addresses": ["fd00::5"], "conditions": {"ready": true}},
                    {"addresses": ["10.244.0.7"], "conditions": {"ready": true}}
                ]
            },
            {"addressType": "IPv4", "metadata": {"name": "inventory-c"}, "endpoints": []}
        ]))
        .unwrap();
        assert_eq!(
            ready_pod_urls(Service::Inventory, &slices),
            [
                "http://10.244.0.7:8001",
                "http://10.244.0.9:8001",
                "http://[fd00::5]:8001"
            ]
        );
    }

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_broker_node_serves_once_its_pod_is_ready_and_not_being_deleted() {
        let ready = serde_json::json!({"type": "Ready", "status": "True"});
        let not_ready = serde_json::json!({"type": "Ready", "status": "False"});
        let cases = [
            (
                serde_json::json!({"metadata": {"name": "kafka-1"},
                "status": {"phase": "Running", "conditions": [ready]}}),
                true,
                true,
            ),
            // Recreated under the same name, not ready yet.
            (
                serde_json::json!({"metadata": {"name": "kafka-1"},
                "status": {"phase": "Running", "conditions": [not_ready]}}),
                true,
                false,
            ),
            (
                serde_json::json!({"metadata": {"name": "kafka-1"},
                "status": {"phase": "Pending"}}),
                false,
                false,
            ),
            // Still the killed one, on its way out.
            (
                serde_json::json!({"metadata": {"name": "kafka-1",
                    "deletionTimestamp": "2025-01-01T00:00:00Z"},
                "status": {"phase": "Running", "conditions": [ready]}}),
                false,
                false,
            ),
            (
                serde_json::json!({"metadata": {"name": "kafka-1"}}),
                false,
                false,
            ),
        ];
        for (value, is_running, is_serving) in cases {
            let pod = pod(value.clone());
            assert_eq!(running(&pod), is_running, "{value}");
            assert_eq!(serving(&pod), is_serving, "{value}");
        }
    }

    #[test]
    fn a_lab_runs_only_on_a_broker_of_its_nodes() {
        assert_eq!(
            broker_shape_mismatch(Broker::Kafka, "streaming-kafka", 3, Some(1)).as_deref(),
            Some(
                "spec.broker.nodes: 3, but StatefulSet kafka runs 1 node \
                 (install streaming-kafka with --set kafka.nodes=3)"
            )
        );
        assert_eq!(
            broker_shape_mismatch(Broker::Rabbitmq, "async-rabbitmq", 1, Some(3)).as_deref(),
            Some(
                "spec.broker.nodes: 1, but StatefulSet rabbitmq runs 3 nodes \
                 (install async-rabbitmq with --set rabbitmq.nodes=1)"
            )
        );
        assert_eq!(
            broker_shape_mismatch(Broker::Rabbitmq, "async-rabbitmq", 3, None).as_deref(),
            Some(
                "spec.broker.nodes: 3, but there is no StatefulSet rabbitmq in this namespace \
                 (install async-rabbitmq with --set rabbitmq.nodes=3)"
            )
        );
        assert_eq!(
            broker_shape_mismatch(Broker::Kafka, "streaming-kafka", 3, Some(3)),
            None
        );
        // A lab without spec.broker: one node, as before.
        assert_eq!(
            broker_shape_mismatch(Broker::Kafka, "streaming-kafka", 1, Some(1)),
            None
        );
        assert_eq!(
            broker_shape_mismatch(Broker::Rabbitmq, "async-rabbitmq", 1, None),
            None
        );
    }
}
