//! `route-sim`: KV-aware routing vs random routing on the Mooncake conversation trace.
//!
//! A fleet of real block managers (one per instance) announces its blocks through the real
//! event publisher into one router; each request goes where the router says (or to a random
//! instance) and its hits are counted on that instance. Prints hit rates side by side.
//!
//! ```text
//! cargo run --release -p kvtier-bench --bin route-sim [-- TRACE]
//! ```
//!
//! Default trace: `data/mooncake_conversation.jsonl` (embedded in the CLI as well).

use kvtier_bench::{FleetConfig, Routing, simulate};
use kvtier_events::EmitPolicy;
use kvtier_replay::{Chains, ParseMode, Trace};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/mooncake_conversation.jsonl"
        )
        .to_string()
    });
    let trace = Trace::parse_slice(&std::fs::read(&path)?, ParseMode::Strict)?.trace;
    let chains = Chains::from_trace(&trace);
    println!(
        "trace {path}: {} requests, {} blocks",
        chains.len(),
        chains.total_blocks()
    );
    println!(
        "{:>9} {:>9} {:>5} {:>12} {:>10} {:>10} {:>8} {:>18}",
        "instances", "capacity", "lag", "policy", "kv-aware", "random", "ratio", "requests min/max"
    );
    for (instances, capacity) in [(4, 1_250), (4, 5_000), (8, 2_500), (16, 1_250)] {
        for (lag, policy) in [
            (0, EmitPolicy::All),
            (64, EmitPolicy::All),
            (0, EmitPolicy::PowerOfTwo),
        ] {
            let cfg = FleetConfig {
                instances,
                capacity,
                lag,
                policy,
                seed: 7,
            };
            let kv = simulate(chains.iter(), cfg, Routing::KvAware);
            let rnd = simulate(chains.iter(), cfg, Routing::Random);
            let min = kv.per_instance.iter().min().copied().unwrap_or(0);
            let max = kv.per_instance.iter().max().copied().unwrap_or(0);
            println!(
                "{:>9} {:>9} {:>5} {:>12} {:>9.2}% {:>9.2}% {:>7.2}x {:>18}",
                instances,
                capacity,
                lag,
                format!("{policy:?}"),
                kv.hit_rate * 100.0,
                rnd.hit_rate * 100.0,
                kv.hit_rate / rnd.hit_rate.max(f64::MIN_POSITIVE),
                format!("{min}/{max}")
            );
        }
    }
    Ok(())
}
