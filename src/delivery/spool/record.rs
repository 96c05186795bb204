//! The spool's on-disk records.
//!
//! A segment file is a magic header followed by framed records:
//! `[u32 len][u32 crc32 of payload][payload]`, little-endian. The payload is
//! a small binary encoding of one delivery (request bodies stay bytes; JSON
//! would triple them). A frame whose length runs past the end of the file or
//! whose checksum does not match is a torn write: everything from there on
//! is dropped at recovery.
//!
//! An ack file holds `[u64 seq][u32 crc32 of seq]` entries: deliveries of the
//! segment that are settled.

use crate::tools::{Delivery, HttpRequest, Payload, Source};

/// First bytes of every segment file; the digit is the format version.
pub const MAGIC: &[u8; 8] = b"TPSPOOL1";
/// Bytes of a frame header.
pub const FRAME_HEADER: usize = 8;
/// Bytes of one ack entry.
pub const ACK_LEN: usize = 12;
/// No single record is larger (a delivery is at most a few hundred KB).
pub const MAX_RECORD: usize = 16 << 20;

/// A delivery as the spool keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub seq: u64,
    /// When the collector accepted the event (unix ms): `max_age_s` counts
    /// from here, across restarts.
    pub accepted_ms: u64,
    pub delivery: Delivery,
}

/// Appends `stored` as one frame to `out`.
pub fn encode_frame(stored: &Stored, out: &mut Vec<u8>) {
    frame(
        stored.seq,
        &encode_body(stored.accepted_ms, &stored.delivery),
        out,
    );
}

/// Everything of a record but its sequence number: encoded by the caller,
/// off the writer thread, which then only numbers and frames it.
pub fn encode_body(accepted_ms: u64, delivery: &Delivery) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    encode_rest(accepted_ms, delivery, &mut out);
    out
}

/// The length [`encode_body`] would give `delivery`, without building it.
pub fn encoded_len(delivery: &Delivery) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = 8 + 4 + delivery.tool.len() + 4 + delivery.event_id.len() + 1;
    match &delivery.payload {
        Payload::Stdout(line) => n += 4 + line.len(),
        Payload::Http(req) => {
            n += 4 + req.method.len() + 4 + req.url.len() + 4;
            n += req
                .headers
                .iter()
                .map(|(k, v)| 8 + k.len() + v.len())
                .sum::<usize>();
            n += 1 + req.body.as_ref().map_or(0, |b| 4 + b.len());
        }
    }
    if delivery.source.is_some() || !delivery.secrets.is_empty() {
        let mut count = Count(0);
        let extra = ExtraRef {
            source: &delivery.source,
            secrets: &delivery.secrets,
        };
        let _ = serde_json::to_writer(&mut count, &extra);
        n += 4 + count.0;
    }
    n
}

/// Appends the frame of record `seq` with `body` (from [`encode_body`]).
pub fn frame(seq: u64, body: &[u8], out: &mut Vec<u8>) {
    let seq = seq.to_le_bytes();
    let len = (seq.len() + body.len()) as u32;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq);
    crc.update(body);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&seq);
    out.extend_from_slice(body);
}

/// What the frame at the start of `buf` holds.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// A whole, valid record and the bytes it took.
    Record(Stored, usize),
    /// Not enough bytes, a bad checksum or an undecodable payload.
    Torn,
}

pub fn decode_frame(buf: &[u8]) -> Frame {
    if buf.len() < FRAME_HEADER {
        return Frame::Torn;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap());
    if len > MAX_RECORD || buf.len() < FRAME_HEADER + len {
        return Frame::Torn;
    }
    let payload = &buf[FRAME_HEADER..FRAME_HEADER + len];
    if crc32fast::hash(payload) != crc {
        return Frame::Torn;
    }
    match decode(payload) {
        Some(stored) => Frame::Record(stored, FRAME_HEADER + len),
        None => Frame::Torn,
    }
}

/// The head of a valid frame, read without decoding the delivery: enough to
/// tell whose it is and to skip it. `None`: torn (as [`decode_frame`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head<'a> {
    pub seq: u64,
    pub accepted_ms: u64,
    pub tool: &'a [u8],
    pub event_id: &'a [u8],
    /// Bytes of the whole frame.
    pub used: usize,
}

/// The head of the frame at the start of `buf` (checksum verified), or
/// `None` when it is torn or too short.
pub fn peek_frame(buf: &[u8]) -> Option<Head<'_>> {
    if buf.len() < FRAME_HEADER {
        return None;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap());
    if len > MAX_RECORD || buf.len() < FRAME_HEADER + len {
        return None;
    }
    let payload = &buf[FRAME_HEADER..FRAME_HEADER + len];
    if crc32fast::hash(payload) != crc {
        return None;
    }
    let mut r = Reader(payload);
    let seq = r.u64()?;
    let accepted_ms = r.u64()?;
    let tool = r.bytes()?;
    let event_id = r.bytes()?;
    Some(Head {
        seq,
        accepted_ms,
        tool,
        event_id,
        used: FRAME_HEADER + len,
    })
}

/// The frame length a buffer starting at a frame needs to hold it whole,
/// when its header is there (`None`: fewer than 8 bytes, or a length no
/// record can have).
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let len = u32::from_le_bytes(buf.get(0..4)?.try_into().unwrap()) as usize;
    (len <= MAX_RECORD).then_some(FRAME_HEADER + len)
}

/// `accepted_ms` and the tool id of a record body from [`encode_body`].
pub fn peek_body(body: &[u8]) -> Option<(u64, &[u8])> {
    let mut r = Reader(body);
    let accepted_ms = r.u64()?;
    Some((accepted_ms, r.bytes()?))
}

pub fn encode_ack(seq: u64, out: &mut Vec<u8>) {
    let bytes = seq.to_le_bytes();
    out.extend_from_slice(&bytes);
    out.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
}

/// The valid acks in an ack file; a torn or damaged entry is skipped.
pub fn decode_acks(buf: &[u8]) -> impl Iterator<Item = u64> + '_ {
    buf.chunks_exact(ACK_LEN).filter_map(|c| {
        let seq = &c[0..8];
        let crc = u32::from_le_bytes(c[8..12].try_into().unwrap());
        (crc32fast::hash(seq) == crc).then(|| u64::from_le_bytes(seq.try_into().unwrap()))
    })
}

const STDOUT: u8 = 0;
const HTTP: u8 = 1;

fn encode_rest(accepted_ms: u64, delivery: &Delivery, out: &mut Vec<u8>) {
    out.extend_from_slice(&accepted_ms.to_le_bytes());
    put_bytes(out, delivery.tool.as_bytes());
    put_bytes(out, delivery.event_id.as_bytes());
    match &delivery.payload {
        Payload::Stdout(line) => {
            out.push(STDOUT);
            put_bytes(out, line.as_bytes());
        }
        Payload::Http(req) => {
            out.push(HTTP);
            put_bytes(out, req.method.as_bytes());
            put_bytes(out, req.url.as_bytes());
            out.extend_from_slice(&(req.headers.len() as u32).to_le_bytes());
            for (k, v) in &req.headers {
                put_bytes(out, k.as_bytes());
                put_bytes(out, v.as_bytes());
            }
            match &req.body {
                None => out.push(0),
                Some(body) => {
                    out.push(1);
                    put_bytes(out, body);
                }
            }
        }
    }
    // Optional tail, absent in records of older versions: the delivery's
    // source and secrets (what a dead letter needs), as JSON.
    if delivery.source.is_some() || !delivery.secrets.is_empty() {
        // Length first, then the JSON written in place (no copy of the
        // source event, no second buffer).
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        let extra = ExtraRef {
            source: &delivery.source,
            secrets: &delivery.secrets,
        };
        serde_json::to_writer(&mut *out, &extra).expect("JSON serializes");
        let len = (out.len() - at - 4) as u32;
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
}

/// [`Extra`], borrowed.
#[derive(serde::Serialize)]
struct ExtraRef<'a> {
    source: &'a Option<Box<Source>>,
    secrets: &'a Vec<String>,
}

/// The optional tail of a record.
#[derive(serde::Serialize, serde::Deserialize)]
struct Extra {
    source: Option<Box<Source>>,
    secrets: Vec<String>,
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Reads fields off the front of a payload.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

fn decode(payload: &[u8]) -> Option<Stored> {
    let mut r = Reader(payload);
    let seq = r.u64()?;
    let accepted_ms = r.u64()?;
    let tool = r.string()?;
    let event_id = r.string()?;
    let payload = match r.u8()? {
        STDOUT => Payload::Stdout(r.string()?),
        HTTP => {
            let method = r.string()?;
            let url = r.string()?;
            let n = r.u32()? as usize;
            let mut headers = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                headers.push((r.string()?, r.string()?));
            }
            let body = match r.u8()? {
                0 => None,
                1 => Some(r.bytes()?.to_vec()),
                _ => return None,
            };
            Payload::Http(HttpRequest {
                method,
                url,
                headers,
                body,
            })
        }
        _ => return None,
    };
    let mut delivery = Delivery::new(tool, event_id, payload);
    if !r.0.is_empty() {
        let extra: Extra = serde_json::from_slice(r.bytes()?).ok()?;
        delivery.source = extra.source;
        delivery.secrets = extra.secrets;
    }
    r.0.is_empty().then_some(Stored {
        seq,
        accepted_ms,
        delivery,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn http(body: Option<Vec<u8>>) -> Stored {
        Stored {
            seq: 42,
            accepted_ms: 1_700_000_000_000,
            delivery: Delivery {
                tool: "ga4".into(),
                event_id: "evt-123456".into(),
                payload: Payload::Http(HttpRequest {
                    method: "POST".into(),
                    url: "http://127.0.0.1:1/g/collect?v=2".into(),
                    headers: vec![("content-type".into(), "text/plain".into())],
                    body,
                }),
                source: None,
                secrets: Vec::new(),
            },
        }
    }

    fn console() -> Stored {
        Stored {
            seq: 1,
            accepted_ms: 2,
            delivery: Delivery {
                tool: "console".into(),
                event_id: "e".into(),
                payload: Payload::Stdout("line ✓".into()),
                source: None,
                secrets: Vec::new(),
            },
        }
    }

    /// `s` with a source (the event and action) and a secret attached.
    fn with_source(mut s: Stored) -> Stored {
        s.delivery.secrets = vec!["tok".into()];
        s.delivery.source = Some(Box::new(Source {
            event: serde_json::from_value(serde_json::json!({
                "id": "e", "kind": "track", "name": "n", "client": {}, "system": {},
                "identity": {"client_id": "c", "session_id": 1, "session_count": 1,
                    "session_start": true, "first_visit": true, "hit": 1, "pageviews": 0,
                    "engaged": false, "ga_client": false},
                "timestamp_ms": 1, "ip": null, "user_agent": "", "crawler": false,
                "consent_mode": null, "consent_replay": false
            }))
            .unwrap(),
            action: Some(2),
            action_name: Some("a".into()),
            part: 1,
        }));
        s
    }

    #[test]
    fn source_and_secrets_round_trip() {
        let s = with_source(http(Some(b"{}".to_vec())));
        let mut buf = Vec::new();
        encode_frame(&s, &mut buf);
        assert_eq!(decode_frame(&buf), Frame::Record(s, buf.len()));
    }

    #[test]
    fn frames_round_trip() {
        for s in [
            http(None),
            http(Some(b"\x00\xffbinary".to_vec())),
            console(),
        ] {
            let mut buf = Vec::new();
            encode_frame(&s, &mut buf);
            assert_eq!(decode_frame(&buf), Frame::Record(s, buf.len()));
        }
    }

    /// The delivery engine sizes its window with `encoded_len` before any
    /// record is built: it must be the encoded body's length exactly.
    #[test]
    fn encoded_len_is_the_bodys_length() {
        let console = console();
        let mut secrets_only = http(None);
        secrets_only.delivery.secrets = vec!["tok".into()];
        let mut source_only = with_source(console.clone());
        source_only.delivery.secrets.clear();
        for s in [
            http(None),
            http(Some(b"\x00\xffbinary".to_vec())),
            with_source(http(Some(b"{}".to_vec()))),
            with_source(http(None)),
            with_source(console.clone()),
            secrets_only,
            source_only,
            console,
        ] {
            let body = encode_body(s.accepted_ms, &s.delivery);
            assert_eq!(
                encoded_len(&s.delivery),
                body.len(),
                "{:?}",
                s.delivery.tool
            );
        }
    }

    /// `MAX_RECORD` bounds what a frame's length may claim (so a damaged
    /// length cannot make a reader allocate gigabytes): a record of exactly
    /// that many bytes is read, one byte more is torn even when it is all
    /// there with a valid checksum.
    #[test]
    fn a_record_of_max_record_bytes_is_read_and_one_byte_more_is_torn() {
        let sized = |len: usize| {
            let mut d = Delivery {
                tool: "console".into(),
                event_id: "e".into(),
                payload: Payload::Stdout(String::new()),
                source: None,
                secrets: Vec::new(),
            };
            let base = 8 + encode_body(0, &d).len();
            d.payload = Payload::Stdout("x".repeat(len - base));
            let mut buf = Vec::new();
            frame(7, &encode_body(0, &d), &mut buf);
            assert_eq!(buf.len(), FRAME_HEADER + len);
            buf
        };
        let max = sized(MAX_RECORD);
        assert!(matches!(decode_frame(&max), Frame::Record(_, n) if n == max.len()));
        assert_eq!(peek_frame(&max).map(|h| h.used), Some(max.len()));
        assert_eq!(frame_len(&max), Some(max.len()));
        let over = sized(MAX_RECORD + 1);
        assert_eq!(decode_frame(&over), Frame::Torn);
        assert_eq!(peek_frame(&over), None);
        assert_eq!(frame_len(&over), None);
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_torn() {
        let mut buf = Vec::new();
        encode_frame(&http(Some(b"{\"a\":1}".to_vec())), &mut buf);
        for cut in 0..buf.len() {
            assert_eq!(decode_frame(&buf[..cut]), Frame::Torn, "cut at {cut}");
        }
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(
                !matches!(decode_frame(&bad), Frame::Record(ref s, _) if *s == http(Some(b"{\"a\":1}".to_vec()))),
                "flip at {i}"
            );
        }
    }

    #[test]
    fn heads_match_full_decoding_and_torn_frames_have_none() {
        let s = http(Some(b"{}".to_vec()));
        let mut buf = Vec::new();
        encode_frame(&s, &mut buf);
        let head = peek_frame(&buf).unwrap();
        assert_eq!(
            (
                head.seq,
                head.accepted_ms,
                head.tool,
                head.event_id,
                head.used
            ),
            (
                42,
                1_700_000_000_000,
                &b"ga4"[..],
                &b"evt-123456"[..],
                buf.len()
            )
        );
        assert_eq!(frame_len(&buf), Some(buf.len()));
        let body = encode_body(7, &s.delivery);
        assert_eq!(peek_body(&body), Some((7, &b"ga4"[..])));
        for cut in 0..buf.len() {
            assert_eq!(peek_frame(&buf[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn acks_skip_torn_and_damaged_entries() {
        let mut buf = Vec::new();
        encode_ack(7, &mut buf);
        encode_ack(9, &mut buf);
        buf[ACK_LEN + 3] ^= 1; // damage the second
        encode_ack(11, &mut buf);
        buf.extend_from_slice(&[1, 2, 3]); // torn tail
        assert_eq!(decode_acks(&buf).collect::<Vec<_>>(), vec![7, 11]);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_frame(&bytes);
            let _ = decode_acks(&bytes).count();
        }
    }
}
