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
//! User-Agent header (GA4) and body field (Meta).
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
