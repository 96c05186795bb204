//! End to end in a real browser: headless Chromium (Debian `chromium`, driven
//! by `chromedriver` through fantoccini) loads pages through the proxy, the
//! injected `window.zaraz` sends events to the collector, and a GA4 tool
//! delivers them to a recording mock. Assertions are on the GA4 hits.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::browser::Browser;
use common::*;
use fantoccini::Locator;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(15);

/// The page that links to the home page, so the home page has a referrer.
/// Served with `no-transform`, so it carries no tag and sends nothing.
const START: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Start</title></head>
<body><a id="go" href="/">Go to the home page</a></body></html>"#;

/// The home page: tracks in `<head>` right after the injected tag, before
/// `<title>` has been parsed.
const HOME: &str = r#"<!doctype html>
<html><head>
<script>zaraz.track('signup', {method: 'email'}).then(function () { window.__signupSent = true; });</script>
<meta charset="utf-8">
<title>Browser Test Home</title>
</head>
<body><h1>Home</h1><button id="add" type="button">Add to cart</button></body></html>"#;

/// A GA4 tool delivering to `dest`, with every automated action on.
fn ga4(dest: &Destination) -> (&'static str, String) {
    (
        "ga4",
        format!(
            "type = \"google-analytics-4\"\nendpoint = \"{}\"\n\n[settings]\nmeasurement_id = \"G-BROWSER1\"\n\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
            dest.url()
        ),
    )
}

/// What the page itself reports about the browser.
struct Env {
    sr: String,
    ul: String,
    user_agent: String,
}

async fn env(browser: &Browser) -> Env {
    let v = browser
        .js("return {sr: screen.width + 'x' + screen.height, ul: navigator.language, ua: navigator.userAgent};")
        .await;
    let s = |k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("{k}: {v}"))
            .to_string()
    };
    Env {
        sr: s("sr"),
        ul: s("ul").to_ascii_lowercase(),
        user_agent: s("ua"),
    }
}

/// One GA4 hit, its query as a map (GA4 parameters are not repeated).
struct Hit {
    q: BTreeMap<String, String>,
    user_agent: String,
}

impl Hit {
    fn get(&self, k: &str) -> &str {
        self.q
            .get(k)
            .unwrap_or_else(|| panic!("hit {:?} has no `{k}`: {:#?}", self.en(), self.q))
    }

    fn en(&self) -> &str {
        self.q.get("en").map(String::as_str).unwrap_or("")
    }
}

fn hits(dest: &Destination) -> Vec<Hit> {
    dest.requests()
        .into_iter()
        .map(|r| {
            assert_eq!(r.method, "GET", "{r:?}");
            assert_eq!(r.path(), "/g/collect", "{r:?}");
            Hit {
                q: r.query().into_iter().collect(),
                user_agent: r
                    .headers
                    .get("user-agent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
            }
        })
        .collect()
}

fn named<'a>(hits: &'a [Hit], en: &str) -> Vec<&'a Hit> {
    hits.iter().filter(|h| h.en() == en).collect()
}

fn summary(hits: &[Hit]) -> Vec<(String, String)> {
    hits.iter()
        .map(|h| {
            (
                h.en().to_string(),
                h.q.get("dl").cloned().unwrap_or_default(),
            )
        })
        .collect()
}

/// Every hit: GA4 basics, the browser's real screen and language, one
/// visitor, one session, and the browser's User-Agent.
fn assert_common(hits: &[Hit], env: &Env) {
    let cid = hits[0].get("cid").to_string();
    let sid = hits[0].get("sid").to_string();
    for h in hits {
        assert_eq!(h.get("v"), "2");
        assert_eq!(h.get("tid"), "G-BROWSER1");
        assert_eq!(h.get("sr"), env.sr, "{}: screen size", h.en());
        assert_eq!(h.get("ul"), env.ul, "{}: language", h.en());
        assert_eq!(h.get("cid"), cid, "{}: client id", h.en());
        assert_eq!(h.get("sid"), sid, "{}: session id", h.en());
        assert_eq!(h.user_agent, env.user_agent, "{}: User-Agent", h.en());
    }
}

#[tokio::test]
async fn pageviews_track_ecommerce_and_history_change_reach_ga4() {
    let origin = Origin::start(|req| async move {
        match req.uri().path() {
            "/start" => respond(
                200,
                &[
                    ("content-type", "text/html; charset=utf-8"),
                    ("cache-control", "no-transform"),
                ],
                START,
            ),
            _ => respond(200, &[("content-type", "text/html; charset=utf-8")], HOME),
        }
    })
    .await;
    let dest = Destination::start().await;
    let proxy = Proxy::start_tools(origin.addr, "", &[ga4(&dest)]).await;

    // The tag is injected before the page's inline zaraz.track call.
    let html = get_text(proxy.url("/")).await;
    let tag_at = html.find("/_tagproxy/s.js").expect("tag injected");
    assert!(tag_at < html.find("zaraz.track").unwrap(), "{html}");

    let browser = Browser::start().await;
    let (home, start) = (proxy.url("/"), proxy.url("/start"));
    browser.client.goto(&start).await.unwrap();
    assert_eq!(
        browser.js("return typeof window.zaraz;").await,
        "undefined",
        "/start must not be tagged"
    );
    browser
        .client
        .find(Locator::Id("go"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_js(
            "location.pathname == '/' && document.readyState == 'complete' && !!(window.zaraz && zaraz._tp)",
            WAIT,
        )
        .await;
    assert_eq!(
        browser.js("return document.referrer;").await,
        start.as_str()
    );
    assert_eq!(
        browser.js("return document.title;").await,
        "Browser Test Home"
    );
    let env = env(&browser).await;

    // The head's track promise resolves once the collector answered (and set
    // the visitor cookies), like a visitor who stays on the page a moment.
    browser.wait_js("window.__signupSent === true", WAIT).await;
    // Script results that are promises are awaited by WebDriver.
    browser
        .js("return zaraz.ecommerce('Product Added', {product_id: 'P1', sku: 'P1', name: 'Mug', price: 14.5, quantity: 1, currency: 'USD'}).then(() => true);")
        .await;
    browser
        .js("history.pushState({}, '', '/next'); document.title = 'Next Page';")
        .await;
    dest.wait_for(4, WAIT).await;
    // Whatever would arrive twice has had the time to by the time an event
    // sent last is delivered.
    browser
        .js("return zaraz.track('sentinel').then(() => true);")
        .await;
    dest.wait_for(5, WAIT).await;

    let hits = hits(&dest);
    let mut names: Vec<&str> = hits.iter().map(Hit::en).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "add_to_cart",
            "page_view",
            "page_view",
            "sentinel",
            "signup"
        ],
        "{:#?}",
        summary(&hits)
    );
    assert_common(&hits, &env);

    let views = named(&hits, "page_view");
    let first = views
        .iter()
        .find(|h| h.get("dl") == home)
        .unwrap_or_else(|| panic!("no page_view of {home}: {:#?}", summary(&hits)));
    assert_eq!(first.get("dt"), "Browser Test Home");
    assert_eq!(first.get("dr"), start);
    let next = views
        .iter()
        .find(|h| h.get("dl").ends_with("/next"))
        .unwrap_or_else(|| panic!("no page_view of /next: {:#?}", summary(&hits)));
    assert_eq!(next.get("dl"), proxy.url("/next"));
    assert_eq!(next.get("dt"), "Next Page");

    let signup = named(&hits, "signup")[0];
    assert_eq!(signup.get("ep.method"), "email");
    assert_eq!(signup.get("dl"), home);
    // Sent before <title> was parsed: the title is filled in at DOMContentLoaded.
    assert_eq!(signup.get("dt"), "Browser Test Home");
    assert_eq!(signup.get("dr"), start);

    let add = named(&hits, "add_to_cart")[0];
    let pr1 = add.get("pr1");
    assert!(pr1.contains("idP1") && pr1.contains("nmMug"), "pr1 = {pr1}");
    assert_eq!(add.get("cu"), "USD");
    assert_eq!(add.get("dl"), home);
    assert_eq!(add.get("dt"), "Browser Test Home");

    // One session, hits numbered in the order the page made them.
    let mut order: Vec<(u64, &str)> = hits
        .iter()
        .map(|h| (h.get("_s").parse().unwrap(), h.en()))
        .collect();
    order.sort();
    let order: Vec<&str> = order.into_iter().map(|(_, en)| en).collect();
    assert_eq!(
        order,
        [
            "page_view",
            "signup",
            "add_to_cart",
            "page_view",
            "sentinel"
        ]
    );

    browser.close().await;
}

/// The async pre-load stub documented at the top of src/client/zaraz.js.
const STUB: &str = r#"window.zaraz=window.zaraz||{q:[]};["track","set","ecommerce"].forEach(function(m){zaraz[m]=zaraz[m]||function(){zaraz.q.push({m:m,a:[].slice.call(arguments)})}})"#;

#[tokio::test]
async fn calls_queued_by_the_async_stub_are_replayed_in_order() {
    let page = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Async Stub</title>
<script>STUB</script>
<script>
zaraz.track('queued_first', {step: 'one'});
zaraz.track('queued_second', {step: 'two'});
window.__queuedBeforeLoad = zaraz.q.length;
</script>
</head>
<body><p>Loaded async.</p><script async src="/_tagproxy/s.js"></script></body></html>"#
        .replace("STUB", STUB);
    let origin = Origin::page("text/html; charset=utf-8", page).await;
    let dest = Destination::start().await;
    // The page loads the tag itself; the proxy must not add a blocking one.
    let proxy = Proxy::start_tools(
        origin.addr,
        "[settings]\nauto_inject = false\n",
        &[ga4(&dest)],
    )
    .await;

    let browser = Browser::start().await;
    browser.client.goto(&proxy.url("/")).await.unwrap();
    browser.wait_js("!!(window.zaraz && zaraz._tp)", WAIT).await;
    assert_eq!(
        browser.js("return window.__queuedBeforeLoad;").await,
        Value::from(2),
        "both calls were queued by the stub, before the script loaded"
    );
    let env = env(&browser).await;
    dest.wait_for(3, WAIT).await;

    let hits = hits(&dest);
    assert_common(&hits, &env);
    let mut order: Vec<(u64, &str)> = hits
        .iter()
        .map(|h| (h.get("_s").parse().unwrap(), h.en()))
        .collect();
    order.sort();
    let order: Vec<&str> = order.into_iter().map(|(_, en)| en).collect();
    assert_eq!(order, ["page_view", "queued_first", "queued_second"]);
    assert_eq!(named(&hits, "queued_first")[0].get("ep.step"), "one");
    assert_eq!(named(&hits, "queued_second")[0].get("ep.step"), "two");
    for h in &hits {
        assert_eq!(h.get("dl"), proxy.url("/"));
        assert_eq!(h.get("dt"), "Async Stub");
    }

    browser.close().await;
}

#[tokio::test]
async fn data_layer_push_becomes_a_ga4_event() {
    let page = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Data Layer</title></head>
<body><p>Newsletter</p></body></html>"#;
    let origin = Origin::page("text/html; charset=utf-8", page).await;
    let dest = Destination::start().await;
    let proxy = Proxy::start_tools(
        origin.addr,
        "[settings]\ndata_layer = true\n",
        &[ga4(&dest)],
    )
    .await;

    let browser = Browser::start().await;
    browser.client.goto(&proxy.url("/")).await.unwrap();
    browser
        .wait_js("!!(window.zaraz && zaraz._tp && window.dataLayer)", WAIT)
        .await;
    let env = env(&browser).await;
    browser
        .js("dataLayer.push({event: 'newsletter', list: 'weekly'});")
        .await;
    dest.wait_for(2, WAIT).await;

    let hits = hits(&dest);
    assert_common(&hits, &env);
    let mut names: Vec<&str> = hits.iter().map(Hit::en).collect();
    names.sort();
    assert_eq!(names, ["newsletter", "page_view"], "{:#?}", summary(&hits));
    let hit = named(&hits, "newsletter")[0];
    assert_eq!(hit.get("ep.list"), "weekly");
    // `event` names the event; it is not one of its properties.
    assert_eq!(hit.q.get("ep.event"), None);
    assert_eq!(hit.get("dl"), proxy.url("/"));
    assert_eq!(hit.get("dt"), "Data Layer");

    browser.close().await;
}

/// A first visit fires several requests before the collector's first answer
/// has set the visitor cookie: they must all be one visitor.
#[tokio::test]
async fn first_visit_requests_share_one_client_id() {
    let page = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>First Visit</title>
<script>
  zaraz.track('one');
  setTimeout(function () { zaraz.track('two'); }, 0);
  setTimeout(function () { zaraz.track('three'); }, 5);
</script></head>
<body><p>hello</p></body></html>"#;
    let origin = Origin::page("text/html; charset=utf-8", page).await;
    let dest = Destination::start().await;
    let proxy = Proxy::start_tools(origin.addr, "", &[ga4(&dest)]).await;
    let browser = Browser::start().await;
    browser.client.goto(&proxy.url("/")).await.unwrap();
    dest.wait_for(4, WAIT).await;
    let hits = hits(&dest);
    let mut names: Vec<&str> = hits.iter().map(Hit::en).collect();
    names.sort();
    assert_eq!(
        names,
        ["one", "page_view", "three", "two"],
        "{:#?}",
        summary(&hits)
    );
    let cids: std::collections::BTreeSet<&str> = hits.iter().map(|h| h.get("cid")).collect();
    assert_eq!(cids.len(), 1, "one visitor, one client id: {cids:?}");
    let sids: std::collections::BTreeSet<&str> = hits.iter().map(|h| h.get("sid")).collect();
    assert_eq!(sids.len(), 1, "one session: {sids:?}");
    browser.close().await;
}

/// Notes every collector request body the page sends, in the order it sends
/// them (`__wire`: one array of events per request), before any tag loads.
const WIRE: &str = r#"<script>
window.__wire = [];
var f = window.fetch;
window.fetch = function (u, o) {
  if (String(u).indexOf('/_tagproxy/t') >= 0) __wire.push(JSON.parse(o.body));
  return f.apply(this, arguments);
};
var b = navigator.sendBeacon;
navigator.sendBeacon = function (u, d) {
  var i = __wire.push(null) - 1;
  d.text().then(function (t) { __wire[i] = JSON.parse(t); });
  return b.apply(this, arguments);
};
</script>"#;

/// Every event the page sent, in wire order: (type, name, consent_replay, ts).
async fn wire(browser: &Browser) -> Vec<(String, String, bool, u64)> {
    let v = browser.js("return window.__wire;").await;
    v.as_array()
        .unwrap_or_else(|| panic!("__wire: {v}"))
        .iter()
        .flat_map(|b| b.as_array().unwrap_or_else(|| panic!("a body: {b}")).iter())
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_string(),
                e["name"].as_str().unwrap_or_default().to_string(),
                e["consent_replay"].as_bool().unwrap_or(false),
                e["ts"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// GA4 event names in the order the collector took the events (`_s`, the
/// session's hit counter, is assigned as the collector reads them).
fn by_hit_number(hits: &[Hit]) -> Vec<&str> {
    let mut order: Vec<(u64, &str)> = hits
        .iter()
        .map(|h| (h.get("_s").parse().unwrap(), h.en()))
        .collect();
    order.sort();
    order.into_iter().map(|(_, en)| en).collect()
}

/// A page that loads the tag async and, before it arrives, queues an
/// ecommerce call and a track through the stub and pushes to `dataLayer`.
fn queued_early_page() -> String {
    r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Queued Early</title>
WIRE
<script>STUB</script>
<script>
// Reading these properties takes a few milliseconds (a stand-in for a busy
// page), so the queued calls' timestamps differ from a later pageview's.
zaraz.ecommerce('Product Added', {toJSON: function () {
  var t = Date.now();
  while (Date.now() < t + 3);
  return {product_id: 'P1', sku: 'P1', name: 'Mug', price: 14.5, quantity: 1, currency: 'USD'};
}});
zaraz.track('queued_track', {step: 'two'});
window.dataLayer = [{event: 'dl_event', list: 'weekly'}];
window.__queuedBeforeLoad = zaraz.q.length;
</script>
</head>
<body><p>Loaded async.</p><script async src="/_tagproxy/s.js"></script></body></html>"#
        .replace("WIRE", WIRE)
        .replace("STUB", STUB)
}

/// The load pageview goes out before what the page queued before the script
/// loaded (SPEC §4: a pageview per page load; queued calls are replayed): in
/// the request body, across requests, and so in the order GA4 numbers the
/// hits. gtag likewise sends its page_view from `config` before the events
/// the page pushed to `dataLayer` are processed
/// (https://developers.google.com/tag-platform/gtagjs/reference#config).
#[tokio::test]
async fn the_load_pageview_precedes_calls_queued_before_the_script() {
    let origin = Origin::page("text/html; charset=utf-8", queued_early_page()).await;
    let dest = Destination::start().await;
    let proxy = Proxy::start_tools(
        origin.addr,
        "[settings]\nauto_inject = false\ndata_layer = true\n",
        &[ga4(&dest)],
    )
    .await;

    let browser = Browser::start().await;
    browser.client.goto(&proxy.url("/")).await.unwrap();
    browser.wait_js("!!(window.zaraz && zaraz._tp)", WAIT).await;
    assert_eq!(
        browser.js("return window.__queuedBeforeLoad;").await,
        Value::from(2),
        "both calls were queued by the stub, before the script loaded"
    );
    let env = env(&browser).await;
    let requests = dest.wait_for(4, WAIT).await;
    for r in &requests {
        if let Err(e) = common::validate::ga4(r, &env.user_agent) {
            panic!("{e}\n{r:?}");
        }
    }

    let sent = wire(&browser).await;
    let kinds: Vec<(&str, &str)> = sent
        .iter()
        .map(|(t, n, _, _)| (t.as_str(), n.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("pageview", ""),
            ("ecommerce", "Product Added"),
            ("track", "queued_track"),
            ("track", "dl_event"),
        ],
        "wire order"
    );
    assert!(
        sent.windows(2).all(|w| w[0].3 <= w[1].3),
        "client timestamps follow the order: {sent:?}"
    );

    let hits = hits(&dest);
    assert_common(&hits, &env);
    assert_eq!(
        by_hit_number(&hits),
        ["page_view", "add_to_cart", "queued_track", "dl_event"],
        "{:#?}",
        summary(&hits)
    );
    browser.close().await;
}

/// Consent withheld at load: the copies c.js replays once the visitor grants
/// go out in the order the page made them, the pageview first.
#[tokio::test]
async fn a_consent_replay_keeps_the_pageview_first() {
    let origin = Origin::page("text/html; charset=utf-8", queued_early_page()).await;
    let dest = Destination::start().await;
    let tool = ga4(&dest);
    let tool = (tool.0, format!("purposes = [\"analytics\"]\n{}", tool.1));
    let proxy = Proxy::start_tools(
        origin.addr,
        "[settings]\nauto_inject = false\ndata_layer = true\n\n[consent]\nenabled = true\nshow_modal = false\n[[consent.purposes]]\nid = \"analytics\"\nname = \"Analytics\"\ndescription = \"Counting visits.\"\ndefault = \"denied\"\n",
        &[tool],
    )
    .await;

    let browser = Browser::start().await;
    browser.client.goto(&proxy.url("/")).await.unwrap();
    browser
        .wait_js("!!(window.zaraz && zaraz.consent.APIReady)", WAIT)
        .await;
    browser
        .wait_js("window.__wire.flat().length == 4", WAIT)
        .await;
    let env = env(&browser).await;
    browser
        .js("zaraz.consent.set({analytics: true}); return true;")
        .await;
    dest.wait_for(4, WAIT).await;

    let replays: Vec<(String, String)> = wire(&browser)
        .await
        .into_iter()
        .filter(|e| e.2)
        .map(|e| (e.0, e.1))
        .collect();
    let replays: Vec<(&str, &str)> = replays
        .iter()
        .map(|(t, n)| (t.as_str(), n.as_str()))
        .collect();
    assert_eq!(
        replays,
        [
            ("pageview", ""),
            ("ecommerce", "Product Added"),
            ("track", "queued_track"),
            ("track", "dl_event"),
        ],
        "replay order on the wire"
    );
    let hits = hits(&dest);
    assert_common(&hits, &env);
    assert_eq!(
        by_hit_number(&hits),
        ["page_view", "add_to_cart", "queued_track", "dl_event"],
        "{:#?}",
        summary(&hits)
    );
    browser.close().await;
}

/// A virtual pageview's referrer is the previous in-app page, as gtag sets
/// `page_referrer` to the previous `page_location` on a history change
/// (https://developers.google.com/analytics/devguides/collection/ga4/single-page-applications);
/// events after it carry the same referrer, as gtag's do (the page fields it
/// sets apply to every later event). The landing pageview keeps
/// `document.referrer`. GA4 gets it as `dr`.
#[tokio::test]
async fn virtual_pageviews_carry_the_previous_in_app_url_as_referrer() {
    let app = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Landing</title></head>
<body><h1>SPA</h1></body></html>"#;
    let origin = Origin::page("text/html; charset=utf-8", app).await;
    let dest = Destination::start().await;
    let proxy = Proxy::start_tools(origin.addr, "", &[ga4(&dest)]).await;
    let landing = proxy.url("/");
    // Another site (another origin) that links to the app.
    let link = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Elsewhere</title></head>
<body><a id="go" href="{landing}">To the app</a></body></html>"#
    );
    let elsewhere = Origin::page("text/html; charset=utf-8", link).await;
    let elsewhere_url = format!("http://{}/", elsewhere.addr);

    let browser = Browser::start().await;
    browser
        .client
        .goto(&format!("{elsewhere_url}from"))
        .await
        .unwrap();
    browser
        .client
        .find(Locator::Id("go"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_js(
            "location.pathname == '/' && document.readyState == 'complete' && !!(window.zaraz && zaraz._tp)",
            WAIT,
        )
        .await;
    // Cross-origin: the browser's default policy gives the origin only.
    assert_eq!(
        browser.js("return document.referrer;").await,
        elsewhere_url.as_str()
    );
    let env = env(&browser).await;
    dest.wait_for(1, WAIT).await;

    // Two steps into the app, an event on the first, then back.
    browser
        .js("history.pushState({}, '', '/a?tab=1'); document.title = 'A'; setTimeout(function () { zaraz.track('on_a'); });")
        .await;
    dest.wait_for(3, WAIT).await;
    browser
        .js("history.pushState({}, '', '/b'); document.title = 'B';")
        .await;
    dest.wait_for(4, WAIT).await;
    browser.js("history.back();").await;
    dest.wait_for(5, WAIT).await;
    // A router that also reports the page itself: one pageview, not two.
    browser
        .js("history.pushState({}, '', '/c'); zaraz.spaPageview();")
        .await;
    dest.wait_for(6, WAIT).await;
    browser
        .js("return zaraz.track('sentinel').then(() => true);")
        .await;
    let requests = dest.wait_for(7, WAIT).await;
    for r in &requests {
        if let Err(e) = common::validate::ga4(r, &env.user_agent) {
            panic!("{e}\n{r:?}");
        }
    }

    let hits = hits(&dest);
    assert_common(&hits, &env);
    let (a, b, c) = (proxy.url("/a?tab=1"), proxy.url("/b"), proxy.url("/c"));
    let mut got: Vec<(u64, &str, &str, &str)> = hits
        .iter()
        .map(|h| {
            (
                h.get("_s").parse().unwrap(),
                h.en(),
                h.get("dl"),
                h.q.get("dr").map(String::as_str).unwrap_or(""),
            )
        })
        .collect();
    got.sort();
    let got: Vec<(&str, &str, &str)> = got.into_iter().map(|(_, e, l, r)| (e, l, r)).collect();
    assert_eq!(
        got,
        [
            ("page_view", landing.as_str(), elsewhere_url.as_str()),
            ("page_view", a.as_str(), landing.as_str()),
            ("on_a", a.as_str(), landing.as_str()),
            ("page_view", b.as_str(), a.as_str()),
            ("page_view", a.as_str(), b.as_str()),
            ("page_view", c.as_str(), a.as_str()),
            ("sentinel", c.as_str(), a.as_str()),
        ]
    );
    browser.close().await;
}

/// `auto_pageview = false`: no automatic pageview, so the queued calls go
/// first, in call order; the pageviews the site sends itself with
/// `zaraz.spaPageview()` follow, each virtual one with the previous in-app
/// URL as referrer (`dr`), as with automatic ones.
#[tokio::test]
async fn without_auto_pageview_queued_calls_keep_their_order() {
    let page = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Manual</title>
WIRE
<script>STUB</script>
<script>
zaraz.track('queued_first');
zaraz.ecommerce('Product Added', {product_id: 'P1', name: 'Mug', price: 14.5, quantity: 1, currency: 'USD'});
</script>
</head>
<body><p>Manual pageviews.</p><script async src="/_tagproxy/s.js"></script></body></html>"#
        .replace("WIRE", WIRE)
        .replace("STUB", STUB);
    let origin = Origin::page("text/html; charset=utf-8", page).await;
    let dest = Destination::start().await;
    let proxy = Proxy::start_tools(
        origin.addr,
        "[settings]\nauto_inject = false\nauto_pageview = false\n",
        &[ga4(&dest)],
    )
    .await;

    let browser = Browser::start().await;
    browser.client.goto(&proxy.url("/")).await.unwrap();
    browser.wait_js("!!(window.zaraz && zaraz._tp)", WAIT).await;
    let env = env(&browser).await;
    dest.wait_for(2, WAIT).await;
    browser.js("zaraz.spaPageview();").await;
    dest.wait_for(3, WAIT).await;
    browser
        .js("history.pushState({}, '', '/a'); zaraz.spaPageview();")
        .await;
    let requests = dest.wait_for(4, WAIT).await;
    for r in &requests {
        if let Err(e) = common::validate::ga4(r, &env.user_agent) {
            panic!("{e}\n{r:?}");
        }
    }
    let kinds: Vec<(String, String)> = wire(&browser)
        .await
        .into_iter()
        .map(|e| (e.0, e.1))
        .collect();
    let kinds: Vec<(&str, &str)> = kinds
        .iter()
        .map(|(t, n)| (t.as_str(), n.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("track", "queued_first"),
            ("ecommerce", "Product Added"),
            ("pageview", ""),
            ("pageview", ""),
        ]
    );
    let hits = hits(&dest);
    assert_common(&hits, &env);
    let mut got: Vec<(u64, &str, &str, &str)> = hits
        .iter()
        .map(|h| {
            (
                h.get("_s").parse().unwrap(),
                h.en(),
                h.get("dl"),
                h.q.get("dr").map(String::as_str).unwrap_or(""),
            )
        })
        .collect();
    got.sort();
    let got: Vec<(&str, &str, &str)> = got.into_iter().map(|(_, e, l, r)| (e, l, r)).collect();
    let (landing, a) = (proxy.url("/"), proxy.url("/a"));
    assert_eq!(
        got,
        [
            ("queued_first", landing.as_str(), ""),
            ("add_to_cart", landing.as_str(), ""),
            ("page_view", landing.as_str(), ""),
            ("page_view", a.as_str(), landing.as_str()),
        ]
    );
    browser.close().await;
}

/// More calls queued than one request carries (50 events): the requests go
/// one after another, so the collector reads the pageview first and the
/// rest in call order, also for a returning visitor (whose requests need
/// not wait for the visitor cookie).
#[tokio::test]
async fn queued_calls_over_several_requests_arrive_in_order() {
    let page = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Many</title>
WIRE
<script>STUB</script>
<script>for (var i = 0; i < 120; i++) zaraz.track('t' + i);</script>
</head>
<body><p>Many.</p><script async src="/_tagproxy/s.js"></script></body></html>"#
        .replace("WIRE", WIRE)
        .replace("STUB", STUB);
    let origin = Origin::page("text/html; charset=utf-8", page).await;
    let dest = Destination::start().await;
    let proxy = Proxy::start_tools(
        origin.addr,
        "[settings]\nauto_inject = false\n",
        &[ga4(&dest)],
    )
    .await;
    let browser = Browser::start().await;
    let mut want = vec!["page_view".to_string()];
    want.extend((0..120).map(|i| format!("t{i}")));
    for visit in 1..=2 {
        browser.client.goto(&proxy.url("/")).await.unwrap();
        dest.wait_for(121 * visit, WAIT).await;
        let bodies = browser.js("return __wire.map(b => b.length);").await;
        assert_eq!(bodies, serde_json::json!([50, 50, 21]), "visit {visit}");
        let all = hits(&dest);
        let sid = all[all.len() - 1].get("sid").to_string();
        let visit_hits: Vec<Hit> = all.into_iter().skip(121 * (visit - 1)).collect();
        assert!(visit_hits.iter().all(|h| h.get("sid") == sid));
        assert_eq!(by_hit_number(&visit_hits), want, "visit {visit}");
    }
    browser.close().await;
}
