//! Consent in a real browser (SPEC §9): headless Chromium loads a page
//! through the proxy with consent on (`analytics` and `ads`, both denied by
//! default); an `http` tool per purpose forwards events to a recording mock.
//! Events made before the visitor chose wait in the browser and are replayed
//! (same ids, `consent_replay`) once a purpose is granted, to its tool only;
//! the built-in modal is driven with the keyboard alone.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::browser::Browser;
use common::*;
use fantoccini::key::Key;

const WAIT: Duration = Duration::from_secs(15);

fn config(show_modal: bool) -> String {
    format!(
        r#"
[consent]
enabled = true
show_modal = {show_modal}
[[consent.purposes]]
id = "analytics"
name = "Analytics"
description = "Counting visits and what pages are read, to improve the site."
default = "denied"
[[consent.purposes]]
id = "ads"
name = {{ en = "Advertising", de = "Werbung" }}
description = {{ en = "Measuring and personalising ads.", de = "Werbung messen und personalisieren." }}
default = "denied"
[consent.texts.de]
title = "Ihre Datenschutz-Wahl"
"#
    )
}

fn tools(dest: &Destination) -> Vec<(&'static str, String)> {
    let hook = |purpose: &str, path: &str| {
        format!(
            "type = \"http\"\npurposes = [\"{purpose}\"]\n[settings]\nurl = \"{}{path}\"\n[automated]\npageview = true\ntrack = true\n",
            dest.url()
        )
    };
    vec![
        ("stats", hook("analytics", "/stats")),
        ("ads", hook("ads", "/ads")),
    ]
}

/// A pageview (automatic) and `zaraz.track('x')`. `fetch` is wrapped to note
/// every event the collector answered for (`__sent`), and the consent DOM
/// events are counted.
const PAGE: &str = r#"<!doctype html>
<html><head>
<script>
window.__sent = [];
var f = window.fetch;
window.fetch = function (u, o) {
  var p = f.apply(this, arguments);
  if (String(u).indexOf('/_tagproxy/t') >= 0) {
    var events = JSON.parse(o.body);
    p.then(function () { events.forEach(function (e) { __sent.push(e); }); });
  }
  return p;
};
window.__updated = 0;
window.__ready = 0;
document.addEventListener('zarazConsentChoicesUpdated', function () { __updated++; });
document.addEventListener('zarazConsentAPIReady', function () { __ready++; });
zaraz.track('x');
</script>
<meta charset="utf-8">
<title>Consent</title>
</head>
<body><h1>Consent test</h1><p>Some page content behind the modal.</p><button id="page-button">Page button</button></body></html>"#;

/// Before the consent script has loaded: a German visitor (by
/// `navigator.language`) refuses ads through the stub, then the page sends
/// 107 events, more than the 100 the browser keeps. Warnings are recorded.
const BUSY: &str = r#"<!doctype html>
<html><head>
<script>
Object.defineProperty(navigator, 'language', { get: function () { return 'de-DE'; } });
window.__warns = [];
var cw = console.warn;
console.warn = function () { __warns.push([].slice.call(arguments).join(' ')); return cw.apply(this, arguments); };
window.__sent = [];
var f = window.fetch;
window.fetch = function (u, o) {
  var p = f.apply(this, arguments);
  if (String(u).indexOf('/_tagproxy/t') >= 0) {
    var events = JSON.parse(o.body);
    p.then(function () { events.forEach(function (e) { __sent.push(e); }); });
  }
  return p;
};
window.__updated = 0;
window.__ready = 0;
document.addEventListener('zarazConsentChoicesUpdated', function () { __updated++; });
document.addEventListener('zarazConsentAPIReady', function () { __ready++; });
zaraz.consent.set({ads: false});
window.__readyBefore = zaraz.consent.APIReady;
zaraz.track('x');
for (var i = 0; i < 105; i++) zaraz.track('t' + i);
</script>
<meta charset="utf-8">
<title>Busy</title>
</head>
<body><h1>Busy</h1></body></html>"#;

async fn start(show_modal: bool) -> (Origin, Destination, Proxy, Browser) {
    let origin = Origin::start(|req| async move {
        match req.uri().path() {
            "/" => respond(200, &[("content-type", "text/html; charset=utf-8")], PAGE),
            "/busy" => respond(200, &[("content-type", "text/html; charset=utf-8")], BUSY),
            _ => respond(404, &[], "not found"),
        }
    })
    .await;
    let dest = Destination::start().await;
    let proxy = Proxy::start_tools(origin.addr, &config(show_modal), &tools(&dest)).await;
    let browser = Browser::start().await;
    (origin, dest, proxy, browser)
}

/// What a tool got: (type, name, event id) per request to `path`.
fn got(dest: &Destination, path: &str) -> Vec<(String, String, String)> {
    dest.requests()
        .iter()
        .filter(|r| r.path() == path)
        .map(|r| {
            let j = r.json();
            let s = |k: &str| j[k].as_str().unwrap_or_default().to_string();
            (s("type"), s("name"), s("id"))
        })
        .collect()
}

/// The events the page sent (and the collector answered): (type, name, id,
/// consent_replay).
async fn sent(browser: &Browser) -> Vec<(String, String, String, bool)> {
    let v = browser.js("return window.__sent;").await;
    v.as_array()
        .unwrap_or_else(|| panic!("__sent: {v}"))
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (
                s("type"),
                s("name"),
                s("id"),
                e["consent_replay"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// Waits until the page's pageview and `x` were answered; returns them.
async fn first_sends(browser: &Browser) -> Vec<(String, String, String, bool)> {
    browser
        .wait_js(
            "window.__sent && __sent.some(e => e.type == 'pageview') && __sent.some(e => e.name == 'x')",
            WAIT,
        )
        .await;
    let s = sent(browser).await;
    assert_eq!(s.len(), 2, "{s:#?}");
    assert!(s.iter().all(|e| !e.3), "no replay yet: {s:#?}");
    s
}

/// Waits until the page saw the collector answer every event `js` (a
/// condition on `__sent`) expects, then until every delivery queued for
/// them has ended: after that nothing more from them can arrive.
async fn answered(browser: &Browser, proxy: &Proxy, js: &str) {
    browser.wait_js(js, WAIT).await;
    proxy.settled().await;
}

async fn wait_count(dest: &Destination, path: &str, n: usize) {
    let deadline = std::time::Instant::now() + WAIT;
    while got(dest, path).len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than {n} at {path}: {:#?}",
            dest.requests()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids<T>(v: &[T], id: impl Fn(&T) -> &String) -> BTreeSet<String> {
    v.iter().map(|e| id(e).clone()).collect()
}

#[tokio::test]
async fn events_wait_for_consent_and_replay_to_the_granted_tool_only() {
    let (_origin, dest, proxy, browser) = start(false).await;
    // The consent script, served like s.js.
    for head in [false, true] {
        let url = proxy.url("/_tagproxy/c.js");
        let resp = if head {
            client().head(url)
        } else {
            client().get(url)
        }
        .send()
        .await
        .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["cache-control"], "public, max-age=300");
        assert_eq!(
            resp.headers()["content-type"],
            "application/javascript; charset=utf-8"
        );
        assert!(resp.headers().contains_key("etag"));
        let body = resp.text().await.unwrap();
        assert_eq!(body.is_empty(), head, "{body:.80}");
    }
    browser.client.goto(&proxy.url("/")).await.unwrap();
    browser.wait_js("zaraz.consent.APIReady", WAIT).await;
    let first = first_sends(&browser).await;

    // Nothing decided (both denied by default): neither tool gets anything.
    // (`first_sends` saw both answered.)
    proxy.settled().await;
    assert!(dest.requests().is_empty(), "{:#?}", dest.requests());
    let state = browser
        .js(
            "return {ready: __ready, modal: zaraz.consent.modal, open: !!document.getElementById('tagproxy-consent'),
                     a: zaraz.consent.get('analytics') === undefined, nope: zaraz.consent.get('nope') === undefined,
                     all: Object.keys(zaraz.consent.getAll()).join(), names: zaraz.consent.purposes.ads.name + '/' + zaraz.consent.purposes.analytics.order};",
        )
        .await;
    assert_eq!(
        state,
        serde_json::json!({"ready": 1, "modal": false, "open": false, "a": true, "nope": true, "all": "analytics,ads", "names": "Advertising/0"}),
        "show_modal = false: no modal; undecided purposes read undefined"
    );

    // The visitor grants analytics: the kept pageview and x go out again,
    // with the same ids, and reach the analytics tool only.
    browser
        .js("zaraz.consent.set({analytics: true}); return true;")
        .await;
    wait_count(&dest, "/stats", 2).await;
    answered(
        &browser,
        &proxy,
        "__sent.filter(e => e.consent_replay).length >= 2",
    )
    .await;
    let stats = got(&dest, "/stats");
    assert_eq!(stats.len(), 2, "{stats:#?}");
    assert_eq!(
        ids(&stats, |e| &e.2),
        ids(&first, |e| &e.2),
        "the replay carries the first sends' ids"
    );
    let kinds: BTreeSet<_> = stats.iter().map(|e| (e.0.as_str(), e.1.as_str())).collect();
    assert_eq!(kinds, [("pageview", "Pageview"), ("track", "x")].into());
    assert!(got(&dest, "/ads").is_empty(), "ads is still undecided");
    let replays: Vec<_> = sent(&browser).await.into_iter().filter(|e| e.3).collect();
    assert_eq!(replays.len(), 2, "{replays:#?}");
    let page = browser
        .js("return {updated: __updated, cookie: document.cookie, a: zaraz.consent.get('analytics'), kept: zaraz._tp.c.length};")
        .await;
    assert_eq!(page["updated"], 1, "zarazConsentChoicesUpdated fired once");
    assert!(
        page["cookie"]
            .as_str()
            .unwrap()
            .split("; ")
            .any(|c| c == "cf_consent=%7B%22analytics%22%3Atrue%7D"),
        "{page}"
    );
    assert_eq!(page["a"], true);
    assert_eq!(page["kept"], 0, "the copies were cleared");

    // A reload keeps the choice; the new events go straight to the analytics
    // tool, with no replay.
    browser.client.refresh().await.unwrap();
    browser.wait_js("zaraz.consent.APIReady", WAIT).await;
    let again = first_sends(&browser).await;
    assert_eq!(
        browser
            .js("return zaraz.consent.get('analytics') === true && zaraz.consent.get('ads') === undefined;")
            .await,
        true
    );
    wait_count(&dest, "/stats", 4).await;
    proxy.settled().await;
    let stats = got(&dest, "/stats");
    assert_eq!(stats.len(), 4, "{stats:#?}");
    assert_eq!(ids(&stats[2..], |e| &e.2), ids(&again, |e| &e.2));
    assert!(ids(&again, |e| &e.2).is_disjoint(&ids(&first, |e| &e.2)));
    assert!(sent(&browser).await.iter().all(|e| !e.3), "no replay");
    assert!(got(&dest, "/ads").is_empty());
    assert_eq!(browser.js("return __updated;").await, 0);
    browser.close().await;
}

/// The focused element inside the modal, described, e.g. `input#c0`,
/// `button:Save choices`, or `outside:<tag>` when focus left the dialog.
const FOCUS: &str = "var h = document.getElementById('tagproxy-consent'), a = document.activeElement;
  if (!h || a !== h) return 'outside:' + (a && a.tagName);
  var e = h.shadowRoot.activeElement;
  if (!e) return 'none';
  if (!e.closest('[role=dialog]')) return 'not-in-dialog';
  return e.tagName == 'INPUT' ? 'input#' + e.id + (e.checked ? ':checked' : '') : 'button:' + e.textContent;";

async fn focus(browser: &Browser) -> String {
    browser
        .js(FOCUS)
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Presses `keys` on the active element, as a keyboard user would.
async fn press(browser: &Browser, keys: &str) {
    let el = browser.client.active_element().await.unwrap();
    el.send_keys(keys)
        .await
        .unwrap_or_else(|e| panic!("send_keys {keys:?}: {e}\n{}", browser.driver_log()));
}

#[tokio::test]
async fn the_modal_is_usable_with_the_keyboard_alone() {
    let (_origin, dest, proxy, browser) = start(true).await;
    browser.client.goto(&proxy.url("/")).await.unwrap();
    browser.wait_js("zaraz.consent.modal", WAIT).await;
    first_sends(&browser).await;
    let first = sent(&browser).await;

    // An accessible dialog, focus inside it, on the first purpose.
    let dialog = browser
        .js("var r = document.getElementById('tagproxy-consent').shadowRoot, d = r.querySelector('[role=dialog]');
             return {modal: d.getAttribute('aria-modal'), title: r.getElementById(d.getAttribute('aria-labelledby')).textContent,
                     labels: [...r.querySelectorAll('input')].map(i => i.labels[0].textContent),
                     buttons: [...r.querySelectorAll('button')].map(b => b.textContent)};")
        .await;
    assert_eq!(
        dialog,
        serde_json::json!({
            "modal": "true",
            "title": "Privacy choices",
            "labels": [
                "AnalyticsCounting visits and what pages are read, to improve the site.",
                "AdvertisingMeasuring and personalising ads."
            ],
            "buttons": ["Save choices", "Reject all", "Accept all"],
        })
    );
    assert_eq!(focus(&browser).await, "input#c0");

    let png = browser.client.screenshot().await.unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/consent-modal.png");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, png).unwrap();
    println!("consent modal screenshot: {}", path.display());

    // Escape grants nothing and, with no choice yet, does not close it.
    press(&browser, &Key::Escape.to_string()).await;
    assert_eq!(focus(&browser).await, "input#c0");
    assert_eq!(browser.js("return zaraz.consent.modal;").await, true);

    // Tick analytics; Shift+Tab from the first control wraps to the last and
    // Tab from there back to the first (the focus stays trapped).
    press(&browser, &Key::Space.to_string()).await;
    assert_eq!(focus(&browser).await, "input#c0:checked");
    press(&browser, &(Key::Shift + &Key::Tab.to_string())).await;
    assert_eq!(focus(&browser).await, "button:Accept all");
    press(&browser, &Key::Tab.to_string()).await;
    assert_eq!(focus(&browser).await, "input#c0:checked");
    press(&browser, &Key::Tab.to_string()).await;
    assert_eq!(focus(&browser).await, "input#c1");
    press(&browser, &Key::Tab.to_string()).await;
    assert_eq!(focus(&browser).await, "button:Save choices");
    assert!(dest.requests().is_empty(), "{:#?}", dest.requests());
    press(&browser, &Key::Enter.to_string()).await;

    // Saved: analytics granted, ads refused; the modal is gone and the kept
    // events reached the analytics tool.
    browser.wait_js("!zaraz.consent.modal", WAIT).await;
    let page = browser
        .js("return {cookie: document.cookie, updated: __updated, host: !!document.getElementById('tagproxy-consent'), all: zaraz.consent.getAll()};")
        .await;
    assert!(
        page["cookie"]
            .as_str()
            .unwrap()
            .split("; ")
            .any(|c| c == "cf_consent=%7B%22analytics%22%3Atrue%2C%22ads%22%3Afalse%7D"),
        "{page}"
    );
    assert_eq!(page["updated"], 1);
    assert_eq!(page["host"], false);
    assert_eq!(
        page["all"],
        serde_json::json!({"analytics": true, "ads": false})
    );
    wait_count(&dest, "/stats", 2).await;
    answered(
        &browser,
        &proxy,
        "__sent.filter(e => e.consent_replay).length >= 2",
    )
    .await;
    let stats = got(&dest, "/stats");
    assert_eq!(stats.len(), 2, "{stats:#?}");
    assert_eq!(ids(&stats, |e| &e.2), ids(&first, |e| &e.2));
    assert!(got(&dest, "/ads").is_empty());

    // Decided: a reload shows no modal; `modal = true` opens it again, and
    // now Escape closes it.
    browser.client.refresh().await.unwrap();
    browser.wait_js("zaraz.consent.APIReady", WAIT).await;
    assert_eq!(browser.js("return zaraz.consent.modal;").await, false);
    browser.js("zaraz.consent.modal = true; return true;").await;
    assert_eq!(focus(&browser).await, "input#c0:checked");
    press(&browser, &Key::Escape.to_string()).await;
    assert_eq!(browser.js("return zaraz.consent.modal;").await, false);
    browser.close().await;
}

#[tokio::test]
async fn stub_calls_languages_the_bound_and_no_double_sends() {
    let (_origin, dest, proxy, browser) = start(false).await;
    browser.client.goto(&proxy.url("/busy")).await.unwrap();
    browser.wait_js("zaraz.consent.APIReady", WAIT).await;
    browser.wait_js("__sent.length == 107", WAIT).await;
    let page = browser
        .js("return {before: __readyBefore, ready: __ready, updated: __updated, cookie: document.cookie,
                     ads: zaraz.consent.purposes.ads, analytics: zaraz.consent.purposes.analytics.name,
                     kept: zaraz._tp.c.length, keeping: !!zaraz._tp.k, warns: __warns.filter(w => /consent queue/.test(w))};")
        .await;
    assert_eq!(page["before"], false, "the set above ran through the stub");
    assert_eq!(page["ready"], 1);
    assert_eq!(page["updated"], 1, "the queued set ran once the API loaded");
    assert!(
        page["cookie"]
            .as_str()
            .unwrap()
            .split("; ")
            .any(|c| c == "cf_consent=%7B%22ads%22%3Afalse%7D"),
        "{page}"
    );
    assert_eq!(
        page["ads"],
        serde_json::json!({"id": "ads", "name": "Werbung", "description": "Werbung messen und personalisieren.", "order": 1})
    );
    assert_eq!(page["analytics"], "Analytics");
    // Refusing ads granted nothing: the copies stay (analytics is undecided),
    // the oldest 7 of 107 dropped.
    assert_eq!(page["kept"], 100);
    assert_eq!(page["keeping"], true);
    assert_eq!(
        page["warns"],
        serde_json::json!(["tagproxy: consent queue full (100)"]),
        "one warning, not one per dropped event"
    );
    // All 107 were answered (waited for above).
    proxy.settled().await;
    assert!(dest.requests().is_empty(), "{:#?}", dest.requests());

    // `y` is still waiting to be sent when analytics is granted: it goes out
    // once, with the new cookie; the other kept copies are replayed.
    browser
        .js("zaraz.track('y'); zaraz.consent.set({analytics: true}); return true;")
        .await;
    wait_count(&dest, "/stats", 100).await;
    answered(
        &browser,
        &proxy,
        "__sent.filter(e => e.consent_replay).length >= 99 && __sent.some(e => e.name == 'y')",
    )
    .await;
    let mut names: Vec<String> = got(&dest, "/stats").into_iter().map(|e| e.1).collect();
    names.sort();
    let mut want: Vec<String> = (6..105).map(|i| format!("t{i}")).collect();
    want.push("y".into());
    want.sort();
    assert_eq!(names, want);
    assert!(got(&dest, "/ads").is_empty());
    let replays = sent(&browser).await;
    assert_eq!(replays.iter().filter(|e| e.3).count(), 99);
    assert!(
        replays.iter().all(|e| e.1 != "y" || !e.3),
        "y was not replayed"
    );

    // Everything decided: no more copies; the checkbox API is separate from
    // the choice; nothing is left to send.
    let page = browser
        .js("zaraz.track('z'); zaraz.consent.setAllCheckboxes(true); zaraz.consent.sendQueuedEvents();
             return {kept: zaraz._tp.c.length, keeping: !!zaraz._tp.k, boxes: zaraz.consent.getAllCheckboxes(),
                     all: zaraz.consent.getAll(), updated: __updated, warns: __warns.filter(w => /consent/.test(w))};")
        .await;
    assert_eq!(
        page,
        serde_json::json!({"kept": 0, "keeping": false, "boxes": {"analytics": true, "ads": true},
                           "all": {"analytics": true, "ads": false}, "updated": 2, "warns": [
                           "tagproxy: consent queue full (100)", "tagproxy: 8 event(s) waiting for consent were dropped (over 100)"]})
    );
    wait_count(&dest, "/stats", 101).await;
    answered(&browser, &proxy, "__sent.some(e => e.name == 'z')").await;
    assert_eq!(got(&dest, "/stats").len(), 101);
    assert_eq!(got(&dest, "/stats")[100].1, "z");

    // Issue 13: the modal speaks the visitor's language too (de-DE → de):
    // the configured `[consent.texts.de]` title, built-in German elsewhere.
    let modal = browser
        .js("zaraz.consent.modal = true;
             var r = document.getElementById('tagproxy-consent').shadowRoot;
             return {title: r.getElementById('t').textContent, intro: r.getElementById('s').textContent,
                     buttons: [...r.querySelectorAll('button')].map(b => b.textContent),
                     labels: [...r.querySelectorAll('label b')].map(b => b.textContent)};")
        .await;
    assert_eq!(
        modal,
        serde_json::json!({
            "title": "Ihre Datenschutz-Wahl",
            "intro": "Wählen Sie, wofür diese Website Ihre Daten verwenden darf. Sie können das jederzeit ändern.",
            "buttons": ["Auswahl speichern", "Alle ablehnen", "Alle akzeptieren"],
            "labels": ["Analytics", "Werbung"],
        })
    );
    browser.close().await;
}
