//! Criterion benches of the router's whole ingestion path, on one thread: event messages
//! (as a transport delivers them) through [`Router::apply`] — stream bookkeeping, duplicate and
//! gap checks, and the index — and the same from msgpack bytes (decode + apply).
//!
//! Each of 16 or 256 instances keeps `LIVE` chains of 16..=64 blocks; every step one instance
//! announces a new chain (a Create batch) and drops its oldest (a Remove batch, children first),
//! so the index stays at about `LIVE * 40` blocks per instance. Throughput is per event (one
//! hash created or removed). Building each message (an `Arc` and a copy of its hashes, as a
//! decoder would produce) is inside the measurement.
//!
//! Groups:
//! - `apply/{instances}`: decoded messages into [`Router::apply`].
//! - `decode_apply/{instances}`: msgpack bytes decoded with [`EventMessage::decode`], then
//!   applied.
//!
//! - `emit/{none,all,power_of_two}`: the producer side — a block manager's churn (allocate 32
//!   blocks evicting old ones, register, release tail-first) without an emitter and with one
//!   per policy, per block; the difference is what announcing costs the manager's hot path.
//!
//! ```text
//! cargo bench -p kvtier-router --bench ingest -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Reference figures (2-core shared VM, 2026-11-23; median of five runs, range in brackets — the
//! machine was noisy, ±30%):
//!
//! | group | 16 instances | 256 instances |
//! |---|---:|---:|
//! | apply (events/s) | 12.6 M [9.7–17.8] | 6.65 M [5.6–7.6] |
//! | decode_apply (events/s) | 10.2 M [8.8–12.6] | 6.4 M [6.25–7.1] |
//!
//! | emit (blocks/s of manager churn) | none | all | power_of_two |
//! |---|---:|---:|---:|
//! | median [range], six runs | 5.2 M [3.7–6.2] | 2.5 M [1.95–2.8] | 4.1 M [3.7–4.5] |

#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented pub fn"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kvtier_core::{Medium, SequenceHash};
use kvtier_events::{
    EmitPolicy, EventBatch, EventKind, EventMessage, InstanceId, Payload, WireFormat,
};
use kvtier_router::Router;
use kvtier_testkit::rng::SplitMix64 as Rng;

/// Chains each instance keeps.
const LIVE: usize = 256;
/// Distinct chains per instance in the cycle (LIVE live + the rest waiting).
const CYCLE: usize = 2 * LIVE;

/// One instance's cycle of payloads: step k creates chain k and removes chain k - LIVE.
struct Schedule {
    creates: Vec<Payload>,
    removes: Vec<Payload>,
}

fn schedule(rng: &mut Rng) -> Schedule {
    let mut creates = Vec::with_capacity(CYCLE);
    let mut removes = Vec::with_capacity(CYCLE);
    for _ in 0..CYCLE {
        let len = 16 + (rng.next_u64() % 49) as usize;
        let mut chain = vec![SequenceHash::root(rng.next_u64())];
        for _ in 1..len {
            let parent = *chain.last().expect("non-empty");
            chain.push(SequenceHash::child_of(parent, rng.next_u64()));
        }
        let batch = |kind, hashes| {
            Payload::Batch(EventBatch {
                medium: Medium::Gpu,
                kind,
                hashes,
                policy: EmitPolicy::All,
            })
        };
        removes.push(batch(
            EventKind::Remove,
            chain.iter().rev().copied().collect(),
        ));
        creates.push(batch(EventKind::Create, chain));
    }
    Schedule { creates, removes }
}

struct Fleet {
    router: Router,
    schedules: Vec<Schedule>,
    next_id: Vec<u64>,
    step: Vec<usize>,
    turn: usize,
}

impl Fleet {
    fn new(instances: usize) -> Self {
        let mut rng = Rng(instances as u64);
        let mut fleet = Fleet {
            router: Router::builder().build(),
            schedules: (0..instances).map(|_| schedule(&mut rng)).collect(),
            next_id: vec![1; instances],
            step: vec![0; instances],
            turn: 0,
        };
        // Fill: every instance creates its first LIVE chains.
        for i in 0..instances {
            for _ in 0..LIVE {
                let m = fleet.message(i, true);
                fleet.router.apply(m);
            }
        }
        fleet
    }

    fn message(&mut self, i: usize, create: bool) -> EventMessage {
        let s = &self.schedules[i];
        let k = self.step[i];
        let payload = if create {
            self.step[i] += 1;
            s.creates[k % CYCLE].clone()
        } else {
            s.removes[(k + CYCLE - LIVE) % CYCLE].clone()
        };
        let id = self.next_id[i];
        self.next_id[i] += 1;
        EventMessage {
            instance: InstanceId(i as u128 + 1),
            event_id: id,
            payload,
        }
    }

    /// The next step's two messages (remove the oldest chain, create a new one).
    fn step(&mut self) -> [EventMessage; 2] {
        let i = self.turn % self.schedules.len();
        self.turn += 1;
        let remove = self.message(i, false);
        let create = self.message(i, true);
        [remove, create]
    }
}

fn events_in(m: &EventMessage) -> u64 {
    match &m.payload {
        Payload::Batch(b) => b.hashes.len() as u64,
        _ => 0,
    }
}

fn ingest(c: &mut Criterion) {
    for instances in [16usize, 256] {
        let mut fleet = Fleet::new(instances);
        // Events per step, averaged over a cycle, for the throughput figure.
        let mut probe = Fleet {
            router: Router::builder().build(),
            schedules: vec![schedule(&mut Rng(instances as u64))],
            next_id: vec![1],
            step: vec![LIVE],
            turn: 0,
        };
        let per_step: u64 = (0..CYCLE)
            .map(|_| probe.step().iter().map(events_in).sum::<u64>())
            .sum::<u64>()
            / CYCLE as u64;
        let mut g = c.benchmark_group("apply");
        g.throughput(Throughput::Elements(per_step));
        g.bench_function(BenchmarkId::from_parameter(instances), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    for m in fleet.step() {
                        fleet.router.apply(Arc::new(m));
                    }
                    spent += start.elapsed();
                }
                spent
            })
        });
        g.finish();
        black_box(fleet.router.stats());

        let mut fleet = Fleet::new(instances);
        let mut g = c.benchmark_group("decode_apply");
        g.throughput(Throughput::Elements(per_step));
        g.bench_function(BenchmarkId::from_parameter(instances), |b| {
            b.iter_custom(|iters| {
                // Encoding is preparation, outside the measurement; chunks bound the memory.
                let mut spent = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(1024);
                    left -= n;
                    let wire: Vec<Vec<u8>> = (0..n)
                        .flat_map(|_| fleet.step())
                        .map(|m| m.encode(WireFormat::Msgpack).expect("encodes"))
                        .collect();
                    let start = Instant::now();
                    for bytes in &wire {
                        let m = EventMessage::decode(bytes, WireFormat::Msgpack).expect("decodes");
                        fleet.router.apply(m);
                    }
                    spent += start.elapsed();
                }
                spent
            })
        });
        g.finish();
        let s = fleet.router.stats();
        assert_eq!(s.duplicates + s.gaps_detected + s.unknown_removes, 0);
    }
}

fn emit(c: &mut Criterion) {
    use kvtier_core::{BlockManager, DuplicationPolicy, G1};
    use kvtier_events::{EventEmitter, Publisher};

    const CHAIN: usize = 32;
    let mut g = c.benchmark_group("emit");
    g.throughput(Throughput::Elements(CHAIN as u64));
    for policy in [None, Some(EmitPolicy::All), Some(EmitPolicy::PowerOfTwo)] {
        let name = policy.map_or("none", |p| match p {
            EmitPolicy::All => "all",
            _ => "power_of_two",
        });
        let publisher = Publisher::new(InstanceId(1));
        // A subscriber that never reads: the publisher must not wait for it.
        let _sub = publisher.subscribe();
        let mut builder = BlockManager::<G1>::builder()
            .with_block_count(4096)
            .with_block_size(16)
            .with_duplication_policy(DuplicationPolicy::Reject);
        if let Some(p) = policy {
            let emitter = EventEmitter::builder(publisher.clone())
                .with_policy(p)
                .with_max_delay(None)
                .build()
                .expect("no thread to spawn");
            builder = builder.with_observer(Arc::new(emitter));
        }
        let manager = builder.build().expect("valid manager");
        let mut rng = Rng(42);
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut chain = vec![SequenceHash::root(rng.next_u64())];
                for _ in 1..CHAIN {
                    let parent = *chain.last().expect("non-empty");
                    chain.push(SequenceHash::child_of(parent, rng.next_u64()));
                }
                let blocks = manager.allocate_blocks(CHAIN).expect("evicts");
                let staged: Vec<_> = blocks
                    .into_iter()
                    .zip(&chain)
                    .map(|(b, &h)| b.stage(h, 16).expect("staged"))
                    .collect();
                let held = manager
                    .register_blocks(staged)
                    .map_err(|e| e.to_string())
                    .expect("registered");
                manager.release_blocks(held.into_iter().rev());
            })
        });
    }
    g.finish();
}

criterion_group!(benches, ingest, emit);
criterion_main!(benches);
