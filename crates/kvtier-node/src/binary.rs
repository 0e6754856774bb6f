//! kvtier's binary protocol over a [`BlockStore`]: one frame in, one reply out (SUBSCRIBE: a
//! stream of them), per `docs/protocol.md`.
//!
//! - **Sessions.** HELLO checks the version and the token and sets the connection's
//!   namespace; every hash the connection names is scoped into it ([`Scope`]). With a token
//!   configured, every request before a successful HELLO gets `HELLO_REQUIRED`; a wrong token
//!   gets a fatal `AUTH_FAILED` and the connection closes. Without one, a connection that
//!   never says HELLO works in the default namespace.
//! - **Where requests run.** GET, MATCH, EXISTS, STATS and PING never wait on a disk when their
//!   blocks are in host memory, so they run inline on the IO thread ([`Binary::run_inline`]);
//!   a GET that needs the disk moves to the slow lane. PUT and DELETE run on the workers.
//! - **GET replies** are written from the arena: each G2 block is a guarded segment holding
//!   its slot until the bytes are on the socket.
//! - **SUBSCRIBE** streams G2's block events (`subscribe.rs`).
//! - **Errors.** A frame that cannot be decoded gets a fatal ERROR frame, then the connection
//!   closes; a request the server cannot serve (no space, disk failure) gets a non-fatal one.

use std::sync::Arc;

use kvtier_core::SequenceHash;
use kvtier_proto::{
    BlockResult, ErrorCode, GetBlocks, HashList, Hello, Limits, ProtoError, Request, Response,
    ServerInfo, Stat, TierId, VERSION, WriteBuf, decode_request, encode_error, peek_request_id,
};
use kvtier_server::{Context, FramingError};
use parking_lot::Mutex;

use crate::counters::StoreCounters;
use crate::lane::Lane;
use crate::scope::Scope;
use crate::service::Session;
use crate::store::{BlockStore, Fetched};

/// Segments shorter than this are copied into the frame's metadata by the encoder (its
/// `COPY_BELOW`); only longer ones can be a block's own bytes.
const SHORTEST_BORROWED: usize = 64;

/// Per-connection state of the binary protocol.
#[derive(Debug)]
pub(crate) struct BinarySession {
    state: Mutex<SessionState>,
}

#[derive(Debug, Clone)]
struct SessionState {
    scope: Arc<Scope>,
    authed: bool,
}

impl BinarySession {
    pub(crate) fn new(needs_auth: bool) -> Self {
        Self {
            state: Mutex::new(SessionState {
                scope: Arc::new(Scope::default_namespace()),
                authed: !needs_auth,
            }),
        }
    }

    fn state(&self) -> SessionState {
        self.state.lock().clone()
    }
}

/// The binary protocol's handler.
pub(crate) struct Binary {
    pub(crate) store: Arc<BlockStore>,
    pub(crate) limits: Limits,
    pub(crate) token: Option<Vec<u8>>,
    pub(crate) lane: Lane,
    pub(crate) server_name: String,
    /// The IO runtime's counters, set once the server started.
    pub(crate) server_counters: std::sync::OnceLock<kvtier_server::CountersSource>,
    /// Open SUBSCRIBE streams.
    pub(crate) subscriptions: crate::subscribe::Subscriptions,
}

impl Binary {
    /// Every counter of the node (tiers, protocol, IO runtime), by name.
    pub(crate) fn stats(&self) -> Vec<(String, u64)> {
        let mut stats = self.store.stats();
        if let Some(source) = self.server_counters.get() {
            stats.extend(crate::metrics::server_stats(&source()));
        }
        stats
    }

    /// Whether the frame is handled on the IO thread: reads of memory only.
    pub(crate) fn run_inline(frame: &[u8]) -> bool {
        matches!(
            frame.get(5).copied(),
            Some(
                0x03 /* GET */ | 0x04 /* MATCH */ | 0x05 /* EXISTS */ | 0x07 /* STATS */ | 0x0A /* PING */
            )
        )
    }

    /// The ERROR frame written before a framing error closes the connection.
    pub(crate) fn malformed(&self, error: &FramingError) -> kvtier_server::Response {
        self.error_frame(0, ErrorCode::Malformed, true, &error.to_string())
    }

    /// Handles one frame.
    pub(crate) fn handle(self: &Arc<Self>, ctx: Context<Session>, frame: &[u8]) {
        let Session::Binary(session) = &**ctx.session() else {
            return;
        };
        let (id, request) = match decode_request(frame, &self.limits) {
            Ok((header, request)) => (header.request_id, request),
            Err(e) => {
                let id = peek_request_id(frame).unwrap_or(0);
                let reply = self.error_frame(id, e.code(), true, &e.to_string());
                ctx.reply_and_close(reply);
                return;
            }
        };
        let state = session.state();
        if let Request::Hello(hello) = request {
            self.hello(ctx, id, &hello);
            return;
        }
        if !state.authed {
            let reply = self.error_frame(
                id,
                ErrorCode::HelloRequired,
                false,
                "HELLO with the server's token first",
            );
            ctx.reply(reply);
            return;
        }
        let scope = &state.scope;
        let counters = &self.store.counters;
        let result = match request {
            Request::Put { durable, blocks } => {
                let pairs: Vec<(SequenceHash, &[u8])> =
                    blocks.iter().map(|(h, b)| (scope.scoped(h), b)).collect();
                match self.store.put(&pairs, durable) {
                    Ok(status) => self.encode(id, &Response::Put(status)),
                    Err(e) => Ok(self.error_frame(id, e.code(), false, &e.to_string())),
                }
            }
            Request::Get(list) => {
                self.get(ctx, id, scope, list);
                return;
            }
            Request::Match(list) => {
                StoreCounters::add(&counters.requests_match, 1);
                let found = self.store.locate(&scoped(scope, list));
                StoreCounters::add(&counters.match_blocks, found.len());
                self.encode(id, &Response::Match(found))
            }
            Request::Exists(list) => {
                StoreCounters::add(&counters.requests_exists, 1);
                self.encode(
                    id,
                    &Response::Exists(self.store.exists(&scoped(scope, list))),
                )
            }
            Request::Delete(list) => {
                let deleted = self.store.delete(&scoped(scope, list));
                self.encode(id, &Response::Delete(deleted))
            }
            Request::Stats => {
                StoreCounters::add(&counters.requests_stats, 1);
                let stats = self.stats();
                let stats: Vec<Stat<'_>> = stats
                    .iter()
                    .take(self.limits.max_stats_entries as usize)
                    .map(|(name, value)| Stat {
                        name,
                        value: *value,
                    })
                    .collect();
                self.encode(id, &Response::Stats(stats))
            }
            Request::Ping(bytes) => {
                StoreCounters::add(&counters.requests_ping, 1);
                self.encode(id, &Response::Pong(bytes))
            }
            Request::Subscribe(subscribe) => {
                StoreCounters::add(&counters.requests_subscribe, 1);
                crate::subscribe::subscribe(self, ctx, id, subscribe);
                return;
            }
            Request::Unsubscribe { subscription } => {
                let found = self.subscriptions.unsubscribe(ctx.conn().id, subscription);
                self.encode(id, &Response::Unsubscribe { found })
            }
            _ => Ok(self.error_frame(id, ErrorCode::UnknownOpcode, false, "unsupported request")),
        };
        match result {
            Ok(reply) => ctx.reply(reply),
            Err(e) => ctx.reply(self.error_frame(id, ErrorCode::Internal, false, &e.to_string())),
        }
    }

    fn hello(&self, ctx: Context<Session>, id: u64, hello: &Hello<'_>) {
        StoreCounters::add(&self.store.counters.requests_hello, 1);
        if hello.version != u16::from(VERSION) {
            let msg = format!(
                "protocol version {} is not served (this server speaks {VERSION})",
                hello.version
            );
            ctx.reply_and_close(self.error_frame(id, ErrorCode::UnsupportedVersion, true, &msg));
            return;
        }
        if let Some(token) = &self.token
            && hello.token != Some(token.as_slice())
        {
            StoreCounters::add(&self.store.counters.auth_failures, 1);
            ctx.reply_and_close(self.error_frame(
                id,
                ErrorCode::AuthFailed,
                true,
                "bad or missing token",
            ));
            return;
        }
        if let Session::Binary(session) = &**ctx.session() {
            *session.state.lock() = SessionState {
                scope: Arc::new(Scope::new(hello.namespace)),
                authed: true,
            };
        }
        let info = ServerInfo {
            version: u16::from(VERSION),
            block_bytes: u32::try_from(self.store.block_bytes()).unwrap_or(u32::MAX),
            max_frame_bytes: self.limits.max_frame_bytes,
            max_blocks_per_request: self.limits.max_blocks_per_request,
            instance: self.store.publisher().instance(),
            server: &self.server_name,
        };
        match self.encode(id, &Response::Hello(info)) {
            Ok(reply) => ctx.reply(reply),
            Err(e) => ctx.reply(self.error_frame(id, ErrorCode::Internal, false, &e.to_string())),
        }
    }

    /// GET: G2 hits at once; when some block is only on disk, the rest runs on the slow lane.
    fn get(self: &Arc<Self>, ctx: Context<Session>, id: u64, scope: &Scope, list: HashList<'_>) {
        let counters = &self.store.counters;
        StoreCounters::add(&counters.requests_get, 1);
        let hashes = scoped(scope, list);
        let held = self.store.get_host(&hashes);
        let lower: Vec<usize> = (0..hashes.len())
            .filter(|&k| held[k].is_none() && self.store.in_lower(hashes[k]))
            .collect();
        let mut fetched: Vec<Fetched> = held
            .into_iter()
            .map(|h| h.map_or(Fetched::Missing, Fetched::Host))
            .collect();
        if lower.is_empty() {
            self.finish_get(ctx, id, fetched);
            return;
        }
        StoreCounters::add(&counters.get_slow_path, 1);
        let this = Arc::clone(self);
        self.lane.submit(move || {
            for k in lower {
                fetched[k] = this.store.get_lower(hashes[k]);
            }
            this.finish_get(ctx, id, fetched);
        });
    }

    fn finish_get(&self, ctx: Context<Session>, id: u64, fetched: Vec<Fetched>) {
        let counters = &self.store.counters;
        for f in &fetched {
            let c = match f {
                Fetched::Host(_) => &counters.get_hits_g2,
                Fetched::Lower(..) => &counters.get_hits_lower,
                Fetched::Missing => &counters.get_misses,
            };
            StoreCounters::add(c, 1);
        }
        match get_reply(id, fetched, &self.limits) {
            Ok(reply) => ctx.reply(reply),
            Err(e) => ctx.reply(self.error_frame(id, e.code(), false, &e.to_string())),
        }
    }

    /// Encodes a reply that borrows nothing it has to keep (everything but GET).
    pub(crate) fn encode(
        &self,
        id: u64,
        response: &Response<'_>,
    ) -> Result<kvtier_server::Response, ProtoError> {
        let mut out = WriteBuf::new();
        response.encode(id, &self.limits, &mut out)?;
        Ok(kvtier_server::Response::from_vec(out.to_vec()))
    }

    pub(crate) fn error_frame(
        &self,
        id: u64,
        code: ErrorCode,
        fatal: bool,
        message: &str,
    ) -> kvtier_server::Response {
        StoreCounters::add(&self.store.counters.errors_sent, 1);
        let mut out = WriteBuf::new();
        // Only fails for limits too small to hold a header, which `Limits` never are.
        let _ = encode_error(&mut out, id, code, fatal, message, &self.limits);
        kvtier_server::Response::from_vec(out.to_vec())
    }
}

/// The hashes of `list`, scoped into the session's namespace.
fn scoped(scope: &Scope, list: HashList<'_>) -> Vec<SequenceHash> {
    let mut out = Vec::with_capacity(list.len());
    scope.scope_all(list.iter(), &mut out);
    out
}

/// Bytes of a GET result, if any.
fn bytes_of(f: &Fetched) -> Option<&[u8]> {
    match f {
        Fetched::Host(s) => Some(s.bytes()),
        Fetched::Lower(_, v) => Some(v),
        Fetched::Missing => None,
    }
}

/// A GET reply whose block bytes are the results themselves: G2 blocks go out as guarded
/// segments (written from the arena, the slot held until sent), disk reads as owned buffers.
fn get_reply(
    id: u64,
    fetched: Vec<Fetched>,
    limits: &Limits,
) -> Result<kvtier_server::Response, ProtoError> {
    enum Piece {
        Meta(Vec<u8>),
        Held(usize),
    }
    let mut plan = Vec::with_capacity(2 * fetched.len() + 1);
    {
        let results: Vec<BlockResult<'_>> = fetched
            .iter()
            .map(|f| match f {
                Fetched::Host(s) => BlockResult::Found {
                    tier: TierId::G2,
                    bytes: s.bytes(),
                },
                Fetched::Lower(tier, v) => BlockResult::Found {
                    tier: *tier,
                    bytes: v,
                },
                Fetched::Missing => BlockResult::Missing,
            })
            .collect();
        let mut out = WriteBuf::new();
        kvtier_proto::Response::Get(GetBlocks::new(&results)).encode(id, limits, &mut out)?;
        // Borrowed segments come in result order: match each against the next result that
        // can have been borrowed; anything else is metadata.
        let mut next = 0;
        let skip = |mut k: usize| {
            while k < fetched.len()
                && bytes_of(&fetched[k]).is_none_or(|b| b.len() < SHORTEST_BORROWED)
            {
                k += 1;
            }
            k
        };
        next = skip(next);
        for seg in out.segments() {
            let held = fetched
                .get(next)
                .and_then(bytes_of)
                .is_some_and(|b| std::ptr::eq(b.as_ptr(), seg.as_ptr()) && b.len() == seg.len());
            if held {
                plan.push(Piece::Held(next));
                next = skip(next + 1);
            } else {
                plan.push(Piece::Meta(seg.to_vec()));
            }
        }
    }
    let mut slots: Vec<Option<Fetched>> = fetched.into_iter().map(Some).collect();
    let mut reply = kvtier_server::Response::new();
    for piece in plan {
        reply = match piece {
            Piece::Meta(bytes) => reply.owned(bytes),
            Piece::Held(k) => match slots.get_mut(k).and_then(Option::take) {
                Some(Fetched::Host(s)) => reply.guarded(s),
                Some(Fetched::Lower(_, v)) => reply.owned(v),
                _ => reply,
            },
        };
    }
    Ok(reply)
}
