//! Readiness of the origin: `/readyz` answers `503` with the reason while
//! the upstream does not accept connections (issue 12: "config loaded, spool
//! writable, upstream reachable").
//!
//! A background task opens a TCP connection to the current upstream every
//! [`PROBE_EVERY`] (at most [`CONNECT_TIMEOUT`] each) and keeps the latest
//! verdict, so a probe of `/readyz` never waits on the network. Only the TCP
//! connection is tried: a TLS or HTTP error from a reachable origin is the
//! origin's answer to a visitor, not a reason to take this instance out of a
//! load balancer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;

/// Time between two probes.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
/// Longest wait for one connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The latest verdict: `Err(reason)` while the origin is unreachable.
#[derive(Clone, Default)]
pub struct UpstreamHealth(Arc<Mutex<Option<String>>>);

impl UpstreamHealth {
    /// `Ok` unless the last probe failed; then the reason.
    pub fn check(&self) -> Result<(), String> {
        match &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }

    fn set(&self, verdict: Option<String>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = verdict;
    }

    /// Probes `addr()` (re-read each time, so a reload that changes the
    /// upstream is followed) until the process ends; the first probe runs
    /// before this returns, so `/readyz` is right from the start.
    pub async fn spawn(addr: impl Fn() -> String + Send + 'static) -> UpstreamHealth {
        let health = UpstreamHealth::default();
        health.set(probe(&addr()).await.err());
        let kept = health.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                let target = addr();
                let verdict = probe(&target).await.err();
                if verdict.is_some() != kept.check().is_err() {
                    match &verdict {
                        Some(why) => {
                            tracing::warn!(upstream = %target, reason = %why, "upstream unreachable: /readyz answers 503")
                        }
                        None => tracing::info!(upstream = %target, "upstream reachable again"),
                    }
                }
                kept.set(verdict);
            }
        });
        health
    }
}

/// One TCP connection to `addr` (`host:port`).
async fn probe(addr: &str) -> Result<(), String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("upstream {addr} unreachable: {e}")),
        Err(_) => Err(format!(
            "upstream {addr} unreachable: no connection within {} s",
            CONNECT_TIMEOUT.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listening_origin_is_ready_and_a_closed_port_is_not() {
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = open.local_addr().unwrap().to_string();
        assert_eq!(probe(&addr).await, Ok(()));
        drop(open);
        let err = probe(&addr).await.unwrap_err();
        assert!(
            err.starts_with(&format!("upstream {addr} unreachable")),
            "{err}"
        );
    }
}
