//! `tagproxy schema` (issue 13): the JSON Schemas of tagproxy.toml and of a
//! tool file are valid draft 2020-12 schemas, the shipped example files
//! validate against them, and unknown keys fail wherever the loader denies
//! them. Editors read these through taplo / Even Better TOML
//! (<https://taplo.tamasfe.dev/configuration/directives.html#the-schema-directive>).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn tagproxy(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tagproxy"))
        .args(args)
        .output()
        .expect("run tagproxy")
}

/// The schemas the binary prints: `{"tagproxy.toml": …, "tool": …}`.
fn schemas() -> (Value, Value) {
    let out = tagproxy(&["schema"]);
    assert!(out.status.success(), "{out:?}");
    let mut all: Value = serde_json::from_slice(&out.stdout).expect("schema prints JSON");
    (all["tagproxy.toml"].take(), all["tool"].take())
}

fn toml_to_json(text: &str) -> Value {
    let v: toml::Value = toml::from_str(text).expect("example is TOML");
    serde_json::to_value(v).unwrap()
}

fn errors(schema: &Value, text: &str) -> Vec<String> {
    let validator = jsonschema::draft202012::new(schema).expect("schema compiles");
    validator
        .iter_errors(&toml_to_json(text))
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// The value of each `name: |` block of a k8s manifest (4-space indented).
fn yaml_blocks(yaml: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in yaml.lines() {
        if let Some((name, body)) = current.as_mut() {
            if line.starts_with("    ") || line.is_empty() {
                body.push_str(line.get(4..).unwrap_or(""));
                body.push('\n');
                continue;
            }
            out.push((std::mem::take(name), std::mem::take(body)));
            current = None;
        }
        let t = line.trim();
        if line.starts_with("  ") && !line.starts_with("   ") && t.ends_with(".toml: |") {
            current = Some((t.trim_end_matches(": |").to_string(), String::new()));
        }
    }
    out.extend(current);
    out
}

#[test]
fn schemas_are_valid_draft_2020_12_and_forbid_unknown_keys() {
    let (config, tool) = schemas();
    for s in [&config, &tool] {
        assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
        jsonschema::meta::validate(s).expect("a valid JSON Schema");
        assert_eq!(s["additionalProperties"], false);
    }
    // One subcommand per schema prints the same.
    for (flag, want) in [("--main", &config), ("--tool", &tool)] {
        let out = tagproxy(&["schema", flag]);
        assert!(out.status.success(), "{out:?}");
        let one: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(&one, want, "{flag}");
    }
}

#[test]
fn shipped_examples_validate() {
    let (config, tool) = schemas();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let deploy = std::fs::read_to_string(root.join("deploy/tagproxy.toml")).unwrap();
    assert_eq!(
        errors(&config, &deploy),
        Vec::<String>::new(),
        "deploy/tagproxy.toml"
    );
    let k8s = std::fs::read_to_string(root.join("deploy/k8s/tagproxy.yaml")).unwrap();
    let blocks = yaml_blocks(&k8s);
    assert!(blocks.len() >= 2, "{blocks:?}");
    let acme = std::fs::read_to_string(root.join("deploy/k8s/tagproxy-acme.yaml")).unwrap();
    let acme = yaml_blocks(&acme);
    assert_eq!(acme.len(), 1, "{acme:?}");
    for (name, text) in blocks.into_iter().chain(acme) {
        let schema = if name == "tagproxy.toml" {
            &config
        } else {
            &tool
        };
        assert_eq!(errors(schema, &text), Vec::<String>::new(), "k8s {name}");
    }
    // An https origin with every upstream key (README "https origins").
    let https = "[server]\nupstream = \"https://edge.shop-platform.example\"\n\
        upstream_host = \"shop.example.com\"\nupstream_sni = \"shop.example.com\"\n\
        upstream_ca = \"ca.pem\"\nheader_read_timeout_ms = 10000\nidle_timeout_ms = 60000\n\
        max_connections = 10000\n";
    assert_eq!(errors(&config, https), Vec::<String>::new());
    // The demo's console tool, as `tagproxy demo` writes it.
    let console =
        "type = \"console\"\n[automated]\npageview = true\ntrack = true\necommerce = true\n";
    assert_eq!(errors(&tool, console), Vec::<String>::new());
    let http = "type = \"http\"\nendpoint = \"https://collect.example\"\nblocking = [\"internal\"]\n\
        [settings]\nurl = \"https://collect.example/e\"\nmethod = \"POST\"\n\
        headers = { Authorization = \"Bearer {{ $token }}\" }\nbody = { page = \"{{ system.page.url }}\", n = 1 }\n\
        [automated]\npageview = true\n[[actions]]\nname = \"a\"\nkind = \"request\"\nfiring = [\"Pageview\"]\n\
        [actions.fields]\nbody = { x = [1, \"{{ client.x }}\"] }\n";
    assert_eq!(errors(&tool, http), Vec::<String>::new());
}

#[test]
fn unknown_keys_and_wrong_types_fail_like_the_loader() {
    let (config, tool) = schemas();
    let dir = tempfile::tempdir().unwrap();
    let bad_configs = [
        "[server]\nlisen = \"127.0.0.1:1\"\n",
        "colour = 1\n",
        "[settings]\nauto_inject = \"yes\"\n",
        "[delivery]\nbackend = \"kafka\"\n",
        "[delivery]\nmax_attempts = 0\n",
        "[triggers.t]\nrules = [ { match = \"{{ client.a }}\", op = \"is\", value = \"1\" } ]\n",
        "[triggers.t]\nrules = [ { mtch = \"{{ client.a }}\" } ]\n",
        "[[consent.purposes]]\nid = \"a\"\nname = \"A\"\ndefault = \"maybe\"\n",
        "[server]\nupstream = \"ftp://x\"\n",
    ];
    for text in bad_configs {
        assert!(!errors(&config, text).is_empty(), "schema accepts {text:?}");
        // …and the loader refuses it too, so the schema says what `check` says.
        let path = dir.path().join("tagproxy.toml");
        std::fs::write(&path, text).unwrap();
        let out = tagproxy(&["check", "-c", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "check accepts {text:?}");
    }
    let bad_tools = [
        "type = \"google-analytics-4\"\ncolour = 1\n[settings]\nmeasurement_id = \"G-1\"\n",
        "type = \"google-analytics-4\"\n[settings]\nmeasurement_idd = \"G-1\"\n",
        "type = \"google-analytics-4\"\n",
        "type = \"facebook-pixel\"\n[settings]\npixel_id = \"1\"\n",
        "type = \"matomo\"\n",
        "type = \"console\"\n[automated]\npagevew = true\n",
        "type = \"console\"\n[[actions]]\nname = \"a\"\nkind = \"log\"\nfiring = [\"Pageview\"]\nfire = 1\n",
    ];
    for text in bad_tools {
        assert!(!errors(&tool, text).is_empty(), "schema accepts {text:?}");
        let tools = dir.path().join("tools");
        std::fs::create_dir_all(&tools).unwrap();
        std::fs::write(dir.path().join("tagproxy.toml"), "").unwrap();
        std::fs::write(tools.join("t.toml"), text).unwrap();
        let out = tagproxy(&[
            "check",
            "-c",
            dir.path().join("tagproxy.toml").to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "check accepts {text:?}");
        std::fs::remove_file(tools.join("t.toml")).unwrap();
    }
}

#[test]
fn out_writes_both_files_for_editors() {
    let dir = tempfile::tempdir().unwrap();
    let out = tagproxy(&["schema", "--out", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let (config, tool) = schemas();
    let read = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(name)).unwrap()).unwrap()
    };
    assert_eq!(read("tagproxy.schema.json"), config);
    assert_eq!(read("tool.schema.json"), tool);
}
