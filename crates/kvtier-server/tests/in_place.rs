//! Requests served in place (`Service::serve_in_place`), on both backends: their replies keep
//! request order among replies that come from workers and from other threads, a close after
//! one flushes first, a panic closes only its connection, and a client that does not read its
//! in-place replies is stopped at the queued-bytes limit.

mod common;

use std::io::Write;
use std::sync::Arc;

use common::*;
use kvtier_server::{Backend, BackendChoice, BinaryFramer, ListenerConfig, ServerBuilder};

fn ordered_builder(backend: Backend) -> ServerBuilder<TestService> {
    let listener = ListenerConfig::new("127.0.0.1:0".parse().unwrap(), BinaryFramer::new())
        .with_ordered_replies(true);
    ServerBuilder::with_shared_service(Arc::new(TestService::default()))
        .with_listener(listener)
        .with_backend(BackendChoice::Force(backend))
        .with_workers(2)
}

fn replies_keep_request_order_among_worker_replies(backend: Backend) {
    let server = ordered_builder(backend).start().unwrap();
    let mut s = connect(server.local_addrs()[0]);
    // One write: in-place requests behind a slow one from another thread, worker echoes,
    // inline ones, and guarded in-place payloads, several times over.
    let mut sent = Vec::new();
    for round in 0..20u64 {
        let id = round * 10;
        sent.push(frame(OP_IN_PLACE, 0, id, 5));
        sent.push(frame(OP_DELAY, 3, id + 1, 40));
        sent.push(frame(OP_IN_PLACE_GUARDED, 0, id + 2, 3000));
        sent.push(frame(OP_IN_PLACE, 0, id + 3, 0));
        sent.push(frame(OP_ECHO, 0, id + 4, 100));
        sent.push(frame(OP_IN_PLACE_GUARDED, 0, id + 5, 0));
    }
    s.write_all(&sent.concat()).unwrap();
    for (i, want) in sent.iter().enumerate() {
        let got = read_frame(&mut s).unwrap_or_else(|e| panic!("reply {i}: {e}"));
        assert_eq!(&got, want, "reply {i} out of order or changed");
    }
    let c = server.counters();
    assert_eq!((c.frames_in, c.frames_out), (120, 120), "{c:?}");
    server.shutdown().unwrap();
}

fn close_after_in_place_reply_flushes_and_panics_close_one_connection(backend: Backend) {
    let server = ordered_builder(backend).start().unwrap();
    let addr = server.local_addrs()[0];
    let mut other = connect(addr);
    roundtrip(&mut other, &frame(OP_IN_PLACE, 0, 1, 10));

    let mut quitter = connect(addr);
    let (first, quit) = (
        frame(OP_IN_PLACE, 0, 2, 7),
        frame(OP_IN_PLACE_QUIT, 0, 3, 9),
    );
    quitter
        .write_all(&[first.clone(), quit.clone(), frame(OP_ECHO, 0, 4, 1)].concat())
        .unwrap();
    assert_eq!(read_frame(&mut quitter).unwrap(), first);
    assert_eq!(read_frame(&mut quitter).unwrap(), quit);
    assert!(closed(&mut quitter), "nothing after QUIT is answered");

    let mut panicker = connect(addr);
    let before = frame(OP_IN_PLACE, 0, 5, 3);
    panicker
        .write_all(&[before.clone(), frame(OP_IN_PLACE_PANIC, 0, 6, 0)].concat())
        .unwrap();
    assert_eq!(read_frame(&mut panicker).unwrap(), before);
    assert!(
        closed(&mut panicker),
        "a panicking request closes its connection"
    );

    roundtrip(&mut other, &frame(OP_IN_PLACE_GUARDED, 0, 7, 5000));
    roundtrip(&mut other, &frame(OP_ECHO, 0, 8, 10));
    server.shutdown().unwrap();
}

fn unread_in_place_replies_stop_at_the_queued_limit(backend: Backend) {
    let max_queued = 1 << 20;
    // Under the size that is read straight into a buffer of its own: every frame is whole in
    // the read buffer, so every one is served in place.
    let payload = 8 << 10;
    let server = ordered_builder(backend)
        .with_max_queued_response_bytes(max_queued)
        .start()
        .unwrap();
    let addr = server.local_addrs()[0];
    let mut slow = connect(addr);
    flood_until_paused(&mut slow, &frame(OP_IN_PLACE, 0, 1, payload));
    // Served only while under the limit: at most one reply past it.
    assert_paused_within(&server, max_queued + payload + 16);
    let mut other = connect(addr);
    roundtrip(&mut other, &frame(OP_IN_PLACE, 0, 2, 100));
    drop(slow);
    wait_until_nothing_queued(&server);
    server.shutdown().unwrap();
}

on_both_backends!(
    replies_keep_request_order_among_worker_replies,
    close_after_in_place_reply_flushes_and_panics_close_one_connection,
    unread_in_place_replies_stop_at_the_queued_limit,
);
