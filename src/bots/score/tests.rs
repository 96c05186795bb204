use super::*;
use crate::bots::BotDetector;
use http::{HeaderName, HeaderValue};

const CORPUS: &str = include_str!("../../../fixtures/browser-headers.json");

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn score_of(h: &HeaderMap, secure: bool, version: Version, kind: Kind) -> Score {
    let bots = BotDetector::new(&[]);
    bots.score(&Request {
        headers: h,
        version,
        secure,
        via_proxy: false,
        kind,
    })
}

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36";
const FIREFOX: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
const SAFARI: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15";

/// Every header set of the real-browser corpus scores as human over TLS
/// (where the absence signals apply) and over HTTP/1.1 and 2; the
/// false-positive rate and the lowest score are printed (README).
#[test]
fn every_real_browser_of_the_corpus_scores_human() {
    let corpus: serde_json::Value = serde_json::from_str(CORPUS).unwrap();
    let entries = corpus["entries"].as_array().unwrap();
    assert!(entries.len() >= 40, "{}", entries.len());
    let mut lowest = (HUMAN, String::new());
    let mut false_positives = Vec::new();
    for e in entries {
        let name = e["name"].as_str().unwrap();
        let kind = match e["kind"].as_str().unwrap() {
            "navigation" => Kind::Page,
            "collector" => Kind::Collector {
                script_loaded: true,
            },
            k => panic!("{name}: kind {k}"),
        };
        let version = match e["http_version"].as_str().unwrap() {
            "2" => Version::HTTP_2,
            _ => Version::HTTP_11,
        };
        let pairs: Vec<(&str, &str)> = e["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
            .collect();
        let h = headers(&pairs);
        for secure in [true, false] {
            let s = score_of(&h, secure, version, kind);
            if s.score < lowest.0 {
                lowest = (s.score, format!("{name} ({}): {}", e["kind"], s.reasons()));
            }
            if s.is_bot(DEFAULT_THRESHOLD) {
                false_positives.push(format!("{name}: {} {}", s.score, s.reasons()));
            }
        }
    }
    println!(
        "real-browser corpus: {} header sets, {} false positives at threshold {DEFAULT_THRESHOLD} ({:.1}%); lowest score {} ({})",
        entries.len(),
        false_positives.len(),
        100.0 * false_positives.len() as f64 / (2 * entries.len()) as f64,
        lowest.0,
        lowest.1
    );
    assert!(false_positives.is_empty(), "{false_positives:#?}");
}

/// Clients that claim a browser but send what no browser sends (or leave
/// out what every one of that version sends) score below the default
/// threshold.
#[test]
fn disguised_crawlers_score_below_the_threshold() {
    /// (what it is, its headers, over TLS)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, bool);
    let cases: Vec<Case> = vec![
        (
            "Chrome UA, Sec-CH-UA says HeadlessChrome (any transport)",
            vec![
                ("user-agent", CHROME),
                (
                    "sec-ch-ua",
                    r#""HeadlessChrome";v="119", "Chromium";v="119", "Not?A_Brand";v="24""#,
                ),
            ],
            false,
        ),
        (
            "Chrome UA, nothing else (python-requests with a UA)",
            vec![("user-agent", CHROME), ("accept", "*/*")],
            true,
        ),
        (
            "Chrome UA and Accept-Language, no fetch metadata or client hints",
            vec![
                ("user-agent", CHROME),
                ("accept", "text/html"),
                ("accept-language", "en-US,en;q=0.9"),
            ],
            true,
        ),
        (
            "Firefox UA with Chromium client hints, no fetch metadata",
            vec![
                ("user-agent", FIREFOX),
                ("sec-ch-ua", r#""Chromium";v="131""#),
                ("accept-language", "en-US"),
            ],
            true,
        ),
        (
            "Windows Chrome UA, client hints from Linux, no fetch metadata",
            vec![
                ("user-agent", CHROME),
                (
                    "sec-ch-ua",
                    r#""Chromium";v="119", "Google Chrome";v="119""#,
                ),
                ("sec-ch-ua-platform", "\"Linux\""),
                ("sec-ch-ua-mobile", "?0"),
                ("accept-language", "en-US"),
            ],
            true,
        ),
        (
            "Safari UA, no fetch metadata, no Accept-Language",
            vec![("user-agent", SAFARI), ("accept", "text/html")],
            true,
        ),
    ];
    for (name, pairs, secure) in cases {
        let s = score_of(&headers(&pairs), secure, Version::HTTP_11, Kind::Page);
        println!("{name}: {} ({})", s.score, s.reasons());
        assert!(s.is_bot(DEFAULT_THRESHOLD), "{name}: {s:?}");
    }
}

#[test]
fn user_agent_lists_and_headless_brands_are_decisive() {
    let s = score_of(
        &headers(&[("user-agent", "curl/8.5.0")]),
        false,
        Version::HTTP_11,
        Kind::Page,
    );
    assert_eq!((s.score, s.signals), (1, vec![Signal::UserAgent]));
    let s = score_of(
        &headers(&[
            ("user-agent", CHROME),
            ("sec-ch-ua", r#""HeadlessChrome";v="119""#),
        ]),
        false,
        Version::HTTP_11,
        Kind::Page,
    );
    assert_eq!((s.score, s.signals), (1, vec![Signal::HeadlessBrand]));
}

/// Absences count only over TLS; one signal alone never makes a bot.
#[test]
fn absences_count_only_over_tls_and_one_signal_is_not_enough() {
    let bare = headers(&[("user-agent", CHROME)]);
    let plain = score_of(&bare, false, Version::HTTP_11, Kind::Page);
    assert_eq!((plain.score, plain.signals.len()), (HUMAN, 0));
    let tls = score_of(&bare, true, Version::HTTP_11, Kind::Page);
    assert_eq!(
        tls.signals,
        [
            Signal::MissingFetchMetadata,
            Signal::MissingClientHints,
            Signal::MissingAcceptLanguage
        ]
    );
    assert_eq!(tls.score, FLOOR);
    for signal in [
        Signal::HintsFromNonChromium,
        Signal::PlatformMismatch,
        Signal::MobileMismatch,
        Signal::VersionMismatch,
        Signal::MissingFetchMetadata,
        Signal::MissingClientHints,
        Signal::MissingAcceptLanguage,
        Signal::Http10,
        Signal::ScriptNotLoaded,
    ] {
        let w = signal.weight().unwrap();
        assert!(HUMAN - w >= DEFAULT_THRESHOLD, "{signal:?} alone");
    }
}

#[test]
fn http_1_0_counts_from_the_client_not_from_a_proxy() {
    let h = headers(&[("user-agent", CHROME)]);
    let direct = score_of(&h, false, Version::HTTP_10, Kind::Page);
    assert_eq!(direct.signals, [Signal::Http10]);
    let bots = BotDetector::new(&[]);
    let proxied = bots.score(&Request {
        headers: &h,
        version: Version::HTTP_10,
        secure: false,
        via_proxy: true,
        kind: Kind::Page,
    });
    assert_eq!(proxied.score, HUMAN);
}

#[test]
fn collector_requests_without_a_script_load_lose_points() {
    let h = headers(&[("user-agent", CHROME)]);
    let s = score_of(
        &h,
        false,
        Version::HTTP_11,
        Kind::Collector {
            script_loaded: false,
        },
    );
    assert_eq!(s.signals, [Signal::ScriptNotLoaded]);
    assert_eq!(s.score, 74);
    let loads = ScriptLoads::global();
    let ip: IpAddr = "192.0.2.44".parse().unwrap();
    assert!(!loads.loaded(ip, CHROME));
    loads.record(ip, CHROME);
    assert!(loads.loaded(ip, CHROME));
    assert!(!loads.loaded(ip, FIREFOX));
    assert!(!loads.loaded("192.0.2.45".parse().unwrap(), CHROME));
}

#[test]
fn user_agent_families() {
    assert_eq!(family(CHROME), Family::Chromium(119));
    assert_eq!(family(FIREFOX), Family::Firefox(133));
    assert_eq!(family(SAFARI), Family::WebKit(18, 1));
    let crios = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1";
    assert_eq!(family(crios), Family::WebKit(17, 7));
    assert!(!family(crios).sends_client_hints());
    assert_eq!(family("Wget/1.21"), Family::Other);
    assert_eq!(
        brands(r#""Not_A Brand";v="8", "Chromium";v="120""#),
        [
            ("Not_A Brand".to_string(), "8".to_string()),
            ("Chromium".to_string(), "120".to_string())
        ]
    );
}
