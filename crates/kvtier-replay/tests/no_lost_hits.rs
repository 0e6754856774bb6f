//! No lost hits (issue 8): sharding the block manager must not cost hit rate, and a replay must
//! repeat exactly.
//!
//! For every built-in policy ([`policies`]), at every shard count the block manager accepts (1,
//! 2, 4, ..., [`MAX_SHARDS`]), at 1,000, 5,000 and 20,000 blocks:
//!
//! - the hit rate is within [`TOLERANCE`] (0.5 points) of the same policy with one shard, whose
//!   eviction order is the policy's exact global order;
//! - two runs of the same configuration, one after the other on one thread, give identical hit
//!   counts (a shard choice drawn from a random state that outlives a manager breaks this).
//!
//! The traces are the bundled Mooncake conversation trace (the one `kvtier replay` embeds) and
//! the synthetic traces of `kvtier replay --synthetic`. The default tests replay a leading part
//! of each ([`QUICK_BUNDLED_REQUESTS`], [`QUICK_SYNTHETIC_REQUESTS`]) so that a debug build
//! finishes in tens of seconds; the `#[ignore]`d sweep replays the whole bundled trace and the
//! default synthetic trace (10,000 requests, seed 42) and is meant for a release build:
//!
//! ```text
//! cargo test -p kvtier-replay --test no_lost_hits -- --nocapture
//! cargo test --release -p kvtier-replay --test no_lost_hits -- --ignored --nocapture
//! ```
//!
//! A configuration the manager normalises to one already replayed (a policy that forces one
//! shard, a count rounded up to the same power of two) is the same manager, so its result is
//! reused, not replayed again. Every test prints its whole table before asserting, so a failure
//! shows every number.

use std::fmt::Write as _;

use kvtier_core::MAX_SHARDS;
use kvtier_replay::{
    Chains, ManagerReplay, NamedPolicy, ParseMode, ReleaseOrder, SyntheticConfig, Trace, policies,
};

/// Largest accepted difference between a sharded hit rate and the one-shard hit rate.
const TOLERANCE: f64 = 0.005;

/// Capacities (blocks) every configuration is replayed at.
const CAPACITIES: [usize; 3] = [1_000, 5_000, 20_000];

/// Requests of the bundled trace the default test replays (its first 2,000 of 12,031: 54,559
/// blocks, 38,788 distinct, so even 20,000 blocks evict).
const QUICK_BUNDLED_REQUESTS: usize = 2_000;

/// Requests of each synthetic trace the default test replays.
const QUICK_SYNTHETIC_REQUESTS: usize = 2_000;

/// Every shard count the block manager accepts, as distinct managers: 1, 2, 4, ...,
/// [`MAX_SHARDS`] (the manager rounds a count up to a power of two).
fn shard_counts() -> Vec<usize> {
    let mut v: Vec<usize> = std::iter::successors(Some(1usize), |&s| s.checked_mul(2))
        .take_while(|&s| s <= MAX_SHARDS)
        .collect();
    if v.last() != Some(&MAX_SHARDS) {
        v.push(MAX_SHARDS);
    }
    v
}

/// The bundled trace (`data/`), cut to its first `requests` requests.
fn bundled(requests: usize) -> Chains {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/mooncake_conversation.jsonl"
    );
    let bytes = std::fs::read(path).expect("the bundled trace is in data/");
    let parsed = Trace::parse_slice(&bytes, ParseMode::Strict).expect("the bundled trace parses");
    assert_eq!(parsed.trace.len(), 12_031, "the whole bundled trace");
    let mut cut = Trace::new();
    for r in parsed.trace.iter().take(requests) {
        cut.push(r.hash_ids, r.meta);
    }
    Chains::from_trace(&cut)
}

/// A `kvtier replay --synthetic` trace.
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

/// One configuration's two runs.
#[derive(Clone, Copy, Debug)]
struct Outcome {
    /// Shard count the manager was built with.
    built: usize,
    first: u64,
    second: u64,
    total: u64,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.first as f64 / self.total.max(1) as f64
    }
}

/// Replays `chains` twice with `policy` at `capacity` blocks and `shards` shards.
fn replay_twice(policy: &NamedPolicy, capacity: usize, shards: usize, chains: &Chains) -> Outcome {
    let run = || {
        let mut r = ManagerReplay::builder(policy, capacity)
            .with_release(ReleaseOrder::TailFirst)
            .with_shards(shards)
            .build()
            .expect("a valid replay configuration");
        let built = r.shards();
        let row = r.run(chains);
        (built, row.hit_blocks, row.total_blocks)
    };
    let (built, first, total) = run();
    let (_, second, _) = run();
    Outcome {
        built,
        first,
        second,
        total,
    }
}

/// Sweeps one policy over every capacity and shard count; returns its table lines and the
/// failures found.
fn sweep_policy(trace: &str, policy: &NamedPolicy, chains: &Chains) -> (String, Vec<String>) {
    let mut lines = String::new();
    let mut failures = Vec::new();
    for capacity in CAPACITIES {
        let mut seen: Vec<Outcome> = Vec::new();
        let _ = write!(lines, "{:<10} {capacity:>6}", policy.name());
        let mut base_rate = None;
        for shards in shard_counts() {
            let probe = ManagerReplay::builder(policy, capacity)
                .with_shards(shards)
                .build()
                .expect("a valid replay configuration")
                .shards();
            let o = match seen.iter().find(|o| o.built == probe) {
                Some(o) => *o,
                None => {
                    let o = replay_twice(policy, capacity, shards, chains);
                    seen.push(o);
                    o
                }
            };
            let base = *base_rate.get_or_insert(o.rate());
            let _ = write!(lines, " {:>7.2}%", o.rate() * 100.0);
            let what = format!(
                "{trace}: {} at {capacity} blocks, {shards} shards (built {})",
                policy.name(),
                o.built
            );
            if o.first != o.second {
                failures.push(format!(
                    "{what}: not repeatable: {} then {} hit blocks",
                    o.first, o.second
                ));
            }
            if (o.rate() - base).abs() > TOLERANCE {
                failures.push(format!(
                    "{what}: hit rate {:.2}% vs {:.2}% with 1 shard ({:+.2} points)",
                    o.rate() * 100.0,
                    base * 100.0,
                    (o.rate() - base) * 100.0
                ));
            }
        }
        lines.push('\n');
    }
    (lines, failures)
}

/// Sweeps every built-in policy (one thread each, so a debug build uses every core) and panics
/// with every failure, after printing the whole table.
fn assert_no_lost_hits(trace: &str, chains: &Chains) {
    let results: Vec<(String, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = policies()
            .into_iter()
            .map(|p| s.spawn(move || sweep_policy(trace, &p, chains)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("sweep thread"))
            .collect()
    });
    let mut table = format!(
        "{trace}: {} requests, {} blocks ({} distinct); hit rate by shard count\n{:<10} {:>6}",
        chains.len(),
        chains.total_blocks(),
        chains.unique(),
        "policy",
        "blocks"
    );
    for shards in shard_counts() {
        let _ = write!(table, " {:>8}", format!("@{shards}"));
    }
    table.push('\n');
    let mut failures = Vec::new();
    for (lines, f) in results {
        table.push_str(&lines);
        failures.extend(f);
    }
    println!("{table}");
    assert!(
        failures.is_empty(),
        "{} failures (tolerance {:.1} points):\n{}\n\n{table}",
        failures.len(),
        TOLERANCE * 100.0,
        failures.join("\n")
    );
}

#[test]
fn shard_counts_cover_one_to_max() {
    let counts = shard_counts();
    assert_eq!(counts.first(), Some(&1));
    assert_eq!(counts.last(), Some(&MAX_SHARDS));
    assert!(counts.windows(2).all(|w| w[0] < w[1]));
    // The builder accepts every one of them and rejects the counts around them.
    let lru = kvtier_replay::policy("lru").expect("built in");
    for s in counts {
        assert!(
            ManagerReplay::builder(&lru, 1_000)
                .with_shards(s)
                .build()
                .is_ok()
        );
    }
    for s in [0, MAX_SHARDS + 1] {
        assert!(
            ManagerReplay::builder(&lru, 1_000)
                .with_shards(s)
                .build()
                .is_err()
        );
    }
}

#[test]
fn no_lost_hits_on_the_bundled_trace() {
    let chains = bundled(QUICK_BUNDLED_REQUESTS);
    assert_no_lost_hits("bundled trace (first 2,000 requests)", &chains);
}

#[test]
fn no_lost_hits_on_synthetic_traces() {
    for seed in [42, 7] {
        let chains = synthetic(seed, QUICK_SYNTHETIC_REQUESTS);
        assert_no_lost_hits(&format!("synthetic seed {seed}"), &chains);
    }
}

#[test]
#[ignore = "the whole traces: minutes in a debug build, seconds in release (see the file doc)"]
fn no_lost_hits_full_sweep() {
    assert_no_lost_hits("bundled trace (whole)", &bundled(usize::MAX));
    assert_no_lost_hits(
        "synthetic seed 42 (10,000 requests)",
        &synthetic(42, 10_000),
    );
}
