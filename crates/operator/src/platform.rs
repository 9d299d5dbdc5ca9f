//! The Kubernetes platform: services by their Service DNS names, replicas
//! through each Deployment's scale subresource.

use std::collections::BTreeMap;

use foodlab_lab::platform::rabbitmq::RabbitAdmin;
use foodlab_lab::{Platform, PlatformError, Service};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams};

pub const FIELD_MANAGER: &str = "foodlab-operator";

#[derive(Clone)]
pub struct KubernetesPlatform {
    namespace: String,
    /// Without an API client (inside the workload Job) scaling is not possible.
    deployments: Option<Api<Deployment>>,
    rabbitmq: Option<RabbitAdmin>,
    /// Service URLs instead of Service DNS names (tests).
    endpoints: Option<BTreeMap<Service, String>>,
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
        }
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
}
