//! `segment`: Segment's HTTP Tracking API, `POST {endpoint}/v1/batch`
//! (<https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/>),
//! Basic auth with the write key as user name and an empty password.
//!
//! A pageview is a `page` call, `zaraz.track` and `zaraz.ecommerce` are
//! `track` calls. Zaraz's ecommerce events are Segment's E-commerce Spec v2
//! events under the same names and with the same property names
//! (<https://segment.com/docs/connections/spec/ecommerce/v2/>), so they pass
//! unchanged. `messageId` is our event id: Segment drops a message whose
//! `messageId` it has already seen (its deduplication, 24 h and more), so a
//! retried delivery is counted once. The `anonymousId` is analytics.js's
//! `ajs_anonymous_id` cookie when the site runs it (the same visitor in
//! both), else tagproxy's own client id; `userId` comes from a `userId` /
//! `user_id` property or analytics.js's `ajs_user_id` cookie. Personal data
//! in properties is sent as SHA-256 ([`super::props::analytics_props`]).
//!
//! Each request is a one-message batch: the delivery queue may join them
//! (Segment takes 500 KB per batch, 32 KB per message).

use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::props;
use super::{
    endpoint, parse_settings, Adapter, AnswerReader, Automated, BuildContext, HttpRequest, Output,
    Payload, TemplateString, ToolFile,
};
use crate::config::Problem;
use crate::delivery::Verdict;
use crate::event::{Event, Kind};
use crate::rules::template::Template;

const DEFAULT_ENDPOINT: &str = "https://api.segment.io";
/// Segment's batch limit ("a batch request is limited to 500 KB").
const MAX_BATCH_BYTES: usize = 500 * 1024;
/// Property keys that are Segment identities, not properties.
const IDENTITY_KEYS: [&str; 3] = ["userId", "user_id", "anonymousId"];

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SegmentSettings")]
struct Settings {
    /// The source's write key (a secret variable, typically).
    write_key: Option<TemplateString>,
}

/// The JSON Schema of this adapter's `[settings]` table (`tagproxy schema`).
pub fn settings_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<Settings>()
}

pub struct Segment {
    base: String,
    write_key: Template,
}

impl Segment {
    /// # Errors
    /// `settings.write_key` is missing, or the settings do not parse.
    pub fn from_config(path: &Path, text: &str, file: &ToolFile) -> Result<Segment, Problem> {
        let s: Settings = parse_settings(path, text)?;
        let Some(write_key) = s.write_key else {
            return Err(file.missing_setting(path, text, "write_key"));
        };
        Ok(Segment {
            base: endpoint(file, DEFAULT_ENDPOINT),
            write_key: write_key.0,
        })
    }

    /// One `page` or `track` message, as a one-message batch.
    fn send(
        &self,
        kind: &str,
        name: Option<&str>,
        properties: &Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        let url = page_url(event);
        let mut context = json!({
            "library": {"name": "tagproxy", "version": env!("CARGO_PKG_VERSION")},
            "page": page_props(event, &url),
        });
        if let Some(ip) = event.ip {
            context["ip"] = json!(ip.to_string());
        }
        if !event.user_agent.is_empty() {
            context["userAgent"] = json!(event.user_agent);
        }
        let locale = event.sys_str(&["device", "language"]);
        if !locale.is_empty() {
            context["locale"] = json!(locale);
        }
        if let Some((w, h)) = props::screen(event) {
            context["screen"] = json!({"width": w, "height": h});
        }
        let mut msg = json!({
            "type": kind,
            "messageId": event.id,
            "anonymousId": anonymous_id(event, properties),
            "timestamp": crate::admin::audit::rfc3339_ms(props::event_time_ms(event)),
            "context": context,
        });
        if let Some(user) = user_id(event, properties) {
            msg["userId"] = json!(user);
        }
        let mut properties = props::analytics_props(properties);
        for k in IDENTITY_KEYS {
            properties.remove(k);
        }
        match kind {
            "page" => {
                // Segment's page properties (url, title, referrer, path,
                // search), as analytics.js sends them.
                if let Value::Object(page) = page_props(event, &url) {
                    for (k, v) in page {
                        properties.entry(k).or_insert(v);
                    }
                }
                let title = event.sys_str(&["page", "title"]);
                if !title.is_empty() {
                    msg["name"] = json!(title);
                }
            }
            _ => msg["event"] = json!(name.unwrap_or("event")),
        }
        msg["properties"] = Value::Object(properties);
        let body = json!({
            "batch": [msg],
            "sentAt": crate::admin::audit::rfc3339_ms(crate::event::now_ms()),
        });
        let key = cx.render(&self.write_key, event);
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
        Output {
            payloads: vec![Payload::Http(HttpRequest {
                method: "POST".into(),
                url: format!("{}/v1/batch", self.base),
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("authorization".into(), format!("Basic {auth}")),
                ],
                body: Some(serde_json::to_vec(&body).expect("a JSON value serializes")),
            })],
            ..Default::default()
        }
    }
}

/// Segment's HTTP Tracking API `POST /v1/batch`: "There is a maximum of
/// 500KB per batch request and 32KB per call"; no event count is
/// documented, so the bytes bound a batch
/// (<https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/#batch>).
/// Requests with the same write key join `batch[]`; `sentAt` is the last
/// member's.
pub const BATCHING: super::json_batch::JsonArrayBatching = super::json_batch::JsonArrayBatching {
    array: Some("batch"),
    limits: crate::delivery::Limits {
        max_events: usize::MAX,
        max_bytes: MAX_BATCH_BYTES,
    },
    max_member_bytes: 32 * 1024,
    per_request: &["sentAt"],
};

impl Adapter for Segment {
    fn supports(&self) -> Automated {
        Automated::ALL
    }

    fn automated(&self, event: &Event, cx: &BuildContext<'_>) -> Output {
        match event.kind {
            Kind::Pageview => self.send("page", None, &Map::new(), event, cx),
            // Ecommerce names are the E-commerce Spec's own.
            Kind::Track | Kind::Ecommerce => {
                self.send("track", Some(&event.name), event.properties(), event, cx)
            }
        }
    }

    fn action_kinds(&self) -> &'static [(&'static str, &'static [&'static str])] {
        &[("track", &["event"]), ("page", &[])]
    }

    /// `track`: a track call named `event` with the other fields as
    /// properties; `page`: a page call with the fields as properties.
    fn custom(
        &self,
        kind: &str,
        mut fields: Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        let name = match fields.remove("event") {
            Some(Value::String(s)) if !s.is_empty() => s,
            _ => "event".to_string(),
        };
        if kind == "page" {
            self.send("page", None, &fields, event, cx)
        } else {
            self.send("track", Some(&name), &fields, event, cx)
        }
    }

    fn credentials(&self, event: &Event, cx: &BuildContext<'_>) -> Vec<String> {
        vec![cx.render(&self.write_key, event)]
    }

    fn templates(&self) -> Vec<&Template> {
        vec![&self.write_key]
    }

    fn origins(&self) -> Vec<url::Origin> {
        super::origin_list(&self.base)
    }

    fn max_body_bytes(&self) -> usize {
        MAX_BATCH_BYTES
    }

    fn batching(&self) -> Option<std::sync::Arc<dyn crate::delivery::Batching>> {
        Some(std::sync::Arc::new(BATCHING))
    }

    fn answer_reader(&self) -> Option<AnswerReader> {
        Some(read_answer)
    }
}

/// Segment answers `200` to every well-formed request and `400` to a
/// payload too large or not JSON, with a JSON error naming why (HTTP API
/// docs, "Errors"); `429` when a source is rate-limited. Only the `400`'s
/// message is read here; statuses decide the rest.
fn read_answer(status: u16, body: &str) -> Option<Verdict> {
    let final_4xx = (400..500).contains(&status) && !matches!(status, 408 | 429);
    final_4xx.then(|| {
        Verdict::Reject(format!(
            "HTTP {status}: Segment: {}",
            props::error_message(body, &["error", "message"])
        ))
    })
}

/// The page URL, without personal data ([`super::pii::redact_url`]).
fn page_url(event: &Event) -> String {
    let url = event.page_url();
    super::pii::redact_url(url).unwrap_or_else(|| url.to_string())
}

/// Segment's page properties: `url`, `title`, `referrer`, `path`, `search`.
fn page_props(event: &Event, url: &str) -> Value {
    let mut page = Map::new();
    let mut put = |k: &str, v: &str| {
        if !v.is_empty() {
            page.insert(k.into(), json!(v));
        }
    };
    put("url", url);
    put("title", event.sys_str(&["page", "title"]));
    put("referrer", event.sys_str(&["page", "referrer"]));
    put("path", props::url_part(event, "pathname"));
    let search = url
        .split_once('?')
        .map_or("", |(_, q)| q.split('#').next().unwrap_or(""));
    if !search.is_empty() {
        put("search", &format!("?{search}"));
    }
    Value::Object(page)
}

/// analytics.js keeps ids JSON-encoded in cookies (`%22…%22`): the bare id,
/// when it is a plausible one (printable, at most 200 characters).
fn cookie_id(raw: &str) -> Option<String> {
    let decoded = url::form_urlencoded::parse(format!("v={}", raw.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())?;
    let id = decoded.trim().trim_matches('"');
    (!id.is_empty() && id.len() <= 200 && id.chars().all(|c| c.is_ascii_graphic() && c != '"'))
        .then(|| id.to_string())
}

fn anonymous_id(event: &Event, properties: &Map<String, Value>) -> String {
    properties
        .get("anonymousId")
        .and_then(props::scalar)
        .or_else(|| event.cookie("ajs_anonymous_id").and_then(cookie_id))
        .unwrap_or_else(|| event.identity.client_id.clone())
}

fn user_id(event: &Event, properties: &Map<String, Value>) -> Option<String> {
    ["userId", "user_id"]
        .iter()
        .find_map(|k| properties.get(*k).and_then(props::scalar))
        .or_else(|| event.cookie("ajs_user_id").and_then(cookie_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analytics_js_cookie_ids() {
        assert_eq!(cookie_id("%22abc-123%22").as_deref(), Some("abc-123"));
        assert_eq!(cookie_id("abc-123").as_deref(), Some("abc-123"));
        assert_eq!(cookie_id("%22%22"), None);
        assert_eq!(cookie_id("a%20b"), None);
    }

    #[test]
    fn answers() {
        assert_eq!(read_answer(200, r#"{"success":true}"#), None);
        assert!(
            matches!(read_answer(400, r#"{"error":"payload too large"}"#), Some(Verdict::Reject(m)) if m.contains("payload too large"))
        );
        assert_eq!(read_answer(429, ""), None);
        assert_eq!(read_answer(503, ""), None);
    }

    use crate::rules::template::Variables;
    use crate::tools::test_support::{context, only_member, Visit};

    fn segment() -> Segment {
        let text = "type = \"segment\"\n[settings]\nwrite_key = \"wk\"\n";
        let file: ToolFile = toml::from_str(text).unwrap();
        Segment::from_config(Path::new("segment.toml"), text, &file).unwrap()
    }

    /// The one `batch[]` message of an output.
    fn message(out: &Output) -> Value {
        only_member(out, "batch")
    }

    fn run(v: &Visit<'_>) -> Value {
        message(&segment().automated(&v.event(), &context("seg", &Variables::new())))
    }

    /// `context`: the library, the page, and the IP, User-Agent, locale
    /// and screen when known.
    #[test]
    fn context_fields_only_when_known() {
        let m = run(&Visit {
            ip: Some("192.0.2.9".parse().unwrap()),
            user_agent: "UA/2",
            language: "de-DE",
            resolution: "800x600",
            ..Visit::default()
        });
        let c = &m["context"];
        assert_eq!(c["library"]["name"], "tagproxy");
        assert_eq!(
            (&c["ip"], &c["userAgent"], &c["locale"], &c["screen"]),
            (
                &json!("192.0.2.9"),
                &json!("UA/2"),
                &json!("de-DE"),
                &json!({"width": 800, "height": 600})
            )
        );
        let m = run(&Visit {
            user_agent: "",
            ..Visit::default()
        });
        for k in ["ip", "userAgent", "locale", "screen"] {
            assert!(m["context"].get(k).is_none(), "{k}: {m}");
        }
    }

    /// A pageview is a `page` call named by the title, with analytics.js's
    /// page properties (the URL without personal data; a search only when
    /// there is one, without the fragment).
    #[test]
    fn pageviews_are_page_calls() {
        let page = (
            "https://shop.test/a/b?email=jo@example.com&x=1#top",
            "Shoes",
            "https://ref.test/",
        );
        let m = run(&Visit {
            kind: Kind::Pageview,
            page,
            ..Visit::default()
        });
        assert_eq!((&m["type"], &m["name"]), (&json!("page"), &json!("Shoes")));
        let p = &m["properties"];
        assert_eq!(p["title"], "Shoes");
        assert_eq!(p["referrer"], "https://ref.test/");
        assert_eq!(p["path"], "/a/b");
        let url = p["url"].as_str().unwrap();
        assert!(
            !url.contains("jo@example.com") && url.starts_with("https://shop.test/a/b?"),
            "{url}"
        );
        assert_eq!(m["context"]["page"]["url"], p["url"]);
        let search = p["search"].as_str().unwrap();
        assert!(
            search.starts_with('?') && search.ends_with("x=1"),
            "{search}"
        );
        let m = run(&Visit {
            kind: Kind::Pageview,
            page: ("https://shop.test/", "", ""),
            ..Visit::default()
        });
        assert!(m.get("name").is_none(), "{m}");
        for k in ["title", "referrer", "search"] {
            assert!(m["properties"].get(k).is_none(), "{k}: {m}");
        }
    }

    /// Tracks keep their names; identity keys leave the properties:
    /// `anonymousId` (a property, else analytics.js's cookie, else our
    /// client id) and `userId` (`userId` / `user_id`, else the cookie).
    #[test]
    fn tracks_and_identities() {
        let m = run(&Visit {
            props: json!({"userId": "u1", "anonymousId": "a1", "color": "red"}),
            ..Visit::default()
        });
        assert_eq!(
            (&m["type"], &m["event"]),
            (&json!("track"), &json!("signup"))
        );
        assert_eq!(
            (&m["userId"], &m["anonymousId"]),
            (&json!("u1"), &json!("a1"))
        );
        assert_eq!(m["properties"], json!({"color": "red"}));
        let cookies = "ajs_anonymous_id=%22anon-2%22; ajs_user_id=%22user-2%22";
        let m = run(&Visit {
            cookies,
            props: json!({"user_id": "u3"}),
            ..Visit::default()
        });
        assert_eq!(
            (&m["userId"], &m["anonymousId"]),
            (&json!("u3"), &json!("anon-2"))
        );
        assert_eq!(
            run(&Visit {
                cookies,
                ..Visit::default()
            })["userId"],
            "user-2"
        );
        let e = Visit::default().event();
        let m = message(&segment().automated(&e, &context("seg", &Variables::new())));
        assert_eq!(m["anonymousId"], json!(e.identity.client_id));
        assert!(m.get("userId").is_none(), "{m}");
    }

    /// Custom actions: `track` named by its `event` field (`event` when
    /// missing or empty), `page` a page call with the fields as properties
    /// before the page's own.
    #[test]
    fn custom_track_and_page_actions() {
        let s = segment();
        let variables = Variables::new();
        let cx = context("seg", &variables);
        let e = Visit {
            page: ("https://shop.test/", "Home", ""),
            ..Visit::default()
        }
        .event();
        let call = |kind: &str, fields: Value| {
            message(&s.custom(kind, fields.as_object().unwrap().clone(), &e, &cx))
        };
        let m = call("track", json!({"event": "Clicked", "plan": "pro"}));
        assert_eq!(
            (&m["type"], &m["event"], &m["properties"]),
            (&json!("track"), &json!("Clicked"), &json!({"plan": "pro"}))
        );
        assert_eq!(call("track", json!({"event": ""}))["event"], "event");
        assert_eq!(call("track", json!({}))["event"], "event");
        let m = call("page", json!({"title": "Own", "section": "a"}));
        assert_eq!((&m["type"], &m["name"]), (&json!("page"), &json!("Home")));
        assert_eq!(
            (&m["properties"]["title"], &m["properties"]["section"]),
            (&json!("Own"), &json!("a"))
        );
        assert!(m.get("event").is_none(), "{m}");
    }

    /// Segment's limits (32 KB a message, 500 KB a batch) and answers
    /// through the adapter: a 4xx refused, but not 408 or 429.
    #[test]
    fn limits_and_answer_reader() {
        assert_eq!(
            (BATCHING.max_member_bytes, BATCHING.limits.max_bytes),
            (32_768, 512_000)
        );
        let reader = segment().answer_reader().unwrap();
        assert!(
            matches!(reader(401, r#"{"error":"bad key"}"#), Some(Verdict::Reject(m)) if m.contains("bad key"))
        );
        assert!(reader(408, "").is_none());
    }
}
