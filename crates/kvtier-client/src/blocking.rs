//! [`Client`]: the blocking client, one TCP connection, pipelined.
//!
//! Every operation has two forms: `put`, `get`, ... send the request and wait for its reply;
//! `send_put`, `send_get`, ... only send it and return a [`Ticket`], so many requests can be
//! in flight before any reply is read. [`Client::wait`] redeems a ticket. Replies carry their
//! request's id and the server may answer in any order: a reply that arrives while the client
//! waits for another is kept (by id) until its own ticket is waited for.
//!
//! Requests are written at once with one vectored write each: the frame's header and index
//! from a small buffer, block bytes straight from the caller's slices.
//!
//! Subscriptions share the connection: their frames are queued per subscription as they
//! arrive (while waiting for anything) and handed out by [`Client::next_event`].
//!
//! ```text
//!   send_*  ──> outstanding ids ──(frame with that id arrives)──> arrived ──wait──> T
//!   subscribe ──> subscription queue <──(SUBSCRIBE frames)── next_event
//!   fatal ERROR, I/O error, EOF, bad header ──> closed: every later call is Closed
//! ```
//!
//! Nothing here is shared between threads; a `Client` is `Send` and used by one thread at a
//! time (its methods take `&mut self`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, IoSlice, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use kvtier_core::SequenceHash;
use kvtier_events::WireFormat;
use kvtier_proto::{
    HashList, Limits, Opcode, PutBlocks, PutStatus, Request, Response, Subscribe, TierSet, WriteBuf,
};

use crate::recv::{FrameIn, RecvError};
use crate::reply::{self, Expect, Frame, ReplyValue, split_blocks};
use crate::{ClientConfig, ClientError, GetBlock, ServerInfo, SubscriptionEvent, Ticket, wire};

/// The bytes [`Client::ping`] sends.
const PING_BYTES: &[u8] = b"kvtier-client ping";

/// A subscription opened by [`Client::subscribe`] (its SUBSCRIBE request's id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubscriptionId(u64);

impl SubscriptionId {
    /// The SUBSCRIBE request's id (what the server's frames for it carry).
    pub fn id(self) -> u64 {
        self.0
    }
}

/// Events received for one subscription and not yet handed out.
#[derive(Debug, Default)]
struct SubQueue {
    events: VecDeque<Result<SubscriptionEvent, ClientError>>,
    /// `Ended` (or an error ending the stream) is queued: no more frames belong to it.
    done: bool,
}

/// A blocking, pipelining connection to a kvtier server.
///
/// # Examples
///
/// See the [crate documentation](crate) for a whole session against a scripted server.
pub struct Client {
    stream: TcpStream,
    inbox: FrameIn,
    config: ClientConfig,
    info: ServerInfo,
    send_limits: Limits,
    next_id: u64,
    /// Requests sent whose reply was not handed out yet.
    outstanding: HashSet<u64>,
    /// Replies received for outstanding requests, not yet waited for.
    arrived: HashMap<u64, Frame>,
    /// Ids of `arrived`, oldest first (may hold ids already taken: skipped).
    arrival_order: VecDeque<u64>,
    subscriptions: HashMap<u64, SubQueue>,
    /// Why the connection is closed, once it is.
    closed: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.info)
            .field("outstanding", &self.outstanding.len())
            .field("subscriptions", &self.subscriptions.len())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `addr` (each resolved address in turn), sends HELLO with the config's
    /// namespace and token, and keeps the server's answer ([`Client::server`]).
    ///
    /// # Errors
    ///
    /// [`ClientError::Io`] when no address accepts the connection;
    /// [`ClientError::Request`] for a namespace or token over the limits;
    /// [`ClientError::Server`] when the server refuses the HELLO (e.g. `AuthFailed`);
    /// [`ClientError::BadReply`] when it speaks another protocol version.
    pub fn connect(addr: impl ToSocketAddrs, config: ClientConfig) -> Result<Self, ClientError> {
        let stream = connect_any(addr, config.connect_timeout())?;
        crate::tcp::tune(&stream, &config)?;
        let timeout = config.io_timeout().filter(|t| !t.is_zero());
        stream.set_read_timeout(timeout)?;
        stream.set_write_timeout(timeout)?;
        let limits = *config.limits();
        let mut client = Client {
            stream,
            inbox: FrameIn::new(limits.max_frame_bytes),
            info: ServerInfo {
                version: 0,
                block_bytes: 0,
                max_frame_bytes: limits.max_frame_bytes,
                max_blocks_per_request: limits.max_blocks_per_request,
                instance: kvtier_events::InstanceId(0),
                server: String::new(),
            },
            send_limits: limits,
            config,
            next_id: 1,
            outstanding: HashSet::new(),
            arrived: HashMap::new(),
            arrival_order: VecDeque::new(),
            subscriptions: HashMap::new(),
            closed: None,
        };
        // HELLO borrows the namespace and token from a copy of the config (the client is
        // borrowed mutably to send it).
        let config = client.config.clone();
        let ticket: Ticket<ServerInfo> = client.send(wire::hello(&config), wire::HELLO_EXPECT)?;
        let info = wire::check_hello(client.wait(&ticket)?)?;
        client.send_limits = info.send_limits(client.config.limits());
        client.info = info;
        Ok(client)
    }

    /// What the server said at HELLO: block size, limits, instance, name.
    pub fn server(&self) -> &ServerInfo {
        &self.info
    }

    /// The configuration the client was opened with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Whether the connection is closed (every call now fails with [`ClientError::Closed`],
    /// except that replies and events received before are still handed out).
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Number of requests sent whose reply was not handed out yet.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Closes the connection (both directions). Outstanding tickets then fail with
    /// [`ClientError::Closed`].
    pub fn close(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        self.close_with("closed by the client".to_string());
    }

    /// Stores `blocks` (each hash with its bytes); `durable` asks the server to acknowledge
    /// only once they are on disk. One status per block, in order.
    ///
    /// # Errors
    ///
    /// See [`ClientError`]: a batch over the server's limits is [`ClientError::Request`] and
    /// nothing is sent.
    pub fn put(
        &mut self,
        blocks: &[(SequenceHash, &[u8])],
        durable: bool,
    ) -> Result<Vec<PutStatus>, ClientError> {
        let ticket = self.send_put(blocks, durable)?;
        self.wait(&ticket)
    }

    /// Fetches blocks: per hash, its bytes and tier, or `None` for a miss.
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub fn get(&mut self, hashes: &[SequenceHash]) -> Result<Vec<Option<GetBlock>>, ClientError> {
        let ticket = self.send_get(hashes)?;
        self.wait(&ticket)
    }

    /// The longest cached prefix of `hashes`: the tiers of each of its blocks (its length is
    /// the match length).
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub fn match_prefix(&mut self, hashes: &[SequenceHash]) -> Result<Vec<TierSet>, ClientError> {
        let ticket = self.send_match(hashes)?;
        self.wait(&ticket)
    }

    /// Which tiers hold each hash (empty = absent), without touching recency.
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub fn exists(&mut self, hashes: &[SequenceHash]) -> Result<Vec<TierSet>, ClientError> {
        let ticket = self.send_exists(hashes)?;
        self.wait(&ticket)
    }

    /// Removes each hash from every tier; per hash, whether it was there.
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub fn delete(&mut self, hashes: &[SequenceHash]) -> Result<Vec<bool>, ClientError> {
        let ticket = self.send_delete(hashes)?;
        self.wait(&ticket)
    }

    /// The server's counters, `(name, value)`.
    ///
    /// # Errors
    ///
    /// See [`ClientError`].
    pub fn stats(&mut self) -> Result<Vec<(String, u64)>, ClientError> {
        let ticket = self.send_stats()?;
        self.wait(&ticket)
    }

    /// Checks the server answers: sends a PING and checks the echo.
    ///
    /// # Errors
    ///
    /// See [`ClientError`]; [`ClientError::BadReply`] when the echo differs.
    pub fn ping(&mut self) -> Result<(), ClientError> {
        let ticket = self.send_ping(PING_BYTES)?;
        let echo = self.wait(&ticket)?;
        if echo != PING_BYTES {
            return Err(ClientError::bad_reply("PING echoed other bytes"));
        }
        Ok(())
    }

    /// Sends a PUT without waiting (see [`Client::put`]).
    ///
    /// # Errors
    ///
    /// [`ClientError::Request`] (nothing sent), or a failed write (the client is closed).
    pub fn send_put(
        &mut self,
        blocks: &[(SequenceHash, &[u8])],
        durable: bool,
    ) -> Result<Ticket<Vec<PutStatus>>, ClientError> {
        let (hashes, slices) = split_blocks(blocks);
        let blocks = PutBlocks::new(&hashes, &slices).map_err(ClientError::Request)?;
        self.send(
            Request::Put { durable, blocks },
            Expect::new(Opcode::Put, hashes.len()),
        )
    }

    /// Sends a GET without waiting (see [`Client::get`]).
    ///
    /// # Errors
    ///
    /// As [`Client::send_put`].
    pub fn send_get(
        &mut self,
        hashes: &[SequenceHash],
    ) -> Result<Ticket<Vec<Option<GetBlock>>>, ClientError> {
        let expect = Expect::new(Opcode::Get, hashes.len());
        self.send(Request::Get(HashList::new(hashes)), expect)
    }

    /// Sends a MATCH without waiting (see [`Client::match_prefix`]).
    ///
    /// # Errors
    ///
    /// As [`Client::send_put`].
    pub fn send_match(
        &mut self,
        hashes: &[SequenceHash],
    ) -> Result<Ticket<Vec<TierSet>>, ClientError> {
        let expect = Expect::new(Opcode::Match, hashes.len());
        self.send(Request::Match(HashList::new(hashes)), expect)
    }

    /// Sends an EXISTS without waiting (see [`Client::exists`]).
    ///
    /// # Errors
    ///
    /// As [`Client::send_put`].
    pub fn send_exists(
        &mut self,
        hashes: &[SequenceHash],
    ) -> Result<Ticket<Vec<TierSet>>, ClientError> {
        let expect = Expect::new(Opcode::Exists, hashes.len());
        self.send(Request::Exists(HashList::new(hashes)), expect)
    }

    /// Sends a DELETE without waiting (see [`Client::delete`]).
    ///
    /// # Errors
    ///
    /// As [`Client::send_put`].
    pub fn send_delete(
        &mut self,
        hashes: &[SequenceHash],
    ) -> Result<Ticket<Vec<bool>>, ClientError> {
        let expect = Expect::new(Opcode::Delete, hashes.len());
        self.send(Request::Delete(HashList::new(hashes)), expect)
    }

    /// Sends a STATS without waiting (see [`Client::stats`]).
    ///
    /// # Errors
    ///
    /// As [`Client::send_put`].
    pub fn send_stats(&mut self) -> Result<Ticket<Vec<(String, u64)>>, ClientError> {
        self.send(Request::Stats, Expect::new(Opcode::Stats, 0))
    }

    /// Sends a PING with `payload` without waiting; its reply is the echo.
    ///
    /// # Errors
    ///
    /// As [`Client::send_put`].
    pub fn send_ping(&mut self, payload: &[u8]) -> Result<Ticket<Bytes>, ClientError> {
        self.send(
            Request::Ping(payload),
            Expect::new(Opcode::Ping, payload.len()),
        )
    }

    /// Waits for the reply to `ticket` and returns it, reading (and keeping by id) any other
    /// replies and subscription events that come first.
    ///
    /// After a reply or a server error is returned the ticket is spent (waiting again is
    /// [`ClientError::UnknownRequest`]); after a [`ClientError::Timeout`] it is still
    /// outstanding and may be waited for again.
    ///
    /// # Errors
    ///
    /// [`ClientError::Server`] when the server refused the request; [`ClientError::Timeout`];
    /// [`ClientError::UnexpectedReply`] / [`ClientError::BadReply`]; [`ClientError::Closed`]
    /// (or the I/O or protocol error that closed the connection).
    pub fn wait<T: ReplyValue>(&mut self, ticket: &Ticket<T>) -> Result<T, ClientError> {
        if !self.outstanding.contains(&ticket.id) {
            return Err(ClientError::UnknownRequest { id: ticket.id });
        }
        loop {
            if let Some(frame) = self.arrived.remove(&ticket.id) {
                self.outstanding.remove(&ticket.id);
                return reply::redeem(&frame, ticket, self.config.limits());
            }
            if let Some(reason) = &self.closed {
                let reason = reason.clone();
                self.outstanding.remove(&ticket.id);
                return Err(ClientError::Closed { reason });
            }
            self.pump()?;
        }
    }

    /// Waits until the reply to some outstanding request is here and returns that request's
    /// id (the earliest to arrive); [`Client::wait`] on its ticket then returns at once.
    /// `None` when no request is outstanding. Lets a caller handle replies in the order the
    /// server sends them.
    ///
    /// # Errors
    ///
    /// [`ClientError::Timeout`], or the error that closed the connection.
    pub fn wait_any(&mut self) -> Result<Option<u64>, ClientError> {
        loop {
            while let Some(&id) = self.arrival_order.front() {
                if self.arrived.contains_key(&id) {
                    return Ok(Some(id));
                }
                self.arrival_order.pop_front();
            }
            if self.outstanding.is_empty() {
                return Ok(None);
            }
            if let Some(reason) = &self.closed {
                return Err(ClientError::closed(reason.clone()));
            }
            self.pump()?;
        }
    }

    /// Gives up on a ticket: its reply, if here, is dropped, and dropped when it comes.
    pub fn discard<T: ReplyValue>(&mut self, ticket: Ticket<T>) {
        self.outstanding.remove(&ticket.id);
        self.arrived.remove(&ticket.id);
    }

    /// Opens a subscription to the server's block events from `from_event_id` (0: only new
    /// ones) with bodies encoded as `format`. Its frames ([`SubscriptionEvent::Started`]
    /// first, [`SubscriptionEvent::Ended`] last) come from [`Client::next_event`] or
    /// [`Client::events`]; they are queued as they arrive, whatever the client is waiting for.
    ///
    /// # Errors
    ///
    /// A failed write (the client is closed). A refusal by the server comes as the
    /// subscription's first item instead.
    pub fn subscribe(
        &mut self,
        from_event_id: u64,
        format: WireFormat,
    ) -> Result<SubscriptionId, ClientError> {
        self.check_open()?;
        let id = self.next_id;
        let request = Request::Subscribe(Subscribe {
            from_event_id,
            format,
        });
        self.write_request(&request, id)?;
        self.subscriptions.insert(id, SubQueue::default());
        Ok(SubscriptionId(id))
    }

    /// The subscription's next frame, waiting for it if none is queued. `Ok(None)` once its
    /// `Ended` frame (or the error that ended it) was handed out, and for a subscription this
    /// client does not know.
    ///
    /// # Errors
    ///
    /// [`ClientError::Server`] when the server refused or broke off the subscription (the
    /// stream is over); [`ClientError::Timeout`] (the stream goes on); the error that closed
    /// the connection.
    pub fn next_event(
        &mut self,
        subscription: SubscriptionId,
    ) -> Result<Option<SubscriptionEvent>, ClientError> {
        loop {
            let Some(queue) = self.subscriptions.get_mut(&subscription.0) else {
                return Ok(None);
            };
            if let Some(item) = queue.events.pop_front() {
                if queue.done && queue.events.is_empty() {
                    self.subscriptions.remove(&subscription.0);
                }
                return item.map(Some);
            }
            if let Some(reason) = &self.closed {
                let reason = reason.clone();
                self.subscriptions.remove(&subscription.0);
                return Err(ClientError::Closed { reason });
            }
            self.pump()?;
        }
    }

    /// The subscription's frames as an iterator, up to and including `Ended`. It stops after
    /// an error that ends the stream or the connection; a timeout is yielded and iteration
    /// may go on.
    pub fn events(&mut self, subscription: SubscriptionId) -> Events<'_> {
        Events {
            client: self,
            subscription,
            done: false,
        }
    }

    /// Asks the server to stop the subscription; returns whether it knew it. Its `Ended`
    /// frame follows on the subscription's stream.
    ///
    /// # Errors
    ///
    /// See [`Client::wait`].
    pub fn unsubscribe(&mut self, subscription: SubscriptionId) -> Result<bool, ClientError> {
        let ticket: Ticket<bool> = self.send(
            Request::Unsubscribe {
                subscription: subscription.0,
            },
            Expect::new(Opcode::Unsubscribe, 0),
        )?;
        self.wait(&ticket)
    }

    fn check_open(&self) -> Result<(), ClientError> {
        match &self.closed {
            Some(reason) => Err(ClientError::closed(reason.clone())),
            None => Ok(()),
        }
    }

    /// Sends `request` under a fresh id and records it as outstanding.
    fn send<T: ReplyValue>(
        &mut self,
        request: Request<'_>,
        expect: Expect,
    ) -> Result<Ticket<T>, ClientError> {
        self.check_open()?;
        let id = self.next_id;
        self.write_request(&request, id)?;
        self.outstanding.insert(id);
        Ok(Ticket::new(id, expect))
    }

    /// Encodes and writes one request with `id` (then the next id is fresh).
    fn write_request(&mut self, request: &Request<'_>, id: u64) -> Result<(), ClientError> {
        let out = wire::encode(request, id, &self.send_limits)?;
        self.next_id += 1;
        if let Err(e) = write_all(&mut self.stream, &out) {
            let after = self.config.io_timeout().unwrap_or_default();
            self.close_with(format!("writing a request failed: {e}"));
            return Err(if is_timeout(&e) {
                ClientError::Timeout { after }
            } else {
                ClientError::Io(e)
            });
        }
        Ok(())
    }

    /// Reads one frame and files it.
    fn pump(&mut self) -> Result<(), ClientError> {
        match self.inbox.read_frame(&mut self.stream) {
            Ok(frame) => {
                self.route(frame);
                Ok(())
            }
            Err(RecvError::Io(e)) if is_timeout(&e) => Err(ClientError::Timeout {
                after: self.config.io_timeout().unwrap_or_default(),
            }),
            Err(RecvError::Io(e)) => {
                self.close_with(format!("reading a reply failed: {e}"));
                Err(ClientError::Io(e))
            }
            Err(RecvError::Proto(e)) => {
                self.close_with(format!("the server sent an invalid frame: {e}"));
                Err(ClientError::Proto(e))
            }
            Err(RecvError::Eof { mid_frame }) => {
                let reason = if mid_frame {
                    "the server closed the connection in the middle of a frame"
                } else {
                    "the server closed the connection"
                };
                self.close_with(reason.to_string());
                Err(ClientError::closed(reason))
            }
        }
    }

    /// Files a received frame: into its subscription's queue, or as the reply of an
    /// outstanding request; anything else (a discarded ticket's reply, a stray id) is dropped.
    /// A fatal ERROR frame closes the client after it is filed.
    fn route(&mut self, frame: Frame) {
        let id = frame.id();
        let limits = *self.config.limits();
        let fatal = frame.is_fatal_error().then(|| frame.fatal_reason(&limits));
        if let Some(queue) = self.subscriptions.get_mut(&id).filter(|q| !q.done) {
            let item = match frame.response(&limits) {
                Ok(Response::Subscribe(event)) => {
                    Ok(SubscriptionEvent::from_wire(&event, &frame.payload))
                }
                Ok(other) => Err(ClientError::UnexpectedReply {
                    expected: Opcode::Subscribe,
                    got: other.opcode(),
                }),
                Err(e) => Err(e),
            };
            queue.done = matches!(item, Ok(SubscriptionEvent::Ended(_)) | Err(_));
            queue.events.push_back(item);
        } else if self.outstanding.contains(&id) && !self.arrived.contains_key(&id) {
            self.arrived.insert(id, frame);
            self.arrival_order.push_back(id);
        }
        if let Some(reason) = fatal {
            self.close_with(reason);
        }
    }

    fn close_with(&mut self, reason: String) {
        if self.closed.is_none() {
            self.closed = Some(reason);
        }
    }
}

/// Iterator over a subscription's frames: [`Client::events`].
#[derive(Debug)]
pub struct Events<'c> {
    client: &'c mut Client,
    subscription: SubscriptionId,
    done: bool,
}

impl Iterator for Events<'_> {
    type Item = Result<SubscriptionEvent, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.client.next_event(self.subscription) {
            Ok(Some(event)) => {
                self.done = event.is_end();
                Some(Ok(event))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = !matches!(e, ClientError::Timeout { .. });
                Some(Err(e))
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Tries each address `addr` resolves to; the last error if none connects.
fn connect_any(addr: impl ToSocketAddrs, timeout: Option<Duration>) -> io::Result<TcpStream> {
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        let attempt = match timeout.filter(|t| !t.is_zero()) {
            Some(t) => TcpStream::connect_timeout(&a, t),
            None => TcpStream::connect(a),
        };
        match attempt.and_then(|stream| not_to_itself(&stream, a).map(|()| stream)) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    }))
}

/// Refuses a TCP self-connection: with nothing listening on a port of the ephemeral range,
/// a connect can be given that very port as its source and "connect" to itself (then it
/// would hold the port a restarting server needs, and read its own requests back).
pub(crate) fn not_to_itself(stream: &TcpStream, addr: std::net::SocketAddr) -> io::Result<()> {
    if stream.local_addr()? == stream.peer_addr()? {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("nothing listens on {addr} (the connection reached itself)"),
        ));
    }
    Ok(())
}

/// Writes every segment of `out` with as few `writev` calls as the kernel allows.
fn write_all(stream: &mut TcpStream, out: &WriteBuf<'_>) -> io::Result<()> {
    let mut iov = Vec::with_capacity(out.segment_count());
    out.io_slices(0, &mut iov);
    let mut bufs: &mut [IoSlice<'_>] = &mut iov;
    while !bufs.is_empty() {
        match stream.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
