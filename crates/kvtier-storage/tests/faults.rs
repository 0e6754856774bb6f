//! Fault injection: a tier that fails, stalls or serves corrupt bytes never blocks the
//! composition beyond its deadline, never corrupts what callers get, does not stop the other
//! tiers from serving, and every such event is counted.

#[path = "conformance_support/mod.rs"]
mod conformance_support;
#[path = "tiered_support/mod.rs"]
mod tiered_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance_support::{block, hash};
use kvtier_storage::tier::fault::{Fault, FaultyStorage};
use kvtier_storage::tier::{Storage, put_block};
use kvtier_storage::tiered::{Promotion, TierConfig, TieredStore};
use tiered_support::{BLOCK, disk, host};

/// G2, a faulty G3 (tier 1), and a healthy G3 (tier 2).
fn store_with_faulty_middle(
    d1: &std::path::Path,
    d2: &std::path::Path,
    middle: TierConfig,
) -> (TieredStore, Arc<FaultyStorage>) {
    let faulty = Arc::new(FaultyStorage::new(disk(d1)));
    let store = TieredStore::builder()
        .host(host(32), TierConfig::default())
        .tier(faulty.clone(), middle)
        .tier(disk(d2), TierConfig::default())
        .promotion(Promotion::OnStreamCommitAtFinish)
        .build();
    (store, faulty)
}

#[test]
fn a_failing_tier_is_skipped_and_counted() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store, faulty) = store_with_faulty_middle(d1.path(), d2.path(), TierConfig::default());
    store.put(hash(1), &block(1, 0, BLOCK)).unwrap();
    faulty.set(Fault::Fail);
    // Writes: the failing tier is left out, the others store the block.
    let report = store.put(hash(2), &block(2, 0, BLOCK)).unwrap();
    assert_eq!(report.stored, vec![0, 2]);
    // Reads: the failing tier is skipped, the slowest one serves.
    store.tier(0).unwrap().purge(hash(1)).unwrap();
    let mut out = vec![0u8; BLOCK];
    assert_eq!(store.get(hash(1), &mut out).unwrap(), Some(2));
    assert!(out == block(1, 0, BLOCK));
    // Prefix queries treat it as holding nothing.
    store.tier(0).unwrap().purge(hash(2)).unwrap();
    assert_eq!(store.locate_prefix(&[hash(2)]).tiers, vec![2]);
    let m = store.metrics();
    assert_eq!(m.tiers[1].write_errors, 1);
    // The failed read and the failed prefix probe (`contains_batch`) are both counted.
    assert_eq!(m.tiers[1].errors, 2, "{m:?}");
    assert_eq!(m.faults(), 3);
    assert!(faulty.injected() >= 3);
    // The failed async promotion into tier 1 is counted, never seen by the caller.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.metrics().tiers[1].promotion_failures == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(store.metrics().tiers[1].promotion_failures, 1);
}

#[test]
fn a_stalled_tier_is_abandoned_at_its_deadline() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let middle = TierConfig::default()
        .with_timeout(Duration::from_millis(50))
        .with_workers(1)
        .with_queue_depth(2);
    let (store, faulty) = store_with_faulty_middle(d1.path(), d2.path(), middle);
    put_block(&**store.tier(2).unwrap(), hash(1), &block(1, 0, BLOCK)).unwrap();
    faulty.set(Fault::Stall(Duration::from_secs(5)));
    let start = Instant::now();
    let mut out = vec![0u8; BLOCK];
    assert_eq!(store.get(hash(1), &mut out).unwrap(), Some(2));
    assert!(out == block(1, 0, BLOCK));
    let report = store.put(hash(2), &block(2, 0, BLOCK)).unwrap();
    assert_eq!(
        report.stored,
        vec![0, 2],
        "the stalled tier is left out of the write"
    );
    assert_eq!(store.locate_prefix(&[hash(1), hash(2)]).tiers, vec![0, 0]);
    // Far below the 5 s stall: nothing waited for the stalled tier (a loose bound, not a
    // performance check).
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "blocked on a stalled tier"
    );
    let m = store.metrics();
    assert!(m.tiers[1].timeouts >= 2, "timeouts counted: {m:?}");
    assert_eq!(m.tiers[2].hits, 1);
}

#[test]
fn corrupt_bytes_are_never_served() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store, faulty) = store_with_faulty_middle(d1.path(), d2.path(), TierConfig::default());
    for i in 0..3 {
        store.put(hash(i), &block(i, 0, BLOCK)).unwrap();
        store.tier(0).unwrap().purge(hash(i)).unwrap();
    }
    faulty.set(Fault::Corrupt);
    let mut out = vec![0u8; BLOCK];
    assert_eq!(store.get(hash(0), &mut out).unwrap(), Some(2));
    assert!(out == block(0, 0, BLOCK), "corrupt bytes served");
    assert!(!faulty.contains(hash(0)), "the corrupt copy was not purged");
    // The batched onboarding path checks too: the corrupt tier's blocks end the prefix.
    let hashes = [hash(1), hash(2)];
    let onboarded = store.fetch_prefix_into_host(&hashes).unwrap();
    assert!(onboarded.blocks.is_empty());
    let m = store.metrics();
    assert_eq!(m.tiers[1].corrupt, 3, "one on get, two in the batch");
    // With the fault gone, the same prefix comes up whole from the healthy copies.
    faulty.set(Fault::None);
    store.tier(1).unwrap().purge(hash(1)).unwrap();
    store.tier(1).unwrap().purge(hash(2)).unwrap();
    let onboarded = store.fetch_prefix_into_host(&hashes).unwrap();
    assert_eq!(onboarded.sources, vec![2, 2]);
    let host = store.tier(0).unwrap();
    for i in 1..3 {
        assert!(
            kvtier_storage::tier::get_block(&**host, hash(i)).unwrap() == Some(block(i, 0, BLOCK))
        );
    }
}

#[test]
fn a_failing_fast_tier_does_not_change_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let fast = Arc::new(FaultyStorage::new(Arc::new(host(8))));
    let store = TieredStore::builder()
        .tier(fast.clone(), TierConfig::default())
        .tier(disk(dir.path()), TierConfig::default())
        .build();
    store.put(hash(1), &block(1, 0, BLOCK)).unwrap();
    fast.set(Fault::Fail);
    let mut out = vec![0u8; BLOCK];
    assert_eq!(store.get(hash(1), &mut out).unwrap(), Some(1));
    assert!(out == block(1, 0, BLOCK));
    let m = store.metrics();
    assert_eq!(m.tiers[0].errors, 1);
    assert_eq!(m.tiers[0].promotion_failures, 1);
}

#[test]
fn a_full_promotion_queue_drops_and_counts() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let middle = TierConfig::default()
        .with_timeout(Duration::from_millis(20))
        .with_queue_depth(1);
    let (store, faulty) = store_with_faulty_middle(d1.path(), d2.path(), middle);
    for i in 0..6 {
        put_block(&**store.tier(2).unwrap(), hash(i), &block(i, 0, BLOCK)).unwrap();
    }
    faulty.set(Fault::Stall(Duration::from_secs(2)));
    let mut out = vec![0u8; BLOCK];
    for i in 0..6 {
        assert_eq!(store.get(hash(i), &mut out).unwrap(), Some(2));
        assert!(out == block(i, 0, BLOCK));
    }
    // One promotion runs, one waits in the queue of depth 1: the rest are dropped.
    let m = store.metrics();
    assert!(m.tiers[1].promotions_dropped >= 4, "{m:?}");
    assert_eq!(m.tiers[0].promotions, 6);
}
