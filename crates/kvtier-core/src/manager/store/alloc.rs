//! Allocation: taking slots from the free lists and, when they run dry, from the eviction
//! policies; giving unregistered slots back.
//!
//! All or nothing: free slots first (the home shard, then any shard whose free-slot mirror is
//! non-zero), then victims, each round from the fuller of two randomly sampled shards. Before a
//! shard that cannot cover the rest on its own is touched, the total over all shards is checked,
//! so a failed allocation never destroys a cached block.

use std::cell::Cell;

use super::{Shard, Shared, home_hint};
use crate::manager::slot::{Slot, SlotState};
use crate::sync::{Arc, Ordering};
use crate::{BlockId, SequenceHash};

thread_local! {
    /// Per-thread xorshift state for eviction-shard choices (seeded from the home shard).
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// The calling thread's next pseudo-random number (xorshift, seeded from the home shard).
fn next_random() -> u64 {
    RNG.with(|c| {
        let mut x = c.get();
        if x == 0 {
            x = (home_hint() as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.set(x);
        x
    })
}

/// A uniformly chosen index in `0..n` (`n <= 128`) whose bit in `skip` is clear (`None` if
/// every one is set).
fn pick_shard(n: usize, skip: u128) -> Option<usize> {
    let start = (next_random() % n as u64) as usize;
    (0..n)
        .map(|k| (start + k) % n)
        .find(|&i| skip & (1u128 << i) == 0)
}

impl Shared {
    /// Takes free slots from shard `s` into `out` (at most `want`).
    pub(super) fn take_free(
        &self,
        g: &mut Shard,
        slots: &[Arc<Slot>],
        want: usize,
        out: &mut Vec<BlockId>,
    ) {
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

    /// Evicts up to `want` policy victims of one shard into `out`.
    pub(super) fn take_victims(
        &self,
        g: &mut Shard,
        slots: &[Arc<Slot>],
        want: usize,
        out: &mut Vec<BlockId>,
        evicted: &mut Vec<SequenceHash>,
    ) {
        for _ in 0..want {
            let Some((id, h)) = self.evict_one(g, slots, SlotState::Mutable) else {
                break;
            };
            g.counters.mutable_delta += 1;
            evicted.push(h);
            out.push(id);
        }
    }

    /// Takes the policy's victim out of the index and leaves its slot in `to` (Mutable for an
    /// allocation, Reset when draining). Returns the slot and the hash it held.
    pub(super) fn evict_one(
        &self,
        g: &mut Shard,
        slots: &[Arc<Slot>],
        to: SlotState,
    ) -> Option<(BlockId, SequenceHash)> {
        // A user policy may break its contract (or panic): the shard policy only hands out a
        // victim that really is an inactive block of this shard.
        let id = g
            .policy
            .evict(&g.index, slots, &mut g.counters.policy_violations)?;
        let slot = &slots[id.index()];
        let h = slot.hash();
        g.index.remove(h, id);
        slot.bump_generation();
        slot.set_evict_on_release(self.default_evict_on_release);
        slot.set_state(to);
        g.counters.evictions += 1;
        Some((id, h))
    }

    /// Takes `n` slots, all or nothing: free slots first (home shard, then the others), then
    /// policy victims, each time from the fuller of two random shards. Evicted hashes are
    /// appended to `evicted_out`.
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
        let shards = self.shard_count();
        let home = self.home();
        let mut out = Vec::with_capacity(n);
        for k in 0..shards {
            let s = (home + k) & self.shard_mask;
            // Lock only shards that have free slots: in steady state none has, and locking every
            // shard of a busy manager would make concurrent allocators trade cache lines.
            if self.free_mirrors[s].0.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let mut g = self.shards[s].lock();
            self.take_free(&mut g, slots, n - out.len(), &mut out);
            self.sync_available(s, &g);
            drop(g);
            if out.len() == n {
                self.count_allocation(n, n);
                return Some(out);
            }
        }
        // Not enough free slots: evict. Each round takes what it can from the fuller of two
        // random shards (so every shard's policy ages its blocks at a similar pace, and
        // concurrent allocators rarely pick the same shard). A cached block is never destroyed
        // for an allocation that cannot succeed: before a shard that cannot cover the rest on
        // its own is touched, the total over all shards is checked.
        let mut drained: u128 = 0;
        let mut checked = false;
        let mut evicted = Vec::new();
        while out.len() < n {
            let (Some(a), Some(b)) = (pick_shard(shards, drained), pick_shard(shards, drained))
            else {
                break;
            };
            let avail = |i: usize| self.shards[i].available.load(Ordering::Relaxed);
            let (avail_a, avail_b) = (avail(a), avail(b));
            let s = if avail_a >= avail_b { a } else { b };
            if avail_a.max(avail_b) == 0 {
                drained |= (1u128 << a) | (1u128 << b);
                continue;
            }
            let mut g = self.shards[s].lock();
            let need = n - out.len();
            if !checked && g.free.len() + g.policy.inactive() < need {
                drop(g);
                if self.available() < need {
                    break;
                }
                checked = true;
                g = self.shards[s].lock();
            }
            self.take_free(&mut g, slots, need, &mut out);
            let need = n - out.len();
            self.take_victims(&mut g, slots, need, &mut out, &mut evicted);
            self.sync_available(s, &g);
            drained |= 1u128 << s;
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
    fn give_back(&self, slots: &[Arc<Slot>], ids: &[BlockId]) {
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
