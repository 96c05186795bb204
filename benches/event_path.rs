//! The collector's per-event cost (issue 14): one browser batch of ten
//! events (pageviews, tracks and an `Order Completed`, as
//! `benches/collector.sh` posts) through everything the collector does
//! before it queues: parse the batch → enrich (User-Agent, identity,
//! privacy) → decide (consent, bot score, triggers) → render the GA4 and
//! Meta requests; then the spool record of each delivery, as
//! `Engine::submit` encodes it. Figures are per event (throughput:
//! elements).
//!
//!     cargo bench --bench event_path

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::{HeaderMap, HeaderValue};
use serde_json::{json, Value};

use tagproxy::app::{App, Plan, Shared};
use tagproxy::collector;
use tagproxy::delivery::spool::record;

const EVENTS: usize = 10;

/// The batch `benches/collector.sh` posts: a pageview, a track and an
/// `Order Completed`, in turn.
fn batch() -> Vec<u8> {
    let page = json!({"url": "https://shop.test/checkout?utm_source=news", "title": "Checkout", "referrer": "https://shop.test/cart"});
    let device = json!({"viewport": "1280x720", "resolution": "1920x1080", "language": "en-US", "tz_offset": -60});
    let events: Vec<Value> = (0..EVENTS)
        .map(|i| {
            let mut e = match i % 3 {
                0 => json!({"type": "pageview"}),
                1 => json!({"type": "track", "name": "signup", "properties": {"method": "email", "plan_price": 9.5}}),
                _ => json!({"type": "ecommerce", "name": "Order Completed", "properties": {
                    "order_id": format!("A{i}"), "total": 27.5, "currency": "USD",
                    "products": [{"product_id": "P1", "name": "Mug", "price": 14.5, "quantity": 1},
                                 {"product_id": "P2", "name": "Tee", "price": 13, "quantity": 1}]}}),
            };
            e["page"] = page.clone();
            e["device"] = device.clone();
            e["ts"] = json!(1_764_000_000_000u64);
            e
        })
        .collect();
    serde_json::to_vec(&events).unwrap()
}

/// A browser's headers (a returning visitor: tagproxy's and Meta's cookies).
fn headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("content-type", "application/json"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"),
        ("accept", "*/*"),
        ("accept-language", "en-US,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br"),
        ("origin", "https://shop.test"),
        ("referer", "https://shop.test/checkout?utm_source=news"),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "cors"),
        ("sec-fetch-dest", "empty"),
        ("sec-ch-ua", "\"Chromium\";v=\"131\", \"Not_A Brand\";v=\"24\""),
        ("sec-ch-ua-mobile", "?0"),
        ("sec-ch-ua-platform", "\"Linux\""),
        ("cookie", "tp_cid=1187654321.1748934600; tp_sid=1748934661.3.1; _fbp=fb.1.1748934600000.123456789"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

/// tagproxy with GA4 and Meta (every automated action on), memory backend.
fn app(rt: &tokio::runtime::Runtime) -> (tempfile::TempDir, App) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    std::fs::write(
        dir.path().join("tagproxy.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:9\"\n[delivery]\nbackend = \"memory\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tools/ga4.toml"),
        "type = \"google-analytics-4\"\nendpoint = \"http://127.0.0.1:9\"\n[settings]\nmeasurement_id = \"G-LOAD123\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tools/meta.toml"),
        "type = \"facebook-pixel\"\nendpoint = \"http://127.0.0.1:9\"\n[settings]\npixel_id = \"1234567890\"\naccess_token = \"load-test-token\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n",
    )
    .unwrap();
    let loaded = tagproxy::config::load(&dir.path().join("tagproxy.toml")).unwrap();
    let plan = Plan::load(&loaded, tagproxy::rules::Secrets::Required).unwrap();
    let shared = rt.block_on(async { Shared::start(&loaded) }).unwrap();
    let app = App::start(&loaded, plan, &shared);
    (dir, app)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let (_dir, app) = app(&rt);
    let body = batch();
    let headers = headers();
    let peer: SocketAddr = "203.0.113.7:50000".parse().unwrap();
    let now = 1_764_000_000_000;
    let prepared = collector::prepare(
        &app,
        &headers,
        http::Version::HTTP_11,
        true,
        peer,
        &body,
        now,
    )
    .unwrap();
    assert_eq!(
        prepared.deliveries().len(),
        2 * EVENTS,
        "one GA4 and one Meta delivery per event"
    );

    let mut g = c.benchmark_group("event path");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.bench_function(
        "parse + enrich + decide + render (GA4 + Meta), per event",
        |b| {
            b.iter(|| {
                let prepared = collector::prepare(
                    &app,
                    black_box(&headers),
                    http::Version::HTTP_11,
                    true,
                    peer,
                    black_box(&body),
                    now,
                )
                .unwrap();
                black_box(prepared.deliveries().len())
            })
        },
    );
    g.bench_function("spool records of both deliveries, per event", |b| {
        b.iter(|| {
            for d in prepared.deliveries() {
                black_box(record::encode_body(now, black_box(d)));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
