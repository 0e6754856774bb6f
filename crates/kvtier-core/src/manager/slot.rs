//! Block slots and counted strong references to them.
//!
//! A [`Slot`] is shared (`Arc`) by every guard of one block slot. Its state and registration are
//! written only by the owner of the slot (the guard, or the shard holding it, under that shard's
//! lock); [`SlotRef`] is the untyped strong reference behind `ImmutableBlock`.
//!
//! # Handle counting
//! The strong references of a registered slot are counted by two counters whose difference is
//! the number of live handles: `Slot::handles` counts the handles taken and `Slot::released`
//! the handles given back.
//!
//! - A handle is taken only under the lock of the shard that owns the slot (the shard of its
//!   hash, fixed while it is registered): `handles` is read and written with a plain load and
//!   store under that lock, no read-modify-write, so a match costs no atomic instruction per
//!   block beyond the `Arc` count.
//! - A handle is given back without any lock: one atomic increment of `released` (acquire and
//!   release), then a read of `handles`. If the difference is not zero, another handle is live
//!   and there is nothing else to do. If it is zero this may have been the last handle, and
//!   the caller *settles* the slot under the shard lock: there, with `handles` exact, it checks
//!   again and only if no handle is live does the block become inactive (or its slot free).
//!
//! Why this is exact: `handles` only grows while the slot is registered, and a holder reads
//! at least the value that counted every handle whose release it sees (the releases are
//! read-modify-writes, each ordered after the take of its handle). So a lock-free read can
//! only underestimate the live count: a release that sees zero may be wrong (a match took a
//! handle meanwhile), and the locked check then finds the handle and does nothing; a release
//! that sees a live handle is right, and the last release in `released`'s order always sees
//! zero. Several releases may each try to settle one slot; the first that finds no live handle
//! moves it, and the others find it already inactive (or freed: they check the generation they
//! saw while holding their handle, so they never touch a later registration under the wrong
//! lock). A match that finds a registered block with no live handle but not yet settled simply
//! takes a handle (the settle then finds it live). When the block becomes inactive or free both
//! counters are reset to zero under the lock; no holder is left to race with the reset.
//!
//! Each handle also owns one `Arc` count, which keeps the slot's memory alive.

//! # Hits on active blocks
//! A lookup hit on a block that already has a handle is not sent to the policy as it happens:
//! it is counted in `Slot::active_hits` (under the shard lock), and the count goes to the policy
//! as one event when the last handle goes (`store/handles.rs`). So `active_hits` is 0 whenever
//! no handle is live.

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
    /// Strong references taken (live `ImmutableBlock`s, pins, duplicates pointing here) since the
    /// block last had none. Read and written only under the owning shard's lock (plain load and
    /// store); read without it by releases. See the module docs.
    pub(crate) handles: AtomicU32,
    /// Strong references given back since the block last had none: incremented without a lock.
    released: AtomicU32,
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
            released: AtomicU32::new(0),
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

    /// Live handles (taken minus given back). Exact under the owning shard's lock while no
    /// release is in flight; without the lock, a snapshot.
    #[inline]
    pub(crate) fn live_handles(&self) -> u32 {
        let taken = self.handles.load(Ordering::Acquire);
        taken.wrapping_sub(self.released.load(Ordering::Acquire))
    }

    /// Counts a new handle (call under the owning shard's lock); returns the live handles before
    /// it. Releases in flight may make that an overestimate (see the module docs).
    #[inline]
    pub(crate) fn take_handle_locked(&self) -> u32 {
        let taken = self.handles.load(Ordering::Relaxed);
        let released = self.released.load(Ordering::Acquire);
        self.handles.store(taken.wrapping_add(1), Ordering::Relaxed);
        taken.wrapping_sub(released)
    }

    /// Gives back one handle, without a lock. Returns the live handles left as this thread sees
    /// them: not zero means another handle is live; zero means this may have been the last one,
    /// and the caller must settle the slot under the shard lock (see the module docs).
    #[inline]
    pub(crate) fn give_back_handle(&self) -> u32 {
        // Release: this holder's uses of the block happen before the settle that reads the
        // counter (with acquire). Acquire: the takes of the handles whose releases precede this
        // one are visible in the read of `handles` below.
        let released = self.released.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        self.handles.load(Ordering::Acquire).wrapping_sub(released)
    }

    /// Resets both counters once no handle is live (call under the owning shard's lock).
    #[inline]
    pub(crate) fn clear_handles_locked(&self) {
        self.handles.store(0, Ordering::Relaxed);
        self.released.store(0, Ordering::Relaxed);
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
