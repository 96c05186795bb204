//! `mixpanel`: Mixpanel's Import Events API, `POST
//! {endpoint}/import?strict=1` (<https://developer.mixpanel.com/reference/import-events>)
//! with a JSON array of `{"event", "properties"}`; Basic auth with the
//! project secret (`api_secret`) as user name, or else the project token
//! (both documented for `/import`). Mixpanel recommends `/import` over
//! `/track` for server-side sending: it validates each event (`strict=1`),
//! keeps events older than five days, and says why it refuses one.
//!
//! A pageview is mixpanel-js's `$mp_web_page_view` with its page
//! properties; tracks and ecommerce events keep their names (Mixpanel has no
//! standard ecommerce events), their properties passed with personal
//! values as SHA-256. `$insert_id` is our event id (Mixpanel deduplicates
//! on it; an id it would refuse, longer than 36 characters or holding `_`,
//! is replaced by the first 36 hex digits of its SHA-256, as Mixpanel
//! suggests). `distinct_id` / `$device_id` come from mixpanel-js's
//! `mp_<token>_mixpanel` cookie when the site runs it (the same visitor in
//! both), else tagproxy's client id; a `user_id` property is `$user_id` and
//! the `distinct_id`.

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

const DEFAULT_ENDPOINT: &str = "https://api.mixpanel.com";
const EU_ENDPOINT: &str = "https://api-eu.mixpanel.com";
/// `/import`: "up to 2000 events and 10MB uncompressed per request".
const MAX_BODY: usize = 10 << 20;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "MixpanelSettings")]
struct Settings {
    /// The project token.
    token: Option<TemplateString>,
    /// The project secret: authenticates `/import` when set (else the
    /// token does).
    api_secret: Option<TemplateString>,
    /// EU data residency: the default endpoint becomes
    /// `https://api-eu.mixpanel.com`.
    #[serde(default)]
    eu: bool,
}

/// The JSON Schema of this adapter's `[settings]` table (`tagproxy schema`).
pub fn settings_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<Settings>()
}

pub struct Mixpanel {
    base: String,
    token: Template,
    api_secret: Option<Template>,
}

impl Mixpanel {
    /// # Errors
    /// `settings.token` is missing, or the settings do not parse.
    pub fn from_config(path: &Path, text: &str, file: &ToolFile) -> Result<Mixpanel, Problem> {
        let s: Settings = parse_settings(path, text)?;
        let Some(token) = s.token else {
            return Err(file.missing_setting(path, text, "token"));
        };
        let default = if s.eu { EU_ENDPOINT } else { DEFAULT_ENDPOINT };
        Ok(Mixpanel {
            base: endpoint(file, default),
            token: token.0,
            api_secret: s.api_secret.map(|t| t.0),
        })
    }

    fn send(
        &self,
        name: &str,
        properties: &Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        let token = cx.render(&self.token, event);
        let mut p = props::analytics_props(properties);
        let cookie = mixpanel_cookie(event, &token);
        let cookie_str = |k: &str| {
            cookie
                .as_ref()
                .and_then(|c| c.get(k))
                .and_then(props::scalar)
        };
        let device = cookie_str("$device_id")
            .or_else(|| cookie_str("distinct_id"))
            .unwrap_or_else(|| event.identity.client_id.clone());
        let user = ["user_id", "$user_id"]
            .iter()
            .find_map(|k| properties.get(*k).and_then(props::scalar))
            .or_else(|| cookie_str("$user_id"));
        p.remove("user_id");
        let url = event.page_url();
        let url = super::pii::redact_url(url).unwrap_or_else(|| url.to_string());
        let mut set = |k: &str, v: Value| {
            p.insert(k.into(), v);
        };
        set("token", json!(token));
        set("time", json!(props::event_time_ms(event)));
        set("$insert_id", json!(insert_id(&event.id)));
        set(
            "distinct_id",
            json!(user.clone().unwrap_or_else(|| device.clone())),
        );
        set("$device_id", json!(device));
        if let Some(user) = user {
            set("$user_id", json!(user));
        }
        if let Some(ip) = event.ip {
            set("ip", json!(ip.to_string()));
        }
        set("$current_url", json!(url));
        let referrer = event.sys_str(&["page", "referrer"]);
        if !referrer.is_empty() {
            set("$referrer", json!(referrer));
            if let Some(host) = url::Url::parse(referrer)
                .ok()
                .and_then(|u| u.host_str().map(String::from))
            {
                set("$referring_domain", json!(host));
            }
        }
        for (k, path) in [
            ("$browser", &["device", "user-agent", "browser", "name"][..]),
            (
                "$browser_version",
                &["device", "user-agent", "browser", "version"][..],
            ),
            ("$os", &["device", "user-agent", "os", "name"][..]),
        ] {
            let v = event.sys_str(path);
            if !v.is_empty() && v != "UNKNOWN" {
                set(k, json!(v));
            }
        }
        if let Some((w, h)) = props::screen(event) {
            set("$screen_width", json!(w));
            set("$screen_height", json!(h));
        }
        set("mp_lib", json!("tagproxy"));
        let body = json!([{"event": name, "properties": p}]);
        let auth = self
            .api_secret
            .as_ref()
            .map_or_else(|| token.clone(), |s| cx.render(s, event));
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{auth}:"));
        Output {
            payloads: vec![Payload::Http(HttpRequest {
                method: "POST".into(),
                url: format!("{}/import?strict=1", self.base),
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("accept".into(), "application/json".into()),
                    ("authorization".into(), format!("Basic {auth}")),
                ],
                body: Some(serde_json::to_vec(&body).expect("a JSON value serializes")),
            })],
            ..Default::default()
        }
    }
}

/// Mixpanel `/import`: a JSON array of up to 2,000 events and 10 MB
/// uncompressed per request, each event under 1 MB
/// (<https://docs.mixpanel.com/troubleshooting/errors/413-payload-too-large>,
/// <https://developer.mixpanel.com/reference/import-events>). Requests with
/// the same credentials (Basic auth) join the array.
pub const BATCHING: super::json_batch::JsonArrayBatching = super::json_batch::JsonArrayBatching {
    array: None,
    limits: crate::delivery::Limits {
        max_events: 2000,
        max_bytes: MAX_BODY,
    },
    max_member_bytes: 1 << 20,
    per_request: &[],
};

impl Adapter for Mixpanel {
    fn supports(&self) -> Automated {
        Automated::ALL
    }

    fn automated(&self, event: &Event, cx: &BuildContext<'_>) -> Output {
        match event.kind {
            Kind::Pageview => self.send("$mp_web_page_view", &page_props(event), event, cx),
            Kind::Track | Kind::Ecommerce => self.send(&event.name, event.properties(), event, cx),
        }
    }

    fn action_kinds(&self) -> &'static [(&'static str, &'static [&'static str])] {
        &[("event", &["event"])]
    }

    /// `event`: an event named `event`, the other fields its properties.
    fn custom(
        &self,
        _kind: &str,
        mut fields: Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        let name = match fields.remove("event") {
            Some(Value::String(s)) if !s.is_empty() => s,
            _ => "event".to_string(),
        };
        self.send(&name, &fields, event, cx)
    }

    fn credentials(&self, event: &Event, cx: &BuildContext<'_>) -> Vec<String> {
        let mut c = Vec::new();
        c.extend(self.api_secret.as_ref().map(|s| cx.render(s, event)));
        c
    }

    fn templates(&self) -> Vec<&Template> {
        let mut t = vec![&self.token];
        t.extend(&self.api_secret);
        t
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

/// mixpanel-js's page view properties (`track_pageview`).
fn page_props(event: &Event) -> Map<String, Value> {
    let mut p = Map::new();
    let title = event.sys_str(&["page", "title"]);
    if !title.is_empty() {
        p.insert("current_page_title".into(), json!(title));
    }
    p.insert(
        "current_domain".into(),
        json!(props::url_part(event, "hostname")),
    );
    p.insert(
        "current_url_path".into(),
        json!(props::url_part(event, "pathname")),
    );
    p.insert(
        "current_url_protocol".into(),
        json!(props::url_part(event, "protocol")),
    );
    let search = props::url_part(event, "search");
    if !search.is_empty() {
        p.insert("current_url_search".into(), json!(search));
    }
    p
}

/// mixpanel-js's `mp_<token>_mixpanel` cookie: URL-encoded JSON.
fn mixpanel_cookie(event: &Event, token: &str) -> Option<Map<String, Value>> {
    let raw = event.cookie(&format!("mp_{token}_mixpanel"))?;
    let decoded = url::form_urlencoded::parse(format!("v={}", raw.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())?;
    match serde_json::from_str(&decoded).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// A `$insert_id` Mixpanel takes: at most 36 characters, letters, digits
/// and `-` ("Import Events"); else the first 36 hex digits of the id's
/// SHA-256, so every retry of the event carries the same one.
fn insert_id(id: &str) -> String {
    if id.len() <= 36 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        id.to_string()
    } else {
        props::sha256_hex(id)[..36].to_string()
    }
}

/// `/import`'s answers (<https://docs.mixpanel.com/troubleshooting/errors/400-bad-request>):
/// `200 {"code": 200, "num_records_imported": n, "status": "OK"}`; `400
/// {"error": …, "failed_records": [{"index", "insert_id", "field",
/// "message"}]}` (those events are refused for good); `401` bad
/// credentials; `413` too large; `429` rate limited (retried).
fn read_answer(status: u16, body: &str) -> Option<Verdict> {
    let json: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let mut message = props::error_message(body, &["error", "message"]);
    if let Some(Value::Array(failed)) = json.get("failed_records") {
        let details: Vec<String> = failed
            .iter()
            .map(|f| {
                format!(
                    "{}: {}",
                    f["field"].as_str().unwrap_or("?"),
                    f["message"].as_str().unwrap_or("?")
                )
            })
            .collect();
        if !details.is_empty() {
            message = format!("{message} ({})", details.join("; "));
        }
    }
    match status {
        429 => Some(Verdict::Retry {
            why: format!("HTTP 429: Mixpanel: {message}"),
            after: None,
        }),
        400..=499 if status != 408 => Some(Verdict::Reject(format!(
            "HTTP {status}: Mixpanel: {message}"
        ))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_ids_mixpanel_takes() {
        assert_eq!(insert_id("evt-123"), "evt-123");
        let uuid = "0193a8f2-7b7e-7c3e-9d51-2f0a1b2c3d4e";
        assert_eq!(insert_id(uuid), uuid);
        let long = insert_id("evt_with_underscores_0001");
        assert_eq!(long.len(), 36);
        assert_eq!(long, insert_id("evt_with_underscores_0001"));
    }

    #[test]
    fn answers() {
        assert_eq!(
            read_answer(
                200,
                r#"{"code":200,"num_records_imported":1,"status":"OK"}"#
            ),
            None
        );
        let v = read_answer(
            400,
            r#"{"code":400,"error":"some data points in the request failed validation","failed_records":[{"index":0,"insert_id":"x","field":"properties.time","message":"'properties.time' is invalid"}],"num_records_imported":0,"status":"Bad Request"}"#,
        );
        assert!(
            matches!(&v, Some(Verdict::Reject(m)) if m.contains("failed validation") && m.contains("'properties.time' is invalid")),
            "{v:?}"
        );
        assert!(matches!(
            read_answer(
                429,
                r#"{"code":429,"error":"Project exceeded rate limits"}"#
            ),
            Some(Verdict::Retry { .. })
        ));
    }

    use crate::rules::template::Variables;
    use crate::tools::test_support::{body_of, context, request_of, Visit};

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

    fn mixpanel(settings: &str) -> Mixpanel {
        let text = format!("type = \"mixpanel\"\n[settings]\ntoken = \"tok\"\n{settings}\n");
        let file: ToolFile = toml::from_str(&text).unwrap();
        Mixpanel::from_config(Path::new("mixpanel.toml"), &text, &file).unwrap()
    }

    /// The one `/import` member an output sends: (event, properties).
    fn sent(out: &Output) -> (String, Map<String, Value>) {
        let body = body_of(out);
        let members = body.as_array().unwrap();
        assert_eq!(members.len(), 1, "{body}");
        (
            members[0]["event"].as_str().unwrap().to_string(),
            members[0]["properties"].as_object().unwrap().clone(),
        )
    }

    fn run(m: &Mixpanel, v: &Visit<'_>) -> (String, Map<String, Value>) {
        sent(&m.automated(&v.event(), &context("mp", &Variables::new())))
    }

    /// A pageview is mixpanel-js's `$mp_web_page_view` with its page
    /// properties; a title and a search only when the page has them.
    #[test]
    fn pageviews_are_mixpanel_js_page_views() {
        let m = mixpanel("");
        let page = ("https://shop.test/shoes?size=9", "Shoes", "");
        let v = Visit {
            kind: Kind::Pageview,
            page,
            ..Visit::default()
        };
        let (name, p) = run(&m, &v);
        assert_eq!(name, "$mp_web_page_view");
        for (k, want) in [
            ("current_page_title", "Shoes"),
            ("current_domain", "shop.test"),
            ("current_url_path", "/shoes"),
            ("current_url_protocol", "https:"),
            ("current_url_search", "?size=9"),
        ] {
            assert_eq!(p[k], want, "{k}: {p:?}");
        }
        let bare = Visit {
            kind: Kind::Pageview,
            page: ("https://shop.test/", "", ""),
            ..Visit::default()
        };
        let (_, p) = run(&m, &bare);
        assert!(
            !p.contains_key("current_page_title") && !p.contains_key("current_url_search"),
            "{p:?}"
        );
    }

    /// `$referrer` / `$referring_domain` only with a referrer; `$browser`,
    /// `$browser_version`, `$os` only when woothee knows them; screen size
    /// from the device's resolution.
    #[test]
    fn page_and_device_properties_only_when_known() {
        let m = mixpanel("");
        let v = Visit {
            page: ("https://shop.test/", "", "https://search.test/q"),
            user_agent: CHROME,
            resolution: "1920x1080",
            ..Visit::default()
        };
        let (name, p) = run(&m, &v);
        assert_eq!(name, "signup");
        for (k, want) in [
            ("$referrer", json!("https://search.test/q")),
            ("$referring_domain", json!("search.test")),
            ("$browser", json!("Chrome")),
            ("$browser_version", json!("120.0.0.0")),
            ("$os", json!("Windows 10")),
            ("$screen_width", json!(1920)),
            ("$screen_height", json!(1080)),
            ("$current_url", json!("https://shop.test/")),
            ("token", json!("tok")),
            ("mp_lib", json!("tagproxy")),
            ("time", json!(1_748_935_400_000_u64)),
        ] {
            assert_eq!(p.get(k), Some(&want), "{k}: {p:?}");
        }
        let (_, p) = run(&m, &Visit::default());
        for k in [
            "$referrer",
            "$referring_domain",
            "$browser",
            "$browser_version",
            "$os",
            "$screen_width",
        ] {
            assert!(!p.contains_key(k), "{k}: {p:?}");
        }
    }

    /// mixpanel-js's cookie gives `$device_id` (else its `distinct_id`,
    /// else our client id); a `user_id` property is `$user_id` and the
    /// `distinct_id`, and is not sent again as a property.
    #[test]
    fn ids_from_mixpanel_js_and_the_user_id() {
        let m = mixpanel("");
        let cookie = "mp_tok_mixpanel=%7B%22distinct_id%22%3A%22d-1%22%2C%22%24device_id%22%3A%22dev-1%22%7D";
        let v = Visit {
            cookies: cookie,
            props: json!({"user_id": "u-7"}),
            ..Visit::default()
        };
        let (_, p) = run(&m, &v);
        assert_eq!(
            (p["$device_id"].as_str(), p["distinct_id"].as_str()),
            (Some("dev-1"), Some("u-7"))
        );
        assert_eq!(p["$user_id"], "u-7");
        assert!(!p.contains_key("user_id"), "{p:?}");
        let only_distinct = "mp_tok_mixpanel=%7B%22distinct_id%22%3A%22d-1%22%7D";
        let (_, p) = run(
            &m,
            &Visit {
                cookies: only_distinct,
                ..Visit::default()
            },
        );
        assert_eq!(
            (p["$device_id"].as_str(), p["distinct_id"].as_str()),
            (Some("d-1"), Some("d-1"))
        );
        assert!(!p.contains_key("$user_id"), "{p:?}");
        let e = Visit::default().event();
        let (_, p) = sent(&m.automated(&e, &context("mp", &Variables::new())));
        assert_eq!(p["$device_id"], json!(e.identity.client_id));
    }

    /// Basic auth: the project secret when set, else the token; the EU
    /// endpoint with `eu = true`; one event a member, at most 1 MiB.
    #[test]
    fn credentials_endpoint_and_batch_limits() {
        let auth = |m: &Mixpanel| {
            let out = m.automated(&Visit::default().event(), &context("mp", &Variables::new()));
            let h = request_of(&out);
            let a = h
                .headers
                .iter()
                .find(|(k, _)| k == "authorization")
                .unwrap()
                .1
                .clone();
            (h.url.clone(), a)
        };
        // base64("tok:") and base64("sec:").
        assert_eq!(
            auth(&mixpanel("")),
            (
                "https://api.mixpanel.com/import?strict=1".into(),
                "Basic dG9rOg==".into()
            )
        );
        assert_eq!(
            auth(&mixpanel("api_secret = \"sec\"\neu = true")),
            (
                "https://api-eu.mixpanel.com/import?strict=1".into(),
                "Basic c2VjOg==".into()
            )
        );
        assert_eq!(BATCHING.max_member_bytes, 1_048_576);
        assert_eq!(BATCHING.limits.max_bytes, 10_485_760);
    }

    /// A custom `event` action: named by its `event` field (`event` when
    /// missing, empty or not a string), the other fields its properties.
    #[test]
    fn custom_event_action() {
        let m = mixpanel("");
        let e = Visit::default().event();
        let variables = Variables::new();
        let cx = context("mp", &variables);
        let named =
            |fields: Value| sent(&m.custom("event", fields.as_object().unwrap().clone(), &e, &cx));
        let (name, p) = named(json!({"event": "Signed Up", "plan": "pro"}));
        assert_eq!((name.as_str(), &p["plan"]), ("Signed Up", &json!("pro")));
        assert!(!p.contains_key("event"), "{p:?}");
        assert_eq!(named(json!({"event": ""})).0, "event");
        assert_eq!(named(json!({"event": 5})).0, "event");
        assert_eq!(named(json!({})).0, "event");
    }

    /// The answer reader is the one above; a 408 is a timeout to retry
    /// with the rest of the 5xx answers, not a refusal.
    #[test]
    fn request_timeouts_are_not_refusals() {
        let reader = mixpanel("").answer_reader().expect("a reader");
        assert!(
            matches!(reader(401, "{\"error\":\"bad auth\"}"), Some(Verdict::Reject(m)) if m.contains("bad auth"))
        );
        assert_eq!(read_answer(408, "{\"error\":\"timeout\"}"), None);
        assert!(matches!(read_answer(413, ""), Some(Verdict::Reject(_))));
    }
}
