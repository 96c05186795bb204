//! Visitor identity from tagproxy's first-party cookies (SPEC §5), continuing
//! the sessions gtag.js already keeps for the visitor:
//!
//! - `tp_cid` = `<random>.<first-seen secs>.<session count>`, one year. The
//!   first two parts are the client id tools see (the shape of GA's own ids);
//!   the count lives here because it must outlive sessions.
//! - `tp_sid` = `<session id>.<hits>.<pageviews>.<started ms>.<flags>`, 30
//!   minutes, re-set on every collector answer, so a session ends after 30
//!   idle minutes. Values of the older form `<session id>.<hits>` still parse.
//! - gtag's `_ga_<container>` session cookie (`GS1.1.<sid>.<sct>.<engaged>.
//!   <last>…` or the 2025 `GS2.1.s<sid>$o<sct>$g<engaged>$t<last>…`) is read
//!   when a session of ours starts: a gtag session active less than 30
//!   minutes ago is continued (same session id and count, not a new
//!   session); an older one makes ours the next (`count + 1`). From then on
//!   our `tp_sid` is the session's state, so a gtag cookie that stops being
//!   refreshed (pages without gtag) cannot split the visit.

use crate::event::parse_cookies;

pub const CLIENT_COOKIE: &str = "tp_cid";
pub const SESSION_COOKIE: &str = "tp_sid";
const YEAR_SECS: u64 = 365 * 24 * 3600;
const SESSION_SECS: u64 = 30 * 60;
/// GA4's engaged-session rule: a session lasting longer than this (ms).
/// <https://support.google.com/analytics/answer/12798876>
const ENGAGED_AFTER_MS: u64 = 10_000;

/// `tp_sid` flag: the session is engaged for good (a key event happened, or
/// the gtag session it continues was engaged).
const FLAG_ENGAGED: u64 = 1;
/// `tp_sid` flag: gtag's `_ga` client cookie existed when the session started.
const FLAG_GA_CLIENT: u64 = 2;

/// Who the visitor is, for one event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// `<random>.<first-seen secs>`.
    pub client_id: String,
    /// Session id: its start, seconds since the epoch (GA4 `sid`); gtag's
    /// when the session continues gtag's.
    pub session_id: u64,
    /// Sessions so far, this one included (GA4 `sct`).
    pub session_count: u64,
    /// This is the first event of a new session (GA4 `_ss`); false when the
    /// session continues gtag's.
    pub session_start: bool,
    /// This is the first event of a visitor seen for the first time, by us
    /// and by gtag (GA4 `_fv`).
    pub first_visit: bool,
    /// Event number within the session, from 1 (GA4 `_s`).
    pub hit: u64,
    /// Page views in the session so far, this event included.
    pub pageviews: u64,
    /// The session is engaged as GA4 defines it, as of this event: it lasted
    /// longer than 10 seconds, had 2 page views, or a key event before this
    /// one (or gtag had marked it engaged). A key event makes its own hit
    /// engaged too; that part is the adapter's (it knows its key events).
    pub engaged: bool,
    /// gtag's `_ga` cookie existed when the session started, so the site's
    /// own GA client id may be used for the whole session.
    pub ga_client: bool,
}

/// Identity state for one collector request, advanced once per event.
#[derive(Debug, Clone)]
pub struct Tracker {
    random: String,
    first_seen: u64,
    session_count: u64,
    session_id: u64,
    hits: u64,
    pageviews: u64,
    /// Our own clock for the session's start (ms), for the 10 s rule.
    started_ms: u64,
    flags: u64,
    new_visitor: bool,
    new_session: bool,
    /// The session continues gtag's: no session start.
    continued: bool,
    now_ms: u64,
}

/// gtag's session cookie, `_ga_<container>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GaSession {
    /// Session id (its start, secs).
    pub sid: u64,
    /// Session count.
    pub sct: u64,
    pub engaged: bool,
    /// Last activity (secs).
    pub last: u64,
}

/// Parses a `_ga_<container>` value: `GS1.1.<sid>.<sct>.<engaged>.<last>…`
/// or `GS2.1.s<sid>$o<sct>$g<engaged>$t<last>$j…$l…$h…`. `None` if it is
/// neither.
pub fn parse_ga_session(v: &str) -> Option<GaSession> {
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    if let Some(rest) = v.strip_prefix("GS2.") {
        // `1.` (the domain level), then `$`-separated one-letter keys.
        let (_, fields) = rest.split_once('.')?;
        let (mut sid, mut sct, mut engaged, mut last) = (None, None, false, None);
        for f in fields.split('$') {
            let (k, val) = f.split_at(f.len().min(1));
            match k {
                "s" => sid = num(val),
                "o" => sct = num(val),
                "g" => engaged = val == "1",
                "t" => last = num(val),
                _ => {}
            }
        }
        return Some(GaSession {
            sid: sid?,
            sct: sct?,
            engaged,
            last: last?,
        });
    }
    let rest = v.strip_prefix("GS1.")?;
    let parts: Vec<&str> = rest.split('.').collect();
    // 1 . sid . sct . engaged . last . …
    if parts.len() < 5 {
        return None;
    }
    Some(GaSession {
        sid: num(parts[1])?,
        sct: num(parts[2])?,
        engaged: parts[3] == "1",
        last: num(parts[4])?,
    })
}

/// The client id in gtag's `_ga` cookie (`GA1.<level>.<random>.<created>`:
/// gtag sends the last two parts).
pub fn ga_client_id(v: &str) -> Option<String> {
    let parts: Vec<&str> = v.split('.').collect();
    if parts.len() >= 4
        && parts[0].starts_with("GA")
        && parts[parts.len() - 2..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some(parts[parts.len() - 2..].join("."));
    }
    None
}

/// The most recently active gtag session among the `_ga_<container>`
/// cookies (a site with several GA4 properties has one per property; they
/// share the visitor's activity).
fn latest_ga_session(cookies: &std::collections::HashMap<String, String>) -> Option<GaSession> {
    cookies
        .iter()
        .filter(|(k, _)| {
            k.strip_prefix("_ga_")
                .is_some_and(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_alphanumeric()))
        })
        .filter_map(|(_, v)| parse_ga_session(v))
        .max_by_key(|s| (s.last, s.sid))
}

impl Tracker {
    /// Reads the cookies of a request; `now` in seconds.
    pub fn from_cookie_header(cookie_header: &str, now: u64) -> Tracker {
        Self::from_cookie_header_ms(cookie_header, now * 1000)
    }

    /// Reads the cookies of a request; `now_ms` in milliseconds.
    pub fn from_cookie_header_ms(cookie_header: &str, now_ms: u64) -> Tracker {
        let now = now_ms / 1000;
        let cookies = parse_cookies(cookie_header);
        let client = cookies.get(CLIENT_COOKIE).and_then(|v| parse_client(v));
        let session = cookies.get(SESSION_COOKIE).and_then(|v| parse_session(v));
        let ga_client = cookies.get("_ga").and_then(|v| ga_client_id(v)).is_some();
        let ga_session = latest_ga_session(&cookies);
        let (random, first_seen, count, new_to_us) = match client {
            Some((r, f, c)) => (r, f, c, false),
            None => (
                format!("{}", rand::random::<u32>() as u64 + 1_000_000_000),
                now,
                0,
                true,
            ),
        };
        let base = Tracker {
            random,
            first_seen,
            session_count: count,
            session_id: now,
            hits: 0,
            pageviews: 0,
            started_ms: now_ms,
            flags: 0,
            // gtag knowing the visitor makes it a returning one.
            new_visitor: new_to_us && !ga_client && ga_session.is_none(),
            new_session: true,
            continued: false,
            now_ms,
        };
        if let (Some(s), true) = (session, count > 0) {
            return Tracker {
                session_id: s.sid,
                hits: s.hits,
                pageviews: s.pageviews,
                started_ms: s.started_ms,
                flags: s.flags,
                new_session: false,
                ..base
            };
        }
        let ga_flag = if ga_client { FLAG_GA_CLIENT } else { 0 };
        match ga_session {
            // gtag's session is still running: continue it.
            Some(g) if now < g.last.saturating_add(SESSION_SECS) => Tracker {
                session_id: g.sid,
                session_count: g.sct.max(1),
                flags: ga_flag | if g.engaged { FLAG_ENGAGED } else { 0 },
                continued: true,
                ..base
            },
            // gtag's session has ended: ours is the next one.
            Some(g) => Tracker {
                session_count: count.max(g.sct) + 1,
                flags: ga_flag,
                ..base
            },
            None => Tracker {
                session_count: count + 1,
                flags: ga_flag,
                ..base
            },
        }
    }

    /// The identity of the next event (not a page view).
    pub fn next_event(&mut self) -> Identity {
        self.next(false)
    }

    /// The identity of the next event; `pageview` counts it as a page view.
    pub fn next(&mut self, pageview: bool) -> Identity {
        self.hits += 1;
        if pageview {
            self.pageviews += 1;
        }
        let engaged = self.flags & FLAG_ENGAGED != 0
            || self.pageviews >= 2
            || self.now_ms.saturating_sub(self.started_ms) > ENGAGED_AFTER_MS;
        Identity {
            client_id: format!("{}.{}", self.random, self.first_seen),
            session_id: self.session_id,
            session_count: self.session_count,
            session_start: self.new_session && !self.continued && self.hits == 1,
            first_visit: self.new_visitor && self.hits == 1,
            hit: self.hits,
            pageviews: self.pageviews,
            engaged,
            ga_client: self.flags & FLAG_GA_CLIENT != 0,
        }
    }

    /// A key event (conversion) happened: the session is engaged from the
    /// next event on.
    pub fn key_event(&mut self) {
        self.flags |= FLAG_ENGAGED;
    }

    /// The two cookies that carry the state to the next request, as
    /// (name, value, lifetime in seconds).
    pub fn cookies(&self) -> [(&'static str, String, u64); 2] {
        [
            (
                CLIENT_COOKIE,
                format!("{}.{}.{}", self.random, self.first_seen, self.session_count),
                YEAR_SECS,
            ),
            (
                SESSION_COOKIE,
                format!(
                    "{}.{}.{}.{}.{}",
                    self.session_id, self.hits, self.pageviews, self.started_ms, self.flags
                ),
                SESSION_SECS,
            ),
        ]
    }

    /// `Set-Cookie` values that carry the state to the next request.
    pub fn set_cookies(&self, domain: Option<&str>, secure: bool) -> [String; 2] {
        self.cookies().map(|(name, value, max_age)| {
            let mut a = format!("{name}={value}; Path=/; Max-Age={max_age}; SameSite=Lax");
            if let Some(d) = domain {
                a.push_str("; Domain=");
                a.push_str(d);
            }
            if secure {
                a.push_str("; Secure");
            }
            a
        })
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

/// `tp_sid`, in its current and its older (`<sid>.<hits>`) form.
struct SessionState {
    sid: u64,
    hits: u64,
    pageviews: u64,
    started_ms: u64,
    flags: u64,
}

fn parse_session(v: &str) -> Option<SessionState> {
    let mut parts = v.split('.');
    let sid: u64 = parts.next()?.parse().ok()?;
    let hits: u64 = parts.next()?.parse().ok()?;
    let rest: Vec<u64> = parts.map(|p| p.parse().ok()).collect::<Option<_>>()?;
    Some(match rest.as_slice() {
        [pageviews, started_ms, flags] => SessionState {
            sid,
            hits,
            pageviews: *pageviews,
            started_ms: *started_ms,
            flags: *flags,
        },
        // The older form: a session begun with a page view, at its id.
        [] => SessionState {
            sid,
            hits,
            pageviews: hits.min(1),
            started_ms: sid.saturating_mul(1000),
            flags: 0,
        },
        _ => return None,
    })
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

    /// The example: gtag's 2025 cookie, active 109 s before the
    /// page view. GA4 "[GA4] About Analytics sessions":
    /// <https://support.google.com/analytics/answer/12798876> (a session
    /// times out after 30 minutes of inactivity).
    #[test]
    fn a_fresh_gtag_session_is_continued() {
        let cookie = "_ga=GA1.1.1187654321.1748934600; _ga_TEST12345=GS2.1.s1748934661$o208$g1$t1748935291$j60$l0$h0";
        let mut t = Tracker::from_cookie_header(cookie, 1748935400);
        let a = t.next(true);
        assert_eq!((a.session_id, a.session_count), (1748934661, 208));
        assert!(!a.session_start && !a.first_visit && a.ga_client && a.engaged);
        // Our cookies carry it on, whatever gtag's cookie says later.
        let [cid, sid] = t.set_cookies(None, false);
        let ours = format!("{}; {}", first(&cid), first(&sid));
        assert!(
            ours.contains("tp_cid=")
                && ours.ends_with(".208; tp_sid=1748934661.1.1.1748935400000.3"),
            "{ours}"
        );
        let mut later = Tracker::from_cookie_header(&format!("{ours}; {cookie}"), 1748937400);
        let b = later.next(false);
        assert_eq!((b.session_id, b.session_count, b.hit), (1748934661, 208, 2));
        assert!(!b.session_start);
    }

    /// The dotted form (`GS1.1.<sid>.<sct>.<engaged>.<last>.<j>.<l>.<h>`).
    #[test]
    fn the_dotted_gtag_cookie_parses() {
        assert_eq!(
            parse_ga_session("GS1.1.1748934661.7.0.1748935291.0.0.0"),
            Some(GaSession {
                sid: 1748934661,
                sct: 7,
                engaged: false,
                last: 1748935291
            })
        );
        assert_eq!(
            parse_ga_session("GS2.1.s1748934661$o208$g1$t1748935291$j60$l0$h0"),
            Some(GaSession {
                sid: 1748934661,
                sct: 208,
                engaged: true,
                last: 1748935291
            })
        );
        for bad in [
            "GS1.1.x.7.0.1",
            "GS1.1.1.2",
            "GS2.1.s1$o2",
            "GA1.1.1.2",
            "",
            "GS2.1.sx$o1$t1",
        ] {
            assert_eq!(parse_ga_session(bad), None, "{bad}");
        }
        let mut t = Tracker::from_cookie_header(
            "_ga_ABC=GS1.1.1748934661.7.0.1748935291.0.0.0",
            1748935400,
        );
        let a = t.next(true);
        assert_eq!((a.session_id, a.session_count), (1748934661, 7));
        assert!(!a.session_start && !a.engaged && !a.ga_client && !a.first_visit);
    }

    /// gtag's session ended more than 30 minutes ago: ours is session
    /// `sct + 1`, starting now, and stays that one for the visit.
    #[test]
    fn an_old_gtag_session_makes_ours_the_next() {
        let cookie = "_ga=GA1.1.1187654321.1748934600; _ga_TEST12345=GS2.1.s1748934661$o208$g1$t1748935291$j60$l0$h0";
        let now = 1748935291 + 1801;
        let mut t = Tracker::from_cookie_header(cookie, now);
        let a = t.next(true);
        assert_eq!((a.session_id, a.session_count), (now, 209));
        assert!(a.session_start && !a.first_visit && !a.engaged);
        let [cid, sid] = t.set_cookies(None, false);
        let header = format!("{}; {}; {cookie}", first(&cid), first(&sid));
        let b = Tracker::from_cookie_header(&header, now + 60).next(false);
        assert_eq!((b.session_id, b.session_count, b.hit), (now, 209, 2));
        // The next session after that counts on from ours.
        let c = Tracker::from_cookie_header(&format!("{}; {cookie}", first(&cid)), now + 9000)
            .next(true);
        assert_eq!((c.session_id, c.session_count), (now + 9000, 210));
    }

    /// "An engaged session is a session that lasts longer than 10 seconds,
    /// has a key event, or has at least 2 pageviews or screenviews."
    /// <https://support.google.com/analytics/answer/12798876>
    #[test]
    fn engaged_after_ten_seconds_two_pageviews_or_a_key_event() {
        let t0 = 1_700_000_000_000;
        let mut t = Tracker::from_cookie_header_ms("", t0);
        assert!(!t.next(true).engaged);
        // A click in the same second: still a bounce.
        assert!(!t.next(false).engaged);
        let [cid, sid] = t.set_cookies(None, false);
        let header = format!("{}; {}", first(&cid), first(&sid));
        assert!(
            !Tracker::from_cookie_header_ms(&header, t0 + 9_000)
                .next(false)
                .engaged
        );
        assert!(
            Tracker::from_cookie_header_ms(&header, t0 + 10_001)
                .next(false)
                .engaged
        );
        assert!(
            Tracker::from_cookie_header_ms(&header, t0 + 1_000)
                .next(true)
                .engaged
        );
        let mut k = Tracker::from_cookie_header_ms(&header, t0 + 1_000);
        assert!(!k.next(false).engaged);
        k.key_event();
        assert!(k.next(false).engaged);
        let [_, sid] = k.set_cookies(None, false);
        let header = format!("{}; {}", first(&cid), first(&sid));
        assert!(
            Tracker::from_cookie_header_ms(&header, t0 + 2_000)
                .next(false)
                .engaged
        );
    }

    /// A `tp_sid` written before these fields existed still continues.
    #[test]
    fn the_older_session_cookie_still_parses() {
        let mut t =
            Tracker::from_cookie_header("tp_cid=123.1000.4; tp_sid=1700000000.3", 1700000100);
        let a = t.next(false);
        assert_eq!(
            (a.session_id, a.session_count, a.hit, a.pageviews),
            (1700000000, 4, 4, 1)
        );
        assert!(!a.session_start && a.engaged, "100 s into the session");
        assert!(
            Tracker::from_cookie_header("tp_cid=123.1000.4; tp_sid=1.2.x", 5)
                .next(false)
                .session_start
        );
    }

    fn first(set_cookie: &str) -> &str {
        set_cookie.split(';').next().unwrap()
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
