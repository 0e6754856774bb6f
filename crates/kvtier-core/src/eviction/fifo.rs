//! The `fifo` backend: evict the block that entered the inactive pool earliest.
//!
//! This is the reference backend: the simplest order that is still useful, kept so other
//! backends can be compared against it. It ignores [`EvictionPolicy::on_access`]. A block that is
//! removed (matched, resurrected) and later released again re-enters at the back, so on manager
//! traffic the order is "least recently released" — the same order [`LruFactory`] produces,
//! because a hit always takes the block out of the inactive pool first.
//!
//! One intrusive list over preallocated per-block links ([`IndexLists`]); every operation is
//! O(1) and allocation-free. It keeps no hash map (kvbm's reference backend keeps two ordered
//! maps and churns B-tree nodes on every release).
//!
//! [`LruFactory`]: crate::LruFactory

use super::list::IndexLists;
use super::{EvictionPolicy, HitSignals, PolicyContext, PolicyFactory};
use crate::{BlockId, SequenceHash};

/// Builds `fifo` policies: evict in the order blocks entered the inactive pool.
///
/// Name: `"fifo"`. Shardable (each shard orders its own blocks).
///
/// # Examples
///
/// ```
/// use kvtier_core::{BlockId, FifoFactory, PolicyContext, PolicyFactory, SequenceHash};
///
/// let ctx = PolicyContext { total_blocks: 4, shard: 0, shards: 1 };
/// let mut policy = FifoFactory::new().build(ctx);
/// policy.insert(BlockId::new(2), SequenceHash::root(20));
/// policy.insert(BlockId::new(0), SequenceHash::root(10));
/// assert_eq!(policy.evict(), Some(BlockId::new(2)));
/// assert_eq!(policy.evict(), Some(BlockId::new(0)));
/// assert_eq!(policy.evict(), None);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct FifoFactory;

impl FifoFactory {
    /// A FIFO factory (it has no settings).
    pub const fn new() -> Self {
        Self
    }
}

impl PolicyFactory for FifoFactory {
    fn name(&self) -> &str {
        "fifo"
    }

    fn build(&self, ctx: PolicyContext) -> Box<dyn EvictionPolicy> {
        Box::new(FifoPolicy::new(ctx.total_blocks))
    }

    /// FIFO ignores hits.
    fn hit_signals(&self) -> HitSignals {
        HitSignals::None
    }
}

/// First in, first out over the inactive pool. See the module docs.
#[derive(Debug)]
pub(crate) struct FifoPolicy {
    order: IndexLists<1>,
}

impl FifoPolicy {
    /// An empty policy for block ids `0..total_blocks`.
    pub(crate) fn new(total_blocks: usize) -> Self {
        Self {
            order: IndexLists::new(total_blocks),
        }
    }
}

impl EvictionPolicy for FifoPolicy {
    /// Appends the block at the back. Re-inserting a present block moves it to the back; an id
    /// outside `0..total_blocks` (a contract violation) is ignored.
    #[inline]
    fn insert(&mut self, block: BlockId, _hash: SequenceHash) {
        self.order.push_back(0, block.raw());
    }

    #[inline]
    fn remove(&mut self, block: BlockId) -> bool {
        self.order.unlink(block.raw()).is_some()
    }

    #[inline]
    fn evict(&mut self) -> Option<BlockId> {
        self.order.pop_front(0).map(BlockId::new)
    }

    #[inline]
    fn len(&self) -> usize {
        self.order.len(0)
    }
}
