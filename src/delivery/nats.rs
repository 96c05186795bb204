//! `backend = "nats"` (SPEC §11): deliveries go to a NATS JetStream stream
//! that any number of tagproxy instances share.
//!
//! - One stream, [`STREAM`], on the subjects `tagproxy.deliveries.>`, file
//!   storage, **work-queue** retention: a message is removed as soon as it
//!   is acknowledged, so the stream holds exactly what is still owed (a
//!   limits stream would keep delivered events until they age out, and an
//!   interest stream drops what arrives while no consumer exists yet).
//!   Every instance creates it when it is missing and brings the settings
//!   tagproxy owns (subjects, duplicate window, age and size limits) up to
//!   date; replicas, placement and the like are left as the operator set
//!   them (`nats stream edit TAGPROXY --replicas 3`).
//! - [`Nats::submit`] publishes each delivery to
//!   `tagproxy.deliveries.<tool>` with `Nats-Msg-Id` =
//!   `<event id>:<tool>:<n>` (`n`: its index among that event's deliveries
//!   to that tool) and waits for every publish ack before the collector
//!   answers `200`. A browser retry of the same batch gets the same ids, so
//!   JetStream stores it once, whichever instance it reaches.
//! - One durable pull consumer per tool, `tagproxy-<tool>`, shared by every
//!   instance: each instance fetches only as many messages as it has free
//!   request slots (`concurrency_per_tool`), makes one attempt per message
//!   (attempt number = JetStream's delivery count, age from the
//!   `Tagproxy-Accepted-Ms` header) and then acks it (delivered or
//!   dead-lettered) or naks it with the backoff delay. An instance that
//!   dies mid-attempt leaves its messages unacked; JetStream hands them to
//!   another instance after `ack_wait`.
//! - A tool whose destination batches ([`super::batch`]) takes, per free
//!   slot, the first message as it comes and whatever else is there after
//!   `batch_linger_ms` (up to the batch limit), joins those that share a
//!   key and acks or naks each message on its own outcome.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream, AckKind};
use async_nats::HeaderMap;
use dashmap::DashMap;
use futures_util::StreamExt as _;
use tokio::sync::Semaphore;

use super::{Next, Policy, ToolCounters};
use crate::config::DeliveryConfig;
use crate::event::now_ms;
use crate::metrics::ToolGauges;
use crate::tools::Delivery;

/// The stream's name.
pub const STREAM: &str = "TAGPROXY";
/// Subjects are `tagproxy.deliveries.<tool token>`.
pub const SUBJECT_PREFIX: &str = "tagproxy.deliveries";
/// When the collector accepted the delivery (Unix ms): the age that
/// `max_age_s` is measured from.
pub const ACCEPTED_HEADER: &str = "Tagproxy-Accepted-Ms";
/// Consumer names are `tagproxy-<tool token>`.
const CONSUMER_PREFIX: &str = "tagproxy-";

/// How long JetStream remembers a `Nats-Msg-Id`. Browsers retry a batch
/// within ~15 s (and each instance also remembers event ids for 12–24 h);
/// the window covers retries that reach another instance or a restarted
/// one, while the server keeps one entry per message in memory for this
/// long.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(3600);
/// Messages older than `max_age_s` plus this are dropped by the stream.
/// The retry policy gives up on them at `max_age_s` already; this only
/// bounds what no instance consumes any more (a tool removed from every
/// config).
const AGE_GRACE: Duration = Duration::from_secs(86_400);
/// How long `connect` keeps trying at start before tagproxy gives up.
const CONNECT_PATIENCE: Duration = Duration::from_secs(5);
/// JetStream API requests and publish acks.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole `submit` (all publishes and their acks).
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one pull request waits for messages.
const FETCH_WAIT: Duration = Duration::from_secs(5);
/// How often queue depth and age are read from the server.
const DEPTH_EVERY: Duration = Duration::from_secs(5);
/// Pause after a consumer error before trying again.
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// Unacknowledged messages per tool consumer, as a multiple of
/// `concurrency_per_tool` (room for several instances at full concurrency,
/// plus messages waiting on a retry delay).
const ACK_PENDING_PER_SLOT: i64 = 8;

/// The JetStream side of the engine.
pub struct Nats {
    js: jetstream::Context,
    stream: stream::Stream,
    policy: Arc<Policy>,
    concurrency: usize,
    ack_wait: Duration,
    max_ack_pending: i64,
    tools: DashMap<String, Arc<NatsTool>>,
}

/// One tool's consumer and counters.
struct NatsTool {
    tool: String,
    subject: String,
    durable: String,
    counters: ToolCounters,
    /// Deliveries owed (pending + unacked), as last read from the server.
    depth: AtomicU64,
    /// `accepted_ms` of the oldest owed delivery; 0: none.
    oldest_ms: AtomicU64,
}

impl Nats {
    /// Connects (trying for a few seconds), then creates or updates the
    /// stream. Errors name `nats_url` (without its password).
    pub async fn connect(config: &DeliveryConfig, policy: Arc<Policy>) -> io::Result<Arc<Nats>> {
        let shown = redact(&config.nats_url);
        let servers: Vec<String> = config
            .nats_url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if servers.is_empty() {
            return Err(io::Error::other("[delivery] nats_url is empty"));
        }
        let started = Instant::now();
        let client = loop {
            let options = async_nats::ConnectOptions::new()
                .name("tagproxy")
                .connection_timeout(Duration::from_secs(2))
                .event_callback(|event| async move {
                    match event {
                        async_nats::Event::Connected => tracing::info!("NATS connected"),
                        async_nats::Event::Disconnected => {
                            tracing::warn!("NATS disconnected; reconnecting")
                        }
                        other => tracing::warn!(event = %other, "NATS"),
                    }
                });
            match options.connect(servers.clone()).await {
                Ok(client) => break client,
                Err(e) if started.elapsed() < CONNECT_PATIENCE => {
                    tracing::warn!(url = %shown, error = %e, "cannot connect to NATS yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    return Err(io::Error::other(format!(
                        "cannot connect to NATS at {shown} ([delivery] nats_url): {e}"
                    )))
                }
            }
        };
        let js = jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client.clone());
        let stream = ensure_stream(&js, &client, config)
            .await
            .map_err(|e| io::Error::other(format!("NATS at {shown}: stream {STREAM}: {e}")))?;
        tracing::info!(url = %shown, stream = STREAM, "delivery through NATS JetStream");
        let timeout = Duration::from_millis(config.timeout_ms);
        Ok(Arc::new(Nats {
            js,
            stream,
            policy,
            concurrency: config.concurrency_per_tool as usize,
            // An attempt ends within `timeout_ms`; JetStream waits longer
            // before it gives the message to someone else.
            ack_wait: ack_wait_for(timeout),
            max_ack_pending: max_ack_pending_for(config.concurrency_per_tool),
            tools: DashMap::new(),
        }))
    }

    /// Publishes deliveries and waits for every ack. `replay`: the inbox
    /// file they come from (`deadletter replay`), so their message ids
    /// differ from the originals' (which JetStream may still remember).
    pub async fn submit(
        self: &Arc<Self>,
        deliveries: &[Delivery],
        replay: Option<&str>,
    ) -> Result<(), String> {
        let mut index: HashMap<(&str, &str), u32> = HashMap::new();
        let mut messages = Vec::with_capacity(deliveries.len());
        let accepted_ms = now_ms().to_string();
        for (i, d) in deliveries.iter().enumerate() {
            let token = subject_token(&d.tool);
            let id = match replay {
                Some(file) => format!("replay:{}:{i}", header_safe(file)),
                None => {
                    let n = index.entry((&d.event_id, &d.tool)).or_insert(0);
                    let id = format!("{}:{token}:{n}", header_safe(&d.event_id));
                    *n += 1;
                    id
                }
            };
            let payload = serde_json::to_vec(d).map_err(|e| e.to_string())?;
            let mut headers = HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
            headers.insert(ACCEPTED_HEADER, accepted_ms.as_str());
            messages.push((format!("{SUBJECT_PREFIX}.{token}"), headers, payload));
            self.ensure_tool(&d.tool);
        }
        let publish = async {
            let mut acks = Vec::with_capacity(messages.len());
            for (subject, headers, payload) in messages {
                let ack = self
                    .js
                    .publish_with_headers(subject, headers, payload.into())
                    .await
                    .map_err(|e| format!("publish: {e}"))?;
                acks.push(ack);
            }
            let mut duplicates = 0;
            for ack in futures_util::future::join_all(
                acks.into_iter().map(std::future::IntoFuture::into_future),
            )
            .await
            {
                let ack = ack.map_err(|e| format!("publish ack: {e}"))?;
                duplicates += usize::from(ack.duplicate);
            }
            if duplicates > 0 {
                tracing::debug!(
                    duplicates,
                    "deliveries already in the stream (a retried batch)"
                );
            }
            Ok(())
        };
        tokio::time::timeout(SUBMIT_TIMEOUT, publish)
            .await
            .unwrap_or_else(|_| Err("timed out waiting for publish acks".into()))
    }

    /// Starts consuming for these tools (those not yet started).
    pub fn ensure_tools(self: &Arc<Self>, ids: &[String]) {
        for id in ids {
            self.ensure_tool(id);
        }
    }

    fn ensure_tool(self: &Arc<Self>, id: &str) {
        if self.tools.contains_key(id) {
            return;
        }
        let token = subject_token(id);
        let mut created = None;
        self.tools.entry(id.to_string()).or_insert_with(|| {
            let tool = Arc::new(NatsTool {
                tool: id.to_string(),
                subject: format!("{SUBJECT_PREFIX}.{token}"),
                durable: format!("{CONSUMER_PREFIX}{token}"),
                counters: ToolCounters::default(),
                depth: AtomicU64::new(0),
                oldest_ms: AtomicU64::new(0),
            });
            created = Some(tool.clone());
            tool
        });
        if let Some(tool) = created {
            tokio::spawn(consume(self.clone(), tool.clone()));
            tokio::spawn(watch_depth(Arc::downgrade(self), tool));
        }
    }

    /// Per-tool gauges for `/metrics`.
    pub fn gauges(&self) -> Vec<ToolGauges> {
        let now = now_ms();
        self.tools
            .iter()
            .map(|t| {
                let c = &t.counters;
                let oldest = t.oldest_ms.load(Ordering::Relaxed);
                ToolGauges {
                    tool: t.tool.clone(),
                    queued: t.depth.load(Ordering::Relaxed),
                    oldest_age_s: if oldest == 0 {
                        0.0
                    } else {
                        now.saturating_sub(oldest) as f64 / 1000.0
                    },
                    attempts: c.attempts.load(Ordering::Relaxed),
                    delivered: c.delivered.load(Ordering::Relaxed),
                    retries: c.retries.load(Ordering::Relaxed),
                    dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// The tool's durable consumer, created or brought up to date.
    async fn consumer(&self, tool: &NatsTool) -> Result<jetstream::consumer::PullConsumer, String> {
        let config = pull::Config {
            durable_name: Some(tool.durable.clone()),
            description: Some(format!("tagproxy deliveries to `{}`", tool.tool)),
            filter_subject: tool.subject.clone(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_ack_pending: self.max_ack_pending,
            // Unlimited: the retry policy decides when to give up.
            max_deliver: -1,
            ..Default::default()
        };
        match self.stream.create_consumer(config).await {
            Ok(c) => Ok(c),
            Err(create) => match self.stream.get_consumer(&tool.durable).await {
                Ok(c) => {
                    if let jetstream::stream::ConsumerErrorKind::JetStream(_) = create.kind() {
                        // It exists with settings this server will not change.
                        tracing::warn!(consumer = %tool.durable, error = %create, "NATS consumer kept with its current settings");
                    } else {
                        // A slow answer (e.g. while the cluster elects a leader).
                        tracing::debug!(consumer = %tool.durable, error = %create, "NATS consumer update not confirmed; using it as it is");
                    }
                    Ok(c)
                }
                Err(_) => Err(create.to_string()),
            },
        }
    }
}

/// Creates the stream, or updates the settings tagproxy owns.
async fn ensure_stream(
    js: &jetstream::Context,
    client: &async_nats::Client,
    config: &DeliveryConfig,
) -> Result<stream::Stream, String> {
    let subjects = format!("{SUBJECT_PREFIX}.>");
    let apply = |c: &mut stream::Config| {
        if !c.subjects.contains(&subjects) {
            c.subjects.push(subjects.clone());
        }
        c.duplicate_window = DUPLICATE_WINDOW;
        c.max_age = Duration::from_secs(config.max_age_s) + AGE_GRACE;
        // Like the spool's limit: past it, publishes fail and the collector
        // answers 503.
        c.max_bytes = i64::try_from(config.spool_max_bytes).unwrap_or(i64::MAX);
        c.discard = stream::DiscardPolicy::New;
    };
    match js.get_stream(STREAM).await {
        Ok(existing) => {
            let current = existing.cached_info().config.clone();
            if current.retention != stream::RetentionPolicy::WorkQueue {
                return Err(format!(
                    "exists with {:?} retention; tagproxy needs a work-queue stream (delete it or rename it)",
                    current.retention
                ));
            }
            let mut wanted = current.clone();
            apply(&mut wanted);
            if wanted != current {
                js.update_stream(&wanted)
                    .await
                    .map_err(|e| format!("update: {e}"))?;
                tracing::info!(stream = STREAM, "NATS stream settings updated");
            }
            Ok(existing)
        }
        Err(e)
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            let mut wanted = stream::Config {
                name: STREAM.into(),
                description: Some("tagproxy deliveries owed (SPEC §11)".into()),
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                // Three copies when the server is part of a cluster.
                num_replicas: if client.server_info().cluster.is_some() {
                    3
                } else {
                    1
                },
                ..Default::default()
            };
            apply(&mut wanted);
            let created = match js.create_stream(wanted.clone()).await {
                Ok(s) => Ok(s),
                Err(e) if wanted.num_replicas > 1 => {
                    tracing::warn!(error = %e, "cannot create the NATS stream with 3 replicas; using 1");
                    wanted.num_replicas = 1;
                    js.create_stream(wanted).await
                }
                Err(e) => Err(e),
            };
            match created {
                Ok(s) => {
                    tracing::info!(stream = STREAM, "NATS stream created");
                    Ok(s)
                }
                // Another instance created it meanwhile.
                Err(e) => js
                    .get_stream(STREAM)
                    .await
                    .map_err(|_| format!("create: {e}")),
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Fetches the tool's messages as request slots free up and runs each; runs
/// as long as the process, surviving server restarts and deleted consumers.
async fn consume(nats: Arc<Nats>, tool: Arc<NatsTool>) {
    let slots = Arc::new(Semaphore::new(nats.concurrency));
    nats.policy.configured().await;
    let mut failures = 0u32;
    loop {
        let consumer = match nats.consumer(&tool).await {
            Ok(c) => {
                failures = 0;
                c
            }
            Err(e) => {
                failures += 1;
                // Quietly while NATS is away (reconnects are logged).
                if failures <= 3 {
                    tracing::warn!(tool = %tool.tool, error = %e, "cannot set up the NATS consumer; retrying");
                }
                tokio::time::sleep(ERROR_PAUSE * failures.min(10)).await;
                continue;
            }
        };
        loop {
            if let Some(batching) = nats.policy.batching_of(&tool.tool) {
                match fetch_batch(&nats, &tool, &consumer, &*batching, &slots).await {
                    Ok(true) => continue,
                    Ok(false) => return,
                    Err(()) => break,
                }
            }
            // Ask for as many messages as there are free slots (at least
            // one): nothing fetched waits here while its ack_wait runs.
            let Ok(first) = slots.clone().acquire_owned().await else {
                return;
            };
            let mut permits = vec![first];
            while let Ok(p) = slots.clone().try_acquire_owned() {
                permits.push(p);
            }
            let batch = consumer
                .batch()
                .max_messages(permits.len())
                .expires(FETCH_WAIT)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(tool = %tool.tool, error = %e, "NATS pull request failed");
                    tokio::time::sleep(ERROR_PAUSE).await;
                    break;
                }
            };
            let mut failed = false;
            while let Some(item) = batch.next().await {
                match item {
                    Ok(msg) => {
                        let permit = match permits.pop() {
                            Some(p) => p,
                            None => match slots.clone().acquire_owned().await {
                                Ok(p) => p,
                                Err(_) => return,
                            },
                        };
                        let (nats, tool) = (nats.clone(), tool.clone());
                        tokio::spawn(async move {
                            handle(&nats, &tool, msg).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        let text = e.to_string();
                        if text.contains("MaxAckPending") {
                            tracing::debug!(tool = %tool.tool, "NATS consumer at max_ack_pending");
                        } else {
                            tracing::warn!(tool = %tool.tool, error = %text, "NATS pull failed");
                            failed = true;
                        }
                        tokio::time::sleep(ERROR_PAUSE).await;
                        break;
                    }
                }
            }
            if failed {
                // Set the consumer up again (it may have been deleted).
                break;
            }
        }
    }
}

/// For a batching tool: waits for one message, then takes what else is
/// there after the linger (up to the batch limit) and runs them as batches
/// in a task holding one slot. `Ok(false)`: shutting down; `Err`: set the
/// consumer up again.
async fn fetch_batch(
    nats: &Arc<Nats>,
    tool: &Arc<NatsTool>,
    consumer: &jetstream::consumer::PullConsumer,
    batching: &dyn super::Batching,
    slots: &Arc<Semaphore>,
) -> Result<bool, ()> {
    let Ok(permit) = slots.clone().acquire_owned().await else {
        return Ok(false);
    };
    let mut limits = batching.limits();
    if let Some(cap) = nats.policy.max_batch_events {
        limits.max_events = limits.max_events.min(cap);
    }
    let mut msgs = Vec::new();
    let first = consumer
        .batch()
        .max_messages(1)
        .expires(FETCH_WAIT)
        .messages()
        .await;
    collect(tool, first, &mut msgs).await?;
    if msgs.is_empty() {
        return Ok(true);
    }
    let room = limits.max_events.saturating_sub(1);
    if room > 0 {
        tokio::time::sleep(nats.policy.linger).await;
        let rest = consumer.fetch().max_messages(room).messages().await;
        collect(tool, rest, &mut msgs).await?;
    }
    let (nats, tool) = (nats.clone(), tool.clone());
    tokio::spawn(async move {
        handle_batch(&nats, &tool, limits, msgs).await;
        drop(permit);
    });
    Ok(true)
}

/// Adds a pull request's messages to `out`; `Err` when the pull failed.
async fn collect(
    tool: &NatsTool,
    batch: Result<jetstream::consumer::pull::Batch, jetstream::consumer::pull::BatchError>,
    out: &mut Vec<jetstream::Message>,
) -> Result<(), ()> {
    let mut batch = match batch {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(tool = %tool.tool, error = %e, "NATS pull request failed");
            tokio::time::sleep(ERROR_PAUSE).await;
            return Err(());
        }
    };
    while let Some(item) = batch.next().await {
        match item {
            Ok(msg) => out.push(msg),
            Err(e) => {
                let text = e.to_string();
                if text.contains("MaxAckPending") {
                    tracing::debug!(tool = %tool.tool, "NATS consumer at max_ack_pending");
                    tokio::time::sleep(ERROR_PAUSE).await;
                    return Ok(());
                }
                tracing::warn!(tool = %tool.tool, error = %text, "NATS pull failed");
                tokio::time::sleep(ERROR_PAUSE).await;
                return Err(());
            }
        }
    }
    Ok(())
}

/// Runs fetched messages of a batching tool: grouped by key, one attempt
/// per batch, then each message acked or naked on its own outcome.
async fn handle_batch(
    nats: &Nats,
    tool: &NatsTool,
    limits: super::Limits,
    msgs: Vec<jetstream::Message>,
) {
    let Some(batching) = nats.policy.batching_of(&tool.tool) else {
        for msg in msgs {
            handle(nats, tool, msg).await;
        }
        return;
    };
    let mut grouper = super::batch::Grouper::new(limits);
    let mut ready = Vec::new();
    for msg in msgs {
        let Some((delivery, attempt, accepted_ms)) = decode(tool, &msg).await else {
            continue;
        };
        let size = super::batch::size_of(&delivery);
        let item = (msg, delivery, attempt, accepted_ms);
        match super::batch::key_of(&*batching, &item.1) {
            Some(key) => ready.extend(grouper.add(key, item, size)),
            None => ready.push(vec![item]),
        }
    }
    ready.extend(grouper.drain());
    let limit = Semaphore::new(nats.concurrency);
    let runs = ready.iter().map(|group| {
        let (batching, limit) = (&batching, &limit);
        async move {
            let members: Vec<super::batch::Member<'_>> = group
                .iter()
                .map(|(_, d, attempt, accepted_ms)| super::batch::Member {
                    delivery: d,
                    attempt: *attempt,
                    accepted_ms: *accepted_ms,
                })
                .collect();
            let outcomes = nats
                .policy
                .attempt_batch(&tool.counters, &**batching, limit, &members)
                .await;
            for ((msg, d, _, _), next) in group.iter().zip(outcomes) {
                settle(tool, msg, d, next).await;
            }
        }
    });
    futures_util::future::join_all(runs).await;
}

/// A message's delivery, attempt number (JetStream's delivery count) and
/// `accepted_ms`; `None` (and the message terminated) when unreadable.
async fn decode(tool: &NatsTool, msg: &jetstream::Message) -> Option<(Delivery, u32, u64)> {
    let (attempt, published_ms) = match msg.info() {
        Ok(info) => (
            u32::try_from(info.delivered).unwrap_or(u32::MAX).max(1),
            u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
        ),
        Err(_) => (1, now_ms()),
    };
    let accepted_ms = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(ACCEPTED_HEADER))
        .and_then(|v| v.as_str().parse::<u64>().ok())
        .unwrap_or(published_ms);
    match serde_json::from_slice(&msg.payload) {
        Ok(d) => Some((d, attempt, accepted_ms)),
        Err(e) => {
            tracing::error!(tool = %tool.tool, subject = %msg.subject, error = %e, "unreadable message in the NATS stream; dropped");
            let _ = msg.ack_with(AckKind::Term).await;
            None
        }
    }
}

/// Acks (settled) or naks with the backoff delay.
async fn settle(tool: &NatsTool, msg: &jetstream::Message, delivery: &Delivery, next: Next) {
    let acked = match next {
        Next::Settled => msg.double_ack().await,
        Next::RetryIn(delay) => msg.ack_with(AckKind::Nak(Some(delay))).await,
    };
    if let Err(e) = acked {
        // JetStream hands it out again after ack_wait: at least once.
        tracing::warn!(tool = %tool.tool, event_id = %delivery.event_id, error = %e, "cannot acknowledge a NATS message; it will be attempted again");
    }
}

/// One attempt at one message, then ack or nak.
async fn handle(nats: &Nats, tool: &NatsTool, msg: jetstream::Message) {
    let Some((delivery, attempt, accepted_ms)) = decode(tool, &msg).await else {
        return;
    };
    let next = nats
        .policy
        .attempt(&tool.counters, &delivery, attempt, accepted_ms)
        .await;
    settle(tool, &msg, &delivery, next).await;
}

/// Keeps the tool's depth and oldest-age gauges current.
async fn watch_depth(nats: std::sync::Weak<Nats>, tool: Arc<NatsTool>) {
    loop {
        let Some(nats) = nats.upgrade() else {
            return;
        };
        if let Ok(info) = nats.stream.consumer_info(&tool.durable).await {
            let owed = info.num_pending + info.num_ack_pending as u64;
            tool.depth.store(owed, Ordering::Relaxed);
            let oldest = if owed == 0 {
                0
            } else {
                // Work-queue stream: the first message left on the subject
                // is the oldest not yet settled.
                match nats
                    .stream
                    .get_first_raw_message_by_subject(&tool.subject, 1)
                    .await
                {
                    Ok(m) => m
                        .headers
                        .get(ACCEPTED_HEADER)
                        .and_then(|v| v.as_str().parse::<u64>().ok())
                        .unwrap_or_else(|| {
                            u64::try_from(m.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
                        }),
                    Err(_) => 0,
                }
            };
            tool.oldest_ms.store(oldest, Ordering::Relaxed);
        }
        drop(nats);
        tokio::time::sleep(DEPTH_EVERY).await;
    }
}

/// A tool id as one subject token (and consumer-name part): letters,
/// digits, `_` and `-` are kept (every valid tool id is just that), any
/// other byte becomes `~xx`, so distinct ids stay distinct.
pub fn subject_token(tool: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(tool.len());
    for b in tool.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "~{b:02x}");
        }
    }
    if out.is_empty() {
        out.push('~');
    }
    out
}

/// Printable ASCII only (a header value must not hold CR/LF).
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect()
}

/// `nats_url` without passwords or tokens, for messages.
fn redact(url: &str) -> String {
    url.split(',')
        .map(|u| {
            let u = u.trim();
            // Credentials end at the last `@`, scheme or not (`u:p@h:4222`).
            let start = u.find("://").map_or(0, |i| i + 3);
            match u[start..].rfind('@') {
                Some(at) => format!("{}***@{}", &u[..start], &u[start + at + 1..]),
                None => u.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// How long JetStream waits for a fetched message's ack before handing it
/// to another consumer: twice the attempt's `timeout`, and at least 10 s
/// more than it (an attempt still running must not be duplicated).
fn ack_wait_for(timeout: Duration) -> Duration {
    (timeout * 2).max(timeout + Duration::from_secs(10))
}

/// How many fetched, unacknowledged messages a tool's consumer may have
/// (JetStream's `max_ack_pending`): [`ACK_PENDING_PER_SLOT`] per slot of
/// `concurrency_per_tool`.
fn max_ack_pending_for(concurrency_per_tool: u32) -> i64 {
    ACK_PENDING_PER_SLOT * i64::from(concurrency_per_tool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_gets_room_for_several_messages_in_flight() {
        assert_eq!(max_ack_pending_for(1), 8);
        assert_eq!(max_ack_pending_for(4), 32);
        assert_eq!(max_ack_pending_for(64), 512);
    }

    #[test]
    fn the_ack_wait_outlasts_an_attempt() {
        let s = Duration::from_secs;
        assert_eq!(ack_wait_for(s(30)), s(60));
        assert_eq!(ack_wait_for(s(10)), s(20));
        assert_eq!(ack_wait_for(s(2)), s(12));
        assert_eq!(ack_wait_for(Duration::ZERO), s(10));
    }

    #[test]
    fn tool_ids_become_distinct_subject_tokens() {
        assert_eq!(subject_token("ga4"), "ga4");
        assert_eq!(subject_token("meta-capi_2"), "meta-capi_2");
        assert_eq!(subject_token("a.b"), "a~2eb");
        assert_eq!(subject_token("a*>"), "a~2a~3e");
        assert_eq!(subject_token("a~2eb"), "a~7e2eb");
        assert_eq!(subject_token(""), "~");
        assert_ne!(subject_token("a.b"), subject_token("a_b"));
    }

    #[test]
    fn urls_lose_their_secrets_in_messages() {
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(
            redact("nats://user:pw@n1:4222, tls://tok@n2:4222"),
            "nats://***@n1:4222,tls://***@n2:4222"
        );
        // Without a scheme (async-nats takes `host:port`), and a password
        // holding `@`.
        assert_eq!(redact("user:pw@n3:4222"), "***@n3:4222");
        assert_eq!(redact("nats://u:p@ss@n4:4222"), "nats://***@n4:4222");
    }

    #[test]
    fn header_values_stay_printable() {
        assert_eq!(header_safe("evt-1:ga4:0"), "evt-1:ga4:0");
        assert_eq!(header_safe("a\r\nb c"), "a__b_c");
    }
}
