//! Several block managers (one per instance) announce their blocks through the real event
//! publisher into one router; on the Mooncake conversation trace, requests the router routes
//! find more of their blocks cached than randomly routed ones do.

use kvtier_bench::{FleetConfig, Routing, simulate};
use kvtier_events::EmitPolicy;
use kvtier_replay::{Chains, ParseMode, Trace};

fn chains() -> Chains {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/mooncake_conversation.jsonl"
    );
    let trace = Trace::parse_slice(&std::fs::read(path).unwrap(), ParseMode::Strict)
        .unwrap()
        .trace;
    Chains::from_trace(&trace)
}

#[test]
fn kv_aware_routing_beats_random_on_the_trace() {
    let chains = chains();
    for (lag, policy) in [
        (0, EmitPolicy::All),
        (32, EmitPolicy::All),
        (0, EmitPolicy::PowerOfTwo),
    ] {
        let cfg = FleetConfig {
            instances: 4,
            capacity: 2_000,
            lag,
            policy,
            seed: 1,
        };
        let kv = simulate(chains.iter(), cfg, Routing::KvAware);
        let rnd = simulate(chains.iter(), cfg, Routing::Random);
        println!(
            "lag {lag} {policy:?}: kv-aware {:.2}% random {:.2}% (per instance {:?})",
            kv.hit_rate * 100.0,
            rnd.hit_rate * 100.0,
            kv.per_instance
        );
        assert_eq!(kv.blocks, rnd.blocks);
        assert!(
            kv.hit_rate > rnd.hit_rate * 1.2,
            "kv-aware {} vs random {}",
            kv.hit_rate,
            rnd.hit_rate
        );
        let stats = kv.router.unwrap();
        assert_eq!(stats.instances, 4);
        // With exact announcements and no lag, what the router predicted is what the managers
        // really had.
        if lag == 0 && policy == EmitPolicy::All {
            assert_eq!(kv.predicted_hits, kv.hits);
            assert_eq!(stats.unknown_removes, 0);
        }
        // Everyone got work (ties go to the least loaded instance).
        assert!(kv.per_instance.iter().all(|&n| n > 0));
    }
}
