//! Consent (SPEC §9): which purposes a visitor granted, which tools may
//! therefore receive an event, and the Google Consent Mode v2 state GA4 gets
//! as `gcs` / `gcd`.
//!
//! The choice lives in the `cf_consent` cookie (Zaraz's name): URL-encoded
//! JSON, purpose id → `true` / `false`, absent = not chosen yet. In TCF mode
//! the `euconsent-v2` TC string decides instead. A purpose the visitor has not
//! chosen counts as its `default`; the browser keeps events for undecided
//! purposes and replays them once the visitor decides (`consent_replay`).

pub mod tcf;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::config::{ConsentConfig, ConsentDefault, ConsentSignal};

/// The TCF cookie, as IAB CMPs write it.
pub const TCF_COOKIE: &str = "euconsent-v2";

const SIGNALS: [ConsentSignal; 4] = [
    ConsentSignal::AdStorage,
    ConsentSignal::AnalyticsStorage,
    ConsentSignal::AdUserData,
    ConsentSignal::AdPersonalization,
];

#[derive(Debug, Clone)]
struct Purpose {
    id: String,
    default_granted: bool,
    signals: Vec<ConsentSignal>,
    tcf_purposes: Vec<u8>,
}

/// The consent configuration, ready to evaluate requests.
#[derive(Debug, Clone, Default)]
pub struct ConsentPolicy {
    pub enabled: bool,
    cookie: String,
    tcf: bool,
    purposes: Vec<Purpose>,
}

/// One visitor's consent, for the events of one request.
#[derive(Debug, Clone, Default)]
pub struct Choices {
    /// Per purpose (config order): what the visitor chose, if anything.
    decided: Vec<Option<bool>>,
    /// Per purpose: granted, counting the default when undecided.
    granted: Vec<bool>,
    /// TCF mode: the decoded TC string, for vendor consent.
    tc: Option<Arc<tcf::TcString>>,
}

/// One Consent Mode v2 signal: its default and its update, each granted
/// (`true`), denied (`false`) or not set.
pub type SignalState = (Option<bool>, Option<bool>);

/// Consent Mode v2 state for one event (ad_storage, analytics_storage,
/// ad_user_data, ad_personalization).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsentMode(pub [SignalState; 4]);

impl ConsentPolicy {
    pub fn new(cfg: &ConsentConfig) -> ConsentPolicy {
        ConsentPolicy {
            enabled: cfg.enabled,
            cookie: cfg.cookie.clone(),
            tcf: cfg.tcf,
            purposes: cfg
                .purposes
                .iter()
                .map(|p| {
                    let p = p.get_ref();
                    Purpose {
                        id: p.id.clone(),
                        default_granted: p.default == ConsentDefault::Granted,
                        signals: p.consent_mode.clone(),
                        tcf_purposes: p.tcf_purposes.clone(),
                    }
                })
                .collect(),
        }
    }

    pub fn has_purpose(&self, id: &str) -> bool {
        self.purposes.iter().any(|p| p.id == id)
    }

    /// Reads a request's consent cookies.
    pub fn evaluate(&self, cookies: &HashMap<String, String>) -> Choices {
        let tc = if self.tcf {
            cookies
                .get(TCF_COOKIE)
                .and_then(|s| tcf::TcString::parse(s).ok())
                .map(Arc::new)
        } else {
            None
        };
        let decided: Vec<Option<bool>> = if self.tcf {
            match &tc {
                // A purpose is granted when every IAB purpose it lists has consent.
                Some(tc) => self
                    .purposes
                    .iter()
                    .map(|p| Some(p.tcf_purposes.iter().all(|&n| tc.purpose_consent(n))))
                    .collect(),
                // Missing or malformed: nothing is granted.
                None => vec![Some(false); self.purposes.len()],
            }
        } else {
            let chosen = cookies
                .get(&self.cookie)
                .and_then(|raw| parse_choice_cookie(raw))
                .unwrap_or_default();
            self.purposes
                .iter()
                .map(|p| chosen.get(&p.id).and_then(Value::as_bool))
                .collect()
        };
        let granted = self
            .purposes
            .iter()
            .zip(&decided)
            .map(|(p, d)| d.unwrap_or(p.default_granted))
            .collect();
        Choices {
            decided,
            granted,
            tc,
        }
    }

    /// `system.consent`: purpose id → granted.
    pub fn system_json(&self, choices: &Choices) -> Value {
        let map: Map<String, Value> = self
            .purposes
            .iter()
            .zip(&choices.granted)
            .map(|(p, g)| (p.id.clone(), Value::Bool(*g)))
            .collect();
        Value::Object(map)
    }

    /// Whether a tool needing `purposes` (and, in TCF mode, vendor
    /// `tcf_vendor_id`) may receive an event. A replayed event (sent again
    /// after the visitor decided) only goes to tools that could not have had
    /// it the first time: tools with at least one purpose denied by default.
    /// Tools without purposes, or whose purposes are all granted by default,
    /// got the original.
    pub fn allows(
        &self,
        choices: &Choices,
        purposes: &[String],
        tcf_vendor_id: Option<u32>,
        replay: bool,
    ) -> bool {
        if !self.enabled {
            return !replay;
        }
        let needed_a_choice = purposes.iter().any(|id| {
            self.purposes
                .iter()
                .find(|p| &p.id == id)
                .is_some_and(|p| !p.default_granted)
        });
        if replay && !needed_a_choice {
            return false;
        }
        let purposes_ok = purposes.iter().all(|id| {
            self.purposes
                .iter()
                .position(|p| &p.id == id)
                .is_some_and(|i| choices.granted[i])
        });
        let vendor_ok = match (self.tcf, tcf_vendor_id) {
            (true, Some(v)) => choices
                .tc
                .as_ref()
                .is_some_and(|tc| u16::try_from(v).is_ok_and(|v| tc.vendor_consent(v))),
            _ => true,
        };
        purposes_ok && vendor_ok
    }

    /// Consent Mode v2 state: defaults from the purposes' defaults, updates
    /// from the visitor's choices; `zaraz.set("google_consent_default" /
    /// "google_consent_update", {...})` values override them, as in Zaraz.
    /// `None` when nothing sets any signal.
    pub fn consent_mode(&self, choices: &Choices, client: &Value) -> Option<ConsentMode> {
        let mut state = [(None, None); 4];
        for (i, signal) in SIGNALS.iter().enumerate() {
            let driving: Vec<usize> = (0..self.purposes.len())
                .filter(|&p| self.enabled && self.purposes[p].signals.contains(signal))
                .collect();
            if !driving.is_empty() {
                state[i].0 = Some(driving.iter().all(|&p| self.purposes[p].default_granted));
                if driving.iter().any(|&p| choices.decided[p].is_some()) {
                    state[i].1 = Some(driving.iter().all(|&p| choices.granted[p]));
                }
            }
            let name = signal_name(*signal);
            if let Some(v) = client
                .get("google_consent_default")
                .and_then(|o| o.get(name))
                .and_then(granted_value)
            {
                state[i].0 = Some(v);
            }
            if let Some(v) = client
                .get("google_consent_update")
                .and_then(|o| o.get(name))
                .and_then(granted_value)
            {
                state[i].1 = Some(v);
            }
        }
        state
            .iter()
            .any(|(d, u)| d.is_some() || u.is_some())
            .then_some(ConsentMode(state))
    }
}

impl Choices {
    /// Whether the visitor has decided every purpose.
    pub fn all_decided(&self) -> bool {
        self.decided.iter().all(Option::is_some)
    }
}

impl ConsentMode {
    /// `gcs`: `G1` + ad_storage + analytics_storage, 1 granted / 0 denied
    /// (an unset signal counts as granted, as gtag does).
    pub fn gcs(&self) -> String {
        let digit = |(d, u): SignalState| if u.or(d).unwrap_or(true) { '1' } else { '0' };
        format!("G1{}{}", digit(self.0[0]), digit(self.0[1]))
    }

    /// `gcd`: `11` + a letter per signal (ad_storage, analytics_storage,
    /// ad_user_data, ad_personalization) separated by `1`, closed by `5`.
    /// Letters (as the community documented them; Google has not): `l` not
    /// set, `p` denied by default, `q` denied by default and update, `t`
    /// granted by default, `r` denied by default then granted, `m` denied by
    /// update only, `n` granted by update only, `u` granted by default then
    /// denied, `v` granted by default and update.
    pub fn gcd(&self) -> String {
        let letter = |s: SignalState| match s {
            (None, None) => 'l',
            (Some(false), None) => 'p',
            (Some(false), Some(false)) => 'q',
            (Some(true), None) => 't',
            (Some(false), Some(true)) => 'r',
            (None, Some(false)) => 'm',
            (None, Some(true)) => 'n',
            (Some(true), Some(false)) => 'u',
            (Some(true), Some(true)) => 'v',
        };
        format!(
            "11{}1{}1{}1{}5",
            letter(self.0[0]),
            letter(self.0[1]),
            letter(self.0[2]),
            letter(self.0[3])
        )
    }
}

pub fn signal_name(s: ConsentSignal) -> &'static str {
    match s {
        ConsentSignal::AdStorage => "ad_storage",
        ConsentSignal::AnalyticsStorage => "analytics_storage",
        ConsentSignal::AdUserData => "ad_user_data",
        ConsentSignal::AdPersonalization => "ad_personalization",
    }
}

/// `"granted"` / `"denied"` (or booleans).
fn granted_value(v: &Value) -> Option<bool> {
    match v {
        Value::String(s) if s == "granted" => Some(true),
        Value::String(s) if s == "denied" => Some(false),
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

/// The `cf_consent` cookie: URL-encoded JSON object. Anything else: no choice.
pub fn parse_choice_cookie(raw: &str) -> Option<Map<String, Value>> {
    let decoded = percent_decode(raw)?;
    match serde_json::from_str::<Value>(&decoded).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(text: &str) -> ConsentPolicy {
        let loaded = crate::config::parse(std::path::Path::new("t.toml"), text).unwrap();
        ConsentPolicy::new(&loaded.config.consent)
    }

    const TWO: &str = r#"[consent]
enabled = true
[[consent.purposes]]
id = "analytics"
name = "Analytics"
default = "denied"
consent_mode = ["analytics_storage"]
[[consent.purposes]]
id = "ads"
name = { en = "Ads", de = "Werbung" }
default = "denied"
consent_mode = ["ad_storage", "ad_user_data", "ad_personalization"]
"#;

    fn cookies(v: &str) -> HashMap<String, String> {
        [("cf_consent".to_string(), v.to_string())].into()
    }

    #[test]
    fn cookie_choices_gate_tools() {
        let p = policy(TWO);
        let none = p.evaluate(&HashMap::new());
        assert!(!none.all_decided());
        assert!(!p.allows(&none, &["analytics".into()], None, false));
        assert!(
            p.allows(&none, &[], None, false),
            "no purposes: no consent needed"
        );

        let c = p.evaluate(&cookies("%7B%22analytics%22%3Atrue%7D"));
        assert!(p.allows(&c, &["analytics".into()], None, false));
        assert!(!p.allows(&c, &["ads".into()], None, false));
        assert!(!p.allows(&c, &["analytics".into(), "ads".into()], None, false));
        assert_eq!(p.system_json(&c), json!({"analytics": true, "ads": false}));
        // A replay goes only to tools that needed consent.
        assert!(p.allows(&c, &["analytics".into()], None, true));
        assert!(!p.allows(&c, &[], None, true));

        for garbage in ["%7Bnot json", "%ZZ", "[true]", ""] {
            let g = p.evaluate(&cookies(garbage));
            assert!(
                !p.allows(&g, &["analytics".into()], None, false),
                "{garbage}"
            );
        }
    }

    #[test]
    fn consent_mode_from_defaults_choices_and_set_values() {
        let p = policy(TWO);
        let undecided = p.evaluate(&HashMap::new());
        let m = p.consent_mode(&undecided, &json!({})).unwrap();
        assert_eq!((m.gcs(), m.gcd()), ("G100".into(), "11p1p1p1p5".into()));

        let analytics = p.evaluate(&cookies("%7B%22analytics%22%3Atrue%2C%22ads%22%3Afalse%7D"));
        let m = p.consent_mode(&analytics, &json!({})).unwrap();
        assert_eq!((m.gcs(), m.gcd()), ("G101".into(), "11q1r1q1q5".into()));

        let all = p.evaluate(&cookies(r#"{"analytics":true,"ads":true}"#));
        let m = p.consent_mode(&all, &json!({})).unwrap();
        assert_eq!((m.gcs(), m.gcd()), ("G111".into(), "11r1r1r1r5".into()));

        // zaraz.set("google_consent_update", …) overrides.
        let client = json!({"google_consent_update": {"ad_storage": "granted", "analytics_storage": "denied"}});
        let m = p.consent_mode(&undecided, &client).unwrap();
        assert_eq!((m.gcs(), m.gcd()), ("G110".into(), "11r1q1p1p5".into()));

        // Consent disabled and nothing set: no Consent Mode parameters.
        assert!(policy("")
            .consent_mode(&Choices::default(), &json!({}))
            .is_none());
    }

    /// A tool whose purposes are granted by default got the original event:
    /// no replay for it, while a default-denied purpose's tool gets one.
    #[test]
    fn replays_skip_tools_granted_by_default() {
        let p = policy(
            r#"[consent]
enabled = true
[[consent.purposes]]
id = "functional"
name = "Functional"
default = "granted"
[[consent.purposes]]
id = "analytics"
name = "Analytics"
"#,
        );
        let c = p.evaluate(&cookies(r#"{"analytics":true}"#));
        assert!(p.allows(&c, &["functional".into()], None, false));
        assert!(!p.allows(&c, &["functional".into()], None, true));
        assert!(p.allows(&c, &["analytics".into()], None, true));
        assert!(p.allows(&c, &["functional".into(), "analytics".into()], None, true));
    }

    /// TCF mode: the IAB's out-of-band example string (purposes 1–3, vendors
    /// 2, 6 and 8 consented) decides purposes and vendors; missing or
    /// malformed strings grant nothing.
    #[test]
    fn tcf_mode_maps_iab_purposes_and_vendors() {
        let p = policy(
            r#"[consent]
enabled = true
tcf = true
[[consent.purposes]]
id = "analytics"
name = "Analytics"
tcf_purposes = [1, 3]
[[consent.purposes]]
id = "personalised_ads"
name = "Ads"
tcf_purposes = [1, 4]
"#,
        );
        let tc = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA.IFoEUQQgAIQwgIwQABAEAAAAOIAACAIAAAAQAIAgEAACEAAAAAgAQBAAAAAAAGBAAgAAAAAAAFAAECAAAgAAQARAEQAAAAAJAAIAAgAAAYQEAAAQmAgBC3ZAYzUw";
        let c = p.evaluate(&[(TCF_COOKIE.to_string(), tc.to_string())].into());
        assert_eq!(
            p.system_json(&c),
            json!({"analytics": true, "personalised_ads": false})
        );
        assert!(p.allows(&c, &["analytics".into()], None, false));
        assert!(p.allows(&c, &["analytics".into()], Some(6), false));
        assert!(
            !p.allows(&c, &["analytics".into()], Some(7), false),
            "vendor 7 has no consent"
        );
        assert!(!p.allows(&c, &["personalised_ads".into()], None, false));
        for bad in ["", "COvFyGBOvFyG", "not-a-tc-string!", &tc[..20]] {
            let c = p.evaluate(&[(TCF_COOKIE.to_string(), bad.to_string())].into());
            assert!(
                !p.allows(&c, &["analytics".into()], None, false),
                "{bad:?} grants nothing"
            );
        }
        let none = p.evaluate(&HashMap::new());
        assert!(!p.allows(&none, &["analytics".into()], None, false));
    }

    /// Each of the nine letters, for every combination of default and update.
    #[test]
    fn gcd_letters() {
        let cases = [
            ((None, None), 'l'),
            ((Some(false), None), 'p'),
            ((Some(false), Some(false)), 'q'),
            ((Some(true), None), 't'),
            ((Some(false), Some(true)), 'r'),
            ((None, Some(false)), 'm'),
            ((None, Some(true)), 'n'),
            ((Some(true), Some(false)), 'u'),
            ((Some(true), Some(true)), 'v'),
        ];
        for (state, letter) in cases {
            let m = ConsentMode([state, (None, None), (None, None), state]);
            assert_eq!(m.gcd(), format!("11{letter}1l1l1{letter}5"));
        }
        // gcs for the four ad/analytics combinations.
        for (ad, an, gcs) in [
            (false, false, "G100"),
            (false, true, "G101"),
            (true, false, "G110"),
            (true, true, "G111"),
        ] {
            let m = ConsentMode([
                (None, Some(ad)),
                (None, Some(an)),
                (None, None),
                (None, None),
            ]);
            assert_eq!(m.gcs(), gcs);
        }
    }
}
