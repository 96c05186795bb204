//! Client connections on the public listeners: HTTP/1.1 or h2c, or TLS with
//! HTTP/1.1 or h2 by ALPN; the limits of
//! SPEC §2 (`header_read_timeout_ms`, `idle_timeout_ms`, `max_connections`),
//! h2 and request-head size caps, and draining on shutdown.
//!
//! hyper has no timeout that fits: hyper-util's HTTP/1-or-h2 detection waits
//! for bytes forever, and hyper's own HTTP/1 `header_read_timeout` also runs
//! while a keep-alive connection waits for its next request, which would make
//! the idle timeout the header timeout. So each connection has a small
//! watchdog that knows whether a request is in flight and when bytes last
//! arrived.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::time::Instant;

use super::body::{self, BoxError, ProxyBody};
use super::CurrentProxy;
use crate::config::ServerConfig;

/// Largest HTTP/1.1 request head (request line and headers) accepted, bytes;
/// a larger one is answered `431`. nginx allows 4 × 8 KiB; cookies of a shop
/// with many tags can pass 16 KiB, so a little more room.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// h2: the largest header list (HPACK-decoded) a request may have, bytes.
pub const H2_MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// h2: requests in flight at once on one connection (nginx's default is 128).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// How long an idle connection that was asked to close may take to do so.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The `[server]` connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to send a complete request head, from connecting (or from the
    /// first byte after an idle spell).
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no bytes this long is
    /// closed.
    pub idle_timeout: Duration,
    /// Open connections at most; past it, accepting pauses.
    pub max_connections: usize,
}

impl Limits {
    pub fn of(server: &ServerConfig) -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(server.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(server.idle_timeout_ms),
            max_connections: server.max_connections as usize,
        }
    }
}

/// Where a connection is in its life, for the watchdog.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// A request head is expected (the connection just opened, or bytes came
    /// after an idle spell) since then.
    Head(Instant),
    /// Nothing in flight and no bytes since then.
    Idle(Instant),
    /// Requests in flight: their own timeouts apply, not ours.
    Busy,
}

/// What one connection is doing, shared by its IO, its requests and its
/// watchdog.
struct Activity {
    in_flight: AtomicUsize,
    /// The client speaks h2: its control frames (PING, WINDOW_UPDATE…) come
    /// at any time and are not the start of a request head.
    h2: AtomicBool,
    /// No byte read yet.
    fresh: AtomicBool,
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            h2: AtomicBool::new(false),
            fresh: AtomicBool::new(true),
            phase: Mutex::new(Phase::Head(Instant::now())),
            changed: Notify::new(),
        })
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `bytes` arrived: an idle HTTP/1 connection is now sending a request
    /// head. An idle h2 connection stays idle until a request starts.
    fn on_read(&self, bytes: &[u8]) {
        if self.fresh.swap(false, Ordering::AcqRel) {
            // The h2 preface starts "PRI * HTTP/2.0"; no HTTP/1 method is PRI.
            self.h2.store(bytes.starts_with(b"PRI"), Ordering::Release);
        }
        if self.h2.load(Ordering::Acquire) {
            return;
        }
        if self.in_flight.load(Ordering::Acquire) != 0 {
            return;
        }
        // Checked and set under the lock: a request starting meanwhile wins.
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*phase, Phase::Idle(_)) && self.in_flight.load(Ordering::Acquire) == 0 {
            *phase = Phase::Head(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// A request head was read; the guard ends the request when the
    /// response body is done (or dropped).
    fn start(self: &Arc<Self>) -> InFlight {
        let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        *phase = Phase::Busy;
        drop(phase);
        self.changed.notify_one();
        InFlight(self.clone())
    }
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut phase = self.0.phase.lock().unwrap_or_else(|e| e.into_inner());
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *phase = Phase::Idle(Instant::now());
            drop(phase);
            self.0.changed.notify_one();
        }
    }
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    Head,
    Idle,
}

/// Resolves when the connection has waited too long for a request head or
/// has been idle too long.
async fn watchdog(activity: &Activity, limits: Limits) -> Expired {
    loop {
        let deadline = match activity.phase() {
            Phase::Busy => None,
            Phase::Head(since) => Some((since + limits.header_read_timeout, Expired::Head)),
            Phase::Idle(since) => Some((since + limits.idle_timeout, Expired::Idle)),
        };
        match deadline {
            None => activity.changed.notified().await,
            Some((at, why)) => {
                if Instant::now() >= at {
                    return why;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = activity.changed.notified() => {}
                }
            }
        }
    }
}

/// A client socket (plain TCP or TLS) that tells its connection's
/// `Activity` about reads.
struct Tracked<S> {
    stream: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.on_read(&buf.filled()[before..]);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A response body that keeps its request in flight until it is done.
struct Guarded {
    inner: ProxyBody,
    _in_flight: InFlight,
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The hyper settings every connection shares: the head and h2 caps.
fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // Our watchdog does this; hyper's would also cut idle keep-alives.
        .header_read_timeout(None)
        // hyper answers a head that does not fit with 431.
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST_BYTES);
    builder
}

/// What a listener speaks.
#[derive(Clone)]
pub enum Mode {
    /// HTTP/1.1 and h2c. With `https_port` (the bound port of the TLS
    /// listener), requests are redirected there when the proxy in force
    /// has `redirect_http`.
    Plain { https_port: Option<u16> },
    /// TLS, then HTTP/1.1 or h2 as ALPN chose.
    Tls(tokio_rustls::TlsAcceptor),
}

/// Serves `proxy` on `listener` until `shutdown` resolves, then lets open
/// requests finish for up to `grace`. `max_connections` is read once, here,
/// and counts this listener's connections; the timeouts of the proxy in
/// force apply to each new connection.
pub async fn serve(
    listener: TcpListener,
    proxy: CurrentProxy,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    mode: Mode,
) {
    let builder = Arc::new(builder());
    let slots = Arc::new(Semaphore::new(proxy.load().limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a sender; all dropped = all drained.
    let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        if slots.available_permits() == 0 {
            tracing::debug!("max_connections reached; accepting pauses");
        }
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("never closed"),
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            proxy: proxy.clone(),
            builder: builder.clone(),
            limits: proxy.load().limits,
            peer,
            stop: stop_rx.clone(),
        };
        let drain = drain_tx.clone();
        let mode = mode.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _drain = drain;
            match mode {
                Mode::Plain { https_port } => conn.serve(stream, false, https_port).await,
                Mode::Tls(acceptor) => {
                    let Some(tls) = conn.handshake(acceptor, stream).await else {
                        return;
                    };
                    conn.serve(tls, true, None).await
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(drain_tx);
    if tokio::time::timeout(grace, drain_rx.recv()).await.is_err() {
        tracing::warn!("shutdown grace period over; closing open connections");
    }
}

/// One accepted connection.
struct Conn {
    proxy: CurrentProxy,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: Limits,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
}

impl Conn {
    /// The TLS handshake, within `header_read_timeout_ms` (a client that
    /// connects and sends nothing, or speaks plain HTTP, is closed). `None`
    /// when there is nothing more to serve: it failed, or it was an ACME
    /// TLS-ALPN-01 validation, which ends with the handshake.
    async fn handshake(
        &self,
        acceptor: tokio_rustls::TlsAcceptor,
        stream: TcpStream,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let peer = self.peer;
        let mut stop = self.stop.clone();
        let tls = tokio::select! {
            done = tokio::time::timeout(self.limits.header_read_timeout, acceptor.accept(stream)) => match done {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return None;
                }
                Err(_) => {
                    tracing::debug!(%peer, "no TLS handshake within header_read_timeout_ms; closed");
                    return None;
                }
            },
            _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => return None,
        };
        if tls.get_ref().1.alpn_protocol() == Some(crate::tls::ACME_TLS_ALPN) {
            tracing::debug!(%peer, "ACME TLS-ALPN-01 validation handshake");
            return None;
        }
        Some(tls)
    }

    /// Serves HTTP on `stream` until the client leaves, a limit closes it or
    /// the server drains. `https`: the stream is TLS (requests are marked
    /// with [`super::Https`]); `redirect_to`: the TLS port plain requests
    /// may be redirected to.
    async fn serve<S>(self, stream: S, https: bool, redirect_to: Option<u16>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            proxy,
            builder,
            limits,
            peer,
            mut stop,
        } = self;
        let activity = Activity::new();
        let service = {
            let activity = activity.clone();
            service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let in_flight = activity.start();
                let proxy = proxy.load_full();
                if https {
                    req.extensions_mut().insert(super::Https);
                }
                async move {
                    let redirect =
                        redirect_to.and_then(|port| proxy.https_redirect(&req, peer, port));
                    let resp = match redirect {
                        Some(resp) => resp,
                        None => proxy.handle(req, peer).await,
                    };
                    let resp = resp.map(|inner| {
                        body::boxed(Guarded {
                            inner,
                            _in_flight: in_flight,
                        })
                    });
                    Ok::<_, Infallible>(resp)
                }
            })
        };
        let io = TokioIo::new(Tracked {
            stream,
            activity: activity.clone(),
        });
        let conn = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);
        let ended = tokio::select! {
            ended = conn.as_mut() => Some(ended),
            why = watchdog(&activity, limits) => {
                match why {
                    Expired::Head => {
                        tracing::debug!(%peer, "no complete request head within header_read_timeout_ms; closed");
                        return;
                    }
                    Expired::Idle => {
                        tracing::debug!(%peer, "idle for idle_timeout_ms; closing");
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(IDLE_CLOSE_GRACE, conn.as_mut()).await;
                        return;
                    }
                }
            }
            _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => {
                conn.as_mut().graceful_shutdown();
                None
            }
        };
        let ended = match ended {
            Some(ended) => ended,
            None => conn.await,
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, %peer, "connection ended with an error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_expires_after_the_header_timeout() {
        let activity = Activity::new();
        let started = Instant::now();
        assert_eq!(watchdog(&activity, limits()).await, Expired::Head);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_request_the_idle_timeout_applies_then_the_header_timeout() {
        let activity = Activity::new();
        drop(activity.start());
        let started = Instant::now();
        let dog = watchdog(&activity, limits());
        tokio::pin!(dog);
        // Idle for 30 s, then a byte: a head has 10 s from then.
        tokio::select! {
            _ = &mut dog => panic!("expired while idle"),
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        activity.on_read(b"GET / HTTP/1.1\r\n");
        assert_eq!(dog.await, Expired::Head);
        assert_eq!(started.elapsed(), Duration::from_secs(40));

        // h2: a PING while idle is not a request head; idle still ends it.
        let activity = Activity::new();
        activity.on_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        drop(activity.start());
        let started = Instant::now();
        let dog = watchdog(&activity, limits());
        tokio::pin!(dog);
        tokio::select! {
            _ = &mut dog => panic!("expired while idle"),
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        activity.on_read(b"\0\0\x08\x06\0\0\0\0\0ping-frm");
        assert_eq!(dog.await, Expired::Idle);
        assert_eq!(started.elapsed(), Duration::from_secs(60));

        let activity = Activity::new();
        drop(activity.start());
        let started = Instant::now();
        assert_eq!(watchdog(&activity, limits()).await, Expired::Idle);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_never_expires() {
        let activity = Activity::new();
        let in_flight = activity.start();
        let dog = watchdog(&activity, limits());
        tokio::pin!(dog);
        tokio::select! {
            _ = &mut dog => panic!("expired with a request in flight"),
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
        drop(in_flight);
        assert_eq!(dog.await, Expired::Idle);
    }
}
