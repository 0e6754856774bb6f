//! The only `unsafe` of kvtier-storage: one raw, page-aligned, pre-faulted allocation and the
//! guard-checked views into its slots.
//!
//! # Invariants
//!
//! - `ptr` points to an allocation of `layout` (`block_count × slot_bytes` bytes, aligned to
//!   [`PAGE_SIZE`]) owned by this value alone and freed exactly once, in `Drop`.
//! - Slot `i` is bytes `[i × slot_bytes, i × slot_bytes + block_bytes)`; slots never overlap
//!   (`block_bytes <= slot_bytes`).
//! - A view of slot `i` is handed out only against a guard of slot `i` of the manager
//!   `manager_id`, and lives no longer than the borrow of that guard. `kvtier-core` guarantees
//!   that a [`MutableBlock`] is the only guard of its slot while it lives, and that a slot with a
//!   live [`SlotGuard`] (an `ImmutableBlock` or `PinnedBlock`) is never evicted or handed out
//!   again. So a `&mut [u8]` of a slot (borrowed from `&mut MutableBlock`) never coexists with
//!   any other view of that slot, and a `&[u8]` never coexists with a `&mut [u8]` of its slot.
//!   Manager ids are process-unique, so a guard of another manager never matches.

#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::ptr::NonNull;

use kvtier_core::{MutableBlock, Tier};

use super::ArenaError;
use super::guard::SlotGuard;
use crate::layout::{BlockLayout, PAGE_SIZE};

/// Owner of the arena's memory; the only way to reach it.
pub(crate) struct Slots {
    ptr: NonNull<u8>,
    layout: Layout,
    block_count: usize,
    slot_bytes: usize,
    block_bytes: usize,
    manager_id: u64,
}

// SAFETY: `Slots` owns its allocation exclusively (no other pointer to it exists outside the
// views it hands out), and it hands out views only under the guard discipline described in the
// module docs, which is thread-agnostic; moving the owner to another thread moves nothing shared.
unsafe impl Send for Slots {}
// SAFETY: every `&self` method either reads plain fields or hands out a view tied to a guard
// borrow; two threads can only hold views of the same slot when both hold shared guards of it
// (shared reads), as argued in the module docs.
unsafe impl Sync for Slots {}

impl Slots {
    /// Allocates `block_count` slots of `layout`, zeroed, and faults every page in.
    pub(crate) fn new(
        manager_id: u64,
        block_count: usize,
        layout: BlockLayout,
    ) -> Result<Self, ArenaError> {
        let bytes = layout.arena_bytes(block_count)?;
        let mem_layout = Layout::from_size_align(bytes, PAGE_SIZE)
            .map_err(|_| ArenaError::AllocationFailed { bytes })?;
        // SAFETY: `mem_layout` has a non-zero size (`arena_bytes` rejects zero blocks and a
        // layout has at least one byte per block) and a power-of-two alignment.
        let raw = unsafe { alloc::alloc_zeroed(mem_layout) };
        let ptr = NonNull::new(raw).ok_or(ArenaError::AllocationFailed { bytes })?;
        let slots = Self {
            ptr,
            layout: mem_layout,
            block_count,
            slot_bytes: layout.slot_bytes(),
            block_bytes: layout.block_bytes(),
            manager_id,
        };
        slots.prefault();
        Ok(slots)
    }

    /// Writes one byte per page so the kernel backs the whole region now, not on the first copy
    /// into it (a copy into unfaulted memory runs at ~1.5 GB/s instead of ~30).
    fn prefault(&self) {
        let base = self.ptr.as_ptr();
        for offset in (0..self.layout.size()).step_by(PAGE_SIZE) {
            // SAFETY: `offset < layout.size()`, so the byte is inside the allocation, which no
            // view references yet (we are still in the constructor). Volatile, because the
            // compiler knows `alloc_zeroed` memory is zero and would drop a plain zero store.
            unsafe { base.add(offset).write_volatile(0) };
        }
    }

    /// Total bytes of the allocation.
    pub(crate) fn len(&self) -> usize {
        self.layout.size()
    }

    /// Address of the first byte (for alignment checks).
    pub(crate) fn base_addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// Byte offset of the slot `guard` holds, after checking that the guard is one of ours.
    #[inline]
    pub(crate) fn offset_of<G: SlotGuard + ?Sized>(&self, guard: &G) -> Result<usize, ArenaError> {
        let owner = guard.owner_id();
        if owner != self.manager_id {
            return Err(ArenaError::ForeignBlock {
                expected: self.manager_id,
                actual: owner,
            });
        }
        let index = guard.slot_id().index();
        if index >= self.block_count {
            return Err(ArenaError::OutOfRange {
                index,
                block_count: self.block_count,
            });
        }
        // Cannot overflow: index < block_count and block_count × slot_bytes fits in isize.
        Ok(index * self.slot_bytes)
    }

    /// The bytes of the slot `guard` holds, for as long as the guard is borrowed.
    #[inline]
    pub(crate) fn slot<'a, G: SlotGuard + ?Sized>(
        &'a self,
        guard: &'a G,
    ) -> Result<&'a [u8], ArenaError> {
        let offset = self.offset_of(guard)?;
        // SAFETY: `offset + block_bytes <= layout.size()` (the slot is inside the allocation,
        // checked by `offset_of`), the memory is initialised (zeroed at allocation), and per the
        // module invariants no `&mut` view of this slot can exist while `guard` is borrowed:
        // the only `&mut` views come from `slot_mut`, which needs the slot's `MutableBlock` by
        // `&mut`, and the core never lets a `MutableBlock` coexist with another guard of its
        // slot. The returned lifetime is tied to both `self` and the guard borrow.
        Ok(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(offset), self.block_bytes) })
    }

    /// The writable bytes of `block`'s slot, for as long as `block` is mutably borrowed.
    #[inline]
    pub(crate) fn slot_mut<'a, T: Tier>(
        &'a self,
        block: &'a mut MutableBlock<T>,
    ) -> Result<&'a mut [u8], ArenaError> {
        let offset = self.offset_of(block)?;
        // SAFETY: in bounds and initialised as in `slot`. Exclusive: `block` is the only guard
        // of this slot in its manager (a core invariant), it is borrowed mutably for `'a`, so no
        // other view derived from it (shared or mutable) can be alive, and views of other slots
        // are disjoint byte ranges of the same allocation.
        Ok(unsafe {
            std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(offset), self.block_bytes)
        })
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        // SAFETY: `ptr` was returned by `alloc_zeroed(self.layout)` and is freed only here;
        // every view borrows `self`, so none outlives this call.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

#[cfg(test)]
mod tests {
    use kvtier_core::{BlockManager, G2, SequenceHash};

    use super::*;

    fn setup(blocks: usize, bytes: usize) -> (BlockManager<G2>, Slots) {
        let m = BlockManager::<G2>::builder()
            .with_block_count(blocks)
            .build()
            .unwrap();
        let layout = BlockLayout::from_bytes(bytes).unwrap();
        let s = Slots::new(m.id(), blocks, layout).unwrap();
        (m, s)
    }

    #[test]
    fn region_is_page_aligned_zeroed_and_sized() {
        let (m, s) = setup(5, 5000);
        assert_eq!(s.base_addr() % PAGE_SIZE, 0);
        assert_eq!(s.len(), 5 * 2 * PAGE_SIZE);
        let blocks = m.allocate_blocks(5).unwrap();
        for b in &blocks {
            let bytes = s.slot(b).unwrap();
            assert_eq!(bytes.len(), 5000);
            assert!(bytes.iter().all(|&x| x == 0));
            assert_eq!(
                (bytes.as_ptr() as usize - s.base_addr()) % PAGE_SIZE,
                0,
                "every slot starts on a page"
            );
        }
    }

    #[test]
    fn whole_slots_are_writable_and_disjoint() {
        // Fills every byte of every slot, last byte included: ASan flags any overrun.
        let (m, s) = setup(4, 4096 + 1);
        let mut blocks = m.allocate_blocks(4).unwrap();
        for (i, b) in blocks.iter_mut().enumerate() {
            s.slot_mut(b).unwrap().fill(i as u8 + 1);
        }
        for (i, b) in blocks.iter().enumerate() {
            assert!(s.slot(b).unwrap().iter().all(|&x| x == i as u8 + 1));
        }
        let staged = blocks
            .pop()
            .unwrap()
            .stage(SequenceHash::root(1), m.block_size())
            .unwrap();
        let held = m.register_block(staged).unwrap();
        let bytes = s.slot(&held).unwrap();
        assert_eq!(bytes.len(), 4097);
        assert_eq!(bytes[4096], 4);
    }

    #[test]
    fn an_impossible_region_is_an_error_not_an_abort() {
        let layout = BlockLayout::from_bytes(1 << 30).unwrap();
        // 2^60 bytes: fits in isize, no allocator can give it.
        let err = Slots::new(1, 1 << 30, layout).err().unwrap();
        assert_eq!(err, ArenaError::AllocationFailed { bytes: 1 << 60 });
        assert!(matches!(
            Slots::new(1, usize::MAX, layout),
            Err(ArenaError::Layout(_))
        ));
    }

    #[test]
    fn foreign_guards_are_rejected() {
        let (_m, s) = setup(2, 64);
        let other = BlockManager::<G2>::builder()
            .with_block_count(8)
            .build()
            .unwrap();
        let mut blocks = other.allocate_blocks(8).unwrap();
        for b in &mut blocks {
            assert!(matches!(
                s.slot_mut(b),
                Err(ArenaError::ForeignBlock { .. })
            ));
            assert!(matches!(s.slot(b), Err(ArenaError::ForeignBlock { .. })));
        }
    }

    #[test]
    fn a_smaller_arena_than_its_manager_rejects_high_ids() {
        // The public constructor sizes the arena from the manager; built by hand, ids past the
        // end must be refused rather than read out of bounds.
        let m = BlockManager::<G2>::builder()
            .with_block_count(4)
            .build()
            .unwrap();
        let s = Slots::new(m.id(), 2, BlockLayout::from_bytes(100).unwrap()).unwrap();
        let mut blocks = m.allocate_blocks(4).unwrap();
        let mut out_of_range = 0;
        for b in &mut blocks {
            match s.slot_mut(b) {
                Ok(bytes) => bytes.fill(7),
                Err(ArenaError::OutOfRange { index, block_count }) => {
                    assert!(index >= block_count);
                    out_of_range += 1;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(out_of_range, 2);
    }
}
