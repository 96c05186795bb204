//! Response bodies: the boxed type every handler returns, the rewriting body
//! (decode → inject → encode, chunk by chunk), and a body that replays bytes
//! read ahead before handing over to the origin's stream.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};

use super::codec::{Decoder, Encoder};
use super::inject::{Injector, Outcome};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response tagproxy sends.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

pub fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// Chunks already read from `inner`, replayed before the rest of it.
pub struct Prefixed<B> {
    prefix: VecDeque<Bytes>,
    inner: B,
}

impl<B> Prefixed<B> {
    pub fn new(prefix: Vec<Bytes>, inner: B) -> Self {
        Prefixed {
            prefix: prefix.into(),
            inner,
        }
    }
}

impl<B> Body for Prefixed<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(chunk) = self.prefix.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.inner.is_end_stream()
    }
}

/// An HTML body being rewritten as it streams.
pub struct RewrittenBody<B> {
    inner: B,
    decoder: Option<Decoder>,
    injector: Injector,
    encoder: Option<Encoder>,
    trailers: Option<http::HeaderMap>,
    done: bool,
    /// Reused between chunks to avoid an allocation per chunk.
    scratch: Vec<Bytes>,
    on_outcome: Option<Box<dyn FnOnce(Outcome) + Send>>,
}

impl<B> RewrittenBody<B> {
    pub fn new(inner: B, decoder: Decoder, injector: Injector, encoder: Encoder) -> Self {
        RewrittenBody {
            inner,
            decoder: Some(decoder),
            injector,
            encoder: Some(encoder),
            trailers: None,
            done: false,
            scratch: Vec::with_capacity(4),
            on_outcome: None,
        }
    }

    /// Called once with what the injector did, as soon as it knows.
    pub fn on_outcome(mut self, f: impl FnOnce(Outcome) + Send + 'static) -> Self {
        self.on_outcome = Some(Box::new(f));
        self
    }

    fn report(&mut self) {
        if self.injector.outcome() != Outcome::Pending {
            if let Some(f) = self.on_outcome.take() {
                f(self.injector.outcome());
            }
        }
    }

    /// Runs one origin chunk through the pipeline.
    fn process(&mut self, chunk: Bytes) -> std::io::Result<Bytes> {
        let decoded = self.decoder.as_mut().expect("open").decode(chunk)?;
        self.scratch.clear();
        if !decoded.is_empty() {
            self.injector.push(decoded, &mut self.scratch);
        }
        self.report();
        if self.scratch.is_empty() {
            return Ok(Bytes::new());
        }
        self.encoder.as_mut().expect("open").encode(&self.scratch)
    }

    /// Flushes everything at the end of the origin's body.
    fn finish(&mut self) -> std::io::Result<Bytes> {
        let tail = self.decoder.take().expect("open").finish()?;
        self.scratch.clear();
        if !tail.is_empty() {
            self.injector.push(tail, &mut self.scratch);
        }
        self.injector.finish(&mut self.scratch);
        self.report();
        let mut encoder = self.encoder.take().expect("open");
        let mut out = encoder.encode(&self.scratch)?.to_vec();
        out.extend_from_slice(&encoder.finish()?);
        Ok(Bytes::from(out))
    }
}

impl<B> Body for RewrittenBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
            let out = match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.process(data),
                    Err(frame) => {
                        this.trailers = frame.into_trailers().ok();
                        continue;
                    }
                },
                Some(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                None => {
                    this.done = true;
                    this.finish()
                }
            };
            match out {
                Ok(bytes) if bytes.is_empty() => continue,
                Ok(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Err(e) => {
                    // The origin's encoded stream broke after we committed to
                    // re-encoding it: abort so the client sees a truncated
                    // response, not a clean end.
                    tracing::warn!(error = %e, "origin body could not be decoded; response aborted");
                    this.done = true;
                    this.trailers = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
        }
    }
}
