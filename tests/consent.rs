//! Consent on the server: purposes gate tools, replays reach only the tools
//! that needed consent, GA4 gets Consent Mode v2 as gcs/gcd.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const CONFIG: &str = r#"
[consent]
enabled = true
[[consent.purposes]]
id = "analytics"
name = "Analytics"
default = "denied"
consent_mode = ["analytics_storage"]
[[consent.purposes]]
id = "ads"
name = { en = "Advertising", de = "Werbung" }
default = "denied"
consent_mode = ["ad_storage", "ad_user_data", "ad_personalization"]
"#;

fn tools(dest: &Destination) -> Vec<(&'static str, String)> {
    let hook = |purposes: &str, path: &str| {
        format!(
            "type = \"http\"\npurposes = [{purposes}]\n[settings]\nurl = \"{}{path}\"\n[automated]\npageview = true\ntrack = true\n",
            dest.url()
        )
    };
    vec![
        ("stats", hook("\"analytics\"", "/stats")),
        ("ads", hook("\"ads\"", "/ads")),
        ("always", hook("", "/always")),
        (
            "ga4",
            format!(
                "type = \"google-analytics-4\"\nendpoint = \"{}\"\npurposes = [\"analytics\"]\n[settings]\nmeasurement_id = \"G-CONSENT\"\n[automated]\ntrack = true\n",
                dest.url()
            ),
        ),
    ]
}

async fn send(proxy: &Proxy, cookie: &str, events: serde_json::Value) {
    let resp = client()
        .post(proxy.url("/_tagproxy/t"))
        .header("content-type", "application/json")
        .header("cookie", cookie)
        .body(events.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

fn track(name: &str, id: &str, replay: bool) -> serde_json::Value {
    json!({"type": "track", "name": name, "id": id, "consent_replay": replay, "page": {"url": "https://shop.test/"}})
}

#[tokio::test]
async fn purposes_gate_tools_and_replays_reach_only_newly_granted_tools() {
    let dest = Destination::start().await;
    let origin = Origin::page("text/html", "<head></head>").await;
    let proxy = Proxy::start_tools(origin.addr, CONFIG, &tools(&dest)).await;

    // Undecided (defaults denied): only the tool without purposes gets it.
    send(&proxy, "", json!([track("before", "evt-before-1", false)])).await;
    dest.wait_for(1, Duration::from_secs(10)).await;
    // The visitor grants analytics; the browser replays the queued event.
    let granted = "cf_consent=%7B%22analytics%22%3Atrue%2C%22ads%22%3Afalse%7D";
    send(
        &proxy,
        granted,
        json!([track("before", "evt-before-1", true)]),
    )
    .await;
    send(
        &proxy,
        granted,
        json!([track("after", "evt-after-01", false)]),
    )
    .await;
    dest.wait_for(5, Duration::from_secs(10)).await;
    proxy.settled().await;

    let got = dest.requests();
    let seen = |path: &str| -> Vec<String> {
        got.iter()
            .filter(|r| r.path() == path)
            .map(|r| r.json()["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        seen("/always"),
        ["before", "after"],
        "no replay for tools that needed no consent"
    );
    assert_eq!(
        seen("/stats"),
        ["before", "after"],
        "the replay reached the analytics tool"
    );
    assert!(seen("/ads").is_empty(), "ads was refused");
    let hook = got.iter().find(|r| r.path() == "/stats").unwrap().json();
    assert_eq!(
        hook["system"]["consent"],
        json!({"analytics": true, "ads": false})
    );

    // Withheld deliveries are counted: the first send (stats, ads, ga4), the
    // replay (always: it had the original; ads), the later event (ads).
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("tagproxy_consent_blocked_total 6\n"),
        "{metrics}"
    );

    // GA4 (analytics): Consent Mode v2 from the defaults and the choice.
    let hits: Vec<_> = got.iter().filter(|r| r.path() == "/g/collect").collect();
    assert_eq!(hits.len(), 2);
    for hit in hits {
        assert_eq!(hit.param("gcs").as_deref(), Some("G101"));
        assert_eq!(hit.param("gcd").as_deref(), Some("11q1r1q1q5"));
    }
}

#[tokio::test]
async fn malformed_consent_cookie_grants_nothing_and_set_values_drive_consent_mode() {
    let dest = Destination::start().await;
    let origin = Origin::page("text/html", "<head></head>").await;
    let proxy = Proxy::start_tools(origin.addr, CONFIG, &tools(&dest)).await;
    send(
        &proxy,
        "cf_consent=%7Bbroken",
        json!([track("x", "evt-broken-1", false)]),
    )
    .await;
    // zaraz.set("google_consent_update", …) travels in vars.
    let granted = "cf_consent=%7B%22analytics%22%3Atrue%7D";
    let mut ev = track("y", "evt-vars-001", false);
    ev["vars"] =
        json!({"google_consent_update": {"ad_storage": "granted", "ad_user_data": "granted"}});
    send(&proxy, granted, json!([ev])).await;
    dest.wait_for(4, Duration::from_secs(10)).await;
    proxy.settled().await;
    let got = dest.requests();
    let paths: Vec<&str> = got.iter().map(|r| r.path()).collect();
    assert_eq!(paths.iter().filter(|p| **p == "/always").count(), 2);
    assert_eq!(
        paths.iter().filter(|p| **p == "/stats").count(),
        1,
        "{paths:?}"
    );
    let hit = got.iter().find(|r| r.path() == "/g/collect").unwrap();
    assert_eq!(hit.param("gcs").as_deref(), Some("G111"));
    assert_eq!(hit.param("gcd").as_deref(), Some("11r1r1r1p5"));
}

#[test]
fn check_rejects_unknown_purposes_and_warns_about_tools_without_any() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    let path = dir.path().join("tagproxy.toml");
    std::fs::write(&path, CONFIG).unwrap();
    std::fs::write(
        dir.path().join("tools/a.toml"),
        "type = \"console\"\npurposes = [\"marketing\"]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("tools/b.toml"), "type = \"console\"\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("tools/a.toml:2:1: unknown consent purpose `marketing`"),
        "{err}"
    );
    std::fs::remove_file(dir.path().join("tools/a.toml")).unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("tool `b` lists no consent purposes, so it runs without consent"),
        "{err}"
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "ok: 1 tools, 0 triggers\n"
    );
}

#[tokio::test]
async fn meta_gets_data_processing_options_when_configured() {
    let dest = Destination::start().await;
    let origin = Origin::page("text/html", "<head></head>").await;
    let meta = format!(
        "type = \"facebook-pixel\"\nendpoint = \"{}\"\n[settings]\npixel_id = \"42\"\naccess_token = \"t\"\ndata_processing_options = [\"LDU\"]\ndata_processing_options_country = 1\ndata_processing_options_state = 1000\n[automated]\ntrack = true\n",
        dest.url()
    );
    let plain = format!(
        "type = \"facebook-pixel\"\nendpoint = \"{}/plain\"\n[settings]\npixel_id = \"43\"\naccess_token = \"t\"\n[automated]\ntrack = true\n",
        dest.url()
    );
    let proxy = Proxy::start_tools(origin.addr, "", &[("meta", meta), ("plain", plain)]).await;
    send(&proxy, "", json!([track("t", "evt-ldu-0001", false)])).await;
    let got = dest.wait_for(2, Duration::from_secs(10)).await;
    let ldu = got
        .iter()
        .find(|r| r.path() == "/v21.0/42/events")
        .unwrap()
        .json();
    let event = &ldu["data"][0];
    assert_eq!(event["data_processing_options"], json!(["LDU"]));
    assert_eq!(event["data_processing_options_country"], 1);
    assert_eq!(event["data_processing_options_state"], 1000);
    let plain = got
        .iter()
        .find(|r| r.path() == "/plain/v21.0/43/events")
        .unwrap()
        .json();
    assert!(plain["data"][0].get("data_processing_options").is_none());
}

/// The TC strings of tests/tcf/fixtures.json, written by the IAB's own
/// encoder (`@iabtechlabtcf/core`, tests/tcf/encode.mjs), plus the issue-10
/// example string.
fn tc_fixture(name: &str) -> String {
    let all: serde_json::Value = serde_json::from_str(include_str!("tcf/fixtures.json")).unwrap();
    all[name]["tc_string"].as_str().unwrap().to_string()
}

const TCF_CONFIG: &str = r#"
[consent]
enabled = true
tcf = true
[[consent.purposes]]
id = "storage"
name = "Store and/or access information on a device"
tcf_purposes = [1]
[[consent.purposes]]
id = "measurement"
name = "Measure advertising performance"
tcf_purposes = [7]
[[consent.purposes]]
id = "measurement_li"
name = "Measure advertising performance (legitimate interest)"
tcf_purposes = [7]
tcf_legitimate_interest = [7]
"#;

/// An http tool needing `purpose` and GVL vendor `vendor`, posting to `path`.
fn vendor_hook(dest: &Destination, purpose: &str, vendor: u32, path: &str) -> String {
    format!(
        "type = \"http\"\npurposes = [\"{purpose}\"]\ntcf_vendor_id = {vendor}\n[settings]\nurl = \"{}{path}\"\n[automated]\ntrack = true\n",
        dest.url()
    )
}

/// Issue 10, item 6: the TC string carries a type-0 publisher restriction
/// ("purpose flatly not allowed") on purpose 1 for vendors 8-9, both of
/// which have consent. The vendor-8 tool is withheld (and counted); the
/// vendor-2 tool, consented and unrestricted, gets the event.
/// Source: IAB Tech Lab, "Consent string and vendor list formats v2",
/// PubRestrictionEntry / RestrictionType:
/// https://github.com/InteractiveAdvertisingBureau/GDPR-Transparency-and-Consent-Framework/blob/master/TCFv2/IAB%20Tech%20Lab%20-%20Consent%20string%20and%20vendor%20list%20formats%20v2.md
#[tokio::test]
async fn tcf_publisher_restriction_withholds_the_restricted_vendor() {
    let dest = Destination::start().await;
    let origin = Origin::page("text/html", "<head></head>").await;
    let tools = [
        ("vendor8", vendor_hook(&dest, "storage", 8, "/vendor8")),
        ("vendor2", vendor_hook(&dest, "storage", 2, "/vendor2")),
    ];
    let proxy = Proxy::start_tools(origin.addr, TCF_CONFIG, &tools).await;
    let cookie = format!("euconsent-v2={}", tc_fixture("issue_example"));
    send(
        &proxy,
        &cookie,
        json!([track("buy", "evt-tcf-r0-01", false)]),
    )
    .await;
    dest.wait_for(1, Duration::from_secs(10)).await;
    proxy.settled().await;
    let got = dest.requests();
    let paths: Vec<&str> = got.iter().map(|r| r.path()).collect();
    assert_eq!(paths, ["/vendor2"]);
    assert_eq!(got[0].json()["name"], "buy");
    assert_eq!(got[0].json()["system"]["consent"]["storage"], true);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("tagproxy_consent_blocked_total 1\n"),
        "{metrics}"
    );
}

/// Legitimate interest: vendor 1005 has LI (not consent) and purpose 7 has
/// LI transparency (not consent). A purpose that accepts LI for IAB purpose
/// 7 lets the vendor-1005 tool have the event; the same IAB purpose without
/// `tcf_legitimate_interest` does not.
/// Source: IAB Tech Lab, "Consent string and vendor list formats v2"
/// (PurposesLITransparency, Vendor Legitimate Interest Section):
/// https://github.com/InteractiveAdvertisingBureau/GDPR-Transparency-and-Consent-Framework/blob/master/TCFv2/IAB%20Tech%20Lab%20-%20Consent%20string%20and%20vendor%20list%20formats%20v2.md
#[tokio::test]
async fn tcf_legitimate_interest_delivers_only_where_configured() {
    let dest = Destination::start().await;
    let origin = Origin::page("text/html", "<head></head>").await;
    let tools = [
        ("li", vendor_hook(&dest, "measurement_li", 1005, "/li")),
        (
            "consent",
            vendor_hook(&dest, "measurement", 1005, "/consent"),
        ),
        (
            "nobasis",
            vendor_hook(&dest, "measurement_li", 1009, "/nobasis"),
        ),
    ];
    let proxy = Proxy::start_tools(origin.addr, TCF_CONFIG, &tools).await;
    let cookie = format!("euconsent-v2={}", tc_fixture("li_ranges"));
    send(
        &proxy,
        &cookie,
        json!([track("view", "evt-tcf-li-01", false)]),
    )
    .await;
    dest.wait_for(1, Duration::from_secs(10)).await;
    proxy.settled().await;
    let got = dest.requests();
    let paths: Vec<&str> = got.iter().map(|r| r.path()).collect();
    assert_eq!(paths, ["/li"]);
    assert_eq!(
        got[0].json()["system"]["consent"],
        json!({"storage": true, "measurement": false, "measurement_li": true})
    );
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("tagproxy_consent_blocked_total 2\n"),
        "{metrics}"
    );
}

/// `check` rejects IAB purposes TCF v2.2 does not define, legitimate
/// interest for purposes 1 and 3-6 (TCF Policies v2.2, Appendix A:
/// https://iabeurope.eu/iab-europe-transparency-consent-framework-policies/),
/// and LI ids missing from the purpose's `tcf_purposes`, each at its value.
#[test]
fn check_rejects_bad_tcf_purposes_and_legitimate_interest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    let path = dir.path().join("tagproxy.toml");
    let config = "[consent]\nenabled = true\ntcf = true\n[[consent.purposes]]\nid = \"ads\"\nname = \"Ads\"\ntcf_purposes = [1, 3, 12]\ntcf_legitimate_interest = [3, 7, 0]\n";
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    let file = path.display();
    for line in [
        format!("{file}:7:23: IAB purpose 12 does not exist: TCF v2.2 defines purposes 1 to 11"),
        format!("{file}:8:28: legitimate interest is not allowed for IAB purpose 3: TCF v2.2 allows only consent for purposes 1, 3, 4, 5 and 6"),
        format!("{file}:8:31: IAB purpose 7 is in tcf_legitimate_interest but not in tcf_purposes of purpose `ads`"),
        format!("{file}:8:34: IAB purpose 0 does not exist: TCF v2.2 defines purposes 1 to 11"),
    ] {
        assert!(err.contains(&line), "missing {line:?} in:\n{err}");
    }
    // A valid LI purpose passes.
    std::fs::write(
        &path,
        "[consent]\nenabled = true\ntcf = true\n[[consent.purposes]]\nid = \"m\"\nname = \"M\"\ntcf_purposes = [1, 7]\ntcf_legitimate_interest = [7]\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
