//! Templates: `{{ client.x }}`, `{{ system.page.url.pathname }}`,
//! `{{ $variable }}` inside literal text.
//!
//! A template is parsed once, at config load, into literal and path parts, so
//! rendering per event is a walk over a few slices with no parsing. Unknown
//! names render as empty strings (SPEC §6); `check` reports them.
//!
//! Values are encoded for where the output goes: [`UrlTemplate`] splits an
//! outgoing URL at load into its fixed target (scheme, host, port) and the
//! path, query and fragment, and percent-encodes each value for its
//! position. `{{ client.x | raw }}` asks for a value to be inserted as it is
//! (Twig's `raw` filter); `check` warns at each one.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

/// Where a path starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// `client.…`: event properties (and `zaraz.set` values).
    Client,
    /// `system.…`: system properties.
    System,
    /// `$name`: a configured variable.
    Variable(String),
}

/// A dotted path such as `system.page.query.utm_source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub root: Root,
    pub segments: Vec<String>,
}

impl Path {
    pub fn parse(expr: &str) -> Result<Path, String> {
        let expr = expr.trim();
        if let Some(name) = expr.strip_prefix('$') {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("invalid variable name `{expr}`"));
            }
            return Ok(Path {
                root: Root::Variable(name.to_string()),
                segments: Vec::new(),
            });
        }
        let mut parts = expr.split('.');
        let root = match parts.next() {
            Some("client") => Root::Client,
            Some("system") => Root::System,
            _ => {
                return Err(format!(
                    "`{expr}` must start with `client.`, `system.` or `$`"
                ))
            }
        };
        let segments: Vec<String> = parts.map(str::to_string).collect();
        if segments.is_empty()
            || segments
                .iter()
                .any(|s| s.is_empty() || s.contains(char::is_whitespace))
        {
            return Err(format!("invalid path `{expr}`"));
        }
        Ok(Path { root, segments })
    }

    /// The value at this path, if any.
    pub fn resolve<'a>(&self, ctx: &Context<'a>) -> Option<&'a Value> {
        let mut value = match &self.root {
            Root::Client => ctx.client,
            Root::System => ctx.system,
            Root::Variable(name) => return ctx.variables.get(name).map(|v| &v.value),
        };
        for seg in &self.segments {
            value = match value {
                Value::Object(map) => map.get(seg.as_str())?,
                Value::Array(items) => items.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(value)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Path(Placeholder),
}

/// One `{{ … }}` of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placeholder {
    path: Path,
    /// `| raw`: inserted without encoding, where encoding applies.
    raw: bool,
    /// The text as written, `{{` to `}}`, to point `check` at it.
    source: String,
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// One part of a template, as [`Template::pieces`] gives it.
#[derive(Debug, Clone, Copy)]
pub enum Piece<'a> {
    /// Literal text, as the operator wrote it.
    Text(&'a str),
    /// A placeholder: what it reads, whether it is `| raw`, and the text
    /// `{{ … }}` as written.
    Value {
        path: &'a Path,
        raw: bool,
        source: &'a str,
    },
}

/// A configured variable (`[variables]`).
#[derive(Debug, Clone)]
pub struct Variable {
    pub value: Value,
    /// Read from the environment; never sent to browsers or logged.
    pub secret: bool,
}

pub type Variables = HashMap<String, Variable>;

/// What templates render against.
pub struct Context<'a> {
    pub client: &'a Value,
    pub system: &'a Value,
    pub variables: &'a Variables,
}

impl Template {
    /// Parses `text`; errors name the bad expression.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            let Some(close) = rest[open + 2..].find("}}") else {
                return Err(format!("unclosed `{{{{` in {text:?}"));
            };
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let expr = &rest[open + 2..open + 2 + close];
            let (expr, raw) = match expr.split_once('|') {
                Some((e, filter)) if filter.trim() == "raw" => (e, true),
                Some((_, filter)) => {
                    return Err(format!(
                        "unknown filter `{}` in `{{{{{expr}}}}}`: the only one is `raw`",
                        filter.trim()
                    ))
                }
                None => (expr, false),
            };
            parts.push(Part::Path(Placeholder {
                path: Path::parse(expr)?,
                raw,
                source: rest[open..open + 2 + close + 2].to_string(),
            }));
            rest = &rest[open + 2 + close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// A template of fixed text.
    pub fn literal(text: &str) -> Template {
        Template {
            parts: vec![Part::Literal(text.to_string())],
        }
    }

    /// The text, when the template has no expression.
    pub fn as_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Literal(s)] => Some(s),
            _ => None,
        }
    }

    /// Every path the template reads, for validation.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.parts.iter().filter_map(|p| match p {
            Part::Path(p) => Some(&p.path),
            Part::Literal(_) => None,
        })
    }

    /// The parts in order, for renderers that place each value themselves.
    pub fn pieces(&self) -> impl Iterator<Item = Piece<'_>> {
        self.parts.iter().map(|p| match p {
            Part::Literal(s) => Piece::Text(s),
            Part::Path(p) => Piece::Value {
                path: &p.path,
                raw: p.raw,
                source: &p.source,
            },
        })
    }

    /// The `{{ … | raw }}` placeholders, as written.
    pub fn raw_sources(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Path(p) if p.raw => Some(p.source.as_str()),
            _ => None,
        })
    }

    /// The first placeholder reading the event (`client.` or `system.`), as
    /// written: what a part fixed by config must not hold.
    pub fn event_source(&self) -> Option<&str> {
        self.parts.iter().find_map(|p| match p {
            Part::Path(p) if !matches!(p.path.root, Root::Variable(_)) => Some(p.source.as_str()),
            _ => None,
        })
    }

    /// Renders with `escape` applied to every value not marked `| raw`;
    /// literal text is the operator's and stays as written.
    pub fn render_escaped(&self, ctx: &Context<'_>, escape: fn(&str, &mut String)) -> String {
        let mut out = String::new();
        let mut value = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Path(p) => {
                    if let Some(v) = p.path.resolve(ctx) {
                        value.clear();
                        write_value(&mut value, v);
                        if p.raw {
                            out.push_str(&value);
                        } else {
                            escape(&value, &mut out);
                        }
                    }
                }
            }
        }
        out
    }

    /// Renders to a string; missing values are empty.
    pub fn render(&self, ctx: &Context<'_>) -> String {
        if let Some(s) = self.as_literal() {
            return s.to_string();
        }
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Path(p) => {
                    if let Some(v) = p.path.resolve(ctx) {
                        write_value(&mut out, v);
                    }
                }
            }
        }
        out
    }

    /// Renders to a JSON value: a template that is exactly one expression
    /// keeps the value's type (numbers, arrays…); anything else is a string.
    pub fn render_value(&self, ctx: &Context<'_>) -> Value {
        match self.parts.as_slice() {
            [Part::Path(p)] => match p.path.resolve(ctx) {
                Some(Value::Object(m)) if m.contains_key("href") => m["href"].clone(),
                Some(v) => v.clone(),
                None => Value::String(String::new()),
            },
            _ => Value::String(self.render(ctx)),
        }
    }
}

/// A value as text: strings raw, URLs as their href, other objects as JSON.
pub fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => {}
        Value::String(s) => out.push_str(s),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Object(m) if m.get("href").is_some_and(Value::is_string) => {
            out.push_str(m["href"].as_str().unwrap_or_default())
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx_render(t: &str) -> String {
        let client = json!({"method": "email", "products": [{"sku": "A1", "price": 12.5}], "n": 3, "ok": true, "__zarazTrack": "purchase"});
        let system = json!({"page": {"url": {"href": "https://x.test/a?b=1", "pathname": "/a"}, "query": {"utm_source": "news"}}, "cookies": {"_ga": "GA1.1.1.2"}, "device": {"user-agent": {"ua": "UA/1"}}});
        let mut variables = Variables::new();
        variables.insert(
            "site".into(),
            Variable {
                value: json!("Démo ✓"),
                secret: false,
            },
        );
        let ctx = Context {
            client: &client,
            system: &system,
            variables: &variables,
        };
        Template::parse(t).unwrap().render(&ctx)
    }

    #[test]
    fn renders_paths_literals_and_variables() {
        assert_eq!(ctx_render("{{ client.method }}"), "email");
        assert_eq!(
            ctx_render("m={{client.method}}&s={{ $site }}!"),
            "m=email&s=Démo ✓!"
        );
        assert_eq!(
            ctx_render("{{ client.products.0.sku }}/{{ client.products.0.price }}"),
            "A1/12.5"
        );
        assert_eq!(ctx_render("{{ system.page.url }}"), "https://x.test/a?b=1");
        assert_eq!(ctx_render("{{ system.page.url.pathname }}"), "/a");
        assert_eq!(ctx_render("{{ system.page.query.utm_source }}"), "news");
        assert_eq!(ctx_render("{{ system.cookies._ga }}"), "GA1.1.1.2");
        assert_eq!(ctx_render("{{ system.device.user-agent.ua }}"), "UA/1");
        assert_eq!(ctx_render("{{ client.n }} {{ client.ok }}"), "3 true");
        assert_eq!(
            ctx_render("[{{ client.nope }}|{{ client.products.9.sku }}|{{ $nope }}]"),
            "[||]"
        );
        assert_eq!(
            ctx_render("{{ client.products.0 }}"),
            r#"{"price":12.5,"sku":"A1"}"#
        );
        assert_eq!(ctx_render("plain text"), "plain text");
    }

    #[test]
    fn parse_errors_name_the_expression() {
        assert!(Template::parse("{{ client.x")
            .unwrap_err()
            .contains("unclosed"));
        assert!(Template::parse("{{ event.x }}")
            .unwrap_err()
            .contains("`event.x`"));
        assert!(Template::parse("{{ client. }}").is_err());
        assert!(Template::parse("{{ $ }}").is_err());
        // Variable names: letters, digits and `_`, as `[variables]` allows.
        for ok in ["$site", "$api_key_2", "$_"] {
            assert_eq!(
                Path::parse(ok).unwrap().root,
                Root::Variable(ok[1..].to_string())
            );
        }
        for bad in ["$a-b", "$a.b", "$ä", "$a b"] {
            assert!(
                Path::parse(bad)
                    .unwrap_err()
                    .contains("invalid variable name"),
                "{bad}"
            );
        }
    }

    /// What validation reads of a template: its fixed text, its paths, the
    /// `| raw` placeholders and the first one reading the event, as written.
    #[test]
    fn accessors_for_validation() {
        let t = Template::parse(
            "a{{ $key }}b{{ client.id | raw }}{{system.page.url.href}}{{ $v|raw }}",
        )
        .unwrap();
        assert_eq!(t.as_literal(), None);
        let paths: Vec<&Path> = t.paths().collect();
        assert_eq!(paths.len(), 4);
        assert_eq!(paths[0].root, Root::Variable("key".into()));
        assert_eq!(paths[1].root, Root::Client);
        assert_eq!(paths[1].segments, ["id"]);
        assert_eq!(paths[2].root, Root::System);
        assert_eq!(paths[2].segments, ["page", "url", "href"]);
        assert_eq!(
            t.raw_sources().collect::<Vec<_>>(),
            ["{{ client.id | raw }}", "{{ $v|raw }}"]
        );
        assert_eq!(t.event_source(), Some("{{ client.id | raw }}"));
        // Variables only: no event source; text only: a literal.
        let vars = Template::parse("{{ $a }}-{{ $b }}").unwrap();
        assert_eq!(vars.event_source(), None);
        assert_eq!(vars.raw_sources().count(), 0);
        assert_eq!(
            Template::parse("plain").unwrap().as_literal(),
            Some("plain")
        );
        assert_eq!(Template::parse("").unwrap().as_literal(), Some(""));
        assert_eq!(Template::literal("x").as_literal(), Some("x"));
        assert_eq!(Template::parse("plain").unwrap().paths().count(), 0);
        // `raw` is the only filter, spaces around it allowed.
        assert!(Template::parse("{{ client.x | Raw }}")
            .unwrap_err()
            .contains("unknown filter `Raw`"));
        assert!(Template::parse("{{ client.x | upper }}").is_err());
    }

    /// Every known system property passes; each unknown one is named (SPEC
    /// §6), and an unknown variable too.
    #[test]
    fn check_path_knows_zaraz_system_properties() {
        let mut variables = Variables::new();
        variables.insert(
            "known".into(),
            Variable {
                value: json!("v"),
                secret: false,
            },
        );
        for ok in [
            "$known",
            "client.anything.at.all",
            "system.page.url.href",
            "system.page.url.pathname",
            "system.page.url",
            "system.page.query",
            "system.page.query.utm_source",
            "system.page.title",
            "system.page.referrer",
            "system.cookies.session",
            "system.consent.analytics",
            "system.clientKV.k",
            "system.device.location.country",
            "system.device.location.isEUCountry",
            "system.device.user-agent.browser",
            "system.device.language",
            "system.device.bot_score",
            "system.misc.timestampMilliseconds",
        ] {
            let path = Path::parse(ok).unwrap();
            assert_eq!(check_path(&path, &variables), None, "{ok}");
        }
        for (bad, message) in [
            ("$unknown", "unknown variable `$unknown`"),
            (
                "system.page.url.scheme",
                "unknown system property `system.page.url.scheme`",
            ),
            ("system.page.url.href.x", "unknown system property"),
            ("system.page.query.a.b", "unknown system property"),
            ("system.page.body", "unknown system property"),
            ("system.cookies", "unknown system property"),
            ("system.cookies.a.b", "unknown system property"),
            ("system.device.location.street", "unknown system property"),
            (
                "system.device.location.country.x",
                "unknown system property",
            ),
            ("system.device.user-agent.color", "unknown system property"),
            ("system.device.battery", "unknown system property"),
            ("system.misc.uuid", "unknown system property"),
            ("system.other", "unknown system property"),
        ] {
            let path = Path::parse(bad).unwrap();
            let got = check_path(&path, &variables).unwrap_or_default();
            assert!(got.contains(message), "{bad}: {got:?}");
        }
    }

    /// `render_escaped` escapes values but neither literal text nor `| raw`
    /// values; a single-expression value that is a URL object renders as
    /// its `href`; `templates()` finds every template in a nested value.
    #[test]
    fn escaped_rendering_urls_and_nested_templates() {
        let client = json!({"q": "a b&c", "n": 5});
        let system = json!({"page": {"url": {"href": "https://x.test/p", "pathname": "/p"}}});
        let variables = Variables::new();
        let ctx = Context {
            client: &client,
            system: &system,
            variables: &variables,
        };
        fn upper(v: &str, out: &mut String) {
            out.push_str(&v.to_uppercase());
        }
        let t = Template::parse("x y{{ client.q }}|{{ client.q | raw }}|{{ client.n }}").unwrap();
        assert_eq!(t.render_escaped(&ctx, upper), "x yA B&C|a b&c|5");
        let url = Template::parse("{{ system.page.url }}").unwrap();
        assert_eq!(url.render_value(&ctx), json!("https://x.test/p"));
        assert_eq!(url.render(&ctx), "https://x.test/p");
        let obj = Template::parse("{{ system.page }}").unwrap();
        assert_eq!(obj.render_value(&ctx)["url"]["pathname"], "/p");
        let value: TemplateValue = serde_json::from_value(json!({
            "a": "{{ client.q }}",
            "b": ["x", {"c": "{{ client.n }}"}, 3],
            "d": true
        }))
        .unwrap();
        let found: Vec<String> = value
            .templates()
            .iter()
            .map(|t| t.paths().map(|p| p.segments.join(".")).collect())
            .collect();
        assert_eq!(found, ["q", "", "n"]);
        assert_eq!(
            value.render(&ctx),
            json!({"a": "a b&c", "b": ["x", {"c": 5}, 3], "d": true})
        );
    }

    #[test]
    fn render_value_keeps_types() {
        let client = json!({"total": 12.5, "items": [1, 2]});
        let system = json!({});
        let variables = Variables::new();
        let ctx = Context {
            client: &client,
            system: &system,
            variables: &variables,
        };
        assert_eq!(
            Template::parse("{{ client.total }}")
                .unwrap()
                .render_value(&ctx),
            json!(12.5)
        );
        assert_eq!(
            Template::parse("{{ client.items }}")
                .unwrap()
                .render_value(&ctx),
            json!([1, 2])
        );
        assert_eq!(
            Template::parse("x{{ client.total }}")
                .unwrap()
                .render_value(&ctx),
            json!("x12.5")
        );
    }
}

/// A JSON-shaped value whose strings are templates (request bodies, action
/// fields). Compiled once; renders to a `serde_json::Value`.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateValue {
    Template(Template),
    Array(Vec<TemplateValue>),
    Object(Vec<(String, TemplateValue)>),
    Fixed(Value),
}

impl TemplateValue {
    pub fn render(&self, ctx: &Context<'_>) -> Value {
        match self {
            TemplateValue::Template(t) => t.render_value(ctx),
            TemplateValue::Array(items) => {
                Value::Array(items.iter().map(|i| i.render(ctx)).collect())
            }
            TemplateValue::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.render(ctx)))
                    .collect(),
            ),
            TemplateValue::Fixed(v) => v.clone(),
        }
    }

    /// Every template inside, for validation.
    pub fn templates(&self) -> Vec<&Template> {
        match self {
            TemplateValue::Template(t) => vec![t],
            TemplateValue::Array(items) => items.iter().flat_map(|i| i.templates()).collect(),
            TemplateValue::Object(fields) => {
                fields.iter().flat_map(|(_, v)| v.templates()).collect()
            }
            TemplateValue::Fixed(_) => Vec::new(),
        }
    }
}

impl<'de> serde::Deserialize<'de> for TemplateValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        fn convert(v: Value) -> Result<TemplateValue, String> {
            Ok(match v {
                Value::String(s) => TemplateValue::Template(Template::parse(&s)?),
                Value::Array(items) => {
                    TemplateValue::Array(items.into_iter().map(convert).collect::<Result<_, _>>()?)
                }
                Value::Object(m) => TemplateValue::Object(
                    m.into_iter()
                        .map(|(k, v)| convert(v).map(|v| (k, v)))
                        .collect::<Result<_, _>>()?,
                ),
                other => TemplateValue::Fixed(other),
            })
        }
        let v = Value::deserialize(d)?;
        convert(v).map_err(serde::de::Error::custom)
    }
}

/// Why `path` would render empty for every event, if it would: an unknown
/// variable or a system property Zaraz does not have (SPEC §6).
pub fn check_path(path: &Path, variables: &Variables) -> Option<String> {
    const PAGE: &[&str] = &["url", "query", "title", "referrer", "encoding"];
    const URL: &[&str] = &[
        "href", "origin", "protocol", "host", "hostname", "port", "pathname", "search", "hash",
    ];
    const DEVICE: &[&str] = &[
        "ip",
        "resolution",
        "viewport",
        "language",
        "location",
        "user-agent",
        "timezoneOffset",
        // tagproxy's: the request's bot score, 1..99 (src/bots/score.rs).
        "bot_score",
    ];
    const LOCATION: &[&str] = &[
        "country",
        "city",
        "continent",
        "region",
        "regionCode",
        "postalCode",
        "timezone",
        "latitude",
        "longitude",
        "isEUCountry",
    ];
    const UA: &[&str] = &["ua", "browser", "engine", "os", "device", "cpu"];
    const MISC: &[&str] = &["random", "timestamp", "timestampMilliseconds"];
    let name = || {
        let mut s = String::from("system");
        for seg in &path.segments {
            s.push('.');
            s.push_str(seg);
        }
        s
    };
    match &path.root {
        Root::Variable(v) if !variables.contains_key(v) => Some(format!("unknown variable `${v}`")),
        Root::Variable(_) | Root::Client => None,
        Root::System => {
            let seg = |i: usize| path.segments.get(i).map(String::as_str);
            let known = match (seg(0), seg(1), seg(2)) {
                (Some("page"), Some("url"), Some(part)) => {
                    URL.contains(&part) && path.segments.len() == 3
                }
                (Some("page"), Some("query"), Some(_)) => path.segments.len() == 3,
                (Some("page"), Some(p), None) => PAGE.contains(&p),
                (Some("cookies" | "consent" | "clientKV"), Some(_), None) => true,
                (Some("device"), Some("location"), Some(k)) => {
                    LOCATION.contains(&k) && path.segments.len() == 3
                }
                (Some("device"), Some("user-agent"), Some(k)) => UA.contains(&k),
                (Some("device"), Some(d), None) => DEVICE.contains(&d),
                (Some("misc"), Some(m), None) => MISC.contains(&m),
                _ => false,
            };
            (!known).then(|| format!("unknown system property `{}`", name()))
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

        /// Any text parses or errors, and a parsed template renders, without
        /// panicking: braces, dots, `$`, digits and non-ASCII included.
        #[test]
        fn parse_and_render_never_panic(text in r"(\{\{|\}\}|[ .$_a-z0-9é✓\{\}]|client\.|system\.|\$v){0,40}") {
            let client = json!({"a": {"b": [1, {"c": "x"}]}, "é": "✓"});
            let system = json!({"page": {"url": {"href": "https://x.test/"}}});
            let mut variables = Variables::new();
            variables.insert("v".into(), Variable { value: json!("secret"), secret: true });
            let ctx = Context { client: &client, system: &system, variables: &variables };
            if let Ok(t) = Template::parse(&text) {
                let _ = t.render(&ctx);
                let _ = t.render_value(&ctx);
            }
        }
    }
}
