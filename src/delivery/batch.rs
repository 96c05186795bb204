//! Batched delivery (SPEC §8): one generic batcher for every destination
//! with a batch API, in the manner of Vector's sinks.
//!
//! An adapter stays a pure request builder: it renders one request per
//! event, as without batching, and declares in a [`Batching`] how such
//! requests combine — its limits, which requests may share one call
//! ([`Batching::key`]), and how to [`Batching::join`] them. The engine does
//! the rest, the same for the spool, memory and NATS backends:
//!
//! - **Grouping**: a delivery waits at most `[delivery] batch_linger_ms` for
//!   others with the same key, up to [`Limits`] (events and body bytes).
//! - **Acknowledgement**: every member stays in the store until the joined
//!   request is answered `2xx` (or the member is in the dead letters).
//! - **Retries**: a retryable answer (`429`, `5xx`, timeouts) is each
//!   member's failed attempt, with its own backoff, `max_attempts` and
//!   `max_age_s`, as for a delivery sent alone.
//! - **Poison isolation** (splitting): a batch refused as a whole (a
//!   non-retryable `4xx`, as Meta answers `400` for the batch when one event
//!   is invalid) is split in halves, each joined and sent again at once, down
//!   to single deliveries: only those the destination refuses alone go to
//!   the dead letters, with its message. Each member keeps its own request,
//!   so an adapter never has to take a batch apart.
//!
//! To batch an adapter: implement [`Batching`] and return it from
//! `Adapter::batching` (see `tools::facebook_pixel::MetaBatching`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::{Next, Policy, ToolCounters};
use crate::tools::{Delivery, HttpRequest, Payload};

/// A destination's limits on one batched request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deliveries (events) per request.
    pub max_events: usize,
    /// Bytes of the joined body, as [`Batching::join`] builds it (estimated
    /// as the members' bodies and URLs added up).
    pub max_bytes: usize,
}

/// How a destination takes several of its per-event requests in one call.
/// Implemented next to the adapter (one per destination type); stateless
/// apart from settings: everything it needs is in the rendered requests,
/// which is also what the spool and NATS store, so stored deliveries batch
/// after a restart or on another instance.
pub trait Batching: Send + Sync {
    /// The destination's documented limits per request.
    fn limits(&self) -> Limits;

    /// Which requests may share one call: equal keys join. `None`: this
    /// request is always sent alone (a custom request, say). The key must
    /// cover everything [`Batching::join`] takes from the first member only
    /// (URL, credentials, headers).
    fn key(&self, req: &HttpRequest) -> Option<String>;

    /// One request carrying `reqs` (two or more, all with the same key, in
    /// order). `None` when they cannot be joined after all; each is then
    /// sent alone.
    fn join(&self, reqs: &[&HttpRequest]) -> Option<HttpRequest>;
}

/// One delivery in a batch: what it is and where it stands.
pub struct Member<'a> {
    pub delivery: &'a Delivery,
    /// The attempt this is for it (from 1).
    pub attempt: u32,
    pub accepted_ms: u64,
}

/// A member's HTTP request, if it has one.
fn http(d: &Delivery) -> Option<&HttpRequest> {
    match &d.payload {
        Payload::Http(req) => Some(req),
        Payload::Stdout(_) => None,
    }
}

/// The batch key of a delivery under `batching` (`None`: sent alone).
pub fn key_of(batching: &dyn Batching, d: &Delivery) -> Option<String> {
    http(d).and_then(|req| batching.key(req))
}

/// The size a member adds to a joined request, for [`Limits::max_bytes`].
pub fn size_of(d: &Delivery) -> usize {
    http(d).map_or(0, |r| r.url.len() + r.body.as_ref().map_or(0, Vec::len))
}

/// Groups deliveries by key, in arrival order, into batches within the
/// limits: `add` answers a full batch to send now; [`Grouper::drain`] gives
/// the rest when the linger is over.
pub struct Grouper<T> {
    limits: Limits,
    open: HashMap<String, (Vec<T>, usize)>,
    /// Keys in the order their batch was opened (oldest first).
    order: Vec<String>,
}

impl<T> Grouper<T> {
    pub fn new(limits: Limits) -> Self {
        Grouper {
            limits: Limits {
                max_events: limits.max_events.max(1),
                max_bytes: limits.max_bytes.max(1),
            },
            open: HashMap::new(),
            order: Vec::new(),
        }
    }

    /// Adds `item` (of `size` bytes) to the batch for `key`. Returns a batch
    /// that must go now: the one it filled, or the one it did not fit in
    /// (then `item` opens a new batch).
    pub fn add(&mut self, key: String, item: T, size: usize) -> Option<Vec<T>> {
        let limits = self.limits;
        let mut ready = None;
        if let Some((items, bytes)) = self.open.get_mut(&key) {
            if !items.is_empty() && *bytes + size > limits.max_bytes {
                ready = Some(std::mem::take(items));
                *bytes = 0;
            }
        }
        let (items, bytes) = self.open.entry(key.clone()).or_insert_with(|| {
            self.order.push(key.clone());
            (Vec::new(), 0)
        });
        items.push(item);
        *bytes += size;
        if ready.is_none() && items.len() >= limits.max_events {
            let full = std::mem::take(items);
            self.open.remove(&key);
            self.order.retain(|k| *k != key);
            return Some(full);
        }
        ready
    }

    /// Every open batch, oldest first.
    pub fn drain(&mut self) -> Vec<Vec<T>> {
        let mut open = std::mem::take(&mut self.open);
        std::mem::take(&mut self.order)
            .into_iter()
            .filter_map(|k| open.remove(&k).map(|(items, _)| items))
            .filter(|items| !items.is_empty())
            .collect()
    }
}

/// The outcome for each member, in order.
pub type Outcomes = Vec<Next>;

impl Policy {
    /// One attempt at a batch: the joined request, then each member's
    /// outcome as if it had been sent alone ([`Policy::conclude`]). A batch
    /// refused as a whole is split and its halves sent at once (poison
    /// isolation). `limit` bounds the requests in flight.
    pub fn attempt_batch<'a>(
        &'a self,
        counters: &'a ToolCounters,
        batching: &'a dyn Batching,
        limit: &'a tokio::sync::Semaphore,
        members: &'a [Member<'a>],
    ) -> Pin<Box<dyn Future<Output = Outcomes> + Send + 'a>> {
        Box::pin(async move {
            let alone = |m: &'a Member<'a>| async move {
                let Ok(_permit) = limit.acquire().await else {
                    // Shutting down: try again later (nothing is lost).
                    return Next::RetryIn(self.backoff.cap);
                };
                self.attempt(counters, m.delivery, m.attempt, m.accepted_ms)
                    .await
            };
            if members.len() == 1 {
                return vec![alone(&members[0]).await];
            }
            let reqs: Option<Vec<&HttpRequest>> =
                members.iter().map(|m| http(m.delivery)).collect();
            let joined = reqs.and_then(|reqs| batching.join(&reqs));
            let Some(joined) = joined else {
                return futures_util::future::join_all(members.iter().map(alone)).await;
            };
            let started = std::time::Instant::now();
            let mut result = {
                let Ok(_permit) = limit.acquire().await else {
                    return members
                        .iter()
                        .map(|_| Next::RetryIn(self.backoff.cap))
                        .collect();
                };
                crate::metrics::Metrics::add(&self.metrics.delivery_batches, 1);
                self.sender.send_request(&joined).await
            };
            let latency = started.elapsed();
            // The adapter reads the batch's answer (an error inside a 200
            // body refuses the batch as a whole, too).
            self.read_answer(members[0].delivery, &mut result);
            if let super::Verdict::Reject(why) = &result.verdict {
                tracing::info!(
                    tool = %members[0].delivery.tool,
                    events = members.len(),
                    reason = %why,
                    "batch refused as a whole; sending its halves to find the refused events"
                );
                let (left, right) = members.split_at(members.len() / 2);
                let (mut a, b) = futures_util::future::join(
                    self.attempt_batch(counters, batching, limit, left),
                    self.attempt_batch(counters, batching, limit, right),
                )
                .await;
                a.extend(b);
                return a;
            }
            let mut out = Vec::with_capacity(members.len());
            for m in members {
                out.push(
                    self.conclude(
                        counters,
                        m.delivery,
                        m.attempt,
                        m.accepted_ms,
                        &result,
                        latency,
                    )
                    .await,
                );
            }
            out
        })
    }
}

/// The most a linger may be: a typo in the config must not hold deliveries.
pub const MAX_LINGER: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(events: usize, bytes: usize) -> Limits {
        Limits {
            max_events: events,
            max_bytes: bytes,
        }
    }

    #[test]
    fn groups_by_key_up_to_the_event_limit() {
        let mut g = Grouper::new(limits(3, 1000));
        assert_eq!(g.add("a".into(), 1, 10), None);
        assert_eq!(g.add("b".into(), 2, 10), None);
        assert_eq!(g.add("a".into(), 3, 10), None);
        assert_eq!(g.add("a".into(), 4, 10), Some(vec![1, 3, 4]));
        assert_eq!(g.add("a".into(), 5, 10), None);
        assert_eq!(g.drain(), vec![vec![2], vec![5]]);
        assert!(g.drain().is_empty(), "drained");
    }

    #[test]
    fn a_member_that_would_overflow_the_bytes_starts_the_next_batch() {
        let mut g = Grouper::new(limits(100, 25));
        assert_eq!(g.add("a".into(), 1, 10), None);
        assert_eq!(g.add("a".into(), 2, 10), None);
        assert_eq!(g.add("a".into(), 3, 10), Some(vec![1, 2]));
        // Too big for any batch: it still goes, alone.
        assert_eq!(g.add("a".into(), 4, 100), Some(vec![3]));
        assert_eq!(g.drain(), vec![vec![4]]);
    }

    #[test]
    fn a_limit_of_one_sends_each_alone() {
        let mut g = Grouper::new(limits(1, 1000));
        assert_eq!(g.add("a".into(), 1, 10), Some(vec![1]));
        assert!(g.drain().is_empty());
    }

    /// A member that fills the bytes exactly still joins the batch.
    #[test]
    fn a_member_that_fills_the_bytes_exactly_joins() {
        let mut g = Grouper::new(limits(100, 20));
        assert_eq!(g.add("a".into(), 1, 10), None);
        assert_eq!(g.add("a".into(), 2, 10), None);
        assert_eq!(g.add("a".into(), 3, 1), Some(vec![1, 2]));
    }

    /// Limits of zero (a misconfigured cap) still let one delivery through
    /// per batch rather than none.
    #[test]
    fn zero_limits_mean_one() {
        let mut g = Grouper::new(limits(0, 0));
        assert_eq!(g.add("a".into(), 1, 10), Some(vec![1]));
        assert_eq!(g.add("a".into(), 2, 10), Some(vec![2]));
    }

    struct ByUrl;
    impl Batching for ByUrl {
        fn limits(&self) -> Limits {
            limits(10, 1000)
        }
        fn key(&self, req: &HttpRequest) -> Option<String> {
            Some(format!("k:{}", req.url))
        }
        fn join(&self, _: &[&HttpRequest]) -> Option<HttpRequest> {
            None
        }
    }

    fn http_delivery(url: &str, body: Option<&str>) -> Delivery {
        Delivery::new(
            "t",
            "e",
            Payload::Http(HttpRequest {
                method: "POST".into(),
                url: url.into(),
                headers: Vec::new(),
                body: body.map(|b| b.as_bytes().to_vec()),
            }),
        )
    }

    /// An HTTP delivery's key is the adapter's, and its size its URL and
    /// body; a `console` line never batches and weighs nothing.
    #[test]
    fn keys_and_sizes_of_members() {
        let d = http_delivery("https://x.example/abc", Some("0123456789"));
        assert_eq!(
            key_of(&ByUrl, &d).as_deref(),
            Some("k:https://x.example/abc")
        );
        assert_eq!(size_of(&d), 21 + 10);
        assert_eq!(size_of(&http_delivery("https://x.example/abc", None)), 21);
        let line = Delivery::new("t", "e", Payload::Stdout("x".into()));
        assert_eq!(key_of(&ByUrl, &line), None);
        assert_eq!(size_of(&line), 0);
    }
}
