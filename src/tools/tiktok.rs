//! `tiktok`: TikTok's Events API 2.0, `POST
//! {endpoint}/open_api/v1.3/event/track/`
//! (<https://business-api.tiktok.com/portal/docs?id=1771100865818625>),
//! header `Access-Token`, body `{"event_source": "web", "event_source_id":
//! <pixel code>, "data": [event]}`.
//!
//! `event_id` is our event id: TikTok deduplicates it against the pixel's
//! `event_id` for the same event. `user` carries the visitor's IP and
//! User-Agent, the click id `ttclid` (from the landing URL, then kept in a
//! first-party `ttclid` cookie, as Zaraz's TikTok tool does) and the
//! pixel's browser id `_ttp` (created when the site has none, kept 13
//! months, capped at a year), and personal data only as SHA-256: `email`
//! (trimmed, lower-cased), `phone` (E.164), `external_id`. Zaraz's
//! ecommerce events map to TikTok's standard events (Supported standard
//! events, <https://ads.tiktok.com/help/article/supported-standard-events>),
//! with `contents`, `content_type`, `currency`, `value`, `order_id` and
//! `query` as its parameters name them.

use std::path::Path;

use base64::Engine as _;
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

const DEFAULT_ENDPOINT: &str = "https://business-api.tiktok.com";
/// The `_ttp` cookie: 13 months in TikTok's cookie policy (capped at a
/// year by tagproxy).
const TTP_SECS: u64 = 395 * 24 * 3600;
/// The `ttclid` cookie: TikTok's longest click-attribution window, 28 days.
const TTCLID_SECS: u64 = 28 * 24 * 3600;
/// TikTok takes events from the last 7 days; an older (or future) client
/// clock is not trusted.
const MAX_AGE_SECS: u64 = 7 * 24 * 3600 - 3600;

/// Zaraz ecommerce event → TikTok standard event.
const EVENTS: [(&str, &str); 7] = [
    ("Product Viewed", "ViewContent"),
    ("Product Added", "AddToCart"),
    ("Product Added to Wishlist", "AddToWishlist"),
    ("Checkout Started", "InitiateCheckout"),
    ("Payment Info Entered", "AddPaymentInfo"),
    ("Order Completed", "CompletePayment"),
    ("Products Searched", "Search"),
];

/// TikTok's user fields and the property names that feed them (the first
/// present wins), each hashed its own way.
const USER_FIELDS: [(&str, &[&str]); 3] = [
    ("email", &["email", "em"]),
    ("phone", &["phone", "phone_number", "ph"]),
    ("external_id", &["external_id", "user_id"]),
];

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TikTokSettings")]
struct Settings {
    /// The pixel code (Events Manager), sent as `event_source_id`.
    pixel_code: Option<TemplateString>,
    /// An Events API access token.
    access_token: Option<TemplateString>,
    /// Events Manager's test code: events show under "Test events" only.
    test_event_code: Option<TemplateString>,
}

/// The JSON Schema of this adapter's `[settings]` table (`tagproxy schema`).
pub fn settings_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<Settings>()
}

pub struct TikTok {
    base: String,
    pixel_code: Template,
    access_token: Template,
    test_event_code: Option<Template>,
}

impl TikTok {
    /// # Errors
    /// `settings.pixel_code` or `settings.access_token` is missing, or the
    /// settings do not parse.
    pub fn from_config(path: &Path, text: &str, file: &ToolFile) -> Result<TikTok, Problem> {
        let s: Settings = parse_settings(path, text)?;
        let missing = |what: &str| file.missing_setting(path, text, what);
        let pixel_code = s.pixel_code.ok_or_else(|| missing("pixel_code"))?.0;
        let access_token = s.access_token.ok_or_else(|| missing("access_token"))?.0;
        Ok(TikTok {
            base: endpoint(file, DEFAULT_ENDPOINT),
            pixel_code,
            access_token,
            test_event_code: s.test_event_code.map(|t| t.0),
        })
    }

    fn send(
        &self,
        name: &str,
        user_props: &Map<String, Value>,
        properties: Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        let mut cookies = Vec::new();
        let mut user = Map::new();
        if let Some(ip) = event.ip {
            user.insert("ip".into(), json!(ip.to_string()));
        }
        if !event.user_agent.is_empty() {
            user.insert("user_agent".into(), json!(event.user_agent));
        }
        // A click id in the URL replaces the stored one, as the pixel does.
        let ttclid = props::click_id(event, "ttclid", "ttclid");
        if let Some(id) = ttclid {
            user.insert("ttclid".into(), json!(id));
            cookies.push(ToolCookie {
                name: "ttclid".into(),
                value: id.into(),
                max_age_secs: TTCLID_SECS,
            });
        }
        let ttp = match event.cookie("_ttp").filter(|v| props::is_url_safe_id(v)) {
            Some(v) => v.to_string(),
            None => new_ttp(event),
        };
        user.insert("ttp".into(), json!(ttp));
        cookies.push(ToolCookie {
            name: "_ttp".into(),
            value: ttp,
            max_age_secs: TTP_SECS,
        });
        for (field, names) in USER_FIELDS {
            let hash = names.iter().find_map(|n| {
                let v = user_props.get(*n).and_then(props::scalar)?;
                match field {
                    "phone" => props::hash_phone_e164(&v),
                    _ => props::hash_email(&v),
                }
            });
            if let Some(hash) = hash {
                user.insert(field.into(), json!(hash));
            }
        }
        let url = event.page_url();
        let mut page = json!({"url": url});
        let referrer = event.sys_str(&["page", "referrer"]);
        if !referrer.is_empty() {
            page["referrer"] = json!(referrer);
        }
        let mut data = json!({
            "event": name,
            "event_time": props::event_time_within_ms(event, MAX_AGE_SECS * 1000) / 1000,
            "event_id": event.id,
            "user": user,
            "page": page,
        });
        if !properties.is_empty() {
            data["properties"] = Value::Object(properties);
        }
        let mut body = json!({
            "event_source": "web",
            "event_source_id": cx.render(&self.pixel_code, event),
            "data": [data],
        });
        if let Some(code) = &self.test_event_code {
            let code = cx.render(code, event);
            if !code.is_empty() {
                body["test_event_code"] = json!(code);
            }
        }
        Output {
            payloads: vec![Payload::Http(HttpRequest {
                method: "POST".into(),
                url: format!("{}/open_api/v1.3/event/track/", self.base),
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("access-token".into(), cx.render(&self.access_token, event)),
                ],
                body: Some(serde_json::to_vec(&body).expect("a JSON value serializes")),
            })],
            instructions: Vec::new(),
            cookies,
        }
    }
}

/// TikTok Events API 2.0 `data[]`: up to 1,000 events per request
/// (<https://business-api.tiktok.com/portal/docs?id=1771100865818625>); no
/// byte limit is documented, so tagproxy's own 1 MB. Requests with the same
/// `Access-Token`, pixel code and `test_event_code` join.
pub const BATCHING: super::json_batch::JsonArrayBatching = super::json_batch::JsonArrayBatching {
    array: Some("data"),
    limits: crate::delivery::Limits {
        max_events: 1000,
        max_bytes: super::guard::MAX_BODY_BYTES,
    },
    max_member_bytes: super::guard::MAX_BODY_BYTES,
    per_request: &[],
};

impl Adapter for TikTok {
    fn supports(&self) -> Automated {
        Automated::ALL
    }

    fn automated(&self, event: &Event, cx: &BuildContext<'_>) -> Output {
        let props = event.properties();
        match event.kind {
            Kind::Pageview => self.send("Pageview", props, Map::new(), event, cx),
            Kind::Track => self.send(&event.name, props, custom_props(props), event, cx),
            Kind::Ecommerce => {
                let name = EVENTS
                    .iter()
                    .find(|(z, _)| *z == event.name)
                    .map_or(event.name.as_str(), |(_, t)| t);
                self.send(name, props, ecommerce_props(event), event, cx)
            }
        }
    }

    fn action_kinds(&self) -> &'static [(&'static str, &'static [&'static str])] {
        &[("event", &["event"])]
    }

    /// `event`: an event named `event`; personal fields (`email`, `phone`,
    /// `external_id`) go hashed into `user`, the others into `properties`.
    fn custom(
        &self,
        _kind: &str,
        mut fields: Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        let name = match fields.remove("event") {
            Some(Value::String(s)) if !s.is_empty() => s,
            _ => "CustomEvent".to_string(),
        };
        let properties = custom_props(&fields);
        self.send(&name, &fields, properties, event, cx)
    }

    fn credentials(&self, event: &Event, cx: &BuildContext<'_>) -> Vec<String> {
        vec![cx.render(&self.access_token, event)]
    }

    fn templates(&self) -> Vec<&Template> {
        let mut t = vec![&self.pixel_code, &self.access_token];
        t.extend(&self.test_event_code);
        t
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

/// Properties for `properties`: no personal data, and none of the names
/// that feed `user` (`external_id`, `user_id`…), which go there hashed.
fn custom_props(props: &Map<String, Value>) -> Map<String, Value> {
    let mut p = props::ads_props(props);
    for (_, names) in USER_FIELDS {
        for n in names {
            p.remove(*n);
        }
    }
    p
}

/// A new `_ttp` for a visitor without one: 27 URL-safe characters (the
/// pixel's shape) derived from tagproxy's client id, so every event of a
/// batch and every request until the browser stores it carry the same id,
/// and TikTok never sees the id other tools get.
fn new_ttp(event: &Event) -> String {
    let digest = Sha256::digest(format!("_ttp:{}", event.identity.client_id).as_bytes());
    let mut id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
    id.truncate(27);
    id
}

/// TikTok's ecommerce parameters: `contents` (`content_id` = SKU, else
/// product id; `content_name`, `content_category`, `brand`, `price`,
/// `quantity`), `content_type: "product"`, `currency` (upper case),
/// `value` (Zaraz's value, total, revenue, price), `order_id`, `query`
/// (searches); every other non-personal property rides along.
fn ecommerce_props(event: &Event) -> Map<String, Value> {
    let mut p = Map::new();
    let contents: Vec<Value> = props::products(event)
        .iter()
        .filter_map(|product| {
            let mut c = Map::new();
            c.insert("content_id".into(), json!(props::product_id(product)?));
            for (from, to) in [
                ("name", "content_name"),
                ("category", "content_category"),
                ("brand", "brand"),
            ] {
                if let Some(v) = product.get(from).and_then(props::scalar) {
                    c.insert(to.into(), json!(v));
                }
            }
            if let Some(price) = product.get("price").and_then(number) {
                c.insert("price".into(), json!(price));
            }
            let quantity = product
                .get("quantity")
                .and_then(number)
                .filter(|q| *q >= 1.0)
                .map_or(1, |q| q as u64);
            c.insert("quantity".into(), json!(quantity));
            Some(Value::Object(c))
        })
        .collect();
    if !contents.is_empty() {
        p.insert("contents".into(), Value::Array(contents));
        p.insert("content_type".into(), json!("product"));
    }
    if let Some(cu) = event.prop_str("currency") {
        p.insert("currency".into(), json!(cu.to_ascii_uppercase()));
    }
    if let Some(v) = props::order_value(event) {
        p.insert("value".into(), json!(v));
    }
    if let Some(id) = event.prop_str("order_id") {
        p.insert("order_id".into(), json!(id));
    }
    if let Some(q) = event.prop_str("query") {
        p.insert("query".into(), json!(q));
    }
    for (k, v) in custom_props(event.properties()) {
        let mapped = [
            "products",
            "currency",
            "value",
            "total",
            "revenue",
            "price",
            "order_id",
            "query",
            "product_id",
            "sku",
            "name",
            "category",
            "brand",
            "quantity",
        ];
        if !mapped.contains(&k.as_str()) {
            p.entry(k).or_insert(v);
        }
    }
    p
}

/// TikTok answers HTTP 200 with `{"code": 0, "message": "OK", "request_id":
/// …}` on success and with a non-zero `code` on failure (Business API
/// "Return codes"): `40100` is its rate limit and `5xxxx` its own faults,
/// retried; any other code (bad token `40105`, bad parameters `40002`…)
/// never succeeds as is.
fn read_answer(status: u16, body: &str) -> Option<Verdict> {
    let json: Value = serde_json::from_str(body).ok()?;
    let code = json.get("code").and_then(Value::as_i64)?;
    let message = json.get("message").and_then(Value::as_str).unwrap_or("");
    let why = format!("HTTP {status}: TikTok code {code}: {message}");
    match code {
        0 => None,
        40100 | 50000..=59999 => Some(Verdict::Retry { why, after: None }),
        _ => Some(Verdict::Reject(why)),
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
                r#"{"code":0,"message":"OK","request_id":"r","data":{}}"#
            ),
            None
        );
        assert!(matches!(
            read_answer(200, r#"{"code":40100,"message":"Too many requests","request_id":"r"}"#),
            Some(Verdict::Retry { why, .. }) if why.contains("Too many requests")
        ));
        assert!(matches!(
            read_answer(200, r#"{"code":40105,"message":"Access token is incorrect or has been revoked.","request_id":"r"}"#),
            Some(Verdict::Reject(m)) if m.contains("40105") && m.contains("revoked")
        ));
        assert!(matches!(
            read_answer(200, r#"{"code":50002,"message":"Internal error"}"#),
            Some(Verdict::Retry { .. })
        ));
        assert_eq!(read_answer(503, "<html>"), None);
    }

    #[test]
    fn ids() {
        assert!(props::is_url_safe_id("E.C.P.abc-_~1"));
        assert!(
            !props::is_url_safe_id("a b")
                && !props::is_url_safe_id("")
                && !props::is_url_safe_id("x;y")
        );
        assert!(!props::is_url_safe_id(&"a".repeat(501)));
    }

    use crate::rules::template::{Variable, Variables};
    use crate::tools::test_support::{
        assert_seconds_window, assert_stable_per_visitor, body_of, context, cookies_of,
        only_member, request_of, Visit,
    };

    fn tiktok(settings: &str) -> TikTok {
        let text = format!(
            "type = \"tiktok\"\n[settings]\npixel_code = \"PIX1\"\naccess_token = \"tt-tok\"\n{settings}\n"
        );
        let file: ToolFile = toml::from_str(&text).unwrap();
        TikTok::from_config(Path::new("tiktok.toml"), &text, &file).unwrap()
    }

    fn run(v: &Visit<'_>) -> Output {
        tiktok("").automated(&v.event(), &context("tt", &Variables::new()))
    }

    fn sent(out: &Output) -> Value {
        only_member(out, "data")
    }

    /// `user`: IP, User-Agent, `ttclid` (landing URL, else its cookie, kept
    /// 28 days), the pixel's `_ttp` (kept 395 days) and personal data
    /// hashed: e-mail, phone in E.164, external id.
    #[test]
    fn user_fields_and_cookies() {
        let v = Visit {
            ip: Some("192.0.2.4".parse().unwrap()),
            user_agent: "UA/3",
            page: ("https://shop.test/?ttclid=E.C.P.1", "", ""),
            cookies: "_ttp=ttp-1",
            props: json!({"em": "Jo@X.io", "phone_number": "+1 (650) 555-0134", "user_id": "u-5"}),
            ..Visit::default()
        };
        let out = run(&v);
        assert_eq!(
            sent(&out)["user"],
            json!({
                "ip": "192.0.2.4", "user_agent": "UA/3", "ttclid": "E.C.P.1", "ttp": "ttp-1",
                "email": props::sha256_hex("jo@x.io"),
                "phone": props::sha256_hex("+16505550134"),
                "external_id": props::sha256_hex("u-5")
            })
        );
        assert_eq!(
            cookies_of(&out),
            [
                ("ttclid", "E.C.P.1", 2_419_200),
                ("_ttp", "ttp-1", 34_128_000)
            ]
        );
        let out = run(&Visit {
            user_agent: "",
            cookies: "ttclid=kept-1",
            ..Visit::default()
        });
        let user = &sent(&out)["user"];
        assert_eq!(user["ttclid"], "kept-1");
        assert!(
            user.get("user_agent").is_none() && user.get("ip").is_none(),
            "{user}"
        );
    }

    /// Without the pixel's `_ttp`, one is made in its shape (27 URL-safe
    /// characters) from our client id: the same for a visitor's events,
    /// not the client id itself.
    #[test]
    fn new_ttp_is_stable_per_visitor() {
        let e = Visit::default().event();
        let ttp = assert_stable_per_visitor(&e, new_ttp);
        assert_eq!(ttp.len(), 27);
        assert!(
            props::is_url_safe_id(&ttp) && !ttp.contains(&e.identity.client_id),
            "{ttp}"
        );
        let out = tiktok("").automated(&e, &context("tt", &Variables::new()));
        assert_eq!(sent(&out)["user"]["ttp"], json!(ttp));
    }

    /// TikTok takes events from the last 7 days: one a little younger than
    /// 7 days less an hour keeps its time (seconds); an older one is now.
    #[test]
    fn event_time_within_tiktoks_window() {
        assert_seconds_window((7 * 24 - 1) * 3600 * 1000, |v| {
            sent(&run(v))["event_time"].as_u64().unwrap()
        });
    }

    /// Names: `Pageview`; a track keeps its name; ecommerce events map to
    /// TikTok's standard events (others keep theirs). `page.referrer` and
    /// `properties` only when there are some; a track's properties lose
    /// personal data and the names that feed `user`.
    #[test]
    fn names_page_and_properties() {
        let event = |kind, name: &str, props: Value| {
            sent(&run(&Visit {
                kind,
                name,
                props,
                ..Visit::default()
            }))
        };
        assert_eq!(event(Kind::Pageview, "", json!({}))["event"], "Pageview");
        assert_eq!(
            event(Kind::Track, "SubmitForm", json!({}))["event"],
            "SubmitForm"
        );
        for (zaraz, tiktok) in EVENTS {
            assert_eq!(event(Kind::Ecommerce, zaraz, json!({}))["event"], tiktok);
        }
        assert_eq!(
            event(Kind::Ecommerce, "Cart Viewed", json!({}))["event"],
            "Cart Viewed"
        );
        let e = event(
            Kind::Track,
            "x",
            json!({"plan": "pro", "email": "a@b.c", "user_id": "u", "phone": "1"}),
        );
        assert_eq!(e["properties"], json!({"plan": "pro"}));
        assert_eq!(e["page"], json!({"url": "https://shop.test/p?q=1"}));
        assert!(event(Kind::Track, "x", json!({}))
            .get("properties")
            .is_none());
        let page = ("https://shop.test/", "", "https://ref.test/");
        let e = sent(&run(&Visit {
            page,
            ..Visit::default()
        }));
        assert_eq!(e["page"]["referrer"], "https://ref.test/");
    }

    /// Ecommerce properties as TikTok names them; other non-personal
    /// properties ride along, the mapped ones only once.
    #[test]
    fn ecommerce_properties() {
        let props = json!({"total": 25, "currency": "jpy", "order_id": "o3", "query": "tea", "coupon": "C1",
        "email": "a@b.c", "products": [
            {"sku": "S1", "name": "Tea", "category": "drinks", "brand": "T", "price": 12.5, "quantity": 2},
            {"product_id": "p2", "quantity": 0},
            {"name": "no id"}
        ]});
        let e = sent(&run(&Visit {
            kind: Kind::Ecommerce,
            name: "Order Completed",
            props,
            ..Visit::default()
        }));
        assert_eq!(
            e["properties"],
            json!({
                "contents": [
                    {"content_id": "S1", "content_name": "Tea", "content_category": "drinks", "brand": "T", "price": 12.5, "quantity": 2},
                    {"content_id": "p2", "quantity": 1}
                ],
                "content_type": "product", "currency": "JPY", "value": 25.0, "order_id": "o3", "query": "tea",
                "coupon": "C1"
            })
        );
        let e = sent(&run(&Visit {
            kind: Kind::Ecommerce,
            name: "Cart Viewed",
            props: json!({"products": [{"name": "x"}]}),
            ..Visit::default()
        }));
        assert!(e.get("properties").is_none(), "{e}");
    }

    /// The request: `event_source_id` the pixel code, the `Access-Token`
    /// header, `test_event_code` only when it renders to something; a
    /// custom `event` action (`CustomEvent` without a name) hashes its
    /// personal fields into `user`.
    #[test]
    fn request_test_code_and_custom_action() {
        let mut variables = Variables::new();
        variables.insert(
            "code".into(),
            Variable {
                value: json!("TEST1"),
                secret: false,
            },
        );
        let cx = context("tt", &variables);
        let t = tiktok("test_event_code = \"{{ $code }}\"");
        let e = Visit::default().event();
        let fields = json!({"event": "Subscribe", "phone": "0044 20 7946 0000", "plan": "pro"});
        let out = t.custom("event", fields.as_object().unwrap().clone(), &e, &cx);
        let h = request_of(&out);
        assert_eq!(
            h.url,
            "https://business-api.tiktok.com/open_api/v1.3/event/track/"
        );
        assert!(
            h.headers
                .contains(&("access-token".into(), "tt-tok".into())),
            "{:?}",
            h.headers
        );
        let body = body_of(&out);
        assert_eq!(
            (
                &body["event_source"],
                &body["event_source_id"],
                &body["test_event_code"]
            ),
            (&json!("web"), &json!("PIX1"), &json!("TEST1"))
        );
        let data = sent(&out);
        assert_eq!(data["event"], "Subscribe");
        assert_eq!(data["properties"], json!({"plan": "pro"}));
        assert_eq!(data["user"]["phone"], props::sha256_hex("+442079460000"));
        assert_eq!(
            sent(&t.custom("event", Map::new(), &e, &cx))["event"],
            "CustomEvent"
        );
        let unnamed = json!({"event": ""}).as_object().unwrap().clone();
        assert_eq!(
            sent(&t.custom("event", unnamed, &e, &cx))["event"],
            "CustomEvent"
        );
        let empty = Variables::new();
        let out = t.custom("event", Map::new(), &e, &context("tt", &empty));
        assert!(
            body_of(&out).get("test_event_code").is_none(),
            "{}",
            body_of(&out)
        );
        assert!(body_of(&run(&Visit::default()))
            .get("test_event_code")
            .is_none());
        assert!(matches!(
            t.answer_reader().unwrap()(200, r#"{"code":40002,"message":"bad"}"#),
            Some(Verdict::Reject(_))
        ));
    }
}
