//! Consumer lag of the part's groups, per topic-partition: read from the
//! committed offsets and the high watermarks, served at `GET /lag` and kept
//! in Prometheus gauges (`foodlab_consumer_lag{group,topic,partition}`).

use std::sync::Arc;
use std::time::Duration;

use foodlab_transport::kafka::{self, KafkaArgs, KafkaFailure, PartitionLag};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rdkafka::consumer::BaseConsumer;
use serde::{Deserialize, Serialize};

/// How often the gauges are refreshed without a request.
const REFRESH_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupLag {
    pub group: String,
    pub total_lag: i64,
    pub partitions: Vec<PartitionLag>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LagReport {
    pub groups: Vec<GroupLag>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LagLabels {
    group: String,
    topic: String,
    partition: String,
}

/// One observer per group: it reads the group's offsets without joining it.
#[derive(Clone)]
pub struct LagWatch {
    groups: Arc<Vec<(String, Vec<String>, BaseConsumer)>>,
    gauges: Family<LagLabels, Gauge>,
}

impl LagWatch {
    pub fn new(args: &KafkaArgs, registry: &mut Registry) -> Result<Self, KafkaFailure> {
        let both = vec![args.order_topic.clone(), args.inventory_topic.clone()];
        let groups = vec![
            (
                args.analytics_group.clone(),
                both,
                args.observer(&args.analytics_group)?,
            ),
            (
                args.inventory_group.clone(),
                vec![args.order_topic.clone()],
                args.observer(&args.inventory_group)?,
            ),
        ];
        let gauges = Family::<LagLabels, Gauge>::default();
        registry.register(
            "consumer_lag",
            "Messages between a group's committed offset and the high watermark",
            gauges.clone(),
        );
        Ok(Self {
            groups: Arc::new(groups),
            gauges,
        })
    }

    /// Reads the lag now (blocking broker queries, off the async threads).
    pub async fn read(&self) -> Result<LagReport, KafkaFailure> {
        let watch = self.clone();
        tokio::task::spawn_blocking(move || watch.read_blocking())
            .await
            .map_err(|e| KafkaFailure::Handler(e.to_string()))?
    }

    fn read_blocking(&self) -> Result<LagReport, KafkaFailure> {
        let mut groups = Vec::new();
        for (group, topics, observer) in self.groups.iter() {
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            let partitions = kafka::consumer_lag(observer, &topics)?;
            for p in &partitions {
                self.gauges
                    .get_or_create(&LagLabels {
                        group: group.clone(),
                        topic: p.topic.clone(),
                        partition: p.partition.to_string(),
                    })
                    .set(p.lag);
            }
            groups.push(GroupLag {
                group: group.clone(),
                total_lag: partitions.iter().map(|p| p.lag).sum(),
                partitions,
            });
        }
        Ok(LagReport { groups })
    }

    /// Keeps the gauges fresh for scrapes.
    pub fn spawn_refresh(&self) {
        let watch = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(error) = watch.read().await {
                    tracing::debug!(%error, "consumer lag not read");
                }
                tokio::time::sleep(REFRESH_EVERY).await;
            }
        });
    }
}
