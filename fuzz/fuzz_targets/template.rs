//! Templates with hostile input (issue 17). Two halves, chosen by the first
//! byte:
//! - arbitrary template text: parsing never panics, and a parsed template
//!   renders (as text, and as a URL when it compiles as one) without
//!   panicking;
//! - an arbitrary event value rendered into every position of a fixed URL
//!   (`http://dest.test:8080/p/{{ client.v }}?q={{ client.v }}&k=1#{{ client.v }}`):
//!   the URL parses, its origin stays the configured one, its path keeps
//!   two segments, the query keeps exactly `q` and `k`, and `q` and the path
//!   segment decode back to the value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use tagproxy::rules::template::{Context, Template, Variables};
use tagproxy::rules::url_template::UrlTemplate;

const URL: &str = "http://dest.test:8080/p/{{ client.v }}?q={{ client.v }}&k=1#{{ client.v }}";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let variables = Variables::new();
    let system = json!({"page": {"url": {"href": "https://shop.test/"}}});
    if mode % 2 == 0 {
        let Ok(t) = Template::parse(text) else { return };
        let client = json!({"v": text, "n": 1.5, "o": {"a": [text]}});
        let cx = Context { client: &client, system: &system, variables: &variables };
        let _ = t.render(&cx);
        let _ = t.render_value(&cx);
        if let Ok(u) = UrlTemplate::compile(&t, &variables) {
            let _ = u.render(&cx);
        }
        return;
    }
    // `.` and `..` are unreserved, so they stay as they are and a URL parser
    // folds them away; the request guard refuses such URLs (tested in
    // src/tools/guard.rs), so they never leave.
    if text == "." || text == ".." {
        return;
    }
    let template = Template::parse(URL).expect("the fixed URL parses");
    let url_t = UrlTemplate::compile(&template, &variables).expect("the fixed URL compiles");
    let client = json!({"v": Value::String(text.to_string())});
    let cx = Context { client: &client, system: &system, variables: &variables };
    let rendered = url_t.render(&cx);
    let url = url::Url::parse(&rendered).expect("a rendered URL parses");
    assert_eq!(url.host_str(), Some("dest.test"), "{rendered}");
    assert_eq!(url.port(), Some(8080), "{rendered}");
    assert_eq!(url.scheme(), "http");
    let segments: Vec<&str> = url.path_segments().expect("a path").collect();
    assert_eq!(segments.len(), 2, "{rendered}");
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(segments[1]).collect();
    assert_eq!(decoded, text.as_bytes(), "{rendered}");
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert_eq!(pairs.len(), 2, "{rendered}");
    assert_eq!(pairs[0].0, "q");
    assert_eq!(pairs[0].1, text, "{rendered}");
    assert_eq!(pairs[1], ("k".to_string(), "1".to_string()));
});
