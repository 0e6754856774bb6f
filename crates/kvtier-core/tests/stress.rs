//! Multi-threaded stress of one shared block manager, and a targeted race between the last
//! release of a block and its resurrection by a concurrent match or weak upgrade.
//!
//! The workload test runs four threads of random requests (match a prefix of a shared chain,
//! allocate and register the missing blocks, hold sequences across iterations, downgrade and
//! upgrade, release in random order, allocate-and-drop scratch blocks) in phases. After every
//! phase the threads stop, still holding their blocks, and the pool invariants are checked with
//! the manager quiescent: every slot is in exactly one pool, the in-flight count is exactly the
//! slots the threads hold (no slot lost or leaked), the registered count agrees, counters only
//! grow and keep their identities, and the policy never returned a wrong victim. At the end,
//! with everything released, every slot came back, every registered hash still matches, and
//! the inactive pool drains. While running, every held block must keep its hash and stay
//! `contains`-visible: a strongly referenced block is never evicted.

mod common;

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Barrier, Mutex};

use common::{Policy, Rng, assert_consistent, assert_idle};
use kvtier_core::{
    BlockId, BlockManager, DuplicationPolicy, G1, ImmutableBlock, MetricsSnapshot, SequenceHash,
    WeakBlock,
};

const THREADS: usize = 4;
/// Phases of the workload; the pool invariants are checked after each.
const PHASES: usize = 5;
/// Requests of one thread in one phase.
const ITERS: usize = 1_000;
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

/// A block a worker holds at a phase boundary: its slot, hash, and whether it is a duplicate.
type HeldBlock = (BlockId, SequenceHash, bool);

/// Where the workers meet between phases: they publish what they hold, then wait twice on the
/// barrier while the main thread checks the manager.
struct Checkpoint {
    barrier: Barrier,
    held: Mutex<Vec<HeldBlock>>,
}

/// One thread's random requests against the shared manager, in [`PHASES`] phases of [`ITERS`].
fn worker(m: &BlockManager<G1>, chains: &[Vec<SequenceHash>], seed: u64, cp: &Checkpoint) {
    let mut rng = Rng::new(seed);
    let mut held: Vec<(Vec<ImmutableBlock<G1>>, Vec<SequenceHash>)> = Vec::new();
    let mut weaks: Vec<WeakBlock<G1>> = Vec::new();
    for i in 0..PHASES * ITERS {
        if i > 0 && i % ITERS == 0 {
            let mine = held
                .iter()
                .flat_map(|(seq, _)| seq)
                .map(|b| (b.block_id(), b.sequence_hash(), b.is_duplicate()));
            cp.held.lock().unwrap().extend(mine);
            cp.barrier.wait(); // everyone stopped: the main thread checks
            cp.barrier.wait(); // checked: go on
        }
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

/// Checks the pool invariants of a quiescent manager whose users hold exactly `held`, and that
/// every counter only grew since `prev`.
fn check_phase(
    m: &BlockManager<G1>,
    held: &[HeldBlock],
    prev: &MetricsSnapshot,
    phase: usize,
) -> MetricsSnapshot {
    let st = assert_consistent(m);
    let ctx = format!("after phase {phase}: {st:?}");
    assert_eq!(
        st.inflight_mutable, 0,
        "nobody holds a mutable block: {ctx}"
    );
    assert_eq!((st.policy_violations, st.policy_panics), (0, 0), "{ctx}");
    // Exactly the slots held are in flight: the distinct slots handed out, plus the primary of
    // each duplicated hash whose primary is not itself held (a duplicate holds its primary).
    let slots: HashSet<BlockId> = held.iter().map(|b| b.0).collect();
    let dup_slots: HashSet<BlockId> = held.iter().filter(|b| b.2).map(|b| b.0).collect();
    let primary_hashes: HashSet<SequenceHash> = held.iter().filter(|b| !b.2).map(|b| b.1).collect();
    let hidden_primaries: HashSet<SequenceHash> = held
        .iter()
        .filter(|b| b.2 && !primary_hashes.contains(&b.1))
        .map(|b| b.1)
        .collect();
    let active = (slots.len() + hidden_primaries.len()) as u64;
    assert_eq!(
        st.inflight_immutable, active,
        "no slot lost or leaked: {ctx}"
    );
    assert_eq!(
        st.registered,
        st.inactive_pool_size + active - dup_slots.len() as u64,
        "registered = inactive + active primaries: {ctx}"
    );
    assert_eq!(
        m.available_blocks() as u64,
        st.total_blocks - active,
        "available = every slot not held: {ctx}"
    );
    for &(_, h, _) in held {
        assert!(m.contains(h), "a held block stays registered: {ctx}");
    }
    assert!(
        st.allocations - st.allocations_from_reset <= st.evictions,
        "{ctx}"
    );
    let grew = [
        (prev.allocations, st.allocations),
        (prev.allocations_from_reset, st.allocations_from_reset),
        (prev.evictions, st.evictions),
        (prev.registrations, st.registrations),
        (prev.primaries_created, st.primaries_created),
        (prev.duplicates, st.duplicates),
        (prev.dedups, st.dedups),
        (prev.resurrections, st.resurrections),
        (prev.released_to_reset, st.released_to_reset),
        (prev.stagings, st.stagings),
        (prev.match_hashes_requested, st.match_hashes_requested),
        (prev.match_blocks_returned, st.match_blocks_returned),
    ];
    for (i, (before, now)) in grew.into_iter().enumerate() {
        assert!(now >= before, "counter {i} went back: {ctx}");
    }
    assert!(
        st.allocations > prev.allocations,
        "the phase did work: {ctx}"
    );
    st
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
    let cp = Checkpoint {
        barrier: Barrier::new(THREADS + 1),
        held: Mutex::new(Vec::new()),
    };
    // Checked before the workers start: a check that ran beside them could see a half-done
    // operation, and its panic would leave them waiting at the barrier forever.
    let mut prev = assert_consistent(&m);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (m, chains, cp) = (m.clone(), &chains, &cp);
            s.spawn(move || {
                let run = catch_unwind(AssertUnwindSafe(|| {
                    worker(&m, chains, 0xC0FFEE + t as u64, cp);
                }));
                if run.is_err() {
                    // The panic message is printed already. The others would wait for this
                    // worker at the next barrier forever: fail the whole test binary now.
                    eprintln!("a stress worker panicked; aborting instead of hanging");
                    std::process::abort();
                }
            });
        }
        let mut failure = None;
        for phase in 1..PHASES {
            cp.barrier.wait();
            let held = std::mem::take(&mut *cp.held.lock().unwrap());
            if failure.is_none() {
                // A failed check must still release the workers from the barrier.
                match catch_unwind(AssertUnwindSafe(|| check_phase(&m, &held, &prev, phase))) {
                    Ok(st) => prev = st,
                    Err(p) => failure = Some(p),
                }
            }
            drop(held);
            cp.barrier.wait();
        }
        if let Some(p) = failure {
            resume_unwind(p);
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
