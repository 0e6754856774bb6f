//! Echo traffic through the whole runtime, on both backends: pipelining on one connection,
//! out-of-order completion, frames of several MiB with partial reads and writes, many
//! connections at once, and two listeners with different framers on the same IO threads.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::Arc;

use common::*;
use kvtier_server::{Backend, LineFramer};

fn pipelined_requests_on_one_connection(backend: Backend) {
    let service = Arc::new(TestService::default());
    let server = builder(service, backend).start().unwrap();
    assert_eq!(server.backend(), backend);
    let mut stream = connect(server.local_addrs()[0]);
    let n = 2000u64;
    let frames: Vec<Vec<u8>> = (0..n)
        .map(|id| frame(OP_ECHO, 0, id, (id % 300) as usize))
        .collect();
    let mut writer = stream.try_clone().unwrap();
    let to_send = frames.clone();
    let sender = std::thread::spawn(move || {
        // One big write: every request is in flight before any reply is read.
        let all: Vec<u8> = to_send.concat();
        writer.write_all(&all).unwrap();
    });
    let mut seen = HashSet::new();
    for _ in 0..n {
        let back = read_frame(&mut stream).unwrap();
        let id = request_id(&back);
        assert_eq!(back, frames[id as usize]);
        assert!(seen.insert(id), "duplicate reply {id}");
    }
    sender.join().unwrap();
    let c = server.counters();
    assert_eq!((c.frames_in, c.frames_out), (n, n));
    assert_eq!(
        c.bytes_in,
        frames.iter().map(|f| f.len() as u64).sum::<u64>()
    );
    drop(stream);
    server.shutdown().unwrap();
}

fn replies_complete_out_of_order(backend: Backend) {
    let service = Arc::new(TestService::default());
    let server = builder(service, backend).start().unwrap();
    let mut stream = connect(server.local_addrs()[0]);
    let slow = frame(OP_DELAY, 600, 1, 10);
    stream.write_all(&slow).unwrap();
    let quick: Vec<Vec<u8>> = (2..12).map(|id| frame(OP_ECHO, 0, id, 50)).collect();
    stream.write_all(&quick.concat()).unwrap();
    let order: Vec<u64> = (0..11)
        .map(|_| request_id(&read_frame(&mut stream).unwrap()))
        .collect();
    assert_eq!(
        *order.last().unwrap(),
        1,
        "the delayed reply comes last: {order:?}"
    );
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..12).collect::<Vec<_>>());
    server.shutdown().unwrap();
}

fn large_frames_with_partial_reads_and_writes(backend: Backend) {
    let service = Arc::new(TestService::default());
    let server = builder(service, backend)
        .with_max_frame_bytes(16 << 20)
        .start()
        .unwrap();
    let mut stream = connect(server.local_addrs()[0]);
    let sizes = [6 << 20, (1 << 20) + 7, 100_000, 3 << 20];
    let frames: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &s)| frame(OP_ECHO, 0, i as u64, s))
        .collect();
    let mut writer = stream.try_clone().unwrap();
    let to_send = frames.clone();
    let sender = std::thread::spawn(move || {
        // Odd-sized writes with pauses: the server sees frames arrive in pieces.
        for f in &to_send {
            for (k, piece) in f.chunks(777_777).enumerate() {
                writer.write_all(piece).unwrap();
                if k % 3 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
        }
    });
    for f in &frames {
        // Small reads on the client side: the server's writes complete partially.
        let mut back = vec![0u8; f.len()];
        let mut got = 0;
        while got < back.len() {
            let end = (got + 65_521).min(back.len());
            let n = stream.read(&mut back[got..end]).unwrap();
            assert!(n > 0, "server closed early");
            got += n;
        }
        assert!(back == *f, "large frame of {} bytes corrupted", f.len());
    }
    sender.join().unwrap();
    // The 6 MiB and 3 MiB frames do not fit the largest pooled chunk.
    assert!(server.counters().pool_fallbacks >= 2);
    server.shutdown().unwrap();
}

fn many_connections_at_once(backend: Backend) {
    let service = Arc::new(TestService::default());
    let server = builder(service.clone(), backend)
        .with_io_threads(2)
        .start()
        .unwrap();
    let addr = server.local_addrs()[0];
    let clients: Vec<_> = (0..64u64)
        .map(|c| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                for i in 0..25u64 {
                    roundtrip(
                        &mut s,
                        &frame(OP_ECHO, 0, c * 1000 + i, (i * 97 % 5000) as usize),
                    );
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let counters = server.counters();
    assert_eq!(counters.connections_accepted, 64);
    assert_eq!(counters.frames_in, 64 * 25);
    assert_eq!(service.opened.load(std::sync::atomic::Ordering::SeqCst), 64);
    server.shutdown().unwrap();
}

fn two_listeners_two_framers(backend: Backend) {
    use kvtier_server::{ConnInfo, Context, Request, Response, Service};
    // Listener 0 speaks lines (upper-cased back), listener 1 binary frames (echoed).
    struct Mixed;
    impl Service for Mixed {
        type Session = ();
        fn open(&self, _conn: &ConnInfo) {}
        fn handle(&self, ctx: Context<()>, request: Request) {
            let reply = match ctx.conn().listener {
                0 => request.frame().to_ascii_uppercase(),
                _ => request.frame().to_vec(),
            };
            ctx.reply(Response::from_vec(reply));
        }
    }
    // Lines carry no request id: that listener writes replies in request order.
    let server = kvtier_server::ServerBuilder::new(Mixed)
        .with_listener(
            kvtier_server::ListenerConfig::new("127.0.0.1:0".parse().unwrap(), LineFramer)
                .with_ordered_replies(true),
        )
        .listen(
            "127.0.0.1:0".parse().unwrap(),
            kvtier_server::BinaryFramer::new(),
        )
        .with_backend(kvtier_server::BackendChoice::Force(backend))
        .start()
        .unwrap();
    let mut line = connect(server.local_addrs()[0]);
    let mut bin = connect(server.local_addrs()[1]);
    line.write_all(b"ping\npong\n").unwrap();
    let mut reader = BufReader::new(line.try_clone().unwrap());
    let mut text = String::new();
    reader.read_line(&mut text).unwrap();
    reader.read_line(&mut text).unwrap();
    assert_eq!(text, "PING\nPONG\n");
    roundtrip(&mut bin, &frame(OP_ECHO, 0, 9, 33));
    server.shutdown().unwrap();
}

fn a_panicking_handler_loses_only_its_request(backend: Backend) {
    let service = Arc::new(TestService::default());
    let server = builder(service, backend)
        .with_max_in_flight_per_conn(2)
        .start()
        .unwrap();
    let mut stream = connect(server.local_addrs()[0]);
    // More panics than the in-flight cap: each must still release its slot.
    for id in 0..5 {
        stream.write_all(&frame(OP_PANIC, 0, id, 8)).unwrap();
    }
    for id in 10..20 {
        roundtrip(&mut stream, &frame(OP_ECHO, 0, id, 100));
    }
    assert_eq!(server.counters().frames_in, 15);
    server.shutdown().unwrap();
}

fn ordered_listener_keeps_request_order(backend: Backend) {
    let service = Arc::new(TestService::default());
    let server = kvtier_server::ServerBuilder::with_shared_service(service)
        .with_listener(
            kvtier_server::ListenerConfig::new(
                "127.0.0.1:0".parse().unwrap(),
                kvtier_server::BinaryFramer::new(),
            )
            .with_ordered_replies(true),
        )
        .with_backend(kvtier_server::BackendChoice::Force(backend))
        .with_workers(2)
        .start()
        .unwrap();
    let mut stream = connect(server.local_addrs()[0]);
    // A slow request first, then quick ones: they finish first but must wait their turn.
    let mut all = frame(OP_DELAY, 200, 0, 10);
    for id in 1..30 {
        all.extend(frame(
            if id % 7 == 0 { OP_DELAY } else { OP_ECHO },
            20,
            id,
            100,
        ));
    }
    stream.write_all(&all).unwrap();
    let order: Vec<u64> = (0..30)
        .map(|_| request_id(&read_frame(&mut stream).unwrap()))
        .collect();
    assert_eq!(order, (0..30).collect::<Vec<_>>());
    server.shutdown().unwrap();
}

fn inline_requests_run_on_the_io_thread(backend: Backend) {
    let service = Arc::new(TestService::default());
    let server = builder(service, backend).start().unwrap();
    let mut stream = connect(server.local_addrs()[0]);
    let mut all = Vec::new();
    for id in 0..40u64 {
        let op = if id % 2 == 0 {
            OP_WHERE_INLINE
        } else {
            OP_WHERE
        };
        all.extend(frame(op, 0, id, 0));
    }
    stream.write_all(&all).unwrap();
    let mut seen = HashSet::new();
    for _ in 0..40 {
        let reply = read_frame(&mut stream).unwrap();
        let id = request_id(&reply);
        let thread = String::from_utf8_lossy(&reply[16..]).into_owned();
        let expect = if id % 2 == 0 {
            "kvtier-io-"
        } else {
            "kvtier-worker-"
        };
        assert!(thread.starts_with(expect), "request {id} ran on {thread}");
        assert!(seen.insert(id));
    }
    server.shutdown().unwrap();
}

on_both_backends!(
    inline_requests_run_on_the_io_thread,
    ordered_listener_keeps_request_order,
    a_panicking_handler_loses_only_its_request,
    pipelined_requests_on_one_connection,
    replies_complete_out_of_order,
    large_frames_with_partial_reads_and_writes,
    many_connections_at_once,
    two_listeners_two_framers,
);
