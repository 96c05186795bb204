//! `amplitude`: Amplitude's HTTP V2 API, `POST {endpoint}/2/httpapi`
//! (<https://amplitude.com/docs/apis/analytics/http-v2>) with
//! `{"api_key", "events": [event]}`; EU data residency
//! (`eu = true`) sends to `https://api.eu.amplitude.com` instead.
//!
//! A pageview is `[Amplitude] Page Viewed` with the Browser SDK's page
//! properties, so server-side and SDK page views chart together (Zaraz's
//! Amplitude tool calls it `pageview`). Tracks and ecommerce events keep
//! their names; `Order Completed` / `Order Refunded` carry Amplitude's
//! revenue fields (`revenue`, `revenueType`, `productId`, `quantity`) as
//! Zaraz's tool fills them, and every property rides in `event_properties`
//! (`user_*` properties go to `user_properties`, `groups_*` to `groups`, as
//! in Zaraz). `insert_id` is our event id: Amplitude drops a second event
//! with the same `insert_id` within 7 days. `device_id` is tagproxy's client
//! id (or a `device_id` property), `session_id` the session's start in
//! milliseconds, as the SDKs send it.

use std::path::Path;

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

const DEFAULT_ENDPOINT: &str = "https://api2.amplitude.com";
const EU_ENDPOINT: &str = "https://api.eu.amplitude.com";
/// HTTP V2: "20 MB per request" is far past one event; the documented
/// per-request limit for a batch of events is 1 MB ("413 Payload Too
/// Large" past it).
const MAX_BODY: usize = 1 << 20;
/// Amplitude refuses `user_id` / `device_id` shorter than 5 characters
/// (`min_id_length`, default 5) with a 400.
const MIN_ID_LENGTH: usize = 5;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "AmplitudeSettings")]
struct Settings {
    /// The project's API key.
    api_key: Option<TemplateString>,
    /// EU data residency: the default endpoint becomes
    /// `https://api.eu.amplitude.com`.
    #[serde(default)]
    eu: bool,
}

/// The JSON Schema of this adapter's `[settings]` table (`tagproxy schema`).
pub fn settings_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<Settings>()
}

pub struct Amplitude {
    base: String,
    api_key: Template,
}

impl Amplitude {
    /// # Errors
    /// `settings.api_key` is missing, or the settings do not parse.
    pub fn from_config(path: &Path, text: &str, file: &ToolFile) -> Result<Amplitude, Problem> {
        let s: Settings = parse_settings(path, text)?;
        let Some(api_key) = s.api_key else {
            return Err(file.missing_setting(path, text, "api_key"));
        };
        let default = if s.eu { EU_ENDPOINT } else { DEFAULT_ENDPOINT };
        Ok(Amplitude {
            base: endpoint(file, default),
            api_key: api_key.0,
        })
    }

    fn send(
        &self,
        event_type: &str,
        properties: &Map<String, Value>,
        top: Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        let mut e = json!({
            "event_type": event_type,
            "time": props::event_time_ms(event),
            "insert_id": event.id,
            "session_id": event.identity.session_id.saturating_mul(1000),
            "platform": "Web",
        });
        let device = properties
            .get("device_id")
            .and_then(props::scalar)
            .filter(|d| d.len() >= MIN_ID_LENGTH)
            .unwrap_or_else(|| event.identity.client_id.clone());
        e["device_id"] = json!(device);
        if let Some(user) = ["user_id", "userId"]
            .iter()
            .find_map(|k| properties.get(*k).and_then(props::scalar))
            .filter(|u| u.len() >= MIN_ID_LENGTH)
        {
            e["user_id"] = json!(user);
        }
        if let Some(ip) = event.ip {
            e["ip"] = json!(ip.to_string());
        }
        for (field, path) in [
            ("language", &["device", "language"][..]),
            ("os_name", &["device", "user-agent", "os", "name"][..]),
            ("os_version", &["device", "user-agent", "os", "version"][..]),
        ] {
            let v = event.sys_str(path);
            if !v.is_empty() && v != "UNKNOWN" {
                e[field] = json!(v);
            }
        }
        let mut event_props = Map::new();
        let mut user_props = Map::new();
        let mut groups = Map::new();
        for (k, v) in props::analytics_props(properties) {
            if ["device_id", "user_id", "userId"].contains(&k.as_str()) {
                continue;
            }
            if let Some(name) = k.strip_prefix("user_").filter(|n| !n.is_empty()) {
                user_props.insert(name.into(), v);
            } else if let Some(name) = k.strip_prefix("groups_").filter(|n| !n.is_empty()) {
                groups.insert(name.into(), v);
            } else {
                event_props.insert(k, v);
            }
        }
        e["event_properties"] = Value::Object(event_props);
        if !user_props.is_empty() {
            e["user_properties"] = Value::Object(user_props);
        }
        if !groups.is_empty() {
            e["groups"] = Value::Object(groups);
        }
        for (k, v) in top {
            e[k] = v;
        }
        let body = json!({
            "api_key": cx.render(&self.api_key, event),
            "events": [e],
        });
        Output {
            payloads: vec![Payload::Http(HttpRequest {
                method: "POST".into(),
                url: format!("{}/2/httpapi", self.base),
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("accept".into(), "*/*".into()),
                ],
                body: Some(serde_json::to_vec(&body).expect("a JSON value serializes")),
            })],
            ..Default::default()
        }
    }
}

/// Amplitude HTTP V2 `events[]`: "Keep request sizes under 1 MB with fewer
/// than 2000 events per request" (413 past it)
/// (<https://amplitude.com/docs/apis/analytics/http-v2#upload-limit>,
/// <https://amplitude.com/docs/apis/analytics/http-api-batching-retries>).
/// Requests with the same `api_key` join.
pub const BATCHING: super::json_batch::JsonArrayBatching = super::json_batch::JsonArrayBatching {
    array: Some("events"),
    limits: crate::delivery::Limits {
        max_events: 2000,
        max_bytes: MAX_BODY,
    },
    max_member_bytes: MAX_BODY,
    per_request: &[],
};

impl Adapter for Amplitude {
    fn supports(&self) -> Automated {
        Automated::ALL
    }

    fn automated(&self, event: &Event, cx: &BuildContext<'_>) -> Output {
        match event.kind {
            Kind::Pageview => self.send(
                "[Amplitude] Page Viewed",
                &page_props(event),
                Map::new(),
                event,
                cx,
            ),
            Kind::Track => self.send(&event.name, event.properties(), Map::new(), event, cx),
            Kind::Ecommerce => self.send(
                &event.name,
                event.properties(),
                revenue_fields(event),
                event,
                cx,
            ),
        }
    }

    fn action_kinds(&self) -> &'static [(&'static str, &'static [&'static str])] {
        &[("event", &["event_type"])]
    }

    /// `event`: an event named `event_type`, the other fields its
    /// properties (`user_*` → user properties, `groups_*` → groups).
    fn custom(
        &self,
        _kind: &str,
        mut fields: Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        let name = match fields.remove("event_type") {
            Some(Value::String(s)) if !s.is_empty() => s,
            _ => "event".to_string(),
        };
        self.send(&name, &fields, Map::new(), event, cx)
    }

    fn credentials(&self, event: &Event, cx: &BuildContext<'_>) -> Vec<String> {
        vec![cx.render(&self.api_key, event)]
    }

    fn templates(&self) -> Vec<&Template> {
        vec![&self.api_key]
    }

    fn origins(&self) -> Vec<url::Origin> {
        super::origin_list(&self.base)
    }

    fn max_body_bytes(&self) -> usize {
        MAX_BODY
    }

    fn batching(&self) -> Option<std::sync::Arc<dyn crate::delivery::Batching>> {
        Some(std::sync::Arc::new(BATCHING))
    }

    fn answer_reader(&self) -> Option<AnswerReader> {
        Some(read_answer)
    }
}

/// Amplitude's revenue fields for an order, as Zaraz's Amplitude tool fills
/// them: `revenue` = `revenue`, else `total`, else `value`; `revenueType`
/// `Purchase` / `Refund`; `productId` = the products' ids, comma-separated;
/// `quantity` = the sum of their quantities. A refund's revenue is negative
/// (Amplitude sums revenue; Zaraz sends it positive).
fn revenue_fields(event: &Event) -> Map<String, Value> {
    let mut p = Map::new();
    let refund = match event.name.as_str() {
        "Order Completed" => false,
        "Order Refunded" => true,
        _ => return p,
    };
    if let Some(revenue) = ["revenue", "total", "value"]
        .iter()
        .find_map(|k| event.prop_f64(k))
    {
        let revenue = if refund { -revenue.abs() } else { revenue };
        p.insert("revenue".into(), json!(revenue));
    }
    p.insert(
        "revenueType".into(),
        json!(if refund { "Refund" } else { "Purchase" }),
    );
    let products = props::products(event);
    let ids: Vec<String> = products
        .iter()
        .filter_map(|p| p.get("product_id").and_then(props::scalar))
        .collect();
    if !ids.is_empty() {
        p.insert("productId".into(), json!(ids.join(",")));
    }
    let quantity: i64 = products
        .iter()
        .filter_map(|p| p.get("quantity").and_then(crate::event::number))
        .map(|q| q as i64)
        .sum();
    if quantity > 0 {
        p.insert("quantity".into(), json!(quantity));
    }
    p
}

/// The Browser SDK's page view properties
/// (<https://amplitude.com/docs/sdks/analytics/browser/browser-sdk-2#page-views>).
fn page_props(event: &Event) -> Map<String, Value> {
    let raw = event.page_url();
    let location = super::pii::redact_url(raw).unwrap_or_else(|| raw.to_string());
    let without_query = location
        .split(['?', '#'])
        .next()
        .unwrap_or(&location)
        .to_string();
    let mut p = Map::new();
    p.insert(
        "[Amplitude] Page Domain".into(),
        json!(props::url_part(event, "hostname")),
    );
    p.insert("[Amplitude] Page Location".into(), json!(location));
    p.insert(
        "[Amplitude] Page Path".into(),
        json!(props::url_part(event, "pathname")),
    );
    p.insert(
        "[Amplitude] Page Title".into(),
        json!(event.sys_str(&["page", "title"])),
    );
    p.insert("[Amplitude] Page URL".into(), json!(without_query));
    let referrer = event.sys_str(&["page", "referrer"]);
    if !referrer.is_empty() {
        p.insert("referrer".into(), json!(referrer));
    }
    p
}

/// HTTP V2's answers (<https://amplitude.com/docs/apis/analytics/http-v2#response-format>):
/// `200 {"code": 200, "events_ingested": …}`; `400 {"code": 400, "error": …,
/// "missing_field" | "events_with_invalid_fields" | …}` (never accepted as
/// is); `413` (too large); `429 {"error": "Too many requests for some
/// devices and users", "throttled_devices": …}` and `5xx`, retried.
fn read_answer(status: u16, body: &str) -> Option<Verdict> {
    let json: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let mut message = props::error_message(body, &["error"]);
    for detail in [
        "missing_field",
        "events_with_invalid_fields",
        "events_with_missing_fields",
    ] {
        if let Some(v) = json.get(detail) {
            message.push_str(&format!(" ({detail}: {v})"));
        }
    }
    match status {
        400 | 413 => Some(Verdict::Reject(format!(
            "HTTP {status}: Amplitude: {message}"
        ))),
        429 => Some(Verdict::Retry {
            why: format!("HTTP 429: Amplitude: {message}"),
            after: None,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        assert_eq!(
            read_answer(200, r#"{"code":200,"events_ingested":1}"#),
            None
        );
        let v = read_answer(
            400,
            r#"{"code":400,"error":"Request missing required field","missing_field":"api_key"}"#,
        );
        assert!(
            matches!(&v, Some(Verdict::Reject(m)) if m.contains("Request missing required field") && m.contains("api_key")),
            "{v:?}"
        );
        assert!(matches!(
            read_answer(429, r#"{"code":429,"error":"Too many requests for some devices and users"}"#),
            Some(Verdict::Retry { why, .. }) if why.contains("Too many requests")
        ));
        assert_eq!(read_answer(503, ""), None);
    }

    const AMPLITUDE_TOML: &str =
        "type = \"amplitude\"\n[settings]\napi_key = \"key-{{ $project }}\"\n";

    fn amplitude(text: &str) -> Amplitude {
        let file: ToolFile = toml::from_str(text).unwrap();
        Amplitude::from_config(Path::new("amplitude.toml"), text, &file).unwrap()
    }

    fn variables() -> crate::rules::template::Variables {
        let mut v = crate::rules::template::Variables::new();
        v.insert(
            "project".into(),
            crate::rules::template::Variable {
                value: json!("7"),
                secret: false,
            },
        );
        v
    }

    /// A track named `name` with `properties`, from a browser whose
    /// User-Agent is `user_agent`.
    fn track(name: &str, properties: Value, user_agent: &str) -> Event {
        event_of(
            Kind::Track,
            name,
            properties,
            "https://shop.test/",
            "",
            user_agent,
        )
    }

    /// The one HTTP V2 event of a request.
    fn sent(out: &Output) -> Value {
        let body = body_of(out);
        assert_eq!(body["events"].as_array().map(Vec::len), Some(1), "{body}");
        body["events"][0].clone()
    }

    use crate::tools::test_support::{body_of, context, visit};

    /// `device_id` and `user_id` properties become the event's ids when
    /// Amplitude would take them ("must have a minimum length of 5
    /// characters", <https://amplitude.com/docs/apis/analytics/http-v2#device-ids-and-user-ids-minimum-length>);
    /// shorter ones are left out (the device falls back to the client id)
    /// rather than have the whole request refused with a 400.
    #[test]
    fn ids_shorter_than_amplitudes_minimum_are_left_out() {
        let amp = amplitude(AMPLITUDE_TOML);
        let variables = variables();
        let cx = context("amp", &variables);
        let long = track(
            "signup",
            json!({"device_id": "dev-1", "user_id": "user1"}),
            "Mozilla/5.0",
        );
        let e = sent(&amp.automated(&long, &cx));
        assert_eq!(
            (e["device_id"].as_str(), e["user_id"].as_str()),
            (Some("dev-1"), Some("user1"))
        );
        assert!(e["event_properties"].get("device_id").is_none(), "{e}");
        let short = track(
            "signup",
            json!({"device_id": "dev", "userId": "u12"}),
            "Mozilla/5.0",
        );
        let e = sent(&amp.automated(&short, &cx));
        assert_eq!(e["device_id"], json!(short.identity.client_id));
        assert!(e.get("user_id").is_none(), "{e}");
    }

    /// `os_name` / `os_version` / `language` are sent when known, never as
    /// woothee's `UNKNOWN` or empty.
    #[test]
    fn device_fields_only_when_known() {
        let amp = amplitude(AMPLITUDE_TOML);
        let variables = variables();
        let cx = context("amp", &variables);
        let windows = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        let e = sent(&amp.automated(&track("a", json!({}), windows), &cx));
        assert_eq!(e["os_name"], "Windows 10", "{e}");
        assert_eq!(e["os_version"], "NT 10.0", "{e}");
        assert!(e.get("language").is_none(), "{e}");
        let e = sent(&amp.automated(&track("a", json!({}), "curl-ish"), &cx));
        for field in ["os_name", "os_version", "language"] {
            assert!(e.get(field).is_none(), "{field}: {e}");
        }
    }

    /// `user_*` properties go to `user_properties` and `groups_*` to
    /// `groups` (as in Zaraz's Amplitude tool); a bare `user_` or `groups_`
    /// stays an event property, and empty maps are not sent.
    #[test]
    fn user_and_group_properties_are_split_out() {
        let amp = amplitude(AMPLITUDE_TOML);
        let variables = variables();
        let cx = context("amp", &variables);
        let event = track(
            "a",
            json!({"user_plan": "pro", "groups_company": "acme", "user_": 1, "groups_": 2, "color": "red"}),
            "Mozilla/5.0",
        );
        let e = sent(&amp.automated(&event, &cx));
        assert_eq!(e["user_properties"], json!({"plan": "pro"}));
        assert_eq!(e["groups"], json!({"company": "acme"}));
        assert_eq!(
            e["event_properties"],
            json!({"user_": 1, "groups_": 2, "color": "red"})
        );
        let e = sent(&amp.automated(&track("a", json!({"color": "red"}), "Mozilla/5.0"), &cx));
        assert!(
            e.get("user_properties").is_none() && e.get("groups").is_none(),
            "{e}"
        );
    }

    /// A custom action of kind `event` sends an event named `event_type`
    /// (`event` when empty) with its other fields as properties.
    #[test]
    fn custom_event_action() {
        let amp = amplitude(AMPLITUDE_TOML);
        assert_eq!(amp.action_kinds(), &[("event", &["event_type"][..])]);
        let variables = variables();
        let cx = context("amp", &variables);
        let event = track("a", json!({}), "Mozilla/5.0");
        let fields = |name: &str| {
            json!({"event_type": name, "plan": "pro"})
                .as_object()
                .unwrap()
                .clone()
        };
        let e = sent(&amp.custom("event", fields("Signed Up"), &event, &cx));
        assert_eq!(e["event_type"], "Signed Up");
        assert_eq!(e["event_properties"], json!({"plan": "pro"}));
        let e = sent(&amp.custom("event", fields(""), &event, &cx));
        assert_eq!(e["event_type"], "event");
    }

    /// The API key (rendered) is the credential, its template is checked,
    /// the endpoint's origin (EU residency's by `eu = true`) is the only one
    /// requests go to, and requests join on HTTP V2's `events` array.
    #[test]
    fn declares_key_template_origin_and_batching() {
        let amp = amplitude(AMPLITUDE_TOML);
        let variables = variables();
        let cx = context("amp", &variables);
        let event = track("a", json!({}), "Mozilla/5.0");
        assert_eq!(amp.credentials(&event, &cx), ["key-7"]);
        assert_eq!(body_of(&amp.automated(&event, &cx))["api_key"], "key-7");
        let paths: Vec<usize> = amp.templates().iter().map(|t| t.paths().count()).collect();
        assert_eq!(paths, [1]);
        assert_eq!(
            crate::tools::origin_names(&amp.origins()),
            ["https://api2.amplitude.com"]
        );
        let eu = amplitude(&AMPLITUDE_TOML.replace("[settings]\n", "[settings]\neu = true\n"));
        assert_eq!(
            crate::tools::origin_names(&eu.origins()),
            ["https://api.eu.amplitude.com"]
        );
        assert_eq!(amp.batching().map(|b| b.limits().max_events), Some(2000));
    }

    /// An event of `kind` named `name` on `url`, referred by `referrer`.
    fn on_page(kind: Kind, name: &str, properties: Value, url: &str, referrer: &str) -> Event {
        event_of(kind, name, properties, url, referrer, "Mozilla/5.0")
    }

    /// An event of `kind` named `name` on `url` (titled "Hats"), referred
    /// by `referrer`, from a browser whose User-Agent is `user_agent`.
    fn event_of(
        kind: Kind,
        name: &str,
        properties: Value,
        url: &str,
        referrer: &str,
        user_agent: &str,
    ) -> Event {
        let input = crate::event::EventInput {
            kind: Some(kind),
            name: name.into(),
            properties: properties.as_object().unwrap().clone(),
            page: crate::event::PageInfo {
                url: url.into(),
                title: "Hats".into(),
                referrer: referrer.into(),
                ..Default::default()
            },
            ..Default::default()
        };
        visit(input, None, user_agent, "", crate::event::now_ms())
    }

    /// Orders carry Amplitude's revenue fields as Zaraz's tool fills them
    /// (a refund's revenue negative); other ecommerce events do not.
    #[test]
    fn orders_carry_revenue_fields() {
        let amp = amplitude(AMPLITUDE_TOML);
        let variables = variables();
        let cx = context("amp", &variables);
        let url = "https://shop.test/";
        let order = on_page(
            Kind::Ecommerce,
            "Order Completed",
            json!({"revenue": 10, "products": [{"product_id": "p1", "quantity": 2}, {"product_id": "p2", "quantity": 1}]}),
            url,
            "",
        );
        let e = sent(&amp.automated(&order, &cx));
        assert_eq!(
            (
                &e["revenue"],
                &e["revenueType"],
                &e["productId"],
                &e["quantity"]
            ),
            (&json!(10.0), &json!("Purchase"), &json!("p1,p2"), &json!(3)),
            "{e}"
        );
        let refund = on_page(
            Kind::Ecommerce,
            "Order Refunded",
            json!({"total": 5, "products": [{"sku": "s"}]}),
            url,
            "",
        );
        let e = sent(&amp.automated(&refund, &cx));
        assert_eq!(
            (&e["revenue"], &e["revenueType"]),
            (&json!(-5.0), &json!("Refund")),
            "{e}"
        );
        assert!(
            e.get("productId").is_none() && e.get("quantity").is_none(),
            "{e}"
        );
        let added = on_page(
            Kind::Ecommerce,
            "Product Added",
            json!({"revenue": 3}),
            url,
            "",
        );
        let e = sent(&amp.automated(&added, &cx));
        assert!(e.get("revenueType").is_none(), "{e}");
    }

    /// A pageview is the Browser SDK's `[Amplitude] Page Viewed` with its
    /// page properties
    /// (<https://amplitude.com/docs/sdks/analytics/browser/browser-sdk-2#page-views>);
    /// `referrer` only when there is one.
    #[test]
    fn pageviews_as_the_browser_sdk_sends_them() {
        let amp = amplitude(AMPLITUDE_TOML);
        let variables = variables();
        let cx = context("amp", &variables);
        let view = on_page(
            Kind::Pageview,
            "Pageview",
            json!({}),
            "https://shop.test/hats?c=red#top",
            "https://ref.test/",
        );
        let e = sent(&amp.automated(&view, &cx));
        assert_eq!(e["event_type"], "[Amplitude] Page Viewed");
        assert_eq!(
            e["event_properties"],
            json!({
                "[Amplitude] Page Domain": "shop.test",
                "[Amplitude] Page Location": "https://shop.test/hats?c=red#top",
                "[Amplitude] Page Path": "/hats",
                "[Amplitude] Page Title": "Hats",
                "[Amplitude] Page URL": "https://shop.test/hats",
                "referrer": "https://ref.test/",
            })
        );
        let direct = on_page(
            Kind::Pageview,
            "Pageview",
            json!({}),
            "https://shop.test/",
            "",
        );
        let e = sent(&amp.automated(&direct, &cx));
        assert!(e["event_properties"].get("referrer").is_none(), "{e}");
    }

    /// HTTP V2's answers are read: a 400 is refused with Amplitude's words.
    #[test]
    fn answers_are_read_by_the_adapter() {
        let reader = amplitude(AMPLITUDE_TOML).answer_reader().expect("a reader");
        assert!(
            matches!(reader(400, r#"{"code":400,"error":"Invalid"}"#), Some(Verdict::Reject(m)) if m.contains("Invalid"))
        );
    }
}
