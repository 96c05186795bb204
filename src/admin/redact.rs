//! Secrets out of `GET /admin/config`.
//!
//! A value is replaced by [`REDACTED`] when its key names a credential
//! (`access_token`, `api_secret`, `password`, an `Authorization` header, …)
//! or when it contains the value of a secret variable (`{ secret = "…" }`,
//! read from `TAGPROXY_SECRET_*`), wherever it sits.

use serde_json::Value;

use crate::rules::template::Variables;

/// What a redacted value reads as.
pub const REDACTED: &str = "[redacted]";

/// Key fragments (lower case, `-` read as `_`) that mark a credential.
const SECRET_KEYS: [&str; 10] = [
    "token",
    "secret",
    "password",
    "passwd",
    "api_key",
    "apikey",
    "authorization",
    "credential",
    "private_key",
    "cookie",
];

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase().replace('-', "_");
    SECRET_KEYS.iter().any(|k| key.contains(k))
}

/// The values of the secret variables worth looking for (an empty or
/// one-character value would match everything).
pub fn secret_values(variables: &Variables) -> Vec<String> {
    variables
        .values()
        .filter(|v| v.secret)
        .filter_map(|v| v.value.as_str())
        .filter(|s| s.chars().count() >= 2)
        .map(str::to_string)
        .collect()
}

/// Redacts `value` in place (see the module docs).
pub fn redact(value: &mut Value, secrets: &[String]) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                // `{ secret = "NAME" }` names an environment variable: not a
                // secret itself, and useful to see.
                let names_env_var = key == "secret" && v.is_string();
                if is_secret_key(key) && !names_env_var && !v.is_object() && !v.is_array() {
                    *v = Value::String(REDACTED.into());
                } else if is_secret_key(key) && (v.is_object() || v.is_array()) {
                    redact_all(v);
                } else {
                    redact(v, secrets);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact(v, secrets)),
        Value::String(s) if secrets.iter().any(|secret| s.contains(secret.as_str())) => {
            *s = REDACTED.into();
        }
        _ => {}
    }
}

/// Every leaf of `value` redacted (a credential's whole table).
fn redact_all(value: &mut Value) {
    match value {
        Value::Object(map) => map.values_mut().for_each(redact_all),
        Value::Array(items) => items.iter_mut().for_each(redact_all),
        Value::Null => {}
        v => *v = Value::String(REDACTED.into()),
    }
}

/// A TOML text as JSON; `None` when it does not parse.
pub fn toml_to_json(text: &str) -> Option<Value> {
    let value: toml::Table = toml::from_str(text).ok()?;
    serde_json::to_value(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::template::Variable;
    use serde_json::json;

    #[test]
    fn credentials_and_secret_values_are_redacted_everywhere() {
        let mut vars = Variables::new();
        vars.insert(
            "meta".into(),
            Variable {
                value: json!("EAAB-secret-value"),
                secret: true,
            },
        );
        vars.insert(
            "site".into(),
            Variable {
                value: json!("Demo"),
                secret: false,
            },
        );
        let secrets = secret_values(&vars);
        let mut v = json!({
            "settings": {"pixel_id": "1", "access_token": "EAAB-literal", "api_secret": 5},
            "headers": {"Authorization": "Bearer x", "X-Api-Key": "k", "x-site": "Demo"},
            "body": {"nested": ["a EAAB-secret-value b"]},
            "variables": {"token": {"secret": "META"}, "site": "Demo"},
        });
        redact(&mut v, &secrets);
        let text = v.to_string();
        assert!(!text.contains("EAAB"), "{text}");
        assert!(!text.contains("Bearer x"), "{text}");
        assert_eq!(v["headers"]["X-Api-Key"], REDACTED);
        assert_eq!(v["settings"]["api_secret"], REDACTED);
        assert_eq!(v["settings"]["pixel_id"], "1");
        assert_eq!(v["headers"]["x-site"], "Demo");
        assert_eq!(v["variables"]["site"], "Demo");
        // A table under a credential's name is redacted leaf by leaf.
        assert_eq!(v["variables"]["token"]["secret"], REDACTED);
    }

    #[test]
    fn toml_becomes_json() {
        assert_eq!(
            toml_to_json("a = 1\n[b]\nc = \"d\"\n").unwrap(),
            json!({"a": 1, "b": {"c": "d"}})
        );
        assert!(toml_to_json("a = ").is_none());
    }
}
