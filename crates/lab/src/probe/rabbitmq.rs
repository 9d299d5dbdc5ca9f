//! Queue depths of the lab's vhost on the platform's RabbitMQ.

use serde::Deserialize;

use crate::platform::PlatformError;
use crate::platform::rabbitmq::{RabbitAdmin, encode};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct QueueDepth {
    #[serde(default)]
    pub messages_ready: u64,
    #[serde(default)]
    pub messages_unacknowledged: u64,
}

impl QueueDepth {
    pub fn total(self) -> u64 {
        self.messages_ready + self.messages_unacknowledged
    }
}

impl RabbitAdmin {
    /// Depth of a queue; zero for a queue not declared yet. Ready messages
    /// are counted over AMQP (exact, now); unacknowledged ones come from the
    /// management API, whose figures can be a few seconds old.
    pub async fn queue_depth(&self, queue: &str) -> Result<QueueDepth, PlatformError> {
        Ok(QueueDepth {
            messages_ready: self.ready(queue).await?,
            messages_unacknowledged: self.managed_depth(queue).await?.messages_unacknowledged,
        })
    }

    async fn ready(&self, queue: &str) -> Result<u64, PlatformError> {
        let mut connection = self.amqp.lock().await;
        if !connection.as_ref().is_some_and(|c| c.status().connected()) {
            let fresh =
                foodlab_transport::rabbitmq::connect(&self.amqp_url(), "foodlab-lab-observer")
                    .await
                    .map_err(|e| self.err("connect", e))?;
            *connection = Some(fresh);
        }
        let Some(connection) = connection.as_ref() else {
            return Ok(0);
        };
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| self.err("channel", e))?;
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let count = match channel
            .queue_declare(queue.into(), passive, lapin::types::FieldTable::default())
            .await
        {
            Ok(declared) => u64::from(declared.message_count()),
            // The broker closes the channel for a queue that does not exist.
            Err(_) => 0,
        };
        let _ = channel.close(200, "done".into()).await;
        Ok(count)
    }

    async fn managed_depth(&self, queue: &str) -> Result<QueueDepth, PlatformError> {
        match self.describe_queue(queue).await? {
            Some(described) => serde_json::from_value(described)
                .map_err(|e| self.err(&format!("queue {queue}"), e)),
            None => Ok(QueueDepth::default()),
        }
    }

    /// A queue of the vhost as the management API describes it (type,
    /// members, leader, counts); `None` for a queue not declared yet.
    pub async fn describe_queue(
        &self,
        queue: &str,
    ) -> Result<Option<serde_json::Value>, PlatformError> {
        let path = format!("/api/queues/{}/{queue}", encode(&self.vhost));
        let response = self.management(reqwest::Method::GET, &path, None).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        response
            .json()
            .await
            .map(Some)
            .map_err(|e| self.err(&path, e))
    }
}
