//! kvtier-replay: hit rates of eviction policies on real and synthetic prefix-cache traces.
//!
//! The pipeline, one module per step:
//!
//! ```text
//! Mooncake JSONL ──► Trace ──► Chains ──┬─► ManagerReplay (real BlockManager, one policy) ─┐
//! SyntheticConfig ──┘    (ids)  (keys)  ├─► Belady (offline optimum)                      ├─► ReplayRow
//!                                       └─► infinite (every block kept)                   ┘
//! ```
//!
//! - [`Trace`] parses the Mooncake FAST'25 format (`hash_ids` per line) from memory or any
//!   `BufRead`, strictly or leniently ([`ParseMode`]); a bad line is reported with its 1-based
//!   number ([`ParseError`]).
//! - [`Chains`] turns ids into chained [`SequenceHash`](kvtier_core::SequenceHash) keys: an id
//!   means the same block only under the same prefix.
//! - [`ManagerReplay`] drives a real [`BlockManager`](kvtier_core::BlockManager) (its default
//!   shard count unless [`ManagerReplayBuilder::with_shards`] says otherwise, `Reject`
//!   duplicates) request by request: match, allocate and register the missing tail, release
//!   ([`ReleaseOrder`], tail first by default). Rows name the shard count.
//! - [`Belady`] and [`infinite`] are the bounds, under the manager's own constraints.
//! - [`policies`] is the registry of built-in eviction policies by name.
//! - [`SyntheticConfig`] generates multi-turn chat traffic with a seed.
//! - [`TieredReplay`] replays through G2 (the real manager) above a G3 model under a write
//!   policy (`kvtier-storage`'s offload gate): combined hit rate and bytes written to G3.
//!
//! # The metric
//! Per request, hits = the leading run of its blocks found cached; hit rate = total hits /
//! total blocks requested. Requests per second cover the replay loop only.
//!
//! # Examples
//!
//! ```
//! use kvtier_replay::{Belady, Chains, ManagerReplay, ReleaseOrder, SyntheticConfig, infinite, policies};
//!
//! let trace = SyntheticConfig { requests: 2_000, ..SyntheticConfig::default() }.generate();
//! let chains = Chains::from_trace(&trace);
//! let belady = Belady::new(&chains);
//! let bound = infinite(&chains);
//! for capacity in [200, 1_000] {
//!     let best = belady.run(capacity);
//!     for policy in policies() {
//!         let row = ManagerReplay::new(&policy, capacity, ReleaseOrder::TailFirst)
//!             .unwrap()
//!             .run(&chains);
//!         assert!(row.hit_rate <= best.hit_rate + 1e-12);
//!         assert!(best.hit_rate <= bound.hit_rate + 1e-12);
//!     }
//! }
//! ```

mod chain;
mod offline;
mod policies;
mod replay;
mod row;
mod synthetic;
mod tiered;
mod trace;

pub use chain::{Chains, mix_child, mix_root};
pub use offline::{Belady, infinite};
pub use policies::{NamedPolicy, OFFLINE_POLICIES, policies, policy};
pub use replay::{
    ManagerReplay, ManagerReplayBuilder, REPLAY_BLOCK_SIZE, ReleaseOrder, ReplayError, Served,
};
pub use row::{PROGRESS_EVERY, ReplayRow};
pub use synthetic::SyntheticConfig;
pub use tiered::{
    DEFAULT_MODEL, MAX_TRACKED_HITS, TieredError, TieredReplay, TieredRow, default_block_bytes,
};
pub use trace::{
    MAX_KEPT_ERRORS, ParseError, ParseMode, Parsed, ReadLimits, Request, RequestMeta, Trace,
    TraceError,
};
