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

/// Redis block reads parse replies themselves and land payloads straight in the caller's
/// buffers: a batch mixing hits, misses, a tampered value, an over-long value and a key of
/// another type is answered block by block (small blocks: one MGET; large: pipelined GETs,
/// where the wrong-type key's error reply fails the batch), and the connection stays in step
/// for the next reads.
#[test]
fn redis_reads_land_in_place_and_stay_in_step_after_bad_replies() {
    if redis_support::skip_redis_tests() {
        return;
    }
    use kvtier_core::SequenceHash;
    use kvtier_storage::remote::{Fetched, Landed};
    let server = redis_support::RedisServer::start();
    let mut plain = server.plain();
    for size in [4usize << 10, 256 << 10] {
        let g4 = G4Store::builder(ns(size))
            .redis(server.url())
            .build()
            .expect("redis");
        let h = |i: u64| SequenceHash::root(1000 * size as u64 + i);
        let blocks: Vec<Vec<u8>> = (0..6u8)
            .map(|i| (0..size).map(|k| (k as u8) ^ i).collect())
            .collect();
        for (i, b) in blocks.iter().enumerate() {
            g4.put(h(i as u64), b).expect("put");
        }
        let mut v: Vec<u8> = plain.get(g4.block_key(h(2))).expect("get");
        let last = v.len() - 1;
        v[last] ^= 1;
        let () = plain.set(g4.block_key(h(2)), v).expect("tamper");
        let mut v: Vec<u8> = plain.get(g4.block_key(h(3))).expect("get");
        v.extend_from_slice(b"extra");
        let () = plain.set(g4.block_key(h(3)), v).expect("lengthen");
        let () = plain.del(g4.block_key(h(5))).expect("del");
        let good: Vec<SequenceHash> = (0..6).map(h).collect();
        let got = g4.get_batch(&good).expect("batch");
        assert_eq!(got[0], Fetched::Hit(blocks[0].clone()));
        assert_eq!(got[1], Fetched::Hit(blocks[1].clone()));
        assert!(
            matches!(got[2], Fetched::Corrupt(_)),
            "{size}: tampered served"
        );
        assert!(
            matches!(got[3], Fetched::Corrupt(_)),
            "{size}: lengthened served"
        );
        assert_eq!(got[4], Fetched::Hit(blocks[4].clone()));
        assert_eq!(got[5], Fetched::Miss);
        let mut out = vec![0u8; 6 * size];
        let landed = g4.get_batch_into(&good, &mut out).expect("batch into");
        assert_eq!(landed[..2], [Landed::Hit, Landed::Hit]);
        assert!(matches!(
            landed[2..4],
            [Landed::Corrupt(_), Landed::Corrupt(_)]
        ));
        assert_eq!(landed[4..], [Landed::Hit, Landed::Miss]);
        assert!(out[..size] == blocks[0][..] && out[4 * size..5 * size] == blocks[4][..]);
        // A key of another type: GET answers an error, MGET a nil.
        let list = h(9);
        let _: i64 = plain.lpush(g4.block_key(list), "x").expect("lpush");
        let mixed = [h(0), list, h(1)];
        let answer = g4.get_batch(&mixed);
        if size < 128 << 10 {
            let got = answer.expect("MGET answers nil for a list");
            assert_eq!(got[1], Fetched::Miss);
            assert_eq!(got[2], Fetched::Hit(blocks[1].clone()));
        } else {
            assert!(answer.is_err(), "a WRONGTYPE reply was not reported");
        }
        assert!(g4.get_into(list, &mut out[..size]).is_err());
        // Still in step: every later read answers for its own key.
        for _ in 0..3 {
            let mut one = vec![0u8; size];
            assert!(g4.get_into(h(4), &mut one).expect("get_into"));
            assert!(one == blocks[4]);
            assert_eq!(g4.get(h(1)).expect("get"), Some(blocks[1].clone()));
        }
        let s = g4.stats();
        assert_eq!(s.corrupt, 4, "{size}: {s:?}");
    }
}

/// Block reads on G4's own RESP connections authenticate and select the URL's database like
/// the `redis` crate's connections do: blocks written through the crate's connections (puts)
/// are read back through the raw ones (gets, batches, presence) from database 3 of a server
/// with a password; a wrong password is an error value, not a panic.
#[test]
fn redis_reads_authenticate_and_select_the_database() {
    if redis_support::skip_redis_tests() {
        return;
    }
    use kvtier_core::SequenceHash;
    use kvtier_storage::remote::Fetched;
    let server = redis_support::RedisServer::start();
    let mut plain = server.plain();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("s3cret")
        .exec(&mut plain)
        .expect("set a password");
    let url = |pw: &str| format!("redis://:{pw}@127.0.0.1:{}/3", server.port());
    for size in [4usize << 10, 256 << 10] {
        let g4 = G4Store::builder(ns(size))
            .redis(url("s3cret"))
            .build()
            .expect("redis");
        let hashes: Vec<SequenceHash> = (0..3).map(|i| SequenceHash::root(70 + i)).collect();
        let block = vec![0x5Au8; size];
        for &h in &hashes {
            g4.put(h, &block).expect("put");
        }
        let mut out = vec![0u8; size];
        assert!(g4.get_into(hashes[0], &mut out).expect("get_into"));
        assert!(out == block);
        let got = g4.get_batch(&hashes).expect("get_batch");
        assert!(got.iter().all(|f| *f == Fetched::Hit(block.clone())));
        let probe = [hashes[1], SequenceHash::root(99)];
        assert_eq!(
            g4.exists_batch(&probe).expect("exists_batch"),
            [true, false]
        );
        // In database 3, not 0.
        let in_db0: bool = redis::cmd("EXISTS")
            .arg(g4.block_key(hashes[0]))
            .query(&mut plain)
            .expect("exists in db 0");
        assert!(!in_db0, "block written to database 0");
        let wrong = G4Store::builder(ns(size))
            .redis(url("wrong"))
            .build()
            .expect("lazy connect");
        assert!(
            wrong.get(hashes[0]).is_err(),
            "a wrong password read a block"
        );
        assert!(wrong.exists_batch(&hashes).is_err());
    }
}
