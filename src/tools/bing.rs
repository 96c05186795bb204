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
