//! The G2 host arena through its public API: slot reuse after eviction, held blocks never
//! overwritten (also under concurrent readers and an evicting writer), statistics against the
//! manager's real state, foreign guards and wrong sizes refused without side effects.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use kvtier_core::{
    AllocError, BlockManager, DuplicationPolicy, G2, ImmutableBlock, MutableBlock, SequenceHash,
};
use kvtier_storage::arena::{ArenaError, HostArena};
use kvtier_storage::layout::{BlockLayout, PAGE_SIZE};

fn manager(blocks: usize) -> BlockManager<G2> {
    BlockManager::<G2>::builder()
        .with_block_count(blocks)
        .build()
        .unwrap()
}

/// The bytes block `k` holds: its number in the first 8 bytes, then `k` as a byte.
fn pattern(k: u64, len: usize) -> Vec<u8> {
    let mut v = vec![k as u8; len];
    let head = k.to_le_bytes();
    let n = head.len().min(len);
    v[..n].copy_from_slice(&head[..n]);
    v
}

fn register(
    m: &BlockManager<G2>,
    arena: &HostArena<G2>,
    mut block: MutableBlock<G2>,
    k: u64,
) -> ImmutableBlock<G2> {
    arena
        .write_from(&mut block, &pattern(k, arena.block_bytes()))
        .unwrap();
    let staged = block.stage(SequenceHash::root(k), m.block_size()).unwrap();
    m.register_block(staged).unwrap()
}

#[test]
fn an_evicted_slot_is_handed_out_again() {
    let m = manager(2);
    let arena = HostArena::new(&m, BlockLayout::from_bytes(3000).unwrap()).unwrap();
    let blocks = m.allocate_blocks(2).unwrap();
    let ids: Vec<_> = blocks.iter().map(|b| b.block_id()).collect();
    let held: Vec<_> = blocks
        .into_iter()
        .zip([10, 11])
        .map(|(b, k)| register(&m, &arena, b, k))
        .collect();
    drop(held); // both cached, evictable
    assert_eq!(arena.stats().cached_entries, 2);

    let (mut fresh, evicted) = m.allocate_blocks_with_evictions(1).unwrap();
    assert_eq!(evicted.len(), 1);
    let b = fresh.pop().unwrap();
    assert!(ids.contains(&b.block_id()), "the freed slot comes back");
    // The slot comes back as it was: the arena never clears bytes behind the writer's back.
    let k = evicted[0].chained();
    assert_eq!(arena.block(&b).unwrap(), &pattern(k, 3000)[..]);
    let s = arena.stats();
    assert_eq!((s.evictions, s.allocations), (1, 3));
    assert_eq!((s.entries, s.active_entries, s.cached_entries), (2, 1, 1));
    assert!(!m.contains(evicted[0]));

    // Written and registered again, the slot serves the new block.
    let again = register(&m, &arena, b, 99);
    let hit = m.match_blocks(&[SequenceHash::root(99)]);
    assert_eq!(hit[0].block_id(), again.block_id());
    assert_eq!(arena.block(&hit[0]).unwrap(), &pattern(99, 3000)[..]);
}

#[test]
fn a_held_block_is_never_evicted_or_overwritten() {
    let m = manager(2);
    let arena = HostArena::new(&m, BlockLayout::from_bytes(PAGE_SIZE).unwrap()).unwrap();
    let mut blocks = m.allocate_blocks(2).unwrap();
    let a = register(&m, &arena, blocks.remove(0), 1);
    let b = register(&m, &arena, blocks.remove(0), 2);
    let pinned = a.pin();
    drop(a); // still held through the pin
    drop(b);
    let mut got = m.allocate_blocks(1).unwrap();
    assert_ne!(got[0].block_id(), pinned.block_id());
    arena.block_mut(&mut got[0]).unwrap().fill(0xEE);
    assert!(matches!(
        m.allocate_blocks(1),
        Err(AllocError::Exhausted { .. })
    ));
    assert_eq!(arena.block(&pinned).unwrap(), &pattern(1, PAGE_SIZE)[..]);
    let s = arena.stats();
    assert_eq!(
        (s.active_entries, s.cached_entries, s.free_entries),
        (2, 0, 0)
    );
}

#[test]
fn stats_follow_the_real_state_on_every_path() {
    let m = manager(4);
    let layout = BlockLayout::from_bytes(5000).unwrap();
    let arena = HostArena::new(&m, layout).unwrap();
    let region = (4 * 2 * PAGE_SIZE) as u64;
    let check = |entries: u64, active: u64, free: u64| {
        let s = arena.stats();
        assert!(s.is_consistent(region), "{s:?}");
        assert_eq!(s.capacity_bytes, region);
        assert_eq!(
            (s.entries, s.active_entries, s.free_entries),
            (entries, active, free)
        );
        assert_eq!(s.used_bytes, entries * 5000);
        assert_eq!(
            s.free_entries as usize + s.cached_entries as usize,
            m.available_blocks()
        );
        let expected_frag = if entries == 0 {
            0.0
        } else {
            (8192.0 - 5000.0) / 8192.0
        };
        assert!((s.fragmentation - expected_frag).abs() < 1e-12);
        s
    };
    check(0, 0, 4);
    let mut blocks = m.allocate_blocks(3).unwrap();
    check(3, 3, 1);
    blocks.pop(); // dropped unwritten: back to free
    check(2, 2, 2);
    let held: Vec<_> = blocks
        .into_iter()
        .enumerate()
        .map(|(i, b)| register(&m, &arena, b, i as u64))
        .collect();
    let s = check(2, 2, 2);
    assert_eq!((s.writes, s.bytes_written), (2, 2 * 5000));
    let mut out = vec![0; 5000];
    arena.read_into(&held[0], &mut out).unwrap();
    drop(held);
    let s = check(2, 0, 2);
    assert_eq!((s.cached_entries, s.reads, s.bytes_read), (2, 1, 5000));
    let all = m.allocate_blocks(4).unwrap(); // two from free, two evicted
    let s = check(4, 4, 0);
    assert_eq!((s.allocations, s.evictions), (7, 2));
    drop(all);
    check(0, 0, 4);
}

#[test]
fn foreign_guards_and_wrong_sizes_are_refused_without_side_effects() {
    let m = manager(2);
    let other = manager(2);
    let arena = HostArena::new(&m, BlockLayout::from_bytes(128).unwrap()).unwrap();
    let mut foreign = other.allocate_blocks(2).unwrap();
    let expected = ArenaError::ForeignBlock {
        expected: m.id(),
        actual: other.id(),
    };
    assert_eq!(arena.block_mut(&mut foreign[0]).unwrap_err(), expected);
    assert_eq!(arena.block(&foreign[0]).unwrap_err(), expected);
    assert_eq!(
        arena.write_from(&mut foreign[0], &[1; 128]).unwrap_err(),
        expected
    );
    let f = foreign.pop().unwrap();
    let f = other
        .register_block(f.stage(SequenceHash::root(5), other.block_size()).unwrap())
        .unwrap();
    let mut buf = vec![9u8; 128];
    assert_eq!(arena.read_into(&f, &mut buf).unwrap_err(), expected);
    assert_eq!(arena.read_into(&f.pin(), &mut buf).unwrap_err(), expected);
    assert!(buf.iter().all(|&b| b == 9), "dst untouched");

    let mut mine = m.allocate_blocks(1).unwrap().pop().unwrap();
    assert_eq!(
        arena.write_from(&mut mine, &[1; 127]).unwrap_err(),
        ArenaError::SizeMismatch {
            expected: 128,
            actual: 127
        }
    );
    assert!(arena.block(&mine).unwrap().iter().all(|&b| b == 0));
    assert!(matches!(
        arena.read_into(&mine, &mut [0; 129]),
        Err(ArenaError::SizeMismatch { .. })
    ));
    assert_eq!(arena.stats().rejected, 7);
}

#[test]
fn batch_copies_are_all_or_nothing() {
    let m = manager(4);
    let other = manager(1);
    let arena = HostArena::new(&m, BlockLayout::from_bytes(1000).unwrap()).unwrap();
    let mut blocks = m.allocate_blocks(3).unwrap();
    let src: Vec<u8> = (0..3).flat_map(|k| pattern(k, 1000)).collect();
    arena.write_many_from(&mut blocks, &src).unwrap();
    for (k, b) in blocks.iter().enumerate() {
        assert_eq!(arena.block(b).unwrap(), &pattern(k as u64, 1000)[..]);
    }
    let mut dst = vec![0; 3000];
    arena.read_many_into(&blocks, &mut dst).unwrap();
    assert_eq!(dst, src);

    // One foreign block in the batch: nothing is written.
    blocks.push(other.allocate_blocks(1).unwrap().pop().unwrap());
    let ones = vec![1u8; 4000];
    assert!(matches!(
        arena.write_many_from(&mut blocks, &ones),
        Err(ArenaError::ForeignBlock { .. })
    ));
    let mut dst4 = vec![7u8; 4000];
    assert!(arena.read_many_into(&blocks, &mut dst4).is_err());
    assert!(dst4.iter().all(|&b| b == 7));
    blocks.pop();
    arena.read_many_into(&blocks, &mut dst).unwrap();
    assert_eq!(dst, src, "slots unchanged by the refused batch");
    assert!(matches!(
        arena.write_many_from(&mut blocks, &ones[..2999]),
        Err(ArenaError::SizeMismatch {
            expected: 3000,
            actual: 2999
        })
    ));
}

/// Readers match blocks, check every byte, yield while holding the guard and check again; a
/// writer keeps allocating (evicting cached blocks), writing and registering new ones. If the
/// core ever reused a slot under a held guard, a reader would see another block's bytes.
/// (Checked: with the core's release made to free a slot while a second handle still held it,
/// this test failed with "overwritten while held" in 3 runs out of 3.)
#[test]
fn concurrent_readers_never_see_their_block_overwritten() {
    const BLOCKS: usize = 8;
    const WRITES: u64 = 20_000;
    let bytes = 2 * PAGE_SIZE + 8;
    let m = manager(BLOCKS);
    let arena = Arc::new(HostArena::new(&m, BlockLayout::from_bytes(bytes).unwrap()).unwrap());
    let latest = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let verified = Arc::new(AtomicU64::new(0));

    let readers: Vec<_> = (0..3)
        .map(|r| {
            let (m, arena, latest, done, verified) = (
                m.clone(),
                arena.clone(),
                latest.clone(),
                done.clone(),
                verified.clone(),
            );
            thread::spawn(move || {
                let mut i = r as u64;
                while !done.load(Ordering::Acquire) {
                    i += 1;
                    let top = latest.load(Ordering::Acquire);
                    let k = top.saturating_sub(i % (2 * BLOCKS as u64));
                    for b in m.match_blocks(&[SequenceHash::root(k)]) {
                        let expect = pattern(k, bytes);
                        assert!(arena.block(&b).unwrap() == &expect[..], "block {k} torn");
                        for _ in 0..3 {
                            thread::yield_now();
                        }
                        assert!(
                            arena.block(&b).unwrap() == &expect[..],
                            "block {k} overwritten while held"
                        );
                        verified.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    for k in 1..=WRITES {
        let block = loop {
            match m.allocate_blocks_with_evictions(1) {
                Ok((mut b, _)) => break b.pop().unwrap(),
                // Every slot held by readers right now: wait for one to let go.
                Err(AllocError::Exhausted { .. }) => thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        drop(register(&m, &arena, block, k));
        latest.store(k, Ordering::Release);
    }
    done.store(true, Ordering::Release);
    for r in readers {
        r.join().expect("reader saw a torn or foreign block");
    }
    let s = arena.stats();
    assert!(s.is_consistent((BLOCKS * 3 * PAGE_SIZE) as u64), "{s:?}");
    assert_eq!(s.allocations, WRITES);
    assert!(s.evictions >= WRITES - BLOCKS as u64, "{s:?}");
    assert_eq!(s.active_entries, 0);
    assert!(
        verified.load(Ordering::Relaxed) > 0,
        "readers checked nothing"
    );
}

/// With `DuplicationPolicy::Allow` a duplicate keeps its own slot and bytes; with `Reject` the
/// caller gets the primary's slot, and the rejected slot goes back to the free pool.
#[test]
fn duplicates_read_their_own_slot_and_rejected_ones_the_primary() {
    for policy in [DuplicationPolicy::Allow, DuplicationPolicy::Reject] {
        let m = BlockManager::<G2>::builder()
            .with_block_count(4)
            .with_duplication_policy(policy)
            .build()
            .unwrap();
        let arena = HostArena::new(&m, BlockLayout::from_bytes(512).unwrap()).unwrap();
        let mut blocks = m.allocate_blocks(2).unwrap();
        let first = register(&m, &arena, blocks.remove(0), 3);
        // Same hash, other bytes (as two engines filling the same prefix would not, but may).
        let mut second = blocks.remove(0);
        arena.write_from(&mut second, &[0xCC; 512]).unwrap();
        let second = m
            .register_block(second.stage(SequenceHash::root(3), m.block_size()).unwrap())
            .unwrap();
        assert_eq!(arena.block(&first).unwrap(), &pattern(3, 512)[..]);
        match policy {
            DuplicationPolicy::Allow => {
                assert!(second.is_duplicate());
                assert_ne!(second.block_id(), first.block_id());
                assert!(arena.block(&second).unwrap().iter().all(|&b| b == 0xCC));
                assert_eq!(arena.stats().active_entries, 2);
            }
            _ => {
                assert_eq!(second.block_id(), first.block_id());
                assert_eq!(arena.block(&second).unwrap(), &pattern(3, 512)[..]);
                assert_eq!(arena.stats().active_entries, 1);
            }
        }
        assert!(arena.stats().is_consistent(4 * PAGE_SIZE as u64));
    }
}

/// A weak reference does not keep the slot: once the block is evicted and the slot rewritten,
/// upgrading fails, so no stale bytes can be reached through it.
#[test]
fn a_weak_reference_cannot_reach_a_reused_slot() {
    let m = manager(1);
    let arena = HostArena::new(&m, BlockLayout::from_bytes(256).unwrap()).unwrap();
    let held = register(&m, &arena, m.allocate_blocks(1).unwrap().pop().unwrap(), 8);
    let weak = held.downgrade();
    drop(held);
    let again = weak.upgrade().expect("cached, not evicted yet");
    assert_eq!(arena.block(&again).unwrap(), &pattern(8, 256)[..]);
    drop(again);
    let mut reused = m.allocate_blocks(1).unwrap().pop().unwrap();
    arena.block_mut(&mut reused).unwrap().fill(1);
    assert!(weak.upgrade().is_none());
    assert_eq!(arena.stats().evictions, 1);
}
