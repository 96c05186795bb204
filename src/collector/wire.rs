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
    let wires = match parse_valid(body) {
        Some(wires) => {
            if wires.is_empty() {
                return Err(BadBatch("the batch holds no events".into()));
            }
            if wires.len() > MAX_BATCH {
                return Err(too_many(wires.len()));
            }
            wires
        }
        None => parse_explained(body)?,
    };
    let mut events = Vec::with_capacity(wires.len());
    for (i, wire) in wires.into_iter().enumerate() {
        if let Some(ev) = convert(wire).map_err(|m| BadBatch(format!("[{i}].{m}")))? {
            events.push(ev);
        }
    }
    Ok(events)
}

/// The fast path: the body straight into events, with no intermediate
/// `Value` tree and no path tracking. `None` for anything it does not
/// take (any error, a duplicate key), which [`parse_explained`] then parses
/// again to say what is wrong: both accept the same bodies into the same
/// events, so only the cost differs (the two-step parse was 6 % of the
/// process at ten events per request).
///
/// The body is checked as UTF-8 first: `serde_json` reading bytes skips the
/// strings of unknown keys without checking them, where the careful path's
/// `Value` checks every string; found by the `collector_wire` fuzz target.
fn parse_valid(body: &[u8]) -> Option<Vec<WireEvent>> {
    let text = std::str::from_utf8(body).ok()?;
    match text
        .bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))?
    {
        b'[' => serde_json::from_str(text).ok(),
        b'{' => serde_json::from_str(text).ok().map(|one| vec![one]),
        _ => None,
    }
}

fn too_many(n: usize) -> BadBatch {
    BadBatch(format!(
        "too many events: {n} (at most {MAX_BATCH} per request)"
    ))
}

/// The careful path: JSON first, then each event with the path of what is
/// wrong in it (`[2].page.url: invalid type…`).
fn parse_explained(body: &[u8]) -> Result<Vec<WireEvent>, BadBatch> {
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
        return Err(too_many(items.len()));
    }
    let mut wires = Vec::with_capacity(items.len());
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
        wires.push(wire);
    }
    Ok(wires)
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

    /// The fast path takes what the careful one takes, into the same
    /// events, and leaves it everything else (duplicate keys included).
    #[test]
    fn both_parses_agree() {
        let bodies = [
            r#"{"type":"pageview","page":{"url":"https://x.test/","title":"T"},"device":{"viewport":"1x1","tz_offset":-60}}"#,
            r#" [{"type":"track","name":"a","properties":{"n":1.5,"o":{"p":[1,"x",null]},"n":2}},{"type":"set","vars":{"k":"v"}},{"type":"ecommerce","name":"Order Completed","ts":1732450000000,"id":"abcdefgh","consent_replay":true,"extra":{}}]"#,
            "\r\n\t[{\"type\":\"pageview\",\"page\":null,\"name\":null}]",
        ];
        for body in bodies {
            let fast = parse_valid(body.as_bytes()).expect("the fast path takes it");
            let careful = parse_explained(body.as_bytes()).unwrap();
            assert_eq!(format!("{fast:?}"), format!("{careful:?}"), "{body}");
        }
        // Too many events is said first, even when an event is also bad
        // (the careful path's count); exactly the limit is not too many.
        let batch = |n: usize| {
            let mut items = vec![r#"{"type":"pageview"}"#; n - 1];
            items.push(r#"{"type":"rocket"}"#);
            format!("[{}]", items.join(","))
        };
        assert_eq!(
            parse_batch(batch(MAX_BATCH + 1).as_bytes()).unwrap_err().0,
            format!(
                "too many events: {} (at most {MAX_BATCH} per request)",
                MAX_BATCH + 1
            )
        );
        let at_limit = parse_batch(batch(MAX_BATCH).as_bytes()).unwrap_err().0;
        assert!(
            at_limit.starts_with(&format!("[{}].type: unknown variant", MAX_BATCH - 1)),
            "{at_limit}"
        );
        // The same limit on the fast path: the limit is taken, one more is not.
        let valid = |n: usize| format!("[{}]", vec![r#"{"type":"pageview"}"#; n].join(","));
        assert_eq!(
            parse_batch(valid(MAX_BATCH).as_bytes()).unwrap().len(),
            MAX_BATCH
        );
        assert!(parse_batch(valid(MAX_BATCH + 1).as_bytes())
            .unwrap_err()
            .0
            .starts_with("too many events"));
        // Invalid UTF-8 in the value of a key the wire format does not
        // know: both refuse it (the fuzz target's find, kept in
        // fuzz/regressions/collector_wire/).
        let mut raw = br#"[{"type":"track","unknown":"tra"#.to_vec();
        raw.extend_from_slice(&[0xff; 4]);
        raw.extend_from_slice(br#"ck","name":"a"}]"#);
        assert!(parse_valid(&raw).is_none());
        assert!(parse_batch(&raw)
            .unwrap_err()
            .0
            .starts_with("invalid JSON:"));
        // A repeated field: the careful path keeps the last one, as before.
        let dup = r#"{"type":"track","name":"a","name":"b"}"#;
        assert!(parse_valid(dup.as_bytes()).is_none());
        assert_eq!(parse_batch(dup.as_bytes()).unwrap()[0].name, "b");
        for bad in [
            "",
            "  ",
            "42",
            "\u{c}[]",
            "[1]",
            r#"{"type":"x"}"#,
            "[{}] x",
        ] {
            assert!(parse_valid(bad.as_bytes()).is_none(), "{bad:?}");
        }
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

    /// A name of exactly the limit is taken and one character more is
    /// not; a timestamp must be zero or more milliseconds.
    #[test]
    fn names_and_timestamps_at_their_edges() {
        let track = |name: &str| format!(r#"{{"type":"track","name":"{name}"}}"#);
        let name = "ü".repeat(MAX_NAME_CHARS);
        assert_eq!(parse_batch(track(&name).as_bytes()).unwrap()[0].name, name);
        assert!(err(&track(&format!("{name}ü"))).contains("name: longer than"));

        let at = |ts: &str| format!(r#"{{"type":"track","name":"a","ts":{ts}}}"#);
        assert_eq!(
            parse_batch(at("0").as_bytes()).unwrap()[0].timestamp_ms,
            Some(0)
        );
        for bad in ["-1", "-0.5"] {
            assert!(
                err(&at(bad)).contains("ts: must be a positive number"),
                "{bad}"
            );
        }
    }
}
