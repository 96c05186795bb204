//! Counters, kept in one place for the whole process (they survive config
//! reloads) and served as Prometheus text on the admin listener's
//! `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

/// Every counter tagproxy keeps.
#[derive(Default)]
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
    /// Requests that could never be sent (`tools::guard`), by tool and
    /// reason: dead-lettered at once, never queued.
    pub deliveries_invalid: DashMap<(String, &'static str), AtomicU64>,
    pub delivery_attempts: AtomicU64,
    pub delivery_retries: AtomicU64,
    /// Requests that carried several deliveries (batched delivery).
    pub delivery_batches: AtomicU64,
    /// fdatasync calls of the spool (one per group commit).
    pub spool_fsyncs: AtomicU64,
    /// Bytes cut off torn spool writes at start-up.
    pub spool_torn_bytes: AtomicU64,
    /// Deliveries found pending in the spool at start-up.
    pub spool_recovered: AtomicU64,
    /// Spool size on disk (a gauge, refreshed when rendered).
    pub spool_bytes: AtomicU64,
    /// Per-tool queue gauges and counters, from the delivery engine.
    tool_gauges: std::sync::OnceLock<GaugeSource>,
}

/// Values a tool renamed or dropped to meet its destination's rules (GA4's
/// naming rules and collection limits, personal data), by (tool id,
/// reason). Process-wide because adapters count as they build, with no
/// handle on `Metrics`; like the rest, it survives reloads.
static ADJUSTED: std::sync::LazyLock<DashMap<(String, &'static str), AtomicU64>> =
    std::sync::LazyLock::new(DashMap::new);

/// Counts one value tool `tool` renamed or dropped, for `reason` (e.g.
/// `reserved_name`, `personal_data`); shown as
/// `tagproxy_payload_adjusted_total{tool, reason}`.
pub fn payload_adjusted(tool: &str, reason: &'static str) {
    if let Some(c) = ADJUSTED.get(&(tool.to_string(), reason)) {
        c.fetch_add(1, Ordering::Relaxed);
        return;
    }
    ADJUSTED
        .entry((tool.to_string(), reason))
        .or_default()
        .fetch_add(1, Ordering::Relaxed);
}

type GaugeSource = Box<dyn Fn() -> Vec<ToolGauges> + Send + Sync>;

/// One tool's delivery queue, as `/metrics` shows it.
#[derive(Debug, Default, Clone)]
pub struct ToolGauges {
    pub tool: String,
    /// Deliveries owed: waiting, in flight or waiting to retry.
    pub queued: u64,
    /// Age of the oldest delivery owed.
    pub oldest_age_s: f64,
    pub attempts: u64,
    pub delivered: u64,
    pub retries: u64,
    pub dead_lettered: u64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Where per-tool gauges come from (set once, by the delivery engine).
    pub fn set_tool_gauges(&self, source: GaugeSource) {
        let _ = self.tool_gauges.set(source);
    }

    pub fn bot_dropped(&self, reason: &'static str, n: u64) {
        self.bot_events_dropped
            .entry(reason)
            .or_default()
            .fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a request dead-lettered as invalid.
    pub fn invalid(&self, tool: &str, reason: &'static str) {
        self.deliveries_invalid
            .entry((tool.to_string(), reason))
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
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
            "Deliveries given up (rejected by the destination, out of retries, or invalid).",
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
            "tagproxy_delivery_batches_total",
            "Requests that carried several deliveries at once (each delivery's attempt also counts in tagproxy_delivery_attempts_total).",
            get(&self.delivery_batches),
        );
        counter(
            "tagproxy_delivery_retries_total",
            "Attempts that will be retried.",
            get(&self.delivery_retries),
        );
        counter(
            "tagproxy_spool_fsyncs_total",
            "fdatasync calls of the spool (one per group commit).",
            get(&self.spool_fsyncs),
        );
        counter(
            "tagproxy_spool_torn_bytes_total",
            "Bytes of torn spool writes cut off at start-up.",
            get(&self.spool_torn_bytes),
        );
        counter(
            "tagproxy_spool_recovered_total",
            "Deliveries found pending in the spool at start-up.",
            get(&self.spool_recovered),
        );
        let gauges = self.tool_gauges.get().map(|f| f()).unwrap_or_default();
        let _ = writeln!(
            out,
            "# HELP tagproxy_spool_bytes Spool size on disk.\n# TYPE tagproxy_spool_bytes gauge\ntagproxy_spool_bytes {}",
            get(&self.spool_bytes)
        );
        render_tools(&mut out, &gauges);
        let _ = writeln!(
            out,
            "# HELP tagproxy_deliveries_invalid_total Requests that could never be sent (invalid header value, URL, method, body size), dead-lettered without an attempt, per tool and reason.\n# TYPE tagproxy_deliveries_invalid_total counter"
        );
        let mut invalid: Vec<((String, &'static str), u64)> = self
            .deliveries_invalid
            .iter()
            .map(|e| (e.key().clone(), e.value().load(Ordering::Relaxed)))
            .collect();
        invalid.sort();
        for ((tool, reason), n) in invalid {
            let _ = writeln!(
                out,
                "tagproxy_deliveries_invalid_total{{tool=\"{tool}\",reason=\"{reason}\"}} {n}"
            );
        }
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
        let _ = writeln!(
            out,
            "# HELP tagproxy_payload_adjusted_total Values renamed or dropped to meet a destination's rules, by tool and reason.\n# TYPE tagproxy_payload_adjusted_total counter"
        );
        let mut adjusted: Vec<(String, &'static str, u64)> = ADJUSTED
            .iter()
            .map(|e| {
                (
                    e.key().0.clone(),
                    e.key().1,
                    e.value().load(Ordering::Relaxed),
                )
            })
            .collect();
        adjusted.sort();
        for (tool, reason, n) in adjusted {
            let _ = writeln!(
                out,
                "tagproxy_payload_adjusted_total{{tool=\"{tool}\",reason=\"{reason}\"}} {n}"
            );
        }
        out
    }
}

/// Per-tool families, one line per tool.
fn render_tools(out: &mut String, gauges: &[ToolGauges]) {
    type Field = fn(&ToolGauges) -> String;
    let families: [(&str, &str, &str, Field); 6] = [
        (
            "tagproxy_delivery_queue_depth",
            "gauge",
            "Deliveries owed per tool: waiting, in flight or waiting to retry.",
            |g| g.queued.to_string(),
        ),
        (
            "tagproxy_delivery_oldest_pending_seconds",
            "gauge",
            "Age of the oldest delivery owed per tool.",
            |g| format!("{:.3}", g.oldest_age_s),
        ),
        (
            "tagproxy_tool_delivery_attempts_total",
            "counter",
            "Requests sent per tool.",
            |g| g.attempts.to_string(),
        ),
        (
            "tagproxy_tool_deliveries_delivered_total",
            "counter",
            "Deliveries a destination accepted, per tool.",
            |g| g.delivered.to_string(),
        ),
        (
            "tagproxy_tool_delivery_retries_total",
            "counter",
            "Attempts to be retried, per tool.",
            |g| g.retries.to_string(),
        ),
        (
            "tagproxy_tool_dead_letters_total",
            "counter",
            "Deliveries moved to the dead letters, per tool.",
            |g| g.dead_lettered.to_string(),
        ),
    ];
    for (name, kind, help, field) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for g in gauges {
            let _ = writeln!(out, "{name}{{tool=\"{}\"}} {}", g.tool, field(g));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(m: &Metrics) -> String {
        m.render()
    }

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
        m.invalid("hook", "header_value");
        m.invalid("hook", "header_value");
        assert!(text_of(&m).contains(
            "tagproxy_deliveries_invalid_total{tool=\"hook\",reason=\"header_value\"} 2\n"
        ));
    }

    #[test]
    fn payload_adjustments_are_counted_by_tool_and_reason() {
        payload_adjusted("ga4_metrics_test", "reserved_name");
        payload_adjusted("ga4_metrics_test", "reserved_name");
        payload_adjusted("ga4_metrics_test", "personal_data");
        let text = Metrics::default().render();
        assert!(text.contains("# TYPE tagproxy_payload_adjusted_total counter\n"));
        assert!(text.contains(
            "tagproxy_payload_adjusted_total{tool=\"ga4_metrics_test\",reason=\"reserved_name\"} 2\n"
        ));
        assert!(text.contains(
            "tagproxy_payload_adjusted_total{tool=\"ga4_metrics_test\",reason=\"personal_data\"} 1\n"
        ));
    }
}
