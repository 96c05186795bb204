//! Visitor identity from tagproxy's first-party cookies (SPEC §5):
//!
//! - `tp_cid` = `<random>.<first-seen secs>.<session count>`, one year. The
//!   first two parts are the client id tools see (the shape of GA's own ids);
//!   the count lives here because it must outlive sessions.
//! - `tp_sid` = `<session start secs>.<hits>`, 30 minutes, re-set on every
//!   collector answer, so a session ends after 30 idle minutes.

use crate::event::parse_cookies;

pub const CLIENT_COOKIE: &str = "tp_cid";
pub const SESSION_COOKIE: &str = "tp_sid";
const YEAR_SECS: u64 = 365 * 24 * 3600;
const SESSION_SECS: u64 = 30 * 60;

/// Who the visitor is, for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `<random>.<first-seen secs>`.
    pub client_id: String,
    /// Session start, seconds since the epoch (GA4 `sid`).
    pub session_id: u64,
    /// Sessions so far, this one included (GA4 `sct`).
    pub session_count: u64,
    /// This is the first event of the session (GA4 `_ss`).
    pub session_start: bool,
    /// This is the first event of a new visitor (GA4 `_fv`).
    pub first_visit: bool,
    /// Event number within the session, from 1 (GA4 `_s`).
    pub hit: u64,
}

/// Identity state for one collector request, advanced once per event.
#[derive(Debug, Clone)]
pub struct Tracker {
    random: String,
    first_seen: u64,
    session_count: u64,
    session_id: u64,
    hits: u64,
    new_visitor: bool,
    new_session: bool,
}

impl Tracker {
    /// Reads the cookies of a request; `now` in seconds.
    pub fn from_cookie_header(cookie_header: &str, now: u64) -> Tracker {
        let cookies = parse_cookies(cookie_header);
        let client = cookies.get(CLIENT_COOKIE).and_then(|v| parse_client(v));
        let session = cookies.get(SESSION_COOKIE).and_then(|v| parse_session(v));
        let (random, first_seen, count, new_visitor) = match client {
            Some((r, f, c)) => (r, f, c, false),
            None => (
                format!("{}", rand::random::<u32>() as u64 + 1_000_000_000),
                now,
                0,
                true,
            ),
        };
        match session {
            Some((sid, hits)) if count > 0 => Tracker {
                random,
                first_seen,
                session_count: count,
                session_id: sid,
                hits,
                new_visitor,
                new_session: false,
            },
            _ => Tracker {
                random,
                first_seen,
                session_count: count + 1,
                session_id: now,
                hits: 0,
                new_visitor,
                new_session: true,
            },
        }
    }

    /// The identity of the next event.
    pub fn next_event(&mut self) -> Identity {
        self.hits += 1;
        Identity {
            client_id: format!("{}.{}", self.random, self.first_seen),
            session_id: self.session_id,
            session_count: self.session_count,
            session_start: self.new_session && self.hits == 1,
            first_visit: self.new_visitor && self.hits == 1,
            hit: self.hits,
        }
    }

    /// `Set-Cookie` values that carry the state to the next request.
    pub fn set_cookies(&self, domain: Option<&str>, secure: bool) -> [String; 2] {
        let attrs = |max_age: u64| {
            let mut a = format!("; Path=/; Max-Age={max_age}; SameSite=Lax");
            if let Some(d) = domain {
                a.push_str("; Domain=");
                a.push_str(d);
            }
            if secure {
                a.push_str("; Secure");
            }
            a
        };
        [
            format!(
                "{CLIENT_COOKIE}={}.{}.{}{}",
                self.random,
                self.first_seen,
                self.session_count,
                attrs(YEAR_SECS)
            ),
            format!(
                "{SESSION_COOKIE}={}.{}{}",
                self.session_id,
                self.hits,
                attrs(SESSION_SECS)
            ),
        ]
    }
}

fn parse_client(v: &str) -> Option<(String, u64, u64)> {
    let mut parts = v.split('.');
    let random = parts
        .next()
        .filter(|r| !r.is_empty() && r.len() <= 20 && r.bytes().all(|b| b.is_ascii_digit()))?;
    let first: u64 = parts.next()?.parse().ok()?;
    let count: u64 = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1);
    Some((random.to_string(), first, count.max(1)))
}

fn parse_session(v: &str) -> Option<(u64, u64)> {
    let (sid, hits) = v.split_once('.')?;
    Some((sid.parse().ok()?, hits.parse().ok()?))
}

/// The cookie domain: the configured one, else the registrable domain of the
/// page's host (as Zaraz does), none for IPs and single-label hosts.
pub fn cookie_domain(configured: &str, host: &str) -> Option<String> {
    if !configured.is_empty() {
        return Some(configured.to_string());
    }
    let host = host.split(':').next().unwrap_or(host);
    if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') || !host.contains('.') {
        return None;
    }
    psl::domain_str(host).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_visitor_then_returning_in_session_then_new_session() {
        let mut t = Tracker::from_cookie_header("", 1000);
        let a = t.next_event();
        let b = t.next_event();
        assert!(a.first_visit && a.session_start && a.hit == 1 && a.session_count == 1);
        assert!(!b.first_visit && !b.session_start && b.hit == 2);
        assert_eq!(a.client_id, b.client_id);
        let [cid, sid] = t.set_cookies(None, false);
        let cookie = |s: &str| s.split(';').next().unwrap().to_string();
        let header = format!("{}; {}", cookie(&cid), cookie(&sid));

        // Same session, later.
        let mut t2 = Tracker::from_cookie_header(&header, 1500);
        let c = t2.next_event();
        assert!(!c.first_visit && !c.session_start);
        assert_eq!((c.session_id, c.hit, c.session_count), (1000, 3, 1));
        assert_eq!(c.client_id, a.client_id);

        // Session cookie expired: a new session, count 2.
        let mut t3 = Tracker::from_cookie_header(&cookie(&cid), 9000);
        let d = t3.next_event();
        assert!(d.session_start && !d.first_visit);
        assert_eq!((d.session_id, d.session_count, d.hit), (9000, 2, 1));
        assert!(cid.contains("Max-Age=31536000; SameSite=Lax"));
        assert!(sid.contains("Max-Age=1800"));
    }

    #[test]
    fn garbage_cookies_start_fresh() {
        let mut t = Tracker::from_cookie_header("tp_cid=<script>; tp_sid=x.y", 5);
        assert!(t.next_event().first_visit);
    }

    #[test]
    fn cookie_domains() {
        assert_eq!(
            cookie_domain("", "www.shop.co.uk"),
            Some("shop.co.uk".into())
        );
        assert_eq!(
            cookie_domain("", "shop.example.com:8080"),
            Some("example.com".into())
        );
        assert_eq!(cookie_domain("", "127.0.0.1:8080"), None);
        assert_eq!(cookie_domain("", "localhost"), None);
        assert_eq!(cookie_domain(".x.test", "a.b.test"), Some(".x.test".into()));
    }
}
