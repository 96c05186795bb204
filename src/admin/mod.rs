//! The admin listener (`admin_listen`): health, readiness and Prometheus
//! metrics; the admin API under `/admin/` ([`api`]) with its token store
//! ([`tokens`]) and audit log ([`audit`]).
//!
//! On a loopback address `/healthz`, `/readyz` and `/metrics` are open, as
//! a local Prometheus and load balancer expect. On any other address
//! `/metrics` and the reason in `/readyz` need a token with `metrics:read`
//! or `events:read` (`/healthz`, and `/readyz`'s status code, stay open so
//! probes keep working).

pub mod api;
pub mod audit;
pub mod commands;
pub(crate) mod redact;
pub mod tokens;
pub mod upstream_probe;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::app::Plan;
use crate::config::Loaded;
use crate::metrics::Metrics;
use crate::proxy::body::{self, ProxyBody};
use crate::proxy::error_response;
use crate::rules::template::Variables;
use crate::server::ReloadHandle;
use crate::tools::ToolSource;
use audit::{AuditEntry, AuditLog, Outcome};
use tokens::{AuthError, Scope, TokenStore};

/// Whether the instance can take events now: `Err(reason)` while the
/// collector would refuse them with `503` (e.g. the spool is full), so a
/// load balancer stops sending visitors here until it drains.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The config in force, as the admin API shows it: replaced on every
/// successful reload.
pub struct ConfigState {
    /// The main config file.
    pub path: PathBuf,
    /// Its text as loaded.
    pub text: String,
    /// `tools_dir`, resolved.
    pub tools_dir: PathBuf,
    /// The tool files loaded with it.
    pub sources: Vec<ToolSource>,
    /// `[variables]` with secrets' values, to redact them wherever they
    /// appear.
    pub variables: Variables,
}

impl ConfigState {
    /// The state of a config and the plan loaded from it.
    pub fn new(loaded: &Loaded, plan: &Plan) -> ConfigState {
        ConfigState {
            path: loaded.path.clone(),
            text: loaded.text.clone(),
            tools_dir: loaded.tools_dir(),
            sources: plan.sources.clone(),
            variables: plan.variables.clone(),
        }
    }
}

/// Everything the admin listener serves from.
pub struct Admin {
    metrics: Arc<Metrics>,
    ready: Readiness,
    tokens: TokenStore,
    audit: AuditLog,
    config: Arc<ArcSwap<ConfigState>>,
    reload: ReloadHandle,
    /// `admin_listen` is a loopback address: health and metrics are open.
    loopback: bool,
    /// Tool file changes run one at a time (validate, write, reload).
    tools_lock: tokio::sync::Mutex<()>,
}

impl Admin {
    /// The admin state for a server whose state lives in `data_dir`.
    pub fn new(
        data_dir: &Path,
        metrics: Arc<Metrics>,
        ready: Readiness,
        config: Arc<ArcSwap<ConfigState>>,
        reload: ReloadHandle,
        loopback: bool,
    ) -> Admin {
        Admin {
            metrics,
            ready,
            tokens: TokenStore::open(data_dir),
            audit: AuditLog::open(data_dir),
            config,
            reload,
            loopback,
            tools_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Off loopback, `/metrics` and `/readyz` details need a token with
    /// `metrics:read` or `events:read`; refusals are audited.
    fn may_see_health(&self, req: &Request<Incoming>, remote: SocketAddr) -> Result<(), AuthError> {
        if self.loopback {
            return Ok(());
        }
        let path = req.uri().path();
        let action = if path == "/metrics" {
            "metrics.read"
        } else {
            "readyz.read"
        };
        let refuse = |e: AuthError| {
            let mut entry = AuditEntry::new(
                &remote.to_string(),
                req.method().as_str(),
                path,
                action,
                Outcome::Refused,
            )
            .status(e.status().as_u16())
            .detail(e.to_string());
            if let Some((id, name)) = e.token() {
                entry = entry.token(id, name);
            }
            api::blocking(|| self.audit.record(&entry));
            e
        };
        let header = req.headers().get(http::header::AUTHORIZATION);
        let token = tokens::bearer(header)
            .and_then(|secret| api::blocking(|| self.tokens.authenticate(secret)))
            .map_err(refuse)?;
        if token.scopes.contains(&Scope::MetricsRead) || token.scopes.contains(&Scope::EventsRead) {
            Ok(())
        } else {
            Err(refuse(AuthError::Forbidden {
                id: token.id,
                name: token.name,
                needs: Scope::MetricsRead,
            }))
        }
    }
}

async fn route(req: Request<Incoming>, remote: SocketAddr, admin: &Admin) -> Response<ProxyBody> {
    let path = req.uri().path();
    if path == "/admin" || path.starts_with("/admin/") {
        return api::handle(req, remote, admin).await;
    }
    match (req.method(), path) {
        (&Method::GET, "/readyz") => match (admin.ready)() {
            Ok(()) => ok_json(),
            Err(reason) => {
                // Off loopback the status code stays open for probes; the
                // reason needs a token.
                let body = match admin.may_see_health(&req, remote) {
                    Ok(()) => serde_json::json!({"ok": false, "reason": reason}),
                    Err(_) => serde_json::json!({"ok": false}),
                };
                Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .header("content-type", "application/json")
                    .header("cache-control", "no-store")
                    .body(body::full(body.to_string()))
                    .expect("static response")
            }
        },
        (&Method::GET, "/metrics") => match admin.may_see_health(&req, remote) {
            Ok(()) => Response::builder()
                .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                .header("cache-control", "no-store")
                .body(body::full(admin.metrics.render()))
                .expect("static response"),
            Err(e) => api::auth_error(&e),
        },
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
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: impl Future<Output = ()>) {
    if !admin.loopback {
        tracing::warn!(
            "admin_listen is not a loopback address: /metrics and /readyz details need a token (metrics:read or events:read)"
        );
    }
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
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
                    let admin = admin.clone();
                    move |req| {
                        let admin = admin.clone();
                        async move { Ok::<_, Infallible>(route(req, remote, &admin).await) }
                    }
                }),
            )
            .into_owned();
        tokio::spawn(conn);
    }
}
