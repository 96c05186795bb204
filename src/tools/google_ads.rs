//! `google-ads`: the Google Ads conversion hit, fired from the visitor's
//! browser (`{"fetch": url}` instruction) as
//! `GET {endpoint}/pagead/conversion/{conversion_id}/?…` (default
//! `https://www.googleadservices.com`), the request Google's conversion tag
//! sends and Cloudflare Zaraz's Google Ads Managed Component
//! (github.com/managed-components/google-ads, `src/index.ts`) sends the same
//! way, with `fetch(url, {credentials: "include", mode: "no-cors",
//! keepalive: true})`.
//!
//! Browser-side, not server-side, as the Managed Component: Google has no
//! server endpoint for a site's conversion tag (the Google Ads API's
//! offline-conversion upload needs an OAuth developer account, not a tag's
//! conversion id), and the hit is matched to the ad click by Google's own
//! cookies on `googleadservices.com` / `doubleclick.net`, which only the
//! visitor's browser carries.
//!
//! Parameters: `guid=ON`, `rnd` (a cache buster, stable per event), `fst`
//! (event time, ms), `cv=9`, `sendb=1`, `num=1`, `ig=1` (the Managed
//! Component's fixed values), `url` (page URL), `tiba` (title), `ref`
//! (referrer) — e-mail addresses redacted from all three, as for GA4 —
//! `label` (conversion label), `value`, `currency_code` (ISO 4217, upper
//! case), `oid` (transaction id: `transaction_id`, `order_id`,
//! `checkout_id`, else the event id, so a hit sent twice counts once),
//! `gclaw` / `gclgb` / `wbraid` (click ids), and Consent Mode v2 `gcs` /
//! `gcd` computed as for GA4.
//!
//! Click ids: the landing URL's `gclid`, `gbraid` and `wbraid` are kept in
//! first-party cookies set by the collector, in the format Google's
//! conversion linker writes (`GCL.<unix seconds>.<id>`): `_gcl_aw` (gclid,
//! as the Managed Component and gtag), `_gcl_gb` (gbraid), `_gcl_wb`
//! (wbraid: Google documents no cookie for it; same format), 90 days as the
//! conversion linker keeps them. With Consent Mode `ad_storage` denied they
//! are neither written nor read (as gtag), and only the landing URL's ids
//! go out.

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::props;
use super::{
    endpoint, origin_list, parse_settings, pii, Adapter, Automated, BuildContext, Output,
    TemplateString, ToolCookie, ToolFile,
};
use crate::config::Problem;
use crate::event::{number, Event, Kind};
use crate::rules::template::Template;

const DEFAULT_ENDPOINT: &str = "https://www.googleadservices.com";
/// Google's conversion linker keeps its `_gcl_*` cookies 90 days
/// (<https://support.google.com/google-ads/answer/7521212>).
const CLICK_COOKIE_SECS: u64 = 90 * 24 * 3600;

/// (landing URL parameter, first-party cookie, hit parameter).
const CLICK_IDS: [(&str, &str, &str); 3] = [
    ("gclid", "_gcl_aw", "gclaw"),
    ("gbraid", "_gcl_gb", "gclgb"),
    ("wbraid", "_gcl_wb", "wbraid"),
];

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "GoogleAdsSettings")]
struct Settings {
    /// The conversion id (`AW-123456789` or `123456789`; gtag's
    /// `AW-123456789/label` also gives the label).
    conversion_id: Option<TemplateString>,
    /// The conversion label of the purchase conversion action, and the
    /// default of custom actions without their own `label`.
    conversion_label: Option<TemplateString>,
}

/// The JSON Schema of this adapter's `[settings]` table (`tagproxy schema`).
pub fn settings_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<Settings>()
}

pub struct GoogleAds {
    base: String,
    conversion_id: Template,
    conversion_label: Option<Template>,
}

/// What one conversion carries besides the page and the click ids.
#[derive(Default)]
struct Conversion {
    label: Option<String>,
    value: Option<f64>,
    currency: Option<String>,
    transaction_id: Option<String>,
}

impl GoogleAds {
    /// # Errors
    /// `settings.conversion_id` is missing, or the settings do not parse.
    pub fn from_config(path: &Path, text: &str, file: &ToolFile) -> Result<GoogleAds, Problem> {
        let s: Settings = parse_settings(path, text)?;
        let Some(conversion_id) = s.conversion_id else {
            return Err(file.missing_setting(path, text, "conversion_id"));
        };
        Ok(GoogleAds {
            base: endpoint(file, DEFAULT_ENDPOINT),
            conversion_id: conversion_id.0,
            conversion_label: s.conversion_label.map(|t| t.0),
        })
    }

    /// The numeric conversion id and the label gtag's `AW-…/label` form
    /// carries.
    fn id_and_label(&self, event: &Event, cx: &BuildContext<'_>) -> (String, Option<String>) {
        let raw = cx.render(&self.conversion_id, event);
        let raw = raw.trim();
        let raw = raw.strip_prefix("AW-").unwrap_or(raw);
        match raw.split_once('/') {
            Some((id, label)) => (id.to_string(), Some(label.to_string())),
            None => (raw.to_string(), None),
        }
    }

    /// The click-id cookies to keep: each id the landing URL carries, when
    /// `ad_storage` allows.
    fn cookies(event: &Event) -> Vec<ToolCookie> {
        if !ad_storage(event) {
            return Vec::new();
        }
        let secs = props::event_time_ms(event) / 1000;
        CLICK_IDS
            .iter()
            .filter_map(|(query, cookie, _)| {
                let id = event
                    .sys(&["page", "query", query])
                    .and_then(Value::as_str)
                    .filter(|v| props::is_url_safe_id(v))?;
                Some(ToolCookie {
                    name: (*cookie).into(),
                    value: format!("GCL.{secs}.{id}"),
                    max_age_secs: CLICK_COOKIE_SECS,
                })
            })
            .collect()
    }

    fn hit(&self, c: Conversion, event: &Event, cx: &BuildContext<'_>) -> Output {
        let (id, id_label) = self.id_and_label(event, cx);
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("guid", "ON");
        // A cache buster per hit, stable for the event (the event id's hash).
        let rnd = u32::from_str_radix(&props::sha256_hex(&event.id)[..8], 16).unwrap_or(0);
        q.append_pair("rnd", &rnd.to_string());
        q.append_pair("fst", &props::event_time_ms(event).to_string());
        for (k, v) in [("cv", "9"), ("sendb", "1"), ("num", "1"), ("ig", "1")] {
            q.append_pair(k, v);
        }
        let clean = |raw: &str| pii::redact_url(raw).unwrap_or_else(|| raw.to_string());
        q.append_pair("url", &clean(event.page_url()));
        let title = event.sys_str(&["page", "title"]);
        if !title.is_empty() {
            q.append_pair("tiba", &pii::redact_emails(title));
        }
        let referrer = event.sys_str(&["page", "referrer"]);
        if !referrer.is_empty() {
            q.append_pair("ref", &clean(referrer));
        }
        let label = c
            .label
            .or(id_label)
            .or_else(|| self.conversion_label.as_ref().map(|t| cx.render(t, event)))
            .filter(|l| !l.trim().is_empty());
        if let Some(label) = label {
            q.append_pair("label", label.trim());
        }
        if let Some(v) = c.value.filter(|v| v.is_finite()) {
            q.append_pair("value", &v.to_string());
        }
        if let Some(cu) = c.currency.filter(|c| !c.trim().is_empty()) {
            q.append_pair("currency_code", &cu.trim().to_ascii_uppercase());
        }
        q.append_pair("oid", c.transaction_id.as_deref().unwrap_or(&event.id));
        let stored = ad_storage(event);
        for (query, cookie, param) in CLICK_IDS {
            let from_url = event
                .sys(&["page", "query", query])
                .and_then(Value::as_str)
                .filter(|v| props::is_url_safe_id(v));
            let from_cookie = || {
                event
                    .cookie(cookie)
                    .filter(|_| stored)
                    .and_then(gcl_id)
                    .filter(|v| props::is_url_safe_id(v))
            };
            if let Some(v) = from_url.or_else(from_cookie) {
                q.append_pair(param, v);
            }
        }
        if let Some(mode) = &event.consent_mode {
            q.append_pair("gcs", &mode.gcs());
            q.append_pair("gcd", &mode.gcd());
        }
        let path_id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
        Output {
            payloads: Vec::new(),
            instructions: vec![json!({"fetch": format!(
                "{}/pagead/conversion/{path_id}/?{}",
                self.base,
                q.finish()
            )})],
            cookies: Self::cookies(event),
        }
    }
}

/// Whether Consent Mode lets Google's cookies be used (no Consent Mode
/// state: yes, as gtag without consent settings).
fn ad_storage(event: &Event) -> bool {
    event
        .consent_mode
        .as_ref()
        .is_none_or(crate::consent::ConsentMode::ad_storage)
}

/// The id in a conversion linker cookie `GCL.<seconds>.<id>`.
fn gcl_id(cookie: &str) -> Option<&str> {
    let mut parts = cookie.splitn(3, '.');
    (parts.next()? == "GCL" && parts.next()?.bytes().all(|b| b.is_ascii_digit()))
        .then(|| parts.next())
        .flatten()
}

/// The transaction id of an order, as GA4's Managed Component reads it.
fn transaction_id(p: &Map<String, Value>) -> Option<String> {
    ["transaction_id", "order_id", "checkout_id"]
        .iter()
        .find_map(|k| p.get(*k).and_then(props::scalar))
}

impl Adapter for GoogleAds {
    /// `pageview` sends nothing and keeps the landing URL's click ids (the
    /// Managed Component's pageview); `ecommerce` sends `Order Completed`
    /// as the purchase conversion. Google Ads has no named events: other
    /// conversions are custom actions.
    fn supports(&self) -> Automated {
        Automated {
            pageview: true,
            track: false,
            ecommerce: true,
        }
    }

    fn automated(&self, event: &Event, cx: &BuildContext<'_>) -> Output {
        match event.kind {
            Kind::Ecommerce if event.name == "Order Completed" => {
                let p = event.properties();
                let c = Conversion {
                    label: None,
                    value: props::order_value(event),
                    currency: event.prop_str("currency"),
                    transaction_id: transaction_id(p),
                };
                self.hit(c, event, cx)
            }
            _ => Output {
                cookies: Self::cookies(event),
                ..Default::default()
            },
        }
    }

    fn action_kinds(&self) -> &'static [(&'static str, &'static [&'static str])] {
        &[("conversion", &[])]
    }

    /// `conversion`: a conversion hit with the action's `label` (else the
    /// tool's `conversion_label`), `value`, `currency` (or
    /// `currency_code`) and `transaction_id` (or `order_id`).
    fn custom(
        &self,
        _kind: &str,
        fields: Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        let c = Conversion {
            label: fields.get("label").and_then(props::scalar),
            value: fields.get("value").and_then(number),
            currency: ["currency", "currency_code"]
                .iter()
                .find_map(|k| fields.get(*k).and_then(props::scalar)),
            transaction_id: transaction_id(&fields),
        };
        self.hit(c, event, cx)
    }

    /// A conversion without a label counts for no conversion action: warn
    /// where one can go out without (the purchase conversion, a custom
    /// action without `label`) when the tool gives none.
    fn check_warnings(&self, path: &Path, text: &str, file: &ToolFile) -> Vec<String> {
        let tool_label = self.conversion_label.is_some()
            || self
                .conversion_id
                .as_literal()
                .is_none_or(|id| id.contains('/'));
        if tool_label {
            return Vec::new();
        }
        let mut out = Vec::new();
        if file.automated().ecommerce {
            let at = file.automated.as_ref().map_or(0, |a| a.span().start);
            out.push(
                Problem::at(
                    path,
                    text,
                    at,
                    "google-ads: `Order Completed` goes out without a conversion label (set settings.conversion_label); Google counts it for no conversion action",
                )
                .to_string(),
            );
        }
        for action in &file.actions {
            let a = action.get_ref();
            if !a.fields.contains_key("label") {
                out.push(
                    Problem::at(
                        path,
                        text,
                        action.span().start,
                        format!(
                            "google-ads: action `{}` has no `label` and the tool no conversion_label; Google counts it for no conversion action",
                            a.name
                        ),
                    )
                    .to_string(),
                );
            }
        }
        out
    }

    fn templates(&self) -> Vec<&Template> {
        let mut t = vec![&self.conversion_id];
        t.extend(&self.conversion_label);
        t
    }

    fn origins(&self) -> Vec<url::Origin> {
        origin_list(&self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_linker_cookie_values() {
        assert_eq!(gcl_id("GCL.1732449000.Cj0KCQ-abc"), Some("Cj0KCQ-abc"));
        assert_eq!(gcl_id("GCL.1732449000.a.b"), Some("a.b"));
        assert_eq!(gcl_id("GCL.x.abc"), None);
        assert_eq!(gcl_id("1.1732449000.abc"), None);
        assert_eq!(gcl_id("GCL.1"), None);
    }

    use crate::consent::ConsentMode;
    use crate::rules::template::Variables;
    use crate::tools::test_support::{
        context, cookies_of, fetched as hit, page_event as event, param,
    };

    fn ads(settings: &str) -> GoogleAds {
        let text = format!("type = \"google-ads\"\n[settings]\n{settings}\n");
        let file: ToolFile = toml::from_str(&text).unwrap();
        GoogleAds::from_config(Path::new("ads.toml"), &text, &file).unwrap()
    }

    fn order(props: Value, cookies: &str) -> Event {
        event(
            Kind::Ecommerce,
            "Order Completed",
            props,
            ("https://shop.test/done", "", ""),
            cookies,
        )
    }

    fn run(a: &GoogleAds, e: &Event) -> Output {
        a.automated(e, &context("ads", &Variables::new()))
    }

    /// Denied or granted `ad_storage`, the other signals unset.
    fn with_ad_storage(mut e: Event, granted: bool) -> Event {
        e.consent_mode = Some(ConsentMode([
            (Some(granted), None),
            (None, None),
            (None, None),
            (None, None),
        ]));
        e
    }

    /// A pageview sends nothing and keeps each click id of the landing URL
    /// as the conversion linker does: `GCL.<event seconds>.<id>`, 90 days;
    /// with `ad_storage` denied, nothing is kept.
    #[test]
    fn pageviews_keep_click_ids_in_conversion_linker_cookies() {
        let a = ads("conversion_id = \"AW-1\"");
        let landing = ("https://shop.test/?gclid=G-1&gbraid=B_2&wbraid=W3", "", "");
        let out = run(&a, &event(Kind::Pageview, "", json!({}), landing, ""));
        assert!(out.instructions.is_empty() && out.payloads.is_empty());
        let kept = cookies_of(&out);
        assert_eq!(
            kept,
            [
                ("_gcl_aw", "GCL.1748935400.G-1", 7_776_000),
                ("_gcl_gb", "GCL.1748935400.B_2", 7_776_000),
                ("_gcl_wb", "GCL.1748935400.W3", 7_776_000)
            ]
        );
        let denied = with_ad_storage(event(Kind::Pageview, "", json!({}), landing, ""), false);
        assert!(run(&a, &denied).cookies.is_empty());
        let granted = with_ad_storage(event(Kind::Pageview, "", json!({}), landing, ""), true);
        assert_eq!(run(&a, &granted).cookies.len(), 3);
        let track = event(Kind::Track, "x", json!({}), landing, "");
        assert_eq!(run(&a, &track).cookies.len(), 3);
        assert!(run(&a, &track).instructions.is_empty());
    }

    /// `Order Completed` is the purchase conversion: the id from gtag's
    /// `AW-…/label` form, value, upper-case currency, the order id as `oid`,
    /// the page's title and referrer, and stored click ids when
    /// `ad_storage` allows reading them.
    #[test]
    fn order_completed_is_the_purchase_conversion() {
        let a = ads("conversion_id = \"AW-123/Lbl\"");
        let props = json!({"order_id": "o-9", "revenue": 30, "currency": " eur "});
        let page = ("https://shop.test/done", "Thanks", "https://shop.test/cart");
        let cookie = "_gcl_aw=GCL.1700000000.stored-1";
        let e = event(
            Kind::Ecommerce,
            "Order Completed",
            props.clone(),
            page,
            cookie,
        );
        let (base, q) = hit(&run(&a, &e));
        assert_eq!(
            base,
            "https://www.googleadservices.com/pagead/conversion/123/"
        );
        for (k, v) in [
            ("label", "Lbl"),
            ("value", "30"),
            ("currency_code", "EUR"),
            ("oid", "o-9"),
            ("tiba", "Thanks"),
            ("ref", "https://shop.test/cart"),
            ("gclaw", "stored-1"),
            ("fst", "1748935400000"),
        ] {
            assert_eq!(param(&q, k), Some(v), "{k}: {q:?}");
        }
        let denied = with_ad_storage(order(props, "_gcl_aw=GCL.1700000000.stored-1"), false);
        let (_, q) = hit(&run(&a, &denied));
        assert_eq!(param(&q, "gclaw"), None, "{q:?}");
        assert_eq!(param(&q, "gcs"), Some("G101"));
    }

    /// What an order without them leaves out: no title, referrer, blank
    /// currency or label; the event id stands in for the order id.
    #[test]
    fn absent_fields_are_left_out() {
        let a = ads("conversion_id = \"AW-123\"");
        let e = order(json!({"currency": "  "}), "");
        let (_, q) = hit(&run(&a, &e));
        for k in [
            "tiba",
            "ref",
            "currency_code",
            "label",
            "value",
            "gclaw",
            "gcs",
        ] {
            assert_eq!(param(&q, k), None, "{k}: {q:?}");
        }
        assert_eq!(param(&q, "oid"), Some(e.id.as_str()));
        let other = event(
            Kind::Ecommerce,
            "Product Added",
            json!({}),
            ("https://shop.test/", "", ""),
            "",
        );
        assert!(run(&a, &other).instructions.is_empty());
    }

    /// A `conversion` action: its own label before the tool's, `value`,
    /// `currency_code`, `transaction_id`.
    #[test]
    fn custom_conversion_action() {
        let a = ads("conversion_id = \"987\"\nconversion_label = \"Tool\"");
        let e = event(
            Kind::Track,
            "signup",
            json!({}),
            ("https://shop.test/", "", ""),
            "",
        );
        let variables = Variables::new();
        let cx = context("ads", &variables);
        let fields = json!({"label": "Own", "value": "12.5", "currency_code": "usd", "transaction_id": "t1"});
        let (base, q) = hit(&a.custom("conversion", fields.as_object().unwrap().clone(), &e, &cx));
        assert!(base.ends_with("/pagead/conversion/987/"), "{base}");
        for (k, v) in [
            ("label", "Own"),
            ("value", "12.5"),
            ("currency_code", "USD"),
            ("oid", "t1"),
        ] {
            assert_eq!(param(&q, k), Some(v), "{k}: {q:?}");
        }
        let (_, q) = hit(&a.custom("conversion", Map::new(), &e, &cx));
        assert_eq!(param(&q, "label"), Some("Tool"));
    }

    /// `check` warns where a conversion can go out without a label: the
    /// purchase conversion and each action without its own, unless the
    /// tool gives one (`conversion_label`, gtag's `AW-…/label`, or an id
    /// only known at run time).
    #[test]
    fn check_warns_about_conversions_without_a_label() {
        let warnings = |settings: &str| {
            let text = format!(
                "type = \"google-ads\"\n[settings]\n{settings}\n[automated]\necommerce = true\n[[actions]]\nname = \"lead\"\nkind = \"conversion\"\nfiring = [\"Pageview\"]\n[[actions]]\nname = \"own\"\nkind = \"conversion\"\nfiring = [\"Pageview\"]\nfields = {{ label = \"L\" }}\n"
            );
            let file: ToolFile = toml::from_str(&text).unwrap();
            let a = GoogleAds::from_config(Path::new("ads.toml"), &text, &file).unwrap();
            a.check_warnings(Path::new("ads.toml"), &text, &file)
        };
        let w = warnings("conversion_id = \"AW-1\"");
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("`Order Completed` goes out without a conversion label"),
            "{w:?}"
        );
        assert!(w[1].contains("action `lead` has no `label`"), "{w:?}");
        for labelled in [
            "conversion_id = \"AW-1/Abc\"",
            "conversion_id = \"AW-1\"\nconversion_label = \"Abc\"",
            "conversion_id = \"{{ $id }}\"",
        ] {
            assert_eq!(warnings(labelled), Vec::<String>::new(), "{labelled}");
        }
    }
}
