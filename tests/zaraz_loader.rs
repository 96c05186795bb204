//! Pages written for Zaraz work unchanged (issue 13, SPEC §3): Zaraz's
//! "load manually" tag `<script src="/cdn-cgi/zaraz/i.js"
//! referrerpolicy="origin">` placed "immediately before the `</head>` tag
//! closes" (<https://developers.cloudflare.com/zaraz/advanced/load-zaraz-manually/>),
//! or the `initPath` an imported config names, gets tagproxy's script at that
//! path and no second, injected one; Zaraz's track path `/cdn-cgi/zaraz/t`
//! and the configured `eventsApiPath`
//! (<https://developers.cloudflare.com/zaraz/http-events-api/>) reach the
//! collector and the HTTP Events API.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::browser::Browser;
use common::events::UA;
use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

/// A page as Zaraz's "load manually" page has it: the loader tag last in
/// the head, calls to `zaraz.track` in the body.
fn zaraz_page(loader: &str) -> String {
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Written for Zaraz</title>
<script src="{loader}" referrerpolicy="origin"></script>
</head>
<body><h1>Shop</h1>
<script>zaraz.track('signup', {{method: 'email'}}).then(function () {{ window.__sent = true; }});</script>
</body></html>"#
    )
}

/// A GA4 tool delivering to `dest`.
fn ga4(dest: &Destination) -> (&'static str, String) {
    (
        "ga4",
        format!(
            "type = \"google-analytics-4\"\nendpoint = \"{}\"\n\n[settings]\nmeasurement_id = \"G-ZARAZ1\"\n\n[automated]\npageview = true\ntrack = true\n",
            dest.url()
        ),
    )
}

/// The GA4 event names (`en`) the mock received, sorted.
fn names(dest: &Destination) -> Vec<String> {
    let mut v: Vec<String> = dest
        .requests()
        .iter()
        .map(|r| r.param("en").unwrap_or_default())
        .collect();
    v.sort();
    v
}

async fn origin_with(pages: Vec<(&'static str, String)>) -> Origin {
    let pages = std::sync::Arc::new(pages);
    Origin::start(move |req| {
        let pages = pages.clone();
        async move {
            match pages.iter().find(|(p, _)| *p == req.uri().path()) {
                Some((_, html)) => respond(
                    200,
                    &[("content-type", "text/html; charset=utf-8")],
                    html.clone(),
                ),
                None => respond(404, &[("content-type", "text/plain")], "origin: not found"),
            }
        }
    })
    .await
}

/// In headless Chromium: the page keeps its one loader tag (no injected
/// copy), the script it loads is tagproxy's (200, served by the proxy, not
/// the origin's 404), and its pageview and track reach the GA4 mock once
/// each. The same for a custom `initPath`.
#[tokio::test]
async fn a_page_written_for_zaraz_gets_one_script_and_its_events_are_delivered() {
    let origin = origin_with(vec![
        ("/", zaraz_page("/cdn-cgi/zaraz/i.js")),
        ("/custom", zaraz_page("/assets/z/init.js")),
    ])
    .await;
    let dest = Destination::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    let (id, tool) = ga4(&dest);
    std::fs::write(dir.path().join(format!("tools/{id}.toml")), tool).unwrap();
    let path = dir.path().join("tagproxy.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\n{LISTEN_ANY}\nupstream = \"http://{}\"\nzaraz_init_path = \"/assets/z/init.js\"\n",
            origin.addr
        ),
    )
    .unwrap();
    let proxy = Proxy::spawn(dir, path, &[]).await;

    // Byte for byte what the origin sent: nothing injected.
    let html = get_text(proxy.url("/")).await;
    assert_eq!(html, zaraz_page("/cdn-cgi/zaraz/i.js"));
    let s_js = client()
        .get(proxy.url("/_tagproxy/s.js"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    for loader in ["/cdn-cgi/zaraz/i.js", "/assets/z/init.js"] {
        let resp = client().get(proxy.url(loader)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{loader}");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/javascript"));
        assert_eq!(resp.bytes().await.unwrap(), s_js, "{loader} serves s.js");
    }

    let browser = Browser::start().await;
    for (page, loader, sent) in [
        ("/", "/cdn-cgi/zaraz/i.js", 2),
        ("/custom", "/assets/z/init.js", 4),
    ] {
        browser.client.goto(&proxy.url(page)).await.unwrap();
        browser
            .wait_js(
                "!!(window.zaraz && zaraz._tp) && window.__sent === true",
                WAIT,
            )
            .await;
        let scripts = browser
            .js("return Array.from(document.scripts).filter(s => s.src).map(s => new URL(s.src).pathname);")
            .await;
        assert_eq!(scripts, json!([loader]), "{page}: exactly one script");
        let status = browser
            .js(&format!(
                "return performance.getEntriesByType('resource').filter(e => new URL(e.name).pathname == '{loader}').map(e => e.responseStatus);"
            ))
            .await;
        assert_eq!(status, json!([200]), "{page}: the loader is served");
        dest.wait_for(sent, WAIT).await;
    }
    // Whatever would arrive twice has had the time to once a last event is in.
    browser
        .js("return zaraz.track('sentinel').then(() => true);")
        .await;
    dest.wait_for(5, WAIT).await;
    assert_eq!(
        names(&dest),
        ["page_view", "page_view", "sentinel", "signup", "signup"]
    );
    for r in dest.requests() {
        assert_eq!(r.param("tid").as_deref(), Some("G-ZARAZ1"));
        let dl = r.param("dl").unwrap();
        assert!(
            dl == proxy.url("/") || dl == proxy.url("/custom"),
            "dl = {dl}"
        );
    }
    // The origin was never asked for Zaraz's paths.
    let seen: Vec<String> = origin.seen().iter().map(|s| s.path.clone()).collect();
    assert!(
        seen.iter()
            .all(|p| !p.starts_with("/cdn-cgi/") && !p.starts_with("/assets/")),
        "origin saw {seen:?}"
    );
    browser.close().await;
}

fn no_origin() -> SocketAddr {
    "127.0.0.1:9".parse().unwrap()
}

/// `POST /cdn-cgi/zaraz/t` is the collector; the bare `GET` Zaraz's inline
/// loader sends when it fails (`fetch("/cdn-cgi/zaraz/t")`) gets `204`, not
/// the origin's 404; `eventsApiPath` is the HTTP Events API, with its token.
#[tokio::test]
async fn zaraz_track_and_events_api_paths_reach_the_collector_and_the_api() {
    let dest = Destination::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    let (id, tool) = ga4(&dest);
    std::fs::write(dir.path().join(format!("tools/{id}.toml")), tool).unwrap();
    let path = dir.path().join("tagproxy.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\n{LISTEN_ANY}\nupstream = \"http://{}\"\nzaraz_events_api_path = \"/api/zaraz-events\"\n",
            no_origin()
        ),
    )
    .unwrap();
    let proxy = Proxy::spawn(dir, path, &[]).await;

    let resp = client()
        .get(proxy.url("/cdn-cgi/zaraz/t"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);

    let body = json!([{
        "type": "track", "name": "from_zaraz_path",
        "properties": {"plan": "pro"},
        "page": {"url": "https://shop.example.com/", "title": "Shop"},
    }]);
    let resp = client()
        .post(proxy.url("/cdn-cgi/zaraz/t"))
        .header("content-type", "application/json")
        .header("user-agent", UA)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["events"], 1, "{answer}");
    let hit = &dest.wait_for(1, WAIT).await[0];
    assert_eq!(hit.param("en").as_deref(), Some("from_zaraz_path"));
    assert_eq!(hit.param("ep.plan").as_deref(), Some("pro"));

    // The HTTP Events API body of Cloudflare's page, at Zaraz's path.
    let api_body = json!({"events": [{
        "client": {"__zarazTrack": "transaction successful", "value": "200"},
        "system": {"page": {"url": "https://shop.example.com/thanks"},
                   "device": {"user-agent": UA, "ip": "192.0.2.7"}}
    }]});
    let resp = client()
        .post(proxy.url("/api/zaraz-events"))
        .header("content-type", "application/json")
        .body(api_body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "the same token is needed there");
    let out = std::process::Command::new(bin())
        .args([
            "token",
            "create",
            "--name",
            "zaraz",
            "--scopes",
            "events:write",
            "-c",
        ])
        .arg(&proxy.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let secret = String::from_utf8(out.stdout).unwrap();
    let secret = secret.lines().next().unwrap().trim().to_string();
    let resp = client()
        .post(proxy.url("/api/zaraz-events"))
        .header("content-type", "application/json")
        .bearer_auth(&secret)
        .body(api_body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["results"].as_array().unwrap().len(), 1, "{answer}");
    let hits = dest.wait_for(2, WAIT).await;
    assert!(
        hits.iter()
            .any(|h| h.param("en").as_deref() == Some("transaction_successful")),
        "{hits:?}"
    );
}
