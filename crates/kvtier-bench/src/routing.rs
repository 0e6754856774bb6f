//! Routing simulation: a fleet of block managers (one per instance) behind one router, fed a
//! trace; compares KV-aware routing with random routing by the blocks each request finds
//! cached on the instance it was sent to.
//!
//! Every instance is a real [`BlockManager`] whose [`EventEmitter`] publishes on its own
//! [`Publisher`]; the router consumes the publishers' subscribers (the real stream, with event
//! ids) and repairs from them when needed. Events reach the router `lag` requests late, as they
//! would across a network.
//!
//! Per request: choose an instance, match the request's chain there (hits = the leading run
//! found), allocate and register the missing tail, release everything tail-first. Hit rate =
//! total hits / total blocks requested, as in `kvtier replay`.

use std::sync::Arc;

use kvtier_core::{BlockManager, DuplicationPolicy, G1, SequenceHash};
use kvtier_events::{EmitPolicy, EventEmitter, InstanceId, Publisher, Subscriber};
use kvtier_router::{LoadTable, QueryScratch, Router, RouterStats};

use crate::Rng;

/// Requests in flight per instance, for the load signal of KV-aware routing.
pub const IN_FLIGHT: usize = 8;

/// How requests are assigned to instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routing {
    /// The router's choice: cached prefix minus load (load = blocks of the last
    /// [`IN_FLIGHT`] requests per instance, load weight 1), so a prefix every request shares
    /// does not send them all to one instance.
    KvAware,
    /// Uniformly random.
    Random,
}

impl Routing {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Routing::KvAware => "kv-aware",
            Routing::Random => "random",
        }
    }
}

/// The fleet's shape.
#[derive(Clone, Copy, Debug)]
pub struct FleetConfig {
    /// Instances.
    pub instances: usize,
    /// Blocks per instance.
    pub capacity: usize,
    /// Requests between event deliveries to the router (0: after every request).
    pub lag: usize,
    /// What the instances announce.
    pub policy: EmitPolicy,
    /// Seed of the random routing.
    pub seed: u64,
}

/// One simulation's outcome.
#[derive(Clone, Debug)]
pub struct FleetResult {
    /// The routing used.
    pub routing: Routing,
    /// Blocks found cached.
    pub hits: u64,
    /// Blocks requested.
    pub blocks: u64,
    /// `hits / blocks`.
    pub hit_rate: f64,
    /// Requests each instance served.
    pub per_instance: Vec<u64>,
    /// Requests the router's prediction said would hit at least this many blocks, summed (for
    /// checking the index against what the managers really had).
    pub predicted_hits: u64,
    /// The router's counters at the end (KV-aware routing only).
    pub router: Option<RouterStats>,
}

struct Instance {
    manager: BlockManager<G1>,
    emitter: EventEmitter,
    sub: Subscriber,
}

/// Runs `chains` (one request each, in order) through a fleet routed by `routing`.
///
/// # Panics
///
/// If `instances` or `capacity` is 0.
pub fn simulate<'a>(
    chains: impl IntoIterator<Item = &'a [SequenceHash]>,
    cfg: FleetConfig,
    routing: Routing,
) -> FleetResult {
    assert!(cfg.instances > 0 && cfg.capacity > 0, "an empty fleet");
    let loads = LoadTable::default();
    let mut router = Router::builder()
        .with_load_signal(Arc::new(loads.clone()))
        .with_load_weight(1.0)
        .build();
    // Load = blocks of the requests assigned among the last `window` (a stand-in for the work
    // in flight: about `IN_FLIGHT` requests per instance).
    let window = IN_FLIGHT * cfg.instances;
    let mut recent = std::collections::VecDeque::with_capacity(window + 1);
    let mut active = vec![0u64; cfg.instances];
    let mut fleet: Vec<Instance> = (0..cfg.instances)
        .map(|i| {
            let publisher = Publisher::new(InstanceId(i as u128 + 1));
            let sub = publisher.subscribe();
            router.attach_source(publisher.instance(), Arc::new(publisher.clone()));
            let emitter = EventEmitter::builder(publisher)
                .for_tier::<G1>()
                .with_policy(cfg.policy)
                .with_max_delay(None)
                .build()
                .expect("no flusher thread to spawn");
            let manager = BlockManager::<G1>::builder()
                .with_block_count(cfg.capacity)
                .with_block_size(16)
                .with_shards(1)
                .with_duplication_policy(DuplicationPolicy::Reject)
                .with_observer(Arc::new(emitter.clone()))
                .build()
                .expect("valid manager configuration");
            Instance {
                manager,
                emitter,
                sub,
            }
        })
        .collect();
    let mut rng = Rng::new(cfg.seed);
    let mut scratch = QueryScratch::default();
    let mut per_instance = vec![0u64; cfg.instances];
    let (mut hits, mut blocks, mut predicted) = (0u64, 0u64, 0u64);
    for (n, chain) in chains.into_iter().enumerate() {
        if n % (cfg.lag + 1) == 0 {
            deliver(&mut fleet, &mut router);
        }
        let target = match routing {
            Routing::Random => (rng.next_u64() % cfg.instances as u64) as usize,
            Routing::KvAware => {
                let answer = router.query(chain, &mut scratch);
                let best = answer.best.map_or(0, |id| id.0 as usize - 1);
                predicted += answer
                    .overlaps
                    .iter()
                    .find(|o| o.instance.0 as usize - 1 == best)
                    .map_or(0, |o| o.best_matched() as u64);
                best
            }
        };
        per_instance[target] += 1;
        recent.push_back((target, chain.len() as u64));
        active[target] += chain.len() as u64;
        if recent.len() > window
            && let Some((old, n)) = recent.pop_front()
        {
            active[old] -= n;
            loads.set(InstanceId(old as u128 + 1), active[old] as f64);
        }
        loads.set(InstanceId(target as u128 + 1), active[target] as f64);
        hits += serve(&fleet[target].manager, chain) as u64;
        blocks += chain.len() as u64;
    }
    deliver(&mut fleet, &mut router);
    FleetResult {
        routing,
        hits,
        blocks,
        hit_rate: hits as f64 / blocks.max(1) as f64,
        per_instance,
        predicted_hits: predicted,
        router: (routing == Routing::KvAware).then(|| router.stats()),
    }
}

/// Flushes every emitter and applies what the subscribers received.
fn deliver(fleet: &mut [Instance], router: &mut Router) {
    let mut msgs = Vec::new();
    for inst in fleet.iter_mut() {
        inst.emitter.flush();
        loop {
            match inst.sub.try_recv_many(&mut msgs, 4096) {
                Ok(_) => {}
                // Lost messages show up at the router as a gap, repaired from the publisher.
                Err(kvtier_events::RecvError::Lagged { .. }) => {}
                Err(_) => break,
            }
        }
    }
    for m in msgs {
        router.apply(m);
    }
}

/// Serves one request on `manager`; returns its hits.
fn serve(manager: &BlockManager<G1>, chain: &[SequenceHash]) -> usize {
    let mut held = manager.match_blocks(chain);
    let hit = held.len();
    let want = (chain.len() - hit).min(manager.total_blocks().saturating_sub(hit));
    if want > 0
        && let Ok(fresh) = manager.allocate_blocks(want)
    {
        let staged: Vec<_> = fresh
            .into_iter()
            .zip(&chain[hit..])
            .filter_map(|(b, &h)| b.stage(h, manager.block_size()).ok())
            .collect();
        if let Ok(registered) = manager.register_blocks(staged) {
            held.extend(registered);
        }
    }
    manager.release_blocks(held.into_iter().rev());
    hit
}
