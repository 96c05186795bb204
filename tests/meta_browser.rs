//! Meta's `_fbp` / `_fbc` in a real browser: headless Chromium loads a page
//! through the proxy, the injected script sends the pageview, and the
//! collector's own `Set-Cookie` headers store the ids. The page's script
//! never writes them (`document.cookie` writes are recorded), and the next
//! page sends the same ids to Meta.
//!
//! Meta, "ClickID and the fbp and fbc Parameters":
//! https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/fbp-and-fbc/

mod common;

use std::time::Duration;

use common::browser::Browser;
use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

/// Records every `document.cookie` write the page's scripts make (the
/// injected tag runs first; its answers' handlers run after this).
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Meta Cookies</title>
<script>
(function () {
  var d = Object.getOwnPropertyDescriptor(Document.prototype, 'cookie');
  window.__writes = [];
  Object.defineProperty(document, 'cookie', {
    configurable: true,
    get: function () { return d.get.call(document); },
    set: function (v) { window.__writes.push(String(v)); d.set.call(document, v); }
  });
})();
</script>
</head>
<body><p>Meta cookies.</p></body></html>"#;

fn cookie_value(all: &str, name: &str) -> Option<String> {
    all.split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

#[tokio::test]
async fn fbp_and_fbc_are_stored_by_the_server_and_survive_the_next_page() {
    let origin = Origin::page("text/html; charset=utf-8", PAGE).await;
    let meta = Destination::start().await;
    let tool = format!(
        "type = \"facebook-pixel\"\nendpoint = \"{}\"\n[settings]\npixel_id = \"1234567890\"\naccess_token = \"tok\"\n[automated]\npageview = true\n",
        meta.url()
    );
    let proxy = Proxy::start_tools(origin.addr, "", &[("meta", tool)]).await;

    let browser = Browser::start().await;
    browser
        .client
        .goto(&proxy.url("/landing?fbclid=IwAR_browser-1"))
        .await
        .unwrap();
    let cookies = browser
        .wait_js(
            "document.cookie.indexOf('_fbp=') >= 0 && document.cookie.indexOf('_fbc=') >= 0 && document.cookie",
            WAIT,
        )
        .await;
    let cookies = cookies.as_str().unwrap().to_string();
    let fbp = cookie_value(&cookies, "_fbp").unwrap();
    let fbc = cookie_value(&cookies, "_fbc").unwrap();
    assert!(fbc.ends_with(".IwAR_browser-1"), "{fbc}");

    let first = &meta.wait_for(1, WAIT).await[0];
    let u = &first.json()["data"][0]["user_data"];
    assert_eq!(u["fbp"], fbp.as_str());
    assert_eq!(u["fbc"], fbc.as_str());
    // A late script write would come with an answer's handling: once a
    // later event's answer was handled (the promise resolves after it; the
    // first request goes alone), none of ours may have written them.
    browser
        .js("return zaraz.track('after_landing').then(() => true);")
        .await;
    let writes = browser.js("return window.__writes;").await;
    let writes: Vec<&str> = writes
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        writes
            .iter()
            .all(|w| !w.starts_with("_fbp=") && !w.starts_with("_fbc=")),
        "the page's script wrote a Meta cookie: {writes:?}"
    );

    // The next page (no click id now): the same ids, from the cookies.
    browser.client.goto(&proxy.url("/next")).await.unwrap();
    let second = &meta.wait_for(2, WAIT).await[1];
    let u = &second.json()["data"][0]["user_data"];
    assert_eq!(u["fbp"], fbp.as_str());
    assert_eq!(u["fbc"], fbc.as_str());
    let cookies = browser.js("return document.cookie;").await;
    assert_eq!(
        cookie_value(cookies.as_str().unwrap(), "_fbp").as_deref(),
        Some(fbp.as_str())
    );

    browser.close().await;
}
