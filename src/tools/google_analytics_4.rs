//! `google-analytics-4`: hits to `GET {endpoint}/g/collect`, the endpoint
//! gtag.js itself uses (protocol v2), so sessions, pages and ecommerce show
//! in GA4 like browser-side collection, without an API secret.
//!
//! Parameters: `v=2`, `tid`, `cid`, `sid`/`sct`/`seg`/`_s`/`_ss`/`_fv`, `en`,
//! `dl`/`dt`/`dr`, `ul`, `sr`, `_uip`, `ep.*` (strings) and `epn.*`
//! (numbers), and for ecommerce `cu` plus one `prN` string per product
//! (`id…~nm…~pr…~qt…`). The visitor's User-Agent is the request's.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::ecommerce;
use super::{
    endpoint, parse_settings, Adapter, Automated, BuildContext, HttpRequest, Output, Payload,
    TemplateString, ToolFile,
};
use crate::config::Problem;
use crate::event::{number, Event, Kind};
use crate::rules::template::Template;

const DEFAULT_ENDPOINT: &str = "https://www.google-analytics.com";
/// GA4's limits on event and parameter names, and on parameter values.
const MAX_NAME: usize = 40;
const MAX_VALUE: usize = 100;
const MAX_PRODUCTS: usize = 200;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    measurement_id: Option<TemplateString>,
    #[serde(default)]
    hide_ip: bool,
}

pub struct Ga4 {
    base: String,
    measurement_id: Template,
    hide_ip: bool,
}

impl Ga4 {
    pub fn from_config(path: &Path, text: &str, file: &ToolFile) -> Result<Ga4, Problem> {
        let s: Settings = parse_settings(path, text)?;
        let Some(measurement_id) = s.measurement_id else {
            let at = file.settings_at();
            return Err(Problem::at(
                path,
                text,
                at,
                "google-analytics-4 needs settings.measurement_id",
            ));
        };
        if let Some(id) = measurement_id.0.as_literal() {
            if !id.starts_with("G-") || id.len() < 4 {
                let at = file.settings_key_at(text, id);
                return Err(Problem::at(
                    path,
                    text,
                    at,
                    format!("measurement_id {id:?} must look like \"G-XXXXXXX\""),
                ));
            }
        }
        Ok(Ga4 {
            base: endpoint(file, DEFAULT_ENDPOINT),
            measurement_id: measurement_id.0,
            hide_ip: s.hide_ip,
        })
    }
}

impl Adapter for Ga4 {
    fn supports(&self) -> Automated {
        Automated::ALL
    }

    fn automated(&self, event: &Event, cx: &BuildContext<'_>) -> Output {
        let mut q = self.base_query(event, cx);
        match event.kind {
            Kind::Pageview => q.push("en", "page_view"),
            Kind::Track => {
                q.push("en", &event_name(&event.name));
                // Nested properties as `parent_child` parameters.
                let mut flat = Map::new();
                flatten("", event.properties(), &mut flat);
                push_params(&mut q, &flat, &[]);
            }
            Kind::Ecommerce => {
                q.push("en", &event_name(&ecommerce::ga4_name(&event.name)));
                push_ecommerce(&mut q, event);
            }
        }
        self.hit(q, event)
    }

    fn action_kinds(&self) -> &'static [(&'static str, &'static [&'static str])] {
        &[("event", &["event_name"])]
    }

    /// `event`: a hit named `event_name`; every other field is a parameter
    /// (nested objects flattened with `_`).
    fn custom(
        &self,
        _kind: &str,
        fields: Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        let mut q = self.base_query(event, cx);
        let name = fields
            .get("event_name")
            .and_then(Value::as_str)
            .unwrap_or("event");
        q.push("en", &event_name(name));
        let mut flat = Map::new();
        flatten("", &fields, &mut flat);
        push_params(&mut q, &flat, &["event_name"]);
        self.hit(q, event)
    }

    fn templates(&self) -> Vec<&Template> {
        vec![&self.measurement_id]
    }

    fn origins(&self) -> Vec<url::Origin> {
        super::origin_list(&self.base)
    }
}

/// Nested objects as `parent_child` keys (GA4 parameters are flat).
fn flatten(prefix: &str, map: &Map<String, Value>, out: &mut Map<String, Value>) {
    for (k, v) in map {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}_{k}")
        };
        match v {
            Value::Object(inner) => flatten(&key, inner, out),
            other => {
                out.insert(key, other.clone());
            }
        }
    }
}

impl Ga4 {
    /// The parameters every hit carries.
    fn base_query(&self, event: &Event, cx: &BuildContext<'_>) -> Query {
        let mut q = Query::default();
        q.push("v", "2");
        q.push("tid", &cx.render(&self.measurement_id, event));
        q.push("cid", &client_id(event));
        let id = &event.identity;
        q.push("sid", &id.session_id.to_string());
        q.push("sct", &id.session_count.to_string());
        // "Engaged session": gtag sets it once a session has more than one
        // event (or 10 s); on every hit it would zero the bounce rate.
        if id.hit > 1 || !id.session_start {
            q.push("seg", "1");
        }
        q.push("_s", &id.hit.to_string());
        if id.session_start {
            q.push("_ss", "1");
        }
        if id.first_visit {
            q.push("_fv", "1");
        }
        let language = event.sys_str(&["device", "language"]).to_ascii_lowercase();
        q.push_nonempty("ul", &language);
        q.push_nonempty("sr", event.sys_str(&["device", "resolution"]));
        // GA4's length limits for page location, title and referrer.
        q.push_nonempty("dl", truncate(event.page_url(), 1000));
        q.push_nonempty("dt", truncate(event.sys_str(&["page", "title"]), 300));
        q.push_nonempty("dr", truncate(event.sys_str(&["page", "referrer"]), 420));
        if !self.hide_ip {
            if let Some(ip) = event.ip {
                q.push("_uip", &ip.to_string());
            }
        }
        if let Some(mode) = &event.consent_mode {
            q.push("gcs", &mode.gcs());
            q.push("gcd", &mode.gcd());
        }
        q.push("ep.event_id", &event.id);
        q
    }

    fn hit(&self, q: Query, event: &Event) -> Output {
        let url = format!("{}/g/collect?{}", self.base, q.finish());
        let mut headers = vec![("accept".to_string(), "*/*".to_string())];
        if !event.user_agent.is_empty() {
            headers.push(("user-agent".into(), event.user_agent.clone()));
        }
        Output {
            payloads: vec![Payload::Http(HttpRequest {
                method: "GET".into(),
                url,
                headers,
                body: None,
            })],
            instructions: Vec::new(),
        }
    }
}

/// The site's own GA client id (`_ga` = `GA1.1.<random>.<time>`: gtag reads
/// the last two parts), else ours.
fn client_id(event: &Event) -> String {
    if let Some(ga) = event.cookie("_ga") {
        let parts: Vec<&str> = ga.split('.').collect();
        if parts.len() >= 4
            && parts[parts.len() - 2..]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            return parts[parts.len() - 2..].join(".");
        }
    }
    event.identity.client_id.clone()
}

/// A GA4-valid event or parameter name: letters, digits and `_`, starting
/// with a letter, at most 40 characters.
fn event_name(name: &str) -> String {
    let mut out = ecommerce::snake_case(name);
    if !out.starts_with(|c: char| c.is_ascii_alphabetic()) {
        out.insert_str(0, "e_");
    }
    out.retain(|c| c.is_ascii_alphanumeric() || c == '_');
    out.truncate(MAX_NAME);
    out
}

/// Event properties as `ep.` / `epn.` parameters, skipping `skip` and the
/// internal `__zaraz*` keys.
fn push_params(q: &mut Query, props: &Map<String, Value>, skip: &[&str]) {
    for (k, v) in props {
        if k.starts_with("__") || skip.contains(&k.as_str()) {
            continue;
        }
        let key = event_name(k);
        match v {
            Value::Number(n) => q.push(&format!("epn.{key}"), &n.to_string()),
            Value::String(s) => q.push(&format!("ep.{key}"), truncate(s, MAX_VALUE)),
            Value::Bool(b) => q.push(&format!("ep.{key}"), if *b { "true" } else { "false" }),
            _ => {}
        }
    }
}

/// Zaraz ecommerce properties → GA4 ecommerce parameters.
fn push_ecommerce(q: &mut Query, event: &Event) {
    let props = event.properties();
    let str_of = |k: &str| event.prop_str(k);
    if let Some(cu) = str_of("currency") {
        q.push("cu", &cu.to_ascii_uppercase());
    }
    if let Some(id) = str_of("order_id").or_else(|| str_of("transaction_id")) {
        q.push("ep.transaction_id", &id);
    }
    // Zaraz's order for GA4: an order's `total` before its `revenue`.
    if let Some(v) = ["value", "total", "revenue", "price"]
        .iter()
        .find_map(|k| event.prop_f64(k))
    {
        q.push("epn.value", &format_number(v));
    }
    for (zaraz, ga) in [
        ("tax", "tax"),
        ("shipping", "shipping"),
        ("discount", "discount"),
    ] {
        if let Some(v) = event.prop_f64(zaraz) {
            q.push(&format!("epn.{ga}"), &format_number(v));
        }
    }
    for (zaraz, ga) in [
        ("coupon", "coupon"),
        ("affiliation", "affiliation"),
        ("list_id", "item_list_id"),
        ("category", "item_list_name"),
        ("query", "search_term"),
        ("payment_type", "payment_type"),
        ("shipping_method", "shipping_tier"),
        ("promotion_id", "promotion_id"),
        ("creative", "creative_name"),
        ("checkout_id", "checkout_id"),
        ("cart_id", "cart_id"),
    ] {
        if let Some(v) = str_of(zaraz) {
            q.push(&format!("ep.{ga}"), truncate(&v, MAX_VALUE));
        }
    }
    if let Some(step) = event.prop_f64("step") {
        q.push("epn.checkout_step", &format_number(step));
    }
    // One product: the event's own properties describe it (Product Added…).
    let products: Vec<&Map<String, Value>> = match props.get("products") {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_object).collect(),
        _ if props.contains_key("product_id") || props.contains_key("sku") => vec![props],
        _ => Vec::new(),
    };
    for (i, p) in products.iter().take(MAX_PRODUCTS).enumerate() {
        q.push(&format!("pr{}", i + 1), &product_string(p));
    }
}

/// One product as GA4's `prN` string: `key value` pairs joined by `~`.
fn product_string(p: &Map<String, Value>) -> String {
    let get = |k: &str| match p.get(k) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.replace('~', " ")),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let mut parts = Vec::new();
    if let Some(id) = get("product_id").or_else(|| get("sku")) {
        parts.push(format!("id{id}"));
    }
    for (zaraz, key) in [
        ("name", "nm"),
        ("brand", "br"),
        ("category", "ca"),
        ("variant", "va"),
        ("coupon", "cp"),
    ] {
        if let Some(v) = get(zaraz) {
            parts.push(format!("{key}{v}"));
        }
    }
    if let Some(price) = p.get("price").and_then(number) {
        parts.push(format!("pr{}", format_number(price)));
    }
    if let Some(qty) = p.get("quantity").and_then(number) {
        parts.push(format!("qt{}", format_number(qty)));
    }
    if let Some(pos) = p.get("position").and_then(number) {
        parts.push(format!("lp{}", format_number(pos)));
    }
    parts.join("~")
}

fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A URL query in GA's parameter order.
struct Query(url::form_urlencoded::Serializer<'static, String>);

impl Default for Query {
    fn default() -> Self {
        Query(url::form_urlencoded::Serializer::new(String::new()))
    }
}

impl Query {
    fn push(&mut self, k: &str, v: &str) {
        self.0.append_pair(k, v);
    }
    fn push_nonempty(&mut self, k: &str, v: &str) {
        if !v.is_empty() {
            self.push(k, v);
        }
    }
    fn finish(mut self) -> String {
        self.0.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_ga4_valid() {
        assert_eq!(event_name("signup"), "signup");
        assert_eq!(event_name("Sign Up!"), "sign_up");
        assert_eq!(event_name("1st"), "e_1st");
        assert_eq!(event_name(&"x".repeat(60)).len(), 40);
    }

    #[test]
    fn nested_properties_flatten() {
        let props = serde_json::json!({"a": {"b": 1, "c": {"d": "x"}}, "e": true});
        let mut flat = Map::new();
        flatten("", props.as_object().unwrap(), &mut flat);
        assert_eq!(
            serde_json::Value::Object(flat),
            serde_json::json!({"a_b": 1, "a_c_d": "x", "e": true})
        );
    }

    #[test]
    fn product_strings() {
        let p = serde_json::json!({"product_id": "A1", "name": "Mug ~ blue", "price": 14.5, "quantity": 2, "brand": "TP"});
        assert_eq!(
            product_string(p.as_object().unwrap()),
            "idA1~nmMug   blue~brTP~pr14.5~qt2"
        );
    }
}
