//! Property test: a visitor's value, however hostile, lands in every
//! templated place of every adapter's requests only as that value, and
//! never changes where a request goes or how it is shaped.
//!
//! Each case renders one random string (CR, LF, NUL, escape sequences,
//! `& = # ? / % +`, quotes, `{{`, `..`, non-ASCII, bidi overrides, very
//! long) through the real fan-out (triggers, custom actions, adapters, the
//! request guard) into: the http tool's URL path segment, query value and
//! fragment, a header value and a JSON body (automated and custom action);
//! GA4's event parameters (`ep.*`, automated and custom); Meta's path
//! segment (`pixel_id`), JSON body and `test_event_code`; the visitor's
//! User-Agent header (GA4) and body field (Meta). A second property covers
//! the adapters of issue 15 (Segment, Amplitude, Mixpanel, TikTok,
//! Pinterest, Snapchat, Reddit, Bing, LinkedIn, custom-image, Google Ads):
//! the value in event names and properties, page URL (every click id),
//! title, referrer and click-id cookies never changes where a request or
//! browser instruction goes, its query keys, its header names or its JSON
//! shape, and never becomes a cookie attribute.
//!
//! Percent-encoding as RFC 3986 §2 defines it:
//! <https://www.rfc-editor.org/rfc/rfc3986#section-2>; header values as RFC
//! 9110 §5.5 allows them: <https://www.rfc-editor.org/rfc/rfc9110#section-5.5>.

use std::path::Path;

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::{from_text, Delivery, HttpRequest, Payload, Tool};
use crate::consent::ConsentPolicy;
use crate::event::{Event, EventInput, Kind, PageInfo, RequestInfo};
use crate::rules::template::Variables;
use crate::rules::{fan_out, Triggers};

const HOOK: &str = r#"type = "http"
[settings]
url = "https://hooks.example:8443/u/{{ client.v }}/x?q={{ client.v }}&fixed=1#{{ client.v }}"
[settings.headers]
X-Value = "{{ client.v }}"
[settings.body]
v = "{{ client.v }}"
n = "{{ client.n }}"
[automated]
track = true
[[actions]]
name = "req"
kind = "request"
firing = ["Pageview"]
[actions.fields]
url = "https://hooks.example:8443/a/{{ client.v }}?k={{ client.v }}"
headers = { X-A = "{{ client.v }}" }
v = "{{ client.v }}"
"#;

const GA4: &str = r#"type = "google-analytics-4"
endpoint = "https://ga.example"
[settings]
measurement_id = "G-TEST1"
[automated]
track = true
[[actions]]
name = "ev"
kind = "event"
firing = ["Pageview"]
[actions.fields]
event_name = "hostile"
label = "{{ client.v }}"
"#;

const META: &str = r#"type = "facebook-pixel"
endpoint = "https://fb.example:9443"
[settings]
pixel_id = "{{ client.v }}"
access_token = "t"
test_event_code = "{{ client.v }}"
[automated]
track = true
[[actions]]
name = "lead"
kind = "event"
firing = ["Pageview"]
[actions.fields]
event_name = "Lead"
label = "{{ client.v }}"
"#;

const LOG: &str = r#"type = "console"
[automated]
track = true
[[actions]]
name = "log"
kind = "log"
firing = ["Pageview"]
[actions.fields]
label = "{{ client.v }}"
"#;

fn tools() -> Vec<Tool> {
    let vars = Variables::new();
    let triggers = Triggers::default();
    [("hook", HOOK), ("ga4", GA4), ("meta", META), ("log", LOG)]
        .into_iter()
        .map(|(id, text)| {
            from_text(id, Path::new(id), text, &vars, &triggers)
                .unwrap_or_else(|p| panic!("{p:?}"))
                .unwrap()
        })
        .collect()
}

fn event(kind: Kind, v: &str) -> Event {
    let props = json!({"v": v, "n": 12.5});
    let req = RequestInfo {
        ip: None,
        user_agent: crate::event::ua::UaParser::default().parse(v),
        cookies: Default::default(),
        location: Map::new(),
    };
    let input = EventInput {
        kind: Some(kind),
        name: "buy".into(),
        properties: props.as_object().unwrap().clone(),
        page: PageInfo {
            url: "https://shop.test/".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let now = crate::event::now_ms();
    let mut tracker = crate::event::identity::Tracker::from_cookie_header("", now / 1000);
    Event::build(input, &req, tracker.next_event(), now)
}

/// Header values HTTP allows (RFC 9110 §5.5): no control but tab.
fn header_ok(v: &str) -> bool {
    !v.chars().any(|c| (c < ' ' && c != '\t') || c == '\x7f')
}

/// A value that a URL parser folds away as a dot segment.
fn is_dot(v: &str) -> bool {
    v == "." || v == ".."
}

/// Percent-decoding (not `+`: that is a space only in forms).
fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .expect("UTF-8 after decoding")
        .into_owned()
}

fn http(d: &Delivery) -> &HttpRequest {
    match &d.payload {
        Payload::Http(r) => r,
        Payload::Stdout(_) => panic!("not http"),
    }
}

fn header<'a>(r: &'a HttpRequest, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// GA4 truncates parameter values at 100 characters.
fn ga4_value(v: &str) -> String {
    v.chars().take(100).collect()
}

/// The checks for one delivered request of `tool` carrying `v`.
fn check_delivered(tool: &str, kind: Kind, r: &HttpRequest, v: &str) {
    let url = url::Url::parse(&r.url).unwrap_or_else(|e| panic!("{e}: {:?}", r.url));
    for (k, val) in &r.headers {
        assert!(
            http::HeaderName::from_bytes(k.as_bytes()).is_ok()
                && http::HeaderValue::from_bytes(val.as_bytes()).is_ok(),
            "{k}: {val:?}"
        );
    }
    let segments: Vec<String> = url.path_segments().unwrap().map(decode).collect();
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    match (tool, kind) {
        ("hook", Kind::Track) => {
            assert_eq!(
                url.origin().ascii_serialization(),
                "https://hooks.example:8443"
            );
            assert_eq!(segments, ["u", v, "x"]);
            assert_eq!(
                query,
                [("q".into(), v.to_string()), ("fixed".into(), "1".into())]
            );
            assert_eq!(url.fragment().map(decode).as_deref(), Some(v));
            assert_eq!(header(r, "x-value"), Some(v));
            let body: Value = serde_json::from_slice(r.body.as_ref().unwrap()).unwrap();
            assert_eq!(body, json!({"v": v, "n": 12.5}));
        }
        ("hook", Kind::Pageview) => {
            assert_eq!(
                url.origin().ascii_serialization(),
                "https://hooks.example:8443"
            );
            assert_eq!(segments, ["a", v]);
            assert_eq!(query, [("k".into(), v.to_string())]);
            assert_eq!(header(r, "x-a"), Some(v));
            let body: Value = serde_json::from_slice(r.body.as_ref().unwrap()).unwrap();
            assert_eq!(body, json!({"v": v}));
        }
        ("ga4", _) => {
            assert_eq!(url.origin().ascii_serialization(), "https://ga.example");
            assert_eq!(url.path(), "/g/collect");
            let key = if kind == Kind::Track {
                "ep.v"
            } else {
                "ep.label"
            };
            let got: Vec<&String> = query
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, v)| v)
                .collect();
            // Personal data never reaches GA4 (tools::pii): such a value is
            // dropped, anything else arrives as it was.
            if super::pii::kind("v", v).is_some() {
                assert!(got.is_empty(), "{got:?}");
            } else {
                assert_eq!(got, [&ga4_value(v)]);
            }
            // Every parameter name is GA4's or derived from a property name.
            for (k, _) in &query {
                assert!(
                    k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.'),
                    "{k:?}"
                );
            }
            assert_eq!(header(r, "user-agent").unwrap_or(""), v);
        }
        ("meta", _) => {
            assert_eq!(
                url.origin().ascii_serialization(),
                "https://fb.example:9443"
            );
            assert_eq!(segments, ["v21.0", v, "events"]);
            assert!(query.is_empty());
            let body: Value = serde_json::from_slice(r.body.as_ref().unwrap()).unwrap();
            let data = &body["data"][0];
            let field = if kind == Kind::Track { "v" } else { "label" };
            // Personal data never rides in custom_data in clear (tools::pii).
            if super::pii::kind(field, v).is_some() {
                assert_eq!(data["custom_data"][field], Value::Null);
            } else {
                assert_eq!(data["custom_data"][field], json!(v));
            }
            if !v.is_empty() {
                assert_eq!(body["test_event_code"], json!(v));
            }
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn run(v: &str) {
    let tools = tools();
    let triggers = Triggers::default();
    let vars = Variables::new();
    let consent = ConsentPolicy::new(&Default::default());
    for kind in [Kind::Track, Kind::Pageview] {
        let ev = event(kind, v);
        let out = fan_out(&ev, &tools, &triggers, &vars, &consent);
        assert_eq!(out.deliveries.len() + out.invalid.len(), 4, "{out:?}");
        for d in &out.deliveries {
            if let Payload::Stdout(line) = &d.payload {
                // The operator's terminal shows it; it cannot act on it.
                assert!(
                    !line.chars().any(crate::logging::acts_on_terminal),
                    "{line:?}"
                );
                let json: Value =
                    serde_json::from_str(line.strip_prefix("[log] ").unwrap()).unwrap();
                let got = if kind == Kind::Track {
                    &json["properties"]["v"]
                } else {
                    &json["fields"]["label"]
                };
                assert_eq!(got, &json!(v));
                continue;
            }
            check_delivered(&d.tool, kind, http(d), v);
        }
        for (d, why) in &out.invalid {
            // Refused only for what can never be sent, and only then.
            let expected = match (d.tool.as_str(), why.reason) {
                (_, "header_value") => !header_ok(v) || !header_ok(&ev.user_agent),
                ("hook" | "meta", "url") => is_dot(v),
                _ => false,
            };
            assert!(expected, "{}: {why} for {v:?}", d.tool);
            assert!(
                !why.message.contains(v) || v.is_empty() || v.len() < 3,
                "{why}"
            );
        }
        let delivered = |t: &str| out.deliveries.iter().any(|d| d.tool == t);
        if header_ok(v) && !is_dot(v) {
            assert!(delivered("hook"), "hook refused {v:?}: {:?}", out.invalid);
        }
        if !is_dot(v) {
            assert!(delivered("meta"), "meta refused {v:?}: {:?}", out.invalid);
        }
    }
}

fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        r#"(\r|\n|\r\n|\x00|\x1b\[2J|\x7f|\u{85}|\u{202e}|&|=|#|\?|/|\\|%|%2e|\+| |"|'|\{\{|\}\}|\{\{ client\.v \}\}|\.\.|\.|é|✓|😀|X-Evil: 1|[a-z0-9]){0,24}"#,
        any::<String>(),
        "[a-z&=#]{200,3000}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn hostile_values_stay_values(v in hostile()) {
        run(&v);
    }
}

/// The inputs of issue 17, and the edges, by name.
#[test]
fn named_cases() {
    for v in [
        "a&admin=1#frag",
        "O1\r\nX-Evil: 1",
        "..",
        ".",
        "",
        "%2e%2e",
        "../../admin?x=1#y",
        "{{ client.v }}",
        "\"},\"admin\":true,\"x\":{\"",
        "x\u{0}y",
        "\u{9b}2J\u{1b}[31m\u{202e}txt.exe\u{2028}",
    ] {
        run(v);
    }
}

/// With `include_event_properties`, a visitor's `url`, `method`, `headers`
/// or `body` property is data in the JSON body, never the request's own.
#[test]
fn event_properties_never_shape_the_request() {
    let text = r#"type = "http"
[[actions]]
name = "req"
kind = "request"
firing = ["Pageview"]
include_event_properties = true
[actions.fields]
url = "https://hooks.example/in"
"#;
    let tool = from_text(
        "hook",
        Path::new("hook.toml"),
        text,
        &Variables::new(),
        &Triggers::default(),
    )
    .unwrap()
    .unwrap();
    let props = json!({
        "url": "http://169.254.169.254/latest/meta-data/",
        "method": "DELETE",
        "headers": {"X-Evil": "1"},
        "body": "raw text",
    });
    let req = RequestInfo {
        ip: None,
        user_agent: crate::event::ua::UaParser::default().parse("UA/1"),
        cookies: Default::default(),
        location: Map::new(),
    };
    let input = EventInput {
        kind: Some(Kind::Pageview),
        properties: props.as_object().unwrap().clone(),
        page: PageInfo {
            url: "https://shop.test/".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let now = crate::event::now_ms();
    let mut tracker = crate::event::identity::Tracker::from_cookie_header("", now / 1000);
    let ev = Event::build(input, &req, tracker.next_event(), now);
    let consent = ConsentPolicy::new(&Default::default());
    let out = fan_out(
        &ev,
        std::slice::from_ref(&tool),
        &Triggers::default(),
        &Variables::new(),
        &consent,
    );
    assert!(out.invalid.is_empty(), "{:?}", out.invalid);
    let r = http(&out.deliveries[0]);
    assert_eq!(r.url, "https://hooks.example/in");
    assert_eq!(r.method, "POST");
    assert_eq!(header(r, "x-evil"), None);
    let body: Value = serde_json::from_slice(r.body.as_ref().unwrap()).unwrap();
    // The action's own `url` wins over the property (explicit fields do).
    assert_eq!(body.get("url"), None);
    assert_eq!(body["method"], "DELETE");
    assert_eq!(body["headers"], json!({"X-Evil": "1"}));
    assert_eq!(body["body"], "raw text");
}

/// The adapters of issue 15, one tool each: (id, file, where its requests
/// go, the query keys its requests may have). A visitor's value is in the
/// event's name and properties, the page URL (every click id), title and
/// referrer, the click-id cookies and, for the browser-side tools, custom
/// action fields.
const ISSUE_15: &[(&str, &str, &str, &[&str])] = &[
    (
        "segment",
        "type = \"segment\"\nendpoint = \"https://seg.example\"\n[settings]\nwrite_key = \"k\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        "https://seg.example/v1/batch",
        &[],
    ),
    (
        "amplitude",
        "type = \"amplitude\"\nendpoint = \"https://amp.example\"\n[settings]\napi_key = \"k\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        "https://amp.example/2/httpapi",
        &[],
    ),
    (
        "mixpanel",
        "type = \"mixpanel\"\nendpoint = \"https://mp.example\"\n[settings]\ntoken = \"t\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        "https://mp.example/import",
        &["strict"],
    ),
    (
        "tiktok",
        "type = \"tiktok\"\nendpoint = \"https://tt.example\"\n[settings]\npixel_code = \"P\"\naccess_token = \"t\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        "https://tt.example/open_api/v1.3/event/track/",
        &[],
    ),
    (
        "pinterest",
        "type = \"pinterest\"\nendpoint = \"https://pin.example\"\n[settings]\nad_account_id = \"549755885175\"\naccess_token = \"t\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        "https://pin.example/v5/ad_accounts/549755885175/events",
        &[],
    ),
    (
        "snapchat",
        "type = \"snapchat\"\nendpoint = \"https://snap.example\"\n[settings]\npixel_id = \"P\"\naccess_token = \"t\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        "https://snap.example/v3/P/events",
        &["access_token"],
    ),
    (
        "reddit",
        "type = \"reddit\"\nendpoint = \"https://rdt.example\"\n[settings]\nad_account_id = \"a2_x\"\naccess_token = \"t\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        "https://rdt.example/api/v2.0/conversions/events/a2_x",
        &[],
    ),
    (
        "bing",
        "type = \"bing\"\nendpoint = \"https://bat.example\"\n[settings]\ntag_id = \"97000001\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        "https://bat.example/action/0",
        &[
            "ti", "Ver", "mid", "evt", "ea", "ec", "el", "ev", "gv", "gc", "p", "tl", "r", "msclkid",
            "rn",
        ],
    ),
    (
        "linkedin",
        "type = \"linkedin\"\nendpoint = \"https://li.example\"\n[settings]\npartner_id = \"1\"\n[automated]\npageview = true\n[[actions]]\nname = \"c\"\nkind = \"conversion\"\nfiring = [\"Pageview\"]\n[actions.fields]\nconversion_id = \"{{ client.v }}\"\n",
        "https://li.example/collect",
        &["pid", "conversionId", "fmt", "url", "time", "li_fat_id"],
    ),
    (
        "pixel",
        "type = \"custom-image\"\n[settings]\nurl = \"https://px.example/p.gif?v={{ client.v }}\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        "https://px.example/p.gif",
        &["v"],
    ),
    (
        "gads",
        "type = \"google-ads\"\nendpoint = \"https://gads.example\"\n[settings]\nconversion_id = \"AW-123\"\nconversion_label = \"L\"\n[automated]\npageview = true\necommerce = true\n[[actions]]\nname = \"c\"\nkind = \"conversion\"\nfiring = [\"Pageview\"]\n[actions.fields]\nlabel = \"{{ client.v }}\"\nvalue = \"{{ client.v }}\"\ncurrency = \"{{ client.v }}\"\ntransaction_id = \"{{ client.v }}\"\n",
        "https://gads.example/pagead/conversion/123/",
        &[
            "guid", "rnd", "fst", "cv", "sendb", "num", "ig", "url", "tiba", "ref", "label",
            "value", "currency_code", "oid", "gclaw", "gclgb", "wbraid", "gcs", "gcd",
        ],
    ),
];

/// Header names the issue-15 adapters send (none from a visitor).
const ISSUE_15_HEADERS: &[&str] = &[
    "content-type",
    "accept",
    "authorization",
    "access-token",
    "user-agent",
];

/// An event of `kind` whose every visitor-controlled place holds `v`.
fn event_everywhere(kind: Kind, v: &str) -> Event {
    let mut props = json!({"v": v, "plan": v, "order_id": v, "currency": v, "value": 3,
        "products": [{"product_id": v, "name": v, "price": 2, "quantity": 1}]});
    props["category"] = json!(v);
    let cookies = [
        "_gcl_aw",
        "_gcl_gb",
        "_ttp",
        "ttclid",
        "_epik",
        "_scid",
        "_rdt_cid",
        "_uetmsclkid",
        "li_fat_id",
    ]
    .iter()
    .map(|c| (c.to_string(), format!("GCL.1.{v}")))
    .collect();
    let req = RequestInfo {
        ip: None,
        user_agent: crate::event::ua::UaParser::default().parse(v),
        cookies,
        location: Map::new(),
    };
    let ids = [
        "gclid",
        "gbraid",
        "wbraid",
        "ttclid",
        "msclkid",
        "li_fat_id",
        "epik",
        "ScCid",
        "rdt_cid",
    ];
    let query: Vec<String> = ids.iter().map(|k| format!("{k}={v}")).collect();
    let input = EventInput {
        kind: Some(kind),
        name: if kind == Kind::Ecommerce {
            "Order Completed".into()
        } else {
            v.into()
        },
        properties: props.as_object().unwrap().clone(),
        page: PageInfo {
            url: format!("https://shop.test/p?{}", query.join("&")),
            title: v.into(),
            referrer: format!("https://ref.test/{v}"),
            ..Default::default()
        },
        ..Default::default()
    };
    let now = crate::event::now_ms();
    let mut tracker = crate::event::identity::Tracker::from_cookie_header("", now / 1000);
    Event::build(input, &req, tracker.next_event(), now)
}

/// Where a request goes and its shape are the tool's, whatever `v` is.
fn check_fixed(id: &str, url: &str, want: &str, keys: &[&str]) {
    let u = url::Url::parse(url).unwrap_or_else(|e| panic!("{id}: {e}: {url:?}"));
    let mut base = u.clone();
    base.set_query(None);
    assert_eq!(base.as_str(), want, "{id}: {url}");
    for (k, _) in u.query_pairs() {
        assert!(keys.contains(&k.as_ref()), "{id}: query key {k:?} in {url}");
    }
}

fn run_issue_15(v: &str) {
    let vars = Variables::new();
    let triggers = Triggers::default();
    let consent = ConsentPolicy::new(&Default::default());
    for (id, text, want, keys) in ISSUE_15 {
        let tool = from_text(id, Path::new(id), text, &vars, &triggers)
            .unwrap_or_else(|p| panic!("{p:?}"))
            .unwrap();
        for kind in [Kind::Pageview, Kind::Track, Kind::Ecommerce] {
            let ev = event_everywhere(kind, v);
            let out = fan_out(&ev, std::slice::from_ref(&tool), &triggers, &vars, &consent);
            if kind == Kind::Pageview {
                let made = out.deliveries.len() + out.invalid.len() + out.instructions.len();
                assert!(made > 0, "{id}: nothing for a pageview");
            }
            for d in &out.deliveries {
                let r = http(d);
                assert_eq!(r.method, "POST", "{id}");
                check_fixed(id, &r.url, want, keys);
                for (k, val) in &r.headers {
                    assert!(ISSUE_15_HEADERS.contains(&k.as_str()), "{id}: header {k}");
                    assert!(
                        http::HeaderValue::from_bytes(val.as_bytes()).is_ok(),
                        "{id}: {k}: {val:?}"
                    );
                }
                let body: Value = serde_json::from_slice(r.body.as_deref().unwrap())
                    .unwrap_or_else(|e| panic!("{id}: body not JSON: {e}"));
                assert!(body.is_object() || body.is_array(), "{id}");
            }
            for (d, why) in &out.invalid {
                // Only the visitor's own User-Agent can make a request
                // unsendable (a control character in its header value).
                assert!(
                    why.reason == "header_value" && !header_ok(&ev.user_agent),
                    "{}: {why} for {v:?}",
                    d.tool
                );
            }
            for i in &out.instructions {
                let url = i["fetch"].as_str().expect("a fetch instruction");
                check_fixed(id, url, want, keys);
                let q: Vec<(String, String)> = url::Url::parse(url)
                    .unwrap()
                    .query_pairs()
                    .into_owned()
                    .collect();
                let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, x)| x.as_str());
                match *id {
                    // The value arrives as that value, encoded for its place.
                    "pixel" => assert_eq!(get("v"), Some(v)),
                    "gads" if kind == Kind::Pageview => {
                        let t = v.trim();
                        if !t.is_empty() {
                            assert_eq!(get("label"), Some(t));
                            assert_eq!(get("oid"), Some(t));
                        }
                    }
                    _ => {}
                }
            }
            for c in &out.cookies {
                // A click id kept only when it is one; never an attribute.
                let h = c
                    .set_cookie_header(None, false)
                    .unwrap_or_else(|| panic!("{id}: unsendable cookie {c:?}"));
                assert_eq!(h.split(';').count(), 4, "{id}: {h}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    #[test]
    fn hostile_values_stay_values_in_the_issue_15_adapters(v in hostile()) {
        run_issue_15(&v);
    }
}

#[test]
fn issue_15_named_cases() {
    for v in [
        "a&admin=1#frag",
        "O1\r\nX-Evil: 1",
        "..",
        "",
        "x; Domain=evil.test",
        "Cj0KCQ\"},\"admin\":true,\"x\":{\"",
        "../../admin?x=1#y",
        "%0d%0aSet-Cookie:%20a=b",
        "{{ client.v }}",
        "\u{9b}2J\u{1b}[31m\u{202e}txt.exe\u{2028}",
    ] {
        run_issue_15(v);
    }
}
