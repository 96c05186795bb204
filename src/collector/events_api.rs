//! The HTTP Events API, `POST {prefix}/api/events` (SPEC §3, §5): Zaraz's
//! server-to-server way in. A server (or an app) sends events it saw outside
//! the browser, each with the visitor's `system` data; every event is
//! processed exactly as the collector processes a browser event (the same
//! [`Pending`] path: privacy settings, consent, bots, dedupe, triggers,
//! automated and custom actions, durable queueing before the answer), and
//! the answer gives, per event and in order, what tools want the caller to
//! do in the visitor's browser.
//!
//! Unlike Zaraz's (which has no authentication), the endpoint needs
//! `Authorization: Bearer <token>` of a token with `events:write`
//! ([`crate::admin::tokens`]): `401` without a valid one, `403` without the
//! scope, checked before the body is read.
//!
//! Body, after Cloudflare's "HTTP Events API" page
//! (<https://developers.cloudflare.com/zaraz/http-events-api/>):
//!
//! ```json
//! {"events": [{
//!   "client": {"__zarazTrack": "transaction successful", "value": "200"},
//!   "system": {
//!     "page": {"url": "https://example.com/", "title": "…", "referrer": "…", "encoding": "UTF-8"},
//!     "device": {"ip": "192.0.2.1", "language": "en-US", "resolution": "1920x1080",
//!                "viewport": "1280x720", "user-agent": "Mozilla/5.0 …"},
//!     "cookies": {"_ga": "GA1.1.1234.5678", "cf_consent": "%7B%22analytics%22%3Atrue%7D"}
//!   },
//!   "id": "order-1234-paid",
//!   "ts": 1732450000000
//! }]}
//! ```
//!
//! `client.__zarazTrack` (required) is the event name; with
//! `client.__zarazEcommerce: true` the event is an ecommerce event (its name
//! an ecommerce event name such as `Order Completed`), and `Pageview` makes
//! a pageview; every other `client` key is an event property. `id` and `ts`
//! are tagproxy's additions, as in the collector's wire format: a
//! well-formed `id` (8–64 of `[A-Za-z0-9_-]`) makes retries idempotent and
//! is the id every delivery carries; `ts` is when the event happened (ms).
//! Unknown keys are ignored, as Zaraz does.
//!
//! Answer `200`: `{"results": [{"id", "fetch": [url…], "execute": [js…],
//! "return": {…}, "cookies": {name: {"value", "max_age", "set_cookie"}},
//! "dropped"?: "bot" | "duplicate"}, …]}`, one result per event in order.
//! `cookies` holds what the collector would have set with `Set-Cookie`:
//! tagproxy's `tp_cid` / `tp_sid` and the tools' cookies (`_fbp`…), with a
//! ready `Set-Cookie` value (domain and `Secure` from the event's page URL)
//! for a caller that forwards them to the visitor.
//!
//! Limits: at most [`MAX_EVENTS`] events per call, each at most
//! `max_event_bytes` of JSON, the body at most `MAX_EVENTS ×
//! max_event_bytes`. A call over a limit is answered `413` and one with an
//! invalid event `400` naming it: nothing of such a call is processed (all
//! or nothing, so a caller can fix and resend the whole call without
//! duplicates).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::wire::WirePage;
use super::{
    json_error, json_response, media_type, method_not_allowed, read_body, visitor_ip, Answered,
    Pending, Visitor,
};
use crate::admin::tokens::{AuthError, Scope};
use crate::app::App;
use crate::config::canonical_ip;
use crate::event::identity::{cookie_domain, Tracker};
use crate::event::{now_ms, DeviceInfo, EventInput, Kind, RequestInfo, PAGEVIEW};
use crate::metrics::Metrics;
use crate::proxy::body::ProxyBody;
use crate::tools::ToolCookie;

/// Most events one call may carry. Meta's Conversions API takes up to 1,000
/// per call, Zaraz documents no limit; 100 keeps one call's spool append
/// and answer small while batching well.
pub const MAX_EVENTS: usize = 100;

/// Longest event name, as in the collector.
const MAX_NAME_CHARS: usize = 256;

/// Handles one events API call.
pub async fn handle(app: &App, req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
    if req.method() != http::Method::POST {
        return method_not_allowed();
    }
    // Before the body is read: an unauthorised caller costs nothing more.
    if let Err(e) = authorize(app, req.headers()).await {
        return refused(&e, peer);
    }
    let (content_type, mime) = media_type(req.headers());
    if mime != "application/json" {
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("unsupported content type {content_type:?}: send application/json"),
        );
    }
    let per_event = app.max_event_bytes as usize;
    let limit = MAX_EVENTS.saturating_mul(per_event);
    let (parts, body) =
        match read_body(req, limit, &format!("{MAX_EVENTS} × max_event_bytes")).await {
            Ok(read) => read,
            Err(resp) => return resp,
        };
    let events = match parse(&body, per_event) {
        Ok(events) => events,
        Err(BadCall(status, message)) => return json_error(status, &message),
    };
    // No `system.device.ip`: the caller's own address (as the collector
    // would see it).
    let caller_ip = visitor_ip(&app.trusted, peer.ip(), &parts.headers);
    let now = now_ms();
    Metrics::add(&app.metrics.events_received, events.len() as u64);

    // Events with the same cookies, address and User-Agent are one visitor:
    // one identity (hits and the session count on), as a browser's batch.
    let mut visitors: Vec<Visitor> = Vec::new();
    let mut known: HashMap<String, usize> = HashMap::new();
    let mut pending = Pending::default();
    let mut answered = Vec::with_capacity(events.len());
    for ApiEvent {
        input,
        ip,
        user_agent,
        cookies,
    } in events
    {
        let ip = ip.unwrap_or(caller_ip);
        let key = (!cookies.is_empty()).then(|| {
            let sorted: BTreeMap<_, _> = cookies.iter().collect();
            json!([sorted, ip.to_string(), user_agent]).to_string()
        });
        let index = match key.as_ref().and_then(|k| known.get(k)) {
            Some(&i) => i,
            None => {
                let visitor = new_visitor(app, ip, &user_agent, cookies, now);
                visitors.push(visitor);
                if let Some(k) = key {
                    known.insert(k, visitors.len() - 1);
                }
                visitors.len() - 1
            }
        };
        let page_url = input.page.url.clone();
        let out = pending.process(app, &mut visitors[index], input, now);
        answered.push((index, page_url, out));
    }
    if let Err(resp) = pending.commit(app).await {
        return resp;
    }
    let results: Vec<Value> = answered
        .into_iter()
        .map(|(index, page_url, out)| result(app, &visitors[index].tracker, &page_url, out))
        .collect();
    json_response(StatusCode::OK, &json!({ "results": results }))
}

/// Checks `Authorization: Bearer <secret>` for a token with `events:write`.
/// The store does small blocking file reads (and records the last use), so
/// off the async threads.
async fn authorize(app: &App, headers: &http::HeaderMap) -> Result<(), AuthError> {
    let store = app.tokens.clone();
    let header = headers.get(http::header::AUTHORIZATION).cloned();
    tokio::task::spawn_blocking(move || store.authorize(header.as_ref(), Scope::EventsWrite))
        .await
        .unwrap_or_else(|e| Err(AuthError::Store(e.to_string())))
        .map(|_| ())
}

/// `401` (no, malformed, unknown, expired or revoked token, with
/// `WWW-Authenticate: Bearer` as RFC 6750 asks), `403` (no `events:write`)
/// or `500` (store unreadable), with `{"error": …}`.
fn refused(e: &AuthError, peer: SocketAddr) -> Response<ProxyBody> {
    let (id, name) = e.token().unwrap_or(("", ""));
    tracing::info!(status = e.status().as_u16(), reason = %e, token_id = id, token = name, remote = %peer, "events API call refused");
    // The store's path and OS error are for the log, not for the caller.
    let message = match e {
        AuthError::Store(_) => "the token store cannot be read; see the server log".to_string(),
        e => e.to_string(),
    };
    let mut resp = json_error(e.status(), &message);
    if e.status() == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"tagproxy\""),
        );
    }
    resp
}

/// A visitor as an event's `system` describes it. Location headers describe
/// the caller, not the visitor: no `system.device.location`. An absent
/// User-Agent is a server without one, not a bot.
fn new_visitor(
    app: &App,
    ip: IpAddr,
    user_agent: &str,
    cookies: HashMap<String, String>,
    now: u64,
) -> Visitor {
    let privacy = &app.privacy;
    let header: String = cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let tracker = Tracker::from_cookie_header_ms(&header, now);
    let info = RequestInfo {
        ip: privacy.ip(Some(canonical_ip(ip))),
        user_agent: app.ua.parse(&privacy.user_agent(user_agent)),
        cookies,
        location: Map::new(),
    };
    // "" would be judged a bot (`empty_user_agent`); a server event without
    // a User-Agent is judged on nothing.
    let judged = if user_agent.trim().is_empty() {
        "Mozilla/5.0"
    } else {
        user_agent
    };
    Visitor::new(app, info, tracker, judged, None)
}

/// One result object: Zaraz's `fetch`, `execute`, `return` and `cookies`.
/// `page_url` decides the cookies' `Domain` and `Secure`, as the collector's
/// page URL does.
fn result(app: &App, tracker: &Tracker, page_url: &str, out: Answered) -> Value {
    let url = url::Url::parse(page_url).ok();
    let host = url
        .as_ref()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let domain = cookie_domain(&app.settings.cookie_domain, &host);
    let secure = url.as_ref().is_some_and(|u| u.scheme() == "https");
    let ours = tracker
        .cookies()
        .into_iter()
        .map(|(name, value, max_age_secs)| ToolCookie {
            name: name.to_string(),
            value,
            max_age_secs,
        });
    let cookies: Vec<ToolCookie> = ours.chain(out.cookies).collect();
    result_json(
        &out.id,
        out.instructions,
        &cookies,
        domain.as_deref(),
        secure,
        out.dropped,
    )
}

/// The result object from an event's instructions and cookies. An
/// instruction `{"fetch": url}` goes to `fetch`, `{"execute": js}` to
/// `execute`, `{"return": {…}}` into `return`.
fn result_json(
    id: &str,
    instructions: Vec<Value>,
    cookies: &[ToolCookie],
    domain: Option<&str>,
    secure: bool,
    dropped: Option<&str>,
) -> Value {
    let mut fetch = Vec::new();
    let mut execute = Vec::new();
    let mut returned = Map::new();
    for instruction in instructions {
        let Value::Object(i) = instruction else {
            continue;
        };
        for (kind, value) in i {
            match (kind.as_str(), value) {
                ("fetch", v) => fetch.push(v),
                ("execute", v) => execute.push(v),
                ("return", Value::Object(r)) => returned.extend(r),
                _ => {}
            }
        }
    }
    let mut jar = Map::new();
    for c in cookies {
        // Not a valid cookie: the collector would not set it either.
        let Some(set_cookie) = c.set_cookie_header(domain, secure) else {
            continue;
        };
        jar.insert(
            c.name.clone(),
            json!({
                "value": c.value,
                "max_age": c.max_age_secs.min(crate::tools::MAX_COOKIE_SECS),
                "set_cookie": set_cookie,
            }),
        );
    }
    let mut r = json!({
        "id": id,
        "fetch": fetch,
        "execute": execute,
        "return": returned,
        "cookies": jar,
    });
    if let Some(why) = dropped {
        r["dropped"] = json!(why);
    }
    r
}

/// A call that cannot be processed: its status (`400` or `413`) and a
/// message naming what and where (`events[2].client.__zarazTrack: …`).
#[derive(Debug, PartialEq, Eq)]
pub struct BadCall(pub StatusCode, pub String);

/// One event of a call, ready for the collector's path.
#[derive(Debug)]
pub struct ApiEvent {
    pub input: EventInput,
    /// `system.device.ip`; `None` = the caller's address.
    pub ip: Option<IpAddr>,
    /// `system.device.user-agent` (`""` when absent).
    pub user_agent: String,
    /// `system.cookies`.
    pub cookies: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct WireEvent {
    client: Map<String, Value>,
    #[serde(default)]
    system: Option<WireSystem>,
    id: Option<String>,
    ts: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
struct WireSystem {
    page: Option<WirePage>,
    device: Option<WireDevice>,
    cookies: Option<HashMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
struct WireDevice {
    ip: Option<String>,
    resolution: Option<String>,
    viewport: Option<String>,
    language: Option<String>,
    #[serde(rename = "user-agent")]
    user_agent: Option<String>,
}

/// Parses and validates a whole call: every event or none.
/// `max_event_bytes` bounds each event's JSON.
pub fn parse(body: &[u8], max_event_bytes: usize) -> Result<Vec<ApiEvent>, BadCall> {
    let bad = |m: String| BadCall(StatusCode::BAD_REQUEST, m);
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let Value::Object(mut top) = value else {
        return Err(bad(format!(
            "the body must be an object with an `events` array, not {}",
            super::wire::kind_of(&value)
        )));
    };
    let items = match top.remove("events") {
        None | Some(Value::Null) => {
            return Err(bad("events: required, an array of event objects".into()))
        }
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(bad(format!(
                "events: must be an array of event objects, not {}",
                super::wire::kind_of(&other)
            )))
        }
    };
    if items.is_empty() {
        return Err(bad("events: the array holds no events".into()));
    }
    if items.len() > MAX_EVENTS {
        return Err(BadCall(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "too many events: {} (at most {MAX_EVENTS} per call); nothing was processed",
                items.len()
            ),
        ));
    }
    let mut events = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let size = item.to_string().len();
        if size > max_event_bytes {
            return Err(BadCall(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "events[{i}]: {size} bytes, more than max_event_bytes ({max_event_bytes}); nothing was processed"
                ),
            ));
        }
        let wire: WireEvent = serde_path_to_error::deserialize(item).map_err(|e| {
            let path = e.path().to_string();
            let at = if path == "." {
                format!("events[{i}]")
            } else {
                format!("events[{i}].{path}")
            };
            bad(format!("{at}: {}", e.inner()))
        })?;
        events.push(convert(wire).map_err(|m| bad(format!("events[{i}].{m}")))?);
    }
    Ok(events)
}

fn convert(w: WireEvent) -> Result<ApiEvent, String> {
    let mut properties = w.client;
    let name = match properties.remove("__zarazTrack") {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        None | Some(Value::Null) => {
            return Err("client.__zarazTrack: required, the event name".into())
        }
        Some(Value::String(_)) => return Err("client.__zarazTrack: must not be empty".into()),
        Some(other) => {
            return Err(format!(
                "client.__zarazTrack: must be a string, not {}",
                super::wire::kind_of(&other)
            ))
        }
    };
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "client.__zarazTrack: longer than {MAX_NAME_CHARS} characters"
        ));
    }
    let ecommerce = match properties.remove("__zarazEcommerce") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(other) => {
            return Err(format!(
                "client.__zarazEcommerce: must be true or false, not {}",
                super::wire::kind_of(&other)
            ))
        }
    };
    let kind = if ecommerce {
        Kind::Ecommerce
    } else if name == PAGEVIEW {
        Kind::Pageview
    } else {
        Kind::Track
    };
    let system = w.system.unwrap_or_default();
    let page = system.page.unwrap_or_default();
    if let Some(url) = &page.url {
        if !url.is_empty()
            && url::Url::parse(url).map_or(true, |u| !matches!(u.scheme(), "http" | "https"))
        {
            return Err(format!(
                "system.page.url: not an absolute http(s) URL: {url:?}"
            ));
        }
    }
    let device = system.device.unwrap_or_default();
    let ip = match device.ip.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<IpAddr>()
                .map_err(|_| format!("system.device.ip: not an IP address: {s:?}"))?,
        ),
    };
    let ts = match w.ts {
        Some(t) if t.is_finite() && t >= 0.0 => Some(t as u64),
        Some(_) => return Err("ts: must be a positive number of milliseconds".into()),
        None => None,
    };
    Ok(ApiEvent {
        input: EventInput {
            kind: Some(kind),
            name,
            properties,
            vars: Map::new(),
            page: page.into(),
            device: DeviceInfo {
                viewport: device.viewport.unwrap_or_default(),
                resolution: device.resolution.unwrap_or_default(),
                language: device.language.unwrap_or_default(),
                tz_offset: None,
            },
            timestamp_ms: ts,
            id: w.id,
            consent_replay: false,
        },
        ip,
        user_agent: device.user_agent.unwrap_or_default(),
        cookies: system.cookies.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 65536;

    fn err(body: &str) -> (u16, String) {
        let BadCall(status, m) = parse(body.as_bytes(), MAX).unwrap_err();
        (status.as_u16(), m)
    }

    /// The examples of <https://developers.cloudflare.com/zaraz/http-events-api/>.
    #[test]
    fn the_documented_payloads_parse() {
        let one = parse(
            br#"{"events":[{"client":{"__zarazTrack":"transaction successful","value":"200"}}]}"#,
            MAX,
        )
        .unwrap();
        assert_eq!(one.len(), 1);
        let e = &one[0];
        assert_eq!(e.input.kind, Some(Kind::Track));
        assert_eq!(e.input.name, "transaction successful");
        assert_eq!(
            Value::Object(e.input.properties.clone()),
            json!({"value": "200"})
        );
        assert_eq!((e.ip, e.user_agent.as_str()), (None, ""));

        let with_system = parse(
            br#"{"events":[{"client":{"__zarazTrack":"transaction successful","value":"200"},
                "system":{"page":{"url":"https://example.com","title":"My website"},
                          "device":{"language":"en-US","ip":"192.168.0.1"}}}]}"#,
            MAX,
        )
        .unwrap();
        let e = &with_system[0];
        assert_eq!(e.input.page.url, "https://example.com");
        assert_eq!(e.input.page.title, "My website");
        assert_eq!(e.input.device.language, "en-US");
        assert_eq!(e.ip, Some("192.168.0.1".parse().unwrap()));
    }

    #[test]
    fn every_system_key_and_the_event_kinds() {
        let events = parse(
            br#"{"events":[
              {"client":{"__zarazTrack":"Order Completed","__zarazEcommerce":true,"order_id":"A1","total":12.5},
               "system":{"page":{"url":"https://shop.test/thanks?x=1","title":"T","referrer":"https://www.google.com/","encoding":"UTF-8"},
                         "device":{"ip":"2001:db8::1","resolution":"1920x1080","viewport":"1280x720","language":"de-DE","user-agent":"Mozilla/5.0 X"},
                         "cookies":{"_ga":"GA1.1.1.2","cf_consent":"%7B%7D"}},
               "id":"order-A1-paid","ts":1732450000000,"future_key":1},
              {"client":{"__zarazTrack":"Pageview"}},
              {"client":{"__zarazTrack":"Pageview","__zarazEcommerce":false,"__other":"kept"}}
            ]}"#,
            MAX,
        )
        .unwrap();
        let e = &events[0];
        assert_eq!(e.input.kind, Some(Kind::Ecommerce));
        assert_eq!(e.input.name, "Order Completed");
        assert_eq!(
            Value::Object(e.input.properties.clone()),
            json!({"order_id": "A1", "total": 12.5})
        );
        assert_eq!(e.input.page.referrer, "https://www.google.com/");
        assert_eq!(e.input.page.encoding, "UTF-8");
        assert_eq!(e.input.device.resolution, "1920x1080");
        assert_eq!(e.input.device.viewport, "1280x720");
        assert_eq!(e.user_agent, "Mozilla/5.0 X");
        assert_eq!(e.ip, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(e.cookies["_ga"], "GA1.1.1.2");
        assert_eq!(e.input.id.as_deref(), Some("order-A1-paid"));
        assert_eq!(e.input.timestamp_ms, Some(1732450000000));
        assert_eq!(events[1].input.kind, Some(Kind::Pageview));
        assert_eq!(events[2].input.kind, Some(Kind::Pageview));
        assert_eq!(events[2].input.properties["__other"], "kept");
    }

    #[test]
    fn errors_say_what_and_where() {
        assert!(err("{nope").1.starts_with("invalid JSON: "));
        assert_eq!(err("{nope").0, 400);
        assert_eq!(
            err("[]"),
            (
                400,
                "the body must be an object with an `events` array, not an array".into()
            )
        );
        assert_eq!(
            err("{}"),
            (400, "events: required, an array of event objects".into())
        );
        assert_eq!(
            err(r#"{"events":{}}"#),
            (
                400,
                "events: must be an array of event objects, not an object".into()
            )
        );
        assert_eq!(
            err(r#"{"events":[]}"#),
            (400, "events: the array holds no events".into())
        );
        let (status, m) = err(r#"{"events":[{"client":{"__zarazTrack":"a"}},{"system":{}}]}"#);
        assert_eq!(status, 400);
        assert!(m.starts_with("events[1]: missing field `client`"), "{m}");
        let (_, m) = err(r#"{"events":[{"client":{"__zarazTrack":"a"}},7]}"#);
        assert!(m.starts_with("events[1]: invalid type: integer `7`"), "{m}");
        assert_eq!(
            err(r#"{"events":[{"client":{"value":"200"}}]}"#).1,
            "events[0].client.__zarazTrack: required, the event name"
        );
        assert_eq!(
            err(r#"{"events":[{"client":{"__zarazTrack":5}}]}"#).1,
            "events[0].client.__zarazTrack: must be a string, not a number"
        );
        assert_eq!(
            err(r#"{"events":[{"client":{"__zarazTrack":" "}}]}"#).1,
            "events[0].client.__zarazTrack: must not be empty"
        );
        assert_eq!(
            err(r#"{"events":[{"client":{"__zarazTrack":"a","__zarazEcommerce":"yes"}}]}"#).1,
            "events[0].client.__zarazEcommerce: must be true or false, not a string"
        );
        let (_, m) = err(
            r#"{"events":[{"client":{"__zarazTrack":"a"},"system":{"device":{"user-agent":["x"]}}}]}"#,
        );
        assert!(
            m.starts_with("events[0].system.device.user-agent: invalid type: sequence"),
            "{m}"
        );
        let (_, m) =
            err(r#"{"events":[{"client":{"__zarazTrack":"a"},"system":{"cookies":{"a":1}}}]}"#);
        assert!(
            m.starts_with("events[0].system.cookies.a: invalid type: integer `1`"),
            "{m}"
        );
        assert_eq!(
            err(
                r#"{"events":[{"client":{"__zarazTrack":"a"},"system":{"device":{"ip":"1.2.3"}}}]}"#
            )
            .1,
            "events[0].system.device.ip: not an IP address: \"1.2.3\""
        );
        assert_eq!(
            err(r#"{"events":[{"client":{"__zarazTrack":"a"},"system":{"page":{"url":"javascript:x"}}}]}"#).1,
            "events[0].system.page.url: not an absolute http(s) URL: \"javascript:x\""
        );
        assert_eq!(
            err(r#"{"events":[{"client":{"__zarazTrack":"a"},"ts":-1}]}"#).1,
            "events[0].ts: must be a positive number of milliseconds"
        );
    }

    #[test]
    fn results_sort_instructions_and_cookies_into_zarazs_keys() {
        let cookie = |name: &str, value: &str| ToolCookie {
            name: name.into(),
            value: value.into(),
            max_age_secs: 10 * 365 * 24 * 3600,
        };
        let r = result_json(
            "ev-1",
            vec![
                json!({"fetch": "https://px.test/a.gif"}),
                json!({"execute": "console.log(1)"}),
                json!({"return": {"tool": {"x": 1}}}),
                json!({"fetch": "https://px.test/b.gif"}),
            ],
            &[
                cookie("_fbp", "fb.1.1700000000000.42"),
                cookie("bad name", "x"),
            ],
            Some("example.com"),
            true,
            None,
        );
        assert_eq!(
            r,
            json!({
                "id": "ev-1",
                "fetch": ["https://px.test/a.gif", "https://px.test/b.gif"],
                "execute": ["console.log(1)"],
                "return": {"tool": {"x": 1}},
                "cookies": {"_fbp": {
                    "value": "fb.1.1700000000000.42",
                    "max_age": 31536000,
                    "set_cookie": "_fbp=fb.1.1700000000000.42; Path=/; Max-Age=31536000; SameSite=Lax; Domain=example.com; Secure",
                }},
            })
        );
        let dropped = result_json("ev-2", Vec::new(), &[], None, false, Some("bot"));
        assert_eq!(dropped["dropped"], "bot");
        assert_eq!(dropped["fetch"], json!([]));
    }

    #[test]
    fn limits_refuse_the_whole_call() {
        let one = r#"{"client":{"__zarazTrack":"a"}}"#;
        let call = |n: usize| format!(r#"{{"events":[{}]}}"#, vec![one; n].join(","));
        assert_eq!(parse(call(MAX_EVENTS).as_bytes(), MAX).unwrap().len(), 100);
        assert_eq!(
            err(&call(1000)),
            (
                413,
                "too many events: 1000 (at most 100 per call); nothing was processed".into()
            )
        );
        let big = format!(
            r#"{{"events":[{one},{{"client":{{"__zarazTrack":"a","blob":"{}"}}}}]}}"#,
            "x".repeat(MAX)
        );
        let (status, m) = err(&big);
        assert_eq!(status, 413);
        assert!(m.starts_with("events[1]: 655"), "{m}");
        assert!(m.ends_with("more than max_event_bytes (65536); nothing was processed"));
    }

    /// The limits are inclusive: an event of exactly `max_event_bytes`
    /// (as compact JSON) and a name of exactly 256 characters are taken;
    /// one byte or one character more is refused, naming the event.
    #[test]
    fn limits_take_their_exact_size() {
        let event = |name: &str, pad: usize| {
            format!(
                r#"{{"client":{{"__zarazTrack":"{name}","pad":"{}"}}}}"#,
                "x".repeat(pad)
            )
        };
        let size = event("a", 0).len();
        let body = |e: String| format!(r#"{{"events":[{e}]}}"#);
        assert!(parse(body(event("a", 100)).as_bytes(), size + 100).is_ok());
        let (status, m) = {
            let BadCall(status, m) =
                parse(body(event("a", 101)).as_bytes(), size + 100).unwrap_err();
            (status.as_u16(), m)
        };
        assert_eq!(status, 413);
        assert!(m.starts_with("events[0]: "), "{m}");

        let name = "é".repeat(256);
        assert!(parse(body(event(&name, 0)).as_bytes(), MAX).is_ok());
        let (status, m) = err(&body(event(&format!("{name}é"), 0)));
        assert_eq!(status, 400);
        assert!(m.contains("longer than 256 characters"), "{m}");
    }
}
