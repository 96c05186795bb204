//! The bot score (issue 16): clients that claim to be a browser but send
//! headers no browser of that kind sends (or leave out what every one
//! sends over https) get no script and no deliveries, while real browsers'
//! header sets (fixtures/browser-headers.json, from the browsers' documented
//! behaviour) do; `system.device.bot_score` is there for triggers; with
//! `block_ai_crawlers` a disguised crawler is refused like a named one.
//! Over https means `X-Forwarded-Proto: https` from a trusted proxy
//! (127.0.0.1 is trusted by default), as behind a TLS-terminating proxy.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);
const PAGE: &str = "<!doctype html><html><head><title>Shop</title></head><body>hi</body></html>";
const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36";
const FIREFOX: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";

/// Header sets of clients that pretend to be browsers; each scores below
/// the default threshold (30).
fn disguised() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    let https = ("x-forwarded-proto", "https");
    vec![
        (
            "Chrome User-Agent, headless brand in Sec-CH-UA",
            vec![
                ("user-agent", CHROME),
                (
                    "sec-ch-ua",
                    r#""HeadlessChrome";v="119", "Chromium";v="119""#,
                ),
                ("accept-language", "en-US"),
            ],
        ),
        (
            "Chrome User-Agent and Accept-Language only, over https",
            vec![
                ("user-agent", CHROME),
                ("accept-language", "en-US,en;q=0.9"),
                https,
            ],
        ),
        (
            "Firefox User-Agent with Chromium client hints, over https",
            vec![
                ("user-agent", FIREFOX),
                ("sec-ch-ua", r#""Chromium";v="131""#),
                ("accept-language", "en-US"),
                https,
            ],
        ),
        (
            "Windows Chrome User-Agent, Linux client hints, over https",
            vec![
                ("user-agent", CHROME),
                (
                    "sec-ch-ua",
                    r#""Chromium";v="119", "Google Chrome";v="119""#,
                ),
                ("sec-ch-ua-platform", "\"Linux\""),
                ("accept-language", "en-US"),
                https,
            ],
        ),
    ]
}

/// A corpus entry's headers (fixtures/browser-headers.json), over https.
fn corpus(name: &str, kind: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/browser-headers.json"),
    )
    .unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let e = doc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name && e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {name} {kind}"));
    let mut h: Vec<(String, String)> = e["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    h.push(("x-forwarded-proto".into(), "https".into()));
    h
}

fn with(
    mut req: reqwest::RequestBuilder,
    headers: &[(impl AsRef<str>, impl AsRef<str>)],
) -> reqwest::RequestBuilder {
    for (k, v) in headers {
        req = req.header(k.as_ref(), v.as_ref());
    }
    req
}

async fn page(proxy: &Proxy, headers: &[(impl AsRef<str>, impl AsRef<str>)]) -> (u16, String) {
    let resp = with(client().get(proxy.url("/")), headers)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn track(proxy: &Proxy, headers: &[(impl AsRef<str>, impl AsRef<str>)], name: &str) -> Value {
    let body = json!([{"type": "track", "name": name,
        "page": {"url": "https://shop.example.com/", "title": "Shop"}}]);
    let resp = with(client().post(proxy.url("/_tagproxy/t")), headers)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn hook(dest: &Destination) -> (&'static str, String) {
    (
        "hook",
        format!(
            "type = \"http\"\n[settings]\nurl = \"{}/hook\"\n[automated]\ntrack = true\n",
            dest.url()
        ),
    )
}

#[tokio::test]
async fn disguised_crawlers_get_no_script_and_no_deliveries() {
    let origin = Origin::page("text/html; charset=utf-8", PAGE).await;
    let dest = Destination::start().await;
    let proxy = Proxy::start_tools(origin.addr, "", &[hook(&dest)]).await;

    for (what, headers) in disguised() {
        let (status, html) = page(&proxy, &headers).await;
        assert_eq!(status, 200, "{what}");
        assert_eq!(html, PAGE, "{what}: no script");
        track(&proxy, &headers, "from_a_bot").await;
    }
    // A real Chrome: its page gets the script, it loads it, its event is
    // delivered; once it is, the bots' would have been too.
    let nav = corpus("Chrome 131 Windows", "navigation");
    let (_, html) = page(&proxy, &nav).await;
    assert!(html.contains(TAG), "{html}");
    let fetch = corpus("Chrome 131 Windows", "collector");
    let script = with(client().get(proxy.url("/_tagproxy/s.js")), &fetch)
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    track(&proxy, &fetch, "from_a_browser").await;
    let got = dest.wait_for(1, WAIT).await;
    // The sentinel goes last, through the same queue.
    track(&proxy, &fetch, "sentinel").await;
    let got = if got.len() < 2 {
        dest.wait_for(2, WAIT).await
    } else {
        got
    };
    let names: Vec<String> = got
        .iter()
        .map(|r| {
            r.json()["client"]["__zarazTrack"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    assert_eq!(names, ["from_a_browser", "sentinel"], "{got:#?}");
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("tagproxy_bot_events_dropped_total{reason=\"missing_fetch_metadata\"} 1")
            || metrics.contains("reason=\"headless_brand\""),
        "{metrics}"
    );
}

/// `system.device.bot_score` is a number triggers compare: with
/// `skip_events = false` a bot's events are processed, and a trigger can
/// send them elsewhere.
#[tokio::test]
async fn triggers_see_the_bot_score() {
    let dest = Destination::start().await;
    let d = dest.url();
    let tool = format!(
        r#"type = "http"

[[actions]]
name = "bots"
kind = "request"
firing = ["automated"]
[actions.fields]
url = "{d}/bot"
body = {{ score = "{{{{ system.device.bot_score }}}}" }}

[[actions]]
name = "humans"
kind = "request"
firing = ["human"]
[actions.fields]
url = "{d}/human"
body = {{ score = "{{{{ system.device.bot_score }}}}" }}
"#
    );
    let extra = r#"[bots]
skip_events = false

[triggers.automated]
rules = [ { match = "{{ system.device.bot_score }}", op = "less_than", value = 30 } ]

[triggers.human]
rules = [ { match = "{{ system.device.bot_score }}", op = "greater_than_or_equal", value = 30 } ]
"#;
    let proxy = Proxy::start_tools("127.0.0.1:9".parse().unwrap(), extra, &[("t", tool)]).await;
    let (_, bot) = &disguised()[1];
    track(&proxy, bot, "x").await;
    let got = dest.wait_for(1, WAIT).await;
    assert_eq!(got[0].path(), "/bot", "{got:#?}");
    // No fetch metadata, no client hints (over https), no script load.
    assert_eq!(got[0].json()["score"], 2, "{:?}", got[0].json());
    let human = corpus("Firefox 133 Windows", "collector");
    client()
        .get(proxy.url("/_tagproxy/s.js"))
        .header(
            "user-agent",
            &human.iter().find(|(k, _)| k == "user-agent").unwrap().1,
        )
        .send()
        .await
        .unwrap();
    track(&proxy, &human, "y").await;
    let got = dest.wait_for(2, WAIT).await;
    assert_eq!(got[1].path(), "/human", "{got:#?}");
    assert_eq!(got[1].json()["score"], 99, "{:?}", got[1].json());
}

/// With `block_ai_crawlers`, named AI crawlers and disguised ones get 403;
/// a real browser's request goes through.
#[tokio::test]
async fn block_ai_crawlers_refuses_disguised_crawlers_too() {
    let origin = Origin::page("text/html; charset=utf-8", PAGE).await;
    let proxy = Proxy::start(origin.addr, "[bots]\nblock_ai_crawlers = true\n").await;
    for (what, headers) in disguised() {
        assert_eq!(page(&proxy, &headers).await.0, 403, "{what}");
    }
    let gpt = [("user-agent", "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)")];
    assert_eq!(page(&proxy, &gpt).await.0, 403);
    for name in [
        "Chrome 131 Windows",
        "Safari 18.1 iPhone",
        "Firefox 133 Android",
    ] {
        let (status, html) = page(&proxy, &corpus(name, "navigation")).await;
        assert_eq!(status, 200, "{name}");
        assert!(html.contains(TAG), "{name}: {html}");
    }
}

/// Real headless Chromium is flagged only when it says what it is: with its
/// own User-Agent (`HeadlessChrome/…`) its page has no script; presenting a
/// desktop Chrome User-Agent (as the other browser tests do), its headers
/// are a browser's (fetch metadata, client hints, Accept-Language), it gets
/// the script and its events carry a human score.
#[tokio::test]
async fn headless_chromium_is_a_bot_only_when_it_says_so() {
    use common::browser::Browser;
    let origin = Origin::page("text/html; charset=utf-8", PAGE).await;
    let dest = Destination::start().await;
    let d = dest.url();
    let tool = format!(
        "type = \"http\"\n\n[[actions]]\nname = \"score\"\nkind = \"request\"\nfiring = [\"Pageview\"]\n[actions.fields]\nurl = \"{d}/score\"\nbody = {{ score = \"{{{{ system.device.bot_score }}}}\" }}\n"
    );
    let proxy = Proxy::start_tools(origin.addr, "", &[("t", tool)]).await;

    let headless = Browser::start_as(None).await;
    headless.client.goto(&proxy.url("/")).await.unwrap();
    let ua = headless.js("return navigator.userAgent;").await;
    assert!(ua.as_str().unwrap().contains("HeadlessChrome"), "{ua}");
    assert_eq!(
        headless.js("return typeof window.zaraz;").await,
        "undefined"
    );
    headless.close().await;

    let disguised = Browser::start().await;
    disguised.client.goto(&proxy.url("/")).await.unwrap();
    disguised
        .wait_js("!!(window.zaraz && zaraz._tp)", WAIT)
        .await;
    let got = dest.wait_for(1, WAIT).await;
    let score = got[0].json()["score"].as_u64().unwrap();
    // Over plain http only contradictions count; Chromium's brand version
    // is not the presented User-Agent's (version_mismatch).
    assert!((30..=99).contains(&score), "{score}");
    disguised.close().await;
}

/// `GET /admin/bots` (token `events:read`) and `/metrics` count a scripted
/// crawl by crawler name, AI or not, allowed or blocked, and by path.
#[tokio::test]
async fn admin_bots_counts_a_scripted_crawl_by_name() {
    let origin = Origin::page("text/html; charset=utf-8", PAGE).await;
    let proxy = Proxy::start(origin.addr, "[bots]\nblock_ai_crawlers = true\n").await;
    let gpt = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)";
    let ahrefs = "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)";
    for (ua, path, status) in [
        (gpt, "/a", 403),
        (gpt, "/a", 403),
        (gpt, "/a", 403),
        (gpt, "/b", 403),
        (ahrefs, "/a", 200),
        (ahrefs, "/c", 200),
    ] {
        let resp = client()
            .get(proxy.url(path))
            .header("user-agent", ua)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{ua} {path}");
    }
    assert_eq!(page(&proxy, &disguised()[1].1).await.0, 403);
    // A person is not a crawler.
    assert_eq!(
        page(&proxy, &corpus("Chrome 131 Windows", "navigation"))
            .await
            .0,
        200
    );

    let admin = format!("http://{}/admin/bots", proxy.admin);
    assert_eq!(client().get(&admin).send().await.unwrap().status(), 401);
    let out = std::process::Command::new(bin())
        .args([
            "token",
            "create",
            "--name",
            "ops",
            "--scopes",
            "events:read",
            "-c",
        ])
        .arg(&proxy.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let secret = String::from_utf8(out.stdout).unwrap();
    let secret = secret.lines().next().unwrap().trim().to_string();
    let resp = client()
        .get(&admin)
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["crawlers"],
        json!([
            {"crawler": "GPTBot", "ai": true, "verified": null, "allowed": 0, "blocked": 4, "requests": 4},
            {"crawler": "AhrefsBot", "ai": false, "verified": null, "allowed": 2, "blocked": 0, "requests": 2},
            {"crawler": "(disguised browser)", "ai": false, "verified": null, "allowed": 0, "blocked": 1, "requests": 1},
        ]),
        "{v}"
    );
    assert_eq!(
        v["paths"][0],
        json!({"crawler": "GPTBot", "path": "/a", "requests": 3}),
        "{v}"
    );
    let metrics = proxy.metrics().await;
    for line in [
        "tagproxy_crawler_requests_total{crawler=\"GPTBot\",ai=\"true\",verified=\"n/a\",action=\"blocked\"} 4\n",
        "tagproxy_crawler_requests_total{crawler=\"AhrefsBot\",ai=\"false\",verified=\"n/a\",action=\"allowed\"} 2\n",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}
