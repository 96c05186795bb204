//! Forwarding a request to the origin and its response back (SPEC §3):
//! hop-by-hop headers, `X-Forwarded-*` and `Via`, upgrades, timeouts, and the
//! decision whether a response gets the script.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use std::sync::{Arc, OnceLock};

use super::body::{self, Prefixed, ProxyBody, RewrittenBody};
use super::codec::{self, Coding, Decoder, Encoder};
use super::inject::{self, Injector};
use crate::config::{ServerConfig, TrustedProxies};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
/// Names, not strings: a `&str` key is parsed on every lookup, and these
/// run for every proxied request.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// How much of an encoded body is read ahead to check it decodes before we
/// commit to rewriting it.
const PROBE_LIMIT: usize = 64 * 1024;

/// What forwarding needs, fixed at config load.
pub struct Forwarder {
    /// HTTP/1.1 or, for an https origin that offers it by ALPN, h2.
    client: Client<OriginConnector, Incoming>,
    /// HTTP/1.1 only: upgrades (WebSocket…) have no HTTP/2 equivalent here.
    upgrade_client: Client<OriginConnector, Incoming>,
    /// `http` or `https`.
    scheme: &'static str,
    upstream: String,
    /// `upstream_host`: the Host the origin sees instead of the visitor's.
    host: Option<HeaderValue>,
    /// The TLS server name (SNI and certificate check), for log lines.
    server_name: String,
    timeout: Duration,
    trusted: TrustedProxies,
    inject: Option<InjectPolicy>,
}

/// When and what to inject.
pub struct InjectPolicy {
    pub script_path: String,
    /// Other paths serving the client script (Zaraz's loader paths): a page
    /// with a script from one of them is not injected.
    pub loader_paths: Vec<String>,
    pub inject_iframes: bool,
    /// Set with `skip_events`: bots get no script.
    pub skip_bots: Option<std::sync::Arc<crate::bots::BotDetector>>,
    /// `[bots] score_threshold`: a request scoring below it is a bot.
    pub threshold: u8,
}

/// Connects to the configured origin whatever authority the request URI
/// names: the URI carries the Host the origin should see (h2's
/// `:authority`), the connection always goes to `upstream`.
#[derive(Clone)]
struct OriginConnector {
    inner: HttpsConnector<HttpConnector>,
    target: Uri,
}

impl tower_service::Service<Uri> for OriginConnector {
    type Response = <HttpsConnector<HttpConnector> as tower_service::Service<Uri>>::Response;
    type Error = <HttpsConnector<HttpConnector> as tower_service::Service<Uri>>::Error;
    type Future = <HttpsConnector<HttpConnector> as tower_service::Service<Uri>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, _requested: Uri) -> Self::Future {
        self.inner.call(self.target.clone())
    }
}

/// The system's trust anchors, read once per process (rustls-native-certs:
/// the platform's store, as an administrator expects, rather than a bundled
/// list).
fn system_roots() -> &'static [rustls::pki_types::CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<rustls::pki_types::CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "cannot read some system CA certificates");
        }
        found.certs
    })
}

/// The TLS settings for an https origin: system roots plus `upstream_ca`.
fn tls_config(server: &ServerConfig) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    if server.upstream.is_https() {
        let (_, ignored) = roots.add_parsable_certificates(system_roots().iter().cloned());
        if ignored > 0 {
            tracing::debug!(ignored, "system CA certificates that do not parse");
        }
        for cert in &server.upstream_ca_certs {
            if let Err(e) = roots.add(cert.clone()) {
                tracing::warn!(error = %e, "an upstream_ca certificate is not usable");
            }
        }
        if roots.is_empty() {
            tracing::warn!(
                "no trusted CA for the https upstream: no system roots and no upstream_ca"
            );
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

impl Forwarder {
    /// The origin's `host:port` (the scheme's default port when the URL
    /// has none), for the readiness probe.
    pub fn upstream_addr(&self) -> String {
        let has_port = match self.upstream.rfind(':') {
            Some(at) => !self.upstream[at..].contains(']'),
            None => false,
        };
        if has_port {
            self.upstream.clone()
        } else if self.scheme == "https" {
            format!("{}:443", self.upstream)
        } else {
            format!("{}:80", self.upstream)
        }
    }

    pub fn new(server: &ServerConfig, inject: Option<InjectPolicy>) -> Self {
        let timeout = Duration::from_millis(server.upstream_timeout_ms);
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
        http.set_keepalive(Some(Duration::from_secs(60)));
        // The scheme of the target decides TLS, so http upstreams share the path.
        http.enforce_http(false);
        let server_name = server
            .upstream_sni
            .0
            .clone()
            .unwrap_or_else(|| server.upstream.host().to_string());
        let sni = ServerName::try_from(server_name.clone())
            .unwrap_or_else(|_| ServerName::try_from("invalid.invalid").expect("valid name"));
        let tls = tls_config(server);
        let target: Uri = server.upstream.base().parse().expect("checked at load");
        let connector = |h2: bool| {
            let builder = HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http()
                .with_server_name_resolver(FixedServerNameResolver::new(sni.clone()))
                .enable_http1();
            let inner = if h2 {
                builder.enable_http2().wrap_connector(http.clone())
            } else {
                builder.wrap_connector(http.clone())
            };
            OriginConnector {
                inner,
                target: target.clone(),
            }
        };
        let client = |h2: bool| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(512)
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .build(connector(h2))
        };
        Forwarder {
            client: client(true),
            upgrade_client: client(false),
            scheme: if server.upstream.is_https() {
                "https"
            } else {
                "http"
            },
            upstream: server.upstream.authority().to_string(),
            host: server
                .upstream_host
                .0
                .as_deref()
                .and_then(|h| HeaderValue::from_str(h).ok()),
            server_name,
            timeout,
            trusted: server.trusted_proxies.clone(),
            inject,
        }
    }

    /// Sends `req` to the origin and returns what the client should get.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let upgrade = upgrade_protocol(req.headers());
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let mut view = RequestView::of(&req);
        if let Some(policy) = &self.inject {
            if let Some(bots) = &policy.skip_bots {
                // Judged on the request as the client sent it, before
                // `prepare` rewrites its headers.
                let trusted = self.trusted.contains(peer.ip());
                let facts = crate::bots::score::Request::of(
                    req.headers(),
                    req.version(),
                    trusted,
                    crate::bots::score::Kind::Page,
                )
                .over_tls(req.extensions().get::<super::Https>().is_some());
                let score = bots.score(&facts);
                if score.is_bot(policy.threshold)
                    && is_document_request(req.method(), req.headers())
                {
                    tracing::debug!(
                        bot_score = score.score,
                        signals = %score.reasons(),
                        user_agent = %view.user_agent,
                        "bot: the request scores below the threshold"
                    );
                }
                view.bot_score = Some(score.score);
            }
        }

        if let Err(message) = self.prepare(&mut req, peer, upgrade.as_ref()) {
            return error_response(StatusCode::BAD_REQUEST, message, view.wants_json);
        }
        let client = if upgrade.is_some() {
            &self.upgrade_client
        } else {
            &self.client
        };
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(self.timeout, client.request(req)).await;
        let mut resp = match result {
            Ok(Ok(resp)) => {
                crate::metrics::upstream_latency(started.elapsed());
                resp
            }
            Ok(Err(e)) => {
                if let Some((certificate, reason)) = tls_failure(&e) {
                    let what = if certificate {
                        "origin TLS certificate rejected"
                    } else {
                        "origin TLS handshake failed"
                    };
                    tracing::warn!(
                        reason = %reason,
                        upstream = %self.upstream,
                        server_name = %self.server_name,
                        "{what}"
                    );
                    return error_response(StatusCode::BAD_GATEWAY, what, view.wants_json);
                }
                tracing::warn!(error = %ErrorChain(&e), upstream = %self.upstream, "origin unreachable");
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "origin unreachable",
                    view.wants_json,
                );
            }
            Err(_) => {
                tracing::warn!(upstream = %self.upstream, timeout_ms = self.timeout.as_millis() as u64, "origin timed out");
                return error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "origin timed out",
                    view.wants_json,
                );
            }
        };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let origin_upgrade = hyper::upgrade::on(&mut resp);
                tokio::spawn(tunnel(client_upgrade, origin_upgrade));
                let (mut parts, _) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                if let Some(proto) = upgrade {
                    parts.headers.insert(header::UPGRADE, proto);
                }
                parts
                    .headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                return Response::from_parts(parts, body::empty());
            }
        }

        let (mut parts, incoming) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        append_via(&mut parts.headers, parts.version);
        parts.version = Version::HTTP_11;

        let plan = self
            .inject
            .as_ref()
            .and_then(|p| Rewrite::plan(p, &view, &parts));
        match plan {
            // A HEAD gets the head the same GET would get (SPEC §3), no body.
            Some(plan) if view.method == Method::HEAD => {
                plan.apply_to_head(&mut parts.headers);
                Response::from_parts(parts, body::empty())
            }
            Some(plan) => self.rewrite(parts, incoming, plan).await,
            None => Response::from_parts(parts, body::boxed(incoming)),
        }
    }

    /// Turns the client's request into the origin's.
    fn prepare(
        &self,
        req: &mut Request<Incoming>,
        peer: SocketAddr,
        upgrade: Option<&HeaderValue>,
    ) -> Result<(), &'static str> {
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        // HTTP/2 clients send the host as :authority; the origin wants Host.
        let host = match req.headers().get(header::HOST) {
            Some(h) => Some(h.clone()),
            None => req
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
        };
        // What the origin sees as Host (and as :authority over h2); the
        // connection itself always goes to the upstream (`OriginConnector`).
        let origin_host = self.host.clone().or_else(|| host.clone());
        let authority = origin_host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .filter(|h| h.parse::<http::uri::Authority>().is_ok() && !h.contains('@'))
            .unwrap_or(&self.upstream);
        let uri: Uri = format!("{}://{}{}", self.scheme, authority, path)
            .parse()
            .map_err(|_| "bad request target")?;
        let version = req.version();
        let https = req.extensions().get::<super::Https>().is_some();
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;

        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        if let Some(origin_host) = origin_host {
            headers.insert(header::HOST, origin_host);
        }
        if let Some(proto) = upgrade {
            headers.insert(header::UPGRADE, proto.clone());
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        let trusted = self.trusted.contains(peer.ip());
        let peer_ip = crate::config::canonical_ip(peer.ip()).to_string();
        let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) if !prev.trim().is_empty() => format!("{prev}, {peer_ip}"),
            _ => peer_ip,
        };
        if let Ok(xff) = HeaderValue::try_from(xff) {
            headers.insert(X_FORWARDED_FOR, xff);
        }
        if !(trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
            headers.insert(
                X_FORWARDED_PROTO,
                HeaderValue::from_static(if https { "https" } else { "http" }),
            );
        }
        if !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
            match host {
                Some(h) => {
                    headers.insert(X_FORWARDED_HOST, h);
                }
                None => {
                    headers.remove(&X_FORWARDED_HOST);
                }
            }
        }
        append_via(headers, version);
        if self.inject.is_some() && is_document_request(req.method(), req.headers()) {
            restrict_accept_encoding(req.headers_mut());
        }
        Ok(())
    }

    /// Wraps the origin's HTML body in the rewriting pipeline.
    async fn rewrite(
        &self,
        mut parts: http::response::Parts,
        mut incoming: Incoming,
        plan: Rewrite,
    ) -> Response<ProxyBody> {
        let policy = self.inject.as_ref().expect("checked by Rewrite::plan");
        let mut prefix = Vec::new();
        if plan.origin != Coding::Identity {
            match probe(&mut incoming, plan.origin, &mut prefix).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(error = %e, coding = plan.origin.token(), "origin body does not decode; streamed as sent");
                    return Response::from_parts(
                        parts,
                        body::boxed(Prefixed::new(prefix, incoming)),
                    );
                }
            }
        }

        let nonce = inject::csp_nonce(
            parts
                .headers
                .get_all(header::CONTENT_SECURITY_POLICY)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        let tag = inject::script_tag(&policy.script_path, nonce.as_deref());
        let mut paths = vec![policy.script_path.clone()];
        paths.extend(policy.loader_paths.iter().cloned());
        let injector = Injector::new(tag, paths, charset(&parts.headers));

        plan.apply_to_head(&mut parts.headers);

        let body = RewrittenBody::new(
            Prefixed::new(prefix, incoming),
            Decoder::new(plan.origin),
            injector,
            Encoder::new(plan.output),
        )
        .on_outcome(|outcome| {
            tracing::debug!(?outcome, "injection");
            crate::metrics::injection(match outcome {
                inject::Outcome::Injected => "injected",
                inject::Outcome::AlreadyPresent => "already_present",
                inject::Outcome::Untouched | inject::Outcome::Pending => "no_place",
            });
        });
        Response::from_parts(parts, body::boxed(body))
    }
}

/// What of the client's request matters after it has been sent on.
struct RequestView {
    method: Method,
    accept_encoding: Option<String>,
    fetch_dest: Option<String>,
    user_agent: String,
    wants_json: bool,
    /// The bot score, when bots get no script (`skip_events`).
    bot_score: Option<u8>,
}

impl RequestView {
    fn of<B>(req: &Request<B>) -> Self {
        let h = req.headers();
        let get = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        RequestView {
            method: req.method().clone(),
            accept_encoding: get("accept-encoding"),
            fetch_dest: get("sec-fetch-dest").map(|d| d.to_ascii_lowercase()),
            user_agent: get("user-agent").unwrap_or_default(),
            wants_json: get("accept").is_some_and(|a| a.contains("json") && !a.contains("html")),
            bot_score: None,
        }
    }
}

/// How a response that gets the script is rewritten: the one decision
/// behind both a GET's head and body and a HEAD's head, so the two agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rewrite {
    /// The coding the origin sent.
    origin: Coding,
    /// The coding the client gets: the origin's when the client accepts it.
    output: Coding,
}

impl Rewrite {
    /// `None` when the response streams through untouched.
    fn plan(
        policy: &InjectPolicy,
        req: &RequestView,
        resp: &http::response::Parts,
    ) -> Option<Rewrite> {
        let origin = injectable(policy, req, resp)?;
        let output = if codec::accepts(req.accept_encoding.as_deref(), origin) {
            origin
        } else {
            Coding::Identity
        };
        Some(Rewrite { origin, output })
    }

    /// The response head as the rewritten body goes out: no length (the
    /// body is chunked), the output coding, `Vary`, a weak `ETag`.
    fn apply_to_head(&self, headers: &mut HeaderMap) {
        headers.remove(header::CONTENT_LENGTH);
        headers.remove("content-md5");
        headers.remove(header::ACCEPT_RANGES);
        if self.output == Coding::Identity {
            headers.remove(header::CONTENT_ENCODING);
        } else {
            headers.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(self.output.token()),
            );
        }
        if self.origin != Coding::Identity || self.output != Coding::Identity {
            add_vary_accept_encoding(headers);
        }
        weaken_etag(headers);
    }
}

/// The origin coding of a response that should get the script, or `None`.
/// The request's method does not matter: a HEAD is judged as its GET.
fn injectable(
    policy: &InjectPolicy,
    req: &RequestView,
    resp: &http::response::Parts,
) -> Option<Coding> {
    let status = resp.status;
    if !status.is_success()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::PARTIAL_CONTENT
    {
        return None;
    }
    // Bots get no script (SPEC §9): they cannot send events anyway.
    if let Some(score) = req.bot_score.filter(|s| *s < policy.threshold) {
        tracing::debug!(
            user_agent = %req.user_agent,
            bot_score = score,
            "bot or headless browser: page served without the script"
        );
        crate::metrics::injection("bot");
        return None;
    }
    // Only documents: HTML fetched by a script (htmx, Turbo…) is a fragment.
    match req.fetch_dest.as_deref() {
        None | Some("document") => {}
        Some("iframe") | Some("frame") if policy.inject_iframes => {}
        Some(_) => return None,
    }
    let h = &resp.headers;
    let mime = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| ct.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    if !mime.eq_ignore_ascii_case("text/html") {
        crate::metrics::injection("not_html");
        return None;
    }
    // Our ASCII tag would corrupt a UTF-16 page: such pages stream untouched.
    if !charset(h).is_ascii_compatible() {
        crate::metrics::injection("skipped");
        return None;
    }
    let no_transform = h
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-transform"));
    if no_transform || h.contains_key(header::CONTENT_RANGE) {
        crate::metrics::injection("skipped");
        return None;
    }
    let encodings: Vec<_> = h.get_all(header::CONTENT_ENCODING).iter().collect();
    let coding = match encodings.as_slice() {
        [] => Some(Coding::Identity),
        [one] => Coding::from_content_encoding(one.to_str().ok()),
        _ => None,
    };
    if coding.is_none() {
        crate::metrics::injection("skipped");
    }
    coding
}

/// Reads the start of an encoded body into `prefix` until it is known to decode.
async fn probe(
    incoming: &mut Incoming,
    coding: Coding,
    prefix: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    let mut decoder = Decoder::new(coding);
    let mut read = 0;
    while read < PROBE_LIMIT {
        let Some(frame) = incoming.frame().await else {
            // The whole body is here: it must decode to the end.
            return decoder.finish().map(|_| ());
        };
        let frame = frame.map_err(std::io::Error::other)?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        read += chunk.len();
        prefix.push(chunk.clone());
        if !decoder.decode(chunk)?.is_empty() {
            return Ok(());
        }
    }
    Ok(())
}

/// A navigation (or its HEAD): the response may be a page we inject into.
fn is_document_request(method: &Method, h: &HeaderMap) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && h.get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
}

/// Offers the origin only codings we can decode (no zstd, compress…), so a
/// page is never out of reach of injection because of its compression.
fn restrict_accept_encoding(h: &mut HeaderMap) {
    let Some(value) = h.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let kept: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|item| {
            let name = item.split(';').next().unwrap_or("").trim();
            name == "*" || Coding::from_content_encoding(Some(name)).is_some()
        })
        .collect();
    let kept = kept.join(", ");
    if kept.is_empty() {
        h.remove(header::ACCEPT_ENCODING);
    } else if kept != value {
        set(h, "accept-encoding", &kept);
    }
}

/// The body's character encoding from `Content-Type`, UTF-8 when absent.
fn charset(headers: &HeaderMap) -> &'static encoding_rs::Encoding {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| {
            ct.split(';')
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("charset"))
                .map(|(_, v)| v.trim().trim_matches('"'))
        })
        .and_then(|label| encoding_rs::Encoding::for_label_no_replacement(label.as_bytes()))
        .unwrap_or(encoding_rs::UTF_8)
}

/// The `Upgrade` protocol when the request asks to switch protocols.
fn upgrade_protocol(h: &HeaderMap) -> Option<HeaderValue> {
    let asks = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| h.get(header::UPGRADE).cloned()).flatten()
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        h.remove(name);
    }
    for name in &HOP_BY_HOP {
        h.remove(name);
    }
}

fn append_via(h: &mut HeaderMap, version: Version) {
    let proto = match version {
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    };
    let via = match h.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {proto} tagproxy"),
        None => format!("{proto} tagproxy"),
    };
    if let Ok(via) = HeaderValue::try_from(via) {
        h.insert(header::VIA, via);
    }
}

fn add_vary_accept_encoding(h: &mut HeaderMap) {
    let has = h
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case("accept-encoding"));
    if !has {
        h.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// A rewritten body is not byte-identical to the origin's any more.
fn weaken_etag(h: &mut HeaderMap) {
    if let Some(etag) = h.get(header::ETAG).and_then(|v| v.to_str().ok()) {
        if !etag.starts_with("W/") {
            let weak = format!("W/{etag}");
            set(h, "etag", &weak);
        }
    }
}

fn set(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(HeaderName::from_static(name), v);
    }
}

/// Copies bytes both ways between an upgraded client and origin connection.
async fn tunnel(client: hyper::upgrade::OnUpgrade, origin: hyper::upgrade::OnUpgrade) {
    let (client, origin) = match tokio::try_join!(client, origin) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut origin = TokioIo::new(origin);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut origin).await {
        tracing::debug!(error = %e, "upgraded connection closed");
    }
}

/// A short error page, JSON when the client asked for JSON.
pub fn error_response(status: StatusCode, message: &str, json: bool) -> Response<ProxyBody> {
    let (content_type, body) = if json {
        (
            "application/json",
            serde_json::json!({ "error": message }).to_string(),
        )
    } else {
        (
            "text/html; charset=utf-8",
            format!(
                "<!doctype html><title>{code}</title><h1>{code}</h1><p>{message}</p>\n",
                code = status
            ),
        )
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .body(body::full(body))
        .expect("static response")
}

/// Why an origin's TLS handshake failed, when that is why a request failed:
/// whether the certificate was the problem, and the rustls error somewhere in
/// the chain in an operator's words.
fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<(bool, String)> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            let certificate = matches!(tls, rustls::Error::InvalidCertificate(_));
            return Some((certificate, describe_tls(tls)));
        }
        // io::Error's `source` skips the error it wraps; look inside it.
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            current = Some(inner);
            continue;
        }
        current = err.source();
    }
    None
}

fn describe_tls(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(cert) => match cert {
            C::Expired | C::ExpiredContext { .. } => "certificate expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => "certificate not valid yet".into(),
            C::UnknownIssuer => {
                "unknown issuer: not signed by a system CA or one in upstream_ca".into()
            }
            C::NotValidForNameContext { expected, presented } => format!(
                "name mismatch: the certificate is for {} but the server name is {} (see upstream_sni)",
                presented.join(", "),
                expected.to_str()
            ),
            C::NotValidForName => {
                "name mismatch: the certificate is not valid for the server name (see upstream_sni)"
                    .into()
            }
            C::Revoked => "certificate revoked".into(),
            C::BadSignature => "bad certificate signature".into(),
            other => format!("invalid certificate: {other:?}"),
        },
        other => other.to_string(),
    }
}

/// An error with its sources, `a: b: c`, for log lines.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_offers_only_decodable_codings() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, deflate, br, zstd;q=1.0"),
        );
        restrict_accept_encoding(&mut h);
        assert_eq!(h[header::ACCEPT_ENCODING], "gzip, deflate, br");
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("zstd"));
        restrict_accept_encoding(&mut h);
        assert!(h.get(header::ACCEPT_ENCODING).is_none());
    }

    #[test]
    fn hop_by_hop_includes_connection_tokens() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Foo"),
        );
        h.insert("x-foo", HeaderValue::from_static("1"));
        h.insert("x-bar", HeaderValue::from_static("2"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-bar"));
    }
}
