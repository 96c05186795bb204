//! HEAD parity (SPEC §3): a `HEAD` gets the headers the same `GET` would
//! get, for plain, gzip and brotli origins, whatever the client accepts.

mod common;

use std::io::Write as _;

use common::*;

const PAGE: &str = "<html><head><title>t</title></head><body>hello</body></html>";

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn br(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(bytes).unwrap();
    }
    out
}

/// The headers that must agree between HEAD and GET.
const COMPARED: [&str; 7] = [
    "content-type",
    "content-length",
    "content-encoding",
    "etag",
    "vary",
    "accept-ranges",
    "cache-control",
];

fn compared(h: &http::HeaderMap) -> Vec<(&'static str, Vec<String>)> {
    COMPARED
        .iter()
        .map(|name| {
            let values = h
                .get_all(*name)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect();
            (*name, values)
        })
        .collect()
}

#[tokio::test]
async fn head_gets_the_headers_of_get() {
    let origin = Origin::start(|req| async move {
        let (coding, body) = match req.uri().path() {
            "/gzip" => (Some("gzip"), gzip(PAGE.as_bytes())),
            "/br" => (Some("br"), br(PAGE.as_bytes())),
            "/css" => (None, PAGE.as_bytes().to_vec()),
            _ => (None, PAGE.as_bytes().to_vec()),
        };
        let content_type = if req.uri().path() == "/css" {
            "text/css"
        } else {
            "text/html; charset=utf-8"
        };
        let len = body.len().to_string();
        let mut headers = vec![
            ("content-type", content_type),
            ("content-length", len.as_str()),
            ("etag", "\"v1\""),
            ("accept-ranges", "bytes"),
            ("cache-control", "public, max-age=60"),
        ];
        if let Some(coding) = coding {
            headers.push(("content-encoding", coding));
            headers.push(("vary", "Accept-Encoding"));
        }
        // hyper sends no body for HEAD but keeps the headers, as origins do.
        respond(200, &headers, body)
    })
    .await;
    let proxy = Proxy::start(origin.addr, "").await;
    let c = client();
    for path in ["/plain", "/gzip", "/br", "/css"] {
        for accept in [None, Some("gzip"), Some("br"), Some("gzip, deflate, br")] {
            let send = |method: reqwest::Method| {
                let mut req = c
                    .request(method, proxy.url(path))
                    .header("accept", "text/html");
                if let Some(accept) = accept {
                    req = req.header("accept-encoding", accept);
                }
                req.send()
            };
            let get = send(reqwest::Method::GET).await.unwrap();
            let head = send(reqwest::Method::HEAD).await.unwrap();
            assert_eq!(get.status(), 200);
            assert_eq!(head.status(), 200);
            let (get_h, head_h) = (get.headers().clone(), head.headers().clone());
            let body = get.bytes().await.unwrap();
            assert!(head.bytes().await.unwrap().is_empty());
            assert_eq!(
                compared(&head_h),
                compared(&get_h),
                "{path} with Accept-Encoding {accept:?}"
            );
            if path == "/css" {
                // Not injected: both keep the origin's head as it was.
                assert_eq!(head_h["content-length"], PAGE.len().to_string().as_str());
                assert_eq!(head_h["etag"], "\"v1\"");
                assert_eq!(body, PAGE.as_bytes());
                continue;
            }
            // The GET was rewritten; the HEAD says so the same way.
            assert!(head_h.get("content-length").is_none(), "{path} {accept:?}");
            assert_eq!(head_h["etag"], "W/\"v1\"");
            let expected = match (path, accept) {
                ("/gzip", Some(a)) if a.contains("gzip") => Some("gzip"),
                ("/br", Some(a)) if a.contains("br") => Some("br"),
                _ => None,
            };
            assert_eq!(
                head_h.get("content-encoding").map(|v| v.to_str().unwrap()),
                expected,
                "{path} {accept:?}"
            );
            if expected.is_none() {
                assert!(String::from_utf8_lossy(&body).contains(TAG));
            }
        }
    }
    // The origin was asked the same (Accept-Encoding included) for both.
    let seen = origin.seen();
    for pair in seen.chunks(2) {
        assert_eq!(pair[0].method, "GET");
        assert_eq!(pair[1].method, "HEAD");
        assert_eq!(
            pair[0].headers.get("accept-encoding"),
            pair[1].headers.get("accept-encoding")
        );
    }
}
