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
    script: assets::Asset,
    consent_path: String,
    consent_script: assets::Asset,
    forwarder: Forwarder,
    routes: Option<Arc<dyn PrefixHandler>>,
    /// Set with `block_ai_crawlers`: AI crawlers get 403 before the origin.
    block_ai: Option<Arc<BotDetector>>,
    /// Connection limits; a reload applies them to new connections
    /// (`max_connections` only at start).
    pub limits: Limits,
    /// `[server.tls] redirect_http`: the plain listener redirects to https.
    redirect_http: bool,
    trusted: crate::config::TrustedProxies,
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
        let inject = config.settings.auto_inject.then(|| InjectPolicy {
            script_path: script_path.clone(),
            inject_iframes: config.settings.inject_iframes,
            skip_bots: config.bots.skip_events.then(|| bots.clone()),
        });
        Proxy {
            forwarder: Forwarder::new(server, inject),
            script,
            script_path,
            consent_path: format!("{prefix}/c.js"),
            consent_script: assets::consent_script(),
            prefix,
            routes,
            block_ai: config.bots.block_ai_crawlers.then_some(bots),
            limits: Limits::of(server),
            redirect_http: server.tls.as_ref().is_some_and(|t| t.redirect_http),
            trusted: server.trusted_proxies.clone(),
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
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        let path = req.uri().path();
        let ours = path
            .strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if !ours {
            if let Some(bots) = &self.block_ai {
                let ua = req
                    .headers()
                    .get(http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if bots.check(ua).ai {
                    tracing::debug!(user_agent = ua, "AI crawler blocked");
                    return error_response(
                        StatusCode::FORBIDDEN,
                        "AI crawlers are not allowed on this site",
                        false,
                    );
                }
                if path == "/robots.txt" && req.method() == Method::GET {
                    let resp = self.forwarder.forward(req, peer).await;
                    if resp.status() == StatusCode::NOT_FOUND {
                        return robots_txt(bots);
                    }
                    return resp;
                }
            }
            return self.forwarder.forward(req, peer).await;
        }
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
