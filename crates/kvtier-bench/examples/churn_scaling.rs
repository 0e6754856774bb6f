//! `churn_scaling`: 1-thread and 2-thread churn on one shared kvtier manager, with each thread's
//! CPU time and run-queue wait, so 2-thread scaling can be judged on a machine that other work
//! keeps busy.
//!
//! Wall-clock 2T ÷ 1T only shows scaling when two cores are free for the whole run. On a shared
//! machine the threads also wait in the run queue; Linux reports that wait per thread in
//! `/proc/thread-self/schedstat` (CPU time, run-queue wait, in ns). This example reports, per
//! backend (default `BlockManager` configuration, handles dropped one by one), the median over
//! repetitions of:
//!
//! - `wall 2T÷1T`: plain throughput ratio (what `vs-kvbm` reports);
//! - `on-cpu 2T÷1T`: requests ÷ (wall − the slowest thread's run-queue wait), the throughput
//!   with the time the scheduler gave to other processes taken out;
//! - `cpu eff`: requests per CPU-second at 2T ÷ the same at 1T (1.0: two threads do the work
//!   as cheaply as one; lock waits that spin and lines that bounce lower it). Scaling can reach
//!   at most `2 × cpu eff`.
//!
//! ```text
//! cargo run --release -p kvtier-bench --example churn_scaling -- [REPS] [REQUESTS] [BACKEND,...]
//! ```
//!
//! Defaults: 5 repetitions, 100,000 requests (the `vs-kvbm` churn workload: Zipf(1.0) over
//! 1,000 prefixes of 4..=64 blocks, 4,096 blocks), backends `freqlease,lru,lineage`.

use std::sync::Barrier;
use std::time::Instant;

use kvtier_bench::{
    BLOCK_SIZE, BlockManagerOps, CAPACITY, ChurnWorkload, KvtierFactory, ManagerFactory,
    kvtier_backends, serve_request,
};

/// CPU time and run-queue wait of the calling thread, in ns (zeros where unavailable).
fn schedstat() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut it = s.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// One run: requests served, wall seconds, per-thread (cpu s, run-queue wait s).
struct Run {
    requests: u64,
    wall: f64,
    threads: Vec<(f64, f64)>,
}

impl Run {
    fn wall_rate(&self) -> f64 {
        self.requests as f64 / self.wall
    }
    fn on_cpu_rate(&self) -> f64 {
        let wait = self.threads.iter().map(|t| t.1).fold(0.0, f64::max);
        self.requests as f64 / (self.wall - wait).max(1e-9)
    }
    fn cpu_rate(&self) -> f64 {
        self.requests as f64 / self.threads.iter().map(|t| t.0).sum::<f64>().max(1e-9)
    }
}

fn run(f: &KvtierFactory, w: &ChurnWorkload, threads: usize) -> Run {
    let m = f.build(CAPACITY, BLOCK_SIZE);
    let keys: Vec<Vec<_>> = w.prefixes.iter().map(|c| m.make_keys(c)).collect();
    let barrier = Barrier::new(threads + 1);
    let (m, keys, barrier) = (&m, &keys, &barrier);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let reqs: Vec<u32> = w
                        .requests
                        .iter()
                        .skip(t)
                        .step_by(threads)
                        .copied()
                        .collect();
                    barrier.wait();
                    let (c0, q0) = schedstat();
                    for &p in &reqs {
                        std::hint::black_box(serve_request(m, &keys[p as usize]));
                    }
                    let (c1, q1) = schedstat();
                    (
                        reqs.len() as u64,
                        (c1 - c0) as f64 / 1e9,
                        (q1 - q0) as f64 / 1e9,
                    )
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        let mut r = Run {
            requests: 0,
            wall: 0.0,
            threads: Vec::new(),
        };
        for h in hs {
            let (n, cpu, wait) = h.join().expect("churn thread");
            r.requests += n;
            r.threads.push((cpu, wait));
        }
        r.wall = t0.elapsed().as_secs_f64();
        r
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reps: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5);
    let requests: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let wanted: Vec<String> = args
        .get(2)
        .map(|a| a.split(',').map(str::to_string).collect())
        .unwrap_or_else(|| vec!["freqlease".into(), "lru".into(), "lineage".into()]);
    let w = ChurnWorkload::standard(requests);
    let backends: Vec<KvtierFactory> = kvtier_backends()
        .into_iter()
        .filter(|f| wanted.iter().any(|n| n == f.backend()))
        .collect();
    println!(
        "| backend | shards | 1T req/s (wall) | 1T req/s (on cpu) | 2T req/s (wall) | wall 2T÷1T | on-cpu 2T÷1T | cpu eff |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for f in &backends {
        let (mut w1, mut c1, mut w2, mut rw, mut rc, mut eff) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..reps {
            let one = run(f, &w, 1);
            let two = run(f, &w, 2);
            w1.push(one.wall_rate());
            c1.push(one.on_cpu_rate());
            w2.push(two.wall_rate());
            rw.push(two.wall_rate() / one.wall_rate());
            rc.push(two.on_cpu_rate() / one.on_cpu_rate());
            eff.push(two.cpu_rate() / one.cpu_rate());
        }
        println!(
            "| {} | {} | {:.1} k | {:.1} k | {:.1} k | {:.2}× | {:.2}× | {:.2} |",
            f.backend(),
            f.built_shards(CAPACITY),
            median(w1) / 1e3,
            median(c1) / 1e3,
            median(w2) / 1e3,
            median(rw),
            median(rc),
            median(eff),
        );
    }
}
