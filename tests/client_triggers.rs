//! Client-side triggers (SPEC §7) in a real browser: headless Chromium loads
//! pages through the proxy, the script arms the triggers of `window.__tagproxy`
//! and sends a track event named after each trigger that fires; an `http`
//! tool forwards every track to a recording mock. Assertions are exact
//! counts per (event, page path) at the mock.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::browser::Browser;
use common::*;
use fantoccini::Locator;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

const TRIGGERS: &str = r##"
[triggers.buy_click]
rules = [ { click = { css = "button.buy" } } ]

[triggers.note_click]
rules = [ { click = { xpath = "//p[@id='note']" } } ]

[triggers.out_click]
rules = [ { click = { css = "a.out", wait_ms = 3000 } } ]

[triggers.signup_submit]
rules = [ { form_submit = { css = "form#signup", validate = true } } ]

[triggers.heartbeat]
rules = [ { timer = { interval_ms = 300, limit = 2 } } ]

[triggers.half_page]
rules = [ { scroll_depth = "50%" } ]

[triggers.promo_seen]
rules = [ { element_visible = { css = "#promo" } } ]

[triggers.checkout_click]
rules = [ { click = { css = "#pay" } }, { match = "{{ system.page.url.pathname }}", op = "equals", value = "/checkout" } ]
"##;

/// 3000 px tall: the buy button and the form above the fold, `#promo` far
/// below it. The page handles the (novalidate) form itself, like a SPA, so
/// submitting never navigates and `validate` is what keeps an invalid
/// submit from firing. `fetch` is wrapped to note when the collector answered
/// (in sessionStorage, so the next page can tell).
const HOME: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Triggers Home</title>
<script>
var f = window.fetch;
window.fetch = function (u) {
  return f.apply(this, arguments).then(function (r) {
    if (String(u).indexOf('/_tagproxy/t') >= 0) sessionStorage.answered = (+sessionStorage.answered || 0) + 1;
    return r;
  });
};
</script>
<style>body { margin: 0; } #tall { height: 3000px; position: relative; } #promo { position: absolute; top: 2000px; height: 50px; }</style>
</head>
<body><div id="tall">
<button class="buy primary" data-sku="S1" type="button"><span id="buy-label">Buy</span> now</button>
<p id="note" title="xp"><b id="bold">Note</b> text</p>
<form id="signup" novalidate action="/never">
  <input id="email" name="email" type="email" required>
  <button id="join" type="submit">Join</button>
</form>
<a class="out" id="out" href="/other?via=out">Leave</a>
<a class="out" id="routed" href="/checkout">Routed</a>
<div id="promo" data-slot="top">Summer sale</div>
</div>
<script>
// Like a SPA router: handles this link itself.
document.getElementById('routed').addEventListener('click', function (e) { e.preventDefault(); window.__routed = true; });
// Registered after the script's own window listeners: sees what they did.
addEventListener('click', function (e) { if (e.target.closest('a')) sessionStorage.prevented = e.defaultPrevented; });
document.getElementById('signup').addEventListener('submit', function (e) { e.preventDefault(); window.__submits = (window.__submits || 0) + 1; });
</script>
</body></html>"#;

/// `/checkout` and `/other`: the same short page with a `#pay` button.
const PAY: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Pay</title></head>
<body><button id="pay" type="button">Pay</button></body></html>"#;

fn hook(dest: &Destination) -> (&'static str, String) {
    (
        "hook",
        format!(
            "type = \"http\"\n[settings]\nurl = \"{}/hook\"\n[automated]\ntrack = true\n",
            dest.url()
        ),
    )
}

async fn start() -> (Origin, Destination, Proxy, Browser) {
    let origin = Origin::start(|req| async move {
        let page = match req.uri().path() {
            "/" => HOME,
            "/checkout" | "/other" => PAY,
            _ => return respond(404, &[], "not found"),
        };
        respond(200, &[("content-type", "text/html; charset=utf-8")], page)
    })
    .await;
    let dest = Destination::start().await;
    let proxy = Proxy::start_tools(origin.addr, TRIGGERS, &[hook(&dest)]).await;
    let browser = Browser::start().await;
    (origin, dest, proxy, browser)
}

/// Every track the mock got: (name, page path, client properties).
fn tracks(dest: &Destination) -> Vec<(String, String, Value)> {
    dest.requests()
        .iter()
        .map(|r| {
            assert_eq!(r.path(), "/hook", "{r:?}");
            let j = r.json();
            (
                j["name"].as_str().unwrap_or_default().to_string(),
                j["system"]["page"]["url"]["pathname"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                j["client"].clone(),
            )
        })
        .collect()
}

/// How many of each (name, path), sentinels left out.
fn counts(dest: &Destination) -> BTreeMap<(String, String), usize> {
    let mut m = BTreeMap::new();
    for (name, path, _) in tracks(dest) {
        if !name.starts_with("sentinel") {
            *m.entry((name, path)).or_insert(0) += 1;
        }
    }
    m
}

fn expect(pairs: &[(&str, &str, usize)]) -> BTreeMap<(String, String), usize> {
    pairs
        .iter()
        .map(|(n, p, c)| ((n.to_string(), p.to_string()), *c))
        .collect()
}

/// The client properties of the only `name` event.
fn only(dest: &Destination, name: &str) -> Value {
    let all: Vec<Value> = tracks(dest)
        .into_iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, _, c)| c)
        .collect();
    assert_eq!(all.len(), 1, "{name}: {all:#?}");
    all[0].clone()
}

/// A barrier: sends `sentinel_<tag>` from the page and waits until the mock
/// has it (the script sends in order and resolves once the collector
/// answered), then until every queued delivery has ended, so events the
/// page sent before have arrived too.
async fn settle(browser: &Browser, dest: &Destination, proxy: &Proxy, tag: &str) {
    let name = format!("sentinel_{tag}");
    browser
        .js(&format!("return zaraz.track('{name}').then(() => true);"))
        .await;
    let deadline = std::time::Instant::now() + WAIT;
    while !tracks(dest).iter().any(|(n, _, _)| *n == name) {
        assert!(std::time::Instant::now() < deadline, "{name} never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.settled().await;
}

/// Waits until the mock got `n` events called `name`.
async fn wait_count(dest: &Destination, name: &str, n: usize) {
    let deadline = std::time::Instant::now() + WAIT;
    while tracks(dest).iter().filter(|(m, _, _)| m == name).count() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than {n} {name}: {:#?}",
            tracks(dest)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn click(browser: &Browser, css: &str) {
    browser
        .client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

async fn ready(browser: &Browser, path: &str) {
    browser
        .wait_js(
            &format!("location.pathname == '{path}' && document.readyState == 'complete' && !!(window.zaraz && zaraz._tp)"),
            WAIT,
        )
        .await;
}

#[tokio::test]
async fn click_form_timer_scroll_and_visible_triggers_fire_exactly() {
    let (_origin, dest, proxy, browser) = start().await;
    browser.client.goto(&proxy.url("/")).await.unwrap();
    ready(&browser, "/").await;

    // The script got every client trigger, with the page rule of checkout_click.
    let cfg = browser.js("return window.__tagproxy.triggers;").await;
    let ids: Vec<&str> = cfg
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 8, "{cfg:#}");
    let checkout = cfg
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "checkout_click")
        .unwrap();
    assert_eq!(
        checkout["page"][0]["path"], "page.url.pathname",
        "{checkout:#}"
    );

    // Nothing scrolled yet: neither the depth nor the promo fired.
    wait_count(&dest, "heartbeat", 2).await;
    settle(&browser, &dest, &proxy, "load").await;
    assert_eq!(counts(&dest), expect(&[("heartbeat", "/", 2)]));

    // A click on the button's inner span: the button (an ancestor) matches.
    click(&browser, "#buy-label").await;
    // XPath: the <p> matched from a click on its <b>.
    click(&browser, "#bold").await;
    // Invalid (empty required e-mail): the page gets the submit, no event.
    click(&browser, "#join").await;
    browser.wait_js("window.__submits == 1", WAIT).await;
    browser
        .client
        .find(Locator::Id("email"))
        .await
        .unwrap()
        .send_keys("ann@example.com")
        .await
        .unwrap();
    click(&browser, "#join").await;
    browser.wait_js("window.__submits == 2", WAIT).await;

    // To the bottom, back up, to the bottom again: the 50 % depth once. The
    // jump does not show #promo (2000-2050 px; the bottom view starts at 2280).
    for y in [
        "document.body.scrollHeight",
        "0",
        "document.body.scrollHeight",
    ] {
        browser.js(&format!("window.scrollTo(0, {y});")).await;
        browser
            .wait_js(&format!("Math.abs(scrollY - Math.min({y}, document.body.scrollHeight - innerHeight)) < 2"), WAIT)
            .await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    settle(&browser, &dest, &proxy, "scrolled").await;
    assert_eq!(
        tracks(&dest)
            .iter()
            .filter(|(n, _, _)| n == "promo_seen")
            .count(),
        0,
        "#promo was never in view"
    );

    // Into view twice: once per element.
    for _ in 0..2 {
        browser
            .js("document.getElementById('promo').scrollIntoView({block: 'center'});")
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        browser.js("window.scrollTo(0, 0);").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    settle(&browser, &dest, &proxy, "done").await;

    assert_eq!(
        counts(&dest),
        expect(&[
            ("buy_click", "/", 1),
            ("note_click", "/", 1),
            ("signup_submit", "/", 1),
            ("heartbeat", "/", 2),
            ("half_page", "/", 1),
            ("promo_seen", "/", 1),
        ]),
        "{:#?}",
        tracks(&dest)
    );

    let buy = only(&dest, "buy_click");
    assert_eq!(buy["class"], "buy primary", "{buy:#}");
    assert_eq!(buy["data-sku"], "S1", "{buy:#}");
    assert_eq!(buy["type"], "button", "{buy:#}");
    assert_eq!(buy["textContent"], "Buy now", "{buy:#}");
    let note = only(&dest, "note_click");
    assert_eq!(note["id"], "note", "{note:#}");
    assert_eq!(note["title"], "xp", "{note:#}");
    assert_eq!(note["textContent"], "Note text", "{note:#}");
    let signup = only(&dest, "signup_submit");
    assert_eq!(signup["id"], "signup", "{signup:#}");
    assert_eq!(signup["action"], "/never", "{signup:#}");
    let promo = only(&dest, "promo_seen");
    assert_eq!(promo["id"], "promo", "{promo:#}");
    assert_eq!(promo["data-slot"], "top", "{promo:#}");
    assert_eq!(promo["textContent"], "Summer sale", "{promo:#}");
    assert_eq!(only(&dest, "half_page")["depth"], "50%");
    let mut beats: Vec<i64> = tracks(&dest)
        .iter()
        .filter(|(n, _, _)| n == "heartbeat")
        .map(|(_, _, c)| c["count"].as_i64().unwrap())
        .collect();
    beats.sort();
    assert_eq!(beats, [1, 2]);

    browser.close().await;
}

#[tokio::test]
async fn page_rules_arm_a_click_trigger_only_where_they_hold() {
    let (_origin, dest, proxy, browser) = start().await;

    for path in ["/checkout", "/other"] {
        browser.client.goto(&proxy.url(path)).await.unwrap();
        ready(&browser, path).await;
        click(&browser, "#pay").await;
        tokio::time::sleep(Duration::from_millis(900)).await;
        settle(&browser, &dest, &proxy, &path[1..]).await;
    }
    assert_eq!(
        counts(&dest),
        expect(&[
            ("checkout_click", "/checkout", 1),
            ("heartbeat", "/checkout", 2),
            ("heartbeat", "/other", 2),
        ]),
        "{:#?}",
        tracks(&dest)
    );

    // SPA: a history change to /checkout arms it (and restarts the timer),
    // back to /other disarms it.
    for (path, n) in [("/checkout", 2), ("/other", 3)] {
        browser
            .js(&format!("history.pushState({{}}, '', '{path}');"))
            .await;
        // The script re-checks page rules one task after the change.
        tokio::time::sleep(Duration::from_millis(300)).await;
        click(&browser, "#pay").await;
        tokio::time::sleep(Duration::from_millis(900)).await;
        settle(&browser, &dest, &proxy, &format!("spa{n}")).await;
    }
    assert_eq!(
        counts(&dest),
        expect(&[
            ("checkout_click", "/checkout", 2),
            ("heartbeat", "/checkout", 4),
            ("heartbeat", "/other", 4),
        ]),
        "{:#?}",
        tracks(&dest)
    );

    browser.close().await;
}

#[tokio::test]
async fn wait_ms_holds_a_link_until_the_event_is_sent() {
    let (_origin, dest, proxy, browser) = start().await;
    browser.client.goto(&proxy.url("/")).await.unwrap();
    ready(&browser, "/").await;
    // Once the heartbeats are answered: count the collector's answers from here.
    wait_count(&dest, "heartbeat", 2).await;
    settle(&browser, &dest, &proxy, "load").await;

    // A link the page routes itself (it called preventDefault): the event
    // goes out, the script does not navigate.
    click(&browser, "#routed").await;
    browser.wait_js("window.__routed === true", WAIT).await;
    wait_count(&dest, "out_click", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(browser.js("return location.pathname;").await, "/");

    let before: i64 = browser
        .js("return +sessionStorage.answered || 0;")
        .await
        .as_i64()
        .unwrap();
    let t0 = std::time::Instant::now();
    click(&browser, "#out").await;
    ready(&browser, "/other").await;
    let took = t0.elapsed();
    assert_eq!(browser.js("return location.search;").await, "?via=out");
    // The script held the navigation (prevented the default) and navigated
    // itself ...
    assert_eq!(browser.js("return sessionStorage.prevented;").await, "true");
    // ... once the collector had answered the click's event ...
    let after = browser
        .js("return +sessionStorage.answered || 0;")
        .await
        .as_i64()
        .unwrap();
    assert!(after > before, "answered before {before}, after {after}");
    // ... and did not wait for the whole wait_ms once it had.
    assert!(
        took < Duration::from_millis(2500),
        "navigation took {took:?}"
    );

    wait_count(&dest, "out_click", 2).await;
    let outs: Vec<Value> = tracks(&dest)
        .into_iter()
        .filter(|(n, _, _)| n == "out_click")
        .map(|(_, _, c)| c)
        .collect();
    assert_eq!(outs.len(), 2, "{outs:#?}");
    let out = outs
        .iter()
        .find(|c| c["id"] == "out")
        .expect("#out's event");
    assert_eq!(out["href"], "/other?via=out", "{out:#}");
    assert_eq!(out["class"], "out", "{out:#}");
    assert_eq!(out["textContent"], "Leave", "{out:#}");
    assert!(outs.iter().any(|c| c["id"] == "routed"), "{outs:#?}");

    browser.close().await;
}
