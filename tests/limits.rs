//! Connection limits of the public listener (SPEC §2 `[server]`):
//! `header_read_timeout_ms`, `idle_timeout_ms`, `max_connections`, the
//! request-head cap (`431`), and draining on SIGTERM.
//!
//! Waits below are upper bounds that only keep a broken build from hanging
//! (a connection that is never closed); nothing asserts how fast things are.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PAGE: &str = "<html><head></head><body>x</body></html>";
const GIVE_UP: Duration = Duration::from_secs(30);

/// Reads until the server closes the connection; `Err` if it does not
/// within `GIVE_UP`. Returns what was read.
async fn until_closed(stream: &mut TcpStream) -> Result<Vec<u8>, &'static str> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(GIVE_UP, read)
        .await
        .map_err(|_| "still open")?;
    Ok(got)
}

/// Sends one keep-alive GET and reads its whole (Content-Length) response.
async fn request(stream: &mut TcpStream, path: &str) -> String {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: {BROWSER_UA}\r\nAccept: text/css\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("a Content-Length");
            if body.len() >= len {
                return text;
            }
        }
        let n = tokio::time::timeout(GIVE_UP, stream.read(&mut buf))
            .await
            .expect("no response")
            .unwrap();
        assert!(n > 0, "closed before the response: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}

async fn css_origin() -> Origin {
    Origin::start(|_| async {
        respond(
            200,
            &[
                ("content-type", "text/css"),
                ("content-length", &PAGE.len().to_string()),
            ],
            PAGE,
        )
    })
    .await
}

#[tokio::test]
async fn half_open_connections_are_closed_after_header_read_timeout() {
    let origin = css_origin().await;
    let proxy = Proxy::start_with(origin.addr, "header_read_timeout_ms = 1000", "").await;
    // 200 clients that never finish a request head: silent ones (stuck in
    // HTTP/1-or-h2 detection), half a request line, a whole line and one
    // header, and half an h2 preface.
    let partials: [&[u8]; 4] = [
        b"",
        b"GET / HT",
        b"GET / HTTP/1.1\r\nHost: shop.example\r\n",
        b"PRI * HTTP/2.0\r\n",
    ];
    let mut stalled = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(partials[i % partials.len()]).await.unwrap();
        stalled.push(s);
    }
    // A normal client is served meanwhile.
    let mut normal = TcpStream::connect(proxy.addr).await.unwrap();
    let resp = request(&mut normal, "/style.css").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // Every stalled connection is closed by the proxy.
    let closes = stalled.iter_mut().map(until_closed);
    let results = futures_util::future::join_all(closes).await;
    let open = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(open, 0, "{open} of 200 half-open connections still open");
    // The proxy still serves new connections.
    let mut again = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(request(&mut again, "/").await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let origin = css_origin().await;
    let proxy = Proxy::start_with(
        origin.addr,
        "idle_timeout_ms = 1000\nheader_read_timeout_ms = 60000",
        "",
    )
    .await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    // Kept alive between requests…
    for _ in 0..3 {
        assert!(request(&mut s, "/a.css").await.starts_with("HTTP/1.1 200"));
    }
    // …and closed once idle.
    let rest = until_closed(&mut s).await.expect("idle connection closed");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

#[tokio::test]
async fn max_connections_pauses_accept_until_one_closes() {
    let origin = css_origin().await;
    let proxy = Proxy::start_with(origin.addr, "max_connections = 2", "").await;
    let mut a = TcpStream::connect(proxy.addr).await.unwrap();
    let mut b = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(request(&mut a, "/a.css").await.starts_with("HTTP/1.1 200"));
    assert!(request(&mut b, "/b.css").await.starts_with("HTTP/1.1 200"));
    // The third connects (the kernel's backlog) but is not served…
    let mut c = TcpStream::connect(proxy.addr).await.unwrap();
    let served = tokio::spawn(async move { request(&mut c, "/c.css").await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!served.is_finished(), "served past max_connections");
    // …and the first two keep working.
    assert!(request(&mut a, "/a2.css").await.starts_with("HTTP/1.1 200"));
    // Once one closes, the third is served.
    drop(a);
    let resp = tokio::time::timeout(GIVE_UP, served)
        .await
        .expect("third connection never served")
        .unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(request(&mut b, "/b2.css").await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn oversized_request_head_gets_431() {
    let origin = css_origin().await;
    let proxy = Proxy::start(origin.addr, "").await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let cookie = "x".repeat(100 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: shop.example\r\nCookie: a={cookie}\r\n\r\n");
    let (mut read, mut write) = s.split();
    let reading = async {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(GIVE_UP, read.read_to_end(&mut got)).await;
        got
    };
    // The proxy may stop reading (and close) before all of it is written.
    let writing = async {
        let _ = write.write_all(req.as_bytes()).await;
    };
    let (got, ()) = tokio::join!(reading, writing);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    assert!(origin.seen().is_empty());
    // A head under the cap still passes.
    let resp = client()
        .get(proxy.url("/ok"))
        .header("cookie", format!("a={}", "x".repeat(16 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn h2_header_list_has_the_http1_cap() {
    let origin = css_origin().await;
    let proxy = Proxy::start(origin.addr, "").await;
    let h2 = reqwest::Client::builder()
        .user_agent(BROWSER_UA)
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let big = h2
        .get(proxy.url("/big"))
        .header("cookie", format!("a={}", "x".repeat(100 * 1024)))
        .send()
        .await;
    assert_eq!(big.unwrap().status(), 431);
    // The same cap as HTTP/1.1: 32 KiB of cookies pass (hyper's own h2
    // default, 16 KiB, would refuse them).
    let cookies = h2
        .get(proxy.url("/cookies"))
        .header("cookie", format!("a={}", "x".repeat(32 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(cookies.status(), 200);
    let ok = h2.get(proxy.url("/ok")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.version(), reqwest::Version::HTTP_2);
    let seen: Vec<String> = origin.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(seen, ["/cookies", "/ok"]);
}

#[tokio::test]
async fn sigterm_drains_a_request_in_flight() {
    let origin = Origin::start(|_| async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        respond(200, &[("content-type", "text/css")], PAGE)
    })
    .await;
    let mut proxy = Proxy::start(origin.addr, "").await;
    let url = proxy.url("/slow.css");
    let pending = tokio::spawn(async move { client().get(url).send().await });
    // Once the origin has the request, ask the proxy to stop.
    while origin.seen().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let resp = pending.await.unwrap().expect("request finished");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), PAGE);
    // The process ends (a zombie until the harness reaps it).
    let state = || {
        std::fs::read_to_string(format!("/proc/{}/status", proxy.pid()))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("State:"))
            .map(|l| l.to_string())
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + GIVE_UP;
    while !state().contains("zombie") {
        assert!(
            std::time::Instant::now() < deadline,
            "still running: {}",
            state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = proxy.logs();
    assert!(logs.contains("shutting down"), "{logs}");
    assert!(!logs.contains("grace period over"), "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
    proxy.kill9();
}

/// A collector body cut short (the client declared 100 bytes, sent 10 and
/// closed its side) is a `400` that says the body could not be read, not a
/// `413`: nothing in it was too large.
#[tokio::test]
async fn a_collector_body_cut_short_is_a_400_not_a_413() {
    let origin = css_origin().await;
    let proxy = Proxy::start(origin.addr, "").await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let req = format!(
        "POST /_tagproxy/t HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: {BROWSER_UA}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"type\":\"p"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s.shutdown().await.unwrap();
    let got = until_closed(&mut s).await.unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(
        text.contains("the request body could not be read"),
        "{text}"
    );
}
