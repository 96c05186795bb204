//! Idempotent collection: the browser retries a batch whose answer it did
//! not get, with the same event ids, so an event id seen recently is
//! accepted again but not delivered twice.
//!
//! Two generations of ids: lookups check both, inserts go to the current
//! one, and the current one becomes the previous one when it is full or old.
//! Memory is bounded by `2 × capacity` ids; an id is remembered for at least
//! one generation's lifetime.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RecentIds {
    inner: Mutex<Generations>,
    capacity: usize,
    lifetime: Duration,
}

struct Generations {
    current: HashSet<String>,
    previous: HashSet<String>,
    started: Instant,
}

impl RecentIds {
    pub fn new(capacity: usize, lifetime: Duration) -> RecentIds {
        RecentIds {
            inner: Mutex::new(Generations {
                current: HashSet::new(),
                previous: HashSet::new(),
                started: Instant::now(),
            }),
            capacity,
            lifetime,
        }
    }

    /// Records `id`; `false` when it was already seen (a retry).
    pub fn first_time(&self, id: &str) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.current.contains(id) || g.previous.contains(id) {
            return false;
        }
        if g.current.len() >= self.capacity || g.started.elapsed() >= self.lifetime {
            g.previous = std::mem::take(&mut g.current);
            g.started = Instant::now();
        }
        g.current.insert(id.to_string());
        true
    }

    /// Forgets `id`: its event was not accepted after all (the delivery
    /// queue answered busy), so the client's retry must go through.
    pub fn forget(&self, id: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.current.remove(id);
        g.previous.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_recognised_and_memory_is_bounded() {
        let ids = RecentIds::new(3, Duration::from_secs(3600));
        assert!(ids.first_time("a"));
        assert!(!ids.first_time("a"));
        for id in ["b", "c", "d", "e"] {
            assert!(ids.first_time(id));
        }
        // "a" lived through one rotation ("d" rotated a, b, c out to previous),
        // then a second one ("g" below) forgets it.
        assert!(!ids.first_time("b"));
        for id in ["f", "g", "h"] {
            assert!(ids.first_time(id));
        }
        assert!(ids.first_time("a"), "forgotten after two generations");
        ids.forget("a");
        assert!(ids.first_time("a"), "forgotten on request");
        let g = ids.inner.lock().unwrap();
        assert!(g.current.len() + g.previous.len() <= 6);
    }
}
