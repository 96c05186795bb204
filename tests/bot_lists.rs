//! Live bot-list updates (issue 16): `tagproxy bots update` replaces the
//! lists in `data_dir/bots/lists.json`, a bad source changes nothing, the
//! running server picks a good one up without a restart, `/metrics` shows
//! each list's version and age, and crawlers claiming a name with published
//! IP ranges are counted verified or not.
//!
//! Formats read: ai.robots.txt's robots.json
//! (<https://github.com/ai-robots-txt/ai.robots.txt/blob/main/robots.json>),
//! Google's crawler IP range files
//! (<https://developers.google.com/search/docs/crawling-indexing/verifying-googlebot>,
//! the same `{"creationTime", "prefixes": [{"ipv4Prefix"}]}` shape OpenAI
//! publishes at <https://openai.com/gptbot.json>). Every source here is a
//! file or a 127.0.0.1 mock: the tests never reach the internet.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const PAGE: &str = "<html><head><title>t</title></head><body>x</body></html>";
/// A User-Agent no compiled-in list calls an AI crawler.
const FRESH: &str = "Mozilla/5.0 (compatible; FreshAIFetcher/1.0; +https://fresh.example/bot)";
const GPTBOT: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)";

/// robots.json as ai.robots.txt publishes it: the compiled-in tokens plus
/// `extra`, each with its description object.
fn robots_json(extra: &str) -> String {
    let compiled = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bots/ai-robots.txt"),
    )
    .unwrap();
    let mut map = serde_json::Map::new();
    for token in compiled
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .chain([extra])
    {
        map.insert(
            token.to_string(),
            json!({"operator": "test", "respect": "Unclear at this time.", "function": "AI", "frequency": "x", "description": "x"}),
        );
    }
    Value::Object(map).to_string()
}

/// Runs `tagproxy bots <args> -c config`: (success, stdout, stderr).
fn bots(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(bin())
        .arg("bots")
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn stored(proxy: &Proxy) -> PathBuf {
    proxy.dir.path().join("data/bots/lists.json")
}

/// The `version="…"` an update printed for `list`.
fn printed_version(stdout: &str, list: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{list}: ")))
        .unwrap_or_else(|| panic!("no {list} in {stdout}"));
    line.split("version ").nth(1).unwrap()[..12].to_string()
}

/// Waits until `/metrics` has a line starting with `needle` (the server
/// polls the stored file every 2 s); fails after 20 s.
async fn wait_metrics(proxy: &Proxy, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = proxy.metrics().await;
        if m.lines().any(|l| l.starts_with(needle)) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle} in\n{m}\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status_of(proxy: &Proxy, ua: &str) -> u16 {
    client()
        .get(proxy.url("/article"))
        .header("user-agent", ua)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A token with `events:read`, for `GET /admin/bots`.
fn events_token(config: &Path) -> String {
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
        .arg(config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string()
}

async fn admin_bots(proxy: &Proxy, token: &str) -> Value {
    client()
        .get(format!("http://{}/admin/bots", proxy.admin))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn metric(m: &str, line_start: &str) -> Option<f64> {
    m.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .map(|v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn a_list_update_takes_effect_on_the_running_server_and_a_bad_one_changes_nothing() {
    let origin = Origin::page("text/html", PAGE).await;
    let proxy = Proxy::start(origin.addr, "[bots]\nblock_ai_crawlers = true\n").await;
    let m = proxy.metrics().await;
    assert!(
        m.contains("tagproxy_bot_lists_info{list=\"ai_crawlers\",version=\"")
            && m.contains("source=\"compiled-in\""),
        "{m}"
    );
    assert_eq!(status_of(&proxy, FRESH).await, 200, "not an AI crawler yet");

    // Bad sources: each fails with its reason and writes nothing.
    let dir = proxy.dir.path();
    for (name, text, why) in [
        ("garbage.json", "<html>not json</html>".to_string(), "not JSON"),
        ("empty.json", "{}".to_string(), "not a bot list"),
        (
            "badregex.json",
            r#"{"format": "tagproxy-bot-lists/1", "crawlers": ["Googlebot", "(unclosed"]}"#.to_string(),
            "does not compile",
        ),
        (
            "newline.json",
            json!({"format": "tagproxy-bot-lists/1", "ai_crawlers": ["FreshAIFetcher\nDisallow: /"]}).to_string(),
            "control character",
        ),
        (
            "tiny.json",
            r#"{"FreshAIFetcher": {}}"#.to_string(),
            "under half",
        ),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let (ok, _, err) = bots(&proxy.config, &["update", "--from", path.to_str().unwrap()]);
        assert!(!ok, "{name} accepted");
        assert!(err.contains(why), "{name}: {err}");
        assert!(!stored(&proxy).exists(), "{name} wrote the lists");
    }
    let (ok, _, err) = bots(
        &proxy.config,
        &["update", "--from", "/nonexistent/robots.json"],
    );
    assert!(!ok && err.contains("/nonexistent/robots.json"), "{err}");

    // A good robots.json with one new token.
    let good = dir.join("robots.json");
    std::fs::write(&good, robots_json("FreshAIFetcher")).unwrap();
    let (ok, out, err) = bots(&proxy.config, &["update", "--from", good.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let version = printed_version(&out, "ai_crawlers");
    assert!(
        out.lines().all(|l| !l.starts_with("crawlers: ")),
        "only the AI list changes: {out}"
    );
    let m = wait_metrics(
        &proxy,
        &format!(
            "tagproxy_bot_lists_info{{list=\"ai_crawlers\",version=\"{version}\",source=\"{}\"",
            good.canonicalize().unwrap().display()
        ),
    )
    .await;
    // The crawler list is still the compiled-in one; the AI list was
    // fetched just now, the compiled-in one days ago.
    assert!(
        m.lines().any(
            |l| l.starts_with("tagproxy_bot_lists_info{list=\"crawlers\",")
                && l.contains("source=\"compiled-in\"")
        ),
        "{m}"
    );
    let age = metric(&m, "tagproxy_bot_lists_age_seconds{list=\"ai_crawlers\"} ").unwrap();
    let compiled_age = metric(&m, "tagproxy_bot_lists_age_seconds{list=\"crawlers\"} ").unwrap();
    assert!(age < compiled_age, "{m}");
    assert!(
        metric(&m, "tagproxy_bot_lists_entries{list=\"ai_crawlers\"} ").unwrap() > 100.0,
        "{m}"
    );
    assert!(
        proxy.logs().contains("bot list in force"),
        "{}",
        proxy.logs()
    );

    // Without a restart, the new token is an AI crawler: 403, by name.
    assert_eq!(status_of(&proxy, FRESH).await, 403);
    assert_eq!(status_of(&proxy, FRESH).await, 403);
    let robots = get_text(proxy.url("/robots.txt")).await;
    assert!(
        robots.contains("User-agent: FreshAIFetcher\nDisallow: /"),
        "{robots}"
    );
    let token = events_token(&proxy.config);
    let v = admin_bots(&proxy, &token).await;
    let row = v["crawlers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["crawler"] == "FreshAIFetcher" && r["ai"] == true)
        .unwrap_or_else(|| panic!("{v}"))
        .clone();
    assert_eq!(row["blocked"], 2, "{v}");
    assert_eq!(row["verified"], Value::Null, "no ranges known: {v}");
    let ai_list = &v["lists"][0];
    assert_eq!(ai_list["list"], "ai_crawlers", "{v}");
    assert_eq!(ai_list["version"], version.as_str(), "{v}");
    assert_eq!(v["lists"][1]["source"], "compiled-in", "{v}");

    // A bad update now leaves the good lists as they are.
    let before = std::fs::read(stored(&proxy)).unwrap();
    let (ok, _, _) = bots(
        &proxy.config,
        &[
            "update",
            "--from",
            dir.join("badregex.json").to_str().unwrap(),
        ],
    );
    assert!(!ok);
    assert_eq!(std::fs::read(stored(&proxy)).unwrap(), before);
    assert_eq!(status_of(&proxy, FRESH).await, 403);

    // `status` shows what is in force.
    let (ok, out, _) = bots(&proxy.config, &["status"]);
    assert!(ok && out.contains(&format!("version {version}")), "{out}");
}

// Multi-threaded: `bots update` blocks this thread while the mock
// publisher answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_from_a_url_and_crawlers_are_verified_by_their_published_ip_ranges() {
    // The mock publisher: robots.json and two GPTBot range files, one
    // without 127.0.0.1 (so the local client is an impostor) and one with.
    let robots = robots_json("FreshAIFetcher");
    let publisher = Origin::start(move |req| {
        let robots = robots.clone();
        async move {
            let range = |prefix: &str| {
                json!({"creationTime": "2026-11-30T22:00:00.000000", "prefixes": [{"ipv6Prefix": "2001:db8::/32"}, {"ipv4Prefix": prefix}]}).to_string()
            };
            match req.uri().path() {
                "/robots.json" => respond(200, &[("content-type", "application/json"), ("last-modified", "Mon, 30 Nov 2026 10:00:00 GMT")], robots),
                "/gptbot-elsewhere.json" => respond(200, &[("content-type", "application/json")], range("10.0.0.0/8")),
                "/gptbot-local.json" => respond(200, &[("content-type", "application/json")], range("127.0.0.0/8")),
                _ => respond(404, &[], "not found"),
            }
        }
    })
    .await;
    let url = |path: &str| format!("http://{}{path}", publisher.addr);
    let origin = Origin::page("text/html", PAGE).await;
    let proxy = Proxy::start(origin.addr, "").await;

    // A URL that answers 404 fails the update and writes nothing.
    let (ok, _, err) = bots(&proxy.config, &["update", "--from", &url("/missing.json")]);
    assert!(!ok && err.contains("404"), "{err}");
    assert!(!stored(&proxy).exists());

    let (ok, out, err) = bots(
        &proxy.config,
        &[
            "update",
            "--from",
            &url("/robots.json"),
            "--ranges",
            &format!("GPTBot={}", url("/gptbot-elsewhere.json")),
        ],
    );
    assert!(ok, "{out}{err}");
    let ai = printed_version(&out, "ai_crawlers");
    let ranges = printed_version(&out, "verified_crawlers");
    let m = wait_metrics(
        &proxy,
        &format!("tagproxy_bot_lists_info{{list=\"verified_crawlers\",version=\"{ranges}\",source=\"GPTBot={}\",source_version=\"GPTBot=2026-11-30T22:00:00.000000\"}} 1", url("/gptbot-elsewhere.json")),
    )
    .await;
    assert!(
        m.contains(&format!("tagproxy_bot_lists_info{{list=\"ai_crawlers\",version=\"{ai}\",source=\"{}\",source_version=\"Mon, 30 Nov 2026 10:00:00 GMT\"}} 1", url("/robots.json"))),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "tagproxy_bot_lists_entries{list=\"verified_crawlers\"} "
        ),
        Some(2.0),
        "{m}"
    );
    let fetched: Vec<String> = publisher.seen().iter().map(|s| s.path.clone()).collect();
    assert!(fetched.contains(&"/robots.json".to_string()), "{fetched:?}");

    // From 127.0.0.1, outside GPTBot's published ranges: unverified, still
    // a bot (its page gets no script) and still the AI crawler it claims.
    let page = client()
        .get(proxy.url("/a"))
        .header("user-agent", GPTBOT)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        !page.text().await.unwrap().contains(TAG),
        "an impostor is a bot too"
    );
    assert_eq!(
        status_of(&proxy, FRESH).await,
        200,
        "a new AI crawler, allowed without block_ai_crawlers"
    );

    // Ranges that hold 127.0.0.1: the same request is verified.
    let (ok, out, err) = bots(
        &proxy.config,
        &[
            "update",
            "--ranges",
            &format!("GPTBot={}", url("/gptbot-local.json")),
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(
        !out.contains("ai_crawlers"),
        "only the ranges change: {out}"
    );
    let ranges = printed_version(&out, "verified_crawlers");
    wait_metrics(
        &proxy,
        &format!("tagproxy_bot_lists_info{{list=\"verified_crawlers\",version=\"{ranges}\""),
    )
    .await;
    assert_eq!(status_of(&proxy, GPTBOT).await, 200);
    // A crawler without published ranges is neither.
    assert_eq!(
        status_of(
            &proxy,
            "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)"
        )
        .await,
        200
    );

    let m = proxy.metrics().await;
    for line in [
        "tagproxy_crawler_requests_total{crawler=\"GPTBot\",ai=\"true\",verified=\"false\",action=\"allowed\"} 1\n",
        "tagproxy_crawler_requests_total{crawler=\"GPTBot\",ai=\"true\",verified=\"true\",action=\"allowed\"} 1\n",
        "tagproxy_crawler_requests_total{crawler=\"FreshAIFetcher\",ai=\"true\",verified=\"n/a\",action=\"allowed\"} 1\n",
        "tagproxy_crawler_requests_total{crawler=\"AhrefsBot\",ai=\"false\",verified=\"n/a\",action=\"allowed\"} 1\n",
    ] {
        assert!(m.contains(line), "{line} in {m}");
    }
    let token = events_token(&proxy.config);
    let v = admin_bots(&proxy, &token).await;
    let gpt: Vec<&Value> = v["crawlers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["crawler"] == "GPTBot")
        .collect();
    assert_eq!(
        gpt,
        [
            &json!({"crawler": "GPTBot", "ai": true, "verified": false, "allowed": 1, "blocked": 0, "requests": 1}),
            &json!({"crawler": "GPTBot", "ai": true, "verified": true, "allowed": 1, "blocked": 0, "requests": 1}),
        ],
        "{v}"
    );

    // Rollback puts the previous lists (GPTBot elsewhere) back.
    let (ok, out, err) = bots(&proxy.config, &["rollback"]);
    assert!(ok, "{out}{err}");
    wait_metrics(
        &proxy,
        &format!(
            "tagproxy_bot_lists_info{{list=\"verified_crawlers\",version=\"{}\"",
            printed_version(&out, "verified_crawlers")
        ),
    )
    .await;
    assert_eq!(status_of(&proxy, GPTBOT).await, 200);
    let m = proxy.metrics().await;
    assert!(
        m.contains("tagproxy_crawler_requests_total{crawler=\"GPTBot\",ai=\"true\",verified=\"false\",action=\"allowed\"} 2\n"),
        "{m}"
    );
}

#[tokio::test]
async fn a_corrupt_stored_file_means_the_compiled_in_lists() {
    let origin = Origin::page("text/html", PAGE).await;
    let text = format!(
        "[server]\n{LISTEN_ANY}\nupstream = \"http://{}\"\n[bots]\nblock_ai_crawlers = true\n",
        origin.addr
    );
    let (dir, path) = write_config(&text);
    let bots_dir = dir.path().join("data/bots");
    std::fs::create_dir_all(&bots_dir).unwrap();
    std::fs::write(
        bots_dir.join("lists.json"),
        "{\"format\": \"tagproxy-bot-lists/1\", \"ai_crawlers\": [",
    )
    .unwrap();
    let proxy = Proxy::spawn(dir, path, &[]).await;
    let logs = proxy.wait_log("the compiled-in lists are in force").await;
    assert!(logs.contains("lists.json"), "{logs}");
    let m = proxy.metrics().await;
    assert!(
        m.lines().any(
            |l| l.starts_with("tagproxy_bot_lists_info{list=\"ai_crawlers\",")
                && l.contains("source=\"compiled-in\"")
        ),
        "{m}"
    );
    assert_eq!(
        status_of(&proxy, GPTBOT).await,
        403,
        "compiled-in AI list in force"
    );
}
