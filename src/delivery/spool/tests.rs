//! Spool recovery: what was appended and not acked comes back, torn tails
//! are cut, settled segments are deleted.

use super::*;
use crate::tools::{Delivery, Payload};

fn delivery(i: usize) -> Delivery {
    Delivery {
        tool: if i.is_multiple_of(2) { "ga4" } else { "meta" }.into(),
        event_id: format!("event-{i:06}"),
        payload: Payload::Stdout(format!("line {i}")),
        source: None,
        secrets: Vec::new(),
    }
}

/// Records for deliveries `range`, accepted at time 0.
fn bodies(range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    range
        .map(|i| record::encode_body(0, &delivery(i)))
        .collect()
}

fn open(dir: &Path) -> (Spool, Recovery) {
    Spool::open(dir, 1 << 30, Arc::new(Metrics::default())).unwrap()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn appended_and_unacked_deliveries_come_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, recovery) = open(dir.path());
    assert!(recovery.pending.is_empty());
    let placed = spool
        .append(
            (0..10)
                .map(|i| record::encode_body(1000 + i as u64, &delivery(i)))
                .collect(),
        )
        .await
        .unwrap();
    assert_eq!(placed.len(), 10);
    for (seq, loc) in &placed[..4] {
        assert_eq!(spool.read(*loc).unwrap().seq, *seq);
        spool.ack(*seq);
    }
    spool.flush().await;
    drop(spool);

    let (spool, recovery) = open(dir.path());
    let seqs: Vec<u64> = recovery.pending.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, placed[4..].iter().map(|p| p.0).collect::<Vec<_>>());
    let first = &recovery.pending[0];
    assert_eq!(&*first.tool, "ga4");
    assert_eq!(first.accepted_ms, 1004);
    assert_eq!(spool.read(first.loc).unwrap().delivery, delivery(4));
    // New appends never reuse a pending sequence number.
    let more = spool
        .append(vec![record::encode_body(1, &delivery(99))])
        .await
        .unwrap();
    assert!(more[0].0 > placed[9].0);
}

#[tokio::test]
async fn a_torn_last_record_is_cut_off_and_the_rest_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    spool.append(bodies(0..5)).await.unwrap();
    drop(spool);
    let seg = segments(dir.path()).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    // Cut the last record in half.
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 7)
        .unwrap();

    let (spool, recovery) = open(dir.path());
    assert_eq!(recovery.pending.len(), 4);
    assert!(recovery.torn_bytes > 0);
    for r in &recovery.pending {
        spool.read(r.loc).unwrap();
    }
    drop(spool);
    // The cut is permanent: the next start finds nothing torn.
    let (_, recovery) = open(dir.path());
    assert_eq!((recovery.pending.len(), recovery.torn_bytes), (4, 0));
}

#[tokio::test]
async fn garbage_after_the_last_record_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    spool
        .append(vec![record::encode_body(0, &delivery(1))])
        .await
        .unwrap();
    drop(spool);
    let seg = segments(dir.path()).pop().unwrap();
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[0xff; 100]).unwrap();
    let (_, recovery) = open(dir.path());
    assert_eq!(recovery.pending.len(), 1);
    assert_eq!(recovery.torn_bytes, 100);
}

#[tokio::test]
async fn settled_segments_are_deleted_and_stale_acks_never_hit_new_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let placed = spool.append(bodies(0..3)).await.unwrap();
    for (seq, _) in &placed {
        spool.ack(*seq);
    }
    spool.flush().await;
    drop(spool);
    // All settled: reopening deletes the segment and its acks.
    let (spool, recovery) = open(dir.path());
    assert!(recovery.pending.is_empty());
    assert!(segments(dir.path()).is_empty());
    let again = spool.append(bodies(0..3)).await.unwrap();
    drop(spool);
    let (_, recovery) = open(dir.path());
    assert_eq!(
        recovery.pending.iter().map(|r| r.seq).collect::<Vec<_>>(),
        again.iter().map(|p| p.0).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn concurrent_appends_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let (spool, _) = Spool::open(dir.path(), 1 << 30, metrics.clone()).unwrap();
    let spool = Arc::new(spool);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let spool = spool.clone();
            tokio::spawn(async move {
                spool
                    .append(vec![record::encode_body(0, &delivery(i))])
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap()[0].0);
    }
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 200, "every append got its own sequence number");
    let fsyncs = metrics.spool_fsyncs.load(Ordering::Relaxed);
    assert!((1..=200).contains(&fsyncs), "{fsyncs}");
}

/// Group commit, bounded tightly: 200 appends that queue up while the
/// writer is busy are written with exactly one fsync. Turning group commit
/// off (one fsync per append) makes this 200.
#[tokio::test]
async fn appends_queued_during_a_commit_share_exactly_one_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let (spool, _) = Spool::open(dir.path(), 1 << 30, metrics.clone()).unwrap();
    let (release, gate) = mpsc::channel();
    spool.tx.send(Command::Hold(gate)).unwrap();
    let replies: Vec<_> = (0..200)
        .map(|i| {
            let (reply, rx) = oneshot::channel();
            let items = vec![record::encode_body(0, &delivery(i))];
            spool
                .tx
                .send(Command::Append {
                    items,
                    attached: Vec::new(),
                    reply,
                })
                .unwrap();
            rx
        })
        .collect();
    release.send(()).unwrap();
    let mut seqs = Vec::new();
    for rx in replies {
        seqs.push(rx.await.unwrap().unwrap()[0].0);
    }
    assert_eq!(
        seqs,
        (seqs[0]..seqs[0] + 200).collect::<Vec<_>>(),
        "in order"
    );
    assert_eq!(metrics.spool_fsyncs.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_full_spool_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), 64, Arc::new(Metrics::default())).unwrap();
    assert!(!spool.is_full());
    spool.append(bodies(0..3)).await.unwrap();
    assert!(spool.is_full());
}

#[tokio::test]
async fn a_drained_spool_at_its_limit_shrinks_back() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(dir.path(), 200, Arc::new(Metrics::default())).unwrap();
    let placed = spool.append(bodies(0..5)).await.unwrap();
    assert!(spool.is_full());
    for (seq, _) in placed {
        spool.ack(seq);
    }
    spool.flush().await;
    assert!(!spool.is_full(), "{} bytes", spool.bytes());
    assert!(segments(dir.path()).is_empty());
    spool
        .append(vec![record::encode_body(0, &delivery(9))])
        .await
        .unwrap();
}

/// Every record of `tool` a reader finds from the start of the spool, a
/// few at a time (as the delivery engine refills a window).
fn scan_all(spool: &Spool, tool: &str, per_read: usize) -> Vec<u64> {
    let first = *spool.segments.lock().unwrap().iter().next().unwrap();
    let mut at = Cursor {
        segment: first,
        offset: 0,
    };
    let mut acks = ScanCache::default();
    let mut seqs = Vec::new();
    loop {
        let got = spool
            .scan(at, tool, per_read, usize::MAX, &mut acks)
            .unwrap();
        assert!(got.records.len() <= per_read);
        for (stored, loc) in &got.records {
            assert_eq!(&stored.delivery.tool, tool);
            assert_eq!(
                spool.read(*loc).unwrap(),
                *stored,
                "its place reads it back"
            );
        }
        seqs.extend(got.records.iter().map(|(s, _)| s.seq));
        let next = got.next.unwrap();
        if got.records.is_empty() && next == at {
            return seqs;
        }
        at = next;
    }
}

#[tokio::test]
async fn a_reader_finds_a_tools_unsettled_records_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let first = spool.append(bodies(0..10)).await.unwrap();
    // Settled before the restart: never read back.
    spool.ack(first[2].0);
    spool.ack(first[5].0);
    spool.flush().await;
    drop(spool);
    // A restart starts a second segment.
    let (spool, recovery) = open(dir.path());
    assert_eq!(recovery.pending_count, 8);
    let second = spool.append(bodies(10..15)).await.unwrap();
    assert_eq!(spool.segments.lock().unwrap().len(), 2);
    let ga4: Vec<u64> = first
        .iter()
        .chain(&second)
        .enumerate()
        .filter(|(i, (seq, _))| i % 2 == 0 && *seq != first[2].0)
        .map(|(_, (seq, _))| *seq)
        .collect();
    for per_read in [1, 3, 100] {
        assert_eq!(
            scan_all(&spool, "ga4", per_read),
            ga4,
            "{per_read} per read"
        );
    }
    assert_eq!(scan_all(&spool, "meta", 2).len(), 7 - 1);
    assert!(scan_all(&spool, "other", 5).is_empty());
}

#[tokio::test]
async fn a_reader_at_the_end_sees_what_is_written_next() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let placed = spool.append(bodies(0..2)).await.unwrap();
    let mut acks = ScanCache::default();
    let got = spool
        .scan(placed[0].1.into(), "ga4", 10, usize::MAX, &mut acks)
        .unwrap();
    assert_eq!(got.records.len(), 1);
    assert_eq!(got.through, placed[1].0);
    let end = got.next.unwrap();
    let nothing = spool.scan(end, "ga4", 10, usize::MAX, &mut acks).unwrap();
    assert!(nothing.records.is_empty());
    assert_eq!(nothing.next, Some(end));
    let more = spool.append(bodies(2..4)).await.unwrap();
    let got = spool.scan(end, "ga4", 10, usize::MAX, &mut acks).unwrap();
    assert_eq!(
        got.records.iter().map(|(s, _)| s.seq).collect::<Vec<_>>(),
        vec![more[0].0]
    );
}

#[tokio::test]
async fn the_sink_hears_of_every_record_in_order_before_the_append_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let heard = Arc::new(Mutex::new(Vec::new()));
    let log = heard.clone();
    spool.set_sink(Box::new(move |w: Written<'_>| {
        let (_, tool) = record::peek_body(w.body).unwrap();
        log.lock().unwrap().push((
            w.seq,
            w.loc,
            String::from_utf8(tool.to_vec()).unwrap(),
            w.delivery.map(|d| d.event_id),
        ));
    }));
    let placed = spool
        .append_deliveries(bodies(0..2), vec![delivery(0), delivery(1)])
        .await
        .unwrap();
    let plain = spool.append(bodies(2..3)).await.unwrap();
    assert_eq!(
        *heard.lock().unwrap(),
        vec![
            (
                placed[0].0,
                placed[0].1,
                "ga4".into(),
                Some("event-000000".into())
            ),
            (
                placed[1].0,
                placed[1].1,
                "meta".into(),
                Some("event-000001".into())
            ),
            (plain[0].0, plain[0].1, "ga4".into(), None),
        ]
    );
}

/// A reader's segment that is gone (settled and removed) is `None`, not an
/// error; any other failure to open it is an error, not a skipped segment.
#[test]
fn scan_cache_tells_a_missing_segment_from_a_failing_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut cache = ScanCache::default();
    assert!(cache.open(dir.path(), 42).unwrap().is_none());
    // A "directory" that is a file: ENOTDIR, not NotFound.
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    assert!(cache.open(&not_a_dir, 42).is_err());
    // A segment that exists is opened, and kept for the next scan.
    std::fs::write(segment_path(dir.path(), 7), b"seg").unwrap();
    assert!(cache.open(dir.path(), 7).unwrap().is_some());
    std::fs::remove_file(segment_path(dir.path(), 7)).unwrap();
    assert!(
        cache.open(dir.path(), 7).unwrap().is_some(),
        "the open file is kept"
    );
}

/// Records go into one segment until it passes `SEGMENT_BYTES` (8 MiB),
/// not one file per group commit.
#[tokio::test]
async fn appends_share_a_segment_until_it_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let mut placed = Vec::new();
    for i in 0..5 {
        placed.extend(spool.append(bodies(i * 10..i * 10 + 10)).await.unwrap());
    }
    spool.flush().await;
    assert_eq!(segments(dir.path()).len(), 1);
    // Every record is where its append said.
    for (i, (seq, loc)) in placed.into_iter().enumerate() {
        let stored = spool.read(loc).unwrap();
        assert_eq!((stored.seq, stored.delivery), (seq, delivery(i)));
    }
}

/// A record longer than the reader's buffer is read whole, and the buffer
/// grown for it does not stay that big for the next scan.
#[tokio::test]
async fn a_long_record_is_read_whole_and_its_buffer_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let mut long = delivery(0);
    long.payload = Payload::Stdout("x".repeat(SCAN_CHUNK * 2));
    let placed = spool
        .append(vec![
            record::encode_body(0, &long),
            record::encode_body(0, &delivery(2)),
        ])
        .await
        .unwrap();
    let mut cache = ScanCache::default();
    let got = spool
        .scan(placed[0].1.into(), "ga4", 10, usize::MAX, &mut cache)
        .unwrap();
    assert_eq!(got.records.len(), 2);
    assert_eq!(got.records[0].0.delivery, long);
    assert!(cache.buf.len() > SCAN_CHUNK, "grown for the long record");
    let end = got.next.unwrap();
    let nothing = spool.scan(end, "ga4", 10, usize::MAX, &mut cache).unwrap();
    assert!(nothing.records.is_empty());
    assert_eq!(cache.buf.len(), SCAN_CHUNK, "back to one chunk");
}

/// `max_bytes` bounds a scan (at least one record still comes back), and
/// the next scan goes on where it stopped.
#[tokio::test]
async fn a_scan_stops_past_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let placed = spool.append(bodies(0..6)).await.unwrap();
    let len = placed[0].1.len as usize;
    let mut cache = ScanCache::default();
    let got = spool
        .scan(placed[0].1.into(), "ga4", 10, 1, &mut cache)
        .unwrap();
    assert_eq!(got.records.len(), 1, "one record passes 1 byte");
    assert_eq!(got.bytes, len);
    let got = spool
        .scan(got.next.unwrap(), "ga4", 10, 2 * len, &mut cache)
        .unwrap();
    let seqs: Vec<u64> = got.records.iter().map(|(s, _)| s.seq).collect();
    assert_eq!(seqs, [placed[2].0, placed[4].0], "two records fill 2 × len");
}

/// `read_at_most` reads up to the buffer or the end of the file, and
/// passes a read error on (not retried forever).
#[test]
fn read_at_most_stops_at_the_end_and_passes_errors_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, b"0123456789").unwrap();
    let file = File::open(&path).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(read_at_most(&file, &mut buf, 3).unwrap(), 4);
    assert_eq!(&buf, b"3456");
    let mut buf = [0u8; 8];
    assert_eq!(read_at_most(&file, &mut buf, 6).unwrap(), 4);
    assert_eq!(&buf[..4], b"6789");
    assert_eq!(read_at_most(&file, &mut buf, 20).unwrap(), 0);
    // A folder opens, but reading it fails (EISDIR).
    let folder = File::open(dir.path()).unwrap();
    assert!(read_at_most(&folder, &mut buf, 0).is_err());
}

/// A sealed segment still holding unsettled records is kept (and its
/// records recovered after a restart) while a settled one is removed, its
/// bytes given back.
#[tokio::test]
async fn a_sealed_segment_is_kept_until_every_record_is_settled() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let placed = seal_first_segment(&spool).await;
    let more = spool.append(bodies(3..5)).await.unwrap();
    assert_eq!(segments(dir.path()).len(), 2);
    let before = spool.bytes();
    // Settling one record of the sealed segment keeps it.
    spool.ack(placed[1].0);
    spool.flush().await;
    assert_eq!(segments(dir.path()).len(), 2);
    drop(spool);
    let (spool, recovery) = open(dir.path());
    let pending: Vec<u64> = recovery.pending.iter().map(|r| r.seq).collect();
    assert_eq!(pending, [placed[0].0, placed[2].0, more[0].0, more[1].0]);
    // Settling the rest of it removes it and gives its bytes back.
    spool.ack(placed[0].0);
    spool.ack(placed[2].0);
    spool.flush().await;
    assert_eq!(segments(dir.path()).len(), 1, "{:?}", segments(dir.path()));
    assert!(
        spool.bytes() < before - (8 << 20),
        "{} of {before}",
        spool.bytes()
    );
}

/// A stale ack file where a new segment's would go must be removed before
/// the segment is used (it would settle new deliveries); when it cannot
/// be, the append fails rather than risk it.
#[tokio::test]
async fn a_stale_ack_file_that_cannot_be_removed_fails_the_append() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    // The first segment will be named after sequence number 1.
    fs::create_dir(ack_path(dir.path(), 1)).unwrap();
    assert!(spool.append(bodies(0..1)).await.is_err());
}

/// What the spool's files hold on disk, segments and ack files.
fn disk_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg" || e == "ack"))
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

/// A record of `mib` MiB for delivery `i`.
fn big_body(i: usize, mib: usize) -> Vec<u8> {
    let mut d = delivery(i);
    d.payload = Payload::Stdout("x".repeat(mib << 20));
    record::encode_body(0, &d)
}

/// Appends three records of 3 MiB (deliveries 0 to 2), which fill and
/// seal the first segment (past 8 MiB); the next append opens another.
async fn seal_first_segment(spool: &Spool) -> Vec<(u64, Loc)> {
    spool
        .append(vec![big_body(0, 3), big_body(1, 3), big_body(2, 3)])
        .await
        .unwrap()
}

/// The spool's byte count (what `max_bytes` is checked against) is what
/// its files hold, ack files included, while segments come and go: a
/// count that drifts would refuse events at a limit the disk never
/// reached, or let the disk fill past it.
#[tokio::test]
async fn the_byte_count_is_what_the_files_hold_as_segments_come_and_go() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let sealed = seal_first_segment(&spool).await;
    // Two small records open the second segment.
    let active = spool.append(bodies(3..5)).await.unwrap();
    spool.ack(active[0].0);
    spool.ack(sealed[0].0);
    spool.flush().await;
    assert_eq!(segments(dir.path()).len(), 2);
    assert_eq!(spool.bytes(), disk_bytes(dir.path()));
    // Settling the sealed segment removes it and its acks; what is left
    // is counted exactly.
    spool.ack(sealed[1].0);
    spool.ack(sealed[2].0);
    spool.flush().await;
    assert_eq!(segments(dir.path()).len(), 1);
    assert_eq!(spool.bytes(), disk_bytes(dir.path()));
    assert!(spool.bytes() > 0);
}

/// A quiet spool gives its space back: the active segment, once every
/// record in it is settled, is closed and deleted when it has grown past
/// an eighth of a segment (1 MiB); a smaller one is kept for the next
/// appends rather than making a file per event.
#[tokio::test]
async fn a_drained_active_segment_is_deleted_once_big_and_kept_while_small() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let small = spool.append(bodies(0..3)).await.unwrap();
    for (seq, _) in &small {
        spool.ack(*seq);
    }
    spool.flush().await;
    assert_eq!(
        segments(dir.path()).len(),
        1,
        "a small drained segment stays"
    );
    // The same segment grows past 1 MiB; drained again, it goes.
    let big = spool.append(vec![big_body(3, 1)]).await.unwrap();
    assert_eq!(segments(dir.path()).len(), 1);
    spool.ack(big[0].0);
    spool.flush().await;
    assert!(
        segments(dir.path()).is_empty(),
        "{:?}",
        segments(dir.path())
    );
    assert_eq!(disk_bytes(dir.path()), 0);
    assert_eq!(spool.bytes(), 0);
}

/// A settled segment whose file (or ack file) someone already removed is
/// forgotten quietly: the rest is removed and its bytes are given back,
/// so the count does not keep space that is no longer used.
#[tokio::test]
async fn a_settled_segment_already_removed_by_hand_is_forgotten() {
    for gone in ["seg", "ack"] {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _) = open(dir.path());
        let sealed = seal_first_segment(&spool).await;
        spool.append(bodies(3..4)).await.unwrap();
        // The first ack creates the sealed segment's ack file.
        spool.ack(sealed[0].0);
        spool.flush().await;
        let path = match gone {
            "seg" => segment_path(dir.path(), sealed[0].0),
            _ => ack_path(dir.path(), sealed[0].0),
        };
        fs::remove_file(&path).unwrap();
        spool.ack(sealed[1].0);
        spool.ack(sealed[2].0);
        spool.flush().await;
        assert!(!segment_path(dir.path(), sealed[0].0).exists(), "{gone}");
        assert!(!ack_path(dir.path(), sealed[0].0).exists(), "{gone}");
        assert_eq!(segments(dir.path()).len(), 1, "{gone}");
        assert_eq!(spool.bytes(), disk_bytes(dir.path()), "{gone}");
    }
}

/// Opening a spool counts its segments and bytes as they are on disk, cuts
/// a segment that never got its header (counted as torn), removes ack
/// files left without their segment, and leaves other files alone.
#[tokio::test]
async fn recovery_counts_what_is_on_disk_and_clears_what_a_crash_left() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let sealed = seal_first_segment(&spool).await;
    let active = spool.append(bodies(3..6)).await.unwrap();
    spool.ack(sealed[1].0);
    spool.ack(active[0].0);
    spool.flush().await;
    drop(spool);
    let orphan = ack_path(dir.path(), 9_999);
    fs::write(&orphan, 7u64.to_le_bytes()).unwrap();
    let headless = segment_path(dir.path(), 5_000);
    fs::write(&headless, b"not a seg").unwrap();
    let other = dir.path().join("00000000000000009998.txt");
    fs::write(&other, b"keep me").unwrap();

    let (spool, recovery) = open(dir.path());
    assert_eq!(recovery.segments, 2);
    assert_eq!(recovery.torn_bytes, 9, "the headless segment's bytes");
    assert!(recovery.unreadable.is_empty(), "{:?}", recovery.unreadable);
    assert_eq!(recovery.pending_count, 4);
    assert!(!orphan.exists() && !headless.exists());
    assert!(other.exists());
    assert_eq!(segments(dir.path()).len(), 2);
    assert_eq!(spool.bytes(), disk_bytes(dir.path()));
}

/// Acks that cannot be read make every record of their segment owed again
/// (sent twice rather than lost), and the file is named as unreadable.
#[tokio::test]
async fn unreadable_acks_make_their_segments_records_owed_again() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path());
    let placed = spool.append(bodies(0..3)).await.unwrap();
    spool.ack(placed[0].0);
    spool.flush().await;
    drop(spool);
    let acks = ack_path(dir.path(), placed[0].0);
    fs::remove_file(&acks).unwrap();
    fs::create_dir(&acks).unwrap();

    let (_, recovery) = open(dir.path());
    assert_eq!(recovery.pending.len(), 3);
    assert_eq!(recovery.unreadable.len(), 1, "{:?}", recovery.unreadable);
    assert!(recovery.unreadable[0].contains(".ack"));
}
