//! The admin API on `admin_listen` (SPEC §10, issue 12): account-owned
//! tokens over the CLI and HTTP, scopes, no escalation, the audit log, the
//! config and tool-file endpoints, and the off-loopback listener. Every test
//! runs the real binary; tokens come from the real CLI, which shares the
//! store with the running server.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PAGE: &str = "<html><head><title>t</title></head><body>x</body></html>";

/// `tagproxy -c CONFIG args…`: exit code, stdout, stderr.
fn cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("TAGPROXY_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A token issued by the CLI: its id and secret.
#[derive(Clone, Debug)]
struct Issued {
    id: String,
    secret: String,
}

/// `tagproxy token create --name N --scopes S [extra…]`; the secret is the
/// first line of stdout, the id is in the stderr summary.
fn create(config: &Path, name: &str, scopes: &str, extra: &[&str]) -> Issued {
    let mut args = vec!["token", "create", "--name", name, "--scopes", scopes];
    args.extend_from_slice(extra);
    let (code, out, err) = cli(config, &args);
    assert_eq!(code, 0, "{err}");
    let secret = out.lines().next().unwrap().to_string();
    assert!(secret.starts_with("tpat_"), "{out}");
    assert_eq!(out.lines().count(), 1, "only the secret on stdout: {out}");
    let id = err
        .split_whitespace()
        .find(|w| w.starts_with("tok_"))
        .unwrap_or_else(|| panic!("no id in {err}"))
        .to_string();
    Issued { id, secret }
}

/// One admin call: status, headers, body text.
async fn call(
    proxy: &Proxy,
    method: &str,
    path: &str,
    secret: Option<&str>,
    body: Option<String>,
) -> (u16, http::HeaderMap, String) {
    let mut req = client().request(
        method.parse().unwrap(),
        format!("http://{}{path}", proxy.admin),
    );
    if let Some(s) = secret {
        req = req.header("authorization", format!("Bearer {s}"));
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `tagproxy audit --json`, parsed.
fn audit(config: &Path) -> Vec<Value> {
    let (code, out, err) = cli(config, &["audit", "--json"]);
    assert_eq!(code, 0, "{err}");
    out.lines().map(json_of).collect()
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// No secret (nor its random part) in any file of the test's folder: the
/// data_dir (token store, audit log, spool), the config and the server's
/// captured logs and stdout.
fn assert_no_secret_on_disk(dir: &Path, secrets: &[String]) {
    let all = files(dir);
    assert!(all.iter().any(|p| p.ends_with("tokens.json")));
    assert!(all.iter().any(|p| p.ends_with("audit.jsonl")));
    assert!(all.iter().any(|p| p.ends_with("tagproxy.log")));
    for path in all {
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for s in secrets {
            assert!(
                !text.contains(&s[5..]),
                "secret found in clear in {}",
                path.display()
            );
        }
    }
}

async fn start(tools: &[(&str, String)]) -> (Origin, Proxy) {
    let origin = Origin::page("text/html", PAGE).await;
    let proxy = Proxy::start_tools(origin.addr, "", tools).await;
    (origin, proxy)
}

fn assert_401(status: u16, headers: &http::HeaderMap, body: &str) {
    assert_eq!(status, 401, "{body}");
    assert!(
        headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer")),
        "{headers:?}"
    );
    assert!(json_of(body)["error"].is_string(), "{body}");
}

#[tokio::test]
async fn token_lifecycle_over_cli_and_http_while_the_server_runs() {
    let (_origin, proxy) = start(&[]).await;
    let cfg = proxy.config.clone();
    let mut secrets = Vec::new();

    // Created by the CLI, used at once by the running server.
    let ops = create(&cfg, "ops", "tokens:write,config:read", &[]);
    secrets.push(ops.secret.clone());
    let (status, _, body) = call(&proxy, "GET", "/admin/config", Some(&ops.secret), None).await;
    assert_eq!(status, 200, "{body}");

    // Listing shows public fields only.
    let (status, _, body) = call(&proxy, "GET", "/admin/tokens", Some(&ops.secret), None).await;
    assert_eq!(status, 200, "{body}");
    let list = json_of(&body);
    assert_eq!(list["tokens"][0]["name"], "ops");
    assert_eq!(list["tokens"][0]["id"], ops.id.as_str());
    assert!(
        !body.contains("sha256") && !body.contains("tpat_"),
        "{body}"
    );

    // Created over HTTP: 201, the secret once.
    let (status, _, body) = call(
        &proxy,
        "POST",
        "/admin/tokens",
        Some(&ops.secret),
        Some(json!({"name": "ci", "scopes": ["config:read"], "expires_in": "90d"}).to_string()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let created = json_of(&body);
    let ci = Issued {
        id: created["token"]["id"].as_str().unwrap().to_string(),
        secret: created["secret"].as_str().unwrap().to_string(),
    };
    secrets.push(ci.secret.clone());
    assert_eq!(created["token"]["name"], "ci");
    assert_eq!(created["token"]["scopes"], json!(["config:read"]));
    assert!(created["token"]["expires_ms"].is_u64());
    assert_eq!(
        call(&proxy, "GET", "/admin/config", Some(&ci.secret), None)
            .await
            .0,
        200
    );

    // Rolled over HTTP: the old secret is 401 at once, the new one works.
    let (status, _, body) = call(
        &proxy,
        "POST",
        &format!("/admin/tokens/{}/roll", ci.id),
        Some(&ops.secret),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let rolled = json_of(&body);
    assert_eq!(rolled["token"]["id"], ci.id.as_str());
    let ci2 = rolled["secret"].as_str().unwrap().to_string();
    secrets.push(ci2.clone());
    let (status, headers, body) =
        call(&proxy, "GET", "/admin/config", Some(&ci.secret), None).await;
    assert_401(status, &headers, &body);
    assert_eq!(
        call(&proxy, "GET", "/admin/config", Some(&ci2), None)
            .await
            .0,
        200
    );

    // Rolled by the CLI: the server follows.
    let (code, out, err) = cli(&cfg, &["token", "roll", &ops.id]);
    assert_eq!(code, 0, "{err}");
    let ops2 = out.lines().next().unwrap().to_string();
    secrets.push(ops2.clone());
    let (status, headers, body) =
        call(&proxy, "GET", "/admin/tokens", Some(&ops.secret), None).await;
    assert_401(status, &headers, &body);
    assert_eq!(
        call(&proxy, "GET", "/admin/tokens", Some(&ops2), None)
            .await
            .0,
        200
    );

    // Revoked over HTTP: 401; a second revoke is 404.
    let path = format!("/admin/tokens/{}", ci.id);
    let (status, _, body) = call(&proxy, "DELETE", &path, Some(&ops2), None).await;
    assert_eq!(status, 200, "{body}");
    let (status, headers, body) = call(&proxy, "GET", "/admin/config", Some(&ci2), None).await;
    assert_401(status, &headers, &body);
    let (status, _, body) = call(&proxy, "DELETE", &path, Some(&ops2), None).await;
    assert_eq!(status, 404, "{body}");
    assert!(json_of(&body)["error"].is_string());

    // Revoked by the CLI: 401 from the server at once.
    let tmp = create(&cfg, "tmp", "config:read", &[]);
    secrets.push(tmp.secret.clone());
    assert_eq!(
        call(&proxy, "GET", "/admin/config", Some(&tmp.secret), None)
            .await
            .0,
        200
    );
    assert_eq!(cli(&cfg, &["token", "revoke", &tmp.id]).0, 0);
    let (status, headers, body) =
        call(&proxy, "GET", "/admin/config", Some(&tmp.secret), None).await;
    assert_401(status, &headers, &body);

    // Expiry: a one-second token, once its second is over, is 401.
    let short = create(&cfg, "short", "config:read", &["--expires-in", "1s"]);
    secrets.push(short.secret.clone());
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (status, headers, body) =
        call(&proxy, "GET", "/admin/config", Some(&short.secret), None).await;
    assert_401(status, &headers, &body);
    assert!(body.contains("expired"), "{body}");

    // Bad input: a clear status and error, nothing written.
    let before = std::fs::read(proxy.dir.path().join("data/tokens.json")).unwrap();
    let post = |body: String| call(&proxy, "POST", "/admin/tokens", Some(&ops2), Some(body));
    for (body, want) in [
        ("{not json".to_string(), 400),
        (json!({"name": "x", "scopes": ["admin"]}).to_string(), 400),
        (json!({"name": "x", "scopes": []}).to_string(), 400),
        (json!({"name": "x"}).to_string(), 400),
        (
            json!({"name": "x", "scopes": ["config:read"], "extra": 1}).to_string(),
            400,
        ),
        (
            json!({"name": "x", "scopes": ["config:read"], "expires_in": "soon"}).to_string(),
            400,
        ),
        (
            json!({"name": "", "scopes": ["config:read"]}).to_string(),
            400,
        ),
        (
            json!({"name": "ops", "scopes": ["config:read"]}).to_string(),
            409,
        ),
        (
            json!({"name": "x".repeat(20_000), "scopes": ["config:read"]}).to_string(),
            413,
        ),
    ] {
        let (status, _, answer) = post(body.clone()).await;
        assert_eq!(status, want, "{}: {answer}", &body[..body.len().min(80)]);
        assert!(json_of(&answer)["error"].is_string(), "{answer}");
    }
    let (status, _, body) = call(
        &proxy,
        "POST",
        "/admin/tokens/tok_doesnotexist/roll",
        Some(&ops2),
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let after = std::fs::read(proxy.dir.path().join("data/tokens.json")).unwrap();
    // `last_used_ms` may have moved on; the tokens themselves did not.
    let names = |b: &[u8]| -> Vec<String> {
        let v: Value = serde_json::from_slice(b).unwrap();
        v["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&before), names(&after));

    // The audit log has the allowed and refused calls, with token names.
    let entries = audit(&cfg);
    let find = |action: &str, result: &str, name: Option<&str>, status: u64| {
        entries.iter().any(|e| {
            e["action"] == action
                && e["result"] == result
                && e["status"] == status
                && name.is_none_or(|n| e["token_name"] == n)
                && e["remote"].as_str().unwrap().starts_with("127.0.0.1:")
                && e["method"].is_string()
                && e["path"].as_str().unwrap().starts_with("/admin/")
                && e["time"].as_str().unwrap().ends_with('Z')
        })
    };
    assert!(
        find("config.read", "allowed", Some("ops"), 200),
        "{entries:#?}"
    );
    assert!(find("token.create", "allowed", Some("ops"), 201));
    assert!(find("token.roll", "allowed", Some("ops"), 200));
    assert!(find("token.revoke", "allowed", Some("ops"), 200));
    assert!(find("token.create", "failed", Some("ops"), 409));
    assert!(find("config.read", "refused", Some("short"), 401));
    // A rolled secret is no longer anyone's: refused without a name.
    assert!(entries.iter().any(|e| e["action"] == "config.read"
        && e["result"] == "refused"
        && e["status"] == 401
        && e.get("token_name").is_none()));
    // CLI operations are there too.
    assert!(entries
        .iter()
        .any(|e| e["method"] == "CLI" && e["action"] == "token.revoke"));

    assert_no_secret_on_disk(proxy.dir.path(), &secrets);
}

#[tokio::test]
async fn scope_matrix_each_endpoint_by_each_scope() {
    let hook = events::hook("http://127.0.0.1:9");
    let (_origin, proxy) = start(&[("hook", hook.clone()), ("extra", hook.clone())]).await;
    let cfg = proxy.config.clone();
    let scopes = [
        "config:read",
        "config:write",
        "events:read",
        "events:write",
        "tokens:write",
        "metrics:read",
    ];
    let callers: Vec<(&str, Issued)> = scopes
        .iter()
        .map(|s| (*s, create(&cfg, &format!("only {s}"), s, &[])))
        .collect();
    let roll_target = create(&cfg, "roll target", "tokens:write", &[]);
    let revoke_target = create(&cfg, "revoke target", "tokens:write", &[]);
    let revoked = create(
        &cfg,
        "revoked",
        "config:read,config:write,tokens:write",
        &[],
    );
    assert_eq!(cli(&cfg, &["token", "revoke", &revoked.id]).0, 0);

    // (method, path, body, the scope it needs, status when allowed)
    let endpoints: Vec<(&str, String, Option<String>, &str, u16)> = vec![
        ("GET", "/admin/tokens".into(), None, "tokens:write", 200),
        (
            "POST",
            "/admin/tokens".into(),
            Some(json!({"name": "made", "scopes": ["tokens:write"]}).to_string()),
            "tokens:write",
            201,
        ),
        (
            "POST",
            format!("/admin/tokens/{}/roll", roll_target.id),
            None,
            "tokens:write",
            200,
        ),
        (
            "DELETE",
            format!("/admin/tokens/{}", revoke_target.id),
            None,
            "tokens:write",
            200,
        ),
        ("GET", "/admin/config".into(), None, "config:read", 200),
        ("GET", "/admin/tools/hook".into(), None, "config:read", 200),
        ("POST", "/admin/reload".into(), None, "config:write", 200),
        (
            "PUT",
            "/admin/tools/hook".into(),
            Some(hook.clone()),
            "config:write",
            200,
        ),
        (
            "DELETE",
            "/admin/tools/extra".into(),
            None,
            "config:write",
            200,
        ),
    ];
    for (method, path, body, needs, ok) in &endpoints {
        for (scope, caller) in &callers {
            let (status, _, answer) =
                call(&proxy, method, path, Some(&caller.secret), body.clone()).await;
            let want = if scope == needs { *ok } else { 403 };
            assert_eq!(status, want, "{method} {path} with {scope}: {answer}");
            if want == 403 {
                assert!(answer.contains(needs), "{answer}");
            }
        }
        // Without a token, with garbage, another scheme, a revoked token.
        for secret in [
            None,
            Some("garbage"),
            Some(&*format!(
                "{}x",
                &revoked.secret[..revoked.secret.len() - 1]
            )),
            Some(revoked.secret.as_str()),
        ] {
            let (status, headers, answer) = call(&proxy, method, path, secret, body.clone()).await;
            assert_401(status, &headers, &answer);
        }
        let (status, _, _) = client()
            .request(
                method.parse().unwrap(),
                format!("http://{}{path}", proxy.admin),
            )
            .header("authorization", "Basic dXNlcjpwYXNz")
            .send()
            .await
            .map(|r| (r.status().as_u16(), (), ()))
            .unwrap();
        assert_eq!(status, 401);
    }
    // A known path with another method: 405 with Allow (after the token);
    // an unknown one: 404.
    let any = &callers[0].1.secret;
    let (status, headers, _) = call(&proxy, "GET", "/admin/reload", Some(any), None).await;
    assert_eq!((status, &headers["allow"]), (405, &"POST".parse().unwrap()));
    let (status, _, _) = call(&proxy, "PATCH", "/admin/tools/hook", Some(any), None).await;
    assert_eq!(status, 405);
    let (status, _, _) = call(&proxy, "GET", "/admin/nothing", Some(any), None).await;
    assert_eq!(status, 404);
    let (status, headers, body) = call(&proxy, "GET", "/admin/nothing", None, None).await;
    assert_401(status, &headers, &body);
    // Metrics and health stay open on loopback.
    assert_eq!(call(&proxy, "GET", "/metrics", None, None).await.0, 200);
    assert_eq!(call(&proxy, "GET", "/readyz", None, None).await.0, 200);

    // Refused calls are audited with the token's name and the scope missing.
    let entries = audit(&cfg);
    assert!(entries.iter().any(|e| e["action"] == "config.read"
        && e["result"] == "refused"
        && e["status"] == 403
        && e["token_name"] == "only events:write"
        && e["detail"].as_str().unwrap().contains("config:read")));
    assert!(entries.iter().any(|e| e["action"] == "tools.delete"
        && e["result"] == "allowed"
        && e["token_name"] == "only config:write"));
    let (_, _, err) = cli(&cfg, &["audit"]);
    assert!(err.is_empty(), "{err}");
}

#[tokio::test]
async fn no_token_can_create_roll_or_revoke_a_wider_token() {
    let (_origin, proxy) = start(&[]).await;
    let cfg = proxy.config.clone();
    let admin = create(&cfg, "token admin", "tokens:write", &[]);
    let writer = create(&cfg, "config writer", "config:write", &[]);
    let reader = create(&cfg, "reader", "tokens:write,config:read", &[]);
    let count = || cli(&cfg, &["token", "list", "--json"]).1.lines().count();
    assert_eq!(count(), 3);

    let (status, _, body) = call(
        &proxy,
        "POST",
        "/admin/tokens",
        Some(&admin.secret),
        Some(json!({"name": "wider", "scopes": ["events:write"]}).to_string()),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("events:write"), "{body}");
    let (status, _, body) = call(
        &proxy,
        "POST",
        "/admin/tokens",
        Some(&admin.secret),
        Some(json!({"name": "wider", "scopes": ["tokens:write", "config:read"]}).to_string()),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    for (method, path) in [
        ("POST", format!("/admin/tokens/{}/roll", writer.id)),
        ("DELETE", format!("/admin/tokens/{}", writer.id)),
        ("POST", format!("/admin/tokens/{}/roll", reader.id)),
    ] {
        let (status, _, body) = call(&proxy, method, &path, Some(&admin.secret), None).await;
        assert_eq!(status, 403, "{method} {path}: {body}");
    }
    assert_eq!(count(), 3, "nothing was created or revoked");
    // The config writer's secret still works: it was not rolled.
    let (status, _, _) = call(&proxy, "POST", "/admin/reload", Some(&writer.secret), None).await;
    assert_eq!(status, 200);

    // Narrower or equal is fine.
    let (status, _, body) = call(
        &proxy,
        "POST",
        "/admin/tokens",
        Some(&reader.secret),
        Some(json!({"name": "narrow", "scopes": ["config:read"]}).to_string()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let narrow_id = json_of(&body)["token"]["id"].as_str().unwrap().to_string();
    let (status, _, _) = call(
        &proxy,
        "DELETE",
        &format!("/admin/tokens/{narrow_id}"),
        Some(&admin.secret),
        None,
    )
    .await;
    assert_eq!(status, 403, "tokens:write alone does not cover config:read");
    let (status, _, _) = call(
        &proxy,
        "DELETE",
        &format!("/admin/tokens/{narrow_id}"),
        Some(&reader.secret),
        None,
    )
    .await;
    assert_eq!(status, 200);

    let entries = audit(&cfg);
    let refused: Vec<_> = entries
        .iter()
        .filter(|e| e["result"] == "refused" && e["token_name"] == "token admin")
        .collect();
    assert_eq!(refused.len(), 6, "{entries:#?}");
    assert!(refused
        .iter()
        .all(|e| e["status"] == 403 && e["detail"].as_str().unwrap().contains("no escalation")));
}

/// An `http` tool posting every pageview to `base/hook` (the path says
/// which version of the file sent it).
fn hook_to(base: &str) -> String {
    events::hook(base)
}

#[tokio::test]
async fn a_tool_put_during_1000_events_loses_nothing_and_later_events_follow_the_new_file() {
    let a = Destination::start().await;
    let b = Destination::start().await;
    let (_origin, proxy) = start(&[("hook", hook_to(&a.url()))]).await;
    let cfg = proxy.config.clone();
    let deployer = create(&cfg, "deployer", "config:read,config:write", &[]);
    let tool_file = proxy.dir.path().join("tools/hook.toml");

    // 100 batches of 10 pageviews from 4 concurrent senders. The PUT starts
    // once 30 batches are answered; batches 70 and up wait for its answer,
    // so some run during the PUT and some certainly after it.
    const BATCHES: usize = 100;
    let next = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let put_done = Arc::new(tokio::sync::Notify::new());
    let put_flag = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for _ in 0..4 {
        let (next, answered, put_done, put_flag) = (
            next.clone(),
            answered.clone(),
            put_done.clone(),
            put_flag.clone(),
        );
        let url = proxy.url("");
        senders.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= BATCHES {
                    return sent;
                }
                if n >= 70 {
                    let wait = put_done.notified();
                    if !put_flag.load(Ordering::SeqCst) {
                        wait.await;
                    }
                }
                let after_put = put_flag.load(Ordering::SeqCst);
                let ids = events::ids(&format!("b{n:03}"), 10);
                let status = events::post_status(&url, &ids).await;
                answered.fetch_add(1, Ordering::SeqCst);
                sent.push((ids, status, after_put));
            }
        }));
    }
    while answered.load(Ordering::SeqCst) < 30 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, _, body) = call(
        &proxy,
        "PUT",
        "/admin/tools/hook",
        Some(&deployer.secret),
        Some(hook_to(&b.url())),
    )
    .await;
    put_flag.store(true, Ordering::SeqCst);
    put_done.notify_waiters();
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["tools"], 1);

    let mut batches = Vec::new();
    for s in senders {
        batches.extend(s.await.unwrap());
    }
    assert_eq!(batches.len(), BATCHES);
    for (ids, status, _) in &batches {
        assert_eq!(
            *status,
            Some(200),
            "collector request for {} failed",
            ids[0]
        );
    }
    proxy.settled().await;
    let at_a = events::keys(&a.requests());
    let at_b = events::keys(&b.requests());
    let all: HashSet<String> = batches
        .iter()
        .flat_map(|(ids, _, _)| ids.iter().cloned())
        .collect();
    assert_eq!(all.len(), 1000);
    // Nothing lost: every event reached A or B.
    let reached: HashSet<String> = at_a.union(&at_b).cloned().collect();
    let lost: Vec<_> = all.difference(&reached).collect();
    assert!(lost.is_empty(), "{} events lost: {lost:?}", lost.len());
    // Events sent after the PUT answered follow the new file.
    let after: Vec<&String> = batches
        .iter()
        .filter(|(_, _, after)| *after)
        .flat_map(|(ids, _, _)| ids)
        .collect();
    assert!(after.len() >= 300, "{}", after.len());
    for id in &after {
        assert!(
            at_b.contains(*id) && !at_a.contains(*id),
            "{id} went to the old URL"
        );
    }
    assert!(!at_a.is_empty(), "the load began before the PUT");

    // A GET answers the file as written, as TOML.
    let (status, headers, text) = call(
        &proxy,
        "GET",
        "/admin/tools/hook",
        Some(&deployer.secret),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/toml");
    assert_eq!(text, hook_to(&b.url()));

    // Bad PUTs: 422 with line:col problems, nothing changed.
    let good = std::fs::read(&tool_file).unwrap();
    for (bad, needle) in [
        ("type = \"http\"\n[settings\nurl = 1\n".to_string(), "2:"),
        (
            format!("{}typo = 1\n", hook_to(&b.url())),
            "unknown field `typo`",
        ),
        (
            "type = \"http\"\n[settings]\nurl = \"{{ client.\"\n[automated]\npageview = true\n"
                .to_string(),
            "3:",
        ),
        ("type = \"no-such-adapter\"\n".to_string(), "1:"),
    ] {
        let (status, _, body) = call(
            &proxy,
            "PUT",
            "/admin/tools/hook",
            Some(&deployer.secret),
            Some(bad.clone()),
        )
        .await;
        assert_eq!(status, 422, "{bad}: {body}");
        let answer = json_of(&body);
        assert_eq!(answer["error"], "invalid tool file");
        let problems: Vec<&str> = answer["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert!(!problems.is_empty());
        for p in &problems {
            let mut parts = p.splitn(3, ':');
            let line = parts.next().unwrap();
            let col = parts.next().unwrap_or("");
            assert!(
                line.parse::<u32>().is_ok() && col.parse::<u32>().is_ok(),
                "not line:col: {p}"
            );
        }
        assert!(problems.iter().any(|p| p.contains(needle)), "{problems:?}");
        assert_eq!(std::fs::read(&tool_file).unwrap(), good, "the file changed");
    }
    // A new tool that does not validate is not created either.
    let (status, _, _) = call(
        &proxy,
        "PUT",
        "/admin/tools/fresh",
        Some(&deployer.secret),
        Some("type = \"http\"\nnope = 1\n".into()),
    )
    .await;
    assert_eq!(status, 422);
    assert!(!proxy.dir.path().join("tools/fresh.toml").exists());
    let leftovers: Vec<_> = files(&proxy.dir.path().join("tools"))
        .into_iter()
        .filter(|p| !p.ends_with("hook.toml"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Deliveries still follow the file in force.
    let later = events::ids("later", 5);
    assert_eq!(events::post_status(&proxy.url(""), &later).await, Some(200));
    proxy.settled().await;
    let at_b = events::keys(&b.requests());
    assert!(later.iter().all(|id| at_b.contains(id)));
    assert!(later
        .iter()
        .all(|id| !events::keys(&a.requests()).contains(id)));

    // A new tool is 201; DELETE removes it (404 after).
    let path = "/admin/tools/second";
    let (status, _, body) = call(
        &proxy,
        "PUT",
        path,
        Some(&deployer.secret),
        Some(hook_to(&a.url())),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(json_of(&body)["tools"], 2);
    let (status, _, body) = call(&proxy, "DELETE", path, Some(&deployer.secret), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["tools"], 1);
    assert_eq!(
        call(&proxy, "GET", path, Some(&deployer.secret), None)
            .await
            .0,
        404
    );
    assert_eq!(
        call(&proxy, "DELETE", path, Some(&deployer.secret), None)
            .await
            .0,
        404
    );

    let entries = audit(&cfg);
    assert!(entries.iter().any(|e| e["action"] == "tools.put"
        && e["result"] == "failed"
        && e["status"] == 422
        && e["token_name"] == "deployer"));
    assert!(entries
        .iter()
        .any(|e| e["action"] == "tools.put" && e["result"] == "allowed" && e["status"] == 200));
}

/// Sends a raw request line (so `..` reaches the server as written) and
/// returns the status.
async fn raw_status(admin: std::net::SocketAddr, request: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn tool_ids_cannot_traverse_out_of_the_tools_folder() {
    let (_origin, proxy) = start(&[("hook", events::hook("http://127.0.0.1:9"))]).await;
    let cfg = proxy.config.clone();
    let t = create(&cfg, "deployer", "config:read,config:write", &[]);
    let config_before = std::fs::read(&cfg).unwrap();
    let evil = events::hook("http://127.0.0.1:9");
    for path in [
        "/admin/tools/..%2Ftagproxy",
        "/admin/tools/%2e%2e%2ftagproxy",
        "/admin/tools/..%2F..%2Fetc%2Fpasswd",
        "/admin/tools/a.b",
        "/admin/tools/.hidden",
        "/admin/tools/a%00b",
    ] {
        for method in ["GET", "PUT", "DELETE"] {
            let (status, _, body) =
                call(&proxy, method, path, Some(&t.secret), Some(evil.clone())).await;
            assert_eq!(status, 400, "{method} {path}: {body}");
            assert!(json_of(&body)["error"]
                .as_str()
                .unwrap()
                .contains("invalid tool id"));
        }
    }
    // Literal dot segments and slashes, as a raw request line.
    for target in [
        "/admin/tools/../tagproxy",
        "/admin/tools/../../x",
        "/admin/tools/sub/x",
    ] {
        let request = format!(
            "PUT {target} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{evil}",
            t.secret,
            evil.len()
        );
        assert_eq!(raw_status(proxy.admin, &request).await, 400, "{target}");
    }
    assert_eq!(std::fs::read(&cfg).unwrap(), config_before);
    let root: Vec<_> = std::fs::read_dir(proxy.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    assert_eq!(root, ["tagproxy.toml"]);
    assert_eq!(files(&proxy.dir.path().join("tools")).len(), 1);
}

#[tokio::test]
async fn config_answers_redact_secret_variables_and_tool_credentials() {
    let meta = Destination::start().await;
    let origin = Origin::page("text/html", PAGE).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    const ENV_SECRET: &str = "EAAenvSecretValue0123456789";
    const LITERAL_TOKEN: &str = "EAAliteralAccessToken987654";
    const HEADER_KEY: &str = "hookHeaderKey5555";
    std::fs::write(
        dir.path().join("tools/meta.toml"),
        format!(
            "type = \"facebook-pixel\"\nendpoint = \"{}\"\n[settings]\npixel_id = \"1234567890\"\naccess_token = \"{{{{ $meta_token }}}}\"\n[automated]\npageview = true\n",
            meta.url()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tools/meta2.toml"),
        format!(
            "type = \"facebook-pixel\"\nendpoint = \"{}\"\n[settings]\npixel_id = \"42\"\naccess_token = \"{LITERAL_TOKEN}\"\n[automated]\npageview = true\n",
            meta.url()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tools/hook.toml"),
        format!(
            "type = \"http\"\n[settings]\nurl = \"http://127.0.0.1:9/hook\"\n[settings.headers]\nx-api-key = \"{HEADER_KEY}\"\nx-echo = \"{{{{ $meta_token }}}}\"\n[automated]\npageview = true\n"
        ),
    )
    .unwrap();
    let path = dir.path().join("tagproxy.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\n{LISTEN_ANY}\nupstream = \"http://{}\"\n[variables]\nsite_name = \"Demo shop\"\nmeta_token = {{ secret = \"META_TOKEN\" }}\n",
            origin.addr
        ),
    )
    .unwrap();
    let proxy = Proxy::spawn(dir, path, &[("TAGPROXY_SECRET_META_TOKEN", ENV_SECRET)]).await;
    let reader = create(&proxy.config, "reader", "config:read", &[]);
    let (status, _, body) = call(&proxy, "GET", "/admin/config", Some(&reader.secret), None).await;
    assert_eq!(status, 200, "{body}");
    for secret in [ENV_SECRET, LITERAL_TOKEN, HEADER_KEY] {
        assert!(!body.contains(secret), "{secret} in {body}");
    }
    let config = json_of(&body);
    assert_eq!(config["variables"]["site_name"], "Demo shop");
    assert_eq!(config["variables"]["meta_token"], "[redacted]");
    assert_eq!(
        config["tools"]["meta2"]["settings"]["access_token"],
        "[redacted]"
    );
    assert_eq!(config["tools"]["meta2"]["settings"]["pixel_id"], "42");
    assert_eq!(
        config["tools"]["hook"]["settings"]["headers"]["x-api-key"],
        "[redacted]"
    );
    assert!(config["config"]["server"]["upstream"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    assert_eq!(
        config["config"]["variables"]["site_name"], "Demo shop",
        "{config:#}"
    );
    // The tool GET answers the file itself (config:read may read files).
    let (status, _, text) = call(
        &proxy,
        "GET",
        "/admin/tools/meta",
        Some(&reader.secret),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(text.contains("{{ $meta_token }}") && !text.contains(ENV_SECRET));
}

#[tokio::test]
async fn reload_answers_the_tool_count_or_the_problems() {
    let (_origin, proxy) = start(&[("hook", events::hook("http://127.0.0.1:9"))]).await;
    let t = create(&proxy.config, "ops", "config:write", &[]);
    let (status, _, body) = call(&proxy, "POST", "/admin/reload", Some(&t.secret), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body), json!({"ok": true, "tools": 1}));
    // A broken file: 422 with FILE:LINE:COL problems, the old config runs.
    let tools = proxy.dir.path().join("tools");
    std::fs::write(tools.join("broken.toml"), "type = \"http\"\nbad = 1\n").unwrap();
    let (status, _, body) = call(&proxy, "POST", "/admin/reload", Some(&t.secret), None).await;
    assert_eq!(status, 422, "{body}");
    let answer = json_of(&body);
    let problem = answer["problems"][0].as_str().unwrap();
    assert!(
        problem.contains("broken.toml:2:1: unknown field `bad`"),
        "{problem}"
    );
    // While another file is broken, a PUT is refused too and names it.
    let (status, _, body) = call(
        &proxy,
        "PUT",
        "/admin/tools/hook",
        Some(&t.secret),
        Some(events::hook("http://127.0.0.1:10")),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("broken.toml:2:1"), "{body}");
    std::fs::remove_file(tools.join("broken.toml")).unwrap();
    let (status, _, _) = call(&proxy, "POST", "/admin/reload", Some(&t.secret), None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_admin_listener_off_loopback_needs_a_token_for_metrics_and_check_warns() {
    let origin = Origin::page("text/html", PAGE).await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"0.0.0.0:0\"\nupstream = \"http://{}\"\n",
        origin.addr
    );
    let (dir, path) = write_config(&text);
    let (code, out, err) = cli(&path, &["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ok:"), "{out}");
    assert!(
        err.contains("warning:")
            && err.contains("admin_listen 0.0.0.0:0 is not a loopback address"),
        "{err}"
    );
    let proxy = Proxy::spawn(dir, path, &[]).await;
    assert_eq!(proxy.admin.ip().to_string(), "127.0.0.1");
    let cfg = proxy.config.clone();
    let metrics = create(&cfg, "prometheus", "metrics:read", &[]);
    let events_reader = create(&cfg, "debugger", "events:read", &[]);
    let other = create(&cfg, "config", "config:read", &[]);

    let (status, headers, body) = call(&proxy, "GET", "/metrics", None, None).await;
    assert_401(status, &headers, &body);
    assert!(!body.contains("tagproxy_"), "{body}");
    let (status, _, body) = call(&proxy, "GET", "/metrics", Some(&other.secret), None).await;
    assert_eq!(status, 403, "{body}");
    for t in [&metrics, &events_reader] {
        let (status, _, body) = call(&proxy, "GET", "/metrics", Some(&t.secret), None).await;
        assert_eq!(status, 200);
        assert!(body.contains("tagproxy_"), "{body}");
    }
    // Probes keep working without a token.
    let (status, _, body) = call(&proxy, "GET", "/healthz", None, None).await;
    assert_eq!((status, body.as_str()), (200, r#"{"ok":true}"#));
    assert_eq!(call(&proxy, "GET", "/readyz", None, None).await.0, 200);
    // The admin API itself is the same.
    let (status, headers, body) = call(&proxy, "GET", "/admin/config", None, None).await;
    assert_401(status, &headers, &body);
    assert_eq!(
        call(&proxy, "GET", "/admin/config", Some(&other.secret), None)
            .await
            .0,
        200
    );
    assert!(proxy
        .logs()
        .contains("admin_listen is not a loopback address"));
    let entries = audit(&cfg);
    assert!(entries.iter().any(|e| e["action"] == "metrics.read"
        && e["result"] == "refused"
        && e["status"] == 403
        && e["token_name"] == "config"));
}

#[test]
fn cli_token_list_never_shows_secrets_and_audit_since_filters() {
    let (dir, path) = write_config("[server]\nupstream = \"http://127.0.0.1:9\"\n");
    let a = create(
        &path,
        "first",
        "config:read,events:write",
        &["--expires-in", "90d"],
    );
    let b = create(&path, "second", "tokens:write", &[]);
    let (code, rolled, _) = cli(&path, &["token", "roll", &b.id]);
    assert_eq!(code, 0);
    let secrets = [
        a.secret.clone(),
        b.secret.clone(),
        rolled.trim().to_string(),
    ];
    let hashes: Vec<String> = secrets
        .iter()
        .map(|s| {
            use sha2::Digest;
            sha2::Sha256::digest(s.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
        .collect();

    let (code, table, err) = cli(&path, &["token", "list"]);
    assert_eq!(code, 0, "{err}");
    let (code, lines, err) = cli(&path, &["token", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    for out in [&table, &lines, &err] {
        for s in &secrets {
            assert!(!out.contains(&s[5..]), "secret in {out}");
        }
        for h in &hashes {
            assert!(!out.contains(&h[..16]), "hash in {out}");
        }
        assert!(!out.contains("sha256"), "{out}");
    }
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains(&a.id)
            && table.contains("first")
            && table.contains("config:read,events:write")
    );
    let listed: Vec<Value> = lines.lines().map(json_of).collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["name"], "first");
    assert!(listed[0]["expires_ms"].is_u64());
    assert_eq!(listed[1]["scopes"], json!(["tokens:write"]));

    // audit --since: a time, a duration, a date prefix; a bad value is usage.
    let all = audit(&path);
    assert!(all.len() >= 5, "{all:#?}");
    let since = |arg: &str| {
        let (code, out, err) = cli(&path, &["audit", "--json", "--since", arg]);
        assert_eq!(code, 0, "{err}");
        out.lines().count()
    };
    assert_eq!(since("1h"), all.len());
    assert_eq!(since("2000-01-01"), all.len());
    assert_eq!(since("9999-01-01"), 0);
    let last = all.last().unwrap()["time"].as_str().unwrap().to_string();
    assert!(since(&last) >= 1);
    assert_eq!(cli(&path, &["audit", "--since", "yesterday"]).0, 2);
    let (_, text, _) = cli(&path, &["audit"]);
    assert!(
        text.contains("token.roll") && text.contains("cli:"),
        "{text}"
    );
    assert_no_secret_on_disk_cli(dir.path(), &secrets);
}

/// Like `assert_no_secret_on_disk`, for a folder without a server.
fn assert_no_secret_on_disk_cli(dir: &Path, secrets: &[String]) {
    for path in files(dir) {
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).to_string();
        for s in secrets {
            assert!(!text.contains(&s[5..]), "secret in {}", path.display());
        }
    }
}

/// Off loopback, a not-ready `/readyz` still answers `503` to a probe, but
/// says why only to a token holder (the reason describes the spool).
#[tokio::test]
async fn off_loopback_readyz_keeps_its_reason_for_token_holders() {
    let origin = Origin::page("text/html", PAGE).await;
    // Nothing listens there: deliveries stay in the spool until it is full.
    let down = format!("http://127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    std::fs::write(dir.path().join("tools/down.toml"), events::hook(&down)).unwrap();
    let path = dir.path().join("tagproxy.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"0.0.0.0:0\"\nupstream = \"http://{}\"\n[delivery]\nretry_base_ms = 60000\nspool_max_bytes = 4096\n",
            origin.addr
        ),
    )
    .unwrap();
    let proxy = Proxy::spawn(dir, path, &[]).await;
    let probe = create(&proxy.config, "probe", "metrics:read", &[]);
    let mut n = 0;
    while events::post_status(&proxy.url(""), &[format!("ready-{n:06}")]).await != Some(503) {
        n += 1;
        assert!(n < 1000, "the spool never filled");
    }
    let (status, _, body) = call(&proxy, "GET", "/readyz", None, None).await;
    assert_eq!((status, body.as_str()), (503, r#"{"ok":false}"#));
    let (status, _, body) = call(&proxy, "GET", "/readyz", Some(&probe.secret), None).await;
    assert_eq!(status, 503);
    assert!(json_of(&body)["reason"]
        .as_str()
        .unwrap()
        .contains("spool is full"));
}

/// `/readyz` is `503` with the reason while the origin does not accept
/// connections (issue 12: "upstream reachable"), and ready again once it
/// does; `/healthz` stays `200` (the process is alive either way).
#[tokio::test]
async fn readyz_says_when_the_upstream_is_unreachable() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    let path = dir.path().join("tagproxy.toml");
    std::fs::write(
        &path,
        format!("[server]\n{LISTEN_ANY}\nupstream = \"http://127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let proxy = Proxy::spawn(dir, path, &[]).await;
    let (status, _, body) = call(&proxy, "GET", "/readyz", None, None).await;
    assert_eq!(status, 503, "{body}");
    let reason: Value = serde_json::from_str(&body).unwrap();
    assert!(
        reason["reason"]
            .as_str()
            .unwrap()
            .starts_with(&format!("upstream 127.0.0.1:{port} unreachable")),
        "{body}"
    );
    assert_eq!(call(&proxy, "GET", "/healthz", None, None).await.0, 200);

    // The origin comes up: ready at the next probe (every 5 s).
    let _origin = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while call(&proxy, "GET", "/readyz", None, None).await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
