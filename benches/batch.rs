//! Batched delivery's own cost per event: computing a request's batch key
//! and joining a full batch (Meta: 1,000 events in one `data` array; GA4: 25
//! hits in one `POST /g/collect`), from requests as the adapters render them.
//!
//!     cargo bench --bench batch

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;

use tagproxy::delivery::Batching;
use tagproxy::tools::facebook_pixel::MetaBatching;
use tagproxy::tools::google_analytics_4::Ga4Batching;
use tagproxy::tools::HttpRequest;

/// A Conversions API request for one event, as the adapter renders it.
fn meta_request(i: usize) -> HttpRequest {
    let body = json!({
        "data": [{
            "event_name": "Purchase",
            "event_time": 1_764_000_000u64,
            "event_id": format!("evt-{i:08}"),
            "action_source": "website",
            "event_source_url": "https://shop.test/checkout",
            "user_data": {"client_ip_address": "203.0.113.7", "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0.0.0", "fbp": "fb.1.1764000000000.123456789"},
            "custom_data": {"currency": "USD", "value": 27.5, "content_ids": ["P1", "P2"], "content_type": "product"},
        }],
        "access_token": "EAAB-token",
    });
    HttpRequest {
        method: "POST".into(),
        url: "https://graph.facebook.com/v21.0/1234567890/events".into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: Some(body.to_string().into_bytes()),
    }
}

/// A gtag hit for one event of one client, as the adapter renders it.
fn ga4_request(i: usize) -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        url: format!("https://www.google-analytics.com/g/collect?v=2&tid=G-LOAD123&cid=1187654321.1748934600&sid=1748934661&sct=3&_s={}&ul=en-us&sr=1920x1080&dl=https%3A%2F%2Fshop.test%2Fcheckout&dt=Checkout&_uip=203.0.113.7&en=signup&ep.method=email&epn.plan_price=9.5&ep.event_id=evt-{i:08}", i + 1),
        headers: vec![
            ("accept".into(), "*/*".into()),
            ("user-agent".into(), "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0.0.0".into()),
        ],
        body: None,
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch");
    for (name, batching, reqs) in [
        (
            "meta: key + join, 1000 events",
            &MetaBatching as &dyn Batching,
            (0..1000).map(meta_request).collect::<Vec<_>>(),
        ),
        (
            "ga4: key + join, 25 hits",
            &Ga4Batching as &dyn Batching,
            (0..25).map(ga4_request).collect::<Vec<_>>(),
        ),
    ] {
        let refs: Vec<&HttpRequest> = reqs.iter().collect();
        assert!(batching.join(&refs).is_some());
        g.throughput(Throughput::Elements(reqs.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                for r in &refs {
                    black_box(batching.key(r));
                }
                black_box(batching.join(black_box(&refs)))
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
