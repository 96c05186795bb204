//! `snapchat`: Snap's Conversions API v3, `POST
//! {endpoint}/v3/{pixel_id}/events?access_token=…`
//! (<https://developers.snap.com/api/marketing-api/Conversions-API/UsingTheAPI>)
//! with `{"data": [event]}`.
//!
//! `event_id` is our event id: Snap deduplicates it against the pixel's
//! `client_dedup_id` / `event_id`. `user_data` carries the visitor's IP and
//! User-Agent, the click id `sc_click_id` (the landing URL's `ScCid`, kept
//! in a first-party `_scclid` cookie), the pixel's browser id `sc_cookie1`
//! (`_scid`, created when the site has none) and personal data only as
//! SHA-256 arrays: `em` (trimmed, lower-cased), `ph` (digits with country
//! code), `external_id`. Zaraz's ecommerce events map to Snap's standard
//! events; `value`, `item_price` and `quantity` are strings, as Snap's
//! examples send them.

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

const DEFAULT_ENDPOINT: &str = "https://tr.snapchat.com";
/// Snap reports events up to 37 days old.
const MAX_AGE_SECS: u64 = 37 * 24 * 3600 - 3600;
/// `_scid` lives 13 months (capped at a year); `_scclid` as long as Snap's
/// longest (28-day) click attribution.
const SCID_SECS: u64 = 395 * 24 * 3600;
const SCCLID_SECS: u64 = 28 * 24 * 3600;

/// Zaraz ecommerce event → Snap standard event.
const EVENTS: [(&str, &str); 9] = [
    ("Product Viewed", "VIEW_CONTENT"),
    ("Product Added", "ADD_CART"),
    ("Product Added to Wishlist", "ADD_TO_WISHLIST"),
    ("Checkout Started", "START_CHECKOUT"),
    ("Payment Info Entered", "ADD_BILLING"),
    ("Order Completed", "PURCHASE"),
    ("Products Searched", "SEARCH"),
    ("Product List Viewed", "LIST_VIEW"),
    ("Cart Viewed", "VIEW_CONTENT"),
];

/// Snap standard events a track may be named after (case-insensitive).
const TRACK_EVENTS: [&str; 14] = [
    "SIGN_UP",
    "SUBSCRIBE",
    "START_TRIAL",
    "SAVE",
    "SHARE",
    "INVITE",
    "LOGIN",
    "RESERVE",
    "ACHIEVEMENT_UNLOCKED",
    "AD_CLICK",
    "AD_VIEW",
    "COMPLETE_TUTORIAL",
    "RATE",
    "LEVEL_COMPLETE",
];

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SnapchatSettings")]
struct Settings {
    /// The Snap Pixel id.
    pixel_id: Option<TemplateString>,
    /// A Conversions API access token.
    access_token: Option<TemplateString>,
}

/// The JSON Schema of this adapter's `[settings]` table (`tagproxy schema`).
pub fn settings_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<Settings>()
}

pub struct Snapchat {
    base: String,
    pixel_id: Template,
    access_token: Template,
}

impl Snapchat {
    /// # Errors
    /// `settings.pixel_id` or `settings.access_token` is missing, or the
    /// settings do not parse.
    pub fn from_config(path: &Path, text: &str, file: &ToolFile) -> Result<Snapchat, Problem> {
        let s: Settings = parse_settings(path, text)?;
        let missing = |what: &str| file.missing_setting(path, text, what);
        let pixel_id = s.pixel_id.ok_or_else(|| missing("pixel_id"))?.0;
        let access_token = s.access_token.ok_or_else(|| missing("access_token"))?.0;
        Ok(Snapchat {
            base: endpoint(file, DEFAULT_ENDPOINT),
            pixel_id,
            access_token,
        })
    }

    fn send(
        &self,
        name: &str,
        user_props: &Map<String, Value>,
        custom: Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        let mut cookies = Vec::new();
        let mut user = props::capi_user_data(event, user_props);
        let click = props::click_id(event, "ScCid", "_scclid");
        if let Some(id) = click {
            user.insert("sc_click_id".into(), json!(id));
            cookies.push(ToolCookie {
                name: "_scclid".into(),
                value: id.into(),
                max_age_secs: SCCLID_SECS,
            });
        }
        let scid = match event.cookie("_scid").filter(|v| props::is_url_safe_id(v)) {
            Some(v) => v.to_string(),
            None => new_scid(event),
        };
        user.insert("sc_cookie1".into(), json!(scid));
        cookies.push(ToolCookie {
            name: "_scid".into(),
            value: scid,
            max_age_secs: SCID_SECS,
        });
        let mut data = json!({
            "event_name": name,
            "action_source": "WEB",
            "event_time": props::event_time_within_ms(event, MAX_AGE_SECS * 1000) / 1000,
            "event_id": event.id,
            "event_source_url": event.page_url(),
            "user_data": user,
        });
        if !custom.is_empty() {
            data["custom_data"] = Value::Object(custom);
        }
        let url = format!(
            "{}/v3/{}/events?access_token={}",
            self.base,
            crate::rules::url_template::encoded(&cx.render(&self.pixel_id, event)),
            crate::rules::url_template::encoded(&cx.render(&self.access_token, event)),
        );
        Output {
            payloads: vec![Payload::Http(HttpRequest {
                method: "POST".into(),
                url,
                headers: vec![("content-type".into(), "application/json".into())],
                body: Some(
                    serde_json::to_vec(&json!({ "data": [data] }))
                        .expect("a JSON value serializes"),
                ),
            })],
            instructions: Vec::new(),
            cookies,
        }
    }
}

/// Snapchat Conversions API v3 `data[]`: "Maximum 2,000 events per
/// request"
/// (<https://developers.snap.com/api/marketing-api/Conversions-API/UsingTheAPI>);
/// no byte limit is documented, so tagproxy's own 1 MB. Requests to the same
/// pixel with the same token (both in the URL) join.
pub const BATCHING: super::json_batch::JsonArrayBatching = super::json_batch::JsonArrayBatching {
    array: Some("data"),
    limits: crate::delivery::Limits {
        max_events: 2000,
        max_bytes: super::guard::MAX_BODY_BYTES,
    },
    max_member_bytes: super::guard::MAX_BODY_BYTES,
    per_request: &[],
};

impl Adapter for Snapchat {
    fn supports(&self) -> Automated {
        Automated::ALL
    }

    fn automated(&self, event: &Event, cx: &BuildContext<'_>) -> Output {
        let props = event.properties();
        match event.kind {
            Kind::Pageview => self.send("PAGE_VIEW", props, Map::new(), event, cx),
            Kind::Track => {
                let upper = event.name.to_ascii_uppercase().replace([' ', '-'], "_");
                let name = TRACK_EVENTS
                    .iter()
                    .find(|e| **e == upper)
                    .copied()
                    .unwrap_or("CUSTOM_EVENT_1");
                self.send(name, props, track_data(props), event, cx)
            }
            Kind::Ecommerce => {
                let name = EVENTS
                    .iter()
                    .find(|(z, _)| *z == event.name)
                    .map_or("CUSTOM_EVENT_1", |(_, s)| s);
                self.send(name, props, ecommerce_data(event), event, cx)
            }
        }
    }

    fn action_kinds(&self) -> &'static [(&'static str, &'static [&'static str])] {
        &[("event", &["event_name"])]
    }

    /// `event`: a Snap event `event_name`; personal fields go hashed into
    /// `user_data`, `value`/`currency`/`order_id` into `custom_data`.
    fn custom(
        &self,
        _kind: &str,
        mut fields: Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        let name = props::take_event_name(&mut fields, "CUSTOM_EVENT_1");
        let custom = track_data(&fields);
        self.send(&name, &fields, custom, event, cx)
    }

    fn credentials(&self, event: &Event, cx: &BuildContext<'_>) -> Vec<String> {
        vec![cx.render(&self.access_token, event)]
    }

    fn templates(&self) -> Vec<&Template> {
        vec![&self.pixel_id, &self.access_token]
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

/// A new `_scid` (the pixel writes a UUID) derived from tagproxy's client
/// id: the same for every event until the browser stores it, and not the
/// id other tools get.
fn new_scid(event: &Event) -> String {
    let d = Sha256::digest(format!("_scid:{}", event.identity.client_id).as_bytes());
    let h: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn money(v: f64) -> Value {
    json!(v.to_string())
}

/// A track's `custom_data`: `value`, `currency`, `order_id` when given.
fn track_data(p: &Map<String, Value>) -> Map<String, Value> {
    let mut c = Map::new();
    if let Some(v) = p.get("value").and_then(number) {
        c.insert("value".into(), money(v));
    }
    if let Some(cu) = p.get("currency").and_then(props::scalar) {
        c.insert("currency".into(), json!(cu.to_ascii_uppercase()));
    }
    if let Some(id) = p.get("order_id").and_then(props::scalar) {
        c.insert("order_id".into(), json!(id));
    }
    c
}

/// Ecommerce `custom_data`: `value` (value, total, revenue, price),
/// `currency`, `order_id`, `search_string`, `content_ids` (SKU, else product
/// id), `contents[]` (`id`, `item_price`, `quantity`, `brand`),
/// `num_items` (the sum of quantities), `content_category`.
fn ecommerce_data(event: &Event) -> Map<String, Value> {
    let mut c = Map::new();
    if let Some(v) = props::order_value(event) {
        c.insert("value".into(), money(v));
    }
    if let Some(cu) = event.prop_str("currency") {
        c.insert("currency".into(), json!(cu.to_ascii_uppercase()));
    }
    if let Some(id) = event.prop_str("order_id") {
        c.insert("order_id".into(), json!(id));
    }
    if let Some(q) = event.prop_str("query") {
        c.insert("search_string".into(), json!(q));
    }
    let products = props::products(event);
    let mut total = 0u64;
    let contents: Vec<Value> = products
        .iter()
        .filter_map(|p| {
            let mut item = json!({"id": props::product_id(p)?});
            let q = p
                .get("quantity")
                .and_then(number)
                .filter(|q| *q >= 1.0)
                .map_or(1, |q| q as u64);
            total += q;
            item["quantity"] = json!(q.to_string());
            if let Some(price) = p.get("price").and_then(number) {
                item["item_price"] = money(price);
            }
            if let Some(b) = p.get("brand").and_then(props::scalar) {
                item["brand"] = json!(b);
            }
            Some(item)
        })
        .collect();
    if !contents.is_empty() {
        let ids: Vec<Value> = contents.iter().map(|i| i["id"].clone()).collect();
        c.insert("content_ids".into(), Value::Array(ids));
        c.insert("contents".into(), Value::Array(contents));
        c.insert("num_items".into(), json!(total.to_string()));
    }
    let categories: Vec<String> = products
        .iter()
        .filter_map(|p| p.get("category").and_then(props::scalar))
        .collect();
    if !categories.is_empty() {
        c.insert("content_category".into(), json!(categories.join(",")));
    }
    c
}

/// Snap's answers: `2xx` accepted (a body whose `status` is `FAILED` or
/// `INVALID` refused, with its `reason`); `4xx` other than `429` never
/// succeeds, with the body's `reason` / `message` / `error`; `429`, `5xx`
/// retried. Snap's error body is `{"status", "reason", "param"}` (the
/// parameter at fault,
/// <https://developers.snap.com/api/marketing-api/Conversions-API/UsingTheAPI>):
/// the message names the parameter too.
fn read_answer(status: u16, body: &str) -> Option<Verdict> {
    let json: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let mut message = props::error_message(body, &["reason", "message", "error"]);
    if let Some(param) = json["param"].as_str().filter(|p| !p.is_empty()) {
        message = format!("{message} (param: {param})");
    }
    let failed = json["status"]
        .as_str()
        .is_some_and(|s| matches!(s, "FAILED" | "INVALID" | "ERROR"));
    match status {
        429 => Some(Verdict::Retry {
            why: format!("HTTP 429: Snapchat: {message}"),
            after: None,
        }),
        400..=499 if status != 408 => Some(Verdict::Reject(format!(
            "HTTP {status}: Snapchat: {message}"
        ))),
        200..=299 if failed => Some(Verdict::Reject(format!(
            "HTTP {status}: Snapchat: {message}"
        ))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        assert_eq!(read_answer(200, r#"{"status":"SUCCESS"}"#), None);
        assert!(matches!(
            read_answer(400, r#"{"status":"FAILED","reason":"Invalid pixel id"}"#),
            Some(Verdict::Reject(m)) if m.contains("Invalid pixel id")
        ));
        assert!(matches!(
            read_answer(429, "{}"),
            Some(Verdict::Retry { .. })
        ));
        // Snap's error shape names the parameter at fault.
        assert!(matches!(
            read_answer(400, r#"{"status":"INVALID","reason":"event_time is too old","param":"data[0].event_time"}"#),
            Some(Verdict::Reject(m)) if m.contains("event_time is too old (param: data[0].event_time)")
        ));
        // A refusal inside a 200.
        assert!(matches!(
            read_answer(200, r#"{"status":"INVALID","reason":"Invalid pixel id","param":"pixel_id"}"#),
            Some(Verdict::Reject(m)) if m.contains("Invalid pixel id (param: pixel_id)")
        ));
    }

    use crate::rules::template::Variables;
    use crate::tools::test_support::{
        assert_seconds_window, assert_stable_per_visitor, context, cookies_of, only_member,
        request_of, Visit,
    };

    fn snapchat() -> Snapchat {
        let text = "type = \"snapchat\"\n[settings]\npixel_id = \"px/1\"\naccess_token = \"t&k\"\n";
        let file: ToolFile = toml::from_str(text).unwrap();
        Snapchat::from_config(Path::new("snapchat.toml"), text, &file).unwrap()
    }

    fn run(v: &Visit<'_>) -> Output {
        snapchat().automated(&v.event(), &context("snap", &Variables::new()))
    }

    fn sent(out: &Output) -> Value {
        only_member(out, "data")
    }

    /// The landing URL's `ScCid` (else `_scclid`) is `sc_click_id`, kept 28
    /// days; the pixel's `_scid` is `sc_cookie1`, kept 395 days, made from
    /// our client id when the site has none.
    #[test]
    fn click_id_and_browser_id() {
        let v = Visit {
            page: ("https://shop.test/?ScCid=click-1", "", ""),
            cookies: "_scid=scid-1",
            ..Visit::default()
        };
        let out = run(&v);
        let user = &sent(&out)["user_data"];
        assert_eq!(
            (user["sc_click_id"].as_str(), user["sc_cookie1"].as_str()),
            (Some("click-1"), Some("scid-1"))
        );
        assert_eq!(
            cookies_of(&out),
            [
                ("_scclid", "click-1", 2_419_200),
                ("_scid", "scid-1", 34_128_000)
            ]
        );
        let e = Visit::default().event();
        let out = snapchat().automated(&e, &context("snap", &Variables::new()));
        let scid = assert_stable_per_visitor(&e, new_scid);
        assert_eq!(sent(&out)["user_data"]["sc_cookie1"], json!(scid));
        assert!(sent(&out)["user_data"].get("sc_click_id").is_none());
        let groups: Vec<usize> = scid.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{scid}");
        assert!(
            scid.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()),
            "{scid}"
        );
        assert_ne!(scid.replace('-', ""), e.identity.client_id);
    }

    /// Snap reports events up to 37 days old: one a little younger than
    /// 37 days less an hour keeps its time (seconds); an older one is now.
    #[test]
    fn event_time_within_snaps_window() {
        assert_seconds_window((37 * 24 - 1) * 3600 * 1000, |v| {
            sent(&run(v))["event_time"].as_u64().unwrap()
        });
    }

    /// Pageviews are `PAGE_VIEW`; tracks named like a Snap event (any
    /// case, spaces or dashes) are that event, others `CUSTOM_EVENT_1`;
    /// Zaraz's ecommerce events map to Snap's standard events. Tracks
    /// carry `value` (a string), `currency`, `order_id`.
    #[test]
    fn event_names_and_track_data() {
        let name = |kind, n: &str| {
            sent(&run(&Visit {
                kind,
                name: n,
                ..Visit::default()
            }))["event_name"]
                .clone()
        };
        assert_eq!(name(Kind::Pageview, ""), "PAGE_VIEW");
        assert_eq!(name(Kind::Track, "sign up"), "SIGN_UP");
        assert_eq!(name(Kind::Track, "start-trial"), "START_TRIAL");
        assert_eq!(name(Kind::Track, "newsletter"), "CUSTOM_EVENT_1");
        for (zaraz, snap) in EVENTS {
            assert_eq!(name(Kind::Ecommerce, zaraz), snap);
        }
        assert_eq!(name(Kind::Ecommerce, "Coupon Applied"), "CUSTOM_EVENT_1");
        let e = sent(&run(&Visit {
            props: json!({"value": 7.25, "currency": "eur", "order_id": 12}),
            ..Visit::default()
        }));
        assert_eq!(
            e["custom_data"],
            json!({"value": "7.25", "currency": "EUR", "order_id": "12"})
        );
        assert!(sent(&run(&Visit::default())).get("custom_data").is_none());
    }

    /// Ecommerce `custom_data`: value, currency, order id, search, the
    /// products (SKU else id, quantity and price as strings, brand), their
    /// quantities' sum and categories.
    #[test]
    fn ecommerce_data_lists_products() {
        let props = json!({"revenue": 50, "currency": "usd", "order_id": "o2", "query": "hats", "products": [
            {"sku": "S1", "product_id": "p1", "price": 20, "quantity": 2, "brand": "B", "category": "hats"},
            {"product_id": "p2", "quantity": 0.2, "category": "caps"},
            {"name": "no id"}
        ]});
        let e = sent(&run(&Visit {
            kind: Kind::Ecommerce,
            name: "Order Completed",
            props,
            ..Visit::default()
        }));
        assert_eq!(
            e["custom_data"],
            json!({
                "value": "50", "currency": "USD", "order_id": "o2", "search_string": "hats",
                "content_ids": ["S1", "p2"],
                "contents": [{"id": "S1", "quantity": "2", "item_price": "20", "brand": "B"}, {"id": "p2", "quantity": "1"}],
                "num_items": "3",
                "content_category": "hats,caps"
            })
        );
        let e = sent(&run(&Visit {
            kind: Kind::Ecommerce,
            name: "Cart Viewed",
            props: json!({"products": [{"name": "x"}]}),
            ..Visit::default()
        }));
        assert!(e.get("custom_data").is_none(), "{e}");
    }

    /// The request: pixel id and token in the URL, encoded; a custom
    /// `event` action's `event_name` (`CUSTOM_EVENT_1` without one); the
    /// answer reader retries a 408.
    #[test]
    fn request_and_custom_action() {
        let s = snapchat();
        let variables = Variables::new();
        let cx = context("snap", &variables);
        let e = Visit::default().event();
        let fields = json!({"event_name": "SAVE", "value": 2, "email": "a@b.c"});
        let out = s.custom("event", fields.as_object().unwrap().clone(), &e, &cx);
        let h = request_of(&out);
        assert_eq!(
            h.url,
            "https://tr.snapchat.com/v3/px%2F1/events?access_token=t%26k"
        );
        let data = sent(&out);
        assert_eq!(data["event_name"], "SAVE");
        assert_eq!(data["custom_data"], json!({"value": "2"}));
        assert_eq!(data["user_data"]["em"], json!([props::sha256_hex("a@b.c")]));
        assert_eq!(
            sent(&s.custom("event", Map::new(), &e, &cx))["event_name"],
            "CUSTOM_EVENT_1"
        );
        let reader = s.answer_reader().unwrap();
        assert!(reader(408, "").is_none());
        assert!(matches!(
            reader(200, r#"{"status":"ERROR","reason":"x"}"#),
            Some(Verdict::Reject(_))
        ));
        assert!(reader(200, r#"{"status":"VALID"}"#).is_none());
    }
}
