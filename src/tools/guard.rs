//! The last check on every outgoing request an adapter built, in the fan-out
//! before anything is queued (and again before each send, for deliveries
//! replayed or spooled by an older version).
//!
//! A request that fails it can never succeed, so it is not queued or
//! retried: it goes straight to the dead letters with the reason, counted in
//! `/metrics` as `tagproxy_deliveries_invalid_total{tool,reason}`. Messages
//! name what is wrong, never the offending value (it came from a visitor
//! and ends up in logs and terminals).

use super::HttpRequest;

/// The largest request body tagproxy sends unless an adapter knows its
/// destination's own limit: 1 MiB (an event is at most `max_event_bytes`,
/// 64 KiB by default, so only a runaway template gets near it).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Why a request cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The metric label: `method`, `url`, `target`, `header_name`,
    /// `header_value` or `body_too_large`.
    pub reason: &'static str,
    /// For the dead letter and the log.
    pub message: String,
}

impl Invalid {
    fn new(reason: &'static str, message: impl Into<String>) -> Invalid {
        Invalid {
            reason,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid request ({}): {}", self.reason, self.message)
    }
}

/// Checks `req`: a valid method; an absolute `http(s)` URL without `.` or
/// `..` path segments (which a URL parser would fold into the path above),
/// whose origin is one of `origins` when any are given; header names and
/// values HTTP allows (RFC 9110 §5.5: no CR, LF, NUL or other control
/// character but tab); a body of at most `max_body` bytes.
pub fn check(req: &HttpRequest, origins: &[url::Origin], max_body: usize) -> Result<(), Invalid> {
    if http::Method::from_bytes(req.method.as_bytes()).is_err() {
        return Err(Invalid::new("method", "not a valid HTTP method"));
    }
    // Only the scheme and authority are parsed: a path, query or fragment
    // never makes a WHATWG parse fail, and parsing (re-encoding) a GA4 hit's
    // kilobyte of query here was most of this check's cost.
    let url = match url::Url::parse(scheme_and_authority(&req.url)) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
        _ => return Err(Invalid::new("url", "not an absolute http(s) URL")),
    };
    if has_dot_segment(&req.url) {
        return Err(Invalid::new(
            "url",
            "a path segment is `.` or `..`, which would change the path",
        ));
    }
    if !origins.is_empty() && !origins.contains(&url.origin()) {
        return Err(Invalid::new(
            "target",
            format!(
                "the URL leads to {}, not to the tool's configured destination",
                url.origin().ascii_serialization()
            ),
        ));
    }
    for (name, value) in &req.headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(Invalid::new(
                "header_name",
                format!("`{}` is not a valid header name", name.escape_debug()),
            ));
        }
        if http::HeaderValue::from_bytes(value.as_bytes()).is_err() {
            return Err(Invalid::new(
                "header_value",
                format!(
                    "the value of header `{}` holds CR, LF, NUL or another control character",
                    name.escape_debug()
                ),
            ));
        }
    }
    if let Some(body) = &req.body {
        if body.len() > max_body {
            return Err(Invalid::new(
                "body_too_large",
                format!(
                    "the body is {} bytes; the destination takes at most {max_body}",
                    body.len()
                ),
            ));
        }
    }
    Ok(())
}

/// `url` up to the end of its authority (before the path, query or fragment),
/// where a WHATWG parser ends it: the first `/`, `\\`, `?` or `#` after the
/// scheme's `:` and the slashes that follow it.
fn scheme_and_authority(url: &str) -> &str {
    let Some(colon) = url.find(':') else {
        return url;
    };
    let after = &url[colon + 1..];
    let authority = after.trim_start_matches(['/', '\\']);
    let end = authority
        .find(['/', '\\', '?', '#'])
        .map_or(url.len(), |i| url.len() - authority.len() + i);
    &url[..end]
}

/// Whether one path segment is `.` or `..`, each dot written as `.` or as
/// `%2e` (either case).
fn is_dot_segment(seg: &str) -> bool {
    let mut rest = seg.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[0] == b'%' && rest[1] == b'2' && rest[2] | 0x20 == b'e' {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

/// Whether the path of `url` (as written) has a `.` or `..` segment,
/// percent-encoded or not: URL parsers remove them (WHATWG URL: `%2e` is a
/// dot too), so a value could climb out of the path the operator wrote.
fn has_dot_segment(url: &str) -> bool {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return false;
    };
    let after = &url[start..];
    let Some(path_start) = after.find(['/', '\\', '?', '#']) else {
        return false;
    };
    let path = &after[path_start..];
    let path = &path[..path.find(['?', '#']).unwrap_or(path.len())];
    path.split(['/', '\\']).skip(1).any(is_dot_segment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(url: &str, headers: &[(&str, &str)]) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            url: url.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Some(b"{}".to_vec()),
        }
    }

    fn reason(r: &HttpRequest, origins: &[url::Origin]) -> Option<&'static str> {
        check(r, origins, 10).err().map(|e| e.reason)
    }

    #[test]
    fn well_formed_requests_pass() {
        let o = [url::Url::parse("https://h.example").unwrap().origin()];
        let r = req(
            "https://h.example/a/..b/%2E%2Ex?q=..#..",
            &[("X-Name", "José\tO'Brien"), ("user-agent", "UA/1 (x)")],
        );
        assert_eq!(reason(&r, &o), None);
    }

    #[test]
    fn each_fault_is_named() {
        let o = [url::Url::parse("https://h.example").unwrap().origin()];
        assert_eq!(reason(&req("/relative", &[]), &[]), Some("url"));
        assert_eq!(reason(&req("file:///etc/passwd", &[]), &[]), Some("url"));
        for dots in ["/a/../b", "/a/%2e%2E/b", "/.", "/a/%2E", "\\..\\x"] {
            let url = format!("https://h.example{dots}");
            assert_eq!(reason(&req(&url, &[]), &o), Some("url"), "{url}");
        }
        assert_eq!(
            reason(&req("https://h.example:444/", &[]), &o),
            Some("target")
        );
        assert_eq!(reason(&req("http://h.example/", &[]), &o), Some("target"));
        for bad in ["O1\r\nX-Evil: 1", "a\nb", "a\0b", "a\x7fb", "a\x1bb"] {
            assert_eq!(
                reason(&req("https://h.example/", &[("X-Order", bad)]), &o),
                Some("header_value"),
                "{bad:?}"
            );
        }
        assert_eq!(
            reason(&req("https://h.example/", &[("X Order", "1")]), &o),
            Some("header_name")
        );
        let mut r = req("https://h.example/", &[]);
        r.method = "GE T".into();
        assert_eq!(reason(&r, &o), Some("method"));
        let mut r = req("https://h.example/", &[]);
        r.body = Some(vec![b' '; 11]);
        assert_eq!(reason(&r, &o), Some("body_too_large"));
    }

    #[test]
    fn the_authority_ends_where_a_whatwg_parser_ends_it() {
        let cases = [
            ("https://h.example/a?b#c", "https://h.example"),
            ("https://h.example?q=/x", "https://h.example"),
            ("https://h.example#f", "https://h.example"),
            ("https://u:p@h.example:8443/x", "https://u:p@h.example:8443"),
            ("https:\\\\h.example\\x", "https:\\\\h.example"),
            ("https:h.example/x", "https:h.example"),
            ("https://h.example", "https://h.example"),
            ("/relative/path", "/relative/path"),
            ("", ""),
        ];
        for (url, prefix) in cases {
            assert_eq!(scheme_and_authority(url), prefix, "{url}");
        }
        // The prefix parses to the same origin as the whole URL.
        for url in [
            "https://H.Example:443/a/b?q=%zz&r=<x>#frag",
            "http://u@h.example:8080\\x",
            "https:h.example/p",
            " https://h.example/\t",
        ] {
            assert_eq!(
                url::Url::parse(scheme_and_authority(url)).unwrap().origin(),
                url::Url::parse(url).unwrap().origin(),
                "{url}"
            );
        }
    }

    #[test]
    fn dot_segments_in_every_spelling() {
        for seg in [".", "..", "%2e", "%2E", ".%2e", "%2E.", "%2e%2E"] {
            assert!(is_dot_segment(seg), "{seg}");
        }
        for seg in [
            "",
            "...",
            "..b",
            "a.",
            "%2",
            "%2f",
            "%2e%2e%2e",
            ".%2",
            "%3e",
        ] {
            assert!(!is_dot_segment(seg), "{seg}");
        }
    }

    #[test]
    fn messages_never_carry_the_value() {
        let r = req("https://h.example/", &[("X-Order", "O1\r\nX-Evil: 1")]);
        let e = check(&r, &[], 10).unwrap_err();
        assert!(!e.to_string().contains("Evil"), "{e}");
        assert!(e.to_string().contains("X-Order"), "{e}");
    }

    /// The bounds exactly: a body of `max_body` bytes passes; only http(s)
    /// URLs with a host do, whatever else has a host; a dot segment right
    /// after a short authority is seen.
    #[test]
    fn bounds_and_schemes_exactly() {
        let mut r = req("https://h.example/", &[]);
        r.body = Some(vec![b' '; 10]);
        assert_eq!(reason(&r, &[]), None);
        for url in ["ftp://h.example/x", "ws://h.example/x", "data:text/plain,x"] {
            assert_eq!(reason(&req(url, &[]), &[]), Some("url"), "{url}");
        }
        assert_eq!(
            reason(&req("https://a/./bbbbbbbbbbbbbbbb", &[]), &[]),
            Some("url")
        );
    }
}
