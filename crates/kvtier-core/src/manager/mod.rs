//! [`BlockManager`]: one tier's logical block manager.
//!
//! Owns `block_count` slots and moves them between the reset pool, the guards, the active set
//! and the inactive (evictable) pool; see `store.rs` for the state machine and lock order. The
//! manager is a cheap `Clone` handle (`Send + Sync`); guards keep the state alive on their own,
//! so dropping the manager while blocks are out is safe.

pub(crate) mod builder;
pub(crate) mod hooks;
mod index;
pub(crate) mod slot;
pub(crate) mod store;

use std::marker::PhantomData;

use crate::blocks::{BlockError, CompleteBlock, ImmutableBlock, MutableBlock};
use crate::manager::builder::BlockManagerBuilder;
use crate::manager::slot::Slot;
use crate::manager::store::{DuplicationPolicy, PanicScope, Shared};
use crate::metrics::{ManagerCollector, MetricsSnapshot};
use crate::sync::Arc;
use crate::{SequenceHash, Tier};

/// Why an allocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllocError {
    /// Fewer than `requested` slots are free or evictable (nothing was taken).
    #[error("cannot allocate {requested} blocks: {available} free or evictable")]
    Exhausted {
        /// Blocks asked for.
        requested: usize,
        /// Free plus inactive blocks at the time of the call.
        available: usize,
    },
}

/// Why `reset_inactive_pool` could not return every slot to the reset pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResetError {
    /// Some slots are still held by guards or active blocks.
    #[error("{in_use} blocks are still in use")]
    InUse {
        /// Slots not in the reset pool after draining the inactive pool.
        in_use: usize,
    },
}

pub(crate) struct Inner {
    shared: Arc<Shared>,
    slots: Box<[Arc<Slot>]>,
    block_size: usize,
}

impl Inner {
    pub(crate) fn new(shared: Arc<Shared>, slots: Box<[Arc<Slot>]>, block_size: usize) -> Self {
        Self {
            shared,
            slots,
            block_size,
        }
    }
}

/// The logical block manager of one tier `T`.
///
/// # Examples
///
/// The main flow: allocate, stage with a sequence hash, register, match, release.
///
/// ```
/// use kvtier_core::{BlockManager, G1, SequenceHash};
///
/// let manager = BlockManager::<G1>::builder().with_block_count(8).build().unwrap();
/// let root = SequenceHash::root(1);
/// let child = SequenceHash::child_of(root, 2);
///
/// let blocks = manager.allocate_blocks(2).unwrap();
/// let staged: Vec<_> = blocks
///     .into_iter()
///     .zip([root, child])
///     .map(|(b, h)| b.stage(h, manager.block_size()).unwrap())
///     .collect();
/// let held = manager.register_blocks(staged).unwrap();
/// drop(held); // both blocks become inactive: cached, evictable
///
/// let hit = manager.match_blocks(&[root, child, SequenceHash::child_of(child, 3)]);
/// assert_eq!(hit.len(), 2);
/// ```
pub struct BlockManager<T: Tier> {
    inner: Arc<Inner>,
    _tier: PhantomData<fn() -> T>,
}

impl<T: Tier> Clone for BlockManager<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            _tier: PhantomData,
        }
    }
}

impl<T: Tier> std::fmt::Debug for BlockManager<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockManager")
            .field("tier", &T::NAME)
            .field("id", &self.id())
            .field("total_blocks", &self.total_blocks())
            .field("block_size", &self.inner.block_size)
            .field("policy", &self.inner.shared.policy_name)
            .field("shards", &self.inner.shared.shard_count())
            .finish()
    }
}

impl<T: Tier> BlockManager<T> {
    /// A builder with every default (only `block_count` is required).
    pub fn builder() -> BlockManagerBuilder<T> {
        BlockManagerBuilder::default()
    }

    pub(crate) fn from_inner(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
            _tier: PhantomData,
        }
    }

    /// Process-unique id of this manager (never 0).
    pub fn id(&self) -> u64 {
        self.inner.shared.manager_id
    }

    /// Slots in the manager (constant).
    pub fn total_blocks(&self) -> usize {
        self.inner.shared.total_blocks
    }

    /// Free plus inactive blocks: what an allocation can obtain right now.
    pub fn available_blocks(&self) -> usize {
        self.inner.shared.available()
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.inner.block_size
    }

    /// The configured duplication policy.
    pub fn duplication_policy(&self) -> DuplicationPolicy {
        self.inner.shared.duplication
    }

    /// Name of the eviction policy.
    pub fn policy_name(&self) -> &str {
        &self.inner.shared.policy_name
    }

    /// Number of independently locked shards.
    pub fn shard_count(&self) -> usize {
        self.inner.shared.shard_count()
    }

    /// Allocates `n` writable blocks, all or nothing: reset pool first, then eviction of
    /// inactive blocks chosen by the policy.
    ///
    /// # Errors
    ///
    /// [`AllocError::Exhausted`] when fewer than `n` blocks are free or evictable; nothing is
    /// taken and nothing is evicted.
    pub fn allocate_blocks(&self, n: usize) -> Result<Vec<MutableBlock<T>>, AllocError> {
        self.allocate_inner(n, None)
    }

    /// Like [`allocate_blocks`](Self::allocate_blocks), also returning the hashes evicted to
    /// make room (so a caller can offload them or publish removals).
    ///
    /// # Errors
    ///
    /// As [`allocate_blocks`](Self::allocate_blocks).
    pub fn allocate_blocks_with_evictions(
        &self,
        n: usize,
    ) -> Result<(Vec<MutableBlock<T>>, Vec<SequenceHash>), AllocError> {
        let mut evicted = Vec::new();
        let blocks = self.allocate_inner(n, Some(&mut evicted))?;
        Ok((blocks, evicted))
    }

    fn allocate_inner(
        &self,
        n: usize,
        evicted: Option<&mut Vec<SequenceHash>>,
    ) -> Result<Vec<MutableBlock<T>>, AllocError> {
        let inner = &*self.inner;
        // A policy panic is resumed when the scope ends: by then the slots are held by guards,
        // which give them back as the panic unwinds.
        let scope = PanicScope::enter();
        let result = match inner.shared.allocate(&inner.slots, n, evicted) {
            Some(ids) => Ok(ids
                .into_iter()
                .map(|id| MutableBlock::new(inner.slots[id.index()].clone(), inner.block_size))
                .collect()),
            None => Err(AllocError::Exhausted {
                requested: n,
                available: inner.shared.available(),
            }),
        };
        scope.finish();
        result
    }

    fn owns(&self, block: &CompleteBlock<T>) -> bool {
        Arc::ptr_eq(&block.slot().shared, &self.inner.shared)
    }

    /// Registers one staged block. If the hash is already registered the duplication policy
    /// decides: `Allow` keeps this block as a duplicate, `Reject` frees it and returns the
    /// existing block (a different [`BlockId`](crate::BlockId)).
    ///
    /// # Errors
    ///
    /// [`BlockError::ForeignBlock`] (with the block) when it belongs to another manager.
    pub fn register_block(
        &self,
        block: CompleteBlock<T>,
    ) -> Result<ImmutableBlock<T>, BlockError<CompleteBlock<T>>> {
        if !self.owns(&block) {
            return Err(BlockError::ForeignBlock { block });
        }
        Ok(self.register_owned(block))
    }

    fn register_owned(&self, block: CompleteBlock<T>) -> ImmutableBlock<T> {
        let mut out = Vec::with_capacity(1);
        self.inner.shared.register_batch(
            &self.inner.slots,
            std::iter::once(block.take_slot()),
            &mut out,
        );
        ImmutableBlock::from_ref(out.pop().expect("one registration per staged block"))
    }

    /// Registers a batch; the output is aligned with the input.
    ///
    /// # Errors
    ///
    /// [`BlockError::ForeignBlock`] with the whole batch, unchanged, when any block belongs to
    /// another manager (nothing is registered).
    pub fn register_blocks(
        &self,
        blocks: Vec<CompleteBlock<T>>,
    ) -> Result<Vec<ImmutableBlock<T>>, BlockError<Vec<CompleteBlock<T>>>> {
        if !blocks.iter().all(|b| self.owns(b)) {
            return Err(BlockError::ForeignBlock { block: blocks });
        }
        let mut out = Vec::with_capacity(blocks.len());
        self.inner.shared.register_batch(
            &self.inner.slots,
            blocks.into_iter().map(CompleteBlock::take_slot),
            &mut out,
        );
        Ok(out.into_iter().map(ImmutableBlock::from_ref).collect())
    }

    /// The longest registered prefix of `hashes` (active or inactive), stopping at the first
    /// miss. Inactive hits are resurrected; every returned block counts as an access for the
    /// policy.
    pub fn match_blocks(&self, hashes: &[SequenceHash]) -> Vec<ImmutableBlock<T>> {
        let inner = &*self.inner;
        let scope = PanicScope::enter();
        let mut out = Vec::with_capacity(hashes.len());
        let found = inner
            .shared
            .lookup_batch(&inner.slots, hashes, true, true, |r| {
                out.extend(r.map(ImmutableBlock::from_ref))
            });
        inner.shared.count_match(hashes.len(), found, false);
        inner
            .shared
            .touch_tracker(out.iter().map(ImmutableBlock::sequence_hash));
        scope.finish();
        out
    }

    /// Every hash of `hashes` that is registered, without stopping at gaps; aligned with the
    /// input (`None` where absent). `touch` says whether hits count as accesses for the policy.
    pub fn scan_matches(
        &self,
        hashes: &[SequenceHash],
        touch: bool,
    ) -> Vec<Option<ImmutableBlock<T>>> {
        let inner = &*self.inner;
        let scope = PanicScope::enter();
        let mut out = Vec::with_capacity(hashes.len());
        let found = inner
            .shared
            .lookup_batch(&inner.slots, hashes, touch, false, |r| {
                out.push(r.map(ImmutableBlock::from_ref))
            });
        inner.shared.count_match(hashes.len(), found, true);
        if touch {
            inner
                .shared
                .touch_tracker(out.iter().flatten().map(ImmutableBlock::sequence_hash));
        }
        scope.finish();
        out
    }

    /// Whether `hash` is registered. Does not touch recency, frequency or metrics.
    pub fn contains(&self, hash: SequenceHash) -> bool {
        self.inner.shared.contains(&self.inner.slots, hash)
    }

    /// Length of the registered prefix of `hashes`, without taking references or touching
    /// recency, frequency or metrics (a routing/admission probe).
    pub fn prefix_len(&self, hashes: &[SequenceHash]) -> usize {
        self.inner.shared.prefix_len(&self.inner.slots, hashes)
    }

    /// Releases many blocks in the given order (pass a request's blocks tail-first so its tail
    /// becomes evictable first). Equivalent to dropping them one by one in that order, but
    /// consecutive blocks of one shard share one lock acquisition.
    pub fn release_blocks(&self, blocks: impl IntoIterator<Item = ImmutableBlock<T>>) {
        self.inner
            .shared
            .release_batch(blocks.into_iter().map(ImmutableBlock::into_ref));
    }

    /// Evicts every inactive block to the reset pool; returns the evicted hashes.
    ///
    /// # Errors
    ///
    /// [`ResetError::InUse`] when blocks are still held afterwards (the inactive pool is drained
    /// anyway).
    pub fn reset_inactive_pool(&self) -> Result<Vec<SequenceHash>, ResetError> {
        let removed = self.inner.shared.drain_inactive(&self.inner.slots);
        let m = self.metrics();
        if m.reset_pool_size as usize != self.total_blocks() {
            return Err(ResetError::InUse {
                in_use: self.total_blocks() - m.reset_pool_size as usize,
            });
        }
        Ok(removed)
    }

    /// A snapshot of counters and pool sizes.
    pub fn metrics(&self) -> MetricsSnapshot {
        MetricsSnapshot::collect(&self.inner.shared)
    }

    /// Registers this manager's metrics with a Prometheus registry, labelled
    /// `pool = T::NAME` plus `extra_labels`.
    pub fn register_metrics(
        &self,
        registry: &mut prometheus_client::registry::Registry,
        extra_labels: &[(&str, &str)],
    ) {
        let mut labels = vec![("pool".to_string(), T::NAME.to_string())];
        labels.extend(
            extra_labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        registry.register_collector(Box::new(ManagerCollector {
            shared: self.inner.shared.clone(),
            labels,
        }));
    }
}
