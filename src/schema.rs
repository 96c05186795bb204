//! `tagproxy schema`: JSON Schemas (draft 2020-12) of `tagproxy.toml` and of
//! a tool file, generated with `schemars` from the serde types the loader
//! itself uses, so an editor (taplo / Even Better TOML) checks what `check`
//! checks: keys, types, enums, and unknown keys wherever the loader denies
//! them (`additionalProperties: false`). Values the loader validates by
//! parsing (addresses, URLs, templates) carry a description and, where one
//! can say it, a pattern; `tagproxy check` stays the authority.

use std::path::Path;
use std::process::ExitCode;

use schemars::generate::SchemaSettings;
use schemars::Schema;
use serde_json::{json, Value};

use crate::config::Config;
use crate::tools::{
    amplitude, bing, custom_image, facebook_pixel, google_ads, google_analytics_4, http, linkedin,
    mixpanel, pinterest, reddit, segment, snapchat, tiktok, ToolFile,
};

/// The file name `schema --out DIR` writes the main file's schema to.
pub const CONFIG_FILE: &str = "tagproxy.schema.json";
/// The file name `schema --out DIR` writes the tool file schema to.
pub const TOOL_FILE: &str = "tool.schema.json";

/// The schema of `tagproxy.toml`.
pub fn config_schema() -> Schema {
    let mut schema = SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<Config>();
    schema.insert("title".into(), "tagproxy.toml".into());
    schema
}

/// The schema of a `tools/<id>.toml` file: the common keys, `type` limited
/// to the known adapters, and each adapter's own `[settings]` table (with the
/// keys it cannot run without) selected by `type`.
pub fn tool_schema() -> Schema {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    // (adapter name, its settings, settings it needs)
    let adapters: Vec<(&str, Option<Schema>, &[&str])> = vec![
        (
            "google-analytics-4",
            Some(google_analytics_4::settings_schema(&mut generator)),
            &["measurement_id"],
        ),
        (
            "facebook-pixel",
            Some(facebook_pixel::settings_schema(&mut generator)),
            &["pixel_id", "access_token"],
        ),
        ("http", Some(http::settings_schema(&mut generator)), &[]),
        (
            "amplitude",
            Some(amplitude::settings_schema(&mut generator)),
            &["api_key"],
        ),
        (
            "mixpanel",
            Some(mixpanel::settings_schema(&mut generator)),
            &["token"],
        ),
        (
            "segment",
            Some(segment::settings_schema(&mut generator)),
            &["write_key"],
        ),
        (
            "tiktok",
            Some(tiktok::settings_schema(&mut generator)),
            &["pixel_code", "access_token"],
        ),
        (
            "pinterest",
            Some(pinterest::settings_schema(&mut generator)),
            &["ad_account_id", "access_token"],
        ),
        (
            "snapchat",
            Some(snapchat::settings_schema(&mut generator)),
            &["pixel_id", "access_token"],
        ),
        (
            "reddit",
            Some(reddit::settings_schema(&mut generator)),
            &["ad_account_id", "access_token"],
        ),
        (
            "custom-image",
            Some(custom_image::settings_schema(&mut generator)),
            &["url"],
        ),
        (
            "bing",
            Some(bing::settings_schema(&mut generator)),
            &["tag_id"],
        ),
        (
            "linkedin",
            Some(linkedin::settings_schema(&mut generator)),
            &["partner_id"],
        ),
        (
            "google-ads",
            Some(google_ads::settings_schema(&mut generator)),
            &["conversion_id"],
        ),
        ("console", None, &[]),
    ];
    let mut schema = generator.into_root_schema_for::<ToolFile>();
    schema.insert("title".into(), "tagproxy tool file".into());
    let names: Vec<&str> = adapters.iter().map(|(n, _, _)| *n).collect();
    if let Some(Value::Object(ty)) = schema.get_mut("properties").and_then(|p| p.get_mut("type")) {
        ty.insert("enum".into(), json!(names));
        ty.insert(
            "description".into(),
            "The adapter that delivers this tool's events".into(),
        );
    }
    let branches: Vec<Value> = adapters
        .into_iter()
        .map(|(name, settings, required)| {
            let then = match settings {
                Some(settings) if required.is_empty() => json!({
                    "properties": { "settings": settings }
                }),
                Some(settings) => json!({
                    "required": ["settings"],
                    "properties": { "settings": {
                        "allOf": [settings, { "required": required }]
                    } }
                }),
                // The console adapter reads no settings (and the loader
                // does not look at them).
                None => json!({}),
            };
            json!({
                "if": { "properties": { "type": { "const": name } }, "required": ["type"] },
                "then": then
            })
        })
        .collect();
    schema.insert("allOf".into(), Value::Array(branches));
    schema
}

/// Both schemas in one object: `{"tagproxy.toml": …, "tool": …}`.
pub fn both() -> Value {
    json!({
        "tagproxy.toml": config_schema().to_value(),
        "tool": tool_schema().to_value(),
    })
}

/// `tagproxy schema`: both schemas as one JSON object on stdout, one of
/// them (`main` / `tool`), or both written into `out`. Exit 0, or 1 when a
/// file cannot be written.
pub fn command(main: bool, tool: bool, out: Option<&Path>) -> ExitCode {
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).expect("JSON") + "\n";
    if let Some(dir) = out {
        for (name, s) in [(CONFIG_FILE, config_schema()), (TOOL_FILE, tool_schema())] {
            let path = dir.join(name);
            if let Err(e) = std::fs::write(&path, pretty(s.as_value())) {
                eprintln!("{}: cannot write: {e}", path.display());
                return ExitCode::from(1);
            }
            println!("wrote {}", path.display());
        }
        return ExitCode::SUCCESS;
    }
    let value = if main {
        config_schema().to_value()
    } else if tool {
        tool_schema().to_value()
    } else {
        both()
    };
    print!("{}", pretty(&value));
    ExitCode::SUCCESS
}
