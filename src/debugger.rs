//! The live debugger on the public listener (SPEC §3, §10):
//! `{prefix}/debug` is one HTML page served from the binary (no outside
//! assets) that shows the trail ([`crate::trail`]) as it happens, from
//! `{prefix}/debug/events` (Server-Sent Events).
//!
//! Who sees what:
//! - a browser holding `[settings] debug_key` (cookie `zarazDebug`, set by
//!   `zaraz.debug(key)` or by opening the page with `?tagproxy_debug=key`)
//!   sees its own events: those of its visitor id (`tp_cid`);
//! - an `events:read` token (`?token=` or `Authorization: Bearer`) sees
//!   every event;
//! - anyone else gets `401` (nothing presented) or `403` (a wrong key or
//!   token), and no data.

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use subtle::ConstantTimeEq as _;

use crate::admin::tokens::{AuthError, Scope};
use crate::app::App;
use crate::event::identity::{Tracker, CLIENT_COOKIE};
use crate::event::parse_cookies;
use crate::proxy::body::{self, ProxyBody};
use crate::trail::Filter;

/// The cookie `zaraz.debug(key)` sets.
pub const DEBUG_COOKIE: &str = "zarazDebug";
/// The query parameter that sets [`DEBUG_COOKIE`] from a link.
pub const DEBUG_PARAM: &str = "tagproxy_debug";

const PAGE: &str = include_str!("debugger.html");

/// Who is looking.
enum Viewer {
    /// An `events:read` token: every event.
    All,
    /// The `debug_key`: this visitor's events (`None`: no visitor id yet).
    Own(Option<String>),
}

/// Answers `{prefix}/debug` (`events == false`) and `{prefix}/debug/events`.
pub fn handle(app: &App, req: &Request<Incoming>, events: bool) -> Response<ProxyBody> {
    if req.method() != Method::GET {
        let mut resp = refusal(StatusCode::METHOD_NOT_ALLOWED, "use GET", events);
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return resp;
    }
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let viewer = match viewer(app, req, param("token"), param(DEBUG_PARAM)) {
        Ok(v) => v,
        Err((status, message)) => {
            tracing::debug!(
                status = status.as_u16(),
                reason = message,
                "debugger refused"
            );
            return refusal(status, message, events);
        }
    };
    if !events {
        let mut resp = Response::builder()
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .header(header::CACHE_CONTROL, "no-store")
            .header("referrer-policy", "no-referrer")
            .header(
                "content-security-policy",
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
            )
            .body(body::full(PAGE))
            .expect("static response");
        // `?tagproxy_debug=key` keeps the key in the browser, as
        // `zaraz.debug(key)` does.
        if let (Some(key), Viewer::Own(_)) = (param(DEBUG_PARAM), &viewer) {
            let cookie = format!("{DEBUG_COOKIE}={key}; Path=/; SameSite=Lax");
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
        }
        return resp;
    }
    let mut filter = Filter::from_query(req.uri().query());
    let hello = match &viewer {
        Viewer::All => json!({"scope": "all"}),
        Viewer::Own(None) => {
            // No visitor id yet: nothing of this browser's can be shown.
            // The stream ends; EventSource comes back after `retry`, by
            // when the page's first event may have set the cookie.
            let text = format!(
                "retry: 2000\nevent: hello\ndata: {}\n\n",
                json!({"scope": "own", "visitor": false})
            );
            return crate::trail::sse_response(body::full(text));
        }
        Viewer::Own(Some(id)) => {
            filter.visitor = Some(id.clone());
            json!({"scope": "own", "visitor": true})
        }
    };
    let body = crate::trail::sse_body(&app.metrics.trail, filter, hello);
    crate::trail::sse_response(body)
}

/// Who is asking, from the token (query or header) or the debug key
/// (query or cookie); the refusal's status and reason otherwise.
fn viewer(
    app: &App,
    req: &Request<Incoming>,
    token: Option<&str>,
    key_param: Option<&str>,
) -> Result<Viewer, (StatusCode, &'static str)> {
    let header_value;
    let auth = match token {
        Some(t) => {
            header_value = HeaderValue::from_str(&format!("Bearer {t}")).ok();
            header_value.as_ref()
        }
        None => req.headers().get(header::AUTHORIZATION),
    };
    if auth.is_some() {
        return match app.tokens.authorize(auth, Scope::EventsRead) {
            Ok(_) => Ok(Viewer::All),
            Err(AuthError::Forbidden { .. }) => Err((
                StatusCode::FORBIDDEN,
                "this token lacks the events:read scope",
            )),
            Err(_) => Err((StatusCode::UNAUTHORIZED, "the token is not valid")),
        };
    }
    let cookie_header = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join("; ");
    let cookies = parse_cookies(&cookie_header);
    let presented = key_param.or_else(|| cookies.get(DEBUG_COOKIE).map(String::as_str));
    let Some(presented) = presented.filter(|k| !k.is_empty()) else {
        return Err((
            StatusCode::UNAUTHORIZED,
            "open this page with ?tagproxy_debug=<debug_key> (or call zaraz.debug(key)), or with an events:read token",
        ));
    };
    let key = &app.settings.debug_key;
    if key.is_empty() || !bool::from(presented.as_bytes().ct_eq(key.as_bytes())) {
        return Err((StatusCode::FORBIDDEN, "wrong debug key"));
    }
    let visitor = cookies.contains_key(CLIENT_COOKIE).then(|| {
        Tracker::from_cookie_header_ms(&cookie_header, crate::event::now_ms())
            .next(false)
            .client_id
    });
    Ok(Viewer::Own(visitor))
}

/// A refusal: an HTML page for the page, JSON for the stream; no data.
fn refusal(status: StatusCode, message: &str, json: bool) -> Response<ProxyBody> {
    if json {
        return crate::collector::json_error(status, message);
    }
    let code = status.as_u16();
    let message = message.replace('<', "&lt;");
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(body::full(format!(
            "<!doctype html><meta charset=\"utf-8\"><title>{code} · tagproxy debugger</title><h1>{code}</h1><p>{message}</p>\n"
        )))
        .expect("static response")
}
