//! The dead-letter store (SPEC §11): deliveries a destination refused with a
//! non-retryable 4xx, or that ran out of retries, kept with the last response
//! so an operator can look at them (`tagproxy deadletter list`), send them
//! again (`replay`) or drop them (`purge`).
//!
//! One JSON object per line in `data_dir/deadletters.jsonl`. Everyone who
//! reads or writes it first takes an advisory lock on the sidecar file
//! `deadletters.lock`: shared to read, exclusive to append or remove. The lock
//! lives in its own file because removing letters rewrites the data file
//! under a new inode (tmp file, fsync, rename), and a lock held on the old
//! inode would protect nothing.
//!
//! Lines that do not parse (a write torn by a crash, a hand edit, a newer
//! format) are counted, never fatal, and always kept: nothing deletes data it
//! cannot read.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::tools::{Delivery, Payload};

/// The store's file name under `data_dir`.
pub const FILE_NAME: &str = "deadletters.jsonl";
/// The lock file's name under `data_dir`.
pub const LOCK_NAME: &str = "deadletters.lock";
/// A dead letter keeps at most this many bytes of the last response body.
pub const MAX_RESPONSE_BYTES: usize = 4096;

/// A delivery that will not be sent again unless an operator replays it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Unique dead-letter id (UUIDv7).
    pub id: String,
    pub tool: String,
    pub event_id: String,
    /// The whole delivery, so it can be replayed.
    pub delivery: Delivery,
    /// Why it was given up, e.g. `HTTP 400: {...}` or
    /// `gave up after 8 attempts: HTTP 503`.
    pub reason: String,
    /// The last HTTP status, if there was an answer at all.
    pub status: Option<u16>,
    /// The last response body, lossy UTF-8, at most [`MAX_RESPONSE_BYTES`].
    pub response: String,
    pub attempts: u32,
    /// When the collector accepted the event (Unix ms).
    pub accepted_ms: u64,
    /// When it was dead-lettered (Unix ms).
    pub failed_ms: u64,
    /// Credentials were replaced by [`REDACTED`] in `delivery`, `reason` or
    /// `response`: the stored request cannot be sent as it is
    /// (`deadletter replay --as-stored` refuses it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redacted: bool,
}

impl DeadLetter {
    /// A dead letter for `delivery`, failed now, with a fresh id; `response`
    /// is the raw last response body (made lossy UTF-8 and truncated here).
    pub fn new(
        delivery: Delivery,
        reason: impl Into<String>,
        status: Option<u16>,
        response: &[u8],
        attempts: u32,
        accepted_ms: u64,
    ) -> DeadLetter {
        let mut letter = DeadLetter {
            id: uuid::Uuid::now_v7().to_string(),
            tool: delivery.tool.clone(),
            event_id: delivery.event_id.clone(),
            delivery,
            reason: reason.into(),
            status,
            response: response_text(response),
            attempts,
            accepted_ms,
            failed_ms: now_ms(),
            redacted: false,
        };
        letter.redact();
        letter
    }

    /// Replaces every credential (the delivery's `secrets`, `Authorization`
    /// headers, Meta's `access_token` body field) with [`REDACTED`], in the
    /// request, the reason (an error may quote the URL) and the response,
    /// and forgets the list of secrets. Sets `redacted` when anything was
    /// replaced.
    pub fn redact(&mut self) {
        let secrets = std::mem::take(&mut self.delivery.secrets);
        let mut forms: Vec<String> = secrets.iter().flat_map(|s| secret_forms(s)).collect();
        // Longest first, so a secret containing another is replaced whole.
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        let text = |t: &mut String| {
            let mut changed = false;
            for f in &forms {
                if t.contains(f.as_str()) {
                    *t = t.replace(f.as_str(), REDACTED);
                    changed = true;
                }
            }
            changed
        };
        let mut changed = text(&mut self.reason);
        changed |= text(&mut self.response);
        match &mut self.delivery.payload {
            Payload::Stdout(line) => changed |= text(line),
            Payload::Http(req) => {
                changed |= text(&mut req.url);
                for (name, value) in &mut req.headers {
                    if SECRET_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
                        if value != REDACTED {
                            *value = REDACTED.to_string();
                            changed = true;
                        }
                    } else {
                        changed |= text(value);
                    }
                }
                if let Some(body) = &mut req.body {
                    changed |= redact_body(body, &forms);
                }
            }
        }
        if changed {
            self.redacted = true;
        }
    }
}

/// What a credential is replaced with in a dead letter.
pub const REDACTED: &str = "[REDACTED]";
/// Headers whose whole value is a credential.
const SECRET_HEADERS: &[&str] = &["authorization", "proxy-authorization"];
/// Top-level JSON body fields that are credentials (Meta's Conversions API
/// takes its token in the body).
const SECRET_FIELDS: &[&str] = &["access_token"];
/// Shorter secrets are not searched for inside text: replacing every `a`
/// would wreck the letter and hide nothing a guess would not find.
const MIN_SECRET_LEN: usize = 4;

/// The forms a secret takes inside a request: as is, JSON-escaped (in a
/// JSON body) and percent-encoded (in a URL or form body). Empty for
/// secrets shorter than 4 bytes.
pub fn secret_forms(secret: &str) -> Vec<String> {
    if secret.len() < MIN_SECRET_LEN {
        return Vec::new();
    }
    let json = serde_json::to_string(secret).expect("a string serializes");
    let mut forms = vec![
        secret.to_string(),
        json[1..json.len() - 1].to_string(),
        url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
        percent_encode(secret),
    ];
    forms.sort();
    forms.dedup();
    forms
}

/// `%XX` for every byte but RFC 3986 unreserved characters.
/// One buffer, not a string per byte: this runs for every secret of every
/// delivery built (`Payload::contains`).
fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xF)] as char);
        }
    }
    out
}

/// Redacts a request body: credential fields of a JSON object, then every
/// form of a secret anywhere in the bytes. Whether anything changed.
fn redact_body(body: &mut Vec<u8>, forms: &[String]) -> bool {
    let mut changed = false;
    if let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(obj) = json.as_object_mut() {
            let mut touched = false;
            for field in SECRET_FIELDS {
                if let Some(v) = obj.get_mut(*field) {
                    if v.as_str() != Some(REDACTED) {
                        *v = serde_json::Value::String(REDACTED.into());
                        touched = true;
                    }
                }
            }
            if touched {
                *body = serde_json::to_vec(&json).expect("JSON serializes");
                changed = true;
            }
        }
    }
    for f in forms {
        let f = f.as_bytes();
        if body.windows(f.len()).any(|w| w == f) {
            *body = replace_bytes(body, f, REDACTED.as_bytes());
            changed = true;
        }
    }
    changed
}

fn replace_bytes(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// A response body as kept in a dead letter: lossy UTF-8, at most
/// [`MAX_RESPONSE_BYTES`] bytes, cut on a character boundary.
pub fn response_text(body: &[u8]) -> String {
    let mut end = body.len().min(MAX_RESPONSE_BYTES);
    // Cut before a character rather than through it (up to 3 bytes back).
    if end < body.len() {
        let floor = end.saturating_sub(3);
        while end > floor && body[end] & 0xC0 == 0x80 {
            end -= 1;
        }
    }
    let text = String::from_utf8_lossy(&body[..end]);
    // Replacement characters can make the text longer than the bytes were.
    let cut = text.floor_char_boundary(MAX_RESPONSE_BYTES);
    text[..cut].to_string()
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Which dead letters an operation applies to. The default matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this tool's letters.
    pub tool: Option<String>,
    /// Dead-letter ids or event ids; empty = all.
    pub ids: Vec<String>,
}

impl Filter {
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        self.tool.as_ref().is_none_or(|t| *t == letter.tool)
            && (self.ids.is_empty()
                || self
                    .ids
                    .iter()
                    .any(|id| *id == letter.id || *id == letter.event_id))
    }
}

/// What [`DeadLetters::list`] found.
#[derive(Debug, Default)]
pub struct Listing {
    /// The matching letters, in file order (oldest first).
    pub letters: Vec<DeadLetter>,
    /// Lines that did not parse, e.g. a last line torn by a crash.
    pub unreadable: usize,
}

/// The dead-letter file of one `data_dir`.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    dir: PathBuf,
    path: PathBuf,
    lock: PathBuf,
}

impl DeadLetters {
    /// The store under `data_dir`; touches nothing on disk.
    pub fn new(data_dir: &Path) -> DeadLetters {
        DeadLetters {
            dir: data_dir.to_path_buf(),
            path: data_dir.join(FILE_NAME),
            lock: data_dir.join(LOCK_NAME),
        }
    }

    /// `data_dir/deadletters.jsonl`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `letters` durably (written and `sync_data`ed before this
    /// returns), creating `data_dir` when needed.
    pub fn append(&self, letters: &[DeadLetter]) -> io::Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for letter in letters {
            serde_json::to_writer(&mut buf, letter)?;
            buf.push(b'\n');
        }
        fs::create_dir_all(&self.dir)?;
        let _lock = self.lock(true)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)?;
        let len = file.metadata()?.len();
        if len > 0 {
            // A torn last line (a crash mid-write) must not swallow the
            // first new letter: end it first.
            let mut last = [0u8];
            file.seek(SeekFrom::End(-1))?;
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                buf.insert(0, b'\n');
            }
        }
        file.write_all(&buf)?;
        file.sync_data()?;
        if len == 0 {
            // The file may be new: make its directory entry durable too.
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The letters matching `filter`, and how many lines did not parse. A
    /// missing file (or `data_dir`) is an empty store.
    pub fn list(&self, filter: &Filter) -> io::Result<Listing> {
        let _lock = match self.lock(false) {
            Ok(lock) => lock,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Listing::default()),
            Err(e) => return Err(e),
        };
        let bytes = read_or_empty(&self.path)?;
        let mut listing = Listing::default();
        for line in lines(&bytes) {
            match serde_json::from_slice::<DeadLetter>(line) {
                Ok(letter) if filter.matches(&letter) => listing.letters.push(letter),
                Ok(_) => {}
                Err(_) => listing.unreadable += 1,
            }
        }
        Ok(listing)
    }

    /// Removes the letters matching `filter` and returns them. Lines that do
    /// not parse are kept.
    pub fn take(&self, filter: &Filter) -> io::Result<Vec<DeadLetter>> {
        self.take_with(filter, |_| Ok(())).map(|(taken, _)| taken)
    }

    /// Like [`take`](Self::take), but calls `before_removing` with the
    /// matching letters while still holding the lock, and removes them only
    /// when it succeeds: a replay writes the letters elsewhere first, so a
    /// crash in between duplicates them rather than losing them.
    /// `before_removing` is not called when nothing matches (the result is
    /// then `(vec![], None)`).
    pub fn take_with<T>(
        &self,
        filter: &Filter,
        before_removing: impl FnOnce(&[DeadLetter]) -> io::Result<T>,
    ) -> io::Result<(Vec<DeadLetter>, Option<T>)> {
        let _lock = match self.lock(true) {
            Ok(lock) => lock,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), None)),
            Err(e) => return Err(e),
        };
        let bytes = read_or_empty(&self.path)?;
        let mut taken = Vec::new();
        let mut kept = Vec::with_capacity(bytes.len());
        for line in lines(&bytes) {
            match serde_json::from_slice::<DeadLetter>(line) {
                Ok(letter) if filter.matches(&letter) => taken.push(letter),
                // Everything else stays byte for byte, unreadable lines too.
                _ => {
                    kept.extend_from_slice(line);
                    kept.push(b'\n');
                }
            }
        }
        if taken.is_empty() {
            return Ok((taken, None));
        }
        let out = before_removing(&taken)?;
        self.rewrite(&kept)?;
        Ok((taken, Some(out)))
    }

    /// How many readable letters the store holds.
    pub fn count(&self) -> io::Result<usize> {
        Ok(self.list(&Filter::default())?.letters.len())
    }

    /// Replaces the file's content atomically: tmp file, fsync, rename,
    /// fsync the directory. Called with the exclusive lock held.
    fn rewrite(&self, content: &[u8]) -> io::Result<()> {
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let mut file = File::create(&tmp)?;
        file.write_all(content)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &self.path)?;
        sync_dir(&self.dir)
    }

    /// Opens and locks the lock file (creating it, which fails with
    /// `NotFound` when `data_dir` does not exist). A reader without write
    /// permission still gets a shared lock on an existing lock file.
    fn lock(&self, exclusive: bool) -> io::Result<File> {
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.lock)
        {
            Ok(file) => file,
            Err(e) if !exclusive && e.kind() == io::ErrorKind::PermissionDenied => {
                File::open(&self.lock)?
            }
            Err(e) => return Err(e),
        };
        if exclusive {
            file.lock()?;
        } else {
            file.lock_shared()?;
        }
        Ok(file)
    }
}

/// The non-blank lines of a JSON-lines file.
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
}

fn read_or_empty(path: &Path) -> io::Result<Vec<u8>> {
    match fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Makes a directory's entries (a new or renamed file) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::HttpRequest;

    fn delivery(tool: &str, event_id: &str) -> Delivery {
        Delivery::new(
            tool,
            event_id,
            Payload::Http(HttpRequest {
                method: "POST".into(),
                url: "https://collect.example/e".into(),
                headers: vec![("content-type".into(), "application/json".into())],
                body: Some(br#"{"a":1}"#.to_vec()),
            }),
        )
    }

    fn letter(tool: &str, event_id: &str) -> DeadLetter {
        DeadLetter::new(
            delivery(tool, event_id),
            "HTTP 400: bad",
            Some(400),
            b"{\"error\":\"bad\"}",
            1,
            1_700_000_000_000,
        )
    }

    fn ids(letters: &[DeadLetter]) -> Vec<&str> {
        letters.iter().map(|l| l.event_id.as_str()).collect()
    }

    #[test]
    fn new_does_not_touch_the_disk_and_missing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let store = DeadLetters::new(&data);
        assert_eq!(store.path(), data.join("deadletters.jsonl"));
        assert!(!data.exists());
        let listing = store.list(&Filter::default()).unwrap();
        assert!(listing.letters.is_empty());
        assert_eq!(listing.unreadable, 0);
        assert_eq!(store.count().unwrap(), 0);
        assert!(store.take(&Filter::default()).unwrap().is_empty());
        assert!(!data.exists(), "reading and taking nothing creates nothing");
    }

    #[test]
    fn append_list_take_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetters::new(&dir.path().join("a/b"));
        let a = letter("ga4", "e1");
        let b = letter("meta", "e2");
        let c = letter("ga4", "e3");
        store.append(&[a.clone(), b.clone()]).unwrap();
        store.append(std::slice::from_ref(&c)).unwrap();
        store.append(&[]).unwrap();
        assert_eq!(store.count().unwrap(), 3);
        let all = store.list(&Filter::default()).unwrap();
        assert_eq!(all.letters, vec![a.clone(), b.clone(), c.clone()]);
        assert_eq!(all.unreadable, 0);

        let ga4 = Filter {
            tool: Some("ga4".into()),
            ids: vec![],
        };
        assert_eq!(ids(&store.list(&ga4).unwrap().letters), ["e1", "e3"]);

        // By dead-letter id or by event id.
        let by_ids = Filter {
            tool: None,
            ids: vec![a.id.clone(), "e2".into(), "nope".into()],
        };
        assert_eq!(ids(&store.list(&by_ids).unwrap().letters), ["e1", "e2"]);
        // Tool and ids together must both match.
        let both = Filter {
            tool: Some("meta".into()),
            ids: vec![a.id.clone(), "e2".into()],
        };
        assert_eq!(ids(&store.take(&both).unwrap()), ["e2"]);
        assert_eq!(store.list(&Filter::default()).unwrap().letters, vec![a, c]);

        assert_eq!(ids(&store.take(&Filter::default()).unwrap()), ["e1", "e3"]);
        assert_eq!(store.count().unwrap(), 0);
        assert!(store.take(&Filter::default()).unwrap().is_empty());
        // No tmp file is left behind.
        assert!(!dir.path().join("a/b/deadletters.jsonl.tmp").exists());
    }

    #[test]
    fn torn_and_foreign_lines_are_counted_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetters::new(dir.path());
        let a = letter("ga4", "e1");
        store.append(std::slice::from_ref(&a)).unwrap();
        // A hand-edited line in the middle, then a torn last line.
        let mut f = OpenOptions::new().append(true).open(store.path()).unwrap();
        f.write_all(b"not json\n\n{\"id\":\"x\",\"tool\":\"ga")
            .unwrap();
        drop(f);
        let listing = store.list(&Filter::default()).unwrap();
        assert_eq!(listing.letters, vec![a.clone()]);
        assert_eq!(listing.unreadable, 2);

        // The next append does not glue itself onto the torn line.
        let b = letter("ga4", "e2");
        store.append(std::slice::from_ref(&b)).unwrap();
        let listing = store.list(&Filter::default()).unwrap();
        assert_eq!(listing.letters, vec![a.clone(), b.clone()]);
        assert_eq!(listing.unreadable, 2);

        // Taking everything keeps what could not be read, byte for byte.
        assert_eq!(store.take(&Filter::default()).unwrap(), vec![a, b]);
        let listing = store.list(&Filter::default()).unwrap();
        assert!(listing.letters.is_empty());
        assert_eq!(listing.unreadable, 2);
        let text = fs::read_to_string(store.path()).unwrap();
        assert_eq!(text, "not json\n{\"id\":\"x\",\"tool\":\"ga\n");
    }

    #[test]
    fn take_with_removes_only_after_success() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetters::new(dir.path());
        let a = letter("ga4", "e1");
        store.append(std::slice::from_ref(&a)).unwrap();
        let err = store
            .take_with(&Filter::default(), |_| -> io::Result<()> {
                Err(io::Error::other("disk full"))
            })
            .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(store.count().unwrap(), 1);

        let (taken, out) = store
            .take_with(&Filter::default(), |letters| Ok(letters.len()))
            .unwrap();
        assert_eq!(taken, vec![a]);
        assert_eq!(out, Some(1));
        let (taken, out) = store
            .take_with(&Filter::default(), |_| -> io::Result<()> {
                panic!("not called without matches")
            })
            .unwrap();
        assert!(taken.is_empty());
        assert_eq!(out, None);
    }

    #[test]
    fn concurrent_appends_and_takes_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        const WRITERS: usize = 4;
        const PER_WRITER: usize = 60;
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = DeadLetters::new(&data);
                std::thread::spawn(move || {
                    for i in 0..PER_WRITER {
                        let l = letter(&format!("t{w}"), &format!("w{w}-{i}"));
                        store.append(&[l]).unwrap();
                    }
                })
            })
            .collect();
        // Meanwhile a "CLI" keeps taking one writer's letters at a time
        // until every writer is done.
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let taker = {
            let store = DeadLetters::new(&data);
            let done = done.clone();
            std::thread::spawn(move || {
                let mut taken = Vec::new();
                let mut round = 0;
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let filter = Filter {
                        tool: Some(format!("t{}", round % WRITERS)),
                        ids: vec![],
                    };
                    taken.extend(store.take(&filter).unwrap());
                    round += 1;
                }
                taken
            })
        };
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut all = taker.join().unwrap();
        let store = DeadLetters::new(&data);
        let rest = store.list(&Filter::default()).unwrap();
        assert_eq!(rest.unreadable, 0);
        all.extend(store.take(&Filter::default()).unwrap());
        let mut seen: Vec<String> = all.into_iter().map(|l| l.event_id).collect();
        seen.sort();
        let mut want: Vec<String> = (0..WRITERS)
            .flat_map(|w| (0..PER_WRITER).map(move |i| format!("w{w}-{i}")))
            .collect();
        want.sort();
        assert_eq!(seen, want, "every letter taken exactly once");
        assert_eq!(store.count().unwrap(), 0);
    }

    #[test]
    fn response_is_truncated_on_a_char_boundary() {
        assert_eq!(response_text(b"ok"), "ok");
        assert_eq!(response_text(b"\xff!"), "\u{fffd}!");
        let long = "é".repeat(3000); // 6000 bytes
        let text = response_text(long.as_bytes());
        assert_eq!(text.len(), MAX_RESPONSE_BYTES);
        assert!(text.chars().all(|c| c == 'é'));
        let odd = format!("x{long}");
        let text = response_text(odd.as_bytes());
        assert_eq!(text.len(), MAX_RESPONSE_BYTES - 1);
        assert!(!text.contains('\u{fffd}'));
        // A 4-byte character cut after 3 of its bytes: lossy decoding would
        // turn those into one 3-byte U+FFFD that fits exactly, so the cut
        // must move back before the character instead.
        let emoji = format!("a{}", "\u{1F600}".repeat(1100));
        let text = response_text(emoji.as_bytes());
        assert_eq!(text.len(), 1 + 4 * 1023);
        assert!(!text.contains('\u{fffd}'));
        // Stray continuation bytes at the cut, up to the very end: the cut
        // moves back, never forward past the body.
        let mut stray = vec![b'a'; 4095];
        stray.extend_from_slice(&[0x80; 5]);
        assert_eq!(response_text(&stray), "a".repeat(4094));
        // Invalid bytes that expand to U+FFFD still fit.
        let text = response_text(&[0xff; 5000]);
        assert!(text.len() <= MAX_RESPONSE_BYTES);
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(
            percent_encode("aZ09-._~ /+%é"),
            "aZ09-._~%20%2F%2B%25%C3%A9"
        );
        assert_eq!(percent_encode(""), "");
    }

    #[test]
    fn credentials_are_redacted_in_every_form_and_place() {
        let secret = "tok/en+with space";
        let json = serde_json::json!({"access_token": "short", "k": secret}).to_string();
        let mut d = Delivery::new(
            "meta",
            "e1",
            Payload::Http(HttpRequest {
                method: "POST".into(),
                url: format!(
                    "https://x.example/p?a={}&b={}",
                    url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>(),
                    percent_encode(secret)
                ),
                headers: vec![
                    ("Authorization".into(), "Bearer abc".into()),
                    ("x-key".into(), secret.into()),
                ],
                body: Some(json.into_bytes()),
            }),
        );
        d.secrets = vec![secret.into()];
        let letter = DeadLetter::new(
            d,
            format!("error sending request for url (https://x.example/?k={secret})"),
            Some(401),
            format!("{{\"echo\":\"{secret}\"}}").as_bytes(),
            1,
            0,
        );
        assert!(letter.redacted);
        assert!(letter.delivery.secrets.is_empty());
        let stored = serde_json::to_string(&letter).unwrap();
        for form in secret_forms(secret) {
            assert!(!stored.contains(&form), "{form:?} in {stored}");
        }
        let Payload::Http(req) = &letter.delivery.payload else {
            unreachable!()
        };
        assert_eq!(req.headers[0].1, REDACTED);
        assert_eq!(req.headers[1].1, REDACTED);
        assert_eq!(req.url, "https://x.example/p?a=[REDACTED]&b=[REDACTED]");
        let body: serde_json::Value = serde_json::from_slice(req.body.as_ref().unwrap()).unwrap();
        // A credential field is redacted whatever its length.
        assert_eq!(body["access_token"], REDACTED);
        assert_eq!(body["k"], REDACTED);
        assert!(letter.reason.ends_with("k=[REDACTED])"));
        assert_eq!(letter.response, "{\"echo\":\"[REDACTED]\"}");
        // Nothing to hide: not marked.
        assert!(!letter_of_plain().redacted);
    }

    /// `redacted` is set when a secret was found in any one place, whatever
    /// the others held.
    #[test]
    fn the_redacted_mark_follows_a_secret_in_any_one_place() {
        let secret = "s3cr3t-value";
        let request = |url: &str, header: (&str, &str), body: &str| {
            Payload::Http(HttpRequest {
                method: "POST".into(),
                url: url.into(),
                headers: vec![(header.0.into(), header.1.into())],
                body: Some(body.as_bytes().to_vec()),
            })
        };
        let plain = || request("https://x.example/p", ("x-a", "b"), "{}");
        let places: Vec<(&str, Payload, String, String)> = vec![
            ("reason", plain(), format!("bad {secret}"), String::new()),
            ("response", plain(), "bad".into(), format!("echo {secret}")),
            (
                "stdout line",
                Payload::Stdout(format!("{{\"k\":\"{secret}\"}}")),
                "bad".into(),
                String::new(),
            ),
            (
                "url",
                request(
                    &format!("https://x.example/p?k={secret}"),
                    ("x-a", "b"),
                    "{}",
                ),
                "bad".into(),
                String::new(),
            ),
            (
                "header",
                request("https://x.example/p", ("x-key", secret), "{}"),
                "bad".into(),
                String::new(),
            ),
            (
                "authorization header",
                request("https://x.example/p", ("Authorization", "Bearer x"), "{}"),
                "bad".into(),
                String::new(),
            ),
            (
                "body",
                request(
                    "https://x.example/p",
                    ("x-a", "b"),
                    &format!("{{\"k\":\"{secret}\"}}"),
                ),
                "bad".into(),
                String::new(),
            ),
        ];
        for (place, payload, reason, response) in places {
            let mut d = Delivery::new("t", "e", payload);
            d.secrets = vec![secret.into()];
            let letter = DeadLetter::new(d, reason, Some(400), response.as_bytes(), 1, 0);
            assert!(letter.redacted, "a secret in the {place} only");
            let stored = serde_json::to_string(&letter).unwrap();
            assert!(!stored.contains(secret), "{place}: {stored}");
        }
        // A secret found nowhere, nor an access token: nothing to mark (the
        // body longer than the secret, so every window of it is compared).
        const PLAIN_BODY: &str = "{\"k\":\"a value longer than the secret\"}";
        let mut d = Delivery::new(
            "t",
            "e",
            request("https://x.example/p", ("x-a", "b"), PLAIN_BODY),
        );
        d.secrets = vec![secret.into()];
        let letter = DeadLetter::new(d, "bad", Some(400), b"no", 1, 0);
        assert!(!letter.redacted);
        let Payload::Http(req) = &letter.delivery.payload else {
            unreachable!()
        };
        assert_eq!(req.body.as_deref(), Some(PLAIN_BODY.as_bytes()));
        // An authorization header already redacted is no new finding.
        let d = Delivery::new(
            "t",
            "e",
            request("https://x.example/p", ("authorization", REDACTED), "{}"),
        );
        assert!(!DeadLetter::new(d, "bad", None, b"", 1, 0).redacted);
    }

    /// Secrets under 4 bytes are not looked for (they would match by
    /// chance); from 4 bytes on, every form is.
    #[test]
    fn short_secrets_have_no_forms() {
        for short in ["", "a", "ab", "abc"] {
            assert!(secret_forms(short).is_empty(), "{short:?}");
        }
        assert_eq!(secret_forms("abcd"), ["abcd"]);
        assert_eq!(
            secret_forms("a b\"c"),
            ["a b\"c", "a b\\\"c", "a%20b%22c", "a+b%22c"]
        );
    }

    /// A missing store is empty, but one that cannot be opened is an error
    /// (`deadletter list` must not show "none" over an unreadable store).
    #[test]
    fn a_store_that_cannot_be_opened_is_an_error_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"not a folder").unwrap();
        let store = DeadLetters::new(&file);
        assert!(store.list(&Filter::default()).is_err());
        assert!(store.count().is_err());
        assert!(store.take(&Filter::default()).is_err());
        assert!(store.append(&[letter("t", "e")]).is_err());
    }

    /// A reader who may not write the lock file (`deadletter list` run by
    /// another user) still lists the letters under a shared lock; taking
    /// them, which rewrites the store, needs the write access and fails.
    #[test]
    fn a_reader_without_write_access_lists_but_cannot_take() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetters::new(dir.path());
        store.append(&[letter("t", "e1")]).unwrap();
        let lock = dir.path().join(LOCK_NAME);
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o444)).unwrap();
        // Root passes permission checks: make the file immutable instead.
        struct Unfreeze<'a>(&'a Path);
        impl Drop for Unfreeze<'_> {
            fn drop(&mut self) {
                crate::delivery::tests::immutable(self.0, false);
            }
        }
        let _unfreeze = OpenOptions::new().write(true).open(&lock).is_ok().then(|| {
            crate::delivery::tests::immutable(&lock, true);
            Unfreeze(&lock)
        });
        assert!(
            OpenOptions::new().write(true).open(&lock).is_err(),
            "the lock file must be unwritable for this test"
        );
        let listing = store.list(&Filter::default()).unwrap();
        assert_eq!(ids(&listing.letters), ["e1"]);
        let refused = store.take(&Filter::default()).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(store.count().unwrap(), 1, "nothing was taken");
    }

    /// A data folder without the store's file is an empty store; a store
    /// file that cannot be read (here: a folder in its place) is an error.
    #[test]
    fn a_missing_file_is_empty_an_unreadable_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetters::new(dir.path());
        assert!(store.list(&Filter::default()).unwrap().letters.is_empty());
        assert!(store.take(&Filter::default()).unwrap().is_empty());
        std::fs::create_dir(store.path()).unwrap();
        assert!(store.list(&Filter::default()).is_err());
        assert!(store.take(&Filter::default()).is_err());
    }

    fn letter_of_plain() -> DeadLetter {
        letter("ga4", "e")
    }

    #[test]
    fn new_fills_ids_and_times() {
        let a = letter("t", "e");
        let b = letter("t", "e");
        assert_ne!(a.id, b.id);
        assert_eq!(uuid::Uuid::parse_str(&a.id).unwrap().get_version_num(), 7);
        assert_eq!((a.tool.as_str(), a.event_id.as_str()), ("t", "e"));
        assert_eq!(a.response, "{\"error\":\"bad\"}");
        assert!(a.failed_ms >= 1_700_000_000_000);
    }
}
