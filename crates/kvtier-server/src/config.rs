//! The server's knobs: which IO backend, how many threads, limits, pool sizes. Plain data
//! (`ServerConfig`), set through [`ServerBuilder`](crate::ServerBuilder)'s `with_*` setters.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use crate::framing::Framer;

use crate::pool::PoolClass;

/// Environment variable that picks the IO backend when the configuration says
/// [`BackendChoice::Auto`]: `uring`, `epoll` or `auto`.
pub const BACKEND_ENV: &str = "KVTIER_IO_BACKEND";

/// An IO backend the server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Completion-based: io_uring (accept, recv, writev and the wake-up eventfd as
    /// submissions).
    Uring,
    /// Readiness-based: epoll through `mio`; works wherever io_uring is refused.
    Epoll,
}

impl Backend {
    /// Both backends, for tests that run everything on each.
    pub const ALL: [Backend; 2] = [Backend::Uring, Backend::Epoll];

    /// The backend's lowercase name (`uring`, `epoll`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Uring => "uring",
            Backend::Epoll => "epoll",
        }
    }
}

/// How the backend is chosen at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// [`BACKEND_ENV`] if set, else io_uring when the kernel allows it, else epoll.
    #[default]
    Auto,
    /// This backend or a start error (io_uring refused is an error, not a fallback).
    Force(Backend),
}

/// Every knob of the runtime; defaults in [`ServerConfig::default`].
#[derive(Debug, Clone)]
pub(crate) struct ServerConfig {
    pub backend: BackendChoice,
    pub io_threads: usize,
    pub workers: usize,
    pub max_frame_bytes: usize,
    pub max_connections: usize,
    pub max_in_flight_per_conn: usize,
    pub max_in_flight_bytes_per_conn: usize,
    pub max_queued_response_bytes: usize,
    pub read_buffer_bytes: usize,
    pub pool_classes: Vec<PoolClass>,
    pub pool_spare_bytes: usize,
    pub ring_slots: usize,
    pub worker_batch: usize,
    pub worker_spins: u32,
    pub shutdown_timeout: Duration,
    pub loopback_congestion: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            backend: BackendChoice::Auto,
            // Half the cores, rounded up: IO threads do the socket copies (the bulk of the
            // CPU for block traffic), workers need the rest for lookups, arena copies and
            // the disk tier. On 2 cores: 1 (the echo bench's second IO thread helped only
            // from 4 connections on, on a noisy shared machine; `with_io_threads(2)`).
            io_threads: cores.div_ceil(2).max(1),
            workers: cores.max(1),
            max_frame_bytes: 64 << 20,
            max_connections: 4096,
            max_in_flight_per_conn: 128,
            max_in_flight_bytes_per_conn: 64 << 20,
            max_queued_response_bytes: 16 << 20,
            read_buffer_bytes: 64 << 10,
            pool_classes: vec![
                PoolClass {
                    chunk_bytes: 4 << 10,
                    count: 1024,
                },
                PoolClass {
                    chunk_bytes: (256 << 10) + (4 << 10),
                    count: 64,
                },
                PoolClass {
                    chunk_bytes: (1 << 20) + (4 << 10),
                    count: 32,
                },
            ],
            pool_spare_bytes: 256 << 20,
            ring_slots: 4096,
            worker_batch: 32,
            worker_spins: 200,
            shutdown_timeout: Duration::from_secs(30),
            loopback_congestion: None,
        }
    }
}

/// One listener: where it listens, how its bytes are cut into frames, and the limits that
/// differ from the server's (a RESP port wants in-order replies and its own frame limit).
///
/// # Examples
///
/// ```
/// use kvtier_server::{LineFramer, ListenerConfig};
///
/// let text = ListenerConfig::new("127.0.0.1:0".parse()?, LineFramer)
///     .with_ordered_replies(true)
///     .with_max_frame_bytes(4096);
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
pub struct ListenerConfig {
    pub(crate) bind: Bind,
    pub(crate) framer: Arc<dyn Framer>,
    pub(crate) ordered: bool,
    pub(crate) max_frame_bytes: Option<usize>,
    pub(crate) max_in_flight_per_conn: Option<usize>,
}

pub(crate) enum Bind {
    Addr(SocketAddr),
    Bound(TcpListener),
}

impl ListenerConfig {
    /// Listens on `addr` (port 0: any free port) with `framer`.
    pub fn new(addr: SocketAddr, framer: impl Framer) -> Self {
        Self::with_bind(Bind::Addr(addr), framer)
    }

    /// Uses an already bound listener.
    pub fn from_listener(listener: TcpListener, framer: impl Framer) -> Self {
        Self::with_bind(Bind::Bound(listener), framer)
    }

    fn with_bind(bind: Bind, framer: impl Framer) -> Self {
        Self {
            bind,
            framer: Arc::new(framer),
            ordered: false,
            max_frame_bytes: None,
            max_in_flight_per_conn: None,
        }
    }

    /// Write each connection's replies in request order, whatever order the workers finish
    /// in (protocols without request ids: RESP). A reply that finishes early waits, counted
    /// in the connection's queued bytes. Reply streams are refused on such a listener
    /// ([`Context::into_stream`](crate::Context::into_stream)): one would hold back every
    /// later reply. Default: false (replies leave as they complete).
    pub fn with_ordered_replies(mut self, ordered: bool) -> Self {
        self.ordered = ordered;
        self
    }

    /// Largest frame on this listener. Default: the server's `max_frame_bytes`.
    pub fn with_max_frame_bytes(mut self, n: usize) -> Self {
        self.max_frame_bytes = Some(n);
        self
    }

    /// In-flight requests per connection on this listener. Default: the server's.
    pub fn with_max_in_flight_per_conn(mut self, n: usize) -> Self {
        self.max_in_flight_per_conn = Some(n);
        self
    }
}

impl std::fmt::Debug for ListenerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bind = match &self.bind {
            Bind::Addr(a) => format!("{a}"),
            Bind::Bound(l) => format!("{:?}", l.local_addr()),
        };
        f.debug_struct("ListenerConfig")
            .field("bind", &bind)
            .field("framer", &self.framer)
            .field("ordered", &self.ordered)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("max_in_flight_per_conn", &self.max_in_flight_per_conn)
            .finish()
    }
}
