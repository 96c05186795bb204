//! Running tagproxy: bind the listeners from a config, serve until a signal,
//! and reload the config on SIGHUP or when its files change.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::app::{App, Plan, Shared};
use crate::config::{self, Loaded};
use crate::proxy::{self, CurrentProxy, PrefixHandler, Proxy};

/// How long open requests may finish after SIGTERM / Ctrl-C.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// File events closer together than this are one reload (editors write in
/// several steps).
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(250);

/// What a reload ended with: the number of enabled tools now running, or
/// the problems (one `FILE:LINE:COL: message` per line) that kept the new
/// config out (the previous one stays in force).
pub type ReloadResult = Result<usize, String>;

/// A request to reload the config: from SIGHUP, the file watcher, or the
/// admin API (which waits for the result on `reply`).
pub struct ReloadRequest {
    pub reason: &'static str,
    pub reply: Option<oneshot::Sender<ReloadResult>>,
}

/// A handle to the one task that reloads the config, so reloads from every
/// source run one at a time and never race.
#[derive(Clone)]
pub struct ReloadHandle(mpsc::Sender<ReloadRequest>);

impl ReloadHandle {
    /// Reloads now (after any reload already running) and waits for the
    /// outcome.
    pub async fn reload(&self, reason: &'static str) -> ReloadResult {
        let (tx, rx) = oneshot::channel();
        self.0
            .send(ReloadRequest {
                reason,
                reply: Some(tx),
            })
            .await
            .map_err(|_| "the server is shutting down".to_string())?;
        rx.await
            .map_err(|_| "the server is shutting down".to_string())?
    }
}

/// Bound listeners, ready to serve.
pub struct Bound {
    pub public: TcpListener,
    pub admin: TcpListener,
    /// `[server.tls] listen`, when configured.
    pub tls: Option<TcpListener>,
}

impl Bound {
    pub async fn bind(public: SocketAddr, admin: SocketAddr) -> anyhow::Result<Bound> {
        let public = TcpListener::bind(public)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {public}: {e}"))?;
        let admin = TcpListener::bind(admin)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {admin} (admin_listen): {e}"))?;
        Ok(Bound {
            public,
            admin,
            tls: None,
        })
    }

    /// Also binds the HTTPS listener at `addr`.
    pub async fn with_tls(mut self, addr: SocketAddr) -> anyhow::Result<Bound> {
        self.tls =
            Some(TcpListener::bind(addr).await.map_err(|e| {
                anyhow::anyhow!("cannot listen on {addr} ([server.tls] listen): {e}")
            })?);
        Ok(self)
    }
}

/// Builds the proxy (and the app behind it) for one config.
fn build(loaded: &Loaded, plan: Plan, shared: &Shared) -> Proxy {
    let app = Arc::new(App::start(loaded, plan, shared));
    let script = App::client_script(loaded, &app.triggers);
    let bots = app.bots.clone();
    Proxy::new(
        &loaded.config,
        script,
        Some(app as Arc<dyn PrefixHandler>),
        bots,
    )
}

/// Serves until SIGINT or SIGTERM. With `watch`, the config file is reloaded
/// on SIGHUP and when it or a tool file changes.
pub async fn run(loaded: &Loaded, plan: Plan, bound: Bound, watch: bool) -> anyhow::Result<()> {
    let shared = Arc::new(Shared::start(loaded)?);
    // The bot lists stored by `tagproxy bots update`, followed from now on.
    crate::bots::lists::start(&loaded.data_dir());
    let metrics = shared.metrics.clone();
    let config_state = crate::admin::ConfigState::new(loaded, &plan);
    let current: CurrentProxy = Arc::new(ArcSwap::from_pointee(build(loaded, plan, &shared)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // The HTTPS listener and its certificate, before the public one
    // serves (a redirect must find it).
    let https = match (&bound.tls, &loaded.config.server.tls) {
        (Some(listener), Some(tls)) => {
            let store = crate::tls::CertStore::new(tls.loaded.clone(), Some(metrics.clone()));
            if tls.acme() {
                crate::tls::acme::spawn(loaded, tls, store.clone())?;
            } else {
                let (cert, key) = tls.files(&loaded.path);
                crate::tls::watch_files(store.clone(), cert, key);
            }
            let addr = listener.local_addr()?;
            tracing::info!(tls_listen = %addr, "serving https");
            Some((addr.port(), crate::tls::server_config(store, tls.acme())))
        }
        _ => None,
    };
    tracing::info!(
        listen = %bound.public.local_addr()?,
        admin = %bound.admin.local_addr()?,
        upstream = loaded.config.server.upstream.authority(),
        "tagproxy serving"
    );
    let config_state = Arc::new(ArcSwap::from_pointee(config_state));
    // Reloads (SIGHUP, file changes, POST /admin/reload, tool PUT/DELETE)
    // all go through one task.
    let (reload_tx, reload_rx) = mpsc::channel(16);
    // Watch before serving: a change made as soon as the server answers
    // must not be missed.
    let _watcher = if watch {
        let watcher = watch_files(loaded, reload_tx.clone());
        spawn_sighup(reload_tx.clone());
        watcher
    } else {
        None
    };
    tokio::spawn(reloader(
        loaded.clone(),
        reload_rx,
        current.clone(),
        shared.clone(),
        config_state.clone(),
    ));
    let engine = shared.engine.clone();
    let upstream = crate::admin::upstream_probe::UpstreamHealth::spawn({
        let current = current.clone();
        move || current.load().upstream_addr()
    })
    .await;
    let admin_addr = bound.admin.local_addr()?;
    let admin = tokio::spawn(crate::admin::serve(
        bound.admin,
        Arc::new(crate::admin::Admin::new(
            &loaded.data_dir(),
            metrics.clone(),
            Arc::new(move || {
                engine.refusing().map_or(Ok(()), Err)?;
                upstream.check()
            }),
            config_state,
            ReloadHandle(reload_tx),
            admin_addr.ip().is_loopback(),
        )),
        stopped(stop_rx.clone()),
    ));
    let tls_server = match (bound.tls, &https) {
        (Some(listener), Some((_, config))) => Some(tokio::spawn(proxy::serve(
            listener,
            current.clone(),
            stopped(stop_rx.clone()),
            SHUTDOWN_GRACE,
            proxy::Mode::Tls(tokio_rustls::TlsAcceptor::from(config.clone())),
        ))),
        _ => None,
    };
    let public = tokio::spawn(proxy::serve(
        bound.public,
        current.clone(),
        stopped(stop_rx),
        SHUTDOWN_GRACE,
        proxy::Mode::Plain {
            https_port: https.as_ref().map(|(port, _)| *port),
        },
    ));
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    // Live trail streams would hold the graceful shutdown open.
    metrics.trail.close();
    let _ = public.await;
    if let Some(tls_server) = tls_server {
        let _ = tls_server.await;
    }
    let _ = admin.await;
    // Settled deliveries' acks on disk, so a restart does not resend them.
    shared.engine.flush().await;
    Ok(())
}

/// Reloads on every request in `rx`; a bad config keeps the old one.
async fn reloader(
    first: Loaded,
    mut rx: mpsc::Receiver<ReloadRequest>,
    current: CurrentProxy,
    shared: Arc<Shared>,
    state: Arc<ArcSwap<crate::admin::ConfigState>>,
) {
    let mut previous = first;
    while let Some(first) = rx.recv().await {
        let why = first.reason;
        let mut replies: Vec<_> = first.reply.into_iter().collect();
        // Let a burst of file events settle into one reload; a caller
        // waiting for the result (the admin API) has written its file
        // already, so it goes at once.
        if replies.is_empty() {
            tokio::time::sleep(RELOAD_DEBOUNCE).await;
        }
        while let Ok(more) = rx.try_recv() {
            replies.extend(more.reply);
        }
        let result = match reload(&previous.path) {
            Ok((loaded, plan)) => {
                let server = &loaded.config.server;
                let old = &previous.config.server;
                if server.listen != old.listen || server.admin_listen != old.admin_listen {
                    tracing::warn!("listen addresses changed; they apply after a restart");
                }
                if tls_source(server) != tls_source(old) {
                    tracing::warn!("[server.tls] listen, certificate files and ACME settings apply after a restart (the certificate files themselves are reloaded when they change)");
                }
                if loaded.config.delivery != previous.config.delivery
                    || loaded.spool_dir() != previous.spool_dir()
                    || loaded.data_dir() != previous.data_dir()
                {
                    tracing::warn!("[delivery] and data_dir changes apply after a restart");
                }
                let tools = plan.tools.len();
                state.store(Arc::new(crate::admin::ConfigState::new(&loaded, &plan)));
                current.store(Arc::new(build(&loaded, plan, &shared)));
                tracing::info!(reason = why, tools, "config reloaded");
                previous = loaded;
                Ok(tools)
            }
            Err(e) => {
                for line in e.lines() {
                    tracing::error!(
                        reason = why,
                        problem = line,
                        "config reload failed; the previous config stays in force"
                    );
                }
                Err(e)
            }
        };
        for reply in replies {
            let _ = reply.send(result.clone());
        }
    }
}

/// The `[server.tls]` settings that only a restart applies (`redirect_http`
/// applies at once).
fn tls_source(
    server: &config::ServerConfig,
) -> Option<(SocketAddr, String, String, Vec<String>, String, String)> {
    server.tls.as_ref().map(|t| {
        (
            t.listen.0,
            t.cert.get_ref().clone(),
            t.key.get_ref().clone(),
            t.acme_domains.get_ref().clone(),
            t.acme_directory.clone(),
            t.acme_email.clone(),
        )
    })
}

fn reload(path: &Path) -> Result<(Loaded, Plan), String> {
    let loaded = config::load(path).map_err(|e| e.to_string())?;
    let plan = Plan::load(&loaded, crate::rules::Secrets::Required).map_err(|e| e.to_string())?;
    Ok((loaded, plan))
}

/// Watches the config file's folder and the tools folder.
fn watch_files(
    loaded: &Loaded,
    tx: mpsc::Sender<ReloadRequest>,
) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let config_path = loaded
        .path
        .canonicalize()
        .unwrap_or_else(|_| loaded.path.clone());
    let tools_dir = loaded
        .tools_dir()
        .canonicalize()
        .unwrap_or_else(|_| loaded.tools_dir());
    let watched_file = config_path.clone();
    let watched_tools = tools_dir.clone();
    let mut watcher =
        match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(event) = res else { return };
            if event.kind.is_access() {
                return;
            }
            let relevant = event.paths.iter().any(|p: &PathBuf| {
                *p == watched_file
                    || (p.starts_with(&watched_tools) && p.extension().is_some_and(|x| x == "toml"))
            });
            if relevant {
                let _ = tx.try_send(ReloadRequest {
                    reason: "file changed",
                    reply: None,
                });
            }
        }) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch config files; reload with SIGHUP");
                return None;
            }
        };
    if let Some(dir) = config_path.parent() {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the config folder");
        }
    }
    if tools_dir.is_dir() {
        if let Err(e) = watcher.watch(&tools_dir, RecursiveMode::NonRecursive) {
            tracing::warn!(error = %e, dir = %tools_dir.display(), "cannot watch the tools folder");
        }
    }
    Some(watcher)
}

#[cfg(unix)]
fn spawn_sighup(tx: mpsc::Sender<ReloadRequest>) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let _ = tx
                        .send(ReloadRequest {
                            reason: "SIGHUP",
                            reply: None,
                        })
                        .await;
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot install the SIGHUP handler"),
    }
}

#[cfg(not(unix))]
fn spawn_sighup(_tx: mpsc::Sender<ReloadRequest>) {}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
