//! Shared fixtures of the server's integration tests: a binary-framed test service (echo,
//! delayed echo from another thread, reply-and-close), frame builders and readers, and the
//! macro that runs one test body on both IO backends.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kvtier_server::{
    Backend, BackendChoice, BinaryFramer, ConnInfo, Context, FramingError, InPlace, ReplyBuf,
    Request, Response, Server, ServerBuilder, Service,
};

/// Echo the frame (as a guarded segment: no copy).
pub const OP_ECHO: u8 = 0;
/// Echo after `flags` milliseconds, replying from another thread.
pub const OP_DELAY: u8 = 1;
/// Echo, then close the connection.
pub const OP_QUIT: u8 = 2;
/// The handler panics (a service bug): only that request is lost.
pub const OP_PANIC: u8 = 3;
/// Reply with the name of the thread that handled the request, run inline on the IO thread.
pub const OP_WHERE_INLINE: u8 = 4;
/// Reply with the name of the thread that handled the request (a worker).
pub const OP_WHERE: u8 = 5;
/// Echo served in place (`Service::serve_in_place`): the frame copied into the reply buffer.
pub const OP_IN_PLACE: u8 = 6;
/// Echo served in place, the payload as a guarded segment between buffered bytes.
pub const OP_IN_PLACE_GUARDED: u8 = 7;
/// Echo served in place, then close.
pub const OP_IN_PLACE_QUIT: u8 = 8;
/// `serve_in_place` panics (a service bug): the connection closes.
pub const OP_IN_PLACE_PANIC: u8 = 9;
/// Echo run inline on the IO thread (`Service::run_inline`), as a guarded segment.
pub const OP_ECHO_INLINE: u8 = 10;
/// Opcode of the error frame the service answers malformed input with.
pub const OP_ERROR: u8 = 0xFF;

#[derive(Default)]
pub struct TestService {
    pub drained: AtomicUsize,
    pub opened: AtomicUsize,
}

impl Service for TestService {
    type Session = ();

    fn open(&self, _conn: &ConnInfo) {
        self.opened.fetch_add(1, Ordering::SeqCst);
    }

    fn handle(&self, ctx: Context<()>, request: Request) {
        let frame = request.frame();
        let (opcode, flags) = (frame[5], u16::from_le_bytes([frame[6], frame[7]]));
        match opcode {
            OP_DELAY => {
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(u64::from(flags)));
                    ctx.reply(Response::new().guarded(request.into_frame()));
                });
            }
            OP_PANIC => panic!("test service asked to panic"),
            OP_WHERE | OP_WHERE_INLINE => {
                let name = std::thread::current()
                    .name()
                    .unwrap_or("?")
                    .as_bytes()
                    .to_vec();
                let id = u64::from_le_bytes(frame[8..16].try_into().unwrap());
                ctx.reply(Response::from_vec(header(16 + name.len(), opcode, 0, id)).owned(name));
            }
            OP_QUIT => ctx.reply_and_close(Response::new().guarded(request.into_frame())),
            _ => ctx.reply(Response::new().guarded(request.into_frame())),
        }
    }

    fn run_inline(&self, _conn: &ConnInfo, frame: &[u8]) -> bool {
        matches!(frame[5], OP_WHERE_INLINE | OP_ECHO_INLINE)
    }

    fn serve_in_place(
        &self,
        _conn: &ConnInfo,
        _session: &(),
        frame: &[u8],
        out: &mut ReplyBuf<'_>,
    ) -> InPlace {
        match frame[5] {
            OP_IN_PLACE => out.extend_from_slice(frame),
            OP_IN_PLACE_GUARDED => {
                out.extend_from_slice(&frame[..16]);
                out.guarded(frame[16..].to_vec());
            }
            OP_IN_PLACE_QUIT => {
                out.extend_from_slice(frame);
                return InPlace::ServedThenClose;
            }
            OP_IN_PLACE_PANIC => panic!("test service asked to panic in place"),
            _ => return InPlace::Declined,
        }
        InPlace::Served
    }

    fn malformed(&self, _conn: &ConnInfo, error: &FramingError) -> Option<Response> {
        let msg = error.to_string().into_bytes();
        Some(Response::from_vec(header(16 + msg.len(), OP_ERROR, 0, 0)).owned(msg))
    }

    fn drain(&self) {
        self.drained.fetch_add(1, Ordering::SeqCst);
    }
}

pub fn header(len: usize, opcode: u8, flags: u16, id: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(16);
    h.extend_from_slice(&(len as u32).to_le_bytes());
    h.push(1);
    h.push(opcode);
    h.extend_from_slice(&flags.to_le_bytes());
    h.extend_from_slice(&id.to_le_bytes());
    h
}

/// A frame of `payload` bytes whose contents depend on `id` (so mixed-up replies show).
pub fn frame(opcode: u8, flags: u16, id: u64, payload: usize) -> Vec<u8> {
    let mut f = header(16 + payload, opcode, flags, id);
    f.extend((0..payload).map(|i| (i as u64).wrapping_mul(31).wrapping_add(id) as u8));
    f
}

/// Reads one whole frame (header included).
pub fn read_frame(stream: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut h = [0u8; 16];
    stream.read_exact(&mut h)?;
    let len = u32::from_le_bytes(h[..4].try_into().unwrap()) as usize;
    let mut f = h.to_vec();
    f.resize(len, 0);
    stream.read_exact(&mut f[16..])?;
    Ok(f)
}

pub fn request_id(frame: &[u8]) -> u64 {
    u64::from_le_bytes(frame[8..16].try_into().unwrap())
}

/// A builder for `service` on 127.0.0.1:0 with the binary framer and `backend` forced.
pub fn builder(service: Arc<TestService>, backend: Backend) -> ServerBuilder<TestService> {
    ServerBuilder::with_shared_service(service)
        .listen("127.0.0.1:0".parse().unwrap(), BinaryFramer::new())
        .with_backend(BackendChoice::Force(backend))
        .with_workers(2)
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Sends `f` and expects it echoed back.
pub fn roundtrip(stream: &mut TcpStream, f: &[u8]) {
    stream.write_all(f).unwrap();
    let back = read_frame(stream).unwrap();
    assert_eq!(back, f, "echo mismatch");
}

/// Writes `request` over and over without reading a reply, until the server stops reading
/// (a write blocks for 500 ms); returns how many were sent.
pub fn flood_until_paused(stream: &mut TcpStream, request: &[u8]) -> usize {
    stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut sent = 0usize;
    while stream.write_all(request).is_ok() {
        sent += 1;
        assert!(sent < 100_000, "server never applied backpressure");
    }
    sent
}

/// Asserts that `server` paused a reader and holds at most `bound` queued reply bytes.
pub fn assert_paused_within(server: &Server, bound: usize) {
    let c = server.counters();
    assert!(c.backpressure_pauses >= 1, "{c:?}");
    assert!(
        c.response_bytes_queued <= bound as u64,
        "queued {} > bound {bound}",
        c.response_bytes_queued
    );
}

/// Waits up to 5 s for `server` to hold no queued reply bytes (after a client went away).
pub fn wait_until_nothing_queued(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.counters().response_bytes_queued > 0 {
        assert!(Instant::now() < deadline, "replies of a closed client kept");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether the peer closed: a read returns EOF or a reset (after an optional frame).
pub fn closed(stream: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(stream.read(&mut b), Ok(0) | Err(_))
}

/// Runs a test body `fn(Backend)` once per backend, as two tests.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn uring() {
                super::$name(kvtier_server::Backend::Uring);
            }
            #[test]
            fn epoll() {
                super::$name(kvtier_server::Backend::Epoll);
            }
        }
    )*};
}
