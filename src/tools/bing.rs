//! `bing`: Microsoft Advertising's UET tag, fired from the visitor's browser
//! (`{"fetch": url}` instruction) as `GET {endpoint}/action/0?…` (default
//! `https://bat.bing.com`), the hit the UET script itself sends
//! (<https://help.ads.microsoft.com/#apex/ads/en/56686/2>): `ti` (tag id),
//! `Ver=2`, `mid` (our event id, per hit), `evt` (`pageLoad` for a
//! pageview, `custom` for an event), `p` (page URL), `tl` (title), `r`
//! (referrer), `rn` (a cache-busting number), `msclkid` (the landing URL's
//! click id, kept first-party in `_uetmsclkid` as the UET script keeps it),
//! and for events `ea` (action), `ec` (category), `el` (label), `ev`
//! (value), `gv` / `gc` (revenue and currency: `Order Completed` is the
//! `purchase` action, as Microsoft's ecommerce guidance names it).

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::props;
use super::{
    endpoint, parse_settings, Adapter, Automated, BuildContext, Output, TemplateString, ToolCookie,
    ToolFile,
};
use crate::config::Problem;
use crate::event::{number, Event, Kind};
use crate::rules::template::Template;

const DEFAULT_ENDPOINT: &str = "https://bat.bing.com";
/// UET keeps `_uetmsclkid` 90 days.
const MSCLKID_SECS: u64 = 90 * 24 * 3600;

/// Zaraz ecommerce event → UET event action (Microsoft's retail actions).
const ACTIONS: [(&str, &str); 6] = [
    ("Product Viewed", "view_item"),
    ("Product Added", "add_to_cart"),
    ("Checkout Started", "begin_checkout"),
    ("Order Completed", "purchase"),
    ("Products Searched", "search"),
    ("Product List Viewed", "view_item_list"),
];

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "BingSettings")]
struct Settings {
    /// The UET tag id.
    tag_id: Option<TemplateString>,
}

/// The JSON Schema of this adapter's `[settings]` table (`tagproxy schema`).
pub fn settings_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<Settings>()
}

pub struct Bing {
    base: String,
    tag_id: Template,
}

impl Bing {
    /// # Errors
    /// `settings.tag_id` is missing, or the settings do not parse.
    pub fn from_config(path: &Path, text: &str, file: &ToolFile) -> Result<Bing, Problem> {
        let s: Settings = parse_settings(path, text)?;
        let Some(tag_id) = s.tag_id else {
            return Err(file.missing_setting(path, text, "tag_id"));
        };
        Ok(Bing {
            base: endpoint(file, DEFAULT_ENDPOINT),
            tag_id: tag_id.0,
        })
    }

    fn hit(&self, params: Vec<(&str, String)>, event: &Event, cx: &BuildContext<'_>) -> Output {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("ti", &cx.render(&self.tag_id, event));
        q.append_pair("Ver", "2");
        q.append_pair("mid", &event.id);
        for (k, v) in &params {
            q.append_pair(k, v);
        }
        q.append_pair("p", event.page_url());
        let title = event.sys_str(&["page", "title"]);
        if !title.is_empty() {
            q.append_pair("tl", title);
        }
        let referrer = event.sys_str(&["page", "referrer"]);
        if !referrer.is_empty() {
            q.append_pair("r", referrer);
        }
        let mut cookies = Vec::new();
        let click = event
            .sys(&["page", "query", "msclkid"])
            .and_then(Value::as_str)
            .filter(|v| is_id(v))
            .map(String::from)
            .or_else(|| {
                event
                    .cookie("_uetmsclkid")
                    .and_then(|c| c.strip_prefix("_uet"))
                    .filter(|v| is_id(v))
                    .map(String::from)
            });
        if let Some(id) = click {
            q.append_pair("msclkid", &id);
            cookies.push(ToolCookie {
                name: "_uetmsclkid".into(),
                value: format!("_uet{id}"),
                max_age_secs: MSCLKID_SECS,
            });
        }
        // A cache buster per hit, stable for the event (the event id's hash).
        let rn = u32::from_str_radix(&props::sha256_hex(&event.id)[..6], 16).unwrap_or(0);
        q.append_pair("rn", &rn.to_string());
        Output {
            payloads: Vec::new(),
            instructions: vec![json!({"fetch": format!("{}/action/0?{}", self.base, q.finish())})],
            cookies,
        }
    }
}

impl Adapter for Bing {
    fn supports(&self) -> Automated {
        Automated::ALL
    }

    fn automated(&self, event: &Event, cx: &BuildContext<'_>) -> Output {
        match event.kind {
            Kind::Pageview => self.hit(vec![("evt", "pageLoad".into())], event, cx),
            Kind::Track => self.hit(event_params(&event.name, event.properties()), event, cx),
            Kind::Ecommerce => {
                let action = ACTIONS
                    .iter()
                    .find(|(z, _)| *z == event.name)
                    .map_or(event.name.as_str(), |(_, a)| a);
                let mut params = event_params(action, event.properties());
                if let Some(v) = props::order_value(event) {
                    params.push(("gv", v.to_string()));
                }
                if let Some(cu) = event.prop_str("currency") {
                    params.push(("gc", cu.to_ascii_uppercase()));
                }
                self.hit(params, event, cx)
            }
        }
    }

    fn action_kinds(&self) -> &'static [(&'static str, &'static [&'static str])] {
        &[("event", &["action"])]
    }

    /// `event`: a custom UET event with `action` and, optionally,
    /// `category`, `label`, `value`, `revenue`, `currency`.
    fn custom(
        &self,
        _kind: &str,
        fields: Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        let action = fields
            .get("action")
            .and_then(props::scalar)
            .unwrap_or_else(|| "event".into());
        let mut params = event_params(&action, &fields);
        if let Some(v) = fields.get("revenue").and_then(number) {
            params.push(("gv", v.to_string()));
        }
        if let Some(cu) = fields.get("currency").and_then(props::scalar) {
            params.push(("gc", cu.to_ascii_uppercase()));
        }
        self.hit(params, event, cx)
    }

    fn templates(&self) -> Vec<&Template> {
        vec![&self.tag_id]
    }
}

/// `evt=custom` with `ea` and the event's `category` / `label` / `value`.
fn event_params(action: &str, p: &Map<String, Value>) -> Vec<(&'static str, String)> {
    let mut out = vec![("evt", "custom".to_string()), ("ea", action.to_string())];
    for (key, param) in [("category", "ec"), ("label", "el")] {
        if let Some(v) = p.get(key).and_then(props::scalar) {
            if super::pii::kind(key, &v).is_none() {
                out.push((param, v));
            }
        }
    }
    if let Some(v) = p.get("value").and_then(number) {
        out.push(("ev", v.to_string()));
    }
    out
}

fn is_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 200
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::template::Variables;
    use crate::tools::test_support::{context, fetched, page_event as event, param};

    fn bing() -> Bing {
        let text = "type = \"bing\"\n[settings]\ntag_id = \"97000001\"\n";
        let file: ToolFile = toml::from_str(text).unwrap();
        Bing::from_config(Path::new("bing.toml"), text, &file).unwrap()
    }

    fn on(url: &str) -> (&str, &str, &str) {
        (url, "", "")
    }

    /// The query of the output's one UET hit, as pairs.
    fn hit(out: &Output) -> Vec<(String, String)> {
        let (base, query) = fetched(out);
        assert_eq!(base, "https://bat.bing.com/action/0");
        query
    }

    fn automated(e: &Event) -> Output {
        bing().automated(e, &context("bing", &Variables::new()))
    }

    /// `tl` and `r` only when the page has a title and a referrer (the UET
    /// script leaves them out rather than send them empty).
    #[test]
    fn title_and_referrer_only_when_known() {
        let page = ("https://shop.test/a", "Shoes", "https://search.test/");
        let q = hit(&automated(&event(Kind::Pageview, "", json!({}), page, "")));
        assert_eq!(param(&q, "evt"), Some("pageLoad"));
        assert_eq!(param(&q, "ti"), Some("97000001"));
        assert_eq!(param(&q, "tl"), Some("Shoes"));
        assert_eq!(param(&q, "r"), Some("https://search.test/"));
        let bare = event(Kind::Pageview, "", json!({}), on("https://shop.test/a"), "");
        let q = hit(&automated(&bare));
        assert_eq!((param(&q, "tl"), param(&q, "r")), (None, None), "{q:?}");
        assert_eq!(param(&q, "p"), Some("https://shop.test/a"));
    }

    /// `msclkid` is taken when it looks like Microsoft's click id: 1 to 200
    /// letters, digits, `-` or `_`; anything else is left out, not sent,
    /// and not stored. The `_uetmsclkid` cookie lasts UET's 90 days.
    #[test]
    fn click_ids_are_checked_and_kept_90_days() {
        let landing = |id: &str| {
            let e = event(
                Kind::Pageview,
                "",
                json!({}),
                on(&format!("https://shop.test/?msclkid={id}")),
                "",
            );
            automated(&e)
        };
        let longest = "a".repeat(200);
        for good in ["Ab1-_z", longest.as_str()] {
            let out = landing(good);
            assert_eq!(param(&hit(&out), "msclkid"), Some(good));
            assert_eq!(out.cookies.len(), 1);
            assert_eq!(out.cookies[0].name, "_uetmsclkid");
            assert_eq!(out.cookies[0].value, format!("_uet{good}"));
            assert_eq!(out.cookies[0].max_age_secs, 7_776_000);
        }
        let too_long = "a".repeat(201);
        for bad in ["", "a.b", "a b", too_long.as_str()] {
            let out = landing(bad);
            assert_eq!(param(&hit(&out), "msclkid"), None, "{bad:?}");
            assert!(out.cookies.is_empty(), "{bad:?}");
        }
    }

    /// Ecommerce events use Microsoft's retail actions where one matches and
    /// the event's own name otherwise; `gv` / `gc` carry revenue and currency.
    #[test]
    fn ecommerce_actions_and_revenue() {
        let order = event(
            Kind::Ecommerce,
            "Order Completed",
            json!({"revenue": 42.5, "currency": "eur", "category": "shoes"}),
            on("https://shop.test/"),
            "",
        );
        let q = hit(&automated(&order));
        assert_eq!(param(&q, "evt"), Some("custom"));
        assert_eq!(param(&q, "ea"), Some("purchase"));
        assert_eq!(param(&q, "ec"), Some("shoes"));
        assert_eq!(param(&q, "gv"), Some("42.5"));
        assert_eq!(param(&q, "gc"), Some("EUR"));
        let other = event(
            Kind::Ecommerce,
            "Coupon Applied",
            json!({}),
            on("https://shop.test/"),
            "",
        );
        let q = hit(&automated(&other));
        assert_eq!(param(&q, "ea"), Some("Coupon Applied"));
        assert_eq!((param(&q, "gv"), param(&q, "gc")), (None, None));
    }

    /// A custom `event` action sends its `action`, `category`, `label`,
    /// `value`, `revenue` and `currency` fields as UET's event parameters.
    #[test]
    fn custom_event_action() {
        let b = bing();
        assert_eq!(b.action_kinds(), &[("event", &["action"][..])]);
        assert_eq!(b.templates().len(), 1);
        let e = event(Kind::Track, "x", json!({}), on("https://shop.test/"), "");
        let fields = json!({"action": "signup", "category": "form", "label": "footer",
            "value": 3, "revenue": "9.5", "currency": "usd"});
        let out = b.custom(
            "event",
            fields.as_object().unwrap().clone(),
            &e,
            &context("bing", &Variables::new()),
        );
        let q = hit(&out);
        let sent: Vec<(&str, &str)> = q
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "evt" | "ea" | "ec" | "el" | "ev" | "gv" | "gc"))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            sent,
            [
                ("evt", "custom"),
                ("ea", "signup"),
                ("ec", "form"),
                ("el", "footer"),
                ("ev", "3"),
                ("gv", "9.5"),
                ("gc", "USD")
            ]
        );
        let q = hit(&b.custom("event", Map::new(), &e, &context("bing", &Variables::new())));
        assert_eq!(param(&q, "ea"), Some("event"));
    }
}
