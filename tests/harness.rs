//! The harness itself: a mock destination must not accept what the real
//! service would refuse or misread, and must never let it go unnoticed.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A Conversions API batch missing `event_time` and `user_data`: Graph API
/// answers 400 (https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/server-event),
/// so the mock does, and the test sees the violation.
#[tokio::test]
#[should_panic(expected = "would refuse or misread")]
async fn a_malformed_meta_batch_is_answered_400_and_fails_the_test() {
    let dest = Destination::start().await;
    let resp = client()
        .post(format!("{}/v21.0/123/events", dest.url()))
        .header("content-type", "application/json")
        .body(r#"{"access_token":"t","data":[{"event_name":"PageView"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    dest.requests();
}

/// Google's `/g/collect` answers 2xx to a malformed hit, so the mock does
/// too; the violation still fails the test when the mock is dropped, even
/// if the test never looks (https://developers.google.com/analytics/devguides/collection/protocol/ga4/validating-events).
#[tokio::test]
#[should_panic(expected = "would refuse or misread")]
async fn a_malformed_ga4_hit_fails_the_test_when_the_mock_is_dropped() {
    let dest = Destination::start().await;
    let resp = client()
        .get(format!("{}/g/collect?v=2&tid=bad&en=page_view", dest.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop(dest);
}

/// A body cut short (the connection closes before `Content-Length` bytes
/// arrive) is a failure, never an empty body.
#[tokio::test]
#[should_panic(expected = "the body could not be read")]
async fn a_body_read_error_is_a_violation_not_an_empty_body() {
    let dest = Destination::start().await;
    let mut s = tokio::net::TcpStream::connect(dest.addr).await.unwrap();
    s.write_all(b"POST /hook HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\":")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    dest.wait_for(1, Duration::from_secs(10)).await;
}

/// A well-formed webhook passes and is recorded.
#[tokio::test]
async fn well_formed_requests_pass() {
    let dest = Destination::start().await;
    let ok = client()
        .post(format!("{}/hook", dest.url()))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(dest.requests().len(), 1);
}
