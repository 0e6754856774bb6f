//! Public behaviour of the logical block manager (DESIGN.md section 2): allocation, staging,
//! registration under both duplication policies, lookups, weak references, pins, evict-on-
//! release, foreign blocks, builder validation, draining, observers and Prometheus export.
//!
//! Each test builds its own small manager, usually single-shard FIFO so eviction order is exact.

mod common;

use std::sync::Arc;

use common::{
    Event, Policy, Recorder, assert_consistent, assert_idle, chain, fifo, register, staged,
};
use kvtier_core::{
    AllocError, BlockError, BlockManager, BuildError, DuplicationPolicy, G1, MAX_BLOCK_SIZE,
    MAX_SHARDS, ResetError, SequenceHash,
};

const ALLOW: DuplicationPolicy = DuplicationPolicy::Allow;
const REJECT: DuplicationPolicy = DuplicationPolicy::Reject;

fn h(n: u64) -> SequenceHash {
    SequenceHash::root(n)
}

// ---------------------------------------------------------------------------------------------
// Allocation
// ---------------------------------------------------------------------------------------------

#[test]
fn allocation_is_all_or_nothing() {
    let m = fifo(4, ALLOW);
    drop(register(&m, &[h(1), h(2)])); // two inactive
    let held = m.allocate_blocks(1).unwrap(); // one free left
    let before = m.metrics();
    assert_eq!(m.available_blocks(), 3);

    let err = m.allocate_blocks(4).unwrap_err();
    assert_eq!(
        err,
        AllocError::Exhausted {
            requested: 4,
            available: 3
        }
    );
    assert_eq!(
        m.metrics(),
        before,
        "a failed allocation takes and evicts nothing"
    );
    assert!(m.contains(h(1)) && m.contains(h(2)));

    let err = m.allocate_blocks(5).unwrap_err();
    assert!(matches!(err, AllocError::Exhausted { requested: 5, .. }));
    assert_eq!(m.metrics(), before);

    let (got, evicted) = m.allocate_blocks_with_evictions(3).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(evicted, vec![h(1), h(2)]);
    assert_eq!(m.available_blocks(), 0);
    assert!(m.allocate_blocks(0).unwrap().is_empty());
    drop((got, held));
    assert_idle(&m);
}

#[test]
fn allocation_uses_reset_pool_before_evicting() {
    let m = fifo(4, ALLOW);
    drop(register(&m, &[h(1), h(2)]));
    let base = m.metrics();
    assert_eq!((base.allocations, base.allocations_from_reset), (2, 2));

    let (a, evicted) = m.allocate_blocks_with_evictions(2).unwrap();
    assert!(evicted.is_empty(), "two free slots remained: {evicted:?}");
    let s = m.metrics();
    assert_eq!(
        (s.allocations, s.allocations_from_reset, s.evictions),
        (4, 4, 0)
    );
    assert!(m.contains(h(1)) && m.contains(h(2)));

    let (b, evicted) = m.allocate_blocks_with_evictions(1).unwrap();
    assert_eq!(
        evicted,
        vec![h(1)],
        "the least recently released block goes first"
    );
    let s = m.metrics();
    assert_eq!(
        (s.allocations, s.allocations_from_reset, s.evictions),
        (5, 4, 1)
    );
    assert!(!m.contains(h(1)) && m.contains(h(2)));
    drop((a, b));
    assert_idle(&m);
}

// ---------------------------------------------------------------------------------------------
// Staging and unregistered guards
// ---------------------------------------------------------------------------------------------

#[test]
fn stage_size_mismatch_hands_the_same_block_back() {
    let m = fifo(2, ALLOW);
    let block = m.allocate_blocks(1).unwrap().pop().unwrap();
    let id = block.block_id();

    let err = block.stage(h(1), m.block_size() + 1).unwrap_err();
    match &err {
        BlockError::BlockSizeMismatch {
            expected,
            actual,
            block,
        } => {
            assert_eq!((*expected, *actual), (m.block_size(), m.block_size() + 1));
            assert_eq!(block.block_id(), id);
        }
        other => panic!("unexpected {other:?}"),
    }
    let block = err.into_block();
    assert_eq!(block.block_id(), id);

    let tokens = vec![7u32; m.block_size() - 1];
    let block = block.complete(&tokens, h(1)).unwrap_err().into_block();
    assert_eq!(block.block_id(), id);
    assert_eq!(m.metrics().stagings, 0, "failed stagings are not counted");
    assert_eq!(m.metrics().inflight_mutable, 1);

    let tokens = vec![7u32; m.block_size()];
    let complete = block.complete(&tokens, h(1)).unwrap();
    assert_eq!((complete.block_id(), complete.sequence_hash()), (id, h(1)));
    assert_eq!(m.metrics().stagings, 1);
    drop(complete);
    assert_idle(&m);
}

#[test]
fn complete_block_reset_keeps_the_slot() {
    let m = fifo(3, ALLOW);
    let complete = staged(&m, &[h(1)]).pop().unwrap();
    let id = complete.block_id();
    let mutable = complete.reset();
    assert_eq!(mutable.block_id(), id);
    assert_eq!(m.available_blocks(), 2, "the slot stays held");
    assert_eq!(m.metrics().inflight_mutable, 1);
    let again = mutable.stage(h(2), m.block_size()).unwrap();
    assert_eq!(again.block_id(), id);
    let b = m.register_block(again).unwrap();
    assert_eq!((b.block_id(), b.sequence_hash()), (id, h(2)));
    assert!(
        !m.contains(h(1)),
        "the rolled-back hash was never registered"
    );
}

#[test]
fn dropping_unregistered_guards_frees_their_slots() {
    let m = fifo(4, ALLOW);
    let mut mutables = m.allocate_blocks(2).unwrap();
    let complete = staged(&m, &[h(1)]);
    assert_eq!(m.available_blocks(), 1);
    assert_eq!(m.metrics().inflight_mutable, 3);
    mutables.pop();
    assert_eq!(m.available_blocks(), 2);
    drop(complete);
    assert_eq!(m.available_blocks(), 3);
    drop(mutables);
    let s = assert_idle(&m);
    assert_eq!((s.reset_pool_size, s.registered), (4, 0));
    assert!(!m.contains(h(1)));
}

// ---------------------------------------------------------------------------------------------
// Registration and duplication policies
// ---------------------------------------------------------------------------------------------

#[test]
fn registering_a_new_hash_creates_a_primary() {
    let m = fifo(2, REJECT);
    let complete = staged(&m, &[h(1)]).pop().unwrap();
    let id = complete.block_id();
    let b = m.register_block(complete).unwrap();
    assert_eq!((b.block_id(), b.sequence_hash()), (id, h(1)));
    assert!(!b.is_duplicate());
    assert_eq!(b.use_count(), 1);
    assert!(m.contains(h(1)));
    let s = assert_consistent(&m);
    assert_eq!(
        (
            s.registrations,
            s.primaries_created,
            s.registered,
            s.inflight_immutable
        ),
        (1, 1, 1, 1)
    );
}

#[test]
fn reject_policy_returns_the_existing_block_and_frees_the_staged_slot() {
    let m = fifo(4, REJECT);
    let primary = register(&m, &[h(1)]).pop().unwrap();
    let second = staged(&m, &[h(1)]).pop().unwrap();
    let staged_id = second.block_id();
    assert_ne!(staged_id, primary.block_id());
    assert_eq!(m.available_blocks(), 2);

    let got = m.register_block(second).unwrap();
    assert_eq!(
        got.block_id(),
        primary.block_id(),
        "the existing block is handed back"
    );
    assert_ne!(got.block_id(), staged_id);
    assert!(!got.is_duplicate());
    assert_eq!(primary.use_count(), 2);
    assert_eq!(
        m.available_blocks(),
        3,
        "the staged slot went back to the reset pool"
    );
    let s = assert_consistent(&m);
    assert_eq!(
        (s.registrations, s.primaries_created, s.dedups, s.duplicates),
        (2, 1, 1, 0)
    );
    assert_eq!((s.inflight_immutable, s.reset_pool_size), (1, 3));
}

#[test]
fn allow_policy_keeps_a_duplicate_that_is_never_cached() {
    let m = fifo(4, ALLOW);
    let primary = register(&m, &[h(1)]).pop().unwrap();
    let dup = register(&m, &[h(1)]).pop().unwrap();
    assert_ne!(dup.block_id(), primary.block_id());
    assert!(dup.is_duplicate() && !primary.is_duplicate());
    assert_eq!(dup.sequence_hash(), h(1));
    assert_eq!(
        primary.use_count(),
        2,
        "the duplicate holds a reference on its primary"
    );
    let s = assert_consistent(&m);
    assert_eq!(
        (s.duplicates, s.inflight_immutable, s.registered),
        (1, 2, 1)
    );

    let primary_id = primary.block_id();
    drop(primary);
    let s = assert_consistent(&m);
    assert_eq!(
        s.inactive_pool_size, 0,
        "the primary stays active while a duplicate lives"
    );
    assert_eq!(s.inflight_immutable, 2);
    // A match still finds the primary, not the duplicate.
    let hit = m.match_blocks(&[h(1)]);
    assert_eq!(hit[0].block_id(), primary_id);
    drop(hit);

    drop(dup);
    let s = assert_idle(&m);
    assert_eq!((s.inactive_pool_size, s.reset_pool_size), (1, 3));
    assert_eq!(
        s.released_to_reset, 1,
        "the duplicate's slot is freed, not cached"
    );
    assert!(m.contains(h(1)));
}

#[test]
fn registering_against_an_inactive_primary_resurrects_it() {
    for dup in [ALLOW, REJECT] {
        let m = fifo(4, dup);
        let primary_id = register(&m, &[h(1)])[0].block_id();
        assert_eq!(m.metrics().inactive_pool_size, 1);
        let got = register(&m, &[h(1)]).pop().unwrap();
        let s = assert_consistent(&m);
        assert_eq!(s.inactive_pool_size, 0, "{dup:?}");
        assert_eq!(s.resurrections, 1, "{dup:?}");
        let hit = m.match_blocks(&[h(1)]).pop().unwrap();
        assert_eq!(hit.block_id(), primary_id);
        match dup {
            DuplicationPolicy::Allow => assert!(got.is_duplicate()),
            _ => assert_eq!(got.block_id(), primary_id),
        }
        // Nothing evictable while the primary is held.
        assert_eq!(
            m.available_blocks(),
            m.total_blocks() - s.inflight_immutable as usize
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Lookups
// ---------------------------------------------------------------------------------------------

#[test]
fn match_blocks_stops_at_first_miss_and_resurrects_hits() {
    let m = fifo(8, ALLOW);
    let c = chain(10, 4);
    drop(register(&m, &[c[0], c[1], c[3]])); // gap at c[2]
    assert_eq!(m.metrics().inactive_pool_size, 3);

    let hit = m.match_blocks(&c);
    let got: Vec<_> = hit.iter().map(|b| b.sequence_hash()).collect();
    assert_eq!(got, c[..2]);
    let s = assert_consistent(&m);
    assert_eq!((s.match_hashes_requested, s.match_blocks_returned), (4, 2));
    assert_eq!(
        (s.resurrections, s.inactive_pool_size, s.inflight_immutable),
        (2, 1, 2)
    );

    assert!(
        m.match_blocks(&[c[2], c[3]]).is_empty(),
        "a leading miss returns nothing"
    );
    assert!(m.match_blocks(&[]).is_empty());
    drop(hit);
    assert_eq!(assert_idle(&m).inactive_pool_size, 3);
}

#[test]
fn scan_matches_finds_hashes_past_gaps() {
    let m = fifo(8, ALLOW);
    let c = chain(20, 5);
    drop(register(&m, &[c[0], c[2], c[3]]));
    let input = [c[0], c[1], c[2], h(999), c[3], c[4]];
    for touch in [false, true] {
        let out = m.scan_matches(&input, touch);
        assert_eq!(out.len(), input.len(), "aligned with the input");
        let got: Vec<_> = out
            .iter()
            .map(|b| b.as_ref().map(|b| b.sequence_hash()))
            .collect();
        assert_eq!(got, [Some(c[0]), None, Some(c[2]), None, Some(c[3]), None]);
        assert_eq!(m.metrics().inactive_pool_size, 0, "hits are resurrected");
    }
    let s = assert_idle(&m);
    assert_eq!((s.scan_hashes_requested, s.scan_blocks_returned), (12, 6));
    assert_eq!(s.resurrections, 6);
    assert_eq!((s.match_hashes_requested, s.match_blocks_returned), (0, 0));
}

#[test]
fn presence_checks_touch_neither_metrics_nor_eviction_order() {
    for policy in [Policy::Fifo, Policy::Lru] {
        let m = common::manager(3, 1, policy, ALLOW);
        let hs = [h(1), h(2), h(3)];
        for &x in &hs {
            drop(register(&m, &[x])); // released in order 1, 2, 3
        }
        let before = m.metrics();
        for _ in 0..3 {
            assert!(m.contains(h(1)));
            assert!(!m.contains(h(4)));
            assert_eq!(m.prefix_len(&[h(1), h(2), h(4), h(3)]), 2);
            assert_eq!(m.prefix_len(&[h(4), h(1)]), 0);
        }
        assert_eq!(m.metrics(), before, "{policy:?}");
        let (_b, evicted) = m.allocate_blocks_with_evictions(1).unwrap();
        assert_eq!(
            evicted,
            vec![h(1)],
            "{policy:?}: presence checks did not refresh h(1)"
        );

        // Control: a real hit does refresh recency (released again at the back).
        drop(m.match_blocks(&[h(2)]));
        let (_c, evicted) = m.allocate_blocks_with_evictions(1).unwrap();
        assert_eq!(
            evicted,
            vec![h(3)],
            "{policy:?}: the matched block moved to the back"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Weak references and pins
// ---------------------------------------------------------------------------------------------

#[test]
fn weak_upgrade_takes_the_fast_path_while_active() {
    let m = fifo(2, ALLOW);
    let b = register(&m, &[h(1)]).pop().unwrap();
    let weak = b.downgrade();
    assert_eq!(weak.sequence_hash(), h(1));
    let up = weak.upgrade().expect("active block upgrades");
    assert_eq!(up.block_id(), b.block_id());
    assert_eq!(b.use_count(), 2);
    assert_eq!(m.metrics().resurrections, 0);
}

#[test]
fn weak_upgrade_resurrects_an_inactive_block() {
    let m = fifo(2, ALLOW);
    let b = register(&m, &[h(1)]).pop().unwrap();
    let (weak, id) = (b.downgrade(), b.block_id());
    drop(b);
    assert_eq!(m.metrics().inactive_pool_size, 1);
    let up = weak.upgrade().expect("inactive block upgrades");
    assert_eq!((up.block_id(), up.sequence_hash()), (id, h(1)));
    let s = assert_consistent(&m);
    assert_eq!(
        (s.resurrections, s.inactive_pool_size, s.inflight_immutable),
        (1, 0, 1)
    );
    // While upgraded it cannot be evicted.
    assert!(m.allocate_blocks(2).is_err());
}

#[test]
fn weak_upgrade_fails_after_eviction() {
    let m = fifo(1, ALLOW);
    let weak = register(&m, &[h(1)])[0].downgrade();
    let (block, evicted) = m.allocate_blocks_with_evictions(1).unwrap();
    assert_eq!(evicted, vec![h(1)]);
    assert!(weak.upgrade().is_none());
    drop(block);
    assert!(
        weak.upgrade().is_none(),
        "a free slot is not a registration"
    );
    assert_idle(&m);
}

#[test]
fn weak_upgrade_fails_after_the_slot_is_reused() {
    let m = fifo(1, ALLOW);
    let weak = register(&m, &[h(1)])[0].downgrade();
    // Evict h(1) and reuse the single slot for h(2), active then inactive.
    let other = register(&m, &[h(2)]).pop().unwrap();
    assert!(
        weak.upgrade().is_none(),
        "fast path must check the generation"
    );
    assert_eq!(
        other.use_count(),
        1,
        "a failed upgrade leaves no reference behind"
    );
    drop(other);
    assert!(
        weak.upgrade().is_none(),
        "slow path must check the generation"
    );
    let s = assert_idle(&m);
    assert_eq!(s.inactive_pool_size, 1);
    assert!(m.contains(h(2)) && !m.contains(h(1)));
}

#[test]
fn pinned_block_keeps_the_block_active() {
    let m = fifo(2, ALLOW);
    let b = register(&m, &[h(1)]).pop().unwrap();
    let pin = b.pin();
    assert_eq!(
        (pin.block_id(), pin.sequence_hash(), pin.tier()),
        (b.block_id(), h(1), "g1")
    );
    assert_eq!(pin.manager_id(), m.id());
    assert_eq!(b.manager_id(), m.id());
    assert_eq!((pin.use_count(), b.use_count()), (2, 2));
    assert_ne!(m.id(), fifo(1, ALLOW).id(), "manager ids are unique");
    drop(b);
    assert_eq!(pin.use_count(), 1);
    let s = assert_consistent(&m);
    assert_eq!((s.inactive_pool_size, s.inflight_immutable), (0, 1));
    assert!(
        m.allocate_blocks(2).is_err(),
        "a pinned block is not evictable"
    );
    let other = m.allocate_blocks(1).unwrap();
    assert!(m.contains(h(1)));
    drop((pin, other));
    assert_eq!(assert_idle(&m).inactive_pool_size, 1);
}

// ---------------------------------------------------------------------------------------------
// Evict on release
// ---------------------------------------------------------------------------------------------

#[test]
fn evict_on_release_frees_the_slot_on_last_drop() {
    let rec = Arc::new(Recorder::default());
    let m = BlockManager::<G1>::builder()
        .with_block_count(2)
        .with_observer(rec.clone())
        .build()
        .unwrap();
    let b = register(&m, &[h(1)]).pop().unwrap();
    let weak = b.downgrade();
    let clone = b.clone();
    clone.set_evict_on_release(true);
    drop(clone);
    assert!(m.contains(h(1)), "still referenced");
    drop(b);
    let s = assert_idle(&m);
    assert_eq!(
        (s.inactive_pool_size, s.reset_pool_size, s.released_to_reset),
        (0, 2, 1)
    );
    assert!(!m.contains(h(1)));
    assert!(weak.upgrade().is_none());
    assert_eq!(rec.take(), [Event::Registered(h(1)), Event::Removed(h(1))]);

    // The flag does not stick to the slot: the next owner is cached as usual.
    drop(register(&m, &[h(2), h(3)]));
    assert_eq!(m.metrics().inactive_pool_size, 2);
}

#[test]
fn evict_on_release_default_can_be_overridden_per_block() {
    let m = BlockManager::<G1>::builder()
        .with_block_count(2)
        .with_evict_on_release(true)
        .build()
        .unwrap();
    let bs = register(&m, &[h(1), h(2)]);
    bs[1].set_evict_on_release(false);
    drop(bs);
    assert!(!m.contains(h(1)) && m.contains(h(2)));
    assert_eq!(assert_idle(&m).inactive_pool_size, 1);
}

/// A duplicate's `evict_on_release` flag must not carry over to the next registration in its
/// slot (the next primary there is cached as usual).
#[test]
fn duplicate_evict_on_release_flag_does_not_leak_to_the_next_owner() {
    let m = fifo(3, ALLOW);
    let primary = register(&m, &[h(1)]).pop().unwrap();
    let dup = register(&m, &[h(1)]).pop().unwrap();
    assert!(dup.is_duplicate());
    let dup_id = dup.block_id();
    dup.set_evict_on_release(true);
    drop(dup); // the duplicate's slot goes back to the reset pool

    let next = staged(&m, &[h(2)]).pop().unwrap();
    assert_eq!(
        next.block_id(),
        dup_id,
        "the freed slot is reused (LIFO free list)"
    );
    drop(m.register_block(next).unwrap());
    assert!(
        m.contains(h(2)),
        "h(2) never asked for evict-on-release, yet its last release freed it"
    );
    assert_eq!(m.metrics().inactive_pool_size, 1);
    drop(primary);
}

// ---------------------------------------------------------------------------------------------
// Foreign blocks, builder, draining, manager lifetime
// ---------------------------------------------------------------------------------------------

#[test]
fn foreign_blocks_are_handed_back() {
    let a = fifo(2, ALLOW);
    let b = fifo(2, ALLOW);
    assert_ne!(a.id(), b.id());
    let blk = staged(&b, &[h(1)]).pop().unwrap();
    let id = blk.block_id();
    let err = a.register_block(blk).unwrap_err();
    assert!(matches!(err, BlockError::ForeignBlock { .. }), "{err:?}");
    let blk = err.into_block();
    assert_eq!((blk.block_id(), blk.sequence_hash()), (id, h(1)));

    let mut batch = staged(&a, &[h(2)]);
    batch.push(blk);
    let err = a.register_blocks(batch).unwrap_err();
    assert!(matches!(err, BlockError::ForeignBlock { .. }));
    let mut batch = err.into_block();
    assert_eq!(batch.len(), 2, "the whole batch comes back");
    assert_eq!(a.metrics().registrations, 0, "nothing was registered");
    assert!(!a.contains(h(1)) && !a.contains(h(2)));

    let own = b.register_block(batch.pop().unwrap()).unwrap();
    assert_eq!(own.block_id(), id);
    assert!(b.contains(h(1)) && !a.contains(h(1)));
    drop(batch);
    assert_idle(&a);
}

#[test]
fn builder_errors_are_values() {
    let b = || BlockManager::<G1>::builder();
    assert_eq!(b().build().unwrap_err(), BuildError::ZeroBlocks);
    assert_eq!(
        b().with_block_count(0).build().unwrap_err(),
        BuildError::ZeroBlocks
    );
    assert!(matches!(
        b().with_block_count(1).with_block_size(0).build(),
        Err(BuildError::InvalidBlockSize { size: 0, .. })
    ));
    assert!(matches!(
        b().with_block_count(1)
            .with_block_size(MAX_BLOCK_SIZE + 1)
            .build(),
        Err(BuildError::InvalidBlockSize {
            max: MAX_BLOCK_SIZE,
            ..
        })
    ));
    assert!(matches!(
        b().with_block_count(1).with_shards(0).build(),
        Err(BuildError::InvalidShards { shards: 0, .. })
    ));
    assert!(matches!(
        b().with_block_count(1).with_shards(MAX_SHARDS + 1).build(),
        Err(BuildError::InvalidShards {
            max: MAX_SHARDS,
            ..
        })
    ));
    assert!(matches!(
        b().with_block_count(u32::MAX as usize + 1).build(),
        Err(BuildError::TooManyBlocks { .. })
    ));
    let m = b()
        .with_block_count(16)
        .with_block_size(MAX_BLOCK_SIZE)
        .with_shards(3)
        .build();
    let m = m.expect("edge values are accepted");
    assert_eq!((m.block_size(), m.total_blocks()), (MAX_BLOCK_SIZE, 16));
    assert!(m.shard_count().is_power_of_two() && m.shard_count() >= 3);
    assert_eq!(
        b().with_block_count(1)
            .with_shards(8)
            .build()
            .unwrap()
            .shard_count(),
        1
    );
}

#[test]
fn reset_inactive_pool_drains_and_reports_blocks_in_use() {
    let rec = Arc::new(Recorder::default());
    let m = BlockManager::<G1>::builder()
        .with_block_count(4)
        .with_shards(1)
        .with_observer(rec.clone())
        .build()
        .unwrap();
    let mut bs = register(&m, &[h(1), h(2), h(3)]);
    let held = bs.remove(1);
    drop(bs);
    let mutable = m.allocate_blocks(1).unwrap();
    rec.take();

    let err = m.reset_inactive_pool().unwrap_err();
    assert_eq!(err, ResetError::InUse { in_use: 2 });
    let s = assert_consistent(&m);
    assert_eq!(
        (s.inactive_pool_size, s.reset_pool_size, s.evictions),
        (0, 2, 2)
    );
    assert!(!m.contains(h(1)) && m.contains(h(2)) && !m.contains(h(3)));
    assert_eq!(rec.take(), [Event::Removed(h(1)), Event::Removed(h(3))]);

    drop((held, mutable));
    assert_eq!(m.reset_inactive_pool().unwrap(), vec![h(2)]);
    let s = assert_idle(&m);
    assert_eq!((s.reset_pool_size, s.registered), (4, 0));
    assert_eq!(m.reset_inactive_pool().unwrap(), Vec::<SequenceHash>::new());
}

#[test]
fn guards_outlive_the_manager() {
    let m = fifo(6, ALLOW);
    let mutable = m.allocate_blocks(1).unwrap().pop().unwrap();
    let complete = staged(&m, &[h(9)]).pop().unwrap();
    let mut blocks = register(&m, &[h(1), h(2), h(1)]);
    let dup_weak = blocks.pop().unwrap().downgrade(); // a duplicate: freed on drop
    let weak = blocks[1].downgrade();
    let pin = blocks[0].pin();
    let other = m.clone();
    drop(m);
    drop(other);

    let again = weak.upgrade().expect("fast path: still active");
    assert_eq!(again.sequence_hash(), h(2));
    drop((blocks, again)); // h(2) becomes inactive
    let up = weak
        .upgrade()
        .expect("slow path: inactive blocks stay registered");
    drop(up);
    assert!(dup_weak.upgrade().is_none());
    let stage = mutable.stage(h(3), 16).unwrap();
    drop((stage, complete, pin));
    assert!(weak.upgrade().is_some());
}

// ---------------------------------------------------------------------------------------------
// Observers and Prometheus
// ---------------------------------------------------------------------------------------------

#[test]
fn observers_see_each_primary_lifecycle_once() {
    for dup in [ALLOW, REJECT] {
        let rec = Arc::new(Recorder::default());
        let m = BlockManager::<G1>::builder()
            .with_block_count(3)
            .with_shards(1)
            .with_policy(Policy::Fifo.factory())
            .with_duplication_policy(dup)
            .with_observer(rec.clone())
            .build()
            .unwrap();
        let a = register(&m, &[h(1)]);
        let b = register(&m, &[h(1)]); // duplicate or dedup: no event
        drop((a, b));
        drop(m.match_blocks(&[h(1)])); // resurrect + release: no event
        let w = m.scan_matches(&[h(1)], true)[0]
            .as_ref()
            .unwrap()
            .downgrade();
        drop(w.upgrade());
        assert_eq!(rec.take(), [Event::Registered(h(1))], "{dup:?}");

        drop(m.allocate_blocks(3).unwrap()); // evicts h(1)
        assert_eq!(rec.take(), [Event::Removed(h(1))], "{dup:?}");

        drop(register(&m, &[h(1), h(2)]));
        m.reset_inactive_pool().unwrap();
        let ev = rec.take();
        assert_eq!(
            ev,
            [
                Event::Registered(h(1)),
                Event::Registered(h(2)),
                Event::Removed(h(1)),
                Event::Removed(h(2))
            ],
            "{dup:?}"
        );
    }
}

#[test]
fn prometheus_text_exports_evictions_with_pool_label() {
    let m = fifo(2, ALLOW);
    drop(register(&m, &[h(1), h(2)]));
    drop(m.allocate_blocks(2).unwrap()); // two evictions
    drop(register(&m, &[h(3)]));
    m.reset_inactive_pool().unwrap(); // one more
    let mut registry = prometheus_client::registry::Registry::default();
    m.register_metrics(&mut registry, &[("worker", "w0")]);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();

    let line = text
        .lines()
        .find(|l| l.starts_with("kvtier_evictions_total{"))
        .unwrap_or_else(|| panic!("no eviction counter in:\n{text}"));
    assert!(line.contains(r#"pool="g1""#), "{line}");
    assert!(line.contains(r#"worker="w0""#), "{line}");
    assert_eq!(line.rsplit(' ').next(), Some("3"), "{line}");
    assert!(text.contains("# TYPE kvtier_evictions counter"), "{text}");
    let gauge = text
        .lines()
        .find(|l| l.starts_with("kvtier_reset_pool_size{"))
        .unwrap();
    assert_eq!(gauge.rsplit(' ').next(), Some("2"), "{gauge}");
}

// ---------------------------------------------------------------------------------------------
// Frequency tracker and batch release
// ---------------------------------------------------------------------------------------------

#[test]
fn frequency_tracker_counts_registrations_and_hits_only() {
    use kvtier_core::{FrequencySketch, FrequencyTracker};
    let sketch = Arc::new(FrequencySketch::builder(1024).build().unwrap());
    let m = BlockManager::<G1>::builder()
        .with_block_count(8)
        .with_frequency_tracker(sketch.clone())
        .build()
        .unwrap();
    let c = chain(7, 3);
    drop(register(&m, &c));
    for h in &c {
        assert_eq!(sketch.count(h.mix64()), 1, "registration counts once");
    }
    drop(m.match_blocks(&c[..2]));
    drop(m.scan_matches(&c, false)); // untouched scan: not counted
    assert!(m.contains(c[2]) && m.prefix_len(&c) == 3); // probes: not counted
    assert_eq!(sketch.count(c[0].mix64()), 2);
    assert_eq!(sketch.count(c[1].mix64()), 2);
    assert_eq!(sketch.count(c[2].mix64()), 1);
    drop(m.scan_matches(&c[2..], true));
    assert_eq!(sketch.count(c[2].mix64()), 2);
}

#[test]
fn release_blocks_follows_the_given_order() {
    let m = fifo(4, ALLOW);
    let c = chain(3, 4);
    let held = register(&m, &c);
    // Tail-first: the deepest block becomes the first victim.
    m.release_blocks(held.into_iter().rev());
    assert_eq!(assert_idle(&m).inactive_pool_size, 4);
    let (_b, evicted) = m.allocate_blocks_with_evictions(2).unwrap();
    assert_eq!(evicted, vec![c[3], c[2]]);
}

#[test]
fn release_blocks_hands_foreign_blocks_to_their_own_manager() {
    let a = fifo(2, ALLOW);
    let b = fifo(2, ALLOW);
    let from_a = register(&a, &[h(1)]);
    let from_b = register(&b, &[h(2)]);
    a.release_blocks(from_a.into_iter().chain(from_b));
    assert!(a.contains(h(1)) && !a.contains(h(2)));
    assert!(b.contains(h(2)));
    assert_eq!(assert_idle(&a).inactive_pool_size, 1);
    assert_eq!(assert_idle(&b).inactive_pool_size, 1);
}

/// Builds a hash at `position` whose `mix64` digest equals `target`, by inverting the digest
/// (`SequenceHash::mix64` is a bijection of the low word for a fixed high word).
fn with_digest(target: u64, position: u32) -> SequenceHash {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    const C: u64 = 0xC2B2_AE3D_27D4_EB4F;
    // Inverse of K modulo 2^64 by Newton's iteration.
    let mut inv: u64 = K;
    for _ in 0..6 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(K.wrapping_mul(inv)));
    }
    let hi = SequenceHash::new(0, 0, position).as_u128() >> 64;
    let hi = hi as u64;
    let y = target ^ hi.wrapping_mul(C);
    let x = y ^ (y >> 32); // inverse of x ^ (x >> 32)
    let lo = x.wrapping_mul(inv) ^ hi.rotate_left(29);
    let h = SequenceHash::from_u128(((hi as u128) << 64) | lo as u128);
    assert_eq!(h.mix64(), target, "digest inversion");
    h
}

#[test]
fn digest_collisions_never_return_the_wrong_block() {
    let a = with_digest(0xDEAD_BEEF_1234_5678, 3);
    let b = with_digest(0xDEAD_BEEF_1234_5678, 9);
    assert_ne!(a, b);
    let m = BlockManager::<G1>::builder()
        .with_block_count(4)
        .with_shards(1)
        .build()
        .unwrap();
    let held_a = register(&m, &[a]);
    assert!(m.contains(a) && !m.contains(b));
    assert!(m.match_blocks(&[b]).is_empty());
    let held_b = register(&m, &[b]);
    assert_ne!(
        held_a[0].block_id(),
        held_b[0].block_id(),
        "b is not a duplicate of a"
    );
    assert!(!held_b[0].is_duplicate());
    drop(held_a);
    let (_blocks, evicted) = m.allocate_blocks_with_evictions(3).unwrap();
    assert_eq!(evicted, vec![a], "evicting a removes a's entry only");
    assert!(m.contains(b) && !m.contains(a));
    assert_eq!(m.match_blocks(&[b])[0].block_id(), held_b[0].block_id());
}

// ---------------------------------------------------------------------------------------------
// A user policy that breaks its contract
// ---------------------------------------------------------------------------------------------

/// Answers `evict` with a scripted list of ids (out of range, active, free...) before falling
/// back to the oldest block it was really given.
struct Liar {
    script: Vec<u32>,
    real: std::collections::VecDeque<kvtier_core::BlockId>,
}

impl kvtier_core::EvictionPolicy for Liar {
    fn insert(&mut self, block: kvtier_core::BlockId, _hash: SequenceHash) {
        self.real.push_back(block);
    }
    fn remove(&mut self, block: kvtier_core::BlockId) -> bool {
        let before = self.real.len();
        self.real.retain(|&b| b != block);
        before != self.real.len()
    }
    fn evict(&mut self) -> Option<kvtier_core::BlockId> {
        match self.script.pop() {
            Some(id) => Some(kvtier_core::BlockId::new(id)),
            None => self.real.pop_front(),
        }
    }
    fn len(&self) -> usize {
        self.real.len()
    }
}

struct LiarFactory(Vec<u32>);

impl kvtier_core::PolicyFactory for LiarFactory {
    fn name(&self) -> &str {
        "liar"
    }
    fn build(&self, _: kvtier_core::PolicyContext) -> Box<dyn kvtier_core::EvictionPolicy> {
        Box::new(Liar {
            script: self.0.clone(),
            real: Default::default(),
        })
    }
}

#[test]
fn a_lying_policy_cannot_corrupt_the_pools() {
    // Slot 0 will be held (active), slot 1 inactive; the policy first names an out-of-range id,
    // then the active block, then a slot it was never given twice.
    let m = BlockManager::<G1>::builder()
        .with_block_count(3)
        .with_shards(1)
        .with_policy(Arc::new(LiarFactory(vec![2, 2, 0, 999])))
        .build()
        .unwrap();
    let held = register(&m, &[h(1)]);
    assert_eq!(held[0].block_id().raw(), 0);
    drop(register(&m, &[h(2)])); // slot 1, inactive
    let free = m.allocate_blocks(1).unwrap(); // slot 2, the last free one
    let (got, evicted) = m.allocate_blocks_with_evictions(1).unwrap();
    assert_eq!(
        evicted,
        vec![h(2)],
        "only the real inactive block is evicted"
    );
    assert_eq!(got[0].block_id().raw(), 1);
    assert!(m.contains(h(1)), "the active block survives");
    let metrics = m.metrics();
    assert_eq!(metrics.policy_violations, 4);
    drop((got, free, held));
    assert_consistent(&m);
    assert_eq!(m.available_blocks(), 3);
}
