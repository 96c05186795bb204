//! Bots: no script and no deliveries for bots; AI crawlers blocked with 403
//! before the origin when asked, with a generated robots.txt section.

mod common;

use std::time::Duration;

use common::*;

const PAGE: &str = "<html><head><title>t</title></head><body>x</body></html>";

/// (user agent, is a bot)
const AGENTS: [(&str, &str, bool); 9] = [
    ("chrome", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", false),
    ("firefox", "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0", false),
    ("iphone", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1", false),
    ("googlebot", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", true),
    ("bingbot", "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", true),
    ("gptbot", "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)", true),
    ("claudebot", "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)", true),
    ("curl", "curl/8.5.0", true),
    ("custom", "Mozilla/5.0 (X11; Linux x86_64) InternalMonitor/3.1 Chrome/131.0.0.0", true),
];

#[tokio::test]
async fn bots_get_no_script_and_their_events_are_dropped() {
    let dest = Destination::start().await;
    let origin = Origin::page("text/html", PAGE).await;
    let hook = format!(
        "type = \"http\"\n[settings]\nurl = \"{}/hook\"\n[automated]\ntrack = true\n",
        dest.url()
    );
    let proxy = Proxy::start_tools(
        origin.addr,
        "[bots]\nextra_user_agents = [\"internalmonitor\"]\n",
        &[("hook", hook)],
    )
    .await;
    for (name, ua, bot) in AGENTS {
        let page = client()
            .get(proxy.url("/"))
            .header("user-agent", ua)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            !page.contains(TAG),
            bot,
            "{name}: script injected only for people"
        );
        let resp = client()
            .post(proxy.url("/_tagproxy/t"))
            .header("content-type", "application/json")
            .header("user-agent", ua)
            .body(format!(
                r#"{{"type":"track","name":"{name}","page":{{"url":"https://shop.test/"}}}}"#
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{name}: bots are answered like anyone");
    }
    let people = AGENTS.iter().filter(|(_, _, bot)| !bot).count();
    dest.wait_for(people, Duration::from_secs(10)).await;
    proxy.settled().await;
    let mut got: Vec<String> = dest
        .requests()
        .iter()
        .map(|r| r.json()["name"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    assert_eq!(got, ["chrome", "firefox", "iphone"]);
    assert!(proxy.logs().contains("bot events dropped"));

    // Counted by reason, on the admin listener's /metrics.
    let metrics = proxy.metrics().await;
    let dropped = |reason: &str| -> u64 {
        let key = format!("tagproxy_bot_events_dropped_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .map_or(0, |n| n.parse().unwrap())
    };
    assert_eq!(dropped("ai-robots-txt"), 2, "{metrics}");
    assert_eq!(dropped("extra_user_agents"), 1, "{metrics}");
    let total: u64 = [
        "ai-robots-txt",
        "extra_user_agents",
        "crawler-user-agents",
        "woothee",
    ]
    .iter()
    .map(|r| dropped(r))
    .sum();
    assert_eq!(total, 6, "{metrics}");
    assert!(
        metrics.contains("tagproxy_events_received_total 9\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn ai_crawlers_are_blocked_before_the_origin() {
    let origin = Origin::start(|req| async move {
        if req.uri().path() == "/robots.txt" {
            return respond(404, &[("content-type", "text/plain")], "nope");
        }
        respond(200, &[("content-type", "text/html")], PAGE)
    })
    .await;
    let proxy = Proxy::start(origin.addr, "[bots]\nblock_ai_crawlers = true\n").await;
    for (name, ua, _) in AGENTS
        .iter()
        .filter(|(n, _, _)| *n == "gptbot" || *n == "claudebot")
    {
        let resp = client()
            .get(proxy.url("/article"))
            .header("user-agent", *ua)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{name}");
    }
    assert!(
        origin.seen().is_empty(),
        "the origin was never contacted: {:?}",
        origin.seen()
    );

    // Search crawlers and people still get through.
    let googlebot = AGENTS[3].1;
    let resp = client()
        .get(proxy.url("/article"))
        .header("user-agent", googlebot)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The origin has no robots.txt: tagproxy serves one for the AI crawlers.
    let robots = client().get(proxy.url("/robots.txt")).send().await.unwrap();
    assert_eq!(robots.status(), 200);
    let text = robots.text().await.unwrap();
    assert!(text.contains("User-agent: GPTBot\nDisallow: /"), "{text}");
    assert!(!text.contains("User-agent: Googlebot"), "{text}");
}

/// Issue 16: with `block_ai_crawlers`, an origin's own robots.txt keeps its
/// rules and gains the AI-crawler section, once: a blank line apart (a new
/// group, RFC 9309 §2.1), and not again when the file already carries it.
#[tokio::test]
async fn an_origin_robots_txt_gains_the_ai_section_once_and_blocking_is_off_by_default() {
    const OWN: &str = "User-agent: *\nDisallow: /admin";
    let origin = Origin::start(|req| async move {
        if req.uri().path() == "/robots.txt" {
            return respond(
                200,
                &[("content-type", "text/plain"), ("etag", "\"r1\"")],
                OWN,
            );
        }
        respond(200, &[("content-type", "text/html")], PAGE)
    })
    .await;
    let blocking = Proxy::start(origin.addr, "[bots]\nblock_ai_crawlers = true\n").await;
    let resp = client()
        .get(blocking.url("/robots.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("etag").is_none(), "the file changed");
    let text = resp.text().await.unwrap();
    let marker = "# AI crawlers (ai.robots.txt list), disallowed by tagproxy block_ai_crawlers\n";
    assert!(
        text.starts_with(&format!("{OWN}\n\n{marker}User-agent: ")),
        "{text}"
    );
    assert_eq!(text.matches(marker).count(), 1, "{text}");
    assert!(text.contains("User-agent: GPTBot\nDisallow: /\n"), "{text}");
    // An origin that already serves the section (a saved copy, or another
    // tagproxy in front) gets it once, not twice.
    let saved = text.clone();
    let origin2 = Origin::start(move |_req| {
        let saved = saved.clone();
        async move { respond(200, &[("content-type", "text/plain")], saved) }
    })
    .await;
    let again = Proxy::start(origin2.addr, "[bots]\nblock_ai_crawlers = true\n").await;
    assert_eq!(get_text(again.url("/robots.txt")).await, text);
    let open = Proxy::start(origin.addr, "").await;
    assert_eq!(get_text(open.url("/robots.txt")).await, OWN);
    let resp = client()
        .get(open.url("/x"))
        .header("user-agent", AGENTS[5].1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "no blocking unless block_ai_crawlers");
}
