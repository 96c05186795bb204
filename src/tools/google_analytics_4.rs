//! `google-analytics-4`: hits to `GET {endpoint}/g/collect`, the endpoint
//! gtag.js itself uses (protocol v2), so sessions, pages and ecommerce show
//! in GA4 like browser-side collection, without an API secret.
//!
//! Parameters: `v=2`, `tid`, `cid`, `sid`/`sct`/`seg`/`_s`/`_ss`/`_fv`, `en`,
//! `dl`/`dt`/`dr`, `ul`, `sr`, `_uip`, `ep.*` (strings) and `epn.*`
//! (numbers), and for ecommerce `cu` plus one `prN` string per product
//! (`id…~nm…~pr…~qt…`). The visitor's User-Agent is the request's.
//!
//! Every hit keeps GA4's rules, for automated and custom actions alike:
//!
//! - "Event naming rules" (<https://support.google.com/analytics/answer/13316687>):
//!   names are letters, digits and `_`, starting with a letter; a reserved
//!   event name, or an event or parameter name with a reserved prefix (`_`,
//!   `ga_`, `google_`, `firebase_`, `gtag.`), is renamed with the prefix
//!   `custom_` (`session_start` → `custom_session_start`, `ga_campaign` →
//!   `custom_ga_campaign`), so the data arrives under a name GA4 accepts.
//! - "Event collection limits" (<https://support.google.com/analytics/answer/9267744>):
//!   names 40 characters, values 100 (`dl` 1000, `dt` 300, `dr` 420), 25
//!   event parameters per event (the rest dropped), 200 items per event.
//! - No personal data (<https://support.google.com/analytics/answer/6366371>):
//!   properties carrying e-mail addresses, phone numbers, names or street
//!   addresses are dropped, and e-mail addresses in `dl`/`dr`/`dt` redacted.
//!
//! Each rename or drop is counted in `tagproxy_payload_adjusted_total{tool,
//! reason}` and logged at debug level.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{ecommerce, pii};
use super::{
    endpoint, parse_settings, Adapter, Automated, BuildContext, HttpRequest, Output, Payload,
    TemplateString, ToolFile,
};
use crate::config::Problem;
use crate::delivery::{Batching, Limits};
use crate::event::{identity, number, Event, Kind};
use crate::rules::template::{Root, Template};

const DEFAULT_ENDPOINT: &str = "https://www.google-analytics.com";
/// GA4's limits on event and parameter names, and on parameter values.
const MAX_NAME: usize = 40;
const MAX_VALUE: usize = 100;
const MAX_PRODUCTS: usize = 200;
/// Event parameters per event (web).
const MAX_PARAMS: usize = 25;
/// What a reserved name is renamed with.
const RENAME_PREFIX: &str = "custom_";

/// GA4's reserved event names: the web list of "Event naming rules" and
/// the automatically collected app events it also reserves. `page_view` is
/// not here: gtag documents sending it yourself ("Measure pageviews",
/// <https://developers.google.com/analytics/devguides/collection/ga4/views>).
const RESERVED_EVENTS: &[&str] = &[
    "ad_activeview",
    "ad_click",
    "ad_exposure",
    "ad_impression",
    "ad_query",
    "ad_reward",
    "adunit_exposure",
    "app_background",
    "app_clear_data",
    "app_exception",
    "app_remove",
    "app_store_refund",
    "app_store_subscription_cancel",
    "app_store_subscription_convert",
    "app_store_subscription_renew",
    "app_update",
    "app_upgrade",
    "click",
    "dynamic_link_app_open",
    "dynamic_link_app_update",
    "dynamic_link_first_open",
    "error",
    "file_download",
    "first_open",
    "first_visit",
    "form_start",
    "form_submit",
    "in_app_purchase",
    "notification_dismiss",
    "notification_foreground",
    "notification_open",
    "notification_receive",
    "os_update",
    "screen_view",
    "scroll",
    "session_start",
    "session_start_with_rollout",
    "user_engagement",
    "video_complete",
    "video_progress",
    "video_start",
    "view_complete",
    "view_search_results",
];

/// Prefixes no event or parameter name may start with (checked on the name
/// as the page wrote it, lower-cased, and on the cleaned name).
const RESERVED_PREFIXES: &[&str] = &["_", "ga_", "google_", "firebase_", "gtag."];

/// Parameters GA4 reads as numbers, sent as `epn.` whatever type the page
/// used ("12.5" → `epn.value=12.5`): the monetary and count parameters of
/// its event reference
/// (<https://developers.google.com/analytics/devguides/collection/ga4/reference/events>).
const NUMERIC: &[&str] = &["value", "tax", "shipping", "price", "quantity", "discount"];

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Ga4Settings")]
struct Settings {
    measurement_id: Option<TemplateString>,
    #[serde(default)]
    hide_ip: bool,
    /// GA4 event names marked as key events in the property; one makes the
    /// session engaged (`seg=1`). Default `["purchase"]`.
    key_events: Option<Vec<String>>,
}

/// The JSON Schema of this adapter's `[settings]` table (`tagproxy schema`).
pub fn settings_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<Settings>()
}

pub struct Ga4 {
    base: String,
    measurement_id: Template,
    hide_ip: bool,
    key_events: Vec<String>,
}

impl Ga4 {
    pub fn from_config(path: &Path, text: &str, file: &ToolFile) -> Result<Ga4, Problem> {
        let s: Settings = parse_settings(path, text)?;
        let Some(measurement_id) = s.measurement_id else {
            return Err(file.missing_setting(path, text, "measurement_id"));
        };
        if let Some(id) = measurement_id.0.as_literal() {
            if !id.starts_with("G-") || id.len() < 4 {
                let at = file.settings_key_at(text, "measurement_id");
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
            key_events: s.key_events.unwrap_or_else(|| vec!["purchase".into()]),
        })
    }

    /// The GA4 event name an automated action gives `event`.
    fn automated_name(&self, event: &Event, adj: &Adjust) -> String {
        match event.kind {
            Kind::Pageview => "page_view".into(),
            Kind::Track => adj.event_name(&event.name),
            Kind::Ecommerce => adj.event_name(&ecommerce::ga4_name(&event.name)),
        }
    }
}

impl Adapter for Ga4 {
    fn supports(&self) -> Automated {
        Automated::ALL
    }

    fn automated(&self, event: &Event, cx: &BuildContext<'_>) -> Output {
        let adj = Adjust::new(cx.tool_id);
        let en = self.automated_name(event, &adj);
        let mut params = Params::new(&adj);
        match event.kind {
            Kind::Pageview => {}
            Kind::Track => {
                // `currency` is GA4's `cu` on any event.
                if let Some(cu) = event.properties().get("currency") {
                    params.currency(cu);
                }
                // Nested properties as `parent_child` parameters.
                let mut flat = Vec::new();
                flatten("", event.properties(), &mut flat);
                params.custom_all(&flat, &["currency"]);
            }
            Kind::Ecommerce => push_ecommerce(&mut params, event),
        }
        self.hit(&en, params, event, cx, &adj)
    }

    fn action_kinds(&self) -> &'static [(&'static str, &'static [&'static str])] {
        &[("event", &["event_name"])]
    }

    /// `event`: a hit named `event_name`; every other field is a parameter
    /// (nested objects flattened with `_`), under the same rules as
    /// automated hits.
    fn custom(
        &self,
        _kind: &str,
        fields: Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        let adj = Adjust::new(cx.tool_id);
        let name = fields
            .get("event_name")
            .and_then(Value::as_str)
            .unwrap_or("event");
        let en = adj.event_name(name);
        let mut params = Params::new(&adj);
        if let Some(cu) = fields.get("currency") {
            params.currency(cu);
        }
        // `include_system_properties` adds the event's whole `system` object:
        // GA4 already gets what it uses of it in its own parameters (`dl`,
        // `dt`, `dr`, `ul`, `sr`, `_uip` unless `hide_ip`), and the rest
        // (every cookie of the site, the IP, location headers) must not
        // become event parameters. Meta's adapter drops it the same way.
        let mut fields = fields;
        if fields.get("system") == Some(&event.system) {
            fields.remove("system");
        }
        let mut flat = Vec::new();
        flatten("", &fields, &mut flat);
        params.custom_all(&flat, &["event_name", "currency"]);
        self.hit(&en, params, event, cx, &adj)
    }

    fn key_event(&self, event: &Event) -> bool {
        let adj = Adjust::quiet();
        let en = self.automated_name(event, &adj);
        self.key_events.contains(&en)
    }

    fn templates(&self) -> Vec<&Template> {
        vec![&self.measurement_id]
    }

    fn check_warnings(&self, path: &Path, text: &str, file: &ToolFile) -> Vec<String> {
        let mut out = Vec::new();
        for action in &file.actions {
            let a = action.get_ref();
            for (field, value) in &a.fields {
                if field == "event_name" {
                    continue;
                }
                let mut kinds = Vec::new();
                if let Some(k) = pii::key_kind(field) {
                    kinds.push((field.clone(), k));
                }
                for t in value.get_ref().templates() {
                    for p in t.paths() {
                        let root = match p.root {
                            Root::Variable(_) => continue,
                            Root::Client => "client",
                            Root::System => "system",
                        };
                        if let Some(k) = p.segments.last().and_then(|s| pii::key_kind(s)) {
                            kinds.push((format!("{root}.{}", p.segments.join(".")), k));
                        }
                    }
                }
                if let Some(literal) = value
                    .get_ref()
                    .templates()
                    .first()
                    .and_then(|t| t.as_literal())
                {
                    if pii::has_email(literal) {
                        kinds.push((field.clone(), pii::Kind::Email));
                    }
                }
                for (what, kind) in kinds {
                    let message = format!(
                        "action `{}` field `{field}` maps `{what}` ({}: personal data) into GA4; Google's terms forbid it, so it is dropped before sending",
                        a.name,
                        kind.as_str()
                    );
                    out.push(Problem::at(path, text, value.span().start, message).to_string());
                }
            }
        }
        out
    }

    fn origins(&self) -> Vec<url::Origin> {
        super::origin_list(&self.base)
    }

    fn batching(&self) -> Option<std::sync::Arc<dyn Batching>> {
        Some(std::sync::Arc::new(Ga4Batching))
    }
}

/// Several hits of one client in one `POST /g/collect`, the way gtag.js
/// batches ("most events are grouped together (or batched)",
/// <https://support.google.com/analytics/answer/9322688>): the parameters the
/// hits share stay in the URL, and the body holds one line per event with
/// that event's own parameters, URL-encoded as in a query string, lines
/// separated by `\n` (what gtag sends; see Amplitude's GA forwarder,
/// <https://github.com/amplitude/Amplitude-TypeScript/pull/903>). A line's
/// parameters complete the URL's for its event.
///
/// Event-level parameters ([`event_level`]): `en`, `ep.*`, `epn.*`, `cu`,
/// `prN`, `_ss`, `_fv`, `_et`, `_c`, `_ee`, and `_s`, the hit's number in
/// its session, so every event keeps its own place in the session's order.
/// Everything else (`v`, `tid`, `cid`, `sid`, `sct`, `seg`, `ul`, `sr`,
/// `dl`, `dt`, `dr`, `_uip`, `gcs`/`gcd`) and the User-Agent must be equal
/// for hits to share a batch.
pub struct Ga4Batching;

/// Hits per batch: the Measurement Protocol's documented cap, "Requests can
/// have a maximum of 25 events"
/// (<https://developers.google.com/analytics/devguides/collection/protocol/ga4/sending-events#limitations>);
/// `/g/collect` documents none.
pub const MAX_HITS_PER_BATCH: usize = 25;
/// Body bytes per batch: gtag sends batches with `navigator.sendBeacon`,
/// whose queue takes 64 KiB.
pub const MAX_BATCH_BYTES: usize = 64 * 1024;

/// Whether a `/g/collect` parameter belongs to one event (a body line) rather
/// than to the request.
pub fn event_level(name: &str) -> bool {
    matches!(
        name,
        "en" | "cu" | "_s" | "_ss" | "_fv" | "_et" | "_c" | "_ee"
    ) || name.starts_with("ep.")
        || name.starts_with("epn.")
        || name
            .strip_prefix("pr")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A hit's path and its query, split into shared and event-level
/// parameters; `None` for anything but a `GET …/g/collect` hit.
#[allow(clippy::type_complexity)]
fn split_hit(req: &HttpRequest) -> Option<(&str, Vec<&str>, Vec<&str>)> {
    if req.method != "GET" || req.body.is_some() {
        return None;
    }
    let (path, query) = req.url.split_once('?')?;
    if !path.ends_with("/g/collect") {
        return None;
    }
    // The `name=value` pairs as sent (already encoded): only a name with an
    // escape is decoded to be classified. Decoding every pair and encoding
    // it again to join was ~8 % of the collector's CPU under load.
    let (events, shared) = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .partition(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(name, _)| name);
            if name.contains(['%', '+']) {
                url::form_urlencoded::parse(name.as_bytes())
                    .next()
                    .is_some_and(|(name, _)| event_level(&name))
            } else {
                event_level(name)
            }
        });
    Some((path, shared, events))
}

impl Batching for Ga4Batching {
    fn limits(&self) -> Limits {
        Limits {
            max_events: MAX_HITS_PER_BATCH,
            max_bytes: MAX_BATCH_BYTES,
        }
    }

    /// Path, headers (the visitor's User-Agent) and every shared parameter.
    fn key(&self, req: &HttpRequest) -> Option<String> {
        let (path, shared, _) = split_hit(req)?;
        serde_json::to_string(&(path, &req.headers, shared)).ok()
    }

    fn join(&self, reqs: &[&HttpRequest]) -> Option<HttpRequest> {
        let (path, shared, _) = split_hit(reqs.first()?)?;
        let mut lines = Vec::with_capacity(reqs.len());
        for r in reqs {
            let (_, _, events) = split_hit(r)?;
            lines.push(events.join("&"));
        }
        let mut headers = reqs[0].headers.clone();
        headers.push(("content-type".into(), "text/plain;charset=UTF-8".into()));
        Some(HttpRequest {
            method: "POST".into(),
            url: format!("{path}?{}", shared.join("&")),
            headers,
            body: Some(lines.join("\n").into_bytes()),
        })
    }
}

/// Nested objects as `parent_child` keys (GA4 parameters are flat), in the
/// page's order.
fn flatten(prefix: &str, map: &Map<String, Value>, out: &mut Vec<(String, Value)>) {
    for (k, v) in map {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}_{k}")
        };
        match v {
            Value::Object(inner) => flatten(&key, inner, out),
            other => out.push((key, other.clone())),
        }
    }
}

/// Counts and logs what GA4's rules changed, for one tool.
struct Adjust<'a> {
    tool: &'a str,
    quiet: bool,
}

impl<'a> Adjust<'a> {
    fn new(tool: &'a str) -> Self {
        Adjust { tool, quiet: false }
    }

    /// For looking a name up without counting anything.
    fn quiet() -> Adjust<'static> {
        Adjust {
            tool: "",
            quiet: true,
        }
    }

    fn note(&self, reason: &'static str, what: &str) {
        if self.quiet {
            return;
        }
        crate::metrics::payload_adjusted(self.tool, reason);
        tracing::debug!(
            tool = self.tool,
            reason,
            what,
            "GA4: value renamed or dropped"
        );
    }

    /// A GA4-valid event name for `raw`.
    fn event_name(&self, raw: &str) -> String {
        self.name(raw, true)
    }

    /// A GA4-valid parameter name for `raw`.
    fn param_name(&self, raw: &str) -> String {
        self.name(raw, false)
    }

    /// `raw` cleaned (snake_case, letters, digits and `_`, starting with a
    /// letter), renamed when reserved, cut to 40 characters.
    fn name(&self, raw: &str, event: bool) -> String {
        let mut out = clean_name(raw);
        let lower = raw.trim().to_ascii_lowercase();
        if out != lower && !lower.is_empty() {
            self.note("invalid_name", raw);
        }
        let reserved_prefix = RESERVED_PREFIXES
            .iter()
            .any(|p| lower.starts_with(p) || out.starts_with(p));
        if reserved_prefix || (event && RESERVED_EVENTS.contains(&out.as_str())) {
            self.note("reserved_name", raw);
            out.insert_str(0, RENAME_PREFIX);
        }
        if out.chars().count() > MAX_NAME {
            self.note("name_too_long", raw);
            out.truncate(MAX_NAME);
        }
        out
    }
}

/// Letters, digits and `_`, starting with a letter (`Sign Up!` →
/// `sign_up`, `1st` → `e_1st`).
fn clean_name(name: &str) -> String {
    let mut out = ecommerce::snake_case(name);
    out.retain(|c| c.is_ascii_alphanumeric() || c == '_');
    if !out.starts_with(|c: char| c.is_ascii_alphabetic()) {
        out.insert_str(0, "e_");
    }
    out
}

/// The event parameters of one hit, in priority order: what the
/// destination's own mapping sets first, the page's custom properties
/// next, our event id last (the first to go past the 25 limit).
struct Params<'a> {
    adj: &'a Adjust<'a>,
    cu: Option<String>,
    list: Vec<(String, String)>,
    /// `prN` strings, in order.
    items: Vec<String>,
}

impl<'a> Params<'a> {
    fn new(adj: &'a Adjust<'a>) -> Self {
        Params {
            adj,
            cu: None,
            list: Vec::new(),
            items: Vec::new(),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.list
            .iter()
            .any(|(k, _)| k.split_once('.').is_some_and(|(_, n)| n == name))
    }

    /// `cu`: an ISO 4217 code ("Currency of the items associated with the
    /// event, in 3-letter ISO 4217 format").
    fn currency(&mut self, v: &Value) {
        let Some(s) = v.as_str().map(str::trim) else {
            return;
        };
        if s.len() == 3 && s.bytes().all(|b| b.is_ascii_alphabetic()) {
            self.cu = Some(s.to_ascii_uppercase());
        } else if !s.is_empty() {
            self.adj.note("invalid_currency", s);
        }
    }

    /// A parameter whose GA4 name is fixed (the ecommerce mapping): value
    /// rules and personal data apply, naming rules do not.
    fn standard(&mut self, name: &str, v: &Value) {
        self.push(name.to_string(), name, v);
    }

    /// Every custom property of `flat`, except `skip` and the internal
    /// `__zaraz*` keys.
    fn custom_all(&mut self, flat: &[(String, Value)], skip: &[&str]) {
        for (k, v) in flat {
            if k.starts_with("__") || skip.contains(&k.as_str()) {
                continue;
            }
            self.custom(k, v);
        }
    }

    /// A property of the page's, under GA4's naming rules.
    fn custom(&mut self, raw: &str, v: &Value) {
        if v.is_null() {
            return;
        }
        // Personal data by key first: a renamed key must not hide it.
        if !v.is_boolean() {
            if let Some(kind) = pii::key_kind(raw) {
                self.adj.note("personal_data", raw);
                tracing::debug!(
                    key = raw,
                    kind = kind.as_str(),
                    "GA4: personal data dropped"
                );
                return;
            }
        }
        let name = self.adj.param_name(raw);
        if self.has(&name) {
            self.adj.note("duplicate_name", raw);
            return;
        }
        self.push(name, raw, v);
    }

    fn push(&mut self, name: String, raw: &str, v: &Value) {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => return,
            _ => {
                self.adj.note("unsupported_type", raw);
                return;
            }
        };
        if !v.is_boolean() && pii::kind(raw, &text).is_some() {
            self.adj.note("personal_data", raw);
            return;
        }
        if NUMERIC.contains(&name.as_str()) {
            match number(v) {
                Some(n) => self.list.push((format!("epn.{name}"), format_number(n))),
                None => self.adj.note("not_a_number", raw),
            }
            return;
        }
        match v {
            Value::Number(_) => self.list.push((format!("epn.{name}"), text)),
            _ => {
                if text.chars().count() > MAX_VALUE {
                    self.adj.note("value_too_long", raw);
                }
                self.list
                    .push((format!("ep.{name}"), truncate(&text, MAX_VALUE).to_string()));
            }
        }
    }

    /// Writes `cu` and at most 25 parameters; `value` only with a currency
    /// ("currency: Required if value is set",
    /// <https://developers.google.com/analytics/devguides/collection/ga4/ecommerce>).
    fn finish(mut self, q: &mut Query, event_id: &str) {
        if self.cu.is_none() {
            if let Some(i) = self.list.iter().position(|(k, _)| k == "epn.value") {
                self.adj.note("value_without_currency", "value");
                self.list.remove(i);
            }
        }
        if let Some(cu) = &self.cu {
            q.push("cu", cu);
        }
        for (i, item) in self.items.iter().enumerate() {
            q.push(&format!("pr{}", i + 1), item);
        }
        self.list.push(("ep.event_id".into(), event_id.to_string()));
        for (i, (k, v)) in self.list.iter().enumerate() {
            if i >= MAX_PARAMS {
                self.adj.note("parameter_limit", k);
                continue;
            }
            q.push(k, v);
        }
    }
}

impl Ga4 {
    /// The whole hit: what every hit carries, `en`, then the parameters.
    fn hit(
        &self,
        en: &str,
        params: Params<'_>,
        event: &Event,
        cx: &BuildContext<'_>,
        adj: &Adjust<'_>,
    ) -> Output {
        let mut q = Query::default();
        q.push("v", "2");
        q.push("tid", &cx.render(&self.measurement_id, event));
        let id = &event.identity;
        q.push("cid", &client_id(event));
        q.push("sid", &id.session_id.to_string());
        q.push("sct", &id.session_count.to_string());
        // "Engaged session": longer than 10 s, 2 page views, or a key event
        // (<https://support.google.com/analytics/answer/12798876>).
        if id.engaged || self.key_events.iter().any(|k| k == en) {
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
        // GA4's length limits for page location, title and referrer; no
        // e-mail addresses in them.
        let url = |raw: &str, what: &str| match pii::redact_url(raw) {
            Some(clean) => {
                adj.note("personal_data", what);
                clean
            }
            None => raw.to_string(),
        };
        q.push_nonempty("dl", truncate(&url(event.page_url(), "dl"), 1000));
        let title = event.sys_str(&["page", "title"]);
        let title = if pii::has_email(title) {
            adj.note("personal_data", "dt");
            pii::redact_emails(title).into_owned()
        } else {
            title.to_string()
        };
        q.push_nonempty("dt", truncate(&title, 300));
        q.push_nonempty(
            "dr",
            truncate(&url(event.sys_str(&["page", "referrer"]), "dr"), 420),
        );
        if !self.hide_ip {
            if let Some(ip) = event.ip {
                q.push("_uip", &ip.to_string());
            }
        }
        if let Some(mode) = &event.consent_mode {
            q.push("gcs", &mode.gcs());
            q.push("gcd", &mode.gcd());
        }
        q.push("en", en);
        params.finish(&mut q, &event.id);
        self.request(q, event)
    }

    fn request(&self, q: Query, event: &Event) -> Output {
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
            ..Default::default()
        }
    }
}

/// The site's own GA client id (`_ga`) when gtag had set it before the
/// session began, else ours: the id never changes inside a session, even
/// when gtag creates `_ga` halfway through it.
fn client_id(event: &Event) -> String {
    if event.identity.ga_client {
        if let Some(cid) = event.cookie("_ga").and_then(identity::ga_client_id) {
            return cid;
        }
    }
    event.identity.client_id.clone()
}

/// Zaraz ecommerce properties → GA4 ecommerce parameters, as Zaraz's own
/// GA4 Managed Component maps them
/// (github.com/managed-components/google-analytics-4, `src/ecommerce.ts`),
/// except where GA4's documentation says otherwise
/// (<https://developers.google.com/analytics/devguides/collection/ga4/ecommerce>,
/// <https://developers.google.com/analytics/devguides/collection/ga4/reference/events>):
///
/// - `transaction_id`: `transaction_id`, else `order_id`, else `checkout_id`.
/// - `value`: `total`, else `value`, else `price` × `quantity` (GA4's
///   examples: value = price × quantity), else `revenue`; sent with `cu`.
/// - `tax`, `shipping` (numbers), `coupon`, `affiliation`, `payment_type`;
///   `shipping_method` as GA4's `shipping_tier`; `query` as `search_term`;
///   `list_id` as `item_list_id`; `category` as `item_list_name` only when
///   the event carries a product list (a single product's category is its
///   item's `ca`).
/// - promotions (Clicked / Viewed Promotion): `promotion_id`, `name` as
///   `promotion_name`, `creative` as `creative_name`, `position` as
///   `creative_slot`.
/// - items `pr1..pr200` from `products`, or from the event's own properties
///   for single-product events.
/// - every other property as a custom parameter (as Zaraz does), under the
///   naming, limit and personal-data rules.
fn push_ecommerce(params: &mut Params<'_>, event: &Event) {
    let props = event.properties();
    let get = |k: &str| props.get(k).filter(|v| !is_empty(v));
    let promotion = matches!(
        event.name.as_str(),
        "Clicked Promotion" | "Viewed Promotion"
    );
    let list = matches!(props.get("products"), Some(Value::Array(_)));
    let mut used: Vec<&str> = vec!["products", "currency"];

    if let Some(cu) = get("currency") {
        params.currency(cu);
    }
    for k in ["transaction_id", "order_id", "checkout_id"] {
        used.push(k);
    }
    if let Some(id) = ["transaction_id", "order_id", "checkout_id"]
        .iter()
        .find_map(|k| get(k))
    {
        params.standard("transaction_id", &Value::String(scalar_string(id)));
    }
    // A single product's fields describe its item, not the event.
    let single = !list && !promotion && (get("product_id").is_some() || get("sku").is_some());
    let value = get("total")
        .or_else(|| get("value"))
        .cloned()
        .or_else(|| {
            let price = get("price").and_then(number)?;
            let qty = get("quantity").and_then(number).unwrap_or(1.0);
            Some(Value::from(round_money(price * qty)))
        })
        .or_else(|| get("revenue").cloned());
    used.extend(["total", "value"]);
    if !single {
        used.push("price");
    }
    if let Some(v) = value {
        params.standard("value", &v);
    }
    let mut mapped: Vec<(&str, &str)> = vec![
        ("tax", "tax"),
        ("shipping", "shipping"),
        ("coupon", "coupon"),
        ("affiliation", "affiliation"),
        ("payment_type", "payment_type"),
        ("shipping_method", "shipping_tier"),
        ("query", "search_term"),
        ("list_id", "item_list_id"),
    ];
    if list {
        mapped.push(("category", "item_list_name"));
    }
    if promotion {
        mapped.extend([
            ("promotion_id", "promotion_id"),
            ("name", "promotion_name"),
            ("creative", "creative_name"),
            ("position", "creative_slot"),
        ]);
    }
    for (zaraz, ga) in &mapped {
        used.push(zaraz);
        if single && ["coupon", "affiliation"].contains(zaraz) {
            continue; // the item's
        }
        if let Some(v) = get(zaraz) {
            params.standard(ga, v);
        }
    }
    let products: Vec<&Map<String, Value>> = match props.get("products") {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_object).collect(),
        _ if single => {
            used.extend(ITEM_FIELDS.iter().map(|(z, _)| *z));
            vec![props]
        }
        _ => Vec::new(),
    };
    for p in &products {
        let Some(item) = product_string(p, params.adj) else {
            params.adj.note("item_without_id", "products");
            continue;
        };
        if params.items.len() == MAX_PRODUCTS {
            params.adj.note("item_limit", "products");
            continue;
        }
        params.items.push(item);
    }
    let rest: Vec<(String, Value)> = props
        .iter()
        .filter(|(k, _)| !used.contains(&k.as_str()))
        .flat_map(|(k, v)| {
            let mut flat = Vec::new();
            match v {
                Value::Object(inner) => flatten(k, inner, &mut flat),
                other => flat.push((k.clone(), other.clone())),
            }
            flat
        })
        .collect();
    params.custom_all(&rest, &[]);
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn round_money(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// Zaraz product fields and GA4's item keys in a `prN` string (gtag's
/// short names for `item_id`, `item_name`, `item_brand`, `item_category`,
/// `item_variant`, `price`, `quantity`, `coupon`, `index`, `affiliation`,
/// `discount`). `sku` is the item id before `product_id`, as in Zaraz's
/// Managed Component (GA4's own examples use SKUs as `item_id`).
const ITEM_FIELDS: &[(&str, &str)] = &[
    ("sku", "id"),
    ("product_id", "id"),
    ("name", "nm"),
    ("brand", "br"),
    ("category", "ca"),
    ("variant", "va"),
    ("price", "pr"),
    ("quantity", "qt"),
    ("coupon", "cp"),
    ("position", "lp"),
    ("affiliation", "af"),
    ("discount", "ds"),
];

/// One product as GA4's `prN` string: two-letter keys and values joined by
/// `~` (a `~` inside a value doubled, as Zaraz's component does). `None`
/// without an id or a name.
fn product_string(p: &Map<String, Value>, adj: &Adjust<'_>) -> Option<String> {
    let mut parts: Vec<(&str, String)> = Vec::new();
    for (zaraz, key) in ITEM_FIELDS {
        if parts.iter().any(|(k, _)| k == key) {
            continue;
        }
        let Some(v) = p.get(*zaraz).filter(|v| !is_empty(v)) else {
            continue;
        };
        let text = match (key, v) {
            (&"pr" | &"ds", v) => match number(v) {
                Some(n) => format_number(n),
                None => {
                    adj.note("not_a_number", zaraz);
                    continue;
                }
            },
            (&"qt" | &"lp", v) => match number(v).filter(|n| *n >= 0.0 && n.fract() == 0.0) {
                Some(n) => format_number(n),
                None => {
                    adj.note("not_a_number", zaraz);
                    continue;
                }
            },
            (_, Value::String(s)) => s.trim().to_string(),
            (_, Value::Number(n)) => n.to_string(),
            _ => {
                adj.note("unsupported_type", zaraz);
                continue;
            }
        };
        if pii::has_email(&text) || pii::is_phone(&text) {
            adj.note("personal_data", zaraz);
            continue;
        }
        if text.chars().count() > MAX_VALUE {
            adj.note("value_too_long", zaraz);
        }
        parts.push((key, truncate(&text, MAX_VALUE).replace('~', "~~")));
    }
    if !parts.iter().any(|(k, _)| *k == "id" || *k == "nm") {
        return None;
    }
    Some(
        parts
            .iter()
            .map(|(k, v)| format!("{k}{v}"))
            .collect::<Vec<_>>()
            .join("~"),
    )
}

/// A number as gtag writes it: `f64`'s `Display` never uses an exponent
/// and writes whole numbers without `.0` (`10`, `7.5`, `1e20` in full).
fn format_number(v: f64) -> String {
    // `-0` is `0`.
    let v = if v == 0.0 { 0.0 } else { v };
    format!("{v}")
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A URL query in GA's parameter order.
struct Query {
    ser: url::form_urlencoded::Serializer<'static, String>,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            ser: url::form_urlencoded::Serializer::new(String::new()),
        }
    }
}

impl Query {
    fn push(&mut self, k: &str, v: &str) {
        self.ser.append_pair(k, v);
    }
    fn push_nonempty(&mut self, k: &str, v: &str) {
        if !v.is_empty() {
            self.push(k, v);
        }
    }
    fn finish(mut self) -> String {
        self.ser.finish()
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::identity::Tracker;
    use serde_json::json;

    fn ga4(extra_settings: &str) -> Ga4 {
        let text = format!(
            "type = \"google-analytics-4\"\n[settings]\nmeasurement_id = \"G-TEST12345\"\n{extra_settings}\n"
        );
        let file: ToolFile = toml::from_str(&text).unwrap();
        Ga4::from_config(Path::new("ga4.toml"), &text, &file).unwrap()
    }

    fn event(kind: Kind, name: &str, props: Value, cookies: &str, now: u64) -> Event {
        event_at(kind, name, props, cookies, now, "https://shop.test/p")
    }

    fn event_at(kind: Kind, name: &str, props: Value, cookies: &str, now: u64, url: &str) -> Event {
        let req = crate::event::RequestInfo {
            ip: None,
            user_agent: crate::event::ua::UaParser::default().parse("Mozilla/5.0"),
            cookies: crate::event::parse_cookies(cookies),
            location: Map::new(),
        };
        let identity = Tracker::from_cookie_header(cookies, now).next(kind == Kind::Pageview);
        let input = crate::event::EventInput {
            kind: Some(kind),
            name: name.into(),
            properties: props.as_object().unwrap().clone(),
            page: crate::event::PageInfo {
                url: url.into(),
                title: "Shop".into(),
                ..Default::default()
            },
            id: Some("evt_test_0001".into()),
            ..Default::default()
        };
        Event::build(input, &req, identity, now * 1000)
    }

    fn query(out: Output) -> Vec<(String, String)> {
        let Payload::Http(h) = &out.payloads[0] else {
            panic!("not http")
        };
        let u = url::Url::parse(&h.url).unwrap();
        u.query_pairs().into_owned().collect()
    }

    fn run(ga: &Ga4, e: &Event) -> Vec<(String, String)> {
        run_as(ga, e, "ga4_unit")
    }

    /// `e`'s hit as tool `tool` builds it (a case with its own tool id has
    /// its own adjustment counts).
    fn run_as(ga: &Ga4, e: &Event, tool: &str) -> Vec<(String, String)> {
        let variables = crate::rules::template::Variables::new();
        query(ga.automated(e, &crate::tools::test_support::context(tool, &variables)))
    }

    fn get<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
        q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    fn hit(ga: &Ga4, e: &Event) -> HttpRequest {
        let variables = crate::rules::template::Variables::new();
        let cx = BuildContext {
            tool_id: "ga4_unit",
            variables: &variables,
            action: None,
        };
        let Payload::Http(h) = ga.automated(e, &cx).payloads.remove(0) else {
            panic!("not http")
        };
        h
    }

    /// gtag's batch (<https://support.google.com/analytics/answer/9322688>;
    /// the body format as Amplitude's forwarder reads it,
    /// <https://github.com/amplitude/Amplitude-TypeScript/pull/903>): shared
    /// parameters once in the URL, one event per body line, and every hit
    /// read back (URL parameters completed by its line) is the hit that
    /// would have been sent alone.
    #[test]
    fn hits_of_one_client_join_into_one_post_and_read_back_the_same() {
        let ga = ga4("");
        let cookies = "_ga=GA1.1.1187654321.1748934600; _ga_TEST12345=GS2.1.s1748934661$o208$g1$t1748935291$j60$l0$h0";
        let now = 1_748_935_400;
        let a = hit(
            &ga,
            &event(Kind::Track, "signup", json!({"plan": "pro"}), cookies, now),
        );
        let b = hit(
            &ga,
            &event(
                Kind::Ecommerce,
                "Order Completed",
                json!({"currency": "EUR", "value": 12.5, "products": [{"product_id": "p1", "name": "Hat", "price": 12.5, "quantity": 1}]}),
                cookies,
                now,
            ),
        );
        let batching = Ga4Batching;
        assert!(batching.key(&a).is_some());
        assert_eq!(batching.key(&a), batching.key(&b));
        let joined = batching.join(&[&a, &b]).unwrap();
        assert_eq!(joined.method, "POST");
        assert!(joined
            .headers
            .iter()
            .any(|(k, v)| k == "user-agent" && v == "Mozilla/5.0"));
        let body = String::from_utf8(joined.body.clone().unwrap()).unwrap();
        let lines: Vec<&str> = body.split('\n').collect();
        assert_eq!(lines.len(), 2, "{body}");
        let url = url::Url::parse(&joined.url).unwrap();
        assert_eq!(url.path(), "/g/collect");
        let shared: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert!(shared.iter().all(|(k, _)| !event_level(k)), "{shared:?}");
        for (line, alone) in lines.iter().zip([&a, &b]) {
            let mut read: Vec<(String, String)> = shared.clone();
            read.extend(url::form_urlencoded::parse(line.as_bytes()).into_owned());
            let mut want: Vec<(String, String)> = url::Url::parse(&alone.url)
                .unwrap()
                .query_pairs()
                .into_owned()
                .collect();
            read.sort();
            want.sort();
            assert_eq!(read, want);
        }
        // Each hit keeps its own number in the session.
        assert_eq!(get(&shared, "_s"), None);
        let s_of = |line: &str| {
            url::form_urlencoded::parse(line.as_bytes())
                .into_owned()
                .find(|(k, _)| k == "_s")
        };
        assert!(s_of(lines[0]).is_some() && s_of(lines[1]).is_some());

        // Pairs travel as they were encoded; a name is decoded only to be
        // classified (`ep.plan type` is an event parameter).
        let mut c = a.clone();
        c.url = c.url.replacen("?", "?ep.plan%20type=a%2Bb&", 1);
        assert_eq!(batching.key(&c), batching.key(&a));
        let joined = batching.join(&[&c, &a]).unwrap();
        assert!(!joined.url.contains("plan%20type"), "{}", joined.url);
        let body = String::from_utf8(joined.body.unwrap()).unwrap();
        assert!(body.starts_with("ep.plan%20type=a%2Bb&"), "{body}");
    }

    #[test]
    fn hits_of_different_clients_pages_or_agents_do_not_share_a_batch() {
        let ga = ga4("");
        let now = 1_748_935_400;
        let a = hit(
            &ga,
            &event(Kind::Track, "x", json!({}), "tp_cid=abc.1700000000", now),
        );
        let other_client = hit(
            &ga,
            &event(Kind::Track, "x", json!({}), "tp_cid=def.1700000000", now),
        );
        let other_page = hit(
            &ga,
            &event_at(
                Kind::Track,
                "x",
                json!({}),
                "tp_cid=abc.1700000000",
                now,
                "https://shop.test/q",
            ),
        );
        let mut other_agent = a.clone();
        other_agent.headers = vec![("user-agent".into(), "curl/8".into())];
        let batching = Ga4Batching;
        for other in [&other_client, &other_page, &other_agent] {
            assert_ne!(batching.key(&a), batching.key(other));
        }
        // A request that is not a gtag hit is sent alone.
        let mut post = a.clone();
        post.method = "POST".into();
        assert_eq!(batching.key(&post), None);
    }

    /// Issue 10's example, at its exact values: gtag's `_ga` and 2025
    /// `_ga_<container>` cookies, page view received at 1748935400.
    #[test]
    fn the_issue_example_continues_gtags_session() {
        let cookies = "_ga=GA1.1.1187654321.1748934600; _ga_TEST12345=GS2.1.s1748934661$o208$g1$t1748935291$j60$l0$h0";
        let q = run(
            &ga4(""),
            &event(Kind::Pageview, "", json!({}), cookies, 1748935400),
        );
        assert_eq!(get(&q, "cid"), Some("1187654321.1748934600"));
        assert_eq!(get(&q, "sid"), Some("1748934661"));
        assert_eq!(get(&q, "sct"), Some("208"));
        assert_eq!(get(&q, "_fv"), None);
        assert_eq!(get(&q, "_ss"), None);
        // gtag had marked the session engaged (`$g1`).
        assert_eq!(get(&q, "seg"), Some("1"));
    }

    #[test]
    fn names_are_ga4_valid() {
        let adj = Adjust::quiet();
        assert_eq!(adj.event_name("signup"), "signup");
        assert_eq!(adj.event_name("Sign Up!"), "sign_up");
        assert_eq!(adj.event_name("1st"), "e_1st");
        assert_eq!(adj.event_name(&"x".repeat(60)).len(), 40);
        // Reserved names and prefixes ("Event naming rules",
        // https://support.google.com/analytics/answer/13316687).
        assert_eq!(adj.event_name("session_start"), "custom_session_start");
        assert_eq!(adj.event_name("first_visit"), "custom_first_visit");
        assert_eq!(adj.event_name("user_engagement"), "custom_user_engagement");
        assert_eq!(adj.event_name("Session Start"), "custom_session_start");
        assert_eq!(adj.event_name("ga_thing"), "custom_ga_thing");
        assert_eq!(adj.event_name("page_view"), "page_view");
        assert_eq!(adj.param_name("ga_campaign"), "custom_ga_campaign");
        assert_eq!(adj.param_name("google_flag"), "custom_google_flag");
        assert_eq!(adj.param_name("firebase_x"), "custom_firebase_x");
        assert_eq!(adj.param_name("gtag.config"), "custom_gtag_config");
        assert_eq!(adj.param_name("_private"), "custom_private");
        // Parameters may use event names.
        assert_eq!(adj.param_name("session_start"), "session_start");
        let long = adj.param_name(&format!("ga_{}", "y".repeat(50)));
        assert!(long.starts_with("custom_ga_") && long.len() == 40, "{long}");
        for name in RESERVED_EVENTS {
            assert!(adj.event_name(name).starts_with("custom_"), "{name}");
        }
    }

    #[test]
    fn nested_properties_flatten() {
        let props = json!({"a": {"b": 1, "c": {"d": "x"}}, "e": true});
        let mut flat = Vec::new();
        flatten("", props.as_object().unwrap(), &mut flat);
        assert_eq!(
            flat,
            vec![
                ("a_b".to_string(), json!(1)),
                ("a_c_d".to_string(), json!("x")),
                ("e".to_string(), json!(true))
            ]
        );
    }

    #[test]
    fn product_strings() {
        let p = json!({"product_id": "A1", "sku": "SKU-A1", "name": "Mug ~ blue", "price": "14.5", "quantity": 2, "brand": "TP", "position": 3, "cart_id": "c1", "currency": "EUR"});
        assert_eq!(
            product_string(p.as_object().unwrap(), &Adjust::quiet()).unwrap(),
            "idSKU-A1~nmMug ~~ blue~brTP~pr14.5~qt2~lp3"
        );
        let anonymous = json!({"price": 3});
        assert_eq!(
            product_string(anonymous.as_object().unwrap(), &Adjust::quiet()),
            None
        );
        let personal = json!({"product_id": "A", "variant": "for jane@x.com"});
        assert_eq!(
            product_string(personal.as_object().unwrap(), &Adjust::quiet()).unwrap(),
            "idA"
        );
    }

    #[test]
    fn reserved_names_limits_and_number_types() {
        let mut props = Map::new();
        props.insert("ga_campaign".into(), json!("spring"));
        props.insert("google_flag".into(), json!(true));
        props.insert("value".into(), json!("12.5"));
        props.insert("currency".into(), json!("eur"));
        props.insert("tax".into(), json!("n/a"));
        props.insert("zip".into(), json!("01234"));
        props.insert("long".into(), json!("x".repeat(150)));
        props.insert("tags".into(), json!(["a", "b"]));
        let e = event(
            Kind::Track,
            "session_start",
            Value::Object(props),
            "",
            1_700_000_000,
        );
        let q = run(&ga4(""), &e);
        assert_eq!(get(&q, "en"), Some("custom_session_start"));
        assert_eq!(get(&q, "ep.custom_ga_campaign"), Some("spring"));
        assert_eq!(get(&q, "ep.custom_google_flag"), Some("true"));
        assert_eq!(get(&q, "ep.ga_campaign"), None);
        // `value` is a number to GA4 whatever the page sent; `cu` with it.
        assert_eq!(get(&q, "epn.value"), Some("12.5"));
        assert_eq!(get(&q, "cu"), Some("EUR"));
        assert!(get(&q, "epn.tax").is_none() && get(&q, "ep.tax").is_none());
        // Custom properties keep the page's type.
        assert_eq!(get(&q, "ep.zip"), Some("01234"));
        assert_eq!(get(&q, "ep.long").unwrap().len(), 100);
        assert!(get(&q, "ep.tags").is_none());
        // 25 event parameters at most: the first 25 in the page's order.
        let many: Map<String, Value> = (0..30).map(|i| (format!("p{i:02}"), json!(i))).collect();
        let q = run(
            &ga4(""),
            &event(Kind::Track, "many", Value::Object(many), "", 1_700_000_000),
        );
        let params: Vec<&str> = q
            .iter()
            .filter(|(k, _)| k.starts_with("ep.") || k.starts_with("epn."))
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(params.len(), MAX_PARAMS, "{q:?}");
        assert_eq!((params[0], params[24]), ("epn.p00", "epn.p24"));
        let text = crate::metrics::Metrics::default().render();
        for reason in [
            "reserved_name",
            "value_too_long",
            "parameter_limit",
            "not_a_number",
            "unsupported_type",
        ] {
            assert!(
                text.contains(&format!(
                    "tagproxy_payload_adjusted_total{{tool=\"ga4_unit\",reason=\"{reason}\"}}"
                )),
                "{reason} not counted:\n{text}"
            );
        }
    }

    #[test]
    fn no_personal_data() {
        let props = json!({
            "email": "Jane.Doe@Example.com",
            "phone": "+1 650 555 0134",
            "first_name": "Jane",
            "lastName": "Doe",
            "customer": {"name": "Jane Doe", "street": "1 Main St"},
            "address": "1 Main St, Springfield",
            "note": "write to jane.doe@example.com",
            "contact": "(650) 555-0134",
            "plan": "pro",
            "name": "Pro plan",
            "newsletter_email_opt_in": true,
        });
        let url = "https://shop.test/thanks?email=jane.doe%40example.com&order=A1";
        let e = event_at(Kind::Track, "signup", props, "", 1_700_000_000, url);
        let q = run(&ga4(""), &e);
        // The random client id may hold any digits; every other value may not.
        let shown: Vec<_> = q.iter().filter(|(k, _)| k != "cid").collect();
        let all = format!("{shown:?}").to_ascii_lowercase();
        for bad in ["jane", "doe", "650", "main st", "springfield"] {
            assert!(!all.contains(bad), "{bad} in {all}");
        }
        assert_eq!(get(&q, "ep.plan"), Some("pro"));
        assert_eq!(get(&q, "ep.name"), Some("Pro plan"));
        assert_eq!(get(&q, "ep.newsletter_email_opt_in"), Some("true"));
        assert_eq!(
            get(&q, "dl"),
            Some("https://shop.test/thanks?email=redacted&order=A1")
        );
    }

    /// Custom actions get the same rules as automated ones.
    #[test]
    fn custom_actions_follow_the_same_rules() {
        let ga = ga4("");
        let e = event(Kind::Track, "x", json!({}), "", 1_700_000_000);
        let fields = json!({
            "event_name": "session_start",
            "ga_source": "news",
            "user_email": "jane@x.test",
            "value": "9.90",
            "currency": "usd",
            "method": "email",
        });
        let variables = crate::rules::template::Variables::new();
        let cx = BuildContext {
            tool_id: "ga4_unit",
            variables: &variables,
            action: None,
        };
        let q = query(ga.custom("event", fields.as_object().unwrap().clone(), &e, &cx));
        assert_eq!(get(&q, "en"), Some("custom_session_start"));
        assert_eq!(get(&q, "ep.custom_ga_source"), Some("news"));
        assert_eq!(get(&q, "ep.user_email"), None);
        assert_eq!(get(&q, "epn.value"), Some("9.9"));
        assert_eq!(get(&q, "cu"), Some("USD"));
        assert_eq!(get(&q, "ep.method"), Some("email"));
        assert_eq!(get(&q, "ep.currency"), None);
    }

    #[test]
    fn key_events_make_the_hit_engaged() {
        let ga = ga4("key_events = [\"purchase\", \"sign_up\"]");
        let t = 1_700_000_000;
        let click = event(Kind::Track, "click_button", json!({}), "", t);
        assert_eq!(get(&run(&ga, &click), "seg"), None);
        let signup = event(Kind::Track, "Sign Up", json!({}), "", t);
        assert_eq!(get(&run(&ga, &signup), "seg"), Some("1"));
        assert!(ga.key_event(&signup) && !ga.key_event(&click));
        let order = event(Kind::Ecommerce, "Order Completed", json!({}), "", t);
        assert!(ga4("").key_event(&order));
    }

    /// `include_system_properties` adds the event's `system` object to an
    /// action's fields; GA4 takes what it uses of it in its own parameters,
    /// never the rest (cookies, IP, headers) as event parameters.
    #[test]
    fn a_custom_actions_system_properties_stay_out_of_event_parameters() {
        let ga = ga4("");
        let e = event(
            Kind::Track,
            "x",
            json!({}),
            "_ga=GA1.1.123.456; session=s3cr3t",
            1_700_000_000,
        );
        let variables = crate::rules::template::Variables::new();
        let cx = BuildContext {
            tool_id: "ga4_unit",
            variables: &variables,
            action: None,
        };
        let fields = json!({ "event_name": "lead", "plan": "pro", "system": e.system.clone() });
        let q = query(ga.custom("event", fields.as_object().unwrap().clone(), &e, &cx));
        assert_eq!(get(&q, "ep.plan"), Some("pro"));
        let leaked: Vec<&(String, String)> = q
            .iter()
            .filter(|(k, v)| k.contains("system") || v.contains("s3cr3t"))
            .collect();
        assert!(leaked.is_empty(), "{leaked:?}");
        assert_eq!(get(&q, "dl"), Some("https://shop.test/p"));
    }

    /// A literal `measurement_id` is `G-` and at least two more characters;
    /// one with placeholders is checked when rendered. The adapter declares
    /// it as its one template.
    #[test]
    fn measurement_ids_are_checked() {
        let build = |id: &str| {
            let text =
                format!("type = \"google-analytics-4\"\n[settings]\nmeasurement_id = \"{id}\"\n");
            let file: ToolFile = toml::from_str(&text).unwrap();
            Ga4::from_config(Path::new("ga4.toml"), &text, &file)
        };
        for ok in ["G-12", "G-TEST12345", "{{ $ga4_id }}"] {
            assert!(build(ok).is_ok(), "{ok}");
        }
        for bad in ["G-1", "G-", "UA-12345-1", "g-12345"] {
            let p = build(bad).err().unwrap();
            assert_eq!(
                (p.line, p.message.clone()),
                (
                    3,
                    format!("measurement_id {bad:?} must look like \"G-XXXXXXX\"")
                ),
            );
        }
        let ga = build("{{ $ga4_id }}").unwrap();
        let shapes: Vec<usize> = ga.templates().iter().map(|t| t.paths().count()).collect();
        assert_eq!(shapes, [1]);
        let mut generator = schemars::SchemaGenerator::default();
        let schema = serde_json::to_value(settings_schema(&mut generator)).unwrap();
        assert!(schema["$ref"].as_str().is_some(), "{schema}");
        let defs = serde_json::to_value(generator.definitions()).unwrap();
        assert!(defs.to_string().contains("measurement_id"), "{defs}");
    }

    /// Which `/g/collect` parameters are one event's (a batch body line):
    /// `en`, `ep.*`, `epn.*`, `pr<n>`…; not `pr` alone, nor request-level
    /// ones.
    #[test]
    fn event_level_parameters() {
        for p in ["en", "cu", "_et", "ep.plan", "epn.value", "pr1", "pr12"] {
            assert!(event_level(p), "{p}");
        }
        for p in ["v", "tid", "cid", "sid", "dl", "pr", "prx", "pr1a", "epx"] {
            assert!(!event_level(p), "{p}");
        }
        // sendBeacon's 64 KiB queue.
        assert_eq!(MAX_BATCH_BYTES, 65_536);
    }

    /// `check` remarks on every action field that maps personal data into
    /// GA4, by the field's name, a placeholder's name or a literal e-mail;
    /// `event_name` and variables are not looked at.
    #[test]
    fn check_warns_about_personal_data_in_action_fields() {
        let text = r#"type = "google-analytics-4"
[settings]
measurement_id = "G-TEST12345"

[[actions]]
name = "signup"
kind = "event"
firing = ["Pageview"]
fields = { event_name = "{{ client.email }}", user_email = "{{ client.x }}", who = "{{ client.contact.phone }}", to = "ops@shop.test", plan = "{{ client.plan }}", key = "{{ $email }}" }
"#;
        let file: ToolFile = toml::from_str(text).unwrap();
        let ga = Ga4::from_config(Path::new("ga4.toml"), text, &file).unwrap();
        let warnings = ga.check_warnings(Path::new("ga4.toml"), text, &file);
        let maps: Vec<&str> = warnings
            .iter()
            .map(|w| w.split('`').nth(5).unwrap())
            .collect();
        assert_eq!(
            maps,
            ["to", "user_email", "client.contact.phone"],
            "{warnings:?}"
        );
        assert!(warnings[0].starts_with("ga4.toml:9:"), "{}", warnings[0]);
        assert!(
            warnings[0].contains("(e-mail address: personal data)"),
            "{}",
            warnings[0]
        );
        assert!(
            warnings[2].contains("(phone number: personal data)"),
            "{}",
            warnings[2]
        );
        // The adapter's origin and batch API.
        assert_eq!(
            crate::tools::origin_names(&ga.origins()),
            ["https://www.google-analytics.com"]
        );
        assert!(ga.batching().is_some());
    }

    /// `(ep|epn).name` parameters of a hit, in order.
    fn params_named<'a>(q: &'a [(String, String)], name: &str) -> Vec<&'a str> {
        q.iter()
            .filter(|(k, _)| k.split_once('.').is_some_and(|(_, n)| n == name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Each value renamed or dropped for GA4's rules is counted once by its
    /// reason (`tagproxy_payload_adjusted_total`), and only those:
    /// names cleaned, names and values at GA4's limits
    /// (<https://support.google.com/analytics/answer/9267744>: event
    /// parameter names 40 characters, values 100), a second property with
    /// the same GA4 name, a currency that is not ISO 4217's three letters.
    #[test]
    fn adjustments_are_counted_by_reason() {
        use crate::metrics::adjusted;
        let ga = ga4("");
        let track = |props: Value| event(Kind::Track, "signup", props, "", 1_748_935_400);
        let named = |name: &str| event(Kind::Track, name, json!({}), "", 1_748_935_400);

        for name in ["Sign Up!", "signup", "", "Check-Out"] {
            run_as(&ga, &named(name), "ga4_adj_name");
        }
        assert_eq!(adjusted("ga4_adj_name", "invalid_name"), 2);

        let forty = "a".repeat(MAX_NAME);
        let forty_one = "b".repeat(MAX_NAME + 1);
        let q = run_as(
            &ga,
            &track(json!({&forty: 1, &forty_one: 2})),
            "ga4_adj_long_name",
        );
        assert_eq!(adjusted("ga4_adj_long_name", "name_too_long"), 1);
        assert_eq!(params_named(&q, &forty), ["1"]);
        assert_eq!(params_named(&q, &"b".repeat(MAX_NAME)), ["2"]);

        let hundred = "x".repeat(MAX_VALUE);
        let long = "y".repeat(MAX_VALUE + 1);
        let q = run_as(
            &ga,
            &track(json!({"a": &hundred, "b": &long})),
            "ga4_adj_long_value",
        );
        assert_eq!(adjusted("ga4_adj_long_value", "value_too_long"), 1);
        assert_eq!(params_named(&q, "a"), [hundred.as_str()]);
        assert_eq!(params_named(&q, "b"), ["y".repeat(MAX_VALUE)]);

        let q = run_as(
            &ga,
            &track(json!({"Plan": "a", "plan": "b"})),
            "ga4_adj_duplicate",
        );
        assert_eq!(params_named(&q, "plan").len(), 1, "{q:?}");
        assert_eq!(adjusted("ga4_adj_duplicate", "duplicate_name"), 1);

        let q = run_as(&ga, &track(json!({"currency": "EURO"})), "ga4_adj_currency");
        run_as(&ga, &track(json!({"currency": ""})), "ga4_adj_currency");
        run_as(&ga, &track(json!({"currency": "E1"})), "ga4_adj_currency");
        assert_eq!(get(&q, "cu"), None);
        assert_eq!(adjusted("ga4_adj_currency", "invalid_currency"), 2);
    }

    /// `_uip` is the visitor's IP unless `hide_ip = true`.
    #[test]
    fn hide_ip_leaves_the_ip_out() {
        let input = crate::event::EventInput {
            kind: Some(Kind::Pageview),
            name: "Pageview".into(),
            page: crate::event::PageInfo {
                url: "https://shop.test/".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let ip = Some("192.0.2.7".parse().unwrap());
        let e = crate::tools::test_support::visit(input, ip, "Mozilla/5.0", "", 1_748_935_400_000);
        assert_eq!(get(&run(&ga4(""), &e), "_uip"), Some("192.0.2.7"));
        assert_eq!(get(&run(&ga4("hide_ip = true"), &e), "_uip"), None);
    }

    /// Zaraz's ecommerce properties as GA4's parameters, as Zaraz's GA4
    /// Managed Component maps them (`src/ecommerce.ts` of
    /// github.com/managed-components/google-analytics-4) and GA4's
    /// ecommerce reference
    /// (<https://developers.google.com/analytics/devguides/collection/ga4/reference/events>):
    /// a single product's fields are its item (`pr1`), with `value` =
    /// price × quantity; a promotion's are the promotion's, never an item;
    /// an order's `transaction_id` and `currency` are the event's; empty
    /// values count as absent.
    #[test]
    fn ecommerce_properties_as_ga4s_parameters() {
        let ga = ga4("");
        let now = 1_748_935_400;
        let added = event(
            Kind::Ecommerce,
            "Product Added",
            json!({"product_id": "p1", "sku": "", "name": "Hat", "price": 2.5, "quantity": 3, "currency": "EUR", "coupon": "C1"}),
            "",
            now,
        );
        let q = run(&ga, &added);
        assert_eq!(get(&q, "en"), Some("add_to_cart"));
        assert_eq!(get(&q, "pr1"), Some("idp1~nmHat~pr2.5~qt3~cpC1"));
        assert_eq!(get(&q, "epn.value"), Some("7.5"));
        assert_eq!(get(&q, "cu"), Some("EUR"));
        assert!(params_named(&q, "coupon").is_empty(), "{q:?}");

        let promotion = event(
            Kind::Ecommerce,
            "Clicked Promotion",
            json!({"promotion_id": "P1", "name": "Summer", "product_id": "p1", "creative": "banner"}),
            "",
            now,
        );
        let q = run(&ga, &promotion);
        assert_eq!(get(&q, "pr1"), None, "{q:?}");
        assert_eq!(get(&q, "ep.promotion_id"), Some("P1"));
        assert_eq!(get(&q, "ep.promotion_name"), Some("Summer"));
        assert_eq!(get(&q, "ep.creative_name"), Some("banner"));

        let order = event(
            Kind::Ecommerce,
            "Order Completed",
            json!({"transaction_id": null, "order_id": "T1", "currency": "eur", "total": 10, "price": 4,
                   "coupon": "SUMMER", "gift": "yes", "products": [{"product_id": "p2", "quantity": 1}]}),
            "",
            now,
        );
        let q = run(&ga, &order);
        assert_eq!(get(&q, "en"), Some("purchase"));
        assert_eq!(get(&q, "ep.transaction_id"), Some("T1"));
        assert_eq!(
            (get(&q, "cu"), get(&q, "epn.value")),
            (Some("EUR"), Some("10"))
        );
        assert_eq!(get(&q, "pr1"), Some("idp2~qt1"));
        assert_eq!(get(&q, "ep.coupon"), Some("SUMMER"));
        assert_eq!(get(&q, "ep.gift"), Some("yes"));
        for used in ["price", "order_id", "total", "products", "currency"] {
            assert!(params_named(&q, used).is_empty(), "{used}: {q:?}");
        }

        // value = price × quantity, rounded to a millionth (not
        // 0.30000000000000004).
        let cheap = event(
            Kind::Ecommerce,
            "Product Added",
            json!({"sku": "S1", "price": 0.1, "quantity": 3, "currency": "EUR"}),
            "",
            now,
        );
        assert_eq!(get(&run(&ga, &cheap), "epn.value"), Some("0.3"));
    }

    /// A product as gtag's `prN` string: prices and discounts as numbers,
    /// quantities and positions as whole numbers (others dropped), ids may
    /// be numbers, personal data dropped (numbers are never taken for phone
    /// numbers), values past 100 characters counted and cut.
    #[test]
    fn items_as_gtags_pr_strings() {
        use crate::metrics::adjusted;
        let ga = ga4("");
        let long_name = "n".repeat(MAX_VALUE + 1);
        let products = json!([
            {"product_id": 123, "price": "2.50", "discount": 12345678901u64, "quantity": 1.5, "position": -1},
            {"product_id": "p2", "name": "+1 555 123 4567", "price": 12345678901u64, "quantity": "3", "position": 2},
            {"product_id": "p3", "name": "n".repeat(MAX_VALUE), "price": "abc"},
            {"product_id": "p4", "name": long_name},
            {"product_id": "p5", "brand": long_name},
        ]);
        let e = event(
            Kind::Ecommerce,
            "Order Completed",
            json!({"order_id": "T1", "currency": "EUR", "total": 1, "products": products}),
            "",
            1_748_935_400,
        );
        let q = run_as(&ga, &e, "ga4_items");
        let items: Vec<&str> = ["pr1", "pr2", "pr3", "pr4"]
            .iter()
            .map(|k| get(&q, k).unwrap_or(""))
            .collect();
        assert_eq!(
            items[..2],
            ["id123~pr2.5~ds12345678901", "idp2~pr12345678901~qt3~lp2"]
        );
        assert_eq!(items[2], format!("idp3~nm{}", "n".repeat(MAX_VALUE)));
        assert_eq!(items[3], format!("idp4~nm{}", "n".repeat(MAX_VALUE)));
        assert_eq!(
            get(&q, "pr5"),
            Some(format!("idp5~br{}", "n".repeat(MAX_VALUE)).as_str())
        );
        assert_eq!(adjusted("ga4_items", "value_too_long"), 2);
        assert_eq!(adjusted("ga4_items", "not_a_number"), 3);
        assert_eq!(adjusted("ga4_items", "personal_data"), 1);
        for (n, text) in [
            (10.0, "10"),
            (7.5, "7.5"),
            (-0.0, "0"),
            (1e20, "100000000000000000000"),
        ] {
            assert_eq!(format_number(n), text);
        }
    }
}
