//! Batched delivery end to end (SPEC §8, §11): the real binary, the durable
//! spool, mock GA4 and Meta destinations that record what arrives and read
//! each batch the way the real service does (`Recorded::deliveries`).

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::events::metric_value;
use common::{bin, client, free_port, validate, Destination, Origin, Proxy, Recorded, Script};
use serde_json::{json, Value};

const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
const PIXEL: &str = "1234567890";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn meta_tool(base: &str) -> String {
    format!(
        "type = \"facebook-pixel\"\nendpoint = \"{base}\"\n[settings]\npixel_id = \"{PIXEL}\"\naccess_token = \"tok_abc\"\n[automated]\ntrack = true\n"
    )
}

fn ga4_tool(base: &str) -> String {
    format!(
        "type = \"google-analytics-4\"\nendpoint = \"{base}\"\n[settings]\nmeasurement_id = \"G-TEST123\"\n[automated]\ntrack = true\n"
    )
}

/// A track event named `name` with event id `id`, on one page.
fn track(name: &str, id: &str) -> Value {
    json!({
        "type": "track",
        "name": name,
        "properties": {"plan": "pro"},
        "page": {"url": "https://shop.example.com/p", "title": "Shop", "referrer": "", "encoding": "UTF-8"},
        "device": {"viewport": "1280x720", "resolution": "1920x1080", "language": "en-US", "tz_offset": 0},
        "vars": {},
        "ts": now_ms(),
        "id": id,
    })
}

/// Posts events (one browser's request, at most 50) to the collector; the
/// status, or `None` when the proxy could not be reached.
async fn post(proxy_url: &str, events: &[Value]) -> Option<u16> {
    let resp = client()
        .post(format!("{proxy_url}/_tagproxy/t"))
        .header("content-type", "application/json")
        .header("user-agent", UA)
        .body(Value::Array(events.to_vec()).to_string())
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .ok()?;
    Some(resp.status().as_u16())
}

/// `n` event ids.
fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:06}")).collect()
}

/// The event id a Meta delivery carries (`data[0].event_id`).
fn meta_id(r: &Recorded) -> String {
    r.json()["data"][0]["event_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The event id a GA4 hit carries (`ep.event_id`).
fn ga4_id(r: &Recorded) -> String {
    r.param("ep.event_id").expect("ep.event_id")
}

/// How many events a raw request carries.
fn carried(r: &Recorded) -> usize {
    match serde_json::from_slice::<Value>(&r.body) {
        Ok(body) if body["data"].is_array() => body["data"].as_array().unwrap().len(),
        _ => r.deliveries().len(),
    }
}

/// Waits until `dest` has the deliveries of every id in `want` (read with
/// `id`); the deliveries so far.
async fn wait_for_ids(
    dest: &Destination,
    want: &HashSet<String>,
    id: fn(&Recorded) -> String,
    timeout: Duration,
) -> Vec<Recorded> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = dest.requests();
        let seen: HashSet<String> = got.iter().map(id).collect();
        if want.is_subset(&seen) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} ids never arrived ({} deliveries in {} requests)",
            want.difference(&seen).count(),
            want.len(),
            got.len(),
            dest.raw_requests().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each id's count among `got`.
fn counts(got: &[Recorded], id: fn(&Recorded) -> String) -> HashMap<String, usize> {
    let mut per: HashMap<String, usize> = HashMap::new();
    for r in got {
        *per.entry(id(r)).or_default() += 1;
    }
    per
}

fn dead_letters(proxy: &Proxy) -> Vec<Value> {
    let out = Command::new(bin())
        .args(["deadletter", "list", "--json", "-c"])
        .arg(&proxy.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// One browser's 20 events reach Meta and GA4 in fewer requests than events,
/// each event exactly once and field by field valid: Meta's
/// `{"data": [...], "access_token": ...}` with up to 1,000 events
/// (<https://developers.facebook.com/docs/marketing-api/conversions-api/using-the-api#batch-requests>),
/// GA4 as gtag batches one client's hits: one `POST /g/collect`, the shared
/// parameters in the URL, one event per body line
/// (<https://support.google.com/analytics/answer/9322688>; the line format as
/// <https://github.com/amplitude/Amplitude-TypeScript/pull/903> reads it).
#[tokio::test]
async fn one_browsers_events_reach_meta_and_ga4_in_fewer_requests_each_once_and_valid() {
    let origin = Origin::page("text/html", "<html></html>").await;
    let meta = Destination::start().await;
    let ga = Destination::start().await;
    // A long linger, so the test does not depend on how fast this machine
    // fans out one request's 20 events.
    let proxy = Proxy::start_tools(
        origin.addr,
        "[delivery]\nbatch_linger_ms = 300\n",
        &[
            ("meta", meta_tool(&meta.url())),
            ("ga4", ga4_tool(&ga.url())),
        ],
    )
    .await;
    let all = ids("batched", 20);
    let events: Vec<Value> = all.iter().map(|id| track("Lead", id)).collect();
    assert_eq!(post(&proxy.url(""), &events).await, Some(200));

    let want: HashSet<String> = all.iter().cloned().collect();
    wait_for_ids(&meta, &want, meta_id, Duration::from_secs(20)).await;
    wait_for_ids(&ga, &want, ga4_id, Duration::from_secs(20)).await;
    proxy.settled().await;
    let (got_meta, got_ga) = (meta.requests(), ga.requests());
    assert!(counts(&got_meta, meta_id).values().all(|&n| n == 1));
    assert!(counts(&got_ga, ga4_id).values().all(|&n| n == 1));
    assert_eq!(got_meta.len(), 20);
    assert_eq!(got_ga.len(), 20);

    let raw_meta = meta.raw_requests();
    assert!(
        raw_meta.len() < 20 && raw_meta.iter().any(|r| carried(r) > 1),
        "Meta got {} requests for 20 events",
        raw_meta.len()
    );
    for r in &raw_meta {
        assert_eq!(r.json()["access_token"], "tok_abc");
    }
    let raw_ga = ga.raw_requests();
    assert!(
        raw_ga.len() < 20 && raw_ga.iter().any(|r| r.method == "POST" && carried(r) > 1),
        "GA4 got {} requests for 20 events",
        raw_ga.len()
    );
    for r in raw_ga.iter().filter(|r| r.method == "POST") {
        validate::ga4_batch(r).unwrap();
        assert_eq!(r.headers["user-agent"], UA, "the visitor's User-Agent");
    }
    // Every hit, read back from its batch, is a valid hit of the visitor.
    for hit in &got_ga {
        validate::ga4(hit, UA).unwrap_or_else(|e| panic!("{e}\n{}", hit.uri));
        // GA4's event naming rules (lowercase) are the adapter's.
        assert_eq!(hit.param("en").as_deref(), Some("lead"));
        assert_eq!(hit.param("ep.plan").as_deref(), Some("pro"));
    }
    let m = proxy.metrics().await;
    assert!(metric_value(&m, "tagproxy_delivery_batches_total ") >= 2.0);
    assert_eq!(
        metric_value(&m, "tagproxy_deliveries_delivered_total "),
        40.0
    );
}

/// `batch_max_events` caps a batch below Meta's 1,000: ten events arrive in
/// batches of at most three, all of them.
#[tokio::test]
async fn a_configured_limit_caps_every_batch() {
    let origin = Origin::page("text/html", "<html></html>").await;
    let meta = Destination::start().await;
    let proxy = Proxy::start_tools(
        origin.addr,
        "[delivery]\nbatch_linger_ms = 300\nbatch_max_events = 3\n",
        &[("meta", meta_tool(&meta.url()))],
    )
    .await;
    let all = ids("capped", 10);
    let events: Vec<Value> = all.iter().map(|id| track("Lead", id)).collect();
    assert_eq!(post(&proxy.url(""), &events).await, Some(200));
    let want: HashSet<String> = all.iter().cloned().collect();
    wait_for_ids(&meta, &want, meta_id, Duration::from_secs(20)).await;
    proxy.settled().await;
    let raw = meta.raw_requests();
    assert!(
        raw.iter().all(|r| carried(r) <= 3),
        "{:?}",
        raw.iter().map(carried).collect::<Vec<_>>()
    );
    assert!(raw.iter().any(|r| carried(r) == 3));
    assert_eq!(meta.requests().len(), 10);
}

/// Meta answers `400` for the whole batch when one event is invalid ("if any
/// event you send in a batch is invalid, we reject the entire batch",
/// <https://developers.facebook.com/docs/marketing-api/conversions-api/using-the-api#batch-requests>),
/// here an `event_time` too old. The batch is split until the two refused
/// events are found: only they go to the dead letters, with Meta's message;
/// the 28 others are delivered, each once.
#[tokio::test]
async fn a_batch_refused_for_one_event_is_split_until_only_the_bad_events_are_dead_lettered() {
    const META_ERROR: &str = r#"{"error":{"message":"Invalid parameter","type":"OAuthException","code":100,"error_subcode":2804003,"is_transient":false,"error_user_title":"Event Timestamp Too Old","error_user_msg":"The timestamp for this event is older than 7 days."}}"#;
    fn refuse_marked(r: &Recorded) -> Option<(u16, String)> {
        let marked = r
            .deliveries()
            .iter()
            .any(|d| d.json()["data"][0]["event_name"] == "Stale");
        marked.then(|| (400, META_ERROR.to_string()))
    }
    let origin = Origin::page("text/html", "<html></html>").await;
    let meta = Destination::start().await;
    meta.set_refuse(refuse_marked);
    let proxy = Proxy::start_tools(
        origin.addr,
        "[delivery]\nbatch_linger_ms = 300\n",
        &[("meta", meta_tool(&meta.url()))],
    )
    .await;
    let all = ids("poison", 30);
    let bad: HashSet<String> = [all[7].clone(), all[21].clone()].into();
    let events: Vec<Value> = all
        .iter()
        .map(|id| track(if bad.contains(id) { "Stale" } else { "Lead" }, id))
        .collect();
    assert_eq!(post(&proxy.url(""), &events).await, Some(200));
    let deadline = Instant::now() + Duration::from_secs(20);
    while dead_letters(&proxy).len() < 2 {
        assert!(Instant::now() < deadline, "no dead letters");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.settled().await;

    // Delivered: what arrived in a request the destination accepted.
    let raw = meta.raw_requests();
    let accepted: Vec<Recorded> = raw
        .iter()
        .filter(|r| refuse_marked(r).is_none())
        .flat_map(Recorded::deliveries)
        .collect();
    let per = counts(&accepted, meta_id);
    let good: HashSet<String> = all
        .iter()
        .filter(|id| !bad.contains(*id))
        .cloned()
        .collect();
    assert_eq!(per.keys().cloned().collect::<HashSet<_>>(), good);
    assert!(
        per.values().all(|&n| n == 1),
        "each good event once: {per:?}"
    );
    assert!(
        raw.iter()
            .any(|r| refuse_marked(r).is_none() && carried(r) > 1),
        "good events went out batched"
    );

    let letters = dead_letters(&proxy);
    assert_eq!(letters.len(), 2, "{letters:#?}");
    let dead: HashSet<String> = letters
        .iter()
        .map(|l| l["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(dead, bad);
    for l in &letters {
        assert_eq!(l["status"], 400);
        assert!(
            l["response"]
                .as_str()
                .unwrap()
                .contains("Event Timestamp Too Old"),
            "the destination's message: {l:#}"
        );
        // The dead letter keeps the event's own request, never the batch.
        // `deadletter list --json` prints a UTF-8 body as text.
        let body: Value =
            serde_json::from_str(l["delivery"]["payload"]["Http"]["body"].as_str().unwrap())
                .unwrap();
        assert_eq!(body["data"].as_array().unwrap().len(), 1);
        assert_eq!(body["data"][0]["event_id"], l["event_id"]);
    }
    let m = proxy.metrics().await;
    assert_eq!(
        metric_value(&m, "tagproxy_deliveries_delivered_total "),
        28.0
    );
    assert_eq!(metric_value(&m, "tagproxy_deliveries_failed_total "), 2.0);
}

/// 1,200 events accepted while Meta is down, `kill -9`, restart: every one
/// arrives once Meta is back, exactly once (nothing was acknowledged before
/// a `2xx`), in batches of at most 1,000.
#[tokio::test]
async fn kill_9_during_an_outage_loses_no_batched_event_and_batches_stay_within_1000() {
    let origin = Origin::page("text/html", "<html></html>").await;
    let dest_addr = format!("127.0.0.1:{}", free_port());
    let mut proxy = Proxy::start_tools(
        origin.addr,
        "[delivery]\nretry_base_ms = 100\nretry_max_ms = 1000\nmax_attempts = 1000\nbatch_linger_ms = 50\n",
        &[("meta", meta_tool(&format!("http://{dest_addr}")))],
    )
    .await;
    let all = ids("outage", 1200);
    for chunk in all.chunks(50) {
        let events: Vec<Value> = chunk.iter().map(|id| track("Lead", id)).collect();
        assert_eq!(post(&proxy.url(""), &events).await, Some(200));
    }
    proxy.kill9();
    proxy.restart().await;
    let recovered = metric_value(&proxy.metrics().await, "tagproxy_spool_recovered_total ");
    assert_eq!(recovered, 1200.0, "all 1,200 were in the spool");

    let meta = Destination::with_script_at(&dest_addr, Script::default()).await;
    let want: HashSet<String> = all.iter().cloned().collect();
    wait_for_ids(&meta, &want, meta_id, Duration::from_secs(60)).await;
    proxy.settled().await;
    let got = meta.requests();
    let per = counts(&got, meta_id);
    assert_eq!(per.len(), 1200);
    assert!(per.values().all(|&n| n == 1), "repeated deliveries");
    let raw = meta.raw_requests();
    assert!(raw.iter().all(|r| carried(r) <= 1000));
    assert!(
        raw.len() < 1200 && raw.iter().any(|r| carried(r) > 50),
        "the backlog went out batched: {} requests",
        raw.len()
    );
}
