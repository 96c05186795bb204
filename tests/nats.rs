//! `backend = "nats"` end to end (SPEC §11): the real binary against a real
//! `nats-server -js` (Debian's package; tests/run.sh installs it), mock
//! destinations, two instances sharing one stream, `kill -9`, retries
//! through nak, dead-letter replay, and a server that is not there.
//!
//! Without `nats-server` (on PATH or in /usr/sbin) the tests fail: a
//! skipped test must never show as passed.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::events::{hook, ids, key, keys, metric, post_status as post};
use common::{bin, free_port, Destination, Origin, Proxy, Recorded, Script};

/// A `nats-server -js` on a free port with its store in a temp dir; killed
/// when dropped.
struct NatsServer {
    port: u16,
    child: Child,
    /// How it was started, for `restart`.
    exe: PathBuf,
    args: Vec<std::ffi::OsString>,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts one on a port it picks itself (`-p -1`; the port is read
    /// from its log, so parallel tests never race for one). A missing
    /// `nats-server` fails the test: a skipped test must never pass.
    async fn start() -> NatsServer {
        NatsServer::start_at("-1").await
    }

    /// Starts one on `port` (`-1`: one it picks).
    async fn start_at(port: &str) -> NatsServer {
        let exe = nats_server_exe().unwrap_or_else(|| {
            panic!("nats-server is not installed (Debian: apt-get install nats-server, in /usr/sbin; tests/run.sh does it)")
        });
        let dir = tempfile::tempdir().unwrap();
        let args: Vec<std::ffi::OsString> = ["-js", "-a", "127.0.0.1", "-p", port, "-sd"]
            .into_iter()
            .map(Into::into)
            .chain([dir.path().join("store").into()])
            .collect();
        NatsServer::spawn(exe, args, dir).await
    }

    /// Starts `exe` with a config file holding `jetstream_extra` inside its
    /// `jetstream { }` block (for settings that have no command-line flag,
    /// such as `sync_interval`).
    async fn start_with_jetstream(exe: PathBuf, jetstream_extra: &str) -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "host: 127.0.0.1\nport: -1\njetstream {{\n  store_dir: {:?}\n  {jetstream_extra}\n}}\n",
                dir.path().join("store")
            ),
        )
        .unwrap();
        let args = vec!["-c".into(), conf.into_os_string()];
        NatsServer::spawn(exe, args, dir).await
    }

    async fn spawn(
        exe: PathBuf,
        args: Vec<std::ffi::OsString>,
        dir: tempfile::TempDir,
    ) -> NatsServer {
        let (child, port) = NatsServer::run(&exe, &args, dir.path()).await;
        NatsServer {
            port,
            child,
            exe,
            args,
            _dir: dir,
        }
    }

    /// Stops the server and, `down` later, starts it again on the same port
    /// with the same store, as a NATS restart under running clients.
    async fn restart(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        tokio::time::sleep(down).await;
        let port = self.port.to_string();
        let args: Vec<std::ffi::OsString> = self
            .args
            .iter()
            .map(|a| {
                if a == "-1" {
                    port.clone().into()
                } else {
                    a.clone()
                }
            })
            .collect();
        let (child, port) = NatsServer::run(&self.exe, &args, self._dir.path()).await;
        assert_eq!(port, self.port);
        self.child = child;
    }

    /// Runs `exe args`, logging to `dir/nats.log`, until it listens; its
    /// child and port.
    async fn run(
        exe: &PathBuf,
        args: &[std::ffi::OsString],
        dir: &std::path::Path,
    ) -> (Child, u16) {
        let log_path = dir.join("nats.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new(exe)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let port = text.lines().find_map(|l| {
                l.split_once("Listening for client connections on 127.0.0.1:")
                    .and_then(|(_, p)| p.trim().parse::<u16>().ok())
            });
            if let Some(port) = port {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    break port;
                }
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("nats-server exited ({status}):\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not start within 20 s:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        (child, port)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The `[delivery]` table for tagproxy, plus `extra` lines. The stream
    /// is capped at 64 MiB (the tests send kilobytes): JetStream refuses to
    /// create a stream larger than the free disk, and the 1 GiB default
    /// would make the tests depend on the machine's free space.
    fn delivery(&self, extra: &str) -> String {
        format!(
            "[delivery]\nbackend = \"nats\"\nnats_url = \"{}\"\nspool_max_bytes = 67108864\n{extra}\n",
            self.url()
        )
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nats-server` on PATH, or where Debian puts it (`/usr/sbin`, which is
/// not on a normal user's PATH).
fn nats_server_exe() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// Waits (20 s at most) until `tool`'s backlog in the stream, read from
/// its consumer (pending and unacknowledged), is empty: nothing published
/// so far, redeliveries included, can still reach the destination.
async fn drained(proxy: &Proxy, tool: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = proxy.metrics().await;
        if tool_metric(&m, "tagproxy_delivery_queue_depth", tool) == 0.0 {
            return;
        }
        assert!(Instant::now() < deadline, "{tool} never drained:\n{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tool_metric(text: &str, name: &str, tool: &str) -> f64 {
    metric(text, &format!("{name}{{tool=\"{tool}\"}}"))
        .unwrap_or_else(|| panic!("no {name} for {tool} in\n{text}"))
}

/// The same events through the spool and through NATS reach the
/// destinations the same way, each carrying its event id.
#[tokio::test]
async fn events_arrive_as_with_the_spool_carrying_their_event_id() {
    let nats = NatsServer::start().await;
    let origin = Origin::page("text/html", "<html></html>").await;
    let mut seen: Vec<(Vec<Recorded>, Vec<Recorded>)> = Vec::new();
    for backend in ["spool", "nats"] {
        let hook_dest = Destination::start().await;
        let ga_dest = Destination::start().await;
        let ga4 = format!(
            "type = \"google-analytics-4\"\nendpoint = \"{}\"\n[settings]\nmeasurement_id = \"G-TEST123\"\n[automated]\npageview = true\n",
            ga_dest.url()
        );
        let delivery = if backend == "nats" {
            nats.delivery("")
        } else {
            String::new()
        };
        let proxy = Proxy::start_tools(
            origin.addr,
            &delivery,
            &[("hook", hook(&hook_dest.url())), ("ga4", ga4)],
        )
        .await;
        let sent = vec!["same-way-000001".to_string(), "same-way-000002".to_string()];
        assert_eq!(post(&proxy.url(""), &sent).await, Some(200), "{backend}");
        let mut hooks = hook_dest.wait_for(2, Duration::from_secs(15)).await;
        let mut hits = ga_dest.wait_for(2, Duration::from_secs(15)).await;
        hooks.sort_by_key(key);
        hits.sort_by_key(|r| r.param("ep.event_id"));
        assert_eq!(
            hooks.iter().map(key).collect::<Vec<_>>(),
            sent,
            "{backend}: Idempotency-Key is the event id"
        );
        assert_eq!(
            hits.iter()
                .map(|r| r.param("ep.event_id").unwrap())
                .collect::<Vec<_>>(),
            sent,
            "{backend}: GA4 ep.event_id"
        );
        if backend == "nats" {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let m = proxy.metrics().await;
                let done = ["hook", "ga4"].iter().all(|t| {
                    tool_metric(&m, "tagproxy_tool_deliveries_delivered_total", t) == 2.0
                        && tool_metric(&m, "tagproxy_tool_delivery_attempts_total", t) == 2.0
                        && tool_metric(&m, "tagproxy_delivery_queue_depth", t) == 0.0
                });
                if done {
                    break;
                }
                assert!(Instant::now() < deadline, "NATS tool metrics:\n{m}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        seen.push((hooks, hits));
    }
    let (spool, nats_seen) = (&seen[0], &seen[1]);
    for (a, b) in spool.0.iter().zip(&nats_seen.0) {
        assert_eq!(a.method, b.method);
        assert_eq!(a.uri, b.uri);
        assert_eq!(a.headers.get("content-type"), b.headers.get("content-type"));
        let (ja, jb) = (a.json(), b.json());
        assert_eq!(ja["name"], jb["name"]);
        assert_eq!(ja["system"]["page"], jb["system"]["page"]);
    }
    for (a, b) in spool.1.iter().zip(&nats_seen.1) {
        let strip = |r: &Recorded| -> Vec<(String, String)> {
            // Per-visitor and per-request values differ between two runs.
            r.query()
                .into_iter()
                .filter(|(k, _)| {
                    !["cid", "sid", "_s", "sct", "_p", "seg", "_et"].contains(&k.as_str())
                })
                .collect()
        };
        assert_eq!(a.path(), b.path());
        assert_eq!(strip(a), strip(b));
    }
}

/// A retried batch is stored once by JetStream (`Nats-Msg-Id`), even when
/// the retry reaches a restarted instance that no longer remembers the ids;
/// two deliveries of one event to one tool do not collide.
#[tokio::test]
async fn a_retried_batch_is_delivered_once_across_a_restart() {
    let nats = NatsServer::start().await;
    let origin = Origin::page("text/html", "<html></html>").await;
    let dest = Destination::start().await;
    // Every pageview makes two deliveries to this tool: two custom
    // `request` actions fire on it.
    let tool = format!(
        "type = \"http\"\n[[actions]]\nname = \"one\"\nkind = \"request\"\nfiring = [\"Pageview\"]\n[actions.fields]\nurl = \"{0}/hook\"\n[[actions]]\nname = \"two\"\nkind = \"request\"\nfiring = [\"Pageview\"]\n[actions.fields]\nurl = \"{0}/extra\"\n",
        dest.url()
    );
    let mut proxy = Proxy::start_tools(origin.addr, &nats.delivery(""), &[("hook", tool)]).await;
    let batch = ids("retried", 3);
    assert_eq!(post(&proxy.url(""), &batch).await, Some(200));
    dest.wait_for(6, Duration::from_secs(15)).await;
    // Acknowledged before the kill: a delivery the destination got but
    // JetStream never heard acked is redelivered after the ack wait (at
    // least once, by design), which is not what this test is about.
    drained(&proxy, "hook").await;

    // A new process: its in-memory dedupe is empty, so only JetStream can
    // tell the retry from new events.
    proxy.restart().await;
    assert_eq!(post(&proxy.url(""), &batch).await, Some(200));
    // And once more to the same process.
    assert_eq!(post(&proxy.url(""), &batch).await, Some(200));
    // A fresh event after the retries: once its two deliveries are in and
    // the tool's backlog is empty, nothing of the retried batch is left.
    // (The submitted count includes publishes JetStream deduplicated, so
    // `Proxy::settled` cannot tell here.)
    let marker = ids("marker", 1);
    assert_eq!(post(&proxy.url(""), &marker).await, Some(200));
    let arrived = |got: &[Recorded]| got.iter().filter(|r| key(r) == marker[0]).count();
    let deadline = Instant::now() + Duration::from_secs(15);
    while arrived(&dest.requests()) < 2 {
        assert!(Instant::now() < deadline, "the marker never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drained(&proxy, "hook").await;
    let got: Vec<Recorded> = dest
        .requests()
        .into_iter()
        .filter(|r| key(r) != marker[0])
        .collect();
    let mut per_key_path: HashMap<(String, String), usize> = HashMap::new();
    for r in &got {
        *per_key_path
            .entry((key(r), r.path().to_string()))
            .or_default() += 1;
    }
    let want: HashMap<(String, String), usize> = batch
        .iter()
        .flat_map(|id| {
            [
                ((id.clone(), "/hook".to_string()), 1),
                ((id.clone(), "/extra".to_string()), 1),
            ]
        })
        .collect();
    assert_eq!(per_key_path, want, "each delivery exactly once");
}

/// The browser's behaviour behind a load balancer: a batch that got no
/// answer or a 503 is sent again (to the next instance) until answered 200
/// (for 60 s at most: then the test fails).
async fn send_until_accepted(urls: Arc<Vec<String>>, start: usize, batch: Vec<String>) {
    let mut i = start;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = post(&urls[i % urls.len()], &batch).await;
        if answer == Some(200) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a batch was not accepted within 60 s; last answer {answer:?}"
        );
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two instances consume one stream; one is killed with `kill -9` mid-load;
/// every event answered 200 arrives at least once.
#[tokio::test]
async fn two_instances_share_the_stream_and_kill_9_loses_nothing() {
    let nats = NatsServer::start().await;
    let origin = Origin::page("text/html", "<html></html>").await;
    // A little latency, so deliveries are in flight when the kill comes.
    let dest = Destination::with_script(Script {
        delay: Duration::from_millis(100),
        ..Script::default()
    })
    .await;
    let delivery =
        nats.delivery("timeout_ms = 2000\nconcurrency_per_tool = 16\nretry_base_ms = 100");
    let mut a = Proxy::start_tools(origin.addr, &delivery, &[("hook", hook(&dest.url()))]).await;
    let b = Proxy::start_tools(origin.addr, &delivery, &[("hook", hook(&dest.url()))]).await;
    let urls = Arc::new(vec![a.url(""), b.url("")]);

    let all = ids("shared", 2000);
    let batches: Vec<Vec<String>> = all.chunks(10).map(|c| c.to_vec()).collect();
    let queue = Arc::new(Mutex::new(
        batches.into_iter().enumerate().collect::<Vec<_>>(),
    ));
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let (queue, urls, accepted, done) =
                (queue.clone(), urls.clone(), accepted.clone(), done.clone());
            tokio::spawn(async move {
                loop {
                    let Some((n, batch)) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    // Spread over both instances.
                    send_until_accepted(urls.clone(), n, batch.clone()).await;
                    done.fetch_add(batch.len(), Ordering::Relaxed);
                    accepted.lock().unwrap().extend(batch);
                }
            })
        })
        .collect();
    // Both instances deliver before the kill.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ma, mb) = (a.metrics().await, b.metrics().await);
        let attempts = |m: &str| {
            metric(m, "tagproxy_tool_delivery_attempts_total{tool=\"hook\"}").unwrap_or(0.0)
        };
        if attempts(&ma) >= 50.0 && attempts(&mb) >= 50.0 && done.load(Ordering::Relaxed) >= 800 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both instances should consume; a:\n{ma}\nb:\n{mb}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill9();
    let at_kill = done.load(Ordering::Relaxed);
    assert!(at_kill < all.len(), "killed mid-load ({at_kill} accepted)");
    for s in senders {
        s.await.unwrap();
    }
    let accepted: HashSet<String> = accepted.lock().unwrap().iter().cloned().collect();
    assert_eq!(
        accepted.len(),
        all.len(),
        "every batch was answered 200 in the end"
    );
    // What `a` held unacknowledged comes back to `b` after ack_wait
    // (2 × 2 s, at least 12 s).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = dest.requests();
        let mut count: HashMap<String, usize> = HashMap::new();
        for r in &got {
            *count.entry(key(r)).or_default() += 1;
        }
        let duplicates: usize = count.values().map(|n| n - 1).sum();
        let missing = accepted.iter().filter(|k| !count.contains_key(*k)).count();
        let summary = format!(
            "{} events accepted ({at_kill} before the kill), {} requests, {missing} accepted ids missing, {duplicates} duplicates",
            accepted.len(),
            got.len()
        );
        if missing == 0 {
            eprintln!("{summary}");
            assert!(
                count.keys().all(|k| accepted.contains(k)),
                "nothing that was not sent: {summary}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "every event answered 200 arrives: {summary}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 503, 503, 200: three attempts, spaced by the backoff (naks with a
/// delay), then nothing more.
#[tokio::test]
async fn a_nak_retries_503_twice_then_200_exactly_three_attempts() {
    let nats = NatsServer::start().await;
    let origin = Origin::page("text/html", "<html></html>").await;
    let dest = Destination::with_script(Script {
        statuses: vec![503, 503, 200],
        ..Script::default()
    })
    .await;
    let proxy = Proxy::start_tools(
        origin.addr,
        &nats.delivery("retry_base_ms = 300"),
        &[("hook", hook(&dest.url()))],
    )
    .await;
    let id = "nak-retry-000001".to_string();
    assert_eq!(
        post(&proxy.url(""), std::slice::from_ref(&id)).await,
        Some(200)
    );
    let got = dest.wait_for(3, Duration::from_secs(15)).await;
    // The first retry waits 150–300 ms, the second 300–600 ms.
    let gaps = [got[1].at - got[0].at, got[2].at - got[1].at];
    assert!(
        gaps[0] >= Duration::from_millis(140) && gaps[1] >= Duration::from_millis(290),
        "backoff between attempts: {gaps:?}"
    );
    proxy.settled().await;
    drained(&proxy, "hook").await;
    let got = dest.requests();
    assert_eq!(got.len(), 3, "exactly three attempts");
    assert!(got.iter().all(|r| key(r) == id));
    assert!(got.windows(2).all(|w| w[0].body == w[1].body));
    let m = proxy.metrics().await;
    assert_eq!(
        tool_metric(&m, "tagproxy_tool_delivery_attempts_total", "hook"),
        3.0
    );
    assert_eq!(
        tool_metric(&m, "tagproxy_tool_delivery_retries_total", "hook"),
        2.0
    );
    assert_eq!(
        tool_metric(&m, "tagproxy_tool_deliveries_delivered_total", "hook"),
        1.0
    );
}

/// A process that starts with deliveries already in the stream (queued by
/// a process before it, or by another instance) sends them without waiting
/// for an event of its own: every configured tool gets its consumer at
/// start, not at its first submit.
#[tokio::test]
async fn a_backlog_in_the_stream_is_delivered_by_a_new_process_before_any_event() {
    let (_nats, _origin, dest, mut proxy, batch) =
        refused_backlog(vec![503], "retry_base_ms = 200", "backlog", 3).await;
    proxy.kill9();
    dest.set_script(Script::default());
    let before = dest.requests().len();
    proxy.restart().await;
    // No event is sent to the new process. A delivery in flight at the kill
    // comes back after the consumer's ack wait (at least 10 s).
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let after = keys(&dest.requests()[before..]);
        if batch.iter().all(|id| after.contains(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the backlog was not delivered by the new process: {after:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A proxy started before its NATS server (a cluster and its clients
/// brought up together) keeps trying for a few seconds instead of exiting
/// at once, then delivers as usual.
#[tokio::test]
async fn serve_waits_a_few_seconds_for_nats_to_come_up() {
    // The port is picked before the server exists (it must be in the
    // proxy's config); nothing else binds it in the 1.5 s before.
    let port = free_port();
    let origin = Origin::page("text/html", "<html></html>").await;
    let dest = Destination::start().await;
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        NatsServer::start_at(&port.to_string()).await
    });
    let delivery = format!(
        "[delivery]\nbackend = \"nats\"\nnats_url = \"nats://127.0.0.1:{port}\"\nspool_max_bytes = 67108864\n"
    );
    let proxy = Proxy::start_tools(origin.addr, &delivery, &[("hook", hook(&dest.url()))]).await;
    let _nats = late.await.unwrap();
    let id = ids("late-nats", 1);
    assert_eq!(post(&proxy.url(""), &id).await, Some(200));
    let got = dest.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(key(&got[0]), id[0]);
}

/// `tagproxy deadletter replay` puts a dead letter back through NATS: its
/// message id is new, so JetStream does not take it for the original.
#[tokio::test]
async fn a_replayed_dead_letter_is_delivered_again_through_nats() {
    let nats = NatsServer::start().await;
    let origin = Origin::page("text/html", "<html></html>").await;
    let dest = Destination::with_script(Script {
        statuses: vec![400, 200],
        ..Script::default()
    })
    .await;
    let proxy = Proxy::start_tools(
        origin.addr,
        &nats.delivery(""),
        &[("hook", hook(&dest.url()))],
    )
    .await;
    let id = "replay-nats-000001".to_string();
    assert_eq!(
        post(&proxy.url(""), std::slice::from_ref(&id)).await,
        Some(200)
    );
    dest.wait_for(1, Duration::from_secs(15)).await;
    let deadletter = |args: &[&str]| {
        let out = Command::new(bin())
            .arg("deadletter")
            .args(args)
            .arg("-c")
            .arg(&proxy.config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while deadletter(&["list", "--json"]).trim().is_empty() {
        assert!(Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = deadletter(&["replay"]);
    assert!(out.starts_with("replayed 1 dead letter"), "{out}");
    let got = dest.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(key(&got[1]), id);
    assert_eq!(
        got[1].body, got[0].body,
        "the replay is the original request"
    );
    proxy.settled().await;
    drained(&proxy, "hook").await;
    assert_eq!(dest.requests().len(), 2, "replayed once");
    assert!(deadletter(&["list", "--json"]).trim().is_empty());
}

/// While a destination is down, `/metrics` shows the tool's backlog and its
/// age, read from the consumer (pending + unacknowledged).
#[tokio::test]
async fn queue_depth_and_age_come_from_the_consumer() {
    let nats = NatsServer::start().await;
    let origin = Origin::page("text/html", "<html></html>").await;
    // Nothing listens there.
    let down = format!("http://127.0.0.1:{}", free_port());
    let proxy = Proxy::start_tools(
        origin.addr,
        &nats.delivery(
            "retry_base_ms = 60000
max_attempts = 3",
        ),
        &[("down", hook(&down))],
    )
    .await;
    let posted = Instant::now();
    assert_eq!(post(&proxy.url(""), &ids("backlog", 5)).await, Some(200));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = proxy.metrics().await;
        let depth = tool_metric(&m, "tagproxy_delivery_queue_depth", "down");
        let age = tool_metric(&m, "tagproxy_delivery_oldest_pending_seconds", "down");
        if depth == 5.0 && age > 0.5 {
            // In seconds: never older than the events themselves.
            let since = posted.elapsed().as_secs_f64();
            assert!(age <= since + 0.25, "age {age} s, posted {since} s ago");
            assert_eq!(
                tool_metric(&m, "tagproxy_tool_delivery_retries_total", "down"),
                5.0
            );
            break;
        }
        assert!(Instant::now() < deadline, "depth {depth}, age {age}:\n{m}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// No NATS server at `nats_url`: `serve` exits 1 and says where it looked.
/// (Needs no nats-server.)
#[test]
fn serve_exits_1_naming_nats_url_when_nats_is_unreachable() {
    let url = format!("nats://127.0.0.1:{}", free_port());
    let (dir, path) = common::write_config(&format!(
        "[server]\n{}\nupstream = \"http://127.0.0.1:9\"\n[delivery]\nbackend = \"nats\"\nnats_url = \"{url}\"\n",
        common::LISTEN_ANY
    ));
    let started = Instant::now();
    let out = Command::new(bin())
        .args(["serve", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot connect to NATS at {url}")),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(dir);
}

/// A current nats-server (JetStream's `sync_interval` arrived after Debian
/// 12's 2.9.10, which rejects the key): `TAGPROXY_NATS_SERVER_CURRENT`, which
/// tests/run.sh sets after installing one under target/tools/nats. Missing
/// fails the test, never skips it.
fn current_nats_server() -> PathBuf {
    let exe = std::env::var_os("TAGPROXY_NATS_SERVER_CURRENT")
        .map(PathBuf::from)
        .or_else(|| {
            let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/nats/bin/nats-server");
            p.is_file().then_some(p)
        })
        .unwrap_or_else(|| {
            panic!("no current nats-server: run tests/run.sh (it installs one under target/tools/nats) or set TAGPROXY_NATS_SERVER_CURRENT")
        });
    assert!(exe.is_file(), "{} is not a file", exe.display());
    exe
}

/// "200 means stored" across a simultaneous power failure needs JetStream to
/// fsync before it acknowledges; its default flushes every two minutes
/// (https://docs.nats.io/running-a-nats-service/configuration#jetstream-server-settings,
/// and Jepsen's NATS 2.12.1 analysis, https://jepsen.io/analyses/nats-2.12.1,
/// which lost acknowledged writes that way). The shipped cluster config sets
/// `sync_interval: always` inside its `jetstream` block, and a current
/// nats-server accepts the whole file.
#[test]
fn the_shipped_cluster_config_fsyncs_before_acknowledging() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/nats/nats-cluster.conf");
    let text = std::fs::read_to_string(&path).unwrap();
    let block = text
        .split_once("\njetstream {")
        .and_then(|(_, rest)| rest.split_once("\n}"))
        .map(|(block, _)| block)
        .expect("a jetstream { } block");
    assert!(
        block.lines().any(|l| l.trim() == "sync_interval: always"),
        "sync_interval: always is not set in the jetstream block:\n{block}"
    );
    let out = Command::new(current_nats_server())
        .env("SERVER_NAME", "nats-1")
        .arg("-c")
        .arg(&path)
        .arg("-t")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nats-server -t rejects {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// tagproxy works unchanged against a JetStream that fsyncs before every
/// acknowledgement (the shipped setting): events are accepted, then
/// delivered through the consumer, and the backlog drains.
#[tokio::test]
async fn events_flow_through_a_jetstream_that_syncs_every_write() {
    let nats =
        NatsServer::start_with_jetstream(current_nats_server(), "sync_interval: always").await;
    let origin = Origin::page("text/html", "<html></html>").await;
    let dest = Destination::start().await;
    let proxy = Proxy::start_tools(
        origin.addr,
        &nats.delivery(""),
        &[("hook", hook(&dest.url()))],
    )
    .await;
    let sent: Vec<String> = (1..=5).map(|i| format!("synced-write-{i:04}")).collect();
    assert_eq!(post(&proxy.url(""), &sent).await, Some(200));
    let mut got = dest.wait_for(5, Duration::from_secs(20)).await;
    got.sort_by_key(key);
    assert_eq!(got.iter().map(key).collect::<Vec<_>>(), sent);
    drained(&proxy, "hook").await;
}

/// Batched delivery through NATS (SPEC §8): 20 Meta events go out in fewer
/// requests ("up to 1,000 events in `data`",
/// <https://developers.facebook.com/docs/marketing-api/conversions-api/using-the-api#batch-requests>),
/// each acked on its own outcome: the one event Meta refuses (it rejects the
/// whole batch for it) is found by splitting and dead-lettered alone, the 19
/// others are delivered once and the stream drains.
#[tokio::test]
async fn meta_events_are_batched_and_a_refused_one_is_isolated_through_nats() {
    fn refuse_stale(r: &Recorded) -> Option<(u16, String)> {
        let stale = r
            .deliveries()
            .iter()
            .any(|d| d.json()["data"][0]["event_name"] == "Stale");
        stale.then(|| {
            (
                400,
                r#"{"error":{"message":"Invalid parameter","type":"OAuthException","code":100,"error_user_msg":"The timestamp for this event is older than 7 days."}}"#.to_string(),
            )
        })
    }
    let nats = NatsServer::start().await;
    let origin = Origin::page("text/html", "<html></html>").await;
    let meta = Destination::start().await;
    meta.set_refuse(refuse_stale);
    let proxy = Proxy::start_tools(
        origin.addr,
        &nats.delivery("batch_linger_ms = 300"),
        &[("meta", meta_tool(&meta.url()))],
    )
    .await;
    let all = ids("natsbatch", 20);
    post_tracks(&proxy, &all, |i| if i == 13 { "Stale" } else { "Lead" }).await;
    let delivered = |raw: &[Recorded]| -> Vec<String> {
        raw.iter()
            .filter(|r| refuse_stale(r).is_none())
            .flat_map(Recorded::deliveries)
            .map(|d| {
                d.json()["data"][0]["event_id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while delivered(&meta.raw_requests()).len() < 19 {
        assert!(Instant::now() < deadline, "not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.settled().await;
    let raw = meta.raw_requests();
    let delivered = delivered(&raw);
    let unique: HashSet<&String> = delivered.iter().collect();
    assert_eq!(unique.len(), 19, "{delivered:?}");
    assert_eq!(delivered.len(), 19, "each once");
    assert!(!unique.contains(&all[13]));
    assert!(
        raw.iter()
            .any(|r| refuse_stale(r).is_none() && r.deliveries().len() > 1),
        "delivered in batches: {} requests",
        raw.len()
    );
    let out = Command::new(bin())
        .args(["deadletter", "list", "--json", "-c"])
        .arg(&proxy.config)
        .output()
        .unwrap();
    let letters: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 1, "{letters:#?}");
    assert_eq!(letters[0]["event_id"], all[13].as_str());
    assert_eq!(letters[0]["status"], 400);
}

/// Each tool's durable consumer is made as the README says: explicit acks,
/// an ack wait of twice the delivery timeout (at least the timeout plus
/// 10 s), `max_ack_pending` of 8 per slot of `concurrency_per_tool`, and no
/// redelivery cap (the retry policy decides). The values are chosen apart
/// from JetStream's own defaults (30 s, 1,000), so a field left out shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tools_consumer_has_the_documented_settings() {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    let nats = NatsServer::start().await;
    let origin = Origin::page("text/html", "<html></html>").await;
    let down = format!("http://127.0.0.1:{}", free_port());
    let mut proxy = Proxy::start_tools(
        origin.addr,
        &nats.delivery(
            "timeout_ms = 20000
concurrency_per_tool = 3
max_age_s = 3600",
        ),
        &[("down", hook(&down))],
    )
    .await;
    let client = async_nats::connect(format!("127.0.0.1:{}", nats.port))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    // The consumer is made at start, before any event.
    let deadline = Instant::now() + Duration::from_secs(20);
    let config = loop {
        let found = match js.get_stream("TAGPROXY").await {
            Ok(stream) => stream
                .get_consumer::<pull::Config>("tagproxy-down")
                .await
                .ok(),
            Err(_) => None,
        };
        if let Some(mut consumer) = found {
            break consumer.info().await.unwrap().config.clone();
        }
        assert!(Instant::now() < deadline, "no consumer tagproxy-down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(config.ack_policy, AckPolicy::Explicit);
    assert_eq!(config.ack_wait, Duration::from_secs(40));
    assert_eq!(config.max_ack_pending, 24);
    assert!(
        config.max_deliver <= 0,
        "max_deliver {}",
        config.max_deliver
    );
    assert_eq!(config.filter_subject, "tagproxy.deliveries.down");
    assert_eq!(
        config.description.as_deref(),
        Some("tagproxy deliveries to `down`")
    );
    // And the stream: kept a day past `max_age_s` (deliveries older than
    // that are dead-lettered, not dropped), a `Nats-Msg-Id` remembered an
    // hour, new messages refused when full (the collector answers 503).
    let stream = stream_config(&js).await;
    assert_eq!(stream.max_age, Duration::from_secs(3600 + 86_400));
    assert_eq!(stream.duplicate_window, Duration::from_secs(3600));
    assert_eq!(stream.max_bytes, 67_108_864, "spool_max_bytes");
    assert_eq!(
        stream.discard,
        async_nats::jetstream::stream::DiscardPolicy::New
    );
    assert!(stream
        .subjects
        .contains(&"tagproxy.deliveries.>".to_string()));
    // A work queue on disk: a message is gone once acked, and survives a
    // server restart.
    assert_eq!(
        stream.retention,
        async_nats::jetstream::stream::RetentionPolicy::WorkQueue
    );
    assert_eq!(
        stream.storage,
        async_nats::jetstream::stream::StorageType::File
    );
    assert_eq!(
        stream.description.as_deref(),
        Some("tagproxy deliveries owed (SPEC §11)")
    );

    // A restart with other settings brings the stream up to date.
    let text = std::fs::read_to_string(&proxy.config).unwrap();
    std::fs::write(
        &proxy.config,
        text.replace("max_age_s = 3600", "max_age_s = 7200"),
    )
    .unwrap();
    proxy.restart().await;
    let stream = stream_config(&js).await;
    assert_eq!(stream.max_age, Duration::from_secs(7200 + 86_400));
}

/// The `TAGPROXY` stream's configuration as the server holds it.
async fn stream_config(
    js: &async_nats::jetstream::Context,
) -> async_nats::jetstream::stream::Config {
    let mut stream = js.get_stream("TAGPROXY").await.unwrap();
    stream.info().await.unwrap().config.clone()
}

/// A message without tagproxy's `Tagproxy-Accepted-Ms` header (published
/// by hand, or by a tool other than tagproxy) is aged from the time
/// JetStream stored it: it is tried and retried like any other, not
/// taken for one older than `max_age_s` and dead-lettered, and the
/// oldest-pending gauge reads seconds, not decades.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_without_our_header_is_aged_from_its_publish_time() {
    let (nats, _origin, dest, mut proxy, batch) = refused_backlog(
        vec![503; 100],
        "retry_base_ms = 60000\nmax_attempts = 5\nmax_age_s = 3600",
        "headerless",
        1,
    )
    .await;
    proxy.kill9();

    // The stored delivery, published again without any header.
    let client = async_nats::connect(format!("127.0.0.1:{}", nats.port))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("TAGPROXY").await.unwrap();
    let subject = "tagproxy.deliveries.hook";
    let stored = stream
        .get_last_raw_message_by_subject(subject)
        .await
        .unwrap();
    assert!(
        stored.headers.get("Tagproxy-Accepted-Ms").is_some(),
        "tagproxy's own message carries the header"
    );
    js.publish(subject, stored.payload.clone())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(stream.delete_message(stored.sequence).await.unwrap());

    let before = dest.requests().len();
    proxy.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = proxy.metrics().await;
        let depth = tool_metric(&m, "tagproxy_delivery_queue_depth", "hook");
        let age = tool_metric(&m, "tagproxy_delivery_oldest_pending_seconds", "hook");
        let retried = tool_metric(&m, "tagproxy_tool_delivery_retries_total", "hook");
        let dead = tool_metric(&m, "tagproxy_tool_dead_letters_total", "hook");
        assert_eq!(dead, 0.0, "taken for too old:\n{m}");
        if retried == 1.0 && depth == 1.0 && age > 0.0 {
            assert!(age < 60.0, "oldest pending {age} s:\n{m}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the header-less message was not tried and kept (depth {depth}, age {age}):\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(batch
        .iter()
        .all(|id| keys(&dest.requests()[before..]).contains(id)));
}

/// `batch_max_events = 1` through NATS: a destination with a batch API
/// gets one event per request, each at once (no linger, no second fetch
/// for more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_max_events_1_sends_one_event_per_request_through_nats() {
    let nats = NatsServer::start().await;
    let origin = Origin::page("text/html", "<html></html>").await;
    let meta = Destination::start().await;
    let proxy = Proxy::start_tools(
        origin.addr,
        &nats.delivery("batch_linger_ms = 200\nbatch_max_events = 1"),
        &[("meta", meta_tool(&meta.url()))],
    )
    .await;
    let all = ids("natsone", 5);
    post_tracks(&proxy, &all, |_| "Lead").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while meta.raw_requests().len() < all.len() {
        assert!(
            Instant::now() < deadline,
            "{} of 5 requests",
            meta.raw_requests().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.settled().await;
    let raw = meta.raw_requests();
    let sent: Vec<usize> = raw.iter().map(|r| r.deliveries().len()).collect();
    assert_eq!(sent, [1; 5], "events per request");
}

/// NATS restarted under a running proxy (an upgrade, a crash): the
/// collector answers 503 while it is away (nothing is lost), and once it
/// is back each tool's consumer is set up again and deliveries resume,
/// without restarting tagproxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_resume_after_nats_restarts() {
    let mut nats = NatsServer::start().await;
    let origin = Origin::page("text/html", "<html></html>").await;
    let dest = Destination::start().await;
    let proxy = Proxy::start_tools(
        origin.addr,
        &nats.delivery(""),
        &[("hook", hook(&dest.url()))],
    )
    .await;
    let before = ids("before-restart", 1);
    assert_eq!(post(&proxy.url(""), &before).await, Some(200));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !keys(&dest.requests()).contains(&before[0]) {
        assert!(
            Instant::now() < deadline,
            "not delivered before the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Away long enough for the consumers' set-up to fail a few times.
    nats.restart(Duration::from_secs(3)).await;
    let after = ids("after-restart", 1);
    let urls = Arc::new(vec![proxy.url("")]);
    tokio::time::timeout(
        Duration::from_secs(30),
        send_until_accepted(urls, 0, after.clone()),
    )
    .await
    .expect("the collector never took the event after NATS came back");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !keys(&dest.requests()).contains(&after[0]) {
        assert!(
            Instant::now() < deadline,
            "deliveries did not resume after NATS restarted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Meta Conversions API tool at `url` taking tracks.
fn meta_tool(url: &str) -> String {
    format!(
        "type = \"facebook-pixel\"\nendpoint = \"{url}\"\n[settings]\npixel_id = \"1234567890\"\naccess_token = \"tok_abc\"\n[automated]\ntrack = true\n"
    )
}

/// Posts one track per id in one batch, the `i`th named `name(i)`; the
/// collector must answer 200.
async fn post_tracks(proxy: &Proxy, ids: &[String], name: impl Fn(usize) -> &'static str) {
    let events: Vec<serde_json::Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut e = common::events::pageview(id);
            e["type"] = "track".into();
            e["name"] = name(i).into();
            e
        })
        .collect();
    let resp = common::client()
        .post(proxy.url("/_tagproxy/t"))
        .header("content-type", "application/json")
        .header("user-agent", common::events::UA)
        .body(serde_json::Value::Array(events).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// NATS, an origin, a tool `hook` whose destination answers `statuses` in
/// turn, and a proxy with `[delivery]` `extra`; `n` events (ids
/// `prefix`…) posted and each tried (and refused) at least once, so they
/// wait in the stream.
async fn refused_backlog(
    statuses: Vec<u16>,
    extra: &str,
    prefix: &str,
    n: usize,
) -> (NatsServer, Origin, Destination, Proxy, Vec<String>) {
    let nats = NatsServer::start().await;
    let origin = Origin::page("text/html", "<html></html>").await;
    let dest = Destination::with_script(Script {
        statuses,
        ..Script::default()
    })
    .await;
    let proxy = Proxy::start_tools(
        origin.addr,
        &nats.delivery(extra),
        &[("hook", hook(&dest.url()))],
    )
    .await;
    let batch = ids(prefix, n);
    assert_eq!(post(&proxy.url(""), &batch).await, Some(200));
    let deadline = Instant::now() + Duration::from_secs(20);
    while keys(&dest.requests()).len() < batch.len() {
        assert!(Instant::now() < deadline, "not every delivery was tried");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (nats, origin, dest, proxy, batch)
}
