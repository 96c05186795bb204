//! `facebook-pixel`: Meta Conversions API, `POST
//! {endpoint}/{api_version}/{pixel_id}/events` with `{"data": [...],
//! "access_token": ...}`.
//!
//! `event_id` is our event id, so Meta dedupes it against the browser pixel
//! (same `event_name` + `event_id` within 48 h). Personal data in event
//! properties (`email`, `phone`…) is sent only as SHA-256 of the normalized
//! value, and never in `custom_data`. `_fbp` / `_fbc` come from the site's
//! cookies when well-formed; when missing or malformed they are created
//! (`_fbc` from the URL's `fbclid`), and the collector's answer sets them
//! (`Set-Cookie`, 90 days, refreshed on every visit).

use std::path::Path;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::ecommerce;
use super::{
    endpoint, parse_settings, Adapter, Automated, BuildContext, HttpRequest, Output, Payload,
    TemplateString, ToolCookie, ToolFile,
};
use crate::config::Problem;
use crate::delivery::{Batching, Limits};
use crate::event::{number, Event, Kind};
use crate::rules::template::Template;

const DEFAULT_ENDPOINT: &str = "https://graph.facebook.com";
const DEFAULT_API_VERSION: &str = "v21.0";
/// Meta's `_fbp` / `_fbc` cookies live 90 days.
const FB_COOKIE_SECS: u64 = 90 * 24 * 3600;
/// Meta rejects events older than 7 days; a clock that far off is not trusted.
const MAX_AGE_SECS: u64 = 7 * 24 * 3600 - 3600;

/// Meta's customer information parameters and the property names that feed
/// them (first one present wins).
const USER_FIELDS: [(&str, &[&str]); 11] = [
    ("em", &["em", "email"]),
    ("ph", &["ph", "phone"]),
    ("fn", &["fn", "first_name", "firstname"]),
    ("ln", &["ln", "last_name", "lastname"]),
    ("ge", &["ge", "gender"]),
    ("db", &["db", "birthdate", "date_of_birth"]),
    ("ct", &["ct", "city"]),
    ("st", &["st", "state"]),
    ("zp", &["zp", "zip", "postal_code"]),
    ("country", &["country"]),
    ("external_id", &["external_id", "user_id"]),
];

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "FacebookPixelSettings")]
struct Settings {
    pixel_id: Option<TemplateString>,
    access_token: Option<TemplateString>,
    test_event_code: Option<TemplateString>,
    api_version: Option<String>,
    /// Meta's Limited Data Use: e.g. `["LDU"]`, with country 1 / state 1000
    /// (or 0 / 0 to let Meta geolocate).
    data_processing_options: Option<Vec<String>>,
    data_processing_options_country: Option<u32>,
    data_processing_options_state: Option<u32>,
}

/// The JSON Schema of this adapter's `[settings]` table (`tagproxy schema`).
pub fn settings_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<Settings>()
}

pub struct MetaCapi {
    base: String,
    api_version: String,
    pixel_id: Template,
    access_token: Template,
    test_event_code: Option<Template>,
    /// Sent with every event when configured.
    data_processing: Option<Value>,
}

impl MetaCapi {
    pub fn from_config(path: &Path, text: &str, file: &ToolFile) -> Result<MetaCapi, Problem> {
        let s: Settings = parse_settings(path, text)?;
        let missing = |what: &str| file.missing_setting(path, text, what);
        let pixel_id = s.pixel_id.ok_or_else(|| missing("pixel_id"))?.0;
        let access_token = s.access_token.ok_or_else(|| missing("access_token"))?.0;
        let api_version = s.api_version.unwrap_or_else(|| DEFAULT_API_VERSION.into());
        if !(api_version.starts_with('v') && api_version[1..].parse::<f32>().is_ok()) {
            let at = file.settings_key_at(text, "api_version");
            return Err(Problem::at(
                path,
                text,
                at,
                format!("api_version {api_version:?} must look like \"v21.0\""),
            ));
        }
        Ok(MetaCapi {
            base: endpoint(file, DEFAULT_ENDPOINT),
            api_version,
            pixel_id,
            access_token,
            test_event_code: s.test_event_code.map(|t| t.0),
            data_processing: s.data_processing_options.map(|options| {
                json!({
                    "data_processing_options": options,
                    "data_processing_options_country": s.data_processing_options_country.unwrap_or(0),
                    "data_processing_options_state": s.data_processing_options_state.unwrap_or(0),
                })
            }),
        })
    }
}

impl Adapter for MetaCapi {
    fn supports(&self) -> Automated {
        Automated::ALL
    }

    fn credentials(&self, event: &Event, cx: &BuildContext<'_>) -> Vec<String> {
        vec![cx.render(&self.access_token, event)]
    }

    fn automated(&self, event: &Event, cx: &BuildContext<'_>) -> Output {
        let event_name = match event.kind {
            Kind::Pageview => "PageView".to_string(),
            Kind::Track => event.name.clone(),
            Kind::Ecommerce => ecommerce::meta_name(&event.name),
        };
        self.send(event_name, event.properties(), None, event, cx)
    }

    fn action_kinds(&self) -> &'static [(&'static str, &'static [&'static str])] {
        &[("event", &["event_name"])]
    }

    /// `event`: an event named `event_name`; personal fields (`email`…) go
    /// hashed into `user_data`, every other field into `custom_data`.
    fn custom(
        &self,
        _kind: &str,
        mut fields: Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        let name = match fields.remove("event_name") {
            Some(Value::String(s)) if !s.is_empty() => s,
            _ => "CustomEvent".to_string(),
        };
        self.send(name, &fields.clone(), Some(fields), event, cx)
    }

    fn templates(&self) -> Vec<&Template> {
        let mut t = vec![&self.pixel_id, &self.access_token];
        t.extend(&self.test_event_code);
        t
    }

    fn origins(&self) -> Vec<url::Origin> {
        super::origin_list(&self.base)
    }

    fn batching(&self) -> Option<std::sync::Arc<dyn Batching>> {
        Some(std::sync::Arc::new(MetaBatching))
    }
}

/// Conversions API batches: "You can send up to 1,000 events in `data`.
/// However, if any event you send in a batch is invalid, we reject the
/// entire batch" (<https://developers.facebook.com/docs/marketing-api/conversions-api/using-the-api#batch-requests>).
/// Requests to the same pixel URL with the same `access_token` and
/// `test_event_code` join into one body whose `data` holds every member's
/// event, in order; the engine isolates an invalid event by splitting.
pub struct MetaBatching;

/// Events per Conversions API call.
pub const MAX_EVENTS_PER_CALL: usize = 1000;

/// A joinable request's body (SDK-shaped: `data`, `access_token`,
/// `test_event_code` and nothing else; anything else is sent alone), its
/// values borrowed as their JSON text: keying and joining a batch never
/// builds the events' values again (issue 14: parsing each body into a
/// `Value` twice was ~5 % of the collector's CPU under load).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaBody<'a> {
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(borrow, default)]
    access_token: Option<&'a RawValue>,
    #[serde(borrow, default)]
    test_event_code: Option<&'a RawValue>,
}

impl<'a> MetaBody<'a> {
    fn of(req: &'a HttpRequest) -> Option<MetaBody<'a>> {
        let body: MetaBody<'a> = serde_json::from_slice(req.body.as_deref()?).ok()?;
        body.events()?;
        Some(body)
    }

    /// The text between `data`'s brackets (`None`: `data` is no array).
    fn events(&self) -> Option<&'a str> {
        let text = self.data.get().trim();
        Some(text.strip_prefix('[')?.strip_suffix(']')?.trim())
    }
}

impl Batching for MetaBatching {
    fn limits(&self) -> Limits {
        Limits {
            max_events: MAX_EVENTS_PER_CALL,
            max_bytes: super::guard::MAX_BODY_BYTES,
        }
    }

    /// Pixel URL, headers, `access_token` and `test_event_code`.
    fn key(&self, req: &HttpRequest) -> Option<String> {
        if req.method != "POST" {
            return None;
        }
        let body = MetaBody::of(req)?;
        serde_json::to_string(&(
            &req.url,
            &req.headers,
            body.access_token,
            body.test_event_code,
        ))
        .ok()
    }

    /// The first request's body with every request's `data` events in one
    /// array, keys in the order a serialized map has them.
    fn join(&self, reqs: &[&HttpRequest]) -> Option<HttpRequest> {
        let first = MetaBody::of(reqs.first()?)?;
        let mut events = Vec::with_capacity(reqs.len());
        for r in reqs {
            let text = MetaBody::of(r)?.events()?;
            if !text.is_empty() {
                events.push(text);
            }
        }
        let mut body = String::with_capacity(
            32 + events.iter().map(|e| e.len() + 1).sum::<usize>()
                + first.access_token.map_or(0, |t| t.get().len() + 16)
                + first.test_event_code.map_or(0, |t| t.get().len() + 20),
        );
        body.push('{');
        if let Some(token) = first.access_token {
            body.push_str("\"access_token\":");
            body.push_str(token.get());
            body.push(',');
        }
        body.push_str("\"data\":[");
        body.push_str(&events.join(","));
        body.push(']');
        if let Some(code) = first.test_event_code {
            body.push_str(",\"test_event_code\":");
            body.push_str(code.get());
        }
        body.push('}');
        Some(HttpRequest {
            method: reqs[0].method.clone(),
            url: reqs[0].url.clone(),
            headers: reqs[0].headers.clone(),
            body: Some(body.into_bytes()),
        })
    }
}

impl MetaCapi {
    /// One Conversions API request. `props` feed `user_data` (hashed personal
    /// fields); `custom` is the `custom_data` of a custom action (else it is
    /// derived from the event).
    fn send(
        &self,
        event_name: String,
        props: &Map<String, Value>,
        custom: Option<Map<String, Value>>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        let mut cookies = Vec::new();
        let now_ms = crate::event::now_ms();

        let mut user = Map::new();
        if let Some(ip) = event.ip {
            user.insert("client_ip_address".into(), json!(ip.to_string()));
        }
        if !event.user_agent.is_empty() {
            user.insert("client_user_agent".into(), json!(event.user_agent));
        }
        // Only well-formed ids reach Meta: one bad `fbc` and Meta refuses the
        // whole request with a 400.
        let fbp = match event.cookie("_fbp").filter(|v| is_fbp(v, now_ms)) {
            Some(v) => v.to_string(),
            // None, or malformed: a fresh one replaces it in the browser.
            None => new_fbp(event, now_ms),
        };
        cookies.push(fb_cookie("_fbp", &fbp));
        user.insert("fbp".into(), json!(fbp));
        let fbclid = event
            .sys(&["page", "query", "fbclid"])
            .and_then(Value::as_str)
            .filter(|id| is_click_id(id));
        let stored = event.cookie("_fbc").filter(|v| is_fbc(v, now_ms));
        let fbc = match (stored, fbclid) {
            // A new click id replaces the stored one, as the pixel does.
            (Some(v), Some(id)) if fb_value(v) == Some(id) => Some(v.to_string()),
            (_, Some(id)) => {
                // The collector's receive time, shared by a batch's events.
                let at = event
                    .sys(&["misc", "timestampMilliseconds"])
                    .and_then(Value::as_u64)
                    .unwrap_or(now_ms);
                Some(format!("fb.1.{at}.{id}"))
            }
            (Some(v), None) => Some(v.to_string()),
            // A malformed `_fbc` and no click id in the URL: none.
            (None, None) => None,
        };
        if let Some(fbc) = fbc {
            cookies.push(fb_cookie("_fbc", &fbc));
            user.insert("fbc".into(), json!(fbc));
        }
        // Every property that names personal data stays out of custom_data,
        // whatever its type and even when another spelling is the one hashed.
        let mut pii_keys: Vec<&str> = Vec::new();
        for (field, names) in USER_FIELDS {
            for name in names.iter().filter(|n| props.contains_key(**n)) {
                pii_keys.push(name);
                let value = match &props[*name] {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => continue,
                };
                if !user.contains_key(field) {
                    if let Some(hash) = hash_user_field(field, &value) {
                        user.insert(field.into(), json!([hash]));
                    }
                }
            }
        }

        let event_time = {
            let ts = event.timestamp_ms / 1000;
            let now = now_ms / 1000;
            if ts > now + 60 || ts + MAX_AGE_SECS < now {
                now
            } else {
                ts
            }
        };
        // Maps, not `json!`: the macro serializes each value into a new one
        // (the user data, then the whole event again inside the body).
        let mut data = Map::new();
        data.insert("event_name".into(), Value::String(event_name));
        data.insert("event_time".into(), Value::from(event_time));
        data.insert("event_id".into(), Value::String(event.id.clone()));
        data.insert("action_source".into(), Value::from("website"));
        data.insert("event_source_url".into(), Value::from(event.page_url()));
        data.insert("user_data".into(), Value::Object(user));
        let mut data = Value::Object(data);
        if let Some(Value::Object(options)) = &self.data_processing {
            for (k, v) in options {
                data[k] = v.clone();
            }
        }
        let custom = match (custom, event.kind) {
            (Some(fields), _) => custom_props(&fields, &pii_keys),
            (None, Kind::Pageview) => Map::new(),
            (None, Kind::Track) => custom_props(props, &pii_keys),
            (None, Kind::Ecommerce) => ecommerce_data(event, &pii_keys),
        };
        if !custom.is_empty() {
            data["custom_data"] = Value::Object(custom);
        }

        let mut body = Map::new();
        body.insert("data".into(), Value::Array(vec![data]));
        body.insert(
            "access_token".into(),
            Value::String(cx.render(&self.access_token, event)),
        );
        let mut body = Value::Object(body);
        if let Some(code) = &self.test_event_code {
            let code = cx.render(code, event);
            if !code.is_empty() {
                body["test_event_code"] = json!(code);
            }
        }
        // The pixel id may be a template: it is one path segment, encoded.
        let url = format!(
            "{}/{}/{}/events",
            self.base,
            self.api_version,
            crate::rules::url_template::encoded(&cx.render(&self.pixel_id, event))
        );
        Output {
            payloads: vec![Payload::Http(HttpRequest {
                method: "POST".into(),
                url,
                headers: vec![("content-type".into(), "application/json".into())],
                body: Some(serde_json::to_vec(&body).expect("a JSON value serializes")),
            })],
            instructions: Vec::new(),
            cookies,
        }
    }
}

/// A new `_fbp` (`fb.1.<creation ms>.<random>`) for a visitor without a
/// well-formed one, derived from our own client id (`<random>.<first-seen
/// secs>`): every event of a batch, and every request until the browser has
/// stored the cookie, carries the same browser id. The random part is a
/// hash, so Meta never sees the id other tools get. A first-seen time that
/// is not a plausible creation time is replaced by `now_ms`.
fn new_fbp(event: &Event, now_ms: u64) -> String {
    let id = &event.identity.client_id;
    let first_seen = id
        .split_once('.')
        .and_then(|(_, secs)| secs.parse::<u64>().ok())
        .and_then(|secs| secs.checked_mul(1000))
        .filter(|ms| plausible_ms(*ms, now_ms))
        .unwrap_or(now_ms);
    let digest = Sha256::digest(format!("_fbp:{id}").as_bytes());
    let random = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) & 0x7fff_ffff;
    format!("fb.1.{first_seen}.{random}")
}

/// A `_fbp` / `_fbc` cookie for the collector's answer, with Meta's
/// documented 90-day lifetime.
fn fb_cookie(name: &str, value: &str) -> ToolCookie {
    ToolCookie {
        name: name.into(),
        value: value.into(),
        max_age_secs: FB_COOKIE_SECS,
    }
}

/// Longest `_fbp` / `_fbc` value passed on; Meta documents no limit, real
/// ones stay well under 300 characters.
const MAX_FB_COOKIE_LEN: usize = 500;
/// 2010-01-01 in ms: no Meta cookie is older; earlier is a seconds value or
/// garbage.
const MIN_CREATION_MS: u64 = 1_262_304_000_000;

/// A creation time in ms since the epoch that a cookie can have: from 2010
/// up to a day ahead of our clock (browser clocks drift).
fn plausible_ms(ms: u64, now_ms: u64) -> bool {
    (MIN_CREATION_MS..=now_ms + 24 * 3600 * 1000).contains(&ms)
}

/// Splits `fb.<subdomain index>.<creation ms>.<value>` (Meta, "ClickID and
/// the fbp and fbc Parameters",
/// developers.facebook.com/docs/marketing-api/conversions-api/parameters/fbp-and-fbc):
/// the subdomain index is 0, 1 or 2, the creation time a plausible Unix
/// time in milliseconds, the value non-empty (it may hold dots). `None`
/// when `v` is not so.
fn split_fb(v: &str, now_ms: u64) -> Option<&str> {
    if v.len() > MAX_FB_COOKIE_LEN {
        return None;
    }
    let rest = v.strip_prefix("fb.")?;
    let (index, rest) = rest.split_once('.')?;
    let (time, value) = rest.split_once('.')?;
    let time_ok = time.len() == 13
        && time.bytes().all(|b| b.is_ascii_digit())
        && time.parse().is_ok_and(|ms| plausible_ms(ms, now_ms));
    (matches!(index, "0" | "1" | "2") && time_ok && !value.is_empty()).then_some(value)
}

/// The value part of a `fb.` cookie already known to be well-formed.
fn fb_value(v: &str) -> Option<&str> {
    v.splitn(4, '.').nth(3)
}

/// A well-formed `_fbp`: its value is the pixel's random number (digits).
pub fn is_fbp(v: &str, now_ms: u64) -> bool {
    split_fb(v, now_ms).is_some_and(|r| r.len() <= 20 && r.bytes().all(|b| b.is_ascii_digit()))
}

/// A well-formed `_fbc`: its value is a click id.
pub fn is_fbc(v: &str, now_ms: u64) -> bool {
    split_fb(v, now_ms).is_some_and(is_click_id)
}

/// An `fbclid` as Meta puts it in landing URLs: URL-safe characters only
/// (letters, digits, `-`, `_`, `.`, `~`), no whitespace, not empty. Meta
/// asks for it unmodified (case-sensitive), so nothing is repaired.
fn is_click_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_FB_COOKIE_LEN - 20
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// SHA-256 hex of a customer information value, normalized as Meta asks:
/// trimmed and lower-cased; phone numbers digits only. Already-hashed values
/// pass through.
pub fn hash_user_field(field: &str, value: &str) -> Option<String> {
    let v = value.trim();
    if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(v.to_ascii_lowercase());
    }
    let normalized: String = match field {
        "ph" => v.chars().filter(char::is_ascii_digit).collect(),
        "ct" | "st" | "fn" | "ln" => v
            .to_lowercase()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect(),
        "zp" => v.to_lowercase().replace(' ', ""),
        // Gender: "f" or "m".
        "ge" => match v.to_lowercase().chars().next() {
            Some(c @ ('f' | 'm')) => c.to_string(),
            _ => return None,
        },
        // Date of birth: YYYYMMDD, from "1990-07-04", "1990/07/04" or already so.
        "db" => {
            let digits: String = v.chars().filter(char::is_ascii_digit).collect();
            if digits.len() != 8 {
                return None;
            }
            digits
        }
        _ => v.to_lowercase(),
    };
    if normalized.is_empty() {
        return None;
    }
    Some(
        Sha256::digest(normalized.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// Track properties for `custom_data`: no personal data (keys that name it,
/// at any depth, and values holding an e-mail address or shaped like a
/// phone number), no internal keys, and no `system` object (a
/// custom action's `include_system_properties`: the IP and user agent already
/// go, as Meta asks, in `user_data`; cookies never go).
fn custom_props(props: &Map<String, Value>, pii: &[&str]) -> Map<String, Value> {
    props
        .iter()
        .filter(|(k, _)| {
            !k.starts_with("__")
                && !pii.contains(&k.as_str())
                && super::pii::key_kind(k).is_none()
                && *k != "system"
        })
        .filter_map(|(k, v)| Some((k.clone(), scrub(v)?)))
        .collect()
}

/// `v` without personal data; `None` when nothing is left of it.
fn scrub(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) if looks_personal(s) => None,
        Value::Array(items) => Some(Value::Array(items.iter().filter_map(scrub).collect())),
        Value::Object(map) => Some(Value::Object(
            map.iter()
                .filter(|(k, _)| !is_personal_key(k) && super::pii::key_kind(k).is_none())
                .filter_map(|(k, v)| Some((k.clone(), scrub(v)?)))
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

/// A key that names one of Meta's customer information parameters.
fn is_personal_key(k: &str) -> bool {
    USER_FIELDS
        .iter()
        .any(|(_, names)| names.contains(&k.to_ascii_lowercase().as_str()))
}

/// Personal data by the value's shape: an e-mail address anywhere in it, or
/// a phone number. One detector for every destination ([`super::pii`]), so
/// what GA4 never receives, Meta's `custom_data` never carries in clear.
fn looks_personal(s: &str) -> bool {
    super::pii::has_email(s) || super::pii::is_phone(s)
}

/// Zaraz ecommerce properties → Meta's standard `custom_data` (Meta Pixel
/// reference, object properties,
/// developers.facebook.com/docs/meta-pixel/reference#object-properties;
/// Conversions API custom data parameters), field by field as Zaraz's own
/// Meta Managed Component maps them, except where Meta's documentation says
/// otherwise (noted below and in the README).
fn ecommerce_data(event: &Event, pii: &[&str]) -> Map<String, Value> {
    let props = event.properties();
    let mut c = Map::new();
    // An ISO 4217 code; Meta wants it upper case.
    if let Some(cu) = event.prop_str("currency") {
        c.insert("currency".into(), json!(cu.to_ascii_uppercase()));
    }
    // Zaraz: value, price, total, revenue. Meta: a purchase's value is the
    // order's, so an order's total comes before a product's price (they
    // differ only when a one-product order carries both).
    if let Some(v) = ["value", "total", "revenue", "price"]
        .iter()
        .find_map(|k| event.prop_f64(k))
    {
        c.insert("value".into(), json!(v));
    }
    if let Some(id) = event.prop_str("order_id") {
        c.insert("order_id".into(), json!(id));
    }
    // Meta: `search_string` is the Search event's.
    if event.name == "Products Searched" {
        if let Some(q) = event.prop_str("query") {
            c.insert("search_string".into(), json!(q));
        }
    }
    if let Some(category) = event.prop_str("category") {
        c.insert("content_category".into(), json!(category));
    }
    // The products: those of `products`, then the event's own when it
    // describes one (Zaraz's "Product Added" etc. carry it flat).
    let mut products: Vec<&Map<String, Value>> = match props.get("products") {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_object).collect(),
        _ => Vec::new(),
    };
    if props.contains_key("product_id") || props.contains_key("sku") {
        products.push(props);
    }
    // Zaraz and Meta agree: the id is the SKU (Meta: "Product IDs … such as
    // SKUs", matched against the catalog's ids), else the product id.
    let id_of = |p: &Map<String, Value>| -> Option<String> {
        ["sku", "product_id"].iter().find_map(|k| match p.get(*k) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
    };
    let contents: Vec<Value> = products
        .iter()
        .filter_map(|p| {
            // Meta requires a quantity per item; a product without one is one.
            let quantity = p
                .get("quantity")
                .and_then(number)
                .filter(|q| *q >= 1.0)
                .map_or(1, |q| q as u64);
            let mut item = json!({"id": id_of(p)?, "quantity": quantity});
            if let Some(price) = p.get("price").and_then(number) {
                item["item_price"] = json!(price);
            }
            Some(item)
        })
        .collect();
    if !contents.is_empty() {
        let ids: Vec<&Value> = contents.iter().map(|i| &i["id"]).collect();
        c.insert("content_ids".into(), json!(ids));
        c.insert("content_type".into(), json!("product"));
        // Meta: the number of items the visitor buys, an integer, with
        // InitiateCheckout and Purchase (Zaraz: the number of product lines,
        // as a string).
        if matches!(event.name.as_str(), "Checkout Started" | "Order Completed") {
            let n: u64 = contents.iter().filter_map(|i| i["quantity"].as_u64()).sum();
            c.insert("num_items".into(), json!(n));
        }
        c.insert("contents".into(), Value::Array(contents));
    }
    // Every product's name, comma-separated, as Zaraz sends it.
    let names: Vec<&str> = products
        .iter()
        .filter_map(|p| p.get("name").and_then(Value::as_str))
        .filter(|n| !n.trim().is_empty())
        .collect();
    if !names.is_empty() {
        c.insert("content_name".into(), json!(names.join(",")));
    }
    // Anything else the site sent rides along (Meta keeps custom properties).
    for (k, v) in custom_props(props, pii) {
        if !matches!(
            k.as_str(),
            "products" | "currency" | "value" | "order_id" | "query"
        ) {
            c.entry(k).or_insert(v);
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::test_support::{body_of, visit};

    #[test]
    fn hashing_normalizes_like_meta() {
        // sha256("joe@example.com"), computed independently.
        assert_eq!(
            hash_user_field("em", "  Joe@Example.com ").unwrap(),
            "2481f36dfc515ca76451aaadf1399026942a01ee50c6d0a61988b43cef039bc2"
        );
        assert_eq!(
            hash_user_field("ph", "+1 (650) 555-1212"),
            hash_user_field("ph", "16505551212")
        );
        let h = hash_user_field("em", "x@y.z").unwrap();
        assert_eq!(hash_user_field("em", &h.to_uppercase()).unwrap(), h);
        assert_eq!(hash_user_field("em", "   "), None);
        assert_eq!(hash_user_field("ge", "Female"), hash_user_field("ge", "f"));
        assert!(hash_user_field("ge", "m").is_some());
        assert_eq!(hash_user_field("ge", "other"), None);
        assert_eq!(
            hash_user_field("db", "1990-07-04"),
            hash_user_field("db", "19900704")
        );
        assert_eq!(hash_user_field("db", "July 4th"), None);
        // Names and places: lower case, no spaces inside either.
        for field in ["ct", "st", "fn", "ln"] {
            assert_eq!(
                hash_user_field(field, "New York"),
                hash_user_field(field, "newyork"),
                "{field}"
            );
        }
        assert_eq!(
            hash_user_field("zp", "SW1A 1AA"),
            hash_user_field("zp", "sw1a1aa")
        );
        // Elsewhere inner spaces stay.
        assert_ne!(
            hash_user_field("country", "u s"),
            hash_user_field("country", "us")
        );
    }

    /// The Meta request for each event of one collector batch.
    fn batch(cookies: &str, props: Value, n: usize) -> Vec<(Value, Vec<ToolCookie>)> {
        batch_at(cookies, "https://shop.test/?fbclid=click", props, n)
    }

    /// Like `batch`, on page `url`.
    fn batch_at(cookies: &str, url: &str, props: Value, n: usize) -> Vec<(Value, Vec<ToolCookie>)> {
        let text =
            "type = \"facebook-pixel\"\n[settings]\npixel_id = \"1\"\naccess_token = \"t\"\n";
        let file: ToolFile = toml::from_str(text).unwrap();
        let meta = MetaCapi::from_config(Path::new("meta.toml"), text, &file).unwrap();
        let req = crate::event::RequestInfo {
            ip: None,
            user_agent: crate::event::ua::UaParser::default().parse("Mozilla/5.0"),
            cookies: crate::event::parse_cookies(cookies),
            location: Map::new(),
        };
        let now = crate::event::now_ms();
        let mut tracker = crate::event::identity::Tracker::from_cookie_header(cookies, now / 1000);
        let variables = crate::rules::template::Variables::new();
        let cx = BuildContext {
            tool_id: "meta",
            variables: &variables,
            action: None,
        };
        (0..n)
            .map(|_| {
                let input = crate::event::EventInput {
                    kind: Some(Kind::Track),
                    name: "lead".into(),
                    properties: props.as_object().unwrap().clone(),
                    page: crate::event::PageInfo {
                        url: url.into(),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let event = Event::build(input, &req, tracker.next_event(), now);
                let out = meta.automated(&event, &cx);
                let Payload::Http(http) = &out.payloads[0] else {
                    panic!("not http")
                };
                let body: Value = serde_json::from_slice(http.body.as_ref().unwrap()).unwrap();
                assert!(out.instructions.is_empty());
                (body["data"][0].clone(), out.cookies)
            })
            .collect()
    }

    /// "You can send up to 1,000 events in `data`"
    /// (<https://developers.facebook.com/docs/marketing-api/conversions-api/using-the-api#batch-requests>):
    /// one body, every member's event in order, the token once.
    #[test]
    fn requests_to_one_pixel_and_token_join_into_one_data_array() {
        let req = |token: &str, name: &str| HttpRequest {
            method: "POST".into(),
            url: "https://graph.facebook.com/v21.0/1/events".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(
                json!({"data": [{"event_name": name, "event_id": name}], "access_token": token})
                    .to_string()
                    .into_bytes(),
            ),
        };
        let (a, b, c) = (req("t", "A"), req("t", "B"), req("u", "C"));
        let batching = MetaBatching;
        assert_eq!(batching.limits().max_events, 1000);
        assert!(batching.key(&a).is_some());
        assert_eq!(batching.key(&a), batching.key(&b));
        assert_ne!(batching.key(&a), batching.key(&c));
        let joined = batching.join(&[&a, &b]).unwrap();
        assert_eq!(joined.url, a.url);
        assert_eq!(joined.headers, a.headers);
        let body: Value = serde_json::from_slice(joined.body.as_ref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"data": [{"event_name": "A", "event_id": "A"}, {"event_name": "B", "event_id": "B"}], "access_token": "t"})
        );
        let mut other = a.clone();
        other.body = Some(br#"{"data":[],"access_token":"t","extra":1}"#.to_vec());
        assert_eq!(batching.key(&other), None);
        other.body = Some(br#"{"data":{"event_name":"A"},"access_token":"t"}"#.to_vec());
        assert_eq!(batching.key(&other), None, "data must be an array");
        // The joined body is what serializing the whole body gives (keys
        // sorted, compact), test_event_code kept, empty members skipped.
        let with_code = |name: &str| {
            let mut r = req("t", name);
            r.body = Some(
                json!({"data": [{"event_name": name}], "access_token": "t", "test_event_code": "TEST1"})
                    .to_string()
                    .into_bytes(),
            );
            r
        };
        let (d, e) = (with_code("D"), with_code("E"));
        let mut empty = with_code("F");
        empty.body = Some(br#"{"data":[],"access_token":"t","test_event_code":"TEST1"}"#.to_vec());
        assert_eq!(batching.key(&d), batching.key(&empty));
        assert_ne!(batching.key(&d), batching.key(&a));
        let joined = batching.join(&[&d, &empty, &e]).unwrap();
        assert_eq!(
            String::from_utf8(joined.body.unwrap()).unwrap(),
            json!({"data": [{"event_name": "D"}, {"event_name": "E"}], "access_token": "t", "test_event_code": "TEST1"})
                .to_string()
        );
    }

    #[test]
    fn one_new_fbp_and_fbc_per_visitor_not_per_event() {
        let events = batch("", json!({}), 3);
        let (first, cookies) = &events[0];
        let fbp = first["user_data"]["fbp"].as_str().unwrap();
        let fbc = first["user_data"]["fbc"].as_str().unwrap();
        assert!(fbp.starts_with("fb.1.") && fbc.starts_with("fb.1.") && fbc.ends_with(".click"));
        for (e, i) in &events {
            assert_eq!(e["user_data"]["fbp"], fbp);
            assert_eq!(e["user_data"]["fbc"], fbc);
            assert_eq!(i, cookies);
        }
        assert_eq!(
            cookies,
            &vec![fb_cookie("_fbp", fbp), fb_cookie("_fbc", fbc)],
            "both stored by the collector's answer, 90 days"
        );
        assert_eq!(cookies[0].max_age_secs, 90 * 24 * 3600);
        // Our own client id never reaches Meta as such.
        let cid = "1234567890.1700000000.1";
        let (e, _) = &batch(&format!("tp_cid={cid}"), json!({}), 1)[0];
        let fbp = e["user_data"]["fbp"].as_str().unwrap();
        assert!(fbp.starts_with("fb.1.1700000000000."), "{fbp}");
        assert!(!fbp.contains("1234567890"), "{fbp}");
        // The same visitor, before the browser stored the cookie: same id.
        let (again, _) = &batch(&format!("tp_cid={cid}"), json!({}), 1)[0];
        assert_eq!(again["user_data"]["fbp"], fbp);
    }

    #[test]
    fn personal_data_never_rides_in_custom_data() {
        let (e, _) = &batch(
            "",
            json!({"em": "A@B.test", "email": "raw@b.test", "phone": 6505551212u64, "zip": "", "plan": "pro"}),
            1,
        )[0];
        assert_eq!(
            e["user_data"]["em"],
            json!([hash_user_field("em", "a@b.test").unwrap()])
        );
        assert_eq!(
            e["user_data"]["ph"],
            json!([hash_user_field("ph", "6505551212").unwrap()])
        );
        assert!(e["user_data"].get("zp").is_none());
        assert_eq!(e["custom_data"], json!({"plan": "pro"}));
    }

    // Meta, "ClickID and the fbp and fbc Parameters":
    // https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/fbp-and-fbc/
    // `fb.${subdomainIndex}.${creationTime}.${fbclid}` / `.${randomNumber}`,
    // subdomain index 0, 1 or 2, creation time in milliseconds.
    #[test]
    fn fb_cookie_shapes() {
        let now = 1_764_000_000_000;
        for good in [
            "fb.1.1732449000000.987654321",
            "fb.0.1732449000000.1",
            "fb.2.1732449000000.2147483647",
        ] {
            assert!(is_fbp(good, now), "{good}");
        }
        for good in [
            "fb.1.1732449000000.IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk",
            // Dots inside the click id are part of it.
            "fb.1.1732449000000.IwZXh0bgNhZW0BMAB.aem_x-Y_z",
        ] {
            assert!(is_fbc(good, now), "{good}");
        }
        for bad in [
            "fb.1.1732449000000.",  // empty value (the issue's example)
            "fb.1.1732449000000",   // no value at all (the issue's example)
            "fb.3.1732449000000.1", // subdomain index past 2
            "fb..1732449000000.1",  // no index
            "fb.1.1732449000.1",    // seconds, not milliseconds
            "fb.1.17324490000xx.1", // not a number
            "fb.1.0000000000001.1", // 1970
            "fb.1.9999999999999.1", // far future
            "fb.1.1732449000000.1 2",
            " fb.1.1732449000000.1",
            "fb.1.1732449000000.a b",
            "FB.1.1732449000000.1",
            "",
        ] {
            assert!(!is_fbp(bad, now), "{bad:?} taken as _fbp");
            assert!(!is_fbc(bad, now), "{bad:?} taken as _fbc");
        }
        // `_fbp`'s value is the pixel's random number.
        assert!(!is_fbp("fb.1.1732449000000.IwAR_abc", now));
        // Over-long values.
        let long = format!("fb.1.1732449000000.{}", "A".repeat(600));
        assert!(!is_fbc(&long, now));
        assert!(!is_click_id("a b") && !is_click_id("") && !is_click_id("x;y"));
    }

    #[test]
    fn malformed_fbc_is_dropped_or_rebuilt_from_fbclid() {
        for bad in ["fb.1.1732449000000.", "fb.1.1732449000000"] {
            // No click id in the URL: no fbc at all, no cookie.
            let (e, cookies) =
                &batch_at(&format!("_fbc={bad}"), "https://shop.test/", json!({}), 1)[0];
            assert!(e["user_data"].get("fbc").is_none(), "{bad}: {e}");
            assert!(cookies.iter().all(|c| c.name != "_fbc"), "{cookies:?}");
            // A click id in the URL: rebuilt from it, and stored.
            let (e, cookies) = &batch_at(
                &format!("_fbc={bad}"),
                "https://shop.test/?fbclid=IwAR_new",
                json!({}),
                1,
            )[0];
            let fbc = e["user_data"]["fbc"].as_str().unwrap();
            assert!(is_fbc(fbc, crate::event::now_ms()), "{fbc}");
            assert!(
                fbc.starts_with("fb.1.") && fbc.ends_with(".IwAR_new"),
                "{fbc}"
            );
            assert!(cookies.contains(&fb_cookie("_fbc", fbc)));
        }
        // A well-formed cookie with the same click id is kept as it is; one
        // whose id merely ends like the URL's is another click.
        let kept = "fb.1.1732449000000.IwAR_new";
        let (e, _) = &batch_at(
            &format!("_fbc={kept}"),
            "https://shop.test/?fbclid=IwAR_new",
            json!({}),
            1,
        )[0];
        assert_eq!(e["user_data"]["fbc"], kept);
        let (e, _) = &batch_at(
            "_fbc=fb.1.1732449000000.xIwAR_new",
            "https://shop.test/?fbclid=IwAR_new",
            json!({}),
            1,
        )[0];
        assert_ne!(e["user_data"]["fbc"], "fb.1.1732449000000.xIwAR_new");
        // A malformed click id in the URL builds nothing.
        let (e, _) = &batch_at("", "https://shop.test/?fbclid=a%20b", json!({}), 1)[0];
        assert!(e["user_data"].get("fbc").is_none(), "{e}");
    }

    #[test]
    fn malformed_fbp_is_replaced_with_a_fresh_one() {
        for bad in [
            "fb.1.1732449000000.",
            "fb.1.1732449000",
            "fb.1.abc.123",
            "fb.7.1732449000000.123",
        ] {
            let (e, cookies) =
                &batch_at(&format!("_fbp={bad}"), "https://shop.test/", json!({}), 1)[0];
            let fbp = e["user_data"]["fbp"].as_str().unwrap();
            assert_ne!(fbp, bad);
            assert!(is_fbp(fbp, crate::event::now_ms()), "{fbp}");
            assert!(cookies.contains(&fb_cookie("_fbp", fbp)), "{cookies:?}");
        }
        // A garbage first-seen time in our own cookie does not leak into it.
        let (e, _) = &batch_at("tp_cid=1234567890.5.1", "https://shop.test/", json!({}), 1)[0];
        assert!(is_fbp(
            e["user_data"]["fbp"].as_str().unwrap(),
            crate::event::now_ms()
        ));
        // A good one is kept, and its cookie refreshed.
        let good = "fb.1.1732449000000.987654321";
        let (e, cookies) =
            &batch_at(&format!("_fbp={good}"), "https://shop.test/", json!({}), 1)[0];
        assert_eq!(e["user_data"]["fbp"], good);
        assert_eq!(cookies, &vec![fb_cookie("_fbp", good)]);
    }

    #[test]
    fn custom_action_custom_data_never_holds_raw_personal_data() {
        let text =
            "type = \"facebook-pixel\"\n[settings]\npixel_id = \"1\"\naccess_token = \"t\"\n";
        let file: ToolFile = toml::from_str(text).unwrap();
        let meta = MetaCapi::from_config(Path::new("meta.toml"), text, &file).unwrap();
        let req = crate::event::RequestInfo {
            ip: Some("203.0.113.9".parse().unwrap()),
            user_agent: crate::event::ua::UaParser::default().parse("Mozilla/5.0"),
            cookies: crate::event::parse_cookies("_fbp=fb.1.1732449000000.1"),
            location: Map::new(),
        };
        let now = crate::event::now_ms();
        let mut tracker = crate::event::identity::Tracker::from_cookie_header("", now / 1000);
        let input = crate::event::EventInput {
            kind: Some(Kind::Track),
            name: "lead".into(),
            page: crate::event::PageInfo {
                url: "https://shop.test/".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let event = Event::build(input, &req, tracker.next_event(), now);
        let variables = crate::rules::template::Variables::new();
        let cx = BuildContext {
            tool_id: "meta",
            variables: &variables,
            action: None,
        };
        // What an action's templates and include_*_properties may produce.
        let fields = json!({
            "event_name": "Lead",
            "plan": "pro",
            "contact": "Jane.Doe@Example.com",
            "mobile": "+1 650 555 0134",
            "Email": "x@y.test",
            "email": "z@y.test",
            "form": {"first_name": "Jane", "note": "call jane@example.com", "size": 3},
            "list": ["ok", "joe@example.org"],
            "order_id": "12345678",
            "system": event.system.clone(),
        });
        let out = meta.custom("event", fields.as_object().unwrap().clone(), &event, &cx);
        let Payload::Http(http) = &out.payloads[0] else {
            panic!("not http")
        };
        let body: Value = serde_json::from_slice(http.body.as_ref().unwrap()).unwrap();
        let custom = &body["data"][0]["custom_data"];
        assert_eq!(
            custom,
            &json!({
                "plan": "pro",
                "form": {"size": 3},
                "list": ["ok"],
                "order_id": "12345678",
            })
        );
        // The e-mail under a key Meta knows goes hashed to user_data.
        assert_eq!(
            body["data"][0]["user_data"]["em"],
            json!([hash_user_field("em", "z@y.test").unwrap()])
        );
    }

    const META_TOML: &str =
        "type = \"facebook-pixel\"\n[settings]\npixel_id = \"{{ $pixel }}\"\naccess_token = \"tok-{{ $pixel }}\"\ntest_event_code = \"TEST1\"\n";

    fn capi(text: &str) -> Result<MetaCapi, Problem> {
        let file: ToolFile = toml::from_str(text).unwrap();
        MetaCapi::from_config(Path::new("meta.toml"), text, &file)
    }

    fn track_at(timestamp_ms: u64) -> Event {
        track_from(timestamp_ms, None, "Mozilla/5.0")
    }

    fn track_from(timestamp_ms: u64, ip: Option<std::net::IpAddr>, user_agent: &str) -> Event {
        let input = crate::event::EventInput {
            kind: Some(Kind::Track),
            name: "lead".into(),
            timestamp_ms: Some(timestamp_ms),
            page: crate::event::PageInfo {
                url: "https://shop.test/".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        visit(input, ip, user_agent, "", crate::event::now_ms())
    }

    /// What the adapter renders with, for the tool `meta`.
    fn context(variables: &crate::rules::template::Variables) -> BuildContext<'_> {
        crate::tools::test_support::context("meta", variables)
    }

    fn variables() -> crate::rules::template::Variables {
        let mut v = crate::rules::template::Variables::new();
        v.insert(
            "pixel".into(),
            crate::rules::template::Variable {
                value: json!("42"),
                secret: false,
            },
        );
        v
    }

    /// "event_time … can be up to 7 days before you send an event to Meta"
    /// (<https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/server-event#event-time>):
    /// a timestamp older than that (less an hour's margin) or more than a
    /// minute ahead is a client's clock, and the time of sending is used.
    #[test]
    fn event_time_is_the_events_unless_meta_would_refuse_it() {
        let meta = capi(META_TOML).unwrap();
        let variables = variables();
        let cx = context(&variables);
        let now = crate::event::now_ms() / 1000;
        let day = 24 * 3600;
        for (ts, kept) in [
            (now - 7 * day + 2 * 3600, true),
            (now - 7 * day + 1800, false),
            (now - 8 * day, false),
            (now - 60, true),
            (now + 30, true),
            (now + 60, true),
            (now + 600, false),
        ] {
            let body = body_of(&meta.automated(&track_at(ts * 1000), &cx));
            let sent = body["data"][0]["event_time"].as_u64().unwrap();
            if kept {
                assert_eq!(sent, ts, "{}", ts as i64 - now as i64);
            } else {
                assert!(
                    sent.abs_diff(now) <= 5,
                    "{}: {sent}",
                    ts as i64 - now as i64
                );
            }
        }
    }

    /// What the adapter declares: its token for dead-letter redaction, its
    /// templates for validation, its origin for the request guard, and its
    /// batch API.
    #[test]
    fn declares_token_templates_origin_and_batching() {
        let meta = capi(META_TOML).unwrap();
        let variables = variables();
        let cx = context(&variables);
        let event = track_at(crate::event::now_ms());
        assert_eq!(meta.credentials(&event, &cx), ["tok-42"]);
        let shapes: Vec<(Option<&str>, usize)> = meta
            .templates()
            .iter()
            .map(|t| (t.as_literal(), t.paths().count()))
            .collect();
        assert_eq!(shapes, [(None, 1), (None, 1), (Some("TEST1"), 0)]);
        assert_eq!(
            crate::tools::origin_names(&meta.origins()),
            ["https://graph.facebook.com"]
        );
        let local = capi(&META_TOML.replace(
            "[settings]",
            "endpoint = \"http://127.0.0.1:9/meta\"\n[settings]",
        ))
        .unwrap();
        assert_eq!(
            crate::tools::origin_names(&local.origins()),
            ["http://127.0.0.1:9"]
        );
        assert!(meta.batching().is_some());
        let mut generator = schemars::SchemaGenerator::default();
        let schema = serde_json::to_value(settings_schema(&mut generator)).unwrap();
        assert_eq!(schema["$ref"], "#/$defs/FacebookPixelSettings");
        let defs = serde_json::to_value(generator.definitions()).unwrap();
        let keys = &defs["FacebookPixelSettings"]["properties"];
        assert!(keys.get("access_token").is_some(), "{defs}");
    }

    /// `api_version` is `v` and a number.
    #[test]
    fn api_version_is_checked() {
        let with = |v: &str| capi(&format!("{META_TOML}api_version = \"{v}\"\n"));
        assert_eq!(with("v19.0").unwrap().api_version, "v19.0");
        for bad in ["19.0", "vlatest", "v", "x19.0"] {
            let p = with(bad).err().unwrap();
            assert_eq!(
                (p.line, p.message.as_str()),
                (
                    6,
                    format!("api_version {bad:?} must look like \"v21.0\"").as_str()
                ),
            );
        }
    }

    /// A custom action's `event_name`; empty or not a string: `CustomEvent`.
    #[test]
    fn custom_action_event_names() {
        let meta = capi(META_TOML).unwrap();
        let variables = variables();
        let cx = BuildContext {
            action: Some(0),
            ..context(&variables)
        };
        let event = track_at(crate::event::now_ms());
        for (name, sent) in [
            (json!("Lead"), "Lead"),
            (json!(""), "CustomEvent"),
            (json!(7), "CustomEvent"),
        ] {
            let fields = json!({ "event_name": name, "plan": "pro" });
            let out = meta.custom("event", fields.as_object().unwrap().clone(), &event, &cx);
            let body = body_of(&out);
            assert_eq!(body["data"][0]["event_name"], sent, "{name}");
            assert_eq!(body["data"][0]["custom_data"], json!({"plan": "pro"}));
        }
    }

    /// `client_ip_address` and `client_user_agent` are sent when known and
    /// left out when not (Meta refuses an empty one).
    #[test]
    fn user_data_has_ip_and_user_agent_when_known() {
        let meta = capi(META_TOML).unwrap();
        let variables = variables();
        let cx = context(&variables);
        let now = crate::event::now_ms();
        let known = track_from(
            now,
            Some("203.0.113.9".parse().unwrap()),
            "Mozilla/5.0 (X11)",
        );
        let user = &body_of(&meta.automated(&known, &cx))["data"][0]["user_data"];
        assert_eq!(user["client_ip_address"], "203.0.113.9");
        assert_eq!(user["client_user_agent"], "Mozilla/5.0 (X11)");
        let unknown = track_from(now, None, "");
        let user = &body_of(&meta.automated(&unknown, &cx))["data"][0]["user_data"];
        assert!(user.get("client_ip_address").is_none(), "{user}");
        assert!(user.get("client_user_agent").is_none(), "{user}");
    }

    /// A new `_fbp` is `fb.1.<first seen, ms>.<31-bit number>` from the
    /// visitor's id: the first 4 bytes of sha256(`_fbp:` id), top bit
    /// cleared (computed independently for this id).
    #[test]
    fn new_fbp_is_derived_from_the_visitor_id() {
        let now = 1_764_000_000_000;
        let pageview = || crate::event::EventInput {
            kind: Some(Kind::Pageview),
            ..Default::default()
        };
        let cookie = "tp_cid=123456789.1732449000.2";
        let event = visit(pageview(), None, "Mozilla/5.0", cookie, now);
        let fbp = new_fbp(&event, now);
        assert_eq!(event.identity.client_id, "123456789.1732449000");
        // sha256("_fbp:123456789.1732449000") starts 68 4f e0 8c.
        assert_eq!(fbp, format!("fb.1.1732449000000.{}", 0x684f_e08c_u32));
        assert!(is_fbp(&fbp, now), "{fbp}");
        // A first-seen time that cannot be a creation time: now.
        let event = visit(
            pageview(),
            None,
            "Mozilla/5.0",
            "tp_cid=123456789.99.2",
            now,
        );
        let fbp = new_fbp(&event, now);
        assert!(fbp.starts_with("fb.1.1764000000000."), "{fbp}");
    }

    /// A creation time from 2010 up to a day ahead of our clock.
    #[test]
    fn plausible_creation_times() {
        let now = 1_764_000_000_000;
        let hour = 3600 * 1000;
        assert!(plausible_ms(MIN_CREATION_MS, now));
        assert!(!plausible_ms(MIN_CREATION_MS - 1, now));
        assert!(plausible_ms(now + 23 * hour, now));
        assert!(plausible_ms(now + 24 * hour, now));
        assert!(!plausible_ms(now + 24 * hour + 1, now));
    }

    /// Click ids of up to 480 bytes are passed on (so an `_fbc` built from
    /// one stays within 500); longer ones are not.
    #[test]
    fn click_ids_up_to_the_length_limit() {
        let now = 1_764_000_000_000;
        let head = "fb.1.1732449000000.";
        let at_limit = format!("{head}{}", "A".repeat(MAX_FB_COOKIE_LEN - 20));
        assert!(is_fbc(&at_limit, now));
        assert!(at_limit.len() < MAX_FB_COOKIE_LEN);
        let over = format!("{at_limit}A");
        assert!(!is_fbc(&over, now));
    }

    fn ecommerce_event(name: &str, props: Value) -> Event {
        let input = crate::event::EventInput {
            kind: Some(Kind::Ecommerce),
            name: name.into(),
            properties: props.as_object().unwrap().clone(),
            ..Default::default()
        };
        visit(input, None, "Mozilla/5.0", "", crate::event::now_ms())
    }

    /// Zaraz's ecommerce properties as Meta's `custom_data`
    /// (<https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/custom-data>):
    /// currency upper case, the order's value first, `contents` with an id
    /// (SKU, else product id) and a quantity (at least 1) per product,
    /// `num_items` for checkouts and purchases only, every name joined.
    #[test]
    fn ecommerce_properties_become_metas_custom_data() {
        let props = json!({
            "order_id": "A1",
            "currency": "eur",
            "total": 30.5,
            "price": 10,
            "category": "shoes",
            "coupon": "SPRING",
            "query": "boots",
            "products": [
                {"sku": "SKU-1", "product_id": "p1", "name": "Boot", "price": 10, "quantity": 2},
                {"sku": "  ", "product_id": 77, "name": " ", "quantity": 0.5},
                {"product_id": "", "name": "Nameless"},
                "not a product",
            ],
        });
        let c = ecommerce_data(&ecommerce_event("Order Completed", props.clone()), &[]);
        assert_eq!(
            Value::Object(c),
            json!({
                "currency": "EUR",
                "value": 30.5,
                "order_id": "A1",
                "content_category": "shoes",
                "content_ids": ["SKU-1", "77"],
                "content_type": "product",
                "num_items": 3,
                "contents": [
                    {"id": "SKU-1", "quantity": 2, "item_price": 10.0},
                    {"id": "77", "quantity": 1},
                ],
                "content_name": "Boot,Nameless",
                "coupon": "SPRING",
                "category": "shoes",
                "total": 30.5,
                "price": 10,
            })
        );
        // Not a checkout or purchase: no num_items. A search: its query.
        let c = ecommerce_data(&ecommerce_event("Products Searched", props), &[]);
        assert!(c.get("num_items").is_none(), "{c:?}");
        assert_eq!(c["search_string"], "boots");
        // A product described flat by the event itself; no products at all.
        let flat = json!({"product_id": "p9", "name": "Hat", "price": 5, "currency": "usd"});
        let c = ecommerce_data(&ecommerce_event("Product Added", flat), &[]);
        assert_eq!(
            c["contents"],
            json!([{"id": "p9", "quantity": 1, "item_price": 5.0}])
        );
        assert_eq!(c["value"], json!(5.0));
        assert!(c.get("search_string").is_none());
        let none = ecommerce_data(&ecommerce_event("Cart Viewed", json!({})), &[]);
        assert!(none.is_empty(), "{none:?}");
        // Personal keys never ride along, nor the keys named by `pii`.
        let c = ecommerce_data(
            &ecommerce_event(
                "Order Completed",
                json!({"email": "a@b.test", "nick": "x", "plan": "y"}),
            ),
            &["nick"],
        );
        assert_eq!(Value::Object(c), json!({"plan": "y"}));
        // Nested: Meta's own parameter names (`city`) and the personal
        // words of every destination (`street`) are both left out.
        let c = ecommerce_data(
            &ecommerce_event(
                "Order Completed",
                json!({"shipping": {"city": "Paris", "street": "1 rue X", "method": "post"}}),
            ),
            &[],
        );
        assert_eq!(Value::Object(c), json!({"shipping": {"method": "post"}}));
    }
}
