//! Who crawls what (issue 16): requests from bots counted by crawler name,
//! AI or not, verified or not, allowed or blocked, for `/metrics`
//! (`tagproxy_crawler_requests_total`), and the last 24 hours by crawler and
//! by path for `GET /admin/bots`.
//!
//! Process-wide, so a config reload keeps the counts. Bounded: at most
//! [`MAX_CRAWLERS`] names (later ones count as `other`), 24 hourly buckets
//! of at most [`MAX_PATHS`] (crawler, path) pairs each (later pairs count
//! under the path `(other)`).

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{LazyLock, Mutex};

use serde_json::{json, Value};

/// Distinct crawler names kept; beyond, `other`.
pub const MAX_CRAWLERS: usize = 500;
/// Distinct (crawler, path) pairs per hour; beyond, path `(other)`.
pub const MAX_PATHS: usize = 2_000;
/// Paths are cut to this many bytes (at a char boundary).
const MAX_PATH_LEN: usize = 200;

/// Whether the proxy let the request through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Allowed,
    Blocked,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Allowed => "allowed",
            Action::Blocked => "blocked",
        }
    }
}

/// Whether a request came from where the crawler it claims to be crawls
/// from (see [`crate::bots::lists::Lists::verify`]): `Some(true)` from its
/// operator's published IP prefixes, `Some(false)` not (an impostor),
/// `None` when no prefixes are known for it.
pub type Verified = Option<bool>;

fn verified_label(v: Verified) -> &'static str {
    match v {
        Some(true) => "true",
        Some(false) => "false",
        None => "n/a",
    }
}

#[derive(Default)]
struct Hour {
    /// Unix time / 3600.
    hour: u64,
    /// (crawler, ai, verified) → (allowed, blocked). A list update can make
    /// a crawler name an AI crawler: its rows before and after differ.
    crawlers: HashMap<(String, bool, Verified), (u64, u64)>,
    paths: HashMap<(String, String), u64>,
}

#[derive(Default)]
struct State {
    /// (crawler, ai, verified, action) → requests since start.
    totals: HashMap<(String, bool, Verified, Action), u64>,
    hours: VecDeque<Hour>,
}

/// The counts; see the module doc.
#[derive(Default)]
pub struct Insights {
    state: Mutex<State>,
}

static INSIGHTS: LazyLock<Insights> = LazyLock::new(Insights::default);

fn now_hour() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 3600)
        .unwrap_or(0)
}

impl Insights {
    /// The process's counts.
    pub fn global() -> &'static Insights {
        &INSIGHTS
    }

    /// Counts one request of `crawler` for `path`.
    pub fn record(&self, crawler: &str, ai: bool, verified: Verified, action: Action, path: &str) {
        self.record_at(now_hour(), crawler, ai, verified, action, path);
    }

    fn record_at(
        &self,
        hour: u64,
        crawler: &str,
        ai: bool,
        verified: Verified,
        action: Action,
        path: &str,
    ) {
        let mut state = self.state.lock().unwrap();
        let known = state.totals.keys().any(|(c, _, _, _)| c == crawler);
        let distinct = state.totals.len();
        let crawler = if known || distinct < MAX_CRAWLERS {
            crawler
        } else {
            "other"
        };
        *state
            .totals
            .entry((crawler.to_string(), ai, verified, action))
            .or_default() += 1;
        if state.hours.back().is_none_or(|h| h.hour != hour) {
            state.hours.push_back(Hour {
                hour,
                ..Hour::default()
            });
        }
        while state.hours.front().is_some_and(|h| h.hour + 24 <= hour) {
            state.hours.pop_front();
        }
        let bucket = state.hours.back_mut().expect("pushed");
        let c = bucket
            .crawlers
            .entry((crawler.to_string(), ai, verified))
            .or_default();
        match action {
            Action::Allowed => c.0 += 1,
            Action::Blocked => c.1 += 1,
        }
        let mut path = &path[..path.floor_char_boundary(MAX_PATH_LEN)];
        if bucket.paths.len() >= MAX_PATHS
            && !bucket
                .paths
                .contains_key(&(crawler.to_string(), path.to_string()))
        {
            path = "(other)";
        }
        *bucket
            .paths
            .entry((crawler.to_string(), path.to_string()))
            .or_default() += 1;
    }

    /// `tagproxy_crawler_requests_total` in Prometheus text.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP tagproxy_crawler_requests_total Requests from bots to the site (not tagproxy's own paths), by crawler name, AI crawler or not, verified (from its operator's published IP ranges: true, false; n/a when none are known) and whether they were let through.\n# TYPE tagproxy_crawler_requests_total counter"
        );
        let state = self.state.lock().unwrap();
        let mut rows: Vec<_> = state.totals.iter().collect();
        rows.sort_by(|a, b| {
            (&a.0 .0, verified_label(a.0 .2), a.0 .3.name()).cmp(&(
                &b.0 .0,
                verified_label(b.0 .2),
                b.0 .3.name(),
            ))
        });
        for ((crawler, ai, verified, action), n) in rows {
            let _ = writeln!(
                out,
                "tagproxy_crawler_requests_total{{crawler=\"{}\",ai=\"{ai}\",verified=\"{}\",action=\"{}\"}} {n}",
                crawler.replace('\\', "\\\\").replace('"', "\\\""),
                verified_label(*verified),
                action.name()
            );
        }
    }

    /// The last 24 hours: `{"crawlers": [{"crawler", "ai", "verified",
    /// "allowed", "blocked", "requests"}…] (most requests first; `verified`
    /// true, false or null as [`Verified`], one row each), "paths": [{"crawler",
    /// "path", "requests"}…] (the `top` most requested)}`.
    pub fn last_24h(&self, top: usize) -> Value {
        self.last_24h_at(now_hour(), top)
    }

    fn last_24h_at(&self, hour: u64, top: usize) -> Value {
        let state = self.state.lock().unwrap();
        let mut crawlers: HashMap<(&str, bool, Verified), (u64, u64)> = HashMap::new();
        let mut paths: HashMap<(&str, &str), u64> = HashMap::new();
        for bucket in state.hours.iter().filter(|h| h.hour + 24 > hour) {
            for ((name, ai, verified), (allowed, blocked)) in &bucket.crawlers {
                let c = crawlers.entry((name, *ai, *verified)).or_default();
                c.0 += allowed;
                c.1 += blocked;
            }
            for ((c, p), n) in &bucket.paths {
                *paths.entry((c, p)).or_default() += n;
            }
        }
        let mut crawlers: Vec<_> = crawlers.into_iter().collect();
        crawlers.sort_by(|a, b| {
            (b.1 .0 + b.1 .1)
                .cmp(&(a.1 .0 + a.1 .1))
                .then(a.0 .0.cmp(b.0 .0))
                .then(a.0 .1.cmp(&b.0 .1))
                .then(verified_label(a.0 .2).cmp(verified_label(b.0 .2)))
        });
        let mut paths: Vec<_> = paths.into_iter().collect();
        paths.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        paths.truncate(top);
        json!({
            "hours": 24,
            "crawlers": crawlers.iter().map(|((name, ai, verified), (allowed, blocked))| json!({
                "crawler": name, "ai": ai, "verified": verified, "allowed": allowed, "blocked": blocked,
                "requests": allowed + blocked,
            })).collect::<Vec<_>>(),
            "paths": paths.iter().map(|((c, p), n)| json!({
                "crawler": c, "path": p, "requests": n,
            })).collect::<Vec<_>>(),
        })
    }
}

/// A short, label-safe name for the crawler behind a User-Agent: the
/// matched AI token when there is one, else the first product token that
/// names a bot (`AhrefsBot/7.0` → `AhrefsBot`), else the first product
/// token; `(no user-agent)` for none.
pub fn crawler_name(user_agent: &str, ai_token: Option<&str>) -> String {
    if let Some(token) = ai_token {
        return token.to_string();
    }
    let ua = user_agent.trim();
    if ua.is_empty() || ua == "-" {
        return "(no user-agent)".into();
    }
    let clean = |t: &str| -> String {
        t.chars()
            .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
            .take(40)
            .collect()
    };
    let tokens = ua
        .split(|c: char| c.is_whitespace() || c == ';' || c == '(' || c == ')' || c == ',')
        .filter_map(|t| t.split('/').next())
        .filter(|t| !t.is_empty() && *t != "Mozilla" && *t != "compatible");
    let mut first = None;
    for t in tokens {
        let lower = t.to_ascii_lowercase();
        if ["bot", "crawl", "spider", "fetch", "agent", "scrap"]
            .iter()
            .any(|w| lower.contains(w))
        {
            return clean(t);
        }
        first.get_or_insert(t);
    }
    first.map(clean).unwrap_or_else(|| "other".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(crawler_name("anything", Some("GPTBot")), "GPTBot");
        assert_eq!(
            crawler_name(
                "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
                None
            ),
            "AhrefsBot"
        );
        assert_eq!(
            crawler_name(
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                None
            ),
            "Googlebot"
        );
        assert_eq!(crawler_name("curl/8.5.0", None), "curl");
        assert_eq!(
            crawler_name("python-requests/2.32", None),
            "python-requests"
        );
        assert_eq!(crawler_name("", None), "(no user-agent)");
        assert_eq!(crawler_name("a\"b{c}/1", None), "abc");
    }

    #[test]
    fn counts_by_crawler_and_path_for_24_hours() {
        let i = Insights::default();
        i.record_at(100, "GPTBot", true, None, Action::Blocked, "/a");
        i.record_at(100, "GPTBot", true, None, Action::Blocked, "/a");
        i.record_at(110, "Googlebot", false, Some(true), Action::Allowed, "/b");
        i.record_at(123, "GPTBot", true, None, Action::Blocked, "/c");
        let v = i.last_24h_at(123, 10);
        assert_eq!(v["crawlers"][0]["crawler"], "GPTBot");
        assert_eq!(v["crawlers"][0]["blocked"], 3);
        assert_eq!(
            v["paths"][0],
            json!({"crawler": "GPTBot", "path": "/a", "requests": 2})
        );
        // Hour 100 falls out of the window at 124.
        let v = i.last_24h_at(124, 10);
        assert_eq!(v["crawlers"][0]["crawler"], "GPTBot");
        assert_eq!(v["crawlers"][0]["blocked"], 1);
        assert_eq!(v["paths"].as_array().unwrap().len(), 2);
        let mut out = String::new();
        i.render(&mut out);
        assert!(out.contains(
            "tagproxy_crawler_requests_total{crawler=\"GPTBot\",ai=\"true\",verified=\"n/a\",action=\"blocked\"} 3\n"
        ));
        assert!(out.contains(
            "tagproxy_crawler_requests_total{crawler=\"Googlebot\",ai=\"false\",verified=\"true\",action=\"allowed\"} 1\n"
        ));
    }

    #[test]
    fn names_and_paths_are_bounded() {
        let i = Insights::default();
        for n in 0..MAX_CRAWLERS + 5 {
            i.record_at(
                1,
                &format!("bot{n}"),
                false,
                None,
                Action::Allowed,
                &format!("/{n}"),
            );
        }
        let state = i.state.lock().unwrap();
        assert_eq!(state.totals.len(), MAX_CRAWLERS + 1);
        assert!(state.totals.keys().any(|(c, _, _, _)| c == "other"));
    }
}
