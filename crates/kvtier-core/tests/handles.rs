//! Handle counting: a handle that is not the last one is given back without the shard lock, the
//! last one under it. These tests check that the block becomes inactive exactly when its last
//! handle goes, whichever path each handle takes, single-threaded and under races between
//! lock-free drops, locked last drops, matches, clones and weak upgrades.

mod common;

use std::sync::Barrier;

use common::{Policy, Rng, assert_idle, chain, manager, register};
use kvtier_core::{BlockManager, DuplicationPolicy, G1, ImmutableBlock};

/// Inactive blocks of `m` (metrics are exact while the manager is quiescent).
fn inactive(m: &BlockManager<G1>) -> u64 {
    m.metrics().inactive_pool_size
}

#[test]
fn block_becomes_inactive_only_with_its_last_handle() {
    for shards in [1, 8] {
        let m = manager(16, shards, Policy::Lru, DuplicationPolicy::Allow);
        let hashes = chain(3, 4);
        let held = register(&m, &hashes);
        let mut extra: Vec<ImmutableBlock<G1>> = Vec::new();
        for _ in 0..3 {
            extra.extend(m.match_blocks(&hashes));
        }
        extra.extend(held.iter().map(Clone::clone));
        assert!(held.iter().all(|b| b.use_count() == 5));
        // Drop the extra handles one by one: every one but the last of each block goes the
        // lock-free way, and no block may become inactive.
        drop(extra);
        assert!(held.iter().all(|b| b.use_count() == 1));
        assert_eq!(inactive(&m), 0, "{shards} shards");
        let mut held = held;
        let last = held.pop().unwrap();
        drop(held);
        assert_eq!(inactive(&m), 3, "{shards} shards");
        drop(last);
        assert_eq!(inactive(&m), 4, "{shards} shards");
        // Batch release takes the same paths.
        let a = m.match_blocks(&hashes);
        let b = m.match_blocks(&hashes);
        assert_eq!(inactive(&m), 0);
        m.release_blocks(a);
        assert_eq!(inactive(&m), 0, "b still holds every block");
        assert!(b.iter().all(|x| x.use_count() == 1));
        m.release_blocks(b);
        assert_eq!(inactive(&m), 4);
        assert_idle(&m);
    }
}

#[test]
fn duplicate_handles_release_their_primary_last() {
    let m = manager(8, 2, Policy::Fifo, DuplicationPolicy::Allow);
    let h = chain(5, 1);
    let primary = register(&m, &h);
    let dup = register(&m, &h);
    assert!(dup[0].is_duplicate());
    assert_eq!(primary[0].use_count(), 2, "the duplicate holds its primary");
    let dup_clone = dup[0].clone();
    drop(dup);
    assert_eq!(dup_clone.use_count(), 1);
    drop(primary);
    assert_eq!(inactive(&m), 0, "the duplicate still holds the primary");
    drop(dup_clone);
    assert_eq!(inactive(&m), 1);
    assert_idle(&m);
}

/// Threads match one shared chain and drop the handles one by one in random orders, clone and
/// upgrade, while a holder keeps and releases its own handles: each block must end inactive
/// exactly once, and the pools must add up.
#[test]
fn racing_lock_free_and_last_drops_agree() {
    const THREADS: usize = 3;
    const ITERS: usize = 4_000;
    for shards in [1, 4] {
        let m = manager(32, shards, Policy::Lru, DuplicationPolicy::Allow);
        let hashes = chain(11, 12);
        drop(register(&m, &hashes));
        let start = Barrier::new(THREADS);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (m, hashes, start) = (&m, &hashes, &start);
                s.spawn(move || {
                    let mut rng = Rng::new(0xABC + t as u64);
                    start.wait();
                    for _ in 0..ITERS {
                        let n = 1 + rng.below(hashes.len());
                        let mut got = m.match_blocks(&hashes[..n]);
                        assert_eq!(got.len(), n, "nothing evicts: every block stays cached");
                        if rng.chance(30) {
                            let weak = got[rng.below(n)].downgrade();
                            got.push(weak.upgrade().expect("held, so still registered"));
                        }
                        if rng.chance(30) {
                            let c = got[rng.below(got.len())].clone();
                            got.push(c);
                        }
                        for b in &got {
                            assert!(b.use_count() >= 1);
                        }
                        if rng.chance(50) {
                            while !got.is_empty() {
                                drop(got.swap_remove(rng.below(got.len())));
                            }
                        } else {
                            m.release_blocks(got);
                        }
                    }
                });
            }
        });
        let st = assert_idle(&m);
        assert_eq!(st.inactive_pool_size, hashes.len() as u64, "{st:?}");
        assert_eq!(st.registered, hashes.len() as u64, "{st:?}");
        // Each block is in the policy exactly once: draining gives every hash once.
        let mut drained = m.reset_inactive_pool().expect("nothing is held");
        drained.sort();
        let mut want = hashes.clone();
        want.sort();
        assert_eq!(drained, want, "{shards} shards");
        assert_idle(&m);
    }
}
