//! Handles: taking, cloning, upgrading and giving back counted strong references to registered
//! slots (see the module docs of `store` for the lock rules and `slot.rs` for the counting).

use super::{PanicScope, ShardGuard, Shared, Walker};
use crate::eviction::{AccessKind, HitSignals};
use crate::hash::SequenceHash;
use crate::manager::slot::{Slot, SlotRef, SlotState};
use crate::sync::Arc;

use super::policy::EventKind;

impl Shared {
    /// Adds a strong reference to a registered slot under its shard lock, resurrecting it from
    /// the inactive pool if it was there.
    #[inline]
    pub(super) fn acquire_locked(g: &mut ShardGuard<'_>, slot: &Arc<Slot>) -> SlotRef {
        Self::count_handle_locked(g, slot);
        SlotRef::adopt(slot.clone())
    }

    /// The counting half of [`Self::acquire_locked`] (the caller owns the new `Arc` count).
    /// Returns whether the block was already active (had a handle).
    #[inline(always)]
    pub(super) fn count_handle_locked(g: &mut ShardGuard<'_>, slot: &Slot) -> bool {
        // Plain load and store under this lock (see `slot.rs`).
        let prev = slot.take_handle_locked();
        if prev == 0 && slot.state() == SlotState::Inactive {
            g.record(EventKind::Remove {
                id: slot.id,
                version: slot.version(),
            });
            slot.set_state(SlotState::Primary);
            g.inactive -= 1;
            g.counters.resurrections += 1;
        }
        prev != 0
    }

    /// Another handle on a slot the caller already holds one on (`ImmutableBlock::clone`).
    pub(crate) fn add_handle(slot: &Arc<Slot>) -> SlotRef {
        let scope = PanicScope::enter();
        let shared = &*slot.shared;
        let s = shared.shard_of(slot.hash());
        let mut g = shared.lock_shard(s);
        Self::count_handle_locked(&mut g, slot);
        shared.sync_available(s, &g);
        drop(g);
        let r = SlotRef::adopt(slot.clone());
        scope.finish();
        r
    }

    /// Looks hashes up in order and takes a strong reference to each hit (resurrecting
    /// inactive blocks). With `stop_at_miss`, stops at the first miss; otherwise pushes `None`
    /// for misses. Consecutive hashes of one shard share one lock acquisition.
    pub(crate) fn lookup_batch(
        &self,
        slots: &[Arc<Slot>],
        hashes: &[SequenceHash],
        touch: bool,
        stop_at_miss: bool,
        mut out: impl FnMut(Option<SlotRef>),
    ) -> usize {
        let scope = PanicScope::enter();
        let mut found = 0;
        let mut w = Walker::new(self);
        for &h in hashes {
            let s = self.shard_of(h);
            // Inline check for the common case (the same shard as the previous hash); switching
            // shards goes through the walker.
            if !matches!(&w.current, Some((c, _)) if *c == s) {
                w.shard(s);
            }
            let Some((_, g)) = &mut w.current else {
                unreachable!("the walker holds the shard it just locked")
            };
            match g.index.get(h, slots) {
                Some(id) => {
                    let slot = &slots[id.index()];
                    let was_active = Self::count_handle_locked(g, slot);
                    if touch {
                        match (self.hit_signals, was_active) {
                            // Reported as one event when the last handle goes.
                            (HitSignals::All, true) => slot.count_active_hit(),
                            (HitSignals::All | HitSignals::Inactive, false) => {
                                g.record(EventKind::Access {
                                    hash: h,
                                    kind: AccessKind::Hit,
                                })
                            }
                            _ => {}
                        }
                    }
                    found += 1;
                    out(Some(SlotRef::adopt(slot.clone())));
                }
                None if stop_at_miss => break,
                None => out(None),
            }
        }
        w.finish();
        drop(w);
        scope.finish();
        found
    }

    /// `WeakBlock::upgrade`: a new handle if the slot still holds the registration the weak
    /// reference saw (resurrecting it from the inactive pool if needed).
    pub(crate) fn upgrade(
        &self,
        slot: &Arc<Slot>,
        hash: SequenceHash,
        generation: u64,
    ) -> Option<SlotRef> {
        let scope = PanicScope::enter();
        let s = self.shard_of(hash);
        let mut g = self.lock_shard(s);
        let live = slot.generation() == generation
            && match slot.state() {
                SlotState::Primary | SlotState::Inactive => g.index.holds(hash, slot.id),
                // A live duplicate (a freed one has a new generation).
                SlotState::Duplicate => slot.live_handles() > 0,
                _ => false,
            };
        let r = live.then(|| Self::acquire_locked(&mut g, slot));
        self.sync_available(s, &g);
        drop(g);
        scope.finish();
        r
    }

    /// Gives back one handle of `slot` under its shard lock, settling the slot if it was the
    /// last. Hashes that left the manager are pushed to `removed`.
    pub(super) fn release_locked(
        &self,
        g: &mut ShardGuard<'_>,
        slot: &Slot,
        removed: &mut Vec<SequenceHash>,
    ) {
        slot.give_back_handle();
        self.settle_locked(g, slot, removed);
    }

    /// Under the shard lock of a registration of `slot`: if no handle is live, the block becomes
    /// inactive (or its slot free); otherwise, or if that already happened, nothing changes.
    /// Hashes that left the manager are pushed to `removed`.
    fn settle_locked(&self, g: &mut ShardGuard<'_>, slot: &Slot, removed: &mut Vec<SequenceHash>) {
        // Never below the true count here: `handles` is exact under this lock and `released` can
        // only be read behind (see `slot.rs`). So zero means no handle is live; a release this
        // read missed settles the slot again itself.
        let live = slot.live_handles();
        debug_assert!(live < u32::MAX / 2, "handle released twice");
        if live != 0 {
            return;
        }
        let hash = slot.hash();
        match slot.state() {
            SlotState::Primary => {
                slot.clear_handles_locked();
                // Hits counted while it was active reach the policy before it becomes inactive.
                let hits = slot.take_active_hits();
                if hits != 0 {
                    g.record(EventKind::Hits { hash, count: hits });
                }
                if slot.evict_on_release() {
                    g.index.remove(hash, slot.id);
                    slot.bump_generation();
                    slot.set_evict_on_release(self.default_evict_on_release);
                    slot.set_state(SlotState::Reset);
                    g.free.push(slot.id);
                    g.counters.released_to_reset += 1;
                    removed.push(hash);
                } else {
                    slot.bump_version();
                    slot.set_state(SlotState::Inactive);
                    g.inactive += 1;
                    g.record(EventKind::Insert {
                        id: slot.id,
                        version: slot.version(),
                        hash,
                    });
                }
            }
            SlotState::Duplicate => {
                slot.clear_handles_locked();
                slot.bump_generation();
                slot.set_state(SlotState::Reset);
                g.free.push(slot.id);
                g.counters.released_to_reset += 1;
                // The primary shares the hash, hence this shard and this lock.
                let primary = slot.dup_of.lock().take();
                if let Some(p) = primary {
                    self.release_locked(g, &p, removed);
                    // Not the last `Arc` while the slot table lives; if the manager is gone its
                    // drop only frees memory (a primary holds no `dup_of`).
                    drop(p);
                }
            }
            // Already settled by another release of the same handles (inactive), or a release
            // that saw no live handle was not the last one and the block moved on since.
            _ => {}
        }
    }

    /// Gives back one handle (a dropped `ImmutableBlock`): without a lock, and if it may have
    /// been the last, settles the slot under the shard lock.
    #[inline]
    pub(crate) fn release_one(slot: Arc<Slot>) {
        // Read while the handle is held: the registration it belongs to.
        let (hash, generation) = (slot.hash(), slot.generation());
        if slot.give_back_handle() != 0 {
            return;
        }
        Self::release_last(slot, hash, generation);
    }

    /// The settling half of [`Self::release_one`].
    #[inline(never)]
    fn release_last(slot: Arc<Slot>, hash: SequenceHash, generation: u64) {
        let scope = PanicScope::enter();
        let shared = &*slot.shared;
        let s = shared.shard_of(hash);
        let mut removed = Vec::new();
        let mut g = shared.lock_shard(s);
        // Under the lock of `hash`'s shard, the generation cannot change: if it is the one the
        // handle saw, the slot still holds that registration, owned by this shard.
        if slot.generation() == generation {
            shared.settle_locked(&mut g, &slot, &mut removed);
        }
        shared.sync_available(s, &g);
        drop(g);
        shared.hooks.evicted(&removed);
        scope.finish();
        // `slot` (and its `Arc` count) goes last, after every borrow of it.
    }

    /// Gives back many handles in order; consecutive handles of one shard share one lock
    /// acquisition.
    pub(crate) fn release_batch(&self, refs: impl Iterator<Item = SlotRef>) {
        let scope = PanicScope::enter();
        let mut removed = Vec::new();
        let mut foreign = Vec::new();
        let mut w = Walker::new(self);
        for r in refs {
            if !std::ptr::eq(&*r.slot().shared, self) {
                // Not ours (a caller mixed managers): released through its own store once our
                // lock is gone (lock order rule 1 holds across managers too).
                foreign.push(r);
                continue;
            }
            let slot = r.into_slot();
            let (hash, generation) = (slot.hash(), slot.generation());
            if slot.give_back_handle() != 0 {
                // Another handle is live: nothing for the shard to do.
                continue;
            }
            let g = w.shard(self.shard_of(hash));
            if slot.generation() == generation {
                self.settle_locked(g, &slot, &mut removed);
            }
            // Dropping the `Arc` under the lock is fine: the manager calling us keeps the slot
            // table, hence every slot, alive.
            drop(slot);
        }
        w.finish();
        drop(w);
        drop(foreign);
        self.hooks.evicted(&removed);
        scope.finish();
    }
}
