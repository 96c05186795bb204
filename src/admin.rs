//! The admin listener (`admin_listen`): health, readiness and Prometheus
//! metrics; tokens and the config API come with the admin issue.

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

fn route(req: &Request<Incoming>, metrics: &Metrics) -> Response<ProxyBody> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => Response::builder()
            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
            .header("cache-control", "no-store")
            .body(body::full(metrics.render()))
            .expect("static response"),
        (&Method::GET, "/healthz") | (&Method::GET, "/readyz") => Response::builder()
            .header("content-type", "application/json")
            .header("cache-control", "no-store")
            .body(body::full(r#"{"ok":true}"#))
            .expect("static response"),
        _ => error_response(StatusCode::NOT_FOUND, "not found", true),
    }
}

/// Serves the admin endpoints until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
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
                    move |req| {
                        let metrics = metrics.clone();
                        async move { Ok::<_, Infallible>(route(&req, &metrics)) }
                    }
                }),
            )
            .into_owned();
        tokio::spawn(conn);
    }
}
