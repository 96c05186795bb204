//! The public listener: tagproxy's own endpoints under `prefix`, everything
//! else forwarded to the origin with the script injected into HTML.
//!
//! This module knows nothing of events; the collector plugs in as another
//! route under `prefix`.

pub mod assets;
pub mod body;
pub mod codec;
mod conn;
mod forward;
pub mod inject;

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::bots::BotDetector;
use crate::config::Config;
use body::ProxyBody;
pub use conn::{serve, Limits, Mode};
pub use forward::{error_response, Forwarder, InjectPolicy};

/// Where Zaraz's "load manually" tag loads it from
/// (<https://developers.cloudflare.com/zaraz/advanced/load-zaraz-manually/>):
/// such pages get the client script here and no injected copy.
pub const ZARAZ_LOADER_PATH: &str = "/cdn-cgi/zaraz/i.js";
/// Zaraz's track endpoint. Zaraz's own scripts POST events here and its
/// inline loader sends a bare `GET` when it fails; tagproxy's script posts
/// to `{prefix}/t`, so this path is an alias of the collector (see
/// [`Proxy::handle`]).
pub const ZARAZ_TRACK_PATH: &str = "/cdn-cgi/zaraz/t";
/// Marks a request that arrived over the HTTPS listener (a request
/// extension): the origin sees `X-Forwarded-Proto: https` and cookies get
/// `Secure`.
#[derive(Debug, Clone, Copy)]
pub struct Https;

/// Routes under `prefix` served by the layers above the proxy (the
/// collector…). Hands the request back when the path is not theirs.
pub trait PrefixHandler: Send + Sync {
    #[allow(clippy::type_complexity, clippy::result_large_err)]
    fn handle<'a>(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<BoxFuture<'a, Response<ProxyBody>>, Request<Incoming>>;
}

/// Everything a request handler needs, built once per config.
pub struct Proxy {
    prefix: String,
    script_path: String,
    /// Zaraz's loader paths (`/cdn-cgi/zaraz/i.js`, `initPath`): the
    /// client script is served there too.
    loader_paths: Vec<String>,
    /// Zaraz's `eventsApiPath`, an alias of `{prefix}/api/events`.
    zaraz_events_api_path: Option<String>,
    script: assets::Asset,
    consent_path: String,
    consent_script: assets::Asset,
    forwarder: Forwarder,
    routes: Option<Arc<dyn PrefixHandler>>,
    /// Set with `block_ai_crawlers`: AI crawlers get 403 before the origin.
    block_ai: Option<Arc<BotDetector>>,
    /// `[bots] score_threshold`.
    threshold: u8,
    /// Judges every request for the crawler counts (`bots::insights`).
    bots: Arc<BotDetector>,
    /// `[server] trusted_proxies`: their `X-Forwarded-*` are believed.
    trusted: crate::config::TrustedProxies,
    /// Connection limits; a reload applies them to new connections
    /// (`max_connections` only at start).
    pub limits: Limits,
    /// `[server.tls] redirect_http`: the plain listener redirects to https.
    redirect_http: bool,
}

impl Proxy {
    /// The origin's `host:port` (see [`Forwarder::upstream_addr`]).
    pub fn upstream_addr(&self) -> String {
        self.forwarder.upstream_addr()
    }

    pub fn new(
        config: &Config,
        script: assets::Asset,
        routes: Option<Arc<dyn PrefixHandler>>,
        bots: Arc<BotDetector>,
    ) -> Proxy {
        let server = &config.server;
        let prefix = server.prefix.0.clone();
        let script_path = format!("{prefix}/s.js");
        let mut loader_paths = vec![ZARAZ_LOADER_PATH.to_string()];
        if let Some(p) = &server.zaraz_init_path {
            loader_paths.push(p.0.clone());
        }
        let inject = config.settings.auto_inject.then(|| InjectPolicy {
            script_path: script_path.clone(),
            loader_paths: loader_paths.clone(),
            inject_iframes: config.settings.inject_iframes,
            skip_bots: config.bots.skip_events.then(|| bots.clone()),
            threshold: config.bots.score_threshold,
        });
        Proxy {
            forwarder: Forwarder::new(server, inject),
            script,
            script_path,
            loader_paths,
            zaraz_events_api_path: server.zaraz_events_api_path.as_ref().map(|p| p.0.clone()),
            consent_path: format!("{prefix}/c.js"),
            consent_script: assets::consent_script(),
            prefix,
            routes,
            block_ai: config.bots.block_ai_crawlers.then(|| bots.clone()),
            bots,
            threshold: config.bots.score_threshold,
            trusted: server.trusted_proxies.clone(),
            limits: Limits::of(server),
            redirect_http: server.tls.as_ref().is_some_and(|t| t.redirect_http),
        }
    }

    /// With `redirect_http`, the `308` that sends a plain-HTTP request to
    /// `https://<host>[:<https_port>]<path>` (the port left out when 443);
    /// `None` when it is served here: no redirect configured, or a trusted
    /// proxy says the visitor's request was https (`X-Forwarded-Proto`).
    pub fn https_redirect<B>(
        &self,
        req: &Request<B>,
        peer: SocketAddr,
        https_port: u16,
    ) -> Option<Response<ProxyBody>> {
        if !self.redirect_http {
            return None;
        }
        let forwarded_https = self.trusted.contains(peer.ip())
            && req
                .headers()
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
        if forwarded_https {
            return None;
        }
        let authority = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<http::uri::Authority>().ok())
            .or_else(|| req.uri().authority().cloned())
            .filter(|a| !a.as_str().contains('@'));
        let Some(authority) = authority else {
            return Some(error_response(
                StatusCode::BAD_REQUEST,
                "a Host header is needed to redirect to https",
                false,
            ));
        };
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let location = https_location(authority.host(), https_port, path);
        let Ok(location) = http::HeaderValue::from_str(&location) else {
            return Some(error_response(
                StatusCode::BAD_REQUEST,
                "bad request target",
                false,
            ));
        };
        let mut resp = Response::new(body::full(""));
        *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
        resp.headers_mut().insert(http::header::LOCATION, location);
        Some(resp)
    }

    /// Routes one request.
    ///
    /// Zaraz's paths are ours too, so a page written for Zaraz works
    /// unchanged: its loader paths serve the client script, its track path
    /// and `eventsApiPath` are handled as `{prefix}/t` and
    /// `{prefix}/api/events` (the request is re-targeted there).
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        let path = req.uri().path();
        if self.loader_paths.iter().any(|p| p == path) {
            return self.serve_script(&req, peer);
        }
        let alias = if path == ZARAZ_TRACK_PATH {
            // Zaraz's inline loader reports its own failure with a bare
            // `fetch("/cdn-cgi/zaraz/t")`: nothing to collect, no 404 either.
            if req.method() == Method::GET || req.method() == Method::HEAD {
                return Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .header(http::header::CACHE_CONTROL, "no-store")
                    .body(body::empty())
                    .expect("static response");
            }
            Some("/t")
        } else if self.zaraz_events_api_path.as_deref() == Some(path) {
            Some("/api/events")
        } else {
            None
        };
        let mut req = req;
        if let Some(rest) = alias {
            let target = match req.uri().query() {
                Some(q) => format!("{}{rest}?{q}", self.prefix),
                None => format!("{}{rest}", self.prefix),
            };
            // Only the path changes: an h2 request keeps its `:authority`.
            let mut parts = req.uri().clone().into_parts();
            let uri = target.parse().ok().and_then(|pq| {
                parts.path_and_query = Some(pq);
                http::Uri::from_parts(parts).ok()
            });
            match uri {
                Some(uri) => *req.uri_mut() = uri,
                None => return error_response(StatusCode::BAD_REQUEST, "bad request target", true),
            }
        }
        let path = req.uri().path();
        let ours = path
            .strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if !ours {
            let resp = self.proxied(req, peer).await;
            crate::metrics::proxy_response(resp.status().as_u16());
            return resp;
        }
        self.ours(req, peer).await
    }

    /// A request for the origin (or refused on its way there).
    async fn proxied(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        let path = req.uri().path();
        {
            let ua = req
                .headers()
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let verdict = self.bots.check(ua);
            // Clients that claim to be a browser (no list knows their
            // User-Agent) but score as bots: crawlers disguised as
            // browsers, which is how many that ignore robots.txt fetch pages.
            let disguised = !verdict.bot
                && {
                    let facts = crate::bots::score::Request::of(
                        req.headers(),
                        req.version(),
                        self.trusted.contains(peer.ip()),
                        crate::bots::score::Kind::Page,
                    )
                    .over_tls(req.extensions().get::<Https>().is_some());
                    let score = crate::bots::score::score(&verdict, &facts);
                    if score.is_bot(self.threshold) {
                        tracing::debug!(bot_score = score.score, signals = %score.reasons(), user_agent = ua, "browser User-Agent scores as a bot");
                    }
                    score.is_bot(self.threshold)
                };
            let blocked = self.block_ai.is_some() && (verdict.ai || disguised);
            if verdict.bot || disguised {
                // A claimed crawler with published IP ranges is checked
                // against them; an impostor stays a bot (it is automated
                // either way) and is counted as unverified.
                let verified = if disguised {
                    None
                } else {
                    let ip = crate::collector::visitor_ip(&self.trusted, peer.ip(), req.headers());
                    self.bots.verify(ua, ip).map(|(claimed, ok)| {
                        if !ok {
                            tracing::debug!(%ip, user_agent = ua, claimed, "crawler not from its operator's published IP ranges");
                        }
                        ok
                    })
                };
                let name = if disguised {
                    "(disguised browser)".to_string()
                } else {
                    crate::bots::insights::crawler_name(ua, self.bots.ai_token(ua).as_deref())
                };
                let action = if blocked {
                    crate::bots::insights::Action::Blocked
                } else {
                    crate::bots::insights::Action::Allowed
                };
                crate::bots::insights::Insights::global()
                    .record(&name, verdict.ai, verified, action, path);
            }
            if blocked {
                tracing::debug!(user_agent = ua, ai = verdict.ai, "AI crawler blocked");
                return error_response(
                    StatusCode::FORBIDDEN,
                    "AI crawlers are not allowed on this site",
                    false,
                );
            }
            if let Some(bots) = &self.block_ai {
                if path == "/robots.txt" && req.method() == Method::GET {
                    let mut req = req;
                    // Plain text back, so the section can be appended.
                    req.headers_mut().remove(http::header::ACCEPT_ENCODING);
                    let resp = self.forwarder.forward(req, peer).await;
                    if resp.status() == StatusCode::NOT_FOUND {
                        return robots_txt(bots);
                    }
                    return with_ai_section(resp, bots).await;
                }
            }
            return self.forwarder.forward(req, peer).await;
        }
    }

    /// A request under `prefix`.
    async fn ours(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        let req = match &self.routes {
            Some(routes) => match routes.clone().handle(req, peer) {
                Ok(response) => return response.await,
                Err(req) => req,
            },
            None => req,
        };
        let path = req.uri().path();
        let asset = if path == self.script_path {
            Some(&self.script)
        } else if path == self.consent_path {
            Some(&self.consent_script)
        } else {
            None
        };
        if path == self.script_path {
            return self.serve_script(&req, peer);
        }
        if let Some(asset) = asset {
            return match *req.method() {
                Method::GET | Method::HEAD => {
                    asset.respond(req.headers(), req.method() == Method::HEAD)
                }
                _ => error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed", true),
            };
        }
        error_response(StatusCode::NOT_FOUND, "not found", true)
    }
}

impl Proxy {
    /// The client script, at `{prefix}/s.js` or a Zaraz loader path; the
    /// visitor is remembered as having loaded it (bot score
    /// `script_not_loaded`).
    fn serve_script(&self, req: &Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        match *req.method() {
            Method::GET | Method::HEAD => {
                let h = req.headers();
                let ip = crate::collector::visitor_ip(&self.trusted, peer.ip(), h);
                let ua = h
                    .get(http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                crate::bots::score::ScriptLoads::global().record(ip, ua);
                self.script.respond(h, req.method() == Method::HEAD)
            }
            _ => error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed", true),
        }
    }
}

/// `https://<host>[:<port>]<path>`, the port left out when it is 443.
fn https_location(host: &str, port: u16, path: &str) -> String {
    if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    }
}

/// The proxy in force; a config reload swaps it without dropping a request
/// (each request keeps the `Proxy` it started with).
pub type CurrentProxy = Arc<arc_swap::ArcSwap<Proxy>>;

/// Largest origin robots.txt the AI section is appended to (Google reads
/// the first 500 KiB); a bigger one is passed on untouched.
const ROBOTS_MAX: usize = 512 * 1024;

/// The origin's own robots.txt with the AI-crawler section appended, once:
/// not when the file already has it (the origin serves a copy it saved,
/// or another tagproxy in front added it). Passed on untouched when it is
/// not a plain `200` text within [`ROBOTS_MAX`].
async fn with_ai_section(resp: Response<ProxyBody>, bots: &BotDetector) -> Response<ProxyBody> {
    use http::header;
    use http_body_util::BodyExt as _;
    let encoded = resp
        .headers()
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if resp.status() != StatusCode::OK || encoded {
        return resp;
    }
    let (mut parts, mut incoming) = resp.into_parts();
    let mut text: Vec<u8> = Vec::new();
    while let Some(frame) = incoming.frame().await {
        let Ok(frame) = frame else {
            tracing::debug!("origin robots.txt unreadable; AI section not added");
            return error_response(
                StatusCode::BAD_GATEWAY,
                "origin robots.txt unreadable",
                false,
            );
        };
        if let Ok(data) = frame.into_data() {
            text.extend_from_slice(&data);
        }
        if text.len() > ROBOTS_MAX {
            tracing::debug!("origin robots.txt over 512 KiB; AI section not added");
            let read = vec![bytes::Bytes::from(text)];
            return Response::from_parts(parts, body::boxed(body::Prefixed::new(read, incoming)));
        }
    }
    let section = bots.robots_txt_section();
    let marker = section.lines().next().unwrap_or_default();
    let mut out = text;
    if memchr::memmem::find(&out, marker.as_bytes()).is_none() {
        // A blank line first: the section's groups stay apart from the
        // origin's last group (RFC 9309 §2.1).
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        if !out.is_empty() {
            out.push(b'\n');
        }
        out.extend_from_slice(section.as_bytes());
        parts.headers.remove(header::ETAG);
        parts.headers.remove("content-md5");
        parts.headers.remove(header::ACCEPT_RANGES);
    }
    parts
        .headers
        .insert(header::CONTENT_LENGTH, out.len().into());
    Response::from_parts(parts, body::full(out))
}

/// A robots.txt that asks AI crawlers to stay away, for origins without one.
fn robots_txt(bots: &BotDetector) -> Response<ProxyBody> {
    let text = format!(
        "# Generated by tagproxy (block_ai_crawlers = true)\n{}",
        bots.robots_txt_section()
    );
    Response::builder()
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(http::header::CACHE_CONTROL, "public, max-age=3600")
        .body(body::full(text))
        .expect("static response")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_https_location_leaves_out_port_443() {
        assert_eq!(
            super::https_location("shop.example", 443, "/a?b=1"),
            "https://shop.example/a?b=1"
        );
        assert_eq!(
            super::https_location("[::1]", 8443, "/"),
            "https://[::1]:8443/"
        );
    }
}
