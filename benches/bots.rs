//! Bot detection (issue 5): `BotDetector::check` for a mix of real User-Agents
//! — browsers, search crawlers, AI crawlers, HTTP libraries — uncached (all
//! layers run: ai.robots.txt tokens, extra_user_agents, woothee, the
//! crawler-user-agents RegexSet) and cached (one hash lookup).
//!
//!     cargo bench --bench bots
//!
//! Goal (issue 5): under 1 µs per uncached User-Agent.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use tagproxy::bots::BotDetector;

/// Browsers first: they are most traffic and the slowest case (no layer
/// matches, so every layer runs).
const MIX: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)",
    "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 (compatible; Bytespider; spider-feedback@bytedance.com)",
    "curl/8.5.0",
    "python-requests/2.32.3",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
];

fn bench(c: &mut Criterion) {
    let detector = BotDetector::new(&["InternalMonitor".to_string(), "uptime-check".to_string()]);
    // Build the shared lists and warm the regex caches outside the timing.
    for ua in MIX {
        black_box(detector.check_uncached(ua));
    }

    let mut group = c.benchmark_group("bots");
    group.throughput(Throughput::Elements(MIX.len() as u64));
    group.bench_function("check_uncached/mix", |b| {
        b.iter(|| {
            for ua in MIX {
                black_box(detector.check_uncached(black_box(ua)));
            }
        })
    });
    group.bench_function("check_cached/mix", |b| {
        b.iter(|| {
            for ua in MIX {
                black_box(detector.check(black_box(ua)));
            }
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("check_uncached/chrome", |b| {
        b.iter(|| black_box(detector.check_uncached(black_box(MIX[0]))))
    });
    // A cache miss as the collector sees it: a new User-Agent each time.
    group.bench_function("check_miss/fresh_ua", |b| {
        let mut i = 0u64;
        b.iter_batched(
            || {
                i += 1;
                format!("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{i}.0.0.0 Safari/537.36")
            },
            |ua| black_box(detector.check(&ua)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("new", |b| {
        b.iter(|| {
            black_box(BotDetector::new(black_box(
                &["InternalMonitor".to_string()],
            )))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
