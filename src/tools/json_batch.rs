//! Batching for the JSON APIs that take an array of events per request
//! (SPEC §8): Segment `batch[]`, Amplitude `events[]`, Mixpanel's top-level
//! array, TikTok, Pinterest and Snapchat `data[]`, Reddit `events[]`. Each
//! adapter keeps building one request per event; this joins requests that
//! go to the same URL with the same headers and the same other body keys
//! (credentials, test codes) by concatenating their arrays, in order. The
//! engine does grouping, retries and poison isolation
//! ([`crate::delivery::batch`]).

use serde_json::{Map, Value};

use super::HttpRequest;
use crate::delivery::{Batching, Limits};

/// How one destination's array requests join.
#[derive(Debug, Clone, Copy)]
pub struct JsonArrayBatching {
    /// The body key holding the events; `None` when the body is the array
    /// itself (Mixpanel's `/import`).
    pub array: Option<&'static str>,
    /// The destination's documented limits per request.
    pub limits: Limits,
    /// The largest single member body the destination takes in a batch, in
    /// bytes (Segment: 32 KB per message); a larger one is sent alone.
    pub max_member_bytes: usize,
    /// Body keys that differ per request and do not keep requests apart
    /// (Segment's `sentAt`, when the request was built): the joined request
    /// takes the last member's.
    pub per_request: &'static [&'static str],
}

/// A request's body split into its events and the rest.
fn split(b: &JsonArrayBatching, req: &HttpRequest) -> Option<(Vec<Value>, Map<String, Value>)> {
    if req.method != "POST" {
        return None;
    }
    let body = req.body.as_deref()?;
    if body.len() > b.max_member_bytes {
        return None;
    }
    match (b.array, serde_json::from_slice::<Value>(body).ok()?) {
        (None, Value::Array(events)) => Some((events, Map::new())),
        (Some(key), Value::Object(mut rest)) => match rest.remove(key)? {
            Value::Array(events) => Some((events, rest)),
            _ => None,
        },
        _ => None,
    }
}

impl Batching for JsonArrayBatching {
    fn limits(&self) -> Limits {
        self.limits
    }

    /// URL, headers (credentials) and the body's other keys, except
    /// [`JsonArrayBatching::per_request`] ones.
    fn key(&self, req: &HttpRequest) -> Option<String> {
        let (_, mut rest) = split(self, req)?;
        for k in self.per_request {
            rest.remove(*k);
        }
        serde_json::to_string(&(&req.url, &req.headers, &rest)).ok()
    }

    fn join(&self, reqs: &[&HttpRequest]) -> Option<HttpRequest> {
        let (mut all, mut rest) = split(self, reqs.first()?)?;
        for r in &reqs[1..] {
            let (events, other) = split(self, r)?;
            all.extend(events);
            for k in self.per_request {
                if let Some(v) = other.get(*k) {
                    rest.insert((*k).to_string(), v.clone());
                }
            }
        }
        let body = match self.array {
            None => Value::Array(all),
            Some(key) => {
                rest.insert(key.to_string(), Value::Array(all));
                Value::Object(rest)
            }
        };
        Some(HttpRequest {
            method: reqs[0].method.clone(),
            url: reqs[0].url.clone(),
            headers: reqs[0].headers.clone(),
            body: Some(serde_json::to_vec(&body).ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(url: &str, auth: &str, body: Value) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            url: url.into(),
            headers: vec![("authorization".into(), auth.into())],
            body: Some(serde_json::to_vec(&body).expect("a JSON value serializes")),
        }
    }

    const SEGMENT_LIKE: JsonArrayBatching = JsonArrayBatching {
        array: Some("batch"),
        limits: Limits {
            max_events: 100,
            max_bytes: 500_000,
        },
        max_member_bytes: 32_000,
        per_request: &["sentAt"],
    };

    #[test]
    fn same_credentials_join_in_order_and_the_last_sent_at_wins() {
        let b = SEGMENT_LIKE;
        let a = req("u", "k", json!({"batch": [{"n": 1}], "sentAt": "1"}));
        let c = req("u", "k", json!({"batch": [{"n": 2}], "sentAt": "2"}));
        assert_eq!(b.key(&a), b.key(&c));
        let joined = b.join(&[&a, &c]).unwrap();
        let body: Value = serde_json::from_slice(joined.body.as_deref().unwrap()).unwrap();
        assert_eq!(body, json!({"batch": [{"n": 1}, {"n": 2}], "sentAt": "2"}));
        assert_eq!(joined.headers, a.headers);
    }

    #[test]
    fn other_credentials_urls_or_keys_stay_apart() {
        let b = SEGMENT_LIKE;
        let a = req("u", "k", json!({"batch": [{"n": 1}]}));
        assert_ne!(
            b.key(&a),
            b.key(&req("u", "other", json!({"batch": [{"n": 1}]})))
        );
        assert_ne!(
            b.key(&a),
            b.key(&req("v", "k", json!({"batch": [{"n": 1}]})))
        );
        assert_ne!(
            b.key(&a),
            b.key(&req("u", "k", json!({"batch": [], "test": "x"})))
        );
        // Not the shape: sent alone.
        assert_eq!(b.key(&req("u", "k", json!({"batch": {}}))), None);
        assert_eq!(b.key(&req("u", "k", json!([1]))), None);
        let big = "x".repeat(40_000);
        assert_eq!(b.key(&req("u", "k", json!({"batch": [big]}))), None);
    }

    #[test]
    fn a_top_level_array_joins_too() {
        let b = JsonArrayBatching {
            array: None,
            ..SEGMENT_LIKE
        };
        let a = req("u", "k", json!([{"n": 1}]));
        let c = req("u", "k", json!([{"n": 2}, {"n": 3}]));
        assert_eq!(b.key(&a), b.key(&c));
        let joined = b.join(&[&a, &c]).unwrap();
        let body: Value = serde_json::from_slice(joined.body.as_deref().unwrap()).unwrap();
        assert_eq!(body, json!([{"n": 1}, {"n": 2}, {"n": 3}]));
    }

    /// A request of exactly `max_member_bytes` may join others; one byte
    /// more goes alone.
    #[test]
    fn member_size_bound_exactly() {
        let b = SEGMENT_LIKE;
        let mut at = req("u", "k", json!({"batch": [{"n": 1}]}));
        let mut body = at.body.take().unwrap();
        // Pad inside the object with spaces: still the same JSON.
        body.splice(
            1..1,
            std::iter::repeat_n(b' ', b.max_member_bytes - body.len()),
        );
        at.body = Some(body.clone());
        assert!(split(&b, &at).is_some());
        body.insert(1, b' ');
        at.body = Some(body);
        assert!(split(&b, &at).is_none());
    }
}
