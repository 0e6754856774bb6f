//! A G4 outage: the real redis-server is killed mid-run (SIGKILL) and restarted on the same
//! port. While it is down every G4 call returns an error value within a bounded time (never a
//! hang), failures are counted, the circuit breaker opens and then rejects calls without a
//! network round trip; once the server is back, G4 is used again.
//!
//! The time bounds asserted here are hang detectors (tens of times the configured timeout),
//! not performance targets.

mod redis_support;

use std::time::{Duration, Instant};

use kvtier_core::SequenceHash;
use kvtier_storage::remote::{G4Error, G4Store, Namespace};

const TIMEOUT: Duration = Duration::from_millis(200);
const BACKOFF: Duration = Duration::from_millis(300);

#[test]
fn killed_server_fails_fast_trips_the_breaker_and_recovers() {
    if redis_support::skip_redis_tests() {
        return;
    }
    let mut server = redis_support::RedisServer::start();
    let ns = Namespace::new("outage-model", "s", 1024).expect("ns");
    let g4 = G4Store::builder(ns)
        .redis(server.url())
        .with_timeout(TIMEOUT)
        .with_breaker(3, BACKOFF)
        .build()
        .expect("store");
    let h = SequenceHash::root(1);
    let block = vec![5u8; 1024];
    // Several threads so the pool holds several connections that all go stale at once.
    std::thread::scope(|s| {
        for i in 0..4u64 {
            let g4 = &g4;
            s.spawn(move || {
                g4.put(SequenceHash::root(10 + i), &[1u8; 1024])
                    .expect("put")
            });
        }
    });
    g4.put(h, &block).expect("put while up");
    assert_eq!(g4.get(h).expect("get while up"), Some(block.clone()));

    server.kill();
    let start = Instant::now();
    let mut outcomes = Vec::new();
    for i in 0..40u64 {
        let call = Instant::now();
        let err = if i % 2 == 0 {
            g4.get(h).expect_err("get while down")
        } else {
            g4.put(SequenceHash::root(100 + i), &block)
                .expect_err("put while down")
        };
        assert!(
            call.elapsed() < TIMEOUT * 10,
            "call {i} took {:?}: {err}",
            call.elapsed()
        );
        outcomes.push(err);
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "40 calls took {:?}",
        start.elapsed()
    );
    assert!(
        outcomes
            .iter()
            .any(|e| matches!(e, G4Error::Unavailable(_) | G4Error::Timeout)),
        "no outage error among {outcomes:?}"
    );
    assert!(
        outcomes.contains(&G4Error::BreakerOpen),
        "breaker never opened"
    );
    assert!(g4.is_marked_down());
    let s = g4.stats();
    assert_eq!(s.errors, 40, "every failed call counted: {s:?}");
    assert!(s.breaker_trips >= 1 && s.breaker_rejected >= 30, "{s:?}");

    // Down for longer than the back-off: each probe fails and re-opens the breaker.
    std::thread::sleep(BACKOFF + Duration::from_millis(50));
    assert!(g4.exists(h).is_err(), "probe against a dead server");
    assert!(g4.stats().breaker_trips >= 2);

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match g4.put(h, &block) {
            Ok(()) => break,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "G4 not used again after restart: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    assert!(!g4.is_marked_down());
    // Nothing was persisted, so only what was written after the restart is there.
    assert_eq!(g4.get(h).expect("get after restart"), Some(block));
    assert_eq!(
        g4.get(SequenceHash::root(10)).expect("get after restart"),
        None
    );
    let after = g4.stats();
    assert_eq!(after.corrupt, 0);
    assert!(after.hits >= 2, "{after:?}");
}
