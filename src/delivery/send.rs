//! One attempt at one delivery: an HTTP request to a destination (or a line
//! on stdout for the `console` tool), classified by the retry policy.

use std::io::Write as _;
use std::time::Duration;

use super::retry::{self, Verdict};
use crate::tools::{guard, Delivery, HttpRequest, Payload};

/// What one attempt came to, with what the destination said (kept for dead
/// letters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub verdict: Verdict,
    pub status: Option<u16>,
    /// The response body, lossy UTF-8, at most `RESPONSE_KEPT` bytes.
    pub response: String,
}

/// How much of a response body a dead letter keeps.
const RESPONSE_KEPT: usize = 4096;

/// Sends deliveries; cheap to share.
pub struct Sender {
    http: reqwest::Client,
}

impl Sender {
    pub fn new(timeout: Duration, pool_per_host: usize) -> Sender {
        super::install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(pool_per_host)
            // A redirect would take the request somewhere the config did not
            // name (an internal address, say): a 3xx is an answer, not a hop.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client");
        Sender { http }
    }

    /// Makes one attempt.
    pub async fn attempt(&self, d: &Delivery) -> Attempt {
        match &d.payload {
            Payload::Stdout(line) => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                Attempt {
                    verdict: Verdict::Done,
                    status: None,
                    response: String::new(),
                }
            }
            Payload::Http(req) => self.send_request(req).await,
        }
    }

    /// Makes one attempt at an HTTP request (a delivery's, or a batch of
    /// them joined).
    pub async fn send_request(&self, req: &HttpRequest) -> Attempt {
        let failed = |verdict| Attempt {
            verdict,
            status: None,
            response: String::new(),
        };
        // A request that can never be built is refused, not retried: the
        // fan-out checks every new one, this catches replayed dead letters
        // and what an older version spooled.
        if let Err(why) = guard::check(req, &[], usize::MAX) {
            return failed(Verdict::Reject(why.to_string()));
        }
        let Ok(method) = reqwest::Method::from_bytes(req.method.as_bytes()) else {
            return failed(Verdict::Reject(format!("invalid method {}", req.method)));
        };
        let mut builder = self.http.request(method, &req.url);
        for (k, v) in &req.headers {
            // From bytes: a value may carry UTF-8 (RFC 9110 obs-text).
            let (Ok(k), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                reqwest::header::HeaderValue::from_bytes(v.as_bytes()),
            ) else {
                return failed(Verdict::Reject("invalid request: a header".into()));
            };
            builder = builder.header(k, v);
        }
        if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        match builder.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(retry::parse_retry_after);
                // Drain the body so the connection goes back to the pool.
                let body = resp.bytes().await.unwrap_or_default();
                Attempt {
                    verdict: retry::classify_status(status, retry_after, &body),
                    status: Some(status),
                    response: String::from_utf8_lossy(&body[..body.len().min(RESPONSE_KEPT)])
                        .into_owned(),
                }
            }
            Err(e) if e.is_timeout() => failed(Verdict::Retry {
                why: "timeout".into(),
                after: None,
            }),
            // The request itself is wrong: no later attempt can succeed.
            Err(e) if e.is_builder() => failed(Verdict::Reject(format!("invalid request: {e}"))),
            Err(e) => failed(Verdict::Retry {
                why: format!("connection error: {e}"),
                after: None,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn post(url: &str) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            url: url.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(b"{}".to_vec()),
        }
    }

    /// A destination on 127.0.0.1 that answers each connection's first
    /// request with `response` (raw HTTP/1.1), or never when it is `None`.
    async fn raw_destination(response: Option<Vec<u8>>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/e", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let response = response.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 4096];
                    let _ = stream.read(&mut buf).await;
                    match response {
                        Some(r) => {
                            let _ = stream.write_all(&r).await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(30)).await,
                    }
                });
            }
        });
        url
    }

    /// SPEC §11: no answer within `timeout_ms` is retried, as "timeout".
    #[tokio::test]
    async fn no_answer_in_time_is_a_retryable_timeout() {
        let url = raw_destination(None).await;
        let sender = Sender::new(Duration::from_millis(200), 1);
        let got = sender.send_request(&post(&url)).await;
        assert_eq!(
            got.verdict,
            Verdict::Retry {
                why: "timeout".into(),
                after: None
            }
        );
        assert_eq!(got.status, None);
    }

    /// A refused connection is retried, and says so.
    #[tokio::test]
    async fn a_refused_connection_is_retried() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/e", listener.local_addr().unwrap());
        drop(listener);
        let sender = Sender::new(Duration::from_secs(2), 1);
        let got = sender.send_request(&post(&url)).await;
        match got.verdict {
            Verdict::Retry { why, after: None } => {
                assert!(why.starts_with("connection error: "), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }

    /// The status, `Retry-After` and the first `RESPONSE_KEPT` bytes of the
    /// body are what the attempt reports.
    #[tokio::test]
    async fn the_answer_is_classified_and_kept() {
        let body = "x".repeat(RESPONSE_KEPT + 10);
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let url = raw_destination(Some(response.into_bytes())).await;
        let sender = Sender::new(Duration::from_secs(2), 1);
        let got = sender.send_request(&post(&url)).await;
        assert_eq!(got.status, Some(503));
        assert_eq!(
            got.verdict,
            Verdict::Retry {
                why: "HTTP 503".into(),
                after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(got.response.len(), RESPONSE_KEPT);
    }

    /// A request that can never be sent is refused without a connection.
    #[tokio::test]
    async fn a_request_that_cannot_be_built_is_refused() {
        let sender = Sender::new(Duration::from_secs(1), 1);
        let mut bad = post("http://127.0.0.1:9/e");
        bad.method = "P OST".into();
        assert!(matches!(
            sender.send_request(&bad).await.verdict,
            Verdict::Reject(_)
        ));
        let mut bad = post("http://127.0.0.1:9/e");
        bad.headers.push(("x-bad".into(), "a\r\nb".into()));
        assert!(matches!(
            sender.send_request(&bad).await.verdict,
            Verdict::Reject(_)
        ));
        assert!(matches!(
            sender
                .send_request(&post("ftp://127.0.0.1/e"))
                .await
                .verdict,
            Verdict::Reject(_)
        ));
    }

    /// The `console` tool's line is written to stdout and is done.
    #[tokio::test]
    async fn a_console_line_is_done() {
        let sender = Sender::new(Duration::from_secs(1), 1);
        let d = Delivery::new("console", "e", Payload::Stdout("{}".into()));
        let got = sender.attempt(&d).await;
        assert_eq!((got.verdict, got.status), (Verdict::Done, None));
    }
}
