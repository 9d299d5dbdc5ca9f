//! The broker errors the part's services counted
//! (`foodlab_broker_errors_total{role, kind}` on each replica's
//! `/admin/metrics`), read before and after a run.

use std::collections::BTreeMap;

use crate::platform::Platform;
use crate::probe::metrics;
use crate::results::BrokerErrorCounts;
use crate::spec::Service;

const SERIES: &str = "foodlab_broker_errors_total";

/// Each replica's counts (by its address), each `role/kind` series.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorCounts(BTreeMap<String, BTreeMap<String, u64>>);

impl ErrorCounts {
    /// Every replica of `services` that answers; `None` if none did.
    pub async fn read<P: Platform>(
        platform: &P,
        http: &reqwest::Client,
        services: &[Service],
    ) -> Option<Self> {
        let mut counts = BTreeMap::new();
        for &service in services {
            let Ok(endpoints) = platform.endpoints(service).await else {
                continue;
            };
            for endpoint in endpoints {
                match metrics::scrape(http, &endpoint).await {
                    Ok(scrape) => {
                        counts.insert(endpoint, parse(&scrape));
                    }
                    Err(error) => {
                        tracing::warn!(%service, %endpoint, %error, "broker errors not readable")
                    }
                }
            }
        }
        (!counts.is_empty()).then_some(Self(counts))
    }

    /// What was counted since `before`, summed over the replicas. A replica
    /// whose counter went down restarted: all it counts is new.
    pub fn since(&self, before: &Self) -> BrokerErrorCounts {
        let mut by_kind = BTreeMap::<String, u64>::new();
        for (endpoint, series) in &self.0 {
            let earlier = before.0.get(endpoint);
            for (name, &now) in series {
                let then = earlier.and_then(|e| e.get(name)).copied().unwrap_or(0);
                let new = if now >= then { now - then } else { now };
                if new > 0 {
                    *by_kind.entry(name.clone()).or_default() += new;
                }
            }
        }
        BrokerErrorCounts::of(by_kind)
    }
}

/// The `role/kind` series of a scrape and their values.
fn parse(scrape: &prometheus_parse::Scrape) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for sample in scrape.samples.iter().filter(|s| s.metric == SERIES) {
        let (Some(role), Some(kind), Some(value)) = (
            sample.labels.get("role"),
            sample.labels.get("kind"),
            metrics::counter(sample),
        ) else {
            continue;
        };
        *counts.entry(format!("{role}/{kind}")).or_default() += value;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = "# HELP foodlab_broker_errors Errors seen of the broker\n\
        # TYPE foodlab_broker_errors counter\n\
        foodlab_broker_errors_total{role=\"producer\",kind=\"publish_failed\"} 3\n\
        foodlab_broker_errors_total{role=\"consumer\",kind=\"connection_lost\"} 1\n\
        foodlab_messages_total{queue=\"q\",outcome=\"processed\"} 10\n\
        # EOF\n";

    fn counts(replicas: &[(&str, &[(&str, u64)])]) -> ErrorCounts {
        ErrorCounts(
            replicas
                .iter()
                .map(|(endpoint, series)| {
                    let series = series.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect();
                    ((*endpoint).to_owned(), series)
                })
                .collect(),
        )
    }

    #[test]
    fn a_scrape_gives_each_role_and_kind() {
        assert_eq!(
            parse(&metrics::parse(SCRAPE)),
            BTreeMap::from([
                ("consumer/connection_lost".to_owned(), 1),
                ("producer/publish_failed".to_owned(), 3),
            ])
        );
        assert!(parse(&metrics::parse("foodlab_messages_total{queue=\"q\"} 1\n")).is_empty());
    }

    #[test]
    fn the_change_is_summed_over_replicas_and_a_restart_counts_from_zero() {
        let before = counts(&[
            ("http://a", &[("producer/publish_failed", 2)]),
            ("http://b", &[("consumer/connection_lost", 5)]),
        ]);
        let after = counts(&[
            (
                "http://a",
                &[
                    ("producer/publish_failed", 7),
                    ("consumer/connect_failed", 1),
                ],
            ),
            // Restarted: its counter began again.
            ("http://b", &[("consumer/connection_lost", 2)]),
            // Not read before: everything it counted is new.
            ("http://c", &[("producer/publish_failed", 1)]),
        ]);
        let errors = after.since(&before);
        assert_eq!((errors.producer, errors.consumer), (6, 3));
        assert_eq!(
            errors.by_kind,
            BTreeMap::from([
                ("consumer/connection_lost".to_owned(), 2),
                ("consumer/connect_failed".to_owned(), 1),
                ("producer/publish_failed".to_owned(), 6),
            ])
        );
        assert_eq!(after.since(&after), BrokerErrorCounts::default());
    }
}
