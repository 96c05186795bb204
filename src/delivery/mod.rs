//! Delivery (SPEC §11): sends what adapters built, off the request path, at
//! least once.
//!
//! The collector hands each event's deliveries to the [`Engine`], which
//! keeps them in a store before the collector answers `200`:
//! - `spool` (default): the embedded durable [`spool`], fsynced with group
//!   commit; survives `kill -9`.
//! - `nats`: a JetStream stream shared by any number of instances ([`nats`]).
//! - `memory`: nothing survives a restart (tests and the demo).
//!
//! Every tool has its own queue, concurrency limit and retry timers, so a
//! slow or dead destination only fills its own queue. A delivery is settled
//! (removed from the store) only after a `2xx`, or once it is safely in the
//! dead letters: a non-retryable `4xx`, or retries exhausted.
//!
//! Destinations with a batch API get several deliveries per request
//! ([`batch`]): a tool's deliveries that may share a call wait up to
//! `batch_linger_ms` for each other, and each member is settled on the
//! joined request's answer as if it had been sent alone.

pub mod batch;
pub mod deadletter;
pub mod inbox;
pub mod nats;
pub mod retry;
mod send;
pub mod spool;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

pub use batch::{Batching, Limits};
pub use retry::{Backoff, Verdict};
pub use send::{Attempt, Sender};

use crate::config::{DeliveryBackend, DeliveryConfig};
use crate::event::now_ms;
use crate::metrics::{Metrics, ToolGauges};
use crate::tools::guard::Invalid;
use crate::tools::Delivery;
use deadletter::{DeadLetter, DeadLetters};
use spool::{Cursor, Loc, ScanCache, Spool};

/// Deliveries a tool may have waiting in memory with the `memory` backend
/// before the collector answers 503, and their bytes ([`Job::size`]).
const MEMORY_QUEUE: usize = 4_096;
const MEMORY_QUEUE_BYTES: usize = 8 << 20;
/// With the spool, a tool's deliveries wait in memory (its window) up to
/// this many, and this many bytes ([`Job::size`]); past either, they wait
/// on disk only (nothing of them is kept in memory) and are read back from
/// the spool's segments when the window has room, so a backlog costs disk,
/// not memory.
const WINDOW_ITEMS: usize = 512;
const WINDOW_BYTES: usize = 512 << 10;
/// The window is refilled from disk once it is down to this many jobs and
/// this many bytes.
const REFILL_BELOW: usize = WINDOW_ITEMS / 2;
const REFILL_BELOW_BYTES: usize = WINDOW_BYTES / 2;
/// Deliveries per tool being sent or waiting to retry are bounded in
/// places: one per [`LIVE_UNIT`] bytes of [`Job::size`] (at least one), so
/// at most `LIVE_PLACES` deliveries and about `LIVE_PLACES × LIVE_UNIT`
/// bytes of them.
const LIVE_PLACES: u32 = 2_048;
const LIVE_UNIT: usize = 1_024;
/// How long delivery waits at start for the config to say how tools batch
/// (what was recovered from the spool would otherwise go one by one).
const CONFIG_WAIT: Duration = Duration::from_secs(5);
/// How often the replay inbox (`deadletter replay`) is looked at.
const INBOX_POLL: Duration = Duration::from_secs(1);

/// The store is full or failing: the caller should ask the client to retry.
#[derive(Debug)]
pub struct QueueFull;

/// Where the engine's files are.
pub struct Paths {
    pub spool_dir: PathBuf,
    pub data_dir: PathBuf,
}

/// The delivery engine; lives as long as the process (config reloads keep
/// it, so nothing queued is dropped by a reload).
pub struct Engine {
    store: Store,
    queues: DashMap<Arc<str>, Arc<ToolQueue>>,
    policy: Arc<Policy>,
    concurrency: usize,
    spool_dir: PathBuf,
    /// Sequence numbers for the memory store (the spool numbers its own).
    memory_seq: AtomicU64,
    /// Where each tool's workers run (queues are also made on the spool's
    /// writer thread).
    runtime: tokio::runtime::Handle,
}

/// A tool's deliveries found in the spool at start.
struct Backlog {
    count: u64,
    first: Loc,
    first_ms: u64,
    last: u64,
}

enum Store {
    Memory,
    Spool(Arc<Spool>),
    Nats(Arc<nats::Nats>),
}

/// One attempt and what follows from it; shared by every backend.
pub struct Policy {
    pub sender: Sender,
    pub backoff: Backoff,
    pub metrics: Arc<Metrics>,
    pub dead: Arc<DeadLetters>,
    /// Per tool id, how its destination's answers are read
    /// ([`crate::tools::Adapter::answer_reader`]); set at each config load.
    pub answers: std::sync::RwLock<std::collections::HashMap<String, crate::tools::AnswerReader>>,
    /// How the tools whose destination has a batch API batch, by tool id
    /// (set from the config, see [`Engine::set_batching`]).
    batching: DashMap<String, Arc<dyn Batching>>,
    /// How long a batchable delivery waits for others (`batch_linger_ms`).
    pub linger: Duration,
    /// `batch_max_events`: a cap below every destination's own limit.
    pub max_batch_events: Option<usize>,
    /// Whether the config's batching is known yet ([`Engine::set_batching`]).
    configured: tokio::sync::watch::Sender<bool>,
}

/// What to do after an attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Delivered, or safely in the dead letters: remove it from the store.
    Settled,
    /// Try again after this long.
    RetryIn(Duration),
}

/// Per-tool counters, for `/metrics`.
#[derive(Default)]
pub struct ToolCounters {
    pub attempts: AtomicU64,
    pub delivered: AtomicU64,
    pub retries: AtomicU64,
    pub dead_lettered: AtomicU64,
}

/// A delivery owed, in memory.
struct Job {
    seq: u64,
    accepted_ms: u64,
    /// What it costs in memory, estimated from its encoded size (its
    /// source event is parsed JSON in memory, about twice its text).
    size: usize,
    delivery: Delivery,
}

/// [`Job::size`] of a delivery whose spool record takes `encoded` bytes.
fn job_size(encoded: usize) -> usize {
    encoded * 2 + 256
}

/// One tool's queue.
struct ToolQueue {
    tool: Arc<str>,
    window: Mutex<Window>,
    /// A job entered the window.
    notify: Notify,
    /// The window wants reading back from disk ([`refill`]).
    refill: Notify,
    /// Requests in flight.
    limit: Semaphore,
    /// Jobs taken from the window and not yet settled: seq → accepted_ms.
    live: Mutex<BTreeMap<u64, u64>>,
    counters: ToolCounters,
}

/// A tool's deliveries waiting for their turn.
#[derive(Default)]
struct Window {
    /// In memory, in order.
    jobs: VecDeque<Job>,
    /// Their [`Job::size`]s added up.
    bytes: usize,
    /// Spool: deliveries from here on wait on disk only.
    spill: Option<Spill>,
    /// Deliveries not yet done with: in the window, on disk, live.
    owed: u64,
}

/// Where a tool's deliveries on disk start.
struct Spill {
    /// The first one not read back.
    cursor: Cursor,
    /// The highest sequence number left on disk only; once the reader is
    /// past it, new deliveries go to the window again.
    last: u64,
    /// The highest sequence number the reader has passed.
    through: u64,
    /// When the oldest one on disk was accepted (unix ms), about.
    oldest_ms: u64,
}

impl Window {
    fn is_full(&self, items: usize, bytes: usize, size: usize) -> bool {
        self.jobs.len() >= items || (!self.jobs.is_empty() && self.bytes + size > bytes)
    }

    fn push(&mut self, job: Job) {
        self.bytes += job.size;
        self.jobs.push_back(job);
    }
}

impl Engine {
    /// Opens the store (recovering what a previous run left in the spool)
    /// and starts delivering. The event id of every recovered delivery goes
    /// to `remember_event_id`: a client retrying a batch that was stored
    /// just before a crash must not have it delivered twice.
    pub fn start(
        config: &DeliveryConfig,
        paths: Paths,
        metrics: Arc<Metrics>,
        remember_event_id: &mut dyn FnMut(&str),
    ) -> io::Result<Arc<Engine>> {
        install_tls_provider();
        let policy = Arc::new(Policy {
            sender: Sender::new(
                Duration::from_millis(config.timeout_ms),
                config.concurrency_per_tool as usize,
            ),
            backoff: Backoff {
                base: Duration::from_millis(config.retry_base_ms),
                cap: Duration::from_millis(config.retry_max_ms.max(config.retry_base_ms)),
                max_attempts: config.max_attempts,
                max_age: Duration::from_secs(config.max_age_s),
            },
            metrics: metrics.clone(),
            dead: Arc::new(DeadLetters::new(&paths.data_dir)),
            answers: Default::default(),
            batching: DashMap::new(),
            linger: Duration::from_millis(config.batch_linger_ms).min(batch::MAX_LINGER),
            max_batch_events: config.batch_max_events.map(|n| n.max(1) as usize),
            configured: tokio::sync::watch::Sender::new(false),
        });
        let mut recovered: std::collections::HashMap<String, Backlog> = Default::default();
        let store = match config.backend {
            DeliveryBackend::Memory => Store::Memory,
            DeliveryBackend::Spool => {
                // Per tool, only where its backlog starts and how long it is:
                // the deliveries themselves are read back when their turn
                // comes.
                let mut on_pending = |p: spool::Pending<'_>| {
                    remember_event_id(p.event_id);
                    match recovered.get_mut(p.tool) {
                        Some(b) => {
                            b.count += 1;
                            b.last = p.seq;
                        }
                        None => {
                            recovered.insert(
                                p.tool.to_string(),
                                Backlog {
                                    count: 1,
                                    first: p.loc,
                                    first_ms: p.accepted_ms,
                                    last: p.seq,
                                },
                            );
                        }
                    }
                };
                let (spool, recovery) = Spool::open_with(
                    &paths.spool_dir,
                    config.spool_max_bytes,
                    metrics.clone(),
                    &mut on_pending,
                )
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot open the spool {}: {e}", paths.spool_dir.display()),
                    )
                })?;
                tracing::info!(
                    dir = %paths.spool_dir.display(),
                    pending = recovery.pending_count,
                    segments = recovery.segments,
                    torn_bytes = recovery.torn_bytes,
                    "spool opened"
                );
                if recovery.torn_bytes > 0 {
                    tracing::warn!(
                        bytes = recovery.torn_bytes,
                        "the spool ended in a torn write (a crash mid-write); those events were never acknowledged, so their clients retry them"
                    );
                }
                for bad in &recovery.unreadable {
                    tracing::error!(file = %bad, "spool file unreadable");
                }
                Metrics::add(&metrics.spool_torn_bytes, recovery.torn_bytes);
                Metrics::add(&metrics.spool_recovered, recovery.pending_count);
                Store::Spool(Arc::new(spool))
            }
            // `start` is not async: connect on this thread, letting the
            // runtime's other workers run meanwhile (the binary's runtime is
            // multi-threaded).
            DeliveryBackend::Nats => Store::Nats(tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current()
                    .block_on(nats::Nats::connect(config, policy.clone()))
            })?),
        };
        let engine = Arc::new(Engine {
            store,
            queues: DashMap::new(),
            policy,
            concurrency: config.concurrency_per_tool as usize,
            spool_dir: paths.spool_dir,
            memory_seq: AtomicU64::new(1),
            runtime: tokio::runtime::Handle::current(),
        });
        if let Store::Spool(spool) = &engine.store {
            // Every record written from now on enters its tool's window, or
            // stays on disk only when the window is full, in sequence
            // order.
            let weak = Arc::downgrade(&engine);
            spool.set_sink(Box::new(move |w: spool::Written<'_>| {
                if let Some(engine) = weak.upgrade() {
                    engine.written(w);
                }
            }));
        }
        for (tool, b) in recovered {
            let queue = engine.queue(&tool);
            let mut w = queue.window.lock().unwrap_or_else(|e| e.into_inner());
            w.owed += b.count;
            w.spill = Some(Spill {
                cursor: b.first.into(),
                last: b.last,
                through: 0,
                oldest_ms: b.first_ms,
            });
            drop(w);
            queue.refill.notify_one();
        }
        let weak = Arc::downgrade(&engine);
        metrics.set_tool_gauges(Box::new(move || {
            weak.upgrade().map(|e| e.gauges()).unwrap_or_default()
        }));
        tokio::spawn(import_inbox(Arc::downgrade(&engine)));
        Ok(engine)
    }

    /// Stores deliveries (durably, with the spool) and queues them. Fails
    /// when the store is full or failing; then nothing was accepted.
    pub async fn submit(&self, deliveries: Vec<Delivery>) -> Result<(), QueueFull> {
        self.submit_from(deliveries, None).await
    }

    /// `submit`; `replay` names the inbox file the deliveries come from.
    async fn submit_from(
        &self,
        deliveries: Vec<Delivery>,
        replay: Option<&str>,
    ) -> Result<(), QueueFull> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let metrics = &self.policy.metrics;
        let accepted_ms = now_ms();
        let n = deliveries.len() as u64;
        match &self.store {
            Store::Memory => {
                for d in &deliveries {
                    if self.queue(&d.tool).memory_full() {
                        Metrics::add(&metrics.deliveries_rejected, n);
                        tracing::warn!(tool = %d.tool, "delivery queue full");
                        return Err(QueueFull);
                    }
                }
                for d in deliveries {
                    let size = job_size(spool::record::encoded_len(&d));
                    let queue = self.queue(&d.tool);
                    let mut w = queue.window.lock().unwrap_or_else(|e| e.into_inner());
                    w.owed += 1;
                    w.push(Job {
                        seq: self.memory_seq.fetch_add(1, Ordering::Relaxed),
                        accepted_ms,
                        size,
                        delivery: d,
                    });
                    drop(w);
                    queue.notify.notify_one();
                }
            }
            Store::Spool(spool) => {
                if spool.is_full() || spool.has_failed() {
                    Metrics::add(&metrics.deliveries_rejected, n);
                    tracing::warn!(bytes = spool.bytes(), "spool full; answering 503");
                    return Err(QueueFull);
                }
                let items: Vec<Vec<u8>> = deliveries
                    .iter()
                    .map(|d| spool::record::encode_body(accepted_ms, d))
                    .collect();
                // Written, the deliveries enter their queues (`written`).
                if let Err(e) = spool.append_deliveries(items, deliveries).await {
                    Metrics::add(&metrics.deliveries_rejected, n);
                    tracing::error!(error = %e, "spool write failed; answering 503");
                    return Err(QueueFull);
                }
            }
            Store::Nats(nats) => {
                if let Err(e) = nats.submit(&deliveries, replay).await {
                    Metrics::add(&metrics.deliveries_rejected, n);
                    tracing::error!(error = %e, "NATS publish failed; answering 503");
                    return Err(QueueFull);
                }
            }
        }
        Metrics::add(&metrics.deliveries_submitted, n);
        Ok(())
    }

    /// Puts requests that can never be sent (`tools::guard`) straight into
    /// the dead letters, with `attempts = 0` (nothing was sent), and counts
    /// them by tool and reason. A failed write is logged: these were never
    /// going to be delivered.
    pub async fn dead_letter_invalid(&self, invalid: Vec<(Delivery, Invalid)>) {
        if invalid.is_empty() {
            return;
        }
        let metrics = &self.policy.metrics;
        let accepted_ms = now_ms();
        let mut letters = Vec::with_capacity(invalid.len());
        for (d, why) in invalid {
            tracing::warn!(tool = %d.tool, event_id = %d.event_id, reason = why.reason, error = %why.message, "request cannot be sent; moved to the dead letters without an attempt");
            metrics.invalid(&d.tool, why.reason);
            Metrics::add(&metrics.deliveries_failed, 1);
            self.queue(&d.tool)
                .counters
                .dead_lettered
                .fetch_add(1, Ordering::Relaxed);
            letters.push(DeadLetter::new(
                d,
                why.to_string(),
                None,
                b"",
                0,
                accepted_ms,
            ));
        }
        let dead = self.policy.dead.clone();
        let written = tokio::task::spawn_blocking(move || dead.append(&letters))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)));
        if let Err(e) = written {
            tracing::error!(error = %e, path = %self.policy.dead.path().display(), "cannot write dead letters for invalid requests");
        }
    }

    /// Why [`Engine::submit`] would refuse deliveries right now (the
    /// collector then answers `503`), or `None` when it takes them. Read by
    /// `/readyz`. NATS publish failures are only known per request and are
    /// not reported here.
    pub fn refusing(&self) -> Option<String> {
        match &self.store {
            Store::Memory => self
                .queues
                .iter()
                .find(|q| q.memory_full())
                .map(|q| format!("delivery queue of tool {} is full", q.tool)),
            Store::Spool(spool) if spool.has_failed() => {
                Some("the spool cannot be written".to_string())
            }
            Store::Spool(spool) if spool.is_full() => Some(format!(
                "the spool is full ({} of {} bytes)",
                spool.bytes(),
                spool.max_bytes()
            )),
            _ => None,
        }
    }

    /// Makes sure every configured tool is being delivered, including what
    /// other instances queued for it (NATS: one consumer per tool; the
    /// other stores need nothing).
    pub fn ensure_tools(&self, ids: &[String]) {
        if let Store::Nats(nats) = &self.store {
            nats.ensure_tools(ids);
        }
    }

    /// How each tool's answers are read from now on (tool id → reader), for
    /// the tools of the config just loaded.
    pub fn set_answer_readers(
        &self,
        readers: std::collections::HashMap<String, crate::tools::AnswerReader>,
    ) {
        *self
            .policy
            .answers
            .write()
            .unwrap_or_else(|e| e.into_inner()) = readers;
    }

    /// Sets how each tool batches (`Adapter::batching`; `None`: one request
    /// per delivery), for the config now in force. Deliveries already queued
    /// follow it from their next batch on.
    pub fn set_batching(
        &self,
        tools: impl IntoIterator<Item = (String, Option<Arc<dyn Batching>>)>,
    ) {
        let map = &self.policy.batching;
        let mut keep = Vec::new();
        for (id, batching) in tools {
            if let Some(b) = batching {
                map.insert(id.clone(), b);
                keep.push(id);
            }
        }
        map.retain(|id, _| keep.contains(id));
        self.policy.configured.send_replace(true);
    }

    /// Waits until acks and appends so far are on disk (tests, shutdown).
    pub async fn flush(&self) {
        if let Store::Spool(spool) = &self.store {
            spool.flush().await;
        }
    }

    /// The tool's queue, created (with its worker) on first use.
    fn queue(self: &Engine, tool: &str) -> Arc<ToolQueue> {
        if let Some(q) = self.queues.get(tool) {
            return q.clone();
        }
        self.queues
            .entry(Arc::from(tool))
            .or_insert_with(|| {
                let q = Arc::new(ToolQueue {
                    tool: Arc::from(tool),
                    window: Mutex::new(Window::default()),
                    notify: Notify::new(),
                    refill: Notify::new(),
                    limit: Semaphore::new(self.concurrency),
                    live: Mutex::new(BTreeMap::new()),
                    counters: ToolCounters::default(),
                });
                let store = match &self.store {
                    Store::Memory | Store::Nats(_) => None,
                    Store::Spool(s) => Some(s.clone()),
                };
                if let Some(spool) = &store {
                    self.runtime.spawn(refill(q.clone(), spool.clone()));
                }
                self.runtime
                    .spawn(run_tool(q.clone(), self.policy.clone(), store));
                q
            })
            .clone()
    }

    fn gauges(&self) -> Vec<ToolGauges> {
        if let Store::Nats(nats) = &self.store {
            let mut out = nats.gauges();
            out.sort_by(|a, b| a.tool.cmp(&b.tool));
            return out;
        }
        let now = now_ms();
        let mut out: Vec<ToolGauges> = self
            .queues
            .iter()
            .map(|q| {
                let (owed, front, spilled) = {
                    let w = q.window.lock().unwrap_or_else(|e| e.into_inner());
                    let front = w.jobs.front().map(|j| j.accepted_ms);
                    (w.owed, front, w.spill.as_ref().map(|s| s.oldest_ms))
                };
                let live = q.live.lock().unwrap_or_else(|e| e.into_inner());
                let oldest = front
                    .into_iter()
                    .chain(spilled)
                    .chain(live.values().copied())
                    .min();
                let c = &q.counters;
                ToolGauges {
                    tool: q.tool.to_string(),
                    queued: owed,
                    oldest_age_s: oldest.map_or(0.0, |t| now.saturating_sub(t) as f64 / 1000.0),
                    attempts: c.attempts.load(Ordering::Relaxed),
                    delivered: c.delivered.load(Ordering::Relaxed),
                    retries: c.retries.load(Ordering::Relaxed),
                    dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
                }
            })
            .collect();
        if let Store::Spool(spool) = &self.store {
            self.policy
                .metrics
                .spool_bytes
                .store(spool.bytes(), Ordering::Relaxed);
        }
        out.sort_by(|a, b| a.tool.cmp(&b.tool));
        out
    }
}

impl Engine {
    /// The spool's sink: a record was just written (in sequence order). Its
    /// delivery enters the tool's window, or, when the window is full or
    /// deliveries already wait on disk, stays on disk only.
    fn written(&self, w: spool::Written<'_>) {
        let Some((accepted_ms, tool)) = spool::record::peek_body(w.body) else {
            return;
        };
        let Ok(tool) = std::str::from_utf8(tool) else {
            return;
        };
        self.queue(tool).offer(
            w.seq,
            w.loc,
            accepted_ms,
            job_size(w.body.len()),
            w.delivery,
        );
    }
}

impl ToolQueue {
    /// With the memory backend: no room for another delivery.
    fn memory_full(&self) -> bool {
        let w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        w.jobs.len() >= MEMORY_QUEUE || w.bytes >= MEMORY_QUEUE_BYTES
    }

    /// A delivery just written to the spool at `loc` (see
    /// [`Engine::written`]); `delivery` is `None` when the caller did not
    /// attach it (it is then read back like any on disk).
    fn offer(&self, seq: u64, loc: Loc, accepted_ms: u64, size: usize, delivery: Option<Delivery>) {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        w.owed += 1;
        if let Some(spill) = &mut w.spill {
            spill.last = seq;
            return;
        }
        match delivery {
            Some(delivery) if !w.is_full(WINDOW_ITEMS, WINDOW_BYTES, size) => {
                w.push(Job {
                    seq,
                    accepted_ms,
                    size,
                    delivery,
                });
                drop(w);
                self.notify.notify_one();
            }
            _ => {
                w.spill = Some(Spill {
                    cursor: loc.into(),
                    last: seq,
                    through: 0,
                    oldest_ms: accepted_ms,
                });
                let low = w.jobs.len() < REFILL_BELOW;
                drop(w);
                if low {
                    self.refill.notify_one();
                }
            }
        }
    }

    /// Counts `job` as taken and not yet settled.
    fn set_live(&self, job: &Job) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job.seq, job.accepted_ms);
    }

    /// A taken job is done with: acknowledged in the spool when `settled`
    /// (else left there for a restart), no longer live.
    fn finish(&self, seq: u64, settled: bool, spool: Option<&Arc<Spool>>) {
        if let (Some(spool), true) = (spool, settled) {
            spool.ack(seq);
        }
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&seq);
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        w.owed = w.owed.saturating_sub(1);
    }

    /// The next job in the window, waiting for one; asks for the window to
    /// be refilled from disk when it runs low.
    async fn next(&self) -> Job {
        loop {
            {
                let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
                let job = w.jobs.pop_front();
                if let Some(job) = &job {
                    w.bytes -= job.size;
                }
                if w.spill.is_some() && w.jobs.len() < REFILL_BELOW {
                    self.refill.notify_one();
                }
                if let Some(job) = job {
                    return job;
                }
            }
            self.notify.notified().await;
        }
    }
}

/// Reads a tool's deliveries that wait on disk back into its window, in
/// order, whenever the window runs low, until none is left on disk only.
async fn refill(queue: Arc<ToolQueue>, spool: Arc<Spool>) {
    let mut acks = Some(ScanCache::default());
    loop {
        queue.refill.notified().await;
        loop {
            let (cursor, items, bytes) = {
                let w = queue.window.lock().unwrap_or_else(|e| e.into_inner());
                let Some(spill) = &w.spill else { break };
                // Full enough in items or in bytes: a scan always returns at
                // least one record, so without the byte test a backlog of
                // big deliveries would fill the window to REFILL_BELOW jobs
                // whatever their size.
                if w.jobs.len() >= REFILL_BELOW || w.bytes >= REFILL_BELOW_BYTES {
                    break;
                }
                // Sizes on disk: a job costs about twice in memory.
                let bytes = WINDOW_BYTES.saturating_sub(w.bytes) / 2;
                (spill.cursor, WINDOW_ITEMS - w.jobs.len(), bytes.max(1))
            };
            let (spool2, tool) = (spool.clone(), queue.tool.clone());
            let mut cache = acks.take().unwrap_or_default();
            let read = tokio::task::spawn_blocking(move || {
                let read = spool2.scan(cursor, &tool, items, bytes, &mut cache);
                (read, cache)
            })
            .await;
            let scanned = match read {
                Ok((Ok(scanned), cache)) => {
                    acks = Some(cache);
                    scanned
                }
                Ok((Err(e), cache)) => {
                    acks = Some(cache);
                    tracing::error!(error = %e, tool = %queue.tool, "cannot read spooled deliveries back; trying again in a second");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(_) => return,
            };
            let found = scanned.records.len();
            let moved = {
                let mut w = queue.window.lock().unwrap_or_else(|e| e.into_inner());
                let Window {
                    jobs, bytes, spill, ..
                } = &mut *w;
                let Some(s) = spill else { break };
                let moved = scanned.next.is_some_and(|n| n != s.cursor);
                for (stored, loc) in scanned.records {
                    let size = job_size(loc.len as usize);
                    *bytes += size;
                    s.oldest_ms = stored.accepted_ms;
                    jobs.push_back(Job {
                        seq: stored.seq,
                        accepted_ms: stored.accepted_ms,
                        size,
                        delivery: stored.delivery,
                    });
                }
                if let Some(next) = scanned.next {
                    s.cursor = next;
                }
                s.through = s.through.max(scanned.through);
                if s.through >= s.last {
                    // Read up to the last one left on disk: what is written
                    // next enters the window.
                    *spill = None;
                }
                moved
            };
            if found > 0 {
                queue.notify.notify_one();
            }
            if found == 0 && !moved {
                // Nothing to read yet (it is being written): look again soon.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Live places a job takes.
fn places(job: &Job) -> u32 {
    (1 + job.size / LIVE_UNIT).min(LIVE_PLACES as usize) as u32
}

/// Takes a tool's jobs in order and runs each until it is settled, within
/// `LIVE_PLACES` (bounded in items and bytes); each request holds one of the
/// tool's `concurrency_per_tool` permits only while it is in flight. A tool
/// whose destination batches has its jobs grouped first ([`gather`]).
async fn run_tool(queue: Arc<ToolQueue>, policy: Arc<Policy>, spool: Option<Arc<Spool>>) {
    let live = Arc::new(Semaphore::new(LIVE_PLACES as usize));
    policy.configured().await;
    loop {
        let job = queue.next().await;
        let Ok(place) = live.clone().acquire_many_owned(places(&job)).await else {
            return;
        };
        queue.set_live(&job);
        match policy.batching_of(&queue.tool) {
            Some(batching) => {
                gather(&queue, &policy, spool.as_ref(), &live, batching, job, place).await
            }
            None => {
                let (queue, policy, spool) = (queue.clone(), policy.clone(), spool.clone());
                tokio::spawn(async move {
                    let seq = job.seq;
                    let settled = run_job(&queue, &policy, job).await;
                    queue.finish(seq, settled, spool.as_ref());
                    drop(place);
                });
            }
        }
    }
}

/// A job taken for a batch, with its place among the live ones.
struct Taken {
    seq: u64,
    accepted_ms: u64,
    delivery: Delivery,
    _place: OwnedSemaphorePermit,
}

/// Groups `first` and whatever else arrives within the linger into batches
/// by key ([`batch::Grouper`]), starting each batch as it fills and the rest
/// when the linger is over (or when the live places run out).
async fn gather(
    queue: &Arc<ToolQueue>,
    policy: &Arc<Policy>,
    spool: Option<&Arc<Spool>>,
    live: &Arc<Semaphore>,
    batching: Arc<dyn Batching>,
    first: Job,
    place: OwnedSemaphorePermit,
) {
    let mut limits = batching.limits();
    if let Some(cap) = policy.max_batch_events {
        limits.max_events = limits.max_events.min(cap);
    }
    let mut grouper = batch::Grouper::new(limits);
    let deadline = tokio::time::Instant::now() + policy.linger;
    let mut next = Some((first, place));
    loop {
        if let Some((job, place)) = next.take() {
            let taken = Taken {
                seq: job.seq,
                accepted_ms: job.accepted_ms,
                delivery: job.delivery,
                _place: place,
            };
            let key = batch::key_of(&*batching, &taken.delivery);
            let size = batch::size_of(&taken.delivery);
            let ready = match key {
                Some(key) => grouper.add(key, taken, size),
                None => Some(vec![taken]),
            };
            if let Some(ready) = ready {
                spawn_batch(queue, policy, spool, &batching, ready);
            }
        }
        // The next job, if one comes within the linger.
        let Ok(job) = tokio::time::timeout_at(deadline, queue.next()).await else {
            break;
        };
        let want = places(&job);
        let place = match live.clone().try_acquire_many_owned(want) {
            Ok(place) => place,
            Err(_) => {
                // The live places are taken, some by the batches being
                // grouped: send those now rather than wait for ourselves.
                for ready in grouper.drain() {
                    spawn_batch(queue, policy, spool, &batching, ready);
                }
                let Ok(place) = live.clone().acquire_many_owned(want).await else {
                    return;
                };
                place
            }
        };
        queue.set_live(&job);
        next = Some((job, place));
    }
    for ready in grouper.drain() {
        spawn_batch(queue, policy, spool, &batching, ready);
    }
}

/// Runs a batch to its end in its own task: attempts, each member settled
/// as its outcome says, the others retried together after their backoff.
fn spawn_batch(
    queue: &Arc<ToolQueue>,
    policy: &Arc<Policy>,
    spool: Option<&Arc<Spool>>,
    batching: &Arc<dyn Batching>,
    members: Vec<Taken>,
) {
    let (queue, policy, spool, batching) = (
        queue.clone(),
        policy.clone(),
        spool.cloned(),
        batching.clone(),
    );
    tokio::spawn(async move {
        let mut members = members;
        let mut attempt = 1;
        loop {
            let outcomes = {
                let list: Vec<batch::Member<'_>> = members
                    .iter()
                    .map(|m| batch::Member {
                        delivery: &m.delivery,
                        attempt,
                        accepted_ms: m.accepted_ms,
                    })
                    .collect();
                policy
                    .attempt_batch(&queue.counters, &*batching, &queue.limit, &list)
                    .await
            };
            let mut wait = Duration::ZERO;
            let mut again = Vec::new();
            for (m, next) in members.into_iter().zip(outcomes) {
                match next {
                    Next::Settled => queue.finish(m.seq, true, spool.as_ref()),
                    Next::RetryIn(delay) => {
                        wait = wait.max(delay);
                        again.push(m);
                    }
                }
            }
            if again.is_empty() {
                return;
            }
            tokio::time::sleep(wait).await;
            members = again;
            attempt += 1;
        }
    });
}

/// Runs one job to its end: `true` when settled.
async fn run_job(queue: &ToolQueue, policy: &Policy, job: Job) -> bool {
    let (accepted_ms, delivery) = (job.accepted_ms, job.delivery);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let next = {
            let Ok(_permit) = queue.limit.acquire().await else {
                return false;
            };
            policy
                .attempt(&queue.counters, &delivery, attempt, accepted_ms)
                .await
        };
        match next {
            Next::Settled => return true,
            Next::RetryIn(delay) => tokio::time::sleep(delay).await,
        }
    }
}

impl Policy {
    /// Waits (a few seconds at most) until the config has said how tools
    /// batch.
    pub async fn configured(&self) {
        let mut known = self.configured.subscribe();
        let _ = tokio::time::timeout(CONFIG_WAIT, known.wait_for(|c| *c)).await;
    }

    /// How `tool` batches, if its destination does.
    pub fn batching_of(&self, tool: &str) -> Option<Arc<dyn Batching>> {
        self.batching.get(tool).map(|b| b.clone())
    }

    /// Makes attempt number `attempt` (from 1) and decides what follows;
    /// the attempt goes to the trail and the metrics.
    pub async fn attempt(
        &self,
        counters: &ToolCounters,
        d: &Delivery,
        attempt: u32,
        accepted_ms: u64,
    ) -> Next {
        let started = std::time::Instant::now();
        let result = self.sender.attempt(d).await;
        let latency = started.elapsed();
        self.conclude(counters, d, attempt, accepted_ms, &result, latency)
            .await
    }

    /// What follows attempt number `attempt` at `d`, which came to `result`
    /// after `latency` (its own request's, or the batch's that carried it):
    /// read by the adapter, counted, logged, settled, retried or
    /// dead-lettered, and reported to the trail. Every attempt of every
    /// delivery, alone or batched, ends here.
    #[allow(clippy::too_many_arguments)]
    pub async fn conclude(
        &self,
        counters: &ToolCounters,
        d: &Delivery,
        attempt: u32,
        accepted_ms: u64,
        result: &Attempt,
        latency: Duration,
    ) -> Next {
        let mut result = result.clone();
        self.read_answer(d, &mut result);
        let next = self
            .settle(counters, d, attempt, accepted_ms, &result)
            .await;
        self.metrics
            .attempt_done(d, attempt, &result, latency, &next);
        next
    }

    /// Lets the tool's adapter judge its destination's answer where the
    /// status alone cannot (errors inside a `200` body, throttling codes):
    /// its verdict replaces the status-based one, keeping a `Retry-After`.
    pub fn read_answer(&self, d: &Delivery, result: &mut Attempt) {
        let Some(status) = result.status else { return };
        let reader = self
            .answers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&d.tool)
            .copied();
        if let Some(verdict) = reader.and_then(|read| read(status, &result.response)) {
            result.verdict = match (verdict, &result.verdict) {
                (Verdict::Retry { why, after: None }, Verdict::Retry { after, .. }) => {
                    Verdict::Retry { why, after: *after }
                }
                (v, _) => v,
            };
        }
    }

    /// What follows attempt number `attempt` of `d`, which came to `result`.
    async fn settle(
        &self,
        counters: &ToolCounters,
        d: &Delivery,
        attempt: u32,
        accepted_ms: u64,
        result: &Attempt,
    ) -> Next {
        Metrics::add(&self.metrics.delivery_attempts, 1);
        counters.attempts.fetch_add(1, Ordering::Relaxed);
        // Logged once per failed attempt: the destination's own words
        // (Meta's `error.message`…), never a credential.
        let error = crate::metrics::attempt_error(d, result);
        let why = match &result.verdict {
            Verdict::Done => {
                Metrics::add(&self.metrics.deliveries_delivered, 1);
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(tool = %d.tool, event_id = %d.event_id, attempt, "delivered");
                return Next::Settled;
            }
            Verdict::Reject(why) => {
                let reason = crate::trail::redact_secrets(why, &d.secrets);
                tracing::error!(tool = %d.tool, event_id = %d.event_id, attempt, status = result.status, error = error.as_deref(), reason, "delivery rejected by the destination; moved to the dead letters");
                why.clone()
            }
            Verdict::Retry { why, after } => {
                let age = Duration::from_millis(now_ms().saturating_sub(accepted_ms));
                match self.backoff.next_delay(attempt, age, *after) {
                    Some(delay) => {
                        Metrics::add(&self.metrics.delivery_retries, 1);
                        counters.retries.fetch_add(1, Ordering::Relaxed);
                        let reason = crate::trail::redact_secrets(why, &d.secrets);
                        tracing::info!(tool = %d.tool, event_id = %d.event_id, attempt, status = result.status, error = error.as_deref(), reason, delay_ms = delay.as_millis() as u64, "delivery will be retried");
                        return Next::RetryIn(delay);
                    }
                    None => {
                        tracing::error!(tool = %d.tool, event_id = %d.event_id, attempt, status = result.status, error = error.as_deref(), "delivery out of retries; moved to the dead letters");
                        format!("gave up after {attempt} attempts: {why}")
                    }
                }
            }
        };
        let mut letter = DeadLetter {
            id: uuid::Uuid::now_v7().to_string(),
            tool: d.tool.clone(),
            event_id: d.event_id.clone(),
            delivery: d.clone(),
            reason: why,
            status: result.status,
            response: result.response.clone(),
            attempts: attempt,
            accepted_ms,
            failed_ms: now_ms(),
            redacted: false,
        };
        // No credential is kept in the store (an error may quote the URL).
        letter.redact();
        let dead = self.dead.clone();
        let written =
            tokio::task::spawn_blocking(move || dead.append(std::slice::from_ref(&letter)))
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
        match written {
            Ok(()) => {
                Metrics::add(&self.metrics.deliveries_failed, 1);
                counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                Next::Settled
            }
            Err(e) => {
                // Kept (and retried later) rather than lost.
                tracing::error!(error = %e, path = %self.dead.path().display(), "cannot write a dead letter; the delivery stays queued");
                Next::RetryIn(self.backoff.cap)
            }
        }
    }
}

/// Feeds `deadletter replay` files into the engine: at start, then every
/// second. A file is deleted only once its deliveries are stored.
async fn import_inbox(engine: std::sync::Weak<Engine>) {
    let mut tick = tokio::time::interval(INBOX_POLL);
    loop {
        tick.tick().await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let dir = engine.spool_dir.clone();
        let files = match tokio::task::spawn_blocking(move || inbox::pending(&dir)).await {
            Ok(Ok(files)) => files,
            Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => continue,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the replay inbox");
                continue;
            }
            Err(_) => continue,
        };
        for (path, deliveries) in files {
            let n = deliveries.len();
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
            if engine
                .submit_from(deliveries, name.as_deref())
                .await
                .is_err()
            {
                break; // full: try again next tick
            }
            engine.flush().await;
            if let Err(e) = inbox::settle(&path) {
                tracing::warn!(error = %e, file = %path.display(), "cannot remove or set aside an imported replay file");
            }
            tracing::info!(deliveries = n, file = %path.display(), "dead letters replayed");
        }
    }
}

/// One TLS provider for every outgoing HTTPS request: ring, which builds with
/// a plain C compiler (aws-lc needs more). Installing twice is harmless.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
