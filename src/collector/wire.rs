//! The collector's wire format (SPEC §5) and its validation. Errors name the
//! event and field, e.g. `[1].device.tz_offset: invalid type: …`.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::event::{DeviceInfo, EventInput, Kind, PageInfo};

/// Most events one request may carry.
pub const MAX_BATCH: usize = 50;
const MAX_NAME_CHARS: usize = 256;

#[derive(Debug, Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    kind: WireType,
    name: Option<String>,
    properties: Option<Map<String, Value>>,
    page: Option<WirePage>,
    device: Option<WireDevice>,
    vars: Option<Map<String, Value>>,
    ts: Option<f64>,
    id: Option<String>,
    #[serde(default)]
    consent_replay: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum WireType {
    Pageview,
    Track,
    Ecommerce,
    Set,
}

impl From<WirePage> for PageInfo {
    /// Absent fields are empty, as the browser leaves them when unknown.
    fn from(page: WirePage) -> PageInfo {
        PageInfo {
            url: page.url.unwrap_or_default(),
            title: page.title.unwrap_or_default(),
            referrer: page.referrer.unwrap_or_default(),
            encoding: page.encoding.unwrap_or_default(),
        }
    }
}

/// `page` as both the collector and the HTTP Events API send it.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct WirePage {
    pub(crate) url: Option<String>,
    pub(crate) title: Option<String>,
    pub(crate) referrer: Option<String>,
    pub(crate) encoding: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct WireDevice {
    viewport: Option<String>,
    resolution: Option<String>,
    language: Option<String>,
    tz_offset: Option<i64>,
}

/// A request body that is not a valid batch; the message is for the client.
#[derive(Debug, PartialEq, Eq)]
pub struct BadBatch(pub String);

/// Parses a request body into events. `set` events carry no event and are
/// dropped here (their values travel in every other event's `vars`).
pub fn parse_batch(body: &[u8]) -> Result<Vec<EventInput>, BadBatch> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| BadBatch(format!("invalid JSON: {e}")))?;
    let items = match value {
        Value::Array(items) => items,
        obj @ Value::Object(_) => vec![obj],
        other => {
            return Err(BadBatch(format!(
                "the body must be an event object or an array of events, not {}",
                kind_of(&other)
            )))
        }
    };
    if items.is_empty() {
        return Err(BadBatch("the batch holds no events".into()));
    }
    if items.len() > MAX_BATCH {
        return Err(BadBatch(format!(
            "too many events: {} (at most {MAX_BATCH} per request)",
            items.len()
        )));
    }
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let wire: WireEvent = serde_path_to_error::deserialize(item).map_err(|e| {
            let path = e.path().to_string();
            let at = if path == "." {
                format!("[{i}]")
            } else {
                format!("[{i}].{path}")
            };
            BadBatch(format!("{at}: {}", e.inner()))
        })?;
        if let Some(ev) = convert(wire).map_err(|m| BadBatch(format!("[{i}].{m}")))? {
            events.push(ev);
        }
    }
    Ok(events)
}

fn convert(w: WireEvent) -> Result<Option<EventInput>, String> {
    let kind = match w.kind {
        WireType::Pageview => Kind::Pageview,
        WireType::Track => Kind::Track,
        WireType::Ecommerce => Kind::Ecommerce,
        WireType::Set => return Ok(None),
    };
    let name = w.name.unwrap_or_default();
    // With auto_pageview off, sites send pageviews as zaraz.track("Pageview").
    let kind = if kind == Kind::Track && name == crate::event::PAGEVIEW {
        Kind::Pageview
    } else {
        kind
    };
    if kind != Kind::Pageview {
        if name.trim().is_empty() {
            return Err(format!(
                "name: required for {} events",
                if kind == Kind::Track {
                    "track"
                } else {
                    "ecommerce"
                }
            ));
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(format!("name: longer than {MAX_NAME_CHARS} characters"));
        }
    }
    let page = w.page.unwrap_or_default();
    if let Some(url) = &page.url {
        if !url.is_empty()
            && url::Url::parse(url).map_or(true, |u| !matches!(u.scheme(), "http" | "https"))
        {
            return Err(format!("page.url: not an absolute http(s) URL: {url:?}"));
        }
    }
    let device = w.device.unwrap_or_default();
    let ts = match w.ts {
        Some(t) if t.is_finite() && t >= 0.0 => Some(t as u64),
        Some(_) => return Err("ts: must be a positive number of milliseconds".into()),
        None => None,
    };
    Ok(Some(EventInput {
        kind: Some(kind),
        name,
        properties: w.properties.unwrap_or_default(),
        vars: w.vars.unwrap_or_default(),
        page: page.into(),
        device: DeviceInfo {
            viewport: device.viewport.unwrap_or_default(),
            resolution: device.resolution.unwrap_or_default(),
            language: device.language.unwrap_or_default(),
            tz_offset: device.tz_offset,
        },
        timestamp_ms: ts,
        id: w.id,
        consent_replay: w.consent_replay,
    }))
}

pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        parse_batch(body.as_bytes()).unwrap_err().0
    }

    #[test]
    fn good_batches() {
        let one = parse_batch(br#"{"type":"pageview","page":{"url":"https://x.test/"}}"#).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].kind, Some(Kind::Pageview));
        let many = parse_batch(br#"[{"type":"track","name":"signup","properties":{"m":"email"},"ts":1732450000000,"id":"abcdefgh"},{"type":"set","vars":{"a":1}},{"type":"ecommerce","name":"Order Completed","unknown":"ignored"}]"#).unwrap();
        assert_eq!(many.len(), 2);
        assert_eq!(many[0].properties["m"], "email");
        assert_eq!(many[0].timestamp_ms, Some(1732450000000));
        let pv = parse_batch(br#"{"type":"track","name":"Pageview"}"#).unwrap();
        assert_eq!(pv[0].kind, Some(Kind::Pageview));
    }

    #[test]
    fn errors_say_what_and_where() {
        assert!(err("{nope").starts_with("invalid JSON: "));
        assert_eq!(
            err("42"),
            "the body must be an event object or an array of events, not a number"
        );
        assert_eq!(err("[]"), "the batch holds no events");
        assert!(err(r#"[{"type":"pageview"},{"type":"rocket"}]"#)
            .starts_with("[1].type: unknown variant `rocket`"));
        assert!(err(r#"{"type":"pageview","device":{"tz_offset":"x"}}"#)
            .starts_with("[0].device.tz_offset: invalid type: string \"x\""));
        assert!(err(r#"{"type":"track","properties":[]}"#)
            .starts_with("[0].properties: invalid type: sequence"));
        assert_eq!(
            err(r#"{"type":"track"}"#),
            "[0].name: required for track events"
        );
        assert!(err(r#"{"name":"x"}"#).starts_with("[0]: missing field `type`"));
        assert!(
            err(r#"{"type":"pageview","page":{"url":"javascript:alert(1)"}}"#)
                .starts_with("[0].page.url: not an absolute")
        );
        let too_many = format!("[{}]", vec![r#"{"type":"pageview"}"#; 51].join(","));
        assert_eq!(
            err(&too_many),
            "too many events: 51 (at most 50 per request)"
        );
    }
}
