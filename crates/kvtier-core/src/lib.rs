//! kvtier-core: the logical KV-block layer of kvtier.
//!
//! This crate owns *which* KV blocks exist and *which to keep*; it owns no bytes, sockets or
//! threads (it is synchronous, `parking_lot` only). Block slots are ids; the storage tiers that
//! hold the bytes live in other crates.
//!
//! # Map
//!
//! | area | types | what it does |
//! |---|---|---|
//! | hashing | [`BlockHasher`], [`TokenSequence`], [`SequenceHash`], [`ExtraKeys`], [`HashScheme`] | tokens -> blocks -> block hash -> chained sequence hash (position and run tag inside) |
//! | blocks | [`MutableBlock`] -> [`CompleteBlock`] -> [`ImmutableBlock`] <-> [`WeakBlock`], [`PinnedBlock`] | type-state RAII guards; failed transitions hand the block back in [`BlockError`] |
//! | manager | [`BlockManager`], [`BlockManagerBuilder`], [`DuplicationPolicy`] | per-tier pools (reset, active, inactive), sharded by run tag, `Send + Sync` |
//! | eviction | [`EvictionPolicy`], [`PolicyFactory`], [`FifoFactory`], [`LruFactory`], [`MultiLruFactory`], [`LineageFactory`], [`FreqLeaseFactory`] | pluggable order of the inactive pool |
//! | frequency | [`FrequencySketch`], [`FrequencyTracker`] | TinyLFU count-min sketch (4-bit counters, aging) |
//! | registry | [`Registry`] | cross-tier index: presence per tier, typed attachments, touch callbacks |
//! | requests | [`RequestSequence`] | drives one request: match, allocate, register as blocks fill, release, reacquire |
//! | metrics | [`MetricsSnapshot`], [`BlockManager::register_metrics`] | Prometheus counters and gauges consistent with the pools |
//! | tiers | [`Tier`], [`G1`], [`G2`], [`G3`], [`G4`], [`Medium`] | the type parameter that keeps tiers apart |
//!
//! # Example
//!
//! Hash a prompt, fill blocks for it, register them, and find them again from a second request
//! that shares the prefix.
//!
//! ```
//! use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme};
//!
//! let manager = BlockManager::<G1>::builder()
//!     .with_block_count(64)
//!     .with_block_size(4)
//!     .build()?;
//! let hasher = BlockHasher::new(4, HashScheme::default(), ExtraKeys::new().with_model("m"))?;
//!
//! // First request: 10 tokens = 2 full blocks (the partial third block is never registered).
//! let prompt: Vec<u32> = (0..10).collect();
//! let hashes = hasher.sequence_hashes(&prompt);
//! assert_eq!(hashes.len(), 2);
//! let blocks = manager.allocate_blocks(hashes.len())?;
//! let staged = blocks
//!     .into_iter()
//!     .zip(&hashes)
//!     .map(|(b, &h)| b.stage(h, manager.block_size()).map_err(|e| e.to_string()))
//!     .collect::<Result<Vec<_>, _>>()?;
//! let held = manager.register_blocks(staged).map_err(|e| e.to_string())?;
//! // Release tail-first: the tail of a request is the least likely part to be reused.
//! manager.release_blocks(held.into_iter().rev());
//!
//! // Second request shares the first block only.
//! let other: Vec<u32> = (0..4).chain(100..104).collect();
//! let hit = manager.match_blocks(&hasher.sequence_hashes(&other));
//! assert_eq!(hit.len(), 1);
//! assert_eq!(manager.metrics().inactive_pool_size, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod block_id;
mod blocks;
mod eviction;
mod frequency;
mod hash;
mod manager;
mod metrics;
mod registry;
mod sequence;
mod sync;
mod tier;

pub use block_id::BlockId;
pub use blocks::{BlockError, CompleteBlock, ImmutableBlock, MutableBlock, PinnedBlock, WeakBlock};
pub use eviction::{
    AccessKind, EvictionConfigError, EvictionPolicy, FifoFactory, FreqLeaseFactory, HitSignals,
    LineageFactory, LruFactory, MultiLruFactory, PolicyContext, PolicyFactory, default_policy,
};
pub use frequency::{
    FrequencySketch, FrequencySketchBuilder, FrequencyTracker, MAX_SKETCH_CAPACITY, NoopTracker,
    SketchConfigError,
};
pub use hash::{
    BlockHasher, ExtraKeys, HashError, HashScheme, MmKey, SeqHashBuilder, SeqHashMap, SeqHasher,
    SequenceHash, TokenBlock, TokenSequence,
};
pub use manager::builder::{BlockManagerBuilder, BuildError, MAX_BLOCK_SIZE, MAX_SHARDS};
pub use manager::hooks::{BlockObserver, EvictedBlock, EvictionHook};
pub use manager::store::DuplicationPolicy;
pub use manager::{AllocError, BlockManager, ResetError};
pub use metrics::MetricsSnapshot;
pub use registry::{
    AttachMode, AttachmentError, MAX_REGISTRY_SHARDS, MAX_TIERS, PrefixMatch, Registry,
    RegistryBuildError, RegistryBuilder, TierError, TierId, TierSet, TouchCallback,
};
pub use sequence::{RequestSequence, SequenceError};
pub use tier::{G1, G2, G3, G4, Medium, Tier};
