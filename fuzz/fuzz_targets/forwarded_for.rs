//! `X-Forwarded-For` as the collector reads it: never panics; an untrusted
//! peer's header is ignored; from a trusted peer the answer is the first
//! untrusted hop from the right, never one behind it (a visitor cannot
//! choose their address by prepending hops or garbage).
#![no_main]
use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tagproxy::collector::visitor_ip;
use tagproxy::config::TrustedProxies;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else { return };
    let trusted = TrustedProxies(vec![
        "127.0.0.0/8".parse().unwrap(),
        "10.0.0.0/8".parse().unwrap(),
        "::1/128".parse().unwrap(),
    ]);
    let mut headers = HeaderMap::new();
    headers.append("x-forwarded-for", value.clone());
    headers.append("x-forwarded-for", value);

    let outsider: IpAddr = "203.0.113.9".parse().unwrap();
    assert_eq!(visitor_ip(&trusted, outsider, &headers), outsider);

    // From a trusted peer: the walk goes right to left over every hop of
    // both lines, past trusted hops only, and stops at the first untrusted
    // one (the visitor) or before the first that is not an address (then the
    // last trusted hop reached is all that is known).
    // A line that is not visible ASCII is not read at all.
    let proxy: IpAddr = "127.0.0.1".parse().unwrap();
    let got = visitor_ip(&trusted, proxy, &headers);
    let Ok(line) = headers["x-forwarded-for"].to_str() else {
        assert_eq!(got, proxy);
        return;
    };
    let mut expected = proxy;
    for hop in format!("{line},{line}").rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                expected = tagproxy::config::canonical_ip(ip);
                if !trusted.contains(expected) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    assert_eq!(got, expected, "{line:?}");
});
