//! The seam between the IO runtime and what frames mean: the [`Service`] trait, the
//! [`Request`] a worker hands it, the [`Context`] it replies through (or turns into a
//! [`ReplyStream`] of many frames) and the [`Response`] it replies with.
//!
//! ```text
//! IO thread ──frame──▶ ring ──▶ worker: Service::handle(ctx, request)
//!     ▲                                   │ ctx.reply(response)   (any thread, any time)
//!     │                                   │ or ctx.into_stream(): try_send(frame)… end(last)
//!     └────── per-IO-thread queue + eventfd ◀┘
//! ```
//!
//! # Invariants
//!
//! - Every request produces exactly one completion: [`Context::reply`],
//!   [`Context::reply_and_close`], [`Context::close`], dropping the context (no reply; the
//!   request still stops counting against the connection's in-flight cap), or the end of the
//!   [`ReplyStream`] it became ([`ReplyStream::end`] or dropping it). Until then the request
//!   counts against the in-flight cap; a stream's frames before its end go out as they come.
//! - Requests of one connection may be handled concurrently by several workers and complete
//!   in any order; a protocol that needs order (HELLO before PUT) carries request ids and lets
//!   the client wait, or serialises in its session.
//! - A [`Response`]'s segments are written in order with vectored writes; a guarded segment's
//!   guard is dropped only once all of its bytes are on the socket (or the connection is gone).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::framing::FramingError;
use crate::in_place::{InPlace, ReplyBuf};
use crate::pool::FrameBuf;
use crate::reply_path::ReplyPath;
use crate::stream::{ReplyStream, StreamRefused};

/// What frames mean: implemented by the protocol layer (kvtier's binary operations, RESP).
///
/// `handle` runs on a worker thread; it may reply at once or move the [`Context`] elsewhere
/// and reply later (a disk read, a remote fetch).
///
/// # Examples
///
/// An echo service: every frame goes back as it came, the request buffer itself sent as a
/// guarded segment (no copy).
///
/// ```
/// use kvtier_server::{ConnInfo, Context, Request, Response, Service};
///
/// struct Echo;
/// impl Service for Echo {
///     type Session = ();
///     fn open(&self, _conn: &ConnInfo) {}
///     fn handle(&self, ctx: Context<()>, request: Request) {
///         ctx.reply(Response::new().guarded(request.into_frame()));
///     }
/// }
/// ```
pub trait Service: Send + Sync + 'static {
    /// Per-connection state (namespace after HELLO, authentication), created when the
    /// connection is accepted and dropped once the connection and all its requests are gone.
    type Session: Send + Sync + 'static;

    /// A connection was accepted on listener `conn.listener`.
    fn open(&self, conn: &ConnInfo) -> Self::Session;

    /// Handle one complete frame. Reply through `ctx` now or later, from any thread.
    fn handle(&self, ctx: Context<Self::Session>, request: Request);

    /// Whether this frame is handled on the IO thread that read it, skipping the hand-off to
    /// a worker and back (two thread wake-ups). Only for requests that never block and finish
    /// in microseconds (a lookup in host memory, a GET answered with guarded arena bytes):
    /// while `handle` runs, no other connection of that IO thread is served. Default: never.
    fn run_inline(&self, conn: &ConnInfo, frame: &[u8]) -> bool {
        let _ = (conn, frame);
        false
    }

    /// Answer a complete frame on the IO thread straight from the connection's read buffer,
    /// writing the reply into `out`: no buffer copy, no [`Context`], and the replies of a
    /// pipeline share one buffer and one iovec (see [`ReplyBuf`]). For the same requests as
    /// [`run_inline`](Self::run_inline), where per-request overhead matters (small RESP
    /// commands). Offered only when every earlier request of the connection is answered, so
    /// replies keep request order. Return [`InPlace::Declined`], writing nothing, to take the
    /// usual path. A panic here closes the connection. Default: always declined.
    fn serve_in_place(
        &self,
        conn: &ConnInfo,
        session: &Self::Session,
        frame: &[u8],
        out: &mut ReplyBuf<'_>,
    ) -> InPlace {
        let _ = (conn, session, frame, out);
        InPlace::Declined
    }

    /// The connection's bytes cannot be framed: the response returned here (the protocol's
    /// error frame) is written, then the connection closes. Default: close without a reply.
    fn malformed(&self, conn: &ConnInfo, error: &FramingError) -> Option<Response> {
        let _ = (conn, error);
        None
    }

    /// Graceful shutdown: called once every in-flight request is answered and every worker has
    /// stopped, before [`Server::shutdown`](crate::Server::shutdown) returns (flush the disk
    /// tier here). Streams are not waited for: by now every connection is closed, and a
    /// [`ReplyStream`] still held refuses frames with
    /// [`StreamError::Closed`](crate::StreamError::Closed); stop and join publisher threads
    /// here. Default: nothing.
    fn drain(&self) {}
}

/// Identifies a connection for the server's lifetime (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What the runtime knows about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// Unique id.
    pub id: ConnId,
    /// Index of the listener (in the order they were added to the builder) that accepted it:
    /// tells the service which protocol the frames speak.
    pub listener: usize,
    /// The client's address.
    pub peer: SocketAddr,
    /// The IO thread that owns the connection.
    pub io_thread: usize,
}

/// One complete frame, as cut by the listener's [`Framer`](crate::Framer) (header included).
#[derive(Debug)]
pub struct Request {
    frame: FrameBuf,
}

impl Request {
    pub(crate) fn new(frame: FrameBuf) -> Self {
        Self { frame }
    }

    /// The frame's bytes.
    pub fn frame(&self) -> &[u8] {
        self.frame.as_slice()
    }

    /// The frame's buffer, to keep or to send back as a guarded segment; it returns to the
    /// pool when dropped.
    pub fn into_frame(self) -> FrameBuf {
        self.frame
    }
}

/// One piece of a response.
pub enum Segment {
    /// Bytes owned by the response.
    Owned(Vec<u8>),
    /// Borrowed bytes kept alive by a guard (a reader guard on arena slots, a request buffer,
    /// `bytes::Bytes`); the guard drops once the bytes are on the socket.
    Guarded(Box<dyn AsRef<[u8]> + Send>),
}

impl Segment {
    /// The segment's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Segment::Owned(v) => v,
            Segment::Guarded(g) => (**g).as_ref(),
        }
    }
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Segment::Owned(v) => write!(f, "Owned({} bytes)", v.len()),
            Segment::Guarded(g) => write!(f, "Guarded({} bytes)", (**g).as_ref().len()),
        }
    }
}

/// A reply: segments written back to back with vectored writes.
#[derive(Debug, Default)]
pub struct Response {
    pub(crate) segments: Vec<Segment>,
}

impl Response {
    /// An empty response (writes nothing; still completes the request).
    pub fn new() -> Self {
        Self::default()
    }

    /// A response of one owned segment.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Self::new().owned(bytes)
    }

    /// Appends owned bytes.
    pub fn owned(mut self, bytes: Vec<u8>) -> Self {
        self.segments.push(Segment::Owned(bytes));
        self
    }

    /// Appends bytes borrowed from `guard`, which lives until they are written.
    pub fn guarded<G: AsRef<[u8]> + Send + 'static>(mut self, guard: G) -> Self {
        self.segments.push(Segment::Guarded(Box::new(guard)));
        self
    }

    /// Appends a segment.
    pub fn push(&mut self, segment: Segment) {
        self.segments.push(segment);
    }

    /// Total bytes of all segments.
    pub fn len(&self) -> usize {
        self.segments.iter().map(|s| s.bytes().len()).sum()
    }

    /// Whether the response has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a request's reply goes: its connection, on its IO thread. Exactly one completion per
/// request; dropping the context without replying completes it with no bytes.
/// [`into_stream`](Self::into_stream) trades it for a stream of many replies.
pub struct Context<S> {
    info: ConnInfo,
    session: Arc<S>,
    route: Option<Route>,
}

/// One request's way back: its connection's path, and what its completion releases.
pub(crate) struct Route {
    pub(crate) path: Arc<ReplyPath>,
    pub(crate) request_bytes: usize,
    pub(crate) seq: u64,
}

impl<S> Context<S> {
    pub(crate) fn new(info: ConnInfo, session: Arc<S>, route: Route) -> Self {
        Self {
            info,
            session,
            route: Some(route),
        }
    }

    /// The connection this request came on.
    pub fn conn(&self) -> &ConnInfo {
        &self.info
    }

    /// The connection's session.
    pub fn session(&self) -> &Arc<S> {
        &self.session
    }

    /// Sends `response`; the connection stays open.
    pub fn reply(mut self, response: Response) {
        self.complete(Some(response), false);
    }

    /// Sends `response`, then closes the connection once it is written (RESP `QUIT`).
    pub fn reply_and_close(mut self, response: Response) {
        self.complete(Some(response), true);
    }

    /// Closes the connection without a reply (once earlier replies are written).
    pub fn close(mut self) {
        self.complete(None, true);
    }

    /// Turns this request into a stream of replies (SUBSCRIBE): frames pushed with
    /// [`ReplyStream::try_send`] from any thread, until [`ReplyStream::end`] or its drop
    /// completes the request. See [`ReplyStream`] for in-flight accounting, backpressure and
    /// shutdown.
    ///
    /// # Errors
    ///
    /// [`StreamRefused`], handing this context back, on a listener with
    /// [ordered replies](crate::ListenerConfig::with_ordered_replies): an open stream would
    /// hold back every later reply of its connection.
    pub fn into_stream(mut self) -> Result<ReplyStream<S>, StreamRefused<S>> {
        if self.route.as_ref().is_some_and(|route| route.path.ordered) {
            return Err(StreamRefused::new(self));
        }
        // `self` completes nothing once its route is taken.
        let route = self.route.take();
        Ok(ReplyStream::new(self.info, self.session.clone(), route))
    }

    fn complete(&mut self, response: Option<Response>, close: bool) {
        if let Some(route) = self.route.take() {
            // Replied inside an inline `handle`: straight back to the connection.
            if let Err((response, close, _)) = crate::inline::offer(
                self.info.id,
                route.seq,
                (response, close, route.request_bytes),
            ) {
                route
                    .path
                    .complete(route.request_bytes, route.seq, response, close);
            }
        }
    }
}

impl<S> Drop for Context<S> {
    fn drop(&mut self) {
        self.complete(None, false);
    }
}

impl<S> fmt::Debug for Context<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("conn", &self.info)
            .field("replied", &self.route.is_none())
            .finish()
    }
}
