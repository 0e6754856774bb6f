//! Multi-threaded stress of one shared block manager, and a targeted race between the last
//! release of a block and its resurrection by a concurrent match or weak upgrade.
//!
//! The workload test runs four threads of random requests (match a prefix of a shared chain,
//! allocate and register the missing blocks, hold sequences across iterations, downgrade and
//! upgrade, release in random order, allocate-and-drop scratch blocks) and then checks, with
//! the manager quiescent, that every slot came back, the gauges and counters agree, every
//! registered hash still matches, and the inactive pool drains. While running, every held
//! block must keep its hash and stay `contains`-visible: a strongly referenced block is never
//! evicted.

mod common;

use std::sync::Barrier;

use common::{Policy, Rng, assert_consistent, assert_idle};
use kvtier_core::{BlockManager, DuplicationPolicy, G1, ImmutableBlock, SequenceHash, WeakBlock};

const THREADS: usize = 4;
const ITERS: usize = 5_000;
const CHAIN_LEN: usize = 8;

/// 24 chains (about 170 distinct hashes for 64 slots); chain `k` shares its first `k % 4` blocks with chain 0, so matches overlap.
fn chains() -> Vec<Vec<SequenceHash>> {
    let base = common::chain(1, CHAIN_LEN);
    (0..24u64)
        .map(|k| {
            let shared = (k % 4) as usize;
            let mut c: Vec<_> = base[..shared].to_vec();
            let mut cur = c.last().copied();
            while c.len() < CHAIN_LEN {
                let v = 10_000 + k * 100 + c.len() as u64;
                let next = match cur {
                    None => SequenceHash::root(v),
                    Some(p) => SequenceHash::child_of(p, v),
                };
                c.push(next);
                cur = Some(next);
            }
            c
        })
        .collect()
}

fn assert_held(m: &BlockManager<G1>, seq: &[ImmutableBlock<G1>], hashes: &[SequenceHash]) {
    for (b, h) in seq.iter().zip(hashes) {
        assert_eq!(b.sequence_hash(), *h, "a held block keeps its hash");
        assert!(m.contains(*h), "a held block is never evicted");
    }
}

/// One thread's random requests against the shared manager.
fn worker(m: &BlockManager<G1>, chains: &[Vec<SequenceHash>], seed: u64) {
    let mut rng = Rng::new(seed);
    let mut held: Vec<(Vec<ImmutableBlock<G1>>, Vec<SequenceHash>)> = Vec::new();
    let mut weaks: Vec<WeakBlock<G1>> = Vec::new();
    for _ in 0..ITERS {
        let chain = &chains[rng.below(chains.len())];
        let want = &chain[..1 + rng.below(CHAIN_LEN)];
        let mut seq = m.match_blocks(want);
        assert_held(m, &seq, want);
        let missing = &want[seq.len()..];
        if !missing.is_empty()
            && let Ok(blocks) = m.allocate_blocks(missing.len())
        {
            let staged: Vec<_> = blocks
                .into_iter()
                .zip(missing)
                .map(|(b, &h)| b.stage(h, m.block_size()).unwrap())
                .collect();
            let registered = m.register_blocks(staged).unwrap();
            seq.extend(registered);
        }
        let hashes = want[..seq.len()].to_vec();
        assert_held(m, &seq, &hashes);

        if rng.chance(20) && !seq.is_empty() {
            weaks.push(seq[rng.below(seq.len())].downgrade());
        }
        if rng.chance(30) && !weaks.is_empty() {
            let w = weaks.swap_remove(rng.below(weaks.len()));
            if let Some(b) = w.upgrade() {
                assert_eq!(b.sequence_hash(), w.sequence_hash());
                if rng.chance(50) {
                    weaks.push(w);
                }
            }
        }
        if weaks.len() > 32 {
            weaks.swap_remove(0);
        }
        if rng.chance(5) && !seq.is_empty() {
            seq[rng.below(seq.len())].set_evict_on_release(true);
        }
        if rng.chance(10) {
            let out = m.scan_matches(chain, rng.chance(50));
            for (b, h) in out.iter().zip(chain) {
                if let Some(b) = b {
                    assert_eq!(b.sequence_hash(), *h);
                }
            }
        }
        if rng.chance(10)
            && let Ok(mut scratch) = m.allocate_blocks(1 + rng.below(3))
        {
            if rng.chance(50) {
                let b = scratch.pop().unwrap();
                drop(b.stage(SequenceHash::root(77), m.block_size()).unwrap());
            }
            drop(scratch);
        }

        held.push((seq, hashes));
        while held.len() > rng.below(3) {
            let (mut seq, hashes) = held.swap_remove(rng.below(held.len()));
            assert_held(m, &seq, &hashes);
            // Release in a random order.
            while !seq.is_empty() {
                drop(seq.swap_remove(rng.below(seq.len())));
            }
        }
    }
    drop(held);
    drop(weaks);
}

fn run_workload(shards: Option<usize>, dup: DuplicationPolicy) {
    let mut builder = BlockManager::<G1>::builder()
        .with_block_count(64)
        .with_policy(Policy::Lru.factory())
        .with_duplication_policy(dup);
    if let Some(s) = shards {
        builder = builder.with_shards(s);
    }
    let m = builder.build().unwrap();
    let chains = chains();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (m, chains) = (m.clone(), &chains);
            s.spawn(move || worker(&m, chains, 0xC0FFEE + t as u64));
        }
    });

    let st = assert_idle(&m);
    assert_eq!(st.reset_pool_size + st.inactive_pool_size, st.total_blocks);
    assert!(
        st.evictions > 0 && st.resurrections > 0,
        "the workload is under pressure: {st:?}"
    );
    // An allocation that lost a race may have evicted without handing the slots out.
    assert!(
        st.allocations - st.allocations_from_reset <= st.evictions,
        "{st:?}"
    );
    // Every registered hash is matchable; prefix probes agree with matches.
    for c in &chains {
        let found = m.scan_matches(c, false);
        for (b, h) in found.iter().zip(c) {
            assert_eq!(b.is_some(), m.contains(*h));
        }
        let n = m.prefix_len(c);
        assert_eq!(m.match_blocks(c).len(), n);
    }
    for h in chains.iter().flatten() {
        if m.contains(*h) {
            let hit = m.match_blocks(&[*h]);
            assert_eq!(hit.len(), 1, "{h:?} is registered but does not match");
            assert_eq!(hit[0].sequence_hash(), *h);
        }
    }
    let mut uniq: Vec<_> = chains.iter().flatten().copied().collect();
    uniq.sort();
    uniq.dedup();
    let registered = uniq.iter().filter(|h| m.contains(**h)).count();
    let st = assert_idle(&m);
    assert_eq!(st.registered as usize, registered);
    let drained = m.reset_inactive_pool().expect("nothing is held");
    assert_eq!(drained.len(), registered);
    let st = assert_idle(&m);
    assert_eq!((st.reset_pool_size, st.registered), (st.total_blocks, 0));
}

#[test]
fn workload_one_shard_allow() {
    run_workload(Some(1), DuplicationPolicy::Allow);
}

#[test]
fn workload_default_shards_allow() {
    run_workload(None, DuplicationPolicy::Allow);
}

#[test]
fn workload_one_shard_reject() {
    run_workload(Some(1), DuplicationPolicy::Reject);
}

#[test]
fn workload_default_shards_reject() {
    run_workload(None, DuplicationPolicy::Reject);
}

/// Two threads repeatedly take the only block's last reference to zero and back (one by match,
/// one by weak upgrade). At every quiescent point the block is registered exactly once, in
/// exactly one place: inactive when nobody holds it, active (and not inactive) when held.
#[test]
fn last_release_races_resurrection() {
    const ROUNDS: usize = 300;
    const SPINS: usize = 100;
    for shards in [Some(1), None] {
        let mut builder = BlockManager::<G1>::builder().with_block_count(4);
        if let Some(s) = shards {
            builder = builder.with_shards(s);
        }
        let m = builder.build().unwrap();
        let h = SequenceHash::root(42);
        let first = common::register(&m, &[h]).pop().unwrap();
        let (id, weak) = (first.block_id(), first.downgrade());
        drop(first);
        let barrier = Barrier::new(3);
        std::thread::scope(|s| {
            let matcher = s.spawn(|| {
                for _ in 0..ROUNDS {
                    barrier.wait();
                    for _ in 0..SPINS {
                        let b = m.match_blocks(&[h]).pop().expect("the block is never lost");
                        assert_eq!(b.block_id(), id);
                    }
                    let keep = m.match_blocks(&[h]).pop().unwrap();
                    barrier.wait(); // quiescent: held
                    barrier.wait();
                    drop(keep);
                    barrier.wait(); // quiescent: released
                }
            });
            let upgrader = s.spawn(|| {
                for _ in 0..ROUNDS {
                    barrier.wait();
                    for _ in 0..SPINS {
                        let b = weak.upgrade().expect("the block is never lost");
                        assert_eq!(b.block_id(), id);
                    }
                    barrier.wait();
                    barrier.wait();
                    barrier.wait();
                }
            });
            for _ in 0..ROUNDS {
                barrier.wait();
                barrier.wait();
                let st = assert_consistent(&m);
                assert_eq!(
                    (st.inflight_immutable, st.inactive_pool_size, st.registered),
                    (1, 0, 1),
                    "held: active and not inactive"
                );
                barrier.wait();
                barrier.wait();
                let st = assert_idle(&m);
                assert_eq!(
                    (st.inactive_pool_size, st.registered),
                    (1, 1),
                    "released: inactive"
                );
            }
            matcher.join().unwrap();
            upgrader.join().unwrap();
        });
        // The block sits in the inactive pool exactly once: one allocation of everything evicts
        // it, and only it.
        let (blocks, evicted) = m.allocate_blocks_with_evictions(4).unwrap();
        assert_eq!(evicted, vec![h]);
        assert!(weak.upgrade().is_none());
        drop(blocks);
        let st = assert_idle(&m);
        assert_eq!((st.registered, st.reset_pool_size), (0, 4));
    }
}
