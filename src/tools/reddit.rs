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

    use crate::admin::audit::rfc3339_ms;
    use crate::rules::template::Variables;
    use crate::tools::test_support::{
        assert_stable_per_visitor, body_of, context, cookies_of, only_member, request_of,
        window_edges, Visit,
    };

    fn reddit(settings: &str) -> Reddit {
        let text = format!(
            "type = \"reddit\"\n[settings]\nad_account_id = \"t2_ab/c\"\naccess_token = \"rtok\"\n{settings}\n"
        );
        let file: ToolFile = toml::from_str(&text).unwrap();
        Reddit::from_config(Path::new("reddit.toml"), &text, &file).unwrap()
    }

    /// The one `events[]` member of an output.
    fn sent(out: &Output) -> Value {
        only_member(out, "events")
    }

    fn run(v: &Visit<'_>) -> Output {
        reddit("").automated(&v.event(), &context("rdt", &Variables::new()))
    }

    /// `user`: the IP hashed, the User-Agent when there is one, e-mail and
    /// external id hashed, the screen; the pixel's `_rdt_uuid` kept 90 days
    /// and the landing URL's `rdt_cid` 28 days.
    #[test]
    fn user_fields_and_cookies() {
        let ip = Some("192.0.2.7".parse().unwrap());
        let v = Visit {
            ip,
            user_agent: "UA/1",
            resolution: "390x844",
            cookies: "_rdt_uuid=1700000000000.abc-def",
            page: ("https://shop.test/?rdt_cid=cid-1", "", ""),
            props: json!({"email": " A@B.c ", "user_id": "u1"}),
            ..Visit::default()
        };
        let out = run(&v);
        let e = sent(&out);
        assert_eq!(
            e["user"],
            json!({
                "ip_address": props::sha256_hex("192.0.2.7"),
                "user_agent": "UA/1",
                "email": props::sha256_hex("a@b.c"),
                "external_id": props::sha256_hex("u1"),
                "uuid": "1700000000000.abc-def",
                "screen_dimensions": {"width": 390, "height": 844}
            })
        );
        assert_eq!(e["click_id"], "cid-1");
        assert_eq!(
            cookies_of(&out),
            [
                ("_rdt_uuid", "1700000000000.abc-def", 7_776_000),
                ("_rdt_cid", "cid-1", 2_419_200)
            ]
        );
        let e = sent(&run(&Visit {
            user_agent: "",
            ..Visit::default()
        }));
        assert!(
            e["user"].get("user_agent").is_none() && e.get("click_id").is_none(),
            "{e}"
        );
    }

    /// Without the pixel's cookie, `_rdt_uuid` is made in its shape
    /// (`<first seen ms>.<uuid>`) from our client id, the same for every
    /// event of the visitor.
    #[test]
    fn new_uuids_are_stable_per_visitor() {
        let a = Visit::default().event();
        let uuid = assert_stable_per_visitor(&a, new_uuid);
        let (ms, id) = uuid.split_once('.').unwrap();
        let first_seen: u64 = a
            .identity
            .client_id
            .split_once('.')
            .unwrap()
            .1
            .parse()
            .unwrap();
        assert_eq!(ms, (first_seen * 1000).to_string());
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{uuid}");
        assert!(
            id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()),
            "{uuid}"
        );
        let out = reddit("").automated(&a, &context("rdt", &Variables::new()));
        assert_eq!(sent(&out)["user"]["uuid"], json!(uuid));
    }

    /// Reddit takes events from the last 7 days: an event a little younger
    /// than 7 days less an hour keeps its time, an older one is sent as now.
    #[test]
    fn event_at_within_reddits_window() {
        let now = crate::event::now_ms();
        let (young, old) = window_edges((7 * 24 - 1) * 3600 * 1000);
        let e = sent(&run(&Visit {
            sent_ms: young,
            ..Visit::default()
        }));
        assert_eq!(e["event_at"], rfc3339_ms(young));
        let e = sent(&run(&Visit {
            sent_ms: old,
            ..Visit::default()
        }));
        assert_ne!(e["event_at"], rfc3339_ms(old));
        assert!(
            e["event_at"].as_str().unwrap() >= rfc3339_ms(now).as_str(),
            "{e}"
        );
    }

    /// Tracking types: a track named like one (any case, spaces or `_`)
    /// is that type; other names are `Custom` with `custom_event_name`;
    /// ecommerce events as Zaraz's Reddit tool names them. Tracks carry
    /// `value_decimal` and `currency`; every event our id as
    /// `conversion_id`.
    #[test]
    fn tracking_types_and_metadata() {
        let event_type = |kind, name: &str| {
            sent(&run(&Visit {
                kind,
                name,
                ..Visit::default()
            }))["event_type"]
                .clone()
        };
        assert_eq!(
            event_type(Kind::Pageview, ""),
            json!({"tracking_type": "PageVisit"})
        );
        assert_eq!(
            event_type(Kind::Track, "sign_up"),
            json!({"tracking_type": "SignUp"})
        );
        assert_eq!(
            event_type(Kind::Track, "add to cart"),
            json!({"tracking_type": "AddToCart"})
        );
        assert_eq!(
            event_type(Kind::Track, "newsletter"),
            json!({"tracking_type": "Custom", "custom_event_name": "newsletter"})
        );
        for (zaraz, reddit) in ECOMMERCE {
            assert_eq!(
                event_type(Kind::Ecommerce, zaraz),
                json!({"tracking_type": reddit})
            );
        }
        assert_eq!(
            event_type(Kind::Ecommerce, "Cart Viewed"),
            json!({"tracking_type": "Custom", "custom_event_name": "Cart Viewed"})
        );
        let v = Visit {
            props: json!({"value": "12.5", "currency": "eur"}),
            ..Visit::default()
        };
        let e = v.event();
        let sent = sent(&reddit("").automated(&e, &context("rdt", &Variables::new())));
        assert_eq!(
            sent["event_metadata"],
            json!({"value_decimal": 12.5, "currency": "EUR", "conversion_id": e.id})
        );
    }

    /// Ecommerce `event_metadata`: the order's value, currency, products
    /// (SKU, else product id; name, category) and their quantities' sum.
    #[test]
    fn ecommerce_metadata_lists_products() {
        let props = json!({"revenue": 40, "currency": "gbp", "products": [
            {"sku": "S1", "product_id": "p1", "name": "Boot", "category": "shoes", "quantity": 3},
            {"product_id": "p2", "quantity": 0},
            {"name": "no id"}
        ]});
        let e = sent(&run(&Visit {
            kind: Kind::Ecommerce,
            name: "Order Completed",
            props,
            ..Visit::default()
        }));
        let m = &e["event_metadata"];
        assert_eq!(m["value_decimal"], 40.0);
        assert_eq!(m["currency"], "GBP");
        assert_eq!(m["item_count"], 4);
        assert_eq!(
            m["products"],
            json!([{"id": "S1", "name": "Boot", "category": "shoes"}, {"id": "p2"}])
        );
        let e = sent(&run(&Visit {
            kind: Kind::Ecommerce,
            name: "Cart Viewed",
            props: json!({"products": [{"name": "x"}]}),
            ..Visit::default()
        }));
        assert!(
            e["event_metadata"].get("products").is_none()
                && e["event_metadata"].get("item_count").is_none(),
            "{e}"
        );
    }

    /// The request: the ad account's URL (its id encoded), the bearer
    /// token, `test_mode`; a custom `event` action's `event_name`
    /// (`Custom` without one); a 408 is retried.
    #[test]
    fn request_and_custom_action() {
        let r = reddit("test_mode = true");
        let variables = Variables::new();
        let cx = context("rdt", &variables);
        let e = Visit::default().event();
        let fields = json!({"event_name": "Lead", "value": 3, "email": "x@y.z"});
        let out = r.custom("event", fields.as_object().unwrap().clone(), &e, &cx);
        let h = request_of(&out);
        assert_eq!(
            h.url,
            "https://ads-api.reddit.com/api/v2.0/conversions/events/t2_ab%2Fc"
        );
        assert!(
            h.headers
                .contains(&("authorization".into(), "Bearer rtok".into())),
            "{:?}",
            h.headers
        );
        assert_eq!(body_of(&out)["test_mode"], true);
        let ev = sent(&out);
        assert_eq!(ev["event_type"], json!({"tracking_type": "Lead"}));
        assert_eq!(ev["event_metadata"]["value_decimal"], 3.0);
        assert_eq!(ev["user"]["email"], props::sha256_hex("x@y.z"));
        let ev = sent(&r.custom("event", Map::new(), &e, &cx));
        assert_eq!(ev["event_type"]["custom_event_name"], "Custom");
        assert_eq!(body_of(&run(&Visit::default()))["test_mode"], false);
        assert!(r.answer_reader().unwrap()(408, "").is_none());
        assert!(matches!(
            r.answer_reader().unwrap()(403, "{}"),
            Some(Verdict::Reject(_))
        ));
    }
}
