//! Belady's bound: never beaten by an online policy, equal to an exhaustive search on tiny
//! traces, and itself bounded by the infinite cache.

mod common;

use std::collections::HashMap;

use common::{Rng, chains_of, random_forest_trace};
use kvtier_replay::{
    Belady, Chains, ManagerReplay, ReleaseOrder, SyntheticConfig, infinite, policies,
};

/// Best total hits over every eviction choice (same constraints as `Belady`), by exhaustive
/// search over cached sets encoded as bit masks of dense key numbers.
fn brute_force(chains: &Chains, capacity: usize) -> u64 {
    assert!(chains.unique() <= 63);
    fn go(
        chains: &Chains,
        cap: usize,
        r: usize,
        mask: u64,
        memo: &mut HashMap<(usize, u64), u64>,
    ) -> u64 {
        if r == chains.len() {
            return 0;
        }
        if let Some(&v) = memo.get(&(r, mask)) {
            return v;
        }
        let chain = chains.dense_chain(r);
        let hits = chain.iter().take_while(|&&d| mask >> d & 1 == 1).count() as u64;
        let best = if chain.len() > cap {
            go(chains, cap, r + 1, mask, memo)
        } else {
            let req: u64 = chain.iter().fold(0, |m, &d| m | 1 << d);
            let after = mask | req;
            let excess = (after.count_ones() as usize).saturating_sub(cap);
            let candidates = mask & !req;
            let mut best = 0;
            // Every subset of the candidates with exactly `excess` members.
            let mut sub = candidates;
            loop {
                if sub.count_ones() as usize == excess {
                    best = best.max(go(chains, cap, r + 1, after & !sub, memo));
                }
                if sub == 0 {
                    break;
                }
                sub = (sub - 1) & candidates;
            }
            best
        };
        memo.insert((r, mask), hits + best);
        hits + best
    }
    go(chains, capacity, 0, 0, &mut HashMap::new())
}

#[test]
fn belady_equals_brute_force_on_tiny_traces() {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for case in 0..400 {
        let nodes = 3 + rng.below(9) as usize;
        let requests = 2 + rng.below(9) as usize;
        let chains = Chains::from_trace(&random_forest_trace(&mut rng, nodes, requests));
        let belady = Belady::new(&chains);
        for capacity in 1..=chains.max_len() + 4 {
            let got = belady.run(capacity).hit_blocks;
            let want = brute_force(&chains, capacity);
            // Exact whenever no request is oversized; with oversized requests (which read
            // without caching) Belady is a bound-quality heuristic, never above the optimum.
            let exact = capacity >= chains.max_len();
            if (exact && got != want) || got > want {
                let reqs: Vec<Vec<u32>> = (0..chains.len())
                    .map(|r| chains.dense_chain(r).to_vec())
                    .collect();
                panic!("case {case} capacity {capacity}: belady {got} brute {want} {reqs:?}");
            }
        }
    }
}

#[test]
fn oversized_requests_can_defeat_furthest_next_use() {
    // Capacity 2. At [2], furthest-next-use drops 1 (next used by the oversized [0, 1, 3]) and
    // keeps 0 (used sooner): hits 1 + 1 + 1. Dropping 0 instead costs the hit of the next [0]
    // but the oversized request, which caches nothing, then hits 2, and so does [0, 1].
    let chains = chains_of(&[&[0, 1], &[2], &[0], &[0, 1, 3], &[0, 1]]);
    assert_eq!(Belady::new(&chains).run(2).hit_blocks, 3);
    assert_eq!(brute_force(&chains, 2), 4);
}

#[test]
fn belady_on_a_handcrafted_trace() {
    // Capacity 3: [5, 6] leaves room for one old block; Belady keeps the root 0 (its next use
    // ties with 1's, and ties go deepest first), so [0, 1, 3] finds 1 block and, having kept
    // 0 and 1 over 3, the last request finds 2.
    let chains = chains_of(&[&[0, 1, 2], &[5, 6], &[0, 1, 3], &[0, 1, 2]]);
    let row = Belady::new(&chains).run(3);
    assert_eq!(row.hit_blocks, 1 + 2);
    assert_eq!(row.total_blocks, 11);
}

/// Every online policy's hits are at most Belady's at each capacity that no request exceeds
/// (with oversized requests Belady is not the optimum: see the test above).
fn assert_belady_dominates(chains: &Chains, capacities: &[usize]) {
    let belady = Belady::new(chains);
    let bound = infinite(chains);
    for &capacity in capacities {
        let best = belady.run(capacity);
        assert!(best.hit_blocks <= bound.hit_blocks);
        if capacity < chains.max_len() {
            continue;
        }
        assert_eq!(best.oversized, 0);
        for p in policies() {
            for order in [ReleaseOrder::TailFirst, ReleaseOrder::RootFirst] {
                let row = ManagerReplay::new(&p, capacity, order).unwrap().run(chains);
                assert!(
                    row.hit_blocks <= best.hit_blocks,
                    "{} {order:?} at {capacity}: {} > belady {}",
                    p.name(),
                    row.hit_blocks,
                    best.hit_blocks
                );
            }
        }
    }
}

#[test]
fn belady_dominates_online_policies_on_small_traces() {
    let mut rng = Rng(0xFACE_B00C_0000_0042);
    for _ in 0..60 {
        let nodes = 5 + rng.below(40) as usize;
        let requests = 5 + rng.below(60) as usize;
        let chains = Chains::from_trace(&random_forest_trace(&mut rng, nodes, requests));
        let longest = chains.max_len();
        assert_belady_dominates(&chains, &[1, 2, longest, longest + 1, longest + 3, 13, 40]);
    }
}

#[test]
fn belady_dominates_online_policies_on_a_synthetic_trace() {
    let trace = SyntheticConfig {
        requests: 6_000,
        seed: 9,
        ..SyntheticConfig::default()
    }
    .generate();
    let chains = Chains::from_trace(&trace);
    assert_belady_dominates(&chains, &[120, 500, 2_000, 8_000]);
    // With room for everything, Belady reaches the infinite bound.
    let all = Belady::new(&chains).run(chains.unique());
    assert_eq!(all.hit_blocks, infinite(&chains).hit_blocks);
}
