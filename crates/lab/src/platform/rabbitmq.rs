//! The RabbitMQ broker a platform provides: the admin handle on it, a vhost
//! per lab run (so runs never see each other's queues), and starting the
//! project's own broker when none is running. Its queue depths are read by
//! `probe::rabbitmq`.

use std::path::PathBuf;
use std::time::Duration;

use crate::platform::PlatformError;
use crate::platform::broker_script::BrokerScript;

pub const DEFAULT_AMQP_PORT: u16 = 5672;
pub const DEFAULT_MANAGEMENT_URL: &str = "http://127.0.0.1:15672";

/// A broker, and the vhost the lab's services use on it.
#[derive(Debug, Clone)]
pub struct RabbitAdmin {
    /// The management API of each node, asked in turn until one answers
    /// (a cluster's node may be down).
    pub management_urls: Vec<String>,
    /// `host:port` of the AMQP listener; a cluster's nodes comma-separated.
    pub amqp_host_port: String,
    pub vhost: String,
    pub user: String,
    pub password: String,
    pub(crate) http: reqwest::Client,
    pub(crate) amqp: std::sync::Arc<tokio::sync::Mutex<Option<lapin::Connection>>>,
}

pub(crate) fn encode(vhost: &str) -> String {
    vhost.replace('%', "%25").replace('/', "%2F")
}

impl RabbitAdmin {
    /// `management_url`: a cluster's nodes comma-separated.
    pub fn new(management_url: &str, amqp_host_port: &str, vhost: &str) -> Self {
        Self {
            management_urls: management_url
                .split(',')
                .map(|url| url.trim().trim_end_matches('/').to_owned())
                .filter(|url| !url.is_empty())
                .collect(),
            amqp_host_port: amqp_host_port.to_owned(),
            vhost: vhost.to_owned(),
            // On a cluster the chart's Secret names them; the local broker's guest otherwise.
            user: std::env::var("FOODLAB_RABBITMQ_USER").unwrap_or_else(|_| "guest".into()),
            password: std::env::var("FOODLAB_RABBITMQ_PASSWORD").unwrap_or_else(|_| "guest".into()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            amqp: Default::default(),
        }
    }

    /// The broker the project's script starts on 127.0.0.1.
    pub fn local(vhost: &str) -> Self {
        Self::new(
            DEFAULT_MANAGEMENT_URL,
            &format!("127.0.0.1:{DEFAULT_AMQP_PORT}"),
            vhost,
        )
    }

    /// The vhost's URL on each node, comma-separated (as the services take them).
    pub fn amqp_url(&self) -> String {
        self.amqp_host_port
            .split(',')
            .map(|host| {
                format!(
                    "amqp://{}:{}@{}/{}",
                    self.user,
                    self.password,
                    host.trim(),
                    encode(&self.vhost)
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    pub async fn is_up(&self) -> bool {
        self.management(reqwest::Method::GET, "/api/overview", None)
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    pub(crate) fn err(&self, what: &str, e: impl std::fmt::Display) -> PlatformError {
        PlatformError::Setup(format!(
            "RabbitMQ at {}: {what}: {e}",
            self.management_urls.join(",")
        ))
    }

    /// A call of the management API, on the first node that answers.
    pub(crate) async fn management(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<reqwest::Response, PlatformError> {
        let mut last = None;
        for url in &self.management_urls {
            let mut request = self
                .http
                .request(method.clone(), format!("{url}{path}"))
                .basic_auth(&self.user, Some(&self.password));
            if let Some(body) = body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(response) => return Ok(response),
                Err(error) => last = Some(error),
            }
        }
        Err(match last {
            Some(error) => self.err(path, error),
            None => self.err(path, "no management URL"),
        })
    }

    async fn put(&self, path: &str, body: serde_json::Value) -> Result<(), PlatformError> {
        let response = self
            .management(reqwest::Method::PUT, path, Some(&body))
            .await?;
        if !response.status().is_success() {
            return Err(self.err(path, response.status()));
        }
        Ok(())
    }

    /// Creates the vhost and lets the lab's user use it.
    pub async fn create_vhost(&self) -> Result<(), PlatformError> {
        let vhost = encode(&self.vhost);
        self.put(&format!("/api/vhosts/{vhost}"), serde_json::json!({}))
            .await?;
        self.put(
            &format!("/api/permissions/{vhost}/{}", self.user),
            serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}),
        )
        .await
    }

    /// Closes the observer's AMQP connection (before the vhost goes away).
    pub async fn close(&self) {
        if let Some(connection) = self.amqp.lock().await.take() {
            let _ = connection.close(200, "lab over".into()).await;
        }
    }

    pub async fn delete_vhost(&self) -> Result<(), PlatformError> {
        let path = format!("/api/vhosts/{}", encode(&self.vhost));
        self.management(reqwest::Method::DELETE, &path, None)
            .await?;
        Ok(())
    }
}

/// Which RabbitMQ a local platform uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RabbitBroker {
    /// The project's node on the default ports, started with its script
    /// (`scripts/rabbitmq.sh`, or this path) if nothing answers.
    Local { script: Option<PathBuf> },
    /// A broker that is already running (`amqp_host_port`: a cluster's nodes
    /// comma-separated).
    At {
        management_url: String,
        amqp_host_port: String,
    },
}

impl Default for RabbitBroker {
    fn default() -> Self {
        Self::Local { script: None }
    }
}

impl RabbitBroker {
    /// Makes sure the broker (of `nodes` nodes, for the project's own)
    /// answers; the admin handle for `vhost` on it.
    pub async fn ready(&self, vhost: &str, nodes: u32) -> Result<RabbitAdmin, PlatformError> {
        match self {
            Self::Local { script } if nodes == 1 => {
                ensure_local_broker(script.clone()).await?;
                Ok(RabbitAdmin::local(vhost))
            }
            Self::Local { script } => {
                let path = RABBITMQ_SCRIPT.path(script.clone());
                if RABBITMQ_SCRIPT
                    .run(&path, nodes, &["status"])
                    .await
                    .is_err()
                {
                    RABBITMQ_SCRIPT
                        .start(
                            script.clone(),
                            nodes,
                            &format!("the {nodes} RabbitMQ nodes do not all answer"),
                        )
                        .await?;
                }
                let mut managements = Vec::new();
                for node in 1..=nodes {
                    let n = node.to_string();
                    managements.push(
                        RABBITMQ_SCRIPT
                            .run(&path, nodes, &["management", &n])
                            .await?,
                    );
                }
                let urls = RABBITMQ_SCRIPT.run(&path, nodes, &["urls"]).await?;
                let hosts: Vec<&str> = urls
                    .split(',')
                    .map(foodlab_transport::rabbitmq::url_host)
                    .collect();
                Ok(RabbitAdmin::new(
                    &managements.join(","),
                    &hosts.join(","),
                    vhost,
                ))
            }
            Self::At {
                management_url,
                amqp_host_port,
            } => Ok(RabbitAdmin::new(management_url, amqp_host_port, vhost)),
        }
    }
}

/// Starts the project's RabbitMQ node (`scripts/rabbitmq.sh start`) unless a
/// broker answers already. The script is `script`, else `FOODLAB_RABBITMQ_SCRIPT`,
/// else `scripts/rabbitmq.sh` under the current directory.
pub async fn ensure_local_broker(script: Option<PathBuf>) -> Result<(), PlatformError> {
    if RabbitAdmin::local("/").is_up().await {
        return Ok(());
    }
    RABBITMQ_SCRIPT
        .start(
            script,
            1,
            &format!("no RabbitMQ answers at {DEFAULT_MANAGEMENT_URL}"),
        )
        .await
}

pub(crate) const RABBITMQ_SCRIPT: BrokerScript = BrokerScript {
    broker: "RabbitMQ",
    env: "FOODLAB_RABBITMQ_SCRIPT",
    default_path: "scripts/rabbitmq.sh",
    make_target: "rabbitmq-up",
    nodes_env: "RABBITMQ_NODES",
};
