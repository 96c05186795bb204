//! Injection throughput (MB/s) against a plain copy of the same bytes.
//!
//! Pages are fed in 16 KiB chunks, as they arrive from the network. Inputs:
//! the real pages in `../shared/fixtures/pages/` (skipped with a note when the
//! directory is missing) and a generated ~20 KB page with an ordinary
//! `<head>`. A second group measures the gzip path (gunzip → inject → gzip)
//! against gunzip → gzip of the same page without injection; `per_page` is
//! the fixed cost of one response.
//!
//! Run: `cargo bench --bench inject`

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tagproxy::proxy::codec::{Coding, Decoder, Encoder};
use tagproxy::proxy::inject::{script_tag, Injector};

const CHUNK: usize = 16 * 1024;
const SCRIPT_PATH: &str = "/_tagproxy/s.js";

fn pages_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/pages")
}

/// The real fixture pages, by file name, sorted.
fn fixture_pages() -> Vec<(String, Bytes)> {
    let dir = pages_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("note: {} missing; real pages skipped", dir.display());
        return Vec::new();
    };
    let mut pages: Vec<(String, Bytes)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "html"))
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            Some((name, Bytes::from(std::fs::read(&p).ok()?)))
        })
        .collect();
    pages.sort_by(|a, b| a.0.cmp(&b.0));
    if pages.is_empty() {
        eprintln!(
            "note: no .html files in {}; real pages skipped",
            dir.display()
        );
    }
    pages
}

/// A ~20 KB page with an ordinary `<head>`.
fn generated_page() -> Bytes {
    let mut s = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Product 42 - Demo Shop</title>\n<link rel=\"stylesheet\" href=\"/shop.css\">\n\
         <style>body{font-family:sans-serif;margin:0}.card{padding:1em;border:1px solid #ddd}</style>\n\
         </head>\n<body>\n<header><nav><a href=\"/\">Home</a> <a href=\"/cart\">Cart</a></nav></header>\n<main>\n",
    );
    let mut i = 0;
    while s.len() < 20 * 1024 - 200 {
        s.push_str(&format!(
            "<div class=\"card\" id=\"item-{i}\"><h2>Item {i}</h2><p>Lorem ipsum dolor sit amet, \
             consectetur adipiscing elit, sed do eiusmod tempor.</p><a href=\"/p/{i}\">View</a></div>\n"
        ));
        i += 1;
    }
    s.push_str("</main>\n<footer>&copy; Demo Shop</footer>\n</body>\n</html>\n");
    Bytes::from(s)
}

/// The page as the network would deliver it.
fn chunks(page: &Bytes) -> Vec<Bytes> {
    (0..page.len())
        .step_by(CHUNK)
        .map(|i| page.slice(i..(i + CHUNK).min(page.len())))
        .collect()
}

fn inject(tag: &Bytes, chunks: &[Bytes], out: &mut Vec<Bytes>) {
    let mut inj = Injector::new(tag.clone(), [SCRIPT_PATH], encoding_rs::UTF_8);
    for c in chunks {
        inj.push(c.clone(), out);
    }
    inj.finish(out);
}

fn copy(chunks: &[Bytes], out: &mut Vec<Bytes>) {
    for c in chunks {
        out.push(Bytes::copy_from_slice(c));
    }
}

/// The injector's output must be the page with exactly one tag added.
fn check_injects(name: &str, page: &Bytes, tag: &Bytes) {
    let mut out = Vec::new();
    inject(tag, &chunks(page), &mut out);
    let joined: Vec<u8> = out.concat();
    assert_eq!(
        joined.len(),
        page.len() + tag.len(),
        "{name}: tag not added once"
    );
    let at = joined
        .windows(tag.len())
        .position(|w| w == &tag[..])
        .expect("tag present");
    assert_eq!(
        &joined[..at],
        &page[..at],
        "{name}: bytes before tag differ"
    );
    assert_eq!(
        &joined[at + tag.len()..],
        &page[at..],
        "{name}: bytes after tag differ"
    );
}

fn bench_inject(c: &mut Criterion) {
    let tag = script_tag(SCRIPT_PATH, None);
    let mut pages = fixture_pages();
    pages.push(("generated-20k.html".to_string(), generated_page()));

    let mut group = c.benchmark_group("inject");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20);
    for (name, page) in &pages {
        check_injects(name, page, &tag);
        let input = chunks(page);
        group.throughput(Throughput::Bytes(page.len() as u64));
        let mut out = Vec::with_capacity(input.len() + 3);
        group.bench_with_input(BenchmarkId::new("copy", name), &input, |b, input| {
            b.iter(|| {
                out.clear();
                copy(input, &mut out);
                black_box(&out);
            })
        });
        group.bench_with_input(BenchmarkId::new("inject", name), &input, |b, input| {
            b.iter(|| {
                out.clear();
                inject(&tag, input, &mut out);
                black_box(&out);
            })
        });
    }
    group.finish();
}

/// Fixed cost per response, whatever its size: building the scanner, and
/// deciding on a minimal page.
fn bench_per_page(c: &mut Criterion) {
    let tag = script_tag(SCRIPT_PATH, None);
    let tiny = Bytes::from_static(
        b"<!doctype html><html><head><title>x</title></head><body>hi</body></html>",
    );
    let mut group = c.benchmark_group("per_page");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20)
        .throughput(Throughput::Elements(1));
    group.bench_function("new+finish(empty)", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            let mut inj = Injector::new(tag.clone(), [SCRIPT_PATH], encoding_rs::UTF_8);
            inj.finish(&mut out);
            black_box(&out);
        })
    });
    group.bench_function("tiny-page", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            inject(&tag, std::slice::from_ref(&tiny), &mut out);
            black_box(&out);
        })
    });
    group.finish();
}

/// gunzip → (inject) → gzip, chunk by chunk, as the proxy does it.
fn gzip_roundtrip(gz_chunks: &[Bytes], tag: Option<&Bytes>) -> usize {
    let mut dec = Decoder::new(Coding::Gzip);
    let mut enc = Encoder::new(Coding::Gzip);
    let mut inj = tag.map(|t| Injector::new(t.clone(), [SCRIPT_PATH], encoding_rs::UTF_8));
    let mut out = Vec::new();
    let mut sent = 0;
    let mut step = |plain: Bytes, last: bool, inj: &mut Option<Injector>, enc: &mut Encoder| {
        out.clear();
        match inj {
            Some(inj) => {
                inj.push(plain, &mut out);
                if last {
                    inj.finish(&mut out);
                }
            }
            None if plain.is_empty() => {}
            None => out.push(plain),
        }
        sent += enc.encode(&out).expect("gzip encode").len();
    };
    for c in gz_chunks {
        let plain = dec.decode(c.clone()).expect("gzip decode");
        step(plain, false, &mut inj, &mut enc);
    }
    let rest = dec.finish().expect("gzip finish");
    step(rest, true, &mut inj, &mut enc);
    sent + enc.finish().expect("gzip trailer").len()
}

fn bench_gzip(c: &mut Criterion) {
    let tag = script_tag(SCRIPT_PATH, None);
    let name = "blog-post-318k.html";
    let page = match std::fs::read(pages_dir().join(name)) {
        Ok(p) => Bytes::from(p),
        Err(_) => {
            eprintln!("note: {name} missing; gzip group uses the generated page");
            generated_page()
        }
    };
    // The origin's body: gzip at flate2's default level (6), like most servers.
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&page).unwrap();
        Bytes::from(e.finish().unwrap())
    };
    let gz_chunks = chunks(&gz);
    assert!(gzip_roundtrip(&gz_chunks, Some(&tag)) > 0);

    let mut group = c.benchmark_group("gzip");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20)
        // Throughput counted on the decoded page, as in the `inject` group.
        .throughput(Throughput::Bytes(page.len() as u64));
    group.bench_function(BenchmarkId::new("gunzip+gzip", name), |b| {
        b.iter(|| black_box(gzip_roundtrip(&gz_chunks, None)))
    });
    group.bench_function(BenchmarkId::new("gunzip+inject+gzip", name), |b| {
        b.iter(|| black_box(gzip_roundtrip(&gz_chunks, Some(&tag))))
    });
    group.finish();
}

criterion_group!(benches, bench_inject, bench_per_page, bench_gzip);
criterion_main!(benches);
