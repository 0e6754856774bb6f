//! Which block guards give access to arena bytes, and how.
//!
//! [`SlotGuard`] is sealed: the arena's soundness rests on the guards' contract with
//! `kvtier-core` (while a guard of a slot lives, the slot is not reused; a [`MutableBlock`] is
//! the only guard of its slot), so only the core's guard types may implement it.

use kvtier_core::{BlockId, ImmutableBlock, MutableBlock, PinnedBlock, Tier};

mod sealed {
    pub trait Sealed {}
}

/// A block guard that lets its holder read the block's bytes: [`ImmutableBlock`],
/// [`PinnedBlock`] and [`MutableBlock`] (a writer may read back what it wrote).
///
/// Sealed: implemented only for those guard types.
pub trait SlotGuard: sealed::Sealed {
    /// The slot the guard holds.
    fn slot_id(&self) -> BlockId;
    /// The id of the manager the slot belongs to.
    fn owner_id(&self) -> u64;
}

impl<T: Tier> sealed::Sealed for ImmutableBlock<T> {}
impl<T: Tier> SlotGuard for ImmutableBlock<T> {
    #[inline]
    fn slot_id(&self) -> BlockId {
        self.block_id()
    }
    #[inline]
    fn owner_id(&self) -> u64 {
        self.manager_id()
    }
}

impl sealed::Sealed for PinnedBlock {}
impl SlotGuard for PinnedBlock {
    #[inline]
    fn slot_id(&self) -> BlockId {
        self.block_id()
    }
    #[inline]
    fn owner_id(&self) -> u64 {
        self.manager_id()
    }
}

impl<T: Tier> sealed::Sealed for MutableBlock<T> {}
impl<T: Tier> SlotGuard for MutableBlock<T> {
    #[inline]
    fn slot_id(&self) -> BlockId {
        self.block_id()
    }
    #[inline]
    fn owner_id(&self) -> u64 {
        self.manager_id()
    }
}

impl sealed::Sealed for kvtier_core::EvictedBlock<'_> {}
/// A victim shown to an eviction hook: its slot is owned by the evicting call, and not reused,
/// until the hook returns (and the value cannot outlive the hook's call).
impl SlotGuard for kvtier_core::EvictedBlock<'_> {
    #[inline]
    fn slot_id(&self) -> BlockId {
        self.block_id()
    }
    #[inline]
    fn owner_id(&self) -> u64 {
        self.manager_id()
    }
}
