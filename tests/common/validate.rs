//! Validators that check a request a mock destination recorded the way the
//! real service would. GA4's `/g/collect` answers 2xx even to malformed
//! hits and Meta drops a whole batch for one bad event, so these are the
//! only place such mistakes show. Each returns every violation it finds.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::Recorded;

/// GA4's limits: event and parameter names, parameter values.
const GA4_MAX_NAME: usize = 40;
const GA4_MAX_VALUE: usize = 100;
const GA4_MAX_PRODUCTS: usize = 200;
/// Event parameters per event, user property name and value lengths
/// ("[GA4] Event collection limits",
/// https://support.google.com/analytics/answer/9267744).
const GA4_MAX_PARAMS: usize = 25;
const GA4_MAX_USER_PROPERTY_NAME: usize = 24;
const GA4_MAX_USER_PROPERTY_VALUE: usize = 36;

/// Event names GA4 reserves ("Event naming rules",
/// https://support.google.com/analytics/answer/13316687: the web list and
/// the automatically collected app events). `page_view` is sent by gtag
/// itself.
const GA4_RESERVED_EVENTS: &[&str] = &[
    "ad_activeview",
    "ad_click",
    "ad_exposure",
    "ad_impression",
    "ad_query",
    "ad_reward",
    "adunit_exposure",
    "app_background",
    "app_clear_data",
    "app_exception",
    "app_remove",
    "app_store_refund",
    "app_store_subscription_cancel",
    "app_store_subscription_convert",
    "app_store_subscription_renew",
    "app_update",
    "app_upgrade",
    "click",
    "dynamic_link_app_open",
    "dynamic_link_app_update",
    "dynamic_link_first_open",
    "error",
    "file_download",
    "first_open",
    "first_visit",
    "form_start",
    "form_submit",
    "in_app_purchase",
    "notification_dismiss",
    "notification_foreground",
    "notification_open",
    "notification_receive",
    "os_update",
    "scroll",
    "session_start",
    "session_start_with_rollout",
    "user_engagement",
    "video_complete",
    "video_progress",
    "video_start",
    "view_complete",
    "view_search_results",
];

/// Prefixes no event or parameter name may start with (same page).
const GA4_RESERVED_PREFIXES: &[&str] = &["_", "ga_", "google_", "firebase_", "gtag."];

/// Parameter names that carry personal data, which Google's terms forbid
/// sending to Analytics (https://support.google.com/analytics/answer/6366371).
const GA4_PERSONAL_PARAMS: &[&str] = &[
    "email",
    "e_mail",
    "phone",
    "phone_number",
    "telephone",
    "mobile",
    "first_name",
    "last_name",
    "full_name",
    "surname",
    "address",
    "street",
    "street_address",
    "customer_name",
];

/// Parameters of a gtag.js (protocol v2) hit, besides `ep.*`, `epn.*`,
/// `up.*`, `upn.*` and `prN`.
const GA4_PARAMS: &[&str] = &[
    "v", "tid", "gtm", "_p", "cid", "uid", "ul", "sr", "vp", "_uip", "_fv", "_ss", "_s", "_nsi",
    "sid", "sct", "seg", "dl", "dr", "dt", "en", "_et", "_ee", "cu", "gcs", "gcd", "dma", "npa",
    "_dbg", "ir", "tfd", "frm", "_c", "are", "pscdl", "gclid", "_z", "ngs",
];

/// Two-letter keys of a GA4 product string (`id…~nm…~pr…`).
const GA4_ITEM_KEYS: &[&str] = &[
    "id", "nm", "af", "cp", "ds", "lp", "br", "ca", "c2", "c3", "c4", "c5", "li", "ln", "lo", "pr",
    "qt", "va", "pi", "pn", "cn", "cs", "k0", "k1", "k2", "k3", "k4", "v0", "v1", "v2", "v3", "v4",
];

/// Meta's customer information parameters that must be SHA-256 hashed.
const META_HASHED: &[&str] = &[
    "em",
    "ph",
    "fn",
    "ln",
    "ge",
    "db",
    "ct",
    "st",
    "zp",
    "country",
    "external_id",
];

/// Every `user_data` key Meta's Conversions API knows.
const META_USER_KEYS: &[&str] = &[
    "em",
    "ph",
    "fn",
    "ln",
    "ge",
    "db",
    "ct",
    "st",
    "zp",
    "country",
    "external_id",
    "client_ip_address",
    "client_user_agent",
    "fbc",
    "fbp",
    "subscription_id",
    "fb_login_id",
    "lead_id",
    "anon_id",
    "madid",
    "page_id",
    "page_scoped_user_id",
    "ctwa_clid",
    "ig_account_id",
    "ig_sid",
];

/// Every server event key Meta's Conversions API knows.
const META_EVENT_KEYS: &[&str] = &[
    "event_name",
    "event_time",
    "event_id",
    "action_source",
    "event_source_url",
    "user_data",
    "custom_data",
    "opt_out",
    "data_processing_options",
    "data_processing_options_country",
    "data_processing_options_state",
    "referrer_url",
    "customer_segmentation",
    "app_data",
    "original_event_data",
    "attribution_data",
    "messaging_channel",
];

const META_BODY_KEYS: &[&str] = &["data", "access_token", "test_event_code", "partner_agent"];

/// Meta rejects events older than this.
const META_MAX_AGE_SECS: u64 = 7 * 24 * 3600;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `s` holds something shaped like an e-mail address.
fn has_email(s: &str) -> bool {
    s.split(|c: char| c.is_whitespace() || "<>()[],;:\"'&?=/".contains(c))
        .any(|w| {
            w.split_once('@').is_some_and(|(user, domain)| {
                !user.is_empty()
                    && domain.contains('.')
                    && domain.rsplit('.').next().is_some_and(|tld| {
                        tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic())
                    })
            })
        })
}

/// `[a-zA-Z][a-zA-Z0-9_]*`
fn is_ga4_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// `1280x720`
fn is_size(s: &str) -> bool {
    s.split_once('x')
        .is_some_and(|(w, h)| is_digits(w) && is_digits(h))
}

fn is_number(s: &str) -> bool {
    s.parse::<f64>().is_ok_and(f64::is_finite)
}

fn is_absolute_url(s: &str) -> bool {
    url::Url::parse(s)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_currency(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// A `_fbp` (`tail_digits`: its value is a random number) or `_fbc` as
/// Meta documents them ("ClickID and the fbp and fbc Parameters",
/// https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/fbp-and-fbc/):
/// `fb.<subdomain index 0|1|2>.<creation time, Unix ms>.<value>`, the value
/// non-empty (a click id may hold dots), no whitespace, a plausible
/// creation time (13 digits, not ahead of now by more than a day), at most
/// 500 characters. Meta refuses the whole request for one malformed `fbc`.
fn is_fb_cookie(s: &str, tail_digits: bool) -> bool {
    if s.len() > 500 {
        return false;
    }
    let Some(rest) = s.strip_prefix("fb.") else {
        return false;
    };
    let Some((index, rest)) = rest.split_once('.') else {
        return false;
    };
    let Some((time, tail)) = rest.split_once('.') else {
        return false;
    };
    let time_ok = time.len() == 13
        && is_digits(time)
        && time
            .parse::<u64>()
            .is_ok_and(|ms| ms / 1000 <= now_secs() + 24 * 3600);
    matches!(index, "0" | "1" | "2")
        && time_ok
        && !tail.is_empty()
        && if tail_digits {
            is_digits(tail)
        } else {
            tail.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
        }
}

fn finish(problems: Vec<String>) -> Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// A GA4 batch, `POST /g/collect` as gtag sends it
/// (<https://support.google.com/analytics/answer/9322688>): the parameters
/// the hits share in the URL, one line per event in the body with only
/// event-level parameters, at least `en`. Each hit it carries is checked by
/// [`ga4`] (see `Recorded::deliveries`).
pub fn ga4_batch(r: &Recorded) -> Result<(), String> {
    let mut p = Vec::new();
    let event_level = |k: &str| {
        matches!(k, "en" | "cu" | "_s" | "_ss" | "_fv" | "_et" | "_c" | "_ee")
            || k.starts_with("ep.")
            || k.starts_with("epn.")
            || k.strip_prefix("pr")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    for (k, _) in r.query() {
        if event_level(&k) {
            p.push(format!("event parameter {k} in the URL of a batch"));
        }
    }
    let body = String::from_utf8_lossy(&r.body);
    if body.is_empty() {
        p.push("a batch without a body".into());
    }
    for (i, line) in body.split('\n').enumerate() {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(line.as_bytes())
            .into_owned()
            .collect();
        if !pairs.iter().any(|(k, v)| k == "en" && !v.is_empty()) {
            p.push(format!("line {} has no en: {line:?}", i + 1));
        }
        for (k, _) in &pairs {
            if !event_level(k) {
                p.push(format!("line {} holds the shared parameter {k}", i + 1));
            }
        }
    }
    finish(p)
}

/// A GA4 `/g/collect` hit as Google would accept it; `visitor_ua` is the
/// User-Agent the visitor's browser sent to the collector.
pub fn ga4(r: &Recorded, visitor_ua: &str) -> Result<(), String> {
    let mut p = Vec::new();
    if r.method != "GET" {
        p.push(format!("method is {}, not GET", r.method));
    }
    if r.path() != "/g/collect" {
        p.push(format!("path is {:?}, not /g/collect", r.path()));
    }
    let ua = r
        .headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ua != visitor_ua {
        p.push(format!(
            "User-Agent is {ua:?}, not the visitor's {visitor_ua:?}"
        ));
    }
    let query = r.query();
    let mut seen: Vec<&str> = Vec::new();
    for (k, _) in &query {
        if seen.contains(&k.as_str()) {
            p.push(format!("parameter {k} appears more than once"));
        }
        seen.push(k);
    }
    let get = |k: &str| {
        query
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.as_str())
    };
    let required = |k: &str, p: &mut Vec<String>| -> Option<String> {
        let v = get(k);
        if v.is_none_or(str::is_empty) {
            p.push(format!("{k} is missing"));
        }
        v.map(str::to_string)
    };

    if let Some(v) = required("v", &mut p) {
        if v != "2" {
            p.push(format!("v is {v:?}, not \"2\""));
        }
    }
    if let Some(tid) = required("tid", &mut p) {
        let ok = tid.strip_prefix("G-").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        });
        if !ok {
            p.push(format!("tid {tid:?} does not match ^G-[A-Z0-9]+$"));
        }
    }
    if let Some(cid) = required("cid", &mut p) {
        let ok = cid
            .split_once('.')
            .is_some_and(|(a, b)| is_digits(a) && is_digits(b));
        if !ok {
            p.push(format!("cid {cid:?} does not match ^\\d+\\.\\d+$"));
        }
    }
    for k in ["sid", "sct", "_s"] {
        if let Some(v) = required(k, &mut p) {
            if !is_digits(&v) {
                p.push(format!("{k} {v:?} is not numeric"));
            }
        }
    }
    for k in ["_ss", "_fv", "seg"] {
        if let Some(v) = get(k) {
            if v != "1" && v != "0" {
                p.push(format!("{k} {v:?} is not 0 or 1"));
            }
        }
    }
    if let Some(en) = required("en", &mut p) {
        if GA4_RESERVED_EVENTS.contains(&en.as_str()) {
            p.push(format!("en {en:?} is a reserved event name"));
        }
        if let Some(prefix) = GA4_RESERVED_PREFIXES.iter().find(|x| en.starts_with(*x)) {
            p.push(format!("en {en:?} has the reserved prefix {prefix:?}"));
        }
        if en.chars().count() > GA4_MAX_NAME {
            p.push(format!(
                "en {en:?} is longer than {GA4_MAX_NAME} characters"
            ));
        }
        if !is_ga4_name(&en) {
            p.push(format!("en {en:?} does not match [a-zA-Z][a-zA-Z0-9_]*"));
        }
    }
    for k in ["sr", "vp"] {
        if let Some(v) = get(k) {
            if !is_size(v) {
                p.push(format!("{k} {v:?} is not like 1280x720"));
            }
        }
    }
    if let Some(dl) = required("dl", &mut p) {
        if !is_absolute_url(&dl) {
            p.push(format!("dl {dl:?} is not an absolute http(s) URL"));
        }
    }
    if let Some(dr) = get("dr") {
        if !is_absolute_url(dr) {
            p.push(format!("dr {dr:?} is not an absolute http(s) URL"));
        }
    }
    if let Some(ul) = get("ul") {
        if ul != ul.to_ascii_lowercase() || ul.is_empty() {
            p.push(format!("ul {ul:?} is not a lower-cased language tag"));
        }
    }
    if let Some(ip) = get("_uip") {
        if ip.parse::<IpAddr>().is_err() {
            p.push(format!("_uip {ip:?} is not an IP address"));
        }
    }
    if let Some(cu) = get("cu") {
        if !is_currency(cu) {
            p.push(format!("cu {cu:?} is not 3 upper-case letters"));
        }
    }
    // No personal data anywhere: an e-mail address in any value (URLs
    // included), or a parameter named after personal data.
    for (k, v) in &query {
        // URLs carry their own percent-encoding (`%40`).
        let decoded: String =
            url::form_urlencoded::parse(format!("x={}", v.replace('+', "%2B")).as_bytes())
                .map(|(_, v)| v.into_owned())
                .collect();
        if has_email(v) || has_email(&decoded) {
            p.push(format!(
                "{k} = {v:?} holds an e-mail address (personal data)"
            ));
        }
    }
    let mut event_params = 0;
    let mut products = Vec::new();
    for (k, v) in &query {
        if let Some(name) = k
            .strip_prefix("ep.")
            .or_else(|| k.strip_prefix("up."))
            .map(|n| (n, false))
            .or_else(|| {
                k.strip_prefix("epn.")
                    .or_else(|| k.strip_prefix("upn."))
                    .map(|n| (n, true))
            })
        {
            let (name, numeric) = name;
            let user = k.starts_with("up");
            if !user {
                event_params += 1;
            }
            if let Some(prefix) = GA4_RESERVED_PREFIXES.iter().find(|x| name.starts_with(*x)) {
                p.push(format!(
                    "parameter name {name:?} of {k} has the reserved prefix {prefix:?}"
                ));
            }
            if GA4_PERSONAL_PARAMS.contains(&name) {
                p.push(format!("{k} is personal data"));
            }
            if user && name.chars().count() > GA4_MAX_USER_PROPERTY_NAME {
                p.push(format!("user property name {name:?} is longer than {GA4_MAX_USER_PROPERTY_NAME} characters"));
            }
            if user && !numeric && v.chars().count() > GA4_MAX_USER_PROPERTY_VALUE {
                p.push(format!(
                    "user property {k} is longer than {GA4_MAX_USER_PROPERTY_VALUE} characters"
                ));
            }
            if name.chars().count() > GA4_MAX_NAME {
                p.push(format!(
                    "parameter name {name:?} of {k} is longer than {GA4_MAX_NAME} characters"
                ));
            }
            if !is_ga4_name(name) {
                p.push(format!(
                    "parameter name {name:?} of {k} does not match [a-zA-Z][a-zA-Z0-9_]*"
                ));
            }
            if numeric && !is_number(v) {
                p.push(format!("{k} = {v:?} is not a number"));
            }
            if !numeric && v.chars().count() > GA4_MAX_VALUE {
                p.push(format!(
                    "{k} is longer than {GA4_MAX_VALUE} characters ({})",
                    v.chars().count()
                ));
            }
        } else if let Some(n) = k.strip_prefix("pr").filter(|n| is_digits(n)) {
            match n.parse::<usize>() {
                Ok(n) if (1..=GA4_MAX_PRODUCTS).contains(&n) => products.push(n),
                _ => p.push(format!("{k}: product index out of 1..={GA4_MAX_PRODUCTS}")),
            }
            if let Err(e) = ga4_product(v) {
                p.push(format!("{k} = {v:?}: {e}"));
            }
        } else if !GA4_PARAMS.contains(&k.as_str()) {
            p.push(format!("unknown parameter {k}"));
        }
    }
    if event_params > GA4_MAX_PARAMS {
        p.push(format!(
            "{event_params} event parameters, more than {GA4_MAX_PARAMS}"
        ));
    }
    products.sort_unstable();
    if products.iter().enumerate().any(|(i, n)| *n != i + 1) {
        p.push(format!("product parameters are not pr1..prN: {products:?}"));
    }
    if get("epn.value").is_some() && get("cu").is_none() {
        p.push("epn.value without a currency (cu)".into());
    }
    finish(p)
}

/// One GA4 product string: `~`-separated two-letter keys and values, with an
/// `id` or a `nm`; `pr` a number, `qt` an integer.
fn ga4_product(s: &str) -> Result<(), String> {
    let mut keys = Vec::new();
    // `~~` is a `~` inside a value.
    let unescaped = s.replace("~~", "\u{0}");
    for part in unescaped.split('~') {
        if part.len() < 3 || !part.is_char_boundary(2) {
            return Err(format!("part {part:?} has no two-letter key and value"));
        }
        let (key, value) = part.split_at(2);
        if value.chars().count() > GA4_MAX_VALUE {
            return Err(format!(
                "{key} value longer than {GA4_MAX_VALUE} characters"
            ));
        }
        if !GA4_ITEM_KEYS.contains(&key) {
            return Err(format!("unknown item key {key:?}"));
        }
        if keys.contains(&key) {
            return Err(format!("item key {key:?} twice"));
        }
        keys.push(key);
        match key {
            "pr" | "ds" if !is_number(value) => return Err(format!("{key}{value} not a number")),
            "qt" | "lp" if !is_digits(value) => return Err(format!("{key}{value} not an integer")),
            _ => {}
        }
    }
    if !keys.contains(&"id") && !keys.contains(&"nm") {
        return Err("neither id nor nm".into());
    }
    if keys[0] != "id" && keys[0] != "nm" {
        return Err("does not start with id or nm".into());
    }
    Ok(())
}

/// A Meta Conversions API batch as Graph API would accept it, for pixel
/// `pixel_id`.
pub fn meta(r: &Recorded, pixel_id: &str) -> Result<(), String> {
    let mut p = Vec::new();
    if r.method != "POST" {
        p.push(format!("method is {}, not POST", r.method));
    }
    let want = format!("/v21.0/{pixel_id}/events");
    if r.path() != want {
        p.push(format!("path is {:?}, not {want}", r.path()));
    }
    let ct = r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json") {
        p.push(format!("content-type is {ct:?}, not application/json"));
    }
    let body: Value = match serde_json::from_slice(&r.body) {
        Ok(v) => v,
        Err(e) => {
            p.push(format!("body is not JSON: {e}"));
            return finish(p);
        }
    };
    let Some(body) = body.as_object() else {
        p.push("body is not a JSON object".into());
        return finish(p);
    };
    for k in body.keys() {
        if !META_BODY_KEYS.contains(&k.as_str()) {
            p.push(format!("unknown top-level key {k:?}"));
        }
    }
    match body.get("access_token") {
        Some(Value::String(t)) if !t.is_empty() => {}
        other => p.push(format!("access_token missing or not a string: {other:?}")),
    }
    if let Some(code) = body.get("test_event_code") {
        if code.as_str().is_none_or(str::is_empty) {
            p.push(format!("test_event_code is not a string: {code}"));
        }
    }
    match body.get("data") {
        Some(Value::Array(events)) => {
            if events.is_empty() || events.len() > 1000 {
                p.push(format!("data holds {} events, not 1..=1000", events.len()));
            }
            for (i, e) in events.iter().enumerate() {
                match e.as_object() {
                    Some(e) => meta_event(e, &format!("data[{i}]"), &mut p),
                    None => p.push(format!("data[{i}] is not an object")),
                }
            }
        }
        other => p.push(format!("data missing or not an array: {other:?}")),
    }
    finish(p)
}

fn meta_event(e: &Map<String, Value>, at: &str, p: &mut Vec<String>) {
    for k in e.keys() {
        if !META_EVENT_KEYS.contains(&k.as_str()) {
            p.push(format!("{at}: unknown key {k:?}"));
        }
    }
    let string = |k: &str| e.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let event_name = string("event_name");
    if event_name.is_none() {
        p.push(format!("{at}.event_name missing or empty"));
    }
    match e.get("event_time").and_then(Value::as_u64) {
        Some(t) => {
            let now = now_secs();
            if t > now + 60 {
                p.push(format!(
                    "{at}.event_time {t} is in the future (milliseconds instead of seconds?)"
                ));
            } else if t + META_MAX_AGE_SECS < now {
                p.push(format!("{at}.event_time {t} is older than 7 days"));
            }
        }
        None => p.push(format!(
            "{at}.event_time missing or not an integer number of seconds: {:?}",
            e.get("event_time")
        )),
    }
    if string("event_id").is_none() {
        p.push(format!("{at}.event_id missing or empty"));
    }
    if string("action_source") != Some("website") {
        p.push(format!(
            "{at}.action_source is {:?}, not \"website\"",
            e.get("action_source")
        ));
    }
    match string("event_source_url") {
        Some(u) if is_absolute_url(u) => {}
        other => p.push(format!(
            "{at}.event_source_url {other:?} is not an absolute URL (required for website events)"
        )),
    }
    match e.get("user_data").and_then(Value::as_object) {
        Some(u) => meta_user_data(u, &format!("{at}.user_data"), p),
        None => p.push(format!("{at}.user_data missing or not an object")),
    }
    if let Some(c) = e.get("custom_data") {
        match c.as_object() {
            Some(c) => meta_custom_data(c, &format!("{at}.custom_data"), p),
            None => p.push(format!("{at}.custom_data is not an object")),
        }
    }
    if event_name == Some("Purchase") {
        let c = e.get("custom_data");
        if c.and_then(|c| c.get("value")).is_none() || c.and_then(|c| c.get("currency")).is_none() {
            p.push(format!(
                "{at}: a Purchase needs custom_data.value and currency"
            ));
        }
    }
}

fn meta_user_data(u: &Map<String, Value>, at: &str, p: &mut Vec<String>) {
    for (k, v) in u {
        if !META_USER_KEYS.contains(&k.as_str()) {
            p.push(format!("{at}: unknown key {k:?}"));
        }
        if META_HASHED.contains(&k.as_str()) {
            match v.as_array() {
                Some(items) if !items.is_empty() => {
                    for item in items {
                        if !item.as_str().is_some_and(is_hex64) {
                            p.push(format!(
                                "{at}.{k}: {item} is not a lower-case SHA-256 hex digest"
                            ));
                        }
                    }
                }
                _ => p.push(format!("{at}.{k} is not a non-empty array of hashes: {v}")),
            }
        }
    }
    match u.get("client_user_agent").and_then(Value::as_str) {
        Some(ua) if !ua.is_empty() => {}
        _ => p.push(format!(
            "{at}.client_user_agent missing (required for website events)"
        )),
    }
    match u.get("client_ip_address").and_then(Value::as_str) {
        Some(ip) if ip.parse::<IpAddr>().is_ok() => {}
        other => p.push(format!(
            "{at}.client_ip_address {other:?} is not an IP address"
        )),
    }
    if let Some(fbp) = u.get("fbp") {
        if !fbp.as_str().is_some_and(|s| is_fb_cookie(s, true)) {
            p.push(format!(
                "{at}.fbp {fbp} is not fb.<0|1|2>.<creation ms>.<random number>"
            ));
        }
    }
    if let Some(fbc) = u.get("fbc") {
        if !fbc.as_str().is_some_and(|s| is_fb_cookie(s, false)) {
            p.push(format!(
                "{at}.fbc {fbc} is not fb.<0|1|2>.<creation ms>.<fbclid>"
            ));
        }
    }
}

fn meta_custom_data(c: &Map<String, Value>, at: &str, p: &mut Vec<String>) {
    if let Some(v) = c.get("value") {
        if !v.is_number() {
            p.push(format!("{at}.value {v} is not a number"));
        }
    }
    if let Some(cu) = c.get("currency") {
        if !cu.as_str().is_some_and(is_currency) {
            p.push(format!(
                "{at}.currency {cu} is not a 3-letter ISO 4217 code"
            ));
        }
    }
    if let Some(ids) = c.get("content_ids") {
        let ok = ids
            .as_array()
            .is_some_and(|a| a.iter().all(|i| i.as_str().is_some_and(|s| !s.is_empty())));
        if !ok {
            p.push(format!("{at}.content_ids {ids} is not an array of strings"));
        }
    }
    if let Some(contents) = c.get("contents") {
        match contents.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    let id_ok = item
                        .get("id")
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty());
                    let qty_ok = item.get("quantity").and_then(Value::as_u64).is_some();
                    if !id_ok || !qty_ok {
                        p.push(format!(
                            "{at}.contents[{i}] {item} needs an id string and an integer quantity"
                        ));
                    }
                    if let Some(price) = item.get("item_price") {
                        if !price.is_number() {
                            p.push(format!("{at}.contents[{i}].item_price is not a number"));
                        }
                    }
                }
            }
            None => p.push(format!("{at}.contents is not an array")),
        }
    }
    if let Some(n) = c.get("num_items") {
        if n.as_u64().is_none() {
            p.push(format!("{at}.num_items {n} is not an integer"));
        }
    }
    // Standard parameters' types (Meta Pixel reference, object properties:
    // https://developers.facebook.com/docs/meta-pixel/reference#object-properties).
    if let Some(t) = c.get("content_type") {
        if !matches!(t.as_str(), Some("product" | "product_group")) {
            p.push(format!(
                "{at}.content_type {t} is not product or product_group"
            ));
        }
    }
    for k in ["content_name", "content_category", "search_string"] {
        if let Some(v) = c.get(k) {
            if v.as_str().is_none_or(str::is_empty) {
                p.push(format!("{at}.{k} {v} is not a non-empty string"));
            }
        }
    }
    if let Some(id) = c.get("order_id") {
        if id.as_str().is_none_or(str::is_empty) {
            p.push(format!("{at}.order_id {id} is not a string"));
        }
    }
}
