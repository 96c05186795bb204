//! `tagproxy import-zaraz` (issue 13): a Zaraz config export, written from
//! Cloudflare's API reference
//! (<https://developers.cloudflare.com/api/resources/zaraz/subresources/config/methods/get/>:
//! `tools` with `component`, `settings`, `neoEvents` / `actions`, `triggers`
//! with `loadRules` / `excludeRules` / `system`, `variables` of type string
//! and secret, `consent.purposesWithTranslations`), becomes files that
//! `check` accepts and that route an event to the same tools Zaraz would.
//! Tool settings as the Managed Components read them: GA4 `tid`,
//! `hideOriginalIP` (github.com/managed-components/google-analytics-4),
//! Meta `property`, `accessToken`, event name `ev`
//! (github.com/managed-components/facebook-pixel).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::events::UA;
use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "EAAGexampleNotARealToken0123456789";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/zaraz-config.json")
}

fn tagproxy(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run tagproxy")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Imports the fixture into a fresh folder; the folder and stdout.
fn import() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = tagproxy(&[
        "import-zaraz",
        fixture().to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    (dir, text(&out.stdout))
}

#[test]
fn import_reports_what_it_left_out_and_check_accepts_the_result() {
    let (dir, stdout) = import();
    for line in [
        "$.tools.hTml: tool \"Chat widget\" (html): custom HTML",
        "$.tools.BwQe.settings.ga4-audiences: ",
        "$.consent.companyName: ",
        "secret: set TAGPROXY_SECRET_META_PIXEL_ACCESS_TOKEN",
        "secret: set TAGPROXY_SECRET_PARTNER_API_KEY",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    // Secrets are never written in clear.
    let config = std::fs::read_to_string(dir.path().join("tagproxy.toml")).unwrap();
    let meta = std::fs::read_to_string(dir.path().join("tools/meta-pixel.toml")).unwrap();
    let ga4 = std::fs::read_to_string(dir.path().join("tools/google-analytics-4.toml")).unwrap();
    for t in [&config, &meta, &ga4] {
        assert!(!t.contains(TOKEN), "{t}");
    }
    assert!(
        meta.contains("access_token = \"{{ $meta_pixel_access_token }}\""),
        "{meta}"
    );
    assert!(config.contains("meta_pixel_access_token = { secret = \"META_PIXEL_ACCESS_TOKEN\" }"));
    assert!(config.contains("partner_api_key = { secret = \"PARTNER_API_KEY\" }"));
    assert!(ga4.contains("measurement_id = \"G-ZRZ1234567\""), "{ga4}");
    // Zaraz's custom paths are carried over (SPEC §3), not reported.
    assert!(
        config.contains("zaraz_init_path = \"/assets/z/init.js\"\nzaraz_events_api_path = \"/api/zaraz-events\"\n"),
        "{config}"
    );
    assert!(!stdout.contains("$.settings.initPath"), "{stdout}");
    assert!(!stdout.contains("$.settings.eventsApiPath"), "{stdout}");
    assert!(ga4.contains("hide_ip = true"), "{ga4}");
    assert!(
        config.contains("name = { de = \"Statistik\", en = \"Analytics\" }"),
        "{config}"
    );

    let out = tagproxy(&[
        "check",
        "-c",
        dir.path().join("tagproxy.toml").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "ok: 2 tools, 3 triggers\n");

    // The result also passes the editor schemas (`tagproxy schema`).
    let schemas: Value = serde_json::from_slice(&tagproxy(&["schema"]).stdout).unwrap();
    let validate = |schema: &Value, toml_text: &str| {
        let v: toml::Value = toml::from_str(toml_text).unwrap();
        let v = serde_json::to_value(v).unwrap();
        let validator = jsonschema::draft202012::new(schema).unwrap();
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{toml_text}");
    };
    validate(&schemas["tagproxy.toml"], &config);
    validate(&schemas["tool"], &meta);
    validate(&schemas["tool"], &ga4);
}

/// Puts `endpoint = URL` among a tool file's top-level keys.
fn point_at(path: &Path, url: &str) {
    let t = std::fs::read_to_string(path).unwrap();
    let t = t.replacen(
        "enabled = true\n",
        &format!("enabled = true\nendpoint = \"{url}\"\n"),
        1,
    );
    std::fs::write(path, t).unwrap();
}

async fn purchase(proxy: &Proxy, page: &str, cookie: &str) {
    let body = json!([{
        "type": "track", "name": "purchase",
        "properties": {"value": 42.5, "transaction_id": "T-1"},
        "page": {"url": page, "title": "Checkout"},
    }]);
    let resp = client()
        .post(proxy.url("/_tagproxy/t"))
        .header("content-type", "application/json")
        .header("user-agent", UA)
        .header("cookie", cookie)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn imported_files_route_an_event_to_the_tools_zaraz_would() {
    let (dir, _) = import();
    let ga4 = Destination::start().await;
    let meta = Destination::start().await;
    let origin = Origin::page("text/html", "<head></head>").await;
    point_at(
        &dir.path().join("tools/google-analytics-4.toml"),
        &ga4.url(),
    );
    point_at(&dir.path().join("tools/meta-pixel.toml"), &meta.url());
    let path = dir.path().join("tagproxy.toml");
    let config = std::fs::read_to_string(&path).unwrap().replacen(
        "upstream = \"http://127.0.0.1:3000\"",
        &format!("{LISTEN_ANY}\nupstream = \"http://{}\"", origin.addr),
        1,
    );
    std::fs::write(&path, config).unwrap();
    let proxy = Proxy::spawn(
        dir,
        path,
        &[
            (
                "TAGPROXY_SECRET_META_PIXEL_ACCESS_TOKEN",
                "meta-token-from-env",
            ),
            ("TAGPROXY_SECRET_PARTNER_API_KEY", "partner"),
        ],
    )
    .await;
    // Consent for both imported purposes (Zaraz's cf_consent cookie).
    let consent = "cf_consent=%7B%22nQsy%22%3Atrue%2C%22fVkb%22%3Atrue%7D";

    // Blocked by the tools' blocking trigger (internal cookie), and excluded
    // from the purchase trigger by its exclude rule: neither tool.
    purchase(
        &proxy,
        "https://shop.example.com/checkout",
        &format!("{consent}; internal=1"),
    )
    .await;
    purchase(&proxy, "https://shop.example.com/test-checkout/1", consent).await;
    // The real one: both tools, as Zaraz routes it.
    purchase(&proxy, "https://shop.example.com/checkout", consent).await;

    ga4.wait_for(1, Duration::from_secs(10)).await;
    meta.wait_for(1, Duration::from_secs(10)).await;
    proxy.settled().await;
    let (g, m) = (ga4.requests(), meta.requests());
    assert_eq!(g.len(), 1, "{g:#?}");
    assert_eq!(m.len(), 1, "{m:#?}");
    assert_eq!(g[0].param("tid").as_deref(), Some("G-ZRZ1234567"));
    assert_eq!(g[0].param("en").as_deref(), Some("purchase"));
    // hideOriginalIP: no _uip.
    assert_eq!(g[0].param("_uip"), None);
    let body = m[0].json();
    assert_eq!(body["data"][0]["event_name"], "Purchase");
    assert_eq!(body["access_token"], "meta-token-from-env");
    assert!(
        m[0].path().contains("/918273645546372/events"),
        "{}",
        m[0].path()
    );
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let out_arg = out_dir.to_str().unwrap();
    let not_json = dir.path().join("x.json");
    std::fs::write(&not_json, "tools = 1\n").unwrap();
    let out = tagproxy(&["import-zaraz", not_json.to_str().unwrap(), "--out", out_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("x.json: not JSON"), "{out:?}");

    let other = dir.path().join("other.json");
    std::fs::write(&other, r#"{"result": {"id": "abc", "name": "zone"}}"#).unwrap();
    let out = tagproxy(&["import-zaraz", other.to_str().unwrap(), "--out", out_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("other.json: not a Zaraz config export"),
        "{out:?}"
    );
    assert!(!out_dir.exists(), "nothing is written for bad input");

    let missing = tagproxy(&["import-zaraz", "/nonexistent/zaraz.json"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("cannot read"), "{missing:?}");

    // Existing files are kept unless --force.
    let fx = fixture();
    let ok = tagproxy(&["import-zaraz", fx.to_str().unwrap(), "--out", out_arg]);
    assert!(ok.status.success(), "{ok:?}");
    std::fs::write(out_dir.join("tagproxy.toml"), "# mine\n").unwrap();
    let again = tagproxy(&["import-zaraz", fx.to_str().unwrap(), "--out", out_arg]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("refusing to overwrite"),
        "{again:?}"
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("tagproxy.toml")).unwrap(),
        "# mine\n"
    );
    let forced = tagproxy(&[
        "import-zaraz",
        fx.to_str().unwrap(),
        "--out",
        out_arg,
        "--force",
    ]);
    assert!(forced.status.success(), "{forced:?}");
    assert_ne!(
        std::fs::read_to_string(out_dir.join("tagproxy.toml")).unwrap(),
        "# mine\n"
    );
}
