//! The event model: what one `zaraz.track` / pageview / ecommerce call
//! becomes on the server, with event properties (`client.*`) and system
//! properties (`system.*`) under Zaraz's names (SPEC §6).
//!
//! An event is built once and shared read-only (`Arc<Event>`) by every tool,
//! so no adapter can change what another sees.

pub mod identity;
pub mod privacy;
pub mod ua;

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::{json, Map, Value};

pub use identity::Identity;

/// The three kinds of event SPEC §5 sends to tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Pageview,
    Track,
    Ecommerce,
}

/// Event name of every pageview, as in Zaraz.
pub const PAGEVIEW: &str = "Pageview";

/// An [`Event`] as a dead letter keeps it, so `tagproxy deadletter replay`
/// can build the delivery again with the tool config of the day. Everything
/// an adapter reads, as it was when the event arrived; the visitor's consent
/// choices are not kept (consent was decided then; the Consent Mode state
/// adapters send is kept).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EventRecord {
    pub id: String,
    pub kind: Kind,
    pub name: String,
    pub client: Value,
    pub system: Value,
    pub identity: Identity,
    pub timestamp_ms: u64,
    pub ip: Option<IpAddr>,
    pub user_agent: String,
    pub crawler: bool,
    pub consent_mode: Option<crate::consent::ConsentMode>,
    pub consent_replay: bool,
}

impl From<&Event> for EventRecord {
    fn from(e: &Event) -> EventRecord {
        EventRecord {
            id: e.id.clone(),
            kind: e.kind,
            name: e.name.clone(),
            client: e.client.clone(),
            system: e.system.clone(),
            identity: e.identity.clone(),
            timestamp_ms: e.timestamp_ms,
            ip: e.ip,
            user_agent: e.user_agent.clone(),
            crawler: e.crawler,
            consent_mode: e.consent_mode,
            consent_replay: e.consent_replay,
        }
    }
}

/// An [`EventRecord`] shared by an event's deliveries and its trail record,
/// in whichever form it was met first: built from the event (then its JSON
/// is written once, when the first delivery is stored, and reused by the
/// others), or read back from the spool, NATS or a dead letter (then it
/// stays JSON until something needs the record: a dead-letter replay).
/// Decoding every stored event when the spool refilled a window was 12 %
/// of the collector's CPU under load, and encoding it once per delivery
/// another 4 % (issue 14).
///
/// Serializes as the record's JSON, exactly as [`EventRecord`] does.
#[derive(Clone)]
pub struct SharedRecord(std::sync::Arc<Cell>);

struct Cell {
    record: std::sync::OnceLock<Result<EventRecord, String>>,
    json: std::sync::OnceLock<Box<serde_json::value::RawValue>>,
}

impl SharedRecord {
    /// The record of `event`.
    pub fn of(event: &Event) -> SharedRecord {
        SharedRecord::from(EventRecord::from(event))
    }

    /// The record. `Err` when it was stored as JSON that is not a record
    /// (a dead letter written by another version), with serde's message.
    pub fn record(&self) -> Result<&EventRecord, String> {
        self.0
            .record
            .get_or_init(|| match self.0.json.get() {
                Some(json) => serde_json::from_str(json.get()).map_err(|e| e.to_string()),
                None => Err("the event record is missing".into()),
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The record's JSON, written on first use.
    fn json(&self) -> Result<&serde_json::value::RawValue, String> {
        if let Some(json) = self.0.json.get() {
            return Ok(json);
        }
        let text = serde_json::to_string(self.record()?).map_err(|e| e.to_string())?;
        let raw = serde_json::value::RawValue::from_string(text).map_err(|e| e.to_string())?;
        Ok(self.0.json.get_or_init(|| raw))
    }
}

impl From<EventRecord> for SharedRecord {
    fn from(record: EventRecord) -> SharedRecord {
        SharedRecord(std::sync::Arc::new(Cell {
            record: Ok(record).into(),
            json: std::sync::OnceLock::new(),
        }))
    }
}

impl std::fmt::Debug for SharedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.record.get() {
            Some(Ok(r)) => r.fmt(f),
            _ => f
                .debug_tuple("SharedRecord")
                .field(&self.0.json.get().map(|j| j.get()))
                .finish(),
        }
    }
}

/// Equal when the records are (for tests and round trips).
impl PartialEq for SharedRecord {
    fn eq(&self, other: &SharedRecord) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0) || self.record() == other.record()
    }
}

impl serde::Serialize for SharedRecord {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.json()
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for SharedRecord {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Only checked to be JSON here; read as a record when needed.
        let json = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        Ok(SharedRecord(std::sync::Arc::new(Cell {
            record: std::sync::OnceLock::new(),
            json: json.into(),
        })))
    }
}

impl From<EventRecord> for Event {
    fn from(r: EventRecord) -> Event {
        Event {
            id: r.id,
            kind: r.kind,
            name: r.name,
            client: r.client,
            system: r.system,
            identity: r.identity,
            timestamp_ms: r.timestamp_ms,
            ip: r.ip,
            user_agent: r.user_agent,
            crawler: r.crawler,
            consent: None,
            consent_mode: r.consent_mode,
            consent_replay: r.consent_replay,
        }
    }
}

#[derive(Debug)]
pub struct Event {
    /// Stable id: the client's when well-formed, else a UUIDv7.
    pub id: String,
    pub kind: Kind,
    /// `Pageview`, the track name, or the ecommerce event name.
    pub name: String,
    /// `client.*`: properties, `zaraz.set` values, `__zarazTrack`, `__zarazEcommerce`.
    pub client: Value,
    /// `system.*`.
    pub system: Value,
    /// The visitor's ids and session.
    pub identity: Identity,
    /// When the visitor's browser says the event happened (ms since epoch).
    pub timestamp_ms: u64,
    /// Where the typed accessors below read from.
    pub ip: Option<IpAddr>,
    pub user_agent: String,
    pub crawler: bool,
    /// The visitor's consent (`None` when consent is off).
    pub consent: Option<std::sync::Arc<crate::consent::Choices>>,
    /// Consent Mode v2 state for Google tools.
    pub consent_mode: Option<crate::consent::ConsentMode>,
    /// Sent again by the browser after the visitor decided: only tools that
    /// needed consent get it.
    pub consent_replay: bool,
}

impl Event {
    /// The ecommerce/track properties the caller passed (without vars).
    pub fn properties(&self) -> &Map<String, Value> {
        self.client.as_object().expect("client is an object")
    }

    /// A property as a string, if present and scalar.
    pub fn prop_str(&self, key: &str) -> Option<String> {
        match self.client.get(key)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// A property as a number (numeric strings count).
    pub fn prop_f64(&self, key: &str) -> Option<f64> {
        number(self.client.get(key)?)
    }

    /// A system property by path, e.g. `sys(&["page", "title"])`.
    pub fn sys(&self, path: &[&str]) -> Option<&Value> {
        path.iter().try_fold(&self.system, |v, k| v.get(k))
    }

    pub fn sys_str(&self, path: &[&str]) -> &str {
        self.sys(path).and_then(Value::as_str).unwrap_or("")
    }

    pub fn page_url(&self) -> &str {
        self.sys_str(&["page", "url", "href"])
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.sys(&["cookies", name]).and_then(Value::as_str)
    }
}

/// A JSON value as a number: numbers, and strings that parse as one.
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok().filter(|f: &f64| f.is_finite()),
        _ => None,
    }
}

/// What the browser reported about the page, per event.
#[derive(Debug, Default, Clone)]
pub struct PageInfo {
    pub url: String,
    pub title: String,
    pub referrer: String,
    pub encoding: String,
}

/// What the browser reported about the device, per event.
#[derive(Debug, Default, Clone)]
pub struct DeviceInfo {
    pub viewport: String,
    pub resolution: String,
    pub language: String,
    pub tz_offset: Option<i64>,
}

/// `system.page.url` as an object of URL parts (renders as its href).
pub fn url_parts(url: &str) -> (Value, Value) {
    let Ok(u) = url::Url::parse(url) else {
        return (json!({"href": url}), json!({}));
    };
    let port = u.port().map(|p| p.to_string()).unwrap_or_default();
    let host = match u.port() {
        Some(p) => format!("{}:{p}", u.host_str().unwrap_or("")),
        None => u.host_str().unwrap_or("").to_string(),
    };
    let search = u.query().map(|q| format!("?{q}")).unwrap_or_default();
    let hash = u.fragment().map(|f| format!("#{f}")).unwrap_or_default();
    let mut query = Map::new();
    for (k, v) in u.query_pairs() {
        query
            .entry(k.into_owned())
            .or_insert(Value::String(v.into_owned()));
    }
    (
        json!({
            "href": u.as_str(),
            "origin": u.origin().ascii_serialization(),
            "protocol": format!("{}:", u.scheme()),
            "host": host,
            "hostname": u.host_str().unwrap_or(""),
            "port": port,
            "pathname": u.path(),
            "search": search,
            "hash": hash,
        }),
        Value::Object(query),
    )
}

/// Parses a `Cookie` header into name → value (first occurrence wins).
pub fn parse_cookies(header: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in header.split(';') {
        if let Some((k, v)) = pair.split_once('=') {
            let k = k.trim();
            if !k.is_empty() {
                out.entry(k.to_string())
                    .or_insert_with(|| v.trim().trim_matches('"').to_string());
            }
        }
    }
    out
}

/// EU member states, for `system.device.location.isEUCountry`.
const EU: [&str; 27] = [
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV",
    "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
];

pub fn is_eu_country(code: &str) -> bool {
    EU.iter().any(|c| c.eq_ignore_ascii_case(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts_match_the_browser() {
        let (u, q) = url_parts("https://shop.test:8443/p/a?utm_source=news&x=1#top");
        assert_eq!(
            u["href"],
            "https://shop.test:8443/p/a?utm_source=news&x=1#top"
        );
        assert_eq!(u["origin"], "https://shop.test:8443");
        assert_eq!(u["protocol"], "https:");
        assert_eq!(u["host"], "shop.test:8443");
        assert_eq!(u["hostname"], "shop.test");
        assert_eq!(u["port"], "8443");
        assert_eq!(u["pathname"], "/p/a");
        assert_eq!(u["search"], "?utm_source=news&x=1");
        assert_eq!(u["hash"], "#top");
        assert_eq!(q, json!({"utm_source": "news", "x": "1"}));
        let (u, _) = url_parts("not a url");
        assert_eq!(u["href"], "not a url");
    }

    fn record() -> EventRecord {
        serde_json::from_value(json!({
            "id": "e1", "kind": "track", "name": "signup",
            "client": {"plan": "pro", "price": 9.5}, "system": {"page": {"url": "https://a.test/"}},
            "identity": {"client_id": "c", "session_id": 1, "session_count": 1,
                "session_start": true, "first_visit": true, "hit": 1, "pageviews": 0,
                "engaged": false, "ga_client": false},
            "timestamp_ms": 1, "ip": "192.0.2.1", "user_agent": "UA", "crawler": false,
            "consent_mode": null, "consent_replay": false
        }))
        .unwrap()
    }

    #[test]
    fn a_shared_record_is_stored_as_the_record_and_read_back_lazily() {
        let built = SharedRecord::from(record());
        let text = serde_json::to_string(&built).unwrap();
        // The same JSON as the record itself: stored deliveries and dead
        // letters of earlier versions read the same.
        assert_eq!(text, serde_json::to_string(&record()).unwrap());
        // Written once, then reused (a clone shares the cell).
        let copy = built.clone();
        assert!(std::ptr::eq(built.json().unwrap(), copy.json().unwrap()));

        let stored: SharedRecord = serde_json::from_str(&text).unwrap();
        assert!(
            stored.0.record.get().is_none(),
            "decoded before it was needed"
        );
        // Stored again byte for byte, without being decoded.
        assert_eq!(serde_json::to_string(&stored).unwrap(), text);
        assert!(stored.0.record.get().is_none());
        assert_eq!(stored.record().unwrap(), &record());
        assert_eq!(stored, built);
    }

    #[test]
    fn a_stored_record_of_the_wrong_shape_says_why_when_read() {
        let stored: SharedRecord = serde_json::from_str(r#"{"id": 7}"#).unwrap();
        let err = stored.record().unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
        assert!(serde_json::from_str::<SharedRecord>("{").is_err());
    }

    /// Every system property `Event::build` sets, with its JSON type, as
    /// Zaraz names them (system.page, .cookies, .device, .misc).
    #[test]
    fn system_properties_have_zarazs_shape() {
        let mut location = Map::new();
        location.insert("country".into(), json!("DE"));
        let req = RequestInfo {
            ip: Some("192.0.2.7".parse().unwrap()),
            user_agent: ua::UaParser::default().parse(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            ),
            cookies: [("tp_cid".to_string(), "1.2".to_string())].into(),
            location,
        };
        let input = EventInput {
            kind: Some(Kind::Track),
            name: "signup".into(),
            page: PageInfo {
                url: "https://shop.test/a?x=1".into(),
                title: "A".into(),
                referrer: "https://r.test/".into(),
                encoding: "UTF-8".into(),
            },
            device: DeviceInfo {
                viewport: "1280x720".into(),
                resolution: "1920x1080".into(),
                language: "en-US".into(),
                tz_offset: Some(-60),
            },
            ..Default::default()
        };
        let now = 1_764_000_000_123;
        let mut tracker = identity::Tracker::from_cookie_header("", now / 1000);
        let e = Event::build(input, &req, tracker.next_event(), now);
        let mut system = e.system.clone();
        let random = system["misc"]["random"].take();
        assert!(random.is_u64(), "{random}");
        let (url, query) = url_parts("https://shop.test/a?x=1");
        assert_eq!(
            system,
            json!({
                "page": {"url": url, "query": query, "title": "A",
                         "referrer": "https://r.test/", "encoding": "UTF-8"},
                "cookies": {"tp_cid": "1.2"},
                "device": {
                    "ip": "192.0.2.7", "resolution": "1920x1080", "viewport": "1280x720",
                    "language": "en-US", "location": {"country": "DE"},
                    "user-agent": req.user_agent.json, "timezoneOffset": -60,
                },
                "consent": {},
                "clientKV": {},
                "misc": {"random": null, "timestamp": 1_764_000_000u64,
                         "timestampMilliseconds": 1_764_000_000_123u64},
            })
        );
        // Without an address or a time zone: an empty ip, no offset.
        let req = RequestInfo { ip: None, ..req };
        let e = Event::build(EventInput::default(), &req, tracker.next_event(), now);
        assert_eq!(e.system["device"]["ip"], "");
        assert!(e.system["device"].get("timezoneOffset").is_none());
    }

    #[test]
    fn cookies() {
        let c = parse_cookies("_ga=GA1.1.123.456; tp_cid=abc; empty=; _ga=second");
        assert_eq!(c["_ga"], "GA1.1.123.456");
        assert_eq!(c["tp_cid"], "abc");
        assert_eq!(c["empty"], "");
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One event as the browser (or the events API) described it.
#[derive(Debug, Default, Clone)]
pub struct EventInput {
    pub kind: Option<Kind>,
    pub name: String,
    pub properties: Map<String, Value>,
    /// `zaraz.set` values; merged under the properties.
    pub vars: Map<String, Value>,
    pub page: PageInfo,
    pub device: DeviceInfo,
    pub timestamp_ms: Option<u64>,
    pub id: Option<String>,
    pub consent_replay: bool,
}

/// What the HTTP request tells about the visitor, shared by a batch.
pub struct RequestInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: std::sync::Arc<ua::UserAgent>,
    pub cookies: HashMap<String, String>,
    pub location: Map<String, Value>,
}

/// A well-formed client id is kept so retries dedupe; others are replaced.
pub fn event_id(client: Option<&str>) -> String {
    match client {
        Some(id)
            if (8..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            id.to_string()
        }
        _ => uuid::Uuid::now_v7().to_string(),
    }
}

impl Event {
    /// Builds the event: properties, and system properties under Zaraz's
    /// names. `kind` must be set (pageview/track/ecommerce).
    pub fn build(input: EventInput, req: &RequestInfo, identity: Identity, now: u64) -> Event {
        let kind = input.kind.unwrap_or(Kind::Track);
        let name = match kind {
            Kind::Pageview => PAGEVIEW.to_string(),
            _ => input.name,
        };
        // zaraz.set values first, so an explicit property wins on a clash.
        let mut client = input.vars;
        client.extend(input.properties);
        client.insert("__zarazTrack".into(), Value::String(name.clone()));
        if kind == Kind::Ecommerce {
            client.insert("__zarazEcommerce".into(), Value::Bool(true));
        }

        let (url, query) = url_parts(&input.page.url);
        // Built as maps, not with `json!`: the macro serializes each value it
        // is given into a new one, and that was a third of this function.
        let string = Value::String;
        let mut device = Map::new();
        device.insert(
            "ip".into(),
            string(req.ip.map(|ip| ip.to_string()).unwrap_or_default()),
        );
        device.insert("resolution".into(), string(input.device.resolution));
        device.insert("viewport".into(), string(input.device.viewport));
        device.insert("language".into(), string(input.device.language));
        device.insert("location".into(), Value::Object(req.location.clone()));
        device.insert("user-agent".into(), req.user_agent.json.clone());
        if let Some(tz) = input.device.tz_offset {
            device.insert("timezoneOffset".into(), Value::from(tz));
        }
        let mut page = Map::new();
        page.insert("url".into(), url);
        page.insert("query".into(), query);
        page.insert("title".into(), string(input.page.title));
        page.insert("referrer".into(), string(input.page.referrer));
        page.insert("encoding".into(), string(input.page.encoding));
        let cookies: Map<String, Value> = req
            .cookies
            .iter()
            .map(|(k, v)| (k.clone(), string(v.clone())))
            .collect();
        let mut misc = Map::new();
        misc.insert("random".into(), Value::from(rand::random::<u32>()));
        misc.insert("timestamp".into(), Value::from(now / 1000));
        misc.insert("timestampMilliseconds".into(), Value::from(now));
        let mut system = Map::new();
        system.insert("page".into(), Value::Object(page));
        system.insert("cookies".into(), Value::Object(cookies));
        system.insert("device".into(), Value::Object(device));
        system.insert("consent".into(), Value::Object(Map::new()));
        system.insert("clientKV".into(), Value::Object(Map::new()));
        system.insert("misc".into(), Value::Object(misc));
        let system = Value::Object(system);
        let ua = req.user_agent.json["ua"].as_str().unwrap_or("").to_string();
        Event {
            id: event_id(input.id.as_deref()),
            kind,
            name,
            client: Value::Object(client),
            system,
            identity,
            timestamp_ms: input.timestamp_ms.unwrap_or(now),
            ip: req.ip,
            user_agent: ua,
            crawler: req.user_agent.crawler,
            consent: None,
            consent_mode: None,
            consent_replay: input.consent_replay,
        }
    }
}
