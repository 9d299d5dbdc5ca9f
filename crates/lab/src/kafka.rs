//! The streaming-kafka part from a lab's point of view: the broker, and the
//! analytics service's figures, consumer lag and replay (all read over HTTP,
//! so the same code works on Kubernetes).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;

use foodlab_transport::kafka::{DEFAULT_BROKERS, KafkaArgs};

use crate::broker_script::BrokerScript;
use crate::observe::get_json;
use crate::platform::{Platform, PlatformError};
use crate::results::{AnalyticsTotals, ReplayResults};
use crate::spec::Service;

const POLL: Duration = Duration::from_millis(100);

const KAFKA_SCRIPT: BrokerScript = BrokerScript {
    broker: "Kafka",
    env: "FOODLAB_KAFKA_SCRIPT",
    default_path: "scripts/kafka.sh",
    make_target: "kafka-up",
};

/// Where the Kafka-protocol broker of the streaming part is.
#[derive(Debug, Clone)]
pub enum KafkaBroker {
    /// The project's Apache Kafka on 127.0.0.1:9092, started with its script
    /// (`scripts/kafka.sh`, or this path) if nothing listens there.
    Local { script: Option<PathBuf> },
    /// A broker that is already running (any Kafka-protocol broker).
    At { brokers: String },
}

impl Default for KafkaBroker {
    fn default() -> Self {
        Self::Local { script: None }
    }
}

impl KafkaBroker {
    /// The broker named by `FOODLAB_KAFKA_BROKERS` (e.g. an Apache Kafka),
    /// else the project's.
    pub fn from_env() -> Self {
        match std::env::var("FOODLAB_KAFKA_BROKERS") {
            Ok(brokers) if !brokers.trim().is_empty() => Self::At { brokers },
            _ => Self::default(),
        }
    }

    /// Makes sure the broker listens; its bootstrap servers.
    pub async fn ready(&self) -> Result<String, PlatformError> {
        match self {
            Self::At { brokers } => Ok(brokers.clone()),
            Self::Local { script } => {
                if tokio::net::TcpStream::connect(DEFAULT_BROKERS)
                    .await
                    .is_ok()
                {
                    return Ok(DEFAULT_BROKERS.to_owned());
                }
                KAFKA_SCRIPT
                    .start(
                        script.clone(),
                        &format!("no Kafka broker listens on {DEFAULT_BROKERS}"),
                    )
                    .await?;
                Ok(DEFAULT_BROKERS.to_owned())
            }
        }
    }
}

/// The streaming part's bootstrap servers, topics and consumer groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaNames {
    pub brokers: String,
    pub order_topic: String,
    pub inventory_topic: String,
    pub inventory_group: String,
    pub analytics_group: String,
    pub order_group: String,
}

impl KafkaNames {
    /// The services' default names, each followed by `suffix` (empty for the defaults).
    pub fn new(brokers: String, suffix: &str) -> Self {
        let defaults = KafkaArgs::default();
        Self {
            brokers,
            order_topic: format!("{}{suffix}", defaults.order_topic),
            inventory_topic: format!("{}{suffix}", defaults.inventory_topic),
            inventory_group: format!("{}{suffix}", defaults.inventory_group),
            analytics_group: format!("{}{suffix}", defaults.analytics_group),
            order_group: format!("{}{suffix}", defaults.order_group),
        }
    }

    /// The services' settings for these names.
    pub fn args(&self) -> KafkaArgs {
        KafkaArgs {
            brokers: self.brokers.clone(),
            order_topic: self.order_topic.clone(),
            inventory_topic: self.inventory_topic.clone(),
            inventory_group: self.inventory_group.clone(),
            analytics_group: self.analytics_group.clone(),
            order_group: self.order_group.clone(),
            ..KafkaArgs::default()
        }
    }

    /// Deletes these topics and groups from the broker (a run's own names, at its end).
    pub async fn delete(&self) -> Result<(), foodlab_transport::kafka::KafkaFailure> {
        self.args().delete_topics_and_groups().await
    }

    /// The services' environment for these names.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("FOODLAB_KAFKA_BROKERS", &self.brokers),
            ("FOODLAB_ORDER_TOPIC", &self.order_topic),
            ("FOODLAB_INVENTORY_TOPIC", &self.inventory_topic),
            ("FOODLAB_INVENTORY_GROUP", &self.inventory_group),
            ("FOODLAB_ANALYTICS_GROUP", &self.analytics_group),
            ("FOODLAB_ORDER_GROUP", &self.order_group),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
    }
}

#[derive(Debug, Deserialize)]
struct Figures {
    total_orders: u64,
    total_inventory_events: u64,
    failures: u64,
    last_replay: Option<LastReplay>,
}

impl Figures {
    fn totals(&self) -> AnalyticsTotals {
        AnalyticsTotals {
            orders: self.total_orders,
            inventory_events: self.total_inventory_events,
            failures: self.failures,
        }
    }
}

#[derive(Debug, Deserialize)]
struct LastReplay {
    events: u64,
    seconds: Option<f64>,
    events_per_second: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct LagReport {
    groups: Vec<GroupLag>,
}

#[derive(Debug, Deserialize)]
struct GroupLag {
    total_lag: i64,
}

/// Reads the analytics service of a platform.
#[derive(Clone)]
pub struct Analytics {
    base: String,
    http: reqwest::Client,
}

impl Analytics {
    /// `None` when the platform runs no analytics service (other parts).
    pub fn of<P: Platform>(platform: &P, http: &reqwest::Client) -> Option<Self> {
        Some(Self {
            base: platform.endpoint(Service::Analytics).ok()?,
            http: http.clone(),
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Option<T> {
        get_json(&self.http, &format!("{}{path}", self.base)).await
    }

    async fn figures(&self) -> Option<Figures> {
        self.get("/metrics").await
    }

    pub async fn totals(&self) -> Option<AnalyticsTotals> {
        let figures = self.figures().await?;
        Some(figures.totals())
    }

    /// The totals once the part is idle: analytics has read the whole log
    /// (it reads it from the start whenever it starts) and no group lags;
    /// `None` if that does not happen by `deadline`.
    pub async fn caught_up_totals(&self, deadline: Instant) -> Option<AnalyticsTotals> {
        loop {
            let replayed = self.figures().await.is_some_and(|figures| {
                figures
                    .last_replay
                    .is_some_and(|replay| replay.seconds.is_some())
            });
            if replayed
                && self.total_lag().await == Some(0)
                && let Some(totals) = self.totals().await
            {
                return Some(totals);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Lag summed over every partition of `analytics-group` and `inventory-group`.
    pub async fn total_lag(&self) -> Option<u64> {
        let report: LagReport = self.get("/lag").await?;
        Some(
            report
                .groups
                .iter()
                .map(|g| g.total_lag.max(0) as u64)
                .sum(),
        )
    }

    /// Waits until analytics has counted `until` (at least these orders and
    /// inventory results) and no group lags; when that happened, or `None`
    /// at the deadline.
    pub async fn wait_caught_up(
        &self,
        until: AnalyticsTotals,
        deadline: Instant,
    ) -> Option<Instant> {
        loop {
            if let Some(totals) = self.totals().await
                && totals.orders >= until.orders
                && totals.inventory_events >= until.inventory_events
                && self.total_lag().await == Some(0)
            {
                return Some(Instant::now());
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Rewinds analytics to the earliest offsets, waits for it to read the
    /// log again, and compares its totals before and after.
    pub async fn replay(&self, deadline: Instant) -> Result<ReplayResults, String> {
        let before = self
            .totals()
            .await
            .ok_or("analytics' figures cannot be read")?;
        let response = self
            .http
            .post(format!("{}/admin/reset-offsets", self.base))
            // Analytics answers once the rewind is done, within its own 30 s.
            .timeout(std::time::Duration::from_secs(40))
            .send()
            .await
            .map_err(|e| format!("reset-offsets: {e}"))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(format!("reset-offsets answered {status}: {body}"));
        }
        let mut after = None;
        let mut replay = None;
        while Instant::now() < deadline {
            if let Some(figures) = self.figures().await
                && figures
                    .last_replay
                    .as_ref()
                    .is_some_and(|last| last.seconds.is_some())
            {
                after = Some(figures.totals());
                replay = figures.last_replay;
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let (Some(after), Some(replay)) = (after, replay) else {
            return Err("analytics did not finish reading the log again in time".into());
        };
        Ok(ReplayResults {
            identical: before == after,
            before,
            after,
            events: replay.events,
            seconds: replay.seconds.unwrap_or_default(),
            events_per_second: replay.events_per_second.unwrap_or_default(),
        })
    }
}
