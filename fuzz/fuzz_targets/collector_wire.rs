//! The collector's wire parser (SPEC §5) on arbitrary bytes: never panics,
//! and whatever it accepts respects the batch limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tagproxy::collector::wire::{parse_batch, MAX_BATCH};

fuzz_target!(|data: &[u8]| {
    if let Ok(events) = parse_batch(data) {
        assert!(!events.is_empty() || serde_json::from_slice::<serde_json::Value>(data).is_ok());
        assert!(events.len() <= MAX_BATCH);
    }
});
