//! The trail (SPEC §10): one record per event, from its arrival to the last
//! outcome of its deliveries, kept in memory and streamed to
//! `GET /admin/events` and `{prefix}/debug`.
//!
//! A record says when the event arrived; its event and system properties
//! (credentials, secret variables' values and personal data redacted);
//! whether it was dropped and why (`bot`, `consent`, `duplicate`,
//! `invalid`, `blocking_trigger`, `disabled`); which triggers matched;
//! which actions fired or were blocked and by what; and per delivery the
//! request (credentials and hashed personal data redacted, body cut at
//! [`MAX_REQUEST_BODY`] bytes), each attempt (number, status, latency, the
//! destination's own error text) and its state: `queued`, `delivered`,
//! `retrying` or `dead_lettered`.
//!
//! **Bounds:** the last [`CAPACITY`] (1,000) events, and at most
//! [`MAX_BYTES`] (16 MiB) of their JSON; the oldest go first. Properties
//! larger than [`MAX_PROPERTIES_BYTES`] are replaced by a note, and a
//! delivery keeps its first attempt and its last [`MAX_ATTEMPTS_KEPT`] - 1.
//!
//! Every change (a new record, an attempt) is sent on a
//! [`tokio::sync::broadcast`] channel as the whole record again, with the
//! same `seq`: a viewer replaces what it shows by `seq`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use regex::Regex;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::event::Event;
use crate::tools::{Delivery, Payload};

/// Events kept.
pub const CAPACITY: usize = 1_000;
/// Bytes of JSON kept for all records together.
pub const MAX_BYTES: usize = 16 << 20;
/// A record's `properties` or `system` over this many bytes of JSON is
/// replaced by `{"truncated": <bytes>}`.
pub const MAX_PROPERTIES_BYTES: usize = 16 << 10;
/// Bytes of a delivery's request body kept (cut on a character boundary).
pub const MAX_REQUEST_BODY: usize = 4 << 10;
/// Attempts kept per delivery (the first, and the latest).
pub const MAX_ATTEMPTS_KEPT: usize = 20;
/// Bytes of a destination's error text kept.
pub const MAX_ERROR_BYTES: usize = 500;
/// JSON bytes an attempt adds to a record, besides its error text (an
/// upper estimate).
const ATTEMPT_BYTES: usize = 100;
/// Updates a slow viewer may fall behind by before it misses some.
const CHANNEL: usize = 1_024;

/// What replaces personal data in the trail.
pub const PERSONAL: &str = "[personal data]";
/// What replaces a hashed value (a SHA-256 hex digest, as Meta's
/// `user_data` carries) in a request.
pub const HASHED: &str = "[hashed]";

/// One event's trail.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Position in the trail (increasing; updates keep it).
    pub seq: u64,
    /// The event id.
    pub id: String,
    /// When the event arrived (Unix ms).
    pub arrived_ms: u64,
    /// `pageview`, `track` or `ecommerce`.
    pub kind: String,
    /// `Pageview`, the track name or the ecommerce event name.
    pub name: String,
    /// `client.*`, redacted when shown.
    pub properties: Redacted,
    /// `system.*`, redacted when shown.
    pub system: Redacted,
    /// Why the event reached no tool, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<String>,
    /// Triggers that matched (`Pageview` for every pageview).
    pub triggers: Vec<String>,
    /// Per tool, the actions that fired or were blocked.
    pub actions: Vec<ActionEntry>,
    pub deliveries: Vec<DeliveryEntry>,
    /// The whole event in one word: `dropped`, `no_tool` (no tool takes
    /// this kind of event), `queued`, `retrying`, `dead_lettered` or
    /// `delivered` (the least settled delivery's state wins).
    pub outcome: String,
    /// The visitor's client id, to show a visitor its own events only.
    #[serde(skip)]
    pub visitor: String,
    #[serde(skip)]
    bytes: usize,
}

/// An event's `client.*` or `system.*` as the trail shows it: the event as
/// its deliveries keep it (shared, not copied), redacted ([`redact`]) and
/// capped at [`MAX_PROPERTIES_BYTES`] only when the record is read.
/// Copying and redacting every event's properties on arrival was most of
/// the trail's remaining per-event cost (issue 14), for records that are
/// mostly never read.
#[derive(Debug, Clone)]
pub struct Redacted {
    event: crate::event::SharedRecord,
    /// `system.*` rather than `client.*`.
    system: bool,
    /// The secret variables' values to hide.
    secrets: Arc<[String]>,
}

impl Redacted {
    /// The properties as shown: redacted, or `{"truncated": <bytes>}` when
    /// their JSON is over [`MAX_PROPERTIES_BYTES`].
    pub fn value(&self) -> Value {
        let mut value = self.source().cloned().unwrap_or(Value::Null);
        redact(&mut value, &self.secrets);
        capped(value).0
    }

    /// An upper bound of the shown JSON's size in bytes, without copying:
    /// redaction only replaces a leaf by a marker of at most
    /// [`LEAF_MARKER_BYTES`], and a value over the cap shows as less.
    fn size(&self) -> usize {
        self.source()
            .map_or(4, json_size_bound)
            .min(MAX_PROPERTIES_BYTES)
    }

    /// The unredacted properties (always there: the trail's records are
    /// built from events, never read back from storage).
    fn source(&self) -> Option<&Value> {
        let record = self.event.record().ok()?;
        Some(if self.system {
            &record.system
        } else {
            &record.client
        })
    }
}

impl Serialize for Redacted {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(serializer)
    }
}

/// The longest JSON a redacted leaf becomes (`"[personal data]"`).
const LEAF_MARKER_BYTES: usize = PERSONAL.len() + 2;

/// An upper bound of `value`'s compact JSON size once redacted: each leaf
/// counted as the larger of its own JSON (escapes included) and
/// [`LEAF_MARKER_BYTES`].
fn json_size_bound(value: &Value) -> usize {
    fn escaped(s: &str) -> usize {
        2 + s
            .bytes()
            .map(|b| match b {
                b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
                0..0x20 => 6,
                _ => 1,
            })
            .sum::<usize>()
    }
    let leaf = |n: usize| n.max(LEAF_MARKER_BYTES);
    match value {
        Value::Null | Value::Bool(_) => leaf(5),
        // At most 24 characters (`-1.7976931348623157e308`).
        Value::Number(_) => leaf(24),
        Value::String(s) => leaf(escaped(s)),
        Value::Array(items) => 2 + items.iter().map(|v| json_size_bound(v) + 1).sum::<usize>(),
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(k, v)| escaped(k) + 2 + json_size_bound(v))
                .sum::<usize>()
        }
    }
}

/// An action of a tool that fired, or would have and was blocked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionEntry {
    pub tool: String,
    /// The custom action's name, `automated`, or `*` for the whole tool
    /// (consent, a tool-level blocking trigger, a disabled tool).
    pub action: String,
    pub fired: bool,
    /// Why it did not fire: `consent`, `blocking_trigger`, `bot`,
    /// `disabled`, `invalid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
    /// What blocked it: the blocking trigger's id, the purposes missing, the
    /// reason a request cannot be sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl ActionEntry {
    pub fn fired(tool: &str, action: &str) -> ActionEntry {
        ActionEntry {
            tool: tool.into(),
            action: action.into(),
            fired: true,
            blocked: None,
            by: None,
        }
    }

    pub fn blocked(tool: &str, action: &str, reason: &str, by: Option<String>) -> ActionEntry {
        ActionEntry {
            tool: tool.into(),
            action: action.into(),
            fired: false,
            blocked: Some(reason.into()),
            by,
        }
    }
}

/// One delivery of the event and how it went.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryEntry {
    pub tool: String,
    /// The custom action's name, or `automated`.
    pub action: String,
    /// Which of the action's requests (from 0).
    pub part: usize,
    pub request: RequestSource,
    /// `queued`, `retrying`, `delivered` or `dead_lettered`.
    pub state: String,
    pub attempts: Vec<AttemptEntry>,
    /// Why it was dead-lettered without an attempt (`invalid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    action_index: Option<usize>,
}

/// A delivery's request as it was built, shown (through [`request_view`],
/// redacted) only when the record is read. Redacting every request of every
/// event was about a quarter of the per-event work in the collector's
/// profile (issue 14), and most records are never looked at.
#[derive(Debug, Clone)]
pub struct RequestSource(Arc<Delivery>);

impl RequestSource {
    fn of(d: &Delivery) -> RequestSource {
        // Without its source (the whole event, not shown) the copy is cheap.
        RequestSource(Arc::new(Delivery {
            tool: d.tool.clone(),
            event_id: d.event_id.clone(),
            payload: d.payload.clone(),
            source: None,
            secrets: d.secrets.clone(),
        }))
    }

    /// The view: what serializing this shows.
    pub fn view(&self) -> RequestView {
        request_view(&self.0)
    }

    /// An upper bound of the view's JSON size in bytes, without building
    /// it (redaction only shortens; the body is cut at [`MAX_REQUEST_BODY`]).
    fn size(&self) -> usize {
        match &self.0.payload {
            Payload::Stdout(line) => 40 + 2 * line.len().min(MAX_REQUEST_BODY),
            Payload::Http(req) => {
                let headers: usize = req.headers.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
                let body = req
                    .body
                    .as_ref()
                    .map_or(0, |b| b.len().min(MAX_REQUEST_BODY));
                // Redaction may lengthen a short value (`[personal data]`);
                // JSON escaping can double a body. Count each twice.
                60 + 2 * (req.method.len() + req.url.len() + headers + body)
            }
        }
    }
}

impl Serialize for RequestSource {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.view().serialize(serializer)
    }
}

/// A request as the trail shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RequestView {
    /// `GET`, `POST`…, or `STDOUT` for the console tool.
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// One attempt at a delivery.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptEntry {
    /// From 1.
    pub attempt: u32,
    /// When it ended (Unix ms).
    pub at_ms: u64,
    /// The HTTP status, if the destination answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// The destination's own error text (e.g. Meta's `error.message`), or
    /// what went wrong (timeout, connection error); none when delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How one attempt ended, as the delivery engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptState {
    Delivered,
    Retrying,
    DeadLettered,
}

impl AttemptState {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptState::Delivered => "delivered",
            AttemptState::Retrying => "retrying",
            AttemptState::DeadLettered => "dead_lettered",
        }
    }
}

/// What a viewer wants to see; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// A tool id the event fired, was blocked for, or delivered to.
    pub tool: Option<String>,
    /// The event name.
    pub event: Option<String>,
    /// The outcome, the drop reason, a block reason, a delivery state, or
    /// `fired` / `blocked`.
    pub outcome: Option<String>,
    /// Only this visitor's events (client id).
    pub visitor: Option<String>,
}

impl Filter {
    /// The filter of a query string (`tool`, `event`, `outcome`).
    pub fn from_query(query: Option<&str>) -> Filter {
        let mut f = Filter::default();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let v = Some(v.into_owned()).filter(|v| !v.is_empty());
            match &*k {
                "tool" => f.tool = v,
                "event" => f.event = v,
                "outcome" => f.outcome = v,
                _ => {}
            }
        }
        f
    }

    pub fn matches(&self, r: &Record) -> bool {
        if self.visitor.as_ref().is_some_and(|v| *v != r.visitor) {
            return false;
        }
        if self.event.as_ref().is_some_and(|e| *e != r.name) {
            return false;
        }
        if let Some(tool) = &self.tool {
            let named = r.actions.iter().any(|a| a.tool == *tool)
                || r.deliveries.iter().any(|d| d.tool == *tool);
            if !named {
                return false;
            }
        }
        if let Some(o) = &self.outcome {
            let o = o.as_str();
            let hit = r.outcome == o
                || r.dropped.as_deref() == Some(o)
                || r.actions.iter().any(|a| {
                    a.blocked.as_deref() == Some(o)
                        || (o == "fired" && a.fired)
                        || (o == "blocked" && a.blocked.is_some())
                })
                || r.deliveries.iter().any(|d| d.state == o);
            if !hit {
                return false;
            }
        }
        true
    }
}

/// What the fan-out decided for one event, for its record.
#[derive(Debug, Default)]
pub struct Trace {
    /// Triggers that matched.
    pub triggers: Vec<String>,
    /// Actions fired or blocked, per tool.
    pub actions: Vec<ActionEntry>,
}

impl Record {
    /// The record of an event as it arrived: `dropped` when it reached no
    /// tool (`bot`, `duplicate`), `trace` what the fan-out decided,
    /// `deliveries` and `invalid` its requests (queued, or refused at once
    /// with the reason). `secrets` are the secret variables' values;
    /// `disabled` the ids of disabled tools.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        event: &Event,
        shared: Option<crate::event::SharedRecord>,
        dropped: Option<&str>,
        trace: Option<Trace>,
        deliveries: &[Delivery],
        invalid: &[(&Delivery, String)],
        secrets: &Arc<[String]>,
        disabled: &[String],
    ) -> Record {
        let trace = trace.unwrap_or_default();
        let mut actions = trace.actions;
        if dropped == Some("bot") {
            for a in actions.iter_mut().filter(|a| a.fired) {
                a.fired = false;
                a.blocked = Some("bot".into());
            }
        }
        if dropped != Some("duplicate") {
            for id in disabled {
                actions.push(ActionEntry::blocked(id, "*", "disabled", None));
            }
        }
        let mut entries: Vec<DeliveryEntry> = Vec::new();
        if dropped.is_none() {
            entries.extend(
                deliveries
                    .iter()
                    .map(|d| DeliveryEntry::of(d, "queued", None)),
            );
            for (d, why) in invalid {
                entries.push(DeliveryEntry::of(d, "dead_lettered", Some(why.clone())));
                let action = action_name(d);
                if let Some(a) = actions
                    .iter_mut()
                    .find(|a| a.tool == d.tool && a.action == action && a.fired)
                {
                    a.fired = false;
                    a.blocked = Some("invalid".into());
                    a.by = Some(why.clone());
                }
            }
        }
        // No delivery: the first reason a tool was left out is the event's.
        let dropped = dropped.map(str::to_string).or_else(|| {
            if deliveries.is_empty() {
                actions.iter().find_map(|a| a.blocked.clone())
            } else {
                None
            }
        });
        let shared = shared.unwrap_or_else(|| crate::event::SharedRecord::of(event));
        let shown = |system| Redacted {
            event: shared.clone(),
            system,
            secrets: secrets.clone(),
        };
        let (properties, system) = (shown(false), shown(true));
        let known = properties.size() + system.size();
        let mut record = Record {
            seq: 0,
            id: event.id.clone(),
            arrived_ms: crate::event::now_ms(),
            kind: format!("{:?}", event.kind).to_ascii_lowercase(),
            name: event.name.clone(),
            properties,
            system,
            dropped,
            triggers: trace.triggers,
            actions,
            deliveries: entries,
            outcome: String::new(),
            visitor: event.identity.client_id.clone(),
            bytes: 0,
        };
        record.set_outcome();
        record.bytes = known + record.other_bytes();
        record
    }

    /// The JSON size of everything but the properties, estimated from above
    /// without serializing (that, with the requests' redaction, is what
    /// the trail no longer does per event).
    fn other_bytes(&self) -> usize {
        let names = |v: &[String]| v.iter().map(|t| t.len() + 4).sum::<usize>();
        let actions: usize = self
            .actions
            .iter()
            .map(|a| {
                120 + a.tool.len()
                    + a.action.len()
                    + a.blocked.as_ref().map_or(0, String::len)
                    + a.by.as_ref().map_or(0, String::len)
            })
            .sum();
        let deliveries: usize = self
            .deliveries
            .iter()
            .map(|d| {
                120 + d.tool.len()
                    + d.action.len()
                    + d.request.size()
                    + d.error.as_ref().map_or(0, String::len)
            })
            .sum();
        200 + self.id.len()
            + self.name.len()
            + self.visitor.len()
            + self.dropped.as_ref().map_or(0, String::len)
            + names(&self.triggers)
            + actions
            + deliveries
    }

    fn set_outcome(&mut self) {
        let states = |s: &str| self.deliveries.iter().any(|d| d.state == s);
        self.outcome = if self.dropped.is_some() {
            "dropped"
        } else if self.deliveries.is_empty() {
            "no_tool"
        } else if states("retrying") {
            "retrying"
        } else if states("queued") {
            "queued"
        } else if states("dead_lettered") {
            "dead_lettered"
        } else {
            "delivered"
        }
        .to_string();
    }
}

impl DeliveryEntry {
    fn of(d: &Delivery, state: &str, error: Option<String>) -> DeliveryEntry {
        DeliveryEntry {
            tool: d.tool.clone(),
            action: action_name(d),
            part: d.source.as_ref().map_or(0, |s| s.part),
            request: RequestSource::of(d),
            state: state.into(),
            attempts: Vec::new(),
            error,
            action_index: d.source.as_ref().and_then(|s| s.action),
        }
    }

    fn is(&self, d: &Delivery) -> bool {
        let (action, part) = d.source.as_ref().map_or((None, 0), |s| (s.action, s.part));
        self.tool == d.tool && self.action_index == action && self.part == part
    }
}

fn action_name(d: &Delivery) -> String {
    match d.source.as_deref() {
        Some(s) if s.action.is_some() => s.action_name.clone().unwrap_or_else(|| "custom".into()),
        _ => "automated".into(),
    }
}

/// A delivery's request with credentials redacted the way a dead letter
/// stores it, then every SHA-256 hex digest (hashed personal data).
pub fn request_view(d: &Delivery) -> RequestView {
    // Without its source (the whole event, not shown here) the copy is cheap.
    let copy = Delivery {
        tool: d.tool.clone(),
        event_id: d.event_id.clone(),
        payload: d.payload.clone(),
        source: None,
        secrets: d.secrets.clone(),
    };
    let letter = crate::delivery::deadletter::DeadLetter::new(copy, "", None, b"", 0, 0);
    match letter.delivery.payload {
        Payload::Stdout(line) => RequestView {
            method: "STDOUT".into(),
            url: String::new(),
            headers: Vec::new(),
            body: Some(cut(&unhash(&line), MAX_REQUEST_BODY)),
        },
        Payload::Http(req) => RequestView {
            method: req.method,
            url: unhash(&crate::tools::pii::redact_url(&req.url).unwrap_or(req.url)),
            headers: req
                .headers
                .into_iter()
                .map(|(k, v)| (k, unhash(&v)))
                .collect(),
            body: req.body.map(|b| cut(&body_text(&b), MAX_REQUEST_BODY)),
        },
    }
}

/// A request body as text, personal data and hashes replaced: field by
/// field when it is JSON, else e-mail addresses and hashes in the text.
fn body_text(body: &[u8]) -> String {
    if let Ok(mut json) = serde_json::from_slice::<Value>(body) {
        personal(&mut json, "");
        return json.to_string();
    }
    let text = String::from_utf8_lossy(body);
    unhash(&crate::tools::pii::redact_emails(&text))
}

static SHA256_HEX: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b[0-9a-fA-F]{64}\b").expect("regex"));

/// `text` with every SHA-256 hex digest replaced by [`HASHED`].
fn unhash(text: &str) -> String {
    SHA256_HEX.replace_all(text, HASHED).into_owned()
}

/// At most `max` bytes of `s`, on a character boundary, with `…` when cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    format!("{}…", &s[..s.floor_char_boundary(max)])
}

/// Credentials and secret variables' values (as `GET /admin/config`
/// redacts them), then personal data by name or shape (as GA4's adapter
/// finds it) replaced by [`PERSONAL`].
pub fn redact(value: &mut Value, secrets: &[String]) {
    crate::admin::redact::redact(value, secrets);
    personal(value, "");
}

fn personal(value: &mut Value, key: &str) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                personal(v, k);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| personal(v, key)),
        Value::String(s) => {
            if SHA256_HEX.is_match(s) {
                *s = unhash(s);
            } else if crate::tools::pii::kind(key, s).is_some() {
                *s = PERSONAL.into();
            }
        }
        Value::Number(_) if crate::tools::pii::key_kind(key).is_some() => {
            *value = Value::String(PERSONAL.into());
        }
        _ => {}
    }
}

/// `value`, or `{"truncated": <bytes>}` when its JSON is over
/// [`MAX_PROPERTIES_BYTES`]; with the JSON size of what is kept.
fn capped(value: Value) -> (Value, usize) {
    let n = serde_json::to_vec(&value).map_or(0, |v| v.len());
    if n > MAX_PROPERTIES_BYTES {
        let mut m = Map::new();
        m.insert("truncated".into(), Value::from(n));
        (Value::Object(m), 32)
    } else {
        (value, n)
    }
}

/// The destination's own error text in a response body: `error.message`
/// (Meta's Graph API, Google APIs), `error` as text, `error_description`,
/// `message`, `errors[0].message`, `detail`; else the body itself when it
/// is short text. `None` for an empty or `{}` body.
pub fn destination_error(body: &str) -> Option<String> {
    let body = body.trim();
    if body.is_empty() || body == "{}" {
        return None;
    }
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        let text = |v: &Value| v.as_str().map(str::to_string);
        let found = v
            .pointer("/error/message")
            .and_then(text)
            .or_else(|| v.get("error").and_then(text))
            .or_else(|| v.get("error_description").and_then(text))
            .or_else(|| v.get("message").and_then(text))
            .or_else(|| v.pointer("/errors/0/message").and_then(text))
            .or_else(|| v.get("detail").and_then(text));
        if let Some(found) = found {
            return Some(cut(&found, MAX_ERROR_BYTES));
        }
    }
    Some(cut(body, MAX_ERROR_BYTES))
}

/// `text` with each of `secrets` (in every form it takes in a request)
/// replaced by the dead letters' `[REDACTED]`.
pub fn redact_secrets(text: &str, secrets: &[String]) -> String {
    let mut forms: Vec<String> = secrets
        .iter()
        .flat_map(|s| crate::delivery::deadletter::secret_forms(s))
        .collect();
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    let mut out = text.to_string();
    for f in forms {
        out = out.replace(&f, crate::delivery::deadletter::REDACTED);
    }
    out
}

struct Inner {
    /// Shared with the broadcast channel and viewers: an update copies a
    /// record only while someone still holds its previous version.
    records: VecDeque<Arc<Record>>,
    /// Event id → `seq` of the record that holds its deliveries.
    by_id: HashMap<String, u64>,
    bytes: usize,
    next_seq: u64,
}

/// The trail of the last events; lives as long as the process.
pub struct Trail {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Record>>,
    /// `true` once the server shuts down: open streams end.
    closed: tokio::sync::watch::Sender<bool>,
}

impl Default for Trail {
    fn default() -> Self {
        Trail {
            inner: Mutex::new(Inner {
                records: VecDeque::new(),
                by_id: HashMap::new(),
                bytes: 0,
                next_seq: 1,
            }),
            tx: broadcast::channel(CHANNEL).0,
            closed: tokio::sync::watch::channel(false).0,
        }
    }
}

impl Trail {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a record (evicting the oldest past the bounds) and sends it to
    /// viewers. Returns its `seq`.
    pub fn push(&self, mut record: Record) -> u64 {
        let mut inner = self.lock();
        record.seq = inner.next_seq;
        inner.next_seq += 1;
        if !record.deliveries.is_empty() {
            inner.by_id.insert(record.id.clone(), record.seq);
        }
        inner.bytes += record.bytes;
        let seq = record.seq;
        let record = Arc::new(record);
        let _ = self.tx.send(record.clone());
        inner.records.push_back(record);
        // Evicted records are freed after the lock is released: freeing an
        // event (its properties, its deliveries' requests) is the costly
        // part, and every request and delivery attempt takes this lock.
        let mut evicted = Vec::new();
        while inner.records.len() > CAPACITY || (inner.bytes > MAX_BYTES && inner.records.len() > 1)
        {
            let old = inner.records.pop_front().expect("not empty");
            inner.bytes -= old.bytes;
            if inner.by_id.get(&old.id) == Some(&old.seq) {
                inner.by_id.remove(&old.id);
            }
            evicted.push(old);
        }
        drop(inner);
        drop(evicted);
        seq
    }

    /// Records attempt number `attempt` of `d` (what the delivery engine
    /// calls once per attempt). Unknown events (evicted, or queued before
    /// a restart) are ignored.
    pub fn attempt(
        &self,
        d: &Delivery,
        attempt: u32,
        status: Option<u16>,
        latency: Duration,
        error: Option<String>,
        state: AttemptState,
    ) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(&seq) = inner.by_id.get(&d.event_id) else {
            return;
        };
        let Some(front) = inner.records.front().map(|r| r.seq) else {
            return;
        };
        // The latest record of the id holds the delivery, except when a
        // consent replay (same id, other tools) came after it: then an
        // earlier one does.
        let at = (seq - front) as usize;
        let holds = |r: &Record| r.id == d.event_id && r.deliveries.iter().any(|e| e.is(d));
        let Some(index) = inner
            .records
            .get(at)
            .filter(|r| holds(r))
            .map(|_| at)
            .or_else(|| inner.records.iter().rposition(|r| holds(r)))
        else {
            return;
        };
        let record = Arc::make_mut(&mut inner.records[index]);
        let Some(entry) = record.deliveries.iter_mut().find(|e| e.is(d)) else {
            return;
        };
        // Estimated rather than measured: serializing the record again on
        // every attempt would cost more than the attempt's bookkeeping.
        let grown = ATTEMPT_BYTES + error.as_ref().map_or(0, String::len);
        entry.state = state.as_str().into();
        if entry.attempts.len() >= MAX_ATTEMPTS_KEPT {
            entry.attempts.remove(1);
        }
        entry.attempts.push(AttemptEntry {
            attempt,
            at_ms: crate::event::now_ms(),
            status,
            latency_ms: latency.as_millis() as u64,
            error,
        });
        record.set_outcome();
        record.bytes += grown;
        inner.bytes += grown;
        let _ = self.tx.send(inner.records[index].clone());
    }

    /// The records kept now, oldest first, that `filter` matches, and a
    /// receiver of later changes (subscribed first, so nothing falls
    /// between the two; a change may come twice).
    pub fn watch(&self, filter: &Filter) -> (Vec<Arc<Record>>, broadcast::Receiver<Arc<Record>>) {
        let inner = self.lock();
        let rx = self.tx.subscribe();
        let now = inner
            .records
            .iter()
            .filter(|r| filter.matches(r))
            .cloned()
            .collect();
        (now, rx)
    }

    /// Ends every open stream (the server is shutting down, and must not
    /// wait for viewers to leave).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Resolves once [`Trail::close`] was called.
    fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closed.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    /// How many records are kept and their size in bytes.
    pub fn size(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.records.len(), inner.bytes)
    }
}

/// One Server-Sent Event for a record: `event: trail`, `id: <seq>`, the
/// record's JSON as `data`.
pub fn sse_event(record: &Record) -> String {
    let json = serde_json::to_string(record).unwrap_or_default();
    format!("event: trail\nid: {}\ndata: {json}\n\n", record.seq)
}

/// A `text/event-stream` body: the kept records `filter` matches, then
/// every change as it happens, with a comment every 15 s so proxies keep
/// the connection open. Ends when the trail is closed (shutdown) or the
/// viewer goes away. `hello` (a JSON object) goes first as `event: hello`.
pub fn sse_body(trail: &Trail, filter: Filter, hello: Value) -> crate::proxy::body::ProxyBody {
    let stop = trail.closed();
    use futures_util::StreamExt as _;
    let (now, rx) = trail.watch(&filter);
    let mut first = format!("retry: 2000\nevent: hello\ndata: {hello}\n\n");
    for r in &now {
        first.push_str(&sse_event(r));
    }
    let head = futures_util::stream::once(async move { Ok(bytes::Bytes::from(first)) });
    struct State {
        rx: broadcast::Receiver<Arc<Record>>,
        filter: Filter,
        tick: tokio::time::Interval,
    }
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    tick.reset();
    let live = futures_util::stream::unfold(State { rx, filter, tick }, |mut s| async move {
        loop {
            tokio::select! {
                got = s.rx.recv() => match got {
                    Ok(r) if s.filter.matches(&r) => {
                        return Some((Ok(bytes::Bytes::from(sse_event(&r))), s));
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let note = format!("event: lagged\ndata: {n}\n\n");
                        return Some((Ok(bytes::Bytes::from(note)), s));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = s.tick.tick() => {
                    return Some((Ok(bytes::Bytes::from_static(b": keep-alive\n\n")), s));
                }
            }
        }
    });
    let stream = head.chain(live).take_until(Box::pin(stop));
    let stream = stream
        .map(|r: Result<bytes::Bytes, std::convert::Infallible>| r.map(http_body::Frame::data));
    crate::proxy::body::boxed(http_body_util::StreamBody::new(stream))
}

/// The headers of an SSE answer.
pub fn sse_response(
    body: crate::proxy::body::ProxyBody,
) -> http::Response<crate::proxy::body::ProxyBody> {
    http::Response::builder()
        .header(
            http::header::CONTENT_TYPE,
            "text/event-stream; charset=utf-8",
        )
        .header(http::header::CACHE_CONTROL, "no-store")
        // nginx and friends would otherwise buffer the stream.
        .header("x-accel-buffering", "no")
        .body(body)
        .expect("static response")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::{HttpRequest, Source};
    use proptest::prelude::*;
    use serde_json::json;

    /// Any JSON value: strings with escapes, control characters, e-mail
    /// addresses, SHA-256 digests and a secret; keys that name personal
    /// data or credentials.
    fn any_value() -> impl Strategy<Value = Value> {
        let text = prop_oneof![
            "[ -~]{0,12}",
            "[\\x00-\\x1f\"\\\\é]{0,8}",
            Just("ann@example.com".to_string()),
            Just("a".repeat(64)),
            Just("has s3cret in it".to_string()),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            text.clone().prop_map(Value::from),
        ];
        let key = prop_oneof![
            text,
            Just("email".to_string()),
            Just("phone".to_string()),
            Just("access_token".to_string()),
        ];
        leaf.prop_recursive(4, 64, 8, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::btree_map(key.clone(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The trail's byte bound counts a record's properties without
        /// copying or redacting them: the count must never fall short of
        /// what showing them gives.
        #[test]
        fn the_size_bound_holds_for_any_properties(value in any_value()) {
            let secrets = vec!["s3cret".to_string()];
            let mut shown = value.clone();
            redact(&mut shown, &secrets);
            let shown = serde_json::to_vec(&capped(shown).0).unwrap().len();
            let bound = json_size_bound(&value).min(MAX_PROPERTIES_BYTES);
            prop_assert!(bound >= shown, "{bound} < {shown} for {value}");
        }
    }

    fn event(name: &str) -> Event {
        let input = crate::event::EventInput {
            kind: Some(crate::event::Kind::Track),
            name: name.into(),
            ..Default::default()
        };
        let info = crate::event::RequestInfo {
            ip: None,
            user_agent: crate::event::ua::UaParser::default().parse(""),
            cookies: Default::default(),
            location: Default::default(),
        };
        let mut tracker = crate::event::identity::Tracker::from_cookie_header_ms("", 1_000_000);
        let mut e = Event::build(input, &info, tracker.next(false), 1_000_000);
        e.client = json!({"plan": "pro", "email": "ann@example.com", "token": "abc", "note": "has EAAB-secret-1 in it"});
        e
    }

    fn delivery(e: &Event, tool: &str) -> Delivery {
        let mut d = Delivery::new(
            tool,
            e.id.clone(),
            Payload::Http(HttpRequest {
                method: "POST".into(),
                url: "https://graph.facebook.com/v21.0/1/events?access_token=EAAB-secret-1".into(),
                headers: vec![("Authorization".into(), "Bearer EAAB-secret-1".into())],
                body: Some(
                    json!({"data": [{"user_data": {"em": ["a".repeat(64)]}}], "access_token": "EAAB-secret-1"})
                        .to_string()
                        .into_bytes(),
                ),
            }),
        );
        d.secrets = vec!["EAAB-secret-1".into()];
        d.source = Some(Box::new(Source {
            event: crate::event::SharedRecord::of(e),
            action: None,
            action_name: None,
            part: 0,
        }));
        d
    }

    #[test]
    fn a_record_hides_secrets_and_personal_data_and_follows_attempts() {
        let e = event("signup");
        let d = delivery(&e, "meta");
        let trace = Trace {
            triggers: vec!["Pageview".into()],
            actions: vec![ActionEntry::fired("meta", "automated")],
        };
        let secrets: Arc<[String]> = Arc::from(["EAAB-secret-1".to_string()]);
        let record = Record::new(
            &e,
            None,
            None,
            Some(trace),
            std::slice::from_ref(&d),
            &[],
            &secrets,
            &[],
        );
        let text = serde_json::to_string(&record).unwrap();
        // The size the byte bound counts is estimated, not measured: it must
        // not fall short of what serializing the record gives.
        assert!(
            record.bytes >= text.len(),
            "{} < {}",
            record.bytes,
            text.len()
        );
        assert!(
            record.bytes < 4 * text.len(),
            "{} vs {}",
            record.bytes,
            text.len()
        );
        assert!(!text.contains("EAAB-secret-1"), "{text}");
        assert!(!text.contains("ann@example.com"), "{text}");
        assert!(!text.contains(&"a".repeat(64)), "{text}");
        assert_eq!(record.properties.value()["plan"], "pro");
        assert_eq!(record.properties.value()["email"], PERSONAL);
        assert_eq!(record.outcome, "queued");

        let trail = Trail::default();
        let (_, mut rx) = trail.watch(&Filter::default());
        trail.push(record);
        assert_eq!(rx.try_recv().unwrap().outcome, "queued");
        trail.attempt(
            &d,
            1,
            Some(503),
            Duration::from_millis(7),
            Some("busy".into()),
            AttemptState::Retrying,
        );
        let r = rx.try_recv().unwrap();
        assert_eq!(r.outcome, "retrying");
        assert_eq!(r.deliveries[0].attempts[0].status, Some(503));
        assert_eq!(r.deliveries[0].attempts[0].latency_ms, 7);
        trail.attempt(
            &d,
            2,
            Some(200),
            Duration::from_millis(3),
            None,
            AttemptState::Delivered,
        );
        let r = rx.try_recv().unwrap();
        assert_eq!(r.outcome, "delivered");
        assert_eq!(r.deliveries[0].attempts.len(), 2);
        let f = |q: &str| Filter::from_query(Some(q));
        assert!(f("outcome=delivered&tool=meta&event=signup").matches(&r));
        assert!(!f("outcome=retrying").matches(&r));
        assert!(!f("tool=ga4").matches(&r));
        assert!(!f("event=pageview").matches(&r));
    }

    #[test]
    fn an_attempt_finds_its_record_behind_a_later_one_of_the_same_id() {
        let e = event("signup");
        let first = delivery(&e, "meta");
        let replayed = delivery(&e, "ga4");
        let trail = Trail::default();
        trail.push(Record::new(
            &e,
            None,
            None,
            None,
            std::slice::from_ref(&first),
            &[],
            &Arc::from([]),
            &[],
        ));
        // A consent replay: same id, another tool's delivery.
        trail.push(Record::new(
            &e,
            None,
            None,
            None,
            std::slice::from_ref(&replayed),
            &[],
            &Arc::from([]),
            &[],
        ));
        trail.attempt(
            &first,
            1,
            Some(200),
            Duration::ZERO,
            None,
            AttemptState::Delivered,
        );
        trail.attempt(
            &replayed,
            1,
            Some(200),
            Duration::ZERO,
            None,
            AttemptState::Delivered,
        );
        let (kept, _) = trail.watch(&Filter::default());
        assert_eq!(kept[0].outcome, "delivered");
        assert_eq!(kept[1].outcome, "delivered");
    }

    #[test]
    fn drops_say_why() {
        let e = event("x");
        let trace = Trace {
            triggers: vec![],
            actions: vec![
                ActionEntry::blocked("ga4", "*", "consent", Some("analytics".into())),
                ActionEntry::fired("meta", "automated"),
            ],
        };
        let bot = Record::new(
            &e,
            None,
            Some("bot"),
            Some(trace),
            &[],
            &[],
            &Arc::from([]),
            &["old".into()],
        );
        assert_eq!(bot.dropped.as_deref(), Some("bot"));
        assert_eq!(bot.actions[1].blocked.as_deref(), Some("bot"));
        assert_eq!(bot.actions[2].blocked.as_deref(), Some("disabled"));
        assert!(Filter::from_query(Some("outcome=consent")).matches(&bot));
        let trace = Trace {
            triggers: vec![],
            actions: vec![ActionEntry::blocked(
                "ga4",
                "*",
                "blocking_trigger",
                Some("internal".into()),
            )],
        };
        let blocked = Record::new(&e, None, None, Some(trace), &[], &[], &Arc::from([]), &[]);
        assert_eq!(blocked.dropped.as_deref(), Some("blocking_trigger"));
        assert_eq!(blocked.outcome, "dropped");
    }

    #[test]
    fn the_buffer_keeps_the_last_thousand() {
        let trail = Trail::default();
        let e = event("e");
        for _ in 0..CAPACITY + 5 {
            trail.push(Record::new(
                &e,
                None,
                Some("duplicate"),
                None,
                &[],
                &[],
                &Arc::from([]),
                &[],
            ));
        }
        let (n, bytes) = trail.size();
        assert_eq!(n, CAPACITY);
        assert!(bytes > 0 && bytes <= MAX_BYTES);
        let (kept, _) = trail.watch(&Filter::default());
        assert_eq!(kept[0].seq, 6);
    }

    #[test]
    fn destination_errors_are_found() {
        let meta =
            r#"{"error":{"message":"Invalid parameter","type":"OAuthException","code":100}}"#;
        assert_eq!(
            destination_error(meta).as_deref(),
            Some("Invalid parameter")
        );
        assert_eq!(destination_error("{}"), None);
        assert_eq!(destination_error("  "), None);
        assert_eq!(
            destination_error("Bad Gateway").as_deref(),
            Some("Bad Gateway")
        );
        assert_eq!(
            redact_secrets("token EAAB-secret-1 bad", &["EAAB-secret-1".into()]),
            "token [REDACTED] bad"
        );
    }
}
