//! Reply streams (one request, many frames: SUBSCRIBE), on both backends: frames arrive in
//! order before the last reply; other requests of the connection are answered while a stream
//! is open; a client that does not read makes `try_send` refuse frames as congested while the
//! queued bytes stay under the limit; a client that leaves, and a server that shuts down,
//! make `try_send` fail with `Closed` at once; shutdown does not wait for open streams; a
//! listener with ordered replies refuses streams.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::*;
use kvtier_server::{
    Backend, BackendChoice, BinaryFramer, ConnInfo, Context, ListenerConfig, ReplyStream, Request,
    Response, ServerBuilder, Service, StreamError,
};

/// Opens a stream; `flags` is the mode (`MODE_*`), the payload two little-endian `u32`s:
/// a frame count and a frame size.
const OP_SUB: u8 = 10;
/// Ends stream `id` (the request is echoed back).
const OP_UNSUB: u8 = 11;
/// A stream frame of stream `id`: a little-endian `u32` sequence number, then filler.
const OP_EVENT: u8 = 12;
/// A stream's last reply: a little-endian `u64`, the frames it sent.
const OP_END: u8 = 13;
/// The stream was refused: the error's text.
const OP_REFUSED: u8 = 14;

/// Sends `count` frames as fast as it can, then ends.
const MODE_COUNT: u16 = 0;
/// Sends one frame, then waits for UNSUB.
const MODE_UNTIL_UNSUB: u16 = 1;
/// Sends until refused as congested, keeps trying (dropping frames) for a while, reports,
/// then waits for UNSUB.
const MODE_FLOOD: u16 = 2;
/// Sends a frame every 2 ms until refused as closed, reports, ends.
const MODE_UNTIL_CLOSED: u16 = 3;
/// Sends one frame, then holds the stream, sending nothing, until the test releases it;
/// then tries one more frame, reports and ends.
const MODE_QUIET: u16 = 4;

/// What a publisher thread saw.
#[derive(Debug, Clone)]
struct Report {
    id: u64,
    /// Frames `try_send` accepted.
    accepted: u64,
    /// Frames refused as congested.
    congested: u64,
    /// When `try_send` first failed with `Closed`.
    closed_at: Option<Instant>,
    /// `is_closed()` when the publisher stopped.
    is_closed: bool,
}

/// Per connection: the UNSUB signal of each open stream, by request id.
type Subscriptions = Mutex<HashMap<u64, mpsc::Sender<()>>>;

/// What publisher threads and the test share.
struct Publishers {
    reports: mpsc::Sender<Report>,
    /// Lets `MODE_QUIET` publishers go on.
    released: AtomicBool,
    drained: AtomicUsize,
}

impl Publishers {
    fn new() -> (Arc<Self>, mpsc::Receiver<Report>) {
        let (reports, rx) = mpsc::channel();
        let publishers = Self {
            reports,
            released: AtomicBool::new(false),
            drained: AtomicUsize::new(0),
        };
        (Arc::new(publishers), rx)
    }
}

/// Binary frames: `OP_SUB` opens a stream served by a publisher thread, `OP_UNSUB` ends
/// one, anything else is echoed.
struct StreamService(Arc<Publishers>);

fn event(id: u64, seq: u32, size: usize) -> Response {
    let mut f = header(size.max(20), OP_EVENT, 0, id);
    f.extend_from_slice(&seq.to_le_bytes());
    f.resize(size.max(20), seq as u8);
    Response::from_vec(f)
}

fn end_frame(id: u64, sent: u64) -> Response {
    Response::from_vec(header(24, OP_END, 0, id)).owned(sent.to_le_bytes().to_vec())
}

/// One publisher thread: pushes frames on `stream` as `mode` says.
fn publish(
    service: &Publishers,
    stream: ReplyStream<Subscriptions>,
    id: u64,
    mode: u16,
    (count, size): (u32, usize),
    unsub: mpsc::Receiver<()>,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut report = Report {
        id,
        accepted: 0,
        congested: 0,
        closed_at: None,
        is_closed: false,
    };
    let send = |report: &mut Report| match stream.try_send(event(id, report.accepted as u32, size))
    {
        Ok(()) => {
            report.accepted += 1;
            Ok(())
        }
        Err(StreamError::Congested { .. }) => {
            report.congested += 1;
            Ok(())
        }
        Err(e) => {
            assert!(matches!(e, StreamError::Closed { .. }), "{e}");
            report.closed_at.get_or_insert_with(Instant::now);
            Err(())
        }
    };
    match mode {
        MODE_COUNT => {
            for _ in 0..count {
                if send(&mut report).is_err() {
                    break;
                }
            }
        }
        MODE_UNTIL_UNSUB => {
            let _ = send(&mut report);
            let _ = unsub.recv_timeout(Duration::from_secs(20));
        }
        MODE_FLOOD => {
            // A publisher that drops events while its subscriber lags, until every frame has
            // been refused for 200 ms (the kernel's buffers are full too, not only the inbox).
            let mut last_accepted = Instant::now();
            while Instant::now() < deadline && last_accepted.elapsed() < Duration::from_millis(200)
            {
                let before = report.accepted;
                if send(&mut report).is_err() {
                    break;
                }
                if report.accepted > before {
                    last_accepted = Instant::now();
                } else {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            report.is_closed = stream.is_closed();
            let _ = service.reports.send(report.clone());
            let _ = unsub.recv_timeout(Duration::from_secs(20));
        }
        MODE_UNTIL_CLOSED => {
            while Instant::now() < deadline && send(&mut report).is_ok() {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        MODE_QUIET => {
            let _ = send(&mut report);
            while !service.released.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = send(&mut report);
        }
        _ => {}
    }
    report.is_closed = stream.is_closed();
    let sent = report.accepted;
    if mode != MODE_FLOOD {
        let _ = service.reports.send(report);
    }
    stream.end(Some(end_frame(id, sent)));
}

impl Service for StreamService {
    type Session = Subscriptions;

    fn open(&self, _conn: &ConnInfo) -> Subscriptions {
        Mutex::new(HashMap::new())
    }

    fn handle(&self, ctx: Context<Subscriptions>, request: Request) {
        let frame = request.frame();
        let (opcode, mode, id) = (
            frame[5],
            u16::from_le_bytes([frame[6], frame[7]]),
            request_id(frame),
        );
        match opcode {
            OP_SUB => {
                let arg = |i: usize| {
                    u32::from_le_bytes(frame[16 + 4 * i..20 + 4 * i].try_into().unwrap())
                };
                let params = (arg(0), arg(1) as usize);
                let stream = match ctx.into_stream() {
                    Ok(stream) => stream,
                    Err(refused) => {
                        let text = refused.to_string().into_bytes();
                        let reply = Response::from_vec(header(16 + text.len(), OP_REFUSED, 0, id));
                        refused.into_context().reply(reply.owned(text));
                        return;
                    }
                };
                let (unsub_tx, unsub) = mpsc::channel();
                stream.session().lock().unwrap().insert(id, unsub_tx);
                let service = self.0.clone();
                std::thread::spawn(move || publish(&service, stream, id, mode, params, unsub));
            }
            OP_UNSUB => {
                if let Some(unsub) = ctx.session().lock().unwrap().remove(&id) {
                    let _ = unsub.send(());
                }
                ctx.reply(Response::new().guarded(request.into_frame()));
            }
            _ => ctx.reply(Response::new().guarded(request.into_frame())),
        }
    }

    fn drain(&self) {
        self.0.drained.fetch_add(1, Ordering::SeqCst);
    }
}

fn sub(id: u64, mode: u16, count: u32, size: u32) -> Vec<u8> {
    let mut f = header(24, OP_SUB, mode, id);
    f.extend_from_slice(&count.to_le_bytes());
    f.extend_from_slice(&size.to_le_bytes());
    f
}

fn start(publishers: &Arc<Publishers>, backend: Backend) -> ServerBuilder<StreamService> {
    ServerBuilder::new(StreamService(publishers.clone()))
        .listen("127.0.0.1:0".parse().unwrap(), BinaryFramer::new())
        .with_backend(BackendChoice::Force(backend))
        .with_workers(2)
}

fn opcode(f: &[u8]) -> u8 {
    f[5]
}

fn seq(f: &[u8]) -> u32 {
    u32::from_le_bytes(f[16..20].try_into().unwrap())
}

fn end_count(f: &[u8]) -> u64 {
    u64::from_le_bytes(f[16..24].try_into().unwrap())
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Reads frames of stream `id`, from sequence number `from` on, until its last reply; returns
/// the frames the stream sent (checked in order) and any other frames read meanwhile.
fn read_stream(s: &mut TcpStream, id: u64, from: u32, size: usize) -> (u64, Vec<Vec<u8>>) {
    let mut next = from;
    let mut others = Vec::new();
    loop {
        let f = read_frame(s).expect("stream frame");
        match opcode(&f) {
            OP_EVENT if request_id(&f) == id => {
                assert_eq!(seq(&f), next, "stream frames out of order");
                assert_eq!(f.len(), size.max(20));
                next += 1;
            }
            OP_END if request_id(&f) == id => {
                assert_eq!(end_count(&f), u64::from(next), "frames lost before the end");
                return (u64::from(next), others);
            }
            _ => others.push(f),
        }
    }
}

fn frames_arrive_in_order_then_the_last_reply(backend: Backend) {
    let (service, reports) = Publishers::new();
    let server = start(&service, backend).start().unwrap();
    let mut s = connect(server.local_addrs()[0]);
    let n = 2000;
    s.write_all(&sub(7, MODE_COUNT, n, 100)).unwrap();
    let (got, others) = read_stream(&mut s, 7, 0, 100);
    assert_eq!(got, u64::from(n));
    assert!(others.is_empty(), "{} stray frames", others.len());
    let report = reports.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((report.accepted, report.congested), (u64::from(n), 0));
    let c = server.counters();
    assert_eq!(c.stream_frames, u64::from(n));
    assert_eq!(c.frames_out, u64::from(n) + 1);
    assert_eq!(c.streams_open, 0, "ended before its last reply was written");
    // The connection serves ordinary requests after the stream.
    roundtrip(&mut s, &frame(OP_ECHO, 0, 8, 10));
    server.shutdown().unwrap();
}

fn other_requests_are_answered_while_a_stream_is_open(backend: Backend) {
    let (service, reports) = Publishers::new();
    let server = start(&service, backend).start().unwrap();
    let mut s = connect(server.local_addrs()[0]);
    s.write_all(&sub(1, MODE_UNTIL_UNSUB, 0, 64)).unwrap();
    let first = read_frame(&mut s).unwrap();
    assert_eq!(
        (opcode(&first), request_id(&first), seq(&first)),
        (OP_EVENT, 1, 0)
    );
    assert_eq!(server.counters().streams_open, 1);
    // Pipelined requests on the same connection, answered while the stream stays open.
    let echoes: Vec<Vec<u8>> = (100..150).map(|id| frame(OP_ECHO, 0, id, 300)).collect();
    s.write_all(&echoes.concat()).unwrap();
    let mut ids = HashSet::new();
    for _ in 0..echoes.len() {
        let back = read_frame(&mut s).unwrap();
        assert_eq!(back, echoes[request_id(&back) as usize - 100]);
        ids.insert(request_id(&back));
    }
    assert_eq!(ids.len(), echoes.len());
    assert_eq!(
        server.counters().streams_open,
        1,
        "the stream is still open"
    );
    assert!(reports.try_recv().is_err(), "the publisher ended early");
    // UNSUB ends it: its echo and the stream's last reply, in either order.
    let unsub = header(16, OP_UNSUB, 0, 1);
    s.write_all(&unsub).unwrap();
    let (got, others) = read_stream(&mut s, 1, 1, 64);
    assert_eq!(got, 1);
    if others.is_empty() {
        assert_eq!(read_frame(&mut s).unwrap(), unsub);
    } else {
        assert_eq!(others, [unsub]);
    }
    wait_until("stream gauge back to 0", || {
        server.counters().streams_open == 0
    });
    server.shutdown().unwrap();
}

fn slow_reader_gets_congested_and_queued_bytes_stay_bounded(backend: Backend) {
    let (service, reports) = Publishers::new();
    let limit = 256 << 10;
    let size = 8 << 10;
    let server = start(&service, backend)
        .with_max_queued_response_bytes(limit)
        .start()
        .unwrap();
    let mut s = connect(server.local_addrs()[0]);
    // Subscribe, then read nothing until the publisher has been refused for a while.
    s.write_all(&sub(3, MODE_FLOOD, 0, size as u32)).unwrap();
    let report = reports.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(report.congested > 0, "{report:?}");
    assert!(!report.is_closed, "congested is not closed");
    let c = server.counters();
    assert!(c.stream_congested >= report.congested, "{c:?}");
    assert_eq!(c.stream_frames, report.accepted);
    // Refused because the queue is full (not a transient burst), and never past the limit.
    assert!(
        c.response_bytes_queued <= limit as u64,
        "queued {} > limit {limit}",
        c.response_bytes_queued
    );
    assert!(c.response_bytes_queued >= limit as u64 / 2, "{c:?}");
    // Now read: every accepted frame arrives, in order, then the last reply after UNSUB.
    let mut writer = s.try_clone().unwrap();
    let unsub = header(16, OP_UNSUB, 0, 3);
    let unsubscriber = std::thread::spawn(move || writer.write_all(&unsub));
    let (got, others) = read_stream(&mut s, 3, 0, size);
    unsubscriber.join().unwrap().unwrap();
    assert_eq!(got, report.accepted);
    if others.is_empty() {
        assert_eq!(opcode(&read_frame(&mut s).unwrap()), OP_UNSUB);
    }
    assert_eq!(server.counters().response_bytes_queued, 0);
    server.shutdown().unwrap();
}

fn closing_the_client_closes_the_stream(backend: Backend) {
    let (service, reports) = Publishers::new();
    let server = start(&service, backend).start().unwrap();
    let mut s = connect(server.local_addrs()[0]);
    s.write_all(&sub(4, MODE_UNTIL_CLOSED, 0, 32)).unwrap();
    for i in 0..3 {
        assert_eq!(seq(&read_frame(&mut s).unwrap()), i);
    }
    drop(s);
    let left = Instant::now();
    let report = reports.recv_timeout(Duration::from_secs(10)).unwrap();
    let closed_at = report.closed_at.expect("try_send never failed with Closed");
    assert!(
        closed_at.saturating_duration_since(left) < Duration::from_secs(2),
        "Closed came {:?} after the client left",
        closed_at.saturating_duration_since(left)
    );
    assert!(report.is_closed);
    wait_until("connection and stream gone", || {
        let c = server.counters();
        c.connections_open == 0 && c.streams_open == 0
    });
    server.shutdown().unwrap();
}

fn shutdown_closes_open_streams_without_waiting(backend: Backend) {
    let (service, reports) = Publishers::new();
    // The default shutdown timeout (30 s): waiting on a stream would show.
    let server = start(&service, backend).start().unwrap();
    let mut s = connect(server.local_addrs()[0]);
    s.write_all(&[sub(5, MODE_QUIET, 0, 32), sub(6, MODE_UNTIL_CLOSED, 0, 32)].concat())
        .unwrap();
    // Both streams open, and the quiet one has sent its one frame.
    while request_id(&read_frame(&mut s).unwrap()) != 5 {}
    wait_until("both streams open", || server.counters().streams_open == 2);
    let started = Instant::now();
    server.shutdown().unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert_eq!(service.drained.load(Ordering::SeqCst), 1);
    // The chatty publisher was told; the quiet one still holds its stream, now closed.
    let chatty = reports.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(chatty.id, 6);
    assert!(chatty.closed_at.is_some() && chatty.is_closed, "{chatty:?}");
    service.released.store(true, Ordering::SeqCst);
    let quiet = reports.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(quiet.id, 5);
    assert_eq!(quiet.accepted, 1, "the frame after shutdown was accepted");
    assert!(quiet.closed_at.is_some() && quiet.is_closed, "{quiet:?}");
    // The connection was closed: whatever was written before, then EOF (not a timeout).
    let end = loop {
        match read_frame(&mut s) {
            Ok(f) => assert!(matches!(opcode(&f), OP_EVENT | OP_END), "{f:?}"),
            Err(e) => break e.kind(),
        }
    };
    assert!(
        matches!(
            end,
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        ),
        "{end:?}"
    );
}

fn ordered_listener_refuses_streams(backend: Backend) {
    let (service, _reports) = Publishers::new();
    let listener = ListenerConfig::new("127.0.0.1:0".parse().unwrap(), BinaryFramer::new())
        .with_ordered_replies(true);
    let server = ServerBuilder::new(StreamService(service))
        .with_listener(listener)
        .with_backend(BackendChoice::Force(backend))
        .start()
        .unwrap();
    let mut s = connect(server.local_addrs()[0]);
    let echo = frame(OP_ECHO, 0, 2, 50);
    s.write_all(&[sub(1, MODE_COUNT, 10, 32), echo.clone()].concat())
        .unwrap();
    let refused = read_frame(&mut s).unwrap();
    assert_eq!((opcode(&refused), request_id(&refused)), (OP_REFUSED, 1));
    let text = String::from_utf8_lossy(&refused[16..]).into_owned();
    assert!(text.contains("ordered replies"), "{text}");
    // Replies stay in request order, and the connection keeps working.
    assert_eq!(read_frame(&mut s).unwrap(), echo);
    let c = server.counters();
    assert_eq!((c.streams_open, c.stream_frames), (0, 0));
    server.shutdown().unwrap();
}

#[test]
fn reply_stream_and_its_errors_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<ReplyStream<Subscriptions>>();
    send::<StreamError>();
}

on_both_backends!(
    frames_arrive_in_order_then_the_last_reply,
    other_requests_are_answered_while_a_stream_is_open,
    slow_reader_gets_congested_and_queued_bytes_stay_bounded,
    closing_the_client_closes_the_stream,
    shutdown_closes_open_streams_without_waiting,
    ordered_listener_refuses_streams,
);
