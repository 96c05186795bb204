//! The HTML injector fed one page in arbitrary chunk splits: the output,
//! minus the one inserted tag, is byte for byte the input, whatever the
//! split (the proxy never alters a page except for the tag).
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tagproxy::proxy::inject::{script_tag, Injector, Outcome};

fuzz_target!(|data: &[u8]| {
    // The first bytes choose the chunk sizes, the rest is the page.
    if data.len() < 4 {
        return;
    }
    let (splits, page) = data.split_at(4);
    let tag = script_tag("/_tagproxy/s.js", None);
    let mut injector = Injector::new(tag.clone(), ["/_tagproxy/s.js"], encoding_rs::UTF_8);
    let mut out = Vec::new();
    let mut rest = page;
    let mut i = 0;
    while !rest.is_empty() {
        let n = (splits[i % splits.len()] as usize % 97 + 1).min(rest.len());
        injector.push(Bytes::copy_from_slice(&rest[..n]), &mut out);
        rest = &rest[n..];
        i += 1;
    }
    injector.finish(&mut out);
    let output: Vec<u8> = out.concat();
    match injector.outcome() {
        Outcome::Injected => {
            // The page may hold the tag's text itself (in a comment, say):
            // one of the occurrences is the inserted one.
            let inserted = (0..output.len().saturating_sub(tag.len() - 1))
                .filter(|&at| output[at..].starts_with(&tag))
                .any(|at| {
                    output.len() == page.len() + tag.len()
                        && output[..at] == page[..at]
                        && output[at + tag.len()..] == page[at..]
                });
            assert!(inserted, "output minus the tag differs from the input");
        }
        _ => assert_eq!(output, page, "an untouched page changed"),
    }
});
