//! `http`: a generic webhook. Method, URL, headers and body are templates;
//! the default body is the event as JSON. Every request carries the event id
//! as `Idempotency-Key` so receivers can drop retries.

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
use crate::rules::template::{Template, TemplateValue};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    url: Option<TemplateString>,
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, TemplateString>,
    body: Option<TemplateValue>,
}

pub struct Http {
    url: Template,
    method: String,
    headers: Vec<(String, Template)>,
    body: Option<TemplateValue>,
}

impl Http {
    pub fn from_config(path: &Path, text: &str, file: &ToolFile) -> Result<Http, Problem> {
        let s: Settings = parse_settings(path, text)?;
        let automated = file.automated();
        let url = match (
            s.url,
            automated.pageview || automated.track || automated.ecommerce,
        ) {
            (Some(u), _) => u.0,
            (None, false) => Template::literal(""),
            (None, true) => {
                let at = file.settings_at();
                return Err(Problem::at(
                    path,
                    text,
                    at,
                    "the http tool needs settings.url when an automated action is on",
                ));
            }
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
        Ok(Http {
            url,
            method,
            headers: s.headers.into_iter().map(|(k, v)| (k, v.0)).collect(),
            body: s.body,
        })
    }
}

impl Adapter for Http {
    fn supports(&self) -> Automated {
        Automated::ALL
    }

    fn automated(&self, event: &Event, cx: &BuildContext<'_>) -> Output {
        let ctx = cx.template_context(event);
        let body = match &self.body {
            Some(b) => b.render(&ctx),
            None => json!({
                "id": event.id,
                "type": event.kind,
                "name": event.name,
                "timestamp": event.timestamp_ms,
                "client": event.client,
                "system": event.system,
            }),
        };
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.render(&ctx)))
            .collect();
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            headers.push(("content-type".into(), "application/json".into()));
        }
        request(
            self.method.clone(),
            self.url.render(&ctx),
            headers,
            body,
            &event.id,
        )
    }

    fn action_kinds(&self) -> &'static [(&'static str, &'static [&'static str])] {
        &[("request", &["url"])]
    }

    /// `request`: fields `url`, `method` (POST), `headers` (object) and
    /// `body`; without `body`, the other fields are the JSON body.
    fn custom(
        &self,
        _kind: &str,
        mut fields: Map<String, Value>,
        event: &Event,
        _cx: &BuildContext<'_>,
    ) -> Output {
        let text = |v: Option<Value>| match v {
            Some(Value::String(s)) => s,
            Some(other) if !other.is_null() => other.to_string(),
            _ => String::new(),
        };
        let url = text(fields.remove("url"));
        let method = Some(text(fields.remove("method")))
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "POST".into())
            .to_ascii_uppercase();
        let mut headers: Vec<(String, String)> = match fields.remove("headers") {
            Some(Value::Object(h)) => h.into_iter().map(|(k, v)| (k, text(Some(v)))).collect(),
            _ => Vec::new(),
        };
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            headers.push(("content-type".into(), "application/json".into()));
        }
        let body = fields.remove("body").unwrap_or(Value::Object(fields));
        request(method, url, headers, body, &event.id)
    }

    fn templates(&self) -> Vec<&Template> {
        let mut t = vec![&self.url];
        t.extend(self.headers.iter().map(|(_, v)| v));
        if let Some(b) = &self.body {
            t.extend(b.templates());
        }
        t
    }
}

/// The request, with the event id as `Idempotency-Key`; no body for GET.
fn request(
    method: String,
    url: String,
    mut headers: Vec<(String, String)>,
    body: Value,
    event_id: &str,
) -> Output {
    headers.push(("idempotency-key".into(), event_id.to_string()));
    let body = (method != "GET" && method != "HEAD").then(|| match body {
        Value::String(s) => s.into_bytes(),
        other => other.to_string().into_bytes(),
    });
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
