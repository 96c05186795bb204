//! `facebook-pixel`: Meta Conversions API, `POST
//! {endpoint}/{api_version}/{pixel_id}/events` with `{"data": [...],
//! "access_token": ...}`.
//!
//! `event_id` is our event id, so Meta dedupes it against the browser pixel
//! (same `event_name` + `event_id` within 48 h). Personal data in event
//! properties (`email`, `phone`…) is sent only as SHA-256 of the normalized
//! value, and never in `custom_data`. `_fbp` / `_fbc` come from the site's
//! cookies; when missing they are created (from `fbclid` for `_fbc`) and the
//! browser is asked to store them.

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::ecommerce;
use super::{
    endpoint, parse_settings, Adapter, Automated, BuildContext, HttpRequest, Output, Payload,
    TemplateString, ToolFile,
};
use crate::config::Problem;
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
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
        let missing = |what: &str| {
            let at = file.settings_at();
            Problem::at(
                path,
                text,
                at,
                format!("facebook-pixel needs settings.{what}"),
            )
        };
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
        let mut instructions = Vec::new();
        let now_ms = crate::event::now_ms();

        let mut user = Map::new();
        if let Some(ip) = event.ip {
            user.insert("client_ip_address".into(), json!(ip.to_string()));
        }
        if !event.user_agent.is_empty() {
            user.insert("client_user_agent".into(), json!(event.user_agent));
        }
        let fbp = match event.cookie("_fbp").filter(|v| v.starts_with("fb.")) {
            Some(v) => v.to_string(),
            None => {
                let v = new_fbp(event);
                instructions.push(set_cookie("_fbp", &v));
                v
            }
        };
        user.insert("fbp".into(), json!(fbp));
        let fbclid = event
            .sys(&["page", "query", "fbclid"])
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let fbc = match (
            event.cookie("_fbc").filter(|v| v.starts_with("fb.")),
            fbclid,
        ) {
            // A new click id replaces the stored one, as the pixel does.
            (Some(v), Some(id)) if v.ends_with(id) => Some(v.to_string()),
            (_, Some(id)) => {
                // The collector's receive time, shared by a batch's events.
                let at = event
                    .sys(&["misc", "timestampMilliseconds"])
                    .and_then(Value::as_u64)
                    .unwrap_or(now_ms);
                let v = format!("fb.1.{at}.{id}");
                instructions.push(set_cookie("_fbc", &v));
                Some(v)
            }
            (Some(v), None) => Some(v.to_string()),
            (None, None) => None,
        };
        if let Some(fbc) = fbc {
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
        let mut data = json!({
            "event_name": event_name,
            "event_time": event_time,
            "event_id": event.id,
            "action_source": "website",
            "event_source_url": event.page_url(),
            "user_data": user,
        });
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

        let mut body = json!({
            "data": [data],
            "access_token": cx.render(&self.access_token, event),
        });
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
                body: Some(body.to_string().into_bytes()),
            })],
            instructions,
        }
    }
}

/// A new `_fbp` (`fb.1.<creation ms>.<random>`) for a visitor without one,
/// derived from our own client id (`<random>.<first-seen secs>`): every
/// event of a batch, and every request until the browser has stored the
/// cookie, carries the same browser id. The random part is a hash, so Meta
/// never sees the id other tools get.
fn new_fbp(event: &Event) -> String {
    let id = &event.identity.client_id;
    let first_seen = id
        .split_once('.')
        .and_then(|(_, secs)| secs.parse::<u64>().ok())
        .map_or_else(crate::event::now_ms, |secs| secs * 1000);
    let digest = Sha256::digest(format!("_fbp:{id}").as_bytes());
    let random = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    format!("fb.1.{first_seen}.{random}")
}

fn set_cookie(name: &str, value: &str) -> Value {
    json!({"set_cookie": {"name": name, "value": value, "max_age": FB_COOKIE_SECS, "path": "/"}})
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

/// Track properties for `custom_data`: scalars and arrays, no personal data,
/// no internal keys.
fn custom_props(props: &Map<String, Value>, pii: &[&str]) -> Map<String, Value> {
    props
        .iter()
        .filter(|(k, _)| !k.starts_with("__") && !pii.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Zaraz ecommerce properties → Meta's standard `custom_data`.
fn ecommerce_data(event: &Event, pii: &[&str]) -> Map<String, Value> {
    let props = event.properties();
    let mut c = Map::new();
    if let Some(cu) = event.prop_str("currency") {
        c.insert("currency".into(), json!(cu.to_ascii_uppercase()));
    }
    // Zaraz's order for Meta: a product's `price` before an order's `total`.
    if let Some(v) = ["value", "price", "total", "revenue"]
        .iter()
        .find_map(|k| event.prop_f64(k))
    {
        c.insert("value".into(), json!(v));
    }
    if let Some(id) = event.prop_str("order_id") {
        c.insert("order_id".into(), json!(id));
    }
    if let Some(q) = event.prop_str("query") {
        c.insert("search_string".into(), json!(q));
    }
    let products: Vec<&Map<String, Value>> = match props.get("products") {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_object).collect(),
        _ if props.contains_key("product_id") || props.contains_key("sku") => vec![props],
        _ => Vec::new(),
    };
    if !products.is_empty() {
        let id_of = |p: &Map<String, Value>| -> Option<String> {
            ["product_id", "sku"].iter().find_map(|k| match p.get(*k) {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
        };
        let contents: Vec<Value> = products
            .iter()
            .filter_map(|p| {
                let mut item = json!({"id": id_of(p)?, "quantity": p.get("quantity").and_then(number).unwrap_or(1.0) as u64});
                if let Some(price) = p.get("price").and_then(number) {
                    item["item_price"] = json!(price);
                }
                Some(item)
            })
            .collect();
        let num_items: u64 = contents.iter().filter_map(|c| c["quantity"].as_u64()).sum();
        c.insert(
            "content_ids".into(),
            json!(products.iter().filter_map(|p| id_of(p)).collect::<Vec<_>>()),
        );
        c.insert("contents".into(), Value::Array(contents));
        c.insert("num_items".into(), json!(num_items));
        c.insert("content_type".into(), json!("product"));
        if products.len() == 1 {
            if let Some(name) = products[0].get("name").and_then(Value::as_str) {
                c.insert("content_name".into(), json!(name));
            }
        }
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
        assert_eq!(hash_user_field("ge", "other"), None);
        assert_eq!(
            hash_user_field("db", "1990-07-04"),
            hash_user_field("db", "19900704")
        );
        assert_eq!(hash_user_field("db", "July 4th"), None);
    }

    /// The Meta request for each event of one collector batch.
    fn batch(cookies: &str, props: Value, n: usize) -> Vec<(Value, Vec<Value>)> {
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
                        url: "https://shop.test/?fbclid=click".into(),
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
                (body["data"][0].clone(), out.instructions)
            })
            .collect()
    }

    #[test]
    fn one_new_fbp_and_fbc_per_visitor_not_per_event() {
        let events = batch("", json!({}), 3);
        let (first, instructions) = &events[0];
        let fbp = first["user_data"]["fbp"].as_str().unwrap();
        let fbc = first["user_data"]["fbc"].as_str().unwrap();
        assert!(fbp.starts_with("fb.1.") && fbc.starts_with("fb.1.") && fbc.ends_with(".click"));
        for (e, i) in &events {
            assert_eq!(e["user_data"]["fbp"], fbp);
            assert_eq!(e["user_data"]["fbc"], fbc);
            assert_eq!(i, instructions);
        }
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
}
