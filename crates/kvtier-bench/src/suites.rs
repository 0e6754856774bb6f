//! The workloads, generic over [`ManagerFactory`], each runnable one repetition at a time so a
//! driver can interleave systems rep by rep (both see the same background noise).
//!
//! | id | workload | unit |
//! |---|---|---|
//! | a | [`AllocRegister`]: allocate + stage + register a fresh N-chain, drop it; the manager is full, so every allocation evicts N blocks | ns/block |
//! | b | [`MatchPrefix`] (active): `match_blocks` on an N-prefix whose handles are held elsewhere | ns/block |
//! | c | [`MatchPrefix`] (inactive): `match_blocks` on a released N-prefix, result dropped: resurrect + release round trip | ns/block |
//! | d/e | [`churn_run`]: Zipf requests over prefixes — match, allocate + register the missing tail, drop all — from 1 or more threads sharing one manager | requests/s |
//!
//! Sizes, seeds and loop counts follow the kvbm-logical anchor harness. Keys are built outside
//! timed regions. Every repetition that releases everything checks that no block leaked
//! (`available_blocks == capacity`).

use std::hint::black_box;
use std::sync::Barrier;
use std::time::Instant;

use serde::Serialize;

use crate::ops::{BlockManagerOps, ManagerFactory};
use crate::workload::{ChurnWorkload, TAG_MICRO, chain};

/// Blocks per manager in every workload.
pub const CAPACITY: usize = 4096;
/// Tokens per block in every workload.
pub const BLOCK_SIZE: usize = 16;

/// Default iteration counts: the anchors' (400k blocks per rep for (a), 1M for (b)/(c)).
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// Blocks allocated per repetition of (a).
    pub alloc_blocks: usize,
    /// Blocks matched per repetition of (b) and (c).
    pub match_blocks: usize,
}

impl Sizes {
    /// The anchors' sizes.
    pub const FULL: Sizes = Sizes {
        alloc_blocks: 400_000,
        match_blocks: 1_000_000,
    };
    /// A smoke run's sizes (milliseconds per repetition).
    pub const QUICK: Sizes = Sizes {
        alloc_blocks: 8_192,
        match_blocks: 16_384,
    };
}

/// Panics unless every block of `m` is free or evictable.
///
/// # Panics
///
/// When blocks leaked (or are still held).
pub fn assert_no_leak<M: BlockManagerOps>(m: &M, what: &str) {
    let available = m.available_blocks();
    assert_eq!(
        available,
        CAPACITY,
        "{what}: {} blocks leaked",
        CAPACITY - available
    );
}

/// (a) Steady-state allocate + stage + register + drop of fresh N-chains on a full manager.
pub struct AllocRegister<M: BlockManagerOps> {
    m: M,
    n: usize,
    iters: usize,
    next_id: u64,
}

impl<M: BlockManagerOps> AllocRegister<M> {
    /// A manager from `f`, filled with earlier chains so that every later allocation evicts.
    pub fn new<F: ManagerFactory<M = M>>(f: &F, n: usize, sizes: Sizes) -> Self {
        let mut s = Self {
            m: f.build(CAPACITY, BLOCK_SIZE),
            n,
            iters: (sizes.alloc_blocks / n).max(64),
            next_id: 0,
        };
        for _ in 0..2 * CAPACITY / n + 8 {
            let keys = s.fresh_keys();
            drop(s.m.allocate_register(&keys).expect("warm-up allocation"));
        }
        s
    }

    fn fresh_keys(&mut self) -> Vec<M::Key> {
        let k = self.m.make_keys(&chain(TAG_MICRO, self.next_id, self.n));
        self.next_id += 1;
        k
    }

    /// One repetition; returns ns per block.
    pub fn run(&mut self) -> f64 {
        let keys: Vec<Vec<M::Key>> = (0..self.iters).map(|_| self.fresh_keys()).collect();
        let t0 = Instant::now();
        for k in &keys {
            let h = self.m.allocate_register(black_box(k)).expect("allocation");
            self.m.release(h);
        }
        let ns = t0.elapsed().as_nanos() as f64;
        assert_no_leak(&self.m, "alloc+register");
        ns / (self.iters * self.n) as f64
    }
}

/// (b) / (c): `match_blocks` on a registered N-chain that is held (active) or released
/// (inactive); the result is dropped inside the timed loop.
pub struct MatchPrefix<M: BlockManagerOps> {
    m: M,
    keys: Vec<M::Key>,
    held: Option<Vec<M::Handle>>,
    iters: usize,
}

impl<M: BlockManagerOps> MatchPrefix<M> {
    /// A manager from `f` holding one N-chain, active or inactive, warmed up.
    pub fn new<F: ManagerFactory<M = M>>(f: &F, n: usize, active: bool, sizes: Sizes) -> Self {
        let m = f.build(CAPACITY, BLOCK_SIZE);
        let keys = m.make_keys(&chain(TAG_MICRO, 9_999_999, n));
        let held = m.allocate_register(&keys).expect("allocation");
        let held = if active { Some(held) } else { None };
        let iters = (sizes.match_blocks / n).max(256);
        for _ in 0..(iters / 10).max(64) {
            assert_eq!(m.match_prefix(&keys).len(), n, "prefix must fully match");
        }
        Self {
            m,
            keys,
            held,
            iters,
        }
    }

    /// One repetition; returns ns per block.
    pub fn run(&mut self) -> f64 {
        let t0 = Instant::now();
        for _ in 0..self.iters {
            let r = self.m.match_prefix(black_box(&self.keys));
            debug_assert_eq!(r.len(), self.keys.len());
            self.m.release(r);
        }
        let ns = t0.elapsed().as_nanos() as f64;
        if self.held.is_none() {
            assert_no_leak(&self.m, "match inactive");
        }
        ns / (self.iters * self.keys.len()) as f64
    }
}

/// Outcome of one churn repetition.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ChurnRun {
    /// Requests served per wall-clock second.
    pub req_per_s: f64,
    /// Matched blocks / requested blocks.
    pub hit_rate: f64,
    /// Requests whose tail could not be allocated.
    pub alloc_failures: u64,
}

#[derive(Clone, Copy, Default)]
struct Counts {
    requests: u64,
    hit: u64,
    total: u64,
    failures: u64,
}

/// Serves one churn request: match the longest cached prefix of `keys`, allocate + register the
/// missing tail, then release everything root first (like `drop(Vec)` and kvbm's own
/// `RequestSequence::release`), through [`BlockManagerOps::release`]. Returns the number of hit blocks, or `None` when the tail could
/// not be allocated (the hit blocks are released all the same).
#[inline]
pub fn serve_request<M: BlockManagerOps>(m: &M, keys: &[M::Key]) -> Option<usize> {
    let hit = m.match_prefix(keys);
    let k = hit.len();
    let new = m.allocate_register(&keys[k..]);
    m.release(hit);
    m.release(new?);
    Some(k)
}

fn serve<M: BlockManagerOps>(m: &M, keys: &[M::Key], c: &mut Counts) {
    c.requests += 1;
    c.total += keys.len() as u64;
    match serve_request(m, keys) {
        Some(k) => c.hit += k as u64,
        None => c.failures += 1,
    }
}

/// (d) / (e) One churn repetition on a fresh manager from `f`: `threads` threads share it,
/// thread `t` serving requests `t, t + threads, ...` of `w`.
///
/// # Panics
///
/// When blocks leaked at the end.
pub fn churn_run<F: ManagerFactory>(f: &F, w: &ChurnWorkload, threads: usize) -> ChurnRun {
    let m = f.build(CAPACITY, BLOCK_SIZE);
    let keys: Vec<Vec<_>> = w.prefixes.iter().map(|c| m.make_keys(c)).collect();
    let threads = threads.max(1);
    let (c, secs) = if threads == 1 {
        let mut c = Counts::default();
        let t0 = Instant::now();
        for &p in &w.requests {
            serve(&m, &keys[p as usize], &mut c);
        }
        (c, t0.elapsed().as_secs_f64())
    } else {
        let per_thread: Vec<Vec<u32>> = (0..threads)
            .map(|t| {
                w.requests
                    .iter()
                    .skip(t)
                    .step_by(threads)
                    .copied()
                    .collect()
            })
            .collect();
        let barrier = Barrier::new(threads + 1);
        let (m, keys, barrier) = (&m, &keys, &barrier);
        std::thread::scope(|s| {
            let hs: Vec<_> = per_thread
                .iter()
                .map(|reqs| {
                    s.spawn(move || {
                        let mut c = Counts::default();
                        barrier.wait();
                        for &p in reqs {
                            serve(m, &keys[p as usize], &mut c);
                        }
                        c
                    })
                })
                .collect();
            barrier.wait();
            let t0 = Instant::now();
            let mut sum = Counts::default();
            for h in hs {
                let c = h.join().expect("churn thread");
                sum.requests += c.requests;
                sum.hit += c.hit;
                sum.total += c.total;
                sum.failures += c.failures;
            }
            (sum, t0.elapsed().as_secs_f64())
        })
    };
    assert_no_leak(&m, &format!("churn ({threads} threads)"));
    ChurnRun {
        req_per_s: c.requests as f64 / secs,
        hit_rate: c.hit as f64 / c.total.max(1) as f64,
        alloc_failures: c.failures,
    }
}
