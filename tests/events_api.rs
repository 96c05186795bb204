//! The HTTP Events API, `POST /_tagproxy/api/events`, end to end against the
//! real binary: a server-side event reaches the GA4 and Meta mocks exactly
//! as the same browser event does through the collector, consent and bots
//! apply per event, results come one per event in order, bad calls are
//! refused whole with nothing delivered, and the endpoint needs a Bearer
//! token with `events:write`.
//!
//! Body and answer shape: Cloudflare's "HTTP Events API" page,
//! <https://developers.cloudflare.com/zaraz/http-events-api/> (an `events`
//! array of `{client, system}` objects; `client.__zarazTrack` is the event
//! name, `client.__zarazEcommerce: true` an ecommerce event; one Result
//! Object per Event Object, in order, with `fetch`, `execute`, `return` and
//! `cookies`).

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const CHROME_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const GOOGLEBOT_UA: &str =
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const PIXEL: &str = "1234567890";
const META_TOKEN: &str = "tok-secret-4f1c2e";
const PAGE: &str = "https://shop.example.com/checkout?step=2";
const WAIT: Duration = Duration::from_secs(15);

/// The proxy never reaches its origin in these tests.
fn no_origin() -> SocketAddr {
    "127.0.0.1:9".parse().unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn ga4_tool(dest: &Destination, purposes: &str) -> String {
    format!(
        "type = \"google-analytics-4\"\nendpoint = \"{}\"\npurposes = [{purposes}]\n[settings]\nmeasurement_id = \"G-TEST123\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        dest.url()
    )
}

fn meta_tool(dest: &Destination, purposes: &str) -> String {
    format!(
        "type = \"facebook-pixel\"\nendpoint = \"{}\"\npurposes = [{purposes}]\n[settings]\npixel_id = \"{PIXEL}\"\naccess_token = \"{{{{ $meta_token }}}}\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        dest.url()
    )
}

/// An `http` tool posting every track event to `base/hook`.
fn hook_tool(dest: &Destination) -> String {
    format!(
        "type = \"http\"\n[settings]\nurl = \"{}/hook\"\n[automated]\ntrack = true\n",
        dest.url()
    )
}

/// The real binary with these tool files; `extra` goes after `[server]`.
async fn start(server_extra: &str, extra: &str, tools: &[(&str, String)]) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    for (id, text) in tools {
        std::fs::write(dir.path().join("tools").join(format!("{id}.toml")), text).unwrap();
    }
    let text = format!(
        "[server]\n{LISTEN_ANY}\nupstream = \"http://{}\"\n{server_extra}\n[variables]\nmeta_token = {{ secret = \"META\" }}\n[delivery]\nretry_base_ms = 50\n{extra}\n",
        no_origin()
    );
    let path = dir.path().join("tagproxy.toml");
    std::fs::write(&path, text).unwrap();
    Proxy::spawn(dir, path, &[("TAGPROXY_SECRET_META", META_TOKEN)]).await
}

/// Runs `tagproxy token …` on the proxy's config; stdout, after checking
/// the command succeeded.
fn token_cli(proxy: &Proxy, args: &[&str]) -> String {
    let out = std::process::Command::new(bin())
        .arg("token")
        .args(args)
        .arg("-c")
        .arg(&proxy.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tagproxy token {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A new token made with `tagproxy token create` in the proxy's `data_dir`
/// (the store the running server reads): its secret, printed alone on the
/// first line.
fn token(proxy: &Proxy, name: &str, scopes: &str) -> String {
    let out = token_cli(proxy, &["create", "--name", name, "--scopes", scopes]);
    out.lines().next().unwrap().trim().to_string()
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Value,
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("answer {text:?}: {e}"));
    Answer {
        status,
        headers,
        body,
    }
}

/// POSTs a raw body to the events API, as a server would (no browser
/// headers).
async fn api_raw(proxy: &Proxy, secret: Option<&str>, content_type: &str, body: String) -> Answer {
    let mut req = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(proxy.url("/_tagproxy/api/events"))
        .header("content-type", content_type)
        .body(body);
    if let Some(s) = secret {
        req = req.bearer_auth(s);
    }
    answer(req.send().await.unwrap()).await
}

async fn api(proxy: &Proxy, secret: &str, body: &Value) -> Answer {
    api_raw(proxy, Some(secret), "application/json", body.to_string()).await
}

/// The `system` object for one visitor.
fn system(ua: &str, cookies: Value) -> Value {
    json!({
        "page": {
            "url": PAGE,
            "title": "Checkout – Demo Shop",
            "referrer": "https://www.google.com/",
            "encoding": "UTF-8",
        },
        "device": {
            "ip": "203.0.113.7",
            "language": "en-US",
            "resolution": "1920x1080",
            "viewport": "1280x720",
            "user-agent": ua,
        },
        "cookies": cookies,
    })
}

/// Every Conversions API event the Meta mock received, in order.
fn meta_events(meta: &Destination) -> Vec<Value> {
    meta.requests()
        .iter()
        .flat_map(|r| r.json()["data"].as_array().unwrap().clone())
        .collect()
}

async fn wait_meta_events(meta: &Destination, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let got = meta_events(meta);
        if got.len() >= n {
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {n} Meta events, got {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A GA4 hit: `en`, its parameters in order, its User-Agent.
type Hit = (String, Vec<(String, String)>, String);

/// GA4 hits' parameters without the event id (which differs by design
/// between the two paths), sorted by `en`.
fn ga4_hits(requests: &[Recorded]) -> Vec<Hit> {
    let mut hits: Vec<_> = requests
        .iter()
        .map(|r| {
            let params: Vec<(String, String)> = r
                .query()
                .into_iter()
                .filter(|(k, _)| k != "ep.event_id")
                .collect();
            let ua = r.headers["user-agent"].to_str().unwrap().to_string();
            (r.param("en").unwrap(), params, ua)
        })
        .collect();
    hits.sort();
    hits
}

/// Meta events without `event_id`, keyed by `event_name`.
fn meta_by_name(events: &[Value]) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.as_object_mut().unwrap().remove("event_id");
            (e["event_name"].as_str().unwrap().to_string(), e)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The same track and ecommerce events, once from the browser through the
/// collector and once from a server through the events API with the same
/// page, device, address, User-Agent and cookies: GA4 and Meta receive the
/// same fields (the event ids aside, which are each path's own), and the
/// API's results carry what the collector answered: its instructions as
/// `fetch`, its `Set-Cookie`s as `cookies`.
#[tokio::test]
async fn a_server_event_reaches_ga4_and_meta_exactly_as_the_browser_event() {
    let ga = Destination::start().await;
    let meta = Destination::start().await;
    let proxy = start(
        "",
        "",
        &[("ga4", ga4_tool(&ga, "")), ("meta", meta_tool(&meta, ""))],
    )
    .await;
    let secret = token(&proxy, "shop-backend", "events:write");

    // A returning visitor, 60 s into an engaged session.
    let now = now_ms();
    let cookies = json!({
        "tp_cid": "1234567890.1700000000.3",
        "tp_sid": format!("{}.4.2.{}.0", now / 1000 - 60, now - 60_000),
        "_ga": "GA1.1.1234567890.1700000000",
        "_fbp": "fb.1.1700000000000.987654321",
    });
    let cookie_header = cookies
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect::<Vec<_>>()
        .join("; ");
    let ts = now - 5_000;
    let signup = json!({"method": "email", "plan": "pro"});
    let order = json!({
        "order_id": "A-1001",
        "total": 42.5,
        "currency": "EUR",
        "products": [{"product_id": "SKU-1", "name": "Blue Mug", "price": 21.25, "quantity": 2}],
    });

    // The browser: zaraz.track + zaraz.ecommerce in one batch.
    let sys = system(CHROME_UA, cookies.clone());
    let browser_event = |kind: &str, name: &str, props: &Value, id: &str| {
        json!({
            "type": kind, "name": name, "properties": props,
            "page": sys["page"], "id": id, "ts": ts,
            "device": {"viewport": "1280x720", "resolution": "1920x1080", "language": "en-US"},
        })
    };
    let batch = json!([
        browser_event("track", "signup", &signup, "browser-signup-0001"),
        browser_event("ecommerce", "Order Completed", &order, "browser-order-0001"),
    ]);
    let collected = answer(
        client()
            .post(proxy.url("/_tagproxy/t"))
            .header("content-type", "application/json")
            .header("user-agent", CHROME_UA)
            .header("cookie", &cookie_header)
            .header("x-forwarded-for", "203.0.113.7")
            .body(batch.to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(collected.status, 200, "{}", collected.body);
    ga.wait_for(2, WAIT).await;
    wait_meta_events(&meta, 2).await;

    // The server: the same two events.
    let with = |mut client: Value, name: &str, ecommerce: bool, id: &str| {
        client["__zarazTrack"] = json!(name);
        if ecommerce {
            client["__zarazEcommerce"] = json!(true);
        }
        json!({"client": client, "system": sys, "id": id, "ts": ts})
    };
    let call = json!({"events": [
        with(signup.clone(), "signup", false, "server-signup-0001"),
        with(order.clone(), "Order Completed", true, "server-order-0001"),
    ]});
    let served = api(&proxy, &secret, &call).await;
    assert_eq!(served.status, 200, "{}", served.body);
    let all_ga = ga.wait_for(4, WAIT).await;
    let all_meta = wait_meta_events(&meta, 4).await;
    proxy.settled().await;
    assert_eq!(ga.requests().len(), 4);
    assert_eq!(meta_events(&meta).len(), 4);

    // GA4: the same hits, parameter by parameter, in the same order, and the
    // visitor's User-Agent.
    let browser_hits = ga4_hits(&all_ga[..2]);
    let server_hits = ga4_hits(&all_ga[2..]);
    assert_eq!(server_hits, browser_hits);
    let names: Vec<&str> = server_hits.iter().map(|h| h.0.as_str()).collect();
    assert_eq!(names, ["purchase", "signup"]);
    for (_, params, ua) in &server_hits {
        let p = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(p("cid"), Some("1234567890.1700000000"));
        assert_eq!(p("_uip"), Some("203.0.113.7"));
        assert_eq!(p("dl"), Some(PAGE));
        assert_eq!(ua, CHROME_UA);
    }
    let ids: BTreeSet<String> = all_ga[2..]
        .iter()
        .map(|r| r.param("ep.event_id").unwrap())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from(["server-order-0001".into(), "server-signup-0001".into()])
    );

    // Meta: the same Conversions API events, field by field.
    let browser_meta = meta_by_name(&all_meta[..2]);
    let server_meta = meta_by_name(&all_meta[2..]);
    assert_eq!(server_meta, browser_meta);
    let purchase = &server_meta[0].1;
    assert_eq!(purchase["event_name"], "Purchase");
    assert_eq!(purchase["event_time"], json!(ts / 1000));
    assert_eq!(purchase["user_data"]["client_ip_address"], "203.0.113.7");
    assert_eq!(purchase["user_data"]["client_user_agent"], CHROME_UA);
    assert_eq!(purchase["user_data"]["fbp"], "fb.1.1700000000000.987654321");
    assert_eq!(purchase["custom_data"]["value"], json!(42.5));
    let server_ids: BTreeSet<&str> = all_meta[2..]
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        server_ids,
        BTreeSet::from(["server-order-0001", "server-signup-0001"])
    );

    // The answer: one result per event, in order, with the collector's
    // instructions as `fetch` and its Set-Cookie headers as `cookies`.
    let results = served.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["id"], "server-signup-0001");
    assert_eq!(results[1]["id"], "server-order-0001");
    let set_cookies: BTreeSet<String> = collected
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        set_cookies.iter().any(|c| c.starts_with("_fbp=")),
        "{set_cookies:?}"
    );
    for r in results {
        assert_eq!(r["fetch"], collected.body["instructions"], "{r}");
        assert_eq!(r["execute"], json!([]));
        assert_eq!(r["return"], json!({}));
        assert!(r.get("dropped").is_none(), "{r}");
        let cookies = r["cookies"].as_object().unwrap();
        let got: BTreeSet<String> = cookies
            .values()
            .map(|c| c["set_cookie"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, set_cookies, "{r}");
        assert_eq!(cookies["_fbp"]["value"], "fb.1.1700000000000.987654321");
        assert_eq!(cookies["_fbp"]["max_age"], 90 * 24 * 3600);
        assert!(cookies["tp_cid"]["value"]
            .as_str()
            .unwrap()
            .starts_with("1234567890.1700000000."));
    }
    // Not Set-Cookie headers: the caller is a server.
    assert!(served.headers.get("set-cookie").is_none());
}

const CONSENT: &str = r#"
[consent]
enabled = true
[[consent.purposes]]
id = "analytics"
name = "Analytics"
[[consent.purposes]]
id = "marketing"
name = "Marketing"
"#;

/// Per event: consent from its `cf_consent` cookie withholds Meta (and
/// Meta's cookies) from a visitor who refused marketing; a bot's event
/// (judged on its supplied User-Agent) reaches nobody; a repeated event id
/// is a duplicate. Results come one per event, in the call's order.
#[tokio::test]
async fn consent_bots_and_duplicates_apply_per_event_and_results_keep_order() {
    let ga = Destination::start().await;
    let meta = Destination::start().await;
    let proxy = start(
        "",
        CONSENT,
        &[
            ("ga4", ga4_tool(&ga, "\"analytics\"")),
            ("meta", meta_tool(&meta, "\"marketing\"")),
        ],
    )
    .await;
    let secret = token(&proxy, "backend", "events:write");
    let analytics_only =
        json!({"cf_consent": "%7B%22analytics%22%3Atrue%2C%22marketing%22%3Afalse%7D"});
    let everything = json!({"cf_consent": "%7B%22analytics%22%3Atrue%2C%22marketing%22%3Atrue%7D"});
    let event = |name: &str, id: &str, ua: &str, cookies: &Value| json!({"client": {"__zarazTrack": name}, "system": system(ua, cookies.clone()), "id": id});
    let call = json!({"events": [
        event("analytics_only", "ev-analytics-01", CHROME_UA, &analytics_only),
        event("from_a_bot", "ev-bot-000001", GOOGLEBOT_UA, &everything),
        event("everyone", "ev-everyone-01", CHROME_UA, &everything),
    ]});
    let a = api(&proxy, &secret, &call).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let results = a.body["results"].as_array().unwrap();
    let ids: Vec<&str> = results.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["ev-analytics-01", "ev-bot-000001", "ev-everyone-01"]);
    let dropped: Vec<&Value> = results.iter().map(|r| &r["dropped"]).collect();
    assert_eq!(dropped, [&Value::Null, &json!("bot"), &Value::Null]);
    // Meta's cookie only where Meta had consent.
    assert!(
        results[0]["cookies"].get("_fbp").is_none(),
        "{}",
        results[0]
    );
    assert!(
        results[1]["cookies"].get("_fbp").is_none(),
        "{}",
        results[1]
    );
    assert!(
        results[2]["cookies"].get("_fbp").is_some(),
        "{}",
        results[2]
    );

    // The same event again: answered, not delivered twice.
    let again = api(
        &proxy,
        &secret,
        &json!({"events": [event("everyone", "ev-everyone-01", CHROME_UA, &everything)]}),
    )
    .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["results"][0]["dropped"], "duplicate");

    // Everything queued has arrived: what is missing was never sent.
    proxy.settled().await;
    let mut ga_names: Vec<String> = ga
        .requests()
        .iter()
        .map(|r| r.param("en").unwrap())
        .collect();
    ga_names.sort();
    assert_eq!(ga_names, ["analytics_only", "everyone"]);
    let meta_names: Vec<Value> = meta_events(&meta)
        .iter()
        .map(|e| e["event_name"].clone())
        .collect();
    assert_eq!(meta_names, [json!("everyone")]);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("tagproxy_bot_events_dropped_total{reason=\"crawler-user-agents\"} 1\n")
            || metrics.contains("tagproxy_bot_events_dropped_total{reason=\"woothee\"} 1\n"),
        "{metrics}"
    );
}

/// Bad calls are refused whole, with the status and a message that says
/// what and where, and nothing of them is delivered; a good call afterwards
/// is (the positive marker).
#[tokio::test]
async fn bad_calls_are_refused_whole_and_deliver_nothing() {
    let dest = Destination::start().await;
    let proxy = start("max_event_bytes = 1024", "", &[("hook", hook_tool(&dest))]).await;
    let secret = token(&proxy, "backend", "events:write");
    let good = |name: &str| json!({"client": {"__zarazTrack": name}, "system": system(CHROME_UA, json!({}))});
    let call_of = |events: Vec<Value>| json!({ "events": events }).to_string();

    // Not a POST: 405 with Allow.
    let got = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(proxy.url("/_tagproxy/api/events"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 405);
    assert_eq!(got.headers()["allow"], "POST");

    let cases: Vec<(&str, String, u16, String)> = vec![
        (
            "text/plain",
            call_of(vec![good("x")]),
            415,
            "unsupported content type \"text/plain\"".into(),
        ),
        (
            "application/json",
            "{\"events\": [".into(),
            400,
            "invalid JSON: ".into(),
        ),
        (
            "application/json",
            "{}".into(),
            400,
            "events: required".into(),
        ),
        (
            "application/json",
            r#"{"events": "signup"}"#.into(),
            400,
            "events: must be an array of event objects, not a string".into(),
        ),
        (
            "application/json",
            r#"{"events": []}"#.into(),
            400,
            "events: the array holds no events".into(),
        ),
        // The issue's case: 1,000 events in one call.
        (
            "application/json",
            call_of(vec![json!({"client": {"__zarazTrack": "bulk"}}); 1000]),
            413,
            "too many events: 1000 (at most 100 per call)".into(),
        ),
        // One bad event among good ones: the whole call, naming it.
        (
            "application/json",
            {
                let mut events = vec![good("first"); 60];
                events[57] = json!({"client": {"value": "200"}});
                call_of(events)
            },
            400,
            "events[57].client.__zarazTrack: required".into(),
        ),
        (
            "application/json",
            {
                let mut events = vec![good("first"); 3];
                events[2]["client"]["value"] = json!({"nested": [1, {"x": null}], "deep": true});
                events[1]["system"]["device"]["resolution"] = json!(1920);
                call_of(events)
            },
            400,
            "events[1].system.device.resolution: invalid type: integer `1920`".into(),
        ),
        // One event over max_event_bytes (1024 here).
        (
            "application/json",
            {
                let mut events = vec![good("first"); 2];
                events[1]["client"]["blob"] = json!("x".repeat(2000));
                call_of(events)
            },
            413,
            "events[1]: ".into(),
        ),
        // The body over 100 × max_event_bytes.
        (
            "application/json",
            format!(r#"{{"events": [], "pad": "{}"}}"#, "x".repeat(110_000)),
            413,
            "body larger than 102400 bytes (100 × max_event_bytes)".into(),
        ),
    ];
    for (content_type, body, status, message) in cases {
        let a = api_raw(&proxy, Some(&secret), content_type, body).await;
        let error = a.body["error"].as_str().unwrap_or_default();
        assert_eq!(a.status, status, "{message}: {}", a.body);
        assert!(
            error.starts_with(&message),
            "{error:?} should start with {message:?}"
        );
    }

    // Nothing was queued; then a good call is delivered, and only it.
    assert_eq!(proxy.settled().await, 0);
    assert!(dest.requests().is_empty());
    let ok = api(&proxy, &secret, &json!({"events": [good("marker")]})).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let got = dest.wait_for(1, WAIT).await;
    proxy.settled().await;
    assert_eq!(dest.requests().len(), 1);
    assert_eq!(got[0].json()["client"]["__zarazTrack"], "marker");
}

/// Zaraz's endpoint is open; ours needs a token with `events:write`:
/// `401` without one or with a bad, unknown or revoked one (before the body
/// is even looked at), `403` with a token lacking the scope.
#[tokio::test]
async fn the_endpoint_needs_a_token_with_events_write() {
    let dest = Destination::start().await;
    let proxy = start("", "", &[("hook", hook_tool(&dest))]).await;
    let writer = token(&proxy, "backend", "events:write");
    let reader = token(&proxy, "dashboard", "events:read,config:read");
    let call = json!({"events": [{"client": {"__zarazTrack": "signup"}, "system": system(CHROME_UA, json!({}))}]}).to_string();

    let none = api_raw(&proxy, None, "application/json", call.clone()).await;
    assert_eq!(none.status, 401, "{}", none.body);
    assert!(none.body["error"]
        .as_str()
        .unwrap()
        .starts_with("missing token"));
    assert!(none.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    // Refused before the body: an invalid body is still a 401.
    let unread = api_raw(&proxy, None, "text/plain", "{nope".into()).await;
    assert_eq!(unread.status, 401);

    let garbage = api_raw(
        &proxy,
        Some("not-a-token"),
        "application/json",
        call.clone(),
    )
    .await;
    assert_eq!(garbage.status, 401);
    assert_eq!(garbage.body["error"], "malformed token");

    let forbidden = api_raw(&proxy, Some(&reader), "application/json", call.clone()).await;
    assert_eq!(forbidden.status, 403, "{}", forbidden.body);
    assert_eq!(
        forbidden.body["error"],
        "token \"dashboard\" lacks the scope events:write"
    );

    let ok = api_raw(&proxy, Some(&writer), "application/json", call.clone()).await;
    assert_eq!(ok.status, 200, "{}", ok.body);

    // Revoked with the CLI: refused at once.
    let listed = token_cli(&proxy, &["list", "--json"]);
    let id = listed
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|t| t["name"] == "backend")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    token_cli(&proxy, &["revoke", &id]);
    let revoked = api_raw(&proxy, Some(&writer), "application/json", call).await;
    assert_eq!(revoked.status, 401, "{}", revoked.body);

    // Only the authorised call was delivered.
    proxy.settled().await;
    assert_eq!(dest.requests().len(), 1);
}

/// Durable like the collector: a call answered `200` is in the spool, so a
/// `kill -9` loses none of it, and the caller's retry of the same call
/// (same event ids) after the crash is answered but not delivered twice.
#[tokio::test]
async fn an_answered_call_survives_kill_9_and_its_retry_is_delivered_once() {
    // The destination is down (nothing listens) until after the restart.
    let dest_addr = format!("127.0.0.1:{}", free_port());
    let tool = format!(
        "type = \"http\"\n[settings]\nurl = \"http://{dest_addr}/hook\"\n[automated]\necommerce = true\n"
    );
    let mut proxy = start("", "", &[("hook", tool)]).await;
    let secret = token(&proxy, "backend", "events:write");
    let ids: Vec<String> = (0..10).map(|i| format!("order-{i:04}-paid")).collect();
    let call = json!({"events": ids.iter().map(|id| json!({
        "client": {"__zarazTrack": "Order Completed", "__zarazEcommerce": true, "order_id": id},
        "system": system(CHROME_UA, json!({})),
        "id": id,
    })).collect::<Vec<_>>()});
    let first = api(&proxy, &secret, &call).await;
    assert_eq!(first.status, 200, "{}", first.body);

    // The answer was lost (say), the process crashed; the caller retries.
    proxy.restart().await;
    let retry = api(&proxy, &secret, &call).await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    let dropped: Vec<&Value> = retry.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["dropped"])
        .collect();
    assert_eq!(dropped, vec![&json!("duplicate"); 10]);

    let dest = Destination::with_script_at(&dest_addr, Script::default()).await;
    let got = dest.wait_for(10, Duration::from_secs(30)).await;
    proxy.settled().await;
    assert_eq!(dest.requests().len(), 10, "each event once");
    let keys: BTreeSet<String> = got
        .iter()
        .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ids.into_iter().collect());
}

/// TCF mode: the consent of a server event comes from the `euconsent-v2`
/// value in its `system.cookies`, decoded as the collector decodes the
/// browser's cookie. The issue-10 TC string restricts purpose 1 for vendor
/// 8 (tests/consent.rs has the source), so only the vendor-2 tool gets the
/// first event; the second carries no TC string, which grants nothing.
#[tokio::test]
async fn tcf_consent_comes_from_the_supplied_tc_string() {
    let dest = Destination::start().await;
    let hook = |vendor: u32, path: &str| {
        format!(
            "type = \"http\"\npurposes = [\"storage\"]\ntcf_vendor_id = {vendor}\n[settings]\nurl = \"{}{path}\"\n[automated]\ntrack = true\n",
            dest.url()
        )
    };
    let config = "[consent]\nenabled = true\ntcf = true\n[[consent.purposes]]\nid = \"storage\"\nname = \"Store and/or access information on a device\"\ntcf_purposes = [1]\n";
    let proxy = start(
        "",
        config,
        &[
            ("vendor8", hook(8, "/vendor8")),
            ("vendor2", hook(2, "/vendor2")),
        ],
    )
    .await;
    let secret = token(&proxy, "backend", "events:write");
    let fixtures: Value = serde_json::from_str(include_str!("tcf/fixtures.json")).unwrap();
    let tc = fixtures["issue_example"]["tc_string"].as_str().unwrap();
    let call = json!({"events": [
        {"client": {"__zarazTrack": "with_tc"}, "system": system(CHROME_UA, json!({"euconsent-v2": tc}))},
        {"client": {"__zarazTrack": "without_tc"}, "system": system(CHROME_UA, json!({}))},
    ]});
    let a = api(&proxy, &secret, &call).await;
    assert_eq!(a.status, 200, "{}", a.body);
    proxy.settled().await;
    let got = dest.requests();
    let seen: Vec<(&str, Value)> = got
        .iter()
        .map(|r| (r.path(), r.json()["client"]["__zarazTrack"].clone()))
        .collect();
    assert_eq!(seen, [("/vendor2", json!("with_tc"))]);
    assert_eq!(got[0].json()["system"]["consent"]["storage"], true);
}
