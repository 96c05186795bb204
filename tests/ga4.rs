//! GA4 fidelity end to end (issue 10, items 1–4): the real binary, events
//! posted to its collector as the browser script sends them, and a mock
//! GA4 that records every hit. Every hit must pass `validate::ga4`, which
//! knows GA4's naming rules, collection limits and the no-personal-data
//! rule, so any hit breaking one fails every test here.

mod common;

use std::time::Duration;

use common::events::metric_value;
use common::validate;
use common::*;
use serde_json::{json, Value};

const UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const PAGE: &str = "https://shop.example.com/products/mug";

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A GA4 tool for measurement id `G-TEST12345` (so gtag's session cookie
/// is `_ga_TEST12345`), every automated action on, plus `extra` lines.
fn ga4_tool(dest: &Destination, settings: &str) -> String {
    format!(
        "type = \"google-analytics-4\"\nendpoint = \"{}\"\n[settings]\nmeasurement_id = \"G-TEST12345\"\n{settings}\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        dest.url()
    )
}

/// The proxy with one GA4 tool (`settings`: extra `[settings]` lines).
async fn start_with(ga: &Destination, settings: &str, extra_config: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    std::fs::write(dir.path().join("tools/ga4.toml"), ga4_tool(ga, settings)).unwrap();
    let text = format!(
        "[server]\n{LISTEN_ANY}\nupstream = \"http://127.0.0.1:9\"\n{extra_config}\n[delivery]\nretry_base_ms = 50\n"
    );
    let path = dir.path().join("tagproxy.toml");
    std::fs::write(&path, text).unwrap();
    Proxy::spawn(dir, path, &[]).await
}

async fn start(ga: &Destination) -> Proxy {
    start_with(ga, "", "").await
}

/// An event as `zaraz.js` builds it.
fn event(kind: &str, name: Option<&str>, properties: Value, url: &str) -> Value {
    let mut e = json!({
        "type": kind,
        "properties": properties,
        "page": {"url": url, "title": "Blue Mug – Demo Shop", "referrer": "https://www.google.com/", "encoding": "UTF-8"},
        "device": {"viewport": "1280x720", "resolution": "1920x1080", "language": "en-US", "tz_offset": -60},
        "vars": {},
        "ts": now_secs() * 1000,
    });
    if let Some(name) = name {
        e["name"] = json!(name);
    }
    e
}

fn pageview() -> Value {
    event("pageview", None, json!({}), PAGE)
}

fn track(name: &str, props: Value) -> Value {
    event("track", Some(name), props, PAGE)
}

/// POSTs a batch with `cookie`; returns the cookies the answer sets, as a
/// `Cookie` header the browser would send next.
async fn post(proxy: &Proxy, batch: Value, cookie: &str) -> String {
    let mut req = client()
        .post(proxy.url("/_tagproxy/t"))
        .header("content-type", "application/json")
        .header("user-agent", UA)
        .body(batch.to_string());
    if !cookie.is_empty() {
        req = req.header("cookie", cookie);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Waits for `n` hits in all, checks each against GA4's rules, and returns
/// the last `n - before` of them in the order they were sent (`_s`).
async fn hits(ga: &Destination, n: usize) -> Vec<Recorded> {
    let all = ga.wait_for(n, Duration::from_secs(10)).await;
    for r in &all {
        if let Err(e) = validate::ga4(r, UA) {
            panic!("invalid GA4 hit {}:\n{e}", r.uri);
        }
    }
    all
}

fn p(hit: &Recorded, k: &str) -> String {
    hit.param(k)
        .unwrap_or_else(|| panic!("no {k} in {}", hit.uri))
}

/// The hit named `en` among `hits`.
fn named<'a>(hits: &'a [Recorded], en: &str) -> &'a Recorded {
    hits.iter()
        .find(|h| h.param("en").as_deref() == Some(en))
        .unwrap_or_else(|| panic!("no {en} hit in {hits:#?}"))
}

// ---------------------------------------------------------------------------
// 1. Sessions continue gtag's.
// "[GA4] About Analytics sessions": a session times out after 30 minutes of
// inactivity; https://support.google.com/analytics/answer/12798876

/// Issue 10's example, moved to now (the binary's clock is real; the exact
/// values are in the unit test `the_issue_example_continues_gtags_session`):
/// gtag's session started 739 s ago, last active 109 s ago, session 208.
#[tokio::test]
async fn a_fresh_gtag_session_is_continued_with_its_sid_and_sct() {
    let ga = Destination::start().await;
    let proxy = start(&ga).await;
    let now = now_secs();
    let (sid, last) = (now - 739, now - 109);
    let cookie = format!(
        "_ga=GA1.1.1187654321.1748934600; _ga_TEST12345=GS2.1.s{sid}$o208$g1$t{last}$j60$l0$h0"
    );
    post(&proxy, json!([pageview()]), &cookie).await;
    let hit = &hits(&ga, 1).await[0];
    assert_eq!(p(hit, "cid"), "1187654321.1748934600");
    assert_eq!(p(hit, "sid"), sid.to_string());
    assert_eq!(p(hit, "sct"), "208");
    assert_eq!(hit.param("_fv"), None);
    assert_eq!(hit.param("_ss"), None);
    assert_eq!(
        hit.param("seg").as_deref(),
        Some("1"),
        "gtag marked it engaged ($g1)"
    );
}

/// The dotted form `GS1.1.<sid>.<sct>.<engaged>.<last>.<j>.<l>.<h>`.
#[tokio::test]
async fn the_dotted_gs1_cookie_is_continued_too() {
    let ga = Destination::start().await;
    let proxy = start(&ga).await;
    let now = now_secs();
    let sid = now - 300;
    let cookie = format!(
        "_ga=GA1.1.555.1600000000; _ga_TEST12345=GS1.1.{sid}.12.0.{}.0.0.0",
        now - 60
    );
    post(&proxy, json!([pageview()]), &cookie).await;
    let hit = &hits(&ga, 1).await[0];
    assert_eq!(p(hit, "cid"), "555.1600000000");
    assert_eq!(p(hit, "sid"), sid.to_string());
    assert_eq!(p(hit, "sct"), "12");
    assert_eq!(hit.param("_ss"), None);
    assert_eq!(hit.param("_fv"), None);
    assert_eq!(hit.param("seg"), None, "gtag had not marked it engaged");
}

/// gtag's session was last active more than 30 minutes ago: a new session,
/// number `sct + 1`, which stays the same for the rest of the visit even
/// though gtag's (stale) cookie keeps coming.
#[tokio::test]
async fn an_old_gtag_session_starts_session_sct_plus_one_and_keeps_it() {
    let ga = Destination::start().await;
    let proxy = start(&ga).await;
    let now = now_secs();
    let gtag = format!(
        "_ga=GA1.1.1187654321.1748934600; _ga_TEST12345=GS2.1.s{}$o208$g1$t{}$j60$l0$h0",
        now - 4000,
        now - 1900
    );
    let ours = post(&proxy, json!([pageview()]), &gtag).await;
    let after = now_secs();
    post(
        &proxy,
        json!([track("newsletter", json!({}))]),
        &format!("{ours}; {gtag}"),
    )
    .await;
    let hits = hits(&ga, 2).await;
    let (first, second) = (named(&hits, "page_view"), named(&hits, "newsletter"));
    let sid: u64 = p(first, "sid").parse().unwrap();
    assert!(
        sid >= now && sid <= after,
        "a new session starts now: {sid}"
    );
    assert_eq!(p(first, "sct"), "209");
    assert_eq!(p(first, "_ss"), "1");
    assert_eq!(first.param("_fv"), None);
    assert_eq!(p(first, "cid"), "1187654321.1748934600");
    assert_eq!(p(second, "sid"), sid.to_string());
    assert_eq!(p(second, "sct"), "209");
    assert_eq!(second.param("_ss"), None);
    assert_eq!(p(second, "cid"), "1187654321.1748934600");
}

/// `cid` never changes inside a session: gtag creating `_ga` halfway
/// through a session of ours does not switch it; the next session uses it.
#[tokio::test]
async fn cid_stays_the_same_when_ga_appears_mid_session() {
    let ga = Destination::start().await;
    let proxy = start(&ga).await;
    let ours = post(&proxy, json!([pageview()]), "").await;
    let with_ga = format!("{ours}; _ga=GA1.1.999888777.1700000000");
    post(&proxy, json!([track("newsletter", json!({}))]), &with_ga).await;
    let hits1 = hits(&ga, 2).await;
    let cid = p(named(&hits1, "page_view"), "cid");
    assert_ne!(cid, "999888777.1700000000");
    assert_eq!(p(named(&hits1, "newsletter"), "cid"), cid);
    assert_eq!(
        p(named(&hits1, "newsletter"), "sid"),
        p(named(&hits1, "page_view"), "sid")
    );
    // The session ended (no tp_sid): the next one joins gtag's client id.
    let tp_cid = ours.split("; ").find(|c| c.starts_with("tp_cid=")).unwrap();
    post(
        &proxy,
        json!([track("later", json!({}))]),
        &format!("{tp_cid}; _ga=GA1.1.999888777.1700000000"),
    )
    .await;
    let all = hits(&ga, 3).await;
    assert_eq!(p(named(&all, "later"), "cid"), "999888777.1700000000");
}

/// "An engaged session is a session that lasts longer than 10 seconds, has
/// a key event, or has at least 2 pageviews or screenviews."
/// https://support.google.com/analytics/answer/12798876
#[tokio::test]
async fn seg_only_after_ten_seconds_two_pageviews_or_a_key_event() {
    let ga = Destination::start().await;
    let proxy = start(&ga).await;
    // A bounce: one page view and one click, in two requests.
    let ours = post(&proxy, json!([pageview()]), "").await;
    let ours2 = post(&proxy, json!([track("cta_click", json!({}))]), &ours).await;
    let bounce = hits(&ga, 2).await;
    for h in &bounce {
        assert_eq!(h.param("seg"), None, "{}", h.uri);
    }
    // A second page view makes it engaged, and it stays so.
    post(
        &proxy,
        json!([pageview(), track("after", json!({}))]),
        &ours2,
    )
    .await;
    let all = hits(&ga, 4).await;
    let second_pv = all
        .iter()
        .find(|h| h.param("_s").as_deref() == Some("3"))
        .unwrap();
    assert_eq!(p(second_pv, "seg"), "1");
    assert_eq!(p(named(&all, "after"), "seg"), "1");

    // Longer than 10 s: a session of ours that started 15 s ago.
    let tp_cid = ours.split("; ").find(|c| c.starts_with("tp_cid=")).unwrap();
    let started_ms = (now_secs() - 15) * 1000;
    let long = format!("{tp_cid}; tp_sid={}.1.1.{started_ms}.0", started_ms / 1000);
    post(&proxy, json!([track("read_on", json!({}))]), &long).await;
    let all = hits(&ga, 5).await;
    assert_eq!(p(named(&all, "read_on"), "seg"), "1");

    // A key event (GA4's default: purchase): its own hit and the next ones.
    let fresh = post(&proxy, json!([pageview()]), "").await;
    post(
        &proxy,
        json!([event(
            "ecommerce",
            Some("Order Completed"),
            json!({"order_id": "K1", "total": 5, "currency": "EUR"}),
            PAGE
        )]),
        &fresh,
    )
    .await;
    let all = hits(&ga, 7).await;
    let purchase = named(&all, "purchase");
    assert_eq!(p(purchase, "seg"), "1");
    let fresh_pv = all
        .iter()
        .filter(|h| h.param("en").as_deref() == Some("page_view"))
        .find(|h| h.param("sid") == purchase.param("sid"))
        .unwrap();
    assert_eq!(fresh_pv.param("seg"), None);
}

/// A custom key event list: `key_events` in the tool's settings.
#[tokio::test]
async fn configured_key_events_engage_the_session() {
    let ga = Destination::start().await;
    let proxy = start_with(&ga, "key_events = [\"sign_up\"]", "").await;
    let c = post(&proxy, json!([pageview(), track("sign_up", json!({}))]), "").await;
    post(&proxy, json!([track("next", json!({}))]), &c).await;
    let all = hits(&ga, 3).await;
    assert_eq!(named(&all, "page_view").param("seg"), None);
    assert_eq!(p(named(&all, "sign_up"), "seg"), "1");
    assert_eq!(p(named(&all, "next"), "seg"), "1");
}

// ---------------------------------------------------------------------------
// 2. Naming rules and collection limits.
// "Event naming rules": https://support.google.com/analytics/answer/13316687
// "[GA4] Event collection limits": https://support.google.com/analytics/answer/9267744

#[tokio::test]
async fn reserved_names_prefixes_limits_and_number_types() {
    let ga = Destination::start().await;
    let proxy = start(&ga).await;
    let mut props = serde_json::Map::new();
    props.insert("ga_campaign".into(), json!("spring"));
    props.insert("google_flag".into(), json!(true));
    props.insert("_internal".into(), json!("x"));
    props.insert("firebase_id".into(), json!(7));
    props.insert("value".into(), json!("12.5"));
    props.insert("currency".into(), json!("eur"));
    props.insert("shipping".into(), json!("4"));
    props.insert("zip".into(), json!("01234"));
    props.insert("long_text".into(), json!("é".repeat(120)));
    props.insert(format!("a_{}", "n".repeat(50)), json!(1));
    post(
        &proxy,
        json!([
            track("session_start", Value::Object(props)),
            track("first_visit", json!({})),
            track("user_engagement", json!({})),
            track("page_view", json!({})),
        ]),
        "",
    )
    .await;
    let all = hits(&ga, 4).await;
    let mut names: Vec<String> = all.iter().map(|h| p(h, "en")).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "custom_first_visit",
            "custom_session_start",
            "custom_user_engagement",
            "page_view"
        ]
    );
    let hit = named(&all, "custom_session_start");
    assert_eq!(p(hit, "ep.custom_ga_campaign"), "spring");
    assert_eq!(p(hit, "ep.custom_google_flag"), "true");
    assert_eq!(p(hit, "ep.custom_internal"), "x");
    assert_eq!(p(hit, "epn.custom_firebase_id"), "7");
    for gone in [
        "ep.ga_campaign",
        "ep.google_flag",
        "ep._internal",
        "epn.firebase_id",
    ] {
        assert_eq!(hit.param(gone), None, "{gone}");
    }
    // GA4 reads `value` and `shipping` as numbers: `epn.`, whatever the page
    // sent; `value` goes with its currency.
    assert_eq!(p(hit, "epn.value"), "12.5");
    assert_eq!(p(hit, "epn.shipping"), "4");
    assert_eq!(p(hit, "cu"), "EUR");
    // Other properties keep the page's type.
    assert_eq!(p(hit, "ep.zip"), "01234");
    assert_eq!(p(hit, "ep.long_text").chars().count(), 100);
    assert_eq!(p(hit, &format!("epn.a_{}", "n".repeat(38))), "1");

    // 25 event parameters at most.
    let many: serde_json::Map<String, Value> =
        (0..40).map(|i| (format!("p{i:02}"), json!(i))).collect();
    post(&proxy, json!([track("many", Value::Object(many))]), "").await;
    let all = hits(&ga, 5).await;
    let hit = named(&all, "many");
    let count = hit
        .query()
        .iter()
        .filter(|(k, _)| k.starts_with("ep.") || k.starts_with("epn."))
        .count();
    assert_eq!(count, 25, "{}", hit.uri);
    assert_eq!(p(hit, "epn.p00"), "0");

    let metrics = proxy.metrics().await;
    for (reason, at_least) in [
        ("reserved_name", 7.0),
        ("parameter_limit", 16.0),
        ("value_too_long", 1.0),
        ("name_too_long", 1.0),
    ] {
        let v = metric_value(
            &metrics,
            &format!("tagproxy_payload_adjusted_total{{tool=\"ga4\",reason=\"{reason}\"}}"),
        );
        assert!(v >= at_least, "{reason}: {v}");
    }
    let logs = proxy.logs();
    assert!(
        logs.contains("reserved_name") && logs.contains("session_start"),
        "renames are logged at debug with the reason"
    );
}

// ---------------------------------------------------------------------------
// 3. No personal data to GA4.
// "Best practices to avoid sending PII": https://support.google.com/analytics/answer/6366371

#[tokio::test]
async fn personal_data_never_reaches_ga4() {
    let ga = Destination::start().await;
    let meta_free = start(&ga).await;
    let url = "https://shop.example.com/thanks?email=jane.doe%40example.com&order=A1";
    let mut ev = track(
        "signup",
        json!({
            "email": "Jane.Doe@Example.com",
            "e_mail": "jane@example.org",
            "phone": "+1 650 555 0134",
            "first_name": "Jane",
            "last_name": "Doe",
            "customer": {"name": "Jane Doe", "email": "jd@example.net"},
            "address": "1 Main Street, Springfield",
            "street": "Main Street 1",
            "message": "reach me at jane.doe@example.com",
            "contact": "(650) 555-0134",
            "plan": "pro",
            "name": "Pro plan",
        }),
    );
    ev["page"]["url"] = json!(url);
    ev["page"]["referrer"] = json!("https://mail.example.com/?to=jane.doe@example.com");
    let order = event(
        "ecommerce",
        Some("Order Completed"),
        json!({
            "order_id": "A1", "total": 10, "currency": "EUR",
            "email": "jane.doe@example.com", "phone": "+16505550134",
            "products": [{"product_id": "SKU-1", "name": "Mug", "variant": "gift for jane.doe@example.com", "price": 10, "quantity": 1}],
        }),
        url,
    );
    post(&meta_free, json!([ev, order]), "").await;
    let all = hits(&ga, 2).await;
    for hit in &all {
        // Random ids (event id, client and session ids) may hold any digits.
        let text = hit
            .query()
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "ep.event_id" | "cid" | "sid"))
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect::<String>()
            .to_ascii_lowercase();
        for bad in [
            "jane",
            "doe",
            "650",
            "555",
            "main street",
            "springfield",
            "%40",
        ] {
            assert!(!text.contains(bad), "{bad:?} reached GA4:\n{text}");
        }
        assert_eq!(
            p(hit, "dl"),
            "https://shop.example.com/thanks?email=redacted&order=A1"
        );
    }
    let signup = named(&all, "signup");
    assert_eq!(p(signup, "dr"), "https://mail.example.com/?to=redacted");
    assert_eq!(p(signup, "ep.plan"), "pro");
    assert_eq!(p(signup, "ep.name"), "Pro plan");
    let purchase = named(&all, "purchase");
    assert_eq!(p(purchase, "pr1"), "idSKU-1~nmMug~pr10~qt1");
    let metrics = meta_free.metrics().await;
    let n = metric_value(
        &metrics,
        "tagproxy_payload_adjusted_total{tool=\"ga4\",reason=\"personal_data\"}",
    );
    assert!(n >= 13.0, "{n}");
}

/// A custom action with `include_system_properties` sends GA4 the event's
/// own parameters only: the site's cookies, the visitor's IP (with
/// `hide_ip`) and location never become `ep.system_*` parameters.
#[tokio::test]
async fn system_properties_never_become_ga4_parameters() {
    let ga = Destination::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    let tool = format!(
        "type = \"google-analytics-4\"\nendpoint = \"{}\"\n[settings]\nmeasurement_id = \"G-TEST12345\"\nhide_ip = true\n\n[[actions]]\nname = \"signup\"\nkind = \"event\"\nfiring = [\"signup\"]\ninclude_system_properties = true\ninclude_event_properties = true\n[actions.fields]\nevent_name = \"sign_up\"\n",
        ga.url()
    );
    std::fs::write(dir.path().join("tools/ga4.toml"), tool).unwrap();
    let text = format!(
        "[server]\n{LISTEN_ANY}\nupstream = \"http://127.0.0.1:9\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n[triggers.signup]\nrules = [ {{ match = \"{{{{ client.__zarazTrack }}}}\", op = \"equals\", value = \"signup\" }} ]\n"
    );
    let path = dir.path().join("tagproxy.toml");
    std::fs::write(&path, text).unwrap();
    let proxy = Proxy::spawn(dir, path, &[]).await;
    let resp = client()
        .post(proxy.url("/_tagproxy/t"))
        .header("content-type", "application/json")
        .header("user-agent", UA)
        .header("x-forwarded-for", "198.51.100.77")
        .header("cookie", "shop_session=S3CR3TSESSION; cart=C4RTID")
        .body(json!([track("signup", json!({"plan": "pro"}))]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let all = hits(&ga, 1).await;
    let hit = named(&all, "sign_up");
    assert_eq!(p(hit, "ep.plan"), "pro");
    let system: Vec<_> = hit
        .query()
        .into_iter()
        .filter(|(k, _)| k.contains("system") || k.contains("cookies"))
        .collect();
    assert!(system.is_empty(), "{system:?} in {}", hit.uri);
    for leaked in ["S3CR3TSESSION", "C4RTID", "198.51.100.77"] {
        assert!(!hit.uri.contains(leaked), "{leaked} in {}", hit.uri);
    }
    assert_eq!(hit.param("_uip"), None);
}

/// `tagproxy check` warns (exit 0) when a GA4 custom action maps personal
/// data into a field.
#[test]
fn check_warns_when_a_custom_action_maps_personal_data() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    let tool = "type = \"google-analytics-4\"\n[settings]\nmeasurement_id = \"G-TEST12345\"\n\n[[actions]]\nname = \"signup\"\nkind = \"event\"\nfiring = [\"Pageview\"]\n[actions.fields]\nevent_name = \"sign_up\"\nmethod = \"{{ client.method }}\"\nuser_mail = \"{{ client.customer_email }}\"\nphone = \"{{ client.tel }}\"\n";
    std::fs::write(dir.path().join("tools/ga4.toml"), tool).unwrap();
    let cfg = dir.path().join("tagproxy.toml");
    std::fs::write(&cfg, "[server]\nupstream = \"http://127.0.0.1:9\"\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let path = dir.path().join("tools/ga4.toml");
    let path = path.display();
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    let want = [
        format!("warning: {path}:13:9: action `signup` field `phone` maps `phone` (phone number: personal data) into GA4"),
        format!("warning: {path}:13:9: action `signup` field `phone` maps `client.tel` (phone number: personal data) into GA4"),
        format!("warning: {path}:12:13: action `signup` field `user_mail` maps `user_mail` (e-mail address: personal data) into GA4"),
        format!("warning: {path}:12:13: action `signup` field `user_mail` maps `client.customer_email` (e-mail address: personal data) into GA4"),
    ];
    for w in &want {
        assert!(
            warnings.iter().any(|l| l.starts_with(w.as_str())),
            "want {w:?} in\n{stderr}"
        );
    }
    assert!(!stderr.contains("field `method`"), "{stderr}");
}

// ---------------------------------------------------------------------------
// 4. Ecommerce, field by field, as Zaraz's GA4 Managed Component maps it
// (github.com/managed-components/google-analytics-4, src/ecommerce.ts) and
// as GA4 documents it where they differ:
// https://developers.google.com/analytics/devguides/collection/ga4/ecommerce
// https://developers.google.com/analytics/devguides/collection/ga4/reference/events

#[tokio::test]
async fn order_completed_and_product_added_are_mapped_field_by_field() {
    let ga = Destination::start().await;
    let proxy = start(&ga).await;
    let order = event(
        "ecommerce",
        Some("Order Completed"),
        json!({
            "checkout_id": "CH-9",
            "order_id": "ORD-1001",
            "affiliation": "Demo Shop",
            "total": 59.5,
            "revenue": 50,
            "shipping": "5",
            "tax": 4.5,
            "discount": 2,
            "coupon": "SUMMER",
            "currency": "eur",
            "payment_type": "card",
            "products": [
                {"product_id": "P-1", "sku": "SKU-1", "name": "Blue Mug", "brand": "TP", "category": "Kitchen", "variant": "blue", "price": "14.5", "quantity": 2, "coupon": "MUG", "position": 1},
                {"product_id": "P-2", "name": "Green ~ Tea", "price": 25, "quantity": 1},
            ],
        }),
        "https://shop.example.com/checkout/done",
    );
    let added = event(
        "ecommerce",
        Some("Product Added"),
        json!({
            "cart_id": "C-7",
            "product_id": "P-3",
            "sku": "SKU-3",
            "name": "Teapot",
            "brand": "TP",
            "category": "Kitchen",
            "variant": "white",
            "price": 20,
            "quantity": 3,
            "position": 2,
            "currency": "USD",
        }),
        PAGE,
    );
    let searched = event(
        "ecommerce",
        Some("Products Searched"),
        json!({"query": "blue mug"}),
        PAGE,
    );
    let listed = event(
        "ecommerce",
        Some("Product List Viewed"),
        json!({"list_id": "L-1", "category": "Mugs", "products": [{"sku": "SKU-1", "name": "Blue Mug", "price": 14.5, "position": 1}]}),
        PAGE,
    );
    let promo = event(
        "ecommerce",
        Some("Clicked Promotion"),
        json!({"promotion_id": "PR-1", "name": "Summer sale", "creative": "banner_top", "position": "home_hero"}),
        PAGE,
    );
    post(&proxy, json!([order, added, searched, listed, promo]), "").await;
    let all = hits(&ga, 5).await;

    let h = named(&all, "purchase");
    assert_eq!(p(h, "cu"), "EUR");
    // transaction_id: order_id before checkout_id (Zaraz's precedence).
    assert_eq!(p(h, "ep.transaction_id"), "ORD-1001");
    // value: `total` first (Zaraz: total over value over price).
    assert_eq!(p(h, "epn.value"), "59.5");
    assert_eq!(p(h, "epn.shipping"), "5");
    assert_eq!(p(h, "epn.tax"), "4.5");
    assert_eq!(p(h, "ep.coupon"), "SUMMER");
    assert_eq!(p(h, "ep.affiliation"), "Demo Shop");
    assert_eq!(p(h, "ep.payment_type"), "card");
    // Other properties pass through as custom parameters, as in Zaraz.
    assert_eq!(p(h, "epn.revenue"), "50");
    assert_eq!(p(h, "epn.discount"), "2");
    assert_eq!(h.param("ep.checkout_id"), None);
    // Items: sku before product_id (Zaraz), GA4's two-letter keys, a `~`
    // in a value doubled.
    assert_eq!(
        p(h, "pr1"),
        "idSKU-1~nmBlue Mug~brTP~caKitchen~vablue~pr14.5~qt2~cpMUG~lp1"
    );
    assert_eq!(p(h, "pr2"), "idP-2~nmGreen ~~ Tea~pr25~qt1");
    assert_eq!(h.param("pr3"), None);
    assert_eq!(h.param("ep.item_list_name"), None);

    let h = named(&all, "add_to_cart");
    assert_eq!(p(h, "cu"), "USD");
    // A single product: its item, and value = price × quantity (GA4's
    // examples; Zaraz would send the unit price).
    assert_eq!(
        p(h, "pr1"),
        "idSKU-3~nmTeapot~brTP~caKitchen~vawhite~pr20~qt3~lp2"
    );
    assert_eq!(p(h, "epn.value"), "60");
    assert_eq!(p(h, "ep.cart_id"), "C-7");
    for gone in [
        "ep.item_list_name",
        "ep.promotion_name",
        "ep.name",
        "ep.sku",
        "ep.product_id",
        "epn.price",
    ] {
        assert_eq!(h.param(gone), None, "{gone} in {}", h.uri);
    }

    // Zaraz sends `view_search_results`, which GA4 reserves; GA4's
    // recommended event for a search is `search` with `search_term`.
    let h = named(&all, "search");
    assert_eq!(p(h, "ep.search_term"), "blue mug");

    let h = named(&all, "view_item_list");
    assert_eq!(p(h, "ep.item_list_id"), "L-1");
    assert_eq!(p(h, "ep.item_list_name"), "Mugs");
    assert_eq!(p(h, "pr1"), "idSKU-1~nmBlue Mug~pr14.5~lp1");

    let h = named(&all, "select_promotion");
    assert_eq!(p(h, "ep.promotion_id"), "PR-1");
    assert_eq!(p(h, "ep.promotion_name"), "Summer sale");
    assert_eq!(p(h, "ep.creative_name"), "banner_top");
    assert_eq!(p(h, "ep.creative_slot"), "home_hero");
}

// ---------------------------------------------------------------------------
// The validator knows the rules it enforces.

#[test]
fn the_ga4_validator_rejects_reserved_names_limits_and_personal_data() {
    let mut uri = "/g/collect?v=2&tid=G-TEST123&cid=1.2&sid=1&sct=1&_s=1&dl=https%3A%2F%2Fshop.test%2F%3Fe%3Djane%2540x.com&en=session_start&ep.ga_campaign=x&ep._x=1&ep.email=a&ep.note=jane%40x.com&pr1=idA~nmB~~C".to_string();
    for i in 0..25 {
        uri.push_str(&format!("&epn.p{i}={i}"));
    }
    let mut headers = http::HeaderMap::new();
    headers.insert("user-agent", UA.parse().unwrap());
    let r = Recorded {
        at: std::time::Instant::now(),
        method: "GET".into(),
        uri,
        headers,
        body: Default::default(),
    };
    let err = validate::ga4(&r, UA).unwrap_err();
    for want in [
        "en \"session_start\" is a reserved event name",
        "parameter name \"ga_campaign\" of ep.ga_campaign has the reserved prefix \"ga_\"",
        "of ep._x does not match",
        "ep.email is personal data",
        "ep.note = \"jane@x.com\" holds an e-mail address",
        "dl = ",
        "29 event parameters, more than 25",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(!err.contains("pr1"), "`~~` is an escaped tilde: {err}");
}
