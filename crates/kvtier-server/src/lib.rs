//! kvtier's server IO runtime: everything from sockets to a [`Service`], generic over what
//! frames mean (the protocol crate plugs kvtier's binary operations and RESP in on top).
//!
//! - [`Framer`]: where a frame ends ([`BinaryFramer`]: kvtier's 16-byte little-endian header;
//!   [`LineFramer`]); one per listener, so several protocols share the same IO threads.
//! - IO threads on io_uring or, where the kernel refuses it, epoll ([`Backend`], chosen at
//!   start and logged; [`BACKEND_ENV`] or [`BackendChoice::Force`] pick one). Each owns its
//!   connections in a slab; a connection closes when its entry drops.
//! - Complete frames go into pooled buffers ([`FrameBuf`]) and through a pre-allocated,
//!   sequenced ring to worker threads that call [`Service::handle`]; idle workers park.
//! - Replies ([`Response`]: owned or guarded [`Segment`]s) come back through a per-IO-thread
//!   queue and eventfd, in any order, and leave with vectored writes.
//! - Limits and backpressure: frame size, connections, in-flight requests and queued reply
//!   bytes per connection; a framing error gets the service's error frame, then a close.
//! - [`Echo`] is the reference service (frames back unchanged, zero copy).
//! - [`Server::shutdown`] stops accepting, answers and flushes what is in flight (closing
//!   reply streams without waiting for them), calls [`Service::drain`], and joins every
//!   thread; [`Server::counters`] reads the counters.
//!
//! # For the protocol layer
//!
//! - [`ConnInfo::listener`] says which listener (so which framer and protocol) a request came
//!   on; [`Service::Session`] holds per-connection state (namespace, authentication).
//! - Requests of one connection run concurrently on the workers and may complete in any
//!   order: on the binary port replies carry the request id; state that must precede other
//!   requests (HELLO) is set before its reply is sent, and a client waits for that reply. A
//!   protocol without ids (RESP) uses a listener with
//!   [`ListenerConfig::with_ordered_replies`]: the IO thread writes replies in request order.
//! - [`Context`] may move to another thread and reply later (disk or remote fetches);
//!   [`Response::guarded`] sends bytes straight from memory a guard keeps alive (a reader
//!   guard on arena slots for GET) and drops the guard once they are on the socket.
//! - [`Context::into_stream`] answers one request with many frames over time (SUBSCRIBE): a
//!   [`ReplyStream`] pushes them from any thread with [`ReplyStream::try_send`], which never
//!   blocks and fails with [`StreamError::Congested`] past the connection's queued-bytes
//!   limit and [`StreamError::Closed`] once the connection ends (peer gone, shutdown);
//!   [`ReplyStream::end`] completes the request. The stream holds an in-flight slot until
//!   then; other requests of the connection are answered meanwhile. Refused
//!   ([`StreamRefused`]) on listeners with ordered replies.
//! - [`Service::run_inline`] lets a request that never blocks (a G2 lookup, a GET of host
//!   memory) run on the IO thread, skipping the two thread hand-offs; the rest go to workers.
//!   [`Service::serve_in_place`] goes further for small requests: answered straight from the
//!   read buffer into one reply buffer shared by a pipeline ([`ReplyBuf`]), as redis-server
//!   does.
//! - [`Service::malformed`] writes the protocol's error frame before a framing error closes
//!   the connection; [`Service::drain`] runs once at shutdown, after the last reply.
//! - Writes may raise `SIGPIPE` on a closed peer: Rust binaries ignore it by default; a host
//!   process embedding the server must too.
//!
//! `unsafe` is denied in this crate except in one module, `uring/sys.rs` (io_uring
//! submissions whose buffers must outlive them); its tests also run under AddressSanitizer
//! (`scripts/asan-server.sh`).
//!
//! # Example
//!
//! An upper-casing line service on a free port, driven by a plain `TcpStream`.
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use kvtier_server::{ConnInfo, Context, LineFramer, Request, Response, Server, ServerBuilder, Service};
//!
//! struct Upper;
//! impl Service for Upper {
//!     type Session = ();
//!     fn open(&self, _conn: &ConnInfo) {}
//!     fn handle(&self, ctx: Context<()>, request: Request) {
//!         ctx.reply(Response::from_vec(request.frame().to_ascii_uppercase()));
//!     }
//! }
//!
//! let server: Server = ServerBuilder::new(Upper)
//!     .listen("127.0.0.1:0".parse()?, LineFramer)
//!     .start()?;
//! let mut stream = std::net::TcpStream::connect(server.local_addrs()[0])?;
//! stream.write_all(b"hello\n")?;
//! let mut line = String::new();
//! BufReader::new(&stream).read_line(&mut line)?;
//! assert_eq!(line, "HELLO\n");
//! assert_eq!(server.counters().frames_in, 1);
//! server.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod conn;
mod counters;
mod echo;
mod epoll;
mod framing;
mod in_place;
mod inbox;
mod inline;
mod pool;
mod reply_path;
mod ring;
mod runtime;
mod server;
mod service;
mod stream;
mod tcp;
pub use tcp::check_loopback_congestion;
mod uring;

pub use config::{BACKEND_ENV, Backend, BackendChoice, ListenerConfig};
pub use counters::CountersSnapshot;
pub use echo::Echo;
pub use framing::{
    BINARY_HEADER_LEN, BINARY_VERSION, BinaryFramer, Framer, FramingError, LineFramer,
};
pub use in_place::{InPlace, ReplyBuf};
pub use pool::{FrameBuf, PoolClass};
pub use server::{CountersSource, Server, ServerBuilder, ServerError};
pub use service::{ConnId, ConnInfo, Context, Request, Response, Segment, Service};
pub use stream::{ReplyStream, StreamError, StreamRefused};
