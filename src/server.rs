//! Running tagproxy: bind the listeners from a config, serve until a signal,
//! and reload the config on SIGHUP or when its files change.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::app::{App, Plan, Shared};
use crate::config::{self, Loaded};
use crate::proxy::{self, CurrentProxy, PrefixHandler, Proxy};

/// How long open requests may finish after SIGTERM / Ctrl-C.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// File events closer together than this are one reload (editors write in
/// several steps).
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(250);

/// Bound listeners, ready to serve.
pub struct Bound {
    pub public: TcpListener,
    pub admin: TcpListener,
}

impl Bound {
    pub async fn bind(public: SocketAddr, admin: SocketAddr) -> anyhow::Result<Bound> {
        let public = TcpListener::bind(public)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {public}: {e}"))?;
        let admin = TcpListener::bind(admin)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {admin} (admin_listen): {e}"))?;
        Ok(Bound { public, admin })
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
    let metrics = shared.metrics.clone();
    let current: CurrentProxy = Arc::new(ArcSwap::from_pointee(build(loaded, plan, &shared)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tracing::info!(
        listen = %bound.public.local_addr()?,
        admin = %bound.admin.local_addr()?,
        upstream = loaded.config.server.upstream.authority(),
        "tagproxy serving"
    );
    // Watch before serving: a change made as soon as the server answers
    // must not be missed.
    let _watcher = if watch {
        let (tx, rx) = mpsc::channel(16);
        let watcher = watch_files(loaded, tx.clone());
        spawn_sighup(tx);
        tokio::spawn(reloader(
            loaded.clone(),
            rx,
            current.clone(),
            shared.clone(),
        ));
        watcher
    } else {
        None
    };
    let engine = shared.engine.clone();
    let admin = tokio::spawn(crate::admin::serve(
        bound.admin,
        metrics.clone(),
        Arc::new(move || engine.refusing().map_or(Ok(()), Err)),
        stopped(stop_rx.clone()),
    ));
    let public = tokio::spawn(proxy::serve(
        bound.public,
        current.clone(),
        stopped(stop_rx),
        SHUTDOWN_GRACE,
    ));
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = public.await;
    let _ = admin.await;
    // Settled deliveries' acks on disk, so a restart does not resend them.
    shared.engine.flush().await;
    Ok(())
}

/// Reloads on every request in `rx`; a bad config keeps the old one.
async fn reloader(
    first: Loaded,
    mut rx: mpsc::Receiver<&'static str>,
    current: CurrentProxy,
    shared: Arc<Shared>,
) {
    let mut previous = first;
    while let Some(why) = rx.recv().await {
        // Let a burst of file events settle into one reload.
        tokio::time::sleep(RELOAD_DEBOUNCE).await;
        while rx.try_recv().is_ok() {}
        match reload(&previous.path) {
            Ok((loaded, plan)) => {
                let server = &loaded.config.server;
                let old = &previous.config.server;
                if server.listen != old.listen || server.admin_listen != old.admin_listen {
                    tracing::warn!("listen addresses changed; they apply after a restart");
                }
                if loaded.config.delivery != previous.config.delivery
                    || loaded.spool_dir() != previous.spool_dir()
                    || loaded.data_dir() != previous.data_dir()
                {
                    tracing::warn!("[delivery] and data_dir changes apply after a restart");
                }
                let tools = plan.tools.len();
                current.store(Arc::new(build(&loaded, plan, &shared)));
                tracing::info!(reason = why, tools, "config reloaded");
                previous = loaded;
            }
            Err(e) => {
                for line in e.lines() {
                    tracing::error!(
                        reason = why,
                        problem = line,
                        "config reload failed; the previous config stays in force"
                    );
                }
            }
        }
    }
}

fn reload(path: &Path) -> Result<(Loaded, Plan), String> {
    let loaded = config::load(path).map_err(|e| e.to_string())?;
    let plan = Plan::load(&loaded, crate::rules::Secrets::Required).map_err(|e| e.to_string())?;
    Ok((loaded, plan))
}

/// Watches the config file's folder and the tools folder.
fn watch_files(
    loaded: &Loaded,
    tx: mpsc::Sender<&'static str>,
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
                let _ = tx.try_send("file changed");
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
fn spawn_sighup(tx: mpsc::Sender<&'static str>) {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let _ = tx.send("SIGHUP").await;
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot install the SIGHUP handler"),
    }
}

#[cfg(not(unix))]
fn spawn_sighup(_tx: mpsc::Sender<&'static str>) {}

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
