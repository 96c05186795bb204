//! The per-event fan-out decision: 20 tools, 50 triggers, 100 custom actions
//! (plus automated actions), from a built event to rendered deliveries.
//!
//!     cargo bench --bench rules
//!
//! Goal (issue 4): under 20 µs per event on one core.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;

use tagproxy::event::identity::Tracker;
use tagproxy::event::ua::UaParser;
use tagproxy::event::{DeviceInfo, Event, EventInput, Kind, PageInfo, RequestInfo};
use tagproxy::rules::{self, template::Template};

const OPS: [(&str, &str); 6] = [
    ("equals", "purchase"),
    ("contains", "/checkout"),
    ("starts_with", "https://"),
    ("matches_regex", "^/(shop|checkout)/[a-z]+$"),
    ("greater_than", "100"),
    ("not_equals", "bot"),
];
const PATHS: [&str; 6] = [
    "{{ client.__zarazTrack }}",
    "{{ system.page.url }}",
    "{{ system.page.url.href }}",
    "{{ system.page.url.pathname }}",
    "{{ client.total }}",
    "{{ system.device.user-agent.browser.name }}",
];

fn config_text() -> String {
    let mut text = String::from("[variables]\nsite = \"Bench\"\n");
    for i in 0..50 {
        let (op, value) = OPS[i % OPS.len()];
        let path = PATHS[i % PATHS.len()];
        text.push_str(&format!(
            "[triggers.t{i}]\nrules = [ {{ match = \"{path}\", op = \"{op}\", value = \"{value}\" }}, {{ match = \"{{{{ client.plan }}}}\", op = \"not_equals\", value = \"p{i}\" }} ]\n"
        ));
    }
    text
}

fn tool_text(i: usize) -> String {
    let base = match i % 3 {
        0 => "type = \"google-analytics-4\"\nendpoint = \"http://127.0.0.1:9\"\n[settings]\nmeasurement_id = \"G-BENCH\"\n".to_string(),
        1 => "type = \"facebook-pixel\"\nendpoint = \"http://127.0.0.1:9\"\n[settings]\npixel_id = \"1\"\naccess_token = \"tok\"\n".to_string(),
        _ => "type = \"http\"\n[settings]\nurl = \"http://127.0.0.1:9/hook\"\n".to_string(),
    };
    let kind = match i % 3 {
        0 | 1 => "event",
        _ => "request",
    };
    let mut text = base + "[automated]\npageview = true\ntrack = true\necommerce = true\n";
    for a in 0..5 {
        let t = (i * 5 + a) % 50;
        text.push_str(&format!(
            "[[actions]]\nname = \"a{a}\"\nkind = \"{kind}\"\nfiring = [\"t{t}\"]\nblocking = [\"t{}\"]\n[actions.fields]\nevent_name = \"action_{a}\"\nurl = \"http://127.0.0.1:9/a{a}\"\norder = \"{{{{ client.order_id }}}}\"\npage = \"{{{{ system.page.url.pathname }}}}\"\nsite = \"{{{{ $site }}}}\"\n",
            (t + 25) % 50
        ));
    }
    text
}

fn event(ua: &UaParser) -> Event {
    let input = EventInput {
        kind: Some(Kind::Track),
        name: "purchase".into(),
        properties:
            json!({"order_id": "A-1", "total": 150.5, "plan": "pro", "items": [{"sku": "S1"}]})
                .as_object()
                .unwrap()
                .clone(),
        vars: Default::default(),
        page: PageInfo {
            url: "https://shop.test/checkout/pay?utm_source=news".into(),
            title: "Checkout".into(),
            referrer: "https://shop.test/cart".into(),
            encoding: "UTF-8".into(),
        },
        device: DeviceInfo {
            viewport: "1280x720".into(),
            resolution: "1920x1080".into(),
            language: "en-US".into(),
            tz_offset: Some(-60),
        },
        timestamp_ms: Some(1_764_000_000_000),
        id: Some("bench-event-0001".into()),
        consent_replay: false,
    };
    let info = RequestInfo {
        ip: Some("203.0.113.9".parse().unwrap()),
        user_agent: ua.parse("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"),
        cookies: [("_ga".to_string(), "GA1.1.123.456".to_string())].into(),
        location: Default::default(),
    };
    let mut tracker = Tracker::from_cookie_header("", 1_764_000_000);
    Event::build(input, &info, tracker.next_event(), 1_764_000_000_000)
}

fn bench(c: &mut Criterion) {
    let loaded = tagproxy::config::parse(Path::new("bench.toml"), &config_text()).unwrap();
    let variables = rules::variables(&loaded, rules::Secrets::Required, &mut Vec::new()).0;
    let (triggers, problems) = rules::triggers(&loaded, &variables);
    assert!(problems.is_empty(), "{problems:?}");
    let tools: Vec<_> = (0..20)
        .map(|i| {
            tagproxy::tools::from_text(
                &format!("tool{i}"),
                Path::new("bench"),
                &tool_text(i),
                &variables,
                &triggers,
            )
            .unwrap()
            .unwrap()
        })
        .collect();
    let actions: usize = tools.iter().map(|t| t.actions.len()).sum();
    assert_eq!((tools.len(), triggers.list.len(), actions), (20, 50, 100));
    let ua = UaParser::default();
    let consent = tagproxy::consent::ConsentPolicy::default();
    let ev = Arc::new(event(&ua));
    let deliveries = rules::fan_out(&ev, &tools, &triggers, &variables, &consent).deliveries;
    eprintln!(
        "fan-out of the bench event: {} deliveries",
        deliveries.len()
    );

    let mut g = c.benchmark_group("rules");
    g.throughput(Throughput::Elements(1));
    let decided = rules::decide(&ev, &tools, &triggers, &variables, &consent);
    let custom = decided
        .iter()
        .filter(|(_, d)| matches!(d, rules::Decision::Custom(_)))
        .count();
    eprintln!(
        "decision: {} tools act ({custom} through custom actions)",
        decided.len()
    );
    g.bench_function("decide 20 tools / 50 triggers / 100 actions", |b| {
        b.iter(|| {
            black_box(rules::decide(
                black_box(&ev),
                &tools,
                &triggers,
                &variables,
                &consent,
            ))
        })
    });
    g.bench_function("fan_out incl. building 20 requests", |b| {
        b.iter(|| {
            black_box(rules::fan_out(
                black_box(&ev),
                &tools,
                &triggers,
                &variables,
                &consent,
            ))
        })
    });
    g.bench_function("event build (system properties, cached UA)", |b| {
        b.iter(|| black_box(event(&ua)))
    });
    let template = Template::parse(
        "order {{ client.order_id }} on {{ system.page.url.pathname }} for {{ $site }}",
    )
    .unwrap();
    let ctx = rules::template::Context {
        client: &ev.client,
        system: &ev.system,
        variables: &variables,
    };
    g.bench_function("template render (3 expressions)", |b| {
        b.iter(|| black_box(template.render(&ctx)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
