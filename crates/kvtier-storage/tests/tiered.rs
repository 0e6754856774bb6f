//! The tier composition: gates, fan-out, promotion, single-flight, prefixes.

#[path = "conformance_support/mod.rs"]
mod conformance_support;
#[path = "tiered_support/mod.rs"]
mod tiered_support;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use conformance_support::{block, hash};
use kvtier_storage::tier::fault::{Fault, FaultyStorage};
use kvtier_storage::tier::{get_block, put_block};
use kvtier_storage::tiered::{Promotion, TierConfig, TieredStore};
use tiered_support::{BLOCK, Counting, disk, host};

fn two_tiers(promotion: Promotion, dir: &std::path::Path) -> TieredStore {
    TieredStore::builder()
        .host(host(32), TierConfig::default())
        .tier(disk(dir), TierConfig::default())
        .promotion(promotion)
        .build()
}

#[test]
fn fan_out_drops_a_tier_mid_stream_at_its_gate() {
    let dir = tempfile::tempdir().unwrap();
    let store = TieredStore::builder()
        .host(host(32), TierConfig::default().with_gate_bytes(2000))
        .tier(disk(dir.path()), TierConfig::default())
        .build();
    let bytes = block(1, 0, BLOCK);
    let mut w = store.writer(hash(1), BLOCK);
    assert_eq!(w.tiers(), vec![0, 1]);
    w.write_chunk(&bytes[..1000]).unwrap();
    w.write_chunk(&bytes[1000..2000]).unwrap();
    assert_eq!(w.tiers(), vec![0, 1], "within the gate: both tiers");
    w.write_chunk(&bytes[2000..3000]).unwrap();
    assert_eq!(w.tiers(), vec![1], "past G2's gate: G2 dropped");
    w.write_chunk(&bytes[3000..]).unwrap();
    let report = w.finish().unwrap();
    assert_eq!(report.stored, vec![1]);
    assert!(!store.tier(0).unwrap().contains(hash(1)));
    assert!(get_block(&**store.tier(1).unwrap(), hash(1)).unwrap() == Some(bytes));
    let m = store.metrics();
    assert_eq!((m.tiers[0].gate_drops, m.tiers[1].gate_drops), (1, 0));
    assert_eq!((m.tiers[0].writes, m.tiers[1].writes), (0, 1));
}

#[test]
fn fan_out_dropped_unfinished_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = two_tiers(Promotion::Never, dir.path());
    let mut w = store.writer(hash(2), BLOCK);
    w.write_chunk(&block(2, 0, BLOCK)[..100]).unwrap();
    drop(w);
    assert!(store.locate_prefix(&[hash(2)]).is_empty());
    let mut w = store.writer(hash(2), BLOCK);
    w.write_chunk(&[0; 100]).unwrap();
    assert!(w.finish().is_err(), "an incomplete write must not finish");
    assert!(store.locate_prefix(&[hash(2)]).is_empty());
}

#[test]
fn promotion_never_leaves_tiers_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = two_tiers(Promotion::Never, dir.path());
    put_block(&**store.tier(1).unwrap(), hash(3), &block(3, 0, BLOCK)).unwrap();
    let mut out = vec![0u8; BLOCK];
    assert_eq!(store.get(hash(3), &mut out).unwrap(), Some(1));
    assert!(out == block(3, 0, BLOCK));
    assert!(!store.tier(0).unwrap().contains(hash(3)));
    assert_eq!(store.get(hash(3), &mut out).unwrap(), Some(1));
    assert_eq!(store.metrics().tiers[0].promotions, 0);
}

#[test]
fn promotion_on_hit_copies_into_faster_tiers() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let store = TieredStore::builder()
        .host(host(32), TierConfig::default())
        .tier(disk(d1.path()), TierConfig::default())
        .tier(disk(d2.path()), TierConfig::default())
        .promotion(Promotion::OnStreamCommitAtFinish)
        .build();
    put_block(&**store.tier(2).unwrap(), hash(4), &block(4, 0, BLOCK)).unwrap();
    let mut hit = store.lookup(hash(4)).unwrap().unwrap();
    assert_eq!(hit.tier, 2);
    let mut out = vec![0u8; BLOCK];
    hit.handler.read_all(&mut out).unwrap();
    assert!(out == block(4, 0, BLOCK));
    // G2: synchronously, before the lookup returned.
    assert!(store.tier(0).unwrap().contains(hash(4)));
    // The middle tier: asynchronously.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.tier(1).unwrap().contains(hash(4)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(get_block(&**store.tier(1).unwrap(), hash(4)).unwrap() == Some(block(4, 0, BLOCK)));
    let m = store.metrics();
    assert_eq!((m.tiers[0].promotions, m.tiers[1].promotions), (1, 1));
    // Next read: from G2.
    assert_eq!(store.get(hash(4), &mut out).unwrap(), Some(0));
}

#[test]
fn concurrent_misses_share_one_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Arc::new(FaultyStorage::new(disk(dir.path())));
    put_block(&*slow, hash(5), &block(5, 0, BLOCK)).unwrap();
    slow.set(Fault::Stall(Duration::from_millis(200)));
    let counting = Counting::new(slow.clone());
    let store = Arc::new(
        TieredStore::builder()
            .host(host(32), TierConfig::default())
            .tier(
                counting.clone(),
                TierConfig::default().with_timeout(Duration::from_secs(20)),
            )
            .build(),
    );
    const N: usize = 8;
    let barrier = Arc::new(Barrier::new(N));
    let threads: Vec<_> = (0..N)
        .map(|_| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let mut out = vec![0u8; BLOCK];
                let tier = store.get(hash(5), &mut out).unwrap();
                assert!(out == block(5, 0, BLOCK), "a caller got other bytes");
                tier
            })
        })
        .collect();
    let tiers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(tiers.iter().all(|t| t.is_some()));
    let m = store.metrics();
    assert_eq!(m.fetches, 1, "one fetch from the slow tier");
    assert_eq!(counting.lookups(), 1, "the slow tier was read once");
    assert_eq!(m.tiers[1].hits, 1);
    assert_eq!(m.flight_waits + m.tiers[0].hits, N as u64 - 1);
}

#[test]
fn locate_prefix_and_fetch_it_into_g2_in_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let g3 = Counting::new(disk(dir.path()));
    let store = TieredStore::builder()
        .host(host(32), TierConfig::default())
        .tier(g3.clone(), TierConfig::default())
        .build();
    // Blocks 0, 1 in both tiers; 2..5 in G3 only; 5 nowhere; 6 in G3.
    for i in 0..2 {
        store.put(hash(i), &block(i, 0, BLOCK)).unwrap();
    }
    for i in [2, 3, 4, 6] {
        put_block(&**store.tier(1).unwrap(), hash(i), &block(i, 0, BLOCK)).unwrap();
    }
    let hashes: Vec<_> = (0..7).map(hash).collect();
    let loc = store.locate_prefix(&hashes);
    assert_eq!(loc.tiers, vec![0, 0, 1, 1, 1]);
    let before = (g3.lookups(), g3.batches());
    let onboarded = store.fetch_prefix_into_host(&hashes).unwrap();
    assert_eq!(onboarded.sources, vec![0, 0, 1, 1, 1]);
    assert_eq!(
        (g3.lookups() - before.0, g3.batches() - before.1),
        (0, 1),
        "one batched read from G3, no per-block lookups"
    );
    let host_tier = store.tier(0).unwrap();
    for (i, guard) in onboarded.blocks.iter().enumerate() {
        assert_eq!(guard.sequence_hash(), hash(i as u64));
        assert!(host_tier.contains(hash(i as u64)));
    }
    for i in 0..5 {
        assert!(get_block(&**host_tier, hash(i)).unwrap() == Some(block(i, 0, BLOCK)));
    }
    assert_eq!(store.locate_prefix(&hashes).tiers, vec![0; 5]);
}

#[test]
fn purge_removes_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = two_tiers(Promotion::OnStreamCommitAtFinish, dir.path());
    store.put(hash(7), &block(7, 0, BLOCK)).unwrap();
    assert!(store.purge(hash(7)));
    let mut out = vec![0u8; BLOCK];
    assert_eq!(store.get(hash(7), &mut out).unwrap(), None);
    assert!(!store.purge(hash(7)));
    assert!(store.get(hash(7), &mut out[..10]).unwrap().is_none());
}

/// The store's digest map is bounded: many writes keep at most its capacity (rewrites of one
/// block do not grow it, a purge shrinks it), and the newest blocks keep the extra check: a
/// copy corrupted below the tier's own checksum is still refused.
#[test]
fn digests_are_bounded_and_the_newest_blocks_stay_checked() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Arc::new(FaultyStorage::new(disk(dir.path())));
    let store = TieredStore::builder()
        .host(host(32), TierConfig::default())
        .tier(faulty.clone(), TierConfig::default())
        .with_digest_capacity(4)
        .build();
    for i in 0..20 {
        store.put(hash(i), &block(i, 0, BLOCK)).unwrap();
    }
    assert_eq!(store.digests_kept(), 4);
    for round in 0..50 {
        store.put(hash(19), &block(19, round, BLOCK)).unwrap();
    }
    assert_eq!(store.digests_kept(), 4, "rewrites grew the map");
    assert!(store.purge(hash(18)));
    assert_eq!(store.digests_kept(), 3);
    // Block 19 (digest kept): its G3 copy corrupted on the way out is refused, not served.
    store.tier(0).unwrap().purge(hash(19)).unwrap();
    faulty.set(Fault::Corrupt);
    let mut out = vec![0u8; BLOCK];
    assert_eq!(store.get(hash(19), &mut out).unwrap(), None);
    assert_eq!(store.metrics().tiers[1].corrupt, 1);
    faulty.set(Fault::None);
    // Capacity 0 keeps nothing; reads still work (the tiers' own checks remain).
    let dir0 = tempfile::tempdir().unwrap();
    let bare = TieredStore::builder()
        .host(host(8), TierConfig::default())
        .tier(disk(dir0.path()), TierConfig::default())
        .with_digest_capacity(0)
        .build();
    bare.put(hash(1), &block(1, 0, BLOCK)).unwrap();
    assert_eq!(bare.digests_kept(), 0);
    bare.tier(0).unwrap().purge(hash(1)).unwrap();
    assert_eq!(bare.get(hash(1), &mut out).unwrap(), Some(1));
    assert!(out == block(1, 0, BLOCK));
}
