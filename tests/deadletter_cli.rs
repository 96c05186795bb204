//! `tagproxy deadletter list|replay|purge` against a store filled through the
//! library types: output, filters, exit codes, and replay queueing the
//! deliveries in the spool's inbox before removing them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tagproxy::delivery::deadletter::{DeadLetter, DeadLetters, Filter};
use tagproxy::delivery::inbox;
use tagproxy::tools::{Delivery, HttpRequest, Payload};

/// A config folder: `tagproxy.toml`, a tool that needs a secret (which these
/// commands must not require), and the data dir the store lives in.
struct Site {
    dir: tempfile::TempDir,
    config: PathBuf,
}

const CONFIG: &str = r#"[server]
upstream = "http://127.0.0.1:1"
[variables]
hook_key = { secret = "DEADLETTER_CLI_TEST_KEY" }
"#;

const TOOL: &str = r#"type = "http"
[settings]
url = "https://hooks.example/in"
[settings.headers]
authorization = "Bearer {{ $hook_key }}"
[automated]
track = true
"#;

impl Site {
    fn new(config: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tagproxy.toml");
        std::fs::write(&path, config).unwrap();
        std::fs::create_dir(dir.path().join("tools")).unwrap();
        std::fs::write(dir.path().join("tools/hook.toml"), TOOL).unwrap();
        Site { dir, config: path }
    }

    fn store(&self) -> DeadLetters {
        DeadLetters::new(&self.dir.path().join("data"))
    }

    /// Runs the binary from another folder, so relative paths must resolve
    /// against the config file's folder.
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_tagproxy"))
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .current_dir(std::env::temp_dir())
            .env_remove("TAGPROXY_CONFIG")
            .env_remove("TAGPROXY_SECRET_DEADLETTER_CLI_TEST_KEY")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }
}

fn delivery(tool: &str, event_id: &str) -> Delivery {
    Delivery {
        tool: tool.into(),
        event_id: event_id.into(),
        payload: Payload::Http(HttpRequest {
            method: "POST".into(),
            url: "https://hooks.example/in".into(),
            headers: vec![("idempotency-key".into(), event_id.into())],
            body: Some(format!("{{\"event\":\"{event_id}\"}}").into_bytes()),
        }),
        source: None,
        secrets: Vec::new(),
    }
}

/// Three letters: two for `hook`, one for `ga4`.
fn fill(site: &Site) -> Vec<DeadLetter> {
    let mut a = DeadLetter::new(
        delivery("hook", "evt-a"),
        "HTTP 400: {\"error\":\"bad field\"}",
        Some(400),
        b"{\"error\":\"bad field\"}",
        1,
        1_732_450_000_000,
    );
    a.failed_ms = 1_732_450_001_500;
    let b = DeadLetter::new(
        delivery("ga4", "evt-b"),
        "gave up after 8 attempts: connection error",
        None,
        b"",
        8,
        1_732_450_000_000,
    );
    let c = DeadLetter::new(
        delivery("hook", "evt-c"),
        "gave up after 8 attempts: HTTP 503",
        Some(503),
        b"unavailable",
        8,
        1_732_450_000_000,
    );
    let letters = vec![a, b, c];
    site.store().append(&letters).unwrap();
    letters
}

fn remaining(site: &Site) -> Vec<String> {
    let listing = site.store().list(&Filter::default()).unwrap();
    listing.letters.into_iter().map(|l| l.event_id).collect()
}

#[test]
fn list_of_an_absent_store_is_empty() {
    let site = Site::new(CONFIG);
    let (code, out, err) = site.run(&["deadletter", "list"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "0 dead letters\n");
    let (code, out, err) = site.run(&["deadletter", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "");
    assert!(
        !site.dir.path().join("data").exists(),
        "listing creates nothing"
    );
}

#[test]
fn list_as_text_and_json() {
    let site = Site::new(CONFIG);
    let letters = fill(&site);
    let (code, out, err) = site.run(&["deadletter", "list"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(
        lines[0],
        format!(
            "{}  hook  evt-a  400  1  2024-11-24T12:06:41.500Z  HTTP 400: {{\"error\":\"bad field\"}}",
            letters[0].id
        )
    );
    assert!(
        lines[1].starts_with(&format!("{}  ga4  evt-b  -  8  ", letters[1].id)),
        "{}",
        lines[1]
    );
    assert!(lines[1].ends_with("  gave up after 8 attempts: connection error"));
    assert!(lines[2].contains("  hook  evt-c  503  8  "));
    assert_eq!(lines[3], "3 dead letters");

    let (code, out, err) = site.run(&["deadletter", "list", "--tool", "hook"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("\n2 dead letters\n"), "{out}");
    assert!(!out.contains("evt-b"));

    let (code, out, err) = site.run(&["deadletter", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    // Bodies are text, not arrays of byte values (issue 13).
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(
        first["delivery"]["payload"]["Http"]["body"],
        "{\"event\":\"evt-a\"}"
    );
    assert!(first["delivery"]["payload"]["Http"]
        .get("body_encoding")
        .is_none());
    let parsed: Vec<DeadLetter> = out.lines().map(from_listing).collect();
    assert_eq!(parsed, letters);
    let (_, out, _) = site.run(&["deadletter", "list", "--json", "--tool", "ga4"]);
    let parsed: Vec<DeadLetter> = out.lines().map(from_listing).collect();
    assert_eq!(parsed, vec![letters[1].clone()]);
}

/// A `list --json` line back as a dead letter: the text (or base64) body
/// turned into bytes again.
fn from_listing(line: &str) -> DeadLetter {
    use base64::Engine as _;
    let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
    if let Some(http) = v.pointer_mut("/delivery/payload/Http") {
        let bytes = match (http["body"].as_str(), http.get("body_encoding")) {
            (Some(b64), Some(enc)) => {
                assert_eq!(enc, "base64");
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap()
            }
            (Some(text), None) => text.as_bytes().to_vec(),
            _ => return serde_json::from_value(v).unwrap(),
        };
        http["body"] = serde_json::json!(bytes);
        http.as_object_mut().unwrap().remove("body_encoding");
    }
    serde_json::from_value(v).unwrap()
}

#[test]
fn list_json_shows_a_binary_body_as_base64() {
    let site = Site::new(CONFIG);
    let mut d = delivery("hook", "evt-bin");
    if let Payload::Http(req) = &mut d.payload {
        req.body = Some(vec![0xff, 0x00, b'a']);
    }
    let letter = DeadLetter::new(d, "HTTP 400: no", Some(400), b"", 1, 0);
    site.store().append(std::slice::from_ref(&letter)).unwrap();
    let (code, out, err) = site.run(&["deadletter", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let http = &v["delivery"]["payload"]["Http"];
    assert_eq!(http["body"], "/wBh");
    assert_eq!(http["body_encoding"], "base64");
    assert_eq!(from_listing(out.trim()), letter);
}

#[test]
fn list_counts_unreadable_lines() {
    let site = Site::new(CONFIG);
    fill(&site);
    let path = site.store().path().to_path_buf();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"id\":\"torn");
    std::fs::write(&path, text).unwrap();
    let (code, out, err) = site.run(&["deadletter", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.ends_with("\n3 dead letters, 1 unreadable line\n"),
        "{out}"
    );
    let (code, out, err) = site.run(&["deadletter", "list", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 3);
    assert!(err.contains("1 unreadable line"), "{err}");
    // Purging everything keeps the line it cannot read.
    let (code, out, _) = site.run(&["deadletter", "purge", "--all"]);
    assert_eq!((code, out.as_str()), (0, "purged 3 dead letters\n"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"id\":\"torn\n");
}

#[test]
fn purge_by_id_tool_or_all() {
    let site = Site::new(CONFIG);
    let letters = fill(&site);
    // By dead-letter id and by event id; unknown ids are no error.
    let (code, out, err) = site.run(&["deadletter", "purge", &letters[0].id, "nope"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "purged 1 dead letter\n");
    assert_eq!(remaining(&site), ["evt-b", "evt-c"]);
    let (code, out, _) = site.run(&["deadletter", "purge", "evt-c"]);
    assert_eq!((code, out.as_str()), (0, "purged 1 dead letter\n"));
    assert_eq!(remaining(&site), ["evt-b"]);
    // --tool and ids together must both match.
    let (code, out, _) = site.run(&["deadletter", "purge", "--tool", "hook", "evt-b"]);
    assert_eq!((code, out.as_str()), (0, "purged 0 dead letters\n"));
    assert_eq!(remaining(&site), ["evt-b"]);

    fill(&site);
    let (code, out, _) = site.run(&["deadletter", "purge", "--tool", "hook"]);
    assert_eq!((code, out.as_str()), (0, "purged 2 dead letters\n"));
    assert_eq!(remaining(&site), ["evt-b", "evt-b"]);

    let (code, out, _) = site.run(&["deadletter", "purge", "--all"]);
    assert_eq!((code, out.as_str()), (0, "purged 2 dead letters\n"));
    assert!(remaining(&site).is_empty());
}

#[test]
fn purge_without_a_filter_is_a_usage_error() {
    let site = Site::new(CONFIG);
    fill(&site);
    for args in [
        &["deadletter", "purge"][..],
        &["deadletter", "purge", "--all", "evt-a"],
        &["deadletter", "purge", "--all", "--tool", "hook"],
        &["deadletter"],
        &["deadletter", "list", "evt-a"],
    ] {
        let (code, out, err) = site.run(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert_eq!(out, "");
        assert!(err.contains("Usage"), "{err}");
    }
    assert_eq!(remaining(&site).len(), 3, "nothing was purged");
}

#[test]
fn replay_queues_deliveries_in_the_inbox_then_removes_them() {
    let site = Site::new(CONFIG);
    let letters = fill(&site);
    let spool = site.dir.path().join("data/spool");

    let (code, out, err) = site.run(&["deadletter", "replay", "--tool", "hook"]);
    assert_eq!(code, 0, "{err}");
    let inbox_dir = spool.join("inbox");
    let files: Vec<PathBuf> = std::fs::read_dir(&inbox_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    assert!(file.to_string_lossy().ends_with(".jsonl"));
    assert_eq!(
        out,
        format!("replayed 2 dead letters (queued in {})\n", file.display())
    );
    let queued: Vec<Delivery> = std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        queued,
        vec![letters[0].delivery.clone(), letters[2].delivery.clone()]
    );
    assert_eq!(remaining(&site), ["evt-b"]);
    // The engine's view of the same inbox.
    let pending = inbox::pending(&spool).unwrap();
    assert_eq!(pending, vec![(file.clone(), queued)]);

    // By id (dead-letter id here).
    let (code, out, err) = site.run(&["deadletter", "replay", &letters[1].id]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("replayed 1 dead letter (queued in "),
        "{out}"
    );
    assert!(remaining(&site).is_empty());
    let pending = inbox::pending(&spool).unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[1].1, vec![letters[1].delivery.clone()]);
}

#[test]
fn replay_of_nothing() {
    let site = Site::new(CONFIG);
    let (code, out, err) = site.run(&["deadletter", "replay"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "nothing to replay\n");
    fill(&site);
    let (code, out, _) = site.run(&["deadletter", "replay", "--tool", "meta", "evt-a"]);
    assert_eq!((code, out.as_str()), (0, "nothing to replay\n"));
    let (code, out, _) = site.run(&["deadletter", "replay", "--tool", "ga4", "evt-a"]);
    assert_eq!((code, out.as_str()), (0, "nothing to replay\n"));
    assert!(!site.dir.path().join("data/spool/inbox").exists());
    assert_eq!(remaining(&site).len(), 3);
}

#[test]
fn data_dir_and_spool_dir_resolve_against_the_config_folder() {
    let config = format!("data_dir = \"state\"\n{CONFIG}[delivery]\nspool_dir = \"queue/spool\"\n");
    let site = Site::new(&config);
    let store = DeadLetters::new(&site.dir.path().join("state"));
    store
        .append(&[DeadLetter::new(
            delivery("hook", "evt-z"),
            "HTTP 422",
            Some(422),
            b"",
            1,
            0,
        )])
        .unwrap();
    let (code, out, err) = site.run(&["deadletter", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("\n1 dead letter\n"), "{out}");
    let (code, out, err) = site.run(&["deadletter", "replay", "evt-z"]);
    assert_eq!(code, 0, "{err}");
    let inbox_dir = site.dir.path().join("queue/spool/inbox");
    assert!(out.contains(&inbox_dir.display().to_string()), "{out}");
    assert_eq!(
        inbox::pending(&site.dir.path().join("queue/spool"))
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.count().unwrap(), 0);
}

#[test]
fn an_invalid_config_exits_1_with_its_problems() {
    let site = Site::new("[server]\nupstrem = \"http://127.0.0.1:1\"\n");
    for args in [
        &["deadletter", "list"][..],
        &["deadletter", "replay"],
        &["deadletter", "purge", "--all"],
    ] {
        let (code, out, err) = site.run(args);
        assert_eq!(code, 1, "{args:?}");
        assert_eq!(out, "");
        let want = format!("{}:2:1: unknown field `upstrem`", site.config.display());
        assert!(err.starts_with(&want), "{err}");
    }
    // A broken tool file is a broken config too.
    let site = Site::new(CONFIG);
    std::fs::write(site.dir.path().join("tools/bad.toml"), "type = \"nope\"\n").unwrap();
    let (code, _, err) = site.run(&["deadletter", "list"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("bad.toml"), "{err}");
}

#[test]
fn a_store_that_cannot_be_read_exits_1() {
    let site = Site::new(CONFIG);
    // The data dir is a file: the store cannot exist there.
    std::fs::write(site.dir.path().join("data"), "not a folder").unwrap();
    let store_path: &Path = &site.dir.path().join("data/deadletters.jsonl");
    let (code, out, err) = site.run(&["deadletter", "list"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&store_path.display().to_string()), "{err}");
}

const WRONG_TOKEN: &str = "EAAwrong-token-0123456789/+=";
const GOOD_TOKEN: &str = "EAAgood-token-9876543210";

/// Every file under `dir` except the spool (which holds in-flight requests,
/// credentials included, because it must send them), with its bytes.
fn files_outside_spool(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().unwrap() != "spool" {
                files_outside_spool(&path, out);
            }
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn cli(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tagproxy"));
    cmd.arg("-c")
        .arg(config)
        .args(args)
        .env_remove("TAGPROXY_SECRET_META");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

async fn wait_letters(store: &DeadLetters, n: usize) -> Vec<DeadLetter> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let letters = store.list(&Filter::default()).unwrap().letters;
        if letters.len() >= n {
            return letters;
        }
        assert!(Instant::now() < deadline, "no dead letter after 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 13: a Meta tool with a wrong token dead-letters; the store holds no
/// credential (redacted), `list --json` shows the body as text, `--as-stored`
/// refuses a redacted letter, and after the secret is fixed `replay` builds
/// the request again from the stored event: Meta gets the new token.
/// Meta takes the token as the `access_token` body parameter and refuses a
/// bad one with an OAuthException, HTTP 400/401:
/// https://developers.facebook.com/docs/marketing-api/conversions-api/using-the-api
/// https://developers.facebook.com/docs/graph-api/guides/error-handling/
#[tokio::test]
async fn replay_rebuilds_with_the_fixed_secret_and_letters_hold_no_secret() {
    use common::{Destination, Origin, Proxy, Script, LISTEN_ANY};
    let dest = Destination::with_script(Script {
        statuses: vec![401, 200],
        ..Script::default()
    })
    .await;
    let origin = Origin::page("text/html", "<html><head></head><body>x</body></html>").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    std::fs::write(
        dir.path().join("tools/meta.toml"),
        format!(
            "type = \"facebook-pixel\"\nendpoint = \"{}\"\n[settings]\npixel_id = \"123\"\naccess_token = \"{{{{ $meta_token }}}}\"\n[automated]\ntrack = true\n",
            dest.url()
        ),
    )
    .unwrap();
    let config = dir.path().join("tagproxy.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\n{LISTEN_ANY}\nupstream = \"http://{}\"\n[variables]\nmeta_token = {{ secret = \"META\" }}\n",
            origin.addr
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let proxy = Proxy::spawn(
        dir,
        config.clone(),
        &[("TAGPROXY_SECRET_META", WRONG_TOKEN)],
    )
    .await;
    let status = common::client()
        .post(proxy.url("/_tagproxy/t"))
        .header("content-type", "application/json")
        .body(r#"[{"type":"track","name":"Purchase","properties":{"value":5,"currency":"EUR"},"page":{"url":"https://shop.test/"}}]"#)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let store = DeadLetters::new(&data);
    let letters = wait_letters(&store, 1).await;
    let first = dest.requests();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].json()["access_token"], WRONG_TOKEN);
    assert!(letters[0].redacted);

    // No credential anywhere in data_dir (spool aside), in any form.
    let mut files = Vec::new();
    files_outside_spool(&data, &mut files);
    assert!(files.iter().any(|(p, _)| p.ends_with("deadletters.jsonl")));
    for form in tagproxy::delivery::deadletter::secret_forms(WRONG_TOKEN) {
        for (path, bytes) in &files {
            assert!(
                !contains(bytes, &form),
                "{} holds the token as {form:?}",
                path.display()
            );
        }
    }

    // `list --json`: the body is text, with the token redacted.
    let (code, out, err) = cli(&config, &["deadletter", "list", "--json"], &[]);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let body = listed["delivery"]["payload"]["Http"]["body"]
        .as_str()
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["access_token"], "[REDACTED]");
    assert_eq!(body["data"][0]["event_name"], "Purchase");
    assert!(!out.contains(WRONG_TOKEN));

    // Byte for byte is impossible without the token: refused, kept.
    let (code, _, err) = cli(&config, &["deadletter", "replay", "--as-stored"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("redacted"), "{err}");
    assert_eq!(store.count().unwrap(), 1);

    // Rebuilding needs the secret, as serve does.
    let (code, _, err) = cli(&config, &["deadletter", "replay"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("TAGPROXY_SECRET_META"), "{err}");
    assert_eq!(store.count().unwrap(), 1);

    // The secret fixed: rebuilt from the stored event with the new token.
    let (code, out, err) = cli(
        &config,
        &["deadletter", "replay"],
        &[("TAGPROXY_SECRET_META", GOOD_TOKEN)],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 1 dead letter"), "{out}");
    let got = dest.wait_for(2, Duration::from_secs(15)).await;
    let again = got[1].json();
    assert_eq!(again["access_token"], GOOD_TOKEN);
    // The same event: same id and the same event data as the first attempt.
    let was = first[0].json();
    assert_eq!(again["data"], was["data"]);
    proxy.settled().await;
    assert_eq!(
        store.count().unwrap(),
        0,
        "delivered, not dead-lettered again"
    );
}

/// A token fixed in the tool file (no secret variable) is used on replay too.
#[tokio::test]
async fn replay_rebuilds_with_the_fixed_tool_file() {
    use common::{Destination, Origin, Proxy, Script, LISTEN_ANY};
    let dest = Destination::with_script(Script {
        statuses: vec![400, 200],
        ..Script::default()
    })
    .await;
    let origin = Origin::page("text/html", "<html><head></head><body>x</body></html>").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    let tool = |token: &str| {
        format!(
            "type = \"facebook-pixel\"\nendpoint = \"{}\"\n[settings]\npixel_id = \"123\"\naccess_token = \"{token}\"\n[automated]\ntrack = true\n",
            dest.url()
        )
    };
    let tool_path = dir.path().join("tools/meta.toml");
    std::fs::write(&tool_path, tool(WRONG_TOKEN)).unwrap();
    let config = dir.path().join("tagproxy.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\n{LISTEN_ANY}\nupstream = \"http://{}\"\n",
            origin.addr
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let proxy = Proxy::spawn(dir, config.clone(), &[]).await;
    common::client()
        .post(proxy.url("/_tagproxy/t"))
        .header("content-type", "application/json")
        .body(r#"[{"type":"track","name":"Lead","page":{"url":"https://shop.test/"}}]"#)
        .send()
        .await
        .unwrap();
    let store = DeadLetters::new(&data);
    wait_letters(&store, 1).await;
    let text = std::fs::read_to_string(store.path()).unwrap();
    assert!(!text.contains(WRONG_TOKEN), "{text}");

    std::fs::write(&tool_path, tool(GOOD_TOKEN)).unwrap();
    let (code, _, err) = cli(&config, &["deadletter", "replay"], &[]);
    assert_eq!(code, 0, "{err}");
    let got = dest.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(got[1].json()["access_token"], GOOD_TOKEN);
    proxy.settled().await;
    assert_eq!(store.count().unwrap(), 0);
}

/// A custom action's request is rebuilt from the action as the tool file
/// now has it, found by name even after the file's actions were reordered.
#[tokio::test]
async fn replay_rebuilds_a_custom_action_with_its_fixed_url() {
    use common::{Destination, Origin, Proxy, Script, LISTEN_ANY};
    let dest = Destination::with_script(Script {
        statuses: vec![404, 200],
        ..Script::default()
    })
    .await;
    let origin = Origin::page("text/html", "<html><head></head><body>x</body></html>").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    let notify = |path: &str| {
        format!(
            "[[actions]]\nname = \"notify\"\nkind = \"request\"\nfiring = [\"lead\"]\ninclude_event_properties = true\n[actions.fields]\nurl = \"{}{path}\"\n",
            dest.url()
        )
    };
    let head = format!(
        "type = \"http\"\n[settings]\nurl = \"{}/base\"\n",
        dest.url()
    );
    let tool_path = dir.path().join("tools/hook.toml");
    std::fs::write(&tool_path, format!("{head}{}", notify("/wrong"))).unwrap();
    let config = dir.path().join("tagproxy.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\n{LISTEN_ANY}\nupstream = \"http://{}\"\n[triggers.lead]\nrules = [ {{ match = \"{{{{ client.__zarazTrack }}}}\", op = \"equals\", value = \"Lead\" }} ]\n",
            origin.addr
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let proxy = Proxy::spawn(dir, config.clone(), &[]).await;
    common::client()
        .post(proxy.url("/_tagproxy/t"))
        .header("content-type", "application/json")
        .body(r#"[{"type":"track","name":"Lead","properties":{"plan":"pro"},"page":{"url":"https://shop.test/"}}]"#)
        .send()
        .await
        .unwrap();
    let store = DeadLetters::new(&data);
    wait_letters(&store, 1).await;
    assert_eq!(dest.requests()[0].path(), "/wrong");

    // Fixed, with another action now first in the file.
    let other = format!(
        "[[actions]]\nname = \"other\"\nkind = \"request\"\nfiring = [\"Pageview\"]\n[actions.fields]\nurl = \"{}/other\"\n",
        dest.url()
    );
    std::fs::write(&tool_path, format!("{head}{other}{}", notify("/right"))).unwrap();
    let (code, _, err) = cli(&config, &["deadletter", "replay"], &[]);
    assert_eq!(code, 0, "{err}");
    let got = dest.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(got[1].path(), "/right");
    assert_eq!(got[1].method, "POST");
    assert_eq!(got[1].json()["plan"], "pro");
    assert_eq!(
        got[1].headers["idempotency-key"], got[0].headers["idempotency-key"],
        "the same event"
    );
    proxy.settled().await;
    assert_eq!(store.count().unwrap(), 0);

    // An action that is gone: named, kept, exit 1. The server must run the
    // rewritten file (notify at index 0) before the event arrives, so that
    // the index the letter records belongs to `other` afterwards.
    let reloads = proxy.logs().matches("config reloaded").count();
    std::fs::write(&tool_path, format!("{head}{}", notify("/wrong"))).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while proxy.logs().matches("config reloaded").count() == reloads {
        assert!(std::time::Instant::now() < deadline, "no reload seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    dest.set_script(Script {
        statuses: vec![404],
        ..Script::default()
    });
    common::client()
        .post(proxy.url("/_tagproxy/t"))
        .header("content-type", "application/json")
        .body(r#"[{"type":"track","name":"Lead","page":{"url":"https://shop.test/"}}]"#)
        .send()
        .await
        .unwrap();
    let letters = wait_letters(&store, 1).await;
    std::fs::write(&tool_path, format!("{head}{other}")).unwrap();
    let (code, _, err) = cli(&config, &["deadletter", "replay"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "{}: not replayed (kept): tool `hook` no longer has the action `notify`",
            letters[0].id
        )),
        "{err}"
    );
    assert_eq!(store.count().unwrap(), 1);
}
