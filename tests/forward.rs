//! Forwarding through the real binary: what is not injected, byte-exact
//! streaming both ways, upgrades, headers, and origin failures.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use sha2::{Digest, Sha256};

const PAGE: &str = "<html><head><title>t</title></head><body>x</body></html>";

#[tokio::test]
async fn responses_that_are_not_injected() {
    let origin = Origin::start(|req| async move {
        let path = req.uri().path().to_string();
        match path.as_str() {
            "/404" => respond(404, &[("content-type", "text/html")], PAGE),
            "/500" => respond(500, &[("content-type", "text/html")], PAGE),
            "/css" => respond(200, &[("content-type", "text/css")], PAGE),
            "/json" => respond(200, &[("content-type", "application/json")], PAGE),
            "/no-transform" => respond(
                200,
                &[
                    ("content-type", "text/html"),
                    ("cache-control", "public, no-transform"),
                ],
                PAGE,
            ),
            "/304" => respond(
                304,
                &[("content-type", "text/html"), ("etag", "\"v1\"")],
                "",
            ),
            _ => respond(
                200,
                &[
                    ("content-type", "text/html"),
                    ("content-length", &PAGE.len().to_string()),
                ],
                PAGE,
            ),
        }
    })
    .await;
    let proxy = Proxy::start(origin.addr, "").await;
    let c = client();
    for path in ["/404", "/500", "/css", "/json", "/no-transform"] {
        let resp = c
            .get(proxy.url(path))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.text().await.unwrap(),
            PAGE,
            "{path} must stream untouched"
        );
    }
    let resp = c
        .get(proxy.url("/304"))
        .header("if-none-match", "\"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    assert!(resp.bytes().await.unwrap().is_empty());

    // HEAD: no body, and the head the injected GET gets (tests/head.rs):
    // no Content-Length, which the GET's chunked body would contradict.
    let resp = c.head(proxy.url("/page")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("content-length").is_none());
    assert!(resp.bytes().await.unwrap().is_empty());

    // Same page by GET is injected: the cases above differ only in what they test.
    let resp = c.get(proxy.url("/page")).send().await.unwrap();
    assert!(resp.text().await.unwrap().contains(TAG));

    // A fetch() of HTML (htmx, Turbo…) is a fragment, not a document.
    let resp = c
        .get(proxy.url("/page"))
        .header("sec-fetch-dest", "empty")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), PAGE);
    // Iframes only with inject_iframes.
    let resp = c
        .get(proxy.url("/page"))
        .header("sec-fetch-dest", "iframe")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), PAGE);
    let framed = Proxy::start(origin.addr, "[settings]\ninject_iframes = true\n").await;
    let resp = c
        .get(framed.url("/page"))
        .header("sec-fetch-dest", "iframe")
        .send()
        .await
        .unwrap();
    assert!(resp.text().await.unwrap().contains(TAG));
    // auto_inject = false turns injection off.
    let off = Proxy::start(origin.addr, "[settings]\nauto_inject = false\n").await;
    assert_eq!(
        c.get(off.url("/page"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        PAGE
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from a seeded xorshift, so the test needs no RNG crate.
fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[tokio::test]
async fn binary_body_arrives_byte_for_byte() {
    let data = Bytes::from(random_bytes(5 * 1024 * 1024 + 123, 42));
    let want = Sha256::digest(&data);
    let served = data.clone();
    let origin = Origin::start(move |_| {
        let d = served.clone();
        async move { respond(200, &[("content-type", "application/octet-stream")], d) }
    })
    .await;
    let proxy = Proxy::start(origin.addr, "").await;
    // Even when the client asks for HTML.
    let resp = client()
        .get(proxy.url("/blob.bin"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-length"],
        data.len().to_string().as_str()
    );
    let got = resp.bytes().await.unwrap();
    assert_eq!(got.len(), data.len());
    assert_eq!(Sha256::digest(&got), want);
}

#[tokio::test]
async fn big_html_page_streams_in_bounded_memory() {
    const TOTAL: usize = 20 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let origin = Origin::start(|_| async {
        let head =
            Bytes::from_static(b"<!doctype html><html><head><title>big</title></head><body>");
        let row =
            Bytes::from(b"<p>0123456789 abcdefghijklmnopqrstuvwxyz </p>\n".repeat(CHUNK / 48));
        let rows = TOTAL / row.len();
        let stream = futures_util::stream::iter(
            std::iter::once(head)
                .chain(std::iter::repeat_n(row, rows))
                .map(|b| Ok::<_, BoxError>(hyper::body::Frame::data(b))),
        );
        hyper::Response::builder()
            .header("content-type", "text/html")
            .body(StreamBody::new(stream).boxed_unsync())
            .unwrap()
    })
    .await;
    let proxy = Proxy::start(origin.addr, "").await;
    // Warm up (allocator, pools), then measure one big transfer.
    let warm = client().get(proxy.url("/small")).send().await.unwrap();
    let _ = warm.bytes().await.unwrap();
    let baseline = proxy.rss();

    let mut resp = client().get(proxy.url("/big")).send().await.unwrap();
    let mut total = 0usize;
    let mut peak = baseline;
    let mut start = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        if start.len() < 4096 {
            start.extend_from_slice(&chunk[..chunk.len().min(4096)]);
        }
        total += chunk.len();
        if total % (1024 * 1024) < chunk.len() {
            peak = peak.max(proxy.rss());
        }
    }
    assert!(total > TOTAL - CHUNK, "got {total} bytes");
    assert!(String::from_utf8_lossy(&start).contains(&format!("<head>{TAG}<title>")));
    eprintln!(
        "RSS growth while streaming 20 MB of HTML: {} KiB",
        peak.saturating_sub(baseline) / 1024
    );
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < 8 * 1024 * 1024,
        "RSS grew by {} KiB while streaming 20 MB",
        growth / 1024
    );
}

#[tokio::test]
async fn request_body_streams_to_the_origin() {
    let origin = Origin::start(|req| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let digest = hex(&Sha256::digest(&body));
        respond(
            200,
            &[("content-type", "text/plain")],
            format!("{} {digest}", body.len()),
        )
    })
    .await;
    let proxy = Proxy::start(origin.addr, "").await;
    let _ = client()
        .post(proxy.url("/warm"))
        .body("x")
        .send()
        .await
        .unwrap();
    let baseline = proxy.rss();
    let data = random_bytes(10 * 1024 * 1024, 7);
    let want = format!("{} {}", data.len(), hex(&Sha256::digest(&data)));
    // Sent as a stream of chunks (no Content-Length): the proxy must not need it.
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(256 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let resp = client()
        .post(proxy.url("/upload"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), want);
    assert_eq!(origin.seen()[1].method, "POST");
    let growth = proxy.rss().saturating_sub(baseline);
    assert!(
        growth < 8 * 1024 * 1024,
        "RSS grew by {} KiB for a 10 MB upload: the body was buffered",
        growth / 1024
    );
}

#[tokio::test]
async fn every_method_is_forwarded() {
    let origin = Origin::start(|req| async move {
        let m = req.method().to_string();
        respond(200, &[("content-type", "text/plain")], m)
    })
    .await;
    let proxy = Proxy::start(origin.addr, "").await;
    for m in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let method = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
        let resp = client()
            .request(method, proxy.url("/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.text().await.unwrap(), m);
    }
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let origin = Origin::start(|mut req| async move {
        let key = req.headers()["sec-websocket-key"].clone();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let upgraded = on_upgrade.await.unwrap();
            let io = hyper_util::rt::TokioIo::new(upgraded);
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                io,
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() || msg.is_binary() {
                    ws.send(msg).await.unwrap();
                }
            }
        });
        respond(
            101,
            &[
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-accept", &accept),
            ],
            "",
        )
    })
    .await;
    let proxy = Proxy::start(origin.addr, "").await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/socket", proxy.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), 101);
    for text in ["hello", "через прокси", &"x".repeat(100_000)] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn origin_down_is_502_and_slow_origin_is_504() {
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = Proxy::start(dead, "").await;
    let resp = client().get(proxy.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(resp.text().await.unwrap().contains("origin unreachable"));
    let resp = client()
        .get(proxy.url("/api"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"error": "origin unreachable"})
    );

    let slow = Origin::start(|_| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        respond(200, &[("content-type", "text/plain")], "late")
    })
    .await;
    let proxy = Proxy::start_with(slow.addr, "upstream_timeout_ms = 300", "").await;
    let started = Instant::now();
    let resp = client().get(proxy.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "504 comes at the timeout, not when the origin answers"
    );
    assert!(resp.text().await.unwrap().contains("origin timed out"));
}

#[tokio::test]
async fn forwarding_headers() {
    let origin = Origin::start(|_| async {
        respond(
            200,
            &[
                ("content-type", "text/plain"),
                ("connection", "x-resp-hop"),
                ("x-resp-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("x-kept", "yes"),
            ],
            "ok",
        )
    })
    .await;
    let proxy = Proxy::start(origin.addr, "").await;
    let resp = client()
        .get(proxy.url("/headers?q=1"))
        .header("host", "shop.example")
        .header("connection", "keep-alive, x-req-hop")
        .header("x-req-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-end-to-end", "kept")
        .send()
        .await
        .unwrap();
    let h = resp.headers();
    assert!(
        h.get("x-resp-hop").is_none() && h.get("keep-alive").is_none(),
        "{h:?}"
    );
    assert_eq!(h["x-kept"], "yes");
    assert_eq!(h["via"], "1.1 tagproxy");

    let seen = &origin.seen()[0];
    assert_eq!(seen.path, "/headers?q=1");
    let s = &seen.headers;
    assert_eq!(s["host"], "shop.example");
    for hop in ["x-req-hop", "keep-alive", "te", "proxy-authorization"] {
        assert!(
            s.get(hop).is_none(),
            "{hop} must not reach the origin: {s:?}"
        );
    }
    assert_eq!(s["x-end-to-end"], "kept");
    assert_eq!(s["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(s["x-forwarded-proto"], "http");
    assert_eq!(s["x-forwarded-host"], "shop.example");
    assert_eq!(s["via"], "1.1 tagproxy");
}

#[tokio::test]
async fn h2c_clients_are_served_and_host_comes_from_authority() {
    let origin = Origin::page("text/html", PAGE).await;
    let proxy = Proxy::start(origin.addr, "").await;
    tagproxy::delivery::install_tls_provider();
    let h2 = reqwest::Client::builder()
        .user_agent(BROWSER_UA)
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let resp = h2.get(proxy.url("/h2")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert!(resp.text().await.unwrap().contains(TAG));
    let seen = &origin.seen()[0];
    assert_eq!(seen.headers["host"], proxy.addr.to_string().as_str());
    assert_eq!(seen.headers["via"], "2 tagproxy");
}

#[tokio::test]
async fn navigations_offer_the_origin_only_codings_the_injector_decodes() {
    let origin = Origin::page("text/html", PAGE).await;
    let proxy = Proxy::start(origin.addr, "").await;
    let nav = client()
        .get(proxy.url("/page"))
        .header("accept", "text/html,application/xhtml+xml")
        .header("accept-encoding", "gzip, deflate, br, zstd")
        .send()
        .await
        .unwrap();
    assert!(nav.text().await.unwrap().contains(TAG));
    let asset = client()
        .get(proxy.url("/app.js"))
        .header("accept", "*/*")
        .header("accept-encoding", "gzip, br, zstd")
        .send()
        .await
        .unwrap();
    let _ = asset.bytes().await.unwrap();
    let seen = origin.seen();
    assert_eq!(seen[0].headers["accept-encoding"], "gzip, deflate, br");
    assert_eq!(
        seen[1].headers["accept-encoding"], "gzip, br, zstd",
        "other requests are untouched"
    );
}

#[tokio::test]
async fn utf16_pages_are_not_injected() {
    let page: Vec<u8> = "<html><head></head></html>"
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    let origin = Origin::page("text/html; charset=utf-16le", page.clone()).await;
    let proxy = Proxy::start(origin.addr, "").await;
    let got = client()
        .get(proxy.url("/"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.to_vec(), page);
    // An ASCII-compatible charset other than UTF-8 is injected.
    let latin = Origin::page(
        "text/html; charset=iso-8859-1",
        &b"<html><head></head>caf\xe9</html>"[..],
    )
    .await;
    let proxy = Proxy::start(latin.addr, "").await;
    let got = client()
        .get(proxy.url("/"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut want = b"<html><head>".to_vec();
    want.extend_from_slice(TAG.as_bytes());
    want.extend_from_slice(b"</head>caf\xe9</html>");
    assert_eq!(got.to_vec(), want);
}
