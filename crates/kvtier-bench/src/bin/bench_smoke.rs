//! `bench-smoke`: every benchmark workload, tiny, on every kvtier backend, with leak checks.
//!
//! Runs (a) allocate + register (N = 8, 32, 128), (b) match active, (c) match inactive and
//! (d)/(e) churn from one and two threads, each for one short repetition, and fails (non-zero
//! exit via panic) if any manager ends with `available_blocks != capacity`. Takes well under a
//! second in release mode, a few seconds in debug; CI may run it:
//!
//! ```text
//! cargo run -p kvtier-bench --bin bench-smoke
//! ```
//!
//! It prints one line per check and closes with `N passed, 0 failed`.

use kvtier_bench::{
    AllocRegister, ChurnWorkload, ManagerFactory, MatchPrefix, Sizes, churn_run, kvtier_backends,
};

fn main() {
    let sizes = Sizes::QUICK;
    let w = ChurnWorkload::standard(4_000);
    let mut passed = 0;
    for f in kvtier_backends() {
        let label = f.label();
        for n in [8, 32, 128] {
            let ns = AllocRegister::new(&f, n, sizes).run();
            println!("{label:>18}  (a) alloc+register N={n:<3}  {ns:>8.1} ns/block  ok");
            passed += 1;
        }
        for (active, id) in [(true, "(b) match active  "), (false, "(c) match inactive")] {
            let ns = MatchPrefix::new(&f, 32, active, sizes).run();
            println!("{label:>18}  {id} N=32   {ns:>8.1} ns/block  ok");
            passed += 1;
        }
        for threads in [1, 2] {
            let r = churn_run(&f, &w, threads);
            assert_eq!(r.alloc_failures, 0, "{label}: churn allocation failures");
            assert!(
                r.hit_rate > 0.3,
                "{label}: churn hit rate {:.3}",
                r.hit_rate
            );
            println!(
                "{label:>18}  (d) churn {threads} thread(s)     {:>8.0} req/s, hit {:.1}%  ok",
                r.req_per_s,
                r.hit_rate * 100.0
            );
            passed += 1;
        }
    }
    println!("{passed} passed, 0 failed");
}
