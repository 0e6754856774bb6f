//! The type-state block guards.
//!
//! ```text
//!   MutableBlock<T> --stage--> CompleteBlock<T> --register--> ImmutableBlock<T> <--> WeakBlock<T>
//!        ^  |                       |  |                          |   (clone: shared)
//!        |  '-- drop: slot -> reset '  '-- drop: slot -> reset    '-- last drop: inactive pool
//!        '------------ reset -------'                                 (or reset pool for a
//!                                                                      duplicate / evict-on-release)
//! ```
//!
//! Every transition consumes the guard; a failed transition hands the guard back inside
//! [`BlockError`], so a slot is never lost. Guards are `Send + Sync` and carry the tier type `T`,
//! so a block of one tier cannot be registered in a manager of another. [`PinnedBlock`] is a
//! strong reference with the tier erased, for lists that mix tiers.

use std::fmt;
use std::marker::PhantomData;

use crate::manager::slot::{Slot, SlotRef, SlotState};
use crate::sync::Arc;
use crate::{BlockId, SequenceHash, Tier};

/// Errors of a block transition. The guard that could not move is handed back.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum BlockError<B> {
    /// The block was filled with a different number of tokens than the manager's block size.
    #[error("block size mismatch: manager uses {expected} tokens per block, got {actual}")]
    BlockSizeMismatch {
        /// The manager's block size.
        expected: usize,
        /// The size given by the caller.
        actual: usize,
        /// The guard, unchanged.
        block: B,
    },
    /// The block belongs to another manager (same tier type, other instance).
    #[error("block belongs to another block manager")]
    ForeignBlock {
        /// The guard(s), unchanged.
        block: B,
    },
}

impl<B> BlockError<B> {
    /// Takes the guard back out of the error.
    pub fn into_block(self) -> B {
        match self {
            BlockError::BlockSizeMismatch { block, .. } | BlockError::ForeignBlock { block } => {
                block
            }
        }
    }
}

impl<B> fmt::Debug for BlockError<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockError::BlockSizeMismatch {
                expected, actual, ..
            } => f
                .debug_struct("BlockSizeMismatch")
                .field("expected", expected)
                .field("actual", actual)
                .finish_non_exhaustive(),
            BlockError::ForeignBlock { .. } => {
                f.debug_struct("ForeignBlock").finish_non_exhaustive()
            }
        }
    }
}

/// A freshly allocated, writable block slot. Dropping it returns the slot to the reset pool.
///
/// # Examples
///
/// ```
/// use kvtier_core::{BlockManager, G1, SequenceHash};
///
/// let manager = BlockManager::<G1>::builder().with_block_count(2).build().unwrap();
/// let mut blocks = manager.allocate_blocks(2).unwrap();
/// assert_eq!(manager.available_blocks(), 0);
/// blocks.pop(); // dropped: back to the reset pool
/// assert_eq!(manager.available_blocks(), 1);
/// ```
pub struct MutableBlock<T: Tier> {
    slot: Option<Arc<Slot>>,
    block_size: usize,
    _tier: PhantomData<fn() -> T>,
}

impl<T: Tier> MutableBlock<T> {
    pub(crate) fn new(slot: Arc<Slot>, block_size: usize) -> Self {
        Self {
            slot: Some(slot),
            block_size,
            _tier: PhantomData,
        }
    }

    fn slot(&self) -> &Arc<Slot> {
        self.slot
            .as_ref()
            .expect("guard holds its slot until consumed")
    }

    /// The slot this block occupies.
    pub fn block_id(&self) -> BlockId {
        self.slot().id
    }

    /// Tokens per block in this block's manager.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The id of the manager that owns the slot ([`BlockManager::id`](crate::BlockManager::id)):
    /// with [`block_id`](Self::block_id) it addresses the slot across managers.
    pub fn manager_id(&self) -> u64 {
        self.slot().shared.manager_id
    }

    /// Seals the block with the sequence hash of the `block_size` tokens written into it.
    ///
    /// # Errors
    ///
    /// [`BlockError::BlockSizeMismatch`] (carrying this block back) when `block_size` is not the
    /// manager's block size.
    pub fn stage(
        mut self,
        hash: SequenceHash,
        block_size: usize,
    ) -> Result<CompleteBlock<T>, BlockError<MutableBlock<T>>> {
        if block_size != self.block_size {
            return Err(BlockError::BlockSizeMismatch {
                expected: self.block_size,
                actual: block_size,
                block: self,
            });
        }
        let slot = self
            .slot
            .take()
            .expect("guard holds its slot until consumed");
        slot.shared.mark_staged(&slot, hash);
        Ok(CompleteBlock {
            slot: Some(slot),
            hash,
            block_size: self.block_size,
            _tier: PhantomData,
        })
    }

    /// Seals the block with the tokens it holds: `tokens.len()` must equal the block size and
    /// `hash` is the sequence hash of those tokens (see [`crate::BlockHasher`]).
    ///
    /// # Errors
    ///
    /// As [`MutableBlock::stage`].
    pub fn complete(
        self,
        tokens: &[u32],
        hash: SequenceHash,
    ) -> Result<CompleteBlock<T>, BlockError<MutableBlock<T>>> {
        self.stage(hash, tokens.len())
    }
}

impl<T: Tier> Drop for MutableBlock<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.shared.free_unregistered(&slot);
        }
    }
}

impl<T: Tier> fmt::Debug for MutableBlock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MutableBlock")
            .field("tier", &T::NAME)
            .field("block_id", &self.slot.as_ref().map(|s| s.id))
            .finish()
    }
}

/// A block sealed with its sequence hash, ready to register. Dropping it returns the slot to
/// the reset pool.
pub struct CompleteBlock<T: Tier> {
    slot: Option<Arc<Slot>>,
    hash: SequenceHash,
    block_size: usize,
    _tier: PhantomData<fn() -> T>,
}

impl<T: Tier> CompleteBlock<T> {
    pub(crate) fn slot(&self) -> &Arc<Slot> {
        self.slot
            .as_ref()
            .expect("guard holds its slot until consumed")
    }

    /// Takes the slot out for registration (the guard's drop then does nothing).
    pub(crate) fn take_slot(mut self) -> Arc<Slot> {
        self.slot
            .take()
            .expect("guard holds its slot until consumed")
    }

    /// The slot this block occupies.
    pub fn block_id(&self) -> BlockId {
        self.slot().id
    }

    /// The hash it was staged with.
    pub fn sequence_hash(&self) -> SequenceHash {
        self.hash
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Rolls back to a writable block in the same slot.
    pub fn reset(mut self) -> MutableBlock<T> {
        let slot = self
            .slot
            .take()
            .expect("guard holds its slot until consumed");
        slot.shared.mark_unstaged(&slot);
        MutableBlock::new(slot, self.block_size)
    }
}

impl<T: Tier> Drop for CompleteBlock<T> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.shared.free_unregistered(&slot);
        }
    }
}

impl<T: Tier> fmt::Debug for CompleteBlock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompleteBlock")
            .field("tier", &T::NAME)
            .field("block_id", &self.slot.as_ref().map(|s| s.id))
            .field("hash", &self.hash)
            .finish()
    }
}

/// A registered, read-only, shared block. While any clone lives the block is *active* and can
/// never be evicted; when the last one drops the block becomes *inactive*: still registered and
/// matchable, but evictable.
pub struct ImmutableBlock<T: Tier> {
    r: SlotRef,
    _tier: PhantomData<fn() -> T>,
}

impl<T: Tier> ImmutableBlock<T> {
    pub(crate) fn from_ref(r: SlotRef) -> Self {
        Self {
            r,
            _tier: PhantomData,
        }
    }

    pub(crate) fn into_ref(self) -> SlotRef {
        self.r
    }

    /// The slot this block occupies (a duplicate has its own slot).
    pub fn block_id(&self) -> BlockId {
        self.r.slot().id
    }

    /// The block's sequence hash.
    pub fn sequence_hash(&self) -> SequenceHash {
        self.r.slot().hash()
    }

    /// The id of the manager that owns the block ([`BlockManager::id`](crate::BlockManager::id)).
    pub fn manager_id(&self) -> u64 {
        self.r.slot().shared.manager_id
    }

    /// Whether this block is a duplicate of another slot's primary (`DuplicationPolicy::Allow`).
    pub fn is_duplicate(&self) -> bool {
        self.r.slot().state() == SlotState::Duplicate
    }

    /// Strong references to this slot (clones, pins, duplicates pointing at it).
    pub fn use_count(&self) -> usize {
        self.r.slot().live_handles() as usize
    }

    /// A non-owning reference that does not keep the block from being evicted.
    pub fn downgrade(&self) -> WeakBlock<T> {
        let slot = self.r.slot();
        WeakBlock {
            slot: slot.clone(),
            hash: slot.hash(),
            generation: slot.generation(),
            _tier: PhantomData,
        }
    }

    /// When `true`, the last release frees the slot instead of caching the block (the flag is
    /// reset to the manager default when the slot is reused).
    pub fn set_evict_on_release(&self, evict: bool) {
        self.r.slot().set_evict_on_release(evict);
    }

    /// A strong reference with the tier type erased.
    pub fn pin(&self) -> PinnedBlock {
        PinnedBlock {
            r: self.r.clone_ref(),
            tier: T::NAME,
        }
    }
}

impl<T: Tier> Clone for ImmutableBlock<T> {
    fn clone(&self) -> Self {
        Self::from_ref(self.r.clone_ref())
    }
}

impl<T: Tier> fmt::Debug for ImmutableBlock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImmutableBlock")
            .field("tier", &T::NAME)
            .field("block_id", &self.block_id())
            .field("hash", &self.sequence_hash())
            .finish()
    }
}

/// A non-owning reference to a registered block. It does not prevent eviction.
pub struct WeakBlock<T: Tier> {
    slot: Arc<Slot>,
    hash: SequenceHash,
    generation: u64,
    _tier: PhantomData<fn() -> T>,
}

impl<T: Tier> WeakBlock<T> {
    /// The hash of the block this refers to.
    pub fn sequence_hash(&self) -> SequenceHash {
        self.hash
    }

    /// A strong reference again, resurrecting the block from the inactive pool if needed (one
    /// shard lock). `None` once it was evicted or its slot reused.
    pub fn upgrade(&self) -> Option<ImmutableBlock<T>> {
        self.slot
            .shared
            .upgrade(&self.slot, self.hash, self.generation)
            .map(ImmutableBlock::from_ref)
    }
}

impl<T: Tier> Clone for WeakBlock<T> {
    fn clone(&self) -> Self {
        Self {
            slot: self.slot.clone(),
            hash: self.hash,
            generation: self.generation,
            _tier: PhantomData,
        }
    }
}

impl<T: Tier> fmt::Debug for WeakBlock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakBlock")
            .field("tier", &T::NAME)
            .field("hash", &self.hash)
            .finish()
    }
}

/// A strong reference to a registered block with its tier type erased: keeps the block active
/// exactly like an [`ImmutableBlock`] clone.
pub struct PinnedBlock {
    r: SlotRef,
    tier: &'static str,
}

impl PinnedBlock {
    /// The slot of the pinned block.
    pub fn block_id(&self) -> BlockId {
        self.r.slot().id
    }

    /// Its sequence hash.
    pub fn sequence_hash(&self) -> SequenceHash {
        self.r.slot().hash()
    }

    /// The tier name ([`Tier::NAME`]) of its manager.
    pub fn tier(&self) -> &'static str {
        self.tier
    }

    /// The id of its manager ([`BlockManager::id`](crate::BlockManager::id)): with
    /// [`block_id`](Self::block_id) it addresses the block across managers.
    pub fn manager_id(&self) -> u64 {
        self.r.slot().shared.manager_id
    }

    /// Strong references to the block (clones, pins, duplicates pointing at it).
    pub fn use_count(&self) -> usize {
        self.r.slot().live_handles() as usize
    }
}

impl fmt::Debug for PinnedBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedBlock")
            .field("tier", &self.tier)
            .field("block_id", &self.block_id())
            .finish()
    }
}
