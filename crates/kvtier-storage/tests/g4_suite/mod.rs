//! The G4 conformance suite, shared by `g4_conformance.rs` and `s3_moto.rs`: one function per
//! behaviour, all run by [`run_suite`] against a store factory.

#![allow(dead_code, reason = "not every test file uses every helper")]

use std::sync::Arc;
use std::time::Duration;

use kvtier_core::SequenceHash;
use kvtier_storage::remote::{Cas, Fetched, FrameError, G4Error, G4Store, Landed, Namespace};

/// Rewrites the raw stored value under a key through `f` (the test's own client).
pub type Tamper<'a> = dyn Fn(&str, &dyn Fn(Vec<u8>) -> Vec<u8>) + Sync + 'a;

/// A namespace of `block_bytes`-byte blocks for a small test model.
pub fn ns(block_bytes: usize) -> Namespace {
    Namespace::new("test-model", "xxh3-v1/bs16", block_bytes).expect("valid namespace")
}

fn block(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Runs every case. `shared`: two stores opened by `open` see the same data (not true of
/// separate in-memory stores); `tamper`: how to corrupt a stored value, if possible.
pub fn run_suite(
    open: &(dyn Fn(Namespace) -> G4Store + Sync),
    tamper: Option<&Tamper<'_>>,
    shared: bool,
) {
    blocks_round_trip(&open(ns(4096)));
    batches(&open(ns(1024)));
    manifests(&open(ns(64)));
    concurrent_cas_writers(&open(ns(64)));
    if shared {
        namespaces_are_isolated(open);
        restart_keeps_blocks(open);
    }
    if let Some(tamper) = tamper {
        corruption_is_refused_and_counted(&open(ns(512)), tamper);
        if shared {
            foreign_blocks_are_refused(open, tamper);
        }
    }
}

fn blocks_round_trip(g4: &G4Store) {
    let (a, b) = (SequenceHash::root(1), SequenceHash::root(2));
    assert_eq!(g4.get(a).expect("get"), None);
    assert!(!g4.exists(a).expect("exists"));
    g4.put(a, &block(1, 4096)).expect("put");
    assert!(g4.exists(a).expect("exists"));
    assert_eq!(g4.get(a).expect("get"), Some(block(1, 4096)));
    g4.put(a, &block(9, 4096)).expect("overwrite");
    let mut out = vec![0u8; 4096];
    assert!(g4.get_into(a, &mut out).expect("get_into"));
    assert_eq!(out, block(9, 4096));
    assert!(!g4.get_into(b, &mut out).expect("miss"));
    g4.delete(a).expect("delete");
    g4.delete(a).expect("delete of an absent block is fine");
    assert_eq!(g4.get(a).expect("get"), None);

    assert!(matches!(
        g4.put(a, &[0; 10]),
        Err(G4Error::WrongSize {
            expected: 4096,
            actual: 10
        })
    ));
    assert!(matches!(
        g4.get_into(a, &mut [0; 10]),
        Err(G4Error::WrongSize { .. })
    ));
    let s = g4.stats();
    assert_eq!(
        (s.puts, s.gets, s.hits, s.misses, s.corrupt, s.errors),
        (2, 5, 2, 3, 0, 0)
    );
    assert_eq!((s.bytes_written, s.bytes_read), (2 * 4096, 2 * 4096));
}

fn batches(g4: &G4Store) {
    let blocks: Vec<(SequenceHash, Vec<u8>)> = (0..10u64)
        .map(|i| (SequenceHash::root(100 + i), block(i as u8, 1024)))
        .collect();
    let refs: Vec<(SequenceHash, &[u8])> = blocks.iter().map(|(h, b)| (*h, b.as_slice())).collect();
    g4.put_batch(&refs).expect("put_batch");
    g4.put_batch(&[]).expect("empty batch");
    let mut asked: Vec<SequenceHash> = blocks.iter().map(|(h, _)| *h).collect();
    asked.insert(3, SequenceHash::root(999));
    let got = g4.get_batch(&asked).expect("get_batch");
    assert_eq!(got.len(), 11);
    assert_eq!(got[3], Fetched::Miss);
    for (i, (_, want)) in blocks.iter().enumerate() {
        let at = if i < 3 { i } else { i + 1 };
        assert_eq!(got[at], Fetched::Hit(want.clone()), "block {i}");
    }
    assert!(g4.get_batch(&[]).expect("empty").is_empty());
    // Presence of a whole list in one call, in order; nothing fetched or counted as a get.
    let present = g4.exists_batch(&asked).expect("exists_batch");
    let mut want = vec![true; 11];
    want[3] = false;
    assert_eq!(present, want);
    assert!(g4.exists_batch(&[]).expect("empty").is_empty());
    // Straight into one buffer: each block in its part, the miss's part untouched.
    let mut out = vec![0xEEu8; 11 * 1024];
    let landed = g4.get_batch_into(&asked, &mut out).expect("get_batch_into");
    assert_eq!(landed[3], Landed::Miss);
    assert!(out[3 * 1024..4 * 1024].iter().all(|&b| b == 0xEE));
    for (i, (_, want)) in blocks.iter().enumerate() {
        let at = if i < 3 { i } else { i + 1 };
        assert_eq!(landed[at], Landed::Hit, "block {i}");
        assert!(
            out[at * 1024..(at + 1) * 1024] == want[..],
            "block {i} bytes"
        );
    }
    assert!(matches!(
        g4.get_batch_into(&asked, &mut out[..100]),
        Err(G4Error::WrongSize { .. })
    ));
    let bad = [(SequenceHash::root(1), &[0u8; 3][..])];
    assert!(matches!(g4.put_batch(&bad), Err(G4Error::WrongSize { .. })));
    let s = g4.stats();
    assert_eq!((s.puts, s.gets, s.hits, s.misses), (10, 22, 20, 2));
}

fn manifests(g4: &G4Store) {
    assert!(matches!(
        g4.put_new("bad/name", b"x"),
        Err(G4Error::InvalidName(_))
    ));
    assert!(matches!(g4.manifest(""), Err(G4Error::InvalidName(_))));
    assert_eq!(g4.manifest("idx").expect("read"), None);
    let Cas::Written(v1) = g4.put_new("idx", b"one").expect("put_new") else {
        panic!("created")
    };
    assert_eq!(g4.put_new("idx", b"again").expect("put_new"), Cas::Conflict);
    let m = g4.manifest("idx").expect("read").expect("present");
    assert_eq!((m.version, m.value.as_slice()), (v1, &b"one"[..]));
    let Cas::Written(v2) = g4.cas_update("idx", v1, b"two").expect("cas") else {
        panic!("cas")
    };
    assert!(v2 > v1);
    assert_eq!(
        g4.cas_update("idx", v1, b"stale").expect("cas"),
        Cas::Conflict
    );
    assert_eq!(
        g4.delete_manifest("idx", v1).expect("delete"),
        Cas::Conflict
    );
    assert_eq!(g4.delete_manifest("idx", v2).expect("delete"), Cas::Deleted);
    assert_eq!(g4.manifest("idx").expect("read"), None);
    assert_eq!(
        g4.cas_update("idx", v2, b"gone").expect("cas"),
        Cas::Conflict
    );
    // Re-created: the version keeps growing, so a writer holding v1 or v2 cannot win.
    let Cas::Written(v3) = g4.put_new("idx", b"three").expect("recreate") else {
        panic!("new")
    };
    assert!(v3 > v2, "versions only grow: {v3} after {v2}");
    assert_eq!(
        g4.cas_update("idx", v1, b"aba").expect("cas"),
        Cas::Conflict
    );
    assert_eq!(
        g4.cas_update("idx", v2, b"aba").expect("cas"),
        Cas::Conflict
    );

    assert!(
        !g4.touch_ttl("absent", Duration::from_secs(1))
            .expect("touch")
    );
    assert!(
        g4.touch_ttl("idx", Duration::from_millis(300))
            .expect("touch")
    );
    assert_eq!(
        g4.manifest("idx").expect("read").map(|m| m.value),
        Some(b"three".to_vec())
    );
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(g4.manifest("idx").expect("read"), None, "expired");
    assert!(matches!(
        g4.put_new("idx", b"four").expect("after expiry"),
        Cas::Written(_)
    ));
    let s = g4.stats();
    assert!(s.manifest_conflicts >= 6 && s.manifest_ops > 10, "{s:?}");
}

fn concurrent_cas_writers(g4: &G4Store) {
    const THREADS: u64 = 4;
    // 100 updates in all: past the 64 versions object stores keep, so cleanup runs too.
    const EACH: u64 = 25;
    assert!(matches!(
        g4.put_new("counter", &0u64.to_le_bytes()).expect("new"),
        Cas::Written(_)
    ));
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                let mut done = 0;
                while done < EACH {
                    let m = g4.manifest("counter").expect("read").expect("present");
                    let n = u64::from_le_bytes(m.value.try_into().expect("8 bytes"));
                    match g4
                        .cas_update("counter", m.version, &(n + 1).to_le_bytes())
                        .expect("cas")
                    {
                        Cas::Written(_) => done += 1,
                        Cas::Conflict => {}
                        Cas::Deleted => panic!("not a delete"),
                    }
                }
            });
        }
    });
    let m = g4.manifest("counter").expect("read").expect("present");
    assert_eq!(
        u64::from_le_bytes(m.value.try_into().expect("8 bytes")),
        THREADS * EACH,
        "lost update"
    );
}

fn namespaces_are_isolated(open: &(dyn Fn(Namespace) -> G4Store + Sync)) {
    let a = open(Namespace::new("model-a", "s", 256).expect("ns"));
    let b = open(Namespace::new("model-b", "s", 256).expect("ns"));
    let h = SequenceHash::root(77);
    a.put(h, &block(3, 256)).expect("put");
    assert_eq!(
        b.get(h).expect("get"),
        None,
        "another namespace's block was visible"
    );
    assert!(!b.exists(h).expect("exists"));
    assert!(matches!(
        a.put_new("shared-name", b"a").expect("new"),
        Cas::Written(_)
    ));
    assert!(matches!(
        b.put_new("shared-name", b"b").expect("new"),
        Cas::Written(_)
    ));
    assert_eq!(
        b.manifest("shared-name").expect("read").map(|m| m.value),
        Some(b"b".to_vec())
    );
    assert_eq!(a.get(h).expect("get"), Some(block(3, 256)));
}

fn restart_keeps_blocks(open: &(dyn Fn(Namespace) -> G4Store + Sync)) {
    let h = SequenceHash::root(4242);
    open(ns(128)).put(h, &block(5, 128)).expect("put");
    let reopened = open(ns(128));
    assert_eq!(reopened.get(h).expect("get"), Some(block(5, 128)));
}

fn corruption_is_refused_and_counted(g4: &G4Store, tamper: &Tamper<'_>) {
    type Edit = Box<dyn Fn(Vec<u8>) -> Vec<u8>>;
    let cases: [(&str, Edit); 5] = [
        (
            "payload bit",
            Box::new(|mut v| {
                let last = v.len() - 1;
                v[last] ^= 0x10;
                v
            }),
        ),
        (
            "header length",
            Box::new(|mut v| {
                v[8] ^= 0x01;
                v
            }),
        ),
        (
            "truncated",
            Box::new(|mut v| {
                v.truncate(v.len() - 1);
                v
            }),
        ),
        ("too short", Box::new(|_| b"tiny".to_vec())),
        ("garbage", Box::new(|v| vec![0xAB; v.len()])),
    ];
    for (i, (what, f)) in cases.iter().enumerate() {
        let h = SequenceHash::root(5000 + i as u64);
        g4.put(h, &block(i as u8, 512)).expect("put");
        tamper(&g4.block_key(h), f.as_ref());
        match g4.get(h) {
            Err(G4Error::Corrupt { .. }) => {}
            other => panic!("{what}: corrupt value not refused: {other:?}"),
        }
        let got = g4.get_batch(&[h]).expect("batch");
        assert!(
            matches!(got[0], Fetched::Corrupt(_)),
            "{what}: batch served {got:?}"
        );
    }
    let s = g4.stats();
    assert_eq!((s.corrupt, s.hits), (10, 0));
}

fn foreign_blocks_are_refused(open: &(dyn Fn(Namespace) -> G4Store + Sync), tamper: &Tamper<'_>) {
    let a = open(Namespace::new("model-a", "s", 256).expect("ns"));
    let b = open(Namespace::new("model-b", "s", 256).expect("ns"));
    let (h, other) = (SequenceHash::root(1), SequenceHash::root(2));
    a.put(h, &block(1, 256)).expect("put");
    b.put(h, &block(2, 256)).expect("put");
    a.put(other, &block(3, 256)).expect("put");
    // Copy a's stored value of `other` over b's key of `h`, and a's `other` over a's `h`.
    let stolen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = Arc::clone(&stolen);
    tamper(&a.block_key(other), &move |v| {
        *keep.lock().expect("lock") = v.clone();
        v
    });
    let copy = stolen.lock().expect("lock").clone();
    tamper(&b.block_key(h), &|_| copy.clone());
    assert!(matches!(
        b.get(h),
        Err(G4Error::Corrupt {
            source: FrameError::WrongOwner,
            ..
        })
    ));
    tamper(&a.block_key(h), &|_| copy.clone());
    assert!(matches!(
        a.get(h),
        Err(G4Error::Corrupt {
            source: FrameError::WrongOwner,
            ..
        })
    ));
}
