//! [`AsyncClient`]: the tokio client. One TCP connection shared by every clone; requests from
//! any number of tasks pipeline on it.
//!
//! Two halves:
//!
//! - **Writer**: a caller registers a route for a fresh request id, then takes the writer
//!   lock and writes its whole frame with vectored writes (block bytes straight from the
//!   caller's slices), then releases the lock and waits on its route. The lock is held only
//!   while one frame is written, so frames never interleave and waiting never blocks others.
//! - **Reader**: one task reads frames and routes each by request id: a reply to its
//!   caller's oneshot channel, a subscription frame to its subscription's channel. Frames
//!   whose route is gone (a caller that timed out or was cancelled) are dropped.
//!
//! When the connection dies (read or write error, end of stream, invalid frame, fatal ERROR
//! frame, a write cancelled half way) every waiting caller and subscription gets
//! [`ClientError::Closed`] with the reason, and every later call fails the same way: nothing
//! waits forever on a dead connection.
//!
//! ```text
//!   caller: register(id) ─> [writer lock] writev frame [unlock] ─> await oneshot ─> decode
//!   reader task: read ─> frame(id) ─> routes[id] ─> oneshot / subscription channel
//!   close(reason): routes.closed = reason; every route gets Err(Closed); writer half dropped
//! ```
//!
//! # Lock ordering
//!
//! `writer` (a tokio mutex, held across the awaits of one frame's write) before `routes` (a
//! std mutex, never held across an await). The reader task takes `routes` only, and takes
//! `writer` only after releasing `routes`.

use std::collections::HashMap;
use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kvtier_core::SequenceHash;
use kvtier_events::WireFormat;
use kvtier_proto::{
    FrameHeader, HEADER_LEN, HashList, Limits, Opcode, ProtoError, PutBlocks, PutStatus, Request,
    Response, Subscribe, TierSet,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::reply::{self, Expect, Frame, ReplyValue, split_blocks};
use crate::{ClientConfig, ClientError, GetBlock, ServerInfo, SubscriptionEvent, wire};

/// Bytes the reader asks for at once when no large frame is being received.
const READ_CHUNK: usize = 64 << 10;

/// The bytes [`AsyncClient::ping`] sends.
const PING_BYTES: &[u8] = b"kvtier-client ping";

type Reply = Result<Frame, ClientError>;
type EventItem = Result<SubscriptionEvent, ClientError>;

/// Where the frames of one request id go.
enum Route {
    /// The one reply of a request.
    Reply(oneshot::Sender<Reply>),
    /// The frames of a subscription, until `Ended`.
    Events(mpsc::UnboundedSender<EventItem>),
}

#[derive(Default)]
struct Routes {
    waiting: HashMap<u64, Route>,
    /// Why the connection is closed, once it is.
    closed: Option<String>,
}

/// The connection, shared by the callers and the reader task.
struct Conn {
    routes: Mutex<Routes>,
    /// `None` once the connection is closed (dropping the half shuts down our side).
    writer: tokio::sync::Mutex<Option<OwnedWriteHalf>>,
    next_id: AtomicU64,
    /// Limits enforced on received frames.
    limits: Limits,
}

impl Conn {
    fn routes(&self) -> MutexGuard<'_, Routes> {
        // A panic elsewhere while holding the lock leaves the table consistent (every
        // mutation is one map operation), so a poisoned lock is still usable.
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `route` under a fresh request id.
    fn register(&self, route: Route) -> Result<u64, ClientError> {
        let mut routes = self.routes();
        if let Some(reason) = &routes.closed {
            return Err(ClientError::closed(reason.clone()));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        routes.waiting.insert(id, route);
        Ok(id)
    }

    fn unregister(&self, id: u64) {
        self.routes().waiting.remove(&id);
    }

    fn closed_reason(&self) -> Option<String> {
        self.routes().closed.clone()
    }

    /// Marks the connection closed and fails every waiting route with `reason` (the first
    /// reason given wins).
    fn close(&self, reason: String) {
        let (waiting, reason) = {
            let mut routes = self.routes();
            let reason = routes.closed.get_or_insert(reason).clone();
            (std::mem::take(&mut routes.waiting), reason)
        };
        for route in waiting.into_values() {
            match route {
                Route::Reply(tx) => {
                    let _ = tx.send(Err(ClientError::closed(reason.clone())));
                }
                Route::Events(tx) => {
                    let _ = tx.send(Err(ClientError::closed(reason.clone())));
                }
            }
        }
    }

    /// Writes one request frame with `id`. A write that fails or is cancelled half way
    /// closes the connection (the peer holds a partial frame).
    async fn write(
        &self,
        request: &Request<'_>,
        id: u64,
        limits: &Limits,
    ) -> Result<(), ClientError> {
        let out = wire::encode(request, id, limits)?;
        let mut iov = Vec::with_capacity(out.segment_count());
        out.io_slices(0, &mut iov);
        let mut slot = WriteInProgress {
            slot: self.writer.lock().await,
            conn: self,
            done: false,
        };
        let Some(half) = slot.slot.as_mut() else {
            slot.done = true;
            let reason = self.closed_reason().unwrap_or_else(|| "closed".to_string());
            return Err(ClientError::closed(reason));
        };
        let mut bufs: &mut [IoSlice<'_>] = &mut iov;
        while !bufs.is_empty() {
            match half.write_vectored(bufs).await {
                Ok(0) => {
                    self.close("writing a request failed: the socket accepts no bytes".into());
                    return Err(ClientError::Io(std::io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => IoSlice::advance_slices(&mut bufs, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(format!("writing a request failed: {e}"));
                    return Err(ClientError::Io(e));
                }
            }
        }
        slot.done = true;
        Ok(())
    }

    /// Files a received frame; returns the reason to close the connection after a fatal
    /// ERROR frame.
    fn deliver(&self, frame: Frame) -> Option<String> {
        let fatal = frame
            .is_fatal_error()
            .then(|| frame.fatal_reason(&self.limits));
        let id = frame.id();
        let mut routes = self.routes();
        match routes.waiting.get(&id) {
            Some(Route::Reply(_)) => {
                if let Some(Route::Reply(tx)) = routes.waiting.remove(&id) {
                    let _ = tx.send(Ok(frame));
                }
            }
            Some(Route::Events(tx)) => {
                let item = match frame.response(&self.limits) {
                    Ok(Response::Subscribe(event)) => {
                        Ok(SubscriptionEvent::from_wire(&event, &frame.payload))
                    }
                    Ok(other) => Err(ClientError::UnexpectedReply {
                        expected: Opcode::Subscribe,
                        got: other.opcode(),
                    }),
                    Err(e) => Err(e),
                };
                let end = matches!(item, Ok(SubscriptionEvent::Ended(_)) | Err(_));
                if tx.send(item).is_err() || end {
                    routes.waiting.remove(&id);
                }
            }
            // A caller that timed out or was cancelled, or an id never issued: dropped.
            None => {}
        }
        fatal
    }
}

/// The writer lock while one frame is written; if dropped before `done` (the caller's
/// future was cancelled mid-frame) the connection is closed, since the peer now holds a
/// partial frame.
struct WriteInProgress<'a> {
    slot: tokio::sync::MutexGuard<'a, Option<OwnedWriteHalf>>,
    conn: &'a Conn,
    done: bool,
}

impl Drop for WriteInProgress<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.slot.take();
            self.conn
                .close("a request was cancelled or timed out in the middle of its write".into());
        }
    }
}

/// Removes a route when the call that registered it ends early (error, timeout, cancel).
struct RouteGuard<'a> {
    conn: &'a Conn,
    id: u64,
}

impl Drop for RouteGuard<'_> {
    fn drop(&mut self) {
        self.conn.unregister(self.id);
    }
}

/// Aborts the reader task when the last client handle goes.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads frames until the connection ends, routing each; then closes the connection.
async fn read_loop(conn: Arc<Conn>, mut source: OwnedReadHalf) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let max = conn.limits.max_frame_bytes;
    let reason = loop {
        match take_frame(&mut buf, max) {
            Err(e) => break format!("the server sent an invalid frame: {e}"),
            Ok(Some(frame)) => match conn.deliver(frame) {
                Some(reason) => break reason,
                None => continue,
            },
            Ok(None) => {}
        }
        // Room for the rest of the frame being received (so a large frame lands in one
        // buffer, read in place), or a chunk.
        let missing = match FrameHeader::parse_limited(&buf, max) {
            Ok(Some(h)) => (h.len as usize).saturating_sub(buf.len()),
            _ => 0,
        };
        buf.reserve(missing.max(READ_CHUNK));
        match source.read_buf(&mut buf).await {
            Ok(0) if buf.is_empty() => break "the server closed the connection".to_string(),
            Ok(0) => break "the server closed the connection in the middle of a frame".to_string(),
            Ok(_) => {}
            Err(e) => break format!("reading from the server failed: {e}"),
        }
    };
    conn.close(reason);
    conn.writer.lock().await.take();
}

/// The first whole frame of `buf`, split off without copying.
fn take_frame(buf: &mut BytesMut, max_frame_bytes: u32) -> Result<Option<Frame>, ProtoError> {
    let Some(header) = FrameHeader::parse_limited(buf, max_frame_bytes)? else {
        return Ok(None);
    };
    let len = header.len as usize;
    if buf.len() < len {
        return Ok(None);
    }
    let frame: Bytes = buf.split_to(len).freeze();
    Ok(Some(Frame {
        header,
        payload: frame.slice(HEADER_LEN..),
    }))
}

/// Sends `request` and waits for its reply, within `timeout`.
async fn call<T: ReplyValue>(
    conn: &Conn,
    request: Request<'_>,
    expect: Expect,
    send_limits: &Limits,
    timeout: Option<Duration>,
) -> Result<T, ClientError> {
    let (tx, rx) = oneshot::channel();
    let id = conn.register(Route::Reply(tx))?;
    let _route = RouteGuard { conn, id };
    let exchange = async {
        conn.write(&request, id, send_limits).await?;
        rx.await
            .unwrap_or_else(|_| Err(ClientError::closed("the connection's reader stopped")))
    };
    let frame = match timeout {
        Some(after) => tokio::time::timeout(after, exchange)
            .await
            .map_err(|_| ClientError::Timeout { after })??,
        None => exchange.await?,
    };
    reply::decode_reply(&frame, &expect, &conn.limits)
}

/// Shared by every clone of one client.
struct Handle {
    conn: Arc<Conn>,
    info: ServerInfo,
    config: ClientConfig,
    send_limits: Limits,
    reader: AbortOnDrop,
}

impl Drop for Handle {
    /// The last handle is gone: close now rather than when the runtime next polls the
    /// aborted reader task. Dropping the write half shuts down our side at once (no request
    /// can be mid-write: writes run inside calls, which hold a handle).
    fn drop(&mut self) {
        self.conn.close("the client was dropped".to_string());
        if let Ok(mut writer) = self.conn.writer.try_lock() {
            writer.take();
        }
    }
}

/// An async, pipelining connection to a kvtier server; clone it freely (clones share the
/// connection) and call it from many tasks at once.
///
/// The connection closes when the last clone (and the last [`Subscription`]) is dropped, or
/// at [`AsyncClient::close`].
///
/// # Examples
///
/// See the [crate documentation](crate) for a session against a scripted server.
#[derive(Clone)]
pub struct AsyncClient {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for AsyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncClient")
            .field("server", &self.handle.info)
            .field("closed", &self.handle.conn.closed_reason())
            .finish_non_exhaustive()
    }
}

impl AsyncClient {
    /// Connects to `addr`, starts the reader task on the current tokio runtime, sends HELLO
    /// with the config's namespace and token, and keeps the server's answer.
    ///
    /// # Errors
    ///
    /// As [`Client::connect`](crate::Client::connect); [`ClientError::Timeout`] when the
    /// connection (all addresses together) takes longer than the connect timeout.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (it spawns the reader task).
    pub async fn connect(
        addr: impl ToSocketAddrs,
        config: ClientConfig,
    ) -> Result<Self, ClientError> {
        let stream = match config.connect_timeout().filter(|t| !t.is_zero()) {
            Some(after) => tokio::time::timeout(after, TcpStream::connect(addr))
                .await
                .map_err(|_| ClientError::Timeout { after })??,
            None => TcpStream::connect(addr).await?,
        };
        if stream.local_addr()? == stream.peer_addr()? {
            // A self-connection (see `blocking::not_to_itself`): nothing listens there.
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                format!(
                    "nothing listens on {} (the connection reached itself)",
                    stream.peer_addr()?
                ),
            )
            .into());
        }
        crate::tcp::tune(&stream, &config)?;
        let (source, sink) = stream.into_split();
        let conn = Arc::new(Conn {
            routes: Mutex::new(Routes::default()),
            writer: tokio::sync::Mutex::new(Some(sink)),
            next_id: AtomicU64::new(1),
            limits: *config.limits(),
        });
        let reader = AbortOnDrop(tokio::spawn(read_loop(Arc::clone(&conn), source)).abort_handle());
        let info: ServerInfo = call(
            &conn,
            wire::hello(&config),
            wire::HELLO_EXPECT,
            config.limits(),
            config.io_timeout(),
        )
        .await?;
        let info = wire::check_hello(info)?;
        let send_limits = info.send_limits(config.limits());
        Ok(AsyncClient {
            handle: Arc::new(Handle {
                conn,
                info,
                config,
                send_limits,
                reader,
            }),
        })
    }

    /// What the server said at HELLO.
    pub fn server(&self) -> &ServerInfo {
        &self.handle.info
    }

    /// The configuration the client was opened with.
    pub fn config(&self) -> &ClientConfig {
        &self.handle.config
    }

    /// Whether the connection is closed (every call now fails with [`ClientError::Closed`]).
    pub fn is_closed(&self) -> bool {
        self.handle.conn.closed_reason().is_some()
    }

    /// Closes the connection for every clone: waiting calls and subscriptions get
    /// [`ClientError::Closed`].
    pub async fn close(&self) {
        self.handle.conn.close("closed by the client".to_string());
        self.handle.reader.0.abort();
        self.handle.conn.writer.lock().await.take();
    }

    async fn call<T: ReplyValue>(
        &self,
        request: Request<'_>,
        expect: Expect,
    ) -> Result<T, ClientError> {
        let h = &self.handle;
        call(
            &h.conn,
            request,
            expect,
            &h.send_limits,
            h.config.io_timeout(),
        )
        .await
    }

    /// Stores `blocks`; see [`Client::put`](crate::Client::put).
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub async fn put(
        &self,
        blocks: &[(SequenceHash, &[u8])],
        durable: bool,
    ) -> Result<Vec<PutStatus>, ClientError> {
        let (hashes, slices) = split_blocks(blocks);
        let blocks = PutBlocks::new(&hashes, &slices).map_err(ClientError::Request)?;
        let expect = Expect::new(Opcode::Put, hashes.len());
        self.call(Request::Put { durable, blocks }, expect).await
    }

    /// Fetches blocks; see [`Client::get`](crate::Client::get).
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub async fn get(&self, hashes: &[SequenceHash]) -> Result<Vec<Option<GetBlock>>, ClientError> {
        let expect = Expect::new(Opcode::Get, hashes.len());
        self.call(Request::Get(HashList::new(hashes)), expect).await
    }

    /// The longest cached prefix; see [`Client::match_prefix`](crate::Client::match_prefix).
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub async fn match_prefix(&self, hashes: &[SequenceHash]) -> Result<Vec<TierSet>, ClientError> {
        let expect = Expect::new(Opcode::Match, hashes.len());
        self.call(Request::Match(HashList::new(hashes)), expect)
            .await
    }

    /// Which tiers hold each hash; see [`Client::exists`](crate::Client::exists).
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub async fn exists(&self, hashes: &[SequenceHash]) -> Result<Vec<TierSet>, ClientError> {
        let expect = Expect::new(Opcode::Exists, hashes.len());
        self.call(Request::Exists(HashList::new(hashes)), expect)
            .await
    }

    /// Removes blocks; see [`Client::delete`](crate::Client::delete).
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub async fn delete(&self, hashes: &[SequenceHash]) -> Result<Vec<bool>, ClientError> {
        let expect = Expect::new(Opcode::Delete, hashes.len());
        self.call(Request::Delete(HashList::new(hashes)), expect)
            .await
    }

    /// The server's counters; see [`Client::stats`](crate::Client::stats).
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub async fn stats(&self) -> Result<Vec<(String, u64)>, ClientError> {
        self.call(Request::Stats, Expect::new(Opcode::Stats, 0))
            .await
    }

    /// Checks the server answers; see [`Client::ping`](crate::Client::ping).
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub async fn ping(&self) -> Result<(), ClientError> {
        let expect = Expect::new(Opcode::Ping, PING_BYTES.len());
        let echo: Bytes = self.call(Request::Ping(PING_BYTES), expect).await?;
        if echo != PING_BYTES {
            return Err(ClientError::bad_reply("PING echoed other bytes"));
        }
        Ok(())
    }

    /// Opens a subscription to the server's block events; see
    /// [`Client::subscribe`](crate::Client::subscribe). Its frames come from
    /// [`Subscription::next`]; they are buffered (without bound) until read.
    ///
    /// # Errors
    ///
    /// A failed write, or a closed connection. A refusal by the server comes as the
    /// subscription's first item instead.
    pub async fn subscribe(
        &self,
        from_event_id: u64,
        format: WireFormat,
    ) -> Result<Subscription, ClientError> {
        let conn = &self.handle.conn;
        let (tx, rx) = mpsc::unbounded_channel();
        let id = conn.register(Route::Events(tx))?;
        let request = Request::Subscribe(Subscribe {
            from_event_id,
            format,
        });
        let write = conn.write(&request, id, &self.handle.send_limits);
        let written = match self.handle.config.io_timeout() {
            Some(after) => tokio::time::timeout(after, write)
                .await
                .unwrap_or(Err(ClientError::Timeout { after })),
            None => write.await,
        };
        if let Err(e) = written {
            conn.unregister(id);
            return Err(e);
        }
        Ok(Subscription {
            client: self.clone(),
            id,
            events: rx,
            ended: false,
        })
    }
}

/// A subscription's stream of frames: [`SubscriptionEvent::Started`], events and dumps, then
/// [`SubscriptionEvent::Ended`].
///
/// Dropping it before `Ended` stops delivery here and, inside a tokio runtime, sends
/// UNSUBSCRIBE in the background.
#[derive(Debug)]
pub struct Subscription {
    client: AsyncClient,
    id: u64,
    events: mpsc::UnboundedReceiver<EventItem>,
    ended: bool,
}

impl Subscription {
    /// The SUBSCRIBE request's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next frame; `None` after `Ended` (or the error that ended the stream) was
    /// returned.
    ///
    /// # Errors
    ///
    /// The items are errors when the server refused or broke off the subscription
    /// ([`ClientError::Server`]) or the connection closed; the stream is over after one.
    pub async fn next(&mut self) -> Option<Result<SubscriptionEvent, ClientError>> {
        if self.ended {
            return None;
        }
        let item = match self.events.recv().await {
            Some(item) => item,
            None => Err(ClientError::closed(
                self.client
                    .handle
                    .conn
                    .closed_reason()
                    .unwrap_or_else(|| "the subscription's route is gone".to_string()),
            )),
        };
        self.ended = matches!(item, Ok(SubscriptionEvent::Ended(_)) | Err(_));
        Some(item)
    }

    /// Asks the server to stop the subscription; returns whether it knew it. The `Ended`
    /// frame then comes from [`Subscription::next`].
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub async fn unsubscribe(&self) -> Result<bool, ClientError> {
        let request = Request::Unsubscribe {
            subscription: self.id,
        };
        self.client
            .call(request, Expect::new(Opcode::Unsubscribe, 0))
            .await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        self.client.handle.conn.unregister(self.id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            let id = self.id;
            runtime.spawn(async move {
                let request = Request::Unsubscribe { subscription: id };
                let _: Result<bool, _> = client
                    .call(request, Expect::new(Opcode::Unsubscribe, 0))
                    .await;
            });
        }
    }
}
