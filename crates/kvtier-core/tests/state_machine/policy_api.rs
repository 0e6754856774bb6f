//! The reference models of `order.rs` driven through the [`EvictionPolicy`] API alone, with a
//! larger pool (six four-block chains) and long sequences, so that what manager traffic over
//! eight slots rarely reaches is reached here: `freqlease`'s leases (one shard capacity of
//! releases per tier), its top tiers and tail demotion, `multi_lru`'s hot levels, and deep
//! `lineage` trees. Every `evict` must name the model's victim, `remove` must report presence,
//! and `len` must agree after every call.

use std::collections::HashMap;

use kvtier_core::{AccessKind, BlockId, PolicyContext, SequenceHash};
use proptest::prelude::*;

use crate::order::{Access, Policy};

/// Chains in the pool.
const CHAINS: u64 = 6;
/// Blocks per chain.
const DEPTH: u64 = 4;
/// Ids (one per hash of the pool).
const POOL: usize = (CHAINS * DEPTH) as usize;

/// The pool, chain by chain, root first, and each non-root hash's parent. The chained values
/// (`16 * (100 + chain) + position`) were chosen so that no two blocks share a slot of
/// `freqlease`'s 1,024-entry parent table (the models assume no such collision).
fn pool() -> (Vec<SequenceHash>, HashMap<SequenceHash, SequenceHash>) {
    let mut hashes = Vec::new();
    let mut parents = HashMap::new();
    for chain in 0..CHAINS {
        let base = 16 * (100 + chain);
        let mut h = SequenceHash::root(base);
        hashes.push(h);
        for pos in 1..DEPTH {
            let child = SequenceHash::child_of(h, base + pos);
            parents.insert(child, h);
            hashes.push(child);
            h = child;
        }
    }
    (hashes, parents)
}

#[derive(Clone, Debug)]
enum PolicyOp {
    Insert(usize),
    Remove(usize),
    Evict,
    Hit(usize),
    Register(usize),
}

fn policy_op() -> impl Strategy<Value = PolicyOp> {
    // Low ids (the first chains) are accessed more often, so their counts climb the tiers.
    let skewed = prop_oneof![3 => 0usize..8, 1 => 0usize..POOL];
    prop_oneof![
        6 => (0usize..POOL).prop_map(PolicyOp::Insert),
        1 => (0usize..POOL).prop_map(PolicyOp::Remove),
        4 => Just(PolicyOp::Evict),
        4 => skewed.prop_map(PolicyOp::Hit),
        2 => (0usize..POOL).prop_map(PolicyOp::Register),
    ]
}

fn run(policy: Policy, ops: &[PolicyOp]) {
    let (hashes, parents) = pool();
    let ctx = PolicyContext {
        total_blocks: POOL,
        shard: 0,
        shards: 1,
    };
    let mut real = policy.factory(POOL).build(ctx);
    let mut model = policy.model(POOL, parents);
    let mut present = [false; POOL];
    for (step, op) in ops.iter().enumerate() {
        match *op {
            PolicyOp::Insert(i) if !present[i] => {
                real.insert(BlockId::new(i as u32), hashes[i]);
                model.insert(i, hashes[i]);
                present[i] = true;
            }
            PolicyOp::Insert(_) => {}
            PolicyOp::Remove(i) => {
                assert_eq!(
                    real.remove(BlockId::new(i as u32)),
                    present[i],
                    "step {step}"
                );
                model.remove(i);
                present[i] = false;
            }
            PolicyOp::Evict => {
                let got = real.evict().map(BlockId::index);
                assert_eq!(got, model.evict(), "victim at step {step}: {op:?}");
                if let Some(i) = got {
                    present[i] = false;
                }
            }
            PolicyOp::Hit(i) => {
                real.on_access(hashes[i], AccessKind::Hit);
                model.access(hashes[i], Access::Hit);
            }
            PolicyOp::Register(i) => {
                real.on_access(hashes[i], AccessKind::Register);
                model.access(hashes[i], Access::Register);
            }
        }
        assert_eq!(real.len(), model.len(), "len at step {step}");
    }
    // Drain: the whole remaining order.
    let rest: Vec<usize> = std::iter::from_fn(|| real.evict().map(BlockId::index)).collect();
    assert_eq!(rest, model.drain_order(), "drain order");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: crate::cases(), ..ProptestConfig::default() })]

    #[test]
    fn freqlease_policy_matches_its_model(ops in prop::collection::vec(policy_op(), 1..600)) {
        run(Policy::FreqLease, &ops);
    }

    #[test]
    fn multi_lru_policy_matches_its_model(ops in prop::collection::vec(policy_op(), 1..600)) {
        run(Policy::MultiLru, &ops);
    }

    #[test]
    fn lineage_policy_matches_its_model(ops in prop::collection::vec(policy_op(), 1..600)) {
        run(Policy::Lineage, &ops);
    }
}
