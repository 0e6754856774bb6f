//! Allocation: taking slots from the free lists and, when they run dry, victims of the manager's
//! eviction policy; giving unregistered slots back.
//!
//! All or nothing: free slots first (the home shard, then any shard whose free-slot mirror is
//! non-zero), then victims in the policy's order. Before any victim is taken the total of free
//! and inactive blocks over all shards is checked, so a failed allocation never destroys a cached
//! block (exactly so when no other thread races it). Which shard a free slot comes from depends
//! on the calling thread; which blocks are evicted never does (see `mod.rs`, "One eviction
//! order").

use super::{Shard, Shared};
use crate::manager::slot::{Slot, SlotState};
use crate::sync::{Arc, Ordering};
use crate::{BlockId, SequenceHash};

impl Shared {
    /// Takes free slots from shard `s` into `out` (at most `want`).
    fn take_free(&self, g: &mut Shard, slots: &[Arc<Slot>], want: usize, out: &mut Vec<BlockId>) {
        let take = want.min(g.free.len());
        if take == 0 {
            return;
        }
        let from = g.free.len() - take;
        for id in g.free.drain(from..) {
            slots[id.index()].set_state(SlotState::Mutable);
            out.push(id);
        }
        g.counters.mutable_delta += take as i64;
    }

    /// Fills `out` up to `n` from the free lists (home shard first). Locks only shards that have
    /// free slots: in steady state none has, and locking every shard of a busy manager would
    /// make concurrent allocators trade cache lines.
    fn take_free_anywhere(&self, slots: &[Arc<Slot>], n: usize, out: &mut Vec<BlockId>) {
        let home = self.home();
        for k in 0..self.shard_count() {
            if out.len() == n {
                return;
            }
            let s = (home + k) & self.shard_mask;
            if self.free_mirrors[s].0.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let mut g = self.shards[s].lock();
            self.take_free(&mut g, slots, n - out.len(), out);
            self.sync_available(s, &g);
        }
    }

    /// Takes `n` slots, all or nothing: free slots first (home shard, then the others), then
    /// victims of the manager's policy, in its order. Evicted hashes are appended to
    /// `evicted_out`.
    ///
    /// The caller must hold a [`PanicScope`](super::PanicScope) and turn the ids into guards
    /// before it ends: a policy panic is resumed there, and the guards give the slots back.
    pub(crate) fn allocate(
        &self,
        slots: &[Arc<Slot>],
        n: usize,
        evicted_out: Option<&mut Vec<SequenceHash>>,
    ) -> Option<Vec<BlockId>> {
        if n == 0 {
            return Some(Vec::new());
        }
        if n > self.total_blocks {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        self.take_free_anywhere(slots, n, &mut out);
        if out.len() == n {
            self.count_allocation(n, n);
            return Some(out);
        }
        // Not enough free slots: evict, but never a cached block for an allocation that cannot
        // succeed.
        let mut evicted = Vec::new();
        let need = n - out.len();
        let first_victim = out.len();
        if self.available() >= need {
            self.evict_into(slots, need, SlotState::Mutable, |g, id, h| {
                g.counters.mutable_delta += 1;
                evicted.push(h);
                out.push(id);
            });
            // The victims are owned by this call until handed out or given back below: the
            // hook sees their bytes before anyone can reuse the slots.
            if self.hooks.has_eviction() {
                let ids = &out[first_victim..first_victim + evicted.len()];
                self.hooks.evicting(self.manager_id, ids, &evicted);
            }
            // Slots another thread freed while the policy ran dry.
            self.take_free_anywhere(slots, n, &mut out);
        }
        self.hooks.evicted(&evicted);
        if let Some(e) = evicted_out {
            e.extend_from_slice(&evicted);
        }
        if out.len() == n {
            self.count_allocation(n, n - evicted.len());
            Some(out)
        } else {
            // Lost a race with other allocators: undo (the evicted blocks stay free).
            self.give_back(slots, &out);
            None
        }
    }

    fn count_allocation(&self, n: usize, from_reset: usize) {
        let st = self.stripe();
        st.allocations.fetch_add(n as u64, Ordering::Relaxed);
        st.allocations_from_reset
            .fetch_add(from_reset as u64, Ordering::Relaxed);
    }

    /// Returns unregistered slots (Mutable) to the home shard's free list.
    pub(super) fn give_back(&self, slots: &[Arc<Slot>], ids: &[BlockId]) {
        if ids.is_empty() {
            return;
        }
        let s = self.home();
        let mut g = self.shards[s].lock();
        for &id in ids {
            slots[id.index()].set_state(SlotState::Reset);
            g.free.push(id);
        }
        g.counters.mutable_delta -= ids.len() as i64;
        self.sync_available(s, &g);
    }

    /// Frees an unregistered slot (dropped `MutableBlock` or `CompleteBlock`).
    pub(crate) fn free_unregistered(&self, slot: &Slot) {
        let s = self.home();
        let mut g = self.shards[s].lock();
        slot.set_state(SlotState::Reset);
        g.free.push(slot.id);
        g.counters.mutable_delta -= 1;
        self.sync_available(s, &g);
    }
}
