//! G2: the host-memory arena. Block id `i` of one [`BlockManager`] owns slot `i` of one
//! pre-allocated region.
//!
//! The region is allocated once, page-aligned, zeroed and pre-faulted (every page touched), so
//! no copy into it ever takes a page fault and nothing on the read/write path allocates. Each
//! slot is the block rounded up to whole pages ([`BlockLayout::slot_bytes`]), so every slot is
//! page-aligned too.
//!
//! The arena owns bytes, not lifetimes: which slot is free, held or evictable is the manager's
//! business. A [`MutableBlock`] borrowed mutably gives `&mut [u8]` of its slot; any read guard
//! ([`ImmutableBlock`](kvtier_core::ImmutableBlock), [`PinnedBlock`](kvtier_core::PinnedBlock),
//! or a `MutableBlock` borrowed shared) gives `&[u8]`. The view borrows the guard, so the guard
//! outlives the view, and the core never evicts or hands out again a slot whose guard is alive:
//! a reader can never see its block overwritten. Evicting a block (an allocation that takes an
//! inactive block) hands the same slot, bytes and all, to the new writer.
//!
//! Guards of another manager are rejected ([`ArenaError::ForeignBlock`]), never mapped.
//!
//! Copies run at `memcpy` speed; for the fast path, stage blocks in page-aligned buffers
//! ([`PageBuf`]): a buffer a few bytes off a page boundary can halve a copy's speed.
//!
//! All `unsafe` lives in `raw.rs` (one allocation, guard-checked slot views).

mod buf;
mod guard;
mod owned;
mod raw;
mod stats;

use std::sync::atomic::{AtomicU64, Ordering};

use kvtier_core::{BlockManager, MutableBlock, Tier};

pub use buf::PageBuf;
pub use guard::SlotGuard;
pub use owned::SlotBytes;
pub use stats::ArenaStats;

use crate::layout::{BlockLayout, LayoutError};
use raw::Slots;

/// Errors of the host arena.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArenaError {
    /// The guard belongs to another manager than the arena's.
    #[error("block of manager {actual} given to the arena of manager {expected}")]
    ForeignBlock {
        /// The arena's manager id.
        expected: u64,
        /// The guard's manager id.
        actual: u64,
    },
    /// The guard's block id is past the arena's last slot.
    #[error("block id {index} out of range for an arena of {block_count} slots")]
    OutOfRange {
        /// The block's index.
        index: usize,
        /// Slots in the arena.
        block_count: usize,
    },
    /// A caller buffer does not have the size the call needs.
    #[error("buffer of {actual} bytes where {expected} are needed")]
    SizeMismatch {
        /// Bytes the call needs (`block_bytes`, or `n × block_bytes` for a batch).
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The layout or the arena size is invalid.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// The allocator could not provide the region.
    #[error("could not allocate {bytes} bytes for the host arena")]
    AllocationFailed {
        /// Bytes asked for.
        bytes: usize,
    },
}

/// Access counters of the arena (relaxed atomics; the pool gauges come from the manager).
#[derive(Debug, Default)]
struct Counters {
    reads: AtomicU64,
    writes: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    rejected: AtomicU64,
}

/// The G2 host arena of one block manager: `block_count × slot_bytes` bytes, slot `i` for
/// block id `i`.
///
/// # Examples
///
/// ```
/// use kvtier_core::{BlockManager, G2, SequenceHash};
/// use kvtier_storage::arena::HostArena;
/// use kvtier_storage::layout::BlockLayout;
///
/// let manager = BlockManager::<G2>::builder().with_block_count(8).build()?;
/// let arena = HostArena::new(&manager, BlockLayout::from_bytes(64 << 10)?)?;
///
/// let mut block = manager.allocate_blocks(1)?.pop().unwrap();
/// arena.block_mut(&mut block)?.fill(0xAB); // write in place, no copy
/// let block = block.stage(SequenceHash::root(1), manager.block_size()).unwrap();
/// let held = manager.register_block(block).unwrap();
///
/// let mut out = vec![0; arena.block_bytes()];
/// arena.read_into(&held, &mut out)?; // the one copy the caller asked for
/// assert!(out.iter().all(|&b| b == 0xAB));
/// assert_eq!(arena.stats().active_entries, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct HostArena<T: Tier> {
    slots: Slots,
    layout: BlockLayout,
    manager: BlockManager<T>,
    counters: Counters,
}

impl<T: Tier> std::fmt::Debug for HostArena<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostArena")
            .field("tier", &T::NAME)
            .field("manager_id", &self.manager.id())
            .field("block_count", &self.block_count())
            .field("layout", &self.layout)
            .finish()
    }
}

impl<T: Tier> HostArena<T> {
    /// Allocates and pre-faults the arena for every slot of `manager` (it keeps a handle to the
    /// manager for its statistics). Takes time proportional to the region size: pages are
    /// touched now, not on the first write.
    ///
    /// # Errors
    ///
    /// [`ArenaError::Layout`] when `block_count × slot_bytes` overflows,
    /// [`ArenaError::AllocationFailed`] when the allocator refuses the region.
    pub fn new(manager: &BlockManager<T>, layout: BlockLayout) -> Result<Self, ArenaError> {
        let slots = Slots::new(manager.id(), manager.total_blocks(), layout)?;
        Ok(Self {
            slots,
            layout,
            manager: manager.clone(),
            counters: Counters::default(),
        })
    }

    /// The block layout.
    pub fn layout(&self) -> BlockLayout {
        self.layout
    }

    /// Bytes of one block (the length of every view and of every copy buffer).
    pub fn block_bytes(&self) -> usize {
        self.layout.block_bytes()
    }

    /// Slots in the arena (the manager's block count).
    pub fn block_count(&self) -> usize {
        self.manager.total_blocks()
    }

    /// The manager whose blocks own the slots.
    pub fn manager(&self) -> &BlockManager<T> {
        &self.manager
    }

    /// Address of the region's first byte (page-aligned), for diagnostics and tests.
    pub fn base_addr(&self) -> usize {
        self.slots.base_addr()
    }

    fn rejected<E>(&self, e: E) -> E {
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        e
    }

    /// The bytes of the block `guard` holds, borrowed for as long as the guard is.
    ///
    /// # Errors
    ///
    /// [`ArenaError::ForeignBlock`] for a guard of another manager.
    #[inline]
    pub fn block<'a, G: SlotGuard + ?Sized>(
        &'a self,
        guard: &'a G,
    ) -> Result<&'a [u8], ArenaError> {
        let bytes = self.slots.slot(guard).map_err(|e| self.rejected(e))?;
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        Ok(bytes)
    }

    /// The writable bytes of `block`'s slot, borrowed for as long as the block is.
    ///
    /// # Errors
    ///
    /// [`ArenaError::ForeignBlock`] for a block of another manager.
    #[inline]
    pub fn block_mut<'a>(
        &'a self,
        block: &'a mut MutableBlock<T>,
    ) -> Result<&'a mut [u8], ArenaError> {
        let bytes = self.slots.slot_mut(block).map_err(|e| self.rejected(e))?;
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        Ok(bytes)
    }

    fn check_len(&self, expected: usize, actual: usize) -> Result<(), ArenaError> {
        if expected == actual {
            Ok(())
        } else {
            Err(self.rejected(ArenaError::SizeMismatch { expected, actual }))
        }
    }

    /// Copies the block `guard` holds into `dst` (exactly [`block_bytes`](Self::block_bytes)).
    ///
    /// # Errors
    ///
    /// [`ArenaError::SizeMismatch`] for a `dst` of another length, [`ArenaError::ForeignBlock`]
    /// for a guard of another manager; `dst` is untouched.
    pub fn read_into<G: SlotGuard + ?Sized>(
        &self,
        guard: &G,
        dst: &mut [u8],
    ) -> Result<(), ArenaError> {
        self.check_len(self.block_bytes(), dst.len())?;
        dst.copy_from_slice(self.block(guard)?);
        self.counters
            .bytes_read
            .fetch_add(dst.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Copies `src` (exactly [`block_bytes`](Self::block_bytes)) into `block`'s slot.
    ///
    /// # Errors
    ///
    /// [`ArenaError::SizeMismatch`] for a `src` of another length, [`ArenaError::ForeignBlock`]
    /// for a block of another manager; the slot is untouched.
    pub fn write_from(&self, block: &mut MutableBlock<T>, src: &[u8]) -> Result<(), ArenaError> {
        self.check_len(self.block_bytes(), src.len())?;
        self.block_mut(block)?.copy_from_slice(src);
        self.counters
            .bytes_written
            .fetch_add(src.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Copies the blocks `guards` hold, in order, into `dst` (exactly `guards.len() ×
    /// block_bytes`, block `k` at `k × block_bytes`). All or nothing: every guard is checked
    /// before the first byte is copied.
    ///
    /// # Errors
    ///
    /// As [`read_into`](Self::read_into); on error `dst` is untouched.
    pub fn read_many_into<G: SlotGuard>(
        &self,
        guards: &[G],
        dst: &mut [u8],
    ) -> Result<(), ArenaError> {
        let bb = self.block_bytes();
        self.check_len(guards.len().saturating_mul(bb), dst.len())?;
        for g in guards {
            self.slots.offset_of(g).map_err(|e| self.rejected(e))?;
        }
        for (g, out) in guards.iter().zip(dst.chunks_exact_mut(bb)) {
            out.copy_from_slice(self.block(g)?);
        }
        self.counters
            .bytes_read
            .fetch_add(dst.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Copies `src` (exactly `blocks.len() × block_bytes`) into the blocks' slots, block `k`
    /// from `k × block_bytes`. All or nothing: every block is checked before the first byte is
    /// copied.
    ///
    /// # Errors
    ///
    /// As [`write_from`](Self::write_from); on error no slot is touched.
    pub fn write_many_from(
        &self,
        blocks: &mut [MutableBlock<T>],
        src: &[u8],
    ) -> Result<(), ArenaError> {
        let bb = self.block_bytes();
        self.check_len(blocks.len().saturating_mul(bb), src.len())?;
        for b in blocks.iter() {
            self.slots.offset_of(b).map_err(|e| self.rejected(e))?;
        }
        for (b, chunk) in blocks.iter_mut().zip(src.chunks_exact(bb)) {
            self.block_mut(b)?.copy_from_slice(chunk);
        }
        self.counters
            .bytes_written
            .fetch_add(src.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Capacity, occupancy, fragmentation and traffic, from the manager's pools (the real
    /// state of every slot) and the arena's counters. In debug builds the accounting identities
    /// are asserted against the region actually allocated.
    pub fn stats(&self) -> ArenaStats {
        let m = self.manager.metrics();
        let stats = ArenaStats::from_parts(
            &self.layout,
            &m,
            self.slots.len() as u64,
            [
                self.counters.reads.load(Ordering::Relaxed),
                self.counters.writes.load(Ordering::Relaxed),
                self.counters.bytes_read.load(Ordering::Relaxed),
                self.counters.bytes_written.load(Ordering::Relaxed),
                self.counters.rejected.load(Ordering::Relaxed),
            ],
        );
        stats.debug_check(self.slots.len() as u64);
        stats
    }
}
