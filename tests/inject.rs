//! Script injection through the real binary: where the tag lands, encodings,
//! CSP nonces, split TCP segments and the shared real-world pages.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;

async fn get_via_proxy(
    origin_page: &str,
    accept_encoding: Option<&str>,
) -> (reqwest::header::HeaderMap, Vec<u8>) {
    let origin = Origin::page("text/html; charset=utf-8", origin_page.to_string()).await;
    let proxy = Proxy::start(origin.addr, "").await;
    let mut req = client().get(proxy.url("/"));
    if let Some(ae) = accept_encoding {
        req = req.header("accept-encoding", ae);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    (headers, resp.bytes().await.unwrap().to_vec())
}

async fn inject_text(page: &str) -> String {
    String::from_utf8(get_via_proxy(page, None).await.1).unwrap()
}

#[tokio::test]
async fn tag_is_first_child_of_head_in_every_spelling() {
    let cases = [
        (
            "<html><head><title>a</title></head><body>x</body></html>",
            "<html><head>{T}<title>a</title></head><body>x</body></html>",
        ),
        (
            "<!DOCTYPE html><HTML><HEAD lang=x><title>a</title></HEAD>",
            "<!DOCTYPE html><HTML><HEAD lang=x>{T}<title>a</title></HEAD>",
        ),
        (
            "<html><head data-x=\"1\">\n<meta charset=utf-8></head>",
            "<html><head data-x=\"1\">{T}\n<meta charset=utf-8></head>",
        ),
        // No head: first child of body.
        (
            "<!doctype html><html><body><p>hi</p></body></html>",
            "<!doctype html><html><body>{T}<p>hi</p></body></html>",
        ),
        // No html, head or body: at the start.
        (
            "<p>fragment</p><div>more</div>",
            "{T}<p>fragment</p><div>more</div>",
        ),
        // Text before the doctype.
        (
            "garbage\n<!doctype html><html><head><title>t</title></head>",
            "garbage\n<!doctype html><html><head>{T}<title>t</title></head>",
        ),
    ];
    for (page, want) in cases {
        assert_eq!(
            inject_text(page).await,
            want.replace("{T}", TAG),
            "page: {page}"
        );
    }
}

#[tokio::test]
async fn already_injected_page_is_left_alone() {
    let page = format!("<html><head>{TAG}<title>a</title></head><body></body></html>");
    assert_eq!(inject_text(&page).await, page);
}

#[tokio::test]
async fn response_headers_of_an_injected_page() {
    let origin = Origin::start(|_| async {
        respond(
            200,
            &[
                ("content-type", "text/html"),
                ("content-length", "27"),
                ("etag", "\"abc\""),
                (
                    "content-security-policy",
                    "default-src 'self'; script-src 'self' 'nonce-r4nd0m+/='",
                ),
            ],
            "<html><head></head></html>\n",
        )
    })
    .await;
    let proxy = Proxy::start(origin.addr, "").await;
    let resp = client().get(proxy.url("/page")).send().await.unwrap();
    let h = resp.headers().clone();
    assert!(
        h.get("content-length").is_none(),
        "content-length must be dropped: {h:?}"
    );
    assert_eq!(h["transfer-encoding"], "chunked");
    assert_eq!(h["etag"], "W/\"abc\"");
    assert_eq!(h["via"], "1.1 tagproxy");
    let body = resp.text().await.unwrap();
    assert_eq!(
        body,
        "<html><head><script src=\"/_tagproxy/s.js\" referrerpolicy=\"origin\" nonce=\"r4nd0m+/=\"></script></head></html>\n"
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}
fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}
fn brotli_encode(data: &[u8]) -> Vec<u8> {
    let mut w = brotli::CompressorWriter::new(Vec::new(), 4096, 9, 22);
    w.write_all(data).unwrap();
    w.into_inner()
}
fn decode(coding: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap(),
        "deflate" => flate2::read::ZlibDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap(),
        "br" => brotli::Decompressor::new(data, 4096)
            .read_to_end(&mut out)
            .unwrap(),
        other => panic!("unexpected coding {other}"),
    };
    out
}

/// A page big enough to span many chunks.
fn big_page() -> String {
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=utf-8><title>big</title></head><body>",
    );
    for i in 0..4000 {
        page.push_str(&format!(
            "<p class=\"row\">row {i} — some text that compresses</p>\n"
        ));
    }
    page.push_str("</body></html>");
    page
}

#[tokio::test]
async fn encoded_origin_bodies_are_decoded_and_reencoded_as_accepted() {
    let page = big_page();
    let want = page.replacen("<head>", &format!("<head>{TAG}"), 1);
    for (coding, encoded) in [
        ("gzip", gzip(page.as_bytes())),
        ("deflate", zlib(page.as_bytes())),
        ("br", brotli_encode(page.as_bytes())),
    ] {
        let origin = Origin::start(move |_| {
            let encoded = encoded.clone();
            async move {
                respond(
                    200,
                    &[
                        ("content-type", "text/html"),
                        ("content-encoding", coding),
                        ("vary", "Accept-Encoding"),
                    ],
                    encoded,
                )
            }
        })
        .await;
        let proxy = Proxy::start(origin.addr, "").await;

        // The client accepts the origin's coding: same coding back.
        let resp = client()
            .get(proxy.url("/"))
            .header("accept-encoding", "gzip, deflate, br")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["content-encoding"], coding);
        assert_eq!(
            resp.headers().get_all("vary").iter().count(),
            1,
            "{:?}",
            resp.headers()
        );
        let body = resp.bytes().await.unwrap();
        assert_eq!(
            String::from_utf8(decode(coding, &body)).unwrap(),
            want,
            "{coding}"
        );

        // The client accepts nothing: identity.
        let resp = client().get(proxy.url("/")).send().await.unwrap();
        assert!(resp.headers().get("content-encoding").is_none(), "{coding}");
        assert_eq!(resp.text().await.unwrap(), want, "{coding} to identity");

        // The client accepts only another coding: identity too.
        let other = if coding == "br" { "gzip" } else { "br" };
        let resp = client()
            .get(proxy.url("/"))
            .header("accept-encoding", other)
            .send()
            .await
            .unwrap();
        assert!(
            resp.headers().get("content-encoding").is_none(),
            "{coding} vs {other}"
        );
        assert_eq!(resp.text().await.unwrap(), want);
    }
}

#[tokio::test]
async fn bad_gzip_streams_as_sent() {
    let garbage = b"\x1f\x8b\x08 this is definitely not a gzip stream <head>".to_vec();
    let sent = garbage.clone();
    let origin = Origin::start(move |_| {
        let g = sent.clone();
        async move {
            respond(
                200,
                &[("content-type", "text/html"), ("content-encoding", "gzip")],
                g,
            )
        }
    })
    .await;
    let proxy = Proxy::start(origin.addr, "").await;
    let resp = client()
        .get(proxy.url("/"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    assert_eq!(resp.bytes().await.unwrap().to_vec(), garbage);
    proxy.wait_log("does not decode").await;
    assert!(
        proxy.logs().contains("does not decode"),
        "error is logged: {}",
        proxy.logs()
    );
}

#[tokio::test]
async fn head_split_across_tcp_segments_at_every_offset() {
    let before = "<!doctype html><html lang=\"en\"><head data-x=\"1\">";
    let after = "<title>split</title></head><body>ok</body></html>";
    let page = format!("{before}{after}");
    let want = format!("{before}{TAG}{after}");
    let tag_start = page.find("<head").unwrap();
    let tag_end = tag_start + "<head data-x=\"1\">".len();
    for cut in tag_start..=tag_end {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\nconnection: close\r\n\r\n";
        let parts = vec![
            format!("{head}{}", &page[..cut]).into_bytes(),
            page.as_bytes()[cut..].to_vec(),
        ];
        let origin = RawOrigin::start(parts, Duration::from_millis(30)).await;
        let proxy = Proxy::start(origin.addr, "").await;
        let body = get_text(proxy.url("/")).await;
        assert_eq!(body, want, "cut at byte {cut}");
    }
}

#[tokio::test]
async fn shared_real_pages_get_exactly_one_tag_after_the_head_start_tag() {
    let dir = shared_fixtures();
    let mut pages: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (the shared fixtures must sit beside the repo)",
                dir.display()
            )
        })
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "html"))
        .collect();
    pages.sort();
    assert_eq!(pages.len(), 3, "{pages:?}");
    for path in pages {
        let page = std::fs::read(&path).unwrap();
        let origin = Origin::page("text/html; charset=utf-8", page.clone()).await;
        let proxy = Proxy::start(origin.addr, "").await;
        for accept in [None, Some("gzip")] {
            let mut req = client().get(proxy.url("/"));
            if let Some(a) = accept {
                req = req.header("accept-encoding", a);
            }
            let got = req.send().await.unwrap().bytes().await.unwrap().to_vec();
            // The origin answers identity, so the proxy does too.
            let head_start = find_head_start_tag(&page)
                .unwrap_or_else(|| panic!("{} has a <head>", path.display()));
            let mut want = page[..head_start].to_vec();
            want.extend_from_slice(TAG.as_bytes());
            want.extend_from_slice(&page[head_start..]);
            assert!(
                got == want,
                "{}: output is the input plus the tag ({} vs {} bytes)",
                path.display(),
                got.len(),
                want.len()
            );
        }
    }
}

/// Byte offset just after the first `<head…>` start tag (case-insensitive),
/// found independently of the proxy's scanner.
fn find_head_start_tag(page: &[u8]) -> Option<usize> {
    let lower = page.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].windows(5).position(|w| w == b"<head") {
        let at = from + i;
        let next = lower.get(at + 5).copied();
        if matches!(
            next,
            Some(b'>') | Some(b' ') | Some(b'\t') | Some(b'\n') | Some(b'\r') | Some(b'/')
        ) {
            return Some(at + lower[at..].iter().position(|&b| b == b'>')? + 1);
        }
        from = at + 5;
    }
    None
}

#[tokio::test]
async fn script_is_served_with_etag_and_compression() {
    let origin = Origin::page("text/html", "<head></head>").await;
    let proxy = Proxy::start(origin.addr, "").await;
    let resp = client()
        .get(proxy.url("/_tagproxy/s.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "application/javascript; charset=utf-8");
    assert_eq!(h["cache-control"], "public, max-age=300");
    let etag = h["etag"].to_str().unwrap().to_string();
    let plain = resp.bytes().await.unwrap();
    assert!(std::str::from_utf8(&plain).unwrap().contains("zaraz"));

    let resp = client()
        .get(proxy.url("/_tagproxy/s.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);

    for coding in ["br", "gzip"] {
        let resp = client()
            .get(proxy.url("/_tagproxy/s.js"))
            .header("accept-encoding", coding)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["content-encoding"], coding);
        assert_eq!(decode(coding, &resp.bytes().await.unwrap()), plain.to_vec());
    }
    // Nothing under the prefix reaches the origin.
    let resp = client()
        .get(proxy.url("/_tagproxy/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(origin.seen().is_empty(), "{:?}", origin.seen());
}
