//! The bot score of one request (issue 16): 1 = surely automated … 99 =
//! surely human, as Cloudflare's bot score
//! (<https://developers.cloudflare.com/bots/concepts/bot-score/>), from what
//! a proxy sees of the request. A request scoring under `[bots]
//! score_threshold` is a bot for `skip_events`, injection and
//! `block_ai_crawlers`.
//!
//! Decisive signals give 1 outright:
//! - `user_agent`: the User-Agent lists of [`super::BotDetector`] (no UA,
//!   ai.robots.txt, `extra_user_agents`, crawler-user-agents, woothee).
//! - `headless_brand`: a `Sec-CH-UA` brand naming a headless browser
//!   (`"HeadlessChrome"`, which Chromium's old headless mode sends; MDN,
//!   <https://developer.mozilla.org/docs/Web/HTTP/Reference/Headers/Sec-CH-UA>):
//!   the client says it is automated.
//!
//! The others subtract their weight ([`Signal::weight`]) from 99, down to 2.
//! No single one reaches the default threshold (30) alone: a real browser
//! behind an unusual proxy or with an unusual build may trip one, a client
//! that merely pretends to be a browser trips several.
//! - Contradictions, whatever the transport (the headers are present, so
//!   they must agree with the User-Agent): `Sec-CH-UA` from a browser whose
//!   User-Agent is not Chromium-based (Firefox and Safari do not implement
//!   User-Agent client hints); `Sec-CH-UA-Platform` naming another OS than
//!   the User-Agent; `Sec-CH-UA-Mobile` disagreeing with the User-Agent's
//!   `Mobile` token; the `Chromium` brand's major version differing from the
//!   User-Agent's `Chrome/NNN`.
//! - Absences, only over TLS (directly, or per `X-Forwarded-Proto: https`
//!   from a trusted proxy), because browsers send fetch metadata and client
//!   hints only to secure origins: no `Sec-Fetch-Site`/`-Mode`/`-Dest` from
//!   Chrome ≥ 80, Edge ≥ 80, Firefox ≥ 90 or Safari ≥ 16.4 (MDN browser
//!   compatibility of `Sec-Fetch-Site`/`Sec-Fetch-Dest`); no `Sec-CH-UA` from
//!   Chromium ≥ 90 (sent by default since Chrome 89, MDN `Sec-CH-UA`); no
//!   `Accept-Language` (every browser sends it). Plain-http requests,
//!   localhost included, are not judged on absences: developers' scripts and
//!   test clients on localhost would all score as bots.
//! - `http_1_0`: the request came over HTTP/1.0 straight from the client (no
//!   current browser speaks it; a trusted reverse proxy such as nginx uses
//!   it by default towards its upstream, so not behind one).
//! - `script_not_loaded`: a collector request from a visitor (IP and
//!   User-Agent) that has not fetched the client script in the last 24 h
//!   in this process.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, Version};

use super::Verdict;

/// The default `[bots] score_threshold`: requests scoring below it are bots.
/// Cloudflare calls 2–29 "likely automated"; on the real-browser corpus
/// (`fixtures/browser-headers.json`) no request scores below 59, and every
/// disguised-crawler header set of the tests scores below 30.
pub const DEFAULT_THRESHOLD: u8 = 30;

/// The highest score: nothing suggests automation.
pub const HUMAN: u8 = 99;
/// The lowest heuristic score (1 is for decisive signals).
const FLOOR: u8 = 2;

/// One reason a request looks automated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// On a User-Agent list (decisive).
    UserAgent,
    /// `Sec-CH-UA` names a headless browser (decisive).
    HeadlessBrand,
    /// `Sec-CH-UA` from a User-Agent that is not Chromium-based.
    HintsFromNonChromium,
    /// `Sec-CH-UA-Platform` contradicts the User-Agent's OS.
    PlatformMismatch,
    /// `Sec-CH-UA-Mobile` contradicts the User-Agent.
    MobileMismatch,
    /// The `Chromium` brand's version is not the User-Agent's Chrome major.
    VersionMismatch,
    /// No fetch metadata from a browser that sends it (TLS only).
    MissingFetchMetadata,
    /// No `Sec-CH-UA` from a Chromium that sends it (TLS only).
    MissingClientHints,
    /// No `Accept-Language` (TLS only).
    MissingAcceptLanguage,
    /// HTTP/1.0 from the client itself.
    Http10,
    /// A collector request from a visitor that never loaded the script.
    ScriptNotLoaded,
}

impl Signal {
    /// Its name in logs, metrics and the README.
    pub fn name(self) -> &'static str {
        match self {
            Signal::UserAgent => "user_agent",
            Signal::HeadlessBrand => "headless_brand",
            Signal::HintsFromNonChromium => "hints_from_non_chromium",
            Signal::PlatformMismatch => "platform_mismatch",
            Signal::MobileMismatch => "mobile_mismatch",
            Signal::VersionMismatch => "version_mismatch",
            Signal::MissingFetchMetadata => "missing_fetch_metadata",
            Signal::MissingClientHints => "missing_client_hints",
            Signal::MissingAcceptLanguage => "missing_accept_language",
            Signal::Http10 => "http_1_0",
            Signal::ScriptNotLoaded => "script_not_loaded",
        }
    }

    /// Points taken from 99; `None` for the decisive signals (score 1).
    pub fn weight(self) -> Option<u8> {
        match self {
            Signal::UserAgent | Signal::HeadlessBrand => None,
            Signal::HintsFromNonChromium | Signal::PlatformMismatch => Some(50),
            Signal::MissingFetchMetadata => Some(45),
            Signal::Http10 => Some(40),
            Signal::MobileMismatch | Signal::MissingClientHints => Some(30),
            Signal::MissingAcceptLanguage | Signal::ScriptNotLoaded => Some(25),
            Signal::VersionMismatch => Some(15),
        }
    }
}

/// What kind of request is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A page or asset the proxy forwards.
    Page,
    /// A collector request; `script_loaded`: the visitor fetched the client
    /// script recently ([`ScriptLoads`]).
    Collector { script_loaded: bool },
}

/// What the proxy knows of one request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub headers: &'a HeaderMap,
    pub version: Version,
    /// Arrived over TLS: `X-Forwarded-Proto: https` from a trusted proxy.
    pub secure: bool,
    /// The peer is a trusted proxy (its HTTP version is not the client's).
    pub via_proxy: bool,
    pub kind: Kind,
}

impl<'a> Request<'a> {
    /// The facts of a request from `headers` as it arrived; `trusted_peer`:
    /// the connection comes from `[server] trusted_proxies`, whose
    /// `X-Forwarded-Proto` is believed (tagproxy itself listens in plain
    /// HTTP, so TLS is known only from such a proxy).
    pub fn of(headers: &'a HeaderMap, version: Version, trusted_peer: bool, kind: Kind) -> Self {
        let secure = trusted_peer
            && header(headers, "x-forwarded-proto")
                .and_then(|v| v.split(',').next())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
        Request {
            headers,
            version,
            secure,
            via_proxy: trusted_peer,
            kind,
        }
    }

    /// Marks a request that reached tagproxy's own HTTPS listener: browsers
    /// send fetch metadata and client hints to it, so their absence counts.
    pub fn over_tls(mut self, tls: bool) -> Self {
        self.secure |= tls;
        self
    }
}

/// A request's score and the signals behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Score {
    /// 1 (surely automated) … 99 (surely human).
    pub score: u8,
    pub signals: Vec<Signal>,
}

impl Score {
    /// Whether it is a bot under `threshold` (`score < threshold`).
    pub fn is_bot(&self, threshold: u8) -> bool {
        self.score < threshold
    }

    /// The signal names, comma-separated (logs).
    pub fn reasons(&self) -> String {
        let names: Vec<&str> = self.signals.iter().map(|s| s.name()).collect();
        names.join(",")
    }
}

/// The browser family a User-Agent claims, with what it implies about the
/// headers it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// Chrome, Edge, Opera, Samsung Internet…: `Chrome/<major>`.
    Chromium(u32),
    Firefox(u32),
    /// Safari, and every iOS browser (WebKit): (major, minor) of Safari's
    /// `Version/` or of iOS.
    WebKit(u32, u32),
    Other,
}

/// The number right after `token` (`Chrome/` → 131).
fn major_after(ua: &str, token: &str) -> Option<u32> {
    let at = ua.find(token)? + token.len();
    let digits: String = ua[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// `major.minor` (or `major_minor`) right after `token`.
fn version_after(ua: &str, token: &str) -> Option<(u32, u32)> {
    let at = ua.find(token)? + token.len();
    let mut parts = ua[at..].split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

fn family(ua: &str) -> Family {
    let ios = ua.contains("iPhone") || ua.contains("iPad") || ua.contains("iPod");
    if ios {
        // Every iOS browser is WebKit; its features follow iOS.
        return version_after(ua, " OS ")
            .map(|(a, b)| Family::WebKit(a, b))
            .unwrap_or(Family::Other);
    }
    if let Some(v) = major_after(ua, "Firefox/") {
        return Family::Firefox(v);
    }
    if let Some(v) = major_after(ua, "Chrome/").or_else(|| major_after(ua, "Chromium/")) {
        return Family::Chromium(v);
    }
    if ua.contains("Safari/") {
        if let Some((a, b)) = version_after(ua, "Version/") {
            return Family::WebKit(a, b);
        }
    }
    Family::Other
}

impl Family {
    /// Sends `Sec-Fetch-*` to secure origins (MDN browser compatibility).
    fn sends_fetch_metadata(self) -> bool {
        match self {
            Family::Chromium(v) => v >= 80,
            Family::Firefox(v) => v >= 90,
            Family::WebKit(a, b) => (a, b) >= (16, 4),
            Family::Other => false,
        }
    }

    /// Sends `Sec-CH-UA` to secure origins by default.
    fn sends_client_hints(self) -> bool {
        matches!(self, Family::Chromium(v) if v >= 90)
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// `(brand, version)` pairs of a `Sec-CH-UA` value (a structured-field list
/// `"Brand";v="1", …`), leniently.
fn brands(value: &str) -> Vec<(String, String)> {
    value
        .split(',')
        .filter_map(|item| {
            let mut parts = item.split(';');
            let brand = parts.next()?.trim().trim_matches('"').to_string();
            let version = parts
                .find_map(|p| p.trim().strip_prefix("v="))
                .map(|v| v.trim_matches('"').to_string())
                .unwrap_or_default();
            Some((brand, version))
        })
        .collect()
}

/// Whether a `Sec-CH-UA-Platform` value agrees with the User-Agent. Linux
/// and Android count as one (Android is Linux, and Chrome's desktop mode
/// on Android sends a Linux User-Agent).
fn platform_agrees(platform: &str, ua: &str) -> bool {
    let linux = ua.contains("Linux") || ua.contains("X11") || ua.contains("Android");
    match platform.trim().trim_matches('"') {
        "Windows" => ua.contains("Windows"),
        "macOS" => ua.contains("Macintosh") || ua.contains("Mac OS X"),
        "Linux" | "Android" => linux,
        "Chrome OS" | "Chromium OS" => ua.contains("CrOS"),
        "iOS" => ua.contains("iPhone") || ua.contains("iPad"),
        _ => true, // "Unknown", "", or a new value: no claim to contradict.
    }
}

/// The score of one request, given the User-Agent verdict.
pub fn score(verdict: &Verdict, req: &Request<'_>) -> Score {
    if verdict.bot {
        return Score {
            score: 1,
            signals: vec![Signal::UserAgent],
        };
    }
    let h = req.headers;
    let ua = header(h, "user-agent").unwrap_or("");
    let family = family(ua);
    let mut signals = Vec::new();
    let ch_ua = header(h, "sec-ch-ua");
    if let Some(value) = ch_ua {
        let brands = brands(value);
        if brands
            .iter()
            .any(|(b, _)| b.to_ascii_lowercase().contains("headless"))
        {
            return Score {
                score: 1,
                signals: vec![Signal::HeadlessBrand],
            };
        }
        match family {
            Family::Chromium(major) => {
                let chromium = brands.iter().find(|(b, _)| b == "Chromium");
                if let Some((_, v)) = chromium {
                    let v = v.split('.').next().unwrap_or("");
                    if v.parse::<u32>().is_ok_and(|v| v != major) {
                        signals.push(Signal::VersionMismatch);
                    }
                }
            }
            _ => signals.push(Signal::HintsFromNonChromium),
        }
    }
    if let Some(p) = header(h, "sec-ch-ua-platform") {
        if !platform_agrees(p, ua) {
            signals.push(Signal::PlatformMismatch);
        }
    }
    if let Some(m) = header(h, "sec-ch-ua-mobile") {
        let says_mobile = m.trim() == "?1";
        if says_mobile != ua.contains("Mobile") {
            signals.push(Signal::MobileMismatch);
        }
    }
    if req.secure {
        let fetch_metadata = ["sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest"]
            .iter()
            .any(|n| h.contains_key(*n));
        if !fetch_metadata && family.sends_fetch_metadata() {
            signals.push(Signal::MissingFetchMetadata);
        }
        if ch_ua.is_none() && family.sends_client_hints() {
            signals.push(Signal::MissingClientHints);
        }
        if !h.contains_key("accept-language") {
            signals.push(Signal::MissingAcceptLanguage);
        }
    }
    if req.version == Version::HTTP_10 && !req.via_proxy {
        signals.push(Signal::Http10);
    }
    if req.kind
        == (Kind::Collector {
            script_loaded: false,
        })
    {
        signals.push(Signal::ScriptNotLoaded);
    }
    let taken: u32 = signals
        .iter()
        .filter_map(|s| s.weight())
        .map(u32::from)
        .sum();
    let score = (u32::from(HUMAN).saturating_sub(taken)).max(u32::from(FLOOR)) as u8;
    Score { score, signals }
}

/// How long a script fetch vouches for a visitor's collector requests:
/// a page can stay open (and send events) long after it loaded.
const SCRIPT_LOAD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Visitors remembered at most; the oldest half is dropped past it.
const SCRIPT_LOADS_MAX: usize = 200_000;

/// Which visitors fetched the client script recently, for the
/// `script_not_loaded` signal. Keyed by a keyed hash of (IP, User-Agent):
/// neither is kept. Process-wide, so a config reload forgets nothing.
pub struct ScriptLoads {
    seen: Mutex<HashMap<u64, Instant>>,
    hasher: std::collections::hash_map::RandomState,
}

static SCRIPT_LOADS: LazyLock<ScriptLoads> = LazyLock::new(|| ScriptLoads {
    seen: Mutex::new(HashMap::new()),
    hasher: std::collections::hash_map::RandomState::new(),
});

impl ScriptLoads {
    /// The process's registry.
    pub fn global() -> &'static ScriptLoads {
        &SCRIPT_LOADS
    }

    fn key(&self, ip: IpAddr, user_agent: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        ip.hash(&mut h);
        user_agent.hash(&mut h);
        h.finish()
    }

    /// The visitor fetched the script (or revalidated it) now.
    pub fn record(&self, ip: IpAddr, user_agent: &str) {
        let key = self.key(ip, user_agent);
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap();
        if seen.len() >= SCRIPT_LOADS_MAX {
            seen.retain(|_, t| now.duration_since(*t) < SCRIPT_LOAD_TTL / 2);
        }
        seen.insert(key, now);
    }

    /// Whether the visitor fetched the script in the last 24 h.
    pub fn loaded(&self, ip: IpAddr, user_agent: &str) -> bool {
        let key = self.key(ip, user_agent);
        self.seen
            .lock()
            .unwrap()
            .get(&key)
            .is_some_and(|t| t.elapsed() < SCRIPT_LOAD_TTL)
    }
}

#[cfg(test)]
mod tests;
