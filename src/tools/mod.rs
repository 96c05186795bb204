//! Tools: one `tools/<id>.toml` per configured destination, each backed by an
//! adapter (one file per adapter, one trait for all).
//!
//! An adapter turns an event into deliveries (outgoing requests, or lines for
//! the console) and, optionally, instructions for the visitor's browser. It
//! never sends anything itself: the delivery queue does, with retries.

pub mod console;
pub mod ecommerce;
pub mod facebook_pixel;
pub mod google_analytics_4;
pub mod http;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::config::Problem;
use crate::event::{Event, Kind};
use crate::rules::template::{Context, Root, Template, Variables};

/// Which automated actions a tool runs, or an adapter supports (SPEC §7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
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

    pub fn covers(&self, kind: Kind) -> bool {
        match kind {
            Kind::Pageview => self.pageview,
            Kind::Track => self.track,
            Kind::Ecommerce => self.ecommerce,
        }
    }
}

/// The adapter-independent part of a tool file (SPEC §2).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolFile {
    #[serde(rename = "type")]
    pub adapter: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub purposes: Vec<String>,
    pub tcf_vendor_id: Option<u32>,
    #[serde(default)]
    pub blocking: Vec<String>,
    pub endpoint: Option<toml::Spanned<String>>,
    /// Checked by the adapter, which reads the file again for its own type.
    #[serde(default)]
    pub settings: toml::Table,
    pub automated: Option<toml::Spanned<Automated>>,
    /// Custom actions; parsed and kept, run by the triggers issue.
    #[serde(default)]
    pub actions: Vec<toml::Table>,
}

fn yes() -> bool {
    true
}

impl ToolFile {
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

/// One unit of work for the delivery queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub tool: String,
    pub event_id: String,
    pub payload: Payload,
}

/// What an adapter made of one event.
#[derive(Debug, Default)]
pub struct Output {
    pub payloads: Vec<Payload>,
    /// Browser instructions (`{"fetch": url}`, `{"set_cookie": {...}}`).
    pub instructions: Vec<Value>,
}

/// What adapters render their templates with.
pub struct BuildContext<'a> {
    pub tool_id: &'a str,
    pub variables: &'a Variables,
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

    /// Every template the tool's settings hold, for validation.
    fn templates(&self) -> Vec<&Template> {
        Vec::new()
    }
}

/// A template in a settings table; parsed while deserializing so errors carry
/// the value's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateString(pub Template);

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
fn make_adapter(path: &Path, text: &str, file: &ToolFile) -> Result<Box<dyn Adapter>, Problem> {
    Ok(match file.adapter.as_str() {
        "google-analytics-4" => Box::new(google_analytics_4::Ga4::from_config(path, text, file)?),
        "facebook-pixel" => Box::new(facebook_pixel::MetaCapi::from_config(path, text, file)?),
        "http" => Box::new(http::Http::from_config(path, text, file)?),
        "console" => Box::new(console::Console),
        other => {
            let at = text.find("type").unwrap_or(0);
            return Err(Problem::at(
                path,
                text,
                at,
                format!(
                    "unknown tool type `{other}`; known: google-analytics-4, facebook-pixel, http, console"
                ),
            ));
        }
    })
}

/// Loads every `*.toml` in `dir` (sorted; the file name is the tool id).
/// A missing folder means no tools.
pub fn load_dir(dir: &Path, variables: &Variables) -> Result<Vec<Tool>, Vec<Problem>> {
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
    let mut tools = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match load_file(&path, variables) {
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

/// Loads one tool file; `None` when it is disabled.
pub fn load_file(path: &Path, variables: &Variables) -> Result<Option<Tool>, Vec<Problem>> {
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
    from_text(&id, path, &text, variables)
}

/// Builds tool `id` from the text of its file (`path` names it in messages).
pub fn from_text(
    id: &str,
    path: &Path,
    text: &str,
    variables: &Variables,
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
        let ok = url::Url::parse(endpoint.get_ref())
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !ok {
            problems.push(Problem::at(
                path,
                &text,
                endpoint.span().start,
                format!(
                    "invalid endpoint {:?}: expected an http(s) URL",
                    endpoint.get_ref()
                ),
            ));
        }
    }
    let adapter = match make_adapter(path, &text, &file) {
        Ok(a) => a,
        Err(p) => {
            problems.push(p);
            return Err(problems);
        }
    };
    let supported = adapter.supports();
    let wanted = file.automated();
    let automated_at = file.automated.as_ref().map_or(0, |a| a.span().start);
    for (name, on, ok) in [
        ("pageview", wanted.pageview, supported.pageview),
        ("track", wanted.track, supported.track),
        ("ecommerce", wanted.ecommerce, supported.ecommerce),
    ] {
        if on && !ok {
            problems.push(Problem::at(
                path,
                &text,
                automated_at,
                format!(
                    "the `{}` adapter has no automated `{name}` action",
                    file.adapter
                ),
            ));
        }
    }
    for t in adapter.templates() {
        for p in t.paths() {
            if let Root::Variable(name) = &p.root {
                if !variables.contains_key(name) {
                    let at = text.find(&format!("${name}")).unwrap_or(0);
                    problems.push(Problem::at(
                        path,
                        &text,
                        at,
                        format!("unknown variable `${name}`"),
                    ));
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if !file.enabled {
        return Ok(None);
    }
    Ok(Some(Tool { id, file, adapter }))
}

/// Shared, read-only set of tools.
pub type Tools = Arc<Vec<Tool>>;
