//! The eviction hook: called with each eviction's victims before their slots are reused.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use kvtier_core::{BlockId, BlockManager, EvictedBlock, EvictionHook, G2, SequenceHash};
use parking_lot::Mutex;

#[derive(Default)]
struct Record {
    calls: Mutex<Vec<Vec<(SequenceHash, BlockId, u64)>>>,
    panic: std::sync::atomic::AtomicBool,
}

impl EvictionHook for Record {
    fn evicting(&self, victims: &[EvictedBlock<'_>]) {
        self.calls.lock().push(
            victims
                .iter()
                .map(|v| (v.hash(), v.block_id(), v.manager_id()))
                .collect(),
        );
        if self.panic.load(std::sync::atomic::Ordering::Relaxed) {
            panic!("hook failed");
        }
    }
}

fn manager(n: usize, hook: Arc<Record>) -> BlockManager<G2> {
    BlockManager::<G2>::builder()
        .with_block_count(n)
        .with_shards(2)
        .with_eviction_hook(hook)
        .build()
        .unwrap()
}

/// Registers `hashes` one block each and releases them (inactive, evictable).
fn fill(m: &BlockManager<G2>, hashes: &[SequenceHash]) {
    let staged: Vec<_> = m
        .allocate_blocks(hashes.len())
        .unwrap()
        .into_iter()
        .zip(hashes)
        .map(|(b, &h)| b.stage(h, m.block_size()).unwrap())
        .collect();
    drop(m.register_blocks(staged).unwrap());
}

fn chain(seed: u64, n: usize) -> Vec<SequenceHash> {
    let mut h = SequenceHash::root(seed);
    let mut out = vec![h];
    for i in 1..n {
        h = SequenceHash::child_of(h, i as u64);
        out.push(h);
    }
    out
}

#[test]
fn allocation_shows_victims_before_handing_out_their_slots() {
    let hook = Arc::new(Record::default());
    let m = manager(4, hook.clone());
    let hashes = chain(1, 4);
    fill(&m, &hashes);
    assert!(hook.calls.lock().is_empty(), "no eviction yet");

    let (blocks, evicted) = m.allocate_blocks_with_evictions(2).unwrap();
    let calls = hook.calls.lock().clone();
    assert_eq!(calls.len(), 1);
    let seen: Vec<SequenceHash> = calls[0].iter().map(|v| v.0).collect();
    assert_eq!(seen, evicted);
    assert!(calls[0].iter().all(|v| v.2 == m.id()));
    let mut victim_ids: Vec<BlockId> = calls[0].iter().map(|v| v.1).collect();
    let mut got: Vec<BlockId> = blocks.iter().map(|b| b.block_id()).collect();
    victim_ids.sort();
    got.sort();
    assert_eq!(
        victim_ids, got,
        "the caller gets exactly the victims' slots"
    );
    for h in &seen {
        assert!(
            m.match_blocks(&[*h]).is_empty(),
            "a victim is no longer matchable"
        );
    }
}

#[test]
fn reset_inactive_pool_shows_every_victim_then_frees_them() {
    let hook = Arc::new(Record::default());
    let m = manager(6, hook.clone());
    let hashes = chain(2, 6);
    fill(&m, &hashes);
    let removed = m.reset_inactive_pool().unwrap();
    assert_eq!(removed.len(), 6);
    let calls = hook.calls.lock().clone();
    assert_eq!(calls.len(), 1);
    let seen: Vec<SequenceHash> = calls[0].iter().map(|v| v.0).collect();
    assert_eq!(seen, removed);
    // Every slot is free again.
    assert_eq!(m.allocate_blocks(6).unwrap().len(), 6);
}

#[test]
fn a_panicking_hook_leaves_the_manager_consistent() {
    let hook = Arc::new(Record::default());
    let m = manager(4, hook.clone());
    fill(&m, &chain(3, 4));
    hook.panic.store(true, std::sync::atomic::Ordering::Relaxed);
    let r = catch_unwind(AssertUnwindSafe(|| m.allocate_blocks(3)));
    assert!(r.is_err(), "the hook's panic reaches the caller");
    // The slots the panicking call held went back; the evicted blocks are gone.
    let r = catch_unwind(AssertUnwindSafe(|| m.reset_inactive_pool()));
    assert!(
        r.is_err(),
        "the hook runs (and panics) on the remaining victim"
    );
    hook.panic
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let all = m.allocate_blocks(4).unwrap();
    assert_eq!(all.len(), 4);
    drop(all);
    fill(&m, &chain(4, 4));
    assert_eq!(m.match_blocks(&chain(4, 4)).len(), 4);
}
