//! The privacy settings of `[settings]`, as tools receive them.

mod common;

use std::time::Duration;

use common::*;

const UA: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.85 Safari/537.36";

async fn send(proxy: &Proxy, referrer: &str) {
    let body = format!(
        r#"{{"type":"track","name":"probe","page":{{"url":"https://shop.test/a/b?utm_source=news#top","title":"T","referrer":"{referrer}"}}}}"#
    );
    let resp = client()
        .post(proxy.url("/_tagproxy/t"))
        .header("content-type", "application/json")
        .header("user-agent", UA)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

fn tools(dest: &Destination) -> Vec<(&'static str, String)> {
    vec![
        ("hook", format!("type = \"http\"\n[settings]\nurl = \"{}/hook\"\n[automated]\ntrack = true\n", dest.url())),
        ("ga4", format!("type = \"google-analytics-4\"\nendpoint = \"{}\"\n[settings]\nmeasurement_id = \"G-PRIV1\"\n[automated]\ntrack = true\n", dest.url())),
    ]
}

#[tokio::test]
async fn privacy_settings_clean_what_every_tool_sees() {
    let dest = Destination::start().await;
    let origin = Origin::page("text/html", "<head></head>").await;
    let settings = "[settings]\ntrim_ip = true\ntrim_url_query = true\nremove_url_hash = true\nclean_user_agent = true\nhide_external_referrer = true\n";
    let proxy = Proxy::start_tools(origin.addr, settings, &tools(&dest)).await;
    send(&proxy, "https://www.google.com/search?q=secret").await;
    send(&proxy, "https://shop.test/previous").await;
    let got = dest.wait_for(4, Duration::from_secs(10)).await;

    let hooks: Vec<_> = got
        .iter()
        .filter(|r| r.path() == "/hook")
        .map(|r| r.json())
        .collect();
    assert_eq!(hooks.len(), 2);
    for h in &hooks {
        let sys = &h["system"];
        assert_eq!(sys["device"]["ip"], "127.0.0.0");
        assert_eq!(sys["page"]["url"]["href"], "https://shop.test/a/b");
        assert_eq!(sys["page"]["query"], serde_json::json!({}));
        assert_eq!(
            sys["device"]["user-agent"]["ua"],
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_0_0) AppleWebKit/537.0 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.0"
        );
        assert_eq!(sys["device"]["user-agent"]["browser"]["name"], "Chrome");
    }
    let referrers: Vec<&str> = hooks
        .iter()
        .map(|h| h["system"]["page"]["referrer"].as_str().unwrap())
        .collect();
    assert!(
        referrers.contains(&"") && referrers.contains(&"https://shop.test/previous"),
        "{referrers:?}"
    );

    let hits: Vec<_> = got.iter().filter(|r| r.path() == "/g/collect").collect();
    for hit in hits {
        assert_eq!(hit.param("_uip").as_deref(), Some("127.0.0.0"));
        assert_eq!(hit.param("dl").as_deref(), Some("https://shop.test/a/b"));
        assert!(hit.headers["user-agent"]
            .to_str()
            .unwrap()
            .contains("Chrome/131.0.0.0"));
        assert!(
            !hit.uri.contains("secret"),
            "the external referrer must not leak: {}",
            hit.uri
        );
    }
}

#[tokio::test]
async fn hide_ip_sends_no_ip_and_defaults_send_everything() {
    let dest = Destination::start().await;
    let origin = Origin::page("text/html", "<head></head>").await;
    let proxy =
        Proxy::start_tools(origin.addr, "[settings]\nhide_ip = true\n", &tools(&dest)).await;
    send(&proxy, "").await;
    let got = dest.wait_for(2, Duration::from_secs(10)).await;
    let hit = got.iter().find(|r| r.path() == "/g/collect").unwrap();
    assert_eq!(hit.param("_uip"), None);
    let hook = got.iter().find(|r| r.path() == "/hook").unwrap().json();
    assert_eq!(hook["system"]["device"]["ip"], "");

    // Without the settings, everything passes as sent.
    let dest = Destination::start().await;
    let proxy = Proxy::start_tools(origin.addr, "", &tools(&dest)).await;
    send(&proxy, "https://www.google.com/").await;
    let got = dest.wait_for(2, Duration::from_secs(10)).await;
    let hook = got.iter().find(|r| r.path() == "/hook").unwrap().json();
    let sys = &hook["system"];
    assert_eq!(sys["device"]["ip"], "127.0.0.1");
    assert_eq!(
        sys["page"]["url"]["href"],
        "https://shop.test/a/b?utm_source=news#top"
    );
    assert_eq!(sys["page"]["query"]["utm_source"], "news");
    assert_eq!(sys["page"]["referrer"], "https://www.google.com/");
    assert_eq!(sys["device"]["user-agent"]["ua"], UA);
}
