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
    /// `notAfter` of the HTTPS listener's certificate in service, Unix
    /// seconds; 0 = no TLS listener (or no certificate yet).
    pub tls_cert_not_after: AtomicU64,
    /// Per-tool queue gauges and counters, from the delivery engine.
    tool_gauges: std::sync::OnceLock<GaugeSource>,
    /// The trail of the last events (SPEC §10): kept here because every
    /// part that adds to it (collector, delivery) already holds `Metrics`.
    pub trail: crate::trail::Trail,
    /// Events taken for delivery (neither a bot's nor a duplicate).
    pub events_accepted: AtomicU64,
    /// Events that reached no tool, by reason.
    events_dropped: DashMap<String, AtomicU64>,
    /// (event, tool) pairs left out, by tool and reason.
    tool_events_dropped: DashMap<(String, String), AtomicU64>,
    /// Deliveries ended, by tool and outcome (`delivered`,
    /// `dead_lettered`, `invalid`).
    deliveries_ended: DashMap<(String, &'static str), AtomicU64>,
    /// Seconds per attempt, per tool.
    delivery_latency: DashMap<String, Histogram>,
    /// Attempts a delivery took to end, per tool.
    delivery_attempts_hist: DashMap<String, Histogram>,
}

/// Upper bounds (seconds) of the latency histograms' buckets.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds of the attempts histogram's buckets.
pub const ATTEMPT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0];

/// A Prometheus histogram: cumulative buckets by upper bound, a sum and a
/// count.
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last is `+Inf`.
    counts: Vec<AtomicU64>,
    /// The sum, in millionths.
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((v * 1e6) as u64, Ordering::Relaxed);
    }

    /// The `_bucket`, `_sum` and `_count` lines; `labels` is `k="v",…` or "".
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut total = 0;
        for (i, c) in self.counts.iter().enumerate() {
            total += c.load(Ordering::Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {total}");
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {total}");
    }
}

/// What the proxy itself counts (it holds no `Metrics`; one per process).
struct ProxyCounters {
    /// Responses to proxied requests by status class (1xx … 5xx).
    classes: [AtomicU64; 5],
    /// Seconds until the origin's response headers.
    upstream: Histogram,
    /// HTML injection outcomes.
    injections: DashMap<&'static str, AtomicU64>,
}

static PROXY: std::sync::LazyLock<ProxyCounters> = std::sync::LazyLock::new(|| ProxyCounters {
    classes: Default::default(),
    upstream: Histogram::new(LATENCY_BUCKETS),
    injections: DashMap::new(),
});

/// Counts a response to a proxied request (`tagproxy_proxy_requests_total`).
pub fn proxy_response(status: u16) {
    let class = (status / 100).clamp(1, 5) as usize - 1;
    PROXY.classes[class].fetch_add(1, Ordering::Relaxed);
}

/// Time until the origin's response headers (`tagproxy_upstream_latency_seconds`).
pub fn upstream_latency(d: std::time::Duration) {
    PROXY.upstream.observe(d.as_secs_f64());
}

/// Counts what happened to an HTML response (`tagproxy_injections_total`):
/// `injected`, `not_html`, `bot`, `no_place`, `already_present`,
/// `skipped` (`no-transform`, a range, a charset or coding it cannot edit).
pub fn injection(outcome: &'static str) {
    PROXY
        .injections
        .entry(outcome)
        .or_default()
        .fetch_add(1, Ordering::Relaxed);
}

/// Observes `v` in `tool`'s histogram, made with `bounds` the first time.
/// Looked up first under the shard's read lock and without copying the
/// tool id: this runs for every delivery attempt.
fn observe(map: &DashMap<String, Histogram>, tool: &str, bounds: &'static [f64], v: f64) {
    if let Some(h) = map.get(tool) {
        return h.observe(v);
    }
    map.entry(tool.to_string())
        .or_insert_with(|| Histogram::new(bounds))
        .observe(v);
}

fn bump<K: std::hash::Hash + Eq>(map: &DashMap<K, AtomicU64>, key: K) {
    map.entry(key).or_default().fetch_add(1, Ordering::Relaxed);
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

/// How many values tool `tool` has had adjusted for `reason` so far (for
/// tests, which give each case its own tool id).
#[cfg(test)]
pub(crate) fn adjusted(tool: &str, reason: &'static str) -> u64 {
    ADJUSTED
        .get(&(tool.to_string(), reason))
        .map_or(0, |c| c.load(Ordering::Relaxed))
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

    /// One delivery attempt ended (called by the delivery engine once per
    /// attempt, whatever the backend): it goes to the trail.
    pub fn attempt_done(
        &self,
        d: &crate::tools::Delivery,
        attempt: u32,
        result: &crate::delivery::Attempt,
        latency: std::time::Duration,
        next: &crate::delivery::Next,
    ) {
        use crate::delivery::{Next, Verdict};
        use crate::trail::AttemptState;
        let state = match (&result.verdict, next) {
            (Verdict::Done, _) => AttemptState::Delivered,
            (_, Next::RetryIn(_)) => AttemptState::Retrying,
            (_, Next::Settled) => AttemptState::DeadLettered,
        };
        let error = attempt_error(d, result);
        self.trail
            .attempt(d, attempt, result.status, latency, error, state);
        observe(
            &self.delivery_latency,
            &d.tool,
            LATENCY_BUCKETS,
            latency.as_secs_f64(),
        );
        let ended = match state {
            AttemptState::Delivered => "delivered",
            AttemptState::DeadLettered => "dead_lettered",
            AttemptState::Retrying => return,
        };
        bump(&self.deliveries_ended, (d.tool.clone(), ended));
        observe(
            &self.delivery_attempts_hist,
            &d.tool,
            ATTEMPT_BUCKETS,
            attempt as f64,
        );
    }

    /// Counts one event's record as it arrived: accepted or dropped (by
    /// reason), the tools it did not reach (by tool and reason), and its
    /// requests refused at once (`invalid`).
    pub fn event_recorded(&self, r: &crate::trail::Record) {
        if !matches!(r.dropped.as_deref(), Some("bot" | "duplicate")) {
            Metrics::add(&self.events_accepted, 1);
        }
        if let Some(reason) = &r.dropped {
            bump(&self.events_dropped, reason.clone());
        }
        for a in &r.actions {
            if let Some(reason) = &a.blocked {
                bump(&self.tool_events_dropped, (a.tool.clone(), reason.clone()));
            }
        }
        for d in r.deliveries.iter().filter(|d| d.error.is_some()) {
            bump(&self.deliveries_ended, (d.tool.clone(), "invalid"));
        }
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
        let not_after = get(&self.tls_cert_not_after);
        if not_after != 0 {
            let _ = writeln!(
                out,
                "# HELP tagproxy_tls_cert_not_after_seconds Expiry (notAfter) of the HTTPS certificate in service, Unix seconds.\n# TYPE tagproxy_tls_cert_not_after_seconds gauge\ntagproxy_tls_cert_not_after_seconds {not_after}"
            );
        }
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
        crate::bots::insights::Insights::global().render(&mut out);
        crate::bots::lists::render(&mut out);
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
        self.render_flow(&mut out);
        out
    }

    /// The event, delivery and proxy families of issue 13.
    fn render_flow(&self, out: &mut String) {
        let help = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        help(
            out,
            "tagproxy_events_accepted_total",
            "counter",
            "Events taken for delivery: neither a bot's nor a duplicate.",
        );
        let _ = writeln!(
            out,
            "tagproxy_events_accepted_total {}",
            self.events_accepted.load(Ordering::Relaxed)
        );
        help(out, "tagproxy_events_dropped_total", "counter", "Events that reached no tool, by reason (bot, duplicate, consent, blocking_trigger, disabled, invalid).");
        for (reason, n) in sorted(&self.events_dropped) {
            let _ = writeln!(
                out,
                "tagproxy_events_dropped_total{{reason=\"{reason}\"}} {n}"
            );
        }
        help(out, "tagproxy_tool_events_dropped_total", "counter", "Events a tool did not get, by tool and reason (consent, blocking_trigger, bot, disabled, invalid).");
        for ((tool, reason), n) in sorted(&self.tool_events_dropped) {
            let _ = writeln!(
                out,
                "tagproxy_tool_events_dropped_total{{tool=\"{tool}\",reason=\"{reason}\"}} {n}"
            );
        }
        help(
            out,
            "tagproxy_deliveries_total",
            "counter",
            "Deliveries ended, by tool and outcome (delivered, dead_lettered, invalid).",
        );
        for ((tool, outcome), n) in sorted(&self.deliveries_ended) {
            let _ = writeln!(
                out,
                "tagproxy_deliveries_total{{tool=\"{tool}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        for (name, what, map) in [
            (
                "tagproxy_delivery_latency_seconds",
                "Seconds per delivery attempt, by tool.",
                &self.delivery_latency,
            ),
            (
                "tagproxy_delivery_attempts",
                "Attempts a delivery took to end (delivered or dead-lettered), by tool.",
                &self.delivery_attempts_hist,
            ),
        ] {
            help(out, name, "histogram", what);
            let mut tools: Vec<String> = map.iter().map(|e| e.key().clone()).collect();
            tools.sort();
            for tool in tools {
                if let Some(h) = map.get(&tool) {
                    h.render(out, name, &format!("tool=\"{tool}\""));
                }
            }
        }
        help(
            out,
            "tagproxy_proxy_requests_total",
            "counter",
            "Responses to requests proxied to the origin, by status class.",
        );
        for (i, c) in PROXY.classes.iter().enumerate() {
            let _ = writeln!(
                out,
                "tagproxy_proxy_requests_total{{class=\"{}xx\"}} {}",
                i + 1,
                c.load(Ordering::Relaxed)
            );
        }
        help(
            out,
            "tagproxy_upstream_latency_seconds",
            "histogram",
            "Seconds until the origin's response headers.",
        );
        PROXY
            .upstream
            .render(out, "tagproxy_upstream_latency_seconds", "");
        help(out, "tagproxy_injections_total", "counter", "HTML responses by what injection did (injected, not_html, bot, no_place, already_present, skipped).");
        for (outcome, n) in sorted(&PROXY.injections) {
            let _ = writeln!(
                out,
                "tagproxy_injections_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
    }
}

/// A counter map's entries, sorted by key.
fn sorted<K: Clone + Ord + std::hash::Hash + Eq>(map: &DashMap<K, AtomicU64>) -> Vec<(K, u64)> {
    let mut v: Vec<(K, u64)> = map
        .iter()
        .map(|e| (e.key().clone(), e.value().load(Ordering::Relaxed)))
        .collect();
    v.sort();
    v
}

/// What went wrong with an attempt, in the destination's own words when it
/// said (Meta's `error.message`…), else the failure (`timeout`,
/// `connection error: …`, `HTTP 503`); the delivery's credentials
/// redacted. `None` when it was delivered.
pub fn attempt_error(
    d: &crate::tools::Delivery,
    result: &crate::delivery::Attempt,
) -> Option<String> {
    use crate::delivery::Verdict;
    let fallback = match &result.verdict {
        Verdict::Done => return None,
        Verdict::Retry { why, .. } => why.clone(),
        Verdict::Reject(why) => why.clone(),
    };
    let text = crate::trail::destination_error(&result.response).unwrap_or(fallback);
    Some(crate::trail::redact_secrets(&text, &d.secrets))
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
