//! `http`: a generic webhook. Method, URL, headers and body are templates;
//! the default body is the event as JSON. Every request carries the event id
//! as `Idempotency-Key` so receivers can drop retries.
//!
//! Everything that shapes the request comes from the tool file: the URL's
//! scheme, host and port are fixed at load and each value in its path, query
//! or fragment is percent-encoded for its place ([`UrlTemplate`]); the
//! method and header names are config, header values are checked before the
//! request is queued ([`super::guard`]); the body is built as JSON values,
//! never by pasting text. Custom `request` actions take the same keys as
//! `fields`, compiled at load the same way, each defaulting to `[settings]`
//! (headers merge, the action's win).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{
    parse_settings, Adapter, Automated, BuildContext, HttpRequest, Output, Payload, TemplateString,
    ToolFile,
};
use crate::config::Problem;
use crate::event::Event;
use crate::rules::template::{Context, Template, TemplateValue, Variables};
use crate::rules::url_template::UrlTemplate;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HttpSettings")]
struct Settings {
    url: Option<TemplateString>,
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, TemplateString>,
    #[schemars(with = "Option<Value>")]
    body: Option<TemplateValue>,
}

/// The JSON Schema of this adapter's `[settings]` table (`tagproxy schema`).
pub fn settings_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<Settings>()
}

/// How a configured body becomes bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    /// JSON text of the rendered value: a table, an array, or a template
    /// that is exactly one placeholder (its value, type kept).
    Json,
    /// A string sent as it is: literal text, or text whose placeholders
    /// are all `| raw`.
    Text,
}

/// A `request` custom action, compiled at load.
struct ActionRequest {
    url: Option<(Template, UrlTemplate)>,
    method: Option<String>,
    headers: Vec<(String, Template)>,
    /// How its own `body` field is sent, when it has one.
    body: Option<BodyKind>,
    /// Fields that shape the request (`url`, `method`, `headers`) the action
    /// sets itself: not part of the JSON body.
    own: Vec<&'static str>,
}

pub struct Http {
    url: Option<(Template, UrlTemplate)>,
    method: String,
    headers: Vec<(String, Template)>,
    body: Option<(TemplateValue, BodyKind)>,
    /// By index in the file's `[[actions]]`; `None` for other entries.
    actions: Vec<Option<ActionRequest>>,
}

impl Http {
    pub fn from_config(
        path: &Path,
        text: &str,
        file: &ToolFile,
        variables: &Variables,
    ) -> Result<Http, Problem> {
        let s: Settings = parse_settings(path, text)?;
        let automated = file.automated();
        let settings_at = |key: &str, source: Option<&str>| {
            let at = file.settings_key_at(text, key);
            source
                .and_then(|src| text[at..].find(src).map(|i| at + i))
                .unwrap_or(at)
        };
        let url = match s.url {
            Some(u) => Some(compile_url(u.0, variables).map_err(|(msg, source)| {
                Problem::at(path, text, settings_at("url", source.as_deref()), msg)
            })?),
            None if automated.pageview || automated.track || automated.ecommerce => {
                let at = file.settings_at();
                return Err(Problem::at(
                    path,
                    text,
                    at,
                    "the http tool needs settings.url when an automated action is on",
                ));
            }
            None => None,
        };
        let method = s
            .method
            .unwrap_or_else(|| "POST".into())
            .to_ascii_uppercase();
        if http::Method::from_bytes(method.as_bytes()).is_err() {
            let at = file.settings_key_at(text, "method");
            return Err(Problem::at(
                path,
                text,
                at,
                format!("invalid HTTP method {method:?}"),
            ));
        }
        let mut headers = Vec::new();
        for (name, value) in s.headers {
            check_header(&name, &value.0, variables)
                .map_err(|msg| Problem::at(path, text, settings_at(&name, None), msg))?;
            headers.push((name, value.0));
        }
        let body = match s.body {
            Some(b) => {
                let kind = body_kind(&b)
                    .map_err(|msg| Problem::at(path, text, settings_at("body", None), msg))?;
                Some((b, kind))
            }
            None => None,
        };
        let mut actions = Vec::new();
        for spanned in &file.actions {
            let a = spanned.get_ref();
            if a.kind != "request" {
                actions.push(None);
                continue;
            }
            let field_at = |key: &str, source: Option<&str>| {
                let span = a
                    .fields
                    .get(key)
                    .map_or_else(|| spanned.span(), |f| f.span());
                source
                    .and_then(|src| text.get(span.clone())?.find(src))
                    .map_or(span.start, |i| span.start + i)
            };
            let problem = |key: &str, source: Option<&str>, msg: String| {
                Problem::at(
                    path,
                    text,
                    field_at(key, source),
                    format!("action `{}` field `{key}`: {msg}", a.name),
                )
            };
            let template = |key: &str| match a.fields.get(key).map(|f| f.get_ref()) {
                None => Ok(None),
                Some(TemplateValue::Template(t)) => Ok(Some(t.clone())),
                Some(TemplateValue::Fixed(Value::Number(n))) => {
                    Ok(Some(Template::literal(&n.to_string())))
                }
                Some(_) => Err(problem(key, None, "must be a string".into())),
            };
            let url = match template("url")? {
                Some(t) => Some(
                    compile_url(t, variables)
                        .map_err(|(msg, source)| problem("url", source.as_deref(), msg))?,
                ),
                None => None,
            };
            let method = match template("method")? {
                Some(t) => Some(
                    fixed_text(&t, variables)
                        .map(|m| m.to_ascii_uppercase())
                        .filter(|m| http::Method::from_bytes(m.as_bytes()).is_ok())
                        .ok_or_else(|| {
                            problem(
                                "method",
                                t.event_source(),
                                "must be a valid HTTP method written in the tool file (text or a `{{ $variable }}`), never a value from an event".into(),
                            )
                        })?,
                ),
                None => None,
            };
            let mut action_headers = Vec::new();
            match a.fields.get("headers").map(|f| f.get_ref()) {
                None => {}
                Some(TemplateValue::Object(items)) => {
                    for (name, value) in items {
                        let t = match value {
                            TemplateValue::Template(t) => t.clone(),
                            // Numbers and booleans as their text (a TOML
                            // value is never null).
                            TemplateValue::Fixed(v) => Template::literal(&v.to_string()),
                            _ => {
                                return Err(problem(
                                    "headers",
                                    None,
                                    format!("header `{name}` must be a string"),
                                ))
                            }
                        };
                        check_header(name, &t, variables)
                            .map_err(|msg| problem("headers", None, msg))?;
                        action_headers.push((name.clone(), t));
                    }
                }
                Some(_) => return Err(problem("headers", None, "must be a table".into())),
            }
            let body = match a.fields.get("body") {
                Some(b) => Some(body_kind(b.get_ref()).map_err(|msg| problem("body", None, msg))?),
                None => None,
            };
            let own = ["url", "method", "headers"]
                .into_iter()
                .filter(|k| a.fields.contains_key(*k))
                .collect();
            actions.push(Some(ActionRequest {
                url,
                method,
                headers: action_headers,
                body,
                own,
            }));
        }
        Ok(Http {
            url,
            method,
            headers,
            body,
            actions,
        })
    }
}

/// A URL template compiled for its positions; errors carry the placeholder
/// at fault.
fn compile_url(
    t: Template,
    variables: &Variables,
) -> Result<(Template, UrlTemplate), (String, Option<String>)> {
    let url = UrlTemplate::compile(&t, variables).map_err(|e| (e.message, e.source))?;
    Ok((t, url))
}

/// The text of a template that reads no event (literal text and
/// variables), resolved now; `None` when it reads the event.
fn fixed_text(t: &Template, variables: &Variables) -> Option<String> {
    if t.event_source().is_some() {
        return None;
    }
    Some(t.render(&Context {
        client: &Value::Null,
        system: &Value::Null,
        variables,
    }))
}

/// Header names are config and must be valid; a value that reads no event
/// is checked now, one that does when each request is built.
fn check_header(name: &str, value: &Template, variables: &Variables) -> Result<(), String> {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!("`{name}` is not a valid header name"));
    }
    if let Some(v) = fixed_text(value, variables) {
        if http::HeaderValue::from_bytes(v.as_bytes()).is_err() {
            return Err(format!(
                "the value of header `{name}` holds CR, LF, NUL or another control character"
            ));
        }
    }
    Ok(())
}

/// How a configured body is sent. A string mixing text and (not raw)
/// placeholders is refused: that would build JSON, or any format, by
/// pasting a visitor's text into it.
fn body_kind(body: &TemplateValue) -> Result<BodyKind, String> {
    let TemplateValue::Template(t) = body else {
        return Ok(BodyKind::Json);
    };
    let values = t.paths().count();
    let raw = t.raw_sources().count();
    if raw == values {
        Ok(BodyKind::Text) // literal text (no values), or only raw values
    } else if values == 1 && t.pieces().count() == 1 {
        Ok(BodyKind::Json)
    } else {
        Err("a string body that mixes text and `{{ … }}` values would paste a visitor's text into the body's format; write the body as a table (values are JSON-encoded), or mark each deliberate raw insertion `{{ client.x | raw }}`".into())
    }
}

impl Adapter for Http {
    fn supports(&self) -> Automated {
        Automated::ALL
    }

    fn automated(&self, event: &Event, cx: &BuildContext<'_>) -> Output {
        let ctx = cx.template_context(event);
        let body = match &self.body {
            Some((b, kind)) => (b.render(&ctx), *kind),
            None => (
                json!({
                    "id": event.id,
                    "type": event.kind,
                    "name": event.name,
                    "timestamp": event.timestamp_ms,
                    "client": event.client,
                    "system": event.system,
                }),
                BodyKind::Json,
            ),
        };
        let url = self
            .url
            .as_ref()
            .map(|(_, u)| u.render(&ctx))
            .unwrap_or_default();
        let headers = render_headers(&[&self.headers], &ctx);
        request(self.method.clone(), url, headers, body, &event.id)
    }

    fn action_kinds(&self) -> &'static [(&'static str, &'static [&'static str])] {
        &[("request", &["url"])]
    }

    /// `request`: fields `url`, `method` (POST), `headers` (table) and
    /// `body`, each defaulting to `[settings]`; without `body`, the other
    /// fields are the JSON body.
    fn custom(
        &self,
        _kind: &str,
        mut fields: Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        let ctx = cx.template_context(event);
        let action = cx
            .action
            .and_then(|i| self.actions.get(i))
            .and_then(Option::as_ref);
        let (url, method, headers, body_kind) = match action {
            Some(a) => {
                for key in &a.own {
                    fields.remove(*key);
                }
                (
                    a.url.as_ref().or(self.url.as_ref()),
                    a.method.clone().unwrap_or_else(|| self.method.clone()),
                    render_headers(&[&self.headers, &a.headers], &ctx),
                    a.body,
                )
            }
            // Not compiled at load (cannot happen for a loaded tool): the
            // settings alone, and only the rendered fields as the body.
            None => (
                self.url.as_ref(),
                self.method.clone(),
                render_headers(&[&self.headers], &ctx),
                None,
            ),
        };
        let url = url.map(|(_, u)| u.render(&ctx)).unwrap_or_default();
        let body = match body_kind {
            Some(kind) => (fields.remove("body").unwrap_or(Value::Null), kind),
            None => (Value::Object(fields), BodyKind::Json),
        };
        request(method, url, headers, body, &event.id)
    }

    fn templates(&self) -> Vec<&Template> {
        let mut t: Vec<&Template> = self.url.iter().map(|(t, _)| t).collect();
        t.extend(self.headers.iter().map(|(_, v)| v));
        if let Some((b, _)) = &self.body {
            t.extend(b.templates());
        }
        t
    }

    fn origins(&self) -> Vec<url::Origin> {
        let mut out: Vec<url::Origin> = Vec::new();
        let urls = self
            .url
            .iter()
            .chain(self.actions.iter().flatten().filter_map(|a| a.url.as_ref()));
        for (_, u) in urls {
            if let Some(o) = u.origin() {
                if !out.contains(o) {
                    out.push(o.clone());
                }
            }
        }
        out
    }
}

/// Headers from each list in turn, a later one replacing an earlier of the
/// same name.
fn render_headers(lists: &[&[(String, Template)]], ctx: &Context<'_>) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Vec::new();
    for list in lists {
        for (name, value) in *list {
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
            headers.push((name.clone(), value.render(ctx)));
        }
    }
    headers
}

/// The request, with the event id as `Idempotency-Key`; no body for GET or
/// HEAD. A JSON body is serialized (a string value becomes a JSON string);
/// a text body is sent as it is. A request with a body gets
/// `content-type: application/json` unless the tool sets one; one without a
/// body gets none (RFC 9110 §8.3: it describes content there is none of).
fn request(
    method: String,
    url: String,
    mut headers: Vec<(String, String)>,
    (body, kind): (Value, BodyKind),
    event_id: &str,
) -> Output {
    headers.push(("idempotency-key".into(), event_id.to_string()));
    let body = (method != "GET" && method != "HEAD").then(|| match (body, kind) {
        (Value::String(s), BodyKind::Text) => s.into_bytes(),
        (other, _) => serde_json::to_vec(&other).expect("a JSON value serializes"),
    });
    if body.is_some()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        headers.push(("content-type".into(), "application/json".into()));
    }
    Output {
        payloads: vec![Payload::Http(HttpRequest {
            method,
            url,
            headers,
            body,
        })],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(method: &str, headers: &[(&str, &str)]) -> HttpRequest {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let out = request(
            method.into(),
            "http://hooks.example/h".into(),
            headers,
            (serde_json::json!({"a": 1}), BodyKind::Json),
            "ev-1",
        );
        match out.payloads.into_iter().next() {
            Some(Payload::Http(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn header<'a>(r: &'a HttpRequest, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn bodyless_requests_carry_no_content_type() {
        for method in ["GET", "HEAD"] {
            let r = sent(method, &[]);
            assert_eq!(r.body, None);
            assert_eq!(header(&r, "content-type"), None, "{method}");
            assert_eq!(header(&r, "idempotency-key"), Some("ev-1"));
        }
        let r = sent("POST", &[]);
        assert_eq!(r.body.as_deref(), Some(&br#"{"a":1}"#[..]));
        assert_eq!(header(&r, "content-type"), Some("application/json"));
        // The operator's own content type wins, with or without a body.
        let r = sent("POST", &[("Content-Type", "text/plain")]);
        assert_eq!(header(&r, "content-type"), Some("text/plain"));
        assert_eq!(
            r.headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .count(),
            1
        );
    }

    /// `check` points at the placeholder that would pick the host, not
    /// at the `url` key.
    #[test]
    fn a_templated_host_is_refused_at_its_placeholder() {
        let text = "type = \"http\"\n[settings]\nurl = \"https://{{ client.host }}/x\"\n";
        let file: ToolFile = toml::from_str(text).unwrap();
        let problem = Http::from_config(Path::new("h.toml"), text, &file, &Variables::new())
            .err()
            .unwrap();
        assert_eq!((problem.line, problem.col), (3, 16), "{problem:?}");
    }

    fn load(text: &str) -> Result<Http, Problem> {
        let file: ToolFile = toml::from_str(text).unwrap();
        Http::from_config(Path::new("h.toml"), text, &file, &Variables::new())
    }

    /// `settings.url` is needed as soon as any one automated action is on,
    /// and only then.
    #[test]
    fn url_is_needed_with_any_automated_action() {
        for kind in ["pageview", "track", "ecommerce"] {
            let text = format!("type = \"http\"\n[automated]\n{kind} = true\n");
            let problem = load(&text).err().unwrap();
            assert!(
                problem.message.contains("needs settings.url"),
                "{kind}: {problem:?}"
            );
        }
        assert!(load("type = \"http\"\n").is_ok());
    }

    /// A `request` action's method is fixed text (any case), numbers in
    /// header values are their text, and a problem in an action's URL is
    /// reported at its placeholder.
    #[test]
    fn request_action_fields() {
        let action = |fields: &str| {
            format!(
                "type = \"http\"\n[[actions]]\nname = \"a\"\nkind = \"request\"\nfiring = [\"Pageview\"]\nfields = {{ {fields} }}\n"
            )
        };
        let http = load(&action(
            "url = \"https://h.example/x\", method = \"put\", headers = { X-Count = 5 }",
        ))
        .unwrap();
        let request = http.actions[0].as_ref().unwrap();
        assert_eq!(request.method.as_deref(), Some("PUT"));
        let headers: Vec<(&str, Option<&str>)> = request
            .headers
            .iter()
            .map(|(k, t)| (k.as_str(), t.as_literal()))
            .collect();
        assert_eq!(headers, [("X-Count", Some("5"))]);
        let problem = load(&action("url = \"https://{{ client.h }}/x\""))
            .err()
            .unwrap();
        assert_eq!((problem.line, problem.col), (6, 27), "{problem:?}");
        let problem = load(&action(
            "url = \"https://h.example/x\", method = \"{{ client.m }}\"",
        ))
        .err()
        .unwrap();
        assert!(problem.message.contains("valid HTTP method"), "{problem:?}");
    }

    /// How a configured body is sent: a table as JSON; a string as text
    /// when it has no values or only raw ones; a lone value as that value
    /// JSON-encoded; anything mixing text and encoded values refused.
    #[test]
    fn body_kinds() {
        let kind = |text: &str| {
            body_kind(&TemplateValue::Template(Template::parse(text).unwrap()))
                .map_err(|_| "refused")
        };
        assert_eq!(
            body_kind(&TemplateValue::Object(Vec::new())),
            Ok(BodyKind::Json)
        );
        assert_eq!(kind("hello"), Ok(BodyKind::Text));
        assert_eq!(kind("{{ client.x | raw }}"), Ok(BodyKind::Text));
        assert_eq!(
            kind("a={{ client.x | raw }}&b={{ client.y | raw }}"),
            Ok(BodyKind::Text)
        );
        assert_eq!(kind("{{ client.x }}"), Ok(BodyKind::Json));
        assert_eq!(kind("{{ $token }}"), Ok(BodyKind::Json));
        for refused in [
            "a={{ client.x }}",
            "{{ client.x }}{{ client.y }}",
            "{{ client.x | raw }}{{ client.y }}",
        ] {
            assert_eq!(kind(refused), Err("refused"), "{refused}");
        }
    }

    /// Header names are checked at load, and values that read no event.
    #[test]
    fn headers_are_checked_at_load() {
        let variables = Variables::new();
        let t = |text: &str| Template::parse(text).unwrap();
        assert!(check_header("X-Order", &t("{{ client.order }}"), &variables).is_ok());
        assert!(check_header("X Order", &t("1"), &variables).is_err());
        assert!(check_header("X-Order", &t("a\rb"), &variables).is_err());
    }

    /// Every URL's origin, the settings' and each action's, once.
    #[test]
    fn origins_of_every_url_once() {
        let text = "type = \"http\"\n[settings]\nurl = \"https://a.example/x\"\n[[actions]]\nname = \"b\"\nkind = \"request\"\nfiring = [\"Pageview\"]\nfields = { url = \"https://b.example/y\" }\n[[actions]]\nname = \"a\"\nkind = \"request\"\nfiring = [\"Pageview\"]\nfields = { url = \"https://a.example/z\" }\n";
        let http = load(text).unwrap();
        assert_eq!(
            crate::tools::origin_names(&http.origins()),
            ["https://a.example", "https://b.example"]
        );
    }

    /// A later list's header replaces an earlier one of the same name
    /// (case-insensitively); others stay.
    #[test]
    fn later_headers_replace_earlier_ones() {
        let t = |text: &str| Template::literal(text);
        let settings = [("X-A".to_string(), t("1")), ("X-B".to_string(), t("b"))];
        let action = [("x-a".to_string(), t("2"))];
        let ctx = Context {
            client: &Value::Null,
            system: &Value::Null,
            variables: &Variables::new(),
        };
        assert_eq!(
            render_headers(&[&settings, &action], &ctx),
            [
                ("X-B".to_string(), "b".to_string()),
                ("x-a".to_string(), "2".to_string())
            ]
        );
    }
}
