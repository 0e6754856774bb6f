//! Hit rates on the bundled Mooncake conversation trace (`data/`): the default eviction policy,
//! `freqlease`, must never do worse than `lru`.
//!
//! `freqlease` is the manager's default because it beats LRU on real traces (`docs/hit-rate.md`:
//! 14.6% vs 11.2% at 5,000 blocks, 30.5% vs 28.8% at 20,000). This pins the claim at two
//! capacities with the default configuration: the policy [`default_policy`] builds, compared
//! with a plain [`LruFactory`], each replayed by [`ManagerReplay`] with one shard (the policies'
//! exact orders, which the default shard count must keep: `tests/no_lost_hits.rs`) and
//! tail-first release.

use std::sync::Arc;

use kvtier_core::{LruFactory, default_policy};
use kvtier_replay::{
    Chains, ManagerReplay, NamedPolicy, ParseMode, ReleaseOrder, ReplayRow, Trace, policy,
};

/// The trace shipped in the repository.
fn bundled() -> Chains {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/mooncake_conversation.jsonl"
    );
    let bytes = std::fs::read(path).expect("the bundled trace is in data/");
    let parsed = Trace::parse_slice(&bytes, ParseMode::Strict).expect("the bundled trace parses");
    assert_eq!(parsed.trace.len(), 12_031, "the whole trace");
    Chains::from_trace(&parsed.trace)
}

fn replay(p: &NamedPolicy, capacity: usize, chains: &Chains) -> ReplayRow {
    ManagerReplay::builder(p, capacity)
        .with_release(ReleaseOrder::default())
        .with_shards(1)
        .build()
        .expect("valid capacity")
        .run(chains)
}

#[test]
fn default_freqlease_is_at_least_lru_on_the_bundled_trace() {
    let chains = bundled();
    let default = NamedPolicy::new("default", default_policy());
    assert_eq!(
        default_policy().name(),
        "freqlease",
        "the manager's default"
    );
    let lru = NamedPolicy::new("lru", Arc::new(LruFactory::new()));
    for capacity in [5_000, 20_000] {
        let f = replay(&default, capacity, &chains);
        let l = replay(&lru, capacity, &chains);
        assert_eq!(f.total_blocks, l.total_blocks);
        assert!(
            f.hit_blocks >= l.hit_blocks,
            "freqlease {:.2}% < lru {:.2}% at {capacity} blocks",
            f.hit_rate * 100.0,
            l.hit_rate * 100.0
        );
        // The named built-in is the same policy as the default.
        let named = replay(&policy("freqlease").expect("built in"), capacity, &chains);
        assert_eq!(named.hit_blocks, f.hit_blocks, "at {capacity}");
        // And neither is trivially zero.
        assert!(
            l.hit_rate > 0.05,
            "lru {:.2}% at {capacity}",
            l.hit_rate * 100.0
        );
    }
}
