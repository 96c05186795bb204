//! The admin listener (`admin_listen`): health, readiness and Prometheus
//! metrics; the token store ([`tokens`]).

pub mod audit;
pub mod commands;
pub mod tokens;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::proxy::body::{self, ProxyBody};
use crate::proxy::error_response;

/// Whether the instance can take events now: `Err(reason)` while the
/// collector would refuse them with `503` (e.g. the spool is full), so a
/// load balancer stops sending visitors here until it drains.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

fn route(req: &Request<Incoming>, metrics: &Metrics, ready: &Readiness) -> Response<ProxyBody> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/readyz") => match ready() {
            Ok(()) => ok_json(),
            Err(reason) => Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .header("content-type", "application/json")
                .header("cache-control", "no-store")
                .body(body::full(
                    serde_json::json!({"ok": false, "reason": reason}).to_string(),
                ))
                .expect("static response"),
        },
        (&Method::GET, "/metrics") => Response::builder()
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .header("cache-control", "no-store")
            .body(body::full(metrics.render()))
            .expect("static response"),
        (&Method::GET, "/healthz") => ok_json(),
        _ => error_response(StatusCode::NOT_FOUND, "not found", true),
    }
}

fn ok_json() -> Response<ProxyBody> {
    Response::builder()
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(body::full(r#"{"ok":true}"#))
        .expect("static response")
}

/// Serves the admin endpoints until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: Readiness,
    shutdown: impl Future<Output = ()>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let conn = builder
            .serve_connection(
                TokioIo::new(stream),
                service_fn({
                    let metrics = metrics.clone();
                    let ready = ready.clone();
                    move |req| {
                        let metrics = metrics.clone();
                        let ready = ready.clone();
                        async move { Ok::<_, Infallible>(route(&req, &metrics, &ready)) }
                    }
                }),
            )
            .into_owned();
        tokio::spawn(conn);
    }
}
