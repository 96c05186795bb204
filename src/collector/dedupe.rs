//! Idempotent collection: the browser retries a batch whose answer it did
//! not get, with the same event ids, so an event id seen recently is
//! accepted again but not delivered twice.
//!
//! Two generations of ids: lookups check both, inserts go to the current
//! one, and the current one becomes the previous one when it is full or old.
//! Memory is bounded by `2 × capacity` ids; an id is remembered for at least
//! one generation's lifetime.
//!
//! An id is kept as a 128-bit keyed hash (two SipHash-1-3, random keys),
//! not as its text: 16 bytes whatever its length, so the set's size is known
//! in advance (a test holds it to its bound). Two ids collide with odds of
//! about n²/2¹²⁹, and the random keys keep a client from making them
//! collide on purpose.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RecentIds {
    inner: Mutex<Generations>,
    capacity: usize,
    lifetime: Duration,
    keys: (RandomState, RandomState),
}

struct Generations {
    current: HashSet<u128>,
    previous: HashSet<u128>,
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
            keys: (RandomState::new(), RandomState::new()),
        }
    }

    fn digest(&self, id: &str) -> u128 {
        let hi = self.keys.0.hash_one(id) as u128;
        let lo = self.keys.1.hash_one(id) as u128;
        (hi << 64) | lo
    }

    /// Records `id`; `false` when it was already seen (a retry).
    pub fn first_time(&self, id: &str) -> bool {
        let id = self.digest(id);
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.current.contains(&id) || g.previous.contains(&id) {
            return false;
        }
        if g.current.len() >= self.capacity || g.started.elapsed() >= self.lifetime {
            g.previous = std::mem::take(&mut g.current);
            g.started = Instant::now();
        }
        g.current.insert(id);
        true
    }

    /// Forgets `id`: its event was not accepted after all (the delivery
    /// queue answered busy), so the client's retry must go through.
    pub fn forget(&self, id: &str) {
        let id = self.digest(id);
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.current.remove(&id);
        g.previous.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The most memory a set of `capacity` takes, in bytes: two generations
    /// of digests in hash tables (16 bytes and a control byte per bucket,
    /// buckets a power of two at most 7/8 full).
    fn bound(capacity: usize) -> usize {
        let buckets = (capacity.max(1) * 8 / 7).next_power_of_two();
        2 * buckets * (16 + 1)
    }

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

    #[test]
    fn a_full_set_stays_within_its_stated_bytes() {
        let ids = RecentIds::new(100_000, Duration::from_secs(3600));
        for i in 0..250_000 {
            assert!(
                ids.first_time(&format!("{i:064}")),
                "long ids, all distinct"
            );
        }
        let g = ids.inner.lock().unwrap();
        let held = (g.current.capacity() + g.previous.capacity()) * 17;
        let bound = bound(ids.capacity);
        assert!(held <= bound, "{held} > {bound}");
        assert!(bound <= 5 << 20, "{bound}");
    }

    /// A digest holds both 64-bit hashes, as the collision odds above
    /// assume: with one of them lost, the set would silently hold 64 bits.
    #[test]
    fn a_digest_carries_both_halves() {
        let ids = RecentIds::new(1, Duration::from_secs(1));
        for i in 0..64 {
            let id = format!("evt-{i}");
            let d = ids.digest(&id);
            assert_eq!((d >> 64) as u64, ids.keys.0.hash_one(&id), "{id}");
            assert_eq!(d as u64, ids.keys.1.hash_one(&id), "{id}");
        }
    }
}
