//! Unit tests of the prefix index: edge cases of each operation and of the walk. The
//! model-based test of interleavings is `tests/index_model.rs`.

use kvtier_core::{Medium, SequenceHash};

use super::{IndexError, Overlap, PrefixIndex, QueryScratch, RemoveOutcome};

/// A chain of `n` blocks whose chained hashes start at `seed`.
fn chain(seed: u64, n: usize) -> Vec<SequenceHash> {
    let mut out: Vec<SequenceHash> = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let h = match out.last() {
            None => SequenceHash::root(seed),
            Some(&p) => SequenceHash::child_of(p, seed.wrapping_mul(1000).wrapping_add(i)),
        };
        out.push(h);
    }
    out
}

/// The hashes at 0-based positions `2^j - 1` below `n`.
fn powers(chain: &[SequenceHash]) -> Vec<SequenceHash> {
    chain
        .iter()
        .enumerate()
        .filter(|(i, _)| (i + 1).is_power_of_two())
        .map(|(_, &h)| h)
        .collect()
}

fn line(slot: u32, medium: Medium, matched: u32, upper: u32) -> Overlap {
    Overlap {
        slot,
        medium,
        matched,
        upper,
    }
}

#[test]
fn insert_is_idempotent() {
    let c = chain(1, 6);
    let mut index = PrefixIndex::new();
    assert_eq!(index.insert(3, Medium::Cpu, &c[..4]), Ok(4));
    assert_eq!(index.insert(3, Medium::Cpu, &c), Ok(2));
    assert_eq!(index.insert(3, Medium::Cpu, &c), Ok(0));
    // The same hash twice in one batch counts once.
    assert_eq!(index.insert(4, Medium::Cpu, &[c[0], c[0]]), Ok(1));
    assert_eq!(index.blocks_of(3), [0, 6, 0, 0]);
    assert_eq!(index.len(), 6);
    assert_eq!(index.entries(), 7);
    index.check();
}

#[test]
fn unknown_removals_are_counted_and_ignored() {
    let c = chain(2, 4);
    let mut index = PrefixIndex::new();
    index.insert(0, Medium::Gpu, &c[..2]).unwrap();
    index.insert(1, Medium::Gpu, &c).unwrap();
    // c[2] is held by slot 1 only; c[3] too; c[0] is held.
    assert_eq!(
        index.remove(0, Medium::Gpu, &c),
        RemoveOutcome {
            removed: 2,
            unknown: 2
        }
    );
    // Other medium, unknown slot, huge slot: all unknown, nothing changes.
    assert_eq!(index.remove(1, Medium::Cpu, &c).unknown, 4);
    assert_eq!(index.remove(77, Medium::Gpu, &c).unknown, 4);
    assert_eq!(index.remove(u32::MAX, Medium::Gpu, &c).unknown, 4);
    // Removing twice: the second time is unknown.
    assert_eq!(index.remove(1, Medium::Gpu, &c[3..]).removed, 1);
    assert_eq!(index.remove(1, Medium::Gpu, &c[3..]).unknown, 1);
    assert_eq!(index.blocks_of(0), [0; 4]);
    assert_eq!(index.blocks_of(1), [3, 0, 0, 0]);
    assert_eq!(index.len(), 3);
    assert_eq!(index.entries(), 3);
    index.check();
}

#[test]
fn remove_instance_per_medium_and_all() {
    let c = chain(3, 8);
    let mut index = PrefixIndex::new();
    for slot in 0..3 {
        index.insert(slot, Medium::Gpu, &c).unwrap();
        index.insert(slot, Medium::Disk, &c[..5]).unwrap();
    }
    assert_eq!(index.remove_instance(1, Some(Medium::Disk)), 5);
    assert_eq!(index.blocks_of(1), [8, 0, 0, 0]);
    assert_eq!(index.remove_instance(1, Some(Medium::Disk)), 0);
    assert_eq!(index.remove_instance(0, None), 13);
    assert_eq!(index.blocks_of(0), [0; 4]);
    assert_eq!(index.blocks_of(2), [8, 0, 5, 0]);
    assert_eq!(index.entries(), 8 + 13);
    assert_eq!(index.len(), 8);
    assert!(!index.contains(c[0], 0, Medium::Gpu));
    assert!(index.contains(c[0], 2, Medium::Gpu));
    index.check();
    assert_eq!(index.remove_instance(2, None), 13);
    assert_eq!(index.remove_instance(1, None), 8);
    assert!(index.is_empty());
    assert_eq!(index.entries(), 0);
    assert_eq!(index.remove_instance(9999, None), 0);
    index.check();
}

#[test]
fn remove_instance_scans_a_large_wrapped_table() {
    // Many hashes, many holders (spilled lists), then drop instances one by one.
    let mut index = PrefixIndex::new();
    let chains: Vec<_> = (0..64).map(|s| chain(s + 100, 40)).collect();
    for slot in 0..8u32 {
        for (i, c) in chains.iter().enumerate() {
            if (i as u32 + slot) % 3 != 0 {
                index.insert(slot, Medium::ALL[i % 2], c).unwrap();
            }
        }
    }
    index.check();
    let mut left = index.entries();
    for slot in 0..8 {
        let held: usize = index.blocks_of(slot).iter().sum();
        assert_eq!(index.remove_instance(slot, None), held);
        left -= held;
        assert_eq!(index.entries(), left);
        index.check();
    }
    assert!(index.is_empty());
}

#[test]
fn spilled_holder_lists_round_trip() {
    let c = chain(4, 3);
    let mut index = PrefixIndex::new();
    let mut scratch = QueryScratch::new();
    // Insert out of slot order so that sorted insertion is exercised.
    for slot in [9, 2, 7, 0, 5, 1, 8, 3, 6, 4] {
        index.insert(slot, Medium::Cpu, &c).unwrap();
        index.check();
    }
    let answer = index.query(&c, |_| false, &mut scratch);
    assert_eq!(answer.len(), 10);
    assert!(answer.iter().enumerate().all(|(i, o)| o.slot == i as u32));
    for slot in [0, 9, 4, 5, 6, 7, 8] {
        assert_eq!(index.remove(slot, Medium::Cpu, &c).removed, 3);
        index.check();
    }
    let slots: Vec<u32> = index
        .query(&c, |_| false, &mut scratch)
        .iter()
        .map(|o| o.slot)
        .collect();
    assert_eq!(slots, [1, 2, 3]);
}

#[test]
fn query_dense_prefixes_and_order() {
    let c = chain(5, 10);
    let mut index = PrefixIndex::new();
    index.insert(2, Medium::Cpu, &c[..7]).unwrap();
    index.insert(2, Medium::Gpu, &c[..3]).unwrap();
    index.insert(0, Medium::Disk, &c).unwrap();
    // A hole at position 4: slot 1 holds 0..4 and 5..10, so only 4 leading blocks.
    index.insert(1, Medium::Gpu, &c[..4]).unwrap();
    index.insert(1, Medium::Gpu, &c[5..]).unwrap();
    // Slot 3 lacks the first block: not reported.
    index.insert(3, Medium::Gpu, &c[1..]).unwrap();
    let mut scratch = QueryScratch::new();
    assert_eq!(
        index.query(&c, |_| false, &mut scratch),
        [
            line(0, Medium::Disk, 10, 10),
            line(1, Medium::Gpu, 4, 4),
            line(2, Medium::Gpu, 3, 3),
            line(2, Medium::Cpu, 7, 7),
        ]
    );
    // A shorter request caps every line.
    assert_eq!(
        index.query(&c[..2], |_| false, &mut scratch),
        [
            line(0, Medium::Disk, 2, 2),
            line(1, Medium::Gpu, 2, 2),
            line(2, Medium::Gpu, 2, 2),
            line(2, Medium::Cpu, 2, 2),
        ]
    );
    // A request that diverges after block 1.
    let mut other = c[..2].to_vec();
    other.extend(chain(6, 3));
    let answer = index.query(&other, |_| false, &mut scratch);
    assert!(answer.iter().all(|o| o.matched == 2 && o.upper == 2));
    assert!(index.query(&[], |_| false, &mut scratch).is_empty());
    assert!(index.query(&c[1..], |_| false, &mut scratch)[0].slot == 0);
}

#[test]
fn query_sparse_bounds_by_hand() {
    // A 13-block request; sparse slot 0 announced 1-based positions 1, 2, 4, 8 (0-based 0, 1,
    // 3, 7); sparse slot 1 announced 1, 2 but not 4; sparse slot 2 announced 1, 2 and 8 but
    // not 4; dense slot 3 holds 6 blocks.
    let c = chain(7, 13);
    let mut index = PrefixIndex::new();
    index
        .insert(0, Medium::Gpu, &[c[0], c[1], c[3], c[7]])
        .unwrap();
    index.insert(1, Medium::Gpu, &[c[0], c[1]]).unwrap();
    index.insert(2, Medium::Gpu, &[c[0], c[1], c[7]]).unwrap();
    index.insert(3, Medium::Gpu, &c[..6]).unwrap();
    let sparse = |slot: u32| slot < 3;
    let mut scratch = QueryScratch::new();
    assert_eq!(
        index.query(&c, sparse, &mut scratch),
        [
            // Holds 8, not 16 (beyond the request): between 8 and min(15, 13).
            line(0, Medium::Gpu, 8, 13),
            // Holds 2, not 4: between 2 and 3.
            line(1, Medium::Gpu, 2, 3),
            line(2, Medium::Gpu, 2, 3),
            line(3, Medium::Gpu, 6, 6),
        ]
    );
    // Requests of 1 and 2 and 5 blocks.
    assert_eq!(
        index.query(&c[..1], sparse, &mut scratch)[0],
        line(0, Medium::Gpu, 1, 1)
    );
    assert_eq!(
        index.query(&c[..2], sparse, &mut scratch)[1],
        line(1, Medium::Gpu, 2, 2)
    );
    assert_eq!(
        index.query(&c[..5], sparse, &mut scratch)[..2],
        [line(0, Medium::Gpu, 4, 5), line(1, Medium::Gpu, 2, 3)]
    );
    // Read as dense, slot 0 holds only 2 leading blocks.
    assert_eq!(
        index.query(&c, |_| false, &mut scratch)[0],
        line(0, Medium::Gpu, 2, 2)
    );
}

#[test]
fn walk_stops_early() {
    let c = chain(8, 128);
    let mut index = PrefixIndex::new();
    let mut scratch = QueryScratch::new();
    // Nobody holds the first block: one lookup.
    index.insert(0, Medium::Gpu, &c[1..]).unwrap();
    assert!(index.query(&c, |_| false, &mut scratch).is_empty());
    assert_eq!(scratch.lookups, 1);
    // A dense holder of 5 blocks: lookups 0..=5, then stop.
    index.insert(1, Medium::Gpu, &c[..5]).unwrap();
    assert_eq!(index.query(&c, |_| false, &mut scratch).len(), 1);
    assert_eq!(scratch.lookups, 6);
    // A sparse holder of every power position: only those are looked up once the dense one
    // is gone (0..=5 walked densely, then 7, 15, 31, 63, 127).
    index.insert(2, Medium::Gpu, &powers(&c)).unwrap();
    let answer = index.query(&c, |slot| slot == 2, &mut scratch);
    assert_eq!(answer[1], line(2, Medium::Gpu, 128, 128));
    assert_eq!(scratch.lookups, 6 + 5);
}

#[test]
fn positions_are_taken_from_the_request_not_the_hash() {
    // Blocks whose own positions are all 0 (roots): still a 3-block prefix of this request.
    let roots: Vec<SequenceHash> = (0..3).map(SequenceHash::root).collect();
    let mut index = PrefixIndex::new();
    index.insert(0, Medium::Cpu, &roots).unwrap();
    let mut scratch = QueryScratch::new();
    assert_eq!(
        index.query(&roots, |_| false, &mut scratch),
        [line(0, Medium::Cpu, 3, 3)]
    );
    // The same chained hash at another position is another block.
    let moved = SequenceHash::new(1, 0, 5);
    assert!(!index.contains(moved, 0, Medium::Cpu));
    assert!(index.contains(roots[1], 0, Medium::Cpu));
}

#[test]
fn bad_slots_and_empty_batches() {
    let c = chain(9, 2);
    let mut index = PrefixIndex::new();
    assert_eq!(
        index.insert(PrefixIndex::MAX_SLOTS, Medium::Gpu, &c),
        Err(IndexError::SlotOutOfRange {
            slot: PrefixIndex::MAX_SLOTS,
            max: PrefixIndex::MAX_SLOTS
        })
    );
    assert!(index.is_empty());
    assert_eq!(index.insert(0, Medium::Gpu, &[]), Ok(0));
    assert_eq!(index.remove(0, Medium::Gpu, &[]), RemoveOutcome::default());
    let top = PrefixIndex::MAX_SLOTS - 1;
    assert_eq!(index.insert(top, Medium::External, &c), Ok(2));
    assert_eq!(index.blocks_of(top), [0, 0, 0, 2]);
    assert!(!index.contains(c[0], u32::MAX, Medium::External));
    assert_eq!(index.blocks_of(u32::MAX), [0; 4]);
    let mut scratch = QueryScratch::new();
    assert_eq!(
        index.query(&c, |_| true, &mut scratch),
        [line(top, Medium::External, 2, 2)]
    );
    index.check();
}

#[test]
fn growth_and_churn_keep_the_table_consistent() {
    let mut index = PrefixIndex::with_capacity(4);
    let chains: Vec<_> = (0..200).map(|s| chain(s * 7 + 1, 25)).collect();
    for (i, c) in chains.iter().enumerate() {
        index.insert((i % 5) as u32, Medium::Gpu, c).unwrap();
    }
    index.check();
    assert_eq!(index.len(), 200 * 25);
    // Remove the tails of every other chain, children first as a Remove batch would.
    for (i, c) in chains.iter().enumerate().step_by(2) {
        let tail: Vec<_> = c[10..].iter().rev().copied().collect();
        assert_eq!(index.remove((i % 5) as u32, Medium::Gpu, &tail).removed, 15);
    }
    index.check();
    assert_eq!(index.len(), 200 * 25 - 100 * 15);
    let mut scratch = QueryScratch::new();
    assert_eq!(
        index.query(&chains[2], |_| false, &mut scratch)[0].matched,
        10
    );
    assert_eq!(
        index.query(&chains[3], |_| false, &mut scratch)[0].matched,
        25
    );
    index.clear();
    assert!(index.is_empty());
    assert_eq!(index.entries(), 0);
    assert_eq!(index.iter().count(), 0);
    assert!(index.query(&chains[3], |_| false, &mut scratch).is_empty());
    index.check();
}

#[test]
fn iter_lists_every_entry() {
    let c = chain(10, 3);
    let mut index = PrefixIndex::new();
    index.insert(1, Medium::Gpu, &c).unwrap();
    index.insert(0, Medium::Disk, &c[..1]).unwrap();
    let mut all: Vec<_> = index.iter().collect();
    all.sort_by_key(|&(h, s, m)| (h, s, m.index()));
    assert_eq!(
        all,
        [
            (c[0], 0, Medium::Disk),
            (c[0], 1, Medium::Gpu),
            (c[1], 1, Medium::Gpu),
            (c[2], 1, Medium::Gpu),
        ]
    );
}

#[test]
fn own_lists_stay_bounded_under_churn_and_revivals() {
    // FIFO eviction (oldest chain first, children first) with chains coming back, a
    // long-lived prompt at the front, and random removals on another medium.
    let mut index = PrefixIndex::new();
    let prompt = chain(7, 20);
    index.insert(0, Medium::Gpu, &prompt).unwrap();
    let pool: Vec<_> = (0..40).map(|s| chain(1000 + s, 30)).collect();
    let window = 25;
    for step in 0..400usize {
        let new = &pool[step % pool.len()];
        index.insert(0, Medium::Gpu, new).unwrap();
        if step >= window {
            let old = &pool[(step - window) % pool.len()];
            let rev: Vec<_> = old.iter().rev().copied().collect();
            assert_eq!(index.remove(0, Medium::Gpu, &rev).removed, old.len());
        }
        // The same hash given and lost again and again on the CPU medium.
        index
            .insert(0, Medium::Cpu, &prompt[..1 + step % 20])
            .unwrap();
        let scattered: Vec<_> = prompt.iter().copied().step_by(1 + step % 3).collect();
        index.remove(0, Medium::Cpu, &scattered);
        index.check();
    }
    index.insert(0, Medium::Cpu, &prompt[..5]).unwrap();
    let [gpu, cpu, _, _] = index.blocks_of(0);
    assert_eq!((gpu, cpu), (20 + window * 30, 5));
    assert_eq!(index.remove_instance(0, Some(Medium::Cpu)), cpu);
    index.check();
    assert_eq!(index.remove_instance(0, None), gpu);
    assert!(index.is_empty());
    index.check();
}

#[test]
fn a_sized_index_takes_its_blocks_without_growing() {
    let mut index = PrefixIndex::with_capacity(5000);
    let buckets = index.table.capacity();
    assert!(buckets >= 5000, "room for {buckets}");
    let chains: Vec<_> = (0..200).map(|s| chain(s * 7 + 1, 25)).collect();
    for (i, c) in chains.iter().enumerate() {
        index.insert((i % 3) as u32, Medium::Gpu, c).unwrap();
    }
    assert_eq!(index.len(), 5000);
    assert_eq!(index.table.capacity(), buckets, "the table grew");
    index.check();
    // One more block than it was sized for: it grows.
    index.insert(0, Medium::Gpu, &chain(9_999_991, 1)).unwrap();
    assert_eq!(index.len(), 5001);
    index.check();
}

#[test]
fn an_impossible_size_gives_an_empty_index_that_grows() {
    for blocks in [usize::MAX, usize::MAX / 2, 1 << 62] {
        let mut index = PrefixIndex::with_capacity(blocks);
        assert_eq!(index.table.capacity(), 0);
        index.insert(0, Medium::Cpu, &chain(5, 40)).unwrap();
        assert_eq!(index.len(), 40);
        index.check();
    }
}
