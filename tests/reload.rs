//! Config reload: on file change and SIGHUP, without dropping a request; a
//! bad new file keeps the old config running.

mod common;

use std::time::{Duration, Instant};

use common::*;

const PAGE: &str = "<html><head><title>t</title></head><body>x</body></html>";

async fn has_tag(proxy: &Proxy) -> bool {
    let body = get_text(proxy.url("/")).await;
    body.contains(TAG)
}

async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn config(proxy: &Proxy, upstream: std::net::SocketAddr, settings: &str) -> String {
    format!(
        "[server]\nlisten = \"{}\"\nupstream = \"http://{upstream}\"\nadmin_listen = \"{}\"\n{settings}\n",
        proxy.addr, proxy.admin
    )
}

#[tokio::test]
async fn file_changes_and_sighup_reload_without_dropping_requests() {
    let origin = Origin::page("text/html", PAGE).await;
    let proxy = Proxy::start(origin.addr, "").await;
    let path = proxy.dir.path().join("tagproxy.toml");
    assert!(has_tag(&proxy).await);

    // Requests keep flowing while the config changes under them.
    let url = proxy.url("/");
    let load = tokio::spawn(async move {
        let c = client();
        let mut statuses = Vec::new();
        for _ in 0..300 {
            statuses.push(
                c.get(&url)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0),
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        statuses
    });

    std::fs::write(
        &path,
        config(&proxy, origin.addr, "[settings]\nauto_inject = false"),
    )
    .unwrap();
    wait_until("the file change to turn injection off", async || {
        !has_tag(&proxy).await
    })
    .await;

    // A broken file is reported and the running config stays.
    std::fs::write(
        &path,
        config(&proxy, origin.addr, "[settings]\nauto_inject = \"maybe\""),
    )
    .unwrap();
    wait_until("the reload error in the log", async || {
        proxy.logs().contains("config reload failed")
    })
    .await;
    assert!(
        proxy.logs().contains("tagproxy.toml:6:15"),
        "{}",
        proxy.logs()
    );
    assert!(!has_tag(&proxy).await);

    // SIGHUP reloads too (the watcher may also see it; either way it applies).
    std::fs::write(
        &path,
        config(&proxy, origin.addr, "[settings]\nauto_inject = true"),
    )
    .unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until("injection to come back", async || has_tag(&proxy).await).await;
    proxy.wait_log("config reloaded").await;

    let statuses = load.await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every request during reloads succeeded: {statuses:?}"
    );
}

#[tokio::test]
async fn new_tool_file_is_picked_up() {
    let origin = Origin::page("text/html", PAGE).await;
    let proxy = Proxy::start_tools(origin.addr, "", &[]).await;
    let send = async || {
        client()
            .post(proxy.url("/_tagproxy/t"))
            .header("content-type", "application/json")
            .body(r#"{"type":"track","name":"reload_probe","page":{"url":"http://shop.test/"}}"#)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(send().await, 200);
    std::fs::write(
        proxy.dir.path().join("tools").join("console.toml"),
        "type = \"console\"\n[automated]\ntrack = true\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        send().await;
        if proxy.stdout().contains("reload_probe") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the console tool never printed; logs:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
