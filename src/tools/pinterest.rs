//! `pinterest`: Pinterest's Conversions API, `POST
//! {endpoint}/v5/ad_accounts/{ad_account_id}/events`
//! (<https://developers.pinterest.com/docs/api/v5/events-create/>), bearer
//! conversion token, body `{"data": [event]}`.
//!
//! `event_id` is our event id: Pinterest deduplicates it against the tag's
//! `event_id`. `user_data` carries the visitor's IP and User-Agent, the
//! click id `click_id` (the landing URL's `epik`, kept in the tag's own
//! first-party `_epik` cookie for a year) and personal data only as SHA-256
//! arrays: `em` (trimmed, lower-cased), `ph` (digits only, with country
//! code), `external_id`. Events: pageview `page_visit`; `Order Completed`
//! `checkout` and `Product Added` `add_to_cart` as Zaraz's Pinterest tool
//! maps them, plus `Products Searched` `search` and `Product List Viewed`
//! `view_category` (Pinterest's own events for them); a track named like a
//! Pinterest event (`lead`, `signup`, `watch_video`, `search`,
//! `view_category`, `custom`) is that event, any other is `custom`.

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::props;
use super::{
    endpoint, parse_settings, Adapter, AnswerReader, Automated, BuildContext, HttpRequest, Output,
    Payload, TemplateString, ToolCookie, ToolFile,
};
use crate::config::Problem;
use crate::delivery::Verdict;
use crate::event::{number, Event, Kind};
use crate::rules::template::Template;

const DEFAULT_ENDPOINT: &str = "https://api.pinterest.com";
/// The Pinterest tag keeps `_epik` for a year.
const EPIK_SECS: u64 = 365 * 24 * 3600;
/// Pinterest takes events from the last 7 days.
const MAX_AGE_SECS: u64 = 7 * 24 * 3600 - 3600;
/// Track names that are Pinterest events themselves.
const TRACK_EVENTS: [&str; 6] = [
    "custom",
    "lead",
    "search",
    "signup",
    "view_category",
    "watch_video",
];

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PinterestSettings")]
struct Settings {
    /// The ad account id (digits).
    ad_account_id: Option<TemplateString>,
    /// A Conversions API access token (sent as a bearer token).
    access_token: Option<TemplateString>,
    /// Pinterest's test mode: events are validated, not recorded
    /// (`?test=true`).
    #[serde(default)]
    test: bool,
}

/// The JSON Schema of this adapter's `[settings]` table (`tagproxy schema`).
pub fn settings_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<Settings>()
}

pub struct Pinterest {
    base: String,
    ad_account_id: Template,
    access_token: Template,
    test: bool,
}

impl Pinterest {
    /// # Errors
    /// `settings.ad_account_id` or `settings.access_token` is missing, or
    /// the settings do not parse.
    pub fn from_config(path: &Path, text: &str, file: &ToolFile) -> Result<Pinterest, Problem> {
        let s: Settings = parse_settings(path, text)?;
        let missing = |what: &str| file.missing_setting(path, text, what);
        let ad_account_id = s.ad_account_id.ok_or_else(|| missing("ad_account_id"))?.0;
        let access_token = s.access_token.ok_or_else(|| missing("access_token"))?.0;
        Ok(Pinterest {
            base: endpoint(file, DEFAULT_ENDPOINT),
            ad_account_id,
            access_token,
            test: s.test,
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
        // The landing URL's click id replaces the stored one, as the tag does.
        let epik = props::click_id(event, "epik", "_epik");
        if let Some(epik) = epik {
            user.insert("click_id".into(), json!(epik));
            cookies.push(ToolCookie {
                name: "_epik".into(),
                value: epik.into(),
                max_age_secs: EPIK_SECS,
            });
        }
        let mut data = json!({
            "event_name": name,
            "action_source": "web",
            "event_time": props::event_time_within_ms(event, MAX_AGE_SECS * 1000) / 1000,
            "event_id": event.id,
            "event_source_url": event.page_url(),
            "user_data": user,
        });
        let language = event.sys_str(&["device", "language"]);
        if language.len() >= 2 && language.is_char_boundary(2) {
            data["language"] = json!(language[..2].to_ascii_lowercase());
        }
        if !custom.is_empty() {
            data["custom_data"] = Value::Object(custom);
        }
        let account = crate::rules::url_template::encoded(&cx.render(&self.ad_account_id, event));
        let mut url = format!("{}/v5/ad_accounts/{account}/events", self.base);
        if self.test {
            url.push_str("?test=true");
        }
        Output {
            payloads: vec![Payload::Http(HttpRequest {
                method: "POST".into(),
                url,
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    (
                        "authorization".into(),
                        format!("Bearer {}", cx.render(&self.access_token, event)),
                    ),
                ],
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

/// Pinterest Conversions API `data[]`: up to 1,000 events per request
/// (<https://developers.pinterest.com/docs/api/v5/events-create>); no byte
/// limit is documented, so tagproxy's own 1 MB. Requests to the same ad
/// account (URL, `test`) with the same token join.
pub const BATCHING: super::json_batch::JsonArrayBatching = super::json_batch::JsonArrayBatching {
    array: Some("data"),
    limits: crate::delivery::Limits {
        max_events: 1000,
        max_bytes: super::guard::MAX_BODY_BYTES,
    },
    max_member_bytes: super::guard::MAX_BODY_BYTES,
    per_request: &[],
};

impl Adapter for Pinterest {
    fn supports(&self) -> Automated {
        Automated::ALL
    }

    fn automated(&self, event: &Event, cx: &BuildContext<'_>) -> Output {
        let props = event.properties();
        match event.kind {
            Kind::Pageview => self.send("page_visit", props, Map::new(), event, cx),
            Kind::Track => {
                let lower = event.name.to_ascii_lowercase();
                let name = TRACK_EVENTS
                    .iter()
                    .find(|e| **e == lower)
                    .copied()
                    .unwrap_or("custom");
                self.send(name, props, track_data(props), event, cx)
            }
            Kind::Ecommerce => {
                let name = match event.name.as_str() {
                    "Order Completed" => "checkout",
                    "Product Added" => "add_to_cart",
                    "Products Searched" => "search",
                    "Product List Viewed" => "view_category",
                    _ => "custom",
                };
                self.send(name, props, ecommerce_data(event), event, cx)
            }
        }
    }

    fn action_kinds(&self) -> &'static [(&'static str, &'static [&'static str])] {
        &[("event", &["event_name"])]
    }

    /// `event`: a Pinterest event `event_name`; personal fields go hashed
    /// into `user_data`, the others into `custom_data`.
    fn custom(
        &self,
        _kind: &str,
        mut fields: Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        let name = props::take_event_name(&mut fields, "custom");
        let custom = track_data(&fields);
        self.send(&name, &fields, custom, event, cx)
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

/// A track's `custom_data`: Pinterest's own keys as given (`value` and
/// `currency` as strings), nothing personal.
fn track_data(p: &Map<String, Value>) -> Map<String, Value> {
    let mut c = Map::new();
    for k in [
        "search_string",
        "order_id",
        "content_name",
        "content_category",
    ] {
        if let Some(v) = p.get(k).and_then(props::scalar) {
            c.insert(k.into(), json!(v));
        }
    }
    if let Some(v) = p.get("value").and_then(number) {
        c.insert("value".into(), json!(v.to_string()));
    }
    if let Some(cu) = p.get("currency").and_then(props::scalar) {
        c.insert("currency".into(), json!(cu.to_ascii_uppercase()));
    }
    c
}

/// Ecommerce `custom_data`, field by field as Zaraz's Pinterest tool fills
/// it: `value` = revenue, else total, else value (a string, as Pinterest
/// documents it); `currency`; `order_id`; `content_ids` (product ids, else
/// SKUs); `contents` (`id`, `item_price` as a string, `quantity`);
/// `num_items` (the sum of quantities); `content_name`, `content_category`,
/// `content_brand` (the products', comma-separated); `search_string`.
fn ecommerce_data(event: &Event) -> Map<String, Value> {
    let mut c = Map::new();
    if let Some(v) = ["revenue", "total", "value", "price"]
        .iter()
        .find_map(|k| event.prop_f64(k))
    {
        c.insert("value".into(), json!(v.to_string()));
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
    let id_of = |p: &Map<String, Value>| {
        ["product_id", "sku"]
            .iter()
            .find_map(|k| p.get(*k).and_then(props::scalar))
    };
    let ids: Vec<String> = products.iter().filter_map(|p| id_of(p)).collect();
    if !ids.is_empty() {
        c.insert("content_ids".into(), json!(ids));
        let mut total = 0u64;
        let contents: Vec<Value> = products
            .iter()
            .filter_map(|p| {
                let mut item = json!({"id": id_of(p)?});
                if let Some(price) = p.get("price").and_then(number) {
                    item["item_price"] = json!(price.to_string());
                }
                let q = p
                    .get("quantity")
                    .and_then(number)
                    .filter(|q| *q >= 1.0)
                    .map_or(1, |q| q as u64);
                total += q;
                item["quantity"] = json!(q);
                Some(item)
            })
            .collect();
        c.insert("contents".into(), Value::Array(contents));
        c.insert("num_items".into(), json!(total));
    }
    for (key, field) in [
        ("content_name", "name"),
        ("content_category", "category"),
        ("content_brand", "brand"),
    ] {
        let values: Vec<String> = products
            .iter()
            .filter_map(|p| p.get(field).and_then(props::scalar))
            .collect();
        if !values.is_empty() {
            c.insert(key.into(), json!(values.join(",")));
        }
    }
    c
}

/// Pinterest's answers (API v5 errors `{"code": n, "message": …}`;
/// events: `{"num_events_received", "num_events_processed", "events":
/// [{"status": "processed" | "failed", "error_message", …}]}`): a `4xx`
/// other than `429` (code 8, rate limit) never succeeds; a `200` whose
/// event `failed` is refused with its `error_message`.
fn read_answer(status: u16, body: &str) -> Option<Verdict> {
    let json: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let failed: Vec<&str> = json["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["status"] == "failed")
        .map(|e| e["error_message"].as_str().unwrap_or("failed"))
        .collect();
    let message = if failed.is_empty() {
        props::error_message(body, &["message"])
    } else {
        failed.join("; ")
    };
    match status {
        429 => Some(Verdict::Retry {
            why: format!("HTTP 429: Pinterest: {message}"),
            after: None,
        }),
        400..=499 if status != 408 => Some(Verdict::Reject(format!(
            "HTTP {status}: Pinterest: {message}"
        ))),
        200..=299 if !failed.is_empty() => Some(Verdict::Reject(format!(
            "HTTP {status}: Pinterest: {message}"
        ))),
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
                r#"{"num_events_received":1,"num_events_processed":1,"events":[{"status":"processed","error_message":null,"warning_message":null}]}"#
            ),
            None
        );
        assert!(matches!(
            read_answer(200, r#"{"num_events_received":1,"num_events_processed":0,"events":[{"status":"failed","error_message":"event_time is too old"}]}"#),
            Some(Verdict::Reject(m)) if m.contains("event_time is too old")
        ));
        assert!(matches!(
            read_answer(401, r#"{"code":2,"message":"Authentication failed."}"#),
            Some(Verdict::Reject(m)) if m.contains("Authentication failed.")
        ));
        assert!(matches!(
            read_answer(429, r#"{"code":8,"message":"Rate limit exceeded."}"#),
            Some(Verdict::Retry { .. })
        ));
        assert_eq!(
            props::hash_phone_digits("+1 (650) 555-0134"),
            Some(props::sha256_hex("16505550134"))
        );
    }

    use crate::rules::template::Variables;
    use crate::tools::test_support::{
        assert_seconds_window, context, cookies_of, only_member, request_of, Visit,
    };

    fn pinterest(settings: &str) -> Pinterest {
        let text = format!(
            "type = \"pinterest\"\n[settings]\nad_account_id = \"549/1\"\naccess_token = \"pina_tok\"\n{settings}\n"
        );
        let file: ToolFile = toml::from_str(&text).unwrap();
        Pinterest::from_config(Path::new("pinterest.toml"), &text, &file).unwrap()
    }

    /// The one `data[]` event of an output.
    fn sent(out: &Output) -> Value {
        only_member(out, "data")
    }

    fn run(v: &Visit<'_>) -> Output {
        pinterest("").automated(&v.event(), &context("pin", &Variables::new()))
    }

    /// The landing URL's `epik` (else the `_epik` cookie) is `click_id`,
    /// kept a year as the Pinterest tag keeps it.
    #[test]
    fn epik_is_the_click_id_kept_a_year() {
        let out = run(&Visit {
            page: ("https://shop.test/?epik=dj0yJnU9", "", ""),
            ..Visit::default()
        });
        assert_eq!(sent(&out)["user_data"]["click_id"], "dj0yJnU9");
        assert_eq!(cookies_of(&out), [("_epik", "dj0yJnU9", 31_536_000)]);
        let out = run(&Visit {
            cookies: "_epik=stored.1",
            ..Visit::default()
        });
        assert_eq!(sent(&out)["user_data"]["click_id"], "stored.1");
        let out = run(&Visit::default());
        assert!(sent(&out)["user_data"].get("click_id").is_none() && out.cookies.is_empty());
    }

    /// Pinterest takes events from the last 7 days: an event a little
    /// younger than 7 days less an hour keeps its time (in seconds), an
    /// older one is sent as now.
    #[test]
    fn event_time_within_pinterests_window() {
        assert_seconds_window((7 * 24 - 1) * 3600 * 1000, |v| {
            sent(&run(v))["event_time"].as_u64().unwrap()
        });
    }

    /// `language`: the two-letter code of the browser's language, only
    /// when it has one.
    #[test]
    fn language_is_the_two_letter_code() {
        let language = |l: &str| {
            sent(&run(&Visit {
                language: l,
                ..Visit::default()
            }))
            .get("language")
            .cloned()
        };
        assert_eq!(language("EN-us"), Some(json!("en")));
        assert_eq!(language("e"), None);
        assert_eq!(language(""), None);
        assert_eq!(language("日本"), None);
    }

    /// Pageviews are `page_visit`; tracks named like a Pinterest event are
    /// that event (any case), others `custom`; ecommerce events map as
    /// Zaraz's Pinterest tool maps them. Tracks carry Pinterest's own keys
    /// in `custom_data`, none when there are none.
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
        assert_eq!(name(Kind::Pageview, ""), "page_visit");
        assert_eq!(name(Kind::Track, "Lead"), "lead");
        assert_eq!(name(Kind::Track, "Watch_Video"), "watch_video");
        assert_eq!(name(Kind::Track, "newsletter"), "custom");
        for (zaraz, pinterest) in [
            ("Order Completed", "checkout"),
            ("Product Added", "add_to_cart"),
            ("Products Searched", "search"),
            ("Product List Viewed", "view_category"),
            ("Coupon Applied", "custom"),
        ] {
            assert_eq!(name(Kind::Ecommerce, zaraz), pinterest);
        }
        let props = json!({"search_string": "red", "order_id": 7, "content_name": "n", "content_category": "c",
                           "value": 9.5, "currency": "eur", "email": "a@b.c"});
        let e = sent(&run(&Visit {
            props,
            ..Visit::default()
        }));
        assert_eq!(
            e["custom_data"],
            json!({"search_string": "red", "order_id": "7", "content_name": "n", "content_category": "c",
                   "value": "9.5", "currency": "EUR"})
        );
        assert_eq!(e["user_data"]["em"], json!([props::sha256_hex("a@b.c")]));
        assert!(sent(&run(&Visit::default())).get("custom_data").is_none());
    }

    /// Ecommerce `custom_data` as Zaraz's Pinterest tool fills it.
    #[test]
    fn ecommerce_data_as_zaraz_fills_it() {
        let props = json!({"total": 30, "currency": "usd", "order_id": "o1", "query": "boots", "products": [
            {"product_id": "p1", "price": 10, "quantity": 2, "name": "Boot", "category": "shoes", "brand": "A"},
            {"sku": "s2", "quantity": 0.5, "name": "Lace"},
            {"name": "no id", "category": "misc"}
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
                "value": "30", "currency": "USD", "order_id": "o1", "search_string": "boots",
                "content_ids": ["p1", "s2"],
                "contents": [{"id": "p1", "item_price": "10", "quantity": 2}, {"id": "s2", "quantity": 1}],
                "num_items": 3,
                "content_name": "Boot,Lace,no id", "content_category": "shoes,misc", "content_brand": "A"
            })
        );
        let bare = sent(&run(&Visit {
            kind: Kind::Ecommerce,
            name: "Cart Viewed",
            props: json!({"products": [{"name": "x"}]}),
            ..Visit::default()
        }));
        assert_eq!(bare["custom_data"], json!({"content_name": "x"}));
    }

    /// The request: the ad account's URL (its id encoded), `?test=true` in
    /// test mode, the bearer token; a custom `event` action's
    /// `event_name` (`custom` without one) and fields.
    #[test]
    fn request_and_custom_action() {
        let p = pinterest("test = true");
        let variables = Variables::new();
        let cx = context("pin", &variables);
        let e = Visit::default().event();
        let fields =
            json!({"event_name": "lead", "content_name": "form", "phone": "+1 650 555 0134"});
        let out = p.custom("event", fields.as_object().unwrap().clone(), &e, &cx);
        let h = request_of(&out);
        assert_eq!(
            h.url,
            "https://api.pinterest.com/v5/ad_accounts/549%2F1/events?test=true"
        );
        assert!(
            h.headers
                .contains(&("authorization".into(), "Bearer pina_tok".into())),
            "{:?}",
            h.headers
        );
        let data = sent(&out);
        assert_eq!(data["event_name"], "lead");
        assert_eq!(data["custom_data"], json!({"content_name": "form"}));
        assert_eq!(
            data["user_data"]["ph"],
            json!([props::sha256_hex("16505550134")])
        );
        let out = p.custom("event", Map::new(), &e, &cx);
        assert_eq!(sent(&out)["event_name"], "custom");
        let plain = run(&Visit::default());
        let h = request_of(&plain);
        assert!(!h.url.contains("test"), "{}", h.url);
        assert!(p.answer_reader().unwrap()(408, "").is_none());
        assert!(matches!(read_answer(400, "{}"), Some(Verdict::Reject(_))));
    }
}
