//! The retry policy (SPEC §11): which answers are retried, and when.

use std::time::Duration;

/// What to do after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: delivered.
    Done,
    /// 429, 5xx, timeouts, connection errors: try again (`after` from
    /// `Retry-After`, if the destination said).
    Retry {
        why: String,
        after: Option<Duration>,
    },
    /// Any other status: the destination will never accept it.
    Reject(String),
}

/// Exponential backoff with full jitter, bounded by attempts and age.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    pub max_attempts: u32,
    pub max_age: Duration,
}

impl Backoff {
    /// The wait before attempt `attempt + 1`, or `None` to give up.
    pub fn next_delay(
        &self,
        attempt: u32,
        age: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let ceiling = self
            .base
            .saturating_mul(1u32 << (attempt - 1).min(20))
            .min(self.cap);
        // Full jitter: anywhere in [ceiling/2, ceiling], so retries from many
        // events spread out but never fire immediately again.
        let jittered = ceiling / 2 + ceiling.mul_f64(rand::random::<f64>() / 2.0);
        let delay = retry_after.map_or(jittered, |ra| ra.min(self.cap));
        (age + delay <= self.max_age).then_some(delay)
    }
}

/// Classifies an HTTP status.
pub fn classify_status(status: u16, retry_after: Option<Duration>, body: &[u8]) -> Verdict {
    match status {
        200..=299 => Verdict::Done,
        429 | 500..=599 | 408 => Verdict::Retry {
            why: format!("HTTP {status}"),
            after: retry_after,
        },
        _ => {
            let snippet = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            Verdict::Reject(format!("HTTP {status}: {snippet}"))
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare for APIs; ignored).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(classify_status(204, None, b""), Verdict::Done);
        assert!(matches!(
            classify_status(503, None, b""),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            classify_status(429, Some(Duration::from_secs(2)), b""),
            Verdict::Retry { after: Some(_), .. }
        ));
        assert!(
            matches!(classify_status(400, None, b"bad"), Verdict::Reject(m) if m.contains("bad"))
        );
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
    }

    #[test]
    fn backoff_grows_jitters_and_stops() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            max_attempts: 5,
            max_age: Duration::from_secs(60),
        };
        for _ in 0..100 {
            let d1 = b.next_delay(1, Duration::ZERO, None).unwrap();
            assert!(
                d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100),
                "{d1:?}"
            );
            let d4 = b.next_delay(4, Duration::ZERO, None).unwrap();
            assert!(
                d4 >= Duration::from_millis(400) && d4 <= Duration::from_millis(800),
                "{d4:?}"
            );
        }
        assert_eq!(b.next_delay(5, Duration::ZERO, None), None);
        assert_eq!(b.next_delay(1, Duration::from_secs(60), None), None);
        // Retry-After is honoured (within the cap).
        let d = b
            .next_delay(1, Duration::ZERO, Some(Duration::from_millis(700)))
            .unwrap();
        assert_eq!(d, Duration::from_millis(700));
    }
}
