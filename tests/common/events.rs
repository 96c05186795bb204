//! Posting events to the collector and reading what destinations got, for
//! the delivery tests (spool and NATS).

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use super::{client, Recorded};

pub const PAGE: &str = "https://shop.example.com/";
pub const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

/// An `http` tool posting every pageview to `base/hook`.
pub fn hook(base: &str) -> String {
    format!("type = \"http\"\n[settings]\nurl = \"{base}/hook\"\n[automated]\npageview = true\n")
}

pub fn pageview(id: &str) -> Value {
    json!({
        "type": "pageview",
        "properties": {},
        "page": {"url": PAGE, "title": "Shop", "referrer": "", "encoding": "UTF-8"},
        "device": {"viewport": "1280x720", "resolution": "1920x1080", "language": "en-US", "tz_offset": 0},
        "vars": {},
        "ts": 1_732_450_000_000u64,
        "id": id,
    })
}

/// Posts one batch of pageviews; the status and `Retry-After`, or `None`
/// when the proxy could not be reached.
pub async fn post(proxy_url: &str, ids: &[String]) -> Option<(u16, Option<String>)> {
    let batch: Vec<Value> = ids.iter().map(|id| pageview(id)).collect();
    let resp = client()
        .post(format!("{proxy_url}/_tagproxy/t"))
        .header("content-type", "application/json")
        .header("user-agent", UA)
        .body(Value::Array(batch).to_string())
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .ok()?;
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    Some((resp.status().as_u16(), retry_after))
}

/// Like `post`, the status only.
pub async fn post_status(proxy_url: &str, ids: &[String]) -> Option<u16> {
    post(proxy_url, ids).await.map(|(status, _)| status)
}

/// The event id a delivery carried.
pub fn key(r: &Recorded) -> String {
    r.headers
        .get("idempotency-key")
        .expect("every delivery carries Idempotency-Key")
        .to_str()
        .unwrap()
        .to_string()
}

/// The distinct event ids among `requests`.
pub fn keys(requests: &[Recorded]) -> HashSet<String> {
    requests.iter().map(key).collect()
}

/// `n` valid client event ids.
pub fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:06}")).collect()
}

/// A metric's value (`line_start` up to the value), or `None`.
pub fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .map(|v| v.trim().parse().unwrap())
}

/// A metric's value; panics (showing all metrics) when it is missing.
pub fn metric_value(text: &str, line_start: &str) -> f64 {
    metric(text, line_start).unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
}
