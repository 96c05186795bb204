//! The durable spool (`backend = "spool"`, SPEC §11): every delivery the
//! collector accepts is on disk, fsynced, before it answers `200`.
//!
//! Layout: `spool_dir/<first seq>.seg` segment files of framed delivery
//! records ([`record`]), each with a `<first seq>.ack` file listing the
//! deliveries of that segment that are settled (delivered, or moved to the
//! dead letters). A segment and its ack file are deleted together once the
//! segment is sealed (a newer one took over) and all of its deliveries are
//! settled; acks never point into another segment, so files can go in any
//! order and one stuck delivery pins only its own segment.
//!
//! One writer thread owns every file. Appends from many collector requests
//! queue up while the previous `fdatasync` runs and then share the next one
//! (group commit), so a durable write costs one fsync per batch, not per
//! event, and never waits on a timer. Acks are written without fsync: an ack
//! lost to a power cut only means a delivery is sent again, and every
//! delivery carries its event id so destinations can drop the repeat.

pub mod record;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::tools::Delivery;
use record::{Frame, Stored};

/// A segment is sealed and a new one started past this size.
const SEGMENT_BYTES: u64 = 8 << 20;
/// Most appends one group commit takes (bounds the writer's buffer).
const MAX_GROUP: usize = 1024;
/// The longest a group commit lingers for more appends (SPEC's bound is 5 ms).
const MAX_LINGER: Duration = Duration::from_millis(2);

/// Where a record lives, so it can be read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

/// A pending delivery found at start-up, as [`Spool::open_with`] reports it
/// (borrowed from the segment being read: nothing is kept per delivery).
#[derive(Debug, Clone, Copy)]
pub struct Pending<'a> {
    pub seq: u64,
    pub accepted_ms: u64,
    pub tool: &'a str,
    pub event_id: &'a str,
    pub loc: Loc,
}

/// A record just written (fsynced), as the sink ([`Spool::set_sink`]) is
/// told about it, in sequence order, before its append is answered.
pub struct Written<'a> {
    pub seq: u64,
    pub loc: Loc,
    /// The record body ([`record::encode_body`]).
    pub body: &'a [u8],
    /// The delivery the body encodes, when the caller attached it
    /// ([`Spool::append_deliveries`]).
    pub delivery: Option<Delivery>,
}

/// What is told about every record written.
pub type Sink = Box<dyn Fn(Written<'_>) + Send + Sync>;

/// A pending delivery found at start-up.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub seq: u64,
    pub accepted_ms: u64,
    pub tool: Arc<str>,
    /// So the collector still recognises a retry of its batch.
    pub event_id: String,
    pub loc: Loc,
}

/// What recovery found, for the start-up log.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Every pending delivery ([`Spool::open`] only; [`Spool::open_with`]
    /// reports them one by one and leaves this empty).
    pub pending: Vec<Recovered>,
    /// How many deliveries are pending.
    pub pending_count: u64,
    pub segments: usize,
    /// Bytes cut off torn segment tails (a crash during a write that was
    /// therefore never acknowledged).
    pub torn_bytes: u64,
    /// Files that could not be read at all.
    pub unreadable: Vec<String>,
}

/// One caller's records, the deliveries they encode (if attached), and
/// where to send their places.
type PendingAppend = (
    Vec<Vec<u8>>,
    Vec<Delivery>,
    oneshot::Sender<io::Result<Vec<(u64, Loc)>>>,
);

enum Command {
    Append {
        items: Vec<Vec<u8>>,
        attached: Vec<Delivery>,
        reply: oneshot::Sender<io::Result<Vec<(u64, Loc)>>>,
    },
    Ack(u64),
    /// Answers once everything sent before it is written.
    Flush(oneshot::Sender<()>),
    /// Tests: the writer waits for the gate before taking anything else, so
    /// a test can queue appends behind it deterministically.
    #[cfg(test)]
    Hold(mpsc::Receiver<()>),
    /// Tests: the writer panics, as on a bug.
    #[cfg(test)]
    Panic,
}

/// The spool; cheap to share behind an `Arc`.
pub struct Spool {
    dir: PathBuf,
    tx: mpsc::Sender<Command>,
    bytes: Arc<AtomicU64>,
    max_bytes: u64,
    failed: Arc<AtomicBool>,
    /// The segments on disk (first sequence numbers), for [`Spool::scan`].
    segments: Arc<Mutex<BTreeSet<u64>>>,
    /// Sequence numbers below this were written by an earlier run: only
    /// their segments can hold acks past a reader's position.
    recovered_below: u64,
    sink: Arc<OnceLock<Sink>>,
}

/// Where [`Spool::scan`] goes on from: a record's place in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub segment: u64,
    pub offset: u64,
}

impl From<Loc> for Cursor {
    fn from(loc: Loc) -> Cursor {
        Cursor {
            segment: loc.segment,
            offset: loc.offset,
        }
    }
}

/// What one [`Spool::scan`] read.
#[derive(Debug, Default)]
pub struct Scanned {
    /// The tool's unsettled records, in order, with their places.
    pub records: Vec<(Stored, Loc)>,
    /// Encoded bytes of `records`.
    pub bytes: usize,
    /// Where the next scan starts.
    pub next: Option<Cursor>,
    /// The highest sequence number read (any tool's), 0 when none.
    pub through: u64,
}

/// What a reader keeps between [`Spool::scan`]s: one recovered segment's
/// acks, the segment file it reads (opened once, not per scan) and its read
/// buffer ([`SCAN_CHUNK`] bytes, allocated and zeroed once, not per scan:
/// both were a fifth of the refill's cost under load).
#[derive(Debug, Default)]
pub struct ScanCache {
    segment: Option<u64>,
    acked: HashSet<u64>,
    file: Option<(u64, File)>,
    buf: Vec<u8>,
}

impl ScanCache {
    /// The open segment `segment`, or `None` when it does not exist (yet,
    /// or any more).
    fn open(&mut self, dir: &Path, segment: u64) -> io::Result<Option<&File>> {
        if self.file.as_ref().map(|(s, _)| *s) != Some(segment) {
            self.file = None;
            match File::open(segment_path(dir, segment)) {
                Ok(f) => self.file = Some((segment, f)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(self.file.as_ref().map(|(_, f)| f))
    }
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, recovering what a previous run
    /// left, and starts the writer thread.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        metrics: Arc<Metrics>,
    ) -> io::Result<(Spool, Recovery)> {
        let mut pending = Vec::new();
        let mut tools: HashMap<String, Arc<str>> = HashMap::new();
        let (spool, mut recovery) = Self::open_with(dir, max_bytes, metrics, &mut |p| {
            let tool = tools
                .entry(p.tool.to_string())
                .or_insert_with(|| Arc::from(p.tool))
                .clone();
            pending.push(Recovered {
                seq: p.seq,
                accepted_ms: p.accepted_ms,
                tool,
                event_id: p.event_id.to_string(),
                loc: p.loc,
            });
        })?;
        recovery.pending = pending;
        Ok((spool, recovery))
    }

    /// [`Spool::open`], telling `on_pending` about each pending delivery
    /// instead of listing them (a backlog of millions costs no memory).
    pub fn open_with(
        dir: &Path,
        max_bytes: u64,
        metrics: Arc<Metrics>,
        on_pending: &mut dyn FnMut(Pending<'_>),
    ) -> io::Result<(Spool, Recovery)> {
        fs::create_dir_all(dir)?;
        let (segments, recovery) = recover(dir, on_pending)?;
        let next_seq = segments
            .values()
            .map(|s| s.next_seq)
            .max()
            .unwrap_or(1)
            .max(1);
        let bytes = Arc::new(AtomicU64::new(segments.values().map(|s| s.bytes).sum()));
        let failed = Arc::new(AtomicBool::new(false));
        let listed = Arc::new(Mutex::new(segments.keys().copied().collect()));
        let sink: Arc<OnceLock<Sink>> = Arc::default();
        let mut writer = Writer {
            listed: listed.clone(),
            sink: sink.clone(),
            dir: dir.to_path_buf(),
            segments,
            active: None,
            next_seq,
            bytes: bytes.clone(),
            max_bytes,
            metrics,
            last_group: 0,
            last_fsync: Duration::ZERO,
        };
        writer.collect_settled();
        let (tx, rx) = mpsc::channel();
        let thread_failed = failed.clone();
        std::thread::Builder::new()
            .name("tagproxy-spool".into())
            .spawn(move || {
                // Set on the way out, by a panic too: from then on nothing
                // can be appended, and `/readyz` must say so.
                struct Stopped(Arc<AtomicBool>);
                impl Drop for Stopped {
                    fn drop(&mut self) {
                        self.0.store(true, Ordering::Relaxed);
                    }
                }
                let _stopped = Stopped(thread_failed);
                writer.run(rx);
            })?;
        Ok((
            Spool {
                dir: dir.to_path_buf(),
                tx,
                bytes,
                max_bytes,
                failed,
                segments: listed,
                recovered_below: next_seq,
                sink,
            },
            recovery,
        ))
    }

    /// Writes records (from [`record::encode_body`]) durably; returns each
    /// one's sequence number and place, in order.
    pub async fn append(&self, items: Vec<Vec<u8>>) -> io::Result<Vec<(u64, Loc)>> {
        self.append_deliveries(items, Vec::new()).await
    }

    /// [`Spool::append`], handing each record's delivery (`attached`, in
    /// the same order, or empty) to the sink once it is written, so the
    /// sink need not decode what it was just given.
    pub async fn append_deliveries(
        &self,
        items: Vec<Vec<u8>>,
        attached: Vec<Delivery>,
    ) -> io::Result<Vec<(u64, Loc)>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Append {
                items,
                attached,
                reply,
            })
            .map_err(|_| io::Error::other("the spool writer has stopped"))?;
        rx.await
            .map_err(|_| io::Error::other("the spool writer has stopped"))?
    }

    /// Tells `sink` about every record written from now on, in sequence
    /// order, on the writer thread, after its fsync and before its append
    /// is answered (so it must be quick). Set once; later calls are
    /// ignored.
    pub fn set_sink(&self, sink: Sink) {
        let _ = self.sink.set(sink);
    }

    /// Reads on from `from`: the unsettled records of `tool` (at most
    /// `max_items`, and past `max_bytes` of them no more; at least one when
    /// there is one), skipping other tools'. Blocking. Stops at the end of
    /// what is written so far. A record written by this run is never
    /// settled before a reader has read it, so only segments of earlier
    /// runs have their acks consulted (`cache` keeps the current one's).
    pub fn scan(
        &self,
        from: Cursor,
        tool: &str,
        max_items: usize,
        max_bytes: usize,
        cache: &mut ScanCache,
    ) -> io::Result<Scanned> {
        let mut out = Scanned::default();
        let mut at = from;
        // A buffer grown for one long frame does not stay that big.
        if cache.buf.len() > SCAN_CHUNK {
            cache.buf = Vec::new();
        }
        let next_segment = |after: u64| {
            self.segments
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .range(after + 1..)
                .next()
                .copied()
        };
        'segments: loop {
            if at.offset < record::MAGIC.len() as u64 {
                at.offset = record::MAGIC.len() as u64;
            }
            if at.segment < self.recovered_below && cache.segment != Some(at.segment) {
                cache.acked = match fs::read(ack_path(&self.dir, at.segment)) {
                    Ok(bytes) => record::decode_acks(&bytes).collect(),
                    Err(_) => HashSet::new(),
                };
                cache.segment = Some(at.segment);
            }
            let exists = cache.open(&self.dir, at.segment)?.is_some();
            let ScanCache {
                acked, file, buf, ..
            } = &mut *cache;
            let file = file.as_ref().filter(|_| exists).map(|(_, f)| f);
            // Set once the end was seen with a later segment listed: what
            // is read after that is all this segment will ever hold.
            let mut last_look = false;
            while let Some(file) = file {
                if buf.len() < SCAN_CHUNK {
                    *buf = vec![0; SCAN_CHUNK];
                }
                let got = read_at_most(file, buf, at.offset)?;
                let mut pos = 0;
                let mut progressed = false;
                while let Some(head) = record::peek_frame(&buf[pos..got]) {
                    progressed = true;
                    let loc = Loc {
                        segment: at.segment,
                        offset: at.offset + pos as u64,
                        len: head.used as u32,
                    };
                    out.through = out.through.max(head.seq);
                    let settled = at.segment < self.recovered_below && acked.contains(&head.seq);
                    if head.tool == tool.as_bytes() && !settled {
                        if let Frame::Record(stored, _) =
                            record::decode_frame(&buf[pos..pos + head.used])
                        {
                            out.bytes += head.used;
                            out.records.push((stored, loc));
                        }
                    }
                    pos += head.used;
                    if out.records.len() >= max_items || out.bytes >= max_bytes {
                        out.next = Some(Cursor {
                            segment: at.segment,
                            offset: at.offset + pos as u64,
                        });
                        return Ok(out);
                    }
                }
                at.offset += pos as u64;
                if progressed {
                    continue;
                }
                // A frame longer than the buffer: read it whole.
                if let Some(need) = record::frame_len(&buf[..got]) {
                    if got == buf.len() && need > buf.len() {
                        *buf = vec![0; need];
                        continue;
                    }
                }
                // The end of what this segment holds now (or a torn tail).
                if last_look {
                    break;
                }
                if next_segment(at.segment).is_none() {
                    out.next = Some(at);
                    return Ok(out);
                }
                // A later segment exists, so this one was sealed: look
                // once more, as what was being written then is whole now.
                last_look = true;
            }
            match next_segment(at.segment) {
                Some(next) => {
                    at = Cursor {
                        segment: next,
                        offset: 0,
                    };
                    continue 'segments;
                }
                None => {
                    out.next = Some(at);
                    return Ok(out);
                }
            }
        }
    }

    /// Tests: makes the writer thread panic, as a bug would.
    #[cfg(test)]
    pub(crate) fn panic_writer(&self) {
        let _ = self.tx.send(Command::Panic);
    }

    /// Marks a delivery settled. Not synced: see the module doc.
    pub fn ack(&self, seq: u64) {
        let _ = self.tx.send(Command::Ack(seq));
    }

    /// Waits until every append and ack sent so far is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Reads a record back (blocking; a page-cache hit in practice).
    pub fn read(&self, loc: Loc) -> io::Result<Stored> {
        let file = File::open(segment_path(&self.dir, loc.segment))?;
        let mut buf = vec![0; loc.len as usize];
        file.read_exact_at(&mut buf, loc.offset)?;
        match record::decode_frame(&buf) {
            Frame::Record(stored, _) => Ok(stored),
            Frame::Torn => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("damaged spool record at {}:{}", loc.segment, loc.offset),
            )),
        }
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Past `spool_max_bytes`: the collector should answer 503.
    pub fn is_full(&self) -> bool {
        self.bytes() >= self.max_bytes
    }

    /// `spool_max_bytes`.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The writer thread stopped (an I/O error it cannot recover from).
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Bytes a reader takes from a segment at a time.
const SCAN_CHUNK: usize = 256 << 10;

/// Fills `buf` from `offset` as far as the file goes; the bytes read.
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

fn ack_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.ack"))
}

/// One segment's bookkeeping.
#[derive(Debug)]
struct Segment {
    /// Deliveries written and not yet settled.
    live: u64,
    /// One past the highest sequence number written to it.
    next_seq: u64,
    /// Segment plus ack file size.
    bytes: u64,
    /// Open for appending acks (opened on the first one).
    acks: Option<File>,
}

/// The active segment, open for appending.
struct Active {
    first_seq: u64,
    file: File,
    len: u64,
}

/// Owns the files; runs on its own thread.
struct Writer {
    dir: PathBuf,
    /// Shared with readers: the segments on disk.
    listed: Arc<Mutex<BTreeSet<u64>>>,
    sink: Arc<OnceLock<Sink>>,
    segments: BTreeMap<u64, Segment>,
    active: Option<Active>,
    next_seq: u64,
    bytes: Arc<AtomicU64>,
    max_bytes: u64,
    metrics: Arc<Metrics>,
    /// Appends in the last group commit, and how long its write took.
    last_group: usize,
    last_fsync: Duration,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Command>) {
        while let Ok(first) = rx.recv() {
            let mut appends = Vec::new();
            let mut acks = Vec::new();
            let mut flushes = Vec::new();
            let mut take = |cmd, appends: &mut Vec<PendingAppend>| match cmd {
                Command::Append {
                    items,
                    attached,
                    reply,
                } => appends.push((items, attached, reply)),
                Command::Ack(seq) => acks.push(seq),
                Command::Flush(tx) => flushes.push(tx),
                #[cfg(test)]
                Command::Hold(gate) => {
                    let _ = gate.recv();
                }
                #[cfg(test)]
                Command::Panic => panic!("the spool writer stops (a test)"),
            };
            take(first, &mut appends);
            // Everything that queued up during the last fsync joins this one.
            let mut n = 0;
            while let Ok(cmd) = rx.try_recv() {
                take(cmd, &mut appends);
                n += 1;
                if n >= MAX_GROUP * 8 {
                    break;
                }
            }
            // Under concurrent load (the last group was shared), linger a
            // little for more appends: fewer fsyncs leave more CPU for the
            // rest. Bounded by `MAX_LINGER`, and by the fsync time itself,
            // so a commit waits at most about one more fsync.
            if self.last_group > 1 && appends.len() < MAX_GROUP {
                let deadline = Instant::now() + self.last_fsync.min(MAX_LINGER);
                while appends.len() < self.last_group.min(MAX_GROUP) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(cmd) => take(cmd, &mut appends),
                        Err(_) => break,
                    }
                }
            }
            if !appends.is_empty() {
                self.last_group = appends.len();
                let started = Instant::now();
                self.write_appends(appends);
                self.last_fsync = started.elapsed();
            }
            if !acks.is_empty() {
                if let Err(e) = self.write_acks(&acks) {
                    tracing::error!(error = %e, "cannot write spool acks; those deliveries may be sent again after a restart");
                }
                self.collect_settled();
            }
            for tx in flushes {
                let _ = tx.send(());
            }
        }
    }

    /// Writes a group of appends with one fsync and answers each.
    fn write_appends(&mut self, appends: Vec<PendingAppend>) {
        let result = self.ensure_active().and_then(|()| {
            let active = self.active.as_mut().expect("active segment");
            let mut buf = Vec::with_capacity(64 * 1024);
            let mut placed = Vec::with_capacity(appends.len());
            let mut seq = self.next_seq;
            for (items, _, _) in &appends {
                let mut locs = Vec::with_capacity(items.len());
                for body in items {
                    let offset = active.len + buf.len() as u64;
                    record::frame(seq, body, &mut buf);
                    let len = (active.len + buf.len() as u64 - offset) as u32;
                    locs.push((
                        seq,
                        Loc {
                            segment: active.first_seq,
                            offset,
                            len,
                        },
                    ));
                    seq += 1;
                }
                placed.push(locs);
            }
            active.file.write_all(&buf)?;
            active.file.sync_data()?;
            Metrics::add(&self.metrics.spool_fsyncs, 1);
            active.len += buf.len() as u64;
            let written = seq - self.next_seq;
            self.next_seq = seq;
            let segment = self.segments.get_mut(&active.first_seq).expect("segment");
            segment.live += written;
            segment.next_seq = seq;
            segment.bytes += buf.len() as u64;
            self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
            Ok(placed)
        });
        match result {
            Ok(placed) => {
                let sink = self.sink.get();
                for ((items, attached, reply), locs) in appends.into_iter().zip(placed) {
                    if let Some(sink) = sink {
                        let mut attached = attached.into_iter();
                        for (body, &(seq, loc)) in items.iter().zip(&locs) {
                            sink(Written {
                                seq,
                                loc,
                                body,
                                delivery: attached.next(),
                            });
                        }
                    }
                    let _ = reply.send(Ok(locs));
                }
                if self.active.as_ref().is_some_and(|a| a.len >= SEGMENT_BYTES) {
                    self.seal();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "spool write failed; the collector answers 503 for these events");
                // What was written may be partial: start a fresh segment.
                self.seal();
                for (_, _, reply) in appends {
                    let _ = reply.send(Err(io::Error::new(e.kind(), e.to_string())));
                }
            }
        }
    }

    fn ensure_active(&mut self) -> io::Result<()> {
        if self.active.is_some() {
            return Ok(());
        }
        let first_seq = self.next_seq;
        let path = segment_path(&self.dir, first_seq);
        // An ack file left by an old segment of the same name would settle
        // new deliveries: it must not survive.
        match fs::remove_file(ack_path(&self.dir, first_seq)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        file.write_all(record::MAGIC)?;
        file.sync_data()?;
        // The new file's name must be durable too.
        File::open(&self.dir)?.sync_all()?;
        let len = record::MAGIC.len() as u64;
        self.listed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(first_seq);
        self.segments.insert(
            first_seq,
            Segment {
                live: 0,
                next_seq: first_seq,
                bytes: len,
                acks: None,
            },
        );
        self.bytes.fetch_add(len, Ordering::Relaxed);
        self.active = Some(Active {
            first_seq,
            file,
            len,
        });
        Ok(())
    }

    /// Stops appending to the active segment; the next append starts one.
    fn seal(&mut self) {
        self.active = None;
        self.collect_settled();
    }

    fn write_acks(&mut self, acks: &[u64]) -> io::Result<()> {
        let mut per_segment: HashMap<u64, Vec<u8>> = HashMap::new();
        for &seq in acks {
            let Some((&first, segment)) = self.segments.range_mut(..=seq).next_back() else {
                continue;
            };
            if seq >= segment.next_seq {
                continue;
            }
            segment.live = segment.live.saturating_sub(1);
            record::encode_ack(seq, per_segment.entry(first).or_default());
        }
        for (first, buf) in per_segment {
            let segment = self.segments.get_mut(&first).expect("segment");
            if segment.acks.is_none() {
                segment.acks = Some(
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(ack_path(&self.dir, first))?,
                );
            }
            segment.acks.as_mut().expect("ack file").write_all(&buf)?;
            segment.bytes += buf.len() as u64;
            self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Deletes sealed segments whose deliveries are all settled. A drained
    /// active segment goes too once it is big (or the spool is at its
    /// limit), so a quiet spool shrinks back without a file per event.
    fn collect_settled(&mut self) {
        if let Some(a) = &self.active {
            let drained = self.segments.get(&a.first_seq).is_some_and(|s| s.live == 0);
            let big =
                a.len >= SEGMENT_BYTES / 8 || self.bytes.load(Ordering::Relaxed) >= self.max_bytes;
            if drained && big {
                self.active = None;
            }
        }
        let active = self.active.as_ref().map(|a| a.first_seq);
        let done: Vec<u64> = self
            .segments
            .iter()
            .filter(|(first, s)| Some(**first) != active && s.live == 0)
            .map(|(first, _)| *first)
            .collect();
        for first in done {
            let segment = self.segments.remove(&first).expect("segment");
            // The segment goes first: an ack file without its segment is
            // harmless, a segment without its acks would be sent again.
            let removed = fs::remove_file(segment_path(&self.dir, first))
                .or_else(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .and_then(|()| {
                    fs::remove_file(ack_path(&self.dir, first)).or_else(|e| {
                        if e.kind() == io::ErrorKind::NotFound {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                });
            self.listed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&first);
            match removed {
                Ok(()) => {
                    self.bytes.fetch_sub(
                        segment.bytes.min(self.bytes.load(Ordering::Relaxed)),
                        Ordering::Relaxed,
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, segment = first, "cannot delete a settled spool segment");
                }
            }
        }
    }
}

/// Reads every segment and ack file: the deliveries still owed, with torn
/// tails cut off.
fn recover(
    dir: &Path,
    on_pending: &mut dyn FnMut(Pending<'_>),
) -> io::Result<(BTreeMap<u64, Segment>, Recovery)> {
    let mut firsts = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(first) = name
            .strip_suffix(".seg")
            .and_then(|n| n.parse::<u64>().ok())
        {
            firsts.push(first);
        }
    }
    firsts.sort_unstable();
    // Ack files whose segment is gone (a crash between the two deletions).
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let orphan = path.extension().is_some_and(|e| e == "ack")
            && path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
                .is_some_and(|first| firsts.binary_search(&first).is_err());
        if orphan {
            let _ = fs::remove_file(&path);
        }
    }
    let mut segments = BTreeMap::new();
    let mut recovery = Recovery::default();
    for first in firsts {
        let path = segment_path(dir, first);
        let mut data = Vec::new();
        if let Err(e) = File::open(&path).and_then(|mut f| f.read_to_end(&mut data)) {
            recovery.unreadable.push(format!("{}: {e}", path.display()));
            continue;
        }
        let acked: HashSet<u64> = match fs::read(ack_path(dir, first)) {
            Ok(bytes) => record::decode_acks(&bytes).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Default::default(),
            Err(e) => {
                // Without the acks every delivery is still owed: send again
                // rather than lose.
                recovery
                    .unreadable
                    .push(format!("{}: {e}", ack_path(dir, first).display()));
                Default::default()
            }
        };
        if !data.starts_with(record::MAGIC) {
            // A crash while creating the file: nothing in it was acknowledged.
            recovery.torn_bytes += data.len() as u64;
            let _ = fs::remove_file(&path);
            let _ = fs::remove_file(ack_path(dir, first));
            continue;
        }
        let mut offset = record::MAGIC.len();
        let mut live = 0;
        let mut next_seq = first;
        while offset < data.len() {
            match record::peek_frame(&data[offset..]) {
                Some(head) => {
                    let used = head.used;
                    next_seq = next_seq.max(head.seq + 1);
                    if !acked.contains(&head.seq) {
                        live += 1;
                        recovery.pending_count += 1;
                        on_pending(Pending {
                            seq: head.seq,
                            accepted_ms: head.accepted_ms,
                            tool: std::str::from_utf8(head.tool).unwrap_or_default(),
                            event_id: std::str::from_utf8(head.event_id).unwrap_or_default(),
                            loc: Loc {
                                segment: first,
                                offset: offset as u64,
                                len: used as u32,
                            },
                        });
                    }
                    offset += used;
                }
                None => {
                    // The write that was torn was never fsynced, so never
                    // answered 200: cut it off and go on.
                    let cut = (data.len() - offset) as u64;
                    recovery.torn_bytes += cut;
                    tracing::warn!(
                        segment = %path.display(),
                        offset,
                        bytes = cut,
                        "spool segment ends in a torn write; dropped it"
                    );
                    OpenOptions::new()
                        .write(true)
                        .open(&path)?
                        .set_len(offset as u64)?;
                    data.truncate(offset);
                    break;
                }
            }
        }
        let ack_bytes = fs::metadata(ack_path(dir, first))
            .map(|m| m.len())
            .unwrap_or(0);
        recovery.segments += 1;
        segments.insert(
            first,
            Segment {
                live,
                next_seq,
                bytes: data.len() as u64 + ack_bytes,
                acks: None,
            },
        );
    }
    Ok((segments, recovery))
}

#[cfg(test)]
mod tests;
