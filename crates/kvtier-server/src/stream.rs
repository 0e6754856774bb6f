//! Streamed replies: one request answered by many frames over time (SUBSCRIBE), through the
//! [`ReplyStream`] its [`Context`] turns into. Owns the sender's side: admission of each
//! frame against the connection's state, read from atomics the IO thread keeps
//! ([`ReplyPath`]), never by a round trip to it. Does not own the connection's queue or its
//! closing decisions (`conn.rs`).
//!
//! ```text
//! Context::into_stream ──▶ ReplyStream ──try_send(frame)──▶ closing?           ──▶ Closed
//!        │ (ordered listener:                                pending + len > limit? ──▶ Congested
//!        ▼  StreamRefused, context back)                     else count bytes, push to inbox
//!                          ReplyStream ──end(last) / drop──▶ completion: the request leaves in-flight
//! IO thread: queues frames as they arrive, uncounts bytes as they are written, and marks the
//!            connection closing when it ends (EOF, error, close, framing error, shutdown)
//! ```
//!
//! # Invariants
//!
//! - A stream completes its request exactly once ([`ReplyStream::end`] or drop), after every
//!   frame it pushed: frames and completion travel the same FIFO inbox.
//! - A frame is admitted only after its bytes are counted in the connection's pending bytes,
//!   and only if that keeps them within the limit (or nothing else was pending), whatever the
//!   number of sending threads (see `reply_path`).

use std::fmt;
use std::sync::Arc;

use crate::reply_path::ReplyPath;
use crate::service::{ConnInfo, Context, Response, Route};

/// Many replies to one request, pushed from any thread until the stream ends.
///
/// Made by [`Context::into_stream`]. Each [`try_send`](Self::try_send) queues one frame on
/// the connection without completing the request; [`end`](Self::end), or dropping the
/// stream, completes it with an optional last frame. Frames pushed from one thread are written
/// in that order and before the last one; replies to the connection's other requests are
/// written meanwhile, between frames (the protocol tags frames with the request id).
///
/// `Send + Sync`, not `Clone`: one owner ends it; share it by reference or in an `Arc` to push
/// from several threads (frames of different threads interleave in no set order).
///
/// - **In flight.** Until it ends, the request counts against the connection's in-flight caps
///   ([`with_max_in_flight_per_conn`](crate::ServerBuilder::with_max_in_flight_per_conn),
///   and its request bytes): keep subscriptions per connection well below the cap, or the
///   connection stops being read.
/// - **Backpressure.** `try_send` never blocks and never buffers without bound: it refuses a
///   frame with [`StreamError::Congested`] when the connection's pending output (reply bytes
///   queued and not yet written, plus stream frames on their way to the IO thread) would
///   pass [`with_max_queued_response_bytes`](crate::ServerBuilder::with_max_queued_response_bytes).
///   A frame on a connection with nothing pending is always admitted. The caller drops the
///   event, or the subscriber (ends the stream). The last frame given to `end` is not checked.
/// - **Closing.** Once the connection ends (the peer closes or half-closes it, a socket
///   error, another request's [`reply_and_close`](Context::reply_and_close), a framing error,
///   the server shutting down) `try_send` fails with [`StreamError::Closed`] and
///   [`is_closed`](Self::is_closed) turns true: one atomic load, no round trip. The connection
///   does not wait for its open streams: it closes once its other requests are answered and
///   its output is written; frames and last replies that come after are dropped.
/// - **Shutdown.** [`Server::shutdown`](crate::Server::shutdown) closes every stream that way
///   and returns without waiting for them to end (bounded by its shutdown timeout, as for a
///   client that does not read). [`Service::drain`](crate::Service::drain) runs after every
///   connection is closed: stop and join publisher threads there.
///
/// # Examples
///
/// `count N` streams the lines `0` to `N-1` from a publisher thread, then `end`.
///
/// ```
/// use std::io::{BufRead, BufReader, Write};
/// use kvtier_server::{ConnInfo, Context, LineFramer, Request, Response, ServerBuilder, Service};
///
/// struct Count;
/// impl Service for Count {
///     type Session = ();
///     fn open(&self, _conn: &ConnInfo) {}
///     fn handle(&self, ctx: Context<()>, request: Request) {
///         let text = String::from_utf8_lossy(request.frame());
///         let n: u32 = text.trim().strip_prefix("count ").and_then(|n| n.parse().ok()).unwrap_or(0);
///         let stream = match ctx.into_stream() {
///             Ok(stream) => stream,
///             Err(refused) => {
///                 return refused.into_context().reply(Response::from_vec(b"refused\n".to_vec()));
///             }
///         };
///         std::thread::spawn(move || {
///             for i in 0..n {
///                 if stream.try_send(Response::from_vec(format!("{i}\n").into_bytes())).is_err() {
///                     break; // congested or closed: drop this subscriber
///                 }
///             }
///             stream.end(Some(Response::from_vec(b"end\n".to_vec())));
///         });
///     }
/// }
///
/// let server = ServerBuilder::new(Count)
///     .listen("127.0.0.1:0".parse()?, LineFramer)
///     .start()?;
/// let mut conn = std::net::TcpStream::connect(server.local_addrs()[0])?;
/// conn.write_all(b"count 3\n")?;
/// let lines = BufReader::new(&conn).lines().take(4).collect::<Result<Vec<_>, _>>()?;
/// assert_eq!(lines, ["0", "1", "2", "end"]);
/// assert_eq!(server.counters().stream_frames, 3);
/// server.shutdown()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ReplyStream<S> {
    info: ConnInfo,
    session: Arc<S>,
    /// `None` once ended (or made from a context that had already completed).
    route: Option<Route>,
}

impl<S> ReplyStream<S> {
    pub(crate) fn new(info: ConnInfo, session: Arc<S>, route: Option<Route>) -> Self {
        if let Some(route) = &route {
            route.path.open_stream();
        }
        Self {
            info,
            session,
            route,
        }
    }

    /// The connection the frames go to.
    pub fn conn(&self) -> &ConnInfo {
        &self.info
    }

    /// The connection's session.
    pub fn session(&self) -> &Arc<S> {
        &self.session
    }

    fn path(&self) -> Option<&ReplyPath> {
        self.route.as_ref().map(|route| &*route.path)
    }

    /// Whether the connection is ending or gone: every later [`try_send`](Self::try_send)
    /// fails with [`StreamError::Closed`]. One atomic load, cheap enough for a publisher to
    /// poll between events.
    pub fn is_closed(&self) -> bool {
        self.path().is_none_or(ReplyPath::is_closing)
    }

    /// Queues `response` as the stream's next frame, without completing the request. Never
    /// blocks.
    ///
    /// # Errors
    ///
    /// The frame is not sent, and comes back in the error:
    /// - [`StreamError::Closed`]: the connection is ending or gone (see
    ///   [`is_closed`](Self::is_closed)); every later call fails the same way.
    /// - [`StreamError::Congested`]: the connection's pending output would pass its
    ///   queued-response-bytes limit (the client reads too slowly); drop the event and carry
    ///   on, or end the stream.
    pub fn try_send(&self, response: Response) -> Result<(), StreamError> {
        let Some(path) = self.path().filter(|path| !path.is_closing()) else {
            return Err(StreamError::Closed { response });
        };
        if let Err(pending) = path.reserve(response.len()) {
            path.counters.stream_congested();
            return Err(StreamError::Congested {
                response,
                pending,
                limit: path.max_queued,
            });
        }
        path.push_frame(response);
        path.counters.stream_frame();
        Ok(())
    }

    /// Ends the stream, completing its request after every frame already sent, with `last` as
    /// a final frame (not checked against the limit; dropped if the connection is gone).
    pub fn end(mut self, last: Option<Response>) {
        self.finish(last);
    }

    fn finish(&mut self, last: Option<Response>) {
        if let Some(route) = self.route.take() {
            // Uncounted before the completion leaves: the IO thread never sees more open
            // streams than requests in flight.
            route.path.close_stream();
            route
                .path
                .complete(route.request_bytes, route.seq, last, false);
        }
    }
}

impl<S> Drop for ReplyStream<S> {
    fn drop(&mut self) {
        self.finish(None);
    }
}

impl<S> fmt::Debug for ReplyStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyStream")
            .field("conn", &self.info)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Why [`ReplyStream::try_send`] did not send a frame. The frame comes back in the error,
/// which is therefore `Send` but, like [`Response`], not `Sync`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The connection's pending output would pass its limit: the client reads too slowly.
    #[error("connection congested: {pending} reply bytes pending, limit {limit}")]
    Congested {
        /// The frame, not sent.
        response: Response,
        /// Reply bytes the connection had pending (queued or on their way).
        pending: usize,
        /// The connection's queued-response-bytes limit.
        limit: usize,
    },
    /// The connection is ending or gone (peer closed, error, close requested, shutdown).
    #[error("reply stream closed: its connection is ending or gone")]
    Closed {
        /// The frame, not sent.
        response: Response,
    },
}

impl StreamError {
    /// The frame that was not sent.
    pub fn into_response(self) -> Response {
        match self {
            StreamError::Congested { response, .. } | StreamError::Closed { response } => response,
        }
    }
}

/// [`Context::into_stream`] refused: the listener writes replies in request order, and an
/// open stream would hold back every later reply of its connection. Hands the context back,
/// to reply once instead.
#[derive(thiserror::Error)]
#[error("reply streams are refused on a listener with ordered replies")]
pub struct StreamRefused<S> {
    context: Context<S>,
}

impl<S> StreamRefused<S> {
    pub(crate) fn new(context: Context<S>) -> Self {
        Self { context }
    }

    /// The request's context, still to be completed.
    pub fn into_context(self) -> Context<S> {
        self.context
    }
}

impl<S> fmt::Debug for StreamRefused<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamRefused")
            .field("context", &self.context)
            .finish()
    }
}
