//! Personal data detection, for destinations whose terms forbid it (GA4:
//! "Best practices to avoid sending Personally Identifiable Information",
//! <https://support.google.com/analytics/answer/6366371>, which names
//! e-mail addresses, phone numbers, full names and mailing addresses, and
//! warns about them in page URLs).
//!
//! Two signals: the property's name (its `_`-separated words, so
//! `customer_email` and `user.phone` count) and the value's shape (an
//! e-mail address anywhere; a string that can only be a phone number).

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

/// What kind of personal data a name or value carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Email,
    Phone,
    Name,
    Address,
    /// Passwords, card numbers, national ids: never analytics data.
    Secret,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Email => "e-mail address",
            Kind::Phone => "phone number",
            Kind::Name => "person's name",
            Kind::Address => "street address",
            Kind::Secret => "secret or id number",
        }
    }
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)[a-z0-9._%+\-]+@[a-z0-9\-]+(\.[a-z0-9\-]+)*\.[a-z]{2,}").expect("regex")
});

/// Whole words (after splitting a key at `_`, `.`, `-` and spaces) that
/// name personal data by themselves.
const WORDS: &[(&str, Kind)] = &[
    ("email", Kind::Email),
    ("mail", Kind::Email),
    ("emailaddress", Kind::Email),
    ("phone", Kind::Phone),
    ("phonenumber", Kind::Phone),
    ("telephone", Kind::Phone),
    ("tel", Kind::Phone),
    ("mobile", Kind::Phone),
    ("cellphone", Kind::Phone),
    ("fax", Kind::Phone),
    ("msisdn", Kind::Phone),
    ("firstname", Kind::Name),
    ("lastname", Kind::Name),
    ("fullname", Kind::Name),
    ("surname", Kind::Name),
    ("givenname", Kind::Name),
    ("familyname", Kind::Name),
    ("middlename", Kind::Name),
    ("maidenname", Kind::Name),
    ("username", Kind::Name),
    ("address", Kind::Address),
    ("addr", Kind::Address),
    ("street", Kind::Address),
    ("address1", Kind::Address),
    ("address2", Kind::Address),
    ("streetaddress", Kind::Address),
    ("password", Kind::Secret),
    ("passwd", Kind::Secret),
    ("ssn", Kind::Secret),
    ("iban", Kind::Secret),
    ("cardnumber", Kind::Secret),
    ("creditcard", Kind::Secret),
];

/// `<qualifier> name` pairs that make `name` a person's: `first_name`,
/// `customer_name`. A bare `name` is a product's or a plan's (Zaraz's
/// ecommerce schema uses it for products and promotions), so it is not
/// personal by itself.
const PERSON: &[&str] = &[
    "first", "last", "full", "given", "family", "middle", "sur", "user", "customer", "contact",
    "billing", "shipping", "buyer", "person", "real", "display", "account", "member", "maiden",
];

/// The kind of personal data a property named `key` carries, by its name.
pub fn key_kind(key: &str) -> Option<Kind> {
    let lower = key.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let joined: String = words.concat();
    for (w, kind) in WORDS {
        if words.contains(w) || joined == *w {
            return Some(*kind);
        }
    }
    // `e_mail`, `e-mail`.
    if words.windows(2).any(|w| w == ["e", "mail"]) {
        return Some(Kind::Email);
    }
    if words
        .windows(2)
        .any(|w| w[1] == "name" && PERSON.contains(&w[0]))
    {
        return Some(Kind::Name);
    }
    None
}

/// Whether `s` holds an e-mail address anywhere.
pub fn has_email(s: &str) -> bool {
    s.contains('@') && EMAIL.is_match(s)
}

/// `s` with every e-mail address replaced by `redacted`.
pub fn redact_emails(s: &str) -> Cow<'_, str> {
    if !s.contains('@') {
        return Cow::Borrowed(s);
    }
    EMAIL.replace_all(s, "redacted")
}

/// Whether `s` can only be a phone number: digits with the separators
/// people write (`+1 650 555 0134`, `(650) 555-0134`, `0171-1234567`),
/// 8 to 15 digits (E.164's maximum), and either a leading `+`, brackets, or
/// at least two separated groups. Plain digit strings (order ids, prices,
/// timestamps) and dates do not count.
pub fn is_phone(s: &str) -> bool {
    let s = s.trim();
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_digit() || " +-().\u{a0}/".contains(c))
    {
        return false;
    }
    let digits = s.chars().filter(char::is_ascii_digit).count();
    if !(8..=15).contains(&digits) {
        return false;
    }
    if s[1..].contains('+') || !s.ends_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    // ISO dates and times (`2026-11-30`, `2026/11/30`).
    let b = s.as_bytes();
    if b.len() >= 10 && b[4] == b[7] && matches!(b[4], b'-' | b'/' | b'.') {
        return false;
    }
    // Decimal numbers (`1234567.89`).
    if !s.starts_with('+') && s.parse::<f64>().is_ok() {
        return false;
    }
    let groups = s
        .split(|c: char| " -.\u{a0}/".contains(c))
        .filter(|g| !g.is_empty())
        .count();
    s.starts_with('+') || s.contains('(') || groups >= 3
}

/// The kind of personal data a string or number `value` carries under `key`: by the key, or
/// by the value's shape (an e-mail address anywhere, a phone number).
pub fn kind(key: &str, value: &str) -> Option<Kind> {
    if let Some(k) = key_kind(key) {
        return Some(k);
    }
    if has_email(value) {
        return Some(Kind::Email);
    }
    if is_phone(value) {
        return Some(Kind::Phone);
    }
    None
}

/// A URL with personal data removed: query parameters whose name or value
/// is personal get the value `redacted`, and e-mail addresses elsewhere
/// (path, fragment) are replaced. `None` when there was nothing to remove.
pub fn redact_url(raw: &str) -> Option<String> {
    let decoded_has_at = raw.contains('@') || raw.to_ascii_lowercase().contains("%40");
    let Ok(mut url) = url::Url::parse(raw) else {
        return has_email(raw).then(|| redact_emails(raw).into_owned());
    };
    let mut changed = false;
    if let Some(query) = url.query() {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let dirty = pairs
            .iter()
            .any(|(k, v)| !v.is_empty() && kind(k, v).is_some());
        if dirty {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &pairs {
                if !v.is_empty() && kind(k, v).is_some() {
                    ser.append_pair(k, "redacted");
                } else {
                    ser.append_pair(k, v);
                }
            }
            url.set_query(Some(&ser.finish()));
            changed = true;
        }
    }
    if decoded_has_at {
        let path = percent_decode(url.path());
        if has_email(&path) {
            url.set_path(&redact_emails(&path));
            changed = true;
        }
        if let Some(fragment) = url.fragment().map(percent_decode) {
            if has_email(&fragment) {
                url.set_fragment(Some(&redact_emails(&fragment)));
                changed = true;
            }
        }
    }
    changed.then(|| url.to_string())
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for (k, want) in [
            ("email", Kind::Email),
            ("e_mail", Kind::Email),
            ("E-Mail", Kind::Email),
            ("customer_email", Kind::Email),
            ("user.email_address", Kind::Email),
            ("phone", Kind::Phone),
            ("phone_number", Kind::Phone),
            ("mobile", Kind::Phone),
            ("first_name", Kind::Name),
            ("lastName", Kind::Name),
            ("customer_name", Kind::Name),
            ("surname", Kind::Name),
            ("address", Kind::Address),
            ("shipping_address_line1", Kind::Address),
            ("street", Kind::Address),
            ("password", Kind::Secret),
        ] {
            assert_eq!(key_kind(k), Some(want), "{k}");
        }
        for k in [
            "name",
            "product_name",
            "promotion_name",
            "item_name",
            "plan",
            "method",
            "campaign",
            "zip",
            "city",
            "mailing_list",
            "hotel",
        ] {
            assert_eq!(key_kind(k), None, "{k}");
        }
    }

    #[test]
    fn values() {
        assert!(has_email("Jane.Doe@Example.com"));
        assert!(has_email("contact: jane@x.co.uk please"));
        assert!(!has_email("@handle"));
        assert!(!has_email("a@b"));
        for p in [
            "+1 650 555 0134",
            "(650) 555-0134",
            "0171 123 4567",
            "+442079460958",
        ] {
            assert!(is_phone(p), "{p}");
        }
        for p in [
            "12345678",
            "1700000000",
            "2026-11-30",
            "1234567.89",
            "ORD-1001",
            "SKU-12-3",
            "12.5",
            "4 2",
        ] {
            assert!(!is_phone(p), "{p}");
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            redact_url("https://shop.test/thanks?email=jane%40x.com&order=A1").as_deref(),
            Some("https://shop.test/thanks?email=redacted&order=A1")
        );
        assert_eq!(
            redact_url("https://shop.test/u/jane@x.com/orders").as_deref(),
            Some("https://shop.test/u/redacted/orders")
        );
        assert_eq!(
            redact_url("https://shop.test/?ref=mail&phone=%2B1+650+555+0134").as_deref(),
            Some("https://shop.test/?ref=mail&phone=redacted")
        );
        assert_eq!(
            redact_url("https://shop.test/p?color=blue&utm_source=news"),
            None
        );
    }

    /// Letters anywhere, a `+` past the first character, or a last
    /// character that is not a digit: not a phone number, even when the
    /// digits would be one's.
    #[test]
    fn phone_shapes_need_every_rule() {
        for not in ["call 555 123 4567", "1+555 123 4567", "+1 (555) 123-4567)"] {
            assert!(!is_phone(not), "{not}");
        }
        assert!(is_phone("+1 (555) 123-4567"));
    }
}
