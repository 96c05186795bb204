//! Hostile input (issue 17), end to end: the real binary, a real origin and
//! mock destinations that record what they receive.
//!
//! - A visitor's value in a URL is percent-encoded for its place (RFC 3986
//!   §2: <https://www.rfc-editor.org/rfc/rfc3986#section-2>), so it cannot
//!   add a query parameter, cut the query with `#` or add path segments.
//! - The scheme, host and port of every outgoing URL come from the tool
//!   file: `check` refuses an event value there, with `FILE:LINE:COL`.
//! - A header value with CR, LF or NUL (RFC 9110 §5.5:
//!   <https://www.rfc-editor.org/rfc/rfc9110#section-5.5>) can never be
//!   sent: the delivery is dead-lettered at once with its reason, never sent
//!   or retried, and counted in `/metrics`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::events::{metric, metric_value};
use common::{bin, client, Destination, Origin, Proxy};
use serde_json::{json, Value};

async fn origin() -> Origin {
    Origin::page("text/html", "<html><head></head><body>shop</body></html>").await
}

/// Posts one track event with `props`; the collector's status.
async fn track(proxy: &Proxy, name: &str, props: Value) -> u16 {
    let body = json!([{
        "type": "track",
        "name": name,
        "properties": props,
        "page": {"url": "https://shop.example.com/checkout", "title": "Checkout"},
    }]);
    client()
        .post(proxy.url("/_tagproxy/t"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// `tagproxy deadletter list [--json] -c config`.
fn deadletter_list(proxy: &Proxy, json: bool) -> String {
    let mut cmd = Command::new(bin());
    cmd.args(["deadletter", "list"]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.arg("-c").arg(&proxy.config).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_value_in_the_query_cannot_add_parameters() {
    let origin = origin().await;
    let dest = Destination::start().await;
    let d = dest.url();
    // The tool, and a path segment.
    let hook = format!(
        "type = \"http\"\n[settings]\nurl = \"{d}/hook?q={{{{ client.q }}}}\"\nmethod = \"GET\"\n[automated]\ntrack = true\n"
    );
    let path = format!(
        "type = \"http\"\n[settings]\nurl = \"{d}/u/{{{{ client.q }}}}/x\"\n[automated]\ntrack = true\n"
    );
    let proxy = Proxy::start_tools(
        origin.addr,
        "[delivery]\nbackend = \"memory\"\n",
        &[("hook", hook), ("path", path)],
    )
    .await;
    assert_eq!(
        track(&proxy, "search", json!({"q": "a&admin=1#frag"})).await,
        200
    );
    let got = dest.wait_for(2, Duration::from_secs(10)).await;
    let get = got.iter().find(|r| r.method == "GET").unwrap();
    assert_eq!(get.uri, "/hook?q=a%26admin%3D1%23frag");
    assert_eq!(
        get.query(),
        vec![("q".to_string(), "a&admin=1#frag".to_string())]
    );
    assert_eq!(get.param("admin"), None);
    // A bodyless GET describes no content (RFC 9110 §8.3).
    assert_eq!(get.headers.get("content-type"), None, "{get:#?}");
    let post = got.iter().find(|r| r.method == "POST").unwrap();
    assert_eq!(post.uri, "/u/a%26admin%3D1%23frag/x");
    assert_eq!(post.headers["content-type"], "application/json");
    assert_eq!(got.len(), 2, "{got:#?}");
}

/// The line of `check`'s output for `file`, or a panic showing all of it.
fn line_for<'a>(stderr: &'a str, file: &str) -> &'a str {
    stderr
        .lines()
        .find(|l| l.starts_with(file))
        .unwrap_or_else(|| panic!("no line for {file} in:\n{stderr}"))
}

#[test]
fn check_refuses_event_values_in_the_scheme_host_or_port() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tagproxy.toml");
    std::fs::write(&config, "").unwrap();
    let tools = dir.path().join("tools");
    std::fs::create_dir(&tools).unwrap();
    let cases = [
        // (tool, url, column of `{{`)
        ("whole", "{{ client.target }}", 8),
        ("host", "http://{{ client.host }}/x", 15),
        ("port", "http://a.example:{{ client.port }}/", 25),
    ];
    for (id, url, _) in cases {
        std::fs::write(
            tools.join(format!("{id}.toml")),
            format!("type = \"http\"\n[settings]\nurl = \"{url}\"\n[automated]\ntrack = true\n"),
        )
        .unwrap();
    }
    // A custom action's url alike.
    std::fs::write(
        tools.join("action.toml"),
        "type = \"http\"\n\n[[actions]]\nname = \"a\"\nkind = \"request\"\nfiring = [\"Pageview\"]\n[actions.fields]\nurl = \"https://{{ system.cookies.h }}.example/\"\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    for (id, _, col) in cases {
        let file = tools.join(format!("{id}.toml")).display().to_string();
        let line = line_for(&stderr, &file);
        assert!(line.starts_with(&format!("{file}:3:{col}: ")), "{line}");
        assert!(line.contains("scheme, host or port"), "{line}");
    }
    let file = tools.join("action.toml").display().to_string();
    let line = line_for(&stderr, &file);
    assert!(line.starts_with(&format!("{file}:8:16: action `a` field `url`: `{{{{ system.cookies.h }}}}` is in the scheme, host or port")), "{line}");
    assert_eq!(stderr.lines().count(), 4, "{stderr}");
}

#[test]
fn check_points_at_each_raw_insertion() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tagproxy.toml");
    std::fs::write(&config, "").unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    let tool = dir.path().join("tools").join("hook.toml");
    std::fs::write(
        &tool,
        "type = \"http\"\n[settings]\nurl = \"https://h.example/{{ client.p | raw }}?q={{ client.q }}\"\n[automated]\ntrack = true\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let t = tool.display();
    assert!(
        stderr.lines().any(|l| l.starts_with(&format!(
            "warning: {t}:3:26: `{{{{ client.p | raw }}}}` is inserted without encoding"
        ))),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[tokio::test]
async fn a_hostile_header_value_is_dead_lettered_at_once_and_never_sent() {
    let origin = origin().await;
    let dest = Destination::start().await;
    let hook = format!(
        "type = \"http\"\n[settings]\nurl = \"{}/orders\"\n[settings.headers]\nX-Order = \"{{{{ client.order_id }}}}\"\n[automated]\ntrack = true\n",
        dest.url()
    );
    let proxy = Proxy::start_tools(origin.addr, "", &[("hook", hook)]).await;
    let hostile = "O1\r\nX-Evil: 1";
    assert_eq!(
        track(&proxy, "order", json!({"order_id": hostile})).await,
        200
    );
    // In the dead letters as soon as the collector answered: no attempt.
    let letters: Vec<Value> = deadletter_list(&proxy, true)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 1, "{letters:#?}");
    let l = &letters[0];
    assert_eq!(l["tool"], "hook");
    assert_eq!(l["attempts"], 0);
    assert_eq!(l["status"], Value::Null);
    assert_eq!(
        l["reason"],
        "invalid request (header_value): the value of header `X-Order` holds CR, LF, NUL or another control character"
    );
    // The hostile value is kept for the operator, as it was.
    let headers = l["delivery"]["payload"]["Http"]["headers"]
        .as_array()
        .unwrap();
    assert!(
        headers.contains(&json!(["X-Order", hostile])),
        "{headers:?}"
    );
    // The text listing is one line per letter plus the count.
    let text = deadletter_list(&proxy, false);
    assert_eq!(text.lines().count(), 2, "{text:?}");
    assert!(!text.contains('\r'), "{text:?}");

    // A well-formed order afterwards is delivered, and is the only request
    // the destination ever saw.
    assert_eq!(track(&proxy, "order", json!({"order_id": "O2"})).await, 200);
    let got = dest.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].headers["x-order"], "O2");
    assert!(got[0].headers.get("x-evil").is_none());
    let m = proxy.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "tagproxy_deliveries_invalid_total{tool=\"hook\",reason=\"header_value\"}"
        ),
        1.0
    );
    assert_eq!(metric_value(&m, "tagproxy_delivery_attempts_total"), 1.0);
    assert_eq!(metric(&m, "tagproxy_delivery_retries_total"), Some(0.0));
    assert_eq!(metric_value(&m, "tagproxy_deliveries_failed_total"), 1.0);
    assert_eq!(
        metric_value(&m, "tagproxy_tool_dead_letters_total{tool=\"hook\"}"),
        1.0
    );
    assert_eq!(dest.requests().len(), 1);
}

/// A destination's redirect is its answer, not a new target: tagproxy never
/// follows it (a `3xx` is a non-retryable answer, dead-lettered with it).
#[tokio::test]
async fn a_destination_cannot_redirect_a_delivery_elsewhere() {
    let origin = origin().await;
    let internal = Destination::start().await;
    let location = format!("{}/internal-admin", internal.url());
    let redirecting = Origin::start(move |_req| {
        let location = location.clone();
        async move { common::respond(302, &[("location", location.as_str())], "") }
    })
    .await;
    let hook = format!(
        "type = \"http\"\n[settings]\nurl = \"http://{}/hook\"\n[automated]\ntrack = true\n",
        redirecting.addr
    );
    let proxy = Proxy::start_tools(origin.addr, "", &[("hook", hook)]).await;
    assert_eq!(track(&proxy, "x", json!({})).await, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let letters = loop {
        let out = deadletter_list(&proxy, true);
        if !out.is_empty() {
            break out;
        }
        assert!(std::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let l: Value = serde_json::from_str(letters.lines().next().unwrap()).unwrap();
    assert_eq!(l["status"], 302);
    assert_eq!(l["attempts"], 1);
    assert!(internal.requests().is_empty());
    assert_eq!(redirecting.seen().len(), 1);
}
