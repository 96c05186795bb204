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
//!    them, in one `regex::RegexSet` with a 64 MiB lazy-DFA cache limit (with the
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
//! licence notices. `tagproxy bots update` stores newer ones in `data_dir`,
//! which the running server picks up ([`lists`]); the cache is keyed by the
//! lists' generation, so a verdict never outlives the lists it came from.

pub mod insights;
pub mod lists;
pub mod score;
pub mod update;

use std::net::IpAddr;
use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder};
use dashmap::DashMap;

#[cfg(test)]
use lists::{entries, AI_ROBOTS, CRAWLER_USER_AGENTS};

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

/// woothee's parser, built once per process.
static WOOTHEE: LazyLock<woothee::parser::Parser> = LazyLock::new(woothee::parser::Parser::new);

fn is_woothee_crawler(ua: &str) -> bool {
    WOOTHEE.parse(ua).is_some_and(|r| r.category == "crawler")
}

/// Decides whether a User-Agent is a bot; `Send + Sync`, one per config.
pub struct BotDetector {
    /// `extra_user_agents` (ASCII case-insensitive substrings), if any.
    extra: Option<AhoCorasick>,
    /// User-Agent → (lists generation, verdict).
    cache: DashMap<Box<str>, (u64, Verdict)>,
}

impl BotDetector {
    /// A detector with the lists in force ([`lists::current`]) plus the
    /// operator's `extra_user_agents` substrings. The compiled-in lists are
    /// built on first use in the process (tens of milliseconds) and shared
    /// afterwards.
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
            extra,
            cache: DashMap::new(),
        }
    }

    /// The verdict for a User-Agent header value (`""` when absent), cached.
    pub fn check(&self, user_agent: &str) -> Verdict {
        let lists = lists::current();
        if user_agent.len() > CACHE_MAX_UA_LEN {
            return self.check_with(&lists, user_agent);
        }
        if let Some(hit) = self.cache.get(user_agent) {
            if hit.0 == lists.generation {
                return hit.1;
            }
        }
        let verdict = self.check_with(&lists, user_agent);
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache
            .insert(user_agent.into(), (lists.generation, verdict));
        verdict
    }

    /// The same decision as [`check`](Self::check), without the cache.
    pub fn check_uncached(&self, user_agent: &str) -> Verdict {
        self.check_with(&lists::current(), user_agent)
    }

    fn check_with(&self, lists: &lists::Lists, user_agent: &str) -> Verdict {
        let ua = user_agent.trim();
        if ua.is_empty() || ua == "-" {
            return Verdict::bot(REASON_EMPTY);
        }
        if lists.ai_token(ua).is_some() {
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
        if is_woothee_crawler(ua) {
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

    /// The AI token a User-Agent matches (its crawler's name), if any.
    pub fn ai_token(&self, user_agent: &str) -> Option<String> {
        lists::current().ai_token(user_agent).map(String::from)
    }

    /// Whether a User-Agent that claims a crawler with published IP prefixes
    /// comes from one of them: `Some((name, verified))`, `None` when it
    /// claims none (see [`lists::Lists::verify`]).
    pub fn verify(&self, user_agent: &str, ip: IpAddr) -> Option<(String, bool)> {
        lists::current()
            .verify(user_agent, ip)
            .map(|(name, ok)| (name.to_string(), ok))
    }

    /// The AI crawler tokens this detector answers with `ai = true` (the
    /// AI list in force less [`NOT_AI`] and case-insensitive duplicates).
    pub fn ai_tokens(&self) -> Vec<String> {
        lists::current().ai_tokens.clone()
    }

    /// Crawler patterns of the list in force that the regex crate could not
    /// compile.
    pub fn skipped_patterns(&self) -> Vec<String> {
        lists::current().skipped.clone()
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
        for token in &lists::current().ai_tokens {
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
