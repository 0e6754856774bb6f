//! Limits and bad input, on both backends: max connections, malformed frames (oversized
//! length, too short, wrong version, garbage) answered with the error frame and a close while
//! another connection keeps working, and a client that never reads its replies.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use kvtier_server::Backend;

fn max_connections_refuses_then_recovers(backend: Backend) {
    let service = Arc::new(TestService::default());
    let server = builder(service, backend)
        .with_max_connections(4)
        .start()
        .unwrap();
    let addr = server.local_addrs()[0];
    let mut open: Vec<_> = (0..4).map(|_| connect(addr)).collect();
    for (i, s) in open.iter_mut().enumerate() {
        roundtrip(s, &frame(OP_ECHO, 0, i as u64, 10));
    }
    let mut extra = connect(addr);
    let _ = extra.write_all(&frame(OP_ECHO, 0, 99, 10));
    assert!(closed(&mut extra), "the fifth connection is closed at once");
    assert_eq!(server.counters().connections_refused, 1);
    assert_eq!(server.counters().connections_open, 4);
    // The four survivors still work.
    for s in &mut open {
        roundtrip(s, &frame(OP_ECHO, 0, 5, 100));
    }
    // A slot frees up once one of them leaves.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.counters().connections_open > 3 {
        assert!(Instant::now() < deadline, "closed connection never counted");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut again = connect(addr);
    roundtrip(&mut again, &frame(OP_ECHO, 0, 6, 1));
    server.shutdown().unwrap();
}

fn malformed_frames_get_error_and_close(backend: Backend) {
    let service = Arc::new(TestService::default());
    let server = builder(service, backend)
        .with_max_frame_bytes(1 << 20)
        .start()
        .unwrap();
    let addr = server.local_addrs()[0];
    let mut good = connect(addr);
    roundtrip(&mut good, &frame(OP_ECHO, 0, 1, 10));

    let mut oversized = header(2 << 20, OP_ECHO, 0, 7);
    oversized.truncate(4); // only the length: rejected before any body
    let mut wrong_version = header(32, OP_ECHO, 0, 8);
    wrong_version[4] = 9;
    let too_short = header(3, OP_ECHO, 0, 9);
    let garbage: Vec<u8> = (0..64u32).map(|i| (i * 7 + 200) as u8).collect();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("oversized", oversized, "exceeds the limit"),
        ("wrong version", wrong_version, "version 9"),
        ("too short", too_short, "below the minimum"),
        ("garbage", garbage, "version 228"),
    ];
    for (i, (name, bytes, expect)) in cases.iter().enumerate() {
        let mut bad = connect(addr);
        // A valid request first: its reply still arrives before the error frame's close.
        roundtrip(&mut bad, &frame(OP_ECHO, 0, 100, 5));
        bad.write_all(bytes).unwrap();
        let error = read_frame(&mut bad).unwrap_or_else(|e| panic!("{name}: no error frame: {e}"));
        assert_eq!(error[5], OP_ERROR, "{name}");
        let text = String::from_utf8_lossy(&error[16..]).into_owned();
        assert!(text.contains(expect), "{name}: {text}");
        assert!(closed(&mut bad), "{name}: connection left open");
        assert_eq!(server.counters().malformed, i as u64 + 1);
        // The well-behaved connection is unaffected.
        roundtrip(&mut good, &frame(OP_ECHO, 0, 2 + i as u64, 1000));
    }
    server.shutdown().unwrap();
}

fn slow_reader_stays_bounded_and_others_are_served(backend: Backend) {
    let service = Arc::new(TestService::default());
    let max_queued = 1 << 20;
    let in_flight = 8;
    let payload = 64 << 10;
    let server = builder(service, backend)
        .with_max_queued_response_bytes(max_queued)
        .with_max_in_flight_per_conn(in_flight)
        .start()
        .unwrap();
    let addr = server.local_addrs()[0];
    let mut slow = connect(addr);
    let sent = flood_until_paused(&mut slow, &frame(OP_ECHO, 0, 1, payload));
    assert_paused_within(&server, max_queued + in_flight * (payload + 16));
    assert!(server.counters().frames_in < sent as u64 + 1);
    // Others are served meanwhile.
    let mut other = connect(addr);
    for i in 0..20 {
        roundtrip(&mut other, &frame(OP_ECHO, 0, i, 30_000));
    }
    drop(slow);
    wait_until_nothing_queued(&server);
    server.shutdown().unwrap();
}

/// Replies of requests run inline are queued as each completes, before the next frame is
/// cut: a client that does not read them stays within one reply of the limit, not the
/// in-flight cap's worth of replies past it.
fn slow_reader_of_inline_replies_stays_within_one_reply(backend: Backend) {
    let service = Arc::new(TestService::default());
    let max_queued = 1 << 20;
    // Small enough that several frames are whole in one read (larger ones are read into a
    // buffer of their own, one at a time).
    let payload = 8 << 10;
    let server = builder(service, backend)
        .with_max_queued_response_bytes(max_queued)
        .with_max_in_flight_per_conn(32)
        .start()
        .unwrap();
    let mut slow = connect(server.local_addrs()[0]);
    flood_until_paused(&mut slow, &frame(OP_ECHO_INLINE, 0, 1, payload));
    assert_paused_within(&server, max_queued + payload + 16);
    drop(slow);
    wait_until_nothing_queued(&server);
    server.shutdown().unwrap();
}

fn reply_and_close_flushes_then_closes(backend: Backend) {
    let service = Arc::new(TestService::default());
    let server = builder(service, backend).start().unwrap();
    let mut s = connect(server.local_addrs()[0]);
    let quit = frame(OP_QUIT, 0, 3, 100);
    s.write_all(&quit).unwrap();
    assert_eq!(read_frame(&mut s).unwrap(), quit);
    assert!(closed(&mut s));
    server.shutdown().unwrap();
}

/// Requests answered on the IO thread complete without a trip through the inbox; frames held
/// back by the in-flight cap must still be cut as those completions free room.
fn inline_pipeline_past_the_in_flight_cap_is_all_answered(backend: Backend) {
    let service = Arc::new(TestService::default());
    let server = builder(service, backend)
        .with_max_in_flight_per_conn(2)
        .start()
        .unwrap();
    let mut s = connect(server.local_addrs()[0]);
    let mut wire = Vec::new();
    for id in 0..200u64 {
        wire.extend(header(16, OP_WHERE_INLINE, 0, id));
    }
    s.write_all(&wire).unwrap();
    let mut ids: Vec<u64> = (0..200)
        .map(|_| request_id(&read_frame(&mut s).expect("every request answered")))
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..200).collect::<Vec<_>>());
    server.shutdown().unwrap();
}

on_both_backends!(
    inline_pipeline_past_the_in_flight_cap_is_all_answered,
    max_connections_refuses_then_recovers,
    malformed_frames_get_error_and_close,
    slow_reader_stays_bounded_and_others_are_served,
    slow_reader_of_inline_replies_stays_within_one_reply,
    reply_and_close_flushes_then_closes,
);
