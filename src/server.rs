//! Running tagproxy: bind the listeners from a config, serve until a signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::app::{App, Plan};
use crate::config::{DeliveryBackend, Loaded};
use crate::proxy::{self, PrefixHandler, Proxy};

/// How long open requests may finish after SIGTERM / Ctrl-C.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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

/// Serves until SIGINT or SIGTERM.
pub async fn run(loaded: &Loaded, plan: Plan, bound: Bound) -> anyhow::Result<()> {
    if loaded.config.delivery.backend != DeliveryBackend::Memory {
        tracing::warn!(
            backend = ?loaded.config.delivery.backend,
            "this version delivers from memory only; the durable spool and NATS come next: events queued at a restart are lost"
        );
    }
    let app = Arc::new(App::start(loaded, plan));
    let proxy = Arc::new(Proxy::new(
        &loaded.config,
        App::client_script(loaded),
        Some(app as Arc<dyn PrefixHandler>),
    ));
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
    let admin = tokio::spawn(crate::admin::serve(bound.admin, stopped(stop_rx.clone())));
    let public = tokio::spawn(proxy::serve(
        bound.public,
        proxy,
        stopped(stop_rx),
        SHUTDOWN_GRACE,
    ));
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = public.await;
    let _ = admin.await;
    Ok(())
}

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
