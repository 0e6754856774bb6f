//! Block slots and counted strong references to them.
//!
//! A [`Slot`] is shared (`Arc`) by every guard of one block slot. Its state and registration are
//! written only by the owner of the slot (the guard, or the shard holding it, under that shard's
//! lock); [`SlotRef`] is the untyped strong reference behind `ImmutableBlock`. Strong references
//! are counted per slot, so cloning or dropping a handle touches only that slot's cache line.
//! The count goes from zero to one only under the owning shard's lock; a drop to zero takes that
//! lock and re-checks (see `Shared::release_batch`), so a racing match and release always agree
//! on whether the block is inactive.

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
    /// Strong references (live `ImmutableBlock`s, pins, duplicates pointing here).
    pub(crate) handles: AtomicU32,
    pub(crate) state: AtomicU8,
    /// Changes every time the slot leaves the registered states: a `WeakBlock` or a delayed
    /// release compares it to know the slot still holds the registration it saw.
    pub(crate) generation: AtomicU64,
    pub(crate) hash_lo: AtomicU64,
    pub(crate) hash_hi: AtomicU64,
    pub(crate) evict_on_release: AtomicBool,
    /// For a duplicate: the strong reference it holds on its primary.
    pub(crate) dup_of: Mutex<Option<SlotRef>>,
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
            dup_of: Mutex::new(None),
        })
    }

    pub(crate) fn state(&self) -> SlotState {
        SlotState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn set_state(&self, s: SlotState) {
        self.state.store(s as u8, Ordering::Release);
    }

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

    pub(crate) fn evict_on_release(&self) -> bool {
        self.evict_on_release.load(Ordering::Relaxed)
    }

    pub(crate) fn set_evict_on_release(&self, v: bool) {
        self.evict_on_release.store(v, Ordering::Relaxed);
    }
}

/// A counted strong reference to a registered slot (the untyped core of `ImmutableBlock`).
pub(crate) struct SlotRef {
    /// Always `Some` until the reference is consumed by `into_last` or dropped.
    slot: Option<Arc<Slot>>,
}

/// A registration whose last strong reference was just given up; the caller must hand it to
/// `Shared::release_*` so the slot goes inactive (or free).
pub(crate) struct LastRef {
    pub(crate) slot: Arc<Slot>,
    pub(crate) hash: SequenceHash,
    pub(crate) generation: u64,
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

    /// Another strong reference to a slot that is known to be held (count > 0).
    pub(crate) fn clone_ref(&self) -> SlotRef {
        let slot = self.slot();
        slot.handles.fetch_add(1, Ordering::Relaxed);
        SlotRef::adopt(slot.clone())
    }

    /// Gives up this reference; returns the registration if it was the last one.
    pub(crate) fn into_last(mut self) -> Option<LastRef> {
        let slot = self.slot.take()?;
        Self::give_up(slot)
    }

    fn give_up(slot: Arc<Slot>) -> Option<LastRef> {
        // Read the registration while our reference still pins it.
        let hash = slot.hash();
        let generation = slot.generation();
        if slot.handles.fetch_sub(1, Ordering::AcqRel) != 1 {
            return None;
        }
        Some(LastRef {
            slot,
            hash,
            generation,
        })
    }

    /// Tries to add a strong reference without any lock: succeeds only while the slot is held
    /// by someone else and still carries registration `generation`.
    pub(crate) fn try_upgrade_fast(slot: &Arc<Slot>, generation: u64) -> Option<SlotRef> {
        let mut cur = slot.handles.load(Ordering::Acquire);
        loop {
            if cur == 0 {
                return None;
            }
            match slot.handles.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        let r = SlotRef::adopt(slot.clone());
        // While we hold a reference the registration cannot change, so this check is stable.
        if slot.generation() == generation {
            Some(r)
        } else {
            drop(r);
            None
        }
    }
}

impl Drop for SlotRef {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take()
            && let Some(last) = Self::give_up(slot)
        {
            Shared::release_one(last);
        }
    }
}
