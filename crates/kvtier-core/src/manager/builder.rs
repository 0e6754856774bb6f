//! [`BlockManagerBuilder`]: validated construction of a [`BlockManager`].

use std::marker::PhantomData;

use crate::FrequencyTracker;
use crate::Tier;
use crate::eviction::{PolicyFactory, default_policy};
use crate::manager::hooks::{BlockObserver, EvictionHook, Hooks};
use crate::manager::store::{DuplicationPolicy, Shared};
use crate::manager::{BlockManager, Inner};
use crate::sync::Arc;

/// Largest block size (tokens per block) a manager accepts (the hashing layer's limit).
pub const MAX_BLOCK_SIZE: usize = crate::BlockHasher::MAX_BLOCK_SIZE;

/// Largest shard count a manager accepts (shards are chosen by the 8-bit run tag).
pub const MAX_SHARDS: usize = 128;

/// Why a manager could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// `block_count` was not set or is zero.
    #[error("block_count must be at least 1")]
    ZeroBlocks,
    /// `block_count` does not fit a 32-bit block id.
    #[error("block_count {count} exceeds the maximum of {max}")]
    TooManyBlocks {
        /// Requested count.
        count: usize,
        /// Largest accepted count.
        max: usize,
    },
    /// `block_size` is zero or above [`MAX_BLOCK_SIZE`].
    #[error("block_size {size} is outside 1..={max}")]
    InvalidBlockSize {
        /// Requested size.
        size: usize,
        /// Largest accepted size.
        max: usize,
    },
    /// `shards` is zero or above [`MAX_SHARDS`].
    #[error("shards {shards} is outside 1..={max}")]
    InvalidShards {
        /// Requested shard count.
        shards: usize,
        /// Largest accepted count.
        max: usize,
    },
}

/// Builds a [`BlockManager`]. Every setter states its default; [`build`](Self::build) validates.
///
/// # Examples
///
/// ```
/// use kvtier_core::{BlockManager, BuildError, DuplicationPolicy, G1};
///
/// let manager = BlockManager::<G1>::builder()
///     .with_block_count(1024)
///     .with_block_size(32)
///     .with_duplication_policy(DuplicationPolicy::Reject)
///     .build()
///     .unwrap();
/// assert_eq!(manager.total_blocks(), 1024);
///
/// let err = BlockManager::<G1>::builder().with_block_size(0).with_block_count(1).build();
/// assert!(matches!(err, Err(BuildError::InvalidBlockSize { .. })));
/// ```
pub struct BlockManagerBuilder<T: Tier> {
    block_count: usize,
    block_size: usize,
    policy: Option<Arc<dyn PolicyFactory>>,
    duplication: DuplicationPolicy,
    shards: Option<usize>,
    evict_on_release: bool,
    hooks: Hooks,
    tracker: Option<Arc<dyn FrequencyTracker>>,
    _tier: PhantomData<fn() -> T>,
}

impl<T: Tier> Default for BlockManagerBuilder<T> {
    fn default() -> Self {
        Self {
            block_count: 0,
            block_size: 16,
            policy: None,
            duplication: DuplicationPolicy::Allow,
            shards: None,
            evict_on_release: false,
            hooks: Hooks::default(),
            tracker: None,
            _tier: PhantomData,
        }
    }
}

impl<T: Tier> BlockManagerBuilder<T> {
    /// Number of block slots. Required (no default); must be in `1..=u32::MAX`.
    pub fn with_block_count(mut self, n: usize) -> Self {
        self.block_count = n;
        self
    }

    /// Tokens per block. Default 16; must be in `1..=MAX_BLOCK_SIZE`.
    pub fn with_block_size(mut self, n: usize) -> Self {
        self.block_size = n;
        self
    }

    /// The inactive pool's eviction policy. Default: [`default_policy`](crate::default_policy).
    pub fn with_policy(mut self, policy: Arc<dyn PolicyFactory>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// What registering an already-registered hash does. Default [`DuplicationPolicy::Allow`].
    pub fn with_duplication_policy(mut self, p: DuplicationPolicy) -> Self {
        self.duplication = p;
        self
    }

    /// Number of independently locked shards of the index and free lists (rounded up to a power
    /// of two, at most the block count). Default: four per available core, at most 64. The
    /// eviction order is one for the whole manager whatever the shard count, so a
    /// single-threaded run evicts the same blocks (and gets the same hit rate) with any value.
    pub fn with_shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// Whether a primary's last release frees its slot instead of caching it, unless changed
    /// per block with `ImmutableBlock::set_evict_on_release`. Default `false` (cache it).
    pub fn with_evict_on_release(mut self, v: bool) -> Self {
        self.evict_on_release = v;
        self
    }

    /// Adds an observer of registrations and removals. Default: none.
    pub fn with_observer(mut self, o: Arc<dyn BlockObserver>) -> Self {
        self.hooks.push(o);
        self
    }

    /// The hook called with each eviction's victims before their slots are reused (see
    /// [`EvictionHook`]; a second call replaces the first). Default: none (one branch per
    /// eviction).
    pub fn with_eviction_hook(mut self, h: Arc<dyn EvictionHook>) -> Self {
        self.hooks.set_eviction(h);
        self
    }

    /// A frequency tracker (for example a shared [`FrequencySketch`](crate::FrequencySketch))
    /// that the manager touches, outside its locks, for every block `match_blocks` returns, every
    /// touching `scan_matches` hit and every new registration (keyed by
    /// [`SequenceHash::mix64`](crate::SequenceHash::mix64)). Default: none (no cost).
    ///
    /// `multi_lru` counts the same accesses into its own tracker: give it a different one, or
    /// each access counts twice.
    pub fn with_frequency_tracker(mut self, tracker: Arc<dyn FrequencyTracker>) -> Self {
        self.tracker = Some(tracker);
        self
    }

    /// Validates the configuration and builds the manager.
    ///
    /// Metrics are exported with [`BlockManager::register_metrics`] once built.
    ///
    /// # Errors
    ///
    /// A [`BuildError`] naming the invalid setting.
    pub fn build(self) -> Result<BlockManager<T>, BuildError> {
        if self.block_count == 0 {
            return Err(BuildError::ZeroBlocks);
        }
        if self.block_count > u32::MAX as usize {
            return Err(BuildError::TooManyBlocks {
                count: self.block_count,
                max: u32::MAX as usize,
            });
        }
        if self.block_size == 0 || self.block_size > MAX_BLOCK_SIZE {
            return Err(BuildError::InvalidBlockSize {
                size: self.block_size,
                max: MAX_BLOCK_SIZE,
            });
        }
        if let Some(s) = self.shards
            && (s == 0 || s > MAX_SHARDS)
        {
            return Err(BuildError::InvalidShards {
                shards: s,
                max: MAX_SHARDS,
            });
        }
        let policy = self.policy.unwrap_or_else(default_policy);
        // One policy instance serves every shard, so a policy needing a global view
        // (`requires_single_shard`) gets it at any shard count.
        let shards = self.shards.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores * 4).min(64)
        });
        // Never more shards than blocks: every shard should be able to hold something.
        let shards = shards.min(self.block_count.next_power_of_two()).max(1);
        let (shared, slots) = Shared::build(
            self.block_count,
            shards,
            policy,
            self.duplication,
            self.evict_on_release,
            self.hooks,
            self.tracker,
        );
        Ok(BlockManager::from_inner(Inner::new(
            shared,
            slots,
            self.block_size,
        )))
    }
}
