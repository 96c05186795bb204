//! `reddit`: Reddit's Conversions API v2.0, `POST
//! {endpoint}/api/v2.0/conversions/events/{ad_account_id}`
//! (<https://ads-api.reddit.com/docs/v2/#tag/Conversions>), bearer access
//! token, body `{"events": [event], "test_mode": false}`.
//!
//! `event_metadata.conversion_id` is our event id: Reddit deduplicates it
//! against the pixel's `conversionId`. `user` carries the User-Agent, the
//! pixel's browser id `uuid` (`_rdt_uuid`, created when the site has none),
//! and personal data only as SHA-256: `email` (trimmed, lower-cased),
//! `external_id`, and the visitor's `ip_address` (Reddit takes it hashed).
//! `click_id` is the landing URL's `rdt_cid`, kept in a first-party
//! `_rdt_cid` cookie. Events: pageview `PageVisit`, and the ecommerce events
//! Reddit has (`ViewContent`, `AddToCart`, `AddToWishlist`, `Search`,
//! `Purchase`), as Zaraz's Reddit tool names them; every other event is
//! `Custom` with its name as `custom_event_name`.

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::props;
use super::{
    endpoint, parse_settings, Adapter, AnswerReader, Automated, BuildContext, HttpRequest, Output,
    Payload, TemplateString, ToolCookie, ToolFile,
};
use crate::config::Problem;
use crate::delivery::Verdict;
use crate::event::{number, Event, Kind};
use crate::rules::template::Template;

const DEFAULT_ENDPOINT: &str = "https://ads-api.reddit.com";
/// Reddit takes events from the last 7 days.
const MAX_AGE_MS: u64 = (7 * 24 * 3600 - 3600) * 1000;
/// The pixel keeps `_rdt_uuid` 90 days; the click id as long as Reddit's
/// longest (28-day) click attribution.
const UUID_SECS: u64 = 90 * 24 * 3600;
const CID_SECS: u64 = 28 * 24 * 3600;

const ECOMMERCE: [(&str, &str); 5] = [
    ("Product Viewed", "ViewContent"),
    ("Product Added", "AddToCart"),
    ("Product Added to Wishlist", "AddToWishlist"),
    ("Products Searched", "Search"),
    ("Order Completed", "Purchase"),
];
/// Reddit's tracking types a track may be named after (case-insensitive).
const TRACK_TYPES: [&str; 8] = [
    "PageVisit",
    "ViewContent",
    "Search",
    "AddToCart",
    "AddToWishlist",
    "Purchase",
    "Lead",
    "SignUp",
];

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RedditSettings")]
struct Settings {
    /// The ad account id (`t2_…` or `a2_…`).
    ad_account_id: Option<TemplateString>,
    /// A Conversions API access token.
    access_token: Option<TemplateString>,
    /// Reddit's test mode: events are validated, not attributed.
    #[serde(default)]
    test_mode: bool,
}

/// The JSON Schema of this adapter's `[settings]` table (`tagproxy schema`).
pub fn settings_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<Settings>()
}

pub struct Reddit {
    base: String,
    ad_account_id: Template,
    access_token: Template,
    test_mode: bool,
}

impl Reddit {
    /// # Errors
    /// `settings.ad_account_id` or `settings.access_token` is missing, or
    /// the settings do not parse.
    pub fn from_config(path: &Path, text: &str, file: &ToolFile) -> Result<Reddit, Problem> {
        let s: Settings = parse_settings(path, text)?;
        let missing = |what: &str| file.missing_setting(path, text, what);
        let ad_account_id = s.ad_account_id.ok_or_else(|| missing("ad_account_id"))?.0;
        let access_token = s.access_token.ok_or_else(|| missing("access_token"))?.0;
        Ok(Reddit {
            base: endpoint(file, DEFAULT_ENDPOINT),
            ad_account_id,
            access_token,
            test_mode: s.test_mode,
        })
    }

    fn send(
        &self,
        name: &str,
        user_props: &Map<String, Value>,
        metadata: Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        let mut cookies = Vec::new();
        let mut user = Map::new();
        if let Some(ip) = event.ip {
            user.insert(
                "ip_address".into(),
                json!(props::sha256_hex(&ip.to_string())),
            );
        }
        if !event.user_agent.is_empty() {
            user.insert("user_agent".into(), json!(event.user_agent));
        }
        for (field, names) in [
            ("email", &["email", "em"][..]),
            ("external_id", &["external_id", "user_id"][..]),
        ] {
            if let Some(h) = names
                .iter()
                .find_map(|n| props::hash_email(&user_props.get(*n).and_then(props::scalar)?))
            {
                user.insert(field.into(), json!(h));
            }
        }
        let uuid = match event
            .cookie("_rdt_uuid")
            .filter(|v| props::is_url_safe_id(v))
        {
            Some(v) => v.to_string(),
            None => new_uuid(event),
        };
        user.insert("uuid".into(), json!(uuid));
        cookies.push(ToolCookie {
            name: "_rdt_uuid".into(),
            value: uuid,
            max_age_secs: UUID_SECS,
        });
        if let Some((w, h)) = props::screen(event) {
            user.insert("screen_dimensions".into(), json!({"width": w, "height": h}));
        }
        let mut e = json!({
            "event_at": crate::admin::audit::rfc3339_ms(props::event_time_within_ms(event, MAX_AGE_MS)),
            "event_type": {"tracking_type": name},
            "user": user,
        });
        if !TRACK_TYPES.contains(&name) {
            e["event_type"] = json!({"tracking_type": "Custom", "custom_event_name": name});
        }
        let click = props::click_id(event, "rdt_cid", "_rdt_cid");
        if let Some(id) = click {
            e["click_id"] = json!(id);
            cookies.push(ToolCookie {
                name: "_rdt_cid".into(),
                value: id.into(),
                max_age_secs: CID_SECS,
            });
        }
        let mut metadata = metadata;
        metadata.insert("conversion_id".into(), json!(event.id));
        e["event_metadata"] = Value::Object(metadata);
        let account = crate::rules::url_template::encoded(&cx.render(&self.ad_account_id, event));
        let body = json!({"test_mode": self.test_mode, "events": [e]});
        Output {
            payloads: vec![Payload::Http(HttpRequest {
                method: "POST".into(),
                url: format!("{}/api/v2.0/conversions/events/{account}", self.base),
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    (
                        "authorization".into(),
                        format!("Bearer {}", cx.render(&self.access_token, event)),
                    ),
                ],
                body: Some(serde_json::to_vec(&body).expect("a JSON value serializes")),
            })],
            instructions: Vec::new(),
            cookies,
        }
    }
}

/// Reddit Conversions API v2.0 `events[]`: up to 1,000 events per request
/// (<https://ads-api.reddit.com/docs/v2/#tag/Conversions-API>); no byte
/// limit is documented, so tagproxy's own 1 MB. Requests to the same ad
/// account with the same token and `test_mode` join.
pub const BATCHING: super::json_batch::JsonArrayBatching = super::json_batch::JsonArrayBatching {
    array: Some("events"),
    limits: crate::delivery::Limits {
        max_events: 1000,
        max_bytes: super::guard::MAX_BODY_BYTES,
    },
    max_member_bytes: super::guard::MAX_BODY_BYTES,
    per_request: &[],
};

impl Adapter for Reddit {
    fn supports(&self) -> Automated {
        Automated::ALL
    }

    fn automated(&self, event: &Event, cx: &BuildContext<'_>) -> Output {
        let props = event.properties();
        match event.kind {
            Kind::Pageview => self.send("PageVisit", props, Map::new(), event, cx),
            Kind::Track => {
                let name = TRACK_TYPES
                    .iter()
                    .find(|t| t.eq_ignore_ascii_case(&event.name.replace([' ', '_'], "")))
                    .map_or(event.name.as_str(), |t| t);
                self.send(name, props, track_metadata(props), event, cx)
            }
            Kind::Ecommerce => {
                let name = ECOMMERCE
                    .iter()
                    .find(|(z, _)| *z == event.name)
                    .map_or(event.name.as_str(), |(_, t)| t);
                self.send(name, props, ecommerce_metadata(event), event, cx)
            }
        }
    }

    fn action_kinds(&self) -> &'static [(&'static str, &'static [&'static str])] {
        &[("event", &["event_name"])]
    }

    /// `event`: a tracking type (or a custom event's name) `event_name`;
    /// personal fields go hashed into `user`.
    fn custom(
        &self,
        _kind: &str,
        mut fields: Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        let name = props::take_event_name(&mut fields, "Custom");
        let metadata = track_metadata(&fields);
        self.send(&name, &fields, metadata, event, cx)
    }

    fn credentials(&self, event: &Event, cx: &BuildContext<'_>) -> Vec<String> {
        vec![cx.render(&self.access_token, event)]
    }

    fn templates(&self) -> Vec<&Template> {
        vec![&self.ad_account_id, &self.access_token]
    }

    fn origins(&self) -> Vec<url::Origin> {
        super::origin_list(&self.base)
    }

    fn batching(&self) -> Option<std::sync::Arc<dyn crate::delivery::Batching>> {
        Some(std::sync::Arc::new(BATCHING))
    }

    fn answer_reader(&self) -> Option<AnswerReader> {
        Some(read_answer)
    }
}

/// A new `_rdt_uuid` in the pixel's shape (`<ms>.<uuid>`), derived from
/// tagproxy's client id so every event of a visitor carries the same one.
fn new_uuid(event: &Event) -> String {
    let d = Sha256::digest(format!("_rdt_uuid:{}", event.identity.client_id).as_bytes());
    let h: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let first_seen = event
        .identity
        .client_id
        .split_once('.')
        .and_then(|(_, s)| s.parse::<u64>().ok())
        .map_or_else(crate::event::now_ms, |s| s * 1000);
    format!(
        "{first_seen}.{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn track_metadata(p: &Map<String, Value>) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(v) = p.get("value").and_then(number) {
        m.insert("value_decimal".into(), json!(v));
    }
    if let Some(cu) = p.get("currency").and_then(props::scalar) {
        m.insert("currency".into(), json!(cu.to_ascii_uppercase()));
    }
    m
}

/// Ecommerce `event_metadata`: `value_decimal` (value, total, revenue,
/// price), `currency`, `item_count` (the sum of quantities), `products[]`
/// (`id` = SKU, else product id; `name`, `category`).
fn ecommerce_metadata(event: &Event) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(v) = props::order_value(event) {
        m.insert("value_decimal".into(), json!(v));
    }
    if let Some(cu) = event.prop_str("currency") {
        m.insert("currency".into(), json!(cu.to_ascii_uppercase()));
    }
    let products = props::products(event);
    let mut count = 0u64;
    let items: Vec<Value> = products
        .iter()
        .filter_map(|p| {
            let mut item = json!({"id": props::product_id(p)?});
            for k in ["name", "category"] {
                if let Some(v) = p.get(k).and_then(props::scalar) {
                    item[k] = json!(v);
                }
            }
            count += p
                .get("quantity")
                .and_then(number)
                .filter(|q| *q >= 1.0)
                .map_or(1, |q| q as u64);
            Some(item)
        })
        .collect();
    if !items.is_empty() {
        m.insert("item_count".into(), json!(count));
        m.insert("products".into(), Value::Array(items));
    }
    m
}

/// Reddit's answers: `200 {"message": "Successfully processed …"}`; errors
/// `{"message": …}` or, as the Ads API answers a malformed request,
/// `{"error": {"code": 400, "message": …}}`
/// (<https://ads-api.reddit.com/docs/v2/#section/Errors>); a `4xx` other
/// than `429` never succeeds; `429` and `5xx` are retried.
fn read_answer(status: u16, body: &str) -> Option<Verdict> {
    let message = props::error_message(body, &["message", "error"]);
    match status {
        429 => Some(Verdict::Retry {
            why: format!("HTTP 429: Reddit: {message}"),
            after: None,
        }),
        400..=499 if status != 408 => {
            Some(Verdict::Reject(format!("HTTP {status}: Reddit: {message}")))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        assert_eq!(
            read_answer(
                200,
                r#"{"message":"Successfully processed 1 conversion events."}"#
            ),
            None
        );
        assert!(matches!(
            read_answer(400, r#"{"message":"invalid event_at"}"#),
            Some(Verdict::Reject(m)) if m.contains("invalid event_at")
        ));
        assert!(matches!(
            read_answer(429, "{}"),
            Some(Verdict::Retry { .. })
        ));
        // The Ads API's nested error object.
        assert!(matches!(
            read_answer(400, r#"{"error":{"code":400,"message":"JSON error \"unknown field\" on field \"test_id\""}}"#),
            Some(Verdict::Reject(m)) if m.contains(r#"unknown field\" on field"#) || m.contains("unknown field")
        ));
        assert!(matches!(
            read_answer(401, r#"{"error":{"code":401,"message":"Unauthorized"}}"#),
            Some(Verdict::Reject(m)) if m == "HTTP 401: Reddit: Unauthorized"
        ));
    }
}
