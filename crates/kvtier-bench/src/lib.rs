//! kvtier-bench: workloads and adapters shared by kvtier's benchmarks.
//!
//! - [`ChurnWorkload`], [`chain`], [`Zipf`], [`Rng`]: deterministic workload generation,
//!   identical to the kvbm-logical anchor harness's so figures compare with its README.
//! - [`BlockManagerOps`] / [`ManagerFactory`]: the seam a system under test plugs into;
//!   [`KvtierFactory`] (every backend: [`kvtier_backends`]) and, with the `kvbm` feature,
//!   `KvbmFactory` implement it.
//! - [`AllocRegister`], [`MatchPrefix`], [`churn_run`]: the workloads, one repetition per call,
//!   so drivers can interleave systems rep by rep.
//! - [`Stat`]: median / min / max of repetitions.
//! - [`simulate`]: a fleet of managers behind the router on a trace, KV-aware vs random
//!   routing ([`FleetConfig`], [`Routing`]); used by `src/bin/route_sim.rs` and
//!   `tests/routing.rs`.
//!
//! Users: `benches/block_manager.rs` (criterion, kvtier only), `src/bin/bench_smoke.rs` (every
//! workload tiny, leak checks; CI-friendly) and `src/bin/vs_kvbm.rs` (kvtier vs kvbm-logical in
//! one process; `--features kvbm`).
//!
//! # Examples
//!
//! ```
//! use kvtier_bench::{ChurnWorkload, ManagerFactory, churn_run, kvtier_backends};
//!
//! let w = ChurnWorkload::standard(500);
//! for f in kvtier_backends() {
//!     let r = churn_run(&f, &w, 1); // asserts that no block leaked
//!     assert!(r.hit_rate > 0.0, "{}", f.label());
//! }
//! ```

#[cfg(feature = "kvbm")]
mod kvbm;
mod kvtier;
mod ops;
mod routing;
mod stat;
mod suites;
mod workload;

#[cfg(feature = "kvbm")]
pub use kvbm::{KvbmBackend, KvbmFactory, KvbmG1, KvbmOps};
pub use kvtier::{KvtierFactory, KvtierOps, PolicyMaker, Release, kvtier_backends, kvtier_keys};
pub use ops::{BlockManagerOps, ManagerFactory};
pub use routing::{FleetConfig, FleetResult, IN_FLIGHT, Routing, simulate};
pub use stat::Stat;
pub use suites::{
    AllocRegister, BLOCK_SIZE, CAPACITY, ChurnRun, MatchPrefix, Sizes, assert_no_leak, churn_run,
    serve_request,
};
pub use workload::{CHURN_SEED, ChurnWorkload, Rng, TAG_CHURN, TAG_MICRO, Zipf, chain, mix64};
