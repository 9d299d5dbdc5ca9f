//! The Kubernetes platform: services by their Service DNS names, every
//! ready pod of one by its EndpointSlices, replicas through each
//! Deployment's scale subresource.

use std::collections::{BTreeMap, BTreeSet};

use foodlab_lab::platform::rabbitmq::RabbitAdmin;
use foodlab_lab::{Platform, PlatformError, Service};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
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
        }
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
        let params = DeleteParams {
            grace_period_seconds: Some(u32::try_from(grace.as_secs()).unwrap_or(u32::MAX)),
            ..DeleteParams::default()
        };
        match self.pod_api(service)?.delete(pod, &params).await {
            Ok(_) => Ok(()),
            // Gone already: what a kill wanted.
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(error) => Err(PlatformError::Api {
                service,
                reason: format!("deleting pod {pod}: {error}"),
            }),
        }
    }
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
}
