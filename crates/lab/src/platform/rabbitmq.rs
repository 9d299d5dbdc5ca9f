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
    pub management_url: String,
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
    pub fn new(management_url: &str, amqp_host_port: &str, vhost: &str) -> Self {
        Self {
            management_url: management_url.trim_end_matches('/').to_owned(),
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
        self.http
            .get(format!("{}/api/overview", self.management_url))
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    pub(crate) fn err(&self, what: &str, e: impl std::fmt::Display) -> PlatformError {
        PlatformError::Setup(format!("RabbitMQ at {}: {what}: {e}", self.management_url))
    }

    async fn put(&self, path: &str, body: serde_json::Value) -> Result<(), PlatformError> {
        let response = self
            .http
            .put(format!("{}{path}", self.management_url))
            .basic_auth(&self.user, Some(&self.password))
            .json(&body)
            .send()
            .await
            .map_err(|e| self.err(path, e))?;
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
        self.http
            .delete(format!("{}{path}", self.management_url))
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .map_err(|e| self.err(&path, e))?;
        Ok(())
    }
}

/// Which RabbitMQ a local platform uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broker {
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

impl Default for Broker {
    fn default() -> Self {
        Self::Local { script: None }
    }
}

impl Broker {
    /// Makes sure the broker answers; the admin handle for `vhost` on it.
    pub async fn ready(&self, vhost: &str) -> Result<RabbitAdmin, PlatformError> {
        match self {
            Self::Local { script } => {
                ensure_local_broker(script.clone()).await?;
                Ok(RabbitAdmin::local(vhost))
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
            &format!("no RabbitMQ answers at {DEFAULT_MANAGEMENT_URL}"),
        )
        .await
}

const RABBITMQ_SCRIPT: BrokerScript = BrokerScript {
    broker: "RabbitMQ",
    env: "FOODLAB_RABBITMQ_SCRIPT",
    default_path: "scripts/rabbitmq.sh",
    make_target: "rabbitmq-up",
};
