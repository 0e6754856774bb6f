//! Block slots and counted strong references to them.
//!
//! A [`Slot`] is shared (`Arc`) by every guard of one block slot. Its state and registration are
//! written only by the owner of the slot (the guard, or the shard holding it, under that shard's
//! lock); [`SlotRef`] is the untyped strong reference behind `ImmutableBlock`.
//!
//! # Handle counting
//! Strong references of a registered slot are counted in `Slot::handles`. The count is raised
//! only under the lock of the shard that owns the slot (the shard of its hash, fixed while it is
//! registered), with an atomic read-modify-write; it is lowered either under that lock or, when
//! it stays above zero, without it ([`Slot::release_if_shared`]: a compare-and-swap that never
//! takes the count from 1 to 0). So the transition to zero, and with it "this was the last
//! handle", is decided only under the shard lock, in the same critical section that moves the
//! block to the inactive pool, and no match can raise the count concurrently: a racing match and
//! last release always agree. A lock-free decrement from 2 to 1 racing a locked one is harmless:
//! both are read-modify-writes, and whichever comes second sees the other's result.
//!
//! Each handle also owns one `Arc` count, which keeps the slot's memory alive.
//!
//! # Hits on active blocks
//! A lookup hit on a block that already has a handle is not sent to the policy as it happens:
//! it is counted in `Slot::active_hits` (under the shard lock), and the count goes to the policy
//! as one event when the last handle goes (`store/handles.rs`). So `active_hits` is 0 whenever
//! `handles` is.

use crate::manager::store::Shared;
use crate::sync::{Arc, AtomicBool, AtomicU8, AtomicU32, AtomicU64, Mutex, Ordering};
use crate::{BlockId, SequenceHash};

/// Slot states (stored in `Slot::state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum SlotState {
    Reset = 0,
    Mutable = 1,
    Staged = 2,
    Primary = 3,
    Inactive = 4,
    Duplicate = 5,
}

impl SlotState {
    #[inline]
    fn from_u8(v: u8) -> SlotState {
        match v {
            0 => SlotState::Reset,
            1 => SlotState::Mutable,
            2 => SlotState::Staged,
            3 => SlotState::Primary,
            4 => SlotState::Inactive,
            _ => SlotState::Duplicate,
        }
    }
}

/// One block slot. Shared by every guard of the slot through an `Arc`.
pub(crate) struct Slot {
    pub(crate) id: BlockId,
    pub(crate) shared: Arc<Shared>,
    /// Strong references (live `ImmutableBlock`s, pins, duplicates pointing here). Raised only
    /// under the owning shard's lock; lowered under it, or without it while it stays above zero
    /// (see the module docs).
    pub(crate) handles: AtomicU32,
    pub(crate) state: AtomicU8,
    /// Changes every time the slot leaves the registered states: a `WeakBlock` or a delayed
    /// release compares it to know the slot still holds the registration it saw.
    pub(crate) generation: AtomicU64,
    pub(crate) hash_lo: AtomicU64,
    pub(crate) hash_hi: AtomicU64,
    pub(crate) evict_on_release: AtomicBool,
    /// Hits on this block while it was active, not yet reported to the policy. Read and written
    /// only under the owning shard's lock (see the module docs).
    active_hits: AtomicU32,
    /// Bumped (under the shard lock) each time the block becomes inactive: policy events carry
    /// it, and a victim the policy gave up is taken only if the slot still has the version the
    /// policy held (`store/policy.rs`).
    version: AtomicU32,
    /// For a duplicate: its primary, on which it holds one handle (counted in the primary's
    /// `handles`; both live in the same shard since they share a hash).
    pub(crate) dup_of: Mutex<Option<Arc<Slot>>>,
}

impl Slot {
    pub(crate) fn new(id: BlockId, shared: Arc<Shared>, evict_on_release: bool) -> Arc<Slot> {
        Arc::new(Slot {
            id,
            shared,
            handles: AtomicU32::new(0),
            state: AtomicU8::new(SlotState::Reset as u8),
            generation: AtomicU64::new(0),
            hash_lo: AtomicU64::new(0),
            hash_hi: AtomicU64::new(0),
            evict_on_release: AtomicBool::new(evict_on_release),
            active_hits: AtomicU32::new(0),
            version: AtomicU32::new(0),
            dup_of: Mutex::new(None),
        })
    }

    #[inline]
    pub(crate) fn state(&self) -> SlotState {
        SlotState::from_u8(self.state.load(Ordering::Acquire))
    }

    #[inline]
    pub(crate) fn set_state(&self, s: SlotState) {
        self.state.store(s as u8, Ordering::Release);
    }

    #[inline]
    pub(crate) fn hash(&self) -> SequenceHash {
        let lo = self.hash_lo.load(Ordering::Acquire) as u128;
        let hi = self.hash_hi.load(Ordering::Acquire) as u128;
        SequenceHash::from_u128((hi << 64) | lo)
    }

    pub(crate) fn set_hash(&self, h: SequenceHash) {
        self.hash_lo.store(h.as_u128() as u64, Ordering::Release);
        self.hash_hi
            .store((h.as_u128() >> 64) as u64, Ordering::Release);
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn bump_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    #[inline]
    pub(crate) fn version(&self) -> u32 {
        self.version.load(Ordering::Relaxed)
    }

    /// Starts a new inactive period (call under the shard lock). Never 0, which the policy
    /// uses for "not held".
    pub(crate) fn bump_version(&self) {
        let next = self.version().wrapping_add(1).max(1);
        self.version.store(next, Ordering::Relaxed);
    }

    /// Gives back one handle without any lock if it is not the last one: lowers the count when
    /// it is above 1 and returns `true`; returns `false` (count unchanged) when this may be the
    /// last handle, which the caller then gives back under the shard lock.
    #[inline]
    pub(crate) fn release_if_shared(&self) -> bool {
        let mut cur = self.handles.load(Ordering::Relaxed);
        while cur > 1 {
            // Release: this holder's uses of the block happen before whoever later takes the
            // count to zero (under the lock, with an acquiring read-modify-write).
            match self.handles.compare_exchange_weak(
                cur,
                cur - 1,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }

    /// Counts one hit on the active block (call under the shard lock).
    #[inline]
    pub(crate) fn count_active_hit(&self) {
        let n = self.active_hits.load(Ordering::Relaxed);
        self.active_hits
            .store(n.saturating_add(1), Ordering::Relaxed);
    }

    /// Takes the hits counted while the block was active (call under the shard lock).
    #[inline]
    pub(crate) fn take_active_hits(&self) -> u32 {
        let n = self.active_hits.load(Ordering::Relaxed);
        if n != 0 {
            self.active_hits.store(0, Ordering::Relaxed);
        }
        n
    }

    pub(crate) fn evict_on_release(&self) -> bool {
        self.evict_on_release.load(Ordering::Relaxed)
    }

    pub(crate) fn set_evict_on_release(&self, v: bool) {
        self.evict_on_release.store(v, Ordering::Relaxed);
    }
}

/// A counted strong reference to a registered slot (the untyped core of `ImmutableBlock`).
pub(crate) struct SlotRef {
    /// Always `Some` until the reference is consumed by `into_slot` or dropped.
    slot: Option<Arc<Slot>>,
}

impl SlotRef {
    /// Wraps a slot whose `handles` count was already incremented for this reference.
    pub(crate) fn adopt(slot: Arc<Slot>) -> SlotRef {
        SlotRef { slot: Some(slot) }
    }

    #[inline]
    pub(crate) fn slot(&self) -> &Arc<Slot> {
        self.slot.as_ref().expect("a live SlotRef holds its slot")
    }

    /// Another strong reference to the same slot.
    pub(crate) fn clone_ref(&self) -> SlotRef {
        Shared::add_handle(self.slot())
    }

    /// Takes the slot out without giving the handle back: the caller must release it through
    /// `Shared::release_batch`'s path.
    pub(crate) fn into_slot(mut self) -> Arc<Slot> {
        self.slot.take().expect("a live SlotRef holds its slot")
    }
}

impl Drop for SlotRef {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            Shared::release_one(slot);
        }
    }
}
