//! The command line: `check` messages and exit codes, `serve` refusing a bad
//! config, and `demo` serving the bundled shop with injection.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
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

fn check(text: &str) -> (i32, String, String, String) {
    let (dir, path) = write_config(text);
    let path_s = path.to_str().unwrap().to_string();
    let (code, out, err) = run(&["check", "-c", &path_s]);
    drop(dir);
    (code, out, err, path_s)
}

const GOOD: &str = r#"tools_dir = "tools"
data_dir = "data"

[server]
listen = "0.0.0.0:8080"
upstream = "http://127.0.0.1:3000"
prefix = "/_tagproxy"
admin_listen = "127.0.0.1:9090"
trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8", "::1"]
max_event_bytes = 65536
upstream_timeout_ms = 30000

[settings]
auto_inject = true
inject_iframes = false
spa = true
cookie_domain = ""
"#;

#[test]
fn check_accepts_a_good_file() {
    let (code, out, err, _) = check(GOOD);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "ok: 0 tools, 0 triggers\n");
}

#[test]
fn check_reports_file_line_col() {
    let cases = [
        // Unknown key in [server], line 3 column 1.
        ("[server]\nlisten = \"127.0.0.1:8080\"\nupstrem = \"http://127.0.0.1:3000\"\n", "3:1: unknown field `upstrem`, expected one of `listen`, `upstream`, `prefix`, `admin_listen`, `trusted_proxies`, `max_event_bytes`, `upstream_timeout_ms`"),
        // Wrong type: a string where a boolean belongs.
        ("[settings]\nspa = true\nauto_inject = \"yes\"\n", "3:15: invalid type: string \"yes\", expected a boolean"),
        // Bad URL.
        ("[server]\nupstream = \"ftp://origin.example\"\n", "2:12: invalid upstream URL \"ftp://origin.example\": must start with http://"),
        // Unknown top-level key.
        ("tools = \"x\"\n", "1:1: unknown field `tools`"),
    ];
    for (text, want) in cases {
        let (code, out, err, path) = check(text);
        assert_eq!(code, 1, "{text}");
        assert_eq!(out, "");
        let line = err.lines().next().unwrap_or_default();
        assert!(
            line.starts_with(&format!("{path}:{want}")),
            "got {line:?}\nwant {path}:{want}"
        );
    }
}

/// Issue 13: every URL setting of a tool is checked by `check`, at its own
/// line: an `http` tool's `url` and any tool's `endpoint` must be absolute
/// http(s) URLs with a host (before, a bad one was found by deliveries
/// failing with "builder error").
#[test]
fn check_reports_bad_tool_urls_at_their_line() {
    let cases = [
        (
            "type = \"http\"\n[settings]\nurl = \"not a url\"\n[automated]\ntrack = true\n",
            "3:1: \"not a url\" must start with an absolute http:// or https:// URL with a host",
        ),
        (
            "type = \"http\"\n[settings]\nmethod = \"POST\"\n  url = \"ftp://x\"\n[automated]\ntrack = true\n",
            "4:3: \"ftp://x\" must start with an absolute http:// or https:// URL with a host",
        ),
        (
            "type = \"facebook-pixel\"\nendpoint = \"ftp://x\"\n[settings]\npixel_id = \"1\"\naccess_token = \"t\"\n",
            "2:12: invalid endpoint \"ftp://x\"",
        ),
        (
            "type = \"http\"\nendpoint = \"not a url\"\n[settings]\nurl = \"https://ok.example/\"\n",
            "2:12: invalid endpoint \"not a url\"",
        ),
    ];
    for (tool, want) in cases {
        let (dir, path) = write_config("[server]\nupstream = \"http://127.0.0.1:1\"\n");
        std::fs::create_dir(dir.path().join("tools")).unwrap();
        let tool_path = dir.path().join("tools/t.toml");
        std::fs::write(&tool_path, tool).unwrap();
        let (code, _, err) = run(&["check", "-c", path.to_str().unwrap()]);
        assert_eq!(code, 1, "{tool}");
        let want = format!("{}:{want}", tool_path.display());
        assert!(err.starts_with(&want), "got {err:?}\nwant {want}");
    }
}

/// Issue 13: a tool that can never send anything passes `check` with a
/// warning, at its `type` line.
#[test]
fn check_warns_about_a_tool_with_no_action() {
    let (dir, path) = write_config("[server]\nupstream = \"http://127.0.0.1:1\"\n");
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    let tool = dir.path().join("tools/idle.toml");
    std::fs::write(&tool, "type = \"console\"\n").unwrap();
    let (code, out, err) = run(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "ok: 1 tools, 0 triggers\n");
    assert!(
        err.contains(&format!(
            "warning: {}:1:8: tool `idle` has no automated action and no custom action",
            tool.display()
        )),
        "{err}"
    );
    // With an action, no such warning.
    std::fs::write(&tool, "type = \"console\"\n[automated]\ntrack = true\n").unwrap();
    let (code, _, err) = run(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("no automated action"), "{err}");
}

/// Issue 13: `check` finds a `data_dir` that `serve` cannot write (a
/// warning with the path: `check` may run where `serve` does not). Tests
/// may run as root, whom permission bits do not stop, so the data_dir's
/// parent is a regular file; the permission variant runs only as non-root.
#[test]
fn check_warns_about_a_data_dir_it_cannot_write() {
    let (dir, path) = write_config("");
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, "x").unwrap();
    let data = blocker.join("data");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{}\"\n[server]\nupstream = \"http://127.0.0.1:1\"\n",
            data.display()
        ),
    )
    .unwrap();
    let (code, _, err) = run(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "warning: data_dir {}: {} is not a folder",
            data.display(),
            blocker.display()
        )),
        "{err}"
    );

    // A writable one (not created yet): no warning, and nothing created.
    let fine = dir.path().join("fresh/data");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{}\"\n[server]\nupstream = \"http://127.0.0.1:1\"\n",
            fine.display()
        ),
    )
    .unwrap();
    let (code, _, err) = run(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("data_dir"), "{err}");
    assert!(!dir.path().join("fresh").exists());

    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(true);
    if root {
        return; // root writes through permission bits
    }
    use std::os::unix::fs::PermissionsExt;
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{}\"\n[server]\nupstream = \"http://127.0.0.1:1\"\n",
            locked.display()
        ),
    )
    .unwrap();
    let (_, _, err) = run(&["check", "-c", path.to_str().unwrap()]);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(err.contains("cannot write in"), "{err}");
}

/// Issue 13: `--log-format text` into a file (not a terminal) has no ANSI
/// colour codes.
#[test]
fn text_logs_to_a_file_have_no_colour_codes() {
    let (dir, path) = write_config(&format!(
        "[server]\n{LISTEN_ANY}\nupstream = \"http://127.0.0.1:1\"\n"
    ));
    let log = dir.path().join("log.txt");
    let mut child = Command::new(bin())
        .args(["--log-format", "text", "serve", "-c"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("serving") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(text.contains("serving"), "{text}");
    assert!(text.contains(" INFO "), "text format, not JSON: {text}");
    assert!(!text.contains('\x1b'), "ANSI codes in a file: {text:?}");
}

#[test]
fn serve_refuses_a_bad_config_and_usage_errors_exit_2() {
    let (dir, path) = write_config("[server]\nlisten = \"not an address\"\n");
    let (code, _, err) = run(&["serve", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("{}:2:10: invalid listen address", path.display())),
        "{err}"
    );
    drop(dir);

    let (code, _, _) = run(&["no-such-command"]);
    assert_eq!(code, 2);
    let (code, _, _) = run(&["check", "--bogus-flag"]);
    assert_eq!(code, 2);
    let (code, _, err) = run(&["check", "-c", "/nonexistent/tagproxy.toml"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("/nonexistent/tagproxy.toml:1:1: cannot read config"),
        "{err}"
    );
}

/// Issue 13: `demo -c FILE` used to start the demo and ignore the file; it
/// is a usage error that says why.
#[test]
fn demo_with_a_config_file_is_a_usage_error() {
    let (code, out, err) = run(&["demo", "-c", "/tmp/mine.toml", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("`demo` takes no config"), "{err}");
    assert!(err.contains("tagproxy serve -c FILE"), "{err}");
}

#[tokio::test]
async fn demo_serves_the_shop_with_the_script() {
    // Port 0: the demo prints where it listens; read it from stdout (a
    // thread, so a silent child fails the deadline instead of hanging).
    let mut child = Command::new(bin())
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut printed = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let base = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("demo printed no shop URL ({e}): {printed}"));
        printed.push_str(&line);
        printed.push('\n');
        if let Some(url) = line.trim().strip_prefix("shop (proxied, script injected):") {
            break url.trim().trim_end_matches('/').to_string();
        }
    };
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let home = loop {
        if let Ok(resp) = client().get(format!("{base}/")).send().await {
            break resp.text().await.unwrap();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "demo exited: {printed}"
        );
        assert!(Instant::now() < deadline, "demo did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(home.contains(&format!("<head>{TAG}")), "{home}");
    assert!(home.contains("Product List Viewed"));
    for path in [
        "/product/mug",
        "/cart",
        "/checkout",
        "/app",
        "/app/settings",
    ] {
        let resp = client().get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(resp.text().await.unwrap().contains(TAG), "{path}");
    }
    assert_eq!(
        client()
            .get(format!("{base}/nope"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let js = client()
        .get(format!("{base}/_tagproxy/s.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    printed.extend(rx.try_iter().map(|l| l + "\n"));
    assert!(
        printed.contains(&format!("{base}/")),
        "prints what to open: {printed}"
    );
}
