//! The analytics service's figures, consumer lag and replay (all read over
//! HTTP, so the same code works on Kubernetes).

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::platform::Platform;
use crate::probe::{ProbeError, get_json};
use crate::results::{AnalyticsTotals, ReplayResults};
use crate::spec::Service;

const POLL: Duration = Duration::from_millis(100);

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

/// Why a replay measured nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("analytics' figures cannot be read: {0}")]
    Figures(#[source] ProbeError),
    #[error("reset-offsets: {0}")]
    Unanswered(#[source] reqwest::Error),
    #[error("reset-offsets answered {status}: {detail}")]
    Status {
        status: reqwest::StatusCode,
        /// The answer's body.
        detail: String,
    },
    #[error("analytics did not finish reading the log again in time")]
    Deadline,
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
        get_json(&self.http, &format!("{}{path}", self.base))
            .await
            .inspect_err(|error| tracing::debug!(%error, "analytics not read"))
            .ok()
    }

    async fn figures(&self) -> Option<Figures> {
        self.get("/metrics").await
    }

    pub async fn totals(&self) -> Option<AnalyticsTotals> {
        let figures = self.figures().await?;
        Some(figures.totals())
    }

    /// The totals once the part is idle: analytics has finished its latest
    /// reading of the whole log (its group's first, or a replay's) and no
    /// group lags; `None` if that does not happen by `deadline`.
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
    pub async fn replay(&self, deadline: Instant) -> Result<ReplayResults, ReplayError> {
        let before = get_json::<Figures>(&self.http, &format!("{}/metrics", self.base))
            .await
            .map_err(ReplayError::Figures)?
            .totals();
        let response = self
            .http
            .post(format!("{}/admin/reset-offsets", self.base))
            // Analytics answers once the rewind is done, within its own 30 s.
            .timeout(std::time::Duration::from_secs(40))
            .send()
            .await
            .map_err(ReplayError::Unanswered)?;
        let status = response.status();
        if !status.is_success() {
            let detail = response.text().await.unwrap_or_default();
            return Err(ReplayError::Status { status, detail });
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
            return Err(ReplayError::Deadline);
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
