//! Triggers, custom actions, blocking triggers and templated fields, through
//! the real binary to mock destinations; and `check` on bad rules.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const CONFIG: &str = r#"
[variables]
site_name = "Demo Shop"

[triggers.purchase]
description = "Order completed"
rules = [ { match = "{{ client.__zarazTrack }}", op = "equals", value = "purchase" } ]

[triggers.internal]
rules = [ { match = "{{ system.page.url }}", op = "contains", value = "/internal" } ]

[triggers.big_order]
rules = [
  { match = "{{ client.__zarazTrack }}", op = "equals", value = "purchase" },
  { match = "{{ client.total }}", op = "greater_than", value = 100 },
]
exclude = [ { match = "{{ system.cookies.staff }}", op = "equals", value = "1" } ]
"#;

fn hook_tool(dest: &Destination) -> String {
    format!(
        r#"type = "http"
blocking = ["internal"]

[[actions]]
name = "order"
kind = "request"
firing = ["purchase"]
[actions.fields]
url = "{d}/order"
body = {{ order = "{{{{ client.order_id }}}}", page = "{{{{ system.page.url.pathname }}}}", site = "{{{{ $site_name }}}}", total = "{{{{ client.total }}}}", first_sku = "{{{{ client.items.0.sku }}}}", label = "Order {{{{ client.order_id }}}} on {{{{ $site_name }}}}" }}

[[actions]]
name = "with event properties"
kind = "request"
firing = ["purchase"]
include_event_properties = true
[actions.fields]
url = "{d}/with-event"
marker = "x"

[[actions]]
name = "with system properties"
kind = "request"
firing = ["purchase"]
include_system_properties = true
[actions.fields]
url = "{d}/with-system"

[[actions]]
name = "big"
kind = "request"
firing = ["big_order"]
[actions.fields]
url = "{d}/big"
"#,
        d = dest.url()
    )
}

async fn track(proxy: &Proxy, name: &str, url: &str, props: serde_json::Value, cookie: &str) {
    let body = json!([{"type": "track", "name": name, "properties": props, "page": {"url": url, "title": "T"}}]);
    let resp = client()
        .post(proxy.url("/_tagproxy/t"))
        .header("content-type", "application/json")
        .header("cookie", cookie)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn purchase_trigger_with_blocking_and_templated_fields() {
    let dest = Destination::start().await;
    let origin = Origin::page("text/html", "<head></head>").await;
    let proxy = Proxy::start_tools(origin.addr, CONFIG, &[("hook", hook_tool(&dest))]).await;
    let props = json!({"order_id": "A-1", "total": 250.5, "items": [{"sku": "S1"}, {"sku": "S2"}]});

    track(
        &proxy,
        "purchase",
        "https://shop.test/internal/checkout",
        props.clone(),
        "",
    )
    .await;
    track(
        &proxy,
        "purchase",
        "https://shop.test/checkout?step=2",
        props.clone(),
        "",
    )
    .await;
    track(&proxy, "signup", "https://shop.test/join", json!({}), "").await;
    track(
        &proxy,
        "purchase",
        "https://shop.test/checkout",
        json!({"order_id": "A-2", "total": 20}),
        "",
    )
    .await;
    track(
        &proxy,
        "purchase",
        "https://shop.test/checkout",
        json!({"order_id": "A-3", "total": 500}),
        "staff=1",
    )
    .await;

    // A-1 on /checkout: order, with-event, with-system, big. A-2: three (not big).
    // A-3: three (staff excluded from big). The internal page: nothing.
    dest.wait_for(10, Duration::from_secs(10)).await;
    // Nothing more arrives: the blocked and excluded ones stay away.
    proxy.settled().await;
    let got = dest.requests();
    assert_eq!(
        got.len(),
        10,
        "{:#?}",
        got.iter().map(|r| r.uri.clone()).collect::<Vec<_>>()
    );
    let by_path = |p: &str| {
        got.iter()
            .filter(|r| r.path() == p)
            .map(|r| r.json())
            .collect::<Vec<_>>()
    };

    let orders = by_path("/order");
    assert_eq!(orders.len(), 3);
    let a1 = orders
        .iter()
        .find(|o| o["order"] == "A-1")
        .expect("A-1 delivered");
    assert_eq!(
        *a1,
        json!({"order": "A-1", "page": "/checkout", "site": "Demo Shop", "total": 250.5, "first_sku": "S1", "label": "Order A-1 on Demo Shop"})
    );
    assert!(
        orders.iter().all(|o| o["page"] != "/internal/checkout"),
        "blocked on /internal"
    );

    // include_event_properties adds exactly the event properties.
    let with_event = by_path("/with-event");
    let a1 = with_event.iter().find(|o| o["order_id"] == "A-1").unwrap();
    assert_eq!(
        *a1,
        json!({"marker": "x", "order_id": "A-1", "total": 250.5, "items": [{"sku": "S1"}, {"sku": "S2"}]})
    );

    // include_system_properties adds exactly the system properties.
    let with_system = by_path("/with-system");
    assert_eq!(with_system.len(), 3);
    let keys: Vec<&String> = with_system[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, vec!["system"]);
    assert_eq!(
        with_system[0]["system"]["page"]["url"]["hostname"],
        "shop.test"
    );

    let big = by_path("/big");
    assert_eq!(big.len(), 1, "only A-1 is big and not from staff: {big:?}");

    // Every request carries the event id.
    assert!(got
        .iter()
        .all(|r| r.headers.contains_key("idempotency-key")));
}

#[tokio::test]
async fn custom_and_automated_actions_do_not_double_send() {
    let dest = Destination::start().await;
    let origin = Origin::page("text/html", "<head></head>").await;
    let ga4 = format!(
        r#"type = "google-analytics-4"
endpoint = "{}"
[settings]
measurement_id = "G-TRIG1"
[automated]
pageview = true
track = true

[[actions]]
name = "purchase as conversion"
kind = "event"
firing = ["purchase"]
[actions.fields]
event_name = "conversion"
order = "{{{{ client.order_id }}}}"
"#,
        dest.url()
    );
    let proxy = Proxy::start_tools(origin.addr, CONFIG, &[("ga4", ga4)]).await;
    track(
        &proxy,
        "purchase",
        "https://shop.test/checkout",
        json!({"order_id": "A-9"}),
        "",
    )
    .await;
    track(
        &proxy,
        "signup",
        "https://shop.test/join",
        json!({"method": "email"}),
        "",
    )
    .await;
    dest.wait_for(2, Duration::from_secs(10)).await;
    proxy.settled().await;
    let got = dest.requests();
    let names: Vec<String> = got.iter().map(|r| r.param("en").unwrap()).collect();
    assert_eq!(got.len(), 2, "{names:?}");
    assert!(
        names.contains(&"conversion".to_string()) && names.contains(&"signup".to_string()),
        "{names:?}"
    );
    let conversion = got
        .iter()
        .find(|r| r.param("en").as_deref() == Some("conversion"))
        .unwrap();
    assert_eq!(conversion.param("ep.order").as_deref(), Some("A-9"));
}

#[test]
fn check_reports_bad_rules_and_references() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tools")).unwrap();
    let config = r#"[triggers.bad_regex]
rules = [ { match = "{{ client.x }}", op = "matches_regex", value = "(" } ]

[triggers.bad_number]
rules = [ { match = "{{ client.total }}", op = "greater_than", value = "lots" } ]

[triggers.bad_path]
rules = [ { match = "{{ system.page.nope }}", op = "equals", value = "x" } ]

[triggers.ok]
rules = [ { match = "{{ client.x }}", op = "equals", value = "y" } ]
"#;
    let path = dir.path().join("tagproxy.toml");
    std::fs::write(&path, config).unwrap();
    let tool = r#"type = "http"
blocking = ["nope"]

[[actions]]
name = "a"
kind = "teleport"
firing = ["ok"]

[[actions]]
name = "b"
kind = "request"
firing = ["missing"]
[actions.fields]
body = "{{ $undefined }}"
"#;
    let tool_path = dir.path().join("tools").join("hook.toml");
    std::fs::write(&tool_path, tool).unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    let c = path.display().to_string();
    let t = tool_path.display().to_string();
    for want in [
        format!("{c}:2:11: trigger `bad_regex`: invalid regex \"(\": unclosed group"),
        format!("{c}:5:11: trigger `bad_number`: `greater_than` compares numbers, but value \"lots\" is not a number"),
        format!("{c}:8:11: trigger `bad_path`: unknown system property `system.page.nope`"),
        format!("{t}:2:13: unknown trigger `nope`"),
        format!("{t}:4:1: action `a`: unknown kind `teleport` for http (known: request)"),
        format!("{t}:12:11: unknown trigger `missing`"),
        format!("{t}:9:1: action `b`: missing field `url`"),
        format!("{t}:14:8: action `b` field `body`: unknown variable `$undefined`"),
    ] {
        assert!(err.lines().any(|l| l.starts_with(&want)), "missing line {want:?} in:\n{err}");
    }
    // One line per problem, and no cascade: `ok` compiled, so it is known.
    assert_eq!(err.lines().count(), 8, "{err}");
}
