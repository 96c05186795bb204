//! Bot detection: is a User-Agent a bot, is it an AI crawler, and which list
//! said so (SPEC section 9, issue 5).
//!
//! A [`BotDetector`] is built once per config and asked [`BotDetector::check`]
//! for every page and event. The layers, in the order a [`Verdict`]'s
//! `reason` reports the first that matched:
//!
//! 1. **No User-Agent** (`"empty_user_agent"`): an empty, blank or `-` header.
//!    Every browser sends one; curl with `-A ''`, scanners and health checks
//!    do not. Like Zaraz and Cloudflare's bot management, we do not count such
//!    a client as a visitor: it is a bot (not an AI crawler), so with
//!    `skip_events` it produces no deliveries.
//! 2. **AI crawlers** (`"ai-robots-txt"`, `ai = true`): the ai.robots.txt
//!    project's tokens (`ai-robots.txt`), matched ASCII-case-insensitively by
//!    an aho-corasick automaton, as whole words: the bytes either side of the
//!    match must not be ASCII letters or digits. Upstream's own server configs
//!    match plain substrings, but its list has generic words (`Code`, `Trae`,
//!    `LCC`, `YaK`, `Operator`) that would then hit `Barcode`, `Traefik`…
//!    A few upstream tokens are not treated as AI crawlers at all, see
//!    [`NOT_AI`]: blocking them would hurt the site (link previews, search).
//! 3. **Operator config** (`"extra_user_agents"`): `[bots] extra_user_agents`,
//!    plain ASCII-case-insensitive substrings; blank entries are ignored.
//! 4. **crawler-user-agents** (`"crawler-user-agents"`): that project's ~1,500
//!    regexes (`crawler-user-agents.txt`), case-sensitive as upstream means
//!    them, in one [`RegexSet`] with a 64 MiB lazy-DFA cache limit (with the
//!    default limit the DFA thrashes and a check costs 30–100 µs). Patterns the
//!    `regex` crate cannot compile are skipped and counted in the log (none in
//!    the current list). It has the search engines, SEO tools, link previewers,
//!    curl, python-requests, Go-http-client, wget and headless Chrome.
//! 5. **woothee** (`"woothee"`): its category is `crawler`. It runs last
//!    because it is the dearest layer (a full parse, ~1.5 µs); what it adds is
//!    its generic rule for otherwise unknown clients (`…bot/`, `…crawler`,
//!    `…spider;`). woothee 0.13 (2021) knows no AI crawler as such; it takes
//!    Bytespider for a phone's Safari and Amazonbot for Chrome, and it calls
//!    curl and other HTTP libraries `misc`, not crawlers.
//!
//! A browser's User-Agent runs every layer (about 3 µs on this project's
//! 2-core machine, woothee half of it). Verdicts are therefore cached per
//! User-Agent in a bounded map (cleared at 10,000 entries; User-Agents over
//! 512 bytes are decided every time), so a repeated User-Agent costs one hash
//! lookup (under 100 ns). `benches/bots.rs` measures both.
//!
//! Both lists are compiled in (`include_str!`) and shared by every detector;
//! `src/bots/refresh.sh` re-downloads them from upstream with their MIT
//! licence notices.

pub mod insights;
pub mod score;

use std::sync::LazyLock;
use std::time::Instant;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use dashmap::DashMap;
use regex::{RegexSet, RegexSetBuilder};

/// `reason` for a request without a User-Agent.
pub const REASON_EMPTY: &str = "empty_user_agent";
/// `reason` for a token of the ai.robots.txt list.
pub const REASON_AI: &str = "ai-robots-txt";
/// `reason` for `[bots] extra_user_agents`.
pub const REASON_EXTRA: &str = "extra_user_agents";
/// `reason` for a pattern of the crawler-user-agents list.
pub const REASON_LISTED: &str = "crawler-user-agents";
/// `reason` for woothee's `crawler` category.
pub const REASON_WOOTHEE: &str = "woothee";

/// The ai.robots.txt tokens (MIT), one per line; see `refresh.sh`.
const AI_ROBOTS: &str = include_str!("ai-robots.txt");
/// The crawler-user-agents patterns (MIT), one per line; see `refresh.sh`.
const CRAWLER_USER_AGENTS: &str = include_str!("crawler-user-agents.txt");

/// ai.robots.txt tokens that are bots but not treated as AI crawlers, so
/// `block_ai_crawlers` does not answer them 403 and the generated robots.txt
/// does not disallow them (they stay bots through the other layers):
/// - `facebookexternalhit`: Meta's link-preview fetcher; without it, links to
///   the site shared on Facebook, WhatsApp, Instagram or iMessage lose their
///   title and image. Meta's AI crawler is `meta-externalagent`.
/// - `Applebot`: Apple's search crawler (Siri, Spotlight, Safari suggestions).
///   Apple's AI-training opt-out is the robots.txt token `Applebot-Extended`,
///   which stays on the list.
/// - `PetalBot`: Huawei's Petal Search crawler.
/// - `Spider`: a generic word; as a whole word it still matches Baiduspider's
///   and Sogou's search crawlers (`…/search/spider.html`, `Sogou web spider`).
pub const NOT_AI: &[&str] = &["facebookexternalhit", "Applebot", "PetalBot", "Spider"];

/// Cached verdicts before the cache is cleared (bounded memory under UA spam).
const CACHE_LIMIT: usize = 10_000;
/// Longer User-Agents are not cached (a cache of junk headers would be large).
const CACHE_MAX_UA_LEN: usize = 512;
/// Lazy-DFA cache limit for the crawler-user-agents set (issue 5 measured it).
const DFA_SIZE_LIMIT: usize = 64 << 20;
/// Compiled-program limit for the set; its NFA needs a few MiB.
const SIZE_LIMIT: usize = 64 << 20;

/// Which kind of bot a verdict is about; see [`Verdict::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BotKind {
    /// A generic automated client: woothee's `crawler` category, or no
    /// User-Agent at all.
    Crawler,
    /// A known AI crawler (ai.robots.txt); `block_ai_crawlers` answers 403.
    AiCrawler,
    /// Matched the crawler-user-agents list.
    Listed,
    /// Matched the operator's `extra_user_agents`.
    Custom,
}

/// What [`BotDetector::check`] decided about one User-Agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verdict {
    /// Any layer matched: with `skip_events`, no deliveries.
    pub bot: bool,
    /// A known AI crawler: with `block_ai_crawlers`, answered 403.
    pub ai: bool,
    /// The layer that decided, one of the `REASON_*` constants (`None` for a
    /// browser): `"empty_user_agent"`, `"ai-robots-txt"`,
    /// `"extra_user_agents"`, `"crawler-user-agents"` or `"woothee"`.
    pub reason: Option<&'static str>,
}

impl Verdict {
    /// Not a bot.
    pub const HUMAN: Verdict = Verdict {
        bot: false,
        ai: false,
        reason: None,
    };

    const fn bot(reason: &'static str) -> Verdict {
        Verdict {
            bot: true,
            ai: false,
            reason: Some(reason),
        }
    }

    /// The kind of bot, from the reason; `None` when not a bot.
    pub fn kind(&self) -> Option<BotKind> {
        match self.reason? {
            REASON_AI => Some(BotKind::AiCrawler),
            REASON_EXTRA => Some(BotKind::Custom),
            REASON_LISTED => Some(BotKind::Listed),
            _ => Some(BotKind::Crawler),
        }
    }
}

/// The compiled-in lists, built once per process and shared by all detectors.
struct Lists {
    /// Effective AI tokens (upstream order, without [`NOT_AI`] and without
    /// case-insensitive duplicates).
    ai_tokens: Vec<&'static str>,
    ai: AhoCorasick,
    crawlers: RegexSet,
    /// crawler-user-agents patterns the regex crate rejected.
    skipped: Vec<&'static str>,
    woothee: woothee::parser::Parser,
}

static LISTS: LazyLock<Lists> = LazyLock::new(Lists::build);

/// The entries of a data file: lines that are neither blank nor `#` comments.
fn entries(text: &'static str) -> impl Iterator<Item = &'static str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

fn regex_set(patterns: &[&str]) -> Result<RegexSet, regex::Error> {
    RegexSetBuilder::new(patterns)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(DFA_SIZE_LIMIT)
        .build()
}

/// One set of every pattern that the regex crate compiles, and the others.
fn compile_patterns(patterns: Vec<&str>) -> (RegexSet, Vec<&str>) {
    if let Ok(set) = regex_set(&patterns) {
        return (set, Vec::new());
    }
    // Find the culprits one by one, then build the rest.
    let (good, bad): (Vec<&str>, Vec<&str>) =
        patterns.into_iter().partition(|p| regex_set(&[*p]).is_ok());
    let set = regex_set(&good).expect("patterns that compile alone compile together");
    (set, bad)
}

impl Lists {
    fn build() -> Lists {
        let started = Instant::now();
        let mut ai_tokens: Vec<&'static str> = Vec::new();
        for token in entries(AI_ROBOTS) {
            let excluded = NOT_AI.iter().any(|t| t.eq_ignore_ascii_case(token));
            let duplicate = ai_tokens.iter().any(|t| t.eq_ignore_ascii_case(token));
            if !excluded && !duplicate {
                ai_tokens.push(token);
            }
        }
        let ai = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&ai_tokens)
            .expect("ai-robots.txt tokens build an automaton");

        let (crawlers, skipped) = compile_patterns(entries(CRAWLER_USER_AGENTS).collect());
        if !skipped.is_empty() {
            tracing::warn!(
                skipped = skipped.len(),
                patterns = ?skipped,
                "crawler-user-agents: patterns the regex crate cannot compile were skipped"
            );
        }
        tracing::debug!(
            ai_tokens = ai_tokens.len(),
            crawler_patterns = crawlers.len(),
            skipped = skipped.len(),
            ms = started.elapsed().as_millis() as u64,
            "bot lists built"
        );
        Lists {
            ai_tokens,
            ai,
            crawlers,
            skipped,
            woothee: woothee::parser::Parser::new(),
        }
    }

    /// An AI token occurs as a whole word (ASCII case-insensitive).
    fn is_ai(&self, ua: &str) -> bool {
        let bytes = ua.as_bytes();
        let word = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
        self.ai.find_overlapping_iter(ua).any(|m| {
            let before = m.start().checked_sub(1).and_then(|i| bytes.get(i));
            !word(before) && !word(bytes.get(m.end()))
        })
    }

    /// The first AI token occurring as a whole word, as [`Lists::is_ai`].
    fn ai_token(&self, ua: &str) -> Option<&'static str> {
        let bytes = ua.as_bytes();
        let word = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
        self.ai
            .find_overlapping_iter(ua)
            .find(|m| {
                let before = m.start().checked_sub(1).and_then(|i| bytes.get(i));
                !word(before) && !word(bytes.get(m.end()))
            })
            .map(|m| self.ai_tokens[m.pattern().as_usize()])
    }

    fn is_woothee_crawler(&self, ua: &str) -> bool {
        self.woothee
            .parse(ua)
            .is_some_and(|r| r.category == "crawler")
    }
}

/// Decides whether a User-Agent is a bot; `Send + Sync`, one per config.
pub struct BotDetector {
    lists: &'static Lists,
    /// `extra_user_agents` (ASCII case-insensitive substrings), if any.
    extra: Option<AhoCorasick>,
    cache: DashMap<Box<str>, Verdict>,
}

impl BotDetector {
    /// A detector with the compiled-in lists plus the operator's
    /// `extra_user_agents` substrings. The lists are built on first use in the
    /// process (tens of milliseconds) and shared afterwards.
    pub fn new(extra_user_agents: &[String]) -> BotDetector {
        let extra: Vec<&str> = extra_user_agents
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        let extra = (!extra.is_empty()).then(|| {
            AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .build(&extra)
                .expect("extra_user_agents build an automaton")
        });
        BotDetector {
            lists: &LISTS,
            extra,
            cache: DashMap::new(),
        }
    }

    /// The verdict for a User-Agent header value (`""` when absent), cached.
    pub fn check(&self, user_agent: &str) -> Verdict {
        if user_agent.len() > CACHE_MAX_UA_LEN {
            return self.check_uncached(user_agent);
        }
        if let Some(hit) = self.cache.get(user_agent) {
            return *hit;
        }
        let verdict = self.check_uncached(user_agent);
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(user_agent.into(), verdict);
        verdict
    }

    /// The same decision as [`check`](Self::check), without the cache.
    pub fn check_uncached(&self, user_agent: &str) -> Verdict {
        let ua = user_agent.trim();
        if ua.is_empty() || ua == "-" {
            return Verdict::bot(REASON_EMPTY);
        }
        let lists = self.lists;
        if lists.is_ai(ua) {
            return Verdict {
                bot: true,
                ai: true,
                reason: Some(REASON_AI),
            };
        }
        if self.extra.as_ref().is_some_and(|extra| extra.is_match(ua)) {
            return Verdict::bot(REASON_EXTRA);
        }
        if lists.crawlers.is_match(ua) {
            return Verdict::bot(REASON_LISTED);
        }
        if lists.is_woothee_crawler(ua) {
            return Verdict::bot(REASON_WOOTHEE);
        }
        Verdict::HUMAN
    }

    /// The bot score of a request (see [`score`]), its User-Agent judged
    /// by [`check`](Self::check).
    pub fn score(&self, req: &score::Request<'_>) -> score::Score {
        let ua = req
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        score::score(&self.check(ua), req)
    }

    /// The ai.robots.txt token a User-Agent matches (its crawler's name),
    /// if any.
    pub fn ai_token(&self, user_agent: &str) -> Option<&'static str> {
        self.lists.ai_token(user_agent)
    }

    /// The AI crawler tokens this detector answers with `ai = true` (the
    /// ai.robots.txt list less [`NOT_AI`] and case-insensitive duplicates).
    pub fn ai_tokens(&self) -> &[&'static str] {
        &self.lists.ai_tokens
    }

    /// crawler-user-agents patterns the regex crate could not compile.
    pub fn skipped_patterns(&self) -> &[&'static str] {
        &self.lists.skipped
    }

    /// A robots.txt section that disallows the whole site to every AI
    /// crawler token, one `User-agent: <token>` / `Disallow: /` group each;
    /// with `block_ai_crawlers`, appended to the origin's `/robots.txt` (or
    /// served alone when it has none). Its first line marks it, so it is
    /// appended once.
    pub fn robots_txt_section(&self) -> String {
        let mut out = String::from(
            "# AI crawlers (ai.robots.txt list), disallowed by tagproxy block_ai_crawlers\n",
        );
        for token in &self.lists.ai_tokens {
            out.push_str("User-agent: ");
            out.push_str(token);
            out.push_str("\nDisallow: /\n\n");
        }
        out
    }

    /// Cached verdicts (tests, metrics).
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests;
