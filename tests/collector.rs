//! The collector, `POST /_tagproxy/t`, through the real binary: bad input
//! and its answers (SPEC §12), the visitor IP behind trusted and untrusted
//! proxies, first-party identity cookies, and sendBeacon bodies.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::validate;
use common::*;
use serde_json::{json, Value};

const CHROME_UA: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const PAGE: &str = "https://shop.example.com/products/mug";

fn no_origin() -> SocketAddr {
    "127.0.0.1:9".parse().unwrap()
}

fn ga4_tool(dest: &Destination) -> String {
    format!(
        "type = \"google-analytics-4\"\nendpoint = \"{}\"\n[settings]\nmeasurement_id = \"G-TEST123\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        dest.url()
    )
}

/// An `http` tool that posts the whole event (system properties included).
fn http_tool(dest: &Destination) -> String {
    format!(
        "type = \"http\"\n[settings]\nurl = \"{}/hook\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        dest.url()
    )
}

fn pageview(id: &str) -> Value {
    json!({
        "type": "pageview",
        "properties": {},
        "page": {"url": PAGE, "title": "Mug", "referrer": "", "encoding": "UTF-8"},
        "device": {"viewport": "1280x720", "resolution": "1920x1080", "language": "en-US", "tz_offset": -60},
        "vars": {},
        "ts": 1_732_450_000_000u64,
        "id": id,
    })
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {:?}", self.text))
    }

    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error string in {}", self.text))
            .to_string()
    }

    fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    }
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.unwrap();
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        text: resp.text().await.unwrap(),
    }
}

async fn post_as(proxy: &Proxy, content_type: &str, body: impl Into<reqwest::Body>) -> Answer {
    send(
        client()
            .post(proxy.url("/_tagproxy/t"))
            .header("content-type", content_type)
            .header("user-agent", CHROME_UA)
            .body(body),
    )
    .await
}

async fn post(proxy: &Proxy, body: &str) -> Answer {
    post_as(proxy, "application/json", body.to_string()).await
}

/// Asserts a JSON error answer.
fn assert_error(a: &Answer, status: u16, what: &str) {
    assert_eq!(a.status, status, "{what}: {}", a.text);
    assert_eq!(a.content_type(), "application/json", "{what}");
    let obj = a.json();
    assert_eq!(
        obj.as_object().map(|o| o.len()),
        Some(1),
        "{what}: only an error: {obj}"
    );
}

/// `max_event_bytes` is the largest body taken, not one past it: a body of
/// exactly the limit is accepted, one byte more gets `413`, whether the
/// length is declared (`Content-Length`) or only streamed (chunked).
#[tokio::test]
async fn a_body_of_exactly_max_event_bytes_is_taken_and_one_more_byte_is_not() {
    let proxy = Proxy::start_tools(no_origin(), "", &[]).await;
    let sized = |n: usize| {
        let shell = r#"[{"type":"pageview","properties":{"pad":""}}]"#;
        let pad = "x".repeat(n - shell.len());
        format!(r#"[{{"type":"pageview","properties":{{"pad":"{pad}"}}}}]"#)
    };
    let chunked = |body: String| {
        let chunks: Vec<Result<Bytes, std::io::Error>> = body
            .into_bytes()
            .chunks(4096)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
    };
    let exact = sized(65_536);
    assert_eq!(exact.len(), 65_536);
    let a = post(&proxy, &exact).await;
    assert_eq!(a.status, 200, "declared, exactly the limit: {}", a.text);
    let a = post_as(&proxy, "application/json", chunked(exact)).await;
    assert_eq!(a.status, 200, "streamed, exactly the limit: {}", a.text);

    let over = sized(65_537);
    let a = post(&proxy, &over).await;
    assert_error(&a, 413, "declared, one byte over");
    let a = post_as(&proxy, "application/json", chunked(over)).await;
    assert_error(&a, 413, "streamed, one byte over");
}

#[tokio::test]
async fn bad_input_gets_its_status_and_error_text_and_nothing_is_delivered() {
    let ga = Destination::start().await;
    let proxy = Proxy::start_tools(no_origin(), "", &[("ga4", ga4_tool(&ga))]).await;

    // Invalid JSON.
    let a = post(&proxy, "{\"type\": \"pageview\",").await;
    assert_error(&a, 400, "invalid JSON");
    assert!(
        a.error().starts_with("invalid JSON: EOF while parsing"),
        "{}",
        a.error()
    );
    let a = post(&proxy, "not json").await;
    assert_error(&a, 400, "not JSON");
    assert!(
        a.error()
            .starts_with("invalid JSON: expected ident at line 1 column 2"),
        "{}",
        a.error()
    );

    // Wrong types, named by event index and field.
    let mut bad = pageview("evt_bad_tz_00001");
    bad["device"]["tz_offset"] = json!("-60");
    let a = post(&proxy, &json!([bad]).to_string()).await;
    assert_error(&a, 400, "tz_offset");
    assert_eq!(
        a.error(),
        "[0].device.tz_offset: invalid type: string \"-60\", expected i64"
    );
    let mut bad = pageview("evt_bad_props_001");
    bad["properties"] = json!(["a"]);
    let a = post(
        &proxy,
        &json!([pageview("evt_good_000001"), bad]).to_string(),
    )
    .await;
    assert_error(&a, 400, "properties");
    assert!(
        a.error()
            .starts_with("[1].properties: invalid type: sequence, expected a map"),
        "{}",
        a.error()
    );
    let a = post(&proxy, r#"{"type": "track", "name": 42}"#).await;
    assert_error(&a, 400, "name");
    assert!(
        a.error()
            .starts_with("[0].name: invalid type: integer `42`, expected a string"),
        "{}",
        a.error()
    );
    let a = post(&proxy, "[1, 2]").await;
    assert_error(&a, 400, "not objects");
    assert!(
        a.error().starts_with("[0]: invalid type: integer `1`"),
        "{}",
        a.error()
    );
    let a = post(&proxy, "\"pageview\"").await;
    assert_error(&a, 400, "a string");
    assert_eq!(
        a.error(),
        "the body must be an event object or an array of events, not a string"
    );

    // Unknown type (after a valid event: the whole batch is refused).
    let a = post(
        &proxy,
        &json!([pageview("evt_good_000002"), {"type": "rocket"}]).to_string(),
    )
    .await;
    assert_error(&a, 400, "unknown type");
    assert_eq!(
        a.error(),
        "[1].type: unknown variant `rocket`, expected one of `pageview`, `track`, `ecommerce`, `set`"
    );

    // 51 events.
    let many: Vec<Value> = (0..51)
        .map(|i| pageview(&format!("evt_many_{i:06}")))
        .collect();
    let a = post(&proxy, &Value::Array(many).to_string()).await;
    assert_error(&a, 400, "51 events");
    assert_eq!(a.error(), "too many events: 51 (at most 50 per request)");

    // 1 MB, with Content-Length and chunked without it.
    let big = format!(
        "[{{\"type\":\"pageview\",\"properties\":{{\"pad\":\"{}\"}}}}]",
        "x".repeat(1 << 20)
    );
    let a = post(&proxy, &big).await;
    assert_error(&a, 413, "1 MB with Content-Length");
    assert_eq!(a.error(), "body larger than 65536 bytes (max_event_bytes)");
    let chunks: Vec<Result<Bytes, std::io::Error>> = big
        .into_bytes()
        .chunks(16 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let a = post_as(
        &proxy,
        "application/json",
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
    )
    .await;
    assert_error(&a, 413, "1 MB chunked");
    assert_eq!(a.error(), "body larger than 65536 bytes (max_event_bytes)");

    // Not JSON or text/plain.
    let a = post_as(&proxy, "text/xml", "<event type=\"pageview\"/>").await;
    assert_error(&a, 415, "text/xml");
    assert_eq!(
        a.error(),
        "unsupported content type \"text/xml\": send application/json (or text/plain from sendBeacon)"
    );
    let a = send(
        client()
            .post(proxy.url("/_tagproxy/t"))
            .body(pageview("evt_no_ctype_0001").to_string()),
    )
    .await;
    assert_error(&a, 415, "no content type");

    // Not POST.
    let a = send(client().get(proxy.url("/_tagproxy/t"))).await;
    assert_error(&a, 405, "GET");
    assert_eq!(a.error(), "use POST");
    assert_eq!(a.headers["allow"], "POST");

    // None of it reached the destination.
    proxy.settled().await;
    assert_eq!(ga.requests().len(), 0, "{:#?}", ga.requests());

    // And the same proxy does deliver a good batch.
    let a = post(&proxy, &json!([pageview("evt_good_000003")]).to_string()).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.content_type(), "application/json");
    assert_eq!(
        a.json(),
        json!({"ok": true, "events": 1, "instructions": []})
    );
    let hits = ga.wait_for(1, Duration::from_secs(10)).await;
    validate::ga4(&hits[0], CHROME_UA).unwrap();
    proxy.settled().await;
    assert_eq!(ga.requests().len(), 1);
}

#[tokio::test]
async fn a_batch_of_exactly_fifty_events_is_accepted() {
    let ga = Destination::start().await;
    let proxy = Proxy::start_tools(no_origin(), "", &[("ga4", ga4_tool(&ga))]).await;
    let many: Vec<Value> = (0..50)
        .map(|i| pageview(&format!("evt_fifty_{i:06}")))
        .collect();
    let a = post(&proxy, &Value::Array(many).to_string()).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json()["events"], 50);
    let hits = ga.wait_for(50, Duration::from_secs(10)).await;
    for h in &hits {
        validate::ga4(h, CHROME_UA).unwrap();
    }
}

/// Posts one pageview with `headers` and returns what GA4 and the http tool
/// saw as the visitor IP.
async fn seen_ip(
    proxy: &Proxy,
    ga: &Destination,
    hook: &Destination,
    headers: &[(&str, &str)],
) -> (String, Value) {
    let n = ga.requests().len();
    let mut req = client()
        .post(proxy.url("/_tagproxy/t"))
        .header("content-type", "application/json")
        .header("user-agent", CHROME_UA);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    // A fresh id per call: the same id again would be a retry, delivered once.
    let id = format!("evt_ip_{n:09}");
    let a = send(req.body(json!([pageview(&id)]).to_string())).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let hit = ga.wait_for(n + 1, Duration::from_secs(10)).await[n].clone();
    validate::ga4(&hit, CHROME_UA).unwrap();
    let body = hook.wait_for(n + 1, Duration::from_secs(10)).await[n].json();
    (hit.param("_uip").unwrap(), body["system"]["device"].clone())
}

#[tokio::test]
async fn x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let ga = Destination::start().await;
    let hook = Destination::start().await;
    let proxy = Proxy::start_tools(
        no_origin(),
        "trusted_proxies = [\"10.0.0.0/8\"]\n",
        &[("ga4", ga4_tool(&ga)), ("hook", http_tool(&hook))],
    )
    .await;
    let (uip, device) = seen_ip(
        &proxy,
        &ga,
        &hook,
        &[("x-forwarded-for", "6.6.6.6"), ("cf-ipcountry", "DE")],
    )
    .await;
    assert_eq!(uip, "127.0.0.1");
    assert_eq!(device["ip"], "127.0.0.1");
    // Location headers are believed only from trusted proxies too.
    assert_eq!(device["location"], json!({}), "{device}");
}

#[tokio::test]
async fn x_forwarded_for_from_a_trusted_peer_gives_the_visitor_ip() {
    let ga = Destination::start().await;
    let hook = Destination::start().await;
    let proxy = Proxy::start_tools(
        no_origin(),
        "trusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\"]\n",
        &[("ga4", ga4_tool(&ga)), ("hook", http_tool(&hook))],
    )
    .await;
    let (uip, device) = seen_ip(
        &proxy,
        &ga,
        &hook,
        &[("x-forwarded-for", "6.6.6.6"), ("cf-ipcountry", "DE")],
    )
    .await;
    assert_eq!(uip, "6.6.6.6");
    assert_eq!(device["ip"], "6.6.6.6");
    assert_eq!(device["location"]["country"], "DE");
    assert_eq!(device["location"]["isEUCountry"], true);
    // The right-most hop that is not a trusted proxy: a client-supplied
    // left-most entry is not believed.
    let (uip, _) = seen_ip(
        &proxy,
        &ga,
        &hook,
        &[("x-forwarded-for", "1.1.1.1, 6.6.6.6, 10.1.2.3")],
    )
    .await;
    assert_eq!(uip, "6.6.6.6");
}

fn cookie_value<'a>(cookies: &'a [String], name: &str) -> &'a str {
    cookies
        .iter()
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {cookies:?}"))
        .split(';')
        .next()
        .unwrap()
}

#[tokio::test]
async fn identity_cookies_keep_the_client_and_session() {
    let ga = Destination::start().await;
    let proxy = Proxy::start_tools(no_origin(), "", &[("ga4", ga4_tool(&ga))]).await;
    let a = post(&proxy, &json!([pageview("evt_cookie_00001")]).to_string()).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let cookies = a.cookies();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    let cid = cookie_value(&cookies, "tp_cid").to_string();
    let sid = cookie_value(&cookies, "tp_sid").to_string();
    assert_eq!(
        cookies[0],
        format!("tp_cid={cid}; Path=/; Max-Age=31536000; SameSite=Lax; Domain=example.com; Secure")
    );
    assert_eq!(
        cookies[1],
        format!("tp_sid={sid}; Path=/; Max-Age=1800; SameSite=Lax; Domain=example.com; Secure")
    );
    let first = ga.wait_for(1, Duration::from_secs(10)).await[0].clone();
    validate::ga4(&first, CHROME_UA).unwrap();
    let p = |r: &Recorded, k: &str| r.param(k).unwrap_or_default();
    assert_eq!(format!("{}.1", p(&first, "cid")), cid);
    // `<session id>.<hits>.<page views>.<started ms>.<flags>`.
    let parts: Vec<&str> = sid.split('.').collect();
    assert_eq!(parts.len(), 5, "{sid}");
    assert_eq!(parts[..3], [p(&first, "sid").as_str(), "1", "1"], "{sid}");
    let started_ms: u64 = parts[3].parse().unwrap();
    assert_eq!(started_ms / 1000, p(&first, "sid").parse::<u64>().unwrap());
    assert_eq!(parts[4], "0");
    assert_eq!(
        (
            p(&first, "_s"),
            p(&first, "_ss"),
            p(&first, "_fv"),
            p(&first, "sct")
        ),
        ("1".into(), "1".into(), "1".into(), "1".into())
    );

    // The browser sends them back: same client, same session, next hit.
    let a = send(
        client()
            .post(proxy.url("/_tagproxy/t"))
            .header("content-type", "application/json")
            .header("user-agent", CHROME_UA)
            .header("cookie", format!("tp_cid={cid}; tp_sid={sid}"))
            .body(json!([pageview("evt_cookie_00002"), pageview("evt_cookie_00003")]).to_string()),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let again = a.cookies();
    assert_eq!(cookie_value(&again, "tp_cid"), cid);
    let session = sid.split('.').next().unwrap();
    assert_eq!(
        cookie_value(&again, "tp_sid"),
        format!("{session}.3.3.{started_ms}.0")
    );
    let hits = ga.wait_for(3, Duration::from_secs(10)).await;
    let mut later: Vec<&Recorded> = hits[1..].iter().collect();
    later.sort_by_key(|r| p(r, "_s"));
    for (r, hit) in later.iter().zip(["2", "3"]) {
        validate::ga4(r, CHROME_UA).unwrap();
        assert_eq!(p(r, "cid"), p(&first, "cid"));
        assert_eq!(p(r, "sid"), p(&first, "sid"));
        assert_eq!(p(r, "sct"), "1");
        assert_eq!(p(r, "_s"), hit);
        assert_eq!(r.param("_ss"), None);
        assert_eq!(r.param("_fv"), None);
    }

    // The session cookie expired: same client, a second session.
    let a = send(
        client()
            .post(proxy.url("/_tagproxy/t"))
            .header("content-type", "application/json")
            .header("user-agent", CHROME_UA)
            .header("cookie", format!("tp_cid={cid}"))
            .body(json!([pageview("evt_cookie_00004")]).to_string()),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let hit = ga.wait_for(4, Duration::from_secs(10)).await[3].clone();
    assert_eq!(p(&hit, "cid"), p(&first, "cid"));
    assert_eq!(p(&hit, "sct"), "2");
    assert_eq!(p(&hit, "_ss"), "1");
    assert_eq!(hit.param("_fv"), None);
    assert!(cookie_value(&a.cookies(), "tp_cid").ends_with(".2"));
}

#[tokio::test]
async fn a_send_beacon_text_plain_body_is_accepted() {
    let ga = Destination::start().await;
    let proxy = Proxy::start_tools(no_origin(), "", &[("ga4", ga4_tool(&ga))]).await;
    let track = json!({
        "type": "track", "name": "signup", "properties": {"method": "email"},
        "page": {"url": PAGE, "title": "Mug", "referrer": ""},
        "device": {"viewport": "1280x720", "resolution": "1920x1080", "language": "en-US", "tz_offset": 0},
        "ts": 1_732_450_000_000u64, "id": "evt_beacon_000001",
    });
    let a = post_as(
        &proxy,
        "text/plain;charset=UTF-8",
        json!([track]).to_string(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.content_type(), "application/json");
    assert_eq!(a.json()["events"], 1);
    let hit = &ga.wait_for(1, Duration::from_secs(10)).await[0];
    validate::ga4(hit, CHROME_UA).unwrap();
    assert_eq!(hit.param("en").unwrap(), "signup");
    assert_eq!(hit.param("ep.method").unwrap(), "email");
    assert_eq!(hit.param("ep.event_id").unwrap(), "evt_beacon_000001");
}

/// The browser retries a batch whose answer it lost with the same event
/// ids: the retry is answered, and delivered once.
#[tokio::test]
async fn a_retried_batch_is_delivered_once() {
    let dest = Destination::start().await;
    let hook = format!(
        "type = \"http\"\n[settings]\nurl = \"{}/hook\"\n[automated]\npageview = true\ntrack = true\n",
        dest.url()
    );
    let proxy = Proxy::start_tools(no_origin(), "", &[("hook", hook)]).await;
    let batch = json!([
        {"type": "pageview", "id": "retry-evt-000001", "page": {"url": "https://shop.test/"}},
        {"type": "track", "name": "signup", "id": "retry-evt-000002", "page": {"url": "https://shop.test/"}},
        // No client id: a fresh one each time, so both sends deliver it.
        {"type": "track", "name": "no_id", "page": {"url": "https://shop.test/"}},
    ])
    .to_string();
    for _ in 0..2 {
        let resp = client()
            .post(proxy.url("/_tagproxy/t"))
            .header("content-type", "application/json")
            .body(batch.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["events"], 3);
    }
    dest.wait_for(4, Duration::from_secs(10)).await;
    proxy.settled().await;
    let mut names: Vec<String> = dest
        .requests()
        .iter()
        .map(|r| r.json()["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["Pageview", "no_id", "no_id", "signup"]);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("tagproxy_events_duplicate_total 2\n"),
        "{metrics}"
    );
}
