//! The trail (SPEC §10): every event's record from arrival to its last
//! delivery outcome, streamed by `GET /admin/events` (token with
//! `events:read`) and by the `{prefix}/debug` page; metrics and logs that
//! say what happened to events. Every test runs the real binary against
//! recording mock destinations.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt as _;
use serde_json::{json, Value};

const PAGE: &str =
    "<!doctype html><html><head><title>Trail</title></head><body><h1>Trail</h1></body></html>";
const HOOK_SECRET: &str = "hk-very-secret-value-1";
const DEBUG_KEY: &str = "letmein-debug";
const BOT_UA: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
/// The visitor refused the `ads` purpose.
const REFUSED_ADS: &str = "cf_consent=%7B%22ads%22%3Afalse%7D";

/// The destinations of the scenario: one that accepts, one that is down
/// (503), one that refuses (400).
struct Dests {
    ok: Destination,
    down: Destination,
    bad: Destination,
}

async fn dests() -> Dests {
    Dests {
        ok: Destination::start().await,
        down: Destination::with_script(Script {
            statuses: vec![503],
            ..Script::default()
        })
        .await,
        bad: Destination::with_script(Script {
            statuses: vec![400],
            ..Script::default()
        })
        .await,
    }
}

/// tagproxy with five tools: `ok` (pageviews and tracks, a secret header,
/// blocked by the `internal` trigger), `down`, `bad`, `ads` (needs the
/// `ads` purpose) and `old` (disabled).
async fn scenario(d: &Dests, origin: &Origin) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let tools = dir.path().join("tools");
    std::fs::create_dir(&tools).unwrap();
    let hook = |url: String, extra: &str| {
        format!("type = \"http\"\n{extra}\n[settings]\nurl = \"{url}/hook\"\n[automated]\npageview = true\ntrack = true\n")
    };
    std::fs::write(
        tools.join("ok.toml"),
        format!(
            "type = \"http\"\nblocking = [\"internal\"]\n[settings]\nurl = \"{}/hook\"\nheaders = {{ authorization = \"Bearer {{{{ $hook_key }}}}\" }}\n[automated]\npageview = true\ntrack = true\n",
            d.ok.url()
        ),
    )
    .unwrap();
    std::fs::write(tools.join("down.toml"), hook(d.down.url(), "")).unwrap();
    std::fs::write(tools.join("bad.toml"), hook(d.bad.url(), "")).unwrap();
    std::fs::write(
        tools.join("ads.toml"),
        hook(d.ok.url(), "purposes = [\"ads\"]"),
    )
    .unwrap();
    std::fs::write(tools.join("old.toml"), hook(d.ok.url(), "enabled = false")).unwrap();
    let config = format!(
        r#"[server]
{LISTEN_ANY}
upstream = "http://{}"
[settings]
debug_key = "{DEBUG_KEY}"
[delivery]
retry_base_ms = 600000
max_attempts = 5
[variables]
hook_key = {{ secret = "HOOK" }}
[triggers.internal]
rules = [ {{ match = "{{{{ client.__zarazTrack }}}}", op = "equals", value = "internal" }} ]
[consent]
enabled = true
show_modal = false
[[consent.purposes]]
id = "ads"
name = "Ads"
"#,
        origin.addr
    );
    let path = dir.path().join("tagproxy.toml");
    std::fs::write(&path, config).unwrap();
    Proxy::spawn(dir, path, &[("TAGPROXY_SECRET_HOOK", HOOK_SECRET)]).await
}

/// Posts one track event as a visitor with `cookie` and `ua`.
async fn track(proxy: &Proxy, id: &str, name: &str, props: Value, cookie: &str, ua: &str) {
    let body = json!([{"type": "track", "name": name, "id": id, "properties": props,
        "page": {"url": "https://shop.example.com/cart", "title": "Cart"}}]);
    let resp = client()
        .post(proxy.url("/_tagproxy/t"))
        .header("content-type", "application/json")
        .header("cookie", cookie)
        .header("user-agent", ua)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// `tagproxy -c CONFIG token create --name N --scopes S`: the secret.
fn token(config: &Path, name: &str, scopes: &str) -> String {
    let out = Command::new(bin())
        .arg("-c")
        .arg(config)
        .args(["token", "create", "--name", name, "--scopes", scopes])
        .env_remove("TAGPROXY_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// An open Server-Sent Events stream, with every record seen so far (the
/// latest version of each, by `seq`) and the raw text.
struct Stream {
    chunks:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
    pub text: String,
    pub records: BTreeMap<u64, Value>,
}

impl Stream {
    async fn open(
        url: &str,
        bearer: Option<&str>,
        cookie: Option<&str>,
    ) -> (u16, Option<Stream>, String) {
        let mut req = client().get(url);
        if let Some(b) = bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if status != 200 {
            return (status, None, resp.text().await.unwrap_or_default());
        }
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        let stream = Stream {
            chunks: Box::pin(resp.bytes_stream()),
            buf: String::new(),
            text: String::new(),
            records: BTreeMap::new(),
        };
        (status, Some(stream), String::new())
    }

    /// Reads until `done(records)` holds; panics after 20 s.
    async fn until(&mut self, what: &str, done: impl Fn(&BTreeMap<u64, Value>) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(&self.records) {
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = match tokio::time::timeout(left, self.chunks.next()).await {
                Ok(Some(Ok(c))) => c,
                other => panic!(
                    "stream ended or timed out waiting for {what} ({:?}); records:\n{}",
                    other.map(|o| o.map(|r| r.is_ok())),
                    serde_json::to_string_pretty(&self.records).unwrap()
                ),
            };
            let s = String::from_utf8_lossy(&chunk);
            self.text.push_str(&s);
            self.buf.push_str(&s);
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut event = "message";
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event: ") {
                        event = if e == "trail" { "trail" } else { "other" };
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    }
                }
                if event == "trail" {
                    let v: Value = serde_json::from_str(&data).unwrap();
                    self.records.insert(v["seq"].as_u64().unwrap(), v);
                }
            }
        }
    }
}

/// The latest record of event `id`, if any.
fn by_id<'a>(records: &'a BTreeMap<u64, Value>, id: &str) -> Option<&'a Value> {
    records.values().rev().find(|r| r["id"] == id)
}

fn delivery<'a>(record: &'a Value, tool: &str) -> Option<&'a Value> {
    record["deliveries"]
        .as_array()?
        .iter()
        .find(|d| d["tool"] == tool)
}

fn action<'a>(record: &'a Value, tool: &str) -> Option<&'a Value> {
    record["actions"]
        .as_array()?
        .iter()
        .find(|a| a["tool"] == tool)
}

fn state(record: Option<&Value>, tool: &str) -> String {
    record
        .and_then(|r| delivery(r, tool))
        .and_then(|d| d["state"].as_str())
        .unwrap_or("")
        .to_string()
}

/// `GET /admin/events` streams each event's trail live: delivered,
/// retrying and dead-lettered deliveries with their attempts, consent,
/// blocking-trigger, disabled, bot and duplicate drops, matched triggers;
/// no secret and no personal data in clear; filters by tool, event and
/// outcome; 401/403 and the audit log like the other admin endpoints.
#[tokio::test]
async fn admin_events_stream_every_events_trail() {
    let d = dests().await;
    let origin = Origin::page("text/html", PAGE).await;
    let proxy = scenario(&d, &origin).await;
    let reader = token(&proxy.config, "viewer", "events:read");
    let other = token(&proxy.config, "config", "config:read");
    let url = format!("http://{}/admin/events", proxy.admin);

    let (status, _, body) = Stream::open(&url, None, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = Stream::open(&url, Some(&other), None).await;
    assert_eq!(status, 403, "{body}");

    // Opened before the events: they arrive live.
    let (status, live, _) = Stream::open(&url, Some(&reader), None).await;
    assert_eq!(status, 200);
    let mut live = live.unwrap();

    let ua = events::UA;
    let cookie = REFUSED_ADS;
    track(
        &proxy,
        "evt-signup-0001",
        "signup",
        json!({"plan": "pro", "email": "ann@example.com"}),
        cookie,
        ua,
    )
    .await;
    track(&proxy, "evt-internal-01", "internal", json!({}), cookie, ua).await;
    track(
        &proxy,
        "evt-crawler-01",
        "signup",
        json!({}),
        cookie,
        BOT_UA,
    )
    .await;
    track(
        &proxy,
        "evt-signup-0001",
        "signup",
        json!({"plan": "pro"}),
        cookie,
        ua,
    )
    .await;

    live.until("every state", |r| {
        let signup = r
            .values()
            .find(|v| v["id"] == "evt-signup-0001" && v["dropped"].is_null());
        state(signup, "ok") == "delivered"
            && state(signup, "down") == "retrying"
            && state(signup, "bad") == "dead_lettered"
            && r.values().any(|v| v["dropped"] == "duplicate")
            && r.values().any(|v| v["dropped"] == "bot")
            && by_id(r, "evt-internal-01").is_some()
    })
    .await;
    let r = &live.records;
    let signup = r
        .values()
        .find(|v| v["id"] == "evt-signup-0001" && v["dropped"].is_null())
        .unwrap();
    assert_eq!(signup["name"], "signup");
    assert_eq!(signup["kind"], "track");
    assert!(signup["arrived_ms"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(signup["properties"]["plan"], "pro");
    assert_eq!(signup["properties"]["email"], "[personal data]");
    assert_eq!(
        signup["system"]["page"]["url"]["href"],
        "https://shop.example.com/cart"
    );
    // Actions: fired, consent-blocked, disabled.
    assert_eq!(action(signup, "ok").unwrap()["fired"], true);
    let ads = action(signup, "ads").unwrap();
    assert_eq!(
        (
            ads["fired"].as_bool(),
            ads["blocked"].as_str(),
            ads["by"].as_str()
        ),
        (Some(false), Some("consent"), Some("ads"))
    );
    assert_eq!(action(signup, "old").unwrap()["blocked"], "disabled");
    // Deliveries: the request (secret redacted), each attempt.
    let ok = delivery(signup, "ok").unwrap();
    assert_eq!(ok["request"]["method"], "POST");
    assert_eq!(ok["request"]["url"], format!("{}/hook", d.ok.url()));
    let auth = ok["request"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0].as_str().unwrap().eq_ignore_ascii_case("authorization"))
        .unwrap();
    assert_eq!(auth[1], "[REDACTED]");
    assert_eq!(ok["attempts"][0]["attempt"], 1);
    assert_eq!(ok["attempts"][0]["status"], 200);
    assert!(ok["attempts"][0]["latency_ms"].is_u64());
    let down = delivery(signup, "down").unwrap();
    assert_eq!(down["attempts"][0]["status"], 503);
    assert_eq!(down["attempts"][0]["error"], "HTTP 503");
    let bad = delivery(signup, "bad").unwrap();
    assert_eq!(bad["attempts"][0]["status"], 400);
    assert_eq!(signup["outcome"], "retrying");
    // A tool-level blocking trigger, by its id; the trigger matched.
    let internal = by_id(r, "evt-internal-01").unwrap();
    let blocked = action(internal, "ok").unwrap();
    assert_eq!(
        (blocked["blocked"].as_str(), blocked["by"].as_str()),
        (Some("blocking_trigger"), Some("internal"))
    );
    assert!(internal["triggers"]
        .as_array()
        .unwrap()
        .contains(&json!("internal")));
    // The bot's event: dropped, its actions blocked by `bot`, no delivery.
    let bot = by_id(r, "evt-crawler-01").unwrap();
    assert_eq!(
        (bot["dropped"].as_str(), bot["outcome"].as_str()),
        (Some("bot"), Some("dropped"))
    );
    assert_eq!(action(bot, "ok").unwrap()["blocked"], "bot");
    assert!(bot["deliveries"].as_array().unwrap().is_empty());
    assert!(!live.text.contains(HOOK_SECRET), "secret in the stream");
    assert!(
        !live.text.contains("ann@example.com"),
        "e-mail in the stream"
    );

    // Filters; a stream opened later replays what is kept.
    let (_, s, _) = Stream::open(&format!("{url}?outcome=bot"), Some(&reader), None).await;
    let mut s = s.unwrap();
    s.until("the bot", |r| !r.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.until("nothing else", |_| true).await;
    assert!(
        s.records.values().all(|v| v["dropped"] == "bot"),
        "{:?}",
        s.records
    );
    let (_, s, _) = Stream::open(
        &format!("{url}?tool=ok&event=internal&outcome=blocking_trigger"),
        Some(&reader),
        None,
    )
    .await;
    let mut s = s.unwrap();
    s.until("the internal event", |r| {
        by_id(r, "evt-internal-01").is_some()
    })
    .await;
    assert!(s.records.values().all(|v| v["name"] == "internal"));
    let (_, s, _) = Stream::open(
        &format!("{url}?outcome=dead_lettered&tool=bad"),
        Some(&reader),
        None,
    )
    .await;
    s.unwrap()
        .until("the dead letter", |r| {
            r.values().any(|v| state(Some(v), "bad") == "dead_lettered")
        })
        .await;

    // Audited like every admin call.
    let out = Command::new(bin())
        .arg("-c")
        .arg(&proxy.config)
        .args(["audit", "--json"])
        .env_remove("TAGPROXY_CONFIG")
        .output()
        .unwrap();
    let audit = String::from_utf8(out.stdout).unwrap();
    let entries: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let reads: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "events.read")
        .collect();
    assert!(reads.iter().any(|e| e["status"] == 401), "{audit}");
    assert!(reads.iter().any(|e| e["status"] == 403), "{audit}");
    assert!(
        reads
            .iter()
            .any(|e| e["status"] == 200 && e["token_name"] == "viewer"),
        "{audit}"
    );
}

/// The `tp_cid` cookie a collector answer set, as `tp_cid=<value>`.
fn client_cookie(resp: &reqwest::Response) -> String {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("tp_cid="))
        .map(|c| c.split(';').next().unwrap().to_string())
        .expect("the collector sets tp_cid")
}

async fn post_named(proxy: &Proxy, name: &str, cookie: &str) -> reqwest::Response {
    let body = json!([{"type": "track", "name": name, "properties": {},
        "page": {"url": "https://shop.example.com/", "title": "Shop"}}]);
    let resp = client()
        .post(proxy.url("/_tagproxy/t"))
        .header("content-type", "application/json")
        .header("cookie", cookie)
        .header("user-agent", events::UA)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp
}

/// `{prefix}/debug`: `401` without key or token, `403` with a wrong key or
/// a token without `events:read`, never any data; `?tagproxy_debug=key`
/// sets the cookie `zaraz.debug(key)` sets; with the key a browser sees
/// its own events only, with an `events:read` token everything.
#[tokio::test]
async fn debug_page_shows_a_visitor_its_own_events_and_a_token_everything() {
    let d = dests().await;
    let origin = Origin::page("text/html", PAGE).await;
    let proxy = scenario(&d, &origin).await;
    let reader = token(&proxy.config, "viewer", "events:read");
    let other = token(&proxy.config, "config", "config:read");
    let page = proxy.url("/_tagproxy/debug");
    let stream = proxy.url("/_tagproxy/debug/events");

    // Someone else's event, and two of this visitor's.
    post_named(&proxy, "theirs", "").await;
    let mine = client_cookie(&post_named(&proxy, "mine", "").await);
    post_named(&proxy, "mine", &mine).await;

    let get = |url: String, cookie: Option<String>| async move {
        let mut req = client().get(url);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let cookie = resp
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_string());
        (status, cookie, resp.text().await.unwrap())
    };
    let (status, _, body) = get(page.clone(), None).await;
    assert_eq!(status, 401);
    assert!(
        body.contains("tagproxy_debug"),
        "says how to get in: {body}"
    );
    assert!(!body.contains("EventSource"), "no page without access");
    let (status, _, _) = get(format!("{page}?tagproxy_debug=wrong"), None).await;
    assert_eq!(status, 403);
    let (status, _, _) = get(page.clone(), Some(format!("zarazDebug=wrong; {mine}"))).await;
    assert_eq!(status, 403);
    let (status, _, _) = get(format!("{page}?token={other}"), None).await;
    assert_eq!(status, 403);
    let (status, _, _) = get(format!("{page}?token=tpat_not_a_token"), None).await;
    assert_eq!(status, 401);
    let (status, _, body) = get(stream.clone(), Some(mine.clone())).await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("mine"), "{body}");

    let (status, cookie, body) = get(format!("{page}?tagproxy_debug={DEBUG_KEY}"), None).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("EventSource") && !body.contains("src=\"http"),
        "one page, no outside assets"
    );
    assert!(cookie
        .unwrap()
        .starts_with(&format!("zarazDebug={DEBUG_KEY};")));
    let (status, _, _) = get(format!("{page}?token={reader}"), None).await;
    assert_eq!(status, 200);

    // The key: this browser's events only.
    let (status, s, _) = Stream::open(
        &stream,
        None,
        Some(&format!("zarazDebug={DEBUG_KEY}; {mine}")),
    )
    .await;
    assert_eq!(status, 200);
    let mut s = s.unwrap();
    s.until("both of mine", |r| {
        r.values().filter(|v| v["name"] == "mine").count() == 2
    })
    .await;
    // Live: a later event of this visitor arrives on the open stream.
    post_named(&proxy, "mine", &mine).await;
    post_named(&proxy, "theirs", "").await;
    s.until("the live one", |r| {
        r.values().filter(|v| v["name"] == "mine").count() == 3
    })
    .await;
    assert!(
        s.records.values().all(|v| v["name"] == "mine"),
        "{:?}",
        s.records
    );
    // The key without a visitor id yet: told so, nothing shown.
    let (status, _, _) = get(stream.clone(), Some(format!("zarazDebug={DEBUG_KEY}"))).await;
    assert_eq!(status, 200);
    // A token: everything, filtered by the query.
    let (status, s, _) =
        Stream::open(&format!("{stream}?token={reader}&event=theirs"), None, None).await;
    assert_eq!(status, 200);
    s.unwrap()
        .until("theirs", |r| {
            r.values().filter(|v| v["name"] == "theirs").count() == 2
        })
        .await;
    let (_, s, _) = Stream::open(&stream, Some(&reader), None).await;
    s.unwrap().until("all", |r| r.len() >= 5).await;
}

/// `tagproxy demo` prints the debugger's URL, and it opens as printed.
#[tokio::test]
async fn demo_prints_a_debugger_url_that_works() {
    use std::process::Stdio;
    let mut child = Command::new(bin())
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut printed = String::new();
    let url = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("no debugger URL ({e}): {printed}"));
        printed.push_str(&line);
        printed.push('\n');
        if let Some(url) = line.trim().strip_prefix("live debugger (this browser):") {
            break url.trim().to_string();
        }
    };
    let resp = loop {
        if let Ok(resp) = client().get(&url).send().await {
            break resp;
        }
        assert!(Instant::now() < deadline, "demo did not start: {printed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let status = resp.status();
    let cookie = resp
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "{url}");
    assert!(
        cookie.is_some_and(|c| c.starts_with("zarazDebug=")),
        "{url}"
    );
}

/// In headless Chromium: a proxied page calls `zaraz.debug(key)` and fires
/// events; the debugger then shows this browser's events with their
/// states: fired, blocked (consent, blocking trigger, bot, disabled),
/// delivered, retrying, dead-lettered; a later event arrives live; with a
/// token it shows other visitors' events too. Saves a screenshot under
/// target/.
#[tokio::test]
async fn debugger_in_a_browser_shows_every_state() {
    use common::browser::Browser;
    let d = dests().await;
    let shop = format!(
        r#"<!doctype html><html><head><title>Shop</title></head><body><h1>Shop</h1>
<script>
zaraz.debug("{DEBUG_KEY}");
Promise.all([zaraz.track("signup", {{plan: "pro", email: "ann@example.com"}}), zaraz.track("internal")])
  .then(function () {{ window.__sent = true; }});
</script></body></html>"#
    );
    let origin = Origin::start(move |req: http::Request<hyper::body::Incoming>| {
        let shop = shop.clone();
        async move {
            if req.uri().path() == "/shop" {
                respond(200, &[("content-type", "text/html")], shop)
            } else {
                // No script here: a page to set cookies on.
                respond(
                    200,
                    &[
                        ("content-type", "text/html"),
                        ("cache-control", "no-transform"),
                    ],
                    PAGE,
                )
            }
        }
    })
    .await;
    let proxy = scenario(&d, &origin).await;
    let reader = token(&proxy.config, "viewer", "events:read");
    let browser = Browser::start().await;
    let c = &browser.client;
    c.goto(&proxy.url("/start")).await.unwrap();
    browser
        .js(&format!(
            "document.cookie = '{REFUSED_ADS}; path=/'; return 1;"
        ))
        .await;
    c.goto(&proxy.url("/shop")).await.unwrap();
    browser
        .wait_js("window.__sent === true", Duration::from_secs(15))
        .await;
    let cid = browser
        .js("return document.cookie.split('; ').find(function (c) { return c.indexOf('tp_cid=') === 0; });")
        .await;
    let cid = cid.as_str().expect("tp_cid in the browser").to_string();
    // The same visitor as a crawler (its event is dropped), and a stranger.
    track(&proxy, "evt-crawler-02", "crawl", json!({}), &cid, BOT_UA).await;
    post_named(&proxy, "stranger", "").await;

    c.goto(&proxy.url("/_tagproxy/debug")).await.unwrap();
    let all_states = r#"(function () {
      var evs = Array.prototype.slice.call(document.querySelectorAll('.ev'));
      var has = function (name, key, part) { return evs.some(function (e) { return e.dataset.name === name && e.dataset[key].split(' ').indexOf(part) >= 0; }); };
      return has('signup', 'actions', 'ok:fired') && has('signup', 'actions', 'ads:consent')
        && has('signup', 'actions', 'old:disabled') && has('internal', 'actions', 'ok:blocking_trigger')
        && has('crawl', 'actions', 'ok:bot') && has('signup', 'states', 'ok:delivered')
        && has('signup', 'states', 'down:retrying') && has('signup', 'states', 'bad:dead_lettered')
        && evs.some(function (e) { return e.dataset.name === 'crawl' && e.dataset.dropped === 'bot'; });
    })()"#;
    browser.wait_js(all_states, Duration::from_secs(20)).await;
    let text = browser.js("return document.body.innerText;").await;
    let text = text.as_str().unwrap();
    assert!(
        !text.contains("stranger"),
        "another visitor's event shown with the key"
    );
    assert!(
        !text.contains(HOOK_SECRET) && !text.contains("ann@example.com"),
        "{text}"
    );
    // Live, and filtered by outcome in the page.
    post_named(&proxy, "later", &cid).await;
    browser
        .wait_js(
            "document.querySelector('.ev[data-name=later]') !== null",
            Duration::from_secs(15),
        )
        .await;
    browser
        .js("var s = document.getElementById('f-outcome'); s.value = 'dead_lettered'; s.dispatchEvent(new Event('change')); return 1;")
        .await;
    browser
        .wait_js("document.querySelectorAll('.ev').length > 0 && Array.prototype.every.call(document.querySelectorAll('.ev'), function (e) { return e.dataset.states.indexOf('bad:dead_lettered') >= 0; })", Duration::from_secs(5))
        .await;
    browser
        .js("var s = document.getElementById('f-outcome'); s.value = ''; s.dispatchEvent(new Event('change')); return 1;")
        .await;
    browser.wait_js(all_states, Duration::from_secs(5)).await;
    let png = c.screenshot().await.unwrap();
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debugger.png");
    std::fs::write(&shot, &png).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    eprintln!("screenshot: {}", shot.display());

    // A token: every visitor's events.
    c.goto(&proxy.url(&format!("/_tagproxy/debug?token={reader}")))
        .await
        .unwrap();
    browser
        .wait_js(
            "document.querySelector('.ev[data-name=stranger]') !== null",
            Duration::from_secs(15),
        )
        .await;
    browser.close().await;
}

/// `/metrics`, parsed by a Prometheus text-format parser.
struct Prom(prometheus_parse::Scrape);

impl Prom {
    async fn of(proxy: &Proxy) -> Prom {
        let text = proxy.metrics().await;
        let lines = text.lines().map(|l| Ok(l.to_string()));
        Prom(prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text"))
    }

    fn samples<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a prometheus_parse::Sample> + 'a {
        self.0.samples.iter().filter(move |s| {
            s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
    }

    /// The value of the one sample of `name` with `labels` (0 when absent).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        use prometheus_parse::Value::*;
        let found: Vec<f64> = self
            .samples(name, labels)
            .map(|s| match &s.value {
                Counter(v) | Gauge(v) | Untyped(v) => *v,
                other => panic!("{name} is not a single value: {other:?}"),
            })
            .collect();
        assert!(found.len() <= 1, "{name} {labels:?}: {found:?}");
        found.first().copied().unwrap_or(0.0)
    }

    /// A histogram's cumulative count at bucket `le`.
    fn bucket(&self, name: &str, labels: &[(&str, &str)], le: f64) -> f64 {
        let s = self
            .samples(name, labels)
            .next()
            .unwrap_or_else(|| panic!("no histogram {name} {labels:?}"));
        let prometheus_parse::Value::Histogram(buckets) = &s.value else {
            panic!("{name} is not a histogram")
        };
        buckets
            .iter()
            .find(|b| b.less_than == le)
            .map(|b| b.count)
            .unwrap()
    }
}

/// `/metrics` answers what happened to events, parsed with a Prometheus
/// text parser while events flow: received, accepted, dropped by reason and
/// by tool; deliveries by tool and outcome; latency and attempts
/// histograms; queue depth and oldest age per tool; proxied requests by
/// status class, upstream latency, and every injection outcome.
#[tokio::test]
async fn metrics_say_what_happened_to_events_and_pages() {
    let d = dests().await;
    let huge = format!(
        "<!--{}--><html><head></head></html>",
        "x".repeat(300 * 1024)
    );
    let origin = Origin::start(move |req: http::Request<hyper::body::Incoming>| {
        let huge = huge.clone();
        async move {
            let html = [("content-type", "text/html")];
            match req.uri().path() {
                "/data.json" => respond(200, &[("content-type", "application/json")], "{}"),
                "/missing" => respond(404, &html, "<html><head></head>gone</html>"),
                "/tagged" => respond(200, &html, "<html><head><script src=\"/_tagproxy/s.js\" referrerpolicy=\"origin\"></script></head></html>"),
                "/huge" => respond(200, &html, huge),
                _ => respond(200, &html, PAGE),
            }
        }
    })
    .await;
    let proxy = scenario(&d, &origin).await;
    let before = Prom::of(&proxy).await;
    assert_eq!(before.value("tagproxy_events_accepted_total", &[]), 0.0);

    let ua = events::UA;
    track(
        &proxy,
        "evt-metrics-001",
        "signup",
        json!({}),
        REFUSED_ADS,
        ua,
    )
    .await;
    track(
        &proxy,
        "evt-metrics-002",
        "internal",
        json!({}),
        REFUSED_ADS,
        ua,
    )
    .await;
    track(
        &proxy,
        "evt-metrics-003",
        "signup",
        json!({}),
        REFUSED_ADS,
        BOT_UA,
    )
    .await;
    track(
        &proxy,
        "evt-metrics-001",
        "signup",
        json!({}),
        REFUSED_ADS,
        ua,
    )
    .await;
    for (path, agent) in [
        ("/", ua),
        ("/", BOT_UA),
        ("/data.json", ua),
        ("/missing", ua),
        ("/tagged", ua),
        ("/huge", ua),
    ] {
        let resp = client()
            .get(proxy.url(path))
            .header("user-agent", agent)
            .send()
            .await
            .unwrap();
        resp.bytes().await.unwrap();
    }

    // Until every delivery has had its first attempt.
    let deadline = Instant::now() + Duration::from_secs(20);
    let m = loop {
        let m = Prom::of(&proxy).await;
        let first = |tool| m.value("tagproxy_delivery_latency_seconds_count", &[("tool", tool)]);
        if first("ok") >= 1.0 && first("down") >= 2.0 && first("bad") >= 2.0 {
            break m;
        }
        assert!(Instant::now() < deadline, "{}", proxy.metrics().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let v = |name: &str, labels: &[(&str, &str)]| m.value(name, labels);
    assert_eq!(v("tagproxy_events_received_total", &[]), 4.0);
    assert_eq!(v("tagproxy_events_accepted_total", &[]), 2.0);
    assert_eq!(
        v("tagproxy_events_dropped_total", &[("reason", "bot")]),
        1.0
    );
    assert_eq!(
        v("tagproxy_events_dropped_total", &[("reason", "duplicate")]),
        1.0
    );
    // By tool: `ads` lacks consent for all three fanned-out events; `ok`
    // is blocked once by its trigger; the bot's event is dropped for every
    // tool that would have had it; `old` is disabled.
    let tool = |t, r| {
        v(
            "tagproxy_tool_events_dropped_total",
            &[("tool", t), ("reason", r)],
        )
    };
    assert_eq!(tool("ads", "consent"), 3.0);
    assert_eq!(tool("ok", "blocking_trigger"), 1.0);
    assert_eq!(
        (tool("ok", "bot"), tool("down", "bot"), tool("bad", "bot")),
        (1.0, 1.0, 1.0)
    );
    assert_eq!(tool("old", "disabled"), 3.0);
    // Deliveries: `ok` got the signup (the internal event was blocked for
    // it), `bad` refused both, `down` is still owed both.
    let out = |t, o| v("tagproxy_deliveries_total", &[("tool", t), ("outcome", o)]);
    assert_eq!(out("ok", "delivered"), 1.0);
    assert_eq!(out("bad", "dead_lettered"), 2.0);
    assert_eq!(out("down", "delivered") + out("down", "dead_lettered"), 0.0);
    assert_eq!(
        m.bucket("tagproxy_delivery_attempts", &[("tool", "bad")], 1.0),
        2.0
    );
    assert_eq!(
        v("tagproxy_delivery_attempts_count", &[("tool", "ok")]),
        1.0
    );
    assert_eq!(
        v(
            "tagproxy_delivery_latency_seconds_count",
            &[("tool", "down")]
        ),
        2.0
    );
    assert_eq!(
        m.bucket(
            "tagproxy_delivery_latency_seconds",
            &[("tool", "ok")],
            f64::INFINITY
        ),
        1.0
    );
    assert_eq!(v("tagproxy_delivery_queue_depth", &[("tool", "down")]), 2.0);
    assert_eq!(v("tagproxy_delivery_queue_depth", &[("tool", "ok")]), 0.0);
    assert!(
        v(
            "tagproxy_delivery_oldest_pending_seconds",
            &[("tool", "down")]
        ) > 0.0
    );
    // The proxy: five 2xx and one 404 from the origin, each timed.
    assert_eq!(v("tagproxy_proxy_requests_total", &[("class", "2xx")]), 5.0);
    assert_eq!(v("tagproxy_proxy_requests_total", &[("class", "4xx")]), 1.0);
    assert_eq!(v("tagproxy_upstream_latency_seconds_count", &[]), 6.0);
    let inj = |o| v("tagproxy_injections_total", &[("outcome", o)]);
    assert_eq!(
        [
            inj("injected"),
            inj("bot"),
            inj("not_html"),
            inj("already_present"),
            inj("no_place")
        ],
        [1.0; 5]
    );
}

/// A failed delivery is logged once per attempt with its tool, status,
/// attempt and Meta's own `error.message`, the access token never in
/// clear. Meta's Graph API answers errors as
/// `{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`,
/// transient ones (`code` 1 or 2, `is_transient`) with a 5xx
/// (https://developers.facebook.com/docs/graph-api/guides/error-handling/).
/// A collector request refused as invalid says why at debug.
#[tokio::test]
async fn delivery_failures_log_the_destinations_own_error_once_without_secrets() {
    const TOKEN: &str = "EAABsecretTOKEN1234567";
    let transient = "An unexpected error has occurred. Please retry your request later.";
    let malformed = format!("Malformed access token {TOKEN}");
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let meta = {
        let (calls, malformed) = (calls.clone(), malformed.clone());
        Origin::start(move |_req: http::Request<hyper::body::Incoming>| {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (status, body) = if n == 0 {
                (500, json!({"error": {"message": transient, "type": "OAuthException", "is_transient": true, "code": 2, "fbtrace_id": "AbCdEf1"}}))
            } else {
                (400, json!({"error": {"message": malformed, "type": "OAuthException", "code": 190, "fbtrace_id": "AbCdEf2"}}))
            };
            async move { respond(status, &[("content-type", "application/json")], body.to_string()) }
        })
        .await
    };
    let origin = Origin::page("text/html", PAGE).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    std::fs::write(
        dir.path().join("tools/meta.toml"),
        format!(
            "type = \"facebook-pixel\"\nendpoint = \"http://{}\"\n[settings]\npixel_id = \"1234567890\"\naccess_token = \"{{{{ $meta_token }}}}\"\n[automated]\npageview = true\n",
            meta.addr
        ),
    )
    .unwrap();
    let path = dir.path().join("tagproxy.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\n{LISTEN_ANY}\nupstream = \"http://{}\"\n[delivery]\nretry_base_ms = 50\nmax_attempts = 3\n[variables]\nmeta_token = {{ secret = \"META\" }}\n",
            origin.addr
        ),
    )
    .unwrap();
    let proxy = Proxy::spawn(dir, path, &[("TAGPROXY_SECRET_META", TOKEN)]).await;
    let resp = client()
        .post(proxy.url("/_tagproxy/t"))
        .header("content-type", "application/json")
        .header("user-agent", events::UA)
        .body(json!([events::pageview("evt-meta-log-01")]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let logs = proxy.wait_log("delivery rejected by the destination").await;

    let line = |needle: &str| -> Value {
        let found: Vec<&str> = logs.lines().filter(|l| l.contains(needle)).collect();
        assert_eq!(found.len(), 1, "logged once: {needle}\n{logs}");
        serde_json::from_str(found[0]).unwrap()
    };
    let retried = line("delivery will be retried");
    let f = &retried;
    assert_eq!(
        (
            f["tool"].as_str(),
            f["status"].as_u64(),
            f["attempt"].as_u64()
        ),
        (Some("meta"), Some(500), Some(1)),
        "{retried}"
    );
    assert_eq!(f["error"], transient, "{retried}");
    let rejected = line("delivery rejected by the destination");
    let f = &rejected;
    assert_eq!(
        (
            f["tool"].as_str(),
            f["status"].as_u64(),
            f["attempt"].as_u64()
        ),
        (Some("meta"), Some(400), Some(2)),
        "{rejected}"
    );
    assert_eq!(
        f["error"], "Malformed access token [REDACTED]",
        "{rejected}"
    );
    assert!(
        !logs.contains(TOKEN),
        "the access token is in the log:\n{logs}"
    );

    // A refused collector request says why, at debug.
    let resp = client()
        .post(proxy.url("/_tagproxy/t"))
        .header("content-type", "application/json")
        .body("{\"type\": 5}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let logs = proxy
        .wait_log("collector request rejected: invalid batch")
        .await;
    assert!(
        logs.lines()
            .any(|l| l.contains("collector request rejected: invalid batch")
                && l.contains("\"DEBUG\"")),
        "{logs}"
    );
    // A bot gets the page without the script, and the log says so.
    let page = client()
        .get(proxy.url("/"))
        .header("user-agent", BOT_UA)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("s.js"), "{page}");
    proxy
        .wait_log("bot or headless browser: page served without the script")
        .await;
}
