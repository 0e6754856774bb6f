//! Criterion benches of kvtier's block manager (kvtier only; the side-by-side comparison with
//! kvbm-logical is the `vs-kvbm` binary of this crate).
//!
//! Every manager has 4096 blocks of 16 tokens. Groups, and why they exist:
//!
//! - `register_chain/{backend}/{N}` (N = 8, 32, 128): allocate N blocks, stage each with a
//!   fresh sequence hash, register the chain, drop it. The manager is full of earlier chains, so
//!   every allocation evicts N inactive blocks: the steady-state cost of admitting new prefill
//!   blocks (allocator, eviction policy, index insert/remove, release into the inactive pool).
//! - `match_active/{backend}` and `match_inactive/{backend}` (N = 32): `match_blocks` on a
//!   registered prefix whose handles are held elsewhere (refcount path), or released (each call
//!   resurrects every block from the policy and the drop puts it back): the prefix-cache hit path.
//! - `drop_immutable/{backend}` (N = 32): dropping the last handles of a matched 32-block chain,
//!   i.e. releasing registered blocks into the inactive pool (the end of every request).
//! - `churn_1t/{backend}` and `churn_2t/{backend}`: the anchors' churn workload — 1,000
//!   prefixes of 4..=64 blocks drawn Zipf(1.0), per request match + allocate/register the tail +
//!   drop all, under capacity pressure (~60% block hit rate) — from one thread, and from two
//!   threads sharing the manager (sharding and lock contention; the lineage backend needs one
//!   shard, so it does not scale).
//!
//! Throughput is per block for the first three groups and per request for churn. Backends are
//! every one kvtier-core exports (`kvtier_bench::kvtier_backends`).
//!
//! Run (all, or filter by group/backend):
//!
//! ```text
//! cargo bench -p kvtier-bench --bench block_manager
//! cargo bench -p kvtier-bench --bench block_manager -- 'churn_2t/lru'
//! ```
//!
//! Reference figures (2-core shared VM, noisy: ±10–30% between runs; medians; see
//! `docs/bench-results.md` for the side-by-side table with kvbm-logical):
//!
//! Measured 2026-11-23 (`-- --warm-up-time 0.3 --measurement-time 1`, kvtier-core at
//! 6fe2707 + uncommitted edits; per block unless noted):
//!
//! | group | freqlease | fifo | lru | lineage | multi_lru |
//! |---|---:|---:|---:|---:|---:|
//! | register_chain N=8 | 302 ns | 131 ns | 229 ns | 172 ns | 218 ns |
//! | register_chain N=32 | 236 ns | 124 ns | 250 ns | 160 ns | 217 ns |
//! | register_chain N=128 | 205 ns | 108 ns | 218 ns | 154 ns | 181 ns |
//! | match_active | 33 ns | 21 ns | 18 ns | 22 ns | 29 ns |
//! | match_inactive | 63 ns | 40 ns | 67 ns | 73 ns | 59 ns |
//! | drop_immutable | 41 ns | 26 ns | 53 ns | 53 ns | 35 ns |
//! | churn_1t (requests/s) | 184 k | 327 k | 168 k | 202 k | 214 k |
//! | churn_2t (requests/s) | 181 k | 342 k | 141 k | 105 k | 232 k |

#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented pub fn"
)]

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kvtier_bench::{
    BLOCK_SIZE, BlockManagerOps, CAPACITY, ChurnWorkload, KvtierOps, ManagerFactory, TAG_MICRO,
    chain, kvtier_backends, serve_request,
};

fn manager(f: &impl ManagerFactory<M = KvtierOps>) -> KvtierOps {
    f.build(CAPACITY, BLOCK_SIZE)
}

fn register_chain(c: &mut Criterion) {
    let mut g = c.benchmark_group("register_chain");
    for f in kvtier_backends() {
        for n in [8usize, 32, 128] {
            let m = manager(&f);
            let mut next_id = 0u64;
            let mut fresh = || {
                next_id += 1;
                m.make_keys(&chain(TAG_MICRO, next_id, n))
            };
            // Fill the manager so that every measured allocation evicts.
            for _ in 0..2 * CAPACITY / n + 8 {
                drop(m.allocate_register(&fresh()).expect("warm-up"));
            }
            g.throughput(Throughput::Elements(n as u64));
            g.bench_function(BenchmarkId::new(f.backend(), n), |b| {
                b.iter_batched(
                    &mut fresh,
                    |keys| {
                        drop(m.allocate_register(black_box(&keys)).expect("allocation"));
                        keys
                    },
                    BatchSize::SmallInput,
                );
            });
        }
    }
    g.finish();
}

fn match_prefix(c: &mut Criterion) {
    const N: usize = 32;
    for (group, active) in [("match_active", true), ("match_inactive", false)] {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(N as u64));
        for f in kvtier_backends() {
            let m = manager(&f);
            let keys = m.make_keys(&chain(TAG_MICRO, 9_999_999, N));
            let held = m.allocate_register(&keys).expect("allocation");
            let _held = active.then_some(held);
            g.bench_function(f.backend(), |b| {
                b.iter(|| drop(m.match_prefix(black_box(&keys))));
            });
        }
        g.finish();
    }
}

fn drop_immutable(c: &mut Criterion) {
    const N: usize = 32;
    const CHAINS: usize = 64; // 2,048 registered blocks: no eviction involved
    let mut g = c.benchmark_group("drop_immutable");
    g.throughput(Throughput::Elements(N as u64));
    for f in kvtier_backends() {
        let m = manager(&f);
        let chains: Vec<Vec<_>> = (0..CHAINS as u64)
            .map(|i| {
                let keys = m.make_keys(&chain(TAG_MICRO, 1_000_000 + i, N));
                drop(m.allocate_register(&keys).expect("allocation"));
                keys
            })
            .collect();
        g.bench_function(f.backend(), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let batch = left.min(CHAINS);
                    // Untimed: resurrect `batch` chains (sole owners of their blocks).
                    let handles: Vec<Vec<_>> =
                        chains[..batch].iter().map(|k| m.match_prefix(k)).collect();
                    let t0 = Instant::now();
                    drop(black_box(handles));
                    total += t0.elapsed();
                    left -= batch;
                }
                total
            });
        });
    }
    g.finish();
}

fn churn(c: &mut Criterion) {
    let w = ChurnWorkload::standard(200_000);
    for (group, threads) in [("churn_1t", 1usize), ("churn_2t", 2)] {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(1));
        for f in kvtier_backends() {
            let m = manager(&f);
            let keys: Vec<Vec<_>> = w.prefixes.iter().map(|p| m.make_keys(p)).collect();
            // Each thread walks its own stride of the request stream, resuming where the last
            // sample stopped (the manager stays warm across samples).
            let mut cursors: Vec<usize> = (0..threads).collect();
            g.bench_function(f.backend(), |b| {
                b.iter_custom(|iters| {
                    let per_thread = (iters as usize).div_ceil(threads);
                    let barrier = Barrier::new(threads);
                    let (m, keys, w, barrier) = (&m, &keys, &w, &barrier);
                    let times: Vec<Duration> = std::thread::scope(|s| {
                        let hs: Vec<_> = cursors
                            .iter_mut()
                            .map(|cursor| {
                                s.spawn(move || {
                                    barrier.wait();
                                    let t0 = Instant::now();
                                    for _ in 0..per_thread {
                                        let p = w.requests[*cursor];
                                        *cursor = (*cursor + threads) % w.requests.len();
                                        black_box(serve_request(m, &keys[p as usize]));
                                    }
                                    t0.elapsed()
                                })
                            })
                            .collect();
                        hs.into_iter()
                            .map(|h| h.join().expect("churn thread"))
                            .collect()
                    });
                    times.into_iter().max().unwrap_or_default()
                });
            });
        }
        g.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = register_chain, match_prefix, drop_immutable, churn
}
criterion_main!(benches);
