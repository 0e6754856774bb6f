//! Eviction: the shard guard that records policy events, applying the buffered events to the
//! manager's one policy instance (`flush`), and taking the victims it gives up (`evict_into`,
//! `drain_inactive`). See `mod.rs`, "One eviction order", for the design and the lock order.

use std::ops::{Deref, DerefMut};

use super::policy::{Event, EventKind, ManagerPolicy, Victim};
use super::{PanicScope, Shard, Shared};
use crate::BlockId;
use crate::hash::SequenceHash;
use crate::manager::slot::{Slot, SlotState};
use crate::sync::{Arc, MutexGuard};

/// Events a shard buffers before the operation that filled it applies them all.
const FLUSH_AT: usize = 256;

/// A locked shard that records policy events; when its buffer fills up, dropping the guard
/// applies every shard's pending events (after the shard lock is released: lock order rule 2).
pub(crate) struct ShardGuard<'a> {
    pub(super) shard: Option<MutexGuard<'a, Shard>>,
    pub(super) shared: &'a Shared,
    pub(super) flush: bool,
}

impl ShardGuard<'_> {
    /// Records a policy call, applied at the next flush in this thread's order.
    #[inline]
    pub(super) fn record(&mut self, kind: EventKind) {
        let events = &mut self.events;
        events.push(Event::new(kind));
        if events.len() >= FLUSH_AT {
            self.flush = true;
        }
    }
}

impl Deref for ShardGuard<'_> {
    type Target = Shard;
    fn deref(&self) -> &Shard {
        match &self.shard {
            Some(g) => g,
            None => unreachable!("the shard stays locked until the guard drops"),
        }
    }
}

impl DerefMut for ShardGuard<'_> {
    fn deref_mut(&mut self) -> &mut Shard {
        match &mut self.shard {
            Some(g) => g,
            None => unreachable!("the shard stays locked until the guard drops"),
        }
    }
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        drop(self.shard.take());
        if self.flush {
            self.shared.flush();
        }
    }
}

impl Shared {
    /// Applies every shard's pending events to the policy, in each thread's order (the caller
    /// holds the policy lock and no shard lock). Single-threaded, this is exactly the order the
    /// calls were made in, whatever the shard count.
    fn flush_locked(&self, p: &mut ManagerPolicy) {
        let mut taken: Vec<Vec<Event>> = Vec::new();
        for shard in self.shards.iter() {
            let mut g = shard.lock.lock();
            if !g.events.is_empty() {
                let spare = p.spare.pop().unwrap_or_default();
                taken.push(std::mem::replace(&mut g.events, spare));
            }
        }
        match taken.len() {
            0 => {}
            1 => taken[0].iter().for_each(|e| p.apply(e)),
            _ => {
                // Merge by sequence number, taking buffer heads only.
                let mut heads = vec![0usize; taken.len()];
                loop {
                    let mut best: Option<(usize, u64)> = None;
                    for (b, buf) in taken.iter().enumerate() {
                        if let Some(e) = buf.get(heads[b])
                            && best.is_none_or(|(_, s)| e.seq < s)
                        {
                            best = Some((b, e.seq));
                        }
                    }
                    let Some((b, _)) = best else { break };
                    p.apply(&taken[b][heads[b]]);
                    heads[b] += 1;
                }
            }
        }
        for mut buf in taken {
            buf.clear();
            p.spare.push(buf);
        }
    }

    /// Applies every shard's pending events to the policy (call with no lock held).
    pub(crate) fn flush(&self) {
        let scope = PanicScope::enter();
        let mut p = self.policy.0.lock();
        self.flush_locked(&mut p);
        drop(p);
        scope.finish();
    }

    /// Takes victim `v` under its shard lock (the caller holds the policy lock) if it still is
    /// the inactive block the policy gave up: same inactive version, still in the index. Leaves
    /// the slot in `to` (Mutable for an allocation, Reset when draining), then runs `then` under
    /// the lock. `false` for a stale victim (matched since, and back in the policy through its
    /// own events if it became inactive again).
    fn take_victim(
        &self,
        slots: &[Arc<Slot>],
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
        let mut g = self.shards[s].lock();
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
        then(&mut g, h);
        self.sync_available(s, &g);
        true
    }

    /// Takes up to `want` victims (flushing pending events first); for each, `then` runs under
    /// its shard lock. Stops when `want` are taken or the policy has none left.
    pub(super) fn evict_into(
        &self,
        slots: &[Arc<Slot>],
        want: usize,
        to: SlotState,
        mut then: impl FnMut(&mut Shard, BlockId, SequenceHash),
    ) -> usize {
        let mut p = self.policy.0.lock();
        self.flush_locked(&mut p);
        let mut taken = 0;
        let mut victims = Vec::new();
        while taken < want {
            victims.clear();
            p.evict(want - taken, &mut victims);
            if victims.is_empty() {
                break;
            }
            for &v in &victims {
                if self.take_victim(slots, v, to, |g, h| then(g, v.id, h)) {
                    taken += 1;
                }
            }
        }
        taken
    }

    /// Policy calls that panicked and wrong victims the policy returned (pending events are
    /// applied first).
    pub(crate) fn policy_faults(&self) -> (u64, u64) {
        let scope = PanicScope::enter();
        let mut p = self.policy.0.lock();
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
        self.evict_into(slots, usize::MAX, SlotState::Reset, |g, id, h| {
            g.free.push(id);
            removed.push(h);
        });
        self.hooks.evicted(&removed);
        scope.finish();
        removed
    }
}
