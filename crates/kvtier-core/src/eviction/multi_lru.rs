//! The `multi_lru` backend: four LRU levels (cold, warm, hot, very hot) chosen by frequency.
//!
//! When a block enters the inactive pool, its hash's recent access count `f` (from a
//! [`FrequencyTracker`] — a shared one, or a TinyLFU [`FrequencySketch`] per shard — keyed by
//! [`SequenceHash::mix64`]) picks its level with thresholds `[t1, t2, t3]`:
//!
//! ```text
//!   f < t1 -> cold    t1 <= f < t2 -> warm    t2 <= f < t3 -> hot    f >= t3 -> very hot
//! ```
//!
//! A victim is the least recently inserted block of the coldest non-empty level. The level is
//! chosen afresh on every insert, so a block that was hit (taken out of the pool) and released
//! again is re-tiered with its new frequency. Every [`EvictionPolicy::on_access`] signal (hits
//! and registrations) is counted into the tracker, so the policy works on its own when the
//! manager forwards accesses; do not also touch the same tracker for those accesses elsewhere,
//! or they count twice.
//!
//! Thresholds are validated when the factory is built (an error value, never a panic).
//! Four intrusive lists share one preallocated link array: every operation is O(1) and
//! allocation-free apart from the tracker's own (lock-free) work.

use crate::sync::Arc;

use super::freqlease::saturating_increments;
use super::list::IndexLists;
use super::{AccessKind, EvictionPolicy, PolicyContext, PolicyFactory};
use crate::frequency::{FrequencySketch, FrequencyTracker};
use crate::{BlockId, SequenceHash};

/// Number of levels (cold, warm, hot, very hot).
const LEVELS: usize = 4;

/// Why a [`MultiLruFactory`] configuration was rejected.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use kvtier_core::{EvictionConfigError, MultiLruFactory, NoopTracker};
///
/// let err = MultiLruFactory::new(Arc::new(NoopTracker), [8, 3, 15]).unwrap_err();
/// assert!(matches!(err, EvictionConfigError::InvalidThresholds { .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvictionConfigError {
    /// Level thresholds must satisfy `1 <= t1 < t2 < t3 <= max` (the tracker's largest count).
    #[error("invalid multi_lru thresholds {thresholds:?}: need 1 <= t1 < t2 < t3 <= {max}")]
    InvalidThresholds {
        /// The rejected thresholds.
        thresholds: [u32; 3],
        /// The tracker's largest count ([`FrequencyTracker::max_count`]).
        max: u32,
    },
}

/// Builds `multi_lru` policies: four LRU levels picked by access frequency.
///
/// Name: `"multi_lru"`. Shardable: every shard's instance shares the one tracker given to
/// [`new`](Self::new), or owns its share of the sketches of [`for_capacity`](Self::for_capacity).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use kvtier_core::{
///     AccessKind, BlockId, FrequencySketch, MultiLruFactory, PolicyContext, PolicyFactory,
///     SequenceHash,
/// };
///
/// let sketch = Arc::new(FrequencySketch::builder(1024).build()?);
/// let factory = MultiLruFactory::with_default_thresholds(sketch)?;
/// let mut policy = factory.build(PolicyContext { total_blocks: 8, shard: 0, shards: 1 });
///
/// let popular = SequenceHash::root(1);
/// for _ in 0..5 {
///     policy.on_access(popular, AccessKind::Hit);
/// }
/// policy.insert(BlockId::new(0), popular); // warm: 5 accesses
/// policy.insert(BlockId::new(1), SequenceHash::root(2)); // cold
/// assert_eq!(policy.evict(), Some(BlockId::new(1)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct MultiLruFactory {
    frequency: FrequencySource,
    thresholds: [u32; 3],
}

/// Where a factory's policies get frequencies from.
#[derive(Clone)]
enum FrequencySource {
    /// One tracker shared by every shard (and possibly by the caller).
    Shared(Arc<dyn FrequencyTracker>),
    /// A sketch of this many keys in total, split over the shards, each owned by its shard's
    /// policy (counted without atomic read-modify-writes).
    PerShard { keys: usize },
}

impl std::fmt::Debug for MultiLruFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiLruFactory")
            .field("thresholds", &self.thresholds)
            .finish_non_exhaustive()
    }
}

impl MultiLruFactory {
    /// The thresholds used by [`Self::with_default_thresholds`]: `[3, 8, 15]`.
    pub const DEFAULT_THRESHOLDS: [u32; 3] = [3, 8, 15];

    /// A factory whose policies read (and count accesses into) `tracker`, with level
    /// thresholds `[t1, t2, t3]` (see the module docs).
    ///
    /// # Errors
    /// [`EvictionConfigError::InvalidThresholds`] unless `1 <= t1 < t2 < t3 <=
    /// tracker.max_count()`.
    pub fn new(
        tracker: Arc<dyn FrequencyTracker>,
        thresholds: [u32; 3],
    ) -> Result<Self, EvictionConfigError> {
        let max = tracker.max_count();
        let [t1, t2, t3] = thresholds;
        if !(1 <= t1 && t1 < t2 && t2 < t3 && t3 <= max) {
            return Err(EvictionConfigError::InvalidThresholds { thresholds, max });
        }
        Ok(Self {
            frequency: FrequencySource::Shared(tracker),
            thresholds,
        })
    }

    /// [`Self::new`] with [`Self::DEFAULT_THRESHOLDS`].
    ///
    /// # Errors
    /// [`EvictionConfigError::InvalidThresholds`] if the tracker's counts stop below 15.
    pub fn with_default_thresholds(
        tracker: Arc<dyn FrequencyTracker>,
    ) -> Result<Self, EvictionConfigError> {
        Self::new(tracker, Self::DEFAULT_THRESHOLDS)
    }

    /// The recommended configuration for a manager of `block_count` blocks: default thresholds
    /// and [`FrequencySketch`](crate::FrequencySketch)es tracking 64 keys per block in total (at
    /// least 2^16, at most 2^21 — kvbm-logical's default size) with the default aging, one per
    /// shard, owned by that shard's policy so it counts without atomic read-modify-writes.
    ///
    /// A sketch sized to the cache alone ages so fast on traces whose reuse distances exceed the
    /// cache that every block looks cold and the policy degenerates to LRU.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{MultiLruFactory, PolicyFactory};
    ///
    /// let f = MultiLruFactory::for_capacity(5_000);
    /// assert_eq!(f.name(), "multi_lru");
    /// ```
    pub fn for_capacity(block_count: usize) -> Self {
        Self {
            frequency: FrequencySource::PerShard {
                keys: block_count.saturating_mul(64).clamp(1 << 16, 1 << 21),
            },
            // Within a 4-bit sketch's range (max 15).
            thresholds: Self::DEFAULT_THRESHOLDS,
        }
    }

    /// The level thresholds `[t1, t2, t3]`.
    pub fn thresholds(&self) -> [u32; 3] {
        self.thresholds
    }
}

impl PolicyFactory for MultiLruFactory {
    fn name(&self) -> &str {
        "multi_lru"
    }

    fn build(&self, ctx: PolicyContext) -> Box<dyn EvictionPolicy> {
        let frequency = match &self.frequency {
            FrequencySource::Shared(t) => Frequency::Shared(Arc::clone(t)),
            FrequencySource::PerShard { keys } => {
                let keys = (keys / ctx.shards.max(1)).clamp(1 << 10, crate::MAX_SKETCH_CAPACITY);
                Frequency::Owned(
                    FrequencySketch::builder(keys)
                        .build()
                        .expect("the key count is clamped into the sketch's bounds"),
                )
            }
        };
        Box::new(MultiLruPolicy {
            levels: IndexLists::new(ctx.total_blocks),
            frequency,
            thresholds: self.thresholds,
            len: 0,
        })
    }
}

/// Four LRU levels picked by frequency at insert. See the module docs.
pub(crate) struct MultiLruPolicy {
    /// List `k` is level `k` (0 = cold); front = least recently inserted.
    levels: IndexLists<LEVELS>,
    frequency: Frequency,
    thresholds: [u32; 3],
    len: usize,
}

/// A policy's frequency source (see [`FrequencySource`]).
enum Frequency {
    Shared(Arc<dyn FrequencyTracker>),
    Owned(FrequencySketch),
}

impl MultiLruPolicy {
    /// The level a block with `hash` enters at.
    #[inline]
    fn level_of(&self, hash: SequenceHash) -> usize {
        let key = hash.mix64();
        let f = match &self.frequency {
            Frequency::Shared(t) => t.count(key),
            Frequency::Owned(s) => u32::from(s.estimate(key)),
        };
        self.thresholds.iter().take_while(|&&t| f >= t).count()
    }
}

impl EvictionPolicy for MultiLruPolicy {
    /// Appends the block at the back of the level its current frequency selects. Re-inserting
    /// a present block moves it; an id outside `0..total_blocks` (a contract violation) is
    /// ignored.
    #[inline]
    fn insert(&mut self, block: BlockId, hash: SequenceHash) {
        let id = block.raw();
        if !self.levels.in_range(id) {
            return;
        }
        if self.levels.unlink(id).is_none() {
            self.len += 1;
        }
        let level = self.level_of(hash);
        self.levels.push_back(level, id);
    }

    #[inline]
    fn remove(&mut self, block: BlockId) -> bool {
        if self.levels.unlink(block.raw()).is_none() {
            return false;
        }
        self.len -= 1;
        true
    }

    #[inline]
    fn evict(&mut self) -> Option<BlockId> {
        let id = (0..LEVELS).find_map(|level| self.levels.pop_front(level))?;
        self.len -= 1;
        Some(BlockId::new(id))
    }

    #[inline]
    fn len(&self) -> usize {
        self.len
    }

    /// Counts the access into the tracker (hits and registrations alike).
    #[inline]
    fn on_access(&mut self, hash: SequenceHash, _kind: AccessKind) {
        match &mut self.frequency {
            Frequency::Shared(t) => t.touch(hash.mix64()),
            Frequency::Owned(s) => s.increment_mut(hash.mix64()),
        }
    }

    /// Exactly `count` accesses; an owned sketch stops counting once it saturates.
    fn on_hits(&mut self, hash: SequenceHash, count: u32) {
        match &mut self.frequency {
            Frequency::Shared(t) => (0..count).for_each(|_| t.touch(hash.mix64())),
            Frequency::Owned(s) => saturating_increments(s, hash.mix64(), count),
        }
    }
}
