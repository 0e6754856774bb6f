//! Regression: the shard count must not change which blocks a manager evicts.
//!
//! The bug: every shard had its own eviction-policy instance, and an allocation evicted from
//! "the fuller of two random shards" chosen by a thread-local RNG that outlived managers. A
//! sharded manager therefore did not behave like one policy (the Mooncake conversation trace at
//! 20,000 blocks fell from 28.75% to 20.4% block hit rate going from 1 to 8 shards with `lru`),
//! and two single-threaded replays of one trace gave different hit rates.
//!
//! What must hold: a single-threaded replay of one trace hits exactly the same blocks and
//! evicts exactly the same hashes, in the same order, for every built-in policy at every shard
//! count the builder accepts (and at its default), every run, on any thread.

mod common;

use std::sync::Arc;

use common::{Rng, assert_consistent, chain};
use kvtier_core::{
    BlockManager, FifoFactory, FreqLeaseFactory, G1, ImmutableBlock, LineageFactory, LruFactory,
    MAX_SHARDS, MultiLruFactory, PolicyFactory, SequenceHash,
};

/// Slots of every manager: small enough that the trace evicts constantly.
const BLOCKS: usize = 192;

/// What one replay saw: blocks hit per request, and every evicted hash in order.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    hits: Vec<usize>,
    evicted: Vec<SequenceHash>,
    total_hits: usize,
}

/// Every built-in policy, by name.
fn policies() -> Vec<(&'static str, Arc<dyn PolicyFactory>)> {
    vec![
        ("fifo", Arc::new(FifoFactory::new())),
        ("lru", Arc::new(LruFactory::new())),
        (
            "lru+promotion",
            Arc::new(LruFactory::new().with_hit_promotion(true)),
        ),
        ("freqlease", Arc::new(FreqLeaseFactory::new())),
        ("lineage", Arc::new(LineageFactory::new())),
        ("multi_lru", Arc::new(MultiLruFactory::for_capacity(BLOCKS))),
    ]
}

/// A synthetic conversation trace: requests over 40 conversations with skewed popularity; each
/// request is its conversation's prefix (a shared system prompt for half of them) grown by a
/// few blocks, so prefixes are shared, extended and revisited.
fn trace(seed: u64, requests: usize) -> Vec<Vec<SequenceHash>> {
    let mut rng = Rng::new(seed);
    let system = chain(7, 6);
    let mut convs: Vec<Vec<SequenceHash>> = (0..40u64)
        .map(|c| {
            if c % 2 == 0 {
                system.clone()
            } else {
                chain(1000 + c, 2)
            }
        })
        .collect();
    let mut out = Vec::with_capacity(requests);
    for _ in 0..requests {
        // Skewed: the minimum of two uniform draws favours low conversation numbers.
        let c = rng.below(convs.len()).min(rng.below(convs.len()));
        let conv = &mut convs[c];
        if conv.len() > 48 {
            conv.truncate(8);
        }
        for _ in 0..1 + rng.below(5) {
            let parent = *conv.last().expect("non-empty chain");
            conv.push(SequenceHash::child_of(parent, rng.next_u64()));
        }
        out.push(conv.clone());
    }
    out
}

/// Replays `trace` on one thread: match the prefix, allocate (with evictions) and register the
/// rest, keep the last three requests' blocks held, and release the oldest request either one
/// handle at a time or as a batch.
fn replay(
    factory: Arc<dyn PolicyFactory>,
    shards: Option<usize>,
    trace: &[Vec<SequenceHash>],
) -> Outcome {
    let mut builder = BlockManager::<G1>::builder()
        .with_block_count(BLOCKS)
        .with_policy(factory);
    if let Some(s) = shards {
        builder = builder.with_shards(s);
    }
    let m = builder.build().expect("valid config");
    let mut held: Vec<Vec<ImmutableBlock<G1>>> = Vec::new();
    let mut out = Outcome {
        hits: Vec::new(),
        evicted: Vec::new(),
        total_hits: 0,
    };
    for (i, req) in trace.iter().enumerate() {
        let mut blocks = m.match_blocks(req);
        let hit = blocks.len();
        out.hits.push(hit);
        out.total_hits += hit;
        let rest = &req[hit..];
        if let Ok((fresh, evicted)) = m.allocate_blocks_with_evictions(rest.len()) {
            out.evicted.extend(evicted);
            let staged: Vec<_> = fresh
                .into_iter()
                .zip(rest)
                .map(|(b, &h)| b.stage(h, m.block_size()).expect("stage"))
                .collect();
            blocks.extend(m.register_blocks(staged).expect("own blocks"));
        }
        held.push(blocks);
        if held.len() > 3 {
            let oldest = held.remove(0);
            if i % 2 == 0 {
                for b in oldest {
                    drop(b);
                }
            } else {
                m.release_blocks(oldest);
            }
        }
    }
    drop(held);
    let s = assert_consistent(&m);
    assert_eq!(s.policy_violations, 0);
    out
}

/// Every shard count the builder accepts for `BLOCKS` slots, powers of two up to the maximum.
fn shard_counts() -> Vec<usize> {
    let max = MAX_SHARDS.min(BLOCKS.next_power_of_two());
    std::iter::successors(Some(1), |&s| (s < max).then_some(s * 2)).collect()
}

#[test]
fn every_shard_count_evicts_exactly_like_one_shard() {
    let trace = trace(42, 600);
    for (name, factory) in policies() {
        let one = replay(factory.clone(), Some(1), &trace);
        assert!(
            !one.evicted.is_empty() && one.total_hits > 0,
            "{name}: the trace must both hit and evict"
        );
        for shards in shard_counts().into_iter().skip(1) {
            let got = replay(factory.clone(), Some(shards), &trace);
            assert_eq!(
                got.total_hits, one.total_hits,
                "{name}: {shards} shards hit a different number of blocks than 1 shard"
            );
            assert_eq!(got, one, "{name}: {shards} shards diverge from 1 shard");
        }
        // The builder's default shard count, too.
        assert_eq!(replay(factory, None, &trace), one, "{name}: default shards");
    }
}

#[test]
fn replays_repeat_exactly_on_any_thread() {
    let trace = trace(7, 400);
    let factory: Arc<dyn PolicyFactory> = Arc::new(LruFactory::new());
    let first = replay(factory.clone(), Some(8), &trace);
    // Again on this thread (no state may carry over between managers) ...
    assert_eq!(replay(factory.clone(), Some(8), &trace), first);
    // ... and on fresh threads, which get other home shards.
    for _ in 0..3 {
        let (f, t) = (factory.clone(), trace.clone());
        let again = std::thread::spawn(move || replay(f, Some(8), &t))
            .join()
            .expect("replay thread");
        assert_eq!(again, first);
    }
}

#[test]
fn lineage_keeps_the_requested_shard_count() {
    let m = BlockManager::<G1>::builder()
        .with_block_count(64)
        .with_shards(8)
        .with_policy(Arc::new(LineageFactory::new()))
        .build()
        .expect("valid config");
    assert_eq!(m.shard_count(), 8);
    assert_eq!(m.policy_name(), "lineage");
}
