//! The conformance suite every [`Storage`] and [`ManifestStore`] runs. A tier joins by one
//! call from a test file that includes this module:
//!
//! ```ignore
//! #[path = "conformance_support/mod.rs"]
//! mod conformance_support;
//! conformance_support::storage_suite(&mut || open_my_tier(), Durability::Durable);
//! ```
//!
//! `open` is called once at the start and again after every handle was dropped, for the
//! restart case of a durable tier (it must reopen the same backing store). The tier must hold
//! at least 64 blocks of at least 1,024 bytes.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use kvtier_core::SequenceHash;
use kvtier_storage::tier::{
    BatchRead, BlockMeta, ManifestStore, ManifestVersion, Storage, StorageError, get_block,
    put_block,
};

/// Whether a tier keeps its blocks across a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Blocks survive dropping every handle and reopening.
    Durable,
    /// A cache: nothing is promised across a restart (the restart case is skipped).
    Volatile,
}

/// The hash of test block `i`.
pub fn hash(i: u64) -> SequenceHash {
    SequenceHash::from_u128(((i as u128) << 64) | (i ^ 0xC0F0_0000_0000_0001) as u128)
}

/// Version `version` of test block `i`: a 16-byte header (`i`, `version`) then a SplitMix64
/// stream seeded by both, so a torn or mixed-up block is recognisable.
pub fn block(i: u64, version: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    out.extend_from_slice(&i.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    let mut state = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ version.rotate_left(32);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The version of block `i` that `bytes` is exactly, if any.
pub fn version_of(i: u64, bytes: &[u8]) -> Option<u64> {
    let version = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    (block(i, version, bytes.len()) == bytes).then_some(version)
}

/// Reads block `hash` through the hit handler in chunks of `chunk` bytes.
fn read_chunked(s: &dyn Storage, hash: SequenceHash, chunk: usize) -> Option<Vec<u8>> {
    let mut hit = s.lookup(hash).expect("lookup")?;
    let mut out = Vec::with_capacity(hit.len());
    let mut buf = vec![0u8; chunk];
    loop {
        let n = hit.read_chunk(&mut buf).expect("read_chunk");
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(out.len(), hit.len(), "streamed bytes != declared length");
    Some(out)
}

/// Runs every storage case against the tier `open` returns.
pub fn storage_suite(open: &mut dyn FnMut() -> Arc<dyn Storage>, durability: Durability) {
    let s = open();
    let len = s.block_bytes().expect("fixed-size tier");
    assert!(len >= 1024, "the suite needs blocks of at least 1 KiB");
    put_get(&*s, len);
    streaming_write(&*s, len);
    overwrite(&*s, len);
    delete(&*s, len);
    missing(&*s, len);
    wrong_size(&*s, len);
    batch(&*s, len);
    concurrent_writers(&s, len, durability);
    if durability == Durability::Durable {
        restart(s, open, len);
    }
}

fn put_get(s: &dyn Storage, len: usize) {
    put_block(s, hash(1), &block(1, 0, len)).expect("put");
    assert!(s.contains(hash(1)));
    assert!(
        read_chunked(s, hash(1), 1000) == Some(block(1, 0, len)),
        "wrong bytes: read_chunked(s, hash(1), 1000)"
    );
    assert!(
        get_block(s, hash(1)).unwrap() == Some(block(1, 0, len)),
        "wrong bytes: get_block(s, hash(1)).unwrap()"
    );
}

fn streaming_write(s: &dyn Storage, len: usize) {
    let bytes = block(2, 0, len);
    let mut miss = s.get_miss_handler(hash(2), len).expect("miss handler");
    for chunk in bytes.chunks(333) {
        miss.write_chunk(chunk).expect("write chunk");
        assert!(!s.contains(hash(2)), "visible before finish");
    }
    assert_eq!(miss.written(), len);
    assert!(
        s.lookup(hash(2)).unwrap().is_none(),
        "visible before finish"
    );
    miss.finish().expect("finish");
    assert!(
        get_block(s, hash(2)).unwrap() == Some(bytes),
        "streamed block"
    );

    // Dropped unfinished: nothing written.
    let mut miss = s.get_miss_handler(hash(3), len).expect("miss handler");
    miss.write_chunk(&block(3, 0, len)).unwrap();
    drop(miss);
    assert!(!s.contains(hash(3)));
    assert!(s.lookup(hash(3)).unwrap().is_none());
}

fn overwrite(s: &dyn Storage, len: usize) {
    put_block(s, hash(4), &block(4, 1, len)).unwrap();
    put_block(s, hash(4), &block(4, 2, len)).unwrap();
    assert!(
        get_block(s, hash(4)).unwrap() == Some(block(4, 2, len)),
        "wrong bytes: get_block(s, hash(4)).unwrap()"
    );
}

fn delete(s: &dyn Storage, len: usize) {
    put_block(s, hash(5), &block(5, 0, len)).unwrap();
    assert!(s.update_meta(hash(5), BlockMeta::default()).unwrap());
    assert!(
        get_block(s, hash(5)).unwrap() == Some(block(5, 0, len)),
        "wrong bytes: get_block(s, hash(5)).unwrap()"
    );
    assert!(s.purge(hash(5)).unwrap());
    assert!(!s.contains(hash(5)));
    assert!(s.lookup(hash(5)).unwrap().is_none());
    assert!(!s.purge(hash(5)).unwrap());
}

fn missing(s: &dyn Storage, _len: usize) {
    let h = hash(999_999);
    assert!(!s.contains(h));
    assert!(s.lookup(h).unwrap().is_none());
    assert!(!s.purge(h).unwrap());
    assert!(!s.update_meta(h, BlockMeta::evict_soon(true)).unwrap());
}

fn wrong_size(s: &dyn Storage, len: usize) {
    assert!(matches!(
        s.get_miss_handler(hash(6), len + 1),
        Err(StorageError::WrongSize { .. })
    ));
    assert!(matches!(
        s.get_miss_handler(hash(6), len - 1),
        Err(StorageError::WrongSize { .. })
    ));
    let mut miss = s.get_miss_handler(hash(6), len).unwrap();
    miss.write_chunk(&vec![1u8; len - 8]).unwrap();
    assert!(matches!(
        miss.write_chunk(&[0u8; 16]),
        Err(StorageError::Overflow { .. })
    ));
    drop(miss);
    let mut miss = s.get_miss_handler(hash(6), len).unwrap();
    miss.write_chunk(&vec![1u8; len / 2]).unwrap();
    assert!(matches!(
        miss.finish(),
        Err(StorageError::Incomplete { .. })
    ));
    assert!(!s.contains(hash(6)), "an incomplete block was published");
    let mut out = vec![0u8; len];
    assert!(matches!(
        s.get_batch(&[hash(1)], len, &mut out[..len - 1]),
        Err(StorageError::WrongSize { .. })
    ));
}

fn batch(s: &dyn Storage, len: usize) {
    for i in 10..14 {
        put_block(s, hash(i), &block(i, 0, len)).unwrap();
    }
    let hashes = [hash(10), hash(888_888), hash(11), hash(12), hash(13)];
    let mut out = vec![0u8; hashes.len() * len];
    let reads = s.get_batch(&hashes, len, &mut out).unwrap();
    assert_eq!(
        reads,
        [
            BatchRead::Hit,
            BatchRead::Miss,
            BatchRead::Hit,
            BatchRead::Hit,
            BatchRead::Hit
        ]
    );
    for (k, i) in [(0, 10), (2, 11), (3, 12), (4, 13)] {
        assert_eq!(
            &out[k * len..(k + 1) * len],
            block(i, 0, len),
            "batch block {k}"
        );
    }
    // Presence of the whole list in one call, in order, agreeing with `contains`.
    let present = s.contains_batch(&hashes).unwrap();
    assert_eq!(present, [true, false, true, true, true]);
    let one_by_one: Vec<bool> = hashes.iter().map(|&h| s.contains(h)).collect();
    assert_eq!(present, one_by_one);
    assert!(s.contains_batch(&[]).unwrap().is_empty());
}

fn concurrent_writers(s: &Arc<dyn Storage>, len: usize, durability: Durability) {
    const THREADS: u64 = 4;
    const ROUNDS: u64 = 6;
    let shared = [20u64, 21, 22];
    let barrier = Arc::new(Barrier::new(THREADS as usize + 1));
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let s = Arc::clone(s);
        let barrier = Arc::clone(&barrier);
        handles.push(std::thread::spawn(move || {
            barrier.wait();
            for r in 0..ROUNDS {
                for &i in &shared {
                    put_block(&*s, hash(i), &block(i, t * 100 + r, len)).expect("shared put");
                }
                let own = 30 + t;
                put_block(&*s, hash(own), &block(own, r, len)).expect("own put");
            }
        }));
    }
    // A reader during the writes sees whole versions only.
    let reader = {
        let s = Arc::clone(s);
        std::thread::spawn(move || {
            for _ in 0..(THREADS * ROUNDS) {
                for &i in &shared {
                    if let Some(bytes) = get_block(&*s, hash(i)).expect("read") {
                        assert!(version_of(i, &bytes).is_some(), "torn read of block {i}");
                    }
                }
            }
        })
    };
    barrier.wait();
    for h in handles {
        h.join().expect("writer panicked");
    }
    reader.join().expect("reader panicked");
    for &i in &shared {
        match get_block(&**s, hash(i)).unwrap() {
            Some(bytes) => {
                let v = version_of(i, &bytes).expect("a whole version");
                assert!(
                    v % 100 < ROUNDS && v / 100 < THREADS,
                    "version {v} never written"
                );
            }
            None => assert_eq!(durability, Durability::Volatile, "block {i} lost"),
        }
    }
    for t in 0..THREADS {
        let own = 30 + t;
        assert!(
            get_block(&**s, hash(own)).unwrap() == Some(block(own, ROUNDS - 1, len)),
            "wrong bytes: get_block(&**s, hash(own)).unwrap()"
        );
    }
}

fn restart(s: Arc<dyn Storage>, open: &mut dyn FnMut() -> Arc<dyn Storage>, len: usize) {
    put_block(&*s, hash(40), &block(40, 7, len)).unwrap();
    put_block(&*s, hash(41), &block(41, 0, len)).unwrap();
    assert!(s.purge(hash(41)).unwrap());
    assert_eq!(Arc::strong_count(&s), 1, "the suite holds the last handle");
    drop(s);
    let s = open();
    assert!(
        get_block(&*s, hash(40)).unwrap() == Some(block(40, 7, len)),
        "wrong bytes: get_block(&*s, hash(40)).unwrap()"
    );
    assert!(
        get_block(&*s, hash(1)).unwrap() == Some(block(1, 0, len)),
        "wrong bytes: get_block(&*s, hash(1)).unwrap()"
    );
    assert!(
        get_block(&*s, hash(4)).unwrap() == Some(block(4, 2, len)),
        "wrong bytes: get_block(&*s, hash(4)).unwrap()"
    );
    assert!(!s.contains(hash(41)), "a purged block came back");
    assert!(!s.contains(hash(3)), "an unfinished block came back");
}

/// Runs every manifest case against the store `open` returns (reopened for the restart case
/// when durable). Versions are opaque tokens: the suite only compares them, and checks that a
/// key never sees the same version twice (not across a delete and a re-create, not across a
/// restart), so a stale compare-and-swap can never land (no ABA).
pub fn manifest_suite(open: &mut dyn FnMut() -> Arc<dyn ManifestStore>, durability: Durability) {
    let m = open();
    // Every (key, version) handed out: a key never gets one of its versions twice.
    let mut seen: HashSet<(Vec<u8>, ManifestVersion)> = HashSet::new();
    let mut fresh = |key: &[u8], v: ManifestVersion| {
        assert!(
            seen.insert((key.to_vec(), v)),
            "version {v} of {key:?} handed out twice"
        );
    };
    // put_new, get, Exists.
    let a1 = m.put_new(b"a", b"one", None).unwrap();
    fresh(b"a", a1);
    assert!(matches!(
        m.put_new(b"a", b"two", None),
        Err(StorageError::Exists)
    ));
    let got = m.get(b"a").unwrap().expect("present");
    assert_eq!((got.value.as_slice(), got.version), (&b"one"[..], a1));
    assert_eq!(got.expires_at_ms, None);
    assert_eq!(m.get(b"nope").unwrap(), None);
    // cas_update: a new version; the old one is stale from now on.
    let a2 = m.cas_update(b"a", a1, b"two").unwrap();
    fresh(b"a", a2);
    match m.cas_update(b"a", a1, b"stale") {
        Err(StorageError::VersionMismatch { expected, actual }) => {
            assert_eq!((expected, actual), (a1, Some(a2)));
        }
        other => panic!("stale cas_update: {other:?}"),
    }
    assert!(matches!(
        m.cas_update(b"nope", a1, b"x"),
        Err(StorageError::VersionMismatch { actual: None, .. })
    ));
    assert_eq!(m.get(b"a").unwrap().unwrap().value, b"two");
    // delete, versioned and not.
    let d1 = m.put_new(b"d", b"x", None).unwrap();
    fresh(b"d", d1);
    let d1b = m.cas_update(b"d", d1, b"y").unwrap();
    fresh(b"d", d1b);
    assert!(matches!(
        m.delete(b"d", Some(d1)),
        Err(StorageError::VersionMismatch { .. })
    ));
    assert!(m.delete(b"d", Some(d1b)).unwrap());
    assert!(!m.delete(b"d", None).unwrap());
    assert!(matches!(
        m.delete(b"d", Some(d1b)),
        Err(StorageError::VersionMismatch { actual: None, .. })
    ));
    // No ABA: the key re-created after a delete has a version it never had, so a writer still
    // holding an old one cannot overwrite the new value or delete it.
    let d2 = m.put_new(b"d", b"again", None).unwrap();
    fresh(b"d", d2);
    for stale in [d1, d1b] {
        assert!(matches!(
            m.cas_update(b"d", stale, b"from a stale writer"),
            Err(StorageError::VersionMismatch { .. })
        ));
        assert!(matches!(
            m.delete(b"d", Some(stale)),
            Err(StorageError::VersionMismatch { .. })
        ));
    }
    assert_eq!(m.get(b"d").unwrap().unwrap().value, b"again");
    assert!(m.delete(b"d", None).unwrap());
    for round in 0..5u8 {
        let v = m.put_new(b"d", &[round], None).unwrap();
        fresh(b"d", v);
        let w = m.cas_update(b"d", v, &[round, 1]).unwrap();
        fresh(b"d", w);
        assert!(m.delete(b"d", Some(w)).unwrap());
    }
    // TTL: expiry and touch.
    let t1 = m
        .put_new(b"t", b"short", Some(Duration::from_millis(40)))
        .unwrap();
    fresh(b"t", t1);
    let got = m.get(b"t").unwrap().expect("present before expiry");
    assert!(got.expires_at_ms.is_some(), "TTL not reported: {got:?}");
    fresh(
        b"u",
        m.put_new(b"u", b"touched", Some(Duration::from_millis(40)))
            .unwrap(),
    );
    assert!(m.touch_ttl(b"u", Duration::from_secs(60)).unwrap());
    assert!(!m.touch_ttl(b"nope", Duration::from_secs(1)).unwrap());
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(m.get(b"t").unwrap(), None, "expired manifest still served");
    assert_eq!(m.get(b"u").unwrap().unwrap().value, b"touched");
    let t2 = m.put_new(b"t", b"new", None).unwrap();
    fresh(b"t", t2);
    assert!(
        matches!(
            m.cas_update(b"t", t1, b"x"),
            Err(StorageError::VersionMismatch { .. })
        ),
        "the expired manifest's version matched its successor"
    );
    // Concurrent writers of one key, on real threads: CAS increments, none lost, every
    // winning version new.
    let c0 = m.put_new(b"counter", &0u64.to_le_bytes(), None).unwrap();
    fresh(b"counter", c0);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                let mut won = Vec::new();
                for _ in 0..25 {
                    loop {
                        let cur = m.get(b"counter").unwrap().unwrap();
                        let n = u64::from_le_bytes(cur.value.as_slice().try_into().unwrap());
                        match m.cas_update(b"counter", cur.version, &(n + 1).to_le_bytes()) {
                            Ok(v) => {
                                won.push(v);
                                break;
                            }
                            Err(StorageError::VersionMismatch { .. }) => continue,
                            Err(e) => panic!("cas failed: {e}"),
                        }
                    }
                }
                won
            })
        })
        .collect();
    let mut won = Vec::new();
    for t in threads {
        won.extend(t.join().expect("cas thread panicked"));
    }
    assert_eq!(won.len(), 100);
    for &v in &won {
        fresh(b"counter", v);
    }
    let counter = m.get(b"counter").unwrap().unwrap();
    assert_eq!(counter.value, 100u64.to_le_bytes());
    assert!(won.contains(&counter.version));
    // Concurrent put_new of one key: exactly one wins. Then racing deleters and re-creators
    // of one key: a version is never handed out twice and every stale delete fails.
    let wins: usize = (0..4)
        .map(|t: u8| {
            let m = Arc::clone(&m);
            std::thread::spawn(move || m.put_new(b"race", &[t], None).is_ok())
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| usize::from(h.join().unwrap()))
        .sum();
    assert_eq!(wins, 1);
    let churn: Vec<_> = (0..3)
        .map(|_| {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                let mut made = Vec::new();
                for _ in 0..10 {
                    if let Ok(v) = m.put_new(b"churn", b"x", None) {
                        made.push(v);
                    }
                    if let Some(cur) = m.get(b"churn").unwrap() {
                        let _ = m.delete(b"churn", Some(cur.version));
                    }
                }
                made
            })
        })
        .collect();
    for t in churn {
        for v in t.join().expect("churn thread panicked") {
            fresh(b"churn", v);
        }
    }
    if durability == Durability::Durable {
        let a_now = m.get(b"a").unwrap().unwrap().version;
        let counter_now = m.get(b"counter").unwrap().unwrap().version;
        assert_eq!(Arc::strong_count(&m), 1);
        drop(m);
        let m = open();
        assert_eq!(m.get(b"a").unwrap().unwrap().version, a_now);
        assert_eq!(m.get(b"counter").unwrap().unwrap().version, counter_now);
        assert_eq!(m.get(b"u").unwrap().unwrap().value, b"touched");
        // Versions keep their promise across the restart.
        assert!(m.delete(b"a", Some(a_now)).unwrap());
        fresh(b"a", m.put_new(b"a", b"after restart", None).unwrap());
    }
}
