//! `linkedin`: the LinkedIn Insight Tag's hit, fired from the visitor's
//! browser (`{"fetch": url}` instruction) as `GET {endpoint}/collect?…`
//! (default `https://px.ads.linkedin.com`), the image request the Insight
//! Tag's `<noscript>` fallback documents
//! (<https://www.linkedin.com/help/lms/answer/a418880>): `pid` (partner id),
//! `fmt=gif`, `url` (page URL), `time` (ms), `li_fat_id` (the landing URL's
//! click id, kept first-party in `li_fat_id` as the tag keeps it) and, for
//! a conversion, `conversionId`. A pageview is a page hit; custom actions
//! of kind `conversion` send `conversionId` (the action's `conversion_id`,
//! else the tool's).

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::props;
use super::{
    endpoint, parse_settings, Adapter, Automated, BuildContext, Output, TemplateString, ToolCookie,
    ToolFile,
};
use crate::config::Problem;
use crate::event::Event;
use crate::rules::template::Template;

const DEFAULT_ENDPOINT: &str = "https://px.ads.linkedin.com";
/// The Insight Tag keeps `li_fat_id` 30 days.
const FAT_ID_SECS: u64 = 30 * 24 * 3600;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "LinkedInSettings")]
struct Settings {
    /// The Insight Tag's partner id.
    partner_id: Option<TemplateString>,
    /// A conversion rule id, for `conversion` actions without their own.
    conversion_id: Option<TemplateString>,
}

/// The JSON Schema of this adapter's `[settings]` table (`tagproxy schema`).
pub fn settings_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<Settings>()
}

pub struct LinkedIn {
    base: String,
    partner_id: Template,
    conversion_id: Option<Template>,
}

impl LinkedIn {
    /// # Errors
    /// `settings.partner_id` is missing, or the settings do not parse.
    pub fn from_config(path: &Path, text: &str, file: &ToolFile) -> Result<LinkedIn, Problem> {
        let s: Settings = parse_settings(path, text)?;
        let Some(partner_id) = s.partner_id else {
            return Err(file.missing_setting(path, text, "partner_id"));
        };
        Ok(LinkedIn {
            base: endpoint(file, DEFAULT_ENDPOINT),
            partner_id: partner_id.0,
            conversion_id: s.conversion_id.map(|t| t.0),
        })
    }

    fn hit(&self, conversion: Option<String>, event: &Event, cx: &BuildContext<'_>) -> Output {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("pid", &cx.render(&self.partner_id, event));
        if let Some(c) = conversion.filter(|c| !c.is_empty()) {
            q.append_pair("conversionId", &c);
        }
        q.append_pair("fmt", "gif");
        q.append_pair("url", event.page_url());
        q.append_pair("time", &props::event_time_ms(event).to_string());
        let mut cookies = Vec::new();
        let click = event
            .sys(&["page", "query", "li_fat_id"])
            .and_then(Value::as_str)
            .or_else(|| event.cookie("li_fat_id"))
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= 200
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if let Some(id) = click {
            q.append_pair("li_fat_id", id);
            cookies.push(ToolCookie {
                name: "li_fat_id".into(),
                value: id.into(),
                max_age_secs: FAT_ID_SECS,
            });
        }
        Output {
            payloads: Vec::new(),
            instructions: vec![json!({"fetch": format!("{}/collect?{}", self.base, q.finish())})],
            cookies,
        }
    }
}

impl Adapter for LinkedIn {
    /// The Insight Tag has page views and conversions, no named events.
    fn supports(&self) -> Automated {
        Automated {
            pageview: true,
            track: false,
            ecommerce: false,
        }
    }

    fn automated(&self, event: &Event, cx: &BuildContext<'_>) -> Output {
        self.hit(None, event, cx)
    }

    fn action_kinds(&self) -> &'static [(&'static str, &'static [&'static str])] {
        &[("conversion", &[])]
    }

    /// `conversion`: a conversion hit for the action's `conversion_id`,
    /// else the tool's.
    fn custom(
        &self,
        _kind: &str,
        fields: Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        let conversion = fields
            .get("conversion_id")
            .and_then(props::scalar)
            .or_else(|| self.conversion_id.as_ref().map(|t| cx.render(t, event)));
        self.hit(conversion, event, cx)
    }

    fn templates(&self) -> Vec<&Template> {
        let mut t = vec![&self.partner_id];
        t.extend(&self.conversion_id);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Kind;
    use crate::rules::template::Variables;
    use crate::tools::test_support::{context, cookies_of, fetched, page_event, param};

    fn linkedin(settings: &str) -> LinkedIn {
        let text = format!("type = \"linkedin\"\n[settings]\npartner_id = \"5501\"\n{settings}\n");
        let file: ToolFile = toml::from_str(&text).unwrap();
        LinkedIn::from_config(Path::new("linkedin.toml"), &text, &file).unwrap()
    }

    fn page(url: &str, cookies: &str) -> Event {
        page_event(Kind::Pageview, "", json!({}), (url, "", ""), cookies)
    }

    /// A pageview is the Insight Tag's image hit: `pid`, `fmt=gif`, the
    /// page URL and the event time in ms, no `conversionId`.
    #[test]
    fn pageviews_are_page_hits() {
        let l = linkedin("conversion_id = \"77\"");
        let out = l.automated(
            &page("https://shop.test/a", ""),
            &context("li", &Variables::new()),
        );
        let (base, q) = fetched(&out);
        assert_eq!(base, "https://px.ads.linkedin.com/collect");
        let keys: Vec<&str> = q.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["pid", "fmt", "url", "time"]);
        assert_eq!(param(&q, "pid"), Some("5501"));
        assert_eq!(param(&q, "url"), Some("https://shop.test/a"));
        assert_eq!(param(&q, "time"), Some("1748935400000"));
        assert!(out.cookies.is_empty());
    }

    /// `li_fat_id` from the landing URL, else the cookie, when it looks
    /// like LinkedIn's click id (1 to 200 letters, digits, `-`, `_`); kept
    /// 30 days as the Insight Tag keeps it.
    #[test]
    fn click_ids_are_checked_and_kept_30_days() {
        let l = linkedin("");
        let variables = Variables::new();
        let cx = context("li", &variables);
        let longest = "b".repeat(200);
        for good in ["Ab1-_z", longest.as_str()] {
            let out = l.automated(
                &page(&format!("https://shop.test/?li_fat_id={good}"), ""),
                &cx,
            );
            assert_eq!(param(&fetched(&out).1, "li_fat_id"), Some(good));
            let kept = cookies_of(&out);
            assert_eq!(kept, [("li_fat_id", good, 2_592_000)]);
        }
        let out = l.automated(&page("https://shop.test/", "li_fat_id=stored-1"), &cx);
        assert_eq!(param(&fetched(&out).1, "li_fat_id"), Some("stored-1"));
        let too_long = "b".repeat(201);
        for bad in ["", "a.b", "a%20b", too_long.as_str()] {
            let out = l.automated(
                &page(&format!("https://shop.test/?li_fat_id={bad}"), ""),
                &cx,
            );
            assert_eq!(param(&fetched(&out).1, "li_fat_id"), None, "{bad:?}");
            assert!(out.cookies.is_empty(), "{bad:?}");
        }
    }

    /// A `conversion` action sends its own `conversion_id`, else the
    /// tool's; an empty one sends none.
    #[test]
    fn conversion_actions() {
        let variables = Variables::new();
        let cx = context("li", &variables);
        let e = page("https://shop.test/", "");
        let conversion = |l: &LinkedIn, fields: Value| {
            let out = l.custom("conversion", fields.as_object().unwrap().clone(), &e, &cx);
            param(&fetched(&out).1, "conversionId").map(String::from)
        };
        let with_default = linkedin("conversion_id = \"77\"");
        assert_eq!(
            conversion(&with_default, json!({"conversion_id": 12})).as_deref(),
            Some("12")
        );
        assert_eq!(conversion(&with_default, json!({})).as_deref(), Some("77"));
        assert_eq!(conversion(&linkedin(""), json!({})), None);
        assert_eq!(
            conversion(&linkedin(""), json!({"conversion_id": ""})),
            None
        );
        assert_eq!(with_default.action_kinds(), &[("conversion", &[][..])]);
        assert_eq!(with_default.templates().len(), 2);
        assert_eq!(linkedin("").templates().len(), 1);
    }
}
