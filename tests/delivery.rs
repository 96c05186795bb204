//! At-least-once delivery end to end (SPEC §11): the real binary with the
//! durable spool, mock destinations that answer from a script, `kill -9`,
//! outages, torn writes, dead letters and their replay.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::events::{hook, ids, key, keys, metric_value, post};
use common::{bin, free_port, Destination, Origin, Proxy, Recorded, Script};
use serde_json::Value;

/// Waits until the destination has seen every id in `want` (by
/// `Idempotency-Key`); the requests so far.
async fn wait_for_keys(
    dest: &Destination,
    want: &HashSet<String>,
    timeout: Duration,
) -> Vec<Recorded> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = dest.requests();
        let keys = keys(&got);
        if want.is_subset(&keys) {
            return got;
        }
        let missing = want.difference(&keys).count();
        assert!(
            Instant::now() < deadline,
            "{missing} of {} ids never arrived ({} requests)",
            want.len(),
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `tagproxy deadletter ARGS -c config`: stdout, and the exit status.
fn deadletter(proxy: &Proxy, args: &[&str]) -> (String, i32) {
    let out = Command::new(bin())
        .arg("deadletter")
        .args(args)
        .arg("-c")
        .arg(&proxy.config)
        .output()
        .unwrap();
    (
        String::from_utf8(out.stdout).unwrap(),
        out.status.code().unwrap_or(-1),
    )
}

fn dead_letters(proxy: &Proxy) -> Vec<Value> {
    let (out, code) = deadletter(proxy, &["list", "--json"]);
    assert_eq!(code, 0, "{out}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn scripted_answers_retry_settle_or_dead_letter_exactly_as_scripted() {
    let origin = Origin::page("text/html", "<html></html>").await;
    let script = |statuses: Vec<u16>, delays: Vec<Duration>| Script {
        statuses,
        delays,
        ..Script::default()
    };
    let twice_500 = Destination::with_script(script(vec![500, 500, 200], vec![])).await;
    let limited = Destination::with_script(script(vec![429, 200], vec![])).await;
    let bad = Destination::with_script(script(vec![400], vec![])).await;
    let slow = Destination::with_script(script(vec![200], vec![Duration::from_secs(3)])).await;
    let proxy = Proxy::start_tools(
        origin.addr,
        "[delivery]\nretry_base_ms = 100\ntimeout_ms = 700\n",
        &[
            ("twice_500", hook(&twice_500.url())),
            ("limited", hook(&limited.url())),
            ("bad", hook(&bad.url())),
            ("slow", hook(&slow.url())),
        ],
    )
    .await;
    let id = "scripted-000001".to_string();
    assert_eq!(
        post(&proxy.url(""), std::slice::from_ref(&id))
            .await
            .unwrap()
            .0,
        200
    );

    let wait = Duration::from_secs(10);
    twice_500.wait_for(3, wait).await;
    limited.wait_for(2, wait).await;
    bad.wait_for(1, wait).await;
    slow.wait_for(2, wait).await;
    // Every delivery has ended (delivered or dead-lettered): any further
    // (wrong) attempt would already be here.
    proxy.settled().await;
    for (name, dest, attempts) in [
        ("[500, 500, 200]", &twice_500, 3),
        ("[429, 200]", &limited, 2),
        ("[400]", &bad, 1),
        ("[timeout, 200]", &slow, 2),
    ] {
        let got = dest.requests();
        assert_eq!(got.len(), attempts, "{name}: attempts");
        assert!(
            got.iter().all(|r| key(r) == id),
            "{name}: same event id each time"
        );
        assert!(
            got.windows(2).all(|w| w[0].body == w[1].body),
            "{name}: the same request each time"
        );
    }

    let letters = dead_letters(&proxy);
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0]["tool"], "bad");
    assert_eq!(letters[0]["event_id"], id);
    assert_eq!(letters[0]["status"], 400);
    assert_eq!(letters[0]["attempts"], 1);
    assert_eq!(letters[0]["response"], "{}");

    let m = proxy.metrics().await;
    for (tool, delivered, dead) in [
        ("twice_500", 1.0, 0.0),
        ("limited", 1.0, 0.0),
        ("bad", 0.0, 1.0),
        ("slow", 1.0, 0.0),
    ] {
        let t = format!("{{tool=\"{tool}\"}}");
        assert_eq!(
            metric_value(&m, &format!("tagproxy_tool_deliveries_delivered_total{t}")),
            delivered,
            "{tool}"
        );
        assert_eq!(
            metric_value(&m, &format!("tagproxy_tool_dead_letters_total{t}")),
            dead,
            "{tool}"
        );
        assert_eq!(
            metric_value(&m, &format!("tagproxy_delivery_queue_depth{t}")),
            0.0,
            "{tool}"
        );
    }
    assert_eq!(
        metric_value(
            &m,
            "tagproxy_tool_delivery_attempts_total{tool=\"twice_500\"}"
        ),
        3.0
    );
}

#[tokio::test]
async fn retry_after_is_honoured_and_a_replayed_dead_letter_is_sent_again() {
    let origin = Origin::page("text/html", "<html></html>").await;
    let limited = Destination::with_script(Script {
        statuses: vec![429, 200],
        retry_after: Some(2),
        ..Script::default()
    })
    .await;
    let bad = Destination::with_script(Script {
        statuses: vec![400, 200],
        ..Script::default()
    })
    .await;
    let proxy = Proxy::start_tools(
        origin.addr,
        "[delivery]\nretry_base_ms = 50\n",
        &[("limited", hook(&limited.url())), ("bad", hook(&bad.url()))],
    )
    .await;
    let id = "replayed-000001".to_string();
    assert_eq!(
        post(&proxy.url(""), std::slice::from_ref(&id))
            .await
            .unwrap()
            .0,
        200
    );

    let got = limited.wait_for(2, Duration::from_secs(10)).await;
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(1950) && gap < Duration::from_secs(4),
        "Retry-After: 2 honoured, not the 50 ms backoff: {gap:?}"
    );

    bad.wait_for(1, Duration::from_secs(5)).await;
    // The dead letter is written before the delivery is settled.
    let deadline = Instant::now() + Duration::from_secs(5);
    while dead_letters(&proxy).is_empty() {
        assert!(Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (out, code) = deadletter(&proxy, &["replay"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("replayed 1 dead letter"), "{out}");
    let got = bad.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(key(&got[1]), id);
    assert_eq!(
        got[1].body, got[0].body,
        "the replay is the original request"
    );
    assert!(dead_letters(&proxy).is_empty());
    proxy.settled().await;
    assert_eq!(bad.requests().len(), 2, "replayed once");
}

#[tokio::test]
async fn a_hanging_destination_never_delays_another_tool() {
    let origin = Origin::page("text/html", "<html></html>").await;
    let hanging = Destination::with_script(Script {
        delay: Duration::from_secs(60),
        ..Script::default()
    })
    .await;
    let healthy = Destination::start().await;
    let proxy = Proxy::start_tools(
        origin.addr,
        "[delivery]\nconcurrency_per_tool = 2\ntimeout_ms = 60000\n",
        &[
            ("hanging", hook(&hanging.url())),
            ("healthy", hook(&healthy.url())),
        ],
    )
    .await;
    let sent = ids("isolated", 50);
    for chunk in sent.chunks(10) {
        assert_eq!(post(&proxy.url(""), chunk).await.unwrap().0, 200);
    }
    // The hanging tool's two request slots are taken for a minute; the
    // healthy tool gets everything meanwhile.
    let want: HashSet<String> = sent.iter().cloned().collect();
    wait_for_keys(&healthy, &want, Duration::from_secs(10)).await;
    assert_eq!(
        hanging.requests().len(),
        2,
        "the hanging tool's limit holds"
    );
    // Settled as soon as the answers are read.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = proxy.metrics().await;
        let depth = |tool: &str| {
            metric_value(
                &m,
                &format!("tagproxy_delivery_queue_depth{{tool=\"{tool}\"}}"),
            )
        };
        assert_eq!(depth("hanging"), 50.0);
        if depth("healthy") == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "healthy deliveries never settled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// tagproxy with an `http` tool whose destination is down (nothing listens
/// on its address, returned to start one there later).
async fn behind_a_down_destination(extra: &str) -> (Proxy, String) {
    let origin = Origin::page("text/html", "<html></html>").await;
    let dest_addr = format!("127.0.0.1:{}", free_port());
    let tool = hook(&format!("http://{dest_addr}"));
    let proxy = Proxy::start_tools(origin.addr, extra, &[("hook", tool)]).await;
    (proxy, dest_addr)
}

/// The browser's behaviour: a batch that got no answer or a 503 is sent
/// again until it is answered 200 (for 60 s at most: then the test fails).
async fn send_until_accepted(url: String, batch: Vec<String>, accepted: Arc<AtomicUsize>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = post(&url, &batch).await;
        if let Some((200, _)) = answer {
            accepted.fetch_add(batch.len(), Ordering::Relaxed);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a batch was not accepted within 60 s; last answer {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn kill_9_mid_stream_loses_no_event_that_was_answered_200() {
    // The destination is down (nothing listens) until after the restart.
    let (mut proxy, dest_addr) =
        behind_a_down_destination("[delivery]\nretry_base_ms = 200\nmax_attempts = 40\n").await;
    let all = ids("kill9", 5000);
    let accepted = Arc::new(AtomicUsize::new(0));
    // 8 senders, 25 events per batch, like many browsers at once.
    let batches: Vec<Vec<String>> = all.chunks(25).map(|c| c.to_vec()).collect();
    let queue = Arc::new(Mutex::new(batches));
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let (queue, accepted, url) = (queue.clone(), accepted.clone(), proxy.url(""));
            tokio::spawn(async move {
                loop {
                    let Some(batch) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    send_until_accepted(url.clone(), batch, accepted.clone()).await;
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted.load(Ordering::Relaxed) < 2000 {
        assert!(
            Instant::now() < deadline,
            "2000 events not accepted within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.kill9();
    let at_kill = accepted.load(Ordering::Relaxed);
    assert!(at_kill < 5000, "killed mid-stream");
    proxy.restart().await;
    for s in senders {
        s.await.unwrap();
    }
    assert_eq!(accepted.load(Ordering::Relaxed), 5000);
    let recovered = metric_value(&proxy.metrics().await, "tagproxy_spool_recovered_total ");
    assert!(
        recovered >= at_kill as f64,
        "recovered {recovered} of {at_kill} accepted before the kill"
    );

    let dest = Destination::with_script_at(&dest_addr, Script::default()).await;
    let want: HashSet<String> = all.into_iter().collect();
    let got = wait_for_keys(&dest, &want, Duration::from_secs(90)).await;
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in &got {
        *per_id.entry(key(r)).or_default() += 1;
    }
    assert_eq!(per_id.len(), 5000, "only ids that were sent");
    // Batches in flight at the kill (stored, not answered) are sent again by
    // their clients; the restarted collector knows their ids from the spool
    // and does not deliver them twice. Nothing was delivered before the
    // kill, so no delivery can repeat.
    let repeats = got.len() - per_id.len();
    assert_eq!(repeats, 0, "repeated deliveries");
}

#[tokio::test]
async fn a_batch_retried_after_a_crash_is_delivered_once() {
    let (mut proxy, dest_addr) =
        behind_a_down_destination("[delivery]\nretry_base_ms = 100\nmax_attempts = 40\n").await;
    let batch = ids("again", 10);
    assert_eq!(post(&proxy.url(""), &batch).await.unwrap().0, 200);
    // The answer was lost (say), the process crashed; the browser retries.
    proxy.restart().await;
    assert_eq!(post(&proxy.url(""), &batch).await.unwrap().0, 200);
    let dest = Destination::with_script_at(&dest_addr, Script::default()).await;
    let want: HashSet<String> = batch.iter().cloned().collect();
    wait_for_keys(&dest, &want, Duration::from_secs(30)).await;
    proxy.settled().await;
    assert_eq!(dest.requests().len(), 10, "each event once");
    let m = proxy.metrics().await;
    assert_eq!(metric_value(&m, "tagproxy_events_duplicate_total "), 10.0);
}

#[tokio::test]
async fn a_30_second_outage_is_ridden_out_with_backoff_not_a_hot_loop() {
    let origin = Origin::page("text/html", "<html></html>").await;
    let dest = Destination::with_script(Script {
        statuses: vec![503],
        ..Script::default()
    })
    .await;
    let proxy = Proxy::start_tools(
        origin.addr,
        "[delivery]\nretry_base_ms = 200\nretry_max_ms = 4000\nmax_attempts = 30\n",
        &[("hook", hook(&dest.url()))],
    )
    .await;
    let sent = ids("outage", 50);
    assert_eq!(post(&proxy.url(""), &sent).await.unwrap().0, 200);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let m = proxy.metrics().await;
    assert_eq!(
        metric_value(&m, "tagproxy_delivery_queue_depth{tool=\"hook\"}"),
        50.0
    );
    assert!(
        metric_value(
            &m,
            "tagproxy_delivery_oldest_pending_seconds{tool=\"hook\"}"
        ) >= 4.0
    );

    tokio::time::sleep(Duration::from_secs(30) - started.elapsed()).await;
    dest.set_script(Script::default());
    let recovered_at = Instant::now();
    let want: HashSet<String> = sent.iter().cloned().collect();
    let all = async {
        loop {
            let after: HashSet<String> = dest
                .requests()
                .iter()
                .filter(|r| r.at >= recovered_at)
                .map(key)
                .collect();
            if want.is_subset(&after) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("every event delivered after the outage");
    proxy.settled().await;
    let got = dest.requests();
    let during: Vec<&Recorded> = got.iter().filter(|r| r.at < recovered_at).collect();
    let after: Vec<&Recorded> = got.iter().filter(|r| r.at >= recovered_at).collect();
    assert_eq!(
        after.len(),
        50,
        "one successful request per event, then nothing"
    );

    // Backoff, not a hot loop: 200 ms doubling up to the 4 s cap (waits of
    // 2–4 s once there) is about 13 attempts per event in 30 s; without
    // backoff it would be hundreds. Each event's gaps grow until the cap.
    assert!(
        during.len() <= 50 * 16,
        "{} requests during the outage",
        during.len()
    );
    let late = during
        .iter()
        .filter(|r| r.at >= started + Duration::from_secs(20))
        .count();
    assert!(late <= 50 * 5, "{late} requests in the outage's last 10 s");
    // The schedule itself, from the engine's own log line per retry (its
    // planned delay), not from wall-clock gaps, which a loaded machine
    // stretches: attempt k waits in [c/2, c] with c = 200 ms × 2^(k-1),
    // capped at 4 s.
    let mut planned: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    for line in proxy.logs().lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        // JSON log lines carry the event's fields at the top level.
        let f = &v;
        if f["message"] != "delivery will be retried" {
            continue;
        }
        planned
            .entry(f["event_id"].as_str().unwrap().to_string())
            .or_default()
            .push((
                f["attempt"].as_u64().unwrap(),
                f["delay_ms"].as_u64().unwrap(),
            ));
    }
    assert_eq!(planned.len(), 50, "every event was retried");
    for (id, delays) in planned {
        // With 2–4 s waits once capped, 30 s hold at least 8 retries.
        assert!(delays.len() >= 8, "{id}: {delays:?}");
        for (attempt, ms) in delays {
            let ceiling = (200u64 << (attempt - 1).min(20)).min(4000);
            assert!(
                (ceiling / 2..=ceiling).contains(&ms),
                "{id}: attempt {attempt} waits {ms} ms, not within [{}, {ceiling}]",
                ceiling / 2
            );
        }
    }
    let m = proxy.metrics().await;
    assert_eq!(
        metric_value(&m, "tagproxy_delivery_queue_depth{tool=\"hook\"}"),
        0.0
    );
}

#[tokio::test]
async fn a_torn_last_spool_record_is_dropped_and_reported_and_the_rest_delivered() {
    let (mut proxy, dest_addr) =
        behind_a_down_destination("[delivery]\nretry_base_ms = 100\nmax_attempts = 40\n").await;
    let sent = ids("torn", 20);
    assert_eq!(post(&proxy.url(""), &sent).await.unwrap().0, 200);
    proxy.kill9();
    let spool = proxy.dir.path().join("data/spool");
    let mut segments: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let last = segments.last().expect("a spool segment");
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 5)
        .unwrap();

    proxy.restart().await;
    assert!(proxy.logs().contains("torn write"), "{}", proxy.logs());
    let m = proxy.metrics().await;
    assert!(metric_value(&m, "tagproxy_spool_torn_bytes_total ") > 0.0);
    assert_eq!(metric_value(&m, "tagproxy_spool_recovered_total "), 19.0);
    let dest = Destination::with_script_at(&dest_addr, Script::default()).await;
    let want: HashSet<String> = sent[..19].iter().cloned().collect();
    wait_for_keys(&dest, &want, Duration::from_secs(30)).await;
    proxy.settled().await;
    let keys = keys(&dest.requests());
    assert!(
        !keys.contains(&sent[19]),
        "the torn record was never acknowledged"
    );
}

#[tokio::test]
async fn a_full_spool_answers_503_with_retry_after_and_recovers_when_drained() {
    let (proxy, dest_addr) = behind_a_down_destination(
        "[delivery]\nretry_base_ms = 100\nmax_attempts = 40\nspool_max_bytes = 4096\n",
    )
    .await;
    let mut accepted = Vec::new();
    let refused = loop {
        let id = format!("full-{:06}", accepted.len());
        match post(&proxy.url(""), std::slice::from_ref(&id))
            .await
            .unwrap()
        {
            (200, _) => accepted.push(id),
            other => break other,
        }
        assert!(accepted.len() < 1000, "the spool never filled");
    };
    assert_eq!(refused.0, 503);
    assert!(refused.1.is_some(), "503 carries Retry-After");
    assert!(!accepted.is_empty());

    let dest = Destination::with_script_at(&dest_addr, Script::default()).await;
    let want: HashSet<String> = accepted.iter().cloned().collect();
    wait_for_keys(&dest, &want, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if post(&proxy.url(""), &["full-after".to_string()])
            .await
            .unwrap()
            .0
            == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "the spool never drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
