//! Test harness: a scriptable origin, a raw-TCP origin, and the real
//! `tagproxy` binary started on free 127.0.0.1 ports.
#![allow(dead_code)]

pub mod browser;
pub mod events;

pub mod validate;

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

/// A finished response for the scripted origin.
pub fn respond(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Body> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(full(body)).unwrap()
}

/// A request as the origin saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
}

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> futures_util::future::BoxFuture<'static, Response<Body>>
        + Send
        + Sync,
>;

/// An origin server on 127.0.0.1 whose answers the test scripts.
pub struct Origin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Origin {
    /// `handler` answers every request; it may read the body.
    pub async fn start<F, Fut>(handler: F) -> Origin
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
    {
        Self::start_at("127.0.0.1:0", handler).await
    }

    /// Like `start`, on a given address (a destination that comes back up
    /// where it was down).
    pub async fn start_at<F, Fut>(addr: &str, handler: F) -> Origin
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |req| Box::pin(handler(req)));
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        seen.lock().unwrap().push(Seen {
                            method: req.method().to_string(),
                            path: req
                                .uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default(),
                            headers: req.headers().clone(),
                        });
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Origin { addr, seen }
    }

    /// An origin that serves one fixed page for every path.
    pub async fn page(content_type: &'static str, body: impl Into<Bytes>) -> Origin {
        let body: Bytes = body.into();
        Origin::start(move |_| {
            let body = body.clone();
            async move { respond(200, &[("content-type", content_type)], body) }
        })
        .await
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// An origin that writes raw bytes on the socket, with pauses between parts,
/// so a test decides exactly how the response is split into TCP segments.
pub struct RawOrigin {
    pub addr: SocketAddr,
}

impl RawOrigin {
    /// Every connection gets `parts` written one by one, `pause` apart, then
    /// the connection is closed.
    pub async fn start(parts: Vec<Vec<u8>>, pause: Duration) -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let parts = Arc::new(parts);
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let parts = parts.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    stream.set_nodelay(true).unwrap();
                    // Read the request head before answering.
                    let mut buf = vec![0u8; 16384];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    for part in parts.iter() {
                        if stream.write_all(part).await.is_err() {
                            return;
                        }
                        let _ = stream.flush().await;
                        tokio::time::sleep(pause).await;
                    }
                    let _ = stream.shutdown().await;
                });
            }
        });
        RawOrigin { addr }
    }
}

/// A free TCP port on 127.0.0.1, bound and released: another process may
/// take it before it is used, so only for addresses where nothing must
/// listen (a destination that is down) or that a test re-binds itself.
/// `tagproxy` gets `LISTEN_ANY` instead.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `[server]` lines that let tagproxy bind both listeners to ports the
/// kernel picks; `Proxy::spawn` reads the bound addresses from the
/// `tagproxy serving` log line, so parallel tests never race for a port.
pub const LISTEN_ANY: &str = "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"";

/// The binary under test: this build's, or `TAGPROXY_TEST_BIN` (say, a
/// release build, for the memory figures of tests/spool_backlog.rs).
pub fn bin() -> PathBuf {
    std::env::var_os("TAGPROXY_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_tagproxy")))
}

/// Writes `text` as a config file in a fresh temp dir.
pub fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tagproxy.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    (dir, path)
}

/// The real binary running `serve` against an origin.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The config file (in `dir`).
    pub config: PathBuf,
    env: Vec<(String, String)>,
    child: Child,
    pub dir: tempfile::TempDir,
    log: PathBuf,
    stdout: PathBuf,
}

impl Proxy {
    /// Starts tagproxy in front of `upstream`; `extra` is appended to the
    /// generated config (e.g. a `[settings]` table).
    pub async fn start(upstream: SocketAddr, extra: &str) -> Proxy {
        Self::start_with(upstream, "", extra).await
    }

    /// Like `start`, with `server_extra` lines added to `[server]`.
    pub async fn start_with(upstream: SocketAddr, server_extra: &str, extra: &str) -> Proxy {
        let text = format!(
            "[server]\n{LISTEN_ANY}\nupstream = \"http://{upstream}\"\n{server_extra}\n{extra}\n"
        );
        let (dir, path) = write_config(&text);
        Self::spawn(dir, path, &[]).await
    }

    /// Runs `tagproxy serve -c path` with extra environment variables and
    /// waits until both listeners accept. The config should bind with
    /// `LISTEN_ANY`; the addresses come from the process's own log.
    pub async fn spawn(dir: tempfile::TempDir, path: PathBuf, env: &[(&str, &str)]) -> Proxy {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let log = dir.path().join("tagproxy.log");
        let stdout = dir.path().join("tagproxy.stdout");
        let mut child = launch(&path, &log, &stdout, &env);
        let (addr, admin) = wait_ready(&mut child, &log).await;
        Proxy {
            addr,
            admin,
            config: path,
            env,
            child,
            dir,
            log,
            stdout,
        }
    }

    /// `kill -9`: no shutdown, no flush.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `kill -9`, then starts the same config again (same ports, same
    /// data); the earlier logs are kept with a `.<n>` suffix. A `LISTEN_ANY`
    /// config is first pinned to the ports the first run got.
    pub async fn restart(&mut self) {
        self.kill9();
        let text = std::fs::read_to_string(&self.config).unwrap();
        let pinned = text
            .replace(
                "\nlisten = \"127.0.0.1:0\"",
                &format!("\nlisten = \"{}\"", self.addr),
            )
            .replace(
                "admin_listen = \"127.0.0.1:0\"",
                &format!("admin_listen = \"{}\"", self.admin),
            );
        if pinned != text {
            std::fs::write(&self.config, pinned).unwrap();
        }
        let n = (1..)
            .find(|n| !self.dir.path().join(format!("tagproxy.log.{n}")).exists())
            .unwrap();
        for f in [&self.log, &self.stdout] {
            let _ = std::fs::rename(f, format!("{}.{n}", f.display()));
        }
        self.child = launch(&self.config, &self.log, &self.stdout, &self.env);
        let bound = wait_ready(&mut self.child, &self.log).await;
        assert_eq!(bound, (self.addr, self.admin), "restarted on other ports");
    }

    /// What the process printed on stdout (the console tool writes there).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size of the proxy process, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts `tagproxy serve -c path`, logs and stdout to files.
fn launch(path: &Path, log: &Path, stdout: &Path, env: &[(String, String)]) -> Child {
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "-c"])
        .arg(path)
        .env("RUST_LOG", "info,tagproxy=debug")
        .stdout(std::fs::File::create(stdout).unwrap())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start tagproxy")
}

/// The public and admin addresses from the `tagproxy serving` log line (a
/// JSON line: stderr is not a terminal), once it is written.
pub fn serving_addrs(log: &str) -> Option<(SocketAddr, SocketAddr)> {
    log.lines().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        if v.get("message")?.as_str()? != "tagproxy serving" {
            return None;
        }
        // A listener bound to every interface (`0.0.0.0`) is reached,
        // like everything in the tests, on 127.0.0.1.
        let addr = |k: &str| {
            let mut a: SocketAddr = v.get(k)?.as_str()?.parse().ok()?;
            if a.ip().is_unspecified() {
                a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            Some(a)
        };
        Some((addr("listen")?, addr("admin")?))
    })
}

/// Waits until the process logs where it listens, the admin listener
/// answers `/healthz` (it starts after the config watcher and with the
/// public listener; `/readyz` would be `503` for the many tests whose origin
/// is a closed port) and the public port accepts. Fails at once, with the process's
/// log, when it exits first; fails after 20 s otherwise.
async fn wait_ready(child: &mut Child, log: &Path) -> (SocketAddr, SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let read_log = || std::fs::read_to_string(log).unwrap_or_default();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "tagproxy exited ({status}) before it was ready:\n{}",
                read_log()
            );
        }
        if let Some((addr, admin)) = serving_addrs(&read_log()) {
            let ready = client()
                .get(format!("http://{admin}/healthz"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready && TcpStream::connect(addr).await.is_ok() {
                return (addr, admin);
            }
        }
        assert!(
            Instant::now() < deadline,
            "tagproxy did not start within 20 s:\n{}",
            read_log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that never decompresses or follows redirects: tests see the bytes.
/// The User-Agent of test requests: a desktop Chrome, because tagproxy
/// (rightly) treats requests without one as bots.
/// What a browser sends with a navigation to an https site: fetch
/// metadata, client hints and a language; without them the bot score
/// (rightly) calls the client a bot.
pub fn browser_headers() -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in [
        (
            "sec-ch-ua",
            "\"Google Chrome\";v=\"131\", \"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\"",
        ),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", "\"Linux\""),
        ("sec-fetch-site", "none"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
        ("accept-language", "en-US,en;q=0.9"),
    ] {
        headers.insert(k, v.parse().unwrap());
    }
    headers
}

pub const BROWSER_UA: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

pub fn client() -> reqwest::Client {
    tagproxy::delivery::install_tls_provider();
    reqwest::Client::builder()
        .user_agent(BROWSER_UA)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

pub const TAG: &str = r#"<script src="/_tagproxy/s.js" referrerpolicy="origin"></script>"#;

pub fn shared_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/pages")
}

/// A request a mock destination received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// When it arrived.
    pub at: Instant,
    pub method: String,
    /// Path and query, e.g. `/g/collect?v=2&tid=G-1`.
    pub uri: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    /// Decoded query parameters, in order.
    pub fn query(&self) -> Vec<(String, String)> {
        let q = self.uri.split_once('?').map(|(_, q)| q).unwrap_or("");
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    }

    /// One query parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }

    /// The deliveries this request carries, each as the request that would
    /// have carried it alone: a batch is read the way its service reads it
    /// (SPEC §8, batched delivery). A GA4 `POST …/g/collect` batch gives one
    /// `GET` hit per body line, the URL's parameters completed by the line's
    /// (gtag's batching, <https://support.google.com/analytics/answer/9322688>;
    /// lines as <https://github.com/amplitude/Amplitude-TypeScript/pull/903>
    /// reads them); a Conversions API body gives one request per `data`
    /// item (<https://developers.facebook.com/docs/marketing-api/conversions-api/using-the-api#batch-requests>).
    /// Anything else is one delivery.
    pub fn deliveries(&self) -> Vec<Recorded> {
        match Service::of(self).0 {
            Service::Ga4 if self.method == "POST" && !self.body.is_empty() => {
                let (path, shared) = self.uri.split_once('?').unwrap_or((&self.uri, ""));
                let mut headers = self.headers.clone();
                headers.remove("content-type");
                String::from_utf8_lossy(&self.body)
                    .split('\n')
                    .map(|line| {
                        let mut one = self.clone();
                        one.method = "GET".into();
                        one.uri = match (shared.is_empty(), line.is_empty()) {
                            (_, true) => format!("{path}?{shared}"),
                            (true, false) => format!("{path}?{line}"),
                            (false, false) => format!("{path}?{shared}&{line}"),
                        };
                        one.headers = headers.clone();
                        one.body = Bytes::new();
                        one
                    })
                    .collect()
            }
            Service::Meta => {
                let Ok(serde_json::Value::Object(mut body)) =
                    serde_json::from_slice::<serde_json::Value>(&self.body)
                else {
                    return vec![self.clone()];
                };
                match body.remove("data") {
                    Some(serde_json::Value::Array(events)) if events.len() > 1 => events
                        .into_iter()
                        .map(|e| {
                            let mut one = body.clone();
                            one.insert("data".into(), serde_json::Value::Array(vec![e]));
                            let mut r = self.clone();
                            r.body = Bytes::from(serde_json::to_vec(&one).unwrap());
                            r
                        })
                        .collect(),
                    _ => vec![self.clone()],
                }
            }
            _ => vec![self.clone()],
        }
    }
}

/// How a mock destination answers: status codes to return in order (the last
/// repeats), an optional delay, and a `Retry-After` value.
#[derive(Debug, Clone)]
pub struct Script {
    pub statuses: Vec<u16>,
    pub delay: Duration,
    /// Per-request delays, in order (the last does not repeat; `delay`
    /// applies past the end).
    pub delays: Vec<Duration>,
    pub retry_after: Option<u64>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            statuses: vec![200],
            delay: Duration::ZERO,
            delays: Vec::new(),
            retry_after: None,
        }
    }
}

/// Which real service a request to a mock destination is meant for, told
/// by its path the way the product builds it (after the tool's `endpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `…/g/collect`: a gtag.js (protocol v2) hit.
    Ga4,
    /// `…/v<version>/<pixel id>/events`: a Conversions API batch.
    Meta,
    /// Anything else: a webhook of the `http` tool.
    Http,
}

impl Service {
    /// The service `r` is for, and `r` as the service's validator expects
    /// it: the endpoint's path prefix removed and the Graph API version
    /// (any `vN.N` is a live version to the mock) spelled as the validator's.
    pub fn of(r: &Recorded) -> (Service, Recorded) {
        let path = r.path();
        let query = r.uri.strip_prefix(path).unwrap_or("");
        let mut normal = r.clone();
        if path.ends_with("/g/collect") {
            normal.uri = format!("/g/collect{query}");
            return (Service::Ga4, normal);
        }
        let parts: Vec<&str> = path.rsplitn(4, '/').collect();
        // [events, pixel, version, prefix]
        if let [events, pixel, version, _] = parts[..] {
            let versioned = version.strip_prefix('v').is_some_and(|v| {
                v.split_once('.')
                    .is_some_and(|(a, b)| is_digits(a) && is_digits(b))
            });
            if events == "events" && versioned && is_digits(pixel) {
                normal.uri = format!("/v21.0/{pixel}/events{query}");
                return (Service::Meta, normal);
            }
        }
        (Service::Http, normal)
    }

    /// What the real service finds wrong with `r` (see `validate`). The
    /// visitor's User-Agent is not known here, so a GA4 hit is checked
    /// against its own (it must have one); tests that know the visitor's
    /// call `validate::ga4` themselves. A webhook that says it sends JSON
    /// must send JSON (a bodyless GET aside).
    pub fn problems(r: &Recorded) -> Result<(), String> {
        if Service::of(r).0 == Service::Ga4 && r.method == "POST" {
            return validate::ga4_batch(r).and_then(|()| {
                let problems: Vec<String> = r
                    .deliveries()
                    .iter()
                    .enumerate()
                    .filter_map(|(i, hit)| {
                        Self::problems(hit)
                            .err()
                            .map(|p| format!("line {}: {p}", i + 1))
                    })
                    .collect();
                if problems.is_empty() {
                    Ok(())
                } else {
                    Err(problems.join("\n"))
                }
            });
        }
        match Service::of(r) {
            (Service::Ga4, r) => {
                let ua = r
                    .headers
                    .get("user-agent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                if ua.is_empty() {
                    return Err("no User-Agent: GA4 cannot tell the device".into());
                }
                validate::ga4(&r, &ua)
            }
            (Service::Meta, r) => {
                let pixel = r.path().split('/').nth(2).unwrap_or("").to_string();
                validate::meta(&r, &pixel)
            }
            (Service::Http, r) => {
                let json = r
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|ct| ct.starts_with("application/json"));
                // A GET's (empty) body is ignored whatever it claims to be.
                let bodyless = r.body.is_empty() && matches!(r.method.as_str(), "GET" | "HEAD");
                match serde_json::from_slice::<serde_json::Value>(&r.body) {
                    Err(e) if json && !bodyless => {
                        Err(format!("content-type is JSON, the body is not: {e}"))
                    }
                    _ => Ok(()),
                }
            }
        }
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A mock destination on 127.0.0.1 that records every request it gets and
/// checks each the way the real service would (`Service::problems`). A
/// malformed request, or a body that cannot be read, is a violation: Meta's
/// mock answers it `400` as Graph API does (GA4 answers malformed hits
/// `2xx`, so its mock keeps to the script), and the test fails at the next
/// `requests`/`wait_for` and, at the latest, when the mock is dropped.
pub struct Destination {
    pub addr: SocketAddr,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<Script>>,
    violations: Arc<Mutex<Vec<String>>>,
    refuse: Arc<Mutex<Option<Refuse>>>,
}

/// A destination's own judgement of a well-formed request: `Some((status,
/// body))` refuses it with that answer (Meta refusing a whole batch for one
/// invalid event), `None` leaves it to the script.
pub type Refuse = fn(&Recorded) -> Option<(u16, String)>;

impl Destination {
    pub async fn start() -> Destination {
        Self::with_script(Script::default()).await
    }

    pub async fn with_script(script: Script) -> Destination {
        Self::with_script_at("127.0.0.1:0", script).await
    }

    /// A destination on a given address (e.g. one that was down until now).
    pub async fn with_script_at(addr: &str, script: Script) -> Destination {
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let refuse: Arc<Mutex<Option<Refuse>>> = Arc::new(Mutex::new(None));
        let (rec, scr, bad) = (recorded.clone(), script.clone(), violations.clone());
        let judge = refuse.clone();
        let origin = Origin::start_at(addr, move |req: Request<Incoming>| {
            let rec = rec.clone();
            let scr = scr.clone();
            let bad = bad.clone();
            let judge = *judge.lock().unwrap();
            async move {
                let (parts, body) = req.into_parts();
                let uri = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                let (body, unread) = match body.collect().await {
                    Ok(b) => (b.to_bytes(), None),
                    Err(e) => (
                        Bytes::new(),
                        Some(format!("the body could not be read: {e}")),
                    ),
                };
                let recorded = Recorded {
                    at: Instant::now(),
                    method: parts.method.to_string(),
                    uri,
                    headers: parts.headers,
                    body,
                };
                let problem = unread.or_else(|| Service::problems(&recorded).err());
                let service = Service::of(&recorded).0;
                if let Some(problem) = &problem {
                    bad.lock().unwrap().push(format!(
                        "{} {}:\n{problem}\nbody: {}",
                        recorded.method,
                        recorded.uri,
                        String::from_utf8_lossy(&recorded.body)
                    ));
                }
                let refused = judge.and_then(|refuse| refuse(&recorded));
                let n = {
                    let mut r = rec.lock().unwrap();
                    r.push(recorded);
                    r.len()
                };
                if let (Some((status, body)), None) = (refused, &problem) {
                    return respond(status, &[("content-type", "application/json")], body);
                }
                let (status, delay, retry_after) = {
                    let s = scr.lock().unwrap();
                    let status = *s.statuses.get(n - 1).or(s.statuses.last()).unwrap_or(&200);
                    let delay = s.delays.get(n - 1).copied().unwrap_or(s.delay);
                    (status, delay, s.retry_after)
                };
                // Google's collect endpoint answers 2xx whatever it gets;
                // Graph API (and a JSON webhook) refuse a malformed request
                // with 400 (https://developers.facebook.com/docs/graph-api/guides/error-handling/).
                if let (Some(problem), false) = (problem, service == Service::Ga4) {
                    let error = serde_json::json!({"error": {
                        "message": problem, "type": "OAuthException", "code": 100
                    }});
                    return respond(
                        400,
                        &[("content-type", "application/json")],
                        error.to_string(),
                    );
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let ra = retry_after.map(|s| s.to_string());
                let mut headers = vec![("content-type", "application/json")];
                if let Some(ra) = ra.as_deref() {
                    headers.push(("retry-after", ra));
                }
                respond(status, &headers, "{}")
            }
        })
        .await;
        Destination {
            addr: origin.addr,
            recorded,
            script,
            violations,
            refuse,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every delivery so far, one per event as it would have been sent
    /// alone (a batched request counts as the deliveries it carries, see
    /// [`Recorded::deliveries`]). Panics when a request was malformed (a
    /// test that looks at deliveries must not look past a bad one).
    pub fn requests(&self) -> Vec<Recorded> {
        self.raw_requests()
            .iter()
            .flat_map(Recorded::deliveries)
            .collect()
    }

    /// Every request so far as it came over the wire (a batch is one).
    pub fn raw_requests(&self) -> Vec<Recorded> {
        self.assert_valid();
        self.recorded.lock().unwrap().clone()
    }

    /// Panics, listing them, when any request so far was malformed for its
    /// service or its body could not be read.
    pub fn assert_valid(&self) {
        let bad = self.violations.lock().unwrap().clone();
        assert!(
            bad.is_empty(),
            "the mock destination {} got {} request(s) the real service would refuse or misread:\n{}",
            self.addr,
            bad.len(),
            bad.join("\n---\n")
        );
    }

    /// Judges every request from now on with `refuse` before the script.
    pub fn set_refuse(&self, refuse: Refuse) {
        *self.refuse.lock().unwrap() = Some(refuse);
    }

    pub fn set_script(&self, script: Script) {
        *self.script.lock().unwrap() = script;
    }

    /// Waits until at least `n` deliveries arrived, batched or not (or
    /// panics after `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} requests, got {}: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Destination {
    /// The last check: a malformed request fails the test even when the
    /// test never looked at what arrived.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.assert_valid();
        }
    }
}

impl Proxy {
    /// Like `start`, with tool files written first.
    pub async fn start_tools(upstream: SocketAddr, extra: &str, tools: &[(&str, String)]) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tools")).unwrap();
        for (id, text) in tools {
            std::fs::write(dir.path().join("tools").join(format!("{id}.toml")), text).unwrap();
        }
        let text = format!("[server]\n{LISTEN_ANY}\nupstream = \"http://{upstream}\"\n{extra}\n");
        let path = dir.path().join("tagproxy.toml");
        std::fs::write(&path, text).unwrap();
        Self::spawn(dir, path, &[]).await
    }
}

/// GET `url` with the test client; the body as text.
pub async fn get_text(url: impl AsRef<str>) -> String {
    client()
        .get(url.as_ref())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

impl Proxy {
    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        get_text(format!("http://{}/metrics", self.admin)).await
    }
}

impl Proxy {
    /// Waits until every delivery queued so far has reached its end:
    /// delivered (`2xx`) or given up (dead-lettered), retries included; fails
    /// after 30 s. The collector queues a batch's deliveries before it
    /// answers, so once a test has the answer and this returns, nothing
    /// more from that batch will reach a destination: the positive way to
    /// show "nothing else arrived". Returns how many were queued.
    pub async fn settled(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let m = self.metrics().await;
            let submitted = events::metric_value(&m, "tagproxy_deliveries_submitted_total ");
            let delivered = events::metric_value(&m, "tagproxy_deliveries_delivered_total ");
            let failed = events::metric_value(&m, "tagproxy_deliveries_failed_total ");
            // Requests that could never be sent count as failed without
            // ever being queued.
            let invalid: f64 = m
                .lines()
                .filter(|l| l.starts_with("tagproxy_deliveries_invalid_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            if delivered + failed - invalid >= submitted {
                return submitted as u64;
            }
            assert!(
                Instant::now() < deadline,
                "deliveries never settled within 30 s:\n{m}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Proxy {
    /// Waits until the process's log contains `needle`; fails after 10 s
    /// with the log.
    pub async fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if logs.contains(needle) {
                return logs;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log within 10 s:\n{logs}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
