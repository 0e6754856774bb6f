//! The tiered replay (G2 manager above a FIFO G3 model) against invariants that follow from its
//! definition, on synthetic traces, random forests and the bundled conversation trace.

mod common;

use common::{Rng, chains_of, random_forest_trace};
use kvtier_replay::{
    Chains, ManagerReplay, ParseMode, ReleaseOrder, SyntheticConfig, TieredReplay, TieredRow,
    Trace, policy,
};
use kvtier_storage::offload::WritePolicy;

const POLICIES: [WritePolicy; 5] = [
    WritePolicy::WriteThrough,
    WritePolicy::WriteThroughSelective { hits: 1 },
    WritePolicy::WriteThroughSelective { hits: 2 },
    WritePolicy::WriteThroughSelective { hits: 4 },
    WritePolicy::WriteBack,
];

fn run(chains: &Chains, g2: usize, g3: usize, p: WritePolicy) -> TieredRow {
    TieredReplay::new(g2, g3, p).unwrap().run(chains)
}

fn synthetic(seed: u64, requests: usize) -> Chains {
    Chains::from_trace(
        &SyntheticConfig {
            seed,
            requests,
            ..SyntheticConfig::default()
        }
        .generate(),
    )
}

fn conversation() -> Chains {
    let text = include_str!("../../../data/mooncake_conversation.jsonl");
    Chains::from_trace(&Trace::parse_str(text, ParseMode::Strict).unwrap().trace)
}

/// Checks what must hold for any trace, capacities and policy.
fn check_row(r: &TieredRow) {
    assert!(r.g2_hit_blocks <= r.combined_hit_blocks, "{r:?}");
    assert!(r.combined_hit_blocks <= r.infinite_hit_blocks, "{r:?}");
    assert!(r.infinite_hit_blocks <= r.total_blocks, "{r:?}");
    // G3 holds what was written and not evicted, never more than its capacity.
    assert!(r.g3_evictions <= r.g3_blocks_written, "{r:?}");
    assert!(
        r.g3_blocks_written - r.g3_evictions <= r.g3_capacity as u64,
        "{r:?}"
    );
    assert_eq!(r.g3_bytes_written, r.g3_blocks_written * r.block_bytes);
    let gained = r.combined_hit_blocks - r.g2_hit_blocks;
    assert_eq!(r.bytes_per_hit_gained.is_some(), gained > 0, "{r:?}");
    match r.write_policy.as_str() {
        "write_through" => assert!(r.g3_blocks_written <= r.g2_registrations, "{r:?}"),
        "write_back" => assert!(r.g3_blocks_written <= r.g2_evictions, "{r:?}"),
        // Selective: each write is triggered by one hit.
        _ => assert!(r.g3_blocks_written <= r.combined_hit_blocks, "{r:?}"),
    }
}

#[test]
fn combined_is_between_g2_alone_and_infinite_and_g2_does_not_depend_on_the_policy() {
    for seed in [1, 2, 3] {
        let chains = synthetic(seed, 1_500);
        for (g2, g3) in [(100, 300), (300, 3_000), (1_000, 50)] {
            let rows: Vec<TieredRow> = POLICIES.iter().map(|&p| run(&chains, g2, g3, p)).collect();
            let alone =
                ManagerReplay::new(&policy("freqlease").unwrap(), g2, ReleaseOrder::TailFirst)
                    .unwrap()
                    .run(&chains);
            for r in &rows {
                check_row(r);
                // G2 sees the same operations whatever reaches G3: the G2-alone replay.
                assert_eq!(r.g2_hit_blocks, alone.hit_blocks, "{r:?}");
                assert_eq!(r.g2_evictions, rows[0].g2_evictions);
                assert_eq!(r.g2_registrations, rows[0].g2_registrations);
            }
        }
    }
}

#[test]
fn an_unbounded_g3_under_write_through_or_write_back_reaches_the_infinite_cache() {
    let mut rng = Rng(0x5eed);
    for round in 0..3 {
        let chains = if round == 0 {
            synthetic(9, 1_200)
        } else {
            Chains::from_trace(&random_forest_trace(&mut rng, 300, 600))
        };
        let g3 = chains.unique(); // never evicts
        for g2 in [chains.max_len(), 2 * chains.max_len() + 17] {
            let wt = run(&chains, g2, g3, WritePolicy::WriteThrough);
            let wb = run(&chains, g2, g3, WritePolicy::WriteBack);
            for r in [&wt, &wb] {
                check_row(r);
                assert_eq!(r.oversized, 0);
                assert_eq!(r.g3_evictions, 0);
                // Every block seen is in G2, or was written to G3 and never left.
                assert_eq!(r.combined_hit_blocks, r.infinite_hit_blocks, "{r:?}");
            }
            // Write-through writes each distinct block once.
            assert_eq!(wt.g3_blocks_written, chains.unique() as u64);
            // Write-back writes every block that is not in G2 at the end, and no other.
            assert!(wb.g3_blocks_written <= wt.g3_blocks_written);
            assert!(
                wb.g3_blocks_written + g2 as u64 >= chains.unique() as u64,
                "{wb:?}"
            );
            for k in [1, 2, 15] {
                let sel = run(
                    &chains,
                    g2,
                    g3,
                    WritePolicy::WriteThroughSelective { hits: k },
                );
                check_row(&sel);
                assert!(sel.g3_blocks_written <= wt.g3_blocks_written, "{sel:?}");
            }
        }
    }
}

#[test]
fn write_back_writes_nothing_when_g2_never_evicts() {
    let chains = chains_of(&[&[1, 2, 3], &[1, 2, 4], &[5, 6], &[1, 2, 3]]);
    let wb = run(&chains, 64, 64, WritePolicy::WriteBack);
    assert_eq!((wb.g2_evictions, wb.g3_blocks_written), (0, 0));
    let wt = run(&chains, 64, 64, WritePolicy::WriteThrough);
    assert_eq!(wt.g3_blocks_written, 6);
    assert_eq!(
        wt.combined_hit_blocks, wt.g2_hit_blocks,
        "G2 already had everything"
    );
    assert_eq!(wt.bytes_per_hit_gained, None);
}

#[test]
fn a_prefix_evicted_from_g2_is_found_in_g3_and_onboarded() {
    // G2 of 2: [1, 2] is evicted by [3, 4]; write-back copied it down; the next [1, 2] hits G3.
    let chains = chains_of(&[&[1, 2], &[3, 4], &[1, 2], &[1, 2]]);
    let wb = run(&chains, 2, 8, WritePolicy::WriteBack);
    assert_eq!(wb.g2_hit_blocks, 2); // the last request, after onboarding
    assert_eq!(wb.combined_hit_blocks, 4);
    assert_eq!(wb.g3_blocks_written, 4, "[1, 2] then [3, 4] evicted");
    assert_eq!(
        wb.bytes_per_hit_gained,
        Some(4.0 * wb.block_bytes as f64 / 2.0)
    );
    // Selective k = 1: nothing was hit before it left G2, so nothing reached G3.
    let sel = run(
        &chains,
        2,
        8,
        WritePolicy::WriteThroughSelective { hits: 1 },
    );
    assert_eq!(sel.combined_hit_blocks, sel.g2_hit_blocks);
}

#[test]
fn the_conversation_trace_is_deterministic_and_keeps_the_invariants() {
    let chains = conversation();
    for p in [
        WritePolicy::WriteThrough,
        WritePolicy::WriteThroughSelective { hits: 2 },
        WritePolicy::WriteBack,
    ] {
        let a = run(&chains, 2_000, 20_000, p);
        let b = run(&chains, 2_000, 20_000, p);
        assert_eq!(a, b, "same numbers every run");
        check_row(&a);
    }
}

#[test]
fn zero_capacities_are_refused() {
    assert!(TieredReplay::new(0, 10, WritePolicy::WriteBack).is_err());
    assert!(TieredReplay::new(10, 0, WritePolicy::WriteBack).is_err());
    assert!(TieredReplay::new(10, 10, WritePolicy::WriteThroughSelective { hits: 0 }).is_err());
}

#[test]
fn g3_evicts_by_write_order_and_reads_do_not_reorder_it() {
    // G2 of 1, G3 of 2, write-through. [b] is read from G3 in request 4, yet it is still the
    // oldest write when [a] is written again in request 5, so request 6 misses it.
    let chains = chains_of(&[&[1], &[2], &[3], &[2], &[1], &[2]]);
    let r = run(&chains, 1, 2, WritePolicy::WriteThrough);
    assert_eq!(r.g2_hit_blocks, 0);
    assert_eq!(r.combined_hit_blocks, 1, "{r:?}");
    assert_eq!((r.g3_blocks_written, r.g3_evictions), (5, 3), "{r:?}");
}

#[test]
fn a_huge_g2_from_a_user_replays_like_the_trace_sized_one() {
    let chains = synthetic(4, 400);
    for p in POLICIES {
        let sized = TieredReplay::for_chains(usize::MAX / 2, 1_000, p, &chains)
            .unwrap()
            .run(&chains);
        let exact = run(&chains, chains.unique(), 1_000, p);
        assert_eq!(sized.g2_capacity, usize::MAX / 2);
        assert_eq!(
            (
                sized.g2_hit_blocks,
                sized.combined_hit_blocks,
                sized.g3_blocks_written
            ),
            (
                exact.g2_hit_blocks,
                exact.combined_hit_blocks,
                exact.g3_blocks_written
            ),
        );
    }
}
