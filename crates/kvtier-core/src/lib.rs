//! kvtier-core: the logical KV-block layer of kvtier.
//!
//! (Crate map and the main-flow example are filled in as the manager lands.)

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
    AccessKind, EvictionConfigError, EvictionPolicy, FifoFactory, LineageFactory, LruFactory,
    MultiLruFactory, PolicyContext, PolicyFactory, default_policy,
};
pub use frequency::{
    FrequencySketch, FrequencySketchBuilder, FrequencyTracker, MAX_SKETCH_CAPACITY, NoopTracker,
    SketchConfigError,
};
pub use manager::builder::{BlockManagerBuilder, BuildError, MAX_BLOCK_SIZE, MAX_SHARDS};
pub use manager::hooks::BlockObserver;
pub use manager::store::DuplicationPolicy;
pub use manager::{AllocError, BlockManager, ResetError};
pub use metrics::MetricsSnapshot;
pub use registry::{
    AttachMode, AttachmentError, MAX_REGISTRY_SHARDS, MAX_TIERS, PrefixMatch, Registry,
    RegistryBuildError, RegistryBuilder, TierError, TierId, TierSet, TouchCallback,
};
pub use sequence::{RequestSequence, SequenceError};
pub use tier::{G1, G2, G3, G4, Medium, Tier};
pub use hash::{
    BlockHasher, ExtraKeys, HashError, HashScheme, MmKey, SeqHashBuilder, SeqHashMap, SeqHasher,
    SequenceHash, TokenBlock, TokenSequence,
};
