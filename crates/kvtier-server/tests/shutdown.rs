//! Graceful shutdown on both backends: requests in flight when `shutdown()` is called are all
//! answered and flushed, the service's drain hook runs once, and nothing is accepted after;
//! a request still unanswered at the shutdown timeout loses its connection, not the server.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use kvtier_server::Backend;

fn shutdown_answers_everything_in_flight(backend: Backend) {
    let service = Arc::new(TestService::default());
    let server = builder(service.clone(), backend).start().unwrap();
    let addr = server.local_addrs()[0];
    let mut clients: Vec<_> = (0..3).map(|_| connect(addr)).collect();
    for (c, s) in clients.iter_mut().enumerate() {
        for i in 0..10u64 {
            // Delayed replies (100-190 ms), completed from other threads.
            s.write_all(&frame(
                OP_DELAY,
                100 + 10 * i as u16,
                c as u64 * 100 + i,
                2000,
            ))
            .unwrap();
        }
    }
    // Let the frames reach the workers, then stop while they are all still in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.counters().frames_in < 30 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    let stopper = std::thread::spawn(move || server.shutdown());
    for (c, s) in clients.iter_mut().enumerate() {
        let mut ids: Vec<u64> = (0..10)
            .map(|_| request_id(&read_frame(s).expect("reply lost in shutdown")))
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..10).map(|i| c as u64 * 100 + i).collect::<Vec<_>>());
        assert!(closed(s), "connection closed after its replies");
    }
    stopper.join().unwrap().unwrap();
    assert_eq!(service.drained.load(Ordering::SeqCst), 1);
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
}

fn drop_shuts_down_too(backend: Backend) {
    let service = Arc::new(TestService::default());
    let server = builder(service.clone(), backend).start().unwrap();
    let mut s = connect(server.local_addrs()[0]);
    roundtrip(&mut s, &frame(OP_ECHO, 0, 1, 1));
    drop(server);
    assert!(closed(&mut s));
    assert_eq!(service.drained.load(Ordering::SeqCst), 1);
}

fn shutdown_gives_up_on_requests_past_the_timeout(backend: Backend) {
    let service = Arc::new(TestService::default());
    let server = builder(service.clone(), backend)
        .with_shutdown_timeout(Duration::from_millis(200))
        .start()
        .unwrap();
    let mut s = connect(server.local_addrs()[0]);
    // A reply that comes 3 s later, long after the server is gone (it must not crash then).
    s.write_all(&frame(OP_DELAY, 3000, 1, 10)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.counters().frames_in < 1 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    let started = std::time::Instant::now();
    server.shutdown().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(closed(&mut s), "closed without the late reply");
    assert_eq!(service.drained.load(Ordering::SeqCst), 1);
}

on_both_backends!(
    shutdown_answers_everything_in_flight,
    drop_shuts_down_too,
    shutdown_gives_up_on_requests_past_the_timeout,
);
