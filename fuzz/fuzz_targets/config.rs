//! Config loading on arbitrary text: never panics, and every problem points
//! inside the text (line and column from 1, line within the file).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // A folder that does not exist: no tool files, no state is touched.
    let path = Path::new("/nonexistent-tagproxy-fuzz/tagproxy.toml");
    if let Err(e) = tagproxy::config::parse(path, text) {
        let lines = text.lines().count().max(1);
        for p in &e.0 {
            assert!(p.line >= 1 && p.col >= 1);
            assert!(p.line <= lines + 1, "line {} past the end ({lines})", p.line);
        }
    }
});
