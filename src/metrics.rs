//! Counters, kept in one place for the whole process (they survive config
//! reloads) and served as Prometheus text on the admin listener's
//! `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

/// Every counter tagproxy keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Events the collector accepted.
    pub events_received: AtomicU64,
    /// Events seen before (a retried batch): answered, not delivered again.
    pub events_duplicate: AtomicU64,
    /// Bot events answered but dropped, by detection reason.
    pub bot_events_dropped: DashMap<&'static str, AtomicU64>,
    /// (event, tool) pairs not delivered because consent was missing.
    pub consent_blocked: AtomicU64,
    /// Deliveries queued, by outcome.
    pub deliveries_submitted: AtomicU64,
    pub deliveries_delivered: AtomicU64,
    pub deliveries_failed: AtomicU64,
    /// Refused because a tool's queue was full (the collector answered 503).
    pub deliveries_rejected: AtomicU64,
    pub delivery_attempts: AtomicU64,
    pub delivery_retries: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn bot_dropped(&self, reason: &'static str, n: u64) {
        self.bot_events_dropped
            .entry(reason)
            .or_default()
            .fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "tagproxy_events_received_total",
            "Events the collector accepted.",
            get(&self.events_received),
        );
        counter(
            "tagproxy_events_duplicate_total",
            "Events received again with an id seen recently; not delivered again.",
            get(&self.events_duplicate),
        );
        counter(
            "tagproxy_consent_blocked_total",
            "Event deliveries withheld for missing consent, per tool.",
            get(&self.consent_blocked),
        );
        counter(
            "tagproxy_deliveries_submitted_total",
            "Deliveries queued.",
            get(&self.deliveries_submitted),
        );
        counter(
            "tagproxy_deliveries_delivered_total",
            "Deliveries a destination accepted.",
            get(&self.deliveries_delivered),
        );
        counter(
            "tagproxy_deliveries_failed_total",
            "Deliveries given up (rejected by the destination or out of retries).",
            get(&self.deliveries_failed),
        );
        counter(
            "tagproxy_deliveries_rejected_total",
            "Deliveries refused because the tool's queue was full.",
            get(&self.deliveries_rejected),
        );
        counter(
            "tagproxy_delivery_attempts_total",
            "Requests sent to destinations.",
            get(&self.delivery_attempts),
        );
        counter(
            "tagproxy_delivery_retries_total",
            "Attempts that will be retried.",
            get(&self.delivery_retries),
        );
        let _ = writeln!(
            out,
            "# HELP tagproxy_bot_events_dropped_total Bot events answered but not delivered, by reason.\n# TYPE tagproxy_bot_events_dropped_total counter"
        );
        let mut reasons: Vec<(&'static str, u64)> = self
            .bot_events_dropped
            .iter()
            .map(|e| (*e.key(), e.value().load(Ordering::Relaxed)))
            .collect();
        reasons.sort();
        for (reason, n) in reasons {
            let _ = writeln!(
                out,
                "tagproxy_bot_events_dropped_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        Metrics::add(&m.events_received, 3);
        m.bot_dropped("ai-robots-txt", 2);
        m.bot_dropped("ai-robots-txt", 1);
        let text = m.render();
        assert!(text.contains(
            "# TYPE tagproxy_events_received_total counter\ntagproxy_events_received_total 3\n"
        ));
        assert!(text.contains("tagproxy_bot_events_dropped_total{reason=\"ai-robots-txt\"} 3\n"));
    }
}
