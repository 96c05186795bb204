//! Adapters end to end: events posted to the real binary's collector the
//! way the browser script sends them, and what mock GA4, Meta, HTTP and
//! console destinations receive, field by field. Every recorded GA4 and
//! Meta request also passes the validators in `common::validate`.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::validate;
use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const CHROME_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const PIXEL: &str = "1234567890";
const TOKEN: &str = "tok-secret-4f1c2e";
const GA_COOKIE: &str = "GA1.1.1234567890.1700000000";
const FBP_COOKIE: &str = "fb.1.1700000000000.987654321";

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

fn ga4_tool(dest: &Destination, automated: &str) -> String {
    format!(
        "type = \"google-analytics-4\"\nendpoint = \"{}\"\n[settings]\nmeasurement_id = \"G-TEST123\"\n[automated]\n{automated}\n",
        dest.url()
    )
}

fn meta_tool(dest: &Destination) -> String {
    format!(
        "type = \"facebook-pixel\"\nendpoint = \"{}\"\n[settings]\npixel_id = \"{PIXEL}\"\naccess_token = \"{{{{ $meta_token }}}}\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        dest.url()
    )
}

const ALL: &str = "pageview = true\ntrack = true\necommerce = true";

/// Like `Proxy::start_tools`, with environment variables (for secrets).
async fn start(extra: &str, tools: &[(&str, String)], env: &[(&str, &str)]) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    for (id, text) in tools {
        std::fs::write(dir.path().join("tools").join(format!("{id}.toml")), text).unwrap();
    }
    let text = format!(
        "[server]\n{LISTEN_ANY}\nupstream = \"http://{}\"\n{extra}\n",
        no_origin()
    );
    let path = dir.path().join("tagproxy.toml");
    std::fs::write(&path, text).unwrap();
    Proxy::spawn(dir, path, env).await
}

/// GA4 and Meta on their own mocks, fast retries.
async fn start_ga4_meta(ga: &Destination, meta: &Destination) -> Proxy {
    start(
        "[variables]\nmeta_token = { secret = \"META\" }\n[delivery]\nretry_base_ms = 50\n",
        &[("ga4", ga4_tool(ga, ALL)), ("meta", meta_tool(meta))],
        &[("TAGPROXY_SECRET_META", TOKEN)],
    )
    .await
}

/// An event as `zaraz.js` builds it.
fn event(kind: &str, name: Option<&str>, properties: Value, url: &str, id: &str) -> Value {
    let mut e = json!({
        "type": kind,
        "properties": properties,
        "page": {
            "url": url,
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

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Value,
}

/// POSTs a batch to the collector as the script's `fetch` does.
async fn post(proxy: &Proxy, batch: &Value, headers: &[(&str, &str)]) -> Answer {
    let mut req = client()
        .post(proxy.url("/_tagproxy/t"))
        .header("content-type", "application/json")
        .header("user-agent", CHROME_UA)
        .header("origin", "https://shop.example.com")
        .body(batch.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
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

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn assert_ga4_valid(reqs: &[Recorded]) {
    for r in reqs {
        if let Err(e) = validate::ga4(r, CHROME_UA) {
            panic!("invalid GA4 hit {}:\n{e}", r.uri);
        }
    }
}

fn assert_meta_valid(reqs: &[Recorded]) {
    for r in reqs {
        if let Err(e) = validate::meta(r, PIXEL) {
            panic!(
                "invalid Meta request {}:\n{e}\n{}",
                r.uri,
                String::from_utf8_lossy(&r.body)
            );
        }
    }
}

fn param_names(r: &Recorded) -> BTreeSet<String> {
    r.query().into_iter().map(|(k, _)| k).collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Waits until every delivery of the batches posted so far has ended
/// (`Proxy::settled`), so a count of what arrived is final.
async fn settle(proxy: &Proxy) {
    proxy.settled().await;
}

// ---------------------------------------------------------------------------
// The validators themselves: they must reject what the services reject.

fn recorded(method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Recorded {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        map.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    Recorded {
        at: std::time::Instant::now(),
        method: method.into(),
        uri: uri.into(),
        headers: map,
        body: body.to_string().into(),
    }
}

const GOOD_GA4: &str = "/g/collect?v=2&tid=G-TEST123&cid=1234567890.1700000000&sid=1732450000&sct=1&seg=1&_s=1&_ss=1&_fv=1&ul=en-us&sr=1920x1080&dl=https%3A%2F%2Fshop.example.com%2F&dt=Shop&dr=https%3A%2F%2Fwww.google.com%2F&_uip=203.0.113.7&ep.event_id=abc&en=purchase&cu=EUR&ep.transaction_id=A1&epn.value=12.5&pr1=idSKU-1~nmMug~pr12.5~qt1";

#[test]
fn ga4_validator_accepts_a_good_hit() {
    let r = recorded("GET", GOOD_GA4, &[("user-agent", CHROME_UA)], "");
    assert_eq!(validate::ga4(&r, CHROME_UA), Ok(()));
}

#[test]
fn ga4_validator_rejects_every_mistake() {
    let bad = "/g/collect?v=1&tid=UA-123&cid=abc&sid=x&sct=&_s=1&en=1st%20event&sr=big&epn.value=ten&ep.this_parameter_name_is_far_too_long_for_ga4_xx=1&dl=%2Frelative&cu=eur&pr1=SKU-1&pr3=idA~qtmany&zz=1";
    let r = recorded("POST", bad, &[("user-agent", "curl/8")], "");
    let err = validate::ga4(&r, CHROME_UA).unwrap_err();
    for want in [
        "method is POST",
        "User-Agent is \"curl/8\"",
        "v is \"1\"",
        "tid \"UA-123\"",
        "cid \"abc\"",
        "sid \"x\" is not numeric",
        "sct is missing",
        "en \"1st event\" does not match",
        "sr \"big\"",
        "epn.value = \"ten\" is not a number",
        "longer than 40 characters",
        "dl \"/relative\"",
        "cu \"eur\"",
        "pr1 = \"SKU-1\"",
        "pr3 = \"idA~qtmany\": qtmany not an integer",
        "not pr1..prN",
        "unknown parameter zz",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let long_en = GOOD_GA4.replace("en=purchase", &format!("en={}", "a".repeat(41)));
    let r = recorded("GET", &long_en, &[("user-agent", CHROME_UA)], "");
    assert!(validate::ga4(&r, CHROME_UA)
        .unwrap_err()
        .contains("longer than 40"));
    let no_cu = GOOD_GA4.replace("&cu=EUR", "");
    let r = recorded("GET", &no_cu, &[("user-agent", CHROME_UA)], "");
    assert!(validate::ga4(&r, CHROME_UA)
        .unwrap_err()
        .contains("without a currency"));
}

fn good_meta_body() -> Value {
    json!({
        "data": [{
            "event_name": "Purchase",
            "event_time": now_ms() / 1000 - 5,
            "event_id": "evt-1",
            "action_source": "website",
            "event_source_url": "https://shop.example.com/checkout",
            "user_data": {
                "client_ip_address": "203.0.113.7",
                "client_user_agent": CHROME_UA,
                "em": [sha256_hex("joe@example.com")],
                "fbp": FBP_COOKIE,
                "fbc": "fb.1.1700000000000.IwAR_abc",
            },
            "custom_data": {
                "value": 12.5, "currency": "EUR", "content_ids": ["SKU-1"],
                "contents": [{"id": "SKU-1", "quantity": 1, "item_price": 12.5}],
                "num_items": 1, "order_id": "A1",
            },
        }],
        "access_token": TOKEN,
    })
}

fn meta_recorded(body: &Value) -> Recorded {
    recorded(
        "POST",
        &format!("/v21.0/{PIXEL}/events"),
        &[("content-type", "application/json")],
        &body.to_string(),
    )
}

#[test]
fn meta_validator_accepts_a_good_batch() {
    assert_eq!(
        validate::meta(&meta_recorded(&good_meta_body()), PIXEL),
        Ok(())
    );
}

#[test]
fn meta_validator_rejects_every_mistake() {
    let mut b = good_meta_body();
    let e = &mut b["data"][0];
    e["event_time"] = json!(now_ms()); // milliseconds
    e["action_source"] = json!("web");
    e["event_source_url"] = json!("/checkout");
    e["user_data"]["em"] = json!(["joe@example.com"]);
    e["user_data"]["ph"] = json!(sha256_hex("1"));
    e["user_data"]["fn"] = json!([sha256_hex("joe").to_uppercase()]);
    e["user_data"]["fbp"] = json!("fb.1.abc.123");
    e["user_data"]["fbc"] = json!("fbclid=abc");
    e["user_data"]
        .as_object_mut()
        .unwrap()
        .remove("client_user_agent");
    e["custom_data"]["value"] = json!("12.5");
    e["custom_data"]["currency"] = json!("euro");
    e["custom_data"]["contents"] = json!([{"id": "SKU-1"}]);
    e.as_object_mut().unwrap().remove("event_id");
    b.as_object_mut().unwrap().remove("access_token");
    let err = validate::meta(&meta_recorded(&b), PIXEL).unwrap_err();
    for want in [
        "access_token missing",
        "event_time",
        "milliseconds instead of seconds",
        "event_id missing",
        "action_source is Some(String(\"web\"))",
        "event_source_url Some(\"/checkout\")",
        "user_data.em: \"joe@example.com\" is not a lower-case SHA-256",
        "user_data.ph is not a non-empty array",
        "user_data.fn: ",
        "fbp \"fb.1.abc.123\"",
        "fbc \"fbclid=abc\"",
        "client_user_agent missing",
        "custom_data.value \"12.5\" is not a number",
        "currency \"euro\"",
        "contents[0]",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }

    // Old events, empty batches, a wrong path.
    let mut old = good_meta_body();
    old["data"][0]["event_time"] = json!(now_ms() / 1000 - 8 * 24 * 3600);
    let err = validate::meta(&meta_recorded(&old), PIXEL).unwrap_err();
    assert!(err.contains("older than 7 days"), "{err}");
    let empty = json!({"data": [], "access_token": TOKEN});
    let err = validate::meta(&meta_recorded(&empty), PIXEL).unwrap_err();
    assert!(err.contains("not 1..=1000"), "{err}");
    let err = validate::meta(&meta_recorded(&good_meta_body()), "999").unwrap_err();
    assert!(err.contains("not /v21.0/999/events"), "{err}");
}

#[test]
fn meta_validator_rejects_malformed_fbc_and_fbp() {
    // Meta, "ClickID and the fbp and fbc Parameters":
    // https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/fbp-and-fbc/
    for (fbp, fbc) in [
        ("fb.1.1732449000000.", "fb.1.1732449000000."),
        ("fb.1.1732449000000", "fb.1.1732449000000"),
        ("fb.3.1732449000000.1", "fb.3.1732449000000.IwAR"),
        ("fb.1.1732449000.1", "fb.1.1732449000.IwAR"),
        ("fb.1.99999999999999.1", "fb.1.9999999999999.IwAR"),
        ("fb.1.1732449000000.1 2", "fb.1.1732449000000.Iw AR"),
        ("fb.1.1732449000000.IwAR", "fb.1.1732449000000.Iw;AR"),
    ] {
        let mut b = good_meta_body();
        b["data"][0]["user_data"]["fbp"] = json!(fbp);
        b["data"][0]["user_data"]["fbc"] = json!(fbc);
        let err = validate::meta(&meta_recorded(&b), PIXEL).unwrap_err();
        assert!(
            err.contains("user_data.fbp") && err.contains("user_data.fbc"),
            "{fbp} / {fbc}: {err}"
        );
    }
    let mut b = good_meta_body();
    b["data"][0]["user_data"]["fbp"] = json!("fb.2.1732449000000.2147483647");
    b["data"][0]["user_data"]["fbc"] = json!("fb.0.1732449000000.IwZXh0bg.aem_x-Y");
    assert_eq!(validate::meta(&meta_recorded(&b), PIXEL), Ok(()));
}

/// The `Set-Cookie` headers of an answer.
fn set_cookies(answer: &Answer) -> Vec<String> {
    answer
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// The one `Set-Cookie` header for `name` (panics when there are several).
fn set_cookie(answer: &Answer, name: &str) -> Option<String> {
    let all: Vec<String> = set_cookies(answer)
        .into_iter()
        .filter(|c| c.starts_with(&format!("{name}=")))
        .collect();
    assert!(all.len() <= 1, "{name} set {} times: {all:?}", all.len());
    all.into_iter().next()
}

/// What a tool cookie's `Set-Cookie` is over https on shop.example.com:
/// first-party on the registrable domain (as `tp_cid`), 90 days (Meta's
/// documented `_fbp`/`_fbc` lifetime).
fn fb_set_cookie(name: &str, value: &str) -> String {
    format!("{name}={value}; Path=/; Max-Age=7776000; SameSite=Lax; Domain=example.com; Secure")
}

// ---------------------------------------------------------------------------
// GA4 and Meta, field by field.

#[tokio::test]
async fn pageview_reaches_ga4_and_meta_with_every_field() {
    let ga = Destination::start().await;
    let meta = Destination::start().await;
    let proxy = start_ga4_meta(&ga, &meta).await;
    let url = "https://shop.example.com/products/mug?color=blue&fbclid=abc";
    let id = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
    let pv = event("pageview", None, json!({}), url, id);
    let ts = pv["ts"].as_u64().unwrap();
    let before = now_ms();
    let answer = post(
        &proxy,
        &json!([pv]),
        &[
            ("cookie", &format!("_ga={GA_COOKIE}; _fbp={FBP_COOKIE}")),
            ("x-forwarded-for", "203.0.113.7"),
        ],
    )
    .await;
    let after = now_ms();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["ok"], true);
    assert_eq!(answer.body["events"], 1);

    let hit = &ga.wait_for(1, Duration::from_secs(10)).await[0];
    assert_ga4_valid(std::slice::from_ref(hit));
    let p = |k: &str| {
        hit.param(k)
            .unwrap_or_else(|| panic!("no {k} in {}", hit.uri))
    };
    assert_eq!(hit.method, "GET");
    assert_eq!(hit.path(), "/g/collect");
    assert_eq!(p("v"), "2");
    assert_eq!(p("tid"), "G-TEST123");
    assert_eq!(p("en"), "page_view");
    assert_eq!(p("dl"), url);
    assert_eq!(p("dt"), "Blue Mug – Demo Shop");
    assert_eq!(p("dr"), "https://www.google.com/");
    assert_eq!(p("ul"), "en-us");
    assert_eq!(p("sr"), "1920x1080");
    // The site's own `_ga` cookie: its last two parts, as gtag reads it.
    assert_eq!(p("cid"), "1234567890.1700000000");
    let sid: u64 = p("sid").parse().unwrap();
    assert!(
        sid >= before / 1000 - 1 && sid <= after / 1000 + 1,
        "sid {sid}"
    );
    assert_eq!(p("sct"), "1");
    assert_eq!(p("_s"), "1");
    assert_eq!(p("_ss"), "1");
    // gtag's `_ga` says the visitor has been here before: no first visit.
    assert_eq!(hit.param("_fv"), None);
    // One page view, no key event, under 10 s: not an engaged session.
    assert_eq!(hit.param("seg"), None);
    // X-Forwarded-For from 127.0.0.1, a default trusted proxy.
    assert_eq!(p("_uip"), "203.0.113.7");
    assert_eq!(p("ep.event_id"), id);
    assert_eq!(
        param_names(hit),
        names(&[
            "v",
            "tid",
            "cid",
            "sid",
            "sct",
            "_s",
            "_ss",
            "ul",
            "sr",
            "dl",
            "dt",
            "dr",
            "_uip",
            "ep.event_id",
            "en"
        ])
    );
    assert_eq!(hit.headers["user-agent"], CHROME_UA);

    let req = &meta.wait_for(1, Duration::from_secs(10)).await[0];
    assert_meta_valid(std::slice::from_ref(req));
    assert_eq!(req.method, "POST");
    assert_eq!(req.path(), format!("/v21.0/{PIXEL}/events"));
    let body = req.json();
    assert_eq!(body["access_token"], TOKEN);
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    let e = &data[0];
    assert_eq!(e["event_name"], "PageView");
    assert_eq!(e["event_time"], ts / 1000);
    assert_eq!(e["event_id"], id);
    assert_eq!(e["action_source"], "website");
    assert_eq!(e["event_source_url"], url);
    assert!(e.get("custom_data").is_none(), "{e}");
    let u = &e["user_data"];
    assert_eq!(u["client_ip_address"], "203.0.113.7");
    assert_eq!(u["client_user_agent"], CHROME_UA);
    assert_eq!(u["fbp"], FBP_COOKIE);
    // `fbclid` in the page URL: fbc = fb.1.<ms>.<fbclid>, stored by the browser.
    let fbc = u["fbc"].as_str().unwrap();
    let ms: u64 = fbc
        .strip_prefix("fb.1.")
        .and_then(|r| r.strip_suffix(".abc"))
        .unwrap_or_else(|| panic!("fbc {fbc}"))
        .parse()
        .unwrap();
    assert!(ms >= before && ms <= after, "fbc time {ms}");
    assert_eq!(u.as_object().unwrap().len(), 4, "{u}");
    // The collector's answer stores the new `_fbc` and refreshes `_fbp`.
    assert_eq!(answer.body["instructions"], json!([]));
    assert_eq!(
        set_cookie(&answer, "_fbc"),
        Some(fb_set_cookie("_fbc", fbc))
    );
    assert_eq!(
        set_cookie(&answer, "_fbp"),
        Some(fb_set_cookie("_fbp", FBP_COOKIE))
    );

    // The secret token goes to Meta only.
    assert!(!answer.body.to_string().contains(TOKEN));
    assert!(!proxy.logs().contains(TOKEN));
    assert!(!proxy.stdout().contains(TOKEN));
    settle(&proxy).await;
    assert_eq!(ga.requests().len(), 1);
    assert_eq!(meta.requests().len(), 1);
}

#[tokio::test]
async fn track_with_properties_reaches_ga4_and_meta() {
    let ga = Destination::start().await;
    let meta = Destination::start().await;
    let proxy = start_ga4_meta(&ga, &meta).await;
    let url = "https://shop.example.com/signup";
    let id = "evt_signup_000001";
    let ev = event(
        "track",
        Some("signup"),
        json!({"method": "email", "plan_price": 9.5}),
        url,
        id,
    );
    // No cookies at all: our own client id, and a new `_fbp` for the browser.
    let answer = post(&proxy, &json!([ev]), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let tp_cid = answer
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("tp_cid="))
        .expect("tp_cid cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let own_cid = tp_cid.rsplit_once('.').unwrap().0.to_string();

    let hit = &ga.wait_for(1, Duration::from_secs(10)).await[0];
    assert_ga4_valid(std::slice::from_ref(hit));
    let p = |k: &str| {
        hit.param(k)
            .unwrap_or_else(|| panic!("no {k} in {}", hit.uri))
    };
    assert_eq!(p("en"), "signup");
    assert_eq!(p("ep.method"), "email");
    assert_eq!(p("epn.plan_price"), "9.5");
    assert_eq!(p("ep.event_id"), id);
    assert_eq!(p("cid"), own_cid);
    assert_eq!(p("dl"), url);
    assert_eq!(p("_uip"), "127.0.0.1");
    assert_eq!(p("_s"), "1");
    let extra: Vec<String> = param_names(hit)
        .into_iter()
        .filter(|k| k.starts_with("ep"))
        .collect();
    assert_eq!(extra, ["ep.event_id", "ep.method", "epn.plan_price"]);

    let req = &meta.wait_for(1, Duration::from_secs(10)).await[0];
    assert_meta_valid(std::slice::from_ref(req));
    let e = &req.json()["data"][0];
    assert_eq!(e["event_name"], "signup");
    assert_eq!(e["event_id"], id);
    assert_eq!(e["event_source_url"], url);
    assert_eq!(
        e["custom_data"],
        json!({"method": "email", "plan_price": 9.5})
    );
    let u = &e["user_data"];
    assert_eq!(u["client_ip_address"], "127.0.0.1");
    assert_eq!(u["client_user_agent"], CHROME_UA);
    assert!(u.get("fbc").is_none(), "no fbclid, no _fbc: {u}");
    let fbp = u["fbp"].as_str().unwrap();
    assert_eq!(answer.body["instructions"], json!([]));
    assert_eq!(
        set_cookie(&answer, "_fbp"),
        Some(fb_set_cookie("_fbp", fbp))
    );
    assert_eq!(set_cookie(&answer, "_fbc"), None);
}

#[tokio::test]
async fn order_completed_with_two_products_reaches_ga4_and_meta() {
    let ga = Destination::start().await;
    let meta = Destination::start().await;
    let proxy = start_ga4_meta(&ga, &meta).await;
    let url = "https://shop.example.com/checkout/done";
    let id = "evt_order_0000001";
    let email = "  Jane.Doe@Example.com ";
    let ev = event(
        "ecommerce",
        Some("Order Completed"),
        json!({
            "order_id": "ORD-1001",
            "total": 59.5,
            "shipping": 5,
            "tax": 4.5,
            "coupon": "SUMMER",
            "currency": "EUR",
            "email": email,
            "products": [
                {"product_id": "SKU-1", "name": "Blue Mug", "brand": "TP", "category": "Kitchen", "price": 14.5, "quantity": 2},
                {"product_id": "SKU-2", "name": "Green Tea", "price": 25, "quantity": 1},
            ],
        }),
        url,
        id,
    );
    let answer = post(
        &proxy,
        &json!([ev]),
        &[("cookie", &format!("_ga={GA_COOKIE}; _fbp={FBP_COOKIE}"))],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["instructions"], json!([]));

    let hit = &ga.wait_for(1, Duration::from_secs(10)).await[0];
    assert_ga4_valid(std::slice::from_ref(hit));
    let p = |k: &str| {
        hit.param(k)
            .unwrap_or_else(|| panic!("no {k} in {}", hit.uri))
    };
    assert_eq!(p("en"), "purchase");
    assert_eq!(p("cu"), "EUR");
    assert_eq!(p("ep.transaction_id"), "ORD-1001");
    assert_eq!(p("epn.value"), "59.5");
    assert_eq!(p("epn.tax"), "4.5");
    assert_eq!(p("epn.shipping"), "5");
    assert_eq!(p("ep.coupon"), "SUMMER");
    assert_eq!(p("pr1"), "idSKU-1~nmBlue Mug~brTP~caKitchen~pr14.5~qt2");
    assert_eq!(p("pr2"), "idSKU-2~nmGreen Tea~pr25~qt1");
    assert_eq!(hit.param("pr3"), None);
    assert_eq!(p("cid"), "1234567890.1700000000");
    // No personal data in GA4 (its terms forbid it).
    let uri = hit.uri.to_ascii_lowercase();
    assert!(
        !uri.contains("jane") && !uri.contains("example.com%40"),
        "{uri}"
    );

    let req = &meta.wait_for(1, Duration::from_secs(10)).await[0];
    assert_meta_valid(std::slice::from_ref(req));
    let raw = String::from_utf8_lossy(&req.body).to_ascii_lowercase();
    assert!(
        !raw.contains("jane.doe") && !raw.contains("jane"),
        "raw email in the Meta body: {raw}"
    );
    let e = &req.json()["data"][0];
    assert_eq!(e["event_name"], "Purchase");
    assert_eq!(e["event_id"], id);
    assert_eq!(e["event_source_url"], url);
    assert_eq!(
        e["user_data"]["em"],
        json!([sha256_hex("jane.doe@example.com")])
    );
    assert_eq!(e["user_data"]["fbp"], FBP_COOKIE);
    let c = &e["custom_data"];
    assert_eq!(c["value"], json!(59.5));
    assert_eq!(c["currency"], "EUR");
    assert_eq!(c["order_id"], "ORD-1001");
    assert_eq!(c["content_ids"], json!(["SKU-1", "SKU-2"]));
    assert_eq!(
        c["contents"],
        json!([
            {"id": "SKU-1", "quantity": 2, "item_price": 14.5},
            {"id": "SKU-2", "quantity": 1, "item_price": 25.0},
        ])
    );
    assert_eq!(c["num_items"], 3);
    assert_eq!(c["content_type"], "product");
    assert!(
        c.get("email").is_none() && c.get("products").is_none(),
        "{c}"
    );
}

// ---------------------------------------------------------------------------
// Which tool gets what.

#[tokio::test]
async fn tools_receive_exactly_the_automated_actions_they_enabled() {
    let pv_only = Destination::start().await;
    let events_only = Destination::start().await;
    let proxy = start(
        "",
        &[
            ("pv_only", ga4_tool(&pv_only, "pageview = true")),
            (
                "events_only",
                ga4_tool(&events_only, "track = true\necommerce = true"),
            ),
        ],
        &[],
    )
    .await;
    let url = "https://shop.example.com/";
    let batch = json!([
        event("pageview", None, json!({}), url, "evt_a_00000001"),
        event("track", Some("signup"), json!({}), url, "evt_a_00000002"),
        event("track", Some("newsletter"), json!({}), url, "evt_a_00000003"),
        event("ecommerce", Some("Product Added"), json!({"product_id": "SKU-1", "price": 3, "currency": "USD"}), url, "evt_a_00000004"),
        {"type": "set", "vars": {"plan": "pro"}},
        event("pageview", None, json!({}), url, "evt_a_00000005"),
    ]);
    let answer = post(&proxy, &batch, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["events"], 5);

    pv_only.wait_for(2, Duration::from_secs(10)).await;
    events_only.wait_for(3, Duration::from_secs(10)).await;
    settle(&proxy).await;
    let en = |d: &Destination| -> Vec<String> {
        let reqs = d.requests();
        assert_ga4_valid(&reqs);
        let mut v: Vec<String> = reqs.iter().map(|r| r.param("en").unwrap()).collect();
        v.sort();
        v
    };
    assert_eq!(en(&pv_only), ["page_view", "page_view"]);
    assert_eq!(en(&events_only), ["add_to_cart", "newsletter", "signup"]);
}

#[tokio::test]
async fn http_tool_gets_the_event_json_with_an_idempotency_key() {
    let hook = Destination::start().await;
    let tool = format!(
        "type = \"http\"\nendpoint = \"{url}\"\n[settings]\nurl = \"{url}/hook\"\n[settings.headers]\nauthorization = \"Bearer {{{{ $hook_key }}}}\"\nx-page = \"{{{{ system.page.url.pathname }}}}\"\n[automated]\ntrack = true\n",
        url = hook.url()
    );
    let proxy = start(
        "[variables]\nhook_key = \"k-123\"\n",
        &[("hook", tool)],
        &[],
    )
    .await;
    let id = "evt_hook_0000001";
    let url = "https://shop.example.com/pricing?x=1";
    let batch = json!([
        event("pageview", None, json!({}), url, "evt_hook_pv_0001"),
        event("track", Some("signup"), json!({"method": "email"}), url, id),
    ]);
    let answer = post(&proxy, &batch, &[("x-forwarded-for", "198.51.100.4")]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let r = &hook.wait_for(1, Duration::from_secs(10)).await[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path(), "/hook");
    assert_eq!(r.headers["idempotency-key"], id);
    assert_eq!(r.headers["authorization"], "Bearer k-123");
    assert_eq!(r.headers["x-page"], "/pricing");
    assert_eq!(r.headers["content-type"], "application/json");
    let body = r.json();
    assert_eq!(body["id"], id);
    assert_eq!(body["type"], "track");
    assert_eq!(body["name"], "signup");
    assert!(body["timestamp"].as_u64().is_some(), "{body}");
    assert_eq!(body["client"]["method"], "email");
    assert_eq!(body["client"]["__zarazTrack"], "signup");
    let sys = &body["system"];
    assert_eq!(sys["page"]["url"]["href"], url);
    assert_eq!(sys["page"]["query"]["x"], "1");
    assert_eq!(sys["page"]["title"], "Blue Mug – Demo Shop");
    assert_eq!(sys["device"]["ip"], "198.51.100.4");
    assert_eq!(sys["device"]["language"], "en-US");
    assert_eq!(sys["device"]["resolution"], "1920x1080");
    assert_eq!(sys["device"]["viewport"], "1280x720");
    assert_eq!(sys["device"]["user-agent"]["ua"], CHROME_UA);
    assert_eq!(sys["device"]["user-agent"]["browser"]["name"], "Chrome");
    settle(&proxy).await;
    assert_eq!(
        hook.requests().len(),
        1,
        "the pageview is not for this tool"
    );
}

#[tokio::test]
async fn console_tool_prints_one_line_per_event() {
    let proxy = start(
        "",
        &[(
            "console",
            format!("type = \"console\"\n[automated]\n{ALL}\n"),
        )],
        &[],
    )
    .await;
    let url = "https://shop.example.com/";
    let ids = ["evt_console_001", "evt_console_002", "evt_console_003"];
    let batch = json!([
        event("pageview", None, json!({}), url, ids[0]),
        event(
            "track",
            Some("signup"),
            json!({"method": "email"}),
            url,
            ids[1]
        ),
        event("ecommerce", Some("Cart Viewed"), json!({}), url, ids[2]),
    ]);
    assert_eq!(post(&proxy, &batch, &[]).await.status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.stdout().lines().count() < 3 {
        assert!(Instant::now() < deadline, "stdout: {}", proxy.stdout());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    settle(&proxy).await;
    let out = proxy.stdout();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for (id, name) in ids.iter().zip(["Pageview", "signup", "Cart Viewed"]) {
        let line = lines
            .iter()
            .find(|l| l.contains(id))
            .unwrap_or_else(|| panic!("no line for {id}: {out}"));
        let json: Value = serde_json::from_str(line.strip_prefix("[console] ").unwrap()).unwrap();
        assert_eq!(json["id"], *id);
        assert_eq!(json["event"], name);
        assert_eq!(json["tool"], "console");
        assert_eq!(json["url"], url);
    }
}

// ---------------------------------------------------------------------------
// Delivery: retries, and destinations that never answer.

/// `delivered` log lines (JSON) for `event_id`.
fn delivered_lines(logs: &str, event_id: &str) -> usize {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "delivered" && l["event_id"] == event_id)
        .count()
}

#[tokio::test]
async fn a_destination_answering_503_twice_gets_the_event_three_times_and_it_is_delivered_once() {
    let ga = Destination::with_script(Script {
        statuses: vec![503, 503, 204],
        ..Script::default()
    })
    .await;
    let proxy = start(
        "[delivery]\nretry_base_ms = 50\n",
        &[("ga4", ga4_tool(&ga, ALL))],
        &[],
    )
    .await;
    let id = "evt_retry_000001";
    let ev = event(
        "track",
        Some("signup"),
        json!({}),
        "https://shop.example.com/",
        id,
    );
    assert_eq!(post(&proxy, &json!([ev]), &[]).await.status, 200);
    let reqs = ga.wait_for(3, Duration::from_secs(10)).await;
    assert_ga4_valid(&reqs);
    assert!(reqs.iter().all(|r| r.uri == reqs[0].uri), "{reqs:#?}");
    assert_eq!(reqs[0].param("ep.event_id").unwrap(), id);
    let deadline = Instant::now() + Duration::from_secs(5);
    while delivered_lines(&proxy.logs(), id) == 0 {
        assert!(Instant::now() < deadline, "{}", proxy.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.settled().await;
    assert_eq!(ga.requests().len(), 3, "no fourth attempt after a 204");
    assert_eq!(delivered_lines(&proxy.logs(), id), 1, "{}", proxy.logs());
}

#[tokio::test]
async fn a_hanging_destination_does_not_slow_the_collector() {
    let ga = Destination::with_script(Script {
        delay: Duration::from_secs(30),
        ..Script::default()
    })
    .await;
    let meta = Destination::with_script(Script {
        delay: Duration::from_secs(30),
        ..Script::default()
    })
    .await;
    let proxy = start_ga4_meta(&ga, &meta).await;
    // A collector that waited for its destinations would take the delivery
    // timeout (10 s) or the destination's 30 s per answer. The bounds are
    // loose on purpose: the machine running the tests is shared.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let one = Instant::now();
        let ev = event(
            "track",
            Some("signup"),
            json!({"n": i}),
            "https://shop.example.com/",
            &format!("evt_hang_{i:08}"),
        );
        let answer = post(&proxy, &json!([ev]), &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        slowest = slowest.max(one.elapsed());
    }
    let took = started.elapsed();
    assert!(
        slowest < Duration::from_secs(3),
        "the slowest answer took {slowest:?}"
    );
    assert!(took < Duration::from_secs(10), "20 answers took {took:?}");
    // The destinations did get (and are still holding) the requests.
    ga.wait_for(20, Duration::from_secs(10)).await;
    meta.wait_for(20, Duration::from_secs(10)).await;
}

// ---------------------------------------------------------------------------
// `tagproxy check` on tool files.

fn check_tool(tool: &str) -> (i32, String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    let tool_path = dir.path().join("tools").join("t.toml");
    std::fs::write(&tool_path, tool).unwrap();
    let config = dir.path().join("tagproxy.toml");
    std::fs::write(&config, "[variables]\nmeta_token = { secret = \"META\" }\n").unwrap();
    let out = Command::new(bin())
        .args(["check", "-c"])
        .arg(&config)
        .env_remove("TAGPROXY_CONFIG")
        .env("TAGPROXY_SECRET_META", TOKEN)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
        tool_path.to_str().unwrap().to_string(),
    )
}

#[test]
fn check_accepts_good_tool_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    let ga = "type = \"google-analytics-4\"\n[settings]\nmeasurement_id = \"G-TEST123\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n";
    let meta = "type = \"facebook-pixel\"\n[settings]\npixel_id = \"1234567890\"\naccess_token = \"{{ $meta_token }}\"\n[automated]\npageview = true\n";
    std::fs::write(dir.path().join("tools/ga4.toml"), ga).unwrap();
    std::fs::write(dir.path().join("tools/meta.toml"), meta).unwrap();
    let config = dir.path().join("tagproxy.toml");
    std::fs::write(&config, "[variables]\nmeta_token = { secret = \"META\" }\n").unwrap();
    let out = Command::new(bin())
        .args(["check", "-c"])
        .arg(&config)
        .env_remove("TAGPROXY_CONFIG")
        .env("TAGPROXY_SECRET_META", TOKEN)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok: 2 tools, 0 triggers\n"
    );
}

#[test]
fn check_rejects_bad_tool_files_with_file_line_col() {
    let cases = [
        (
            "type = \"google-analytics-4\"\n[settings]\nmeasurement_id = \"G-TEST123\"\ncolour = \"red\"\n",
            "4:1: unknown field `colour`, expected one of `measurement_id`, `hide_ip`, `key_events`",
        ),
        (
            "type = \"google-analytics-4\"\n[settings]\nhide_ip = true\n[automated]\npageview = true\n",
            "2:1: google-analytics-4 needs settings.measurement_id",
        ),
        (
            // A comment naming `[settings]` and `type` does not move the position.
            "# set type and [settings] below\ntype = \"google-analytics-4\"\n[settings]\nhide_ip = true\n",
            "3:1: google-analytics-4 needs settings.measurement_id",
        ),
        (
            "enabled = true\ntype = \"matomo\"\n",
            "2:8: unknown tool type `matomo`; known: google-analytics-4, facebook-pixel, http, console, segment, amplitude, mixpanel, tiktok, pinterest, snapchat, reddit, custom-image, bing, linkedin, google-ads",
        ),
        (
            "type = \"facebook-pixel\"\n[settings]\npixel_id = \"1234567890\"\naccess_token = \"{{ $meta_tokn }}\"\n",
            "4:20: unknown variable `$meta_tokn`",
        ),
        (
            "type = \"google-analytics-4\"\n[settings]\nmeasurement_id = \"G-TEST123\"\n[automated]\npageview = true\nclicks = true\n",
            "6:1: unknown field `clicks`, expected one of `pageview`, `track`, `ecommerce`",
        ),
    ];
    for (tool, want) in cases {
        let (code, out, err, path) = check_tool(tool);
        assert_eq!(code, 1, "{tool}\n{err}");
        assert_eq!(out, "", "{tool}");
        let want = format!("{path}:{want}");
        assert!(
            err.lines().any(|l| l == want),
            "want the line {want:?}\ngot:\n{err}"
        );
    }
}

// ---------------------------------------------------------------------------
// Meta: browser ids and personal data across a batch.

#[tokio::test]
async fn a_new_visitor_gets_one_fbp_for_every_event_of_a_batch() {
    let ga = Destination::start().await;
    let meta = Destination::start().await;
    let proxy = start_ga4_meta(&ga, &meta).await;
    let url = "https://shop.example.com/?fbclid=IwAR_click";
    let batch = json!([
        event("pageview", None, json!({}), url, "evt_fbp_00000001"),
        event("track", Some("signup"), json!({}), url, "evt_fbp_00000002"),
        event(
            "ecommerce",
            Some("Product Added"),
            json!({"product_id": "SKU-1", "price": 3, "currency": "USD"}),
            url,
            "evt_fbp_00000003"
        ),
    ]);
    let answer = post(&proxy, &batch, &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let reqs = meta.wait_for(3, Duration::from_secs(10)).await;
    assert_meta_valid(&reqs);
    let ids = |k: &str| -> BTreeSet<String> {
        reqs.iter()
            .map(|r| {
                r.json()["data"][0]["user_data"][k]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let fbp = ids("fbp");
    let fbc = ids("fbc");
    assert_eq!(fbp.len(), 1, "one browser, one fbp: {fbp:?}");
    assert_eq!(fbc.len(), 1, "one click, one fbc: {fbc:?}");
    let (fbp, fbc) = (fbp.first().unwrap(), fbc.first().unwrap());
    assert_eq!(answer.body["instructions"], json!([]));
    assert_eq!(
        set_cookie(&answer, "_fbp"),
        Some(fb_set_cookie("_fbp", fbp))
    );
    assert_eq!(
        set_cookie(&answer, "_fbc"),
        Some(fb_set_cookie("_fbc", fbc))
    );

    // The next request comes before the browser stored `_fbp` (it only has
    // our `tp_cid`): still the same browser id.
    let tp_cid = answer
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("tp_cid="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let ev = event(
        "track",
        Some("later"),
        json!({}),
        "https://shop.example.com/",
        "evt_fbp_00000004",
    );
    let answer = post(&proxy, &json!([ev]), &[("cookie", &tp_cid)]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let later = &meta.wait_for(4, Duration::from_secs(10)).await[3];
    assert_eq!(later.json()["data"][0]["user_data"]["fbp"], fbp.as_str());
}

#[tokio::test]
async fn personal_data_under_two_spellings_never_reaches_meta_raw() {
    let ga = Destination::start().await;
    let meta = Destination::start().await;
    let proxy = start_ga4_meta(&ga, &meta).await;
    let ev = event(
        "track",
        Some("lead"),
        json!({"em": "Jane@Example.com", "email": "other.person@example.org", "phone": "+1 650 555 1212", "ph": "6505551212", "plan": "pro"}),
        "https://shop.example.com/",
        "evt_pii_00000001",
    );
    assert_eq!(post(&proxy, &json!([ev]), &[]).await.status, 200);
    let req = &meta.wait_for(1, Duration::from_secs(10)).await[0];
    assert_meta_valid(std::slice::from_ref(req));
    let raw = String::from_utf8_lossy(&req.body).to_ascii_lowercase();
    // Whole forms only: digits like "555" turn up in the random `fbp`.
    for personal in ["jane@", "other.person", "650 555 1212", "6505551212"] {
        assert!(!raw.contains(personal), "{personal:?} in {raw}");
    }
    let e = &req.json()["data"][0];
    assert_eq!(
        e["user_data"]["em"],
        json!([sha256_hex("jane@example.com")])
    );
    assert_eq!(e["user_data"]["ph"], json!([sha256_hex("6505551212")]));
    assert_eq!(e["custom_data"], json!({"plan": "pro"}));
}

// ---------------------------------------------------------------------------
// Meta: `_fbc` / `_fbp` only when well-formed, kept by the collector's
// own `Set-Cookie` headers.
//
// Meta, "ClickID and the fbp and fbc Parameters":
// https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/fbp-and-fbc/
// `fb.<subdomain index>.<creation time ms>.<fbclid | random number>`.

#[tokio::test]
async fn malformed_fbc_and_fbp_cookies_never_reach_meta() {
    let ga = Destination::start().await;
    let meta = Destination::start().await;
    let proxy = start_ga4_meta(&ga, &meta).await;
    // The two `_fbc` values, each without and with a click id in the
    // page URL; the same shapes as `_fbp`.
    let cases = [
        ("fb.1.1732449000000.", None),
        ("fb.1.1732449000000", None),
        ("fb.1.1732449000000.", Some("IwAR_new-1")),
        ("fb.1.1732449000000", Some("IwAR_new-2")),
    ];
    for (i, (bad, fbclid)) in cases.iter().enumerate() {
        let url = match fbclid {
            Some(id) => format!("https://shop.example.com/?fbclid={id}"),
            None => "https://shop.example.com/".to_string(),
        };
        let ev = event(
            "pageview",
            None,
            json!({}),
            &url,
            &format!("evt_badfb_{i:07}"),
        );
        let before = now_ms();
        let answer = post(
            &proxy,
            &json!([ev]),
            &[("cookie", &format!("_fbc={bad}; _fbp={bad}"))],
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let req = &meta.wait_for(i + 1, Duration::from_secs(10)).await[i];
        assert_meta_valid(std::slice::from_ref(req));
        let u = &req.json()["data"][0]["user_data"];
        // A fresh `_fbp` replaces the malformed one, in Meta's request and
        // in the browser.
        let fbp = u["fbp"].as_str().unwrap();
        assert_ne!(fbp, *bad);
        assert_eq!(
            set_cookie(&answer, "_fbp"),
            Some(fb_set_cookie("_fbp", fbp))
        );
        match fbclid {
            None => {
                assert!(u.get("fbc").is_none(), "{bad:?} forwarded: {u}");
                assert_eq!(set_cookie(&answer, "_fbc"), None);
            }
            Some(id) => {
                // Rebuilt from the URL's click id: fb.1.<now ms>.<fbclid>.
                let fbc = u["fbc"].as_str().unwrap();
                let ms: u64 = fbc
                    .strip_prefix("fb.1.")
                    .and_then(|r| r.strip_suffix(&format!(".{id}")))
                    .unwrap_or_else(|| panic!("fbc {fbc}"))
                    .parse()
                    .unwrap();
                assert!(ms >= before && ms <= now_ms(), "fbc time {ms}");
                assert_eq!(
                    set_cookie(&answer, "_fbc"),
                    Some(fb_set_cookie("_fbc", fbc))
                );
            }
        }
    }
}

/// Two Meta tools (Meta allows several pixels per site).
async fn start_two_meta(meta: &Destination, extra: &str) -> Proxy {
    start(
        &format!("[variables]\nmeta_token = {{ secret = \"META\" }}\n{extra}"),
        &[("meta", meta_tool(meta)), ("meta2", meta_tool(meta))],
        &[("TAGPROXY_SECRET_META", TOKEN)],
    )
    .await
}

#[tokio::test]
async fn tool_cookies_are_set_once_by_the_collector_answer_with_tp_cid_attributes() {
    let meta = Destination::start().await;
    let proxy = start_two_meta(&meta, "").await;

    // A batch of 50 from an http page behind a TLS-terminating proxy
    // (127.0.0.1 is trusted by default): https as far as the browser knows.
    let url = "http://shop.example.com/landing?fbclid=IwAR_keep";
    let batch: Vec<Value> = (0..50)
        .map(|i| {
            event(
                "track",
                Some("scroll"),
                json!({}),
                url,
                &format!("evt_keep_{i:08}"),
            )
        })
        .collect();
    // Over https a browser's fetch carries fetch metadata and its language
    // (without them the request scores as a bot: see the bot score).
    let answer = post(
        &proxy,
        &json!(batch),
        &[
            ("x-forwarded-proto", "https"),
            ("sec-fetch-site", "same-origin"),
            ("sec-fetch-mode", "cors"),
            ("sec-fetch-dest", "empty"),
            ("accept-language", "en-US,en;q=0.9"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["events"], 50);
    // Nothing for the browser's script to do: no `set_cookie` instruction.
    assert_eq!(answer.body["instructions"], json!([]));
    let all = set_cookies(&answer);
    let names: Vec<&str> = all.iter().map(|c| c.split('=').next().unwrap()).collect();
    assert_eq!(names, ["tp_cid", "tp_sid", "_fbp", "_fbc"], "{all:?}");
    let fbp = set_cookie(&answer, "_fbp").unwrap();
    let fbc = set_cookie(&answer, "_fbc").unwrap();
    let value = |c: &str| {
        c.split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_string()
    };
    assert_eq!(fbp, fb_set_cookie("_fbp", &value(&fbp)));
    assert_eq!(fbc, fb_set_cookie("_fbc", &value(&fbc)));
    assert!(value(&fbc).ends_with(".IwAR_keep"), "{fbc}");
    // The same attributes as our own `tp_cid`, but Meta's 90 days.
    let tp_cid = all.iter().find(|c| c.starts_with("tp_cid=")).unwrap();
    assert!(
        tp_cid.ends_with("; Path=/; Max-Age=31536000; SameSite=Lax; Domain=example.com; Secure"),
        "{tp_cid}"
    );
    // Both tools sent the same ids to Meta.
    let reqs = meta.wait_for(2, Duration::from_secs(10)).await;
    assert_meta_valid(&reqs);
    for r in &reqs {
        for e in r.json()["data"].as_array().unwrap() {
            assert_eq!(e["user_data"]["fbp"], value(&fbp).as_str());
            assert_eq!(e["user_data"]["fbc"], value(&fbc).as_str());
        }
    }

    // Plain http, no proxy saying otherwise: not `Secure`. An IP host: no
    // `Domain` (host-only), as for `tp_cid`.
    let ev = event(
        "pageview",
        None,
        json!({}),
        "http://127.0.0.1:8080/",
        "evt_keep_plain01",
    );
    let answer = post(&proxy, &json!([ev]), &[]).await;
    let fbp = set_cookie(&answer, "_fbp").unwrap();
    assert_eq!(
        fbp,
        format!(
            "_fbp={}; Path=/; Max-Age=7776000; SameSite=Lax",
            value(&fbp)
        )
    );
    assert_eq!(set_cookie(&answer, "_fbc"), None);
}

#[tokio::test]
async fn a_tool_whose_consent_is_withheld_sets_no_cookie() {
    let meta = Destination::start().await;
    let tool = meta_tool(&meta).replacen("[settings]", "purposes = [\"ads\"]\n[settings]", 1);
    let proxy = start(
        "[variables]\nmeta_token = { secret = \"META\" }\n[consent]\nenabled = true\n[[consent.purposes]]\nid = \"ads\"\nname = \"Advertising\"\ndefault = \"denied\"\n",
        &[("meta", tool)],
        &[("TAGPROXY_SECRET_META", TOKEN)],
    )
    .await;
    let url = "https://shop.example.com/?fbclid=IwAR_consent";
    for (i, choice) in ["", "cf_consent=%7B%22ads%22%3Afalse%7D"]
        .iter()
        .enumerate()
    {
        let ev = event(
            "pageview",
            None,
            json!({}),
            url,
            &format!("evt_noconsent_{i}"),
        );
        let answer = post(&proxy, &json!([ev]), &[("cookie", choice)]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(set_cookie(&answer, "_fbp"), None, "{choice:?}");
        assert_eq!(set_cookie(&answer, "_fbc"), None, "{choice:?}");
        assert!(set_cookie(&answer, "tp_cid").is_some());
    }
    // Granted: the tool runs and keeps its cookies.
    let ev = event("pageview", None, json!({}), url, "evt_consent_granted");
    let answer = post(
        &proxy,
        &json!([ev]),
        &[("cookie", "cf_consent=%7B%22ads%22%3Atrue%7D")],
    )
    .await;
    assert!(set_cookie(&answer, "_fbp").is_some());
    assert!(set_cookie(&answer, "_fbc").is_some());
    let reqs = meta.wait_for(1, Duration::from_secs(10)).await;
    assert_meta_valid(&reqs);
    settle(&proxy).await;
    assert_eq!(
        meta.requests().len(),
        1,
        "only the granted event reached Meta"
    );
}

// ---------------------------------------------------------------------------
// Meta ecommerce, field by field, as Zaraz's own Meta Managed Component
// (github.com/managed-components/facebook-pixel, src/ecommerce.ts) maps
// Zaraz's ecommerce API, where Meta's documentation agrees:
// standard events and object properties,
// https://developers.facebook.com/docs/meta-pixel/reference#standard-events
// https://developers.facebook.com/docs/meta-pixel/reference#object-properties
// and the Conversions API's custom data parameters,
// https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/custom-data

/// Posts one ecommerce event and returns what Meta received for it.
async fn meta_ecommerce(name: &str, props: Value, id: &str) -> Value {
    let ga = Destination::start().await;
    let meta = Destination::start().await;
    let proxy = start_ga4_meta(&ga, &meta).await;
    let ev = event(
        "ecommerce",
        Some(name),
        props,
        "https://shop.example.com/shop",
        id,
    );
    let answer = post(
        &proxy,
        &json!([ev]),
        &[("cookie", &format!("_fbp={FBP_COOKIE}"))],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let req = &meta.wait_for(1, Duration::from_secs(10)).await[0];
    assert_meta_valid(std::slice::from_ref(req));
    let e = req.json()["data"][0].clone();
    assert_eq!(e["event_id"], id);
    e
}

#[tokio::test]
async fn meta_order_completed_field_by_field() {
    let e = meta_ecommerce(
        "Order Completed",
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
        }),
        "evt_meta_order_01",
    )
    .await;
    assert_eq!(e["event_name"], "Purchase");
    let c = e["custom_data"].as_object().unwrap();
    let want = json!({
        // Zaraz: a product's SKU, else its product id (Meta: "such as SKUs").
        "content_ids": ["8251511", "7251567"],
        "contents": [
            {"id": "8251511", "quantity": 2, "item_price": 10.0},
            {"id": "7251567", "quantity": 1, "item_price": 5.0},
        ],
        "content_type": "product",
        // Zaraz: every product's name, comma-separated.
        "content_name": "Boy's shoes,Blank T-shirt",
        // `total` (Zaraz: value, price, total, revenue; no price at the top).
        "value": 30.0,
        // ISO 4217, upper case.
        "currency": "USD",
        "order_id": "ORD-2002",
        // Meta: an integer, the items bought (Zaraz: "2", the product lines).
        "num_items": 3,
    });
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(c.get(k), Some(v), "custom_data.{k} in {c:?}");
    }
    // Zaraz keeps the event's other properties as custom properties.
    assert_eq!(c["coupon"], "winter-sale");
    assert_eq!(c["checkout_id"], "CHK-7");
    assert!(c.get("products").is_none() && c.get("search_string").is_none());
}

#[tokio::test]
async fn meta_product_added_field_by_field() {
    let e = meta_ecommerce(
        "Product Added",
        json!({
            "cart_id": "CART-1",
            "product_id": "7179",
            "sku": "A4530-00 HP",
            "category": "Bracelets",
            "name": "Sterling silver bracelet",
            "brand": "Victoria",
            "price": 67,
            "quantity": 1,
            "currency": "EUR",
        }),
        "evt_meta_added_01",
    )
    .await;
    assert_eq!(e["event_name"], "AddToCart");
    let c = e["custom_data"].as_object().unwrap();
    let want = json!({
        "content_ids": ["A4530-00 HP"],
        "contents": [{"id": "A4530-00 HP", "quantity": 1, "item_price": 67.0}],
        "content_type": "product",
        "content_name": "Sterling silver bracelet",
        "content_category": "Bracelets",
        "value": 67.0,
        "currency": "EUR",
    });
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(c.get(k), Some(v), "custom_data.{k} in {c:?}");
    }
    // num_items belongs to InitiateCheckout and Purchase only.
    assert!(c.get("num_items").is_none(), "{c:?}");
}

#[tokio::test]
async fn meta_products_searched_and_list_viewed_field_by_field() {
    let e = meta_ecommerce(
        "Products Searched",
        json!({"query": "blue mug"}),
        "evt_meta_search_1",
    )
    .await;
    assert_eq!(e["event_name"], "Search");
    let c = &e["custom_data"];
    assert_eq!(c["search_string"], "blue mug");
    for absent in [
        "content_ids",
        "contents",
        "content_type",
        "num_items",
        "value",
    ] {
        assert!(c.get(absent).is_none(), "{absent} in {c}");
    }

    // A list of results is not a product page's ViewContent (Zaraz's tool
    // sends it under its own name too), and `search_string` is the Search
    // event's only.
    let e = meta_ecommerce(
        "Product List Viewed",
        json!({"list_id": "search-results", "query": "blue mug", "category": "Mugs",
               "products": [{"sku": "SKU-1", "name": "Blue Mug", "price": 9}]}),
        "evt_meta_list_01",
    )
    .await;
    assert_eq!(e["event_name"], "Product List Viewed");
    let c = &e["custom_data"];
    assert!(c.get("search_string").is_none(), "{c}");
    assert_eq!(c["content_ids"], json!(["SKU-1"]));
    assert_eq!(c["content_category"], "Mugs");
}
