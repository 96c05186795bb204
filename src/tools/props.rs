//! What the analytics and ads adapters (`segment`, `amplitude`, `mixpanel`,
//! `tiktok`…) share: event properties without personal data in clear, the
//! products of an ecommerce event, SHA-256, timestamps and URL parts.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::event::Event;

/// Lower-case hex SHA-256 of `s`.
pub fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `s` is already a SHA-256 hex digest (64 hex digits): a site that
/// hashes itself is not hashed twice.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// SHA-256 of an e-mail address normalized as the ads APIs ask (TikTok,
/// Pinterest, Snapchat, Reddit: trimmed, lower-cased). `None` when empty;
/// an existing digest passes through (lower-cased).
pub fn hash_email(v: &str) -> Option<String> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    if is_sha256(v) {
        return Some(v.to_ascii_lowercase());
    }
    Some(sha256_hex(&v.to_lowercase()))
}

/// SHA-256 of a phone number in E.164 (`+` and digits only, as TikTok's
/// Events API asks); a number without a country code keeps its digits.
/// `None` when it holds no digits.
pub fn hash_phone_e164(v: &str) -> Option<String> {
    let v = v.trim();
    if is_sha256(v) {
        return Some(v.to_ascii_lowercase());
    }
    let digits: String = v.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return None;
    }
    let e164 = if v.starts_with('+') || v.starts_with("00") {
        format!("+{}", digits.trim_start_matches("00"))
    } else {
        digits
    };
    Some(sha256_hex(&e164))
}

/// A scalar property as text (strings trimmed, numbers as written).
pub fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Event properties for an analytics destination: internal keys (`__…`) and
/// `system` left out, and every personal value (named so by its key, or
/// shaped like an e-mail address or phone number, at any depth; see
/// [`super::pii`]) replaced by the SHA-256 of its trimmed, lower-cased text,
/// so it can still join a profile but never travels in clear.
pub fn analytics_props(props: &Map<String, Value>) -> Map<String, Value> {
    props
        .iter()
        .filter(|(k, _)| !k.starts_with("__") && *k != "system")
        .map(|(k, v)| (k.clone(), hash_personal(k, v)))
        .collect()
}

/// Event properties for an ads destination's custom data: internal keys
/// (`__…`) and `system` left out, and personal data (by key or by value
/// shape, at any depth) dropped: ads APIs take it only hashed, in their own
/// user fields.
pub fn ads_props(props: &Map<String, Value>) -> Map<String, Value> {
    props
        .iter()
        .filter(|(k, _)| !k.starts_with("__") && *k != "system")
        .filter(|(k, _)| super::pii::key_kind(k).is_none())
        .filter_map(|(k, v)| Some((k.clone(), drop_personal(v)?)))
        .collect()
}

fn drop_personal(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) if super::pii::kind("", s).is_some() => None,
        Value::Array(items) => Some(Value::Array(
            items.iter().filter_map(drop_personal).collect(),
        )),
        Value::Object(map) => Some(Value::Object(
            map.iter()
                .filter(|(k, _)| super::pii::key_kind(k).is_none())
                .filter_map(|(k, v)| Some((k.clone(), drop_personal(v)?)))
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

fn hash_personal(key: &str, v: &Value) -> Value {
    let personal_key = super::pii::key_kind(key).is_some();
    match v {
        Value::String(s) if personal_key || super::pii::kind("", s).is_some() => {
            Value::String(hash_lower(s))
        }
        Value::Number(n) if personal_key => Value::String(hash_lower(&n.to_string())),
        Value::Array(items) => Value::Array(items.iter().map(|i| hash_personal(key, i)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), hash_personal(k, v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn hash_lower(s: &str) -> String {
    let t = s.trim();
    if is_sha256(t) {
        t.to_ascii_lowercase()
    } else {
        sha256_hex(&t.to_lowercase())
    }
}

/// The products of an ecommerce event: those of `products`, then the event
/// itself when it describes one (Zaraz's `Product Added` and the like carry
/// `product_id` / `sku` flat).
pub fn products(event: &Event) -> Vec<&Map<String, Value>> {
    let props = event.properties();
    let mut out: Vec<&Map<String, Value>> = match props.get("products") {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_object).collect(),
        _ => Vec::new(),
    };
    if props.contains_key("product_id") || props.contains_key("sku") {
        out.push(props);
    }
    out
}

/// A product's id as the ads APIs match it against catalogs: the SKU, else
/// the product id (as Zaraz's Meta and TikTok tools do).
pub fn product_id(p: &Map<String, Value>) -> Option<String> {
    ["sku", "product_id"]
        .iter()
        .find_map(|k| p.get(*k).and_then(scalar))
}

/// The order's value: Zaraz's `value`, `total`, `revenue`, then (a single
/// product) `price`.
pub fn order_value(event: &Event) -> Option<f64> {
    ["value", "total", "revenue", "price"]
        .iter()
        .find_map(|k| event.prop_f64(k))
}

/// The event's time in Unix milliseconds: the client's, unless it lies
/// more than a minute ahead of our clock (then ours).
pub fn event_time_ms(event: &Event) -> u64 {
    let now = crate::event::now_ms();
    if event.timestamp_ms > now + 60_000 || event.timestamp_ms == 0 {
        now
    } else {
        event.timestamp_ms
    }
}

/// The event's time in Unix milliseconds for a destination that refuses
/// events older than `max_age_ms`: the client's, unless it lies more than a
/// minute ahead of our clock or is older than the destination takes (then
/// ours, so a skewed client clock never costs the event).
pub fn event_time_within_ms(event: &Event, max_age_ms: u64) -> u64 {
    let now = crate::event::now_ms();
    let ts = event.timestamp_ms;
    if ts > now + 60_000 || ts + max_age_ms < now {
        now
    } else {
        ts
    }
}

/// A click id or browser id as ad tags write them (`ttclid`, `epik`,
/// `ScCid`, `rdt_cid`, `_ttp`…): 1–500 URL-safe characters. Anything else
/// is not sent.
pub fn is_url_safe_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 500
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// A click id: the landing URL's `query_key` parameter, else the one kept in
/// the first-party `cookie` (the landing URL's replaces the stored one, as
/// the ad tags do). Only URL-safe ids ([`is_url_safe_id`]).
pub fn click_id<'e>(event: &'e Event, query_key: &str, cookie: &str) -> Option<&'e str> {
    event
        .sys(&["page", "query", query_key])
        .and_then(Value::as_str)
        .filter(|v| is_url_safe_id(v))
        .or_else(|| event.cookie(cookie).filter(|v| is_url_safe_id(v)))
}

/// The `user_data` Pinterest's and Snapchat's Conversions APIs share with
/// Meta's: `client_ip_address`, `client_user_agent`, and SHA-256 arrays
/// `em` (from `email`/`em`), `ph` (`phone`/`ph`, digits only) and
/// `external_id` (`external_id`/`user_id`), each hashed after the
/// destination's normalisation; values already hashed pass as they are.
pub fn capi_user_data(event: &Event, user_props: &Map<String, Value>) -> Map<String, Value> {
    let mut user = Map::new();
    if let Some(ip) = event.ip {
        user.insert("client_ip_address".into(), Value::from(ip.to_string()));
    }
    if !event.user_agent.is_empty() {
        user.insert(
            "client_user_agent".into(),
            Value::from(event.user_agent.as_str()),
        );
    }
    let hashed = |names: &[&str], hash: fn(&str) -> Option<String>| {
        names
            .iter()
            .find_map(|n| hash(&user_props.get(*n).and_then(scalar)?))
    };
    if let Some(h) = hashed(&["email", "em"], hash_email) {
        user.insert("em".into(), Value::from(vec![h]));
    }
    if let Some(h) = hashed(&["phone", "ph"], hash_phone_digits) {
        user.insert("ph".into(), Value::from(vec![h]));
    }
    if let Some(h) = hashed(&["external_id", "user_id"], hash_email) {
        user.insert("external_id".into(), Value::from(vec![h]));
    }
    user
}

/// SHA-256 of a phone number as Pinterest and Snapchat ask: digits only,
/// country code included, no leading `00`.
pub fn hash_phone_digits(v: &str) -> Option<String> {
    let v = v.trim();
    if is_sha256(v) {
        return Some(v.to_ascii_lowercase());
    }
    let digits: String = v.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_start_matches("00");
    (!digits.is_empty()).then(|| sha256_hex(digits))
}

/// A custom action's `event_name` field, taken out of `fields`; `default`
/// when it is missing, empty or not a string.
pub fn take_event_name(fields: &mut Map<String, Value>, default: &str) -> String {
    match fields.remove("event_name") {
        Some(Value::String(s)) if !s.is_empty() => s,
        _ => default.to_string(),
    }
}

/// Parts of the page URL (`system.page.url.*`), `""` when absent.
pub fn url_part<'e>(event: &'e Event, part: &str) -> &'e str {
    event.sys_str(&["page", "url", part])
}

/// `WxH` (`system.device.resolution`) as numbers.
pub fn screen(event: &Event) -> Option<(u64, u64)> {
    let (w, h) = event.sys_str(&["device", "resolution"]).split_once('x')?;
    Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
}

/// The message of a JSON error answer: the first of `keys` holding a string
/// (or an object's `message`), else the body's start.
pub fn error_message(body: &str, keys: &[&str]) -> String {
    let json: Option<Value> = serde_json::from_str(body).ok();
    let found = json.as_ref().and_then(|j| {
        keys.iter().find_map(|k| match j.get(*k) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Object(o)) => o.get("message").and_then(Value::as_str).map(String::from),
            _ => None,
        })
    });
    found.unwrap_or_else(|| body.chars().take(300).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn personal_values_are_hashed_at_any_depth() {
        let props = json!({
            "plan": "pro",
            "email": " Jane@Example.com ",
            "contact": "call +1 650 555 0134",
            "note": "write to jane@example.com",
            "phone": 6505550134u64,
            "form": {"first_name": "Jane", "size": 3},
            "list": ["ok", "joe@example.org"],
            "__zarazTrack": "x",
            "order_id": "12345678",
        });
        let out = analytics_props(props.as_object().unwrap());
        assert_eq!(out["plan"], "pro");
        assert_eq!(out["email"], sha256_hex("jane@example.com"));
        assert_eq!(out["phone"], sha256_hex("6505550134"));
        assert_eq!(out["note"], sha256_hex("write to jane@example.com"));
        assert_eq!(out["form"]["first_name"], sha256_hex("jane"));
        assert_eq!(out["form"]["size"], 3);
        assert_eq!(out["list"][0], "ok");
        assert_eq!(out["list"][1], sha256_hex("joe@example.org"));
        assert_eq!(out["order_id"], "12345678");
        // Not a phone number by shape alone ("call …" has letters).
        assert_eq!(out["contact"], "call +1 650 555 0134");
        assert!(!out.contains_key("__zarazTrack"));
    }

    #[test]
    fn ads_props_drop_personal_data() {
        let props = json!({
            "plan": "pro",
            "email": "jane@example.com",
            "note": "write to jane@example.com",
            "form": {"first_name": "Jane", "size": 3},
            "list": ["ok", "+1 650 555 0134"],
            "__zarazTrack": "x",
        });
        assert_eq!(
            Value::Object(ads_props(props.as_object().unwrap())),
            json!({"plan": "pro", "form": {"size": 3}, "list": ["ok"]})
        );
    }

    #[test]
    fn ads_hashing() {
        // sha256("joe@example.com"), computed independently.
        assert_eq!(
            hash_email("  Joe@Example.com ").unwrap(),
            "2481f36dfc515ca76451aaadf1399026942a01ee50c6d0a61988b43cef039bc2"
        );
        assert_eq!(
            hash_phone_e164("+1 (650) 555-1212"),
            Some(sha256_hex("+16505551212"))
        );
        assert_eq!(
            hash_phone_e164("0044 20 7946 0958"),
            Some(sha256_hex("+442079460958"))
        );
        assert_eq!(hash_phone_e164("n/a"), None);
        let h = sha256_hex("x");
        assert_eq!(hash_email(&h.to_uppercase()).unwrap(), h);
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(r#"{"code":400,"error":"Invalid API key"}"#, &["error"]),
            "Invalid API key"
        );
        assert_eq!(error_message("oops", &["error"]), "oops");
    }

    /// Blank strings are no value; others trimmed; numbers as written.
    #[test]
    fn scalars() {
        use serde_json::json;
        assert_eq!(scalar(&json!("  ")), None);
        assert_eq!(scalar(&json!(" a ")).as_deref(), Some("a"));
        assert_eq!(scalar(&json!(2.5)).as_deref(), Some("2.5"));
        assert_eq!(scalar(&json!(true)), None);
    }

    /// An event with `properties`, sent at `timestamp_ms` by the client.
    fn event_at(properties: serde_json::Value, timestamp_ms: u64) -> Event {
        let input = crate::event::EventInput {
            kind: Some(crate::event::Kind::Ecommerce),
            name: "Order Completed".into(),
            properties: properties.as_object().unwrap().clone(),
            timestamp_ms: Some(timestamp_ms),
            ..Default::default()
        };
        crate::tools::test_support::visit(input, None, "Mozilla/5.0", "", crate::event::now_ms())
    }

    /// `products` then the event itself when it is one product; a product's
    /// id is its SKU, else its `product_id`; the order's value is `value`,
    /// `total`, `revenue`, then `price`.
    #[test]
    fn products_ids_and_order_values() {
        use serde_json::json;
        let now = crate::event::now_ms();
        let ids = |e: &Event| -> Vec<Option<String>> {
            products(e).into_iter().map(product_id).collect()
        };
        let e = event_at(
            json!({"products": [{"product_id": "a"}, "junk", {"sku": "b", "product_id": "x"}], "product_id": 7}),
            now,
        );
        assert_eq!(
            ids(&e),
            [Some("a".into()), Some("b".into()), Some("7".into())]
        );
        let e = event_at(json!({"sku": "s"}), now);
        assert_eq!(ids(&e), [Some("s".into())]);
        assert!(products(&event_at(json!({"name": "n"}), now)).is_empty());
        assert_eq!(product_id(json!({"sku": " "}).as_object().unwrap()), None);
        for (props, value) in [
            (json!({"value": 5, "total": 9}), Some(5.0)),
            (json!({"total": 9, "revenue": 8}), Some(9.0)),
            (json!({"revenue": 8, "price": 2}), Some(8.0)),
            (json!({"price": 2}), Some(2.0)),
            (json!({}), None),
        ] {
            assert_eq!(order_value(&event_at(props.clone(), now)), value, "{props}");
        }
    }

    /// The client's time unless it is more than a minute ahead (or older
    /// than the destination takes): then the time of sending.
    #[test]
    fn event_times_fall_back_to_now() {
        use serde_json::json;
        let day = 24 * 3600 * 1000;
        let now = crate::event::now_ms();
        let at = |ts: u64| event_at(json!({}), ts);
        assert_eq!(event_time_ms(&at(now - 1000)), now - 1000);
        assert_eq!(event_time_ms(&at(now + 30_000)), now + 30_000);
        assert_eq!(event_time_ms(&at(now - 30 * day)), now - 30 * day);
        assert!(event_time_ms(&at(now + 600_000)) < now + 60_000);
        assert_eq!(
            event_time_within_ms(&at(now - 2 * day), 7 * day),
            now - 2 * day
        );
        assert_eq!(
            event_time_within_ms(&at(now + 30_000), 7 * day),
            now + 30_000
        );
        let before = crate::event::now_ms();
        for late in [now - 8 * day, now + 600_000] {
            let t = event_time_within_ms(&at(late), 7 * day);
            assert!(t >= before && t <= crate::event::now_ms(), "{late}: {t}");
        }
    }

    /// A click id from the landing URL first, else from its first-party
    /// cookie; only URL-safe ones.
    #[test]
    fn click_ids_from_the_url_then_the_cookie() {
        let visit = |url: &str, cookies: &str| {
            let input = crate::event::EventInput {
                kind: Some(crate::event::Kind::Pageview),
                name: "Pageview".into(),
                page: crate::event::PageInfo {
                    url: url.into(),
                    ..Default::default()
                },
                ..Default::default()
            };
            crate::tools::test_support::visit(
                input,
                None,
                "Mozilla/5.0",
                cookies,
                crate::event::now_ms(),
            )
        };
        let e = visit("https://shop.test/?rdt_cid=url-1", "_rdt_cid=cookie-1");
        assert_eq!(click_id(&e, "rdt_cid", "_rdt_cid"), Some("url-1"));
        let e = visit("https://shop.test/?rdt_cid=a%20b", "_rdt_cid=cookie-1");
        assert_eq!(click_id(&e, "rdt_cid", "_rdt_cid"), Some("cookie-1"));
        let e = visit("https://shop.test/", "");
        assert_eq!(click_id(&e, "rdt_cid", "_rdt_cid"), None);
    }

    /// The Conversions APIs' shared `user_data`: IP, User-Agent, and the
    /// SHA-256 arrays of e-mail, phone digits and external id.
    #[test]
    fn capi_user_data_fields() {
        use serde_json::json;
        let input = crate::event::EventInput {
            kind: Some(crate::event::Kind::Track),
            name: "lead".into(),
            ..Default::default()
        };
        let ip = Some("192.0.2.9".parse().unwrap());
        let e = crate::tools::test_support::visit(input, ip, "UA/1", "", crate::event::now_ms());
        let props =
            json!({"email": "Joe@Example.com", "phone": "+1 555 123 4567", "user_id": "u1"});
        let user = capi_user_data(&e, props.as_object().unwrap());
        assert_eq!(user["client_ip_address"], "192.0.2.9");
        assert_eq!(user["client_user_agent"], "UA/1");
        // sha256("joe@example.com"), sha256("15551234567"), sha256("u1").
        assert_eq!(
            user["em"],
            json!(["2481f36dfc515ca76451aaadf1399026942a01ee50c6d0a61988b43cef039bc2"])
        );
        assert_eq!(user["ph"], json!([sha256_hex("15551234567")]));
        assert_eq!(user["external_id"], json!([sha256_hex("u1")]));
        let anonymous = crate::tools::test_support::visit(
            crate::event::EventInput {
                kind: Some(crate::event::Kind::Track),
                name: "x".into(),
                ..Default::default()
            },
            None,
            "",
            "",
            crate::event::now_ms(),
        );
        assert!(capi_user_data(&anonymous, &Map::new()).is_empty());
    }

    /// An empty string is no name and no message: the default event name,
    /// the next key's message.
    #[test]
    fn empty_names_and_messages_are_skipped() {
        let mut fields = json!({"event_name": "", "plan": "pro"})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(take_event_name(&mut fields, "custom"), "custom");
        assert!(!fields.contains_key("event_name"));
        let mut named = json!({"event_name": "lead"}).as_object().unwrap().clone();
        assert_eq!(take_event_name(&mut named, "custom"), "lead");
        let body = r#"{"error":"","message":"bad token"}"#;
        assert_eq!(error_message(body, &["error", "message"]), "bad token");
        assert_eq!(
            error_message(r#"{"error":{"message":"nested"}}"#, &["error"]),
            "nested"
        );
        assert_eq!(error_message("<html>", &["error"]), "<html>");
    }
}
