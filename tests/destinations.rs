//! The analytics and ads adapters of issue 15 end to end: events posted to
//! the real binary's collector the way the browser script sends them, and
//! what a mock of each service receives, field by field. Each mock checks
//! every request the way its service documents it (auth header, required
//! fields, value types, hashing) and answers with the service's own success
//! and error bodies; a request the real service would refuse fails the test.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Request;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::*;

const CHROME_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const PAGE: &str = "https://shop.example.com/blog/post?utm_source=news";
const VISITOR_IP: &str = "203.0.113.7";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------
// A mock service.

/// What a service says to one request: status and body.
type Answer = (u16, String);

/// Checks one request as the service would; `Err` is the service's own
/// refusal (status and body) with a description for the test's failure.
type Check = fn(&Recorded) -> Result<(), (Answer, String)>;

/// A mock of one real service on 127.0.0.1: records every request, checks
/// it with `check`, and answers with the scripted answers in order (the
/// last repeats).
struct Mock {
    addr: SocketAddr,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    answers: Arc<Mutex<Vec<Answer>>>,
    violations: Arc<Mutex<Vec<String>>>,
    /// A valid request this answers itself (a batch holding an event the
    /// service refuses), before the scripted answers.
    refuse: Arc<Mutex<Option<Refuse>>>,
}

/// A refusal of a valid request: `Some` answer for one the service refuses.
type Refuse = fn(&Recorded) -> Option<Answer>;

impl Mock {
    async fn start(check: Check, ok: Answer) -> Mock {
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(vec![ok]));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let refuse: Arc<Mutex<Option<Refuse>>> = Arc::new(Mutex::new(None));
        let (rec, ans, bad, no) = (
            recorded.clone(),
            answers.clone(),
            violations.clone(),
            refuse.clone(),
        );
        let origin = Origin::start(move |req: Request<Incoming>| {
            let (rec, ans, bad, no) = (rec.clone(), ans.clone(), bad.clone(), no.clone());
            async move {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let r = Recorded {
                    at: Instant::now(),
                    method: parts.method.to_string(),
                    uri: parts
                        .uri
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    headers: parts.headers,
                    body,
                };
                let checked = check(&r);
                let n = {
                    let mut all = rec.lock().unwrap();
                    all.push(r.clone());
                    all.len()
                };
                let (status, body) = match checked {
                    Err((answer, why)) => {
                        bad.lock().unwrap().push(format!(
                            "{} {}: {why}\nbody: {}",
                            r.method,
                            r.uri,
                            String::from_utf8_lossy(&r.body)
                        ));
                        answer
                    }
                    Ok(()) if no.lock().unwrap().is_some_and(|f| f(&r).is_some()) => {
                        no.lock().unwrap().unwrap()(&r).unwrap()
                    }
                    Ok(()) => {
                        let a = ans.lock().unwrap();
                        a.get(n - 1).or(a.last()).cloned().unwrap()
                    }
                };
                respond(status, &[("content-type", "application/json")], body)
            }
        })
        .await;
        Mock {
            addr: origin.addr,
            recorded,
            answers,
            violations,
            refuse,
        }
    }

    /// Refuses the valid requests `f` picks, with its answer.
    fn set_refuse(&self, f: Refuse) {
        *self.refuse.lock().unwrap() = Some(f);
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers, in order, from the next request on (the last repeats).
    fn script(&self, answers: &[(u16, &str)]) {
        let done = self.recorded.lock().unwrap().len();
        let mut a = self.answers.lock().unwrap();
        let ok = a.last().cloned().unwrap();
        a.clear();
        a.extend(std::iter::repeat_n(ok, done));
        a.extend(answers.iter().map(|(s, b)| (*s, b.to_string())));
    }

    fn assert_valid(&self) {
        let bad = self.violations.lock().unwrap().clone();
        assert!(
            bad.is_empty(),
            "the mock got request(s) the real service would refuse:\n{}",
            bad.join("\n---\n")
        );
    }

    async fn wait_for(&self, n: usize) -> Vec<Recorded> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.assert_valid();
            let got = self.recorded.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "expected {n} requests: {got:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.assert_valid();
        }
    }
}

fn header<'r>(r: &'r Recorded, name: &str) -> &'r str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// No personal value of the test events in clear, anywhere in the request.
fn no_clear_personal_data(r: &Recorded) -> Result<(), String> {
    let text = String::from_utf8_lossy(&r.body).to_lowercase();
    for clear in [
        "jane@example.com",
        "jane.doe@example.com",
        "650 555",
        "6505550134",
    ] {
        if text.contains(clear) {
            return Err(format!("personal data in clear: {clear}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The proxy and the events.

/// The proxy (fast retries) with one tool file; secrets in `env`.
async fn start(tool: &str, text: String, env: &[(&str, &str)]) -> Proxy {
    start_with(tool, text, env, "").await
}

/// [`start`] with more of `tagproxy.toml` (a `[consent]` table).
async fn start_with(tool: &str, text: String, env: &[(&str, &str)], extra: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    std::fs::write(dir.path().join("tools").join(format!("{tool}.toml")), text).unwrap();
    let config = format!(
        "[server]\n{LISTEN_ANY}\nupstream = \"http://127.0.0.1:9\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n[variables]\nkey = {{ secret = \"KEY\" }}\n[delivery]\nretry_base_ms = 50\nretry_max_ms = 200\nmax_attempts = 3\n{extra}"
    );
    let path = dir.path().join("tagproxy.toml");
    std::fs::write(&path, config).unwrap();
    Proxy::spawn(dir, path, env).await
}

/// An event as `zaraz.js` builds it.
fn event(kind: &str, name: Option<&str>, properties: Value, id: &str) -> Value {
    let mut e = json!({
        "type": kind,
        "properties": properties,
        "page": {
            "url": PAGE,
            "title": "Blue Mug – Demo Shop",
            "referrer": "https://www.google.com/",
            "encoding": "UTF-8",
        },
        "device": {
            "viewport": "1280x720",
            "resolution": "1920x1080",
            "language": "en-US",
            "tz_offset": -60,
        },
        "vars": {},
        "ts": now_ms(),
        "id": id,
    });
    if let Some(name) = name {
        e["name"] = json!(name);
    }
    e
}

/// POSTs one event to the collector as the script's `fetch` does, from the
/// visitor's IP (a trusted proxy's `X-Forwarded-For`), with `cookie`.
async fn post(proxy: &Proxy, ev: Value, cookie: &str) -> Value {
    let mut req = client()
        .post(proxy.url("/_tagproxy/t"))
        .header("content-type", "application/json")
        .header("user-agent", CHROME_UA)
        .header("x-forwarded-for", VISITOR_IP)
        .header("origin", "https://shop.example.com")
        .body(json!([ev]).to_string());
    if !cookie.is_empty() {
        req = req.header("cookie", cookie);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let cookies: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let mut body: Value = resp.json().await.unwrap();
    body["set-cookie"] = json!(cookies);
    body
}

/// Zaraz's `Order Completed` example with two products.
fn order() -> Value {
    json!({
        "checkout_id": "CHK-7",
        "order_id": "ORD-2002",
        "affiliation": "Demo Shop",
        "total": 30,
        "revenue": 25,
        "shipping": 3,
        "tax": 2,
        "discount": 5,
        "coupon": "winter-sale",
        "currency": "usd",
        "products": [
            {"product_id": "999666321", "sku": "8251511", "name": "Boy's shoes", "price": 10, "quantity": 2, "category": "shoes"},
            {"product_id": "742566131", "sku": "7251567", "name": "Blank T-shirt", "price": 5, "quantity": "1", "category": "T-shirts"},
        ],
    })
}

/// Track properties with personal data in them.
fn signup_props() -> Value {
    json!({"plan": "pro", "seats": 3, "trial": true, "email": "Jane@Example.com", "phone": "+1 650 555 0134"})
}

/// `tagproxy check` on one tool file: exit code and stderr.
fn check(tool: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    let tool_path = dir.path().join("tools").join("t.toml");
    std::fs::write(&tool_path, tool).unwrap();
    let config = dir.path().join("tagproxy.toml");
    std::fs::write(&config, "").unwrap();
    let out = Command::new(bin())
        .args(["check", "-c"])
        .arg(&config)
        .env_remove("TAGPROXY_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stderr).unwrap(),
        tool_path.to_str().unwrap().to_string(),
    )
}

fn assert_check_fails(tool: &str, want: &str) {
    let (code, err, path) = check(tool);
    assert_eq!(code, 1, "{err}");
    let want = format!("{path}:{want}");
    assert!(
        err.lines().any(|l| l == want),
        "want the line {want:?}\ngot:\n{err}"
    );
}

/// The log line of a delivery's last word (`delivered`, `rejected`…), once
/// written, as JSON.
async fn log_line(proxy: &Proxy, message_start: &str, event_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = proxy.logs();
        let found = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| {
                l["event_id"] == event_id
                    && l["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with(message_start))
            });
        if let Some(l) = found {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no {message_start:?} line for {event_id}:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_iso8601(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && s.ends_with('Z')
}

// ---------------------------------------------------------------------------
// Segment: HTTP Tracking API.
// https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/
// ("Authentication": Basic with the write key as user name and an empty
// password; "Batch": up to 500 KB per request and 32 KB per message;
// "Errors": 200 for every accepted request, 400 with the reason for a
// payload too large or not JSON; every message needs `userId` or
// `anonymousId`, a track its `event`.)

const SEGMENT_KEY: &str = "seg-write-key-9f1";

fn segment_check(r: &Recorded) -> Result<(), (Answer, String)> {
    let bad = |why: String| {
        (
            (400, json!({"success": false, "message": why}).to_string()),
            why,
        )
    };
    if r.method != "POST" || r.path() != "/v1/batch" {
        return Err(bad(format!("not POST /v1/batch: {} {}", r.method, r.uri)));
    }
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{SEGMENT_KEY}:"))
    );
    if header(r, "authorization") != want {
        // Segment answers a wrong write key 401.
        return Err((
            (401, "{}".into()),
            format!("authorization {:?}", header(r, "authorization")),
        ));
    }
    if !header(r, "content-type").starts_with("application/json") {
        return Err(bad("content-type must be application/json".into()));
    }
    if r.body.len() > 500 * 1024 {
        return Err(bad("batch over 500 KB".into()));
    }
    let body: Value = serde_json::from_slice(&r.body).map_err(|e| bad(e.to_string()))?;
    let batch = body["batch"]
        .as_array()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| bad("no batch".into()))?;
    for m in batch {
        if m.to_string().len() > 32 * 1024 {
            return Err(bad("message over 32 KB".into()));
        }
        let ty = m["type"].as_str().unwrap_or("");
        if !["page", "track", "identify", "screen", "group", "alias"].contains(&ty) {
            return Err(bad(format!("type {ty:?}")));
        }
        if !m["userId"].is_string() && !m["anonymousId"].is_string() {
            return Err(bad("neither userId nor anonymousId".into()));
        }
        if !m["messageId"].is_string() {
            return Err(bad("no messageId".into()));
        }
        if ty == "track" && m["event"].as_str().is_none_or(str::is_empty) {
            return Err(bad("a track without event".into()));
        }
        if !m["timestamp"].as_str().is_some_and(is_iso8601) {
            return Err(bad("timestamp not ISO 8601".into()));
        }
        for k in ["properties", "context"] {
            if !m[k].is_object() {
                return Err(bad(format!("{k} not an object")));
            }
        }
    }
    no_clear_personal_data(r).map_err(bad)
}

async fn segment() -> (Mock, Proxy) {
    segment_with("").await
}

/// [`segment`] with more `[delivery]` settings.
async fn segment_with(extra: &str) -> (Mock, Proxy) {
    let mock = Mock::start(segment_check, (200, json!({"success": true}).to_string())).await;
    let tool = format!(
        "type = \"segment\"\nendpoint = \"{}\"\n[settings]\nwrite_key = \"{{{{ $key }}}}\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        mock.url()
    );
    let proxy = start_with(
        "segment",
        tool,
        &[("TAGPROXY_SECRET_KEY", SEGMENT_KEY)],
        extra,
    )
    .await;
    (mock, proxy)
}

fn segment_message(r: &Recorded) -> Value {
    let body = r.json();
    assert_eq!(body["batch"].as_array().unwrap().len(), 1);
    assert!(body["sentAt"].as_str().is_some_and(is_iso8601));
    body["batch"][0].clone()
}

#[tokio::test]
async fn segment_pageview_is_a_page_call_with_context() {
    let (mock, proxy) = segment().await;
    let id = "evt_seg_page_0001";
    post(
        &proxy,
        event("pageview", None, json!({}), id),
        "ajs_anonymous_id=%22anon-42%22",
    )
    .await;
    let m = segment_message(&mock.wait_for(1).await[0]);
    assert_eq!(m["type"], "page");
    assert_eq!(m["messageId"], id);
    // analytics.js's own id, so both count one visitor.
    assert_eq!(m["anonymousId"], "anon-42");
    assert_eq!(m["name"], "Blue Mug – Demo Shop");
    let c = &m["context"];
    assert_eq!(c["ip"], VISITOR_IP);
    assert_eq!(c["userAgent"], CHROME_UA);
    assert_eq!(c["locale"], "en-US");
    assert_eq!(c["screen"], json!({"width": 1920, "height": 1080}));
    assert_eq!(c["library"]["name"], "tagproxy");
    let page = json!({
        "url": PAGE,
        "title": "Blue Mug – Demo Shop",
        "referrer": "https://www.google.com/",
        "path": "/blog/post",
        "search": "?utm_source=news",
    });
    assert_eq!(c["page"], page);
    assert_eq!(m["properties"], page);
}

#[tokio::test]
async fn segment_track_carries_properties_with_personal_data_hashed() {
    let (mock, proxy) = segment().await;
    let id = "evt_seg_track_001";
    let mut props = signup_props();
    props["user_id"] = json!("u-77");
    post(&proxy, event("track", Some("Signed Up"), props, id), "").await;
    let m = segment_message(&mock.wait_for(1).await[0]);
    assert_eq!(m["type"], "track");
    assert_eq!(m["event"], "Signed Up");
    assert_eq!(m["messageId"], id);
    assert_eq!(m["userId"], "u-77");
    // No analytics.js cookie: tagproxy's own visitor id.
    assert!(m["anonymousId"].as_str().is_some_and(|a| a.len() > 10));
    assert_eq!(
        m["properties"],
        json!({
            "plan": "pro", "seats": 3, "trial": true,
            "email": sha256_hex("jane@example.com"),
            "phone": sha256_hex("+1 650 555 0134"),
        })
    );
}

#[tokio::test]
async fn segment_order_completed_keeps_the_ecommerce_spec_field_by_field() {
    let (mock, proxy) = segment().await;
    let id = "evt_seg_order_001";
    post(
        &proxy,
        event("ecommerce", Some("Order Completed"), order(), id),
        "",
    )
    .await;
    let m = segment_message(&mock.wait_for(1).await[0]);
    // https://segment.com/docs/connections/spec/ecommerce/v2/#order-completed:
    // Zaraz's names are the spec's, so nothing is renamed.
    assert_eq!(m["type"], "track");
    assert_eq!(m["event"], "Order Completed");
    let p = &m["properties"];
    for (k, v) in order().as_object().unwrap() {
        if k != "products" {
            assert_eq!(&p[k], v, "properties.{k}");
        }
    }
    let products = p["products"].as_array().unwrap();
    assert_eq!(products.len(), 2);
    assert_eq!(products[0]["product_id"], "999666321");
    assert_eq!(products[0]["sku"], "8251511");
    assert_eq!(products[0]["name"], "Boy's shoes");
    assert_eq!(products[0]["price"], 10);
    assert_eq!(products[0]["quantity"], 2);
    assert_eq!(products[0]["category"], "shoes");
    assert_eq!(products[1]["product_id"], "742566131");
    assert_eq!(products[1]["sku"], "7251567");
    assert_eq!(products[1]["price"], 5);
    assert_eq!(products[1]["quantity"], "1");
}

#[tokio::test]
async fn segment_400_goes_to_the_dead_letters_with_segments_message() {
    let (mock, proxy) = segment().await;
    mock.script(&[(
        400,
        r#"{"success":false,"message":"Request entity too large: batch exceeds 500KB"}"#,
    )]);
    let id = "evt_seg_reject_01";
    post(&proxy, event("track", Some("Signed Up"), json!({}), id), "").await;
    let line = log_line(&proxy, "delivery rejected", id).await;
    assert!(
        line["reason"]
            .as_str()
            .unwrap()
            .contains("Segment: Request entity too large"),
        "{line}"
    );
    proxy.settled().await;
    assert_eq!(mock.wait_for(1).await.len(), 1, "a 400 is not retried");
}

#[test]
fn segment_check_names_the_missing_write_key() {
    assert_check_fails(
        "type = \"segment\"\n[settings]\n[automated]\npageview = true\n",
        "2:1: segment needs settings.write_key",
    );
}

// ---------------------------------------------------------------------------
// Amplitude: HTTP V2 API.
// https://amplitude.com/docs/apis/analytics/http-v2 ("Upload request":
// `api_key` and `events` required; each event needs `event_type` and a
// `user_id` or `device_id` of at least 5 characters; `time` in ms;
// `insert_id` for deduplication; revenue fields `revenue`, `revenueType`,
// `productId`, `quantity`, `price`. "Response format": 200 with
// `events_ingested`, 400 with `error` and `missing_field` /
// `events_with_invalid_fields`, 429 "Too many requests for some devices and
// users".)

const AMPLITUDE_KEY: &str = "amp-api-key-5e2";

fn amplitude_check(r: &Recorded) -> Result<(), (Answer, String)> {
    let bad = |error: &str, detail: Value| {
        let mut body = json!({"code": 400, "error": error});
        if let Value::Object(d) = &detail {
            for (k, v) in d {
                body[k] = v.clone();
            }
        }
        ((400, body.to_string()), format!("{error} {detail}"))
    };
    if r.method != "POST" || r.path() != "/2/httpapi" {
        return Err(bad("not POST /2/httpapi", json!(r.uri)));
    }
    if !header(r, "content-type").starts_with("application/json") {
        return Err(bad("content-type must be application/json", Value::Null));
    }
    let body: Value = serde_json::from_slice(&r.body)
        .map_err(|e| bad("Invalid JSON request body", json!(e.to_string())))?;
    if body["api_key"] != AMPLITUDE_KEY {
        return Err(bad("Invalid API key", json!(body["api_key"])));
    }
    let events = body["events"]
        .as_array()
        .filter(|e| !e.is_empty() && e.len() <= 2000)
        .ok_or_else(|| {
            bad(
                "Request missing required field",
                json!({"missing_field": "events"}),
            )
        })?;
    for (i, e) in events.iter().enumerate() {
        let invalid = |field: &str| {
            bad(
                "Request missing required field",
                json!({"events_with_invalid_fields": {field: [i]}}),
            )
        };
        if e["event_type"].as_str().is_none_or(str::is_empty) {
            return Err(invalid("event_type"));
        }
        let id_ok = |k: &str| e[k].as_str().is_some_and(|v| v.len() >= 5);
        if !id_ok("user_id") && !id_ok("device_id") {
            return Err(bad(
                "Invalid id length for user_id or device_id",
                json!({"events_with_invalid_id_lengths": {"device_id": [i]}}),
            ));
        }
        if e["time"].as_u64().is_none_or(|t| t <= 1_000_000_000_000) {
            return Err(invalid("time"));
        }
        if !e["insert_id"].is_string() {
            return Err(invalid("insert_id"));
        }
        if !e["session_id"].is_i64() {
            return Err(invalid("session_id"));
        }
        for k in ["revenue", "price"] {
            if !e[k].is_null() && !e[k].is_number() {
                return Err(invalid(k));
            }
        }
        if !e["quantity"].is_null() && !e["quantity"].is_i64() {
            return Err(invalid("quantity"));
        }
        for k in ["event_properties", "user_properties", "groups"] {
            if !e[k].is_null() && !e[k].is_object() {
                return Err(invalid(k));
            }
        }
    }
    no_clear_personal_data(r).map_err(|why| bad("personal data", json!(why)))
}

async fn amplitude() -> (Mock, Proxy) {
    amplitude_with("").await
}

/// [`amplitude`] with more `[delivery]` settings.
async fn amplitude_with(extra: &str) -> (Mock, Proxy) {
    let ok = json!({"code": 200, "events_ingested": 1, "payload_size_bytes": 512, "server_upload_time": 1_732_450_000_000u64});
    let mock = Mock::start(amplitude_check, (200, ok.to_string())).await;
    let tool = format!(
        "type = \"amplitude\"\nendpoint = \"{}\"\n[settings]\napi_key = \"{{{{ $key }}}}\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        mock.url()
    );
    let proxy = start_with(
        "amplitude",
        tool,
        &[("TAGPROXY_SECRET_KEY", AMPLITUDE_KEY)],
        extra,
    )
    .await;
    (mock, proxy)
}

fn amplitude_event(r: &Recorded) -> Value {
    let body = r.json();
    assert_eq!(body["events"].as_array().unwrap().len(), 1);
    body["events"][0].clone()
}

#[tokio::test]
async fn amplitude_pageview_is_the_sdks_page_viewed() {
    let (mock, proxy) = amplitude().await;
    let id = "evt_amp_page_0001";
    post(&proxy, event("pageview", None, json!({}), id), "").await;
    let e = amplitude_event(&mock.wait_for(1).await[0]);
    assert_eq!(e["event_type"], "[Amplitude] Page Viewed");
    assert_eq!(e["insert_id"], id);
    assert_eq!(e["ip"], VISITOR_IP);
    assert_eq!(e["platform"], "Web");
    assert_eq!(e["language"], "en-US");
    assert_eq!(e["os_name"], "Windows 10");
    assert!(e["device_id"].as_str().unwrap().len() >= 5);
    // The session's start, in ms, as the SDKs send it.
    let session = e["session_id"].as_i64().unwrap();
    assert!(
        session > 1_000_000_000_000 && session <= now_ms() as i64,
        "{session}"
    );
    assert_eq!(
        e["event_properties"],
        json!({
            "[Amplitude] Page Domain": "shop.example.com",
            "[Amplitude] Page Location": PAGE,
            "[Amplitude] Page Path": "/blog/post",
            "[Amplitude] Page Title": "Blue Mug – Demo Shop",
            "[Amplitude] Page URL": "https://shop.example.com/blog/post",
            "referrer": "https://www.google.com/",
        })
    );
}

#[tokio::test]
async fn amplitude_track_carries_properties_and_user_properties() {
    let (mock, proxy) = amplitude().await;
    let id = "evt_amp_track_001";
    let mut props = signup_props();
    props["user_id"] = json!("user-1234");
    props["user_tier"] = json!("gold");
    post(&proxy, event("track", Some("Signed Up"), props, id), "").await;
    let e = amplitude_event(&mock.wait_for(1).await[0]);
    assert_eq!(e["event_type"], "Signed Up");
    assert_eq!(e["insert_id"], id);
    assert_eq!(e["user_id"], "user-1234");
    assert_eq!(e["user_properties"], json!({"tier": "gold"}));
    assert_eq!(
        e["event_properties"],
        json!({
            "plan": "pro", "seats": 3, "trial": true,
            "email": sha256_hex("jane@example.com"),
            "phone": sha256_hex("+1 650 555 0134"),
        })
    );
}

#[tokio::test]
async fn amplitude_order_completed_carries_revenue_field_by_field() {
    let (mock, proxy) = amplitude().await;
    let id = "evt_amp_order_001";
    post(
        &proxy,
        event("ecommerce", Some("Order Completed"), order(), id),
        "",
    )
    .await;
    let e = amplitude_event(&mock.wait_for(1).await[0]);
    assert_eq!(e["event_type"], "Order Completed");
    // Zaraz's Amplitude tool: revenue, else total, else value.
    assert_eq!(e["revenue"], 25.0);
    assert_eq!(e["revenueType"], "Purchase");
    assert_eq!(e["productId"], "999666321,742566131");
    assert_eq!(e["quantity"], 3);
    let p = &e["event_properties"];
    assert_eq!(p["order_id"], "ORD-2002");
    assert_eq!(p["total"], 30);
    assert_eq!(p["currency"], "usd");
    assert_eq!(p["coupon"], "winter-sale");
    assert_eq!(p["products"], order()["products"]);
}

#[tokio::test]
async fn amplitude_429_is_retried_with_amplitudes_message_then_delivered() {
    let (mock, proxy) = amplitude().await;
    mock.script(&[
        (
            429,
            r#"{"code":429,"error":"Too many requests for some devices and users","eps_threshold":30,"throttled_devices":{"x":31},"throttled_users":{},"throttled_events":[0]}"#,
        ),
        (200, r#"{"code":200,"events_ingested":1,"payload_size_bytes":512,"server_upload_time":1}"#),
    ]);
    let id = "evt_amp_throttle1";
    post(&proxy, event("track", Some("Signed Up"), json!({}), id), "").await;
    let retry = log_line(&proxy, "delivery will be retried", id).await;
    assert!(
        retry["reason"]
            .as_str()
            .unwrap()
            .contains("Amplitude: Too many requests for some devices and users"),
        "{retry}"
    );
    log_line(&proxy, "delivered", id).await;
    let reqs = mock.wait_for(2).await;
    assert_eq!(reqs[0].body, reqs[1].body, "the same event, again");
}

#[tokio::test]
async fn amplitude_400_goes_to_the_dead_letters_with_amplitudes_message() {
    let (mock, proxy) = amplitude().await;
    mock.script(&[(
        400,
        r#"{"code":400,"error":"Invalid field values on some events","events_with_invalid_fields":{"time":[0]}}"#,
    )]);
    let id = "evt_amp_reject_01";
    post(&proxy, event("track", Some("Signed Up"), json!({}), id), "").await;
    let line = log_line(&proxy, "delivery rejected", id).await;
    let reason = line["reason"].as_str().unwrap();
    assert!(
        reason.contains("Amplitude: Invalid field values on some events")
            && reason.contains("events_with_invalid_fields"),
        "{line}"
    );
    proxy.settled().await;
    assert_eq!(mock.wait_for(1).await.len(), 1, "a 400 is not retried");
}

#[test]
fn amplitude_check_names_the_missing_api_key() {
    assert_check_fails(
        "type = \"amplitude\"\n[settings]\neu = true\n",
        "2:1: amplitude needs settings.api_key",
    );
}

// ---------------------------------------------------------------------------
// Mixpanel: Import Events API.
// https://developer.mixpanel.com/reference/import-events (a JSON array of
// `{"event", "properties"}`, up to 2000 events; Basic auth with the project
// secret, or the project token, as user name; `properties.time` in seconds
// or ms, `distinct_id` and `$insert_id` (at most 36 characters, letters,
// digits, `-`) required; `strict=1` validates). Answers:
// https://docs.mixpanel.com/troubleshooting/errors/400-bad-request
// (`failed_records` with `field` and `message`).

const MIXPANEL_TOKEN: &str = "mp-project-token-7";
const MIXPANEL_SECRET: &str = "mp-api-secret-c3a";

fn mixpanel_check(r: &Recorded) -> Result<(), (Answer, String)> {
    let failed = |field: &str, message: String| {
        let body = json!({
            "code": 400,
            "error": "some data points in the request failed validation",
            "failed_records": [{"index": 0, "insert_id": "", "field": field, "message": message}],
            "num_records_imported": 0,
            "status": "Bad Request",
        });
        ((400, body.to_string()), format!("{field}: {message}"))
    };
    if r.method != "POST" || r.path() != "/import" {
        return Err(failed("request", format!("not POST /import: {}", r.uri)));
    }
    if r.param("strict").as_deref() != Some("1") {
        return Err(failed("request", "strict=1 expected".into()));
    }
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{MIXPANEL_SECRET}:"))
    );
    if header(r, "authorization") != want {
        let body = json!({"code": 401, "error": "Invalid credentials", "status": "Unauthorized"});
        return Err((
            (401, body.to_string()),
            format!("authorization {:?}", header(r, "authorization")),
        ));
    }
    if !header(r, "content-type").starts_with("application/json") {
        return Err(failed(
            "request",
            "content-type must be application/json".into(),
        ));
    }
    let body: Value =
        serde_json::from_slice(&r.body).map_err(|e| failed("request", e.to_string()))?;
    let events = body
        .as_array()
        .filter(|e| !e.is_empty() && e.len() <= 2000)
        .ok_or_else(|| failed("request", "not an array of 1..2000 events".into()))?;
    for e in events {
        if e["event"].as_str().is_none_or(str::is_empty) {
            return Err(failed("event", "'event' must be a non-empty string".into()));
        }
        let p = &e["properties"];
        if p["time"].as_u64().is_none_or(|t| t <= 31_536_000) {
            return Err(failed(
                "properties.time",
                "'properties.time' is invalid: must be specified as seconds since epoch".into(),
            ));
        }
        let distinct = p["distinct_id"].as_str().unwrap_or("anon");
        if [
            "anon",
            "anonymous",
            "nil",
            "none",
            "null",
            "n/a",
            "undefined",
        ]
        .contains(&distinct.to_lowercase().as_str())
        {
            return Err(failed(
                "properties.distinct_id",
                "invalid distinct_id".into(),
            ));
        }
        let insert = p["$insert_id"].as_str().unwrap_or("");
        if insert.is_empty()
            || insert.len() > 36
            || !insert
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(failed(
                "properties.$insert_id",
                format!("'properties.$insert_id' is invalid: {insert:?}"),
            ));
        }
    }
    no_clear_personal_data(r).map_err(|why| failed("properties", why))
}

async fn mixpanel() -> (Mock, Proxy) {
    mixpanel_with("").await
}

/// [`mixpanel`] with more `[delivery]` settings.
async fn mixpanel_with(extra: &str) -> (Mock, Proxy) {
    let ok = json!({"code": 200, "num_records_imported": 1, "status": "OK"});
    let mock = Mock::start(mixpanel_check, (200, ok.to_string())).await;
    let tool = format!(
        "type = \"mixpanel\"\nendpoint = \"{}\"\n[settings]\ntoken = \"{MIXPANEL_TOKEN}\"\napi_secret = \"{{{{ $key }}}}\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        mock.url()
    );
    let proxy = start_with(
        "mixpanel",
        tool,
        &[("TAGPROXY_SECRET_KEY", MIXPANEL_SECRET)],
        extra,
    )
    .await;
    (mock, proxy)
}

fn mixpanel_event(r: &Recorded) -> Value {
    let body = r.json();
    assert_eq!(body.as_array().unwrap().len(), 1);
    body[0].clone()
}

#[tokio::test]
async fn mixpanel_pageview_is_mixpanel_js_page_view_with_its_visitor() {
    let (mock, proxy) = mixpanel().await;
    let id = "evt-mp-page-0001";
    // mixpanel-js's cookie: the same visitor for the SDK and for us.
    let cookie = format!(
        "mp_{MIXPANEL_TOKEN}_mixpanel={}",
        "%7B%22distinct_id%22%3A%22dev-123456%22%2C%22%24device_id%22%3A%22dev-123456%22%7D"
    );
    post(&proxy, event("pageview", None, json!({}), id), &cookie).await;
    let e = mixpanel_event(&mock.wait_for(1).await[0]);
    assert_eq!(e["event"], "$mp_web_page_view");
    let p = &e["properties"];
    assert_eq!(p["token"], MIXPANEL_TOKEN);
    assert_eq!(p["$insert_id"], id);
    assert_eq!(p["distinct_id"], "dev-123456");
    assert_eq!(p["$device_id"], "dev-123456");
    assert_eq!(p["ip"], VISITOR_IP);
    let t = p["time"].as_u64().unwrap();
    assert!(t > now_ms() - 60_000 && t <= now_ms(), "ms: {t}");
    assert_eq!(p["$current_url"], PAGE);
    assert_eq!(p["current_page_title"], "Blue Mug – Demo Shop");
    assert_eq!(p["current_domain"], "shop.example.com");
    assert_eq!(p["current_url_path"], "/blog/post");
    assert_eq!(p["current_url_protocol"], "https:");
    assert_eq!(p["current_url_search"], "?utm_source=news");
    assert_eq!(p["$referrer"], "https://www.google.com/");
    assert_eq!(p["$referring_domain"], "www.google.com");
    assert_eq!(p["$browser"], "Chrome");
    assert_eq!(p["$os"], "Windows 10");
    assert_eq!(p["$screen_width"], 1920);
    assert_eq!(p["$screen_height"], 1080);
}

#[tokio::test]
async fn mixpanel_track_carries_properties_and_the_user() {
    let (mock, proxy) = mixpanel().await;
    // An id Mixpanel would refuse as `$insert_id` (underscores).
    let id = "evt_mp_track_0001";
    let mut props = signup_props();
    props["user_id"] = json!("user-77");
    post(&proxy, event("track", Some("Signed Up"), props, id), "").await;
    let e = mixpanel_event(&mock.wait_for(1).await[0]);
    assert_eq!(e["event"], "Signed Up");
    let p = &e["properties"];
    assert_eq!(p["$insert_id"], sha256_hex(id)[..36]);
    assert_eq!(p["distinct_id"], "user-77");
    assert_eq!(p["$user_id"], "user-77");
    assert!(p["$device_id"].as_str().unwrap().len() > 10);
    assert_eq!(p["plan"], "pro");
    assert_eq!(p["seats"], 3);
    assert_eq!(p["trial"], true);
    assert_eq!(p["email"], sha256_hex("jane@example.com"));
    assert_eq!(p["phone"], sha256_hex("+1 650 555 0134"));
    assert!(p.get("user_id").is_none());
}

#[tokio::test]
async fn mixpanel_order_completed_field_by_field() {
    let (mock, proxy) = mixpanel().await;
    let id = "evt-mp-order-0001";
    post(
        &proxy,
        event("ecommerce", Some("Order Completed"), order(), id),
        "",
    )
    .await;
    let e = mixpanel_event(&mock.wait_for(1).await[0]);
    // No standard ecommerce events in Mixpanel: Zaraz's name and properties.
    assert_eq!(e["event"], "Order Completed");
    let p = &e["properties"];
    for (k, v) in order().as_object().unwrap() {
        assert_eq!(&p[k], v, "properties.{k}");
    }
    assert_eq!(p["products"][0]["sku"], "8251511");
    assert_eq!(p["products"][1]["price"], 5);
    assert_eq!(p["$insert_id"], id);
}

#[tokio::test]
async fn mixpanel_failed_records_go_to_the_dead_letters_with_mixpanels_message() {
    let (mock, proxy) = mixpanel().await;
    mock.script(&[(
        400,
        r#"{"code":400,"error":"some data points in the request failed validation","failed_records":[{"index":0,"insert_id":"evt-mp-reject-01","field":"properties.time","message":"'properties.time' is invalid: must not be more than one hour in the future"}],"num_records_imported":0,"status":"Bad Request"}"#,
    )]);
    let id = "evt-mp-reject-01";
    post(&proxy, event("track", Some("Signed Up"), json!({}), id), "").await;
    let line = log_line(&proxy, "delivery rejected", id).await;
    assert!(
        line["reason"]
            .as_str()
            .unwrap()
            .contains("properties.time: 'properties.time' is invalid: must not be more than one hour in the future"),
        "{line}"
    );
    proxy.settled().await;
    assert_eq!(mock.wait_for(1).await.len(), 1, "a 400 is not retried");
}

#[test]
fn mixpanel_check_names_the_missing_token() {
    assert_check_fails(
        "type = \"mixpanel\"\n[settings]\napi_secret = \"s\"\n",
        "2:1: mixpanel needs settings.token",
    );
}

// ---------------------------------------------------------------------------
// TikTok: Events API 2.0.
// https://business-api.tiktok.com/portal/docs?id=1771100865818625
// (`POST /open_api/v1.3/event/track/`, header `Access-Token`; body
// `event_source: "web"`, `event_source_id` = pixel code, `data[]` of
// `event`, `event_time` (Unix seconds), `event_id`, `user` (`email`,
// `phone`, `external_id` as SHA-256 hex; `ttclid`, `ttp`, `ip`,
// `user_agent`), `page` (`url`, `referrer`), `properties` (`contents[]` of
// `content_id`, `content_name`, `price`, `quantity`…, `currency` ISO 4217,
// `value`, `order_id`). Every answer is HTTP 200 with `code` 0 on success;
// errors are other codes with a `message`, 40100 being the rate limit.)
// Standard events: https://ads.tiktok.com/help/article/supported-standard-events

const TIKTOK_PIXEL: &str = "CPIXEL0123456789ABC";
const TIKTOK_TOKEN: &str = "tt-access-token-88";
const TIKTOK_OK: &str = r#"{"code":0,"message":"OK","request_id":"2024112412000001","data":{}}"#;

fn tiktok_check(r: &Recorded) -> Result<(), (Answer, String)> {
    let bad = |code: u32, message: String| {
        let body =
            json!({"code": code, "message": message, "request_id": "2024112412000002", "data": {}});
        ((200, body.to_string()), message)
    };
    if r.method != "POST" || r.path() != "/open_api/v1.3/event/track/" {
        return Err(bad(
            40002,
            format!("not POST /open_api/v1.3/event/track/: {}", r.uri),
        ));
    }
    if header(r, "access-token") != TIKTOK_TOKEN {
        return Err(bad(
            40105,
            "Access token is incorrect or has been revoked.".into(),
        ));
    }
    if !header(r, "content-type").starts_with("application/json") {
        return Err(bad(40002, "content-type must be application/json".into()));
    }
    let body: Value = serde_json::from_slice(&r.body).map_err(|e| bad(40002, e.to_string()))?;
    if body["event_source"] != "web" || body["event_source_id"] != TIKTOK_PIXEL {
        return Err(bad(40002, "event_source / event_source_id".into()));
    }
    let data = body["data"]
        .as_array()
        .filter(|d| !d.is_empty() && d.len() <= 1000)
        .ok_or_else(|| bad(40002, "data: 1 to 1000 events".into()))?;
    let now = now_ms() / 1000;
    for d in data {
        if d["event"].as_str().is_none_or(str::is_empty) {
            return Err(bad(40002, "event is required".into()));
        }
        let t = d["event_time"].as_u64().unwrap_or(0);
        if t + 7 * 24 * 3600 < now || t > now + 300 {
            return Err(bad(
                40002,
                format!("event_time {t}: Unix seconds, last 7 days"),
            ));
        }
        if d["event_id"].as_str().is_none_or(str::is_empty) {
            return Err(bad(40002, "event_id".into()));
        }
        let user = &d["user"];
        for k in ["email", "phone", "external_id"] {
            if let Some(v) = user.get(k) {
                let hashed = v.as_str().is_some_and(|h| {
                    h.len() == 64
                        && h.bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                });
                if !hashed {
                    return Err(bad(40002, format!("user.{k} must be SHA-256 hex")));
                }
            }
        }
        for k in ["ip", "user_agent", "ttp", "ttclid"] {
            if !user[k].is_null() && !user[k].is_string() {
                return Err(bad(40002, format!("user.{k} must be a string")));
            }
        }
        if !d["page"]["url"].is_string() {
            return Err(bad(40002, "page.url".into()));
        }
        let p = &d["properties"];
        if !p.is_null() {
            if !p["value"].is_null() && !p["value"].is_number() {
                return Err(bad(40002, "properties.value must be a number".into()));
            }
            if let Some(cu) = p.get("currency") {
                if !cu
                    .as_str()
                    .is_some_and(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
                {
                    return Err(bad(40002, "properties.currency: ISO 4217".into()));
                }
            }
            for c in p["contents"].as_array().into_iter().flatten() {
                if !c["content_id"].is_string()
                    || !(c["quantity"].is_null() || c["quantity"].is_u64())
                    || !(c["price"].is_null() || c["price"].is_number())
                {
                    return Err(bad(40002, format!("properties.contents: {c}")));
                }
            }
        }
    }
    no_clear_personal_data(r).map_err(|why| bad(40002, why))
}

async fn tiktok() -> (Mock, Proxy) {
    tiktok_with("").await
}

/// [`tiktok`] with more `[delivery]` settings.
async fn tiktok_with(extra: &str) -> (Mock, Proxy) {
    let mock = Mock::start(tiktok_check, (200, TIKTOK_OK.into())).await;
    let tool = format!(
        "type = \"tiktok\"\nendpoint = \"{}\"\n[settings]\npixel_code = \"{TIKTOK_PIXEL}\"\naccess_token = \"{{{{ $key }}}}\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        mock.url()
    );
    let proxy = start_with(
        "tiktok",
        tool,
        &[("TAGPROXY_SECRET_KEY", TIKTOK_TOKEN)],
        extra,
    )
    .await;
    (mock, proxy)
}

fn tiktok_event(r: &Recorded) -> Value {
    let body = r.json();
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    body["data"][0].clone()
}

fn set_cookie_named(answer: &Value, name: &str) -> Option<String> {
    answer["set-cookie"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(String::from)
}

#[tokio::test]
async fn tiktok_pageview_carries_ttclid_and_a_new_ttp_kept_in_cookies() {
    let (mock, proxy) = tiktok().await;
    let id = "evt_tt_page_00001";
    let mut ev = event("pageview", None, json!({}), id);
    let landing = "https://shop.example.com/?ttclid=E.C.P.CskBa1b2c3-d4_e5";
    ev["page"]["url"] = json!(landing);
    let answer = post(&proxy, ev, "").await;
    let d = tiktok_event(&mock.wait_for(1).await[0]);
    assert_eq!(d["event"], "Pageview");
    assert_eq!(d["event_id"], id);
    assert_eq!(d["user"]["ip"], VISITOR_IP);
    assert_eq!(d["user"]["user_agent"], CHROME_UA);
    assert_eq!(d["user"]["ttclid"], "E.C.P.CskBa1b2c3-d4_e5");
    let ttp = d["user"]["ttp"].as_str().unwrap();
    assert_eq!(ttp.len(), 27, "{ttp}");
    assert_eq!(
        d["page"],
        json!({"url": landing, "referrer": "https://www.google.com/"})
    );
    assert!(d.get("properties").is_none());
    // Both kept first-party by the collector's answer.
    let c = set_cookie_named(&answer, "ttclid").expect("ttclid cookie");
    assert!(
        c.starts_with("ttclid=E.C.P.CskBa1b2c3-d4_e5;") && c.contains("Max-Age=2419200"),
        "{c}"
    );
    let c = set_cookie_named(&answer, "_ttp").expect("_ttp cookie");
    assert!(
        c.starts_with(&format!("_ttp={ttp};")) && c.contains("Max-Age=31536000"),
        "{c}"
    );
}

#[tokio::test]
async fn tiktok_track_hashes_the_user_and_keeps_the_sites_ttp() {
    let (mock, proxy) = tiktok().await;
    let id = "evt_tt_track_0001";
    let mut props = signup_props();
    props["external_id"] = json!("Customer-42");
    post(
        &proxy,
        event("track", Some("Signed Up"), props, id),
        "_ttp=2Ps7YkOEOr6Fg1nB9yyZ7B8eKFg; ttclid=E.C.P.stored",
    )
    .await;
    let d = tiktok_event(&mock.wait_for(1).await[0]);
    assert_eq!(d["event"], "Signed Up");
    let u = &d["user"];
    assert_eq!(u["ttp"], "2Ps7YkOEOr6Fg1nB9yyZ7B8eKFg");
    assert_eq!(u["ttclid"], "E.C.P.stored");
    // Trimmed and lower-cased; the phone in E.164.
    assert_eq!(u["email"], sha256_hex("jane@example.com"));
    assert_eq!(u["phone"], sha256_hex("+16505550134"));
    assert_eq!(u["external_id"], sha256_hex("customer-42"));
    assert_eq!(
        d["properties"],
        json!({"plan": "pro", "seats": 3, "trial": true})
    );
}

#[tokio::test]
async fn tiktok_order_completed_is_complete_payment_field_by_field() {
    let (mock, proxy) = tiktok().await;
    let id = "evt_tt_order_0001";
    post(
        &proxy,
        event("ecommerce", Some("Order Completed"), order(), id),
        "",
    )
    .await;
    let d = tiktok_event(&mock.wait_for(1).await[0]);
    assert_eq!(d["event"], "CompletePayment");
    assert_eq!(d["event_id"], id);
    let p = &d["properties"];
    assert_eq!(
        p["contents"],
        json!([
            {"content_id": "8251511", "content_name": "Boy's shoes", "content_category": "shoes", "price": 10.0, "quantity": 2},
            {"content_id": "7251567", "content_name": "Blank T-shirt", "content_category": "T-shirts", "price": 5.0, "quantity": 1},
        ])
    );
    assert_eq!(p["content_type"], "product");
    assert_eq!(p["currency"], "USD");
    assert_eq!(p["value"], 30.0);
    assert_eq!(p["order_id"], "ORD-2002");
    assert_eq!(p["coupon"], "winter-sale");
    assert!(p.get("products").is_none() && p.get("total").is_none());
}

#[tokio::test]
async fn tiktok_rate_limit_code_in_a_200_is_retried_then_delivered() {
    let (mock, proxy) = tiktok().await;
    mock.script(&[
        (200, r#"{"code":40100,"message":"Too many requests. Please retry in some time.","request_id":"r1","data":{}}"#),
        (200, TIKTOK_OK),
    ]);
    let id = "evt_tt_throttle01";
    post(&proxy, event("track", Some("Signed Up"), json!({}), id), "").await;
    let retry = log_line(&proxy, "delivery will be retried", id).await;
    assert!(
        retry["reason"]
            .as_str()
            .unwrap()
            .contains("TikTok code 40100: Too many requests"),
        "{retry}"
    );
    log_line(&proxy, "delivered", id).await;
    assert_eq!(mock.wait_for(2).await.len(), 2);
}

#[tokio::test]
async fn tiktok_error_code_in_a_200_goes_to_the_dead_letters() {
    let (mock, proxy) = tiktok().await;
    mock.script(&[(
        200,
        r#"{"code":40105,"message":"Access token is incorrect or has been revoked.","request_id":"r2","data":{}}"#,
    )]);
    let id = "evt_tt_reject_001";
    post(&proxy, event("track", Some("Signed Up"), json!({}), id), "").await;
    let line = log_line(&proxy, "delivery rejected", id).await;
    assert!(
        line["reason"]
            .as_str()
            .unwrap()
            .contains("TikTok code 40105: Access token is incorrect or has been revoked."),
        "{line}"
    );
    proxy.settled().await;
    assert_eq!(mock.wait_for(1).await.len(), 1, "not retried");
}

#[test]
fn tiktok_check_names_the_missing_access_token() {
    assert_check_fails(
        &format!("type = \"tiktok\"\n[settings]\npixel_code = \"{TIKTOK_PIXEL}\"\n"),
        "2:1: tiktok needs settings.access_token",
    );
}

// ---------------------------------------------------------------------------
// Pinterest: Conversions API.
// https://developers.pinterest.com/docs/api/v5/events-create/
// (`POST /v5/ad_accounts/{ad_account_id}/events`, `Authorization: Bearer`;
// `data[]` of `event_name` (`checkout`, `add_to_cart`, `page_visit`,
// `signup`, `watch_video`, `lead`, `search`, `view_category`, `custom`),
// `action_source`, `event_time` (s), `event_id`, `user_data` (`em`, `ph`,
// `external_id` as arrays of SHA-256 hex; `client_ip_address`,
// `client_user_agent`, `click_id`), `custom_data` (`currency`, `value` as a
// string, `content_ids`, `contents[]` of `id`, `item_price` (string),
// `quantity`, `num_items`, `order_id`). Errors `{"code", "message"}`.)

const PINTEREST_ACCOUNT: &str = "549755885175";
const PINTEREST_TOKEN: &str = "pina-conv-token-1d";
const PINTEREST_OK: &str = r#"{"num_events_received":1,"num_events_processed":1,"events":[{"status":"processed","error_message":null,"warning_message":null}]}"#;

fn pinterest_check(r: &Recorded) -> Result<(), (Answer, String)> {
    let bad = |status: u16, code: u32, message: String| {
        let body = json!({"code": code, "message": message});
        ((status, body.to_string()), message)
    };
    let path = format!("/v5/ad_accounts/{PINTEREST_ACCOUNT}/events");
    if r.method != "POST" || r.path() != path {
        return Err(bad(404, 404, format!("not POST {path}: {}", r.uri)));
    }
    if header(r, "authorization") != format!("Bearer {PINTEREST_TOKEN}") {
        return Err(bad(401, 2, "Authentication failed.".into()));
    }
    let body: Value = serde_json::from_slice(&r.body).map_err(|e| bad(400, 1, e.to_string()))?;
    let data = body["data"]
        .as_array()
        .filter(|d| !d.is_empty() && d.len() <= 1000)
        .ok_or_else(|| bad(400, 1, "data: 1 to 1000 events".into()))?;
    let names = [
        "add_to_cart",
        "checkout",
        "custom",
        "lead",
        "page_visit",
        "search",
        "signup",
        "view_category",
        "watch_video",
    ];
    for d in data {
        if !names.contains(&d["event_name"].as_str().unwrap_or("")) {
            return Err(bad(400, 1, format!("event_name {}", d["event_name"])));
        }
        for k in ["action_source", "event_id"] {
            if !d[k].is_string() {
                return Err(bad(400, 1, format!("{k} is required")));
            }
        }
        if !d["event_time"].is_u64() {
            return Err(bad(400, 1, "event_time: Unix seconds".into()));
        }
        let u = &d["user_data"];
        for k in ["em", "ph", "external_id"] {
            if let Some(v) = u.get(k) {
                let ok = v.as_array().is_some_and(|a| {
                    a.iter().all(|h| {
                        h.as_str().is_some_and(|h| {
                            h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())
                        })
                    })
                });
                if !ok {
                    return Err(bad(400, 1, format!("user_data.{k}: SHA-256 hex array")));
                }
            }
        }
        let has_id = u.get("em").is_some()
            || (u["client_ip_address"].is_string() && u["client_user_agent"].is_string());
        if !has_id {
            return Err(bad(
                400,
                1,
                "user_data needs em, or IP and user agent".into(),
            ));
        }
        let c = &d["custom_data"];
        if !c.is_null() {
            for k in ["value", "currency"] {
                if !c[k].is_null() && !c[k].is_string() {
                    return Err(bad(400, 1, format!("custom_data.{k} must be a string")));
                }
            }
            if !c["num_items"].is_null() && !c["num_items"].is_u64() {
                return Err(bad(400, 1, "custom_data.num_items: integer".into()));
            }
            for item in c["contents"].as_array().into_iter().flatten() {
                if !item["item_price"].is_null() && !item["item_price"].is_string() {
                    return Err(bad(400, 1, "contents.item_price must be a string".into()));
                }
            }
        }
    }
    no_clear_personal_data(r).map_err(|why| bad(400, 1, why))
}

async fn pinterest() -> (Mock, Proxy) {
    pinterest_with("").await
}

/// [`pinterest`] with more `[delivery]` settings.
async fn pinterest_with(extra: &str) -> (Mock, Proxy) {
    let mock = Mock::start(pinterest_check, (200, PINTEREST_OK.into())).await;
    let tool = format!(
        "type = \"pinterest\"\nendpoint = \"{}\"\n[settings]\nad_account_id = \"{PINTEREST_ACCOUNT}\"\naccess_token = \"{{{{ $key }}}}\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        mock.url()
    );
    let proxy = start_with(
        "pinterest",
        tool,
        &[("TAGPROXY_SECRET_KEY", PINTEREST_TOKEN)],
        extra,
    )
    .await;
    (mock, proxy)
}

fn pinterest_event(r: &Recorded) -> Value {
    let body = r.json();
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    body["data"][0].clone()
}

#[tokio::test]
async fn pinterest_pageview_is_page_visit_with_the_epik_click_id() {
    let (mock, proxy) = pinterest().await;
    let id = "evt_pin_page_0001";
    let mut ev = event("pageview", None, json!({}), id);
    let landing = "https://shop.example.com/?epik=dj0yJnU9abc-_x";
    ev["page"]["url"] = json!(landing);
    let answer = post(&proxy, ev, "").await;
    let d = pinterest_event(&mock.wait_for(1).await[0]);
    assert_eq!(d["event_name"], "page_visit");
    assert_eq!(d["action_source"], "web");
    assert_eq!(d["event_id"], id);
    assert_eq!(d["event_source_url"], landing);
    assert_eq!(d["language"], "en");
    let u = &d["user_data"];
    assert_eq!(u["client_ip_address"], VISITOR_IP);
    assert_eq!(u["client_user_agent"], CHROME_UA);
    assert_eq!(u["click_id"], "dj0yJnU9abc-_x");
    let c = set_cookie_named(&answer, "_epik").expect("_epik cookie");
    assert!(c.starts_with("_epik=dj0yJnU9abc-_x;"), "{c}");
}

#[tokio::test]
async fn pinterest_track_is_custom_with_hashed_user_data() {
    let (mock, proxy) = pinterest().await;
    let id = "evt_pin_track_001";
    let mut props = signup_props();
    props["value"] = json!(12.5);
    props["currency"] = json!("eur");
    post(
        &proxy,
        event("track", Some("Signed Up"), props, id),
        "_epik=stored.epik",
    )
    .await;
    let d = pinterest_event(&mock.wait_for(1).await[0]);
    // Not one of Pinterest's event names: `custom`.
    assert_eq!(d["event_name"], "custom");
    let u = &d["user_data"];
    assert_eq!(u["em"], json!([sha256_hex("jane@example.com")]));
    assert_eq!(u["ph"], json!([sha256_hex("16505550134")]));
    assert_eq!(u["click_id"], "stored.epik");
    assert_eq!(
        d["custom_data"],
        json!({"value": "12.5", "currency": "EUR"})
    );
}

#[tokio::test]
async fn pinterest_order_completed_is_checkout_field_by_field() {
    let (mock, proxy) = pinterest().await;
    let id = "evt_pin_order_001";
    post(
        &proxy,
        event("ecommerce", Some("Order Completed"), order(), id),
        "",
    )
    .await;
    let d = pinterest_event(&mock.wait_for(1).await[0]);
    assert_eq!(d["event_name"], "checkout");
    assert_eq!(
        d["custom_data"],
        json!({
            // Zaraz's Pinterest tool: revenue, else total, else value.
            "value": "25",
            "currency": "USD",
            "order_id": "ORD-2002",
            "content_ids": ["999666321", "742566131"],
            "contents": [
                {"id": "999666321", "item_price": "10", "quantity": 2},
                {"id": "742566131", "item_price": "5", "quantity": 1},
            ],
            "num_items": 3,
            "content_name": "Boy's shoes,Blank T-shirt",
            "content_category": "shoes,T-shirts",
        })
    );
}

#[tokio::test]
async fn pinterest_401_goes_to_the_dead_letters_with_pinterests_message() {
    let (mock, proxy) = pinterest().await;
    mock.script(&[(401, r#"{"code":2,"message":"Authentication failed."}"#)]);
    let id = "evt_pin_reject_01";
    post(&proxy, event("track", Some("lead"), json!({}), id), "").await;
    let line = log_line(&proxy, "delivery rejected", id).await;
    assert!(
        line["reason"]
            .as_str()
            .unwrap()
            .contains("HTTP 401: Pinterest: Authentication failed."),
        "{line}"
    );
    proxy.settled().await;
    assert_eq!(mock.wait_for(1).await.len(), 1, "not retried");
}

#[test]
fn pinterest_check_names_the_missing_ad_account_id() {
    assert_check_fails(
        "type = \"pinterest\"\n[settings]\naccess_token = \"t\"\n",
        "2:1: pinterest needs settings.ad_account_id",
    );
}

// ---------------------------------------------------------------------------
// Snapchat: Conversions API v3.
// https://developers.snap.com/api/marketing-api/Conversions-API/UsingTheAPI
// (`POST /v3/{PIXEL_ID}/events?access_token={TOKEN}`, `{"data": [...]}` of
// `event_name` (`PAGE_VIEW`, `PURCHASE`, …), `event_time` (s, at most 37
// days old), `event_id`, `action_source`, `event_source_url`, `user_data`
// (`em`, `ph` SHA-256 arrays, `client_ip_address`, `client_user_agent`,
// `sc_click_id`, `sc_cookie1`), `custom_data` (`currency`, `value` "10",
// `contents[]` of `id`, `quantity` "1", `item_price` "5", `brand`).)

const SNAP_PIXEL: &str = "a1b2c3d4-e5f6-4711-8899-aabbccddeeff";
const SNAP_TOKEN: &str = "snap-capi-token-42";

fn snapchat_check(r: &Recorded) -> Result<(), (Answer, String)> {
    let bad = |status: u16, reason: String| {
        let body = json!({"status": "FAILED", "reason": reason});
        ((status, body.to_string()), reason)
    };
    let path = format!("/v3/{SNAP_PIXEL}/events");
    if r.method != "POST" || r.path() != path {
        return Err(bad(404, format!("not POST {path}: {}", r.uri)));
    }
    if r.param("access_token").as_deref() != Some(SNAP_TOKEN) {
        return Err(bad(401, "Unauthorized: invalid access token".into()));
    }
    let body: Value = serde_json::from_slice(&r.body).map_err(|e| bad(400, e.to_string()))?;
    let data = body["data"]
        .as_array()
        .filter(|d| !d.is_empty() && d.len() <= 2000)
        .ok_or_else(|| bad(400, "data: 1 to 2000 events".into()))?;
    let now = now_ms() / 1000;
    for d in data {
        if d["event_name"].as_str().is_none_or(str::is_empty) {
            return Err(bad(400, "event_name".into()));
        }
        let t = d["event_time"].as_u64().unwrap_or(0);
        if t + 37 * 24 * 3600 < now || t > now + 300 {
            return Err(bad(400, format!("event_time {t}")));
        }
        if d["action_source"] != "WEB" || !d["event_id"].is_string() {
            return Err(bad(400, "action_source WEB and event_id".into()));
        }
        let u = &d["user_data"];
        for k in ["em", "ph", "external_id"] {
            if let Some(v) = u.get(k) {
                let ok = v.as_array().is_some_and(|a| {
                    a.iter().all(|h| {
                        h.as_str().is_some_and(|h| {
                            h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())
                        })
                    })
                });
                if !ok {
                    return Err(bad(400, format!("user_data.{k}: SHA-256 hex array")));
                }
            }
        }
        let c = &d["custom_data"];
        if !c.is_null() {
            if !c["value"].is_null() && !c["value"].is_string() {
                return Err(bad(400, "custom_data.value: a string".into()));
            }
            for item in c["contents"].as_array().into_iter().flatten() {
                if !item["id"].is_string() {
                    return Err(bad(400, "contents.id".into()));
                }
            }
        }
    }
    no_clear_personal_data(r).map_err(|why| bad(400, why))
}

async fn snapchat() -> (Mock, Proxy) {
    snapchat_with("").await
}

/// [`snapchat`] with more `[delivery]` settings.
async fn snapchat_with(extra: &str) -> (Mock, Proxy) {
    let mock = Mock::start(
        snapchat_check,
        (200, json!({"status": "SUCCESS"}).to_string()),
    )
    .await;
    let tool = format!(
        "type = \"snapchat\"\nendpoint = \"{}\"\n[settings]\npixel_id = \"{SNAP_PIXEL}\"\naccess_token = \"{{{{ $key }}}}\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        mock.url()
    );
    let proxy = start_with(
        "snapchat",
        tool,
        &[("TAGPROXY_SECRET_KEY", SNAP_TOKEN)],
        extra,
    )
    .await;
    (mock, proxy)
}

fn snapchat_event(r: &Recorded) -> Value {
    let body = r.json();
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    body["data"][0].clone()
}

#[tokio::test]
async fn snapchat_pageview_carries_the_click_id_and_browser_id() {
    let (mock, proxy) = snapchat().await;
    let id = "evt_snap_page_001";
    let mut ev = event("pageview", None, json!({}), id);
    let landing = "https://shop.example.com/?ScCid=7f1c2e3d-aaaa-bbbb";
    ev["page"]["url"] = json!(landing);
    let answer = post(&proxy, ev, "").await;
    let d = snapchat_event(&mock.wait_for(1).await[0]);
    assert_eq!(d["event_name"], "PAGE_VIEW");
    assert_eq!(d["event_id"], id);
    assert_eq!(d["event_source_url"], landing);
    let u = &d["user_data"];
    assert_eq!(u["client_ip_address"], VISITOR_IP);
    assert_eq!(u["client_user_agent"], CHROME_UA);
    assert_eq!(u["sc_click_id"], "7f1c2e3d-aaaa-bbbb");
    let scid = u["sc_cookie1"].as_str().unwrap();
    assert_eq!(scid.len(), 36, "a UUID: {scid}");
    assert!(set_cookie_named(&answer, "_scclid")
        .is_some_and(|c| c.starts_with("_scclid=7f1c2e3d-aaaa-bbbb;")));
    assert!(set_cookie_named(&answer, "_scid")
        .is_some_and(|c| c.starts_with(&format!("_scid={scid};"))));
}

#[tokio::test]
async fn snapchat_track_is_a_custom_event_with_hashed_user_data() {
    let (mock, proxy) = snapchat().await;
    let id = "evt_snap_track_01";
    post(
        &proxy,
        event("track", Some("Signed Up"), signup_props(), id),
        "_scid=site-scid-1",
    )
    .await;
    let d = snapchat_event(&mock.wait_for(1).await[0]);
    assert_eq!(d["event_name"], "CUSTOM_EVENT_1");
    let u = &d["user_data"];
    assert_eq!(u["em"], json!([sha256_hex("jane@example.com")]));
    assert_eq!(u["ph"], json!([sha256_hex("16505550134")]));
    assert_eq!(u["sc_cookie1"], "site-scid-1");
    assert!(d.get("custom_data").is_none());
    // A track named like a Snap event is that event.
    post(
        &proxy,
        event("track", Some("sign up"), json!({}), "evt_snap_track_02"),
        "",
    )
    .await;
    let d = snapchat_event(&mock.wait_for(2).await[1]);
    assert_eq!(d["event_name"], "SIGN_UP");
}

#[tokio::test]
async fn snapchat_order_completed_is_purchase_field_by_field() {
    let (mock, proxy) = snapchat().await;
    let id = "evt_snap_order_01";
    post(
        &proxy,
        event("ecommerce", Some("Order Completed"), order(), id),
        "",
    )
    .await;
    let d = snapchat_event(&mock.wait_for(1).await[0]);
    assert_eq!(d["event_name"], "PURCHASE");
    assert_eq!(
        d["custom_data"],
        json!({
            "value": "30",
            "currency": "USD",
            "order_id": "ORD-2002",
            "content_ids": ["8251511", "7251567"],
            "contents": [
                {"id": "8251511", "quantity": "2", "item_price": "10"},
                {"id": "7251567", "quantity": "1", "item_price": "5"},
            ],
            "num_items": "3",
            "content_category": "shoes,T-shirts",
        })
    );
}

#[tokio::test]
async fn snapchat_400_goes_to_the_dead_letters_with_snaps_reason() {
    let (mock, proxy) = snapchat().await;
    mock.script(&[(
        400,
        r#"{"status":"FAILED","reason":"Invalid event_name provided"}"#,
    )]);
    let id = "evt_snap_reject01";
    post(&proxy, event("track", Some("Signed Up"), json!({}), id), "").await;
    let line = log_line(&proxy, "delivery rejected", id).await;
    assert!(
        line["reason"]
            .as_str()
            .unwrap()
            .contains("HTTP 400: Snapchat: Invalid event_name provided"),
        "{line}"
    );
    // The access token in the URL never reaches the log.
    assert!(!proxy.logs().contains(SNAP_TOKEN));
    proxy.settled().await;
    assert_eq!(mock.wait_for(1).await.len(), 1, "not retried");
}

#[test]
fn snapchat_check_names_the_missing_pixel_id() {
    assert_check_fails(
        "type = \"snapchat\"\n[settings]\naccess_token = \"t\"\n",
        "2:1: snapchat needs settings.pixel_id",
    );
}

// ---------------------------------------------------------------------------
// Reddit: Conversions API v2.0.
// https://ads-api.reddit.com/docs/v2/#tag/Conversions (`POST
// /api/v2.0/conversions/events/{ad_account_id}`, `Authorization: Bearer`;
// `events[]` of `event_at` (ISO 8601, last 7 days), `event_type`
// (`tracking_type`: PageVisit, ViewContent, Search, AddToCart,
// AddToWishlist, Purchase, Lead, SignUp, or Custom with
// `custom_event_name`), `click_id`, `user` (`email`, `external_id`,
// `ip_address` SHA-256; `user_agent`, `uuid`), `event_metadata`
// (`conversion_id`, `currency`, `value_decimal`, `item_count`,
// `products[]` of `id`, `name`, `category`).)

const REDDIT_ACCOUNT: &str = "t2_abc123";
const REDDIT_TOKEN: &str = "reddit-capi-token-5";

fn reddit_check(r: &Recorded) -> Result<(), (Answer, String)> {
    let bad =
        |status: u16, message: String| ((status, json!({"message": message}).to_string()), message);
    let path = format!("/api/v2.0/conversions/events/{REDDIT_ACCOUNT}");
    if r.method != "POST" || r.path() != path {
        return Err(bad(404, format!("not POST {path}: {}", r.uri)));
    }
    if header(r, "authorization") != format!("Bearer {REDDIT_TOKEN}") {
        return Err(bad(401, "unauthorized".into()));
    }
    let body: Value = serde_json::from_slice(&r.body).map_err(|e| bad(400, e.to_string()))?;
    if !body["test_mode"].is_boolean() {
        return Err(bad(400, "test_mode must be a boolean".into()));
    }
    let events = body["events"]
        .as_array()
        .filter(|e| !e.is_empty() && e.len() <= 1000)
        .ok_or_else(|| bad(400, "events: 1 to 1000".into()))?;
    let types = [
        "PageVisit",
        "ViewContent",
        "Search",
        "AddToCart",
        "AddToWishlist",
        "Purchase",
        "Lead",
        "SignUp",
        "Custom",
    ];
    for e in events {
        if !e["event_at"].as_str().is_some_and(is_iso8601) {
            return Err(bad(400, "event_at: ISO 8601".into()));
        }
        let t = &e["event_type"];
        let tt = t["tracking_type"].as_str().unwrap_or("");
        if !types.contains(&tt) {
            return Err(bad(400, format!("tracking_type {tt:?}")));
        }
        if tt == "Custom" && t["custom_event_name"].as_str().is_none_or(str::is_empty) {
            return Err(bad(400, "custom_event_name is required for Custom".into()));
        }
        let u = &e["user"];
        for k in ["email", "external_id", "ip_address"] {
            if let Some(v) = u.get(k) {
                if !v
                    .as_str()
                    .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                {
                    return Err(bad(400, format!("user.{k} must be SHA-256 hex")));
                }
            }
        }
        let m = &e["event_metadata"];
        if !m["conversion_id"].is_string() {
            return Err(bad(400, "event_metadata.conversion_id".into()));
        }
        if !m["value_decimal"].is_null() && !m["value_decimal"].is_number() {
            return Err(bad(400, "value_decimal: a number".into()));
        }
        if !m["item_count"].is_null() && !m["item_count"].is_u64() {
            return Err(bad(400, "item_count: an integer".into()));
        }
    }
    if String::from_utf8_lossy(&r.body).contains(VISITOR_IP) {
        return Err(bad(400, "the IP must be hashed".into()));
    }
    no_clear_personal_data(r).map_err(|why| bad(400, why))
}

async fn reddit() -> (Mock, Proxy) {
    reddit_with("").await
}

/// [`reddit`] with more `[delivery]` settings.
async fn reddit_with(extra: &str) -> (Mock, Proxy) {
    let ok = json!({"message": "Successfully processed 1 conversion events."});
    let mock = Mock::start(reddit_check, (200, ok.to_string())).await;
    let tool = format!(
        "type = \"reddit\"\nendpoint = \"{}\"\n[settings]\nad_account_id = \"{REDDIT_ACCOUNT}\"\naccess_token = \"{{{{ $key }}}}\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        mock.url()
    );
    let proxy = start_with(
        "reddit",
        tool,
        &[("TAGPROXY_SECRET_KEY", REDDIT_TOKEN)],
        extra,
    )
    .await;
    (mock, proxy)
}

fn reddit_event(r: &Recorded) -> Value {
    let body = r.json();
    assert_eq!(body["test_mode"], false);
    assert_eq!(body["events"].as_array().unwrap().len(), 1);
    body["events"][0].clone()
}

#[tokio::test]
async fn reddit_pageview_is_page_visit_with_click_id_and_uuid() {
    let (mock, proxy) = reddit().await;
    let id = "evt_rdt_page_0001";
    let mut ev = event("pageview", None, json!({}), id);
    let landing = "https://shop.example.com/?rdt_cid=2025-abc_DEF.1";
    ev["page"]["url"] = json!(landing);
    let answer = post(&proxy, ev, "").await;
    let e = reddit_event(&mock.wait_for(1).await[0]);
    assert_eq!(e["event_type"], json!({"tracking_type": "PageVisit"}));
    assert_eq!(e["click_id"], "2025-abc_DEF.1");
    assert_eq!(e["event_metadata"]["conversion_id"], id);
    let u = &e["user"];
    assert_eq!(u["ip_address"], sha256_hex(VISITOR_IP));
    assert_eq!(u["user_agent"], CHROME_UA);
    assert_eq!(
        u["screen_dimensions"],
        json!({"width": 1920, "height": 1080})
    );
    let uuid = u["uuid"].as_str().unwrap();
    assert!(set_cookie_named(&answer, "_rdt_uuid")
        .is_some_and(|c| c.starts_with(&format!("_rdt_uuid={uuid};"))));
    assert!(set_cookie_named(&answer, "_rdt_cid")
        .is_some_and(|c| c.starts_with("_rdt_cid=2025-abc_DEF.1;")));
}

#[tokio::test]
async fn reddit_track_is_custom_with_hashed_user_and_value() {
    let (mock, proxy) = reddit().await;
    let id = "evt_rdt_track_001";
    let mut props = signup_props();
    props["value"] = json!("12.5");
    props["currency"] = json!("eur");
    post(
        &proxy,
        event("track", Some("Signed Up"), props, id),
        "_rdt_uuid=1700000000000.site-uuid",
    )
    .await;
    let e = reddit_event(&mock.wait_for(1).await[0]);
    assert_eq!(
        e["event_type"],
        json!({"tracking_type": "Custom", "custom_event_name": "Signed Up"})
    );
    assert_eq!(e["user"]["email"], sha256_hex("jane@example.com"));
    assert_eq!(e["user"]["uuid"], "1700000000000.site-uuid");
    assert_eq!(
        e["event_metadata"],
        json!({"conversion_id": id, "value_decimal": 12.5, "currency": "EUR"})
    );
    // A track named like a tracking type is that type.
    post(
        &proxy,
        event("track", Some("sign_up"), json!({}), "evt_rdt_track_002"),
        "",
    )
    .await;
    let e = reddit_event(&mock.wait_for(2).await[1]);
    assert_eq!(e["event_type"], json!({"tracking_type": "SignUp"}));
}

#[tokio::test]
async fn reddit_order_completed_is_purchase_field_by_field() {
    let (mock, proxy) = reddit().await;
    let id = "evt_rdt_order_001";
    post(
        &proxy,
        event("ecommerce", Some("Order Completed"), order(), id),
        "",
    )
    .await;
    let e = reddit_event(&mock.wait_for(1).await[0]);
    assert_eq!(e["event_type"], json!({"tracking_type": "Purchase"}));
    assert_eq!(
        e["event_metadata"],
        json!({
            "conversion_id": id,
            "value_decimal": 30.0,
            "currency": "USD",
            "item_count": 3,
            "products": [
                {"id": "8251511", "name": "Boy's shoes", "category": "shoes"},
                {"id": "7251567", "name": "Blank T-shirt", "category": "T-shirts"},
            ],
        })
    );
}

#[tokio::test]
async fn reddit_429_is_retried_with_reddits_message() {
    let (mock, proxy) = reddit().await;
    mock.script(&[
        (429, r#"{"message":"Too many requests, slow down"}"#),
        (
            200,
            r#"{"message":"Successfully processed 1 conversion events."}"#,
        ),
    ]);
    let id = "evt_rdt_throttle1";
    post(&proxy, event("track", Some("Lead"), json!({}), id), "").await;
    let line = log_line(&proxy, "delivery will be retried", id).await;
    assert!(
        line["reason"]
            .as_str()
            .unwrap()
            .contains("HTTP 429: Reddit: Too many requests, slow down"),
        "{line}"
    );
    log_line(&proxy, "delivered", id).await;
    assert_eq!(mock.wait_for(2).await.len(), 2);
}

#[test]
fn reddit_check_names_the_missing_access_token() {
    assert_check_fails(
        &format!("type = \"reddit\"\n[settings]\nad_account_id = \"{REDDIT_ACCOUNT}\"\n"),
        "2:1: reddit needs settings.access_token",
    );
}

// ---------------------------------------------------------------------------
// custom-image: a pixel the browser fetches.
// Zaraz's Custom Image tool (https://developers.cloudflare.com/zaraz/custom-actions/):
// the collector's answer carries `{"fetch": url}` and the script runs
// `fetch(url, {mode: "no-cors", keepalive: true, credentials: "include"})`.

const PIXEL_URL: &str = "https://px.example.com/p/{{ client.__zarazTrack }}.gif?u={{ system.page.url }}&plan={{ client.plan }}&order={{ client.order_id }}&total={{ client.total }}&cur={{ client.currency }}";

async fn custom_image() -> Proxy {
    let tool = format!(
        "type = \"custom-image\"\n[settings]\nurl = \"{PIXEL_URL}\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n"
    );
    start("pixel", tool, &[("TAGPROXY_SECRET_KEY", "unused")]).await
}

fn fetched(answer: &Value) -> Vec<String> {
    answer["instructions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["fetch"]
                .as_str()
                .expect("a fetch instruction")
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn custom_image_pageview_is_a_fetch_instruction_with_encoded_values() {
    let proxy = custom_image().await;
    let answer = post(
        &proxy,
        event("pageview", None, json!({}), "evt_img_page_001"),
        "",
    )
    .await;
    assert_eq!(
        fetched(&answer),
        ["https://px.example.com/p/Pageview.gif?u=https%3A%2F%2Fshop.example.com%2Fblog%2Fpost%3Futm_source%3Dnews&plan=&order=&total=&cur="]
    );
    // Nothing goes server-side.
    assert_eq!(proxy.settled().await, 0);
}

#[tokio::test]
async fn custom_image_track_values_cannot_change_the_url() {
    let proxy = custom_image().await;
    let props = json!({"plan": "pro&admin=1#x"});
    let answer = post(
        &proxy,
        event("track", Some("Signed Up"), props, "evt_img_track_01"),
        "",
    )
    .await;
    let urls = fetched(&answer);
    assert_eq!(urls.len(), 1);
    assert!(
        urls[0].starts_with("https://px.example.com/p/Signed%20Up.gif?")
            && urls[0].contains("&plan=pro%26admin%3D1%23x&"),
        "{urls:?}"
    );
}

#[tokio::test]
async fn custom_image_order_completed_carries_the_order() {
    let proxy = custom_image().await;
    let answer = post(
        &proxy,
        event(
            "ecommerce",
            Some("Order Completed"),
            order(),
            "evt_img_order_01",
        ),
        "",
    )
    .await;
    let urls = fetched(&answer);
    assert!(
        urls[0].starts_with("https://px.example.com/p/Order%20Completed.gif?")
            && urls[0].ends_with("&order=ORD-2002&total=30&cur=usd"),
        "{urls:?}"
    );
}

#[test]
fn custom_image_check_names_the_missing_url_and_refuses_secrets() {
    assert_check_fails(
        "type = \"custom-image\"\n[settings]\n[automated]\npageview = true\n",
        "2:1: custom-image needs settings.url",
    );
    // A secret would be handed to every browser.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    std::fs::write(
        dir.path().join("tools/t.toml"),
        "type = \"custom-image\"\n[settings]\nurl = \"https://px.example.com/i.gif?k={{ $key }}\"\n",
    )
    .unwrap();
    let config = dir.path().join("tagproxy.toml");
    std::fs::write(&config, "[variables]\nkey = { secret = \"KEY\" }\n").unwrap();
    let out = Command::new(bin())
        .args(["check", "-c"])
        .arg(&config)
        .env("TAGPROXY_SECRET_KEY", "s3cret")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("t.toml:3:1: custom-image: the url goes to the browser, so it cannot hold the secret variable `$key`"), "{err}");
}

/// In headless Chromium: the page's pageview makes the collector answer
/// with the pixel's `{"fetch": url}`, and the script's `fetch` reaches the
/// pixel server from the page.
#[tokio::test]
async fn custom_image_pixel_leaves_a_real_browser() {
    let page = Origin::page(
        "text/html; charset=utf-8",
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Pixel Test</title></head><body><h1>Hi</h1></body></html>",
    )
    .await;
    let pixel =
        Origin::start(|_| async { respond(200, &[("content-type", "image/gif")], "GIF89a") }).await;
    let tool = format!(
        "type = \"custom-image\"\n[settings]\nurl = \"http://{}/px.gif?e={{{{ client.__zarazTrack }}}}&t={{{{ system.page.title }}}}\"\n[automated]\npageview = true\n",
        pixel.addr
    );
    let proxy = Proxy::start_tools(page.addr, "", &[("pixel", tool)]).await;
    let browser = common::browser::Browser::start().await;
    browser.client.goto(&proxy.url("/")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let seen = pixel.seen();
        if let Some(hit) = seen.iter().find(|s| s.path.starts_with("/px.gif")) {
            assert_eq!(hit.path, "/px.gif?e=Pageview&t=Pixel%20Test");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no pixel request: {seen:?}\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.close().await;
}

// ---------------------------------------------------------------------------
// bing: the UET hit, fired from the browser.
// https://help.ads.microsoft.com/#apex/ads/en/56686/2 (UET: `ti`, `evt`
// `pageLoad` / `custom`, `ea`/`ec`/`el`/`ev`, `gv`/`gc` for revenue,
// `msclkid` kept in `_uetmsclkid`).

async fn bing() -> Proxy {
    let tool = "type = \"bing\"\n[settings]\ntag_id = \"97000001\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n".to_string();
    start("bing", tool, &[("TAGPROXY_SECRET_KEY", "unused")]).await
}

fn uet_hit(answer: &Value) -> (String, Vec<(String, String)>) {
    let urls = fetched(answer);
    assert_eq!(urls.len(), 1, "{urls:?}");
    let (base, q) = urls[0].split_once('?').unwrap();
    (
        base.to_string(),
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect(),
    )
}

fn param<'q>(q: &'q [(String, String)], k: &str) -> Option<&'q str> {
    q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn bing_pageview_is_a_page_load_hit_with_msclkid() {
    let proxy = bing().await;
    let id = "evt_uet_page_0001";
    let mut ev = event("pageview", None, json!({}), id);
    let landing = "https://shop.example.com/?msclkid=abc123def456";
    ev["page"]["url"] = json!(landing);
    let answer = post(&proxy, ev, "").await;
    let (base, q) = uet_hit(&answer);
    assert_eq!(base, "https://bat.bing.com/action/0");
    assert_eq!(param(&q, "ti"), Some("97000001"));
    assert_eq!(param(&q, "Ver"), Some("2"));
    assert_eq!(param(&q, "evt"), Some("pageLoad"));
    assert_eq!(param(&q, "mid"), Some(id));
    assert_eq!(param(&q, "p"), Some(landing));
    assert_eq!(param(&q, "tl"), Some("Blue Mug – Demo Shop"));
    assert_eq!(param(&q, "r"), Some("https://www.google.com/"));
    assert_eq!(param(&q, "msclkid"), Some("abc123def456"));
    assert!(param(&q, "rn").is_some_and(|r| r.parse::<u32>().is_ok()));
    let c = set_cookie_named(&answer, "_uetmsclkid").expect("_uetmsclkid");
    assert!(c.starts_with("_uetmsclkid=_uetabc123def456;"), "{c}");
}

#[tokio::test]
async fn bing_track_is_a_custom_event_without_personal_data() {
    let proxy = bing().await;
    let mut props = signup_props();
    props["category"] = json!("account");
    props["label"] = json!("jane@example.com");
    props["value"] = json!(3);
    let answer = post(
        &proxy,
        event("track", Some("signup"), props, "evt_uet_track_01"),
        "_uetmsclkid=_uetstored1",
    )
    .await;
    let (_, q) = uet_hit(&answer);
    assert_eq!(param(&q, "evt"), Some("custom"));
    assert_eq!(param(&q, "ea"), Some("signup"));
    assert_eq!(param(&q, "ec"), Some("account"));
    assert_eq!(param(&q, "el"), None, "an e-mail address is never a label");
    assert_eq!(param(&q, "ev"), Some("3"));
    assert_eq!(param(&q, "msclkid"), Some("stored1"));
    assert!(!fetched(&answer)[0].to_lowercase().contains("jane"));
}

#[tokio::test]
async fn bing_order_completed_is_a_purchase_with_revenue() {
    let proxy = bing().await;
    let answer = post(
        &proxy,
        event(
            "ecommerce",
            Some("Order Completed"),
            order(),
            "evt_uet_order_01",
        ),
        "",
    )
    .await;
    let (_, q) = uet_hit(&answer);
    assert_eq!(param(&q, "evt"), Some("custom"));
    assert_eq!(param(&q, "ea"), Some("purchase"));
    assert_eq!(param(&q, "gv"), Some("30"));
    assert_eq!(param(&q, "gc"), Some("USD"));
}

#[test]
fn bing_check_names_the_missing_tag_id() {
    assert_check_fails(
        "type = \"bing\"\n[settings]\n[automated]\npageview = true\n",
        "2:1: bing needs settings.tag_id",
    );
}

// ---------------------------------------------------------------------------
// linkedin: the Insight Tag's image hit, fired from the browser.
// https://www.linkedin.com/help/lms/answer/a418880 (the `<noscript>` image:
// `https://px.ads.linkedin.com/collect/?pid=…&fmt=gif`, plus
// `conversionId` for a conversion), `li_fat_id` the click id.

async fn linkedin_hit(tool: &str, id: &str) -> (Value, Vec<(String, String)>) {
    let proxy = start(
        "linkedin",
        tool.to_string(),
        &[("TAGPROXY_SECRET_KEY", "unused")],
    )
    .await;
    let mut ev = event("pageview", None, json!({}), id);
    ev["page"]["url"] = json!("https://shop.example.com/?li_fat_id=3f1e2d3c-aaaa-bbbb");
    let answer = post(&proxy, ev, "").await;
    let urls = fetched(&answer);
    assert_eq!(urls.len(), 1, "{urls:?}");
    let (base, q) = urls[0].split_once('?').unwrap();
    assert_eq!(base, "https://px.ads.linkedin.com/collect");
    let q = url::form_urlencoded::parse(q.as_bytes())
        .into_owned()
        .collect();
    (answer, q)
}

#[tokio::test]
async fn linkedin_pageview_and_conversion_are_insight_hits() {
    let landing = "https://shop.example.com/?li_fat_id=3f1e2d3c-aaaa-bbbb";
    let base =
        "type = \"linkedin\"\n[settings]\npartner_id = \"123456\"\nconversion_id = \"9876543\"\n";
    let (answer, page) = linkedin_hit(
        &format!("{base}[automated]\npageview = true\n"),
        "evt_li_page_00001",
    )
    .await;
    // A custom action on the same event replaces the automated one.
    let (_, conversion) = linkedin_hit(
        &format!(
            "{base}[[actions]]\nname = \"lead\"\nkind = \"conversion\"\nfiring = [\"Pageview\"]\n"
        ),
        "evt_li_conv_00001",
    )
    .await;
    for q in [&page, &conversion] {
        assert_eq!(param(q, "pid"), Some("123456"));
        assert_eq!(param(q, "fmt"), Some("gif"));
        assert_eq!(param(q, "url"), Some(landing));
        assert_eq!(param(q, "li_fat_id"), Some("3f1e2d3c-aaaa-bbbb"));
        assert!(param(q, "time").is_some_and(|t| t.parse::<u64>().unwrap() > 1_000_000_000_000));
    }
    assert_eq!(param(&page, "conversionId"), None);
    assert_eq!(param(&conversion, "conversionId"), Some("9876543"));
    let c = set_cookie_named(&answer, "li_fat_id").expect("li_fat_id");
    assert!(c.starts_with("li_fat_id=3f1e2d3c-aaaa-bbbb;"), "{c}");
}

#[test]
fn linkedin_check_names_the_missing_partner_id_and_refuses_track() {
    assert_check_fails(
        "type = \"linkedin\"\n[settings]\n[automated]\npageview = true\n",
        "2:1: linkedin needs settings.partner_id",
    );
    assert_check_fails(
        "type = \"linkedin\"\n[settings]\npartner_id = \"1\"\n[automated]\ntrack = true\n",
        "4:1: the `linkedin` adapter has no automated `track` action",
    );
}

// ---------------------------------------------------------------------------
// google-ads: the conversion hit, fired from the browser as Zaraz's Google
// Ads Managed Component fires it
// (github.com/managed-components/google-ads, src/index.ts: `GET
// https://www.googleadservices.com/pagead/conversion/{id}/?…` with `label`,
// `value`, `currency_code`, `gclaw`, `url`, `ref`, `tiba`; src/utils.ts:
// the landing URL's `gclid` kept in `_gcl_aw` as `GCL.<seconds>.<gclid>`).
// Transaction id `oid`: https://support.google.com/google-ads/answer/6386790
// Consent Mode `gcs`/`gcd`: https://developers.google.com/tag-platform/security/guides/consent
// Cookie lifetime (90 days): https://support.google.com/google-ads/answer/7521212
// A browser-side hit goes out with `mode: "no-cors"`: its answer is opaque
// to the page and never reaches tagproxy, so there is no error answer to
// handle (no retry, no dead letter) for this tool.

const ADS_CONSENT: &str = r#"
[consent]
enabled = true
[[consent.purposes]]
id = "ads"
name = "Advertising"
default = "denied"
consent_mode = ["ad_storage", "ad_user_data", "ad_personalization"]
"#;

const GCLID: &str = "Cj0KCQiA-abc_123";

fn google_ads_tool(purposes: &str) -> String {
    format!(
        "type = \"google-ads\"\npurposes = [{purposes}]\ntcf_vendor_id = 755\n[settings]\nconversion_id = \"AW-123456789\"\nconversion_label = \"AbC-D_efG\"\n[automated]\npageview = true\necommerce = true\n"
    )
}

fn ads_hit(answer: &Value) -> (String, Vec<(String, String)>) {
    uet_hit(answer)
}

#[tokio::test]
async fn google_ads_landing_pageview_keeps_the_click_ids_first_party() {
    let proxy = start(
        "ads",
        google_ads_tool(""),
        &[("TAGPROXY_SECRET_KEY", "unused")],
    )
    .await;
    let mut ev = event("pageview", None, json!({}), "evt_gads_page_001");
    ev["page"]["url"] = json!(format!(
        "https://shop.example.com/?gclid={GCLID}&gbraid=0AAAAAp-xyz"
    ));
    let before = now_ms() / 1000;
    let answer = post(&proxy, ev, "").await;
    // The pageview sends nothing (as the Managed Component's pageview).
    assert!(fetched(&answer).is_empty(), "{answer}");
    for (name, id) in [("_gcl_aw", GCLID), ("_gcl_gb", "0AAAAAp-xyz")] {
        let c = set_cookie_named(&answer, name).unwrap_or_else(|| panic!("{name}: {answer}"));
        let (value, attrs) = c.split_once(';').unwrap();
        let v = value.strip_prefix(&format!("{name}=GCL.")).expect(&c);
        let (secs, rest) = v.split_once('.').unwrap();
        let secs: u64 = secs.parse().unwrap();
        assert!(secs >= before && secs <= now_ms() / 1000, "{c}");
        assert_eq!(rest, id);
        assert!(
            attrs.contains("Max-Age=7776000") && attrs.contains("Path=/"),
            "{c}"
        );
    }
    assert_eq!(set_cookie_named(&answer, "_gcl_wb"), None);
    assert_eq!(proxy.settled().await, 0, "nothing goes server-side");
}

#[tokio::test]
async fn google_ads_order_completed_is_a_conversion_field_by_field() {
    let proxy = start_with(
        "ads",
        google_ads_tool("\"ads\""),
        &[("TAGPROXY_SECRET_KEY", "unused")],
        ADS_CONSENT,
    )
    .await;
    // A later page: the gclid comes from the cookie the landing page set.
    let cookie = format!("_gcl_aw=GCL.1732449000.{GCLID}; cf_consent=%7B%22ads%22%3Atrue%7D");
    let answer = post(
        &proxy,
        event(
            "ecommerce",
            Some("Order Completed"),
            order(),
            "evt_gads_order_01",
        ),
        &cookie,
    )
    .await;
    let (base, q) = ads_hit(&answer);
    assert_eq!(
        base,
        "https://www.googleadservices.com/pagead/conversion/123456789/"
    );
    let fields: Vec<(&str, &str)> = q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let rnd = param(&q, "rnd").unwrap();
    assert!(rnd.parse::<u32>().is_ok());
    let fst = param(&q, "fst").unwrap();
    assert!(fst.parse::<u64>().unwrap() > 1_000_000_000_000);
    assert_eq!(
        fields,
        [
            ("guid", "ON"),
            ("rnd", rnd),
            ("fst", fst),
            ("cv", "9"),
            ("sendb", "1"),
            ("num", "1"),
            ("ig", "1"),
            ("url", PAGE),
            ("tiba", "Blue Mug – Demo Shop"),
            ("ref", "https://www.google.com/"),
            ("label", "AbC-D_efG"),
            // `total` (Zaraz's order value), not `revenue`.
            ("value", "30"),
            ("currency_code", "USD"),
            ("oid", "ORD-2002"),
            ("gclaw", GCLID),
            // ad_storage, ad_user_data, ad_personalization: denied by
            // default, then granted; analytics_storage not set.
            ("gcs", "G111"),
            ("gcd", "11r1l1r1r5"),
        ]
    );
    // The cookie is not written again: the click keeps its time.
    assert_eq!(set_cookie_named(&answer, "_gcl_aw"), None);
    // Other ecommerce events are no conversion.
    let answer = post(
        &proxy,
        event(
            "ecommerce",
            Some("Product Added"),
            json!({"product_id": "1", "price": 5}),
            "evt_gads_added_1",
        ),
        &cookie,
    )
    .await;
    assert!(fetched(&answer).is_empty(), "{answer}");
}

#[tokio::test]
async fn google_ads_without_ad_storage_keeps_no_cookie_and_reads_none() {
    // No purposes: the tool runs, Consent Mode tells Google the state.
    let proxy = start_with(
        "ads",
        google_ads_tool(""),
        &[("TAGPROXY_SECRET_KEY", "unused")],
        ADS_CONSENT,
    )
    .await;
    let refused = "cf_consent=%7B%22ads%22%3Afalse%7D";
    let mut ev = event(
        "ecommerce",
        Some("Order Completed"),
        json!({"value": 9.5, "currency": "eur"}),
        "evt_gads_denied1",
    );
    ev["page"]["url"] = json!(format!("https://shop.example.com/thanks?wbraid=WB-1"));
    let answer = post(
        &proxy,
        ev,
        &format!("_gcl_aw=GCL.1732449000.{GCLID}; {refused}"),
    )
    .await;
    let (_, q) = ads_hit(&answer);
    assert_eq!(param(&q, "wbraid"), Some("WB-1"), "the URL's id still goes");
    assert_eq!(param(&q, "gclaw"), None, "the cookie is not read");
    assert_eq!(
        param(&q, "oid"),
        Some("evt_gads_denied1"),
        "the event id without an order id"
    );
    assert_eq!(param(&q, "value"), Some("9.5"));
    assert_eq!(param(&q, "currency_code"), Some("EUR"));
    // ad_storage refused, analytics_storage not set (granted).
    assert_eq!(param(&q, "gcs"), Some("G101"));
    assert!(
        answer["set-cookie"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| !c.as_str().unwrap().starts_with("_gcl")),
        "{answer}"
    );
}

#[tokio::test]
async fn google_ads_custom_conversion_takes_its_own_label_and_values() {
    let tool = "type = \"google-ads\"\n[settings]\nconversion_id = \"AW-555/ToolLabel\"\n[[actions]]\nname = \"lead\"\nkind = \"conversion\"\nfiring = [\"Pageview\"]\n[actions.fields]\nlabel = \"Lead-Label\"\nvalue = \"12\"\ncurrency = \"gbp\"\ntransaction_id = \"L-1\"\n";
    let proxy = start(
        "ads",
        tool.to_string(),
        &[("TAGPROXY_SECRET_KEY", "unused")],
    )
    .await;
    let mut ev = event("pageview", None, json!({}), "evt_gads_lead_001");
    ev["page"]["url"] = json!(format!("https://shop.example.com/?gclid={GCLID}"));
    let answer = post(&proxy, ev, "").await;
    let (base, q) = ads_hit(&answer);
    assert_eq!(
        base,
        "https://www.googleadservices.com/pagead/conversion/555/"
    );
    assert_eq!(param(&q, "label"), Some("Lead-Label"));
    assert_eq!(param(&q, "value"), Some("12"));
    assert_eq!(param(&q, "currency_code"), Some("GBP"));
    assert_eq!(param(&q, "oid"), Some("L-1"));
    assert_eq!(param(&q, "gclaw"), Some(GCLID));
    assert_eq!(
        param(&q, "gcs"),
        None,
        "no Consent Mode state without consent"
    );
    assert!(set_cookie_named(&answer, "_gcl_aw").is_some());
}

#[test]
fn google_ads_check_names_the_missing_conversion_id_and_refuses_track() {
    assert_check_fails(
        "type = \"google-ads\"\n[settings]\nconversion_label = \"x\"\n[automated]\necommerce = true\n",
        "2:1: google-ads needs settings.conversion_id",
    );
    assert_check_fails(
        "type = \"google-ads\"\n[settings]\nconversion_id = \"1\"\n[automated]\ntrack = true\n",
        "4:1: the `google-ads` adapter has no automated `track` action",
    );
}

/// A conversion without a label counts for nothing at Google: `check`
/// warns (and still passes) where one could go out without.
#[test]
fn google_ads_check_warns_about_conversions_without_a_label() {
    let (code, err, path) = check(
        "type = \"google-ads\"\n[settings]\nconversion_id = \"AW-1\"\n[automated]\necommerce = true\n[[actions]]\nname = \"lead\"\nkind = \"conversion\"\nfiring = [\"Pageview\"]\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "{path}:4:1: google-ads: `Order Completed` goes out without a conversion label"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{path}:6:1: google-ads: action `lead` has no `label`"
        )),
        "{err}"
    );
    // With a label (gtag's `AW-…/label` form too), no warning.
    let (code, err, _) = check(
        "type = \"google-ads\"\n[settings]\nconversion_id = \"AW-1/AbC\"\n[automated]\necommerce = true\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("conversion label"), "{err}");
}

/// In headless Chromium: a conversion action on the pageview makes the
/// collector answer with the conversion's `{"fetch": url}`, and the
/// script's `fetch` reaches the (mock) Google endpoint from the page.
#[tokio::test]
async fn google_ads_conversion_leaves_a_real_browser() {
    let page = Origin::page(
        "text/html; charset=utf-8",
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Ads Test</title></head><body><h1>Hi</h1></body></html>",
    )
    .await;
    let google =
        Origin::start(|_| async { respond(200, &[("content-type", "image/gif")], "GIF89a") }).await;
    let tool = format!(
        "type = \"google-ads\"\nendpoint = \"http://{}\"\n[settings]\nconversion_id = \"AW-42\"\nconversion_label = \"BrowserLabel\"\n[[actions]]\nname = \"visit\"\nkind = \"conversion\"\nfiring = [\"Pageview\"]\n",
        google.addr
    );
    let proxy = Proxy::start_tools(page.addr, "", &[("ads", tool)]).await;
    let browser = common::browser::Browser::start().await;
    browser.client.goto(&proxy.url("/")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let seen = google.seen();
        if let Some(hit) = seen
            .iter()
            .find(|s| s.path.starts_with("/pagead/conversion/42/"))
        {
            assert!(hit.path.contains("&label=BrowserLabel&"), "{}", hit.path);
            assert!(hit.path.contains("&tiba=Ads+Test&"), "{}", hit.path);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no conversion request: {seen:?}\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.close().await;
}

// ---------------------------------------------------------------------------
// Batching (SPEC §8): one browser's events reach each array API in one
// request when they share its credentials, read by the same validating
// mocks as single events (each adapter's limits and doc URL are on its
// `BATCHING`). A linger long enough that the test does not depend on how
// fast this machine fans out one request's events.

const LINGER: &str = "batch_linger_ms = 300\n";

/// Posts `events` in one collector request, as the script flushes its queue.
async fn post_all(proxy: &Proxy, events: Vec<Value>) {
    let resp = client()
        .post(proxy.url("/_tagproxy/t"))
        .header("content-type", "application/json")
        .header("user-agent", CHROME_UA)
        .header("x-forwarded-for", VISITOR_IP)
        .header("origin", "https://shop.example.com")
        .body(Value::Array(events).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// Three track events with these (Mixpanel-safe) ids.
fn three_tracks(prefix: &str) -> (Vec<Value>, Vec<String>) {
    let ids: Vec<String> = (1..=3).map(|i| format!("{prefix}-batch-00{i}")).collect();
    let events = ids
        .iter()
        .map(|id| event("track", Some("Signed Up"), json!({"plan": "pro"}), id))
        .collect();
    (events, ids)
}

/// The events of one request: the array at `array` (the body itself when
/// empty), each read to its event id at `id`.
fn ids_in(r: &Recorded, array: &str, id: &[&str]) -> Vec<String> {
    let body = r.json();
    let events = if array.is_empty() {
        &body
    } else {
        &body[array]
    };
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            id.iter()
                .fold(e, |v, k| &v[*k])
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Posts three events at once and waits until the mock has them all: each
/// once, in fewer requests than events, one request carrying several.
async fn assert_batched(mock: &Mock, proxy: &Proxy, prefix: &str, array: &str, id: &[&str]) {
    let (events, want) = three_tracks(prefix);
    post_all(proxy, events).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = mock.wait_for(1).await;
        let mut seen: Vec<String> = got.iter().flat_map(|r| ids_in(r, array, id)).collect();
        if seen.len() >= want.len() {
            seen.sort();
            assert_eq!(seen, want, "each event once");
            assert!(got.len() < want.len(), "{} requests", got.len());
            assert!(got.iter().any(|r| ids_in(r, array, id).len() > 1));
            break;
        }
        assert!(Instant::now() < deadline, "{seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    mock.assert_valid();
}

#[tokio::test]
async fn segment_batches_one_browsers_events_in_one_batch_call() {
    let (mock, proxy) = segment_with(LINGER).await;
    assert_batched(&mock, &proxy, "seg", "batch", &["messageId"]).await;
}

#[tokio::test]
async fn amplitude_batches_one_browsers_events_in_one_upload() {
    let (mock, proxy) = amplitude_with(LINGER).await;
    assert_batched(&mock, &proxy, "amp", "events", &["insert_id"]).await;
}

#[tokio::test]
async fn mixpanel_batches_one_browsers_events_in_one_import() {
    let (mock, proxy) = mixpanel_with(LINGER).await;
    assert_batched(&mock, &proxy, "mix", "", &["properties", "$insert_id"]).await;
}

#[tokio::test]
async fn tiktok_batches_one_browsers_events_in_one_track_call() {
    let (mock, proxy) = tiktok_with(LINGER).await;
    assert_batched(&mock, &proxy, "tik", "data", &["event_id"]).await;
}

#[tokio::test]
async fn pinterest_batches_one_browsers_events_in_one_events_call() {
    let (mock, proxy) = pinterest_with(LINGER).await;
    assert_batched(&mock, &proxy, "pin", "data", &["event_id"]).await;
}

#[tokio::test]
async fn snapchat_batches_one_browsers_events_in_one_events_call() {
    let (mock, proxy) = snapchat_with(LINGER).await;
    assert_batched(&mock, &proxy, "snap", "data", &["event_id"]).await;
}

#[tokio::test]
async fn reddit_batches_one_browsers_events_in_one_conversions_call() {
    let (mock, proxy) = reddit_with(LINGER).await;
    assert_batched(
        &mock,
        &proxy,
        "rdt",
        "events",
        &["event_metadata", "conversion_id"],
    )
    .await;
}

/// TikTok answers a batch holding an invalid event with an error code in a
/// `200` body for the whole request (every answer is `200`; `code` tells,
/// <https://business-api.tiktok.com/portal/docs?id=1771100865818625>). The
/// batch is split until the refused event is alone: it goes to the dead
/// letters with TikTok's message, the others are delivered once each.
#[tokio::test]
async fn tiktok_batch_with_one_refused_event_is_split_and_only_it_is_dead_lettered() {
    const REFUSED: &str = r#"{"code":40002,"message":"Invalid parameters: data.event_time is too old","request_id":"2024112412000009","data":{}}"#;
    fn holds_marked(r: &Recorded) -> bool {
        r.json()["data"]
            .as_array()
            .is_some_and(|d| d.iter().any(|e| e["properties"]["plan"] == "stale"))
    }
    fn refuse(r: &Recorded) -> Option<Answer> {
        holds_marked(r).then(|| (200, REFUSED.to_string()))
    }
    let (mock, proxy) = tiktok_with(LINGER).await;
    mock.set_refuse(refuse);
    let ids: Vec<String> = (1..=6).map(|i| format!("tik-poison-00{i}")).collect();
    let bad = ids[3].clone();
    let events = ids
        .iter()
        .map(|id| {
            let plan = if *id == bad { "stale" } else { "pro" };
            event("track", Some("Signed Up"), json!({"plan": plan}), id)
        })
        .collect();
    post_all(&proxy, events).await;
    let line = log_line(&proxy, "delivery rejected", &bad).await;
    assert!(
        line.to_string().contains("data.event_time is too old"),
        "TikTok's message: {line}"
    );
    proxy.settled().await;
    let got = mock.wait_for(1).await;
    let mut delivered: Vec<String> = got
        .iter()
        .filter(|r| !holds_marked(r))
        .flat_map(|r| ids_in(r, "data", &["event_id"]))
        .collect();
    delivered.sort();
    let good: Vec<String> = ids.iter().filter(|id| **id != bad).cloned().collect();
    assert_eq!(delivered, good, "each other event delivered once");
    assert!(got
        .iter()
        .any(|r| !holds_marked(r) && ids_in(r, "data", &["event_id"]).len() > 1));
    let out = Command::new(bin())
        .args(["deadletter", "list", "--json", "-c"])
        .arg(&proxy.config)
        .output()
        .unwrap();
    let letters: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0]["event_id"], bad.as_str());
    assert!(letters[0]["response"]
        .as_str()
        .unwrap()
        .contains("data.event_time is too old"));
}
