//! One conformance suite that every G4 backend passes: in-memory, a local directory, and a
//! real redis-server on loopback (S3 runs the same suite in `s3_moto.rs`).
//!
//! Covered: put/get/overwrite/delete/exists, missing keys, wrong sizes, batches, namespace
//! isolation (a block copied into another namespace's key is refused), corruption (every
//! tampered value is an error and counted, never served), manifests (put_new, cas_update,
//! delete, touch_ttl, no ABA across delete and re-create), concurrent compare-and-swap
//! writers, and a restart where the store is durable.

mod g4_suite;
mod redis_support;

use kvtier_storage::remote::{G4Store, Namespace};
use redis::Commands;

use g4_suite::{Tamper, ns, run_suite};

#[test]
fn memory_backend_passes_the_suite() {
    let open = |ns: Namespace| G4Store::builder(ns).memory().build().expect("memory store");
    // Memory stores are private to one G4Store: the shared-store cases use one instance.
    run_suite(&open, None, false);
}

#[test]
fn local_dir_backend_passes_the_suite_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_path_buf();
    let open = |ns: Namespace| {
        G4Store::builder(ns)
            .local_dir(&root)
            .build()
            .expect("dir store")
    };
    let tamper: &Tamper<'_> = &|key, f| {
        let path = root.join(key);
        let bytes = std::fs::read(&path).expect("stored file");
        std::fs::write(&path, f(bytes)).expect("rewrite");
    };
    run_suite(&open, Some(tamper), true);
}

#[test]
fn redis_backend_passes_the_suite() {
    if redis_support::skip_redis_tests() {
        return;
    }
    let server = redis_support::RedisServer::start();
    let url = server.url();
    let open = |ns: Namespace| {
        G4Store::builder(ns)
            .redis(url.clone())
            .build()
            .expect("redis")
    };
    let plain = std::sync::Mutex::new(server.plain());
    let tamper: &Tamper<'_> = &|key, f| {
        let mut con = plain.lock().expect("lock");
        let bytes: Vec<u8> = con.get(key).expect("stored value");
        let () = con.set(key, f(bytes)).expect("rewrite");
    };
    run_suite(&open, Some(tamper), true);
}

#[test]
fn a_bad_redis_url_is_a_config_error_and_a_dead_port_an_error_value() {
    let bad = G4Store::builder(ns(16)).redis("not a url").build();
    assert!(bad.is_err(), "bad URL accepted");
    let dead = G4Store::builder(ns(16))
        .redis(format!(
            "redis://127.0.0.1:{}/0",
            kvtier_testkit::net::free_port()
        ))
        .build()
        .expect("lazy connect");
    assert!(dead.get(kvtier_core::SequenceHash::root(1)).is_err());
    assert_eq!(dead.stats().errors, 1);
}

#[test]
fn redis_block_ttl_applies_to_single_and_batched_puts_and_large_blocks_round_trip() {
    if redis_support::skip_redis_tests() {
        return;
    }
    use kvtier_core::SequenceHash;
    let server = redis_support::RedisServer::start();
    let size = 256 << 10;
    let g4 = G4Store::builder(ns(size))
        .redis(server.url())
        .with_block_ttl(std::time::Duration::from_secs(60))
        .build()
        .expect("redis");
    let mut plain = server.plain();
    let block: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
    g4.put(SequenceHash::root(1), &block).expect("put");
    let hashes: Vec<SequenceHash> = (2..20).map(SequenceHash::root).collect();
    let blocks: Vec<Vec<u8>> = hashes
        .iter()
        .map(|h| vec![h.as_u128() as u8; size])
        .collect();
    let batch: Vec<(SequenceHash, &[u8])> = hashes
        .iter()
        .zip(&blocks)
        .map(|(&h, b)| (h, b.as_slice()))
        .collect();
    // Twice: the second batch reuses the pooled connection's request buffer.
    g4.put_batch(&batch).expect("put_batch");
    g4.put_batch(&batch).expect("put_batch again");
    for h in std::iter::once(SequenceHash::root(1)).chain(hashes.iter().copied()) {
        let ttl: i64 = plain.pttl(g4.block_key(h)).expect("pttl");
        assert!((1..=60_000).contains(&ttl), "block {h:?} has PTTL {ttl}");
    }
    let mut out = vec![0u8; size];
    assert!(g4.get_into(SequenceHash::root(1), &mut out).expect("get"));
    assert_eq!(out, block);
    let got = g4.get_batch(&hashes).expect("get_batch");
    for (f, b) in got.iter().zip(&blocks) {
        assert_eq!(f, &kvtier_storage::remote::Fetched::Hit(b.clone()));
    }
    // A small put after the big batch still works on the same connection.
    g4.put(SequenceHash::root(1), &block)
        .expect("put after batch");
    assert_eq!(g4.stats().errors, 0);
}
