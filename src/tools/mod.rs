//! Tools: one `tools/<id>.toml` per configured destination, each backed by an
//! adapter (one file per adapter, one trait for all).
//!
//! An adapter turns an event into deliveries (outgoing requests, or lines for
//! the console) and, optionally, instructions for the visitor's browser. It
//! never sends anything itself: the delivery queue does, with retries.

pub mod amplitude;
pub mod bing;
pub mod console;
pub mod custom_image;
pub mod ecommerce;
pub mod facebook_pixel;
pub mod google_ads;
pub mod google_analytics_4;
pub mod guard;
pub mod http;
pub mod json_batch;
pub mod linkedin;
pub mod mixpanel;
pub mod pii;
pub mod pinterest;
pub mod props;
pub mod reddit;
pub mod segment;
pub mod snapchat;
pub mod tiktok;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::collections::BTreeMap;

use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::config::Problem;
use crate::event::{Event, Kind};
use crate::rules::template::{check_path, Context, Template, TemplateValue, Variables};
use crate::rules::{Action, TriggerRef, Triggers};

/// Which automated actions a tool runs, or an adapter supports (SPEC §7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Automated {
    pub pageview: bool,
    pub track: bool,
    pub ecommerce: bool,
}

impl Automated {
    pub const ALL: Automated = Automated {
        pageview: true,
        track: true,
        ecommerce: true,
    };

    /// The actions turned on here that `supported` lacks.
    pub fn unsupported(&self, supported: Automated) -> Vec<&'static str> {
        [
            ("pageview", self.pageview, supported.pageview),
            ("track", self.track, supported.track),
            ("ecommerce", self.ecommerce, supported.ecommerce),
        ]
        .into_iter()
        .filter(|(_, on, ok)| *on && !ok)
        .map(|(name, _, _)| name)
        .collect()
    }

    pub fn covers(&self, kind: Kind) -> bool {
        match kind {
            Kind::Pageview => self.pageview,
            Kind::Track => self.track,
            Kind::Ecommerce => self.ecommerce,
        }
    }
}

/// The adapter-independent part of a tool file (SPEC §2).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolFile {
    #[serde(rename = "type")]
    #[schemars(with = "String")]
    pub adapter: toml::Spanned<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub purposes: Vec<String>,
    pub tcf_vendor_id: Option<u32>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub blocking: Vec<toml::Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub endpoint: Option<toml::Spanned<String>>,
    /// Checked by the adapter, which reads the file again for its own type.
    #[schemars(
        with = "Option<serde_json::Map<String, Value>>",
        description = "The adapter's own settings; which keys depends on `type`"
    )]
    pub settings: Option<toml::Spanned<toml::Table>>,
    #[schemars(with = "Option<Automated>")]
    pub automated: Option<toml::Spanned<Automated>>,
    /// Custom actions.
    #[serde(default)]
    #[schemars(with = "Vec<ActionConfig>")]
    pub actions: Vec<toml::Spanned<ActionConfig>>,
}

/// `[[actions]]` in a tool file (SPEC §2, §7).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    pub name: String,
    pub kind: String,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub firing: Vec<toml::Spanned<String>>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub blocking: Vec<toml::Spanned<String>>,
    #[serde(default)]
    pub include_event_properties: bool,
    #[serde(default)]
    pub include_system_properties: bool,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Value>")]
    pub fields: BTreeMap<String, toml::Spanned<TemplateValue>>,
}

fn yes() -> bool {
    true
}

impl ToolFile {
    /// The adapter's name (`type`).
    pub fn adapter_name(&self) -> &str {
        self.adapter.get_ref()
    }

    /// The problem of a required setting left out: `<type> needs
    /// settings.<key>`, at the settings table (see [`settings_at`](Self::settings_at)).
    pub fn missing_setting(&self, path: &Path, text: &str, key: &str) -> Problem {
        Problem::at(
            path,
            text,
            self.settings_at(),
            format!("{} needs settings.{key}", self.adapter_name()),
        )
    }

    /// Where a problem with the settings table is reported: the table, or
    /// the `type` line when there is none.
    pub fn settings_at(&self) -> usize {
        self.settings
            .as_ref()
            .map_or(self.adapter.span().start, |s| s.span().start)
    }

    /// Where `key` is written inside the settings table (the table itself
    /// when it cannot be found), so comments elsewhere cannot mislead.
    pub fn settings_key_at(&self, text: &str, key: &str) -> usize {
        match &self.settings {
            Some(s) => {
                let span = s.span();
                // The table's span may cover only its `[settings]` header:
                // look for a `key =` line from there to the next table.
                let mut at = span.start;
                for (n, line) in text[span.start.min(text.len())..]
                    .split_inclusive('\n')
                    .enumerate()
                {
                    let trimmed = line.trim_start();
                    if n > 0 && trimmed.starts_with('[') {
                        break;
                    }
                    let key_at = trimmed
                        .strip_prefix(key)
                        .is_some_and(|rest| rest.trim_start().starts_with('='));
                    if key_at {
                        return at + (line.len() - trimmed.len());
                    }
                    at += line.len();
                }
                text.get(span.clone())
                    .and_then(|t| t.find(key))
                    .map_or(span.start, |i| span.start + i)
            }
            None => self.settings_at(),
        }
    }

    /// The `[automated]` table (all off when absent).
    pub fn automated(&self) -> Automated {
        self.automated
            .as_ref()
            .map(|a| *a.get_ref())
            .unwrap_or_default()
    }
}

/// A loaded, enabled tool.
pub struct Tool {
    pub id: String,
    pub file: ToolFile,
    pub adapter: Box<dyn Adapter>,
    /// Tool-level blocking triggers: when one fires, the tool gets nothing.
    pub blocking: Vec<TriggerRef>,
    pub actions: Vec<Action>,
    /// Remarks for `check` (each `| raw`), with their positions.
    pub warnings: Vec<Problem>,
    /// Where this tool's requests may go (see [`Adapter::origins`]).
    pub origins: Vec<url::Origin>,
}

/// One outgoing HTTP request, fully rendered: what the delivery queue sends
/// and (later) what the spool stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

/// What a delivery does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Payload {
    Http(HttpRequest),
    /// A line for stdout (the `console` tool).
    Stdout(String),
}

impl Payload {
    /// Whether `secret` appears in the request (as is, JSON-escaped or
    /// percent-encoded; see [`crate::delivery::deadletter::secret_forms`]).
    pub fn contains(&self, secret: &str) -> bool {
        let forms = crate::delivery::deadletter::secret_forms(secret);
        // memchr's substring search (SIMD), not a window per byte: this
        // runs for every secret of every delivery built.
        let has = |hay: &[u8]| {
            forms
                .iter()
                .any(|f| memchr::memmem::find(hay, f.as_bytes()).is_some())
        };
        match self {
            Payload::Stdout(line) => has(line.as_bytes()),
            Payload::Http(req) => {
                has(req.url.as_bytes())
                    || req.headers.iter().any(|(_, v)| has(v.as_bytes()))
                    || req.body.as_deref().is_some_and(has)
            }
        }
    }
}

/// One unit of work for the delivery queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub tool: String,
    pub event_id: String,
    pub payload: Payload,
    /// What the request was built from, so a dead letter can be built again
    /// with the current tool config (`deadletter replay`). `None` for
    /// deliveries stored by older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Box<Source>>,
    /// Credentials that appear in `payload` (secret variables' values, tool
    /// settings such as Meta's `access_token`): a dead letter stores the
    /// request with these redacted, and never this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

impl Delivery {
    /// A delivery with no source and no known secrets.
    pub fn new(tool: impl Into<String>, event_id: impl Into<String>, payload: Payload) -> Delivery {
        Delivery {
            tool: tool.into(),
            event_id: event_id.into(),
            payload,
            source: None,
            secrets: Vec::new(),
        }
    }
}

/// Where a delivery came from: the event, and which of its tool's requests
/// for that event it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// Shared by every delivery of the event and by its trail record: one
    /// copy of the event per event, not one per delivery (issue 14).
    pub event: crate::event::SharedRecord,
    /// The custom action (its index in the tool file's `[[actions]]`), or
    /// `None` for the tool's automated action.
    pub action: Option<usize>,
    /// The custom action's name when it was built, so a reordered tool file
    /// still finds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_name: Option<String>,
    /// Which of that action's requests (from 0), in the adapter's order.
    pub part: usize,
}

/// What an adapter made of one event.
#[derive(Debug, Default)]
pub struct Output {
    pub payloads: Vec<Payload>,
    /// Browser instructions (`{"fetch": url}`).
    pub instructions: Vec<Value>,
    /// Cookies the tool keeps in the visitor's browser; the collector sets
    /// them with its own `Set-Cookie` headers (SPEC §5).
    pub cookies: Vec<ToolCookie>,
}

/// Longest life of any cookie tagproxy sets (SPEC §9: at most one year).
pub const MAX_COOKIE_SECS: u64 = 365 * 24 * 3600;

/// A first-party cookie a tool keeps in the visitor's browser (Meta's
/// `_fbp` / `_fbc`, click ids). It is set by the collector's answer, never by
/// script: Safari caps script-written cookies at 7 days, server-set
/// first-party ones live as long as they ask (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCookie {
    /// The cookie name, as the destination's own tag names it (`_fbp`).
    pub name: String,
    /// The value, sent as is (no encoding): it must consist of RFC 6265
    /// cookie-octets, else the cookie is not set.
    pub value: String,
    /// Lifetime in seconds, as the destination documents it; capped at
    /// [`MAX_COOKIE_SECS`].
    pub max_age_secs: u64,
}

impl ToolCookie {
    /// The `Set-Cookie` header value: `Path=/`, `Max-Age` (at most a year),
    /// `SameSite=Lax`, `Domain` as for `tp_cid` (none: host-only), `Secure`
    /// when the page or the request is https. `None` when the name is not an
    /// RFC 6265 token or the value holds anything but cookie-octets.
    pub fn set_cookie_header(&self, domain: Option<&str>, secure: bool) -> Option<String> {
        let token = |b: u8| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b);
        let octet = |b: u8| b.is_ascii_graphic() && !b"\",;\\".contains(&b);
        if self.name.is_empty() || !self.name.bytes().all(token) || !self.value.bytes().all(octet) {
            return None;
        }
        let mut h = format!(
            "{}={}; Path=/; Max-Age={}; SameSite=Lax",
            self.name,
            self.value,
            self.max_age_secs.min(MAX_COOKIE_SECS)
        );
        if let Some(d) = domain {
            h.push_str("; Domain=");
            h.push_str(d);
        }
        if secure {
            h.push_str("; Secure");
        }
        Some(h)
    }
}

/// Adds `new` to `cookies`, one per name: a later value replaces an earlier
/// one (the newest click id wins), so an answer never sets a name twice.
pub fn merge_cookies(cookies: &mut Vec<ToolCookie>, new: impl IntoIterator<Item = ToolCookie>) {
    for c in new {
        match cookies.iter_mut().find(|o| o.name == c.name) {
            Some(old) => *old = c,
            None => cookies.push(c),
        }
    }
}

/// What adapters render their templates with.
pub struct BuildContext<'a> {
    pub tool_id: &'a str,
    pub variables: &'a Variables,
    /// When building a custom action: its index in the tool file's
    /// `[[actions]]` (adapters that compile an action's fields at load, like
    /// `http`, find them by it).
    pub action: Option<usize>,
}

impl BuildContext<'_> {
    pub fn template_context<'e>(&'e self, event: &'e Event) -> Context<'e> {
        Context {
            client: &event.client,
            system: &event.system,
            variables: self.variables,
        }
    }

    pub fn render(&self, t: &Template, event: &Event) -> String {
        t.render(&self.template_context(event))
    }
}

/// A destination type. One implementation per file in this module.
pub trait Adapter: Send + Sync {
    /// The automated actions this adapter can map to native events.
    fn supports(&self) -> Automated;

    /// The deliveries for `event`, which one of the tool's automated actions
    /// selected.
    fn automated(&self, event: &Event, cx: &BuildContext<'_>) -> Output;

    /// Custom action kinds, each with the fields it requires.
    fn action_kinds(&self) -> &'static [(&'static str, &'static [&'static str])];

    /// The deliveries of a custom action of `kind` with rendered `fields`.
    fn custom(
        &self,
        kind: &str,
        fields: Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output;

    /// The credentials this tool puts into its requests for `event` (Meta's
    /// `access_token`, GA4's `api_secret`), rendered: dead letters store
    /// requests with them redacted. Secret variables and `Authorization`
    /// headers are redacted for every tool without being listed here.
    fn credentials(&self, _event: &Event, _cx: &BuildContext<'_>) -> Vec<String> {
        Vec::new()
    }

    /// Whether the destination counts `event` as a key event (a conversion);
    /// it makes the session engaged (GA4's engaged sessions).
    fn key_event(&self, _event: &Event) -> bool {
        false
    }

    /// Remarks for `tagproxy check` about the tool file (`FILE:LINE:COL:
    /// message` lines) that do not stop it from running.
    fn check_warnings(&self, _path: &Path, _text: &str, _file: &ToolFile) -> Vec<String> {
        Vec::new()
    }

    /// Every template the tool's settings hold, for validation.
    fn templates(&self) -> Vec<&Template> {
        Vec::new()
    }

    /// The origins (scheme, host, port) this tool's requests may go to, all
    /// fixed by its file or the adapter's default `endpoint`. A request
    /// elsewhere is refused before it is queued ([`guard`]). Empty: not
    /// declared; only well-formedness is checked.
    fn origins(&self) -> Vec<url::Origin> {
        Vec::new()
    }

    /// The largest request body the destination takes, in bytes.
    fn max_body_bytes(&self) -> usize {
        guard::MAX_BODY_BYTES
    }

    /// How to read the destination's answers where the status alone does
    /// not tell (an error inside a `200` body, a throttling code, the
    /// message worth logging). `None`: the status decides ([`crate::delivery::retry`]).
    fn answer_reader(&self) -> Option<AnswerReader> {
        None
    }

    /// Batched delivery (SPEC §8): how the destination takes several of this
    /// adapter's requests in one call, when it has a batch API. The adapter
    /// keeps building one request per event; the engine groups, joins,
    /// acknowledges and retries ([`crate::delivery::batch`]). `None` (the
    /// default): one request per delivery.
    fn batching(&self) -> Option<Arc<dyn crate::delivery::Batching>> {
        None
    }
}

/// Reads one answer of a destination: its status and (the start of) its
/// body. `None` leaves the verdict to the status; `Some` replaces it (a
/// `Retry` keeps the answer's `Retry-After`).
pub type AnswerReader = fn(status: u16, body: &str) -> Option<crate::delivery::Verdict>;

/// The origin of a base URL (an `endpoint`), as a one-item list for
/// [`Adapter::origins`]; empty when it has none.
pub fn origin_list(base: &str) -> Vec<url::Origin> {
    crate::rules::url_template::origin_of(base)
        .map(|o| vec![o])
        .unwrap_or_default()
}

/// A template in a settings table; parsed while deserializing so errors carry
/// the value's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateString(pub Template);

impl schemars::JsonSchema for TemplateString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TemplateString".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "Text with {{ … }} placeholders (client.*, system.*, $variable)"
        })
    }
}

impl<'de> Deserialize<'de> for TemplateString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Template::parse(&s)
            .map(TemplateString)
            .map_err(serde::de::Error::custom)
    }
}

/// Reads the `[settings]` table of a tool file as `S`, with positions.
pub fn parse_settings<S: DeserializeOwned + Default>(
    path: &Path,
    text: &str,
) -> Result<S, Problem> {
    #[derive(Deserialize)]
    struct Only<S> {
        #[serde(default)]
        settings: Option<S>,
    }
    toml::from_str::<Only<S>>(text)
        .map(|o| o.settings.unwrap_or_default())
        .map_err(|e| Problem::from_toml(path, text, &e))
}

/// The tool's base URL: its `endpoint`, else the adapter's default.
pub fn endpoint(file: &ToolFile, default: &str) -> String {
    file.endpoint
        .as_ref()
        .map(|e| e.get_ref().as_str())
        .unwrap_or(default)
        .trim_end_matches('/')
        .to_string()
}

/// Builds the adapter named by `file.adapter`.
fn make_adapter(
    path: &Path,
    text: &str,
    file: &ToolFile,
    variables: &Variables,
) -> Result<Box<dyn Adapter>, Problem> {
    Ok(match file.adapter.get_ref().as_str() {
        "google-analytics-4" => Box::new(google_analytics_4::Ga4::from_config(path, text, file)?),
        "facebook-pixel" => Box::new(facebook_pixel::MetaCapi::from_config(path, text, file)?),
        "http" => Box::new(http::Http::from_config(path, text, file, variables)?),
        "console" => Box::new(console::Console),
        "segment" => Box::new(segment::Segment::from_config(path, text, file)?),
        "amplitude" => Box::new(amplitude::Amplitude::from_config(path, text, file)?),
        "mixpanel" => Box::new(mixpanel::Mixpanel::from_config(path, text, file)?),
        "pinterest" => Box::new(pinterest::Pinterest::from_config(path, text, file)?),
        "snapchat" => Box::new(snapchat::Snapchat::from_config(path, text, file)?),
        "reddit" => Box::new(reddit::Reddit::from_config(path, text, file)?),
        "custom-image" => Box::new(custom_image::CustomImage::from_config(
            path, text, file, variables,
        )?),
        "bing" => Box::new(bing::Bing::from_config(path, text, file)?),
        "linkedin" => Box::new(linkedin::LinkedIn::from_config(path, text, file)?),
        "tiktok" => Box::new(tiktok::TikTok::from_config(path, text, file)?),
        "google-ads" => Box::new(google_ads::GoogleAds::from_config(path, text, file)?),
        other => {
            let at = file.adapter.span().start;
            return Err(Problem::at(
                path,
                text,
                at,
                format!(
                    "unknown tool type `{other}`; known: google-analytics-4, facebook-pixel, http, console, segment, amplitude, mixpanel, tiktok, pinterest, snapchat, reddit, custom-image, bing, linkedin, google-ads"
                ),
            ));
        }
    })
}

/// One tool file's text: what [`from_text`] builds a tool from.
#[derive(Debug, Clone)]
pub struct ToolSource {
    /// The tool id (the file name without `.toml`).
    pub id: String,
    /// Where the file is (or will be): names it in messages.
    pub path: PathBuf,
    pub text: String,
}

/// Reads every `*.toml` in `dir`, sorted by path. A missing folder means no
/// tools.
///
/// # Errors
/// The folder or a file cannot be read.
pub fn read_sources(dir: &Path) -> Result<Vec<ToolSource>, Vec<Problem>> {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(vec![Problem {
                file: dir.to_path_buf(),
                line: 1,
                col: 1,
                message: format!("cannot read tools folder: {e}"),
            }])
        }
    };
    paths.sort();
    let mut sources = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => sources.push(ToolSource {
                id: path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("")
                    .to_string(),
                path,
                text,
            }),
            Err(e) => problems.push(Problem {
                file: path.clone(),
                line: 1,
                col: 1,
                message: format!("cannot read tool file: {e}"),
            }),
        }
    }
    if problems.is_empty() {
        Ok(sources)
    } else {
        Err(problems)
    }
}

/// Builds the tools of `sources` (disabled ones left out), collecting every
/// problem.
pub fn from_sources(
    sources: &[ToolSource],
    variables: &Variables,
    triggers: &Triggers,
) -> Result<Vec<Tool>, Vec<Problem>> {
    let mut tools = Vec::new();
    let mut problems = Vec::new();
    for s in sources {
        match from_text(&s.id, &s.path, &s.text, variables, triggers) {
            Ok(Some(tool)) => tools.push(tool),
            Ok(None) => {}
            Err(mut p) => problems.append(&mut p),
        }
    }
    if problems.is_empty() {
        Ok(tools)
    } else {
        Err(problems)
    }
}

/// Loads every `*.toml` in `dir` (sorted; the file name is the tool id).
/// A missing folder means no tools.
pub fn load_dir(
    dir: &Path,
    variables: &Variables,
    triggers: &Triggers,
) -> Result<Vec<Tool>, Vec<Problem>> {
    from_sources(&read_sources(dir)?, variables, triggers)
}

/// Loads one tool file; `None` when it is disabled.
pub fn load_file(
    path: &Path,
    variables: &Variables,
    triggers: &Triggers,
) -> Result<Option<Tool>, Vec<Problem>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Problem {
            file: path.to_path_buf(),
            line: 1,
            col: 1,
            message: format!("cannot read tool file: {e}"),
        }]
    })?;
    let id = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("")
        .to_string();
    from_text(&id, path, &text, variables, triggers)
}

/// Builds tool `id` from the text of its file (`path` names it in messages).
pub fn from_text(
    id: &str,
    path: &Path,
    text: &str,
    variables: &Variables,
    triggers: &Triggers,
) -> Result<Option<Tool>, Vec<Problem>> {
    let text = text.to_string();
    let id = id.to_string();
    let mut problems = Vec::new();
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        problems.push(Problem::at(
            path,
            &text,
            0,
            format!("tool id `{id}` (the file name) may only hold letters, digits, '_' and '-'"),
        ));
    }
    let file: ToolFile =
        toml::from_str(&text).map_err(|e| vec![Problem::from_toml(path, &text, &e)])?;
    if let Some(endpoint) = &file.endpoint {
        // Adapters append their own paths and queries to it.
        let ok = url::Url::parse(endpoint.get_ref()).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.query().is_none()
                && u.fragment().is_none()
        });
        if !ok {
            problems.push(Problem::at(
                path,
                &text,
                endpoint.span().start,
                format!(
                    "invalid endpoint {:?}: expected an http(s) URL without query or fragment",
                    endpoint.get_ref()
                ),
            ));
        }
    }
    let adapter = match make_adapter(path, &text, &file, variables) {
        Ok(a) => a,
        Err(p) => {
            problems.push(p);
            return Err(problems);
        }
    };
    let automated_at = file.automated.as_ref().map_or(0, |a| a.span().start);
    for name in file.automated().unsupported(adapter.supports()) {
        problems.push(Problem::at(
            path,
            &text,
            automated_at,
            format!(
                "the `{}` adapter has no automated `{name}` action",
                file.adapter_name()
            ),
        ));
    }
    for t in adapter.templates() {
        for p in t.paths() {
            if let Some(msg) = check_path(p, variables) {
                let needle = match &p.root {
                    crate::rules::template::Root::Variable(v) => format!("${v}"),
                    _ => p.segments.last().cloned().unwrap_or_default(),
                };
                let at = placeholder_at(&text, file.settings_at(), &needle);
                problems.push(Problem::at(path, &text, at, msg));
            }
        }
    }
    let resolve =
        |list: &[toml::Spanned<String>], problems: &mut Vec<Problem>| -> Vec<TriggerRef> {
            list.iter()
                .filter_map(|t| {
                    let r = triggers.resolve(t.get_ref());
                    if r.is_none() {
                        problems.push(Problem::at(
                            path,
                            &text,
                            t.span().start,
                            format!("unknown trigger `{}`", t.get_ref()),
                        ));
                    }
                    r
                })
                .collect()
        };
    let blocking = resolve(&file.blocking, &mut problems);
    let mut actions = Vec::new();
    for spanned in &file.actions {
        let a = spanned.get_ref();
        let at = spanned.span().start;
        let firing = resolve(&a.firing, &mut problems);
        let action_blocking = resolve(&a.blocking, &mut problems);
        if a.firing.is_empty() {
            problems.push(Problem::at(
                path,
                &text,
                at,
                format!("action `{}` has no firing trigger", a.name),
            ));
        }
        match adapter.action_kinds().iter().find(|(k, _)| *k == a.kind) {
            None => {
                let known: Vec<&str> = adapter.action_kinds().iter().map(|(k, _)| *k).collect();
                problems.push(Problem::at(
                    path,
                    &text,
                    at,
                    format!(
                        "action `{}`: unknown kind `{}` for {} (known: {})",
                        a.name,
                        a.kind,
                        file.adapter_name(),
                        known.join(", ")
                    ),
                ));
            }
            Some((_, required)) => {
                for field in *required {
                    if !a.fields.contains_key(*field) {
                        problems.push(Problem::at(
                            path,
                            &text,
                            at,
                            format!("action `{}`: missing field `{field}`", a.name),
                        ));
                    }
                }
            }
        }
        for (name, value) in &a.fields {
            for t in value.get_ref().templates() {
                for p in t.paths() {
                    if let Some(msg) = check_path(p, variables) {
                        problems.push(Problem::at(
                            path,
                            &text,
                            value.span().start,
                            format!("action `{}` field `{name}`: {msg}", a.name),
                        ));
                    }
                }
            }
        }
        actions.push(Action {
            index: actions.len(),
            name: a.name.clone(),
            kind: a.kind.clone(),
            firing,
            blocking: action_blocking,
            include_event_properties: a.include_event_properties,
            include_system_properties: a.include_system_properties,
            fields: a
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.get_ref().clone()))
                .collect(),
        });
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if !file.enabled {
        return Ok(None);
    }
    Ok(Some(Tool {
        id,
        warnings: raw_warnings(path, &text),
        origins: adapter.origins(),
        file,
        adapter,
        blocking,
        actions,
    }))
}

/// Where `needle` is first written inside a `{{ … }}` placeholder at or
/// after byte `from` (the settings table), so a comment or a literal that
/// mentions the same name is not blamed; `from` when there is none.
fn placeholder_at(text: &str, from: usize, needle: &str) -> usize {
    let from = from.min(text.len());
    if needle.is_empty() {
        // Found everywhere, and the search below would not advance.
        return from;
    }
    let mut search = from;
    while let Some(i) = text.get(search..).and_then(|t| t.find(needle)) {
        let at = search + i;
        let before = &text[from..at];
        let inside = before
            .rfind("{{")
            .is_some_and(|open| before.rfind("}}").is_none_or(|close| open > close));
        if inside {
            return at;
        }
        search = at + needle.len();
    }
    from
}

/// A warning at every `{{ … | raw }}` of a tool file: values inserted
/// without encoding, which a visitor can use to change the request.
fn raw_warnings(path: &Path, text: &str) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find("{{").map(|i| from + i) {
        let Some(close) = text[open..].find("}}").map(|i| open + i + 2) else {
            break;
        };
        let source = &text[open..close];
        if Template::parse(source).is_ok_and(|t| t.raw_sources().next().is_some()) {
            out.push(Problem::at(
                path,
                text,
                open,
                format!(
                    "`{source}` is inserted without encoding: a visitor's value can change the request's structure (in an http tool's url or text body; elsewhere values are still encoded for their place)"
                ),
            ));
        }
        from = close;
    }
    out
}

/// Shared, read-only set of tools.
pub type Tools = Arc<Vec<Tool>>;

/// `scheme://host[:port]` of each origin, for tests to compare.
#[cfg(test)]
pub(crate) fn origin_names(origins: &[url::Origin]) -> Vec<String> {
    origins
        .iter()
        .map(url::Origin::ascii_serialization)
        .collect()
}

#[cfg(test)]
mod hostile_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// A secret is found wherever a request carries it, in each form it
    /// takes there (as is, JSON-escaped, percent-encoded); the delivery's
    /// `secrets` list, and so what a dead letter redacts, is built on it.
    #[test]
    fn payload_contains_a_secret_in_every_place_and_form() {
        let secret = "tok/en \"x\"";
        let request = |url: &str, headers: Vec<(String, String)>, body: Option<&str>| {
            Payload::Http(HttpRequest {
                method: "POST".into(),
                url: url.into(),
                headers,
                body: body.map(|b| b.as_bytes().to_vec()),
            })
        };
        let in_url = request("https://d.example/?k=tok%2Fen%20%22x%22", vec![], None);
        let in_form = request("https://d.example/?k=tok%2Fen+%22x%22", vec![], None);
        let in_header = request(
            "https://d.example/",
            vec![("authorization".into(), format!("Bearer {secret}"))],
            None,
        );
        let in_json = request(
            "https://d.example/",
            vec![],
            Some(&serde_json::json!({ "access_token": secret }).to_string()),
        );
        for (place, payload) in [
            ("url", &in_url),
            ("form", &in_form),
            ("header", &in_header),
            ("json body", &in_json),
        ] {
            assert!(payload.contains(secret), "{place}");
            assert!(!payload.contains("another-secret"), "{place}");
        }
        assert!(Payload::Stdout(format!("line {secret}")).contains(secret));
        assert!(!Payload::Stdout("line".into()).contains(secret));
        // Too short to be told from ordinary text: never counted.
        assert!(!in_header.contains("tok"));
    }

    /// Every required adapter supports all three automated actions, so this
    /// rule is tested on its own: an adapter without ecommerce rejects a tool
    /// that turns it on.
    #[test]
    fn unsupported_automated_actions_are_named() {
        let no_ecommerce = Automated {
            pageview: true,
            track: true,
            ecommerce: false,
        };
        assert_eq!(Automated::ALL.unsupported(no_ecommerce), vec!["ecommerce"]);
        let wanted = Automated {
            pageview: true,
            ..Default::default()
        };
        assert!(wanted.unsupported(no_ecommerce).is_empty());
        assert_eq!(
            Automated::ALL.unsupported(Automated::default()),
            vec!["pageview", "track", "ecommerce"]
        );
    }

    #[test]
    fn tool_cookie_headers() {
        let c = |name: &str, value: &str, max_age_secs: u64| ToolCookie {
            name: name.into(),
            value: value.into(),
            max_age_secs,
        };
        assert_eq!(
            c("_fbp", "fb.1.1732449000000.1", 7_776_000)
                .set_cookie_header(Some("example.com"), true)
                .unwrap(),
            "_fbp=fb.1.1732449000000.1; Path=/; Max-Age=7776000; SameSite=Lax; Domain=example.com; Secure"
        );
        // At most a year; host-only without a domain; not Secure over http.
        assert_eq!(
            c("_gcl_aw", "GCL.1.x", 10 * MAX_COOKIE_SECS)
                .set_cookie_header(None, false)
                .unwrap(),
            "_gcl_aw=GCL.1.x; Path=/; Max-Age=31536000; SameSite=Lax"
        );
        // Nothing that could add attributes or another cookie.
        for (name, value) in [
            ("_fbc", "a; Domain=evil.test"),
            ("_fbc", "a b"),
            ("_fbc", "a,b"),
            ("_fbc", "\"a\""),
            ("_fbc", "é"),
            ("a=b", "x"),
            ("", "x"),
        ] {
            assert_eq!(c(name, value, 1).set_cookie_header(None, false), None);
        }
    }

    #[test]
    fn one_cookie_per_name_the_newest_wins() {
        let c = |name: &str, value: &str| ToolCookie {
            name: name.into(),
            value: value.into(),
            max_age_secs: 60,
        };
        let mut all = vec![c("_fbp", "1"), c("_fbc", "old")];
        merge_cookies(&mut all, [c("_fbc", "new"), c("_fbp", "1"), c("_ttp", "t")]);
        assert_eq!(all, [c("_fbp", "1"), c("_fbc", "new"), c("_ttp", "t")]);
    }

    /// Each automated action switch selects its own kind of event, and only
    /// that one: a tool with pageviews on gets no track events.
    #[test]
    fn automated_covers_each_kind_by_its_own_switch() {
        let only = |pageview, track, ecommerce| Automated {
            pageview,
            track,
            ecommerce,
        };
        let kinds = [Kind::Pageview, Kind::Track, Kind::Ecommerce];
        for (on, expect) in [
            (only(true, false, false), [true, false, false]),
            (only(false, true, false), [false, true, false]),
            (only(false, false, true), [false, false, true]),
        ] {
            let got: Vec<bool> = kinds.iter().map(|k| on.covers(*k)).collect();
            assert_eq!(got, expect, "{on:?}");
        }
        assert!(kinds.iter().all(|k| !Automated::default().covers(*k)));
    }

    fn tool_file(text: &str) -> ToolFile {
        toml::from_str(text).unwrap()
    }

    /// Settings problems point at the `[settings]` table, at the `key =`
    /// line inside it when there is one, and at `type` when there is no
    /// table: `check` prints these positions (SPEC §2).
    #[test]
    fn settings_problems_point_at_the_table_and_the_key() {
        let path = Path::new("tools/t.toml");
        let text = "type = \"segment\"\n# write_key is set below\n[settings]\nother = 1\n  write_key   = \"k\"\n[automated]\nwrite_key = 2\n";
        let file = tool_file(&text.replace("write_key = 2", "pageview = true"));
        let text = text.replace("write_key = 2", "pageview = true");
        assert_eq!(file.adapter_name(), "segment");
        let table = text.find("[settings]").unwrap();
        assert_eq!(file.settings_at(), table);
        // The key's line inside the table, indented, not the comment above.
        let key = text.find("write_key   =").unwrap();
        assert_eq!(file.settings_key_at(&text, "write_key"), key);
        // A key that is only a prefix of another is not it.
        assert_eq!(file.settings_key_at(&text, "write"), table);
        // Not found in the table: the table.
        assert_eq!(file.settings_key_at(&text, "pageview"), table);
        let problem = file.missing_setting(path, &text, "api_host");
        assert_eq!(
            (problem.line, problem.col, problem.message.as_str()),
            (3, 1, "segment needs settings.api_host")
        );

        // No table: the `type` value.
        let bare = "\n\ntype = \"segment\"\n";
        let file = tool_file(bare);
        let at = bare.find("\"segment\"").unwrap();
        assert_eq!(file.settings_at(), at);
        assert_eq!(file.settings_key_at(bare, "write_key"), at);

        // An inline table: its span is the value, and the key is found
        // inside it.
        let inline = "type = \"segment\"\nsettings = { a = 1, write_key = \"k\" }\n";
        let file = tool_file(inline);
        assert_eq!(
            file.settings_key_at(inline, "write_key"),
            inline.find("write_key").unwrap()
        );
    }

    /// Tool files are read in path order, only `*.toml`; a missing folder
    /// means no tools, and an unreadable file is named.
    #[test]
    fn read_sources_reads_toml_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_sources(&dir.path().join("absent")).unwrap().is_empty());
        for (name, text) in [("b.toml", "B"), ("a.toml", "A"), ("notes.txt", "N")] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let got: Vec<(String, String)> = read_sources(dir.path())
            .unwrap()
            .into_iter()
            .map(|s| (s.id, s.text))
            .collect();
        assert_eq!(got, [("a".into(), "A".into()), ("b".into(), "B".into())]);
        std::fs::create_dir(dir.path().join("c.toml")).unwrap();
        let problems = read_sources(dir.path()).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].file.ends_with("c.toml"));
        assert!(problems[0].message.starts_with("cannot read tool file"));
        // A file where the folder should be cannot be listed.
        let problems = read_sources(&dir.path().join("a.toml")).unwrap_err();
        assert!(problems[0].message.starts_with("cannot read tools folder"));
    }

    /// An adapter declares nothing it does not override: no credentials, no
    /// warnings, no templates, no origins.
    #[test]
    fn adapter_defaults_declare_nothing() {
        let file = tool_file("type = \"console\"\n");
        let req = crate::event::RequestInfo {
            ip: None,
            user_agent: crate::event::ua::UaParser::default().parse("Mozilla/5.0"),
            cookies: Default::default(),
            location: Map::new(),
        };
        let input = crate::event::EventInput {
            kind: Some(Kind::Pageview),
            ..Default::default()
        };
        let now = crate::event::now_ms();
        let mut tracker = crate::event::identity::Tracker::from_cookie_header("", now / 1000);
        let event = Event::build(input, &req, tracker.next_event(), now);
        let variables = Variables::default();
        let cx = BuildContext {
            tool_id: "c",
            variables: &variables,
            action: None,
        };
        let console = console::Console;
        assert!(console.credentials(&event, &cx).is_empty());
        assert!(console
            .check_warnings(Path::new("c.toml"), "", &file)
            .is_empty());
        assert!(console.templates().is_empty());
        assert!(console.origins().is_empty());
    }

    #[test]
    fn origin_list_is_the_endpoints_origin() {
        assert_eq!(
            origin_names(&origin_list("https://collect.example:8443/base")),
            ["https://collect.example:8443"]
        );
        assert!(origin_list("not a url").is_empty());
    }

    /// The JSON schema (`tagproxy schema`) says a template is a string.
    #[test]
    fn template_string_schema_is_a_string() {
        let schema = schemars::schema_for!(TemplateString);
        let v = serde_json::to_value(&schema).unwrap();
        assert_eq!(v["type"], "string");
        assert!(v["description"].as_str().unwrap().contains("{{"));
    }

    fn build(id: &str, text: &str) -> Result<Option<Tool>, Vec<Problem>> {
        from_text(
            id,
            Path::new("tools/t.toml"),
            text,
            &Variables::default(),
            &Triggers::default(),
        )
    }

    fn messages(problems: &[Problem]) -> Vec<String> {
        problems
            .iter()
            .map(|p| format!("{}:{} {}", p.line, p.col, p.message))
            .collect()
    }

    /// The file name is the tool id, which names the tool in metrics, dead
    /// letters and the spool: only letters, digits, `_` and `-`.
    #[test]
    fn tool_ids_are_checked() {
        assert!(build("shop-ga4_2", "type = \"console\"\n").is_ok());
        for id in ["", "a b", "a.b", "ä"] {
            let problems = build(id, "type = \"console\"\n").err().unwrap();
            assert_eq!(
                messages(&problems),
                [format!(
                    "1:1 tool id `{id}` (the file name) may only hold letters, digits, '_' and '-'"
                )],
                "{id:?}"
            );
        }
    }

    /// An `endpoint` is an http(s) base URL: adapters append paths and
    /// queries to it.
    #[test]
    fn endpoints_are_checked() {
        for ok in ["https://collect.example", "http://127.0.0.1:9/base/"] {
            let text = format!("type = \"console\"\nendpoint = \"{ok}\"\n");
            assert!(build("t", &text).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://collect.example",
            "https://collect.example/?a=1",
            "https://collect.example/#top",
            "collect.example",
            "mailto:a@b.example",
        ] {
            let text = format!("type = \"console\"\nendpoint = \"{bad}\"\n");
            let problems = build("t", &text).err().unwrap();
            assert_eq!(
                messages(&problems),
                [format!(
                    "2:12 invalid endpoint {bad:?}: expected an http(s) URL without query or fragment"
                )],
            );
        }
    }

    /// Every problem of the actions is reported in one pass, each at its
    /// action: unknown triggers, no firing trigger, an unknown kind, a
    /// missing required field, an unknown variable in a field.
    #[test]
    fn action_problems_are_all_reported_at_their_place() {
        let text = r#"type = "http"
blocking = ["nope"]

[[actions]]
name = "a"
kind = "request"
firing = ["Pageview", "missing"]
blocking = ["also-missing"]
fields = { url = "https://h.example/{{ $undefined }}" }

[[actions]]
name = "b"
kind = "teleport"
firing = []

[[actions]]
name = "c"
kind = "request"
firing = ["Pageview"]
"#;
        let problems = build("t", text).err().unwrap();
        assert_eq!(
            messages(&problems),
            [
                "2:13 unknown trigger `nope`",
                "7:23 unknown trigger `missing`",
                "8:13 unknown trigger `also-missing`",
                "9:18 action `a` field `url`: unknown variable `$undefined`",
                "11:1 action `b` has no firing trigger",
                "11:1 action `b`: unknown kind `teleport` for http (known: request)",
                "16:1 action `c`: missing field `url`",
            ]
        );
    }

    /// A disabled tool is checked like any other, then left out.
    #[test]
    fn disabled_tools_are_checked_then_left_out() {
        let text = "type = \"console\"\nenabled = false\n";
        assert!(build("t", text).unwrap().is_none());
        let broken = "type = \"console\"\nenabled = false\nblocking = [\"nope\"]\n";
        assert!(build("t", broken).is_err());

        let text = r#"type = "console"
blocking = ["Pageview"]

[[actions]]
name = "first"
kind = "log"
firing = ["Pageview"]

[[actions]]
name = "second"
kind = "log"
firing = ["Pageview"]
blocking = ["Pageview"]
include_event_properties = true
include_system_properties = true
fields = { note = "{{ client.note | raw }}" }
"#;
        let tool = build("shop", text).unwrap().unwrap();
        assert_eq!(tool.id, "shop");
        assert_eq!(tool.blocking.len(), 1);
        let shape: Vec<_> = tool
            .actions
            .iter()
            .map(|a| {
                (
                    a.index,
                    a.name.as_str(),
                    a.kind.as_str(),
                    a.firing.len(),
                    a.blocking.len(),
                    a.include_event_properties,
                    a.include_system_properties,
                    a.fields.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                (0, "first", "log", 1, 0, false, false, vec![]),
                (
                    1,
                    "second",
                    "log",
                    1,
                    1,
                    true,
                    true,
                    vec!["note".to_string()]
                ),
            ]
        );
        // The `| raw` placeholder is remarked on, at its place.
        assert_eq!(tool.warnings.len(), 1);
        assert_eq!((tool.warnings[0].line, tool.warnings[0].col), (16, 20));
    }

    /// A folder loads every tool file in order and leaves disabled ones out;
    /// problems of every file are collected, not only the first file's.
    #[test]
    fn load_dir_and_load_file() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("b.toml", "type = \"console\"\n");
        write("a.toml", "type = \"console\"\n");
        write("off.toml", "type = \"console\"\nenabled = false\n");
        let (variables, triggers) = (Variables::default(), Triggers::default());
        let tools = load_dir(dir.path(), &variables, &triggers).unwrap();
        let ids: Vec<&str> = tools.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);

        let one = load_file(&dir.path().join("b.toml"), &variables, &triggers).unwrap();
        assert_eq!(one.unwrap().id, "b");
        assert!(
            load_file(&dir.path().join("off.toml"), &variables, &triggers)
                .unwrap()
                .is_none()
        );
        let problems = load_file(&dir.path().join("absent.toml"), &variables, &triggers)
            .err()
            .unwrap();
        assert!(problems[0].message.starts_with("cannot read tool file"));

        write("c.toml", "type = \"teleporter\"\n");
        write("d.toml", "type = \"console\"\nblocking = [\"nope\"]\n");
        let problems = load_dir(dir.path(), &variables, &triggers).err().unwrap();
        let files: Vec<_> = problems
            .iter()
            .map(|p| p.file.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(files, ["c.toml", "d.toml"]);
        assert!(problems[0]
            .message
            .starts_with("unknown tool type `teleporter`"));
    }

    /// A settings template naming an unknown variable or system property is
    /// refused at the name as written in the file.
    #[test]
    fn unknown_names_in_settings_templates_are_refused_where_written() {
        let text = "type = \"http\"\n# uses $nope and dunno\n[settings]\n# $nope\nurl = \"https://h.example/{{ client.a }}$nope/{{ $nope }}\"\nbody = { a = \"{{ system.page.dunno }}\" }\n";
        let problems = build("t", text).err().unwrap();
        let places: Vec<(usize, usize)> = problems.iter().map(|p| (p.line, p.col)).collect();
        // In the placeholders, not in the comment that names them first.
        assert_eq!(places, [(5, 49), (6, 30)], "{:?}", messages(&problems));
        assert!(problems[0].message.contains("$nope"), "{problems:?}");
        assert!(problems[1].message.contains("dunno"), "{problems:?}");
        // Nothing to look for (a path with no name): the table, at once.
        assert_eq!(placeholder_at("a {{ b }}", 1, ""), 1);
        // In the first placeholder of the table.
        let text = "type = \"http\"\n[settings]\nurl = \"https://h.example/{{ $nope }}\"\n";
        let problems = build("t", text).err().unwrap();
        assert_eq!((problems[0].line, problems[0].col), (3, 29));
    }

    /// Every `| raw` placeholder gets its own remark at its place; encoded
    /// ones and an unclosed `{{` get none.
    #[test]
    fn raw_placeholders_are_each_remarked_at_their_place() {
        let text = "a = \"{{ client.a }}\"\nb = \"{{ client.b | raw }}-{{client.c|raw}}\"\nc = \"{{ client.d | raw\"\n";
        let warnings = raw_warnings(Path::new("t.toml"), text);
        let got: Vec<(usize, usize, &str)> = warnings
            .iter()
            .map(|w| (w.line, w.col, w.message.split('`').nth(1).unwrap()))
            .collect();
        assert_eq!(
            got,
            [(2, 6, "{{ client.b | raw }}"), (2, 27, "{{client.c|raw}}"),]
        );
    }

    /// `tagproxy schema` describes each adapter's own `[settings]` (each
    /// adapter's `settings_schema`): a definition that names its keys and
    /// refuses others, as the loader does; only `console` reads none.
    #[test]
    fn every_adapters_settings_have_a_schema() {
        let schema = crate::schema::tool_schema().to_value();
        let mut described = Vec::new();
        for branch in schema["allOf"].as_array().unwrap() {
            let name = branch["if"]["properties"]["type"]["const"]
                .as_str()
                .unwrap();
            let settings = &branch["then"]["properties"]["settings"];
            let reference = settings["$ref"]
                .as_str()
                .or_else(|| settings["allOf"][0]["$ref"].as_str());
            let Some(reference) = reference else {
                assert_eq!(name, "console", "{settings}");
                continue;
            };
            let definition = &schema["$defs"][reference.trim_start_matches("#/$defs/")];
            assert_eq!(
                definition["additionalProperties"], false,
                "{name}: {definition}"
            );
            assert!(
                definition["properties"]
                    .as_object()
                    .is_some_and(|p| !p.is_empty()),
                "{name}: {definition}"
            );
            described.push(name);
        }
        assert_eq!(described.len(), 14, "{described:?}");
    }

    /// What each adapter declares about itself, from a tool file with its
    /// required settings: the secrets it sends (redacted from stored
    /// requests and logs), its templates (checked at load), the one origin
    /// its requests may go to (its documented API host), whether it joins
    /// requests into its API's batches, and its custom action kinds with
    /// their required fields.
    #[test]
    fn each_adapter_declares_its_secrets_templates_origin_batching_and_actions() {
        type Kinds = &'static [(&'static str, &'static [&'static str])];
        /// (type, settings, secrets, templates, origins, batching, kinds)
        type Case = (
            &'static str,
            &'static str,
            &'static [&'static str],
            usize,
            &'static [&'static str],
            bool,
            Kinds,
        );
        let cases: [Case; 12] = [
            (
                "segment",
                "write_key = \"wk-1\"",
                &["wk-1"],
                1,
                &["https://api.segment.io"],
                true,
                &[("track", &["event"]), ("page", &[])],
            ),
            (
                "mixpanel",
                "token = \"tok\"\napi_secret = \"sec-1\"",
                &["sec-1"],
                2,
                &["https://api.mixpanel.com"],
                true,
                &[("event", &["event"])],
            ),
            (
                "tiktok",
                "pixel_code = \"C1\"\naccess_token = \"at-1\"",
                &["at-1"],
                2,
                &["https://business-api.tiktok.com"],
                true,
                &[("event", &["event"])],
            ),
            (
                "pinterest",
                "ad_account_id = \"549\"\naccess_token = \"at-2\"",
                &["at-2"],
                2,
                &["https://api.pinterest.com"],
                true,
                &[("event", &["event_name"])],
            ),
            (
                "snapchat",
                "pixel_id = \"p1\"\naccess_token = \"at-3\"",
                &["at-3"],
                2,
                &["https://tr.snapchat.com"],
                true,
                &[("event", &["event_name"])],
            ),
            (
                "reddit",
                "ad_account_id = \"a2_1\"\naccess_token = \"at-4\"",
                &["at-4"],
                2,
                &["https://ads-api.reddit.com"],
                true,
                &[("event", &["event_name"])],
            ),
            (
                "amplitude",
                "api_key = \"ak-1\"",
                &["ak-1"],
                1,
                &["https://api2.amplitude.com"],
                true,
                &[("event", &["event_type"])],
            ),
            (
                "bing",
                "tag_id = \"5\"",
                &[],
                1,
                &[],
                false,
                &[("event", &["action"])],
            ),
            (
                "linkedin",
                "partner_id = \"6\"",
                &[],
                1,
                &[],
                false,
                &[("conversion", &[])],
            ),
            (
                "google-ads",
                "conversion_id = \"AW-7\"",
                &[],
                1,
                &["https://www.googleadservices.com"],
                false,
                &[("conversion", &[])],
            ),
            (
                "custom-image",
                "url = \"https://px.example/i.gif\"",
                &[],
                1,
                &[],
                false,
                &[("image", &[])],
            ),
            ("console", "", &[], 0, &[], false, &[("log", &[])]),
        ];
        let variables = Variables::default();
        let cx = test_support::context("t", &variables);
        let event = test_support::visit(
            crate::event::EventInput {
                kind: Some(crate::event::Kind::Track),
                name: "lead".into(),
                ..Default::default()
            },
            None,
            "Mozilla/5.0",
            "",
            1_748_935_400_000,
        );
        for (ty, settings, secrets, templates, origins, batching, kinds) in cases {
            let text = format!("type = \"{ty}\"\n[settings]\n{settings}\n");
            let tool = build("t", &text).unwrap().unwrap();
            let a = &tool.adapter;
            assert_eq!(a.credentials(&event, &cx), secrets, "{ty}: credentials");
            assert_eq!(a.templates().len(), templates, "{ty}: templates");
            assert_eq!(origin_names(&a.origins()), origins, "{ty}: origins");
            assert_eq!(a.batching().is_some(), batching, "{ty}: batching");
            assert_eq!(a.action_kinds(), kinds, "{ty}: action kinds");
        }
    }
}

/// What the adapters' unit tests share: an event as the collector builds it
/// and the context an adapter renders with.
#[cfg(test)]
pub(crate) mod test_support {
    use serde_json::Map;

    use super::BuildContext;
    use crate::event::{Event, EventInput};
    use crate::rules::template::Variables;

    /// `input` as the collector builds it into an event: sent at `now_ms`
    /// from `ip` with `user_agent` and the `cookies` header.
    pub(crate) fn visit(
        input: EventInput,
        ip: Option<std::net::IpAddr>,
        user_agent: &str,
        cookies: &str,
        now_ms: u64,
    ) -> Event {
        let req = crate::event::RequestInfo {
            ip,
            user_agent: crate::event::ua::UaParser::default().parse(user_agent),
            cookies: crate::event::parse_cookies(cookies),
            location: Map::new(),
        };
        let mut tracker =
            crate::event::identity::Tracker::from_cookie_header(cookies, now_ms / 1000);
        Event::build(input, &req, tracker.next_event(), now_ms)
    }

    /// What an adapter renders its automated actions with, for `tool_id`.
    pub(crate) fn context<'a>(tool_id: &'a str, variables: &'a Variables) -> BuildContext<'a> {
        BuildContext {
            tool_id,
            variables,
            action: None,
        }
    }

    /// An output's first request (it must be an HTTP one).
    pub(crate) fn request_of(out: &super::Output) -> &super::HttpRequest {
        let super::Payload::Http(http) = &out.payloads[0] else {
            panic!("not http: {:?}", out.payloads[0])
        };
        http
    }

    /// The JSON body of an output's first request.
    pub(crate) fn body_of(out: &super::Output) -> serde_json::Value {
        let super::Payload::Http(http) = &out.payloads[0] else {
            panic!("not http")
        };
        serde_json::from_slice(http.body.as_ref().unwrap()).unwrap()
    }

    /// An event of `kind` named `name` with `properties`, sent from a page
    /// `(url, title, referrer)` with the `cookies` header, at
    /// [`PAGE_EVENT_MS`].
    pub(crate) fn page_event(
        kind: crate::event::Kind,
        name: &str,
        properties: serde_json::Value,
        page: (&str, &str, &str),
        cookies: &str,
    ) -> Event {
        Visit {
            kind,
            name,
            props: properties,
            page,
            cookies,
            ..Visit::default()
        }
        .event()
    }

    /// One event as a browser sends it, field by field; [`Visit::default`]
    /// is a `signup` track on `https://shop.test/p?q=1` from a User-Agent
    /// woothee does not know, with no cookie, IP, screen or language, at
    /// [`PAGE_EVENT_MS`].
    pub(crate) struct Visit<'a> {
        pub kind: crate::event::Kind,
        pub name: &'a str,
        pub props: serde_json::Value,
        /// (url, title, referrer)
        pub page: (&'a str, &'a str, &'a str),
        pub user_agent: &'a str,
        /// The `Cookie` header.
        pub cookies: &'a str,
        /// `WxH`
        pub resolution: &'a str,
        pub language: &'a str,
        pub ip: Option<std::net::IpAddr>,
        /// When it was sent, in Unix milliseconds.
        pub sent_ms: u64,
    }

    impl Default for Visit<'_> {
        fn default() -> Self {
            Visit {
                kind: crate::event::Kind::Track,
                name: "signup",
                props: serde_json::json!({}),
                page: ("https://shop.test/p?q=1", "", ""),
                user_agent: "curl-ish",
                cookies: "",
                resolution: "",
                language: "",
                ip: None,
                sent_ms: PAGE_EVENT_MS,
            }
        }
    }

    impl Visit<'_> {
        pub(crate) fn event(&self) -> Event {
            let input = EventInput {
                kind: Some(self.kind),
                name: self.name.into(),
                properties: self.props.as_object().cloned().unwrap_or_default(),
                page: crate::event::PageInfo {
                    url: self.page.0.into(),
                    title: self.page.1.into(),
                    referrer: self.page.2.into(),
                    encoding: String::new(),
                },
                device: crate::event::DeviceInfo {
                    resolution: self.resolution.into(),
                    language: self.language.into(),
                    ..crate::event::DeviceInfo::default()
                },
                ..EventInput::default()
            };
            visit(input, self.ip, self.user_agent, self.cookies, self.sent_ms)
        }
    }

    /// When [`page_event`]s are sent, in Unix milliseconds.
    pub(crate) const PAGE_EVENT_MS: u64 = 1_748_935_400_000;

    /// The URL before `?` and the query pairs of an output's one
    /// browser-side `{"fetch": url}` instruction (it must have no
    /// server-side payload).
    pub(crate) fn fetched(out: &super::Output) -> (String, Vec<(String, String)>) {
        assert!(
            out.payloads.is_empty(),
            "a browser-side hit: {:?}",
            out.payloads
        );
        assert_eq!(out.instructions.len(), 1, "{:?}", out.instructions);
        let url = out.instructions[0]["fetch"].as_str().expect("a fetch");
        let (base, query) = url.split_once('?').expect("a query");
        let pairs = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        (base.to_string(), pairs)
    }

    /// The first value of query parameter `name`.
    pub(crate) fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// An output's cookies as (name, value, max-age in seconds).
    pub(crate) fn cookies_of(out: &super::Output) -> Vec<(&str, &str, u64)> {
        out.cookies
            .iter()
            .map(|c| (c.name.as_str(), c.value.as_str(), c.max_age_secs))
            .collect()
    }

    /// The one member of the JSON array `key` of an output's request body
    /// (Conversions APIs' `data`, `events`).
    pub(crate) fn only_member(out: &super::Output, key: &str) -> serde_json::Value {
        let body = body_of(out);
        assert_eq!(body[key].as_array().map(Vec::len), Some(1), "{body}");
        body[key][0].clone()
    }

    /// Send times ten minutes inside and ten minutes outside a destination's
    /// window of `max_age_ms` before now: (kept, too old).
    pub(crate) fn window_edges(max_age_ms: u64) -> (u64, u64) {
        let now = crate::event::now_ms();
        (now - max_age_ms + 600_000, now - max_age_ms - 600_000)
    }

    /// Checks a destination's window for old events on the event time (in
    /// Unix seconds) it sends for a default [`Visit`] sent at a given
    /// millisecond: kept ten minutes inside `max_age_ms`, now ten minutes
    /// outside.
    pub(crate) fn assert_seconds_window(
        max_age_ms: u64,
        event_time_of: impl Fn(&Visit<'_>) -> u64,
    ) {
        let now = crate::event::now_ms();
        let (young, old) = window_edges(max_age_ms);
        let sent_at = |sent_ms| Visit {
            sent_ms,
            ..Visit::default()
        };
        assert_eq!(event_time_of(&sent_at(young)), young / 1000);
        let t = event_time_of(&sent_at(old));
        assert!(t >= now / 1000, "{t} is not now");
    }

    /// Checks an id an adapter makes for a visitor without one (`make`):
    /// the same for another event of the same visitor, another for
    /// another visitor. Returns it for `event`.
    pub(crate) fn assert_stable_per_visitor(event: &Event, make: fn(&Event) -> String) -> String {
        let id = make(event);
        let mut other = Visit::default().event();
        assert_ne!(other.id, event.id);
        assert_ne!(make(&other), id, "another visitor, another id");
        other.identity.client_id = event.identity.client_id.clone();
        assert_eq!(make(&other), id, "the same visitor, the same id");
        id
    }
}
