use super::*;

const CHROME_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// Real browsers, including in-app browsers: never bots.
const BROWSERS: &[&str] = &[
    CHROME_WIN,
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/133.0 Mobile/15E148 Safari/605.1.15",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36 EdgA/131.0.0.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 OPR/116.0.0.0",
    "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/469.0.0.43.107;FBBV/610178823;FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS;FBSV/17.5;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/611766823]",
    "Mozilla/5.0 (Linux; Android 13; SM-A536B Build/TP1A.220624.014; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.144 Mobile Safari/537.36 Instagram 312.1.0.34.111 Android (33/13; 450dpi; 1080x2190; samsung; SM-A536B; a53x; s5e8825; en_US; 548323757)",
];

/// Crawlers that are bots but not AI crawlers, with the layer that catches them.
const CRAWLERS: &[(&str, &str)] = &[
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", REASON_LISTED),
    ("Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.69 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", REASON_LISTED),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", REASON_LISTED),
    ("DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)", REASON_LISTED),
    ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", REASON_LISTED),
    ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", REASON_LISTED),
    ("Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)", REASON_LISTED),
    ("Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)", REASON_LISTED),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.1.1 Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)", REASON_LISTED),
    ("curl/8.5.0", REASON_LISTED),
    ("python-requests/2.32.3", REASON_LISTED),
    ("Go-http-client/1.1", REASON_LISTED),
    ("Go-http-client/2.0", REASON_LISTED),
    ("Wget/1.21.4", REASON_LISTED),
    // Unknown to the list: woothee's generic rule catches it.
    ("Mozilla/5.0 (compatible; AcmeInventoryBot/0.9; +https://acme.example/bot)", REASON_WOOTHEE),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36", REASON_LISTED),
];

/// AI crawlers: bots with `ai = true`.
const AI_CRAWLERS: &[&str] = &[
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; ChatGPT-User/1.0; +https://openai.com/bot",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; OAI-SearchBot/1.0; +https://openai.com/searchbot",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)",
    "Claude-User (claude-code/1.0.3; +https://support.anthropic.com/)",
    "CCBot/2.0 (https://commoncrawl.org/faq/)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; PerplexityBot/1.0; +https://perplexity.ai/perplexitybot)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Perplexity-User/1.0; +https://perplexity.ai/perplexity-user)",
    "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 (compatible; Bytespider; spider-feedback@bytedance.com)",
    "meta-externalagent/1.1 (+https://developers.facebook.com/docs/sharing/webmasters/crawler)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Amazonbot/0.1; +https://developer.amazon.com/support/amazonbot) Chrome/119.0.6045.214 Safari/537.36",
    "Mozilla/5.0 (compatible; Google-Extended)",
    "Mozilla/5.0 (compatible; Applebot-Extended/0.1)",
    "Mozilla/5.0 (compatible; YouBot/1.0; +https://about.you.com/youbot/)",
    "Mozilla/5.0 (compatible; DuckAssistBot/1.2; +http://duckduckgo.com/duckassistbot.html)",
    "Mozilla/5.0 (compatible; Diffbot/0.1; +http://www.diffbot.com)",
    "gptbot/1.0 lower-case still counts",
];

fn detector() -> BotDetector {
    BotDetector::new(&[])
}

#[test]
fn browsers_are_not_bots() {
    let d = detector();
    for ua in BROWSERS {
        assert_eq!(d.check(ua), Verdict::HUMAN, "{ua}");
        assert_eq!(d.check(ua).kind(), None);
    }
}

#[test]
fn crawlers_are_bots_but_not_ai() {
    let d = detector();
    for (ua, reason) in CRAWLERS {
        let v = d.check(ua);
        assert!(v.bot && !v.ai, "{ua}: {v:?}");
        assert_eq!(v.reason, Some(*reason), "{ua}");
    }
}

#[test]
fn ai_crawlers_are_ai_bots() {
    let d = detector();
    for ua in AI_CRAWLERS {
        let v = d.check(ua);
        let want = Verdict {
            bot: true,
            ai: true,
            reason: Some(REASON_AI),
        };
        assert_eq!(v, want, "{ua}");
        assert_eq!(v.kind(), Some(BotKind::AiCrawler));
    }
}

#[test]
fn woothee_alone_misses_ai_crawlers() {
    // Why layer 2 exists. woothee 0.13 calls GPTBot or ClaudeBot crawlers
    // only through its generic "…bot/" rule, never AI crawlers, and these it
    // takes for a phone's Safari, for Chrome, or for nothing at all.
    let parser = woothee::parser::Parser::new();
    for ua in [
        AI_CRAWLERS[4],
        AI_CRAWLERS[7],
        AI_CRAWLERS[8],
        AI_CRAWLERS[10],
    ] {
        let category = parser.parse(ua).map(|r| r.category);
        assert_ne!(category, Some("crawler"), "{ua}");
    }
}

#[test]
fn missing_user_agent_is_a_bot() {
    let d = detector();
    for ua in ["", "   ", "-", "\t"] {
        let v = d.check(ua);
        assert_eq!(v, Verdict::bot(REASON_EMPTY), "{ua:?}");
        assert_eq!(v.kind(), Some(BotKind::Crawler));
    }
}

#[test]
fn ai_tokens_match_whole_words_only() {
    let d = detector();
    // `Code` is an ai.robots.txt token (VS Code's fetches): as a word it
    // matches, inside another word it must not.
    let vscode = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Code/1.95.3 Chrome/128.0.6613.186 Electron/32.2.1 Safari/537.36";
    assert!(d.check(vscode).ai);
    let barcode = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36 BarcodeScanner/4.2";
    assert_eq!(d.check(barcode), Verdict::HUMAN);
    // A token glued to other letters is not that token.
    assert!(!d.check("Mozilla/5.0 (compatible; NotGPTBotReally)").ai);
}

#[test]
fn not_ai_tokens_are_excluded() {
    let d = detector();
    for token in NOT_AI {
        assert!(
            !d.ai_tokens().iter().any(|t| t.eq_ignore_ascii_case(token)),
            "{token}"
        );
    }
    // Upstream lists them, so the exclusion does something.
    let upstream: Vec<&str> = entries(AI_ROBOTS).collect();
    assert!(upstream.contains(&"facebookexternalhit"));
    assert!(upstream.contains(&"Applebot"));
}

#[test]
fn ai_list_is_the_real_one() {
    let upstream: Vec<&str> = entries(AI_ROBOTS).collect();
    assert!(upstream.len() >= 150, "{} tokens", upstream.len());
    let d = detector();
    for token in [
        "GPTBot",
        "ClaudeBot",
        "CCBot",
        "Bytespider",
        "PerplexityBot",
        "OAI-SearchBot",
        "Google-Extended",
        "Amazonbot",
        "Applebot-Extended",
        "meta-externalagent",
    ] {
        assert!(d.ai_tokens().iter().any(|t| t == token), "{token}");
    }
    // Case-insensitive duplicates (meta-externalagent / Meta-ExternalAgent)
    // appear once.
    let mut lower: Vec<String> = d
        .ai_tokens()
        .iter()
        .map(|t| t.to_ascii_lowercase())
        .collect();
    lower.sort();
    let n = lower.len();
    lower.dedup();
    assert_eq!(lower.len(), n);
}

#[test]
fn crawler_list_compiles_with_at_most_a_handful_skipped() {
    let d = detector();
    let total = entries(CRAWLER_USER_AGENTS).count();
    assert!(total >= 1_000, "{total} patterns");
    let skipped = d.skipped_patterns();
    assert!(skipped.len() <= 5, "skipped: {skipped:?}");
}

#[test]
fn patterns_the_regex_crate_rejects_are_skipped() {
    // Look-around and back-references are Python/JS regex features that the
    // regex crate does not have; an unbalanced group is just broken.
    let patterns: Vec<String> = ["^curl", "(?<!x)Bot", "foo(", "(a)\\1", "Wget/"]
        .map(String::from)
        .to_vec();
    let (set, skipped) = lists::compile_patterns(&patterns);
    assert_eq!(skipped, vec!["(?<!x)Bot", "foo(", "(a)\\1"]);
    assert_eq!(set.len(), 2);
    assert!(set.is_match("curl/8.5.0") && set.is_match("Wget/1.21"));
    assert!(!set.is_match("Mozilla/5.0"));
}

#[test]
fn extra_user_agents_are_case_insensitive_substrings() {
    let extra = vec![
        "InternalMonitor".to_string(),
        "  ".to_string(),
        String::new(),
    ];
    let d = BotDetector::new(&extra);
    let v = d.check("Mozilla/5.0 (compatible; internalmonitor/2.0; ops@example.com)");
    assert_eq!(v, Verdict::bot(REASON_EXTRA));
    assert_eq!(v.kind(), Some(BotKind::Custom));
    // Blank entries match nothing (they would otherwise match everyone).
    assert_eq!(d.check(CHROME_WIN), Verdict::HUMAN);
    // A detector without the entry does not know it.
    assert!(
        !detector()
            .check("Mozilla/5.0 (compatible; internalmonitor/2.0; ops@example.com)")
            .bot
    );
    // AI crawlers stay AI crawlers whatever the extras say.
    let d = BotDetector::new(&["GPTBot".to_string()]);
    assert!(d.check(AI_CRAWLERS[0]).ai);
}

#[test]
fn reasons_map_to_kinds() {
    assert_eq!(Verdict::bot(REASON_WOOTHEE).kind(), Some(BotKind::Crawler));
    assert_eq!(Verdict::bot(REASON_LISTED).kind(), Some(BotKind::Listed));
    assert_eq!(Verdict::bot(REASON_EXTRA).kind(), Some(BotKind::Custom));
    assert_eq!(Verdict::HUMAN.kind(), None);
}

#[test]
fn cache_agrees_with_the_uncached_decision() {
    let d = BotDetector::new(&["InternalMonitor".to_string()]);
    let all = BROWSERS
        .iter()
        .copied()
        .chain(CRAWLERS.iter().map(|(ua, _)| *ua))
        .chain(AI_CRAWLERS.iter().copied());
    for ua in all {
        let first = d.check(ua);
        assert_eq!(first, d.check(ua), "{ua}");
        assert_eq!(first, d.check_uncached(ua), "{ua}");
    }
    assert!(d.cache_len() > 0);

    // Bounded: a flood of distinct User-Agents never grows it past the limit,
    // and verdicts stay right across a clear.
    for i in 0..(CACHE_LIMIT + 50) {
        let ua = format!("Mozilla/5.0 (Windows NT 10.0) Chrome/{i}.0 Safari/537.36");
        assert!(!d.check(&ua).bot);
        assert!(d.cache_len() <= CACHE_LIMIT);
    }
    assert!(d.check(AI_CRAWLERS[0]).ai);
    assert_eq!(d.check(CHROME_WIN), Verdict::HUMAN);

    // Long User-Agents are decided but not cached.
    let before = d.cache_len();
    let long = format!("{} {}", AI_CRAWLERS[0], "x".repeat(CACHE_MAX_UA_LEN));
    assert!(d.check(&long).ai);
    assert_eq!(d.cache_len(), before);
}

#[test]
fn robots_txt_section_disallows_every_ai_token() {
    let d = detector();
    let text = d.robots_txt_section();
    assert!(text.contains("User-agent: GPTBot\nDisallow: /\n"));
    assert!(text.contains("User-agent: ClaudeBot\nDisallow: /\n"));
    assert!(!text.contains("facebookexternalhit"));
    assert!(!text.contains("User-agent: Applebot\n"));
    assert_eq!(text.matches("User-agent: ").count(), d.ai_tokens().len());
    assert_eq!(text.matches("Disallow: /\n").count(), d.ai_tokens().len());
    for line in text.lines() {
        assert!(
            line.is_empty()
                || line.starts_with('#')
                || line.starts_with("User-agent: ")
                || line == "Disallow: /",
            "{line:?}"
        );
    }
}

#[test]
fn detector_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<BotDetector>();
    assert_send_sync::<Verdict>();
}

#[test]
fn concurrent_checks_agree() {
    let d = std::sync::Arc::new(detector());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let d = d.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    for ua in BROWSERS {
                        assert!(!d.check(ua).bot);
                    }
                    for ua in AI_CRAWLERS {
                        assert!(d.check(ua).ai);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}
