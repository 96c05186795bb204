//! Secret variables reach destinations and nothing else: not the page, the
//! script, the collector's answers, stdout or the logs.

mod common;

use std::time::Duration;

use common::*;

const SECRET: &str = "s3cr3t-T0KEN-value-42";

#[tokio::test]
async fn secrets_only_leave_in_outgoing_requests() {
    let dest = Destination::start().await;
    let origin = Origin::page(
        "text/html",
        "<html><head><title>p</title></head><body>x</body></html>",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    std::fs::write(
        dir.path().join("tools/meta.toml"),
        format!(
            "type = \"facebook-pixel\"\nendpoint = \"{}\"\n[settings]\npixel_id = \"123\"\naccess_token = \"{{{{ $meta_token }}}}\"\n[automated]\npageview = true\ntrack = true\n",
            dest.url()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tools/hook.toml"),
        format!(
            "type = \"http\"\n[settings]\nurl = \"{}/hook\"\nheaders = {{ authorization = \"Bearer {{{{ $meta_token }}}}\" }}\n[automated]\ntrack = true\n",
            dest.url()
        ),
    )
    .unwrap();
    let config = format!(
        "[server]\n{LISTEN_ANY}\nupstream = \"http://{}\"\n[variables]\nmeta_token = {{ secret = \"META\" }}\nsite = \"visible\"\n",
        origin.addr
    );
    let path = dir.path().join("tagproxy.toml");
    std::fs::write(&path, config).unwrap();
    let proxy = Proxy::spawn(
        dir,
        path,
        &[("TAGPROXY_SECRET_META", SECRET), ("RUST_LOG", "trace")],
    )
    .await;

    let page = get_text(proxy.url("/")).await;
    let script = get_text(proxy.url("/_tagproxy/s.js")).await;
    // A property that looks like a template is data, never rendered.
    let answer = client()
        .post(proxy.url("/_tagproxy/t"))
        .header("content-type", "application/json")
        .body(r#"[{"type":"pageview","page":{"url":"https://shop.test/"}},{"type":"track","name":"probe","properties":{"x":"{{ $meta_token }}"},"page":{"url":"https://shop.test/"}}]"#)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let got = dest.wait_for(3, Duration::from_secs(10)).await;

    assert!(page.contains(TAG));
    assert!(!page.contains(SECRET) && !script.contains(SECRET) && !answer.contains(SECRET));
    let meta: Vec<_> = got
        .iter()
        .filter(|r| r.path() == "/v21.0/123/events")
        .collect();
    assert_eq!(meta.len(), 2);
    assert!(meta.iter().all(|r| r.json()["access_token"] == SECRET));
    let hook = got.iter().find(|r| r.path() == "/hook").unwrap();
    assert_eq!(
        hook.headers["authorization"],
        format!("Bearer {SECRET}").as_str()
    );
    assert_eq!(hook.json()["client"]["x"], "{{ $meta_token }}");

    proxy.settled().await;
    proxy.wait_log("delivered").await;
    let logs = proxy.logs();
    assert!(
        logs.contains("delivered"),
        "trace logs were written: {logs}"
    );
    assert!(!logs.contains(SECRET), "the secret leaked into the logs");
    assert!(!proxy.stdout().contains(SECRET));
}

/// Issue 13: with one secret unset, `serve` reports that secret only, not
/// the variables the tool files use as unknown (plain ones included).
#[test]
fn an_unset_secret_is_the_only_problem_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    std::fs::write(
        dir.path().join("tools/hook.toml"),
        "type = \"http\"\n[settings]\nurl = \"https://hooks.example/{{ $site }}\"\nheaders = { authorization = \"Bearer {{ $token }}\" }\n[automated]\ntrack = true\n",
    )
    .unwrap();
    let path = dir.path().join("tagproxy.toml");
    std::fs::write(
        &path,
        "[server]\nupstream = \"http://127.0.0.1:1\"\n[variables]\nsite = \"shop\"\ntoken = { secret = \"SECRETS_TEST_UNSET\" }\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["serve", "-c"])
        .arg(&path)
        .env_remove("TAGPROXY_SECRET_SECRETS_TEST_UNSET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    let want = format!(
        "{}:5:9: secret `token`: environment variable TAGPROXY_SECRET_SECRETS_TEST_UNSET is not set\n",
        path.display()
    );
    assert_eq!(err, want);
}
