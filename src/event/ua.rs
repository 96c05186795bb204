//! User-Agent parsing (browser and OS by woothee) with a verdict cache: a
//! site's traffic has few distinct user agents, and parsing is the most
//! expensive step of building an event.

use std::sync::Arc;

use dashmap::DashMap;
use serde_json::{json, Value};

/// Cached entries before the cache is cleared (bounded memory under UA spam).
const CACHE_LIMIT: usize = 10_000;

/// What we know about one User-Agent string.
#[derive(Debug)]
pub struct UserAgent {
    /// `system.device.user-agent` as Zaraz names it.
    pub json: Value,
    /// woothee's category is "crawler".
    pub crawler: bool,
}

pub struct UaParser {
    parser: woothee::parser::Parser,
    cache: DashMap<String, Arc<UserAgent>>,
}

impl Default for UaParser {
    fn default() -> Self {
        UaParser {
            parser: woothee::parser::Parser::new(),
            cache: DashMap::new(),
        }
    }
}

impl UaParser {
    pub fn parse(&self, ua: &str) -> Arc<UserAgent> {
        if let Some(hit) = self.cache.get(ua) {
            return hit.clone();
        }
        let parsed = Arc::new(self.parse_uncached(ua));
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(ua.to_string(), parsed.clone());
        parsed
    }

    fn parse_uncached(&self, ua: &str) -> UserAgent {
        let r = self.parser.parse(ua);
        let known = |s: &str| {
            if s == "UNKNOWN" {
                String::new()
            } else {
                s.to_string()
            }
        };
        let (name, version, os, os_version, category) = match &r {
            Some(r) => (
                known(r.name),
                known(r.version),
                known(r.os),
                known(&r.os_version),
                r.category.to_string(),
            ),
            None => Default::default(),
        };
        let (engine, engine_version) = engine(ua, &name);
        UserAgent {
            crawler: category == "crawler",
            json: json!({
                "ua": ua,
                "browser": {"name": name, "version": version},
                "engine": {"name": engine, "version": engine_version},
                "os": {"name": os, "version": os_version},
                "device": device(&category, ua),
                "cpu": cpu(ua),
            }),
        }
    }
}

/// Rendering engine from the browser family and its version token.
fn engine(ua: &str, browser: &str) -> (String, String) {
    let token_version = |token: &str| {
        ua.split(token)
            .nth(1)
            .map(|rest| {
                rest.chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.')
                    .collect::<String>()
            })
            .unwrap_or_default()
    };
    if ua.contains("Chrome/") || ua.contains("Chromium/") {
        ("Blink".into(), token_version("Chrome/"))
    } else if ua.contains("Gecko/") && ua.contains("Firefox/") {
        ("Gecko".into(), token_version("rv:"))
    } else if ua.contains("AppleWebKit/") {
        ("WebKit".into(), token_version("AppleWebKit/"))
    } else if ua.contains("Trident/") || browser == "Internet Explorer" {
        ("Trident".into(), token_version("Trident/"))
    } else {
        (String::new(), String::new())
    }
}

/// Device type: woothee's category in everyday words, tablets told apart.
fn device(category: &str, ua: &str) -> &'static str {
    match category {
        "pc" => "desktop",
        "smartphone"
            if ua.contains("iPad") || (ua.contains("Android") && !ua.contains("Mobile")) =>
        {
            "tablet"
        }
        "smartphone" | "mobilephone" => "mobile",
        "crawler" => "crawler",
        "appliance" => "appliance",
        _ => "",
    }
}

fn cpu(ua: &str) -> &'static str {
    if ua.contains("x86_64")
        || ua.contains("Win64; x64")
        || ua.contains("WOW64")
        || ua.contains("amd64")
    {
        "amd64"
    } else if ua.contains("aarch64") || ua.contains("arm64") || ua.contains("ARM64") {
        "arm64"
    } else if ua.contains("armv7") || ua.contains("armv8l") {
        "arm"
    } else if ua.contains("i686") || ua.contains("i386") {
        "ia32"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chrome_on_windows() {
        let p = UaParser::default();
        let ua = p.parse("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36");
        assert_eq!(ua.json["browser"]["name"], "Chrome");
        assert_eq!(ua.json["browser"]["version"], "131.0.0.0");
        assert_eq!(ua.json["os"]["name"], "Windows 10");
        assert_eq!(ua.json["engine"]["name"], "Blink");
        assert_eq!(ua.json["device"], "desktop");
        assert_eq!(ua.json["cpu"], "amd64");
        assert!(!ua.crawler);
    }

    #[test]
    fn iphone_safari_firefox_and_googlebot() {
        let p = UaParser::default();
        let ua = p.parse("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1");
        assert_eq!(ua.json["browser"]["name"], "Safari");
        assert_eq!(ua.json["os"]["name"], "iPhone");
        assert_eq!(ua.json["engine"]["name"], "WebKit");
        assert_eq!(ua.json["device"], "mobile");
        let ff = p.parse("Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0");
        assert_eq!(
            ff.json["engine"],
            json!({"name": "Gecko", "version": "132.0"})
        );
        let bot =
            p.parse("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)");
        assert!(bot.crawler);
        assert_eq!(p.parse("").json["browser"]["name"], "");
    }
}
