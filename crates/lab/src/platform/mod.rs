//! Where a lab runs. The engine only asks a platform for endpoints and
//! replica counts; on Kubernetes that is Service DNS and the Deployment scale
//! subresource, on one machine a supervisor of child processes.

pub mod broker_script;
pub mod kafka;
pub mod local;
pub mod rabbitmq;

use std::future::Future;
use std::time::Duration;

use futures::stream::BoxStream;

use crate::spec::{Broker, Service};
use rabbitmq::RabbitAdmin;

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("{0} is not part of this platform's deployment")]
    NotDeployed(Service),
    #[error("{service}: {reason}")]
    Unsupported { service: Service, reason: String },
    #[error("{service} did not become ready: {reason}")]
    NotReady { service: Service, reason: String },
    /// The platform's own API failed (e.g. the Kubernetes API server).
    #[error("{service}: {reason}")]
    Api { service: Service, reason: String },
    #[error("{service}: {source}")]
    Io {
        service: Service,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
    /// The part's broker: its nodes could not be listed, killed or started.
    #[error("{broker}: {reason}")]
    Broker { broker: Broker, reason: String },
}

pub trait Platform: Send + Sync {
    /// Base URL of a service, e.g. `http://127.0.0.1:8000`.
    fn endpoint(&self, service: Service) -> Result<String, PlatformError>;

    /// Base URL of every replica of a service, for what must reach each one
    /// (faults, settings); the service's one address where the platform
    /// balances over them.
    fn endpoints(
        &self,
        service: Service,
    ) -> impl Future<Output = Result<Vec<String>, PlatformError>> + Send {
        let one = self.endpoint(service).map(|endpoint| vec![endpoint]);
        std::future::ready(one)
    }

    /// Sets the number of running replicas; returns once they are ready (or gone).
    fn scale(
        &self,
        service: Service,
        replicas: u32,
    ) -> impl Future<Output = Result<(), PlatformError>> + Send;

    /// The RabbitMQ broker of the async-rabbitmq part, if that part runs here.
    fn rabbitmq(&self) -> Option<&RabbitAdmin>;

    /// The number of replicas currently running.
    fn replicas(&self, service: Service)
    -> impl Future<Output = Result<u32, PlatformError>> + Send;

    /// The names of the service's running pods (locally, its processes),
    /// not those already on their way out.
    fn pods(
        &self,
        service: Service,
    ) -> impl Future<Output = Result<Vec<String>, PlatformError>> + Send {
        std::future::ready(Err(PlatformError::Unsupported {
            service,
            reason: "this platform cannot list pods".into(),
        }))
    }

    /// Kills one pod, given `grace` to stop (zero: SIGKILL at once); its
    /// Deployment (locally, its supervisor) starts a new one.
    fn kill_pod(
        &self,
        service: Service,
        pod: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<(), PlatformError>> + Send {
        let _ = (pod, grace);
        std::future::ready(Err(PlatformError::Unsupported {
            service,
            reason: "this platform cannot kill pods".into(),
        }))
    }

    /// The names of the broker's running nodes (its StatefulSet's pods;
    /// locally, the node processes of the project's script).
    fn broker_nodes(
        &self,
        broker: Broker,
    ) -> impl Future<Output = Result<Vec<String>, PlatformError>> + Send {
        std::future::ready(Err(PlatformError::Broker {
            broker,
            reason: "this platform cannot list the broker's nodes".into(),
        }))
    }

    /// Kills one broker node, given `grace` to stop (zero: SIGKILL at
    /// once); it is started again as its StatefulSet recreates a pod.
    fn kill_broker_node(
        &self,
        broker: Broker,
        node: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<(), PlatformError>> + Send {
        let _ = (node, grace);
        std::future::ready(Err(PlatformError::Broker {
            broker,
            reason: "this platform cannot kill the broker's nodes".into(),
        }))
    }

    /// Those of `nodes` (killed before) that are not serving again yet.
    fn broker_nodes_down(
        &self,
        broker: Broker,
        nodes: &[String],
    ) -> impl Future<Output = Result<Vec<String>, PlatformError>> + Send {
        let _ = nodes;
        std::future::ready(Err(PlatformError::Broker {
            broker,
            reason: "this platform cannot tell whether the broker's nodes are back".into(),
        }))
    }

    /// Each service the platform restarted after it died, once it is ready
    /// again (it starts with its start-up flags only). `None` where the
    /// platform does not say: on a cluster the operator re-applies the
    /// faults on every reconcile.
    fn restarts(&self) -> Option<BoxStream<'static, Service>> {
        None
    }
}
