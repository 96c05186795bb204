//! `X-Forwarded-For` as the collector reads it: never panics; an untrusted
//! peer's header is ignored; the answer is the peer or one of the listed
//! addresses, and is untrusted unless every hop was trusted.
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

    let proxy: IpAddr = "127.0.0.1".parse().unwrap();
    let ip = visitor_ip(&trusted, proxy, &headers);
    let hops: Vec<IpAddr> = std::str::from_utf8(data)
        .unwrap_or("")
        .split(',')
        .filter_map(|h| h.trim().parse().ok())
        .map(tagproxy::config::canonical_ip)
        .collect();
    assert!(ip == proxy || hops.contains(&ip), "{ip} is neither the peer nor a listed hop");
    if ip != proxy && trusted.contains(ip) {
        assert!(hops.iter().all(|h| trusted.contains(*h)), "stopped at trusted {ip}");
    }
});
