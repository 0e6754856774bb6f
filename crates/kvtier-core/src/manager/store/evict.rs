//! Eviction: the shard guard that records policy events, applying the buffered events to the
//! manager's one policy instance (`flush`), and taking the victims it gives up (`evict_into`,
//! `drain_inactive`). See `mod.rs`, "One eviction order", for the design and the lock order.

use std::ops::{Deref, DerefMut};

use super::policy::{Event, EventKind, ManagerPolicy, Victim};
use super::{PaddedPolicy, PanicScope, Shard, Shared};
use crate::BlockId;
use crate::hash::SequenceHash;
use crate::manager::slot::{Slot, SlotState};
use crate::sync::{Arc, AtomicBool, MutexGuard, Ordering};

/// Events a shard buffers before the operation that filled it applies them all.
const FLUSH_AT: usize = 256;

/// A locked shard that records policy events; when its buffer fills up, dropping the guard
/// applies every shard's pending events (after the shard lock is released: lock order rule 2).
pub(crate) struct ShardGuard<'a> {
    shard: MutexGuard<'a, Shard>,
    shared: &'a Shared,
    /// The shard's "events pending" mirror, set when its buffer turns non-empty.
    pending: &'a AtomicBool,
    flush: bool,
}

impl<'a> ShardGuard<'a> {
    /// Locks shard `s` of `shared`.
    #[inline]
    pub(super) fn lock(shared: &'a Shared, s: usize) -> Self {
        let pad = &shared.shards[s];
        ShardGuard {
            shard: pad.lock(),
            shared,
            pending: &pad.pending,
            flush: false,
        }
    }

    /// Records a policy call, applied at the next flush in this thread's order.
    #[inline]
    pub(super) fn record(&mut self, kind: EventKind) {
        let events = &mut self.shard.events;
        events.push(Event::new(kind));
        let len = events.len();
        if len == 1 {
            // Under the shard lock, like the flusher's reset: the mirror never says "empty"
            // while this buffer holds events a later flush of this thread must see.
            self.pending.store(true, Ordering::Relaxed);
        } else if len >= FLUSH_AT {
            self.flush = true;
        }
    }
}

impl Deref for ShardGuard<'_> {
    type Target = Shard;
    #[inline]
    fn deref(&self) -> &Shard {
        &self.shard
    }
}

impl DerefMut for ShardGuard<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Shard {
        &mut self.shard
    }
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        if self.flush {
            // Rare (a full buffer): the shard is unlocked while the events are applied, then
            // locked again only for the guard's own unlock.
            let shared = self.shared;
            MutexGuard::unlocked(&mut self.shard, || shared.flush());
        }
    }
}

impl PaddedPolicy {
    /// Locks the policy. A flush and eviction holds it for a few microseconds at most, and an
    /// allocator that finds it taken cannot make progress without it, so a waiter spins on
    /// `try_lock` for a few microseconds before parking: being woken from a futex costs more
    /// than the whole critical section.
    #[inline]
    fn lock(&self) -> MutexGuard<'_, ManagerPolicy> {
        if let Some(g) = self.0.try_lock() {
            return g;
        }
        // 256 pause instructions: about 5 µs where one costs ~65 cycles (AMD Zen 2 and later).
        for _ in 0..32 {
            for _ in 0..8 {
                std::hint::spin_loop();
            }
            if !self.0.is_locked()
                && let Some(g) = self.0.try_lock()
            {
                return g;
            }
        }
        self.0.lock()
    }
}

/// Applies the events of several buffers, each sorted by sequence number, in sequence order
/// (ties between threads in any order): runs from the buffer with the smallest head, each
/// until its next event passes the second smallest head.
fn merge_apply(p: &mut ManagerPolicy, bufs: &[Vec<Event>]) {
    let mut heads = vec![0usize; bufs.len()];
    loop {
        let mut best: Option<(usize, u64)> = None;
        let mut second = u64::MAX;
        for (b, buf) in bufs.iter().enumerate() {
            let Some(e) = buf.get(heads[b]) else {
                continue;
            };
            match best {
                Some((_, s)) if e.seq >= s => second = second.min(e.seq),
                Some((_, s)) => {
                    second = s;
                    best = Some((b, e.seq));
                }
                None => best = Some((b, e.seq)),
            }
        }
        let Some((b, _)) = best else { break };
        let buf = &bufs[b];
        let mut i = heads[b];
        // The head goes first whatever the ties, so every round makes progress.
        p.apply(&buf[i]);
        i += 1;
        while let Some(e) = buf.get(i)
            && e.seq < second
        {
            p.apply(e);
            i += 1;
        }
        heads[b] = i;
    }
}

impl Shared {
    /// Applies every shard's pending events to the policy, in each thread's order (the caller
    /// holds the policy lock and no shard lock). Single-threaded, this is exactly the order the
    /// calls were made in, whatever the shard count.
    ///
    /// Shards whose pending mirror is clear are skipped without locking them. The buffers are
    /// merged by sequence number a run at a time: the buffer with the smallest head applies
    /// events until its head passes the second smallest head, so a thread's events, which come
    /// in runs per shard (a chain's blocks sit in a few shards), cost one comparison each.
    fn flush_locked(&self, p: &mut ManagerPolicy) {
        let mut taken = std::mem::take(&mut p.taken);
        for pad in self.shards.iter() {
            if !pad.pending.load(Ordering::Relaxed) {
                continue;
            }
            let mut g = pad.lock.lock();
            pad.pending.store(false, Ordering::Relaxed);
            if !g.events.is_empty() {
                let spare = p.spare.pop().unwrap_or_default();
                taken.push(std::mem::replace(&mut g.events, spare));
            }
        }
        match taken.len() {
            0 => {}
            1 => taken[0].iter().for_each(|e| p.apply(e)),
            _ => merge_apply(p, &taken),
        }
        for mut buf in taken.drain(..) {
            buf.clear();
            p.spare.push(buf);
        }
        p.taken = taken;
    }

    /// Applies every shard's pending events to the policy (call with no lock held).
    pub(crate) fn flush(&self) {
        let scope = PanicScope::enter();
        let mut p = self.policy.lock();
        self.flush_locked(&mut p);
        drop(p);
        scope.finish();
    }

    /// Takes victim `v` under its shard lock if it still is the inactive block the policy gave
    /// up: same inactive version, still in the index. `held` is the shard lock the caller holds,
    /// if any; it is kept when `v` lives in that shard, and otherwise released before `v`'s shard
    /// is locked (lock order rule 1). Leaves the slot in `to` (Mutable for an allocation, Reset
    /// when draining), then runs `then` under the lock. `false` for a stale victim (matched
    /// since, and back in the policy through its own events if it became inactive again).
    fn take_victim<'a>(
        &'a self,
        slots: &[Arc<Slot>],
        held: &mut Option<(usize, MutexGuard<'a, Shard>)>,
        v: Victim,
        to: SlotState,
        then: impl FnOnce(&mut Shard, SequenceHash),
    ) -> bool {
        let Some(slot) = slots.get(v.id.index()) else {
            return false;
        };
        // Read before the lock: if the slot was re-registered under another hash meanwhile, its
        // version changed too, and the checks below fail under whichever lock this names.
        let h = slot.hash();
        let s = self.shard_of(h);
        if held.as_ref().map(|(c, _)| *c) != Some(s) {
            self.release_held(held);
            *held = Some((s, self.shards[s].lock()));
        }
        let Some((_, g)) = held else {
            unreachable!("the shard was just locked")
        };
        if slot.state() != SlotState::Inactive
            || slot.version() != v.version
            || !g.index.holds(h, v.id)
        {
            return false;
        }
        g.index.remove(h, v.id);
        g.inactive -= 1;
        slot.bump_generation();
        slot.set_evict_on_release(self.default_evict_on_release);
        slot.set_state(to);
        g.counters.evictions += 1;
        then(g, h);
        true
    }

    /// Publishes the availability of the shard a victim walk holds and unlocks it.
    fn release_held(&self, held: &mut Option<(usize, MutexGuard<'_, Shard>)>) {
        if let Some((s, g)) = held.take() {
            self.sync_available(s, &g);
        }
    }

    /// Takes up to `want` victims (flushing pending events first); for each, `then` runs under
    /// its shard lock. Stops when `want` are taken or the policy has none left.
    ///
    /// The policy lock is held only to apply the pending events and pick the victims; they are
    /// taken after it is released, consecutive victims of one shard under one acquisition of
    /// its lock, so other threads' flushes and evictions do not wait for this one's index
    /// updates. A victim picked here is in no policy until it is taken or found stale (its own
    /// later events put it back if it became inactive again), so nothing can take it twice.
    pub(super) fn evict_into(
        &self,
        slots: &[Arc<Slot>],
        want: usize,
        to: SlotState,
        mut then: impl FnMut(&mut Shard, BlockId, SequenceHash),
    ) -> usize {
        let mut taken = 0;
        let mut victims = Vec::new();
        while taken < want {
            victims.clear();
            let mut p = self.policy.lock();
            self.flush_locked(&mut p);
            p.evict(want - taken, &mut victims);
            drop(p);
            if victims.is_empty() {
                break;
            }
            let mut held = None;
            for &v in &victims {
                if self.take_victim(slots, &mut held, v, to, |g, h| then(g, v.id, h)) {
                    taken += 1;
                }
            }
            self.release_held(&mut held);
        }
        taken
    }

    /// Policy calls that panicked and wrong victims the policy returned (pending events are
    /// applied first).
    pub(crate) fn policy_faults(&self) -> (u64, u64) {
        let scope = PanicScope::enter();
        let mut p = self.policy.lock();
        self.flush_locked(&mut p);
        let r = (p.panics(), p.violations());
        drop(p);
        scope.finish();
        r
    }

    /// Moves every inactive block to the free lists, in the policy's eviction order; returns the
    /// hashes.
    pub(crate) fn drain_inactive(&self, slots: &[Arc<Slot>]) -> Vec<SequenceHash> {
        let scope = PanicScope::enter();
        let mut removed = Vec::new();
        if self.hooks.has_eviction() {
            // Held as Mutable (owned by this call, in no free list) until the hook has seen
            // them, then freed.
            let mut ids = Vec::new();
            self.evict_into(slots, usize::MAX, SlotState::Mutable, |g, id, h| {
                g.counters.mutable_delta += 1;
                ids.push(id);
                removed.push(h);
            });
            self.hooks.evicting(self.manager_id, &ids, &removed);
            self.give_back(slots, &ids);
        } else {
            self.evict_into(slots, usize::MAX, SlotState::Reset, |g, id, h| {
                g.free.push(id);
                removed.push(h);
            });
        }
        self.hooks.evicted(&removed);
        scope.finish();
        removed
    }
}
