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
    /// TCF mode: IAB purposes that must all have a legal basis.
    tcf_purposes: Vec<u8>,
    /// TCF mode: those of `tcf_purposes` where legitimate interest counts.
    tcf_legitimate_interest: Vec<u8>,
}

impl Purpose {
    /// The IAB purposes this purpose needs, each with whether legitimate
    /// interest is accepted for it.
    fn iab_purposes(&self) -> impl Iterator<Item = (u8, bool)> + '_ {
        self.tcf_purposes
            .iter()
            .map(|&n| (n, self.tcf_legitimate_interest.contains(&n)))
    }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
                        tcf_purposes: p.tcf_purposes.iter().map(|n| *n.get_ref()).collect(),
                        tcf_legitimate_interest: p
                            .tcf_legitimate_interest
                            .iter()
                            .map(|n| *n.get_ref())
                            .collect(),
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
        if self.tcf {
            let tc = cookies
                .get(TCF_COOKIE)
                .and_then(|s| tcf::TcString::parse(s).ok())
                .map(Arc::new);
            return self.tcf_choices(tc);
        }
        let chosen = cookies
            .get(&self.cookie)
            .and_then(|raw| parse_choice_cookie(raw))
            .unwrap_or_default();
        let decided: Vec<Option<bool>> = self
            .purposes
            .iter()
            .map(|p| chosen.get(&p.id).and_then(Value::as_bool))
            .collect();
        let granted = self
            .purposes
            .iter()
            .zip(&decided)
            .map(|(p, d)| d.unwrap_or(p.default_granted))
            .collect();
        Choices {
            decided,
            granted,
            tc: None,
        }
    }

    /// TCF mode: a purpose is granted when every IAB purpose it lists has a
    /// legal basis (consent, or LI where the purpose accepts it); a missing
    /// or malformed string grants nothing.
    fn tcf_choices(&self, tc: Option<Arc<tcf::TcString>>) -> Choices {
        let granted: Vec<bool> = match &tc {
            Some(tc) => self
                .purposes
                .iter()
                .map(|p| p.iab_purposes().all(|(n, li)| tc.purpose_has_basis(n, li)))
                .collect(),
            None => vec![false; self.purposes.len()],
        };
        Choices {
            decided: granted.iter().map(|&g| Some(g)).collect(),
            granted,
            tc,
        }
    }

    /// TCF mode: whether GVL vendor `vendor` has a legal basis for every IAB
    /// purpose of the tool's `purposes`, publisher restrictions applied
    /// (`TcString::vendor_has_basis`). A tool whose purposes list no IAB
    /// purpose needs the vendor's consent, as before legal bases existed.
    fn vendor_allowed(&self, tc: &tcf::TcString, purposes: &[String], vendor: u16) -> bool {
        let mut any = false;
        for id in purposes {
            let Some(p) = self.purposes.iter().find(|p| &p.id == id) else {
                return false;
            };
            for (n, li) in p.iab_purposes() {
                any = true;
                if !tc.vendor_has_basis(n, vendor, li) {
                    return false;
                }
            }
        }
        any || tc.vendor_consent(vendor)
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
    /// `tcf_vendor_id`) may receive an event. In TCF mode with a vendor id,
    /// the vendor needs a legal basis for each IAB purpose of each of those
    /// purposes, the publisher's restrictions applied
    /// (`TcString::vendor_has_basis`). A replayed event (sent again
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
                .is_some_and(|i| choices.is_granted(i))
        });
        let vendor_ok = match (self.tcf, tcf_vendor_id) {
            (true, Some(v)) => choices.tc.as_ref().is_some_and(|tc| {
                u16::try_from(v).is_ok_and(|v| self.vendor_allowed(tc, purposes, v))
            }),
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
                if driving.iter().any(|&p| choices.is_decided(p)) {
                    state[i].1 = Some(driving.iter().all(|&p| choices.is_granted(p)));
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

impl ConsentMode {
    /// Whether `ad_storage` is granted (the update, else the default; an
    /// unset signal counts as granted, as gtag does and as [`Self::gcs`]
    /// reports it): Google's ad tools read and write their click-id cookies
    /// only then.
    pub fn ad_storage(&self) -> bool {
        let (d, u) = self.0[0];
        u.or(d).unwrap_or(true)
    }

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

// Purposes are looked up by index with `get`, never `[]`: choices read
// under one policy and judged under another (a reload that added a
// purpose) or none at all (`Choices::default()`) count as not granted and
// undecided instead of panicking mid-fan-out.
impl Choices {
    /// Whether purpose `i` (config order) is granted, counting its default.
    fn is_granted(&self, i: usize) -> bool {
        self.granted.get(i).copied().unwrap_or(false)
    }

    /// Whether the visitor chose anything for purpose `i`.
    fn is_decided(&self, i: usize) -> bool {
        self.decided.get(i).is_some_and(Option::is_some)
    }
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

    /// TC strings written by the IAB's own encoder (tests/tcf/encode.mjs,
    /// `@iabtechlabtcf/core`), plus the issue-10 example string.
    fn fixture(name: &str) -> HashMap<String, String> {
        let all: Value =
            serde_json::from_str(include_str!("../../tests/tcf/fixtures.json")).unwrap();
        let s = all[name]["tc_string"].as_str().unwrap().to_string();
        [(TCF_COOKIE.to_string(), s)].into()
    }

    /// One consent purpose per IAB purpose and legal basis the tests need;
    /// `*_li` purposes accept legitimate interest.
    const TCF_PURPOSES: &str = r#"[consent]
enabled = true
tcf = true
[[consent.purposes]]
id = "storage"
name = "Store and/or access information on a device"
tcf_purposes = [1]
[[consent.purposes]]
id = "basic_ads"
name = "Use limited data to select advertising"
tcf_purposes = [2]
[[consent.purposes]]
id = "basic_ads_li"
name = "Use limited data to select advertising"
tcf_purposes = [2]
tcf_legitimate_interest = [2]
[[consent.purposes]]
id = "measurement"
name = "Measure advertising performance"
tcf_purposes = [7]
[[consent.purposes]]
id = "measurement_li"
name = "Measure advertising performance"
tcf_purposes = [7]
tcf_legitimate_interest = [7]
[[consent.purposes]]
id = "audiences"
name = "Understand audiences"
tcf_purposes = [9]
[[consent.purposes]]
id = "audiences_li"
name = "Understand audiences"
tcf_purposes = [9]
tcf_legitimate_interest = [9]
"#;

    /// Whether a tool needing consent purpose `purpose` and, when given,
    /// GVL vendor `vendor`, may receive an event.
    fn gets(p: &ConsentPolicy, c: &Choices, purpose: &str, vendor: Option<u32>) -> bool {
        p.allows(c, &[purpose.to_string()], vendor, false)
    }

    /// Restriction type 0 ("purpose flatly not allowed by publisher")
    /// withholds the purpose from the listed vendors whatever their consent.
    /// Source: IAB Tech Lab, "Consent string and vendor list formats v2",
    /// PubRestrictionEntry: https://github.com/InteractiveAdvertisingBureau/GDPR-Transparency-and-Consent-Framework/blob/master/TCFv2/IAB%20Tech%20Lab%20-%20Consent%20string%20and%20vendor%20list%20formats%20v2.md#publisher-restrictions
    #[test]
    fn tcf_restriction_not_allowed_withholds_the_purpose_from_listed_vendors() {
        let p = policy(TCF_PURPOSES);
        // Issue 10: purposes 1, 2, 4, 9, 10 consented; vendors 2, 6, 8, 9,
        // 350, 722 consented; purpose 1 not allowed for vendors 8-9.
        let c = p.evaluate(&fixture("issue_example"));
        assert!(
            !gets(&p, &c, "storage", Some(8)),
            "vendor 8: purpose 1 restricted"
        );
        assert!(
            !gets(&p, &c, "storage", Some(9)),
            "vendor 9: purpose 1 restricted"
        );
        assert!(gets(&p, &c, "storage", Some(2)), "vendor 2: no restriction");
        assert!(gets(&p, &c, "storage", Some(6)));
        assert!(
            gets(&p, &c, "storage", None),
            "the purpose itself is consented"
        );
        assert!(
            gets(&p, &c, "basic_ads", Some(8)),
            "only purpose 1 is restricted"
        );
        assert!(!gets(&p, &c, "storage", Some(7)), "vendor 7 has no consent");

        // IAB-encoded: purpose 7 not allowed for vendor 755, which has consent.
        let c = p.evaluate(&fixture("not_allowed"));
        assert!(!gets(&p, &c, "measurement", Some(755)));
        assert!(!gets(&p, &c, "measurement_li", Some(755)));
        assert!(gets(&p, &c, "measurement", Some(8)));
        assert!(
            gets(&p, &c, "storage", Some(755)),
            "purpose 1 is not restricted"
        );
        assert!(gets(&p, &c, "measurement", None));
        // A tool needing several purposes loses them all with one withheld.
        assert!(!p.allows(
            &c,
            &["storage".into(), "measurement".into()],
            Some(755),
            false
        ));
    }

    /// Restriction type 1 ("require consent"): only consent counts for that
    /// vendor and purpose; legitimate interest does not.
    #[test]
    fn tcf_restriction_require_consent_ignores_legitimate_interest() {
        let p = policy(TCF_PURPOSES);
        // Purposes 1, 7 consented, LI for 2, 7, 8; vendor 755 consent + LI,
        // vendor 8 LI only; purpose 2 requires consent for 755, purpose 7
        // requires consent for 8.
        let c = p.evaluate(&fixture("require_consent"));
        assert!(
            !gets(&p, &c, "measurement_li", Some(8)),
            "vendor 8 has only LI for purpose 7, which must use consent"
        );
        assert!(
            !gets(&p, &c, "basic_ads_li", Some(755)),
            "purpose 2 has LI but no consent, and 755 must use consent"
        );
        assert!(
            gets(&p, &c, "basic_ads_li", Some(8)),
            "no restriction: LI counts"
        );
        assert!(gets(&p, &c, "measurement_li", Some(755)), "consent counts");
        assert!(gets(&p, &c, "measurement", Some(755)));
        assert!(!gets(&p, &c, "basic_ads", Some(8)), "LI not accepted");
    }

    /// Restriction type 2 ("require legitimate interest"): only LI counts;
    /// a purpose that does not accept LI is withheld from that vendor.
    #[test]
    fn tcf_restriction_require_li_ignores_consent() {
        let p = policy(TCF_PURPOSES);
        // Purposes 2, 7, 9 consented, LI for 2, 7; vendors 8, 755 consented,
        // 755 also LI; purpose 7 requires LI for 755, purpose 9 for 8.
        let c = p.evaluate(&fixture("require_li"));
        assert!(
            !gets(&p, &c, "measurement", Some(755)),
            "consent does not count, and this purpose does not accept LI"
        );
        assert!(
            gets(&p, &c, "measurement_li", Some(755)),
            "LI for 7 and 755"
        );
        assert!(
            !gets(&p, &c, "audiences", Some(8)),
            "vendor 8 must use LI for purpose 9"
        );
        assert!(
            !gets(&p, &c, "audiences_li", Some(8)),
            "no purpose LI for 9 and no vendor LI for 8"
        );
        assert!(
            gets(&p, &c, "audiences", Some(755)),
            "no restriction for 755"
        );
        assert!(
            gets(&p, &c, "measurement", Some(8)),
            "no restriction for 8 on 7"
        );
    }

    /// Legitimate interest counts only for purposes configured to accept it:
    /// purpose LI transparency plus the vendor's LI bit, per purpose.
    #[test]
    fn tcf_legitimate_interest_counts_only_where_configured() {
        let p = policy(TCF_PURPOSES);
        // Consent for purpose 1 only; LI for 2, 7, 8, 9, 10; vendor consent
        // 2, 1000-1002, 1126; vendor LI 1003-1008, 1126 (range-encoded).
        let c = p.evaluate(&fixture("li_ranges"));
        assert_eq!(p.system_json(&c)["measurement"], json!(false));
        assert_eq!(p.system_json(&c)["measurement_li"], json!(true));
        assert!(gets(&p, &c, "measurement_li", None));
        assert!(!gets(&p, &c, "measurement", None));
        assert!(gets(&p, &c, "measurement_li", Some(1005)), "vendor LI");
        assert!(!gets(&p, &c, "measurement", Some(1005)), "LI not accepted");
        assert!(
            !gets(&p, &c, "measurement_li", Some(1000)),
            "vendor 1000 has consent, but purpose 7 has none"
        );
        assert!(!gets(&p, &c, "measurement_li", Some(1009)), "neither basis");
        // Mixed bases in one tool: consent for 1, LI for 7.
        let both = ["storage".to_string(), "measurement_li".to_string()];
        assert!(p.allows(&c, &both, Some(1126), false));
        assert!(
            !p.allows(&c, &both, Some(1005), false),
            "1005 has no consent for purpose 1"
        );
    }

    /// A decoded TC string built by hand (for cases no CMP should write):
    /// consent and LI for every purpose, consent and LI for vendors 1-20,
    /// and the given restrictions.
    fn hand_made(restrictions: &[(u8, tcf::RestrictionType, u16)]) -> tcf::TcString {
        use tcf::{PublisherRestriction, VendorSet};
        let all = VendorSet::from_ids(1..=20);
        tcf::TcString {
            version: 2,
            created: 0,
            last_updated: 0,
            cmp_id: 1,
            cmp_version: 1,
            consent_screen: 1,
            consent_language: "EN".into(),
            vendor_list_version: 150,
            tcf_policy_version: 4,
            is_service_specific: true,
            use_non_standard_texts: false,
            special_feature_opt_ins: 0,
            purpose_consents: 0xff_ffff,
            purpose_legitimate_interests: 0xff_ffff,
            purpose_one_treatment: false,
            publisher_cc: "DE".into(),
            vendor_consents: all.clone(),
            vendor_legitimate_interests: all,
            publisher_restrictions: restrictions
                .iter()
                .map(|&(purpose_id, restriction_type, v)| PublisherRestriction {
                    purpose_id,
                    restriction_type,
                    vendors: VendorSet::from_ids([v]),
                })
                .collect(),
            disclosed_vendors: None,
            publisher_tc: None,
        }
    }

    /// Strings no conforming CMP writes still fail closed: an undefined
    /// restriction type (3), two restrictions on one vendor and purpose, and
    /// "require LI" on a purpose the policy keeps to consent.
    #[test]
    fn tcf_odd_restrictions_fail_closed() {
        use tcf::RestrictionType::*;
        let p = policy(TCF_PURPOSES);
        let with =
            |r: &[(u8, tcf::RestrictionType, u16)]| p.tcf_choices(Some(Arc::new(hand_made(r))));
        let c = with(&[]);
        for id in ["storage", "basic_ads", "measurement_li", "audiences"] {
            assert!(gets(&p, &c, id, Some(5)), "{id}: no restriction");
        }
        let c = with(&[(7, Undefined, 5)]);
        assert!(!gets(&p, &c, "measurement", Some(5)));
        assert!(!gets(&p, &c, "measurement_li", Some(5)));
        assert!(
            gets(&p, &c, "measurement", Some(6)),
            "other vendors unaffected"
        );
        // Consent and LI both required: neither alone can satisfy both.
        let c = with(&[(7, RequireConsent, 5), (7, RequireLegitimateInterest, 5)]);
        assert!(!gets(&p, &c, "measurement_li", Some(5)));
        let c = with(&[(7, RequireConsent, 5), (7, NotAllowed, 5)]);
        assert!(!gets(&p, &c, "measurement", Some(5)));
        // "Require LI" on purpose 1: LI is never a basis for it.
        let c = with(&[(1, RequireLegitimateInterest, 5)]);
        assert!(!gets(&p, &c, "storage", Some(5)));
        assert!(
            gets(&p, &c, "storage", None),
            "the purpose is still consented"
        );
    }

    /// LI never counts for purposes 1 and 3-6, even if a config that `check`
    /// would reject listed them; purposeOneTreatment is not consent; a tool
    /// whose purposes name no IAB purpose still needs its vendor's consent.
    #[test]
    fn tcf_li_limits_and_vendor_without_iab_purposes() {
        let p = policy(
            r#"[consent]
enabled = true
tcf = true
[[consent.purposes]]
id = "profiles"
name = "Profiles"
tcf_purposes = [1, 3]
tcf_legitimate_interest = [1, 3]
[[consent.purposes]]
id = "plain"
name = "No IAB purpose"
"#,
        );
        let mut tc = hand_made(&[]);
        tc.purpose_consents = 0;
        tc.vendor_consents = tcf::VendorSet::default();
        tc.purpose_one_treatment = true;
        let c = p.tcf_choices(Some(Arc::new(tc.clone())));
        assert!(!gets(&p, &c, "profiles", None));
        assert!(
            !gets(&p, &c, "profiles", Some(5)),
            "vendor LI cannot stand in"
        );
        assert!(gets(&p, &c, "plain", None));
        assert!(!gets(&p, &c, "plain", Some(5)), "vendor 5 has no consent");
        tc.vendor_consents = tcf::VendorSet::from_ids([5]);
        let c = p.tcf_choices(Some(Arc::new(tc)));
        assert!(gets(&p, &c, "plain", Some(5)));
        assert!(!gets(&p, &c, "plain", Some(70_000)), "not a GVL id");
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

    /// The cookie as `consent.js` writes it (`encodeURIComponent` of the
    /// JSON), as raw JSON, and broken: a bad escape is no choice.
    #[test]
    fn choice_cookie_is_percent_decoded() {
        let want = json!({"analytics": true, "ads": false});
        for raw in [
            "%7B%22analytics%22%3Atrue%2C%22ads%22%3Afalse%7D",
            r#"{"analytics":true,"ads":false}"#,
            r#"%7B"analytics":true,"ads"%3Afalse}"#,
        ] {
            assert_eq!(
                parse_choice_cookie(raw).map(Value::Object),
                Some(want.clone()),
                "{raw}"
            );
        }
        for raw in ["%7", "%zz%7B%7D", "%7B%22a%22%3Atrue", "%FF", "[true]"] {
            assert_eq!(parse_choice_cookie(raw), None, "{raw}");
        }
    }

    /// Consent Mode values in `google_consent_default` / `_update`: the two
    /// words gtag uses, or booleans; anything else is not set.
    #[test]
    fn granted_value_reads_words_and_booleans() {
        for (v, want) in [
            (json!("granted"), Some(true)),
            (json!("denied"), Some(false)),
            (json!(true), Some(true)),
            (json!(false), Some(false)),
            (json!("Granted"), None),
            (json!("yes"), None),
            (json!(1), None),
            (json!(null), None),
        ] {
            assert_eq!(granted_value(&v), want, "{v}");
        }
    }

    /// `ad_storage`: the update wins over the default, and a signal never
    /// set counts as granted (gtag's reading, the same as `gcs`'s digit).
    #[test]
    fn ad_storage_reads_the_update_then_the_default() {
        for (state, granted) in [
            ((None, None), true),
            ((Some(false), None), false),
            ((Some(true), None), true),
            ((Some(false), Some(true)), true),
            ((Some(true), Some(false)), false),
            ((None, Some(false)), false),
        ] {
            let m = ConsentMode([state, (None, Some(true)), (None, None), (None, None)]);
            assert_eq!(m.ad_storage(), granted, "{state:?}");
        }
    }

    /// `check` refuses a tool that names a purpose the config does not
    /// define; this is the lookup it uses.
    #[test]
    fn has_purpose_knows_exactly_the_configured_ids() {
        let p = policy(TWO);
        assert!(p.has_purpose("analytics"));
        assert!(p.has_purpose("ads"));
        assert!(!p.has_purpose("Analytics"));
        assert!(!p.has_purpose("marketing"));
        assert!(!p.has_purpose(""));
    }

    /// Choices read under a policy with fewer purposes (a reload added
    /// one) or none at all count as not granted and undecided: a tool
    /// behind the new purpose waits, and nothing panics.
    #[test]
    fn choices_from_another_policy_are_not_granted() {
        let p = policy(TWO);
        let none = Choices::default();
        assert!(!p.allows(&none, &["ads".into()], None, false));
        assert!(p.allows(&none, &[], None, false));
        let mode = p.consent_mode(&none, &json!({})).unwrap();
        assert!(!mode.ad_storage(), "the default, no update");

        let granted = Choices {
            decided: vec![Some(true)],
            granted: vec![true],
            tc: None,
        };
        assert!(p.allows(&granted, &["analytics".into()], None, false));
        assert!(!p.allows(&granted, &["ads".into()], None, false));
        let mode = p.consent_mode(&granted, &json!({})).unwrap();
        assert_eq!(mode.gcs(), "G101", "analytics updated, ads at its default");
    }
}

/// Built-in texts of the consent modal: (language, title, intro, accept all,
/// reject all, save).
const BUILT_IN_TEXTS: &[(&str, [&str; 5])] = &[
    (
        "en",
        [
            "Privacy choices",
            "Choose what this site may use your data for. You can change this at any time.",
            "Accept all",
            "Reject all",
            "Save choices",
        ],
    ),
    (
        "de",
        [
            "Datenschutz-Einstellungen",
            "Wählen Sie, wofür diese Website Ihre Daten verwenden darf. Sie können das jederzeit ändern.",
            "Alle akzeptieren",
            "Alle ablehnen",
            "Auswahl speichern",
        ],
    ),
    (
        "fr",
        [
            "Vos choix de confidentialité",
            "Choisissez à quelles fins ce site peut utiliser vos données. Vous pouvez modifier ce choix à tout moment.",
            "Tout accepter",
            "Tout refuser",
            "Enregistrer mes choix",
        ],
    ),
    (
        "es",
        [
            "Opciones de privacidad",
            "Elija para qué puede usar este sitio sus datos. Puede cambiarlo en cualquier momento.",
            "Aceptar todo",
            "Rechazar todo",
            "Guardar selección",
        ],
    ),
];

/// The modal's text keys, in [`BUILT_IN_TEXTS`] order.
pub const MODAL_TEXT_KEYS: [&str; 5] = ["title", "intro", "accept_all", "reject_all", "save"];

/// The consent modal's texts for the browser: each key
/// ([`MODAL_TEXT_KEYS`]) → language → text, the built-in English, German,
/// French and Spanish overridden by `[consent.texts.<lang>]`. The script
/// picks a text the way it picks purpose texts: the visitor's exact
/// language tag, its primary subtag, `en`, then any.
pub fn modal_texts(cfg: &ConsentConfig) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (k, key) in MODAL_TEXT_KEYS.iter().enumerate() {
        let mut by_lang = serde_json::Map::new();
        for (lang, texts) in BUILT_IN_TEXTS {
            by_lang.insert((*lang).into(), texts[k].into());
        }
        for (lang, texts) in &cfg.texts {
            let own = match *key {
                "title" => &texts.title,
                "intro" => &texts.intro,
                "accept_all" => &texts.accept_all,
                "reject_all" => &texts.reject_all,
                _ => &texts.save,
            };
            if let Some(text) = own {
                by_lang.insert(lang.clone(), text.clone().into());
            }
        }
        out.insert((*key).into(), by_lang.into());
    }
    out.into()
}

/// Which text of `texts` (language → text) a visitor whose browser language
/// is `lang` sees; the same rule as the script's (`consent.js`).
pub fn pick_text<'a>(texts: &'a serde_json::Value, lang: &str) -> Option<&'a str> {
    let primary = lang.split('-').next().unwrap_or(lang);
    [lang, primary, "en"]
        .iter()
        .find_map(|k| texts.get(*k))
        .or_else(|| texts.as_object()?.values().next())
        .and_then(|v| v.as_str())
}

#[cfg(test)]
mod modal_text_tests {
    use super::*;

    fn config(toml: &str) -> ConsentConfig {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn built_in_languages_and_overrides() {
        let cfg = config(
            "[texts.de]\ntitle = \"Ihre Wahl\"\n[texts.pt-BR]\ntitle = \"Suas escolhas\"\naccept_all = \"Aceitar tudo\"\n",
        );
        let t = modal_texts(&cfg);
        for key in MODAL_TEXT_KEYS {
            for lang in ["en", "de", "fr", "es"] {
                assert!(
                    pick_text(&t[key], lang).is_some_and(|s| !s.is_empty()),
                    "{key}/{lang}"
                );
            }
        }
        assert_eq!(pick_text(&t["title"], "de-AT"), Some("Ihre Wahl"));
        // Keys not overridden keep the built-in text of that language.
        assert_eq!(pick_text(&t["accept_all"], "de"), Some("Alle akzeptieren"));
        assert_eq!(pick_text(&t["reject_all"], "fr-CA"), Some("Tout refuser"));
        assert_eq!(pick_text(&t["save"], "es"), Some("Guardar selección"));
        // A configured language; its missing keys fall back to English.
        assert_eq!(pick_text(&t["title"], "pt-BR"), Some("Suas escolhas"));
        assert_eq!(pick_text(&t["accept_all"], "pt-BR"), Some("Aceitar tudo"));
        assert_eq!(pick_text(&t["reject_all"], "pt-BR"), Some("Reject all"));
        assert_eq!(pick_text(&t["intro"], "ja"), pick_text(&t["intro"], "en"));
    }

    /// Each of the five keys is overridden by its own setting, not another's.
    #[test]
    fn every_key_takes_its_own_override() {
        let mut toml = String::from("[texts.nl]\n");
        for key in MODAL_TEXT_KEYS {
            toml.push_str(&format!("{key} = \"nl {key}\"\n"));
        }
        let t = modal_texts(&config(&toml));
        for key in MODAL_TEXT_KEYS {
            assert_eq!(pick_text(&t[key], "nl").unwrap(), format!("nl {key}"));
        }
    }

    #[test]
    fn unknown_text_keys_are_refused() {
        assert!(toml::from_str::<ConsentConfig>("[texts.de]\nheading = \"x\"\n").is_err());
    }
}
