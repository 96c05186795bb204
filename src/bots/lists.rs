//! The bot lists in force, and their live updates (issue 16).
//!
//! Three lists, each on its own:
//!
//! - `ai_crawlers`: AI crawler User-Agent tokens (ai.robots.txt);
//! - `crawlers`: crawler User-Agent regexes (crawler-user-agents);
//! - `verified_crawlers`: crawler name → the IP prefixes its operator
//!   publishes (Googlebot, GPTBot…), so a request claiming that name can be
//!   checked (see [`Lists::verify`]).
//!
//! The first two are compiled into the binary (`ai-robots.txt`,
//! `crawler-user-agents.txt`); the compiled-in verified list is empty.
//! `tagproxy bots update` writes newer ones to `data_dir/bots/lists.json`
//! (a [`Bundle`], written atomically, the file it replaces kept as
//! `lists.previous.json`). The server reads that file at start and polls it
//! every [`POLL`]; a list the file does not hold, or a file that is missing
//! or cannot be used, means the compiled-in list (logged). A file that turns
//! bad while the server runs leaves the lists in force as they are.
//!
//! The lists in force are one process-wide [`ArcSwap`]: every
//! [`BotDetector`](super::BotDetector) reads them per check, and its verdict
//! cache is keyed by their [`Lists::generation`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use arc_swap::ArcSwap;
use ipnet::IpNet;
use regex::{RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::NOT_AI;

/// The ai.robots.txt tokens (MIT), one per line; see `refresh.sh`.
pub(crate) const AI_ROBOTS: &str = include_str!("ai-robots.txt");
/// The crawler-user-agents patterns (MIT), one per line; see `refresh.sh`.
pub(crate) const CRAWLER_USER_AGENTS: &str = include_str!("crawler-user-agents.txt");

/// `format` of a [`Bundle`].
pub const FORMAT: &str = "tagproxy-bot-lists/1";
/// The stored lists, under [`dir`].
pub const FILE: &str = "lists.json";
/// The stored lists before the last update, for `tagproxy bots rollback`.
pub const PREVIOUS: &str = "lists.previous.json";
/// How often the server looks at the stored file (its size, mtime, inode).
pub const POLL: Duration = Duration::from_secs(2);
/// `source` of a compiled-in list.
pub const COMPILED_IN: &str = "compiled-in";

/// Largest update file or download, bytes (crawler-user-agents.json is
/// ~400 KB, Google's range file ~20 KB).
pub const MAX_FILE_BYTES: usize = 16 << 20;
/// Most AI tokens (upstream has ~200).
pub const MAX_AI_TOKENS: usize = 10_000;
/// Most crawler patterns (upstream has ~1,500).
pub const MAX_PATTERNS: usize = 20_000;
/// Longest AI token or crawler name, bytes.
pub const MAX_TOKEN_LEN: usize = 100;
/// Longest crawler pattern, bytes.
pub const MAX_PATTERN_LEN: usize = 1_000;
/// Most verified crawler names.
pub const MAX_VERIFIED_NAMES: usize = 500;
/// Most IP prefixes over all verified crawlers.
pub const MAX_PREFIXES: usize = 100_000;

/// Lazy-DFA cache limit for the crawler-user-agents set (issue 5 measured it).
const DFA_SIZE_LIMIT: usize = 64 << 20;
/// Compiled-program limit for the set; its NFA needs a few MiB.
const SIZE_LIMIT: usize = 64 << 20;

/// One of the three lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    /// AI crawler tokens.
    AiCrawlers,
    /// Crawler regexes.
    Crawlers,
    /// Crawler name → published IP prefixes.
    VerifiedCrawlers,
}

impl Part {
    /// Every list, in the order they are shown.
    pub const ALL: [Part; 3] = [Part::AiCrawlers, Part::Crawlers, Part::VerifiedCrawlers];

    /// The list's key in a [`Bundle`] and its `list` label in `/metrics`.
    pub fn key(self) -> &'static str {
        match self {
            Part::AiCrawlers => "ai_crawlers",
            Part::Crawlers => "crawlers",
            Part::VerifiedCrawlers => "verified_crawlers",
        }
    }
}

/// Where one list came from and when; kept in the stored [`Bundle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Version {
    /// The content's version: the first 12 hex digits of the SHA-256 of its
    /// entries, one per line (verified crawlers: `name prefix,prefix…`
    /// sorted), so equal lists have equal versions wherever they came from.
    pub version: String,
    /// The file path or URL it was read from, or `compiled-in`.
    pub source: String,
    /// What the source says about its own version, when it says: a bundle's
    /// `version`, a range file's `creationTime`, the HTTP `Last-Modified`
    /// header or the file's modification time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<String>,
    /// When `tagproxy bots update` read it (RFC 3339, UTC).
    pub fetched_at: String,
    /// The same, Unix seconds.
    pub fetched_unix: u64,
}

/// The update and storage format (`format = "tagproxy-bot-lists/1"`), JSON:
///
/// ```json
/// {"format": "tagproxy-bot-lists/1", "version": "2026-12-01",
///  "ai_crawlers": ["GPTBot", "ClaudeBot"],
///  "crawlers": ["Googlebot\\/", "^curl"],
///  "verified_crawlers": {"Googlebot": ["66.249.64.0/27", "2001:4860:4801:10::/64"]}}
/// ```
///
/// Every list is optional: one that is absent is left as it is. The stored
/// file adds `versions` (list key → [`Version`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Must be [`FORMAT`].
    pub format: String,
    /// The bundle's own version, free text (its publisher's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// AI crawler User-Agent tokens, matched ASCII-case-insensitively as
    /// whole words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_crawlers: Option<Vec<String>>,
    /// Crawler User-Agent regexes (Rust `regex` syntax), case-sensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crawlers: Option<Vec<String>>,
    /// Crawler name (a User-Agent token) → its operator's IP prefixes
    /// (CIDR, or a bare address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_crawlers: Option<BTreeMap<String, Vec<String>>>,
    /// Stored files only: where each list came from.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub versions: BTreeMap<String, Version>,
}

impl Bundle {
    /// Whether the bundle holds `part`.
    pub fn has(&self, part: Part) -> bool {
        match part {
            Part::AiCrawlers => self.ai_crawlers.is_some(),
            Part::Crawlers => self.crawlers.is_some(),
            Part::VerifiedCrawlers => self.verified_crawlers.is_some(),
        }
    }

    /// The number of entries of `part` (prefixes for verified crawlers), if
    /// the bundle has it.
    pub fn len(&self, part: Part) -> Option<usize> {
        match part {
            Part::AiCrawlers => self.ai_crawlers.as_ref().map(Vec::len),
            Part::Crawlers => self.crawlers.as_ref().map(Vec::len),
            Part::VerifiedCrawlers => self
                .verified_crawlers
                .as_ref()
                .map(|m| m.values().map(Vec::len).sum()),
        }
    }

    /// The content version of `part` (see [`Version::version`]).
    pub fn content_version(&self, part: Part) -> Option<String> {
        let text = match part {
            Part::AiCrawlers => self.ai_crawlers.as_ref()?.join("\n"),
            Part::Crawlers => self.crawlers.as_ref()?.join("\n"),
            Part::VerifiedCrawlers => self
                .verified_crawlers
                .as_ref()?
                .iter()
                .map(|(name, prefixes)| {
                    let mut p = prefixes.clone();
                    p.sort();
                    format!("{name} {}", p.join(","))
                })
                .collect::<Vec<_>>()
                .join("\n"),
        };
        Some(hash12(text.as_bytes()))
    }

    /// Reads a bundle from JSON and checks it as [`validate`](Self::validate)
    /// does.
    ///
    /// # Errors
    /// Not JSON, not this format, or a list that fails validation.
    pub fn parse(bytes: &[u8]) -> Result<Bundle, String> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let bundle: Bundle = serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            if at == "." {
                e.inner().to_string()
            } else {
                format!("{at}: {}", e.inner())
            }
        })?;
        bundle.validate()?;
        Ok(bundle)
    }

    /// Checks the format, that every list it has is non-empty and within
    /// the limits (`MAX_*`), that tokens and names are one line without
    /// `#`, every prefix parses and every pattern compiles.
    ///
    /// # Errors
    /// What is wrong, naming the list and the entry.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("format is {:?}, expected {FORMAT:?}", self.format));
        }
        if let Some(tokens) = &self.ai_crawlers {
            check_count("ai_crawlers", tokens.len(), MAX_AI_TOKENS)?;
            for t in tokens {
                check_token("ai_crawlers", t)?;
            }
        }
        if let Some(patterns) = &self.crawlers {
            check_count("crawlers", patterns.len(), MAX_PATTERNS)?;
            for p in patterns {
                if p.is_empty() || p.len() > MAX_PATTERN_LEN {
                    return Err(format!(
                        "crawlers: pattern {p:?} is empty or longer than {MAX_PATTERN_LEN} bytes"
                    ));
                }
                regex_set(&[p.as_str()])
                    .map_err(|e| format!("crawlers: pattern {p:?} does not compile: {e}"))?;
            }
        }
        if let Some(verified) = &self.verified_crawlers {
            check_count("verified_crawlers", verified.len(), MAX_VERIFIED_NAMES)?;
            let mut total = 0;
            for (name, prefixes) in verified {
                check_token("verified_crawlers", name)?;
                if prefixes.is_empty() {
                    return Err(format!("verified_crawlers: {name} has no IP prefixes"));
                }
                total += prefixes.len();
                for p in prefixes {
                    parse_prefix(p).map_err(|e| format!("verified_crawlers: {name}: {e}"))?;
                }
            }
            if total > MAX_PREFIXES {
                return Err(format!(
                    "verified_crawlers: {total} IP prefixes, more than {MAX_PREFIXES}"
                ));
            }
        }
        Ok(())
    }
}

fn check_count(list: &str, n: usize, max: usize) -> Result<(), String> {
    if n == 0 {
        return Err(format!("{list}: the list is empty"));
    }
    if n > max {
        return Err(format!("{list}: {n} entries, more than {max}"));
    }
    Ok(())
}

/// A token or crawler name goes into robots.txt lines (`User-agent: X`):
/// one line, no comment sign, not blank.
fn check_token(list: &str, t: &str) -> Result<(), String> {
    if t.trim().is_empty() || t.trim() != t {
        return Err(format!(
            "{list}: entry {t:?} is blank or has spaces at either end"
        ));
    }
    if t.len() > MAX_TOKEN_LEN {
        return Err(format!(
            "{list}: entry {t:?} is longer than {MAX_TOKEN_LEN} bytes"
        ));
    }
    if t.chars().any(|c| c.is_control() || c == '#') {
        return Err(format!(
            "{list}: entry {t:?} has a control character or `#`"
        ));
    }
    Ok(())
}

/// A CIDR prefix, or a bare address as its /32 or /128.
///
/// # Errors
/// Neither.
pub fn parse_prefix(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an IP prefix"))
}

/// The first 12 hex digits of SHA-256.
pub fn hash12(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix seconds as RFC 3339 UTC, seconds precision.
pub fn rfc3339(secs: u64) -> String {
    let ms = crate::admin::audit::rfc3339_ms(secs * 1000);
    ms.replace(".000Z", "Z")
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's
/// days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The entries of a compiled-in data file: lines that are neither blank nor
/// `#` comments.
pub(crate) fn entries(text: &'static str) -> impl Iterator<Item = &'static str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// `(upstream version, fetched date as Unix seconds)` from a compiled-in
/// file's header line `# … (commit 0037a9e2c5ff), fetched 2026-11-25.`
fn compiled_in_header(text: &str) -> (Option<String>, u64) {
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        let Some(at) = line.find("fetched ") else {
            continue;
        };
        let date = &line[at + 8..];
        let parts: Vec<i64> = date
            .get(..10)
            .unwrap_or("")
            .split('-')
            .filter_map(|p| p.parse().ok())
            .collect();
        let secs = match parts[..] {
            [y, m, d] => (days_from_civil(y, m, d).max(0) as u64) * 86_400,
            _ => 0,
        };
        let upstream = line
            .find('(')
            .zip(line.find(')'))
            .filter(|(a, b)| a < b)
            .map(|(a, b)| line[a + 1..b].to_string());
        return (upstream, secs);
    }
    (None, 0)
}

fn regex_set(patterns: &[&str]) -> Result<RegexSet, regex::Error> {
    RegexSetBuilder::new(patterns)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(DFA_SIZE_LIMIT)
        .build()
}

/// One set of every pattern that the regex crate compiles, and the others.
pub(crate) fn compile_patterns(patterns: &[String]) -> (RegexSet, Vec<String>) {
    let all: Vec<&str> = patterns.iter().map(String::as_str).collect();
    if let Ok(set) = regex_set(&all) {
        return (set, Vec::new());
    }
    // Find the culprits one by one, then build the rest.
    let (good, bad): (Vec<&str>, Vec<&str>) =
        all.into_iter().partition(|p| regex_set(&[*p]).is_ok());
    let set = regex_set(&good).unwrap_or_else(|_| RegexSet::empty());
    (set, bad.into_iter().map(String::from).collect())
}

/// What `/metrics` and `bots status` show about one list in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Which list.
    pub part: Part,
    /// Where it came from and when.
    pub version: Version,
    /// Entries (AI tokens before exclusions, patterns, IP prefixes).
    pub entries: usize,
}

/// The lists in force, compiled.
pub struct Lists {
    /// Distinct for every set of lists installed in this process, so caches
    /// of verdicts know when they are stale.
    pub generation: u64,
    /// Effective AI tokens (source order, without [`NOT_AI`] and without
    /// case-insensitive duplicates).
    pub(crate) ai_tokens: Vec<String>,
    ai: AhoCorasick,
    pub(crate) crawlers: RegexSet,
    /// Crawler patterns the regex crate rejected (compiled-in list only: an
    /// update with such a pattern is refused).
    pub(crate) skipped: Vec<String>,
    /// Crawler name → prefixes, in name order; names matched by `names`.
    verified: Vec<(String, Vec<IpNet>)>,
    names: Option<AhoCorasick>,
    /// One per [`Part`], in [`Part::ALL`] order.
    pub info: Vec<Info>,
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// The compiled-in lists as a bundle, and their versions.
fn compiled_in_bundle() -> Bundle {
    let (ai_upstream, ai_fetched) = compiled_in_header(AI_ROBOTS);
    let (cua_upstream, cua_fetched) = compiled_in_header(CRAWLER_USER_AGENTS);
    let mut bundle = Bundle {
        format: FORMAT.into(),
        ai_crawlers: Some(entries(AI_ROBOTS).map(String::from).collect()),
        // Spaces at either end are written `\x20` in the file: the regex
        // reads that as a space.
        crawlers: Some(entries(CRAWLER_USER_AGENTS).map(String::from).collect()),
        verified_crawlers: Some(BTreeMap::new()),
        ..Bundle::default()
    };
    for (part, upstream, fetched) in [
        (Part::AiCrawlers, ai_upstream, ai_fetched),
        (Part::Crawlers, cua_upstream, cua_fetched),
        (Part::VerifiedCrawlers, None, ai_fetched.max(cua_fetched)),
    ] {
        let version = Version {
            version: bundle
                .content_version(part)
                .expect("compiled-in has every list"),
            source: COMPILED_IN.into(),
            source_version: upstream,
            fetched_at: rfc3339(fetched),
            fetched_unix: fetched,
        };
        bundle.versions.insert(part.key().into(), version);
    }
    bundle
}

static COMPILED: LazyLock<Bundle> = LazyLock::new(compiled_in_bundle);

impl Lists {
    /// The compiled-in lists.
    pub fn compiled_in() -> Lists {
        Lists::build(&Bundle::default(), false).expect("the compiled-in lists build")
    }

    /// Builds `stored`'s lists, the compiled-in ones where it has none.
    /// `strict`: a crawler pattern that does not compile is an error (an
    /// update) rather than skipped and logged (the compiled-in list).
    ///
    /// # Errors
    /// `stored` fails [`Bundle::validate`] (unless it is empty), or a list
    /// does not build.
    pub fn build(stored: &Bundle, strict: bool) -> Result<Lists, String> {
        if stored != &Bundle::default() {
            stored.validate()?;
        }
        let started = Instant::now();
        let compiled = &*COMPILED;
        let pick = |part: Part| -> &Bundle {
            if stored.has(part) {
                stored
            } else {
                compiled
            }
        };
        let mut info = Vec::new();
        for part in Part::ALL {
            let from = pick(part);
            let version = from.versions.get(part.key()).cloned().unwrap_or_else(|| {
                // A stored list without its version (written by hand): its
                // content version, fetched now.
                let now = unix_now();
                Version {
                    version: from.content_version(part).unwrap_or_default(),
                    source: "unknown".into(),
                    source_version: None,
                    fetched_at: rfc3339(now),
                    fetched_unix: now,
                }
            });
            info.push(Info {
                part,
                version,
                entries: from.len(part).unwrap_or(0),
            });
        }

        let mut ai_tokens: Vec<String> = Vec::new();
        for token in pick(Part::AiCrawlers).ai_crawlers.as_deref().unwrap_or(&[]) {
            let token = token.trim();
            let excluded = NOT_AI.iter().any(|t| t.eq_ignore_ascii_case(token));
            let duplicate = ai_tokens.iter().any(|t| t.eq_ignore_ascii_case(token));
            if !excluded && !duplicate && !token.is_empty() {
                ai_tokens.push(token.to_string());
            }
        }
        let ai = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&ai_tokens)
            .map_err(|e| format!("ai_crawlers: {e}"))?;

        let patterns = pick(Part::Crawlers).crawlers.as_deref().unwrap_or(&[]);
        let (crawlers, skipped) = if strict {
            let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
            let set = regex_set(&refs).map_err(|e| format!("crawlers: {e}"))?;
            (set, Vec::new())
        } else {
            compile_patterns(patterns)
        };
        if !skipped.is_empty() {
            tracing::warn!(
                skipped = skipped.len(),
                patterns = ?skipped,
                "crawler-user-agents: patterns the regex crate cannot compile were skipped"
            );
        }

        let mut verified = Vec::new();
        for (name, prefixes) in pick(Part::VerifiedCrawlers)
            .verified_crawlers
            .as_ref()
            .into_iter()
            .flatten()
        {
            let nets = prefixes
                .iter()
                .map(|p| parse_prefix(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("verified_crawlers: {name}: {e}"))?;
            verified.push((name.clone(), IpNet::aggregate(&nets)));
        }
        let names = (!verified.is_empty())
            .then(|| {
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .build(verified.iter().map(|(n, _)| n))
            })
            .transpose()
            .map_err(|e| format!("verified_crawlers: {e}"))?;

        tracing::debug!(
            ai_tokens = ai_tokens.len(),
            crawler_patterns = crawlers.len(),
            verified_crawlers = verified.len(),
            ms = started.elapsed().as_millis() as u64,
            "bot lists built"
        );
        Ok(Lists {
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            ai_tokens,
            ai,
            crawlers,
            skipped,
            verified,
            names,
            info,
        })
    }

    /// Whether any [`Info`] comes from a stored file.
    pub fn from_file(&self) -> bool {
        self.info.iter().any(|i| i.version.source != COMPILED_IN)
    }

    /// The first AI token occurring as a whole word (ASCII case-insensitive):
    /// the bytes either side of the match are not ASCII letters or digits.
    pub fn ai_token(&self, ua: &str) -> Option<&str> {
        whole_words(&self.ai, ua)
            .next()
            .map(|i| self.ai_tokens[i].as_str())
    }

    /// Which verified crawler a User-Agent claims to be (a name occurring as
    /// a whole word, ASCII case-insensitive) and whether `ip` is in that
    /// operator's published prefixes: `Some((name, true))` verified,
    /// `Some((name, false))` an impostor (or a new address the list does
    /// not know yet), `None` when it claims no verified crawler. A
    /// User-Agent naming several is verified when `ip` is in any of their
    /// prefixes.
    pub fn verify(&self, ua: &str, ip: IpAddr) -> Option<(&str, bool)> {
        let names = self.names.as_ref()?;
        let ip = crate::config::canonical_ip(ip);
        let mut claimed = None;
        for i in whole_words(names, ua) {
            let (name, nets) = &self.verified[i];
            if nets.iter().any(|n| n.contains(&ip)) {
                return Some((name, true));
            }
            claimed.get_or_insert(name.as_str());
        }
        claimed.map(|name| (name, false))
    }

    /// Crawler names that have published prefixes.
    pub fn verified_names(&self) -> impl Iterator<Item = &str> {
        self.verified.iter().map(|(n, _)| n.as_str())
    }
}

/// Pattern indexes of `automaton`'s matches in `text` that are whole words.
fn whole_words<'a>(automaton: &'a AhoCorasick, text: &'a str) -> impl Iterator<Item = usize> + 'a {
    let bytes = text.as_bytes();
    let word = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    automaton
        .find_overlapping_iter(text)
        .filter(move |m| {
            let before = m.start().checked_sub(1).and_then(|i| bytes.get(i));
            !word(before) && !word(bytes.get(m.end()))
        })
        .map(|m| m.pattern().as_usize())
}

static CURRENT: LazyLock<ArcSwap<Lists>> =
    LazyLock::new(|| ArcSwap::from_pointee(Lists::compiled_in()));

/// The lists in force (built from the compiled-in ones on first use).
pub fn current() -> arc_swap::Guard<Arc<Lists>> {
    CURRENT.load()
}

/// Puts `lists` in force for every detector.
pub fn install(lists: Lists) {
    CURRENT.store(Arc::new(lists));
}

/// `data_dir/bots`, where the stored lists live.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("bots")
}

/// Reads the stored lists: `Ok(None)` when there is no file.
///
/// # Errors
/// The file cannot be read or is not a valid [`Bundle`].
pub fn read_stored(path: &Path) -> Result<Option<Bundle>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    Bundle::parse(&bytes)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// What identifies a version of the stored file without reading it.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok()?, m.len(), ino))
}

/// Puts the stored lists under `data_dir` in force (or the compiled-in ones
/// when there is no file; a bad file is logged and, at `start`, falls back
/// to the compiled-in lists, later keeps the lists in force).
fn refresh(file: &Path, start: bool) {
    match read_stored(file).and_then(|b| b.map(|b| Lists::build(&b, true)).transpose()) {
        Ok(Some(lists)) => {
            for i in &lists.info {
                tracing::info!(
                    list = i.part.key(),
                    version = %i.version.version,
                    source = %i.version.source,
                    entries = i.entries,
                    "bot list in force"
                );
            }
            install(lists);
        }
        Ok(None) => {
            if start {
                tracing::debug!(file = %file.display(), "no stored bot lists: the compiled-in lists are in force");
            } else if current().from_file() {
                tracing::info!(file = %file.display(), "stored bot lists removed: the compiled-in lists are in force");
                install(Lists::compiled_in());
            }
        }
        Err(e) => {
            if start {
                tracing::warn!(error = %e, "stored bot lists cannot be used: the compiled-in lists are in force");
                if current().from_file() {
                    install(Lists::compiled_in());
                }
            } else {
                tracing::warn!(error = %e, "stored bot lists cannot be used: the lists in force stay");
            }
        }
    }
}

/// Loads the stored lists under `data_dir` now, then follows the file
/// every [`POLL`] from a task (needs a tokio runtime).
pub fn start(data_dir: &Path) {
    let file = dir(data_dir).join(FILE);
    refresh(&file, true);
    let mut last = stamp(&file);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = stamp(&file);
            if now == last {
                continue;
            }
            last = now;
            let file = file.clone();
            // Building the regex set takes tens of milliseconds.
            let _ = tokio::task::spawn_blocking(move || refresh(&file, false)).await;
        }
    });
}

/// `tagproxy_bot_lists_info`, `_age_seconds` and `_entries` in Prometheus
/// text.
pub fn render(out: &mut String) {
    use std::fmt::Write as _;
    let lists = current();
    let now = unix_now();
    let esc = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let _ = writeln!(out, "# HELP tagproxy_bot_lists_info The bot lists in force: version (content hash), source (file, URL or compiled-in) and the source's own version.\n# TYPE tagproxy_bot_lists_info gauge");
    for i in &lists.info {
        let _ = writeln!(
            out,
            "tagproxy_bot_lists_info{{list=\"{}\",version=\"{}\",source=\"{}\",source_version=\"{}\"}} 1",
            i.part.key(),
            esc(&i.version.version),
            esc(&i.version.source),
            esc(i.version.source_version.as_deref().unwrap_or(""))
        );
    }
    let _ = writeln!(out, "# HELP tagproxy_bot_lists_age_seconds Seconds since the bot list in force was fetched (compiled-in: since the date in its header).\n# TYPE tagproxy_bot_lists_age_seconds gauge");
    for i in &lists.info {
        let _ = writeln!(
            out,
            "tagproxy_bot_lists_age_seconds{{list=\"{}\"}} {}",
            i.part.key(),
            now.saturating_sub(i.version.fetched_unix)
        );
    }
    let _ = writeln!(out, "# HELP tagproxy_bot_lists_entries Entries of the bot list in force (IP prefixes for verified_crawlers).\n# TYPE tagproxy_bot_lists_entries gauge");
    for i in &lists.info {
        let _ = writeln!(
            out,
            "tagproxy_bot_lists_entries{{list=\"{}\"}} {}",
            i.part.key(),
            i.entries
        );
    }
}

/// The lists in force for `GET /admin/bots`: `[{"list", "version",
/// "source", "source_version", "fetched_at", "age_seconds", "entries"}…]`.
pub fn info_json() -> serde_json::Value {
    let now = unix_now();
    current()
        .info
        .iter()
        .map(|i| {
            serde_json::json!({
                "list": i.part.key(),
                "version": i.version.version,
                "source": i.version.source,
                "source_version": i.version.source_version,
                "fetched_at": i.version.fetched_at,
                "age_seconds": now.saturating_sub(i.version.fetched_unix),
                "entries": i.entries,
            })
        })
        .collect()
}

/// Writes `bytes` to `path` atomically: a temp file beside it, fsync,
/// rename, fsync of the folder.
///
/// # Errors
/// Any of those steps.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("lists"),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// fsync of a folder, so a rename in it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(json: &str) -> Result<Bundle, String> {
        Bundle::parse(json.as_bytes())
    }

    #[test]
    fn a_bundle_parses_and_validates() {
        let b = bundle(
            r#"{"format":"tagproxy-bot-lists/1","version":"v7","ai_crawlers":["GPTBot","NewAIBot"],
                "crawlers":["^curl","Googlebot\\/"],"verified_crawlers":{"Googlebot":["66.249.64.0/27","2001:4860:4801:10::/64","127.0.0.1"]}}"#,
        )
        .unwrap();
        assert_eq!(b.len(Part::AiCrawlers), Some(2));
        assert_eq!(b.len(Part::VerifiedCrawlers), Some(3));
        let lists = Lists::build(&b, true).unwrap();
        assert_eq!(
            lists.ai_token("Mozilla/5.0 (compatible; NewAIBot/1.0)"),
            Some("NewAIBot")
        );
        assert!(lists.crawlers.is_match("curl/8.5.0"));
        // Only the lists the bundle has are replaced.
        let only_ai =
            bundle(r#"{"format":"tagproxy-bot-lists/1","ai_crawlers":["NewAIBot"]}"#).unwrap();
        let lists = Lists::build(&only_ai, true).unwrap();
        assert_eq!(lists.ai_tokens, ["NewAIBot"]);
        assert!(
            lists.crawlers.len() > 1_000,
            "compiled-in crawler patterns stay"
        );
        assert_eq!(lists.info[1].version.source, COMPILED_IN);
    }

    #[test]
    fn bad_bundles_are_refused_with_the_reason() {
        for (json, why) in [
            ("not json", "expected"),
            (r#"{"format":"other/2","ai_crawlers":["A"]}"#, "format"),
            (
                r#"{"format":"tagproxy-bot-lists/1","ai_crawlers":[]}"#,
                "ai_crawlers: the list is empty",
            ),
            (
                r#"{"format":"tagproxy-bot-lists/1","ai_crawlers":["A\nDisallow: /"]}"#,
                "control character",
            ),
            (
                r#"{"format":"tagproxy-bot-lists/1","ai_crawlers":["A#b"]}"#,
                "`#`",
            ),
            (
                r#"{"format":"tagproxy-bot-lists/1","ai_crawlers":[" A"]}"#,
                "spaces",
            ),
            (
                r#"{"format":"tagproxy-bot-lists/1","crawlers":["(unclosed"]}"#,
                "does not compile",
            ),
            (
                r#"{"format":"tagproxy-bot-lists/1","crawlers":["(?=lookahead)"]}"#,
                "does not compile",
            ),
            (
                r#"{"format":"tagproxy-bot-lists/1","verified_crawlers":{"Googlebot":["66.249.64.0/33"]}}"#,
                "not an IP prefix",
            ),
            (
                r#"{"format":"tagproxy-bot-lists/1","verified_crawlers":{"Googlebot":[]}}"#,
                "no IP prefixes",
            ),
            (
                r#"{"format":"tagproxy-bot-lists/1","ai_crawler":["A"]}"#,
                "unknown field",
            ),
            (
                r#"{"format":"tagproxy-bot-lists/1","ai_crawlers":"GPTBot"}"#,
                "ai_crawlers",
            ),
        ] {
            let e = bundle(json)
                .err()
                .unwrap_or_else(|| panic!("accepted {json}"));
            assert!(e.contains(why), "{json}: {e}");
        }
        let too_long = format!(
            r#"{{"format":"tagproxy-bot-lists/1","ai_crawlers":["{}"]}}"#,
            "a".repeat(101)
        );
        assert!(bundle(&too_long).unwrap_err().contains("longer than"));
    }

    #[test]
    fn versions_are_content_hashes() {
        let a = bundle(r#"{"format":"tagproxy-bot-lists/1","ai_crawlers":["A","B"]}"#).unwrap();
        let b =
            bundle(r#"{"format":"tagproxy-bot-lists/1","version":"x","ai_crawlers":["A","B"]}"#)
                .unwrap();
        let c = bundle(r#"{"format":"tagproxy-bot-lists/1","ai_crawlers":["B","A"]}"#).unwrap();
        let v = |b: &Bundle| b.content_version(Part::AiCrawlers).unwrap();
        assert_eq!(v(&a), v(&b));
        assert_ne!(v(&a), v(&c));
        assert_eq!(v(&a).len(), 12);
        assert_eq!(a.content_version(Part::Crawlers), None);
    }

    #[test]
    fn compiled_in_lists_carry_their_header_version() {
        let lists = Lists::compiled_in();
        let ai = &lists.info[0];
        assert_eq!(ai.part, Part::AiCrawlers);
        assert_eq!(ai.version.source, COMPILED_IN);
        assert!(
            ai.version
                .source_version
                .as_deref()
                .unwrap()
                .starts_with("commit "),
            "{ai:?}"
        );
        assert!(ai.version.fetched_at.starts_with("20"), "{ai:?}");
        assert!(ai.version.fetched_unix > 1_700_000_000, "{ai:?}");
        assert_eq!(lists.info[2].entries, 0, "no compiled-in IP ranges");
        assert!(!lists.from_file());
        assert_eq!(
            compiled_in_header("# x (commit abc), fetched 2026-11-25.\n"),
            (Some("commit abc".into()), 1_795_564_800)
        );
        assert_eq!(rfc3339(1_795_564_800), "2026-11-25T00:00:00Z");
    }

    #[test]
    fn verification_by_published_prefixes() {
        let b = bundle(
            r#"{"format":"tagproxy-bot-lists/1","verified_crawlers":{"Googlebot":["66.249.64.0/27"],"GPTBot":["127.0.0.0/8","::1"]}}"#,
        )
        .unwrap();
        let lists = Lists::build(&b, true).unwrap();
        let google = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
        let gpt = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)";
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            lists.verify(google, ip("66.249.64.5")),
            Some(("Googlebot", true))
        );
        assert_eq!(
            lists.verify(google, ip("127.0.0.1")),
            Some(("Googlebot", false))
        );
        // Image crawler of the same family: the name is a whole word.
        assert_eq!(
            lists.verify("Googlebot-Image/1.0", ip("66.249.64.1")),
            Some(("Googlebot", true))
        );
        assert_eq!(lists.verify(gpt, ip("127.0.0.1")), Some(("GPTBot", true)));
        assert_eq!(
            lists.verify(gpt, ip("::ffff:127.0.0.1")),
            Some(("GPTBot", true))
        );
        assert_eq!(lists.verify(gpt, ip("::1")), Some(("GPTBot", true)));
        assert_eq!(lists.verify("NotGooglebotReally", ip("66.249.64.5")), None);
        assert_eq!(lists.verify("curl/8.5.0", ip("66.249.64.5")), None);
        // No ranges, nothing to verify.
        assert_eq!(Lists::compiled_in().verify(google, ip("66.249.64.5")), None);
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bots").join(FILE);
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE], "no temp file left");
    }
}
