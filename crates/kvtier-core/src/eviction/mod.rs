//! Eviction policies for the inactive pool (registered, unreferenced, evictable blocks).
//!
//! A manager keeps the *index* (sequence hash -> slot) and the slot states itself; a policy only
//! decides the *order* in which inactive blocks are given up. The contract is small so that users
//! can plug in their own policy through [`EvictionPolicy`] and [`PolicyFactory`]:
//!
//! ```text
//!   block released (last strong ref dropped)  ->  insert(id, hash)
//!   inactive block matched / resurrected      ->  remove(id)        (returns true if present)
//!   allocation needs a slot                   ->  evict() -> id     (the policy forgets it)
//!   lookups and registrations                 ->  on_access(hash, kind)   (optional signal)
//!   hits on blocks that were active           ->  on_hits(hash, count)    (optional signal)
//! ```
//!
//! Hits are reported as [`PolicyFactory::hit_signals`] asks. A hit on an inactive block (a
//! resurrection) reaches `on_access` right after the block's `remove`. A hit on a block that was
//! already active (held by another handle) is counted in the block instead, and the count
//! reaches [`EvictionPolicy::on_hits`] in one call when the block's last handle goes, just
//! before its `insert`: matching a shared prefix costs the policy nothing per block, and a
//! frequency policy still sees every hit before it orders the block.
//!
//! Every call is made with the manager's policy lock held, from one thread at a time, so a
//! policy is plain single-threaded code (`&mut self`). A manager may split its index into
//! shards, but it builds exactly one policy instance (`PolicyContext { shard: 0, shards: 1, .. }`)
//! that sees every block: the eviction order, and so the hit rate, do not depend on the shard
//! count.
//!
//! # Invariants a policy must keep
//! - `evict` returns only ids that were inserted and not yet removed or evicted, each once.
//! - `len` equals inserted minus removed minus evicted.
//! - `remove` of an id that is not present returns `false` and changes nothing.
//! - No method panics on any sequence of calls that respects the first invariant.
//!
//! A policy that panics anyway does not take the manager down: the panic reaches the caller of
//! the manager call that made it, after the manager has put its pools back in order and released
//! its locks, and the shard replaces the instance with a fresh one from the factory (the blocks
//! the old one held stay cached and are evicted after the new one's). See
//! [`MetricsSnapshot::policy_panics`](crate::MetricsSnapshot::policy_panics).
//!
//! # Example: a policy of your own
//!
//! Most-recently-released first (a stack), plugged into a manager:
//!
//! ```
//! use std::sync::Arc;
//! use kvtier_core::{
//!     BlockId, BlockManager, EvictionPolicy, G2, PolicyContext, PolicyFactory, SequenceHash,
//! };
//!
//! #[derive(Default)]
//! struct Stack(Vec<BlockId>);
//!
//! impl EvictionPolicy for Stack {
//!     fn insert(&mut self, block: BlockId, _hash: SequenceHash) {
//!         self.0.push(block);
//!     }
//!     fn remove(&mut self, block: BlockId) -> bool {
//!         let before = self.0.len();
//!         self.0.retain(|&b| b != block);
//!         self.0.len() != before
//!     }
//!     fn evict(&mut self) -> Option<BlockId> {
//!         self.0.pop()
//!     }
//!     fn len(&self) -> usize {
//!         self.0.len()
//!     }
//! }
//!
//! struct StackFactory;
//! impl PolicyFactory for StackFactory {
//!     fn name(&self) -> &str {
//!         "stack"
//!     }
//!     fn build(&self, _ctx: PolicyContext) -> Box<dyn EvictionPolicy> {
//!         Box::new(Stack::default())
//!     }
//! }
//!
//! let manager = BlockManager::<G2>::builder()
//!     .with_block_count(2)
//!     .with_shards(1)
//!     .with_policy(Arc::new(StackFactory))
//!     .build()?;
//! let (a, b) = (SequenceHash::root(1), SequenceHash::root(2));
//! for h in [a, b] {
//!     let block = manager.allocate_blocks(1)?.pop().unwrap();
//!     let staged = block.stage(h, manager.block_size()).map_err(|e| e.to_string())?;
//!     drop(manager.register_block(staged).map_err(|e| e.to_string())?);
//! }
//! let (_, evicted) = manager.allocate_blocks_with_evictions(1)?;
//! assert_eq!(evicted, vec![b]); // the most recently released goes first
//! assert_eq!(manager.policy_name(), "stack");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod fifo;
mod freqlease;
mod lineage;
mod list;
mod lru;
mod multi_lru;

pub use fifo::FifoFactory;
pub use freqlease::FreqLeaseFactory;
pub use lineage::LineageFactory;
pub use lru::LruFactory;
pub use multi_lru::{EvictionConfigError, MultiLruFactory};

use crate::{BlockId, SequenceHash};

/// What kind of access a policy is told about through [`EvictionPolicy::on_access`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessKind {
    /// A lookup found the block registered (active or inactive).
    Hit,
    /// A block with this hash was newly registered (the hash was missing: a miss being filled).
    Register,
}

/// The ordering half of the inactive pool. See the module docs for the contract.
pub trait EvictionPolicy: Send + 'static {
    /// A registered block became inactive (its last strong reference dropped).
    fn insert(&mut self, block: BlockId, hash: SequenceHash);

    /// The block left the inactive pool without being evicted (matched, upgraded, purged).
    /// Returns whether it was present.
    fn remove(&mut self, block: BlockId) -> bool;

    /// Chooses a victim, forgets it and returns it; `None` when the pool is empty.
    fn evict(&mut self) -> Option<BlockId>;

    /// Number of blocks currently held.
    fn len(&self) -> usize;

    /// Whether no block is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Optional signal: a lookup hit or a fresh registration of `hash`. Default: ignored.
    fn on_access(&mut self, hash: SequenceHash, kind: AccessKind) {
        let _ = (hash, kind);
    }

    /// Optional signal: `count` hits on `hash` made while its block was active (held), reported
    /// together when the block's last handle goes (see the module docs). Default: `count` calls
    /// of [`on_access`](Self::on_access)`(hash, AccessKind::Hit)`; a policy may do the same in
    /// fewer steps.
    fn on_hits(&mut self, hash: SequenceHash, count: u32) {
        for _ in 0..count {
            self.on_access(hash, AccessKind::Hit);
        }
    }
}

/// Which lookup hits a policy wants reported (see [`PolicyFactory::hit_signals`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HitSignals {
    /// Every hit: on inactive blocks through [`EvictionPolicy::on_access`], on active blocks
    /// counted and reported through [`EvictionPolicy::on_hits`]. The default.
    #[default]
    All,
    /// Only hits on inactive blocks (resurrections), through [`EvictionPolicy::on_access`]; hits
    /// on active blocks are not counted.
    Inactive,
    /// No hit is reported (registrations still reach [`EvictionPolicy::on_access`]).
    None,
}

/// What a policy instance is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyContext {
    /// Slots in the whole manager; every [`BlockId`] passed to the policy is below this.
    pub total_blocks: usize,
    /// Index of the shard this instance serves (always 0 for a [`BlockManager`]'s instance).
    ///
    /// [`BlockManager`]: crate::BlockManager
    pub shard: usize,
    /// Number of instances sharing the blocks (always 1 for a `BlockManager`'s instance, which
    /// serves every shard of its index).
    pub shards: usize,
}

/// Builds the [`EvictionPolicy`] instance of a manager (one per manager).
pub trait PolicyFactory: Send + Sync + 'static {
    /// Short lower-case name (`lru`, `fifo`, ...), used in metrics and reports.
    fn name(&self) -> &str;

    /// Builds the policy for `ctx`.
    fn build(&self, ctx: PolicyContext) -> Box<dyn EvictionPolicy>;

    /// Whether the policy's guarantees need one instance to see every block (for example a
    /// lineage policy that must see children before evicting a parent). A [`BlockManager`]
    /// always gives its one instance every block, at any shard count, so this only informs
    /// other users of the factory. Default: `false`.
    ///
    /// [`BlockManager`]: crate::BlockManager
    fn requires_single_shard(&self) -> bool {
        false
    }

    /// Which lookup hits the manager reports to the policy: a policy whose order ignores hits
    /// (or hits on active blocks) says so, and the manager skips the bookkeeping. Every
    /// instance the factory builds must agree with it. Default: [`HitSignals::All`].
    fn hit_signals(&self) -> HitSignals {
        HitSignals::All
    }
}

/// The policy a manager uses when the builder names none: [`FreqLeaseFactory`], our policy with
/// the best hit rate on real traces (see `docs/hit-rate.md`). For the cheapest possible policy
/// use `LruFactory::new()`.
pub fn default_policy() -> std::sync::Arc<dyn PolicyFactory> {
    std::sync::Arc::new(FreqLeaseFactory::new())
}
