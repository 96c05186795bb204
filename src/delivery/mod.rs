//! Delivery: sends what adapters built, off the request path, with
//! per-tool queues and concurrency limits and retries with backoff.
//!
//! This is the in-memory first path (SPEC §11's durable spool and NATS come
//! behind the same `submit` seam). A destination that is down or slow only
//! fills its own tool's queue; the collector never waits for a destination.

pub mod deadletter;
pub mod inbox;
mod retry;

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};

pub use retry::{Backoff, Verdict};

use crate::config::DeliveryConfig;
use crate::metrics::Metrics;
use crate::tools::{Delivery, HttpRequest, Payload};

/// Deliveries waiting per tool before the collector starts answering 503.
const QUEUE_CAPACITY: usize = 4_096;
/// Deliveries per tool being sent or waiting to retry.
const LIVE_PER_TOOL: usize = 4_096;

/// The queue is full: the caller should ask the client to retry later.
#[derive(Debug)]
pub struct QueueFull;

/// Sends deliveries; cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    queues: Arc<HashMap<String, mpsc::Sender<Delivery>>>,
    pub metrics: Arc<Metrics>,
}

/// Shared by every delivery task.
struct Sender {
    http: reqwest::Client,
    backoff: Backoff,
    metrics: Arc<Metrics>,
}

impl Dispatcher {
    /// Starts one worker per tool id.
    pub fn start(
        tool_ids: &[String],
        config: &DeliveryConfig,
        metrics: Arc<Metrics>,
    ) -> Dispatcher {
        install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.timeout_ms.min(5_000)))
            .pool_max_idle_per_host(config.concurrency_per_tool as usize)
            .build()
            .expect("http client");
        let sender = Arc::new(Sender {
            http,
            backoff: Backoff {
                base: Duration::from_millis(config.retry_base_ms),
                cap: Duration::from_secs(300),
                max_attempts: config.max_attempts,
                max_age: Duration::from_secs(config.max_age_s),
            },
            metrics: metrics.clone(),
        });
        let mut queues = HashMap::new();
        for id in tool_ids {
            let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
            let limit = Arc::new(Semaphore::new(config.concurrency_per_tool as usize));
            tokio::spawn(worker(rx, limit, sender.clone()));
            queues.insert(id.clone(), tx);
        }
        Dispatcher {
            queues: Arc::new(queues),
            metrics,
        }
    }

    /// Queues deliveries; fails only when a tool's queue is full.
    pub fn submit(&self, deliveries: Vec<Delivery>) -> Result<(), QueueFull> {
        for d in deliveries {
            let Some(q) = self.queues.get(&d.tool) else {
                tracing::error!(tool = %d.tool, "delivery for an unknown tool dropped");
                continue;
            };
            match q.try_send(d) {
                Ok(()) => {
                    Metrics::add(&self.metrics.deliveries_submitted, 1);
                }
                Err(mpsc::error::TrySendError::Full(d)) => {
                    Metrics::add(&self.metrics.deliveries_rejected, 1);
                    tracing::warn!(tool = %d.tool, event_id = %d.event_id, "delivery queue full");
                    return Err(QueueFull);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(QueueFull),
            }
        }
        Ok(())
    }
}

/// One TLS provider for every outgoing HTTPS request: ring, which builds with
/// a plain C compiler (aws-lc needs more). Installing twice is harmless.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Takes a tool's deliveries in order and runs each under the tool's
/// concurrency limit.
///
/// A delivery leaves the queue only when it has a place among the tool's
/// `LIVE_PER_TOOL` live deliveries (sending or waiting to retry), so a slow
/// or dead destination fills its queue, and the collector then answers 503,
/// instead of memory growing without bound.
async fn worker(mut rx: mpsc::Receiver<Delivery>, limit: Arc<Semaphore>, sender: Arc<Sender>) {
    let live = Arc::new(Semaphore::new(LIVE_PER_TOOL));
    while let Some(delivery) = rx.recv().await {
        let Ok(place) = live.clone().acquire_owned().await else {
            return;
        };
        let sender = sender.clone();
        let limit = limit.clone();
        tokio::spawn(async move {
            sender.deliver(delivery, &limit).await;
            drop(place);
        });
    }
}

impl Sender {
    /// Sends one delivery until it succeeds or the retry policy gives up.
    /// The concurrency permit is held only while a request is in flight,
    /// never while waiting to retry.
    async fn deliver(&self, d: Delivery, limit: &Semaphore) {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            Metrics::add(&self.metrics.delivery_attempts, 1);
            let verdict = {
                let Ok(_permit) = limit.acquire().await else {
                    return;
                };
                match &d.payload {
                    Payload::Stdout(line) => {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "{line}");
                        Verdict::Done
                    }
                    Payload::Http(req) => self.send(req).await,
                }
            };
            match verdict {
                Verdict::Done => {
                    Metrics::add(&self.metrics.deliveries_delivered, 1);
                    tracing::debug!(tool = %d.tool, event_id = %d.event_id, attempt, "delivered");
                    return;
                }
                Verdict::Reject(why) => {
                    Metrics::add(&self.metrics.deliveries_failed, 1);
                    tracing::error!(tool = %d.tool, event_id = %d.event_id, attempt, reason = %why, "delivery rejected by the destination");
                    return;
                }
                Verdict::Retry { why, after } => {
                    match self.backoff.next_delay(attempt, started.elapsed(), after) {
                        Some(delay) => {
                            Metrics::add(&self.metrics.delivery_retries, 1);
                            tracing::info!(tool = %d.tool, event_id = %d.event_id, attempt, reason = %why, delay_ms = delay.as_millis() as u64, "delivery will be retried");
                            tokio::time::sleep(delay).await;
                        }
                        None => {
                            Metrics::add(&self.metrics.deliveries_failed, 1);
                            tracing::error!(tool = %d.tool, event_id = %d.event_id, attempt, reason = %why, "delivery given up");
                            return;
                        }
                    }
                }
            }
        }
    }

    async fn send(&self, req: &HttpRequest) -> Verdict {
        let Ok(method) = reqwest::Method::from_bytes(req.method.as_bytes()) else {
            return Verdict::Reject(format!("invalid method {}", req.method));
        };
        let mut builder = self.http.request(method, &req.url);
        for (k, v) in &req.headers {
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
                retry::classify_status(status, retry_after, &body)
            }
            Err(e) if e.is_timeout() => Verdict::Retry {
                why: "timeout".into(),
                after: None,
            },
            Err(e) => Verdict::Retry {
                why: format!("connection error: {e}"),
                after: None,
            },
        }
    }
}
