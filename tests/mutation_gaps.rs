//! Tests for breakages the rest of the suite could not see (issue 18): each
//! one is named for a one-line breakage of the product and fails on it.
//! "Nothing else arrived" is shown positively: the collector stores every
//! delivery before it answers, so `tagproxy_deliveries_submitted_total` is
//! final once the answer is in, and a test waits until that many were
//! delivered before it looks at what the destination got.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::events::{hook, key, metric_value, post, PAGE, UA};
use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

/// Waits until every delivery the collector accepted has been sent with a
/// `2xx` (`delivered == submitted`); returns that count.
async fn settled(proxy: &Proxy) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let m = proxy.metrics().await;
        let submitted = metric_value(&m, "tagproxy_deliveries_submitted_total");
        let delivered = metric_value(&m, "tagproxy_deliveries_delivered_total");
        if delivered >= submitted {
            return submitted as u64;
        }
        assert!(Instant::now() < deadline, "deliveries never settled:\n{m}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Posts one event batch (raw JSON) and asserts it was accepted.
async fn send(proxy: &Proxy, batch: Value) {
    let resp = client()
        .post(proxy.url("/_tagproxy/t"))
        .header("content-type", "application/json")
        .header("user-agent", UA)
        .body(batch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

fn pageview_at(url: &str, id: &str) -> Value {
    json!({"type": "pageview", "properties": {}, "page": {"url": url, "title": "T"}, "id": id})
}

/// `[settings] body` of the `http` tool is the request body (SPEC §2: the
/// body is a template, the event as JSON only when it is absent).
/// Breakage caught: the configured body ignored (`body: None`).
#[tokio::test]
async fn http_settings_body_is_what_the_destination_receives() {
    let dest = Destination::start().await;
    let origin = Origin::page("text/html", "<html></html>").await;
    let tool = format!(
        "type = \"http\"\n[settings]\nurl = \"{}/hook\"\nbody = {{ page = \"{{{{ system.page.url }}}}\", source = \"tagproxy\", n = 3 }}\n[automated]\npageview = true\n",
        dest.url()
    );
    let proxy = Proxy::start_tools(origin.addr, "", &[("hook", tool)]).await;
    send(&proxy, json!([pageview_at(PAGE, "settings-body-01")])).await;
    assert_eq!(settled(&proxy).await, 1);
    let got = dest.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].json(),
        json!({"page": PAGE, "source": "tagproxy", "n": 3})
    );
}

/// `enabled = false` (SPEC §2) keeps a tool from receiving anything.
/// Breakage caught: a disabled tool loaded like any other.
#[tokio::test]
async fn a_disabled_tool_receives_nothing() {
    let dest = Destination::start().await;
    let origin = Origin::page("text/html", "<html></html>").await;
    let off = format!(
        "type = \"http\"\nenabled = false\n[settings]\nurl = \"{}/off\"\n[automated]\npageview = true\n",
        dest.url()
    );
    let on = format!(
        "type = \"http\"\n[settings]\nurl = \"{}/on\"\n[automated]\npageview = true\n",
        dest.url()
    );
    let proxy = Proxy::start_tools(origin.addr, "", &[("off", off), ("on", on)]).await;
    send(&proxy, json!([pageview_at(PAGE, "disabled-tool-01")])).await;
    assert_eq!(settled(&proxy).await, 1, "only the enabled tool's delivery");
    let paths: Vec<String> = dest.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(paths, ["/on"]);
}

/// An action's own `blocking` triggers (SPEC §7) stop that action only.
/// Breakage caught: action-level `blocking` ignored.
#[tokio::test]
async fn an_action_blocking_trigger_stops_that_action_only() {
    let dest = Destination::start().await;
    let origin = Origin::page("text/html", "<html></html>").await;
    let config = r#"
[triggers.shop]
rules = [ { match = "{{ system.page.url }}", op = "contains", value = "shop.example.com" } ]
[triggers.internal]
rules = [ { match = "{{ system.page.url }}", op = "contains", value = "/internal" } ]
"#;
    let tool = format!(
        r#"type = "http"

[[actions]]
name = "blocked on internal pages"
kind = "request"
firing = ["shop"]
blocking = ["internal"]
[actions.fields]
url = "{d}/blockable"

[[actions]]
name = "always"
kind = "request"
firing = ["shop"]
[actions.fields]
url = "{d}/always"
"#,
        d = dest.url()
    );
    let proxy = Proxy::start_tools(origin.addr, config, &[("hook", tool)]).await;
    send(
        &proxy,
        json!([pageview_at(
            "https://shop.example.com/internal/stock",
            "action-block-01"
        )]),
    )
    .await;
    assert_eq!(settled(&proxy).await, 1);
    let paths: Vec<String> = dest.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(paths, ["/always"]);
    // The same action fires where the blocking trigger does not match.
    send(
        &proxy,
        json!([pageview_at(
            "https://shop.example.com/cart",
            "action-block-02"
        )]),
    )
    .await;
    assert_eq!(settled(&proxy).await, 3);
    let mut paths: Vec<String> = dest.requests().iter().map(|r| r.uri.clone()).collect();
    paths.sort();
    assert_eq!(paths, ["/always", "/always", "/blockable"]);
}

/// `X-Forwarded-Proto` / `X-Forwarded-Host` are kept only from
/// `trusted_proxies`; anyone else's are replaced by what tagproxy saw
/// (SPEC §3). Breakage caught: every peer trusted.
#[tokio::test]
async fn forwarded_proto_and_host_are_believed_from_trusted_peers_only() {
    let origin = Origin::page("text/plain", "ok").await;
    let ask = |proxy: &Proxy| {
        let url = proxy.url("/x");
        async move {
            client()
                .get(url)
                .header("x-forwarded-proto", "https")
                .header("x-forwarded-host", "evil.example")
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // The test's peer is 127.0.0.1, outside 10.0.0.0/8.
    let untrusting = Proxy::start_with(origin.addr, "trusted_proxies = [\"10.0.0.0/8\"]", "").await;
    assert_eq!(ask(&untrusting).await, 200);
    // The default trusts 127.0.0.1: the same headers pass.
    let trusting = Proxy::start(origin.addr, "").await;
    assert_eq!(ask(&trusting).await, 200);
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    let h = |i: usize, name: &str| seen[i].headers[name].to_str().unwrap().to_string();
    assert_eq!(h(0, "x-forwarded-proto"), "http");
    assert_eq!(h(0, "x-forwarded-host"), untrusting.addr.to_string());
    assert_eq!(h(1, "x-forwarded-proto"), "https");
    assert_eq!(h(1, "x-forwarded-host"), "evil.example");
}

/// The collector, too, believes `X-Forwarded-Proto: https` (and marks its
/// cookies `Secure`) only from a trusted peer: on a plain-http page, an
/// untrusted client claiming https gets no `Secure` cookie. Breakage
/// caught: every peer trusted by the collector.
#[tokio::test]
async fn collector_cookies_are_secure_by_forwarded_proto_from_trusted_peers_only() {
    let origin = Origin::page("text/html", "<html></html>").await;
    let cookies = |proxy: &Proxy| {
        let url = proxy.url("/_tagproxy/t");
        async move {
            let resp = client()
                .post(url)
                .header("content-type", "application/json")
                .header("user-agent", UA)
                .header("x-forwarded-proto", "https")
                .body(json!([pageview_at("http://shop.example.com/", "xfp-cookie-01")]).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.headers()
                .get_all("set-cookie")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    let untrusting = Proxy::start_with(origin.addr, "trusted_proxies = [\"10.0.0.0/8\"]", "").await;
    let got = cookies(&untrusting).await;
    assert!(!got.is_empty());
    assert!(got.iter().all(|c| !c.contains("; Secure")), "{got:?}");
    let trusting = Proxy::start(origin.addr, "").await;
    let got = cookies(&trusting).await;
    assert!(!got.is_empty());
    assert!(got.iter().all(|c| c.contains("; Secure")), "{got:?}");
}

/// A `206` or any response with `Content-Range` is a piece of a document:
/// injecting would corrupt the range (SPEC §6: only whole `2xx` HTML
/// documents; RFC 9110 §14.4 Content-Range). Breakages caught: the `206`
/// check removed; the `Content-Range` check removed.
#[tokio::test]
async fn partial_content_and_content_range_are_never_injected() {
    const HTML: &str = "<html><head><title>t</title></head><body>x</body></html>";
    let origin = Origin::start(|req| async move {
        let html = [("content-type", "text/html")];
        match req.uri().path() {
            "/206" => respond(
                206,
                &[
                    ("content-type", "text/html"),
                    ("content-range", "bytes 0-55/4000"),
                ],
                HTML,
            ),
            // Sloppy origins: a 206 without Content-Range, a 200 with one.
            "/206-bare" => respond(206, &html, HTML),
            "/200-range" => respond(
                200,
                &[
                    ("content-type", "text/html"),
                    ("content-range", "bytes 0-55/56"),
                ],
                HTML,
            ),
            _ => respond(200, &html, HTML),
        }
    })
    .await;
    let proxy = Proxy::start(origin.addr, "").await;
    assert!(get_text(proxy.url("/whole")).await.contains(TAG), "control");
    for path in ["/206", "/206-bare", "/200-range"] {
        let resp = client().get(proxy.url(path)).send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert_eq!(body, HTML, "{path} ({status}) must pass untouched");
    }
}

/// Client event ids become `Idempotency-Key` (and `Nats-Msg-Id`), so only
/// 8–64 characters of `[A-Za-z0-9_-]` are kept; anything else gets a fresh
/// UUIDv7 (SPEC §5). Breakages caught: any id accepted; the length bounds
/// moved by one either way.
#[tokio::test]
async fn hostile_client_event_ids_are_replaced_by_fresh_uuid_v7s() {
    let dest = Destination::start().await;
    let origin = Origin::page("text/html", "<html></html>").await;
    let proxy = Proxy::start_tools(origin.addr, "", &[("hook", hook(&dest.url()))]).await;
    let valid = ["abcd-_12".to_string(), "a".repeat(64)];
    let hostile = [
        "abc-_12".to_string(),
        "b".repeat(65),
        "has space-01".to_string(),
        "semi;colon-01".to_string(),
        "line\nbreak-01".to_string(),
        "ünicode-0001".to_string(),
        "../../etc/passwd".to_string(),
    ];
    let all: Vec<String> = valid.iter().chain(&hostile).cloned().collect();
    assert_eq!(post(&proxy.url(""), &all).await.unwrap().0, 200);
    assert_eq!(settled(&proxy).await, all.len() as u64);
    let keys: Vec<String> = dest.requests().iter().map(key).collect();
    let distinct: HashSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), all.len(), "one fresh id each: {keys:?}");
    for v in &valid {
        assert!(keys.contains(v), "valid id {v:?} kept: {keys:?}");
    }
    let fresh: Vec<&String> = keys.iter().filter(|k| !valid.contains(k)).collect();
    assert_eq!(fresh.len(), hostile.len(), "{keys:?}");
    for k in fresh {
        let id = uuid::Uuid::parse_str(k).unwrap_or_else(|e| panic!("{k:?} is no UUID: {e}"));
        assert_eq!(id.get_version_num(), 7, "{k}");
        assert_eq!(id.hyphenated().to_string(), *k, "canonical form");
    }
}

/// `/readyz` answers `503` with the reason while the collector refuses
/// events with `503` (here: the spool is full behind a dead destination),
/// so a load balancer sends visitors elsewhere. Breakage caught (and the
/// old behaviour): `/readyz` always `200`.
#[tokio::test]
async fn readyz_is_not_ready_while_the_collector_refuses_events() {
    let origin = Origin::page("text/html", "<html></html>").await;
    // Nothing listens there: nothing is ever delivered or dropped.
    let down = format!("http://127.0.0.1:{}", free_port());
    let proxy = Proxy::start_tools(
        origin.addr,
        "[delivery]\nretry_base_ms = 60000\nspool_max_bytes = 4096\n",
        &[("down", hook(&down))],
    )
    .await;
    let readyz = format!("http://{}/readyz", proxy.admin);
    assert_eq!(client().get(&readyz).send().await.unwrap().status(), 200);
    let mut n = 0;
    loop {
        let id = format!("readyz-{n:06}");
        let (status, _) = post(&proxy.url(""), &[id]).await.unwrap();
        if status == 503 {
            break;
        }
        assert_eq!(status, 200);
        n += 1;
        assert!(n < 1000, "the spool never filled");
    }
    let resp = client().get(&readyz).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["ok"], false);
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.contains("spool is full"), "{reason}");
    // Liveness is another question: the process is fine.
    let health = format!("http://{}/healthz", proxy.admin);
    assert_eq!(client().get(&health).send().await.unwrap().status(), 200);
}

/// `debug_key` unlocks `{prefix}/debug` (SPEC §10): `check` takes it
/// without the warning it gave while nothing read it.
#[test]
fn check_takes_debug_key_without_a_warning() {
    let (dir, path) = write_config(
        "[server]\nlisten = \"127.0.0.1:8080\"\nupstream = \"http://127.0.0.1:3000\"\n[settings]\ndebug_key = \"let-me-see\"\n",
    );
    let out = Command::new(bin())
        .args(["check", "-c"])
        .arg(&path)
        .env_remove("TAGPROXY_CONFIG")
        .output()
        .unwrap();
    drop(dir);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("debug_key"), "{stderr}");
}

/// `tagproxy deadletter list --json -c config`.
fn dead_letters(proxy: &Proxy) -> Vec<Value> {
    let out = Command::new(bin())
        .args(["deadletter", "list", "--json", "-c"])
        .arg(&proxy.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A delivery out of retries (`max_attempts` answered `503`) ends in the
/// dead letters with its reason and attempt count (SPEC §11), end to end.
/// Breakage caught: exhausted deliveries settled with no dead letter.
#[tokio::test]
async fn a_delivery_out_of_retries_ends_in_the_dead_letters() {
    let dest = Destination::with_script(Script {
        statuses: vec![503],
        ..Script::default()
    })
    .await;
    let origin = Origin::page("text/html", "<html></html>").await;
    let proxy = Proxy::start_tools(
        origin.addr,
        "[delivery]\nretry_base_ms = 50\nmax_attempts = 3\n",
        &[("flaky", hook(&dest.url()))],
    )
    .await;
    let id = "exhausted-000001".to_string();
    assert_eq!(
        post(&proxy.url(""), std::slice::from_ref(&id))
            .await
            .unwrap()
            .0,
        200
    );
    let deadline = Instant::now() + WAIT;
    let letters = loop {
        let letters = dead_letters(&proxy);
        if !letters.is_empty() {
            break letters;
        }
        assert!(
            Instant::now() < deadline,
            "no dead letter after {} attempts:\n{}",
            dest.requests().len(),
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(letters.len(), 1, "{letters:#?}");
    let l = &letters[0];
    assert_eq!(l["tool"], "flaky");
    assert_eq!(l["event_id"], id);
    assert_eq!(l["attempts"], 3);
    assert_eq!(l["status"], 503);
    assert_eq!(l["reason"], "gave up after 3 attempts: HTTP 503");
    // Dead-lettered is settled: exactly the three attempts, each the same.
    let got = dest.requests();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|r| key(r) == id));
    let m = proxy.metrics().await;
    assert_eq!(
        metric_value(&m, "tagproxy_tool_dead_letters_total{tool=\"flaky\"}"),
        1.0
    );
}

/// SIGHUP reloads on its own. The config path is a symlink and the change
/// swaps the link to a new file: the file watcher, which follows the link's
/// target only, cannot see it, so only the signal can apply it.
/// Breakage caught: SIGHUP doing nothing.
#[tokio::test]
async fn sighup_reloads_a_change_the_watcher_cannot_see() {
    let origin = Origin::page(
        "text/html",
        "<html><head><title>t</title></head><body>x</body></html>",
    )
    .await;
    let text = |settings: &str| {
        format!(
            "[server]\n{LISTEN_ANY}\nupstream = \"http://{}\"\n{settings}\n",
            origin.addr
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("tagproxy.toml");
    std::fs::write(dir.path().join("a.toml"), text("")).unwrap();
    std::os::unix::fs::symlink("a.toml", &link).unwrap();
    let proxy = Proxy::spawn(dir, link.clone(), &[]).await;
    assert!(get_text(proxy.url("/")).await.contains(TAG));

    let d = proxy.dir.path();
    std::fs::write(d.join("b.toml"), text("[settings]\nauto_inject = false")).unwrap();
    std::os::unix::fs::symlink("b.toml", d.join("next.toml")).unwrap();
    std::fs::rename(d.join("next.toml"), &link).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + WAIT;
    while get_text(proxy.url("/")).await.contains(TAG) {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The new config serves before its log line is written: wait for it.
    let logs = proxy.wait_log("config reloaded").await;
    let reloads: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("config reloaded"))
        .collect();
    assert_eq!(reloads.len(), 1, "{logs}");
    assert!(reloads[0].contains("SIGHUP"), "{logs}");
}

/// The request body reaches the origin while the client is still sending:
/// the client holds back everything past the first megabyte until the
/// origin has received that megabyte (SPEC §3: bodies stream both ways).
/// Buffering the body first deadlocks this and fails at the deadline.
/// Breakage caught: the request body collected before forwarding.
#[tokio::test]
async fn request_body_reaches_the_origin_before_the_client_finishes() {
    const MB: u64 = 1 << 20;
    const CHUNK: usize = 64 * 1024;
    let origin_got = Arc::new(AtomicU64::new(0));
    let (first_mb_tx, first_mb_rx) = tokio::sync::watch::channel(false);
    let got = origin_got.clone();
    let origin = Origin::start(move |req| {
        let got = got.clone();
        let first_mb = first_mb_tx.clone();
        async move {
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Some(data) = frame.data_ref() {
                    let n = got.fetch_add(data.len() as u64, Ordering::SeqCst) + data.len() as u64;
                    if n >= MB {
                        let _ = first_mb.send(true);
                    }
                }
            }
            let total = got.load(Ordering::SeqCst).to_string();
            respond(200, &[("content-type", "text/plain")], total)
        }
    })
    .await;
    let proxy = Proxy::start(origin.addr, "").await;
    // 4 MB in 64 KiB chunks; the chunk after the first megabyte waits for
    // the origin (with a deadline, so buffering fails instead of hanging).
    let total_chunks = (4 * MB as usize) / CHUNK;
    let stream =
        futures_util::stream::unfold((0usize, first_mb_rx), move |(i, mut first_mb)| async move {
            if i == total_chunks {
                return None;
            }
            if i as u64 * CHUNK as u64 == MB {
                let waited = tokio::time::timeout(WAIT, first_mb.wait_for(|got| *got))
                    .await
                    .is_ok_and(|r| r.is_ok());
                if !waited {
                    let e: BoxError = "the origin never saw the first megabyte".into();
                    return Some((Err(e), (total_chunks, first_mb)));
                }
            }
            Some((Ok(Bytes::from(vec![b'x'; CHUNK])), (i + 1, first_mb)))
        });
    let resp = client()
        .post(proxy.url("/upload"))
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(stream))
        .timeout(WAIT * 2)
        .send()
        .await;
    let resp = resp.unwrap_or_else(|e| {
        panic!(
            "upload failed ({e}); the origin got {} bytes",
            origin_got.load(Ordering::SeqCst)
        )
    });
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), (4 * MB).to_string());
}

/// Kills the traced tagproxy and then `strace` itself, even on a panic.
struct Traced {
    strace: std::process::Child,
}

impl Traced {
    /// The tagproxy process `strace` started (its only child).
    fn tracee(&self) -> Option<String> {
        let pid = self.strace.id();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()
            .and_then(|c| c.split_whitespace().next().map(str::to_string))
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if let Some(pid) = self.tracee() {
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
        let _ = self.strace.wait();
    }
}

/// Every `200` from the collector comes after an `fdatasync` of the spool
/// segment its events went into (SPEC §11: "an accepted event is in the
/// spool before the collector answers"). A `kill -9` test cannot see a
/// missing sync (the page cache outlives the process), so this watches the
/// real binary's system calls with `strace` (Debian package `strace`,
/// installed by tests/run.sh): between one answer and the next there must
/// be a completed `fdatasync` on a `.seg` file.
/// Breakage caught: the spool's `sync_data` removed (or moved after the reply).
#[tokio::test]
async fn every_collector_200_follows_an_fdatasync_of_the_spool_segment() {
    let dest = Destination::start().await;
    let origin = Origin::page("text/html", "<html></html>").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    std::fs::write(dir.path().join("tools/hook.toml"), hook(&dest.url())).unwrap();
    let config = dir.path().join("tagproxy.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\n{LISTEN_ANY}\nupstream = \"http://{}\"\n",
            origin.addr
        ),
    )
    .unwrap();
    let trace = dir.path().join("strace.txt");
    let log = dir.path().join("tagproxy.log");
    let strace = Command::new("strace")
        .args(["-f", "-yy", "-qq", "-s", "32", "-o"])
        .arg(&trace)
        .args(["-e", "trace=fdatasync,fsync,write,writev,sendto,sendmsg"])
        .arg(bin())
        .args(["serve", "-c"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("strace (Debian package `strace`) must be installed: tests/run.sh does it");
    let mut traced = Traced { strace };
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let logged = serving_addrs(&std::fs::read_to_string(&log).unwrap_or_default());
        if let Some((addr, admin)) = logged {
            let ready = client()
                .get(format!("http://{admin}/healthz"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                break addr;
            }
        }
        assert!(
            traced.strace.try_wait().unwrap().is_none(),
            "strace/tagproxy exited: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            Instant::now() < deadline,
            "tagproxy did not start under strace"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let url = format!("http://{addr}");
    for i in 0..3 {
        let id = format!("fsync-order-{i:04}");
        assert_eq!(post(&url, &[id]).await.unwrap().0, 200);
    }
    drop(traced);
    let text = std::fs::read_to_string(&trace).unwrap();

    // What happened, in order: completed spool syncs and collector answers.
    #[derive(Debug, PartialEq)]
    enum Step {
        Synced,
        Answered,
    }
    let mut steps = Vec::new();
    let mut syncing = HashSet::new();
    let ours = format!("{addr}->");
    for line in text.lines() {
        let pid = line.split_whitespace().next().unwrap_or("");
        if line.contains("fdatasync(") && line.contains(".seg>") {
            if line.contains("<unfinished") {
                syncing.insert(pid.to_string());
            } else if line.ends_with("= 0") {
                steps.push(Step::Synced);
            }
        } else if line.contains("<... fdatasync resumed>") {
            if syncing.remove(pid) && line.ends_with("= 0") {
                steps.push(Step::Synced);
            }
        } else if line.contains(&ours) && line.contains("\"HTTP/1.1 200") {
            steps.push(Step::Answered);
        }
    }
    let answers: Vec<usize> = steps
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == Step::Answered)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        answers.len(),
        3,
        "three collector answers: {steps:?}\n{text}"
    );
    let mut from = 0;
    for (n, at) in answers.into_iter().enumerate() {
        assert!(
            steps[from..at].contains(&Step::Synced),
            "answer {} was written with no spool fdatasync since the previous one: {steps:?}",
            n + 1
        );
        from = at + 1;
    }
}
