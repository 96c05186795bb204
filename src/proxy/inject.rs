//! Streaming script injection into (decoded) HTML.
//!
//! lol_html is used as a *scanner*, not as the writer: its element handler
//! records where the tag belongs as a byte offset in the original input
//! (`source_location`), and the output is built from the raw input bytes plus
//! the tag. That makes the result byte-exact by construction (the page is the
//! input with exactly one tag added) and lets us drop the parser the moment
//! the decision is made: the rest of the page is forwarded untouched, without
//! being lexed, which is where most of the throughput comes from.
//!
//! Where the tag goes (SPEC §3): first child of `<head>`; without a head, as
//! the first child of `<body>` or before the first element that is not
//! `<html>`; a document with no element at all gets it at the start. A page
//! that already carries a script whose `src` is our script path, or one of
//! Zaraz's loader paths (`/cdn-cgi/zaraz/i.js`, a configured `initPath`: the
//! proxy serves the client script there), is left alone.
//!
//! The tag goes at the start of the head but such a loader tag usually sits
//! at its end (Zaraz's "load manually" page says "immediately before the
//! `</head>` tag closes"). So nothing after the injection point is let go
//! until the head has been seen whole (up to `</head>` or `<body>`, at most
//! [`CHECK_BUDGET`] bytes): only then is it known whether the page loads
//! the script itself. A loader tag further down (in the body, or past the
//! budget) is not seen: the page then has two tags, and the client script
//! runs once all the same (it returns early when `zaraz` is already its own).

use std::borrow::Cow;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use lol_html::html_content::Element;
use lol_html::send::{HtmlRewriter, Settings};
use lol_html::{
    AsciiCompatibleEncoding, ElementContentHandlers, MemorySettings, OutputSink, Selector,
};

/// Input bytes scanned without finding a place before we give up and stream
/// the page untouched. Real pages put `<head>` in the first few hundred bytes.
const SEEK_BUDGET: usize = 256 * 1024;
/// Bytes after the injection point held back while we check that the page does
/// not already carry our tag. The check ends earlier at `</head>` or `<body>`.
/// Room for a head with inlined critical CSS, since a Zaraz loader tag sits
/// at its very end.
const CHECK_BUDGET: usize = 64 * 1024;
/// Input is fed to the scanner in slices this big, so that once the decision
/// is made at most this much more is lexed.
const SCAN_SLICE: usize = 4 * 1024;
/// Upper bound on the scanner's own buffers: upstream HTML is untrusted.
const SCANNER_MEMORY: usize = 1024 * 1024;

/// What the injector did with a page, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still reading the page.
    Pending,
    /// The tag was added.
    Injected,
    /// The page already had the tag.
    AlreadyPresent,
    /// No place was found within the scan budget, or the scanner failed.
    Untouched,
}

/// Where the scanner is in its search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No place found yet.
    Seeking,
    /// A place was found at `offset`; looking for an existing tag before
    /// committing. `in_head`: keep looking until `</head>` or `<body>`.
    Checking { offset: usize, in_head: bool },
    /// Decided: inject at `Some(offset)`, or not at all.
    Done(Option<usize>),
}

/// State shared between the injector and the scanner's handlers.
struct Scan {
    phase: Phase,
    /// Paths whose script tag means the page loads the script itself.
    script_paths: Vec<String>,
    /// End of the `<html>` start tag, the place of last resort.
    html_end: Option<usize>,
}

impl Scan {
    fn on_element(&mut self, el: &mut ScannedElement<'_, '_>) -> bool {
        let name = el.tag_name();
        let loc = el.source_location().bytes();
        let ours = name == "script" && self.is_our_script(el.get_attribute("src").as_deref());
        match self.phase {
            Phase::Seeking => {
                self.phase = match name.as_str() {
                    "html" => {
                        self.html_end.get_or_insert(loc.end);
                        Phase::Seeking
                    }
                    _ if ours => Phase::Done(None),
                    "head" => Phase::Checking {
                        offset: loc.end,
                        in_head: true,
                    },
                    "body" => Phase::Checking {
                        offset: loc.end,
                        in_head: false,
                    },
                    _ => Phase::Done(Some(loc.start)),
                };
                name == "head"
            }
            Phase::Checking { offset, in_head } => {
                if ours {
                    self.phase = Phase::Done(None);
                } else if !in_head || name == "body" {
                    self.phase = Phase::Done(Some(offset));
                }
                false
            }
            Phase::Done(_) => false,
        }
    }

    fn on_head_end(&mut self) {
        if let Phase::Checking { offset, .. } = self.phase {
            self.phase = Phase::Done(Some(offset));
        }
    }

    /// Whether `src` points at our script (or a path serving it): same
    /// path, any origin or query.
    fn is_our_script(&self, src: Option<&str>) -> bool {
        let Some(src) = src else { return false };
        let src = src.trim();
        let path_start = match src.find("//") {
            Some(i) if i <= src.find('/').unwrap_or(usize::MAX) => src[i + 2..]
                .find('/')
                .map(|j| i + 2 + j)
                .unwrap_or(src.len()),
            _ => 0,
        };
        let path = &src[path_start..];
        let path = path.split(['?', '#']).next().unwrap_or("");
        self.script_paths.iter().any(|p| p == path)
    }
}

/// Returned by the handlers once the decision is made, so lol_html stops
/// lexing the rest of the current slice.
#[derive(Debug)]
struct Decided;

impl std::fmt::Display for Decided {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injection point decided")
    }
}

impl std::error::Error for Decided {}

type ScannedElement<'r, 't> = Element<'r, 't, lol_html::send::SendHandlerTypes>;

/// The scanner's selector, `*`, parsed once: parsing it for every page was
/// ~2 % of the injecting proxy's CPU on 20 KB pages.
fn any_element() -> &'static Selector {
    static ANY: OnceLock<Selector> = OnceLock::new();
    ANY.get_or_init(|| "*".parse().expect("`*` is a valid selector"))
}

/// Discards the scanner's output: ours is built from the raw input.
struct Discard;

impl OutputSink for Discard {
    fn handle_chunk(&mut self, _: &[u8]) {}
}

/// The input held until the decision. Most pages are decided within the
/// first chunk read from the origin: that chunk is kept as it came, not
/// copied; only a page whose decision spans chunks is joined into one
/// buffer (the scanner's offsets index one contiguous document).
enum Held {
    Empty,
    One(Bytes),
    Many(Vec<u8>),
}

impl Held {
    fn push(&mut self, chunk: &Bytes) {
        *self = match std::mem::replace(self, Held::Empty) {
            Held::Empty => Held::One(chunk.clone()),
            Held::One(first) => {
                let mut joined = Vec::with_capacity(first.len() + chunk.len());
                joined.extend_from_slice(&first);
                joined.extend_from_slice(chunk);
                Held::Many(joined)
            }
            Held::Many(mut joined) => {
                joined.extend_from_slice(chunk);
                Held::Many(joined)
            }
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Held::Empty => &[],
            Held::One(b) => b,
            Held::Many(v) => v,
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Held::Empty => Bytes::new(),
            Held::One(b) => b,
            Held::Many(v) => Bytes::from(v),
        }
    }
}

/// Adds the script tag to one HTML document as it streams through.
pub struct Injector {
    scan: Arc<Mutex<Scan>>,
    scanner: Option<HtmlRewriter<'static, Discard>>,
    /// Input not yet emitted: everything from the first byte until the
    /// decision (offsets into the document are offsets into `held`).
    held: Held,
    /// Total input bytes seen.
    seen: usize,
    tag: Bytes,
    script_paths: Vec<String>,
    outcome: Outcome,
}

impl Injector {
    /// `tag` is the complete `<script …></script>` to insert;
    /// `script_paths` are the `src` paths that serve it (its own, Zaraz's
    /// loader paths), used to recognise a page that already has it.
    pub fn new<S: Into<String>>(
        tag: Bytes,
        script_paths: impl IntoIterator<Item = S>,
        encoding: &'static encoding_rs::Encoding,
    ) -> Self {
        let script_paths: Vec<String> = script_paths.into_iter().map(Into::into).collect();
        let scan = Arc::new(Mutex::new(Scan {
            phase: Phase::Seeking,
            script_paths: script_paths.clone(),
            html_end: None,
        }));
        let encoding = AsciiCompatibleEncoding::new(encoding)
            .unwrap_or_else(|| AsciiCompatibleEncoding::new(encoding_rs::UTF_8).unwrap());
        let handler_scan = scan.clone();
        let settings = Settings::new_send()
            .with_encoding(encoding)
            .with_strict(false)
            .with_memory_settings(
                MemorySettings::new().with_max_allowed_memory_usage(SCANNER_MEMORY),
            )
            .append_element_content_handler((
                Cow::Borrowed(any_element()),
                ElementContentHandlers::default().element(
                    move |el: &mut ScannedElement<'_, '_>| {
                        let mut scan = handler_scan.lock().unwrap();
                        if matches!(scan.phase, Phase::Done(_)) {
                            return Err(Decided.into());
                        }
                        let is_head = scan.on_element(el);
                        let done = matches!(scan.phase, Phase::Done(_));
                        drop(scan);
                        if done {
                            // Stop lexing here: `push` commits on this error.
                            return Err(Decided.into());
                        }
                        if is_head {
                            let end_scan = handler_scan.clone();
                            if let Some(handlers) = el.end_tag_handlers() {
                                handlers.push(Box::new(move |_end| {
                                    end_scan.lock().unwrap().on_head_end();
                                    Err(Decided.into())
                                }));
                            }
                        }
                        Ok(())
                    },
                ),
            ));
        Injector {
            scan,
            scanner: Some(HtmlRewriter::new(settings, Discard)),
            held: Held::Empty,
            seen: 0,
            tag,
            script_paths,
            outcome: Outcome::Pending,
        }
    }

    /// What happened so far.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// Feeds one chunk of the document; appends what may be sent to `out`.
    pub fn push(&mut self, chunk: Bytes, out: &mut Vec<Bytes>) {
        if self.scanner.is_none() {
            if !chunk.is_empty() {
                out.push(chunk);
            }
            return;
        }
        let start = self.seen;
        self.seen += chunk.len();
        self.held.push(&chunk);
        let mut pos = 0;
        while pos < chunk.len() {
            let end = (pos + SCAN_SLICE).min(chunk.len());
            let scanner = self.scanner.as_mut().expect("scanning");
            let failed = scanner.write(&chunk[pos..end]).is_err();
            pos = end;
            let phase = self.scan.lock().unwrap().phase;
            match phase {
                Phase::Done(decision) => return self.commit(decision, out),
                _ if failed => return self.give_up(phase, out),
                Phase::Checking { offset, .. } if start + pos - offset > CHECK_BUDGET => {
                    return self.commit(Some(offset), out)
                }
                // The whole head is here and our script path is nowhere in
                // it: no need to lex it to know the tag is not there yet.
                Phase::Checking {
                    offset,
                    in_head: true,
                } if self.head_is_clean(offset) => return self.commit(Some(offset), out),
                Phase::Seeking if start + pos > SEEK_BUDGET => {
                    return self.commit(None, out);
                }
                _ => {}
            }
        }
    }

    /// Ends the document; appends the last bytes to `out`.
    pub fn finish(&mut self, out: &mut Vec<Bytes>) {
        let Some(scanner) = self.scanner.take() else {
            return;
        };
        let failed = scanner.end().is_err();
        let (phase, html_end) = {
            let scan = self.scan.lock().unwrap();
            (scan.phase, scan.html_end)
        };
        let decision = match phase {
            Phase::Done(d) => d,
            Phase::Checking { offset, .. } => Some(offset),
            // Scanned to the end (within budget) finding no place: the whole
            // document is still held, so after `<html>` or at the start works.
            Phase::Seeking if !failed => Some(html_end.unwrap_or(0)),
            Phase::Seeking => None,
        };
        self.commit(decision, out);
    }

    /// Whether the held bytes after `offset` reach the end of the head
    /// (`</head` or `<body`) without mentioning any of the script paths.
    fn head_is_clean(&self, offset: usize) -> bool {
        let held = self.held.as_slice();
        let rest = &held[offset.min(held.len())..];
        let end = memchr::memchr_iter(b'<', rest).find(|&i| {
            let tag = &rest[i + 1..];
            starts_with_ignore_case(tag, b"/head") || starts_with_ignore_case(tag, b"body")
        });
        match end {
            Some(end) => self
                .script_paths
                .iter()
                .all(|p| memchr::memmem::find(&rest[..end], p.as_bytes()).is_none()),
            None => false,
        }
    }

    /// The scanner failed (memory cap, bad input): inject where we already
    /// decided to, or leave the page alone.
    fn give_up(&mut self, phase: Phase, out: &mut Vec<Bytes>) {
        tracing::debug!("html scanner stopped early; page streamed as is");
        let decision = match phase {
            Phase::Checking { offset, .. } => Some(offset),
            Phase::Done(d) => d,
            Phase::Seeking => None,
        };
        self.commit(decision, out)
    }

    /// Emits everything held, with the tag at `decision`, and stops scanning.
    fn commit(&mut self, decision: Option<usize>, out: &mut Vec<Bytes>) {
        self.scanner = None;
        let held = std::mem::replace(&mut self.held, Held::Empty).into_bytes();
        match decision {
            // Decided once, while everything is still held (the scanner
            // is gone afterwards).
            Some(split) if split <= held.len() => {
                if split > 0 {
                    out.push(held.slice(..split));
                }
                out.push(self.tag.clone());
                if split < held.len() {
                    out.push(held.slice(split..));
                }
                self.outcome = Outcome::Injected;
            }
            _ => {
                if !held.is_empty() {
                    out.push(held);
                }
                self.outcome = if decision.is_none()
                    && matches!(self.scan.lock().unwrap().phase, Phase::Done(None))
                {
                    Outcome::AlreadyPresent
                } else {
                    Outcome::Untouched
                };
            }
        }
    }
}

fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The `<script>` tag for a page, with the CSP nonce when the page has one.
pub fn script_tag(script_path: &str, nonce: Option<&str>) -> Bytes {
    let mut tag = format!(r#"<script src="{script_path}" referrerpolicy="origin""#);
    if let Some(nonce) = nonce {
        tag.push_str(r#" nonce=""#);
        tag.push_str(nonce);
        tag.push('"');
    }
    tag.push_str("></script>");
    Bytes::from(tag)
}

/// The nonce a page's `Content-Security-Policy` allows scripts with, if any.
///
/// Looks in the directive that governs script elements: `script-src-elem`,
/// then `script-src`, then `default-src`. Nonces are base64 (SPEC: copied
/// verbatim); anything else is ignored so nothing can break out of the
/// attribute.
pub fn csp_nonce<'a>(policies: impl Iterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    for policy in policies {
        for directive in policy.split(';') {
            let mut words = directive.split_ascii_whitespace();
            let Some(name) = words.next() else { continue };
            let rank = match name.to_ascii_lowercase().as_str() {
                "script-src-elem" => 0,
                "script-src" => 1,
                "default-src" => 2,
                _ => continue,
            };
            let nonce = words.find_map(|w| {
                let v = w.strip_prefix("'nonce-")?.strip_suffix('\'')?;
                let ok = !v.is_empty()
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+/=-_".contains(&b));
                ok.then(|| v.to_string())
            });
            if let Some(nonce) = nonce {
                if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                    best = Some((rank, nonce));
                }
            }
        }
    }
    best.map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/_tagproxy/s.js";
    const TAG: &str = r#"<script src="/_tagproxy/s.js" referrerpolicy="origin"></script>"#;

    fn run(chunks: &[&[u8]]) -> (String, Outcome) {
        let mut inj = Injector::new(script_tag(PATH, None), [PATH], encoding_rs::UTF_8);
        let mut out = Vec::new();
        for c in chunks {
            inj.push(Bytes::copy_from_slice(c), &mut out);
        }
        inj.finish(&mut out);
        // No empty chunks: the injector forwards only bytes (a writer that
        // does not skip an empty chunk would end a chunked body there).
        assert!(out.iter().all(|b| !b.is_empty()), "an empty chunk: {out:?}");
        let bytes: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
        (String::from_utf8(bytes).unwrap(), inj.outcome())
    }

    fn inject(html: &str) -> String {
        run(&[html.as_bytes()]).0
    }

    /// The tag at the very start or the very end of what is held: no
    /// empty piece on either side of it.
    #[test]
    fn a_tag_at_either_edge_of_the_page_adds_no_empty_chunk() {
        let (out, outcome) = run(&[b"<p>hi</p>"]);
        assert_eq!(out, format!("{TAG}<p>hi</p>"));
        assert_eq!(outcome, Outcome::Injected);
        let (out, outcome) = run(&[b"<html>"]);
        assert_eq!(out, format!("<html>{TAG}"));
        assert_eq!(outcome, Outcome::Injected);
    }

    #[test]
    fn places() {
        let cases = [
            (
                "<html><head><title>x</title></head></html>",
                "<html><head>{T}<title>x</title></head></html>",
            ),
            (
                "<HTML><HEAD lang=x>\n<title>x</title>",
                "<HTML><HEAD lang=x>{T}\n<title>x</title>",
            ),
            (
                r#"<head data-x="1"><meta charset=utf-8>"#,
                r#"<head data-x="1">{T}<meta charset=utf-8>"#,
            ),
            (
                "<!doctype html><html><body><p>hi</p></body></html>",
                "<!doctype html><html><body>{T}<p>hi</p></body></html>",
            ),
            (
                "<!doctype html><html><title>t</title><p>x",
                "<!doctype html><html>{T}<title>t</title><p>x",
            ),
            ("<p>just a fragment</p>", "{T}<p>just a fragment</p>"),
            ("no markup at all", "{T}no markup at all"),
            ("", "{T}"),
            (
                "junk before <!DOCTYPE html><html><head></head>",
                "junk before <!DOCTYPE html><html><head>{T}</head>",
            ),
            (
                "<!-- <head> in a comment --><head>",
                "<!-- <head> in a comment --><head>{T}",
            ),
            ("<html><head>", "<html><head>{T}"),
            ("<html><he", "<html>{T}<he"),
        ];
        for (input, want) in cases {
            assert_eq!(inject(input), want.replace("{T}", TAG), "input: {input}");
        }
    }

    #[test]
    fn existing_tag_is_not_doubled() {
        for page in [
            format!("<html><head>{TAG}<title>x</title></head>"),
            "<head><meta charset=utf-8><script src=\"/_tagproxy/s.js?v=2\"></script></head>"
                .to_string(),
            "<head><script src='https://shop.example/_tagproxy/s.js' async></script>".to_string(),
            format!("{TAG}<p>hello"),
            format!("<body>{TAG}<p>hello"),
        ] {
            let (out, outcome) = run(&[page.as_bytes()]);
            assert_eq!(out, page);
            assert_eq!(outcome, Outcome::AlreadyPresent, "{page}");
        }
        // A different script, or ours after the head, does not count.
        let page = "<head><script src=\"/other/s.js\"></script></head><body>x";
        assert_eq!(
            inject(page),
            page.replacen("<head>", &format!("<head>{TAG}"), 1)
        );
    }

    const LOADER: &str = "/cdn-cgi/zaraz/i.js";

    fn run_zaraz(chunks: &[&[u8]], extra: &[&str]) -> (String, Outcome) {
        let mut paths = vec![PATH, LOADER];
        paths.extend_from_slice(extra);
        let mut inj = Injector::new(script_tag(PATH, None), paths, encoding_rs::UTF_8);
        let mut out = Vec::new();
        for c in chunks {
            inj.push(Bytes::copy_from_slice(c), &mut out);
        }
        inj.finish(&mut out);
        // No empty chunks: the injector forwards only bytes (a writer that
        // does not skip an empty chunk would end a chunked body there).
        assert!(out.iter().all(|b| !b.is_empty()), "an empty chunk: {out:?}");
        let bytes: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
        (String::from_utf8(bytes).unwrap(), inj.outcome())
    }

    /// A page written for Zaraz's "load manually" mode carries its loader
    /// tag "immediately before the `</head>` tag closes"
    /// (<https://developers.cloudflare.com/zaraz/advanced/load-zaraz-manually/>):
    /// it is served the script at that path and must not get a second one,
    /// however the page arrives in chunks.
    #[test]
    fn a_zaraz_loader_tag_at_the_end_of_the_head_is_not_doubled() {
        let page = concat!(
            "<!doctype html><html><head><meta charset=utf-8><title>Shop</title>",
            "<link rel=stylesheet href=/a.css><script src=\"/app.js\"></script>",
            "<script src=\"/cdn-cgi/zaraz/i.js\" referrerpolicy=\"origin\"></script>",
            "</head><body><p>hi</p></body></html>"
        );
        let b = page.as_bytes();
        for i in 0..=b.len() {
            let (out, outcome) = run_zaraz(&[&b[..i], &b[i..]], &[]);
            assert_eq!(out, page, "split at {i}");
            assert_eq!(outcome, Outcome::AlreadyPresent, "split at {i}");
        }
        // Any origin, any query, any quoting, as for our own tag.
        for tag in [
            "<script src='https://shop.example/cdn-cgi/zaraz/i.js'></script>",
            "<script async src=/cdn-cgi/zaraz/i.js?v=1></script>",
        ] {
            let page = format!("<head><title>t</title>{tag}</head><body>x");
            assert_eq!(
                run_zaraz(&[page.as_bytes()], &[]).1,
                Outcome::AlreadyPresent
            );
        }
    }

    /// An imported config's `initPath` counts like the default path.
    #[test]
    fn a_custom_init_path_counts_as_the_loader() {
        let page = "<head><title>t</title><script src=\"/assets/z/init.js\"></script></head>";
        let (out, outcome) = run_zaraz(&[page.as_bytes()], &["/assets/z/init.js"]);
        assert_eq!((out.as_str(), outcome), (page, Outcome::AlreadyPresent));
        // Without it configured, the same page is injected.
        let (out, outcome) = run_zaraz(&[page.as_bytes()], &[]);
        assert_eq!(outcome, Outcome::Injected);
        assert_eq!(out, page.replacen("<head>", &format!("<head>{TAG}"), 1));
    }

    /// Near misses are other scripts: the page gets ours.
    #[test]
    fn paths_that_only_resemble_the_loader_do_not_count() {
        for src in [
            "/cdn-cgi/zaraz/i.json",
            "/cdn-cgi/zaraz/s.js",
            "/x/cdn-cgi/zaraz/i.js",
            "/cdn-cgi/zaraz/",
            // A `//` inside a path is not an authority: this is our own
            // origin's path `/x//host/cdn-cgi/zaraz/i.js`.
            "/x//host/cdn-cgi/zaraz/i.js",
        ] {
            let page = format!("<head><script src=\"{src}\"></script></head><body>");
            let (out, outcome) = run_zaraz(&[page.as_bytes()], &[]);
            assert_eq!(outcome, Outcome::Injected, "{src}");
            assert_eq!(out, page.replacen("<head>", &format!("<head>{TAG}"), 1));
        }
        // A mention outside a script's src is not a loader either.
        let page = "<head><link rel=preload href=\"/cdn-cgi/zaraz/i.js\" as=script></head><body>";
        assert_eq!(run_zaraz(&[page.as_bytes()], &[]).1, Outcome::Injected);
    }

    /// Heads with inlined CSS run past 16 KiB; the loader tag at their end is
    /// still seen (the hold-back budget is [`CHECK_BUDGET`]).
    #[test]
    fn a_loader_tag_after_a_large_head_is_still_seen() {
        let css = "a{color:red}".repeat(40 * 1024 / 12);
        let page = format!(
            "<html><head><style>{css}</style><script src=\"/cdn-cgi/zaraz/i.js\"></script></head><body>"
        );
        let chunks: Vec<&[u8]> = page.as_bytes().chunks(1000).collect();
        let (out, outcome) = run_zaraz(&chunks, &[]);
        assert_eq!(outcome, Outcome::AlreadyPresent);
        assert_eq!(out, page);
    }

    /// A loader tag in the body comes after the head was sent with our tag:
    /// the page then has both (the script runs once, see the module doc).
    #[test]
    fn a_loader_tag_in_the_body_is_too_late() {
        let page =
            "<head><title>t</title></head><body><script src=\"/cdn-cgi/zaraz/i.js\"></script>";
        let (out, outcome) = run_zaraz(&[page.as_bytes()], &[]);
        assert_eq!(outcome, Outcome::Injected);
        assert_eq!(out, page.replacen("<head>", &format!("<head>{TAG}"), 1));
    }

    #[test]
    fn every_split_point_gives_the_same_output() {
        let page = "<!DOCTYPE html>\n<html lang=\"en\">\n<HEAD data-x=\"1\">\n<title>T</title></HEAD><body><p>b</p></body></html>";
        let want = inject(page);
        assert!(want.contains(&format!("<HEAD data-x=\"1\">{TAG}")));
        let b = page.as_bytes();
        for i in 0..=b.len() {
            for j in i..=b.len() {
                let (got, _) = run(&[&b[..i], &b[i..j], &b[j..]]);
                assert_eq!(got, want, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn head_after_the_budget_is_left_alone() {
        let mut page = "<!--".to_string();
        page.push_str(&"x".repeat(SEEK_BUDGET + 2 * SCAN_SLICE));
        page.push_str("--><head>");
        let (out, outcome) = run(&[page.as_bytes()]);
        assert_eq!(outcome, Outcome::Untouched);
        assert!(
            out == page,
            "output differs: {} vs {} bytes",
            out.len(),
            page.len()
        );
    }

    /// The budgets are a contract with page authors (a head after 200 KB
    /// of comments, a tag with a 60 KB attribute still get the script), so
    /// these use literal sizes: a test written in terms of the constants
    /// moves with them and cannot see them shrink.
    #[test]
    fn a_head_after_200_kib_of_prelude_is_still_found() {
        let page = format!("<!--{}--><head><title>t</title>", "x".repeat(200 * 1024));
        let (out, outcome) = run(&[page.as_bytes()]);
        assert_eq!(outcome, Outcome::Injected);
        assert!(out.ends_with(&format!("<head>{TAG}<title>t</title>")));
    }

    #[test]
    fn a_start_tag_longer_than_a_scan_slice_does_not_stop_the_scanner() {
        // The lexer buffers a tag that spans the 4 KiB slices it is fed:
        // the scanner's memory cap must leave room for real pages' long
        // attributes (inline SVG paths, data URIs).
        let page = format!(
            "<html data-x=\"{}\"><head><title>t</title>",
            "y".repeat(60 * 1024)
        );
        let (out, outcome) = run(&[page.as_bytes()]);
        assert_eq!(outcome, Outcome::Injected);
        assert!(out.ends_with(&format!("<head>{TAG}<title>t</title>")));
    }

    #[test]
    fn the_head_check_gives_up_after_64_kib_and_injects() {
        // A head with no end in sight: the held bytes are let go after the
        // check budget, with the tag, rather than held to the end.
        let mut inj = Injector::new(script_tag(PATH, None), [PATH], encoding_rs::UTF_8);
        let mut out = Vec::new();
        inj.push(Bytes::from_static(b"<html><head><style>"), &mut out);
        assert!(out.is_empty(), "nothing is let go before the decision");
        let css = "a{color:red}".repeat(40 * 1024 / 12);
        inj.push(Bytes::from(css.clone()), &mut out);
        assert_eq!(
            inj.outcome(),
            Outcome::Pending,
            "40 KiB is within the budget"
        );
        assert!(out.is_empty());
        inj.push(Bytes::from(css), &mut out);
        assert_eq!(inj.outcome(), Outcome::Injected, "80 KiB is past it");
        let text: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
        assert!(String::from_utf8(text)
            .unwrap()
            .starts_with(&format!("<html><head>{TAG}<style>")));
    }

    #[test]
    fn the_end_of_a_head_that_mentions_the_path_decides() {
        // The head's text names our script (so the quick check cannot clear
        // it) but no tag loads it: `</head>` decides, and nothing after it
        // waits for the rest of the page.
        let mut inj = Injector::new(script_tag(PATH, None), [PATH], encoding_rs::UTF_8);
        let mut out = Vec::new();
        inj.push(
            Bytes::from_static(b"<html><head><script>var s='/_tagproxy/s.js'</script></head>"),
            &mut out,
        );
        assert_eq!(inj.outcome(), Outcome::Injected);
        let text: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
        assert!(String::from_utf8(text)
            .unwrap()
            .starts_with(&format!("<html><head>{TAG}<script>")));
    }

    #[test]
    fn without_a_head_the_first_element_in_the_body_decides() {
        let mut inj = Injector::new(script_tag(PATH, None), [PATH], encoding_rs::UTF_8);
        let mut out = Vec::new();
        inj.push(Bytes::from_static(b"<html><body><p>hi</p>"), &mut out);
        assert_eq!(inj.outcome(), Outcome::Injected);
        // So a loader tag further down the body is too late, as with a head.
        let page = "<html><body><p>hi</p><script src=\"/_tagproxy/s.js\"></script></body>";
        assert_eq!(
            inject(page),
            format!("<html><body>{TAG}<p>hi</p><script src=\"/_tagproxy/s.js\"></script></body>")
        );
    }

    #[test]
    fn the_head_check_budget_counts_from_the_head_not_from_the_start() {
        // A head that starts after 60 KiB of prelude still gets its full
        // 64 KiB to show a loader tag.
        let prelude = format!("<!--{}-->", "x".repeat(60 * 1024));
        let css = "a{color:red}".repeat(40 * 1024 / 12);
        let page = format!(
            "{prelude}<html><head><style>{css}</style><script src=\"{PATH}\"></script></head>"
        );
        let (out, outcome) = run(&[page.as_bytes()]);
        assert_eq!(outcome, Outcome::AlreadyPresent);
        assert!(out == page);
    }

    #[test]
    fn the_seek_budget_holds_whatever_the_chunk_sizes() {
        let mut page = "<!--".to_string();
        page.push_str(&"x".repeat(300 * 1024));
        page.push_str("--><head>");
        // Chunks of 1,000 bytes: the budget is crossed, never met exactly.
        let chunks: Vec<&[u8]> = page.as_bytes().chunks(1000).collect();
        let (out, outcome) = run(&chunks);
        assert_eq!(outcome, Outcome::Untouched);
        assert!(out == page);
    }

    #[test]
    fn rest_of_page_is_not_held_after_decision() {
        let mut inj = Injector::new(script_tag(PATH, None), [PATH], encoding_rs::UTF_8);
        let mut out = Vec::new();
        inj.push(
            Bytes::from_static(b"<html><head><title>t</title></head>"),
            &mut out,
        );
        assert_eq!(inj.outcome(), Outcome::Injected);
        let emitted: usize = out.iter().map(|b| b.len()).sum();
        assert_eq!(emitted, 35 + TAG.len());
        out.clear();
        let rest = Bytes::from_static(b"<body>rest</body>");
        inj.push(rest.clone(), &mut out);
        assert_eq!(out, vec![rest]);
    }

    #[test]
    fn nonce_from_csp() {
        let n = |p: &str| csp_nonce(std::iter::once(p));
        assert_eq!(
            n("default-src 'self'; script-src 'nonce-abc+/=' 'strict-dynamic'"),
            Some("abc+/=".into())
        );
        assert_eq!(
            n("default-src 'nonce-d'; script-src-elem 'nonce-e'"),
            Some("e".into())
        );
        // With no script-src, default-src governs script elements
        // (https://www.w3.org/TR/CSP3/#directive-fallback-list).
        assert_eq!(n("default-src 'self' 'nonce-only'"), Some("only".into()));
        assert_eq!(
            n("script-src 'nonce-s'; default-src 'nonce-d'"),
            Some("s".into())
        );
        // A repeated directive is ignored: the first one counts
        // (https://www.w3.org/TR/CSP3/#parse-serialized-policy).
        assert_eq!(
            n("script-src 'nonce-first'; script-src 'nonce-second'"),
            Some("first".into())
        );
        assert_eq!(n("style-src 'nonce-x'"), None);
        assert_eq!(n("script-src 'nonce-a\"b'"), None);
        let tag = script_tag(PATH, Some("abc"));
        assert_eq!(
            &tag[..],
            br#"<script src="/_tagproxy/s.js" referrerpolicy="origin" nonce="abc"></script>"#
        );
    }
}
