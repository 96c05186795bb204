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
