//! The collector, `POST {prefix}/t` (SPEC §5, §12): reads a batch of events
//! from the browser, builds each event, fans it out to tools, and answers
//! with the instructions tools have for the browser. It never waits for a
//! destination.

pub mod dedupe;
pub mod events_api;
pub mod wire;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use crate::app::App;
use crate::config::{canonical_ip, TrustedProxies};
use crate::consent::Choices;
use crate::event::identity::{cookie_domain, Tracker};
use crate::event::{now_ms, parse_cookies, Event, EventInput, RequestInfo};
use crate::metrics::Metrics;
use crate::proxy::body::{self, ProxyBody};
use crate::tools::ToolCookie;

/// Handles one collector request.
pub async fn handle(app: &App, req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
    if req.method() != Method::POST {
        tracing::debug!(method = %req.method(), "collector request rejected: not a POST");
        return method_not_allowed();
    }
    let (content_type, mime) = media_type(req.headers());
    if mime != "application/json" && mime != "text/plain" {
        tracing::debug!(
            content_type,
            "collector request rejected: unsupported content type"
        );
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("unsupported content type {content_type:?}: send application/json (or text/plain from sendBeacon)"),
        );
    }
    let limit = app.max_event_bytes as usize;
    let (parts, body) = match read_body(req, limit, "max_event_bytes").await {
        Ok(read) => read,
        Err(resp) => {
            tracing::debug!(
                status = resp.status().as_u16(),
                limit,
                "collector request rejected: body too large or unreadable"
            );
            return resp;
        }
    };
    let https = parts.extensions.get::<crate::proxy::Https>().is_some();
    let now = now_ms();
    let Prepared {
        pending,
        visitor,
        instructions,
        tool_cookies,
        page_url,
    } = match prepare(app, &parts.headers, parts.version, https, peer, &body, now) {
        Ok(prepared) => prepared,
        Err(wire::BadBatch(message)) => {
            tracing::debug!(reason = %message, "collector request rejected: invalid batch");
            return json_error(StatusCode::BAD_REQUEST, &message);
        }
    };
    let headers = &parts.headers;
    let trusted_hop = app.trusted.contains(peer.ip());
    let count = pending.events;
    if let Err(resp) = pending.commit(app).await {
        tracing::debug!("collector request rejected: delivery queue full (503)");
        return resp;
    }

    let host = url::Url::parse(&page_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let secure = page_url.starts_with("https:")
        || https
        || (trusted_hop && header_str(headers, "x-forwarded-proto").eq_ignore_ascii_case("https"));
    let domain = cookie_domain(&app.settings.cookie_domain, &host);
    let body = json!({"ok": true, "events": count, "instructions": instructions});
    let mut resp = json_response(StatusCode::OK, &body);
    let tool_cookies = tool_cookies
        .iter()
        .filter_map(|c| c.set_cookie_header(domain.as_deref(), secure));
    for cookie in visitor
        .tracker
        .set_cookies(domain.as_deref(), secure)
        .into_iter()
        .chain(tool_cookies)
    {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// A collector request's events, built and fanned out, their deliveries
/// not yet queued ([`prepare`]).
pub struct Prepared {
    pending: Pending,
    visitor: Visitor,
    instructions: Vec<Value>,
    tool_cookies: Vec<ToolCookie>,
    page_url: String,
}

impl Prepared {
    /// The deliveries the events made, in order.
    pub fn deliveries(&self) -> &[crate::tools::Delivery] {
        &self.pending.deliveries
    }
}

/// The per-event work of a collector request, without its I/O: parses the
/// batch `body`, judges the visitor (User-Agent, consent, bot score) from
/// `headers`, and builds, decides and renders every event for every tool
/// (at `now`, unix ms). Used by [`handle`] and by `benches/event_path.rs`.
pub fn prepare(
    app: &App,
    headers: &HeaderMap,
    version: http::Version,
    https: bool,
    peer: SocketAddr,
    body: &[u8],
    now: u64,
) -> Result<Prepared, wire::BadBatch> {
    let inputs = wire::parse_batch(body)?;
    let trusted_hop = app.trusted.contains(peer.ip());
    let privacy = &app.privacy;
    let info = RequestInfo {
        ip: privacy.ip(Some(visitor_ip(&app.trusted, peer.ip(), headers))),
        user_agent: app
            .ua
            .parse(&privacy.user_agent(header_str(headers, header::USER_AGENT.as_str()))),
        cookies: parse_cookies(header_str(headers, "cookie")),
        location: if trusted_hop {
            location(app, headers)
        } else {
            Map::new()
        },
    };
    let tracker = Tracker::from_cookie_header_ms(header_str(headers, "cookie"), now);
    let referer = header_str(headers, "referer").to_string();
    let user_agent = header_str(headers, header::USER_AGENT.as_str());
    let script_loaded = crate::bots::score::ScriptLoads::global()
        .loaded(visitor_ip(&app.trusted, peer.ip(), headers), user_agent);
    let facts = crate::bots::score::Request::of(
        headers,
        version,
        trusted_hop,
        crate::bots::score::Kind::Collector { script_loaded },
    )
    .over_tls(https);
    let mut visitor = Visitor::new(app, info, tracker, user_agent, Some(&facts));

    let mut instructions: Vec<Value> = Vec::new();
    // One `Set-Cookie` per name for the whole batch, however many events and
    // tools asked for it.
    let mut tool_cookies: Vec<ToolCookie> = Vec::new();
    let mut pending = Pending::default();
    Metrics::add(&app.metrics.events_received, inputs.len() as u64);
    let mut page_url = String::new();
    for mut input in inputs {
        if input.page.url.is_empty() {
            input.page.url = referer.clone();
        }
        if page_url.is_empty() {
            page_url = input.page.url.clone();
        }
        let out = pending.process(app, &mut visitor, input, now);
        for i in out.instructions {
            if !instructions.contains(&i) {
                instructions.push(i);
            }
        }
        crate::tools::merge_cookies(&mut tool_cookies, out.cookies);
    }
    Ok(Prepared {
        pending,
        visitor,
        instructions,
        tool_cookies,
        page_url,
    })
}

/// The visitor behind a group of events: what its request (the collector)
/// or its `system` object (the events API) says, its identity, consent
/// choices and whether it is a bot whose events are dropped.
pub(crate) struct Visitor {
    pub info: RequestInfo,
    pub tracker: Tracker,
    choices: Option<Arc<Choices>>,
    /// Why this visitor's events are dropped (`[bots] skip_events`), if so.
    bot: Option<&'static str>,
    /// The bot score (1 = surely automated … 99 = surely human), for
    /// `system.device.bot_score`.
    pub bot_score: u8,
}

impl Visitor {
    /// Consent from `info.cookies` (`cf_consent`, `euconsent-v2`), bots
    /// judged on the raw `user_agent` (before `clean_user_agent`) and, for a
    /// browser's own request (`facts`), on its headers (bot score).
    pub fn new(
        app: &App,
        info: RequestInfo,
        tracker: Tracker,
        user_agent: &str,
        facts: Option<&crate::bots::score::Request<'_>>,
    ) -> Visitor {
        let choices = app
            .consent
            .enabled
            .then(|| Arc::new(app.consent.evaluate(&info.cookies)));
        let verdict = app.bots.check(user_agent);
        let score = match facts {
            Some(facts) => crate::bots::score::score(&verdict, facts),
            None => {
                // A server's event: only its `system` User-Agent to judge.
                let empty = HeaderMap::new();
                let facts = crate::bots::score::Request {
                    headers: &empty,
                    version: http::Version::HTTP_11,
                    secure: false,
                    via_proxy: true,
                    kind: crate::bots::score::Kind::Page,
                };
                crate::bots::score::score(&verdict, &facts)
            }
        };
        let bot = (score.is_bot(app.bot_score_threshold) && app.skip_bot_events).then(|| {
            verdict
                .reason
                .or_else(|| score.signals.first().map(|s| s.name()))
                .unwrap_or("unknown")
        });
        Visitor {
            info,
            tracker,
            choices,
            bot,
            bot_score: score.score,
        }
    }
}

/// What one event gave its caller.
#[derive(Debug, Default)]
pub(crate) struct Answered {
    /// The event id (the client's when well-formed, else a fresh one).
    pub id: String,
    /// Browser instructions (`{"fetch": url}`), in the order tools gave them.
    pub instructions: Vec<Value>,
    /// Cookies tools keep in the visitor's browser, one per name.
    pub cookies: Vec<ToolCookie>,
    /// Why the event produced no delivery at all (`bot`, `duplicate`).
    pub dropped: Option<&'static str>,
}

/// The deliveries of one request's events, queued together (one spool
/// append and sync) before the request is answered. Shared by the
/// collector and the events API so both treat an event the same way.
#[derive(Default)]
pub(crate) struct Pending {
    deliveries: Vec<crate::tools::Delivery>,
    invalid: Vec<(crate::tools::Delivery, crate::tools::guard::Invalid)>,
    /// Client ids first seen in this request: forgotten again if the queue
    /// refuses the request, so the retry is not taken for a duplicate.
    fresh_ids: Vec<String>,
    /// Events processed so far.
    pub events: usize,
}

impl Pending {
    /// Builds one event as `visitor` sent it (privacy settings applied to
    /// its page), deduplicates it by client id, and fans it out to tools:
    /// the deliveries wait in `self` for [`Pending::commit`].
    pub fn process(
        &mut self,
        app: &App,
        visitor: &mut Visitor,
        mut input: EventInput,
        now: u64,
    ) -> Answered {
        self.events += 1;
        let privacy = &app.privacy;
        input.page.referrer = privacy.referrer(&input.page.referrer, &input.page.url);
        input.page.url = privacy.page_url(&input.page.url);
        let client_id = input.id.clone();
        let pageview = input.kind == Some(crate::event::Kind::Pageview);
        let mut event = Event::build(input, &visitor.info, visitor.tracker.next(pageview), now);
        event.system["device"]["bot_score"] = json!(visitor.bot_score);
        if let Some(choices) = &visitor.choices {
            event.system["consent"] = app.consent.system_json(choices);
            event.consent = Some(choices.clone());
        }
        event.consent_mode = app.consent.consent_mode(
            visitor.choices.as_deref().unwrap_or(&Default::default()),
            &event.client,
        );
        let mut answered = Answered {
            id: event.id.clone(),
            ..Answered::default()
        };
        if let Some(reason) = visitor.bot {
            app.metrics.bot_dropped(reason, 1);
            tracing::debug!(reason, event_id = %event.id, "bot events dropped");
            answered.dropped = Some("bot");
        }
        // A retried batch (same client ids) is answered again but delivered
        // once. A consent replay carries the original id on purpose: it is
        // its own delivery (to other tools), deduplicated as such.
        let dedupe_key = if event.consent_replay {
            format!("{}:replay", event.id)
        } else {
            event.id.clone()
        };
        if client_id.as_deref() == Some(event.id.as_str()) {
            if !app.recent_ids.first_time(&dedupe_key) {
                Metrics::add(&app.metrics.events_duplicate, 1);
                answered.dropped.get_or_insert("duplicate");
                app.observe(&event, Some("duplicate"), None);
                return answered;
            }
            self.fresh_ids.push(dedupe_key);
        }
        let event = Arc::new(event);
        // GA4's engaged sessions count key events: later events know.
        if app.is_key_event(&event) {
            visitor.tracker.key_event();
        }
        let mut out = app.fan_out(&event);
        app.observe(&event, visitor.bot.map(|_| "bot"), Some(&mut out));
        // Bots: answered like anyone (so they learn nothing), never delivered.
        if visitor.bot.is_some() {
            return answered;
        }
        self.deliveries.extend(out.deliveries);
        self.invalid.extend(out.invalid);
        answered.instructions = out.instructions;
        answered.cookies = out.cookies;
        answered
    }

    /// Queues every delivery (durably, before the caller answers) and
    /// dead-letters what can never be sent. `Err` is the `503` to answer
    /// when the queue is full.
    pub async fn commit(self, app: &App) -> Result<(), Response<ProxyBody>> {
        if app.engine.submit(self.deliveries).await.is_err() {
            // Not accepted after all: the client's retry must not look like a
            // duplicate.
            for key in &self.fresh_ids {
                app.recent_ids.forget(key);
            }
            let mut resp = json_error(StatusCode::SERVICE_UNAVAILABLE, "busy: retry later");
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return Err(resp);
        }
        // Accepted: what can never be sent goes to the dead letters now (after
        // the submit, so a batch answered 503 and retried is not counted twice).
        app.engine.dead_letter_invalid(self.invalid).await;
        Ok(())
    }
}

/// `405` with `Allow: POST`.
pub(crate) fn method_not_allowed() -> Response<ProxyBody> {
    let mut resp = json_error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    resp
}

/// The `Content-Type` as sent, and its media type alone, lowercased.
pub(crate) fn media_type(headers: &HeaderMap) -> (&str, String) {
    let content_type = header_str(headers, header::CONTENT_TYPE.as_str());
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    (content_type, mime)
}

/// Reads a request body of at most `limit` bytes. Over the limit (declared
/// or streamed): a `413` naming `limit` and what sets it (`limit_name`),
/// after draining what is left within bounds so the client sees the answer.
pub(crate) async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    limit_name: &str,
) -> Result<(http::request::Parts, Bytes), Response<ProxyBody>> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (parts, mut incoming) = req.into_parts();
    if let Some(n) = declared.filter(|n| *n > limit as u64) {
        if n <= DRAIN_MAX_BYTES {
            drain(&mut incoming).await;
        }
        return Err(too_large(limit, limit_name));
    }
    match Limited::new(&mut incoming, limit).collect().await {
        Ok(collected) => Ok((parts, collected.to_bytes())),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            drain(&mut incoming).await;
            Err(too_large(limit, limit_name))
        }
        Err(e) => {
            tracing::debug!(error = %e, "event body read failed");
            Err(json_error(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            ))
        }
    }
}

/// The visitor's IP: the socket's, or — when the socket is a trusted proxy —
/// the right-most `X-Forwarded-For` entry that is not itself trusted. An
/// entry that is not an IP address stops the walk at the last good hop.
pub fn visitor_ip(trusted: &TrustedProxies, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let peer = canonical_ip(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    let mut ip = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(value) = value.to_str() else { break };
        for hop in value.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(hop) => {
                    ip = canonical_ip(hop);
                    if !trusted.contains(ip) {
                        return ip;
                    }
                }
                Err(_) => return ip,
            }
        }
    }
    ip
}

/// `system.device.location` from the configured headers.
fn location(app: &App, headers: &HeaderMap) -> Map<String, Value> {
    let mut loc = Map::new();
    for (key, header_name) in app.location.pairs() {
        let v = header_str(headers, header_name);
        if !v.is_empty() {
            loc.insert(key.into(), Value::String(v.to_string()));
        }
    }
    if let Some(country) = loc.get("country").and_then(Value::as_str) {
        loc.insert(
            "isEUCountry".into(),
            Value::Bool(crate::event::is_eu_country(country)),
        );
    }
    loc
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// At most this much of a too-large body is read (and dropped) before the
/// `413`, for at most `DRAIN_TIME`.
const DRAIN_MAX_BYTES: u64 = 4 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and drops what is left of a rejected body, within bounds, so the
/// client gets the `413`: closing a socket with unread data resets the
/// connection, and the client would see a broken pipe instead of the answer.
async fn drain<B>(body: &mut B)
where
    B: http_body::Body + Unpin,
{
    use bytes::Buf as _;
    let mut left = DRAIN_MAX_BYTES;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, |d| d.remaining() as u64);
            if n >= left {
                return;
            }
            left -= n;
        }
    })
    .await;
}

fn too_large(limit: usize, limit_name: &str) -> Response<ProxyBody> {
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("body larger than {limit} bytes ({limit_name})"),
    )
}

pub fn json_response(status: StatusCode, body: &Value) -> Response<ProxyBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body::full(body.to_string()))
        .expect("static response")
}

pub fn json_error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    json_response(status, &json!({ "error": message }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use http_body_util::StreamBody;

    fn megabytes(n: usize) -> impl http_body::Body<Data = Bytes> + Unpin {
        StreamBody::new(futures_util::stream::iter((0..n).map(|_| {
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![0u8; 1 << 20])))
        })))
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_walked_from_the_right_past_trusted_hops_only() {
        let trusted = TrustedProxies(vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ]);
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let ip = |v: &[&str]| visitor_ip(&trusted, proxy, &xff(v)).to_string();
        assert_eq!(ip(&["198.51.100.7, 10.0.0.2"]), "198.51.100.7");
        // Two header lines are one list; the visitor cannot push a fake
        // address past the first untrusted hop.
        assert_eq!(ip(&["6.6.6.6, 198.51.100.7", "10.0.0.2"]), "198.51.100.7");
        assert_eq!(ip(&["::ffff:198.51.100.7"]), "198.51.100.7");
        // Garbage stops the walk at the last good hop.
        assert_eq!(ip(&["198.51.100.7, <script>, 10.0.0.2"]), "10.0.0.2");
        assert_eq!(ip(&[]), "127.0.0.1");
        // An untrusted peer's header is ignored.
        let outsider: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(visitor_ip(&trusted, outsider, &xff(&["1.2.3.4"])), outsider);
    }

    #[tokio::test]
    async fn drain_reads_the_rest_of_a_rejected_body_within_bounds() {
        let mut small = megabytes(3);
        drain(&mut small).await;
        assert!(small.frame().await.is_none());
        // A body past the bound is left alone after 4 MiB.
        let mut big = megabytes(10);
        drain(&mut big).await;
        let mut rest = 0;
        while big.frame().await.is_some() {
            rest += 1;
        }
        assert_eq!(rest, 6);
    }

    /// tagproxy with GA4 and Meta on every automated action and a
    /// custom-image pixel whose URL names only the event (so a batch of the
    /// same event asks the browser for the same URL), memory backend.
    fn app_with_tools(dir: &std::path::Path) -> App {
        std::fs::create_dir(dir.join("tools")).unwrap();
        std::fs::write(
            dir.join("tagproxy.toml"),
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:9\"\n[delivery]\nbackend = \"memory\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("tools/ga4.toml"),
            "type = \"google-analytics-4\"\nendpoint = \"http://127.0.0.1:9\"\n[settings]\nmeasurement_id = \"G-UNIT123\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("tools/meta.toml"),
            "type = \"facebook-pixel\"\nendpoint = \"http://127.0.0.1:9\"\n[settings]\npixel_id = \"1234567890\"\naccess_token = \"unit-token\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("tools/pixel.toml"),
            "type = \"custom-image\"\n[settings]\nurl = \"https://px.example/i.gif?e={{ client.__zarazTrack }}\"\n[automated]\npageview = true\ntrack = true\n",
        )
        .unwrap();
        let loaded = crate::config::load(&dir.join("tagproxy.toml")).unwrap();
        let plan = crate::app::Plan::load(&loaded, crate::rules::Secrets::Required).unwrap();
        let shared = crate::app::Shared::start(&loaded).unwrap();
        App::start(&loaded, plan, &shared)
    }

    /// Chrome's headers on a collector request, from the documented corpus
    /// (`fixtures/browser-headers.json`), with the page as its Referer.
    fn browser_headers() -> HeaderMap {
        let corpus: Value =
            serde_json::from_str(include_str!("../../fixtures/browser-headers.json")).unwrap();
        let entry = corpus["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "Chrome 131 Windows" && e["kind"] == "collector")
            .expect("the corpus has Chrome 131's collector request");
        let mut h = HeaderMap::new();
        for (k, v) in entry["headers"].as_object().unwrap() {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v.as_str().unwrap()).unwrap(),
            );
        }
        h.insert(
            header::REFERER,
            HeaderValue::from_static("https://shop.test/cart"),
        );
        h
    }

    /// `prepare` hands back every delivery of every event, in event order
    /// then tool order, and asks the browser for each distinct instruction
    /// once however many events produced it.
    #[tokio::test]
    async fn prepare_returns_each_events_deliveries_and_distinct_instructions() {
        let dir = tempfile::tempdir().unwrap();
        let app = app_with_tools(dir.path());
        let body = serde_json::to_vec(&serde_json::json!([
            {"type": "track", "name": "login"},
            {"type": "track", "name": "signup", "page": {"url": "https://shop.test/a"}},
            {"type": "track", "name": "signup", "page": {"url": "https://shop.test/a"}},
        ]))
        .unwrap();
        let peer: SocketAddr = "203.0.113.7:50000".parse().unwrap();
        let prepared = prepare(
            &app,
            &browser_headers(),
            http::Version::HTTP_11,
            true,
            peer,
            &body,
            1_764_000_000_000,
        )
        .unwrap();

        let deliveries = prepared.deliveries();
        let tools: Vec<&str> = deliveries.iter().map(|d| d.tool.as_str()).collect();
        assert_eq!(
            tools.len(),
            6,
            "GA4 and Meta for each of 3 events: {tools:?}"
        );
        assert_eq!(tools.iter().filter(|t| **t == "ga4").count(), 3);
        assert_eq!(tools.iter().filter(|t| **t == "meta").count(), 3);
        // Each event's deliveries share its id, and the three ids differ.
        let mut ids: Vec<&str> = deliveries.iter().map(|d| d.event_id.as_str()).collect();
        assert!(ids.iter().all(|id| !id.is_empty()));
        assert_eq!(ids[0], ids[1]);
        assert_eq!(ids[2], ids[3]);
        assert_eq!(ids[4], ids[5]);
        ids.dedup();
        assert_eq!(ids.len(), 3, "three distinct events: {ids:?}");

        // `login` asks for one URL; two `signup`s for another, once.
        let fetched: Vec<&str> = prepared
            .instructions
            .iter()
            .map(|i| i["fetch"].as_str().unwrap())
            .collect();
        assert_eq!(
            fetched,
            [
                "https://px.example/i.gif?e=login",
                "https://px.example/i.gif?e=signup"
            ]
        );
        // An event with no page URL takes the request's Referer, and the
        // batch's page is its first event's.
        assert_eq!(prepared.page_url, "https://shop.test/cart");
    }
}
