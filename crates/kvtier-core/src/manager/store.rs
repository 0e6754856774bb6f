//! The shared state of one manager: slots, shards, and every pool transition.
//!
//! The store is split into `shards` independent parts, each behind its own mutex, so several
//! threads can allocate, register, match and release at once. A registered hash lives in the
//! shard chosen by its bits; a slot is *owned* by whatever holds it:
//!
//! ```text
//!            allocate (free list or evict)          stage / complete
//!   Reset ---------------------------------> Mutable ----------------> Staged
//!     ^  <--------------- drop ---------------'  ^                     |  |
//!     |  <------------------------ drop ---------|---------------------'  | register
//!     |                                          |                        v
//!     |          evict (policy victim)        Inactive <--- last drop --- Primary
//!     '----------------------------------------- |  ----- match/upgrade ---> (active)
//!     '--- last drop (Duplicate, evict-on-release) -------------------------'
//! ```
//!
//! - *Reset* slots sit in some shard's free list.
//! - *Mutable* / *Staged* slots are owned by their guard and by no shard.
//! - *Primary* / *Inactive* / *Duplicate* slots are owned by the shard of their hash. A primary
//!   is in that shard's `index`; an inactive primary is also in that shard's eviction policy.
//!
//! Strong references are counted per slot (`Slot::handles`), so cloning or dropping a block
//! handle touches only that slot's cache line. The count is changed from zero to one only under
//! the owning shard's lock (match, upgrade, registration); a drop to zero takes that lock and
//! re-checks, so a racing match and release always agree on whether the block is inactive.
//!
//! # Lock ordering
//! 1. At most one shard lock is held at a time.
//! 2. A slot's `dup_of` mutex may be taken while holding the shard lock of that slot, never the
//!    other way round.
//! 3. No lock is held while user code runs (policy code is ours to call under the lock; registry
//!    and touch callbacks run after unlocking).
//!
//! Counters live in the shards (plain integers under the lock), so they never contend between
//! threads and a snapshot that locks every shard in turn is exact when the manager is quiescent.

use std::cell::Cell;

use crate::eviction::{AccessKind, EvictionPolicy, PolicyContext, PolicyFactory};
use crate::hash::{SeqHashMap, SequenceHash};
use crate::manager::hooks::Hooks;
use crate::metrics::ShardCounters;
use crate::sync::{Arc, AtomicBool, AtomicU8, AtomicU32, AtomicU64, Mutex, Ordering};
use crate::BlockId;

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

/// Whether a second block with an already-registered hash is kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DuplicationPolicy {
    /// The new block becomes a duplicate of the primary: a distinct slot holding a strong
    /// reference to the primary; when the duplicate's last reference drops its slot is freed
    /// (never cached). This is the default.
    #[default]
    Allow,
    /// The new block's slot is returned to the reset pool and the caller gets the primary.
    Reject,
}

/// One block slot. Shared by every guard of the slot through an `Arc`.
pub(crate) struct Slot {
    pub(crate) id: BlockId,
    pub(crate) shared: Arc<Shared>,
    /// Strong references (live `ImmutableBlock`s, pins, duplicates pointing here).
    pub(crate) handles: AtomicU32,
    state: AtomicU8,
    /// Changes every time the slot leaves the registered states: a `WeakBlock` or a delayed
    /// release compares it to know the slot still holds the registration it saw.
    generation: AtomicU64,
    hash_lo: AtomicU64,
    hash_hi: AtomicU64,
    evict_on_release: AtomicBool,
    /// For a duplicate: the strong reference it holds on its primary.
    dup_of: Mutex<Option<SlotRef>>,
}

impl Slot {
    pub(crate) fn state(&self) -> SlotState {
        SlotState::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set_state(&self, s: SlotState) {
        self.state.store(s as u8, Ordering::Release);
    }

    pub(crate) fn hash(&self) -> SequenceHash {
        let lo = self.hash_lo.load(Ordering::Acquire) as u128;
        let hi = self.hash_hi.load(Ordering::Acquire) as u128;
        SequenceHash::from_u128((hi << 64) | lo)
    }

    fn set_hash(&self, h: SequenceHash) {
        self.hash_lo.store(h.as_u128() as u64, Ordering::Release);
        self.hash_hi.store((h.as_u128() >> 64) as u64, Ordering::Release);
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump_generation(&self) {
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
    slot: Arc<Slot>,
}

impl SlotRef {
    /// Wraps a slot whose `handles` count was already incremented for this reference.
    fn adopt(slot: Arc<Slot>) -> SlotRef {
        SlotRef { slot }
    }

    pub(crate) fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }

    /// Another strong reference to a slot that is known to be held (count > 0).
    pub(crate) fn clone_ref(&self) -> SlotRef {
        self.slot.handles.fetch_add(1, Ordering::Relaxed);
        SlotRef {
            slot: self.slot.clone(),
        }
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
        let slot = &self.slot;
        // Read the registration while our reference still pins it.
        let hash = slot.hash();
        let generation = slot.generation();
        if slot.handles.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        slot.shared.release_last(slot, hash, generation);
    }
}

/// A thread's preferred shard (free list and first eviction shard), assigned round-robin.
fn home_hint() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static HOME: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    HOME.with(|h| {
        let mut v = h.get();
        if v == usize::MAX {
            v = NEXT.fetch_add(1, Ordering::Relaxed);
            h.set(v);
        }
        v
    })
}

/// One shard: the primaries whose hash falls here, a free list, an eviction policy, counters.
pub(crate) struct Shard {
    index: SeqHashMap<SequenceHash, BlockId>,
    free: Vec<BlockId>,
    policy: Box<dyn EvictionPolicy>,
    pub(crate) counters: ShardCounters,
    /// Round-robin cursor for spreading evictions over shards.
    evict_cursor: usize,
}

/// A shard padded to its own cache lines.
#[repr(align(128))]
pub(crate) struct PaddedShard {
    pub(crate) lock: Mutex<Shard>,
    /// `free.len() + policy.len()`, mirrored for lock-free availability reads.
    available: std::sync::atomic::AtomicUsize,
}

/// Everything release paths need, shared by the manager and every slot.
pub(crate) struct Shared {
    pub(crate) shards: Box<[PaddedShard]>,
    shard_mask: usize,
    pub(crate) total_blocks: usize,
    pub(crate) duplication: DuplicationPolicy,
    pub(crate) default_evict_on_release: bool,
    pub(crate) hooks: Hooks,
    pub(crate) policy_name: String,
    /// Counters bumped outside any shard lock, striped by thread to avoid contention.
    pub(crate) stripes: Box<[Stripe]>,
}

/// Counters of one stripe; each thread adds to its own stripe (by home shard).
#[repr(align(128))]
#[derive(Default)]
pub(crate) struct Stripe {
    pub(crate) stagings: AtomicU64,
    pub(crate) allocations: AtomicU64,
    pub(crate) allocations_from_reset: AtomicU64,
    pub(crate) match_requested: AtomicU64,
    pub(crate) match_returned: AtomicU64,
    pub(crate) scan_requested: AtomicU64,
    pub(crate) scan_returned: AtomicU64,
}

/// Outcome of registering one staged slot.
pub(crate) enum Registered {
    /// The slot became (or resurrected into) the primary, or a duplicate of it.
    Kept(SlotRef),
    /// Reject policy: the staged slot was freed; here is the existing primary.
    Deduplicated(SlotRef),
}

impl Shared {
    /// Builds the shared state and the slots (the slots point back at the shared state).
    pub(crate) fn build(
        total_blocks: usize,
        shards: usize,
        factory: &dyn PolicyFactory,
        duplication: DuplicationPolicy,
        default_evict_on_release: bool,
        hooks: Hooks,
    ) -> (Arc<Shared>, Box<[Arc<Slot>]>) {
        let shard_count = shards.max(1).next_power_of_two();
        let shard_vec: Vec<PaddedShard> = (0..shard_count)
            .map(|s| PaddedShard {
                lock: Mutex::new(Shard {
                    index: SeqHashMap::with_capacity_and_hasher(
                        total_blocks / shard_count + 16,
                        Default::default(),
                    ),
                    free: Vec::with_capacity(total_blocks),
                    policy: factory.build(PolicyContext {
                        total_blocks,
                        shard: s,
                        shards: shard_count,
                    }),
                    counters: ShardCounters::default(),
                    evict_cursor: s,
                }),
                available: std::sync::atomic::AtomicUsize::new(0),
            })
            .collect();
        let shared = Arc::new(Shared {
            shards: shard_vec.into_boxed_slice(),
            shard_mask: shard_count - 1,
            total_blocks,
            duplication,
            default_evict_on_release,
            hooks,
            policy_name: factory.name().to_string(),
            stripes: (0..shard_count).map(|_| Stripe::default()).collect(),
        });
        let slots: Box<[Arc<Slot>]> = (0..total_blocks)
            .map(|i| {
                Arc::new(Slot {
                    id: BlockId::new(i as u32),
                    shared: shared.clone(),
                    handles: AtomicU32::new(0),
                    state: AtomicU8::new(SlotState::Reset as u8),
                    generation: AtomicU64::new(0),
                    hash_lo: AtomicU64::new(0),
                    hash_hi: AtomicU64::new(0),
                    evict_on_release: AtomicBool::new(default_evict_on_release),
                    dup_of: Mutex::new(None),
                })
            })
            .collect();
        // Deal the free slots out to the shards; each free list pops from its end, so the
        // lowest ids come out first.
        for i in (0..total_blocks).rev() {
            let s = i & shared.shard_mask;
            let mut g = shared.shards[s].lock.lock();
            g.free.push(BlockId::new(i as u32));
            shared.shards[s].available.fetch_add(1, Ordering::Relaxed);
        }
        (shared, slots)
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    #[inline]
    pub(crate) fn shard_of(&self, hash: SequenceHash) -> usize {
        (hash.mix64() >> 40) as usize & self.shard_mask
    }

    #[inline]
    fn home(&self) -> usize {
        home_hint() & self.shard_mask
    }

    fn sync_available(&self, s: usize, g: &Shard) {
        self.shards[s]
            .available
            .store(g.free.len() + g.policy.len(), Ordering::Relaxed);
    }

    /// Free + inactive over all shards (lock-free, approximate while others mutate).
    pub(crate) fn available(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.available.load(Ordering::Relaxed))
            .sum()
    }

    /// The calling thread's counter stripe.
    #[inline]
    pub(crate) fn stripe(&self) -> &Stripe {
        &self.stripes[self.home()]
    }

    /// Takes `n` slots, all or nothing: free slots first (home shard, then the others), then
    /// policy victims spread over the shards. Evicted hashes are appended to `evicted`.
    pub(crate) fn allocate(
        &self,
        slots: &[Arc<Slot>],
        n: usize,
        evicted: Option<&mut Vec<SequenceHash>>,
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
        let mut from_reset = 0;
        for k in 0..shards {
            let s = (home + k) & self.shard_mask;
            if self.shards[s].available.load(Ordering::Relaxed) == 0 && k > 0 {
                continue;
            }
            let mut g = self.shards[s].lock.lock();
            let take = (n - out.len()).min(g.free.len());
            if take > 0 {
                let from = g.free.len() - take;
                for id in g.free.drain(from..) {
                    slots[id.index()].set_state(SlotState::Mutable);
                    out.push(id);
                }
                from_reset += take;
                g.counters.mutable_delta += take as i64;
                self.sync_available(s, &g);
            }
            drop(g);
            if out.len() == n {
                self.count_allocation(n, from_reset);
                return Some(out);
            }
        }
        // Not enough free slots: make sure eviction can cover the rest before destroying any
        // cached block.
        let need = n - out.len();
        if self.available() < need {
            self.give_back(slots, &out);
            return None;
        }
        let mut evicted_hashes = Vec::new();
        let mut cursor = {
            let g = self.shards[home].lock.lock();
            g.evict_cursor
        };
        // Spread victims over shards (each shard's policy orders only its own blocks).
        let mut idle_rounds = 0;
        while out.len() < n && idle_rounds < 2 {
            let mut progressed = false;
            for _ in 0..shards {
                if out.len() == n {
                    break;
                }
                let s = cursor & self.shard_mask;
                cursor = cursor.wrapping_add(1);
                if self.shards[s].available.load(Ordering::Relaxed) == 0 {
                    continue;
                }
                let quota = (n - out.len()).div_ceil(shards).max(1);
                let mut g = self.shards[s].lock.lock();
                let mut taken = 0;
                while taken < quota {
                    // A free slot may have appeared since the first pass.
                    if let Some(id) = g.free.pop() {
                        slots[id.index()].set_state(SlotState::Mutable);
                        from_reset += 1;
                        g.counters.mutable_delta += 1;
                        out.push(id);
                    } else if let Some(id) = g.policy.evict() {
                        let slot = &slots[id.index()];
                        let h = slot.hash();
                        g.index.remove(&h);
                        slot.bump_generation();
                        slot.set_evict_on_release(self.default_evict_on_release);
                        slot.set_state(SlotState::Mutable);
                        g.counters.evictions += 1;
                        g.counters.mutable_delta += 1;
                        evicted_hashes.push(h);
                        out.push(id);
                    } else {
                        break;
                    }
                    taken += 1;
                }
                if taken > 0 {
                    progressed = true;
                    self.sync_available(s, &g);
                }
            }
            if progressed {
                idle_rounds = 0;
            } else {
                idle_rounds += 1;
            }
        }
        {
            let mut g = self.shards[home].lock.lock();
            g.evict_cursor = cursor;
        }
        self.hooks.evicted(&evicted_hashes);
        if let Some(e) = evicted {
            e.extend_from_slice(&evicted_hashes);
        }
        if out.len() == n {
            self.count_allocation(n, from_reset);
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
        let mut g = self.shards[s].lock.lock();
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
        let mut g = self.shards[s].lock.lock();
        slot.set_state(SlotState::Reset);
        g.free.push(slot.id);
        g.counters.mutable_delta -= 1;
        self.sync_available(s, &g);
    }

    /// Marks a mutable slot staged (no lock: the guard owns the slot).
    pub(crate) fn mark_staged(&self, slot: &Slot, hash: SequenceHash) {
        slot.set_hash(hash);
        slot.set_state(SlotState::Staged);
        self.stripe().stagings.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks a staged slot mutable again (rollback).
    pub(crate) fn mark_unstaged(&self, slot: &Slot) {
        slot.set_state(SlotState::Mutable);
    }

    /// Adds a strong reference to a registered slot under its shard lock, resurrecting it from
    /// the inactive pool if needed. Returns `None` when the slot no longer holds `hash`.
    fn acquire_locked(g: &mut Shard, slot: &Arc<Slot>) -> SlotRef {
        let prev = slot.handles.fetch_add(1, Ordering::AcqRel);
        if prev == 0 && slot.state() == SlotState::Inactive {
            g.policy.remove(slot.id);
            slot.set_state(SlotState::Primary);
            g.counters.resurrections += 1;
        }
        SlotRef::adopt(slot.clone())
    }

    /// Registers a staged slot (state Staged, hash set, no references).
    pub(crate) fn register(&self, slots: &[Arc<Slot>], slot: &Arc<Slot>) -> Registered {
        let hash = slot.hash();
        let s = self.shard_of(hash);
        let mut g = self.shards[s].lock.lock();
        g.counters.mutable_delta -= 1;
        g.counters.registrations += 1;
        let existing = g.index.get(&hash).copied();
        let out = match existing {
            None => {
                g.index.insert(hash, slot.id);
                slot.handles.store(1, Ordering::Release);
                slot.set_state(SlotState::Primary);
                g.policy.on_access(hash, AccessKind::Register);
                g.counters.primaries_created += 1;
                Registered::Kept(SlotRef::adopt(slot.clone()))
            }
            Some(pid) => {
                let primary = Self::acquire_locked(&mut g, &slots[pid.index()]);
                g.policy.on_access(hash, AccessKind::Hit);
                match self.duplication {
                    DuplicationPolicy::Reject => {
                        slot.set_state(SlotState::Reset);
                        g.free.push(slot.id);
                        g.counters.dedups += 1;
                        Registered::Deduplicated(primary)
                    }
                    DuplicationPolicy::Allow => {
                        slot.handles.store(1, Ordering::Release);
                        slot.set_state(SlotState::Duplicate);
                        *slot.dup_of.lock() = Some(primary);
                        g.counters.duplicates += 1;
                        Registered::Kept(SlotRef::adopt(slot.clone()))
                    }
                }
            }
        };
        self.sync_available(s, &g);
        drop(g);
        if existing.is_none() {
            self.hooks.registered(hash);
        }
        out
    }

    /// Looks `hash` up and takes a strong reference (resurrecting an inactive block).
    pub(crate) fn lookup(
        &self,
        slots: &[Arc<Slot>],
        hash: SequenceHash,
        touch: bool,
    ) -> Option<SlotRef> {
        let s = self.shard_of(hash);
        let mut g = self.shards[s].lock.lock();
        let id = *g.index.get(&hash)?;
        let r = Self::acquire_locked(&mut g, &slots[id.index()]);
        if touch {
            g.policy.on_access(hash, AccessKind::Hit);
        }
        self.sync_available(s, &g);
        Some(r)
    }

    /// Whether `hash` is registered, without touching recency or frequency.
    pub(crate) fn contains(&self, hash: SequenceHash) -> bool {
        let s = self.shard_of(hash);
        self.shards[s].lock.lock().index.contains_key(&hash)
    }

    /// Slow path of `WeakBlock::upgrade`: the slot had no strong reference.
    pub(crate) fn upgrade_slow(
        &self,
        slot: &Arc<Slot>,
        hash: SequenceHash,
        generation: u64,
    ) -> Option<SlotRef> {
        let s = self.shard_of(hash);
        let mut g = self.shards[s].lock.lock();
        if slot.generation() != generation {
            return None;
        }
        match slot.state() {
            SlotState::Primary | SlotState::Inactive => {}
            // A duplicate with no references has been (or is being) freed.
            _ => return None,
        }
        if g.index.get(&hash) != Some(&slot.id) {
            return None;
        }
        let r = Self::acquire_locked(&mut g, slot);
        self.sync_available(s, &g);
        Some(r)
    }

    /// The last strong reference of a registered slot went away (called without locks).
    fn release_last(&self, slot: &Arc<Slot>, hash: SequenceHash, generation: u64) {
        let s = self.shard_of(hash);
        let mut g = self.shards[s].lock.lock();
        // A match may have revived it, or the slot may already have moved on.
        if slot.handles.load(Ordering::Acquire) != 0 || slot.generation() != generation {
            return;
        }
        let mut primary_ref = None;
        let mut removed = false;
        match slot.state() {
            SlotState::Primary => {
                if slot.evict_on_release() {
                    g.index.remove(&hash);
                    slot.bump_generation();
                    slot.set_evict_on_release(self.default_evict_on_release);
                    slot.set_state(SlotState::Reset);
                    g.free.push(slot.id);
                    g.counters.released_to_reset += 1;
                    removed = true;
                } else {
                    slot.set_state(SlotState::Inactive);
                    g.policy.insert(slot.id, hash);
                }
            }
            SlotState::Duplicate => {
                slot.bump_generation();
                slot.set_state(SlotState::Reset);
                g.free.push(slot.id);
                primary_ref = slot.dup_of.lock().take();
                g.counters.released_to_reset += 1;
            }
            // Inactive or already recycled: a late duplicate release; nothing to do.
            _ => return,
        }
        self.sync_available(s, &g);
        drop(g);
        drop(primary_ref);
        if removed {
            self.hooks.evicted(&[hash]);
        }
    }

    /// Moves every inactive block of every shard to the free lists. Returns how many moved.
    pub(crate) fn drain_inactive(&self, slots: &[Arc<Slot>]) -> Vec<SequenceHash> {
        let mut removed = Vec::new();
        for s in 0..self.shard_count() {
            let mut g = self.shards[s].lock.lock();
            while let Some(id) = g.policy.evict() {
                let slot = &slots[id.index()];
                let h = slot.hash();
                g.index.remove(&h);
                slot.bump_generation();
                slot.set_evict_on_release(self.default_evict_on_release);
                slot.set_state(SlotState::Reset);
                g.free.push(id);
                g.counters.evictions += 1;
                removed.push(h);
            }
            self.sync_available(s, &g);
        }
        self.hooks.evicted(&removed);
        removed
    }

    /// Per-shard view for snapshots: (free, inactive, registered primaries, counters).
    pub(crate) fn shard_view(&self, s: usize) -> (usize, usize, usize, ShardCounters) {
        let g = self.shards[s].lock.lock();
        (g.free.len(), g.policy.len(), g.index.len(), g.counters)
    }

    /// Counts one match (or scan) request in the calling thread's stripe.
    pub(crate) fn count_match(&self, requested: usize, returned: usize, scan: bool) {
        let st = self.stripe();
        if scan {
            st.scan_requested.fetch_add(requested as u64, Ordering::Relaxed);
            st.scan_returned.fetch_add(returned as u64, Ordering::Relaxed);
        } else {
            st.match_requested.fetch_add(requested as u64, Ordering::Relaxed);
            st.match_returned.fetch_add(returned as u64, Ordering::Relaxed);
        }
    }
}
