//! Unit tests of the connection state: framing across odd reads, caps, ordered replies,
//! partial writes, pending bytes and closing with open streams, and property tests that no
//! byte stream makes framing panic.

use super::*;
use crate::framing::{BinaryFramer, LineFramer};
use crate::pool::PoolClass;
use crate::service::ConnId;

fn conn(framer: Arc<dyn Framer>, max_in_flight: usize) -> (Conn<()>, BufferPool) {
    conn_with(framer, max_in_flight, false)
}

fn conn_with(
    framer: Arc<dyn Framer>,
    max_in_flight: usize,
    ordered: bool,
) -> (Conn<()>, BufferPool) {
    let counters = Arc::new(Counters::default());
    counters.conn_opened();
    let pool = BufferPool::new(
        &[PoolClass {
            chunk_bytes: 1 << 16,
            count: 4,
        }],
        1 << 20,
        counters.clone(),
    );
    let info = ConnInfo {
        id: ConnId(1),
        listener: 0,
        peer: "127.0.0.1:1".parse().unwrap(),
        io_thread: 0,
    };
    let limits = Limits {
        max_frame: 1 << 20,
        max_in_flight,
        max_in_flight_bytes: 1 << 20,
        max_queued: 1 << 20,
        read_buffer: 256,
    };
    let spec = ListenerSpec {
        framer,
        ordered,
        limits,
    };
    let inbox = Arc::new(Inbox::new().unwrap());
    (Conn::new(info, (), &spec, counters, inbox, 0), pool)
}

fn feed(c: &mut Conn<()>, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let buf = c.read_buf();
        let n = buf.len().min(bytes.len()).min(7); // odd-sized reads
        buf[..n].copy_from_slice(&bytes[..n]);
        c.on_read(n);
        bytes = &bytes[n..];
    }
}

fn frame(len: usize, fill: u8) -> Vec<u8> {
    let mut f = vec![fill; len];
    f[..4].copy_from_slice(&(len as u32).to_le_bytes());
    f[4] = 1;
    f
}

#[test]
fn cuts_small_and_long_frames_across_odd_reads() {
    let (mut c, pool) = conn(Arc::new(BinaryFramer::new()), 100);
    let frames = [frame(16, 1), frame(100, 2), frame(40_000, 3), frame(20, 4)];
    let mut out = Vec::new();
    for f in &frames {
        // Feed byte by byte in small pieces, cutting as a backend would after each read.
        for piece in f.chunks(999) {
            feed(&mut c, piece);
            c.cut_frames(&pool, &mut out).unwrap();
        }
    }
    let got: Vec<Vec<u8>> = out.iter().map(|(_, b)| b.as_slice().to_vec()).collect();
    assert_eq!(got, frames.to_vec());
    assert_eq!(c.in_flight, 4);
}

#[test]
fn in_flight_cap_holds_frames_back_until_completion() {
    let (mut c, pool) = conn(Arc::new(LineFramer), 2);
    feed(&mut c, b"a\nb\nc\n");
    let mut out = Vec::new();
    c.cut_frames(&pool, &mut out).unwrap();
    assert_eq!(out.len(), 2);
    assert!(!c.wants_read(false));
    c.complete(0, None, false, 2);
    c.cut_frames(&pool, &mut out).unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!((out[2].0, out[2].1.as_slice()), (2, &b"c\n"[..]));
    assert_eq!(c.counters.snapshot().backpressure_pauses, 1);
}

#[test]
fn in_flight_bytes_cap_pauses_reading() {
    let (mut c, pool) = conn(Arc::new(BinaryFramer::new()), 100);
    let big = frame(600_000, 9);
    let mut out = Vec::new();
    for f in [&big, &big] {
        feed(&mut c, f);
        c.cut_frames(&pool, &mut out).unwrap();
    }
    assert_eq!(out.len(), 2);
    // 1.2 MB in flight is past the 1 MiB byte cap, though only 2 of 100 frames are.
    assert!(!c.wants_read(false));
    c.complete(0, None, false, 600_000);
    assert!(c.wants_read(false));
}

#[test]
fn ordered_connection_writes_replies_in_request_order() {
    let (mut c, pool) = conn_with(Arc::new(LineFramer), 8, true);
    feed(&mut c, b"a\nb\nc\n");
    let mut out = Vec::new();
    c.cut_frames(&pool, &mut out).unwrap();
    let seqs: Vec<u64> = out.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [0, 1, 2]);
    let reply = |s: &str| Some(Response::from_vec(s.as_bytes().to_vec()));
    c.complete(2, reply("C"), false, 2);
    c.complete(1, None, false, 2); // no reply, still holds its place
    assert!(!c.has_output());
    assert_eq!(c.counters.snapshot().response_bytes_queued, 1); // parked "C"
    c.complete(0, reply("A"), false, 2);
    let mut iov = [IoSlice::new(&[]); 4];
    let n = c.write_slices(&mut iov);
    let all: Vec<u8> = iov[..n].iter().flat_map(|s| s.to_vec()).collect();
    assert_eq!(all, b"AC");
    assert_eq!(c.counters.snapshot().response_bytes_queued, 2);
}

#[test]
fn ordered_framing_error_goes_out_after_earlier_replies() {
    let (mut c, pool) = conn_with(Arc::new(LineFramer), 8, true);
    feed(&mut c, b"a\nb\n");
    let mut out = Vec::new();
    c.cut_frames(&pool, &mut out).unwrap();
    assert_eq!(out.len(), 2);
    // The bytes after `b` could not be framed: the error waits for both replies.
    c.fail_framing(Some(Response::from_vec(b"E".to_vec())));
    assert!(!c.has_output());
    assert!(!c.done(false), "requests still in flight");
    c.complete(1, Some(Response::from_vec(b"B".to_vec())), false, 2);
    c.complete(0, Some(Response::from_vec(b"A".to_vec())), false, 2);
    let mut iov = [IoSlice::new(&[]); 4];
    let n = c.write_slices(&mut iov);
    let all: Vec<u8> = iov[..n].iter().flat_map(|s| s.to_vec()).collect();
    assert_eq!(all, b"ABE");
    assert!(!c.wants_read(false), "nothing more is read");
}

#[test]
fn oversized_length_fails_before_the_body() {
    let (mut c, pool) = conn(Arc::new(BinaryFramer::new()), 8);
    feed(&mut c, &(2u32 << 20).to_le_bytes());
    let err = c.cut_frames(&pool, &mut Vec::new()).unwrap_err();
    assert_eq!(
        err,
        FramingError::TooLarge {
            len: 2 << 20,
            max: 1 << 20
        }
    );
}

#[test]
fn endless_line_stops_at_the_frame_limit() {
    let (mut c, pool) = conn(Arc::new(LineFramer), 8);
    let chunk = vec![b'x'; 4096];
    let mut result = Ok(());
    for _ in 0..300 {
        feed(&mut c, &chunk);
        result = c.cut_frames(&pool, &mut Vec::new());
        if result.is_err() {
            break;
        }
    }
    assert!(matches!(result, Err(FramingError::TooLarge { .. })));
    assert!(c.rbuf.len() <= (1 << 20) + 4096);
}

#[test]
fn partial_writes_advance_through_segments() {
    let (mut c, _pool) = conn(Arc::new(LineFramer), 8);
    c.in_flight = 1;
    c.complete(
        0,
        Some(Response::from_vec(b"abc".to_vec()).guarded(b"defgh".to_vec())),
        false,
        0,
    );
    assert_eq!(c.counters.snapshot().response_bytes_queued, 8);
    let mut written = Vec::new();
    for step in [2, 3, 1, 2] {
        let mut iov = [IoSlice::new(&[]); 4];
        let n = c.write_slices(&mut iov);
        let all: Vec<u8> = iov[..n].iter().flat_map(|s| s.to_vec()).collect();
        written.extend_from_slice(&all[..step]);
        c.on_written(step);
    }
    assert_eq!(written, b"abcdefgh");
    assert!(!c.has_output());
    assert!(!c.done(false));
    assert!(c.done(true)); // draining: nothing in flight, nothing queued
    c.eof = true;
    assert!(c.done(false));
    assert_eq!(c.counters.snapshot().response_bytes_queued, 0);
}

#[test]
fn pending_bytes_mirror_the_queue_and_count_stream_frames_once() {
    let (mut c, _pool) = conn(Arc::new(LineFramer), 8);
    c.in_flight = 1;
    c.complete(0, Some(Response::from_vec(vec![1; 3])), false, 0);
    assert_eq!(c.path.pending(), 3);
    // A stream frame: its sender counted it before pushing.
    c.path.reserve(5).unwrap();
    assert_eq!(c.path.pending(), 8);
    c.apply(ConnEvent::StreamFrame(Response::from_vec(vec![2; 5])));
    assert_eq!((c.path.pending(), c.queued_bytes), (8, 8));
    c.on_written(6);
    assert_eq!(c.path.pending(), 2);
    let (segments, offset) = c.lend_writes(4);
    c.return_writes(segments, offset, 2);
    assert_eq!(c.path.pending(), 0);
    assert_eq!(c.counters.snapshot().response_bytes_queued, 0);
}

#[test]
fn reserve_admits_a_lone_frame_and_refuses_past_the_limit() {
    let (c, _pool) = conn(Arc::new(LineFramer), 8);
    // The test limit is 1 MiB: a 2 MiB frame passes alone, nothing passes after it.
    c.path.reserve(2 << 20).unwrap();
    assert_eq!(c.path.reserve(1), Err(2 << 20));
    c.path.sub_pending(2 << 20);
    c.path.reserve((1 << 20) - 1).unwrap();
    c.path.reserve(1).unwrap();
    assert_eq!(c.path.reserve(1), Err(1 << 20));
    assert_eq!(c.path.pending(), 1 << 20);
}

#[test]
fn closing_connection_waits_for_requests_but_not_for_open_streams() {
    let (mut c, _pool) = conn(Arc::new(LineFramer), 8);
    c.in_flight = 2;
    c.path.open_stream();
    assert!(!c.done(false));
    assert!(!c.path.is_closing(), "an open connection keeps its streams");
    c.eof = true;
    assert!(!c.done(false), "an ordinary request is still in flight");
    assert!(
        c.path.is_closing(),
        "streams learn at once that the peer left"
    );
    c.complete(1, None, false, 0);
    assert!(c.done(false), "only the stream is left in flight");
    // The stream ends later: its completion finds the connection as it left it.
    c.path.close_stream();
    c.complete(0, None, false, 0);
    assert_eq!(c.in_flight, 0);
}

/// Feeds `bytes` in pieces of the given sizes (cycled), cutting after each read and
/// completing every request at once (so the in-flight cap never stalls the stream).
fn feed_in_pieces(
    c: &mut Conn<()>,
    pool: &BufferPool,
    bytes: &[u8],
    pieces: &[usize],
) -> Result<Vec<Vec<u8>>, FramingError> {
    let mut frames = Vec::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut k = 0;
    while at < bytes.len() {
        let buf = c.read_buf();
        let n = buf
            .len()
            .min(bytes.len() - at)
            .min(pieces[k % pieces.len()].max(1));
        k += 1;
        buf[..n].copy_from_slice(&bytes[at..at + n]);
        c.on_read(n);
        at += n;
        c.cut_frames(pool, &mut out)?;
        for (seq, frame) in out.drain(..) {
            c.complete(seq, None, false, frame.len());
            frames.push(frame.as_slice().to_vec());
        }
    }
    Ok(frames)
}

proptest::proptest! {
    #[test]
    fn valid_frames_survive_any_split(
        sizes in proptest::collection::vec(16usize..70_000, 1..12),
        pieces in proptest::collection::vec(1usize..100_000, 1..8),
    ) {
        let (mut c, pool) = conn(Arc::new(BinaryFramer::new()), 4);
        let frames: Vec<Vec<u8>> =
            sizes.iter().enumerate().map(|(i, &s)| frame(s, i as u8)).collect();
        let got = feed_in_pieces(&mut c, &pool, &frames.concat(), &pieces).unwrap();
        proptest::prop_assert_eq!(got, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_respect_the_limit(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..5000),
        pieces in proptest::collection::vec(1usize..600, 1..8),
        line in proptest::prelude::any::<bool>(),
    ) {
        let framer: Arc<dyn Framer> =
            if line { Arc::new(LineFramer) } else { Arc::new(BinaryFramer::new()) };
        let (mut c, pool) = conn(framer, 4);
        // A 1 MiB limit and at most 5000 bytes: every frame cut is a prefix of the input.
        if let Ok(frames) = feed_in_pieces(&mut c, &pool, &bytes, &pieces) {
            let joined = frames.concat();
            proptest::prop_assert!(bytes.starts_with(&joined));
            proptest::prop_assert!(frames.iter().all(|f| !f.is_empty() && f.len() <= 1 << 20));
        }
    }
}
