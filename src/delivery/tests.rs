//! Unit tests of the engine's own bookkeeping (windows, live places, what
//! follows an attempt) and of the engine run whole on the memory and spool
//! stores with the `console` payload, which needs no destination. The HTTP
//! side is tested end to end by `tests/delivery.rs` and `tests/batching.rs`.

use super::*;
use crate::tools::{HttpRequest, Payload};

fn stdout_delivery(tool: &str, event_id: &str) -> Delivery {
    Delivery::new(
        tool,
        event_id,
        Payload::Stdout(format!("{{\"e\":\"{event_id}\"}}")),
    )
}

fn http_delivery(tool: &str, event_id: &str, secret: &str) -> Delivery {
    let mut d = Delivery::new(
        tool,
        event_id,
        Payload::Http(HttpRequest {
            method: "POST".into(),
            url: format!("https://collect.example/e?key={secret}"),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(br#"{"a":1}"#.to_vec()),
        }),
    );
    d.secrets = vec![secret.to_string()];
    d
}

fn job(seq: u64, size: usize) -> Job {
    Job {
        seq,
        accepted_ms: 1_000 + seq,
        size,
        delivery: stdout_delivery("t", &format!("e{seq}")),
    }
}

fn tool_queue() -> ToolQueue {
    ToolQueue {
        tool: Arc::from("t"),
        window: Mutex::new(Window::default()),
        notify: Notify::new(),
        refill: Notify::new(),
        limit: Semaphore::new(1),
        live: Mutex::new(BTreeMap::new()),
        counters: ToolCounters::default(),
    }
}

fn loc(offset: u64) -> Loc {
    Loc {
        segment: 3,
        offset,
        len: 100,
    }
}

#[test]
fn a_job_costs_twice_its_record_and_a_fixed_part() {
    assert_eq!(job_size(0), 256);
    assert_eq!(job_size(1_000), 2_256);
}

/// One live place per started KiB of a job's size, at least one and at
/// most all of them (a huge job still runs, alone).
#[test]
fn live_places_follow_a_jobs_size() {
    assert_eq!(places(&job(1, 0)), 1);
    assert_eq!(places(&job(1, LIVE_UNIT - 1)), 1);
    assert_eq!(places(&job(1, LIVE_UNIT)), 2);
    assert_eq!(places(&job(1, 10 * LIVE_UNIT + 5)), 11);
    assert_eq!(places(&job(1, usize::MAX / 2)), LIVE_PLACES);
}

/// A window is full at its item count, or when one more job would pass
/// its bytes; an empty window always takes a job, however big.
#[test]
fn a_window_is_full_by_items_or_by_bytes_but_never_empty() {
    let mut w = Window::default();
    assert!(!w.is_full(2, 100, 1_000), "an empty window takes anything");
    w.push(job(1, 60));
    assert_eq!(w.bytes, 60);
    assert!(!w.is_full(2, 100, 40), "60 + 40 fits exactly");
    assert!(w.is_full(2, 100, 41));
    w.push(job(2, 10));
    assert_eq!(w.bytes, 70);
    assert!(w.is_full(2, 1_000, 1), "two items of two");
    assert!(!w.is_full(3, 1_000, 1));
}

#[test]
fn the_memory_queue_is_full_by_items_or_by_bytes() {
    let q = tool_queue();
    assert!(!q.memory_full());
    q.window
        .lock()
        .unwrap()
        .push(job(1, MEMORY_QUEUE_BYTES - 1));
    assert!(!q.memory_full());
    q.window.lock().unwrap().push(job(2, 1));
    assert!(q.memory_full(), "bytes reached");

    let q = tool_queue();
    for seq in 0..MEMORY_QUEUE as u64 - 1 {
        q.window.lock().unwrap().push(job(seq, 1));
    }
    assert!(!q.memory_full());
    q.window.lock().unwrap().push(job(MEMORY_QUEUE as u64, 1));
    assert!(q.memory_full(), "items reached");
}

/// A delivery written to the spool enters the window while it has room;
/// past that it waits on disk, from its own location, and every later one
/// waits on disk too (order is kept), while each is counted as owed.
#[tokio::test]
async fn offers_fill_the_window_then_wait_on_disk_in_order() {
    let q = tool_queue();
    for seq in 1..=WINDOW_ITEMS as u64 {
        q.offer(seq, loc(seq * 100), 7, 10, Some(stdout_delivery("t", "e")));
    }
    {
        let w = q.window.lock().unwrap();
        assert_eq!(w.jobs.len(), WINDOW_ITEMS);
        assert_eq!(w.bytes, WINDOW_ITEMS * 10);
        assert_eq!(w.owed, WINDOW_ITEMS as u64);
        assert!(w.spill.is_none());
    }
    let full = WINDOW_ITEMS as u64 + 1;
    q.offer(full, loc(9_000), 8, 10, Some(stdout_delivery("t", "e")));
    q.offer(full + 1, loc(9_100), 9, 10, Some(stdout_delivery("t", "e")));
    let w = q.window.lock().unwrap();
    assert_eq!(w.jobs.len(), WINDOW_ITEMS, "the window took no more");
    assert_eq!(w.owed, full + 1);
    let spill = w.spill.as_ref().expect("waiting on disk");
    assert_eq!(spill.cursor, Cursor::from(loc(9_000)), "from the first one");
    assert_eq!(spill.last, full + 1, "through the last one");
    assert_eq!(spill.through, 0);
    assert_eq!(spill.oldest_ms, 8);
}

/// A delivery offered without its body (the writer did not attach it) is
/// read back from disk like any other, even into an empty window.
#[tokio::test]
async fn an_offer_without_its_delivery_waits_on_disk() {
    let q = tool_queue();
    q.offer(5, loc(500), 42, 10, None);
    {
        let w = q.window.lock().unwrap();
        assert!(w.jobs.is_empty());
        assert_eq!(w.owed, 1);
        let spill = w.spill.as_ref().unwrap();
        assert_eq!(
            (spill.cursor, spill.last, spill.oldest_ms),
            (loc(500).into(), 5, 42)
        );
    }
    // The refill was asked for: its permit is already there.
    tokio::time::timeout(Duration::from_secs(5), q.refill.notified())
        .await
        .expect("a refill was asked for");
}

/// A window too full in bytes sends a delivery to disk as well, and the
/// refill is not asked for while the window holds enough.
#[tokio::test]
async fn a_window_full_in_bytes_sends_the_next_one_to_disk() {
    let q = tool_queue();
    for seq in 1..=REFILL_BELOW as u64 {
        q.offer(seq, loc(seq), 1, 1, Some(stdout_delivery("t", "e")));
    }
    let big = WINDOW_BYTES; // cannot fit beside the others
    q.offer(1_000, loc(1_000), 2, big, Some(stdout_delivery("t", "e")));
    assert!(q.window.lock().unwrap().spill.is_some());
    let asked = tokio::time::timeout(Duration::from_millis(200), q.refill.notified()).await;
    assert!(asked.is_err(), "the window is not low: no refill yet");
}

/// `next` hands jobs out in order, takes their bytes off the window and
/// asks for a refill once jobs wait on disk and the window runs low;
/// `finish` ends a job's life (no longer live, no longer owed).
#[tokio::test]
async fn next_and_finish_keep_the_books() {
    let q = tool_queue();
    for seq in 1..=3 {
        q.offer(
            seq,
            loc(seq),
            1,
            10 * seq as usize,
            Some(stdout_delivery("t", "e")),
        );
    }
    let first = q.next().await;
    assert_eq!(first.seq, 1);
    let asked = tokio::time::timeout(Duration::from_millis(50), q.refill.notified()).await;
    assert!(asked.is_err(), "nothing waits on disk: no refill");
    assert_eq!(q.window.lock().unwrap().bytes, 20 + 30);
    q.set_live(&first);
    assert_eq!(q.live.lock().unwrap().get(&1), Some(&first.accepted_ms));
    q.finish(1, true, None);
    assert!(q.live.lock().unwrap().is_empty());
    assert_eq!(q.window.lock().unwrap().owed, 2);
    assert_eq!(q.next().await.seq, 2);

    // With jobs on disk and the window low, taking one asks for a refill.
    q.offer(9, loc(9), 1, 10, None);
    let _ = tokio::time::timeout(Duration::from_millis(50), q.refill.notified()).await;
    assert_eq!(q.next().await.seq, 3);
    tokio::time::timeout(Duration::from_secs(5), q.refill.notified())
        .await
        .expect("next asked for a refill");
    // An empty window waits for the next job.
    let waiting = tokio::time::timeout(Duration::from_millis(50), q.next()).await;
    assert!(waiting.is_err());
}

fn policy(data_dir: &std::path::Path, max_attempts: u32) -> Policy {
    Policy {
        sender: Sender::new(Duration::from_secs(1), 1),
        backoff: Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(400),
            max_attempts,
            max_age: Duration::from_secs(3_600),
        },
        metrics: Arc::new(Metrics::default()),
        dead: Arc::new(DeadLetters::new(data_dir)),
        answers: Default::default(),
        batching: DashMap::new(),
        linger: Duration::ZERO,
        max_batch_events: None,
        configured: tokio::sync::watch::Sender::new(false),
    }
}

fn attempt(verdict: Verdict, status: Option<u16>, response: &str) -> Attempt {
    Attempt {
        verdict,
        status,
        response: response.into(),
    }
}

fn retry(after: Option<Duration>) -> Verdict {
    Verdict::Retry {
        why: "HTTP 503".into(),
        after,
    }
}

fn counts(c: &ToolCounters) -> [u64; 4] {
    [
        c.attempts.load(Ordering::Relaxed),
        c.delivered.load(Ordering::Relaxed),
        c.retries.load(Ordering::Relaxed),
        c.dead_lettered.load(Ordering::Relaxed),
    ]
}

/// SPEC §11: a `2xx` settles; a retryable answer waits within the backoff;
/// a rejection, or a retry past `max_attempts`, settles into the dead
/// letters with the reason, status, response and attempts, and never a
/// credential.
#[tokio::test]
async fn what_follows_each_kind_of_answer() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(dir.path(), 3);
    let c = ToolCounters::default();
    let d = http_delivery("t", "ev-1", "s3cr3t");
    let latency = Duration::from_millis(5);

    let done = attempt(Verdict::Done, Some(200), "");
    assert_eq!(
        p.conclude(&c, &d, 1, now_ms(), &done, latency).await,
        Next::Settled
    );
    assert_eq!(counts(&c), [1, 1, 0, 0]);
    assert_eq!(p.metrics.deliveries_delivered.load(Ordering::Relaxed), 1);

    let busy = attempt(retry(None), Some(503), "busy");
    match p.conclude(&c, &d, 1, now_ms(), &busy, latency).await {
        Next::RetryIn(delay) => assert!(delay <= Duration::from_millis(400), "{delay:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(counts(&c), [2, 1, 1, 0]);
    assert_eq!(p.metrics.delivery_retries.load(Ordering::Relaxed), 1);
    assert_eq!(p.dead.count().unwrap(), 0);

    // The third attempt was the last.
    assert_eq!(
        p.conclude(&c, &d, 3, now_ms(), &busy, latency).await,
        Next::Settled
    );
    assert_eq!(counts(&c), [3, 1, 1, 1]);
    let rejected = attempt(
        Verdict::Reject("HTTP 400: key s3cr3t is bad".into()),
        Some(400),
        "{\"error\":\"s3cr3t\"}",
    );
    assert_eq!(
        p.conclude(&c, &d, 1, 1_000, &rejected, latency).await,
        Next::Settled
    );
    assert_eq!(counts(&c), [4, 1, 1, 2]);
    assert_eq!(p.metrics.delivery_attempts.load(Ordering::Relaxed), 4);
    assert_eq!(p.metrics.deliveries_failed.load(Ordering::Relaxed), 2);

    let letters = p.dead.list(&Default::default()).unwrap().letters;
    assert_eq!(letters.len(), 2);
    let (gave_up, refused) = (&letters[0], &letters[1]);
    assert_eq!(gave_up.reason, "gave up after 3 attempts: HTTP 503");
    assert_eq!((gave_up.attempts, gave_up.status), (3, Some(503)));
    assert_eq!(gave_up.response, "busy");
    assert_eq!(
        (gave_up.tool.as_str(), gave_up.event_id.as_str()),
        ("t", "ev-1")
    );
    assert_eq!(
        (refused.attempts, refused.status, refused.accepted_ms),
        (1, Some(400), 1_000)
    );
    assert!(refused.reason.starts_with("HTTP 400"), "{}", refused.reason);
    let stored = std::fs::read_to_string(p.dead.path()).unwrap();
    assert!(
        !stored.contains("s3cr3t"),
        "a credential reached the dead letters: {stored}"
    );
}

/// A retryable answer past `max_age` (measured from when the delivery was
/// accepted) gives up as well.
#[tokio::test]
async fn a_delivery_too_old_to_retry_is_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = policy(dir.path(), 10);
    p.backoff.max_age = Duration::from_secs(60);
    let c = ToolCounters::default();
    let d = stdout_delivery("t", "old");
    let busy = attempt(retry(None), Some(503), "");
    let two_minutes_ago = now_ms() - 120_000;
    assert_eq!(
        p.conclude(&c, &d, 1, two_minutes_ago, &busy, Duration::ZERO)
            .await,
        Next::Settled
    );
    assert_eq!(p.dead.count().unwrap(), 1);
}

/// A dead letter that cannot be written keeps the delivery (retried after
/// the backoff's cap) instead of settling it into nothing.
#[tokio::test]
async fn a_dead_letter_that_cannot_be_written_keeps_the_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, b"not a folder").unwrap();
    let p = policy(&blocked, 3);
    let c = ToolCounters::default();
    let d = stdout_delivery("t", "e");
    let rejected = attempt(Verdict::Reject("HTTP 400".into()), Some(400), "");
    assert_eq!(
        p.conclude(&c, &d, 1, now_ms(), &rejected, Duration::ZERO)
            .await,
        Next::RetryIn(Duration::from_millis(400))
    );
    assert_eq!(counts(&c)[3], 0, "nothing was dead-lettered");
    assert_eq!(p.metrics.deliveries_failed.load(Ordering::Relaxed), 0);
}

/// The tool's answer reader overrides the status's verdict (Meta's error
/// inside a `200`), keeping the destination's `Retry-After` when the reader
/// names none; without a status (a connection error) it is not asked.
#[test]
fn the_answer_reader_judges_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(dir.path(), 3);
    fn reader(status: u16, body: &str) -> Option<Verdict> {
        match (status, body) {
            (_, "throttled") => Some(Verdict::Retry {
                why: "throttled".into(),
                after: None,
            }),
            (200, "error") => Some(Verdict::Reject("error in a 200".into())),
            _ => None,
        }
    }
    p.answers
        .write()
        .unwrap()
        .insert("t".into(), reader as crate::tools::AnswerReader);
    let d = stdout_delivery("t", "e");

    let mut ok = attempt(Verdict::Done, Some(200), "error");
    p.read_answer(&d, &mut ok);
    assert_eq!(ok.verdict, Verdict::Reject("error in a 200".into()));

    let mut plain = attempt(Verdict::Done, Some(200), "fine");
    p.read_answer(&d, &mut plain);
    assert_eq!(plain.verdict, Verdict::Done);

    let after = Some(Duration::from_secs(7));
    let mut busy = attempt(retry(after), Some(429), "throttled");
    p.read_answer(&d, &mut busy);
    assert_eq!(
        busy.verdict,
        Verdict::Retry {
            why: "throttled".into(),
            after
        }
    );

    let mut unreachable = attempt(retry(None), None, "error");
    p.read_answer(&d, &mut unreachable);
    assert_eq!(unreachable.verdict, retry(None));

    let other = stdout_delivery("u", "e");
    let mut theirs = attempt(Verdict::Done, Some(200), "error");
    p.read_answer(&other, &mut theirs);
    assert_eq!(theirs.verdict, Verdict::Done, "another tool's reader");
}

fn delivery_config(backend: DeliveryBackend) -> DeliveryConfig {
    DeliveryConfig {
        backend,
        ..DeliveryConfig::default()
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn gauge(engine: &Engine, tool: &str) -> ToolGauges {
    engine
        .gauges()
        .into_iter()
        .find(|g| g.tool == tool)
        .unwrap_or_else(|| panic!("no gauges for {tool}"))
}

/// The memory store: submitted deliveries are sent per tool and counted;
/// nothing is owed once they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_engine_delivers_what_it_takes() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths {
        spool_dir: dir.path().join("spool"),
        data_dir: dir.path().join("data"),
    };
    let metrics = Arc::new(Metrics::default());
    let mut ids = Vec::new();
    let engine = Engine::start(
        &delivery_config(DeliveryBackend::Memory),
        paths,
        metrics.clone(),
        &mut |id: &str| ids.push(id.to_string()),
    )
    .unwrap();
    assert!(engine.refusing().is_none());
    engine.submit(Vec::new()).await.unwrap();
    engine
        .submit(vec![
            stdout_delivery("a", "1"),
            stdout_delivery("a", "2"),
            stdout_delivery("b", "3"),
        ])
        .await
        .unwrap();
    // Owed, and not sent before the config says how tools batch.
    assert_eq!(
        (gauge(&engine, "a").queued, gauge(&engine, "b").queued),
        (2, 1)
    );
    assert_eq!(gauge(&engine, "a").attempts, 0);
    engine.set_batching(Vec::new());
    wait_until("three deliveries", || {
        metrics.deliveries_delivered.load(Ordering::Relaxed) == 3
    })
    .await;
    assert_eq!(metrics.deliveries_submitted.load(Ordering::Relaxed), 3);
    wait_until("nothing owed", || {
        engine.gauges().iter().all(|g| g.queued == 0)
    })
    .await;
    let a = gauge(&engine, "a");
    assert_eq!(
        (a.attempts, a.delivered, a.retries, a.dead_lettered),
        (2, 2, 0, 0)
    );
    assert_eq!(gauge(&engine, "b").delivered, 1);
    let tools: Vec<String> = engine.gauges().into_iter().map(|g| g.tool).collect();
    assert_eq!(tools, ["a", "b"], "sorted by tool");
    assert!(ids.is_empty(), "nothing recovered");
}

/// The spool store: deliveries written are sent and acknowledged, so a
/// restart finds nothing to recover; what was left unsent is recovered,
/// its event ids remembered, and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_engine_recovers_what_was_not_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let paths = || Paths {
        spool_dir: dir.path().join("spool"),
        data_dir: dir.path().join("data"),
    };
    // Written by a spool alone (no engine to deliver them): a crash's
    // leftovers.
    {
        let metrics = Arc::new(Metrics::default());
        let (spool, _) = Spool::open(&dir.path().join("spool"), 1 << 30, metrics).unwrap();
        let deliveries = vec![
            stdout_delivery("a", "left-1"),
            stdout_delivery("a", "left-2"),
        ];
        let items = deliveries
            .iter()
            .map(|d| spool::record::encode_body(now_ms() - 30_700, d))
            .collect();
        spool.append_deliveries(items, deliveries).await.unwrap();
        spool.flush().await;
    }
    let metrics = Arc::new(Metrics::default());
    let mut ids = Vec::new();
    let engine = Engine::start(
        &delivery_config(DeliveryBackend::Spool),
        paths(),
        metrics.clone(),
        &mut |id: &str| ids.push(id.to_string()),
    )
    .unwrap();
    assert_eq!(ids, ["left-1", "left-2"]);
    assert_eq!(metrics.spool_recovered.load(Ordering::Relaxed), 2);
    // Nothing is sent before the config says how tools batch: both are
    // owed, the oldest since it was written.
    let a = gauge(&engine, "a");
    assert_eq!((a.queued, a.attempts), (2, 0));
    // Accepted 30.7 s before the restart.
    assert!(
        (30.7..40.0).contains(&a.oldest_age_s),
        "seconds: {}",
        a.oldest_age_s
    );
    engine.set_batching(Vec::new());
    engine
        .submit(vec![stdout_delivery("a", "new")])
        .await
        .unwrap();
    wait_until("three deliveries", || {
        metrics.deliveries_delivered.load(Ordering::Relaxed) == 3
    })
    .await;
    wait_until("nothing owed", || gauge(&engine, "a").queued == 0).await;
    engine.flush().await;
    drop(engine);

    let metrics = Arc::new(Metrics::default());
    let mut ids = Vec::new();
    let _engine = Engine::start(
        &delivery_config(DeliveryBackend::Spool),
        paths(),
        metrics.clone(),
        &mut |id: &str| ids.push(id.to_string()),
    )
    .unwrap();
    assert!(ids.is_empty(), "all were acknowledged: {ids:?}");
}

/// Requests that can never be sent go straight to the dead letters with no
/// attempt, counted for their tool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_dead_lettered_without_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths {
        spool_dir: dir.path().join("spool"),
        data_dir: dir.path().join("data"),
    };
    let metrics = Arc::new(Metrics::default());
    let engine = Engine::start(
        &delivery_config(DeliveryBackend::Memory),
        paths,
        metrics.clone(),
        &mut |_: &str| {},
    )
    .unwrap();
    engine.dead_letter_invalid(Vec::new()).await;
    let why = Invalid {
        reason: "header",
        message: "a header value holds a line break".into(),
    };
    engine
        .dead_letter_invalid(vec![(http_delivery("a", "bad", "k3y"), why)])
        .await;
    let dead = DeadLetters::new(&dir.path().join("data"));
    let letters = dead.list(&Default::default()).unwrap().letters;
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].attempts, letters[0].status), (0, None));
    assert!(
        letters[0].reason.contains("line break"),
        "{}",
        letters[0].reason
    );
    assert_eq!(metrics.deliveries_failed.load(Ordering::Relaxed), 1);
    assert_eq!(gauge(&engine, "a").dead_lettered, 1);
    assert_eq!(metrics.deliveries_delivered.load(Ordering::Relaxed), 0);
}

async fn engine_with(
    backend: DeliveryBackend,
    spool_max_bytes: u64,
) -> (tempfile::TempDir, Arc<Engine>, Arc<Metrics>) {
    engine_for(DeliveryConfig {
        spool_max_bytes,
        ..delivery_config(backend)
    })
    .await
}

/// SPEC §11: a full spool refuses new deliveries whole (the collector then
/// answers `503`), and `/readyz` is told why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_and_says_why() {
    let (_dir, engine, metrics) = engine_with(DeliveryBackend::Spool, 64).await;
    assert!(engine.refusing().is_none());
    let batch = || vec![stdout_delivery("a", "1"), stdout_delivery("a", "2")];
    engine.submit(batch()).await.unwrap();
    let why = engine.refusing().expect("full");
    assert!(why.starts_with("the spool is full ("), "{why}");
    assert!(why.ends_with(" of 64 bytes)"), "{why}");
    assert!(engine.submit(batch()).await.is_err());
    assert_eq!(metrics.deliveries_rejected.load(Ordering::Relaxed), 2);
    assert_eq!(metrics.deliveries_submitted.load(Ordering::Relaxed), 2);
}

/// The memory store refuses a tool's deliveries once its queue holds
/// `MEMORY_QUEUE_BYTES`, naming the tool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_memory_queue_refuses_and_says_why() {
    let (_dir, engine, metrics) = engine_with(DeliveryBackend::Memory, 1 << 30).await;
    let big = Delivery::new(
        "a",
        "big",
        Payload::Stdout("x".repeat(MEMORY_QUEUE_BYTES / 2)),
    );
    engine.submit(vec![big]).await.unwrap();
    assert_eq!(
        engine.refusing().as_deref(),
        Some("delivery queue of tool a is full")
    );
    let refused = engine
        .submit(vec![stdout_delivery("b", "1"), stdout_delivery("a", "2")])
        .await;
    assert!(refused.is_err(), "one full queue refuses the whole batch");
    assert_eq!(metrics.deliveries_rejected.load(Ordering::Relaxed), 2);
    assert_eq!(gauge(&engine, "b").queued, 0, "nothing of it was taken");
}

struct OneKey;
impl Batching for OneKey {
    fn limits(&self) -> Limits {
        Limits {
            max_events: 10,
            max_bytes: 1 << 20,
        }
    }
    fn key(&self, _: &HttpRequest) -> Option<String> {
        Some(String::new())
    }
    fn join(&self, _: &[&HttpRequest]) -> Option<HttpRequest> {
        None
    }
}

/// Each config load says which tools batch; a tool no longer batching (or
/// no longer configured) stops, and deliveries wait for the first word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_batching_follows_the_config_in_force() {
    let (_dir, engine, _) = engine_with(DeliveryBackend::Memory, 1 << 30).await;
    assert!(
        !*engine.policy.configured.borrow(),
        "not known before a load"
    );
    let b: Arc<dyn Batching> = Arc::new(OneKey);
    engine.set_batching(vec![
        ("a".to_string(), Some(b.clone())),
        ("b".to_string(), None),
    ]);
    assert!(*engine.policy.configured.borrow());
    assert!(engine.policy.batching_of("a").is_some());
    assert!(engine.policy.batching_of("b").is_none());
    engine.set_batching(vec![("c".to_string(), Some(b))]);
    assert!(
        engine.policy.batching_of("a").is_none(),
        "a stopped batching"
    );
    assert!(engine.policy.batching_of("c").is_some());
    // How each tool's answers are read comes with each load as well.
    fn reader(_: u16, _: &str) -> Option<Verdict> {
        None
    }
    let readers = [("a".to_string(), reader as crate::tools::AnswerReader)];
    engine.set_answer_readers(readers.into_iter().collect());
    assert!(engine.policy.answers.read().unwrap().contains_key("a"));
    engine.set_answer_readers(Default::default());
    assert!(engine.policy.answers.read().unwrap().is_empty());
    // Known now: waiting for it returns at once.
    tokio::time::timeout(Duration::from_secs(1), engine.policy.configured())
        .await
        .expect("configured");
}

/// A backlog longer than the window waits on disk and is read back, in
/// order, as the window drains: every delivery is sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_past_the_window_is_read_back_from_disk() {
    let (_dir, engine, metrics) = engine_with(DeliveryBackend::Spool, 1 << 30).await;
    let total = 800; // past WINDOW_ITEMS (512)
    assert!(total > WINDOW_ITEMS);
    for chunk in 0..total / 100 {
        let batch = (0..100)
            .map(|i| stdout_delivery("a", &format!("e{}", chunk * 100 + i)))
            .collect();
        engine.submit(batch).await.unwrap();
    }
    {
        let queue = engine.queue("a");
        let w = queue.window.lock().unwrap();
        assert_eq!(w.jobs.len(), WINDOW_ITEMS, "the window is full");
        assert_eq!(w.owed, total as u64);
        let spill = w.spill.as_ref().expect("the rest waits on disk");
        assert_eq!(spill.last, total as u64, "through the last sequence number");
    }
    engine.set_batching(Vec::new());
    wait_until("every delivery", || {
        metrics.deliveries_delivered.load(Ordering::Relaxed) == total as u64
    })
    .await;
    wait_until("nothing owed", || gauge(&engine, "a").queued == 0).await;
    assert_eq!(gauge(&engine, "a").attempts, total as u64, "each sent once");
    let queue = engine.queue("a");
    let w = queue.window.lock().unwrap();
    assert!(w.spill.is_none(), "read back to the end");
    assert_eq!((w.jobs.len(), w.bytes), (0, 0));
}

/// A destination on 127.0.0.1 that records each request's body and
/// answers every one with the status it is set to.
struct Destination {
    url: String,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    status: Arc<std::sync::atomic::AtomicU16>,
}

/// A [`destination`] status: `400` for any request carrying member 3,
/// alone or in a batch, else `200`.
const REFUSES_3: u16 = 1;

async fn destination(status: u16) -> Destination {
    use http_body_util::BodyExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/collect", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let status = Arc::new(std::sync::atomic::AtomicU16::new(status));
    let (b, st) = (bodies.clone(), status.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (b, st) = (b.clone(), st.clone());
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (b, st) = (b.clone(), st.clone());
                    async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        b.lock().unwrap().push(body.to_vec());
                        let status = match st.load(Ordering::Relaxed) {
                            // A batch API that refuses a batch as a whole
                            // when one member (`"n":3`) is invalid.
                            REFUSES_3 if body.windows(5).any(|w| w == b"\"n\":3") => 400,
                            REFUSES_3 => 200,
                            status => status,
                        };
                        Ok::<_, hyper::Error>(
                            hyper::Response::builder()
                                .status(status)
                                .body(http_body_util::Full::new(bytes::Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    Destination {
        url,
        bodies,
        status,
    }
}

impl Destination {
    /// The bodies received so far, as text.
    fn texts(&self) -> Vec<String> {
        let bodies = self.bodies.lock().unwrap();
        bodies
            .iter()
            .map(|b| String::from_utf8(b.clone()).unwrap())
            .collect()
    }
}

/// What the dead letters under `dir/data` hold.
fn dead_letters(dir: &tempfile::TempDir) -> Vec<deadletter::DeadLetter> {
    DeadLetters::new(&dir.path().join("data"))
        .list(&Default::default())
        .unwrap()
        .letters
}

fn posted(tool: &str, url: &str, n: usize) -> Delivery {
    Delivery::new(
        tool,
        format!("ev-{n}"),
        Payload::Http(HttpRequest {
            method: "POST".into(),
            url: url.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(format!("{{\"n\":{n}}}").into_bytes()),
        }),
    )
}

/// Joins members' bodies into a JSON array, as a batch API takes them.
struct JsonArray;
impl Batching for JsonArray {
    fn limits(&self) -> Limits {
        Limits {
            max_events: 4,
            max_bytes: 1 << 20,
        }
    }
    fn key(&self, req: &HttpRequest) -> Option<String> {
        Some(req.url.clone())
    }
    fn join(&self, reqs: &[&HttpRequest]) -> Option<HttpRequest> {
        let parts: Vec<&str> = reqs
            .iter()
            .map(|r| std::str::from_utf8(r.body.as_deref().unwrap_or_default()).unwrap())
            .collect();
        Some(HttpRequest {
            body: Some(format!("[{}]", parts.join(",")).into_bytes()),
            ..reqs[0].clone()
        })
    }
}

async fn engine_for(config: DeliveryConfig) -> (tempfile::TempDir, Arc<Engine>, Arc<Metrics>) {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths {
        spool_dir: dir.path().join("spool"),
        data_dir: dir.path().join("data"),
    };
    let metrics = Arc::new(Metrics::default());
    let engine = Engine::start(&config, paths, metrics.clone(), &mut |_: &str| {}).unwrap();
    (dir, engine, metrics)
}

fn fast_retries(backend: DeliveryBackend) -> DeliveryConfig {
    DeliveryConfig {
        backend,
        max_attempts: 3,
        retry_base_ms: 1,
        retry_max_ms: 5,
        batch_linger_ms: 200,
        ..DeliveryConfig::default()
    }
}

/// SPEC §8: a batching tool's deliveries within the linger go in joined
/// requests of at most `max_events`; each member is settled by the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batching_tool_joins_its_deliveries() {
    let dest = destination(200).await;
    let (_dir, engine, metrics) = engine_for(fast_retries(DeliveryBackend::Spool)).await;
    engine.set_batching(vec![(
        "a".to_string(),
        Some(Arc::new(JsonArray) as Arc<dyn Batching>),
    )]);
    let batch = (1..=6).map(|n| posted("a", &dest.url, n)).collect();
    engine.submit(batch).await.unwrap();
    wait_until("six delivered", || {
        metrics.deliveries_delivered.load(Ordering::Relaxed) == 6
    })
    .await;
    let bodies: Vec<String> = dest.texts();
    assert_eq!(
        bodies,
        [
            r#"[{"n":1},{"n":2},{"n":3},{"n":4}]"#,
            r#"[{"n":5},{"n":6}]"#
        ]
    );
    assert_eq!(metrics.delivery_batches.load(Ordering::Relaxed), 2);
    wait_until("nothing owed", || gauge(&engine, "a").queued == 0).await;
}

/// A batch the destination keeps failing (`503`) is retried together, each
/// attempt counted, and every member gives up after `max_attempts` into the
/// dead letters; one request per attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_batch_is_retried_then_dead_lettered() {
    let dest = destination(503).await;
    let (dir, engine, metrics) = engine_for(fast_retries(DeliveryBackend::Memory)).await;
    engine.set_batching(vec![(
        "a".to_string(),
        Some(Arc::new(JsonArray) as Arc<dyn Batching>),
    )]);
    engine
        .submit(vec![posted("a", &dest.url, 1), posted("a", &dest.url, 2)])
        .await
        .unwrap();
    wait_until("two dead letters", || {
        metrics.deliveries_failed.load(Ordering::Relaxed) == 2
    })
    .await;
    assert_eq!(
        dest.bodies.lock().unwrap().len(),
        3,
        "one joined request per attempt"
    );
    let letters = dead_letters(&dir);
    assert_eq!(letters.len(), 2);
    for l in &letters {
        assert_eq!(l.attempts, 3);
        assert!(
            l.reason.starts_with("gave up after 3 attempts"),
            "{}",
            l.reason
        );
    }
    let a = gauge(&engine, "a");
    assert_eq!(
        (a.attempts, a.retries, a.dead_lettered, a.queued),
        (6, 4, 2, 0)
    );
}

/// A delivery sent alone is retried on `503` up to `max_attempts`, then
/// dead-lettered; once the destination recovers, the next one is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_delivery_is_retried_then_dead_lettered() {
    let dest = destination(503).await;
    let (dir, engine, metrics) = engine_for(fast_retries(DeliveryBackend::Spool)).await;
    engine.set_batching(Vec::new());
    engine
        .submit(vec![posted("a", &dest.url, 1)])
        .await
        .unwrap();
    wait_until("a dead letter", || {
        metrics.deliveries_failed.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(dest.bodies.lock().unwrap().len(), 3);
    let letters = dead_letters(&dir);
    assert_eq!(letters[0].attempts, 3);
    dest.status.store(204, Ordering::Relaxed);
    engine
        .submit(vec![posted("a", &dest.url, 2)])
        .await
        .unwrap();
    wait_until("delivered", || {
        metrics.deliveries_delivered.load(Ordering::Relaxed) == 1
    })
    .await;
    let a = gauge(&engine, "a");
    assert_eq!(
        (a.attempts, a.retries, a.dead_lettered, a.delivered),
        (4, 2, 1, 1)
    );
}

/// `deadletter replay` files dropped in the inbox are imported (on start
/// and every second), delivered, and removed once stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_files_in_the_inbox_are_imported() {
    let dest = destination(200).await;
    let (dir, engine, metrics) = engine_for(fast_retries(DeliveryBackend::Spool)).await;
    engine.set_batching(Vec::new());
    let spool_dir = dir.path().join("spool");
    let file = inbox::write(&spool_dir, &[posted("a", &dest.url, 7)]).unwrap();
    wait_until("the replayed delivery", || {
        metrics.deliveries_delivered.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(dest.bodies.lock().unwrap()[0], br#"{"n":7}"#);
    wait_until("the file removed", || !file.exists()).await;
}

/// Sets or clears a file's immutable flag (`chattr`, e2fsprogs; needs
/// root): then not even root may open it for writing, and writes through a
/// file already open fail with `EPERM`, as on a disk gone bad.
pub(super) fn immutable(path: &std::path::Path, on: bool) {
    let flag = if on { "+i" } else { "-i" };
    let status = std::process::Command::new("chattr")
        .arg(flag)
        .arg(path)
        .status()
        .expect("chattr (Debian package e2fsprogs) runs");
    assert!(
        status.success(),
        "chattr {flag} {} (needs root)",
        path.display()
    );
}

/// A failed write (here: a segment gone immutable, as on a disk gone bad)
/// refuses that batch (the collector answers `503`, its clients retry) and
/// the next goes to a fresh segment; a writer that has stopped refuses
/// every batch and tells `/readyz` why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_that_cannot_be_written_refuses_and_says_why() {
    let (dir, engine, metrics) = engine_with(DeliveryBackend::Spool, 1 << 30).await;
    engine
        .submit(vec![stdout_delivery("a", "1")])
        .await
        .unwrap();
    let segment = std::fs::read_dir(dir.path().join("spool"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("a segment");
    immutable(&segment, true);
    struct Unfreeze(std::path::PathBuf);
    impl Drop for Unfreeze {
        fn drop(&mut self) {
            immutable(&self.0, false);
        }
    }
    let _unfreeze = Unfreeze(segment);
    assert!(engine
        .submit(vec![stdout_delivery("a", "2")])
        .await
        .is_err());
    assert_eq!(
        engine.refusing(),
        None,
        "one failed write is not a failed spool"
    );
    engine
        .submit(vec![stdout_delivery("a", "3")])
        .await
        .unwrap();
    assert_eq!(metrics.deliveries_rejected.load(Ordering::Relaxed), 1);

    let Store::Spool(spool) = &engine.store else {
        unreachable!()
    };
    spool.panic_writer();
    wait_until("the writer stopped", || spool.has_failed()).await;
    assert_eq!(
        engine.refusing().as_deref(),
        Some("the spool cannot be written")
    );
    assert!(engine
        .submit(vec![stdout_delivery("a", "4")])
        .await
        .is_err());
    assert_eq!(metrics.deliveries_submitted.load(Ordering::Relaxed), 2);
    assert_eq!(metrics.deliveries_rejected.load(Ordering::Relaxed), 2);
}

/// `nats_url` is a comma-separated list of servers; one with none in it is
/// refused at once, before any connection is tried.
#[tokio::test]
async fn a_nats_url_naming_no_server_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = DeliveryConfig {
        backend: DeliveryBackend::Nats,
        nats_url: " , ,".into(),
        ..DeliveryConfig::default()
    };
    match nats::Nats::connect(&config, Arc::new(policy(dir.path(), 3))).await {
        Err(e) => assert_eq!(e.to_string(), "[delivery] nats_url is empty"),
        Ok(_) => panic!("connected to no server"),
    }
}

/// The window holds at most `WINDOW_BYTES` (and one job more): a backlog of
/// big deliveries waits on disk, not in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_big_deliveries_stays_within_the_windows_bytes() {
    let dest = destination(200).await;
    let (_dir, engine, metrics) = engine_with(DeliveryBackend::Spool, 1 << 30).await;
    let big = |i: usize| {
        let mut d = posted("a", &dest.url, i);
        let Payload::Http(req) = &mut d.payload else {
            unreachable!()
        };
        req.body = Some(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(20 << 10)).into_bytes());
        d
    };
    for chunk in 0..10 {
        engine
            .submit((0..30).map(|i| big(chunk * 30 + i)).collect())
            .await
            .unwrap();
    }
    // Let the refill run as far as it would.
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        let queue = engine.queue("a");
        let w = queue.window.lock().unwrap();
        let one = w.jobs.front().expect("jobs in the window").size;
        assert!(
            w.bytes <= WINDOW_BYTES + one,
            "{} jobs, {} bytes in memory (bound {WINDOW_BYTES})",
            w.jobs.len(),
            w.bytes
        );
        assert!(w.spill.is_some(), "the rest waits on disk");
        assert_eq!(w.owed, 300);
    }
    // And all of it is read back and sent, once each.
    engine.set_batching(Vec::new());
    wait_until("every delivery", || {
        metrics.deliveries_delivered.load(Ordering::Relaxed) == 300
    })
    .await;
    assert_eq!(dest.bodies.lock().unwrap().len(), 300);
    wait_until("nothing owed", || gauge(&engine, "a").queued == 0).await;
}

/// What `refill` reads back from disk wakes a worker already waiting on the
/// empty window (a restart's backlog is found this way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refill_wakes_the_worker_waiting_on_an_empty_window() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), 1 << 30, Arc::new(Metrics::default())).unwrap();
    let spool = Arc::new(spool);
    let d = stdout_delivery("t", "on-disk");
    let placed = spool
        .append_deliveries(vec![spool::record::encode_body(5, &d)], vec![d.clone()])
        .await
        .unwrap();
    let (seq, loc) = placed[0];
    let queue = Arc::new(tool_queue());
    {
        let mut w = queue.window.lock().unwrap();
        w.owed = 1;
        w.spill = Some(Spill {
            cursor: loc.into(),
            last: seq,
            through: 0,
            oldest_ms: 5,
        });
    }
    let waiting = tokio::spawn({
        let queue = queue.clone();
        async move { queue.next().await }
    });
    // The worker is waiting before the refill starts.
    tokio::time::sleep(Duration::from_millis(50)).await;
    tokio::spawn(refill(queue.clone(), spool.clone()));
    queue.refill.notify_one();
    let job = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting worker was woken")
        .unwrap();
    assert_eq!((job.seq, job.accepted_ms, job.delivery), (seq, 5, d));
    let w = queue.window.lock().unwrap();
    assert!(w.spill.is_none(), "read to the last one on disk");
}

/// SPEC §8 (poison isolation): a batch refused as a whole is split in
/// halves down to single deliveries; only the one refused alone goes to
/// the dead letters, the others are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_as_a_whole_is_split_to_find_the_refused_member() {
    let dest = destination(REFUSES_3).await;
    let (dir, engine, metrics) = engine_for(fast_retries(DeliveryBackend::Memory)).await;
    engine.set_batching(vec![(
        "a".to_string(),
        Some(Arc::new(JsonArray) as Arc<dyn Batching>),
    )]);
    let batch = (1..=4).map(|n| posted("a", &dest.url, n)).collect();
    engine.submit(batch).await.unwrap();
    wait_until("three delivered, one dead letter", || {
        metrics.deliveries_delivered.load(Ordering::Relaxed) == 3
            && metrics.deliveries_failed.load(Ordering::Relaxed) == 1
    })
    .await;
    let mut bodies: Vec<String> = dest.texts();
    assert_eq!(bodies[0], r#"[{"n":1},{"n":2},{"n":3},{"n":4}]"#);
    // The halves go at once, in either order; then the refused half's.
    bodies.sort();
    assert_eq!(
        bodies,
        [
            r#"[{"n":1},{"n":2},{"n":3},{"n":4}]"#,
            r#"[{"n":1},{"n":2}]"#,
            r#"[{"n":3},{"n":4}]"#,
            r#"{"n":3}"#,
            r#"{"n":4}"#,
        ]
    );
    let letters = dead_letters(&dir);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event_id, "ev-3");
}

/// Starts `queue`'s refill from `spool`, asks it for one, waits until
/// `read` holds of the window, then a moment more: nothing takes from the
/// window, so the refill stops where its bounds say.
async fn refill_until_idle(
    queue: &Arc<ToolQueue>,
    spool: &Arc<Spool>,
    read: impl Fn(&Window) -> bool,
) {
    tokio::spawn(refill(queue.clone(), spool.clone()));
    queue.refill.notify_one();
    wait_until("the refill read", || read(&queue.window.lock().unwrap())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// A refill reads what fits in the window's free bytes, counting what the
/// window already holds: it tops a half-full window up to its bound, not
/// past it (the byte budget's `/ 2` and `WINDOW_BYTES - w.bytes`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refill_tops_the_window_up_to_its_bytes_not_past_them() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), 1 << 30, Arc::new(Metrics::default())).unwrap();
    let spool = Arc::new(spool);
    // 100 deliveries of about 10 KiB on disk (20 KiB in the window).
    let big = |i: usize| {
        Delivery::new(
            "t",
            format!("e{i}"),
            Payload::Stdout(format!("{i}:{}", "x".repeat(10 << 10))),
        )
    };
    let ds: Vec<Delivery> = (0..100).map(big).collect();
    let bodies = ds
        .iter()
        .map(|d| spool::record::encode_body(5, d))
        .collect();
    let placed = spool.append_deliveries(bodies, ds).await.unwrap();
    let one = job_size(placed[0].1.len as usize);
    let queue = Arc::new(tool_queue());
    // The window already holds 200 KiB, under the refill mark (256 KiB).
    let held = 200 << 10;
    assert!(held < REFILL_BELOW_BYTES);
    {
        let mut w = queue.window.lock().unwrap();
        w.jobs.push_back(job(0, held));
        w.bytes = held;
        w.owed = 101;
        w.spill = Some(Spill {
            cursor: placed[0].1.into(),
            last: placed[99].0,
            through: 0,
            oldest_ms: 5,
        });
    }
    refill_until_idle(&queue, &spool, |w| w.bytes >= REFILL_BELOW_BYTES).await;
    let w = queue.window.lock().unwrap();
    assert!(
        w.bytes <= WINDOW_BYTES + one,
        "{} jobs, {} bytes (bound {WINDOW_BYTES}, one job {one})",
        w.jobs.len(),
        w.bytes
    );
    // Topped up, not trickled: within two jobs of the bound.
    assert!(
        w.bytes + 2 * one >= WINDOW_BYTES,
        "{} bytes after the refill",
        w.bytes
    );
    assert!(w.spill.is_some(), "the rest waits on disk");
    assert_eq!(w.bytes, w.jobs.iter().map(|j| j.size).sum::<usize>());
}

/// Small deliveries: the refill reads what fits in the window's free
/// places, counting the jobs it already holds (`WINDOW_ITEMS - len`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refill_tops_the_window_up_to_its_items_not_past_them() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), 1 << 30, Arc::new(Metrics::default())).unwrap();
    let spool = Arc::new(spool);
    let ds: Vec<Delivery> = (0..600)
        .map(|i| stdout_delivery("t", &format!("e{i}")))
        .collect();
    let bodies = ds
        .iter()
        .map(|d| spool::record::encode_body(5, d))
        .collect();
    let placed = spool.append_deliveries(bodies, ds).await.unwrap();
    let queue = Arc::new(tool_queue());
    let held = REFILL_BELOW - 56;
    {
        let mut w = queue.window.lock().unwrap();
        for seq in 0..held as u64 {
            w.jobs.push_back(job(seq, 300));
        }
        w.bytes = held * 300;
        w.owed = (held + 600) as u64;
        w.spill = Some(Spill {
            cursor: placed[0].1.into(),
            last: placed[599].0,
            through: 0,
            oldest_ms: 5,
        });
    }
    refill_until_idle(&queue, &spool, |w| w.jobs.len() >= REFILL_BELOW).await;
    let w = queue.window.lock().unwrap();
    assert_eq!(w.jobs.len(), WINDOW_ITEMS, "{} bytes", w.bytes);
    assert!(w.spill.is_some(), "the rest waits on disk");
}
