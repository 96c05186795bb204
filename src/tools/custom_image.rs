//! `custom-image`: a pixel fired from the visitor's browser, Zaraz's
//! "Custom Image" tool. Nothing is sent server-side: the collector's answer
//! carries a `{"fetch": url}` instruction and the script requests the URL
//! with `fetch(url, {mode: "no-cors", keepalive: true, credentials:
//! "include"})`, so the destination sees the visitor's own cookies, IP and
//! User-Agent, as with an `<img>` tag.
//!
//! `url` is a template compiled for its positions
//! ([`crate::rules::url_template`]): scheme, host and port are fixed by the
//! config, and every event value is percent-encoded for where it stands.
//! A secret variable may not appear in it: the URL goes to the browser.

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{parse_settings, Adapter, Automated, BuildContext, Output, TemplateString, ToolFile};
use crate::config::Problem;
use crate::event::Event;
use crate::rules::template::{Root, Template, Variables};
use crate::rules::url_template::UrlTemplate;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CustomImageSettings")]
struct Settings {
    /// The pixel's URL, a template (`https://px.example/i.gif?e={{
    /// client.__zarazTrack }}`).
    url: Option<TemplateString>,
}

/// The JSON Schema of this adapter's `[settings]` table (`tagproxy schema`).
pub fn settings_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<Settings>()
}

pub struct CustomImage {
    template: Template,
    url: UrlTemplate,
}

impl CustomImage {
    /// # Errors
    /// `settings.url` is missing, is not an absolute http(s) URL with a
    /// fixed target, or reads a secret variable.
    pub fn from_config(
        path: &Path,
        text: &str,
        file: &ToolFile,
        variables: &Variables,
    ) -> Result<CustomImage, Problem> {
        let s: Settings = parse_settings(path, text)?;
        let Some(template) = s.url else {
            return Err(file.missing_setting(path, text, "url"));
        };
        let at = file.settings_key_at(text, "url");
        for p in template.0.paths() {
            if let Root::Variable(name) = &p.root {
                if variables.get(name).is_some_and(|v| v.secret) {
                    return Err(Problem::at(
                        path,
                        text,
                        at,
                        format!("custom-image: the url goes to the browser, so it cannot hold the secret variable `${name}`"),
                    ));
                }
            }
        }
        let url = UrlTemplate::compile(&template.0, variables)
            .map_err(|e| Problem::at(path, text, at, e.message))?;
        Ok(CustomImage {
            template: template.0,
            url,
        })
    }

    fn fire(&self, event: &Event, cx: &BuildContext<'_>) -> Output {
        let url = self.url.render(&cx.template_context(event));
        Output {
            instructions: vec![json!({ "fetch": url })],
            ..Default::default()
        }
    }
}

impl Adapter for CustomImage {
    fn supports(&self) -> Automated {
        Automated::ALL
    }

    fn automated(&self, event: &Event, cx: &BuildContext<'_>) -> Output {
        self.fire(event, cx)
    }

    fn action_kinds(&self) -> &'static [(&'static str, &'static [&'static str])] {
        &[("image", &[])]
    }

    /// `image`: the configured pixel, for the action's triggers.
    fn custom(
        &self,
        _kind: &str,
        _fields: Map<String, Value>,
        event: &Event,
        cx: &BuildContext<'_>,
    ) -> Output {
        self.fire(event, cx)
    }

    fn templates(&self) -> Vec<&Template> {
        vec![&self.template]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::template::Variable;
    use crate::tools::test_support::{context, fetched, param, Visit};

    fn image(url: &str, variables: &Variables) -> Result<CustomImage, Problem> {
        let text = format!("type = \"custom-image\"\n[settings]\nurl = \"{url}\"\n");
        let file: ToolFile = toml::from_str(&text).unwrap();
        CustomImage::from_config(Path::new("image.toml"), &text, &file, variables)
    }

    /// Automated actions and `image` actions fire the same pixel, its
    /// event values encoded for where they stand.
    #[test]
    fn automated_and_image_actions_fire_the_pixel() {
        let variables = Variables::new();
        let cx = context("img", &variables);
        let img = image(
            "https://px.test/i.gif?e={{ client.__zarazTrack }}&p={{ client.plan }}",
            &variables,
        )
        .unwrap();
        let e = Visit {
            props: json!({"plan": "a&b=c"}),
            ..Visit::default()
        }
        .event();
        for out in [
            img.automated(&e, &cx),
            img.custom("image", Map::new(), &e, &cx),
        ] {
            let (base, q) = fetched(&out);
            assert_eq!(base, "https://px.test/i.gif");
            assert_eq!(
                (param(&q, "e"), param(&q, "p")),
                (Some("signup"), Some("a&b=c"))
            );
        }
    }

    /// The URL goes to the browser: a secret variable in it is refused at
    /// load, where it stands.
    #[test]
    fn secret_variables_are_refused() {
        let mut variables = Variables::new();
        variables.insert(
            "key".into(),
            Variable {
                value: json!("s3cret"),
                secret: true,
            },
        );
        variables.insert(
            "site".into(),
            Variable {
                value: json!("shop"),
                secret: false,
            },
        );
        let err = image("https://px.test/i.gif?k={{ $key }}", &variables)
            .err()
            .expect("refused");
        assert!(
            err.to_string()
                .contains("cannot hold the secret variable `$key`"),
            "{err}"
        );
        assert!(image("https://px.test/i.gif?s={{ $site }}", &variables).is_ok());
    }
}
