//! `tagproxy import-zaraz FILE [--out DIR] [--force]`: converts a Cloudflare
//! Zaraz configuration (the JSON `GET /zones/{zone_id}/settings/zaraz/config`
//! answers, with or without the API's `{"result": …}` envelope; fields as in
//! <https://developers.cloudflare.com/api/resources/zaraz/subresources/config/methods/get/>)
//! into `tagproxy.toml` and `tools/<id>.toml`, and lists everything it could
//! not carry over, one line each, led by the JSON path (`$.tools.abc.settings.x`).
//!
//! What maps:
//! - `settings` / `dataLayer` / `historyChange` / `debugKey` → `[settings]`;
//!   `settings.initPath` / `eventsApiPath` → `[server] zaraz_init_path` /
//!   `zaraz_events_api_path` (pages and servers written for Zaraz keep them);
//! - `consent` (`purposesWithTranslations`, else `purposes`) → `[consent]`;
//! - `variables`: `string` → a plain value, `secret` → `{ secret = "NAME" }`
//!   (read from `TAGPROXY_SECRET_NAME`; the value is never written);
//! - `triggers`: `loadRules` / `excludeRules` match rules → `rules` / `exclude`
//!   with Zaraz's op names in snake case, client rules (click, form
//!   submission, timer, scroll depth, element visibility) → our client rules;
//!   the `system: "pageload"` trigger → the built-in `Pageview`;
//! - tools of component `google-analytics-4` and `facebook-pixel` → our
//!   adapters of the same name, with `blockingTriggers`, `defaultPurpose`,
//!   and their actions (`actions`, else the older `neoEvents`): a `pageview`
//!   action fired by the pageview trigger becomes the automated pageview;
//!   `event` actions become custom `event` actions. Access tokens become
//!   secret variables.
//!
//! Everything else (custom HTML or image tools, other components, worker
//! variables, custom paths, the consent modal's texts…) is reported.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use serde_json::{Map, Value};

/// The files an import produces, and what it left out.
#[derive(Debug, Default)]
pub struct Import {
    /// The text of `tagproxy.toml`.
    pub config: String,
    /// `(tool id, text of tools/<id>.toml)`, sorted by id.
    pub tools: Vec<(String, String)>,
    /// One line per thing not carried over: `JSON path: why`.
    pub skipped: Vec<String>,
    /// Environment variables the imported config reads its secrets from.
    pub secrets: Vec<String>,
}

/// A TOML string literal (quoted and escaped).
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML key: bare when it can be, quoted otherwise.
fn key(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        s.to_string()
    } else {
        q(s)
    }
}

/// `name` reduced to letters, digits and `sep` (lower case), for ids.
fn slug(name: &str, sep: char) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with(sep) {
            out.push(sep);
        }
    }
    out.trim_end_matches(sep).to_string()
}

/// A TOML value for a JSON scalar or array/object of them (inline).
fn toml_value(v: &Value) -> Option<String> {
    Some(match v {
        Value::String(s) => q(s),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => {
            let items: Option<Vec<String>> = items.iter().map(toml_value).collect();
            format!("[{}]", items?.join(", "))
        }
        Value::Object(m) => {
            let fields: Option<Vec<String>> = m
                .iter()
                .map(|(k, v)| toml_value(v).map(|v| format!("{} = {v}", key(k))))
                .collect();
            format!("{{ {} }}", fields?.join(", "))
        }
        Value::Null => return None,
    })
}

/// Whether `p` is a path `[server] zaraz_*_path` accepts
/// ([`crate::config::RoutePath`]).
fn route_path_ok(p: &str) -> bool {
    p.starts_with('/')
        && p.len() > 1
        && !p.ends_with('/')
        && !p.contains("//")
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_-.~".contains(&b))
}

/// Zaraz's boolean settings come as `true` or as `"true"`.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => s == "true",
        _ => false,
    }
}

/// Zaraz rule operators → ours (src/rules/trigger.rs).
fn op(zaraz: &str) -> Option<&'static str> {
    Some(match zaraz {
        "EQUALS" => "equals",
        "NOT_EQUALS" => "not_equals",
        "CONTAINS" => "contains",
        "NOT_CONTAINS" => "not_contains",
        "STARTS_WITH" => "starts_with",
        "NOT_STARTS_WITH" => "not_starts_with",
        "ENDS_WITH" => "ends_with",
        "NOT_ENDS_WITH" => "not_ends_with",
        "MATCH_REGEX" => "matches_regex",
        "NOT_MATCH_REGEX" => "not_matches_regex",
        "GREATER_THAN" => "greater_than",
        "GREATER_THAN_OR_EQUAL" => "greater_than_or_equal",
        "LESS_THAN" => "less_than",
        "LESS_THAN_OR_EQUAL" => "less_than_or_equal",
        _ => return None,
    })
}

struct Importer {
    skipped: Vec<String>,
    /// Zaraz trigger id → our trigger id.
    triggers: BTreeMap<String, String>,
    /// Zaraz variable id → our variable name.
    variables: BTreeMap<String, String>,
    /// Extra `[variables]` lines (secrets found in tool settings).
    extra_variables: Vec<String>,
    secrets: Vec<String>,
}

impl Importer {
    fn skip(&mut self, path: &str, why: impl std::fmt::Display) {
        self.skipped.push(format!("{path}: {why}"));
    }

    /// Every key of `obj` not in `known`, reported under `path`.
    fn skip_unknown(&mut self, path: &str, obj: &Map<String, Value>, known: &[&str], why: &str) {
        for (k, v) in obj {
            let empty = match v {
                Value::Null => true,
                Value::Array(a) => a.is_empty(),
                Value::Object(o) => o.is_empty(),
                Value::String(s) => s.is_empty(),
                _ => false,
            };
            if !known.contains(&k.as_str()) && !empty {
                self.skip(&format!("{path}.{k}"), why);
            }
        }
    }

    /// Rewrites Zaraz variable references (`{{ $ID }}`) to our names.
    fn rewrite(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (id, name) in &self.variables {
            if id != name {
                out = out.replace(&format!("$${id}$$"), &format!("{{{{ ${name} }}}}"));
                for (from, to) in [
                    (format!("{{{{ ${id} }}}}"), format!("{{{{ ${name} }}}}")),
                    (format!("{{{{${id}}}}}"), format!("{{{{ ${name} }}}}")),
                ] {
                    out = out.replace(&from, &to);
                }
            }
        }
        out
    }

    fn trigger_ids(&mut self, path: &str, list: Option<&Value>) -> Vec<String> {
        let mut out = Vec::new();
        for (i, id) in list
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            match id.as_str().and_then(|id| self.triggers.get(id)) {
                Some(ours) => out.push(ours.clone()),
                None => self.skip(&format!("{path}[{i}]"), format!("unknown trigger {id}")),
            }
        }
        out
    }
}

/// Converts a Zaraz config (parsed JSON) into our files.
///
/// # Errors
/// The JSON is not a Zaraz config: not an object with `tools` and `triggers`
/// objects (also accepted inside the API's `result` envelope).
pub fn convert(json: &Value) -> Result<Import, String> {
    let root = match json.get("result") {
        Some(r) if r.is_object() && json.get("tools").is_none() => r,
        _ => json,
    };
    let Some(root) = root.as_object() else {
        return Err("not a Zaraz config export: expected a JSON object".into());
    };
    let (Some(tools), Some(triggers)) = (
        root.get("tools").and_then(Value::as_object),
        root.get("triggers").and_then(Value::as_object),
    ) else {
        return Err(
            "not a Zaraz config export: expected an object with `tools` and `triggers` \
             (the result of GET /zones/{zone_id}/settings/zaraz/config)"
                .into(),
        );
    };
    let mut im = Importer {
        skipped: Vec::new(),
        triggers: BTreeMap::new(),
        variables: BTreeMap::new(),
        extra_variables: Vec::new(),
        secrets: Vec::new(),
    };
    let empty = Map::new();
    let settings = root
        .get("settings")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut config = String::from(
        "# Imported from a Cloudflare Zaraz config by `tagproxy import-zaraz`.\n\
         # Check it with `tagproxy check`; set [server] upstream to your origin.\n\n\
         tools_dir = \"tools\"\n\n[server]\nupstream = \"http://127.0.0.1:3000\"\n",
    );
    // Pages and servers written for Zaraz keep using its paths: the loader
    // (`initPath`) and the HTTP Events API (`eventsApiPath`) are served there.
    for (z, ours, default) in [
        (
            "initPath",
            "zaraz_init_path",
            crate::proxy::ZARAZ_LOADER_PATH,
        ),
        ("eventsApiPath", "zaraz_events_api_path", ""),
    ] {
        let Some(p) = settings.get(z).and_then(Value::as_str) else {
            continue;
        };
        if p.is_empty() || p == default {
            continue;
        }
        if route_path_ok(p) {
            let _ = writeln!(config, "{ours} = {}", q(p));
        } else {
            im.skip(
                &format!("$.settings.{z}"),
                format_args!("{p:?} is not a plain path (letters, digits, / _ - . ~)"),
            );
        }
    }
    config.push('\n');

    // [settings]
    config.push_str("[settings]\n");
    let bools = [
        ("autoInjectScript", "auto_inject"),
        ("injectIframes", "inject_iframes"),
        ("ecommerce", "ecommerce"),
        ("hideQueryParams", "trim_url_query"),
        ("hideIPAddress", "trim_ip"),
        ("hideUserAgent", "clean_user_agent"),
        ("hideExternalReferer", "hide_external_referrer"),
    ];
    for (z, ours) in bools {
        if let Some(v) = settings.get(z) {
            let _ = writeln!(config, "{ours} = {}", truthy(v));
        }
    }
    if let Some(d) = settings.get("cookieDomain").and_then(Value::as_str) {
        let _ = writeln!(config, "cookie_domain = {}", q(d));
    }
    if let Some(v) = root.get("dataLayer") {
        let _ = writeln!(config, "data_layer = {}", truthy(v));
    }
    if let Some(v) = root.get("historyChange") {
        let _ = writeln!(config, "spa = {}", truthy(v));
    }
    if let Some(k) = root.get("debugKey").and_then(Value::as_str) {
        if !k.is_empty() {
            let _ = writeln!(config, "debug_key = {}", q(k));
        }
    }
    let known: Vec<&str> = bools
        .iter()
        .map(|(z, _)| *z)
        .chain(["cookieDomain", "initPath", "eventsApiPath"])
        .collect();
    for (k, v) in settings {
        if known.contains(&k.as_str()) || v.as_str() == Some("") || v.is_null() {
            continue;
        }
        let why = match k.as_str() {
            "scriptPath" | "trackPath" | "mcRootPath" => {
                "Zaraz's inner paths have no equivalent: its loader (initPath) serves tagproxy's script, which talks to [server] prefix"
            }
            "contextEnricher" => "Context Enricher workers have no equivalent",
            _ => "no equivalent setting",
        };
        im.skip(&format!("$.settings.{k}"), why);
    }
    config.push('\n');
    im.skip_unknown(
        "$",
        root,
        &[
            "tools",
            "triggers",
            "variables",
            "settings",
            "consent",
            "dataLayer",
            "historyChange",
            "debugKey",
            "zarazVersion",
        ],
        "not carried over",
    );

    // [consent]
    if let Some(consent) = root.get("consent").and_then(Value::as_object) {
        config.push_str("[consent]\n");
        let _ = writeln!(
            config,
            "enabled = {}",
            consent.get("enabled").is_some_and(truthy)
        );
        if let Some(c) = consent.get("cookieName").and_then(Value::as_str) {
            if !c.is_empty() {
                let _ = writeln!(config, "cookie = {}", q(c));
            }
        }
        if let Some(h) = consent.get("hideModal") {
            let _ = writeln!(config, "show_modal = {}", !truthy(h));
        }
        if let Some(t) = consent.get("tcfCompliant") {
            let _ = writeln!(config, "tcf = {}", truthy(t));
        }
        // Purposes, with translations when Zaraz has them, in their order.
        let mut purposes: Vec<(i64, String, String, String)> = Vec::new();
        let text = |v: Option<&Value>| -> String {
            match v {
                Some(Value::Object(m)) if !m.is_empty() => {
                    toml_value(&Value::Object(m.clone())).unwrap_or_else(|| q(""))
                }
                Some(Value::String(s)) => q(s),
                _ => q(""),
            }
        };
        if let Some(p) = consent
            .get("purposesWithTranslations")
            .and_then(Value::as_object)
            .filter(|p| !p.is_empty())
        {
            for (id, purpose) in p {
                let order = purpose.get("order").and_then(Value::as_i64).unwrap_or(0);
                purposes.push((
                    order,
                    id.clone(),
                    text(purpose.get("name")),
                    text(purpose.get("description")),
                ));
            }
        } else if let Some(p) = consent.get("purposes").and_then(Value::as_object) {
            for (id, purpose) in p {
                purposes.push((
                    0,
                    id.clone(),
                    text(purpose.get("name")),
                    text(purpose.get("description")),
                ));
            }
        }
        purposes.sort();
        for (_, id, name, description) in purposes {
            let _ = write!(
                config,
                "[[consent.purposes]]\nid = {}\nname = {name}\ndescription = {description}\n",
                q(&id)
            );
        }
        im.skip_unknown(
            "$.consent",
            consent,
            &[
                "enabled",
                "cookieName",
                "hideModal",
                "tcfCompliant",
                "purposes",
                "purposesWithTranslations",
                "customIntroDisclaimerDismissed",
            ],
            "the consent modal's texts, company details and styling are not carried over",
        );
        config.push('\n');
    }

    // [variables]: names from the Zaraz variable names (ids are opaque).
    let mut variable_lines = Vec::new();
    let mut used = BTreeSet::new();
    if let Some(vars) = root.get("variables").and_then(Value::as_object) {
        for (id, var) in vars {
            let path = format!("$.variables.{id}");
            let label = var.get("name").and_then(Value::as_str).unwrap_or(id);
            let mut name = slug(label, '_');
            if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                name = format!("v_{}", slug(id, '_'));
            }
            while !used.insert(name.clone()) {
                name.push('_');
            }
            match var.get("type").and_then(Value::as_str) {
                Some("string") => {
                    let v = var
                        .get("value")
                        .and_then(toml_value)
                        .unwrap_or_else(|| q(""));
                    variable_lines.push(format!("{name} = {v}"));
                }
                Some("secret") => {
                    let env = name.to_ascii_uppercase();
                    variable_lines.push(format!("{name} = {{ secret = {} }}", q(&env)));
                    im.secrets
                        .push(format!("{}{env}", crate::rules::SECRET_ENV_PREFIX));
                }
                other => {
                    im.skip(
                        &path,
                        format!(
                            "variables of type {} are not supported",
                            other.unwrap_or("?")
                        ),
                    );
                    continue;
                }
            }
            im.variables.insert(id.clone(), name);
        }
    }

    // Triggers.
    let mut trigger_text = String::new();
    let mut trigger_ids = BTreeSet::new();
    for (id, t) in triggers {
        if t.get("system").and_then(Value::as_str) == Some("pageload") {
            im.triggers
                .insert(id.clone(), crate::rules::PAGEVIEW_TRIGGER.into());
            continue;
        }
        // Readable ids from the trigger's name (Zaraz's ids are opaque);
        // the Zaraz id stays in the description.
        let name = t.get("name").and_then(Value::as_str).unwrap_or("");
        let mut ours = slug(name, '_');
        if ours.is_empty() || ours.eq_ignore_ascii_case(crate::rules::PAGEVIEW_TRIGGER) {
            ours = format!("t_{}", slug(id, '_'));
        }
        while !trigger_ids.insert(ours.clone()) {
            ours.push('_');
        }
        im.triggers.insert(id.clone(), ours);
    }
    for (id, t) in triggers {
        let ours = im.triggers[id].clone();
        if ours == crate::rules::PAGEVIEW_TRIGGER {
            continue;
        }
        let path = format!("$.triggers.{id}");
        let name = t.get("name").and_then(Value::as_str).unwrap_or("");
        let desc = t.get("description").and_then(Value::as_str).unwrap_or("");
        let description = match (name.is_empty(), desc.is_empty()) {
            (false, false) => format!("{name}: {desc}"),
            (false, true) => name.to_string(),
            _ => desc.to_string(),
        };
        let _ = writeln!(trigger_text, "[triggers.{}]", key(&ours));
        let description = if description.is_empty() {
            format!("Zaraz trigger {id}")
        } else {
            format!("{description} (Zaraz trigger {id})")
        };
        let _ = writeln!(trigger_text, "description = {}", q(&description));
        for (list, field) in [("loadRules", "rules"), ("excludeRules", "exclude")] {
            let mut rules = Vec::new();
            for (i, rule) in t
                .get(list)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let rpath = format!("{path}.{list}[{i}]");
                match rule_toml(&im, rule, field == "exclude") {
                    Ok(r) => rules.push(r),
                    Err(why) => im.skip(&rpath, why),
                }
            }
            if !rules.is_empty() {
                let _ = writeln!(trigger_text, "{field} = [\n  {},\n]", rules.join(",\n  "));
            }
        }
        trigger_text.push('\n');
    }

    // Tools.
    let mut out_tools: Vec<(String, String)> = Vec::new();
    let mut tool_ids = BTreeSet::new();
    for (id, tool) in tools {
        let path = format!("$.tools.{id}");
        let component = tool.get("component").and_then(Value::as_str).unwrap_or("");
        let name = tool.get("name").and_then(Value::as_str).unwrap_or(id);
        let adapter = match (tool.get("type").and_then(Value::as_str), component) {
            (Some("custom-mc"), _) => {
                im.skip(
                    &path,
                    format!("tool {name:?}: custom Managed Components (Workers) cannot run here"),
                );
                continue;
            }
            (_, "google-analytics-4") => "google-analytics-4",
            (_, "facebook-pixel") => "facebook-pixel",
            (_, c @ ("html" | "custom-html" | "customhtml")) => {
                im.skip(&path, format!("tool {name:?} ({c}): custom HTML runs scripts in the browser; tagproxy only delivers server-side"));
                continue;
            }
            (_, c @ ("image" | "custom-image" | "pixel")) => {
                im.skip(&path, format!("tool {name:?} ({c}): custom image tools are not converted; an `http` tool with a GET url does the same"));
                continue;
            }
            (_, c) => {
                im.skip(
                    &path,
                    format!("tool {name:?}: component {c:?} has no tagproxy adapter"),
                );
                continue;
            }
        };
        let mut tid = slug(name, '-');
        if tid.is_empty() {
            tid = slug(id, '-');
        }
        while !tool_ids.insert(tid.clone()) {
            tid.push_str("-2");
        }
        let text = tool_toml(&mut im, &path, id, &tid, name, adapter, tool);
        out_tools.push((tid, text));
    }

    for l in &im.extra_variables {
        variable_lines.push(l.clone());
    }
    if !variable_lines.is_empty() {
        config.push_str("[variables]\n");
        for l in &variable_lines {
            config.push_str(l);
            config.push('\n');
        }
        config.push('\n');
    }
    config.push_str(&trigger_text);
    let config = config.trim_end().to_string() + "\n";
    Ok(Import {
        config,
        tools: out_tools,
        skipped: im.skipped,
        secrets: im.secrets,
    })
}

/// One Zaraz rule as an inline TOML table.
fn rule_toml(im: &Importer, rule: &Value, exclude: bool) -> Result<String, String> {
    let s = rule.get("settings").unwrap_or(&Value::Null);
    let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let num_of = |v: &Value, k: &str| {
        v.get(k).and_then(|n| {
            n.as_u64()
                .or_else(|| n.as_str().and_then(|s| s.parse().ok()))
        })
    };
    let action = rule.get("action").and_then(Value::as_str);
    if action.is_some() && exclude {
        return Err(
            "client-side rules cannot exclude; only match rules are carried into `exclude`".into(),
        );
    }
    Ok(match action {
        None => {
            let m = str_of(rule, "match").ok_or("a rule without `match`")?;
            let zop = str_of(rule, "op").unwrap_or_default();
            let o = op(&zop).ok_or_else(|| format!("unknown operator {zop:?}"))?;
            let value = rule
                .get("value")
                .and_then(toml_value)
                .unwrap_or_else(|| q(""));
            format!(
                "{{ match = {}, op = {}, value = {value} }}",
                q(&im.rewrite(&m)),
                q(o)
            )
        }
        Some("clickListener") => {
            let sel = str_of(s, "selector").ok_or("a click rule without `selector`")?;
            let kind = if str_of(s, "type").as_deref() == Some("xpath") {
                "xpath"
            } else {
                "css"
            };
            let wait = num_of(s, "waitForTags").unwrap_or(0);
            format!("{{ click = {{ {kind} = {}, wait_ms = {wait} }} }}", q(&sel))
        }
        Some("formSubmission") => {
            let sel = str_of(s, "selector").ok_or("a form rule without `selector`")?;
            let validate = s.get("validate").is_some_and(truthy);
            format!(
                "{{ form_submit = {{ css = {}, validate = {validate} }} }}",
                q(&sel)
            )
        }
        Some("timer") => {
            let interval = num_of(s, "interval")
                .filter(|n| *n > 0)
                .ok_or("a timer without `interval`")?;
            let limit = num_of(s, "limit").unwrap_or(0);
            format!("{{ timer = {{ interval_ms = {interval}, limit = {limit} }} }}")
        }
        Some("scrollDepth") => {
            let positions: Vec<String> = str_of(s, "positions")
                .unwrap_or_default()
                .split(',')
                .map(|p| p.trim())
                .filter(|p| !p.is_empty())
                .map(q)
                .collect();
            if positions.is_empty() {
                return Err("a scroll depth rule without positions".into());
            }
            format!("{{ scroll_depth = [{}] }}", positions.join(", "))
        }
        Some("elementVisibility") => {
            let sel =
                str_of(s, "selector").ok_or("an element visibility rule without `selector`")?;
            format!("{{ element_visible = {{ css = {} }} }}", q(&sel))
        }
        Some(other) => return Err(format!("rule action {other:?} has no equivalent")),
    })
}

/// One tool file.
fn tool_toml(
    im: &mut Importer,
    path: &str,
    zaraz_id: &str,
    tid: &str,
    name: &str,
    adapter: &str,
    tool: &Value,
) -> String {
    let empty = Map::new();
    let obj = tool.as_object().unwrap_or(&empty);
    let mut t = format!(
        "# Zaraz tool {} ({zaraz_id}), imported by `tagproxy import-zaraz`.\n",
        q(name)
    );
    if let Some(p) = obj.get("defaultPurpose").and_then(Value::as_str) {
        if !p.is_empty() {
            let _ = writeln!(t, "purposes = [{}]", q(p));
        }
    }
    let _ = writeln!(t, "type = {}", q(adapter));
    let _ = writeln!(t, "enabled = {}", obj.get("enabled").is_none_or(truthy));
    let blocking = im.trigger_ids(
        &format!("{path}.blockingTriggers"),
        obj.get("blockingTriggers"),
    );
    if !blocking.is_empty() {
        let list: Vec<String> = blocking.iter().map(|b| q(b)).collect();
        let _ = writeln!(t, "blocking = [{}]", list.join(", "));
    }

    // Settings.
    let settings = obj
        .get("settings")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut lines = Vec::new();
    for (k, v) in settings {
        let sp = format!("{path}.settings.{k}");
        let plain = |v: &Value| v.as_str().map(|s| q(&im.rewrite(s)));
        match (adapter, k.as_str()) {
            ("google-analytics-4", "tid") => match plain(v) {
                Some(v) => lines.push(format!("measurement_id = {v}")),
                None => im.skip(&sp, "not a string"),
            },
            ("google-analytics-4", "hideOriginalIP") => {
                lines.push(format!("hide_ip = {}", truthy(v)))
            }
            ("facebook-pixel", "property") => match plain(v) {
                Some(v) => lines.push(format!("pixel_id = {v}")),
                None => im.skip(&sp, "not a string"),
            },
            ("facebook-pixel", "testKey") => {
                if let Some(v) = plain(v).filter(|v| v != "\"\"") {
                    lines.push(format!("test_event_code = {v}"));
                }
            }
            ("facebook-pixel", "accessToken") => {
                // Never written in clear: a secret variable the operator sets.
                let var = format!("{}_access_token", tid.replace('-', "_"));
                let env = var.to_ascii_uppercase();
                let already_variable = v
                    .as_str()
                    .is_some_and(|s| s.contains("{{") || s.contains("$$"));
                if already_variable {
                    lines.push(format!(
                        "access_token = {}",
                        q(&im.rewrite(v.as_str().unwrap_or("")))
                    ));
                } else {
                    im.extra_variables
                        .push(format!("{var} = {{ secret = {} }}", q(&env)));
                    im.secrets
                        .push(format!("{}{env}", crate::rules::SECRET_ENV_PREFIX));
                    lines.push(format!(
                        "access_token = {}",
                        q(&format!("{{{{ ${var} }}}}"))
                    ));
                }
            }
            _ => {
                let empty =
                    matches!(v, Value::String(s) if s.is_empty()) || v == &Value::Bool(false);
                if !empty {
                    im.skip(&sp, format!("no `{adapter}` setting for it"));
                }
            }
        }
    }
    for (k, _) in obj {
        if !matches!(
            k.as_str(),
            "component"
                | "name"
                | "type"
                | "enabled"
                | "settings"
                | "blockingTriggers"
                | "defaultPurpose"
                | "actions"
                | "neoEvents"
                | "permissions"
        ) && obj
            .get(k)
            .is_some_and(|v| !(v.as_object().is_some_and(Map::is_empty) || v.as_str() == Some("")))
        {
            im.skip(&format!("{path}.{k}"), "not carried over");
        }
    }

    // Actions: `actions` takes precedence over the older `neoEvents`.
    let actions: Vec<(String, &Value)> = match obj.get("actions").and_then(Value::as_object) {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|(k, v)| (format!("{path}.actions.{k}"), v))
            .collect(),
        _ => obj
            .get("neoEvents")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, v)| (format!("{path}.neoEvents[{i}]"), v))
            .collect(),
    };
    let name_key = if adapter == "facebook-pixel" {
        "ev"
    } else {
        "en"
    };
    let mut automated_pageview = false;
    let mut custom = String::new();
    for (apath, action) in actions {
        let kind = action
            .get("actionType")
            .and_then(Value::as_str)
            .unwrap_or("");
        let firing = im.trigger_ids(
            &format!("{apath}.firingTriggers"),
            action.get("firingTriggers"),
        );
        let blocking = im.trigger_ids(
            &format!("{apath}.blockingTriggers"),
            action.get("blockingTriggers"),
        );
        let data = action
            .get("data")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        match kind {
            "pageview" if firing == [crate::rules::PAGEVIEW_TRIGGER] && blocking.is_empty() => {
                automated_pageview = true;
            }
            "pageview" | "event" | "ecommerce" => {
                let event_name = data
                    .get(name_key)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| match (kind, adapter) {
                        ("pageview", "facebook-pixel") => "PageView".into(),
                        ("pageview", _) => "page_view".into(),
                        _ => String::new(),
                    });
                if event_name.is_empty() {
                    im.skip(
                        &apath,
                        format!("`{kind}` action without an event name (`data.{name_key}`)"),
                    );
                    continue;
                }
                if firing.is_empty() {
                    im.skip(&apath, "action without a known firing trigger");
                    continue;
                }
                let label = data
                    .get("__zaraz_setting_name")
                    .and_then(Value::as_str)
                    .unwrap_or(&event_name)
                    .to_string();
                let q_list = |l: &[String]| l.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ");
                let _ = write!(
                    custom,
                    "\n[[actions]]\nname = {}\nkind = \"event\"\nfiring = [{}]\n",
                    q(&label),
                    q_list(&firing)
                );
                if !blocking.is_empty() {
                    let _ = writeln!(custom, "blocking = [{}]", q_list(&blocking));
                }
                custom.push_str("include_event_properties = true\n[actions.fields]\n");
                let _ = writeln!(custom, "event_name = {}", q(&im.rewrite(&event_name)));
                for (k, v) in data {
                    if k == name_key || k.starts_with("__zaraz") {
                        continue;
                    }
                    let v = match v {
                        Value::String(s) => Some(q(&im.rewrite(s))),
                        other => toml_value(other),
                    };
                    match v {
                        Some(v) if k != "event_name" => {
                            let _ = writeln!(custom, "{} = {v}", key(k));
                        }
                        _ => im.skip(&format!("{apath}.data.{k}"), "not carried over"),
                    }
                }
                if kind == "ecommerce" {
                    im.skip(&apath, "Zaraz ecommerce actions become a custom `event`; turn on [automated] ecommerce to map zaraz.ecommerce calls");
                }
            }
            other => im.skip(&apath, format!("action type {other:?} has no equivalent")),
        }
    }
    if !lines.is_empty() {
        t.push_str("\n[settings]\n");
        for l in lines {
            t.push_str(&l);
            t.push('\n');
        }
    }
    if automated_pageview {
        t.push_str("\n[automated]\npageview = true\n");
    }
    t.push_str(&custom);
    t
}

/// `tagproxy import-zaraz`: writes the files into `out`, listing on stdout
/// what it wrote and, one line each, what it could not carry over. Exit 1 for
/// unreadable or non-Zaraz input, or files that exist (without `force`).
pub fn command(file: &Path, out: &Path, force: bool) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: cannot read: {e}", file.display());
            return ExitCode::from(1);
        }
    };
    let json: Value = match serde_json::from_str(&text) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("{}: not JSON: {e}", file.display());
            return ExitCode::from(1);
        }
    };
    let import = match convert(&json) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return ExitCode::from(1);
        }
    };
    let mut files = vec![(out.join("tagproxy.toml"), import.config.clone())];
    for (id, text) in &import.tools {
        files.push((out.join("tools").join(format!("{id}.toml")), text.clone()));
    }
    if !force {
        let existing: Vec<String> = files
            .iter()
            .filter(|(p, _)| p.exists())
            .map(|(p, _)| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            eprintln!(
                "refusing to overwrite {} (use --force)",
                existing.join(", ")
            );
            return ExitCode::from(1);
        }
    }
    for (path, text) in &files {
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(path, text));
        if let Err(e) = written {
            eprintln!("{}: cannot write: {e}", path.display());
            return ExitCode::from(1);
        }
        println!("wrote {}", path.display());
    }
    for env in &import.secrets {
        println!("secret: set {env} before `tagproxy serve`");
    }
    if import.skipped.is_empty() {
        println!("everything was carried over");
    } else {
        println!("not carried over ({}):", import.skipped.len());
        for s in &import.skipped {
            println!("  {s}");
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base(extra: Value) -> Value {
        let mut v = json!({ "tools": {}, "triggers": {
            "Pageview": { "name": "Pageview", "system": "pageload", "loadRules": [], "excludeRules": [] }
        } });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    #[test]
    fn zaraz_paths_go_to_server_or_are_reported() {
        let im = convert(&base(json!({"settings": {
            "initPath": "/cdn-cgi/zaraz/i.js",
            "eventsApiPath": "/api/zaraz events",
            "trackPath": "/z/t"
        }})))
        .unwrap();
        // The default loader path needs no key; a path with a space is not one.
        assert!(!im.config.contains("zaraz_init_path"), "{}", im.config);
        assert!(
            !im.config.contains("zaraz_events_api_path"),
            "{}",
            im.config
        );
        assert!(
            im.skipped.iter().any(|s| s.starts_with(
                "$.settings.eventsApiPath: \"/api/zaraz events\" is not a plain path"
            )),
            "{:?}",
            im.skipped
        );
        assert!(
            im.skipped
                .iter()
                .any(|s| s.starts_with("$.settings.trackPath: ")),
            "{:?}",
            im.skipped
        );
        assert!(!im.skipped.iter().any(|s| s.contains("initPath:")));
    }

    #[test]
    fn every_zaraz_operator_has_ours() {
        // The ops of Cloudflare's API reference (ZarazLoadRule.op) and their negations.
        for (z, ours) in [
            ("EQUALS", "equals"),
            ("CONTAINS", "contains"),
            ("STARTS_WITH", "starts_with"),
            ("ENDS_WITH", "ends_with"),
            ("MATCH_REGEX", "matches_regex"),
            ("NOT_MATCH_REGEX", "not_matches_regex"),
            ("GREATER_THAN", "greater_than"),
            ("GREATER_THAN_OR_EQUAL", "greater_than_or_equal"),
            ("LESS_THAN", "less_than"),
            ("LESS_THAN_OR_EQUAL", "less_than_or_equal"),
            ("NOT_EQUALS", "not_equals"),
        ] {
            assert_eq!(op(z), Some(ours));
            // …and ours parses as an operator of the loader.
            let parsed: crate::rules::trigger::Op =
                serde_json::from_value(Value::String(ours.into())).unwrap();
            let _ = parsed;
        }
        assert_eq!(op("IS"), None);
    }

    #[test]
    fn client_rules_convert_and_bad_ones_are_reported() {
        let rule = |r: Value| json!({ "name": "T", "loadRules": [r], "excludeRules": [] });
        let im = convert(&base(json!({ "triggers": {
            "Pageview": { "system": "pageload" },
            "a": rule(json!({ "id": "1", "action": "timer", "settings": { "interval": 5000, "limit": 2 } })),
            "b": rule(json!({ "id": "2", "action": "scrollDepth", "settings": { "positions": "25%, 100px" } })),
            "c": rule(json!({ "id": "3", "action": "formSubmission", "settings": { "selector": "#f", "validate": true } })),
            "d": rule(json!({ "id": "4", "action": "clickListener", "settings": { "type": "xpath", "selector": "//a", "waitForTags": 300 } })),
            "e": rule(json!({ "id": "5", "action": "elementVisibility", "settings": { "selector": ".x" } })),
            "f": rule(json!({ "id": "6", "action": "variableMatch", "settings": { "variable": "v", "match": "1" } })),
            "g": rule(json!({ "id": "7", "match": "{{ client.a }}", "op": "IS", "value": "1" })),
        } })))
        .unwrap();
        for want in [
            "{ timer = { interval_ms = 5000, limit = 2 } }",
            "{ scroll_depth = [\"25%\", \"100px\"] }",
            "{ form_submit = { css = \"#f\", validate = true } }",
            "{ click = { xpath = \"//a\", wait_ms = 300 } }",
            "{ element_visible = { css = \".x\" } }",
        ] {
            assert!(im.config.contains(want), "{want} in\n{}", im.config);
        }
        assert!(
            im.skipped
                .iter()
                .any(|s| s.starts_with("$.triggers.f.loadRules[0]: ")),
            "{:?}",
            im.skipped
        );
        assert!(
            im.skipped
                .iter()
                .any(|s| s == "$.triggers.g.loadRules[0]: unknown operator \"IS\""),
            "{:?}",
            im.skipped
        );
        // Several triggers named "T": distinct ids.
        crate::config::parse(Path::new("t.toml"), &im.config).unwrap();
    }

    #[test]
    fn secrets_never_reach_the_files_and_references_follow_the_rename() {
        let im = convert(&base(json!({
            "variables": {
                "sEc1": { "name": "API key", "type": "secret", "value": "s3cr3t-value" },
                "wRk1": { "name": "Cart sum", "type": "worker", "value": { "escapedWorkerName": "w", "workerTag": "t" } },
            },
            "tools": { "fb": {
                "type": "component", "component": "facebook-pixel", "name": "Meta", "enabled": true,
                "blockingTriggers": [], "permissions": [], "defaultFields": {},
                "settings": { "property": "1", "accessToken": "{{ $sEc1 }}" },
                "neoEvents": [ { "actionType": "event", "firingTriggers": ["Pageview"], "blockingTriggers": [],
                                 "data": { "ev": "Lead", "key": "{{ $sEc1 }}" } } ],
            } },
        })))
        .unwrap();
        let all = format!("{}{}", im.config, im.tools[0].1);
        assert!(!all.contains("s3cr3t-value"), "{all}");
        assert!(
            im.config.contains("api_key = { secret = \"API_KEY\" }"),
            "{}",
            im.config
        );
        assert!(
            im.tools[0].1.contains("access_token = \"{{ $api_key }}\""),
            "{}",
            im.tools[0].1
        );
        assert!(
            im.tools[0].1.contains("key = \"{{ $api_key }}\""),
            "{}",
            im.tools[0].1
        );
        assert_eq!(im.secrets, ["TAGPROXY_SECRET_API_KEY"]);
        assert!(
            im.skipped
                .iter()
                .any(|s| s.starts_with("$.variables.wRk1: ")),
            "{:?}",
            im.skipped
        );
    }

    #[test]
    fn actions_win_over_neo_events_and_other_tools_are_reported() {
        let im = convert(&json!({ "result": base(json!({ "tools": {
            "g": {
                "type": "component", "component": "google-analytics-4", "name": "GA", "enabled": false,
                "settings": { "tid": "G-1" },
                "actions": { "x": { "actionType": "event", "firingTriggers": ["Pageview"], "blockingTriggers": [], "data": { "en": "from_actions" } } },
                "neoEvents": [ { "actionType": "event", "firingTriggers": ["Pageview"], "blockingTriggers": [], "data": { "en": "from_neo" } } ],
            },
            "w": { "type": "custom-mc", "component": "mine", "name": "Worker MC", "worker": { "escapedWorkerName": "w", "workerTag": "t" } },
            "t": { "type": "component", "component": "tiktok", "name": "TikTok", "settings": {} },
        } })) }))
        .unwrap();
        assert_eq!(im.tools.len(), 1);
        let ga = &im.tools[0].1;
        assert!(
            ga.contains("event_name = \"from_actions\"") && !ga.contains("from_neo"),
            "{ga}"
        );
        assert!(ga.contains("enabled = false"), "{ga}");
        assert!(
            im.skipped.iter().any(|s| s.starts_with("$.tools.w: ")),
            "{:?}",
            im.skipped
        );
        assert!(
            im.skipped
                .iter()
                .any(|s| s.starts_with("$.tools.t: ") && s.contains("\"tiktok\"")),
            "{:?}",
            im.skipped
        );
    }

    #[test]
    fn not_an_export() {
        assert!(convert(&json!([1]))
            .unwrap_err()
            .contains("not a Zaraz config export"));
        assert!(convert(&json!({ "tools": {} }))
            .unwrap_err()
            .contains("`tools` and `triggers`"));
    }
}
