//! The `lru` backend: evict the block least recently inserted *or hit*.
//!
//! A release ([`EvictionPolicy::insert`]) puts the block at the most-recently-used end; an
//! [`AccessKind::Hit`] signal for the hash of a block that is still in the pool moves it there
//! too. Registrations ([`AccessKind::Register`]) are not uses of an inactive block and are
//! ignored.
//!
//! # LRU and FIFO on manager traffic
//! The manager takes a hit block *out* of the inactive pool (it becomes active again) and
//! re-inserts it when its last reference drops, so on manager traffic a `Hit` never finds the
//! block in the pool and this order coincides with [`FifoFactory`]'s "least recently released".
//! `fifo` is the reference backend (no hash index at all); `lru` is the named classic and
//! can honour hits that do reach it when built with [`LruFactory::with_hit_promotion`]`(true)`,
//! which costs a hash index (hash -> block) kept in step with every insert and remove. That is
//! off by default: a manager never forwards a hit for a pooled block, so the index would be pure
//! cost (it measured as a third of churn time).
//!
//! One intrusive list over preallocated per-block links plus, when hit promotion is on, a hash
//! map reserved for every block up front: no allocation per operation.
//!
//! [`FifoFactory`]: crate::FifoFactory

use hashbrown::hash_map::Entry;

use super::list::IndexLists;
use super::{AccessKind, EvictionPolicy, HitSignals, PolicyContext, PolicyFactory};
use crate::{BlockId, SeqHashMap, SequenceHash};

/// Builds `lru` policies: evict the block least recently inserted or hit.
///
/// Name: `"lru"`. Shardable (each shard orders its own blocks).
///
/// # Examples
///
/// ```
/// use kvtier_core::{AccessKind, BlockId, LruFactory, PolicyContext, PolicyFactory, SequenceHash};
///
/// let ctx = PolicyContext { total_blocks: 4, shard: 0, shards: 1 };
/// let mut policy = LruFactory::new().with_hit_promotion(true).build(ctx);
/// policy.insert(BlockId::new(0), SequenceHash::root(10));
/// policy.insert(BlockId::new(1), SequenceHash::root(11));
/// policy.on_access(SequenceHash::root(10), AccessKind::Hit); // block 0 is used again
/// assert_eq!(policy.evict(), Some(BlockId::new(1)));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct LruFactory {
    hit_promotion: bool,
}

impl LruFactory {
    /// An LRU factory with hit promotion off (see the module docs).
    pub const fn new() -> Self {
        Self {
            hit_promotion: false,
        }
    }

    /// Whether an [`AccessKind::Hit`] for a block still in the pool moves it to the
    /// most-recently-used end. Off, the policy keeps no hash index and orders by release alone
    /// (then it behaves exactly like `fifo`). Default: `false`.
    pub const fn with_hit_promotion(mut self, on: bool) -> Self {
        self.hit_promotion = on;
        self
    }
}

impl Default for LruFactory {
    fn default() -> Self {
        Self::new()
    }
}

impl PolicyFactory for LruFactory {
    fn name(&self) -> &str {
        "lru"
    }

    fn build(&self, ctx: PolicyContext) -> Box<dyn EvictionPolicy> {
        Box::new(LruPolicy::new(ctx.total_blocks, self.hit_promotion))
    }

    /// Without hit promotion LRU ignores hits; with it, only a hit on a block in the pool
    /// counts, and an active block is never there.
    fn hit_signals(&self) -> HitSignals {
        if self.hit_promotion {
            HitSignals::Inactive
        } else {
            HitSignals::None
        }
    }
}

/// Hash index used for hit promotion: which block holds a hash, and each block's hash.
///
/// Keyed by [`SequenceHash::mix64`]; a hit is confirmed against the block's full hash, so a
/// 64-bit digest collision can at worst hide a block from promotion, never promote a wrong one.
#[derive(Debug)]
struct HitIndex {
    by_hash: SeqHashMap<u64, u32>,
    hash_of: Box<[SequenceHash]>,
}

/// Least recently inserted-or-hit. See the module docs.
#[derive(Debug)]
pub(crate) struct LruPolicy {
    /// Front = least recently used.
    order: IndexLists<1>,
    hits: Option<HitIndex>,
}

impl LruPolicy {
    /// An empty policy for block ids `0..total_blocks`.
    pub(crate) fn new(total_blocks: usize, hit_promotion: bool) -> Self {
        let order = IndexLists::new(total_blocks);
        let hits = hit_promotion.then(|| HitIndex {
            // Twice the live entries, so tombstones from churn are cleared by in-place rehashing
            // rather than by growing the table.
            by_hash: SeqHashMap::with_capacity_and_hasher(
                total_blocks.saturating_mul(2),
                Default::default(),
            ),
            hash_of: vec![SequenceHash::default(); total_blocks].into_boxed_slice(),
        });
        Self { order, hits }
    }

    /// Drops `block`'s hash from the index if the index still points at it (a later block with
    /// the same hash may have taken the entry over).
    #[inline]
    fn forget_hash(&mut self, block: u32) {
        if let Some(h) = &mut self.hits {
            let key = h.hash_of[block as usize].mix64();
            if let Entry::Occupied(e) = h.by_hash.entry(key) {
                if *e.get() == block {
                    e.remove();
                }
            }
        }
    }
}

impl EvictionPolicy for LruPolicy {
    /// Puts the block at the most-recently-used end. Re-inserting a present block moves it; an
    /// id outside `0..total_blocks` (a contract violation) is ignored.
    #[inline]
    fn insert(&mut self, block: BlockId, hash: SequenceHash) {
        let id = block.raw();
        if !self.order.in_range(id) {
            return;
        }
        if self.order.contains(id) {
            self.forget_hash(id);
        }
        self.order.push_back(0, id);
        if let Some(h) = &mut self.hits {
            h.hash_of[id as usize] = hash;
            h.by_hash.insert(hash.mix64(), id);
        }
    }

    #[inline]
    fn remove(&mut self, block: BlockId) -> bool {
        let id = block.raw();
        if self.order.unlink(id).is_none() {
            return false;
        }
        self.forget_hash(id);
        true
    }

    #[inline]
    fn evict(&mut self) -> Option<BlockId> {
        let id = self.order.pop_front(0)?;
        self.forget_hash(id);
        Some(BlockId::new(id))
    }

    #[inline]
    fn len(&self) -> usize {
        self.order.len(0)
    }

    /// A `Hit` on a hash whose block is in the pool makes that block most recently used.
    #[inline]
    fn on_access(&mut self, hash: SequenceHash, kind: AccessKind) {
        if kind != AccessKind::Hit {
            return;
        }
        if let Some(h) = &self.hits {
            match h.by_hash.get(&hash.mix64()) {
                Some(&id) if h.hash_of[id as usize] == hash => self.order.push_back(0, id),
                _ => {}
            }
        }
    }
}
