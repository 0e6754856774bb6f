//! The shared state of one manager: shards, free lists, the index, and every pool transition.
//!
//! The store is split into shards, each behind its own mutex, so several threads can allocate,
//! register, match and release at once. A registered hash lives in the shard named by its
//! content-defined run tag ([`SequenceHash::run_tag`]), so the blocks of one chain sit in a few
//! shards and batch operations take one lock per run of same-shard blocks, not one per block.
//! A slot is *owned* by whatever holds it:
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
//!   is in that shard's `index`; an inactive primary is also in the manager's eviction policy.
//!
//! # One eviction order
//! The shards split the index, the handle counts and the free lists, but not the eviction order:
//! the manager has exactly one policy instance (built for one shard of `total_blocks`), behind
//! its own lock. Policy calls (`insert` / `remove` / `on_access`) are not made under the shard
//! lock: they are recorded there, stamped with a per-thread sequence number, in the shard's
//! event buffer (Caffeine's design). The policy lock is taken only to evict (allocation,
//! `reset_inactive_pool`), for a metrics snapshot, or when a buffer reaches `FLUSH_AT` events;
//! each time every buffer is applied first, merged by sequence number. So a single-threaded run
//! feeds the policy exactly the same calls in the same order whatever the shard count, and
//! evicts exactly the same blocks: the hit rate does not depend on sharding, and nothing random
//! or thread-bound decides a victim.
//!
//! Events of different threads may be applied out of order. Each carries the slot's inactive
//! `version` (bumped under the shard lock each time the block becomes inactive), and the policy
//! wrapper (`policy.rs`) keeps, per slot, the version it holds and the newest it saw, so stale
//! inserts and removes are dropped and the instance holds exactly the slots whose newest event
//! is an insert (no inactive block is ever lost from it, none is held twice). A victim is taken
//! under its shard lock only if it is still inactive with the version the policy held and still
//! in the index; one that was matched meanwhile is skipped (its own later events put it back if
//! it becomes inactive again).
//!
//! # Lock ordering
//! 1. At most one shard lock is held at a time (batch operations release one before taking the
//!    next).
//! 2. The policy lock is taken with no shard lock held; under it, shard locks are taken one at a
//!    time (to collect event buffers and to take victims). A guard whose buffer filled up applies
//!    the events only after releasing its shard lock.
//! 3. A slot's `dup_of` mutex may be taken while holding the shard lock of that slot, never the
//!    other way round.
//! 4. No `SlotRef` (a counted handle) is dropped while a shard lock is held: its drop takes a
//!    shard lock. Plain `Arc<Slot>` counts may be dropped under a lock while the manager lives
//!    (its slot table keeps every slot alive, so no `Slot` destructor runs there). No observer,
//!    frequency tracker or other user code runs under a lock, except the eviction policy, which
//!    runs under the policy lock (and one shard lock at most) behind a panic barrier (`policy.rs`): it is checked (a wrong
//!    victim is ignored) and a panic of its is resumed only after every lock is released and
//!    every slot is back in a consistent state.
//! 5. Handles are taken only under the owning shard's lock (`Slot::handles`, plain load and
//!    store) and given back without it (`Slot::released`, one atomic increment); a release that
//!    may have been the last settles the slot under the lock, where the live count is exact and
//!    checked again (see `slot.rs`).
//!
//! Counters live in the shards (plain integers under the lock) or in per-thread stripes, so they
//! never contend between threads; a snapshot that locks every shard in turn is exact when the
//! manager is quiescent.

use std::cell::Cell;
use std::ops::{Deref, DerefMut};

use crate::eviction::{AccessKind, HitSignals, PolicyContext, PolicyFactory};
use crate::hash::SequenceHash;
use crate::manager::hooks::Hooks;
use crate::manager::index::BlockIndex;
use crate::manager::slot::{Slot, SlotRef, SlotState};
use crate::metrics::ShardCounters;
use crate::sync::{Arc, AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering};
use crate::{BlockId, FrequencyTracker};

mod alloc;
mod handles;
mod policy;

pub(crate) use policy::PanicScope;
use policy::{Event, EventKind, ManagerPolicy, Victim};

/// Events a shard buffers before the operation that filled it applies them all.
const FLUSH_AT: usize = 256;

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

thread_local! {
    /// The calling thread's preferred shard (free list, counter stripe), assigned round-robin.
    static HOME: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn home_hint() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    HOME.with(|h| {
        let mut v = h.get();
        if v == usize::MAX {
            v = NEXT.fetch_add(1, Ordering::Relaxed);
            h.set(v);
        }
        v
    })
}

/// One shard: the primaries whose run tag falls here, a free list, counters.
pub(crate) struct Shard {
    index: BlockIndex,
    free: Vec<BlockId>,
    /// Inactive primaries of this shard (each in the manager's policy, an orphan, or announced
    /// by a buffered insert event).
    inactive: usize,
    /// Policy calls recorded under this lock, not yet applied.
    events: Vec<Event>,
    pub(crate) counters: ShardCounters,
}

/// The manager's policy padded to its own cache lines.
#[repr(align(128))]
struct PaddedPolicy(Mutex<ManagerPolicy>);

/// A locked shard that records policy events; when its buffer fills up, dropping the guard
/// applies every shard's pending events (after the shard lock is released: lock order rule 2).
pub(crate) struct ShardGuard<'a> {
    shard: Option<MutexGuard<'a, Shard>>,
    shared: &'a Shared,
    flush: bool,
}

impl ShardGuard<'_> {
    /// Records a policy call, applied at the next flush in this thread's order.
    #[inline]
    fn record(&mut self, kind: EventKind) {
        let events = &mut self.events;
        events.push(Event::new(kind));
        if events.len() >= FLUSH_AT {
            self.flush = true;
        }
    }
}

impl Deref for ShardGuard<'_> {
    type Target = Shard;
    #[inline]
    fn deref(&self) -> &Shard {
        match &self.shard {
            Some(g) => g,
            None => unreachable!("the shard stays locked until the guard drops"),
        }
    }
}

impl DerefMut for ShardGuard<'_> {
    #[inline]
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

/// A shard padded to its own cache lines.
#[repr(align(128))]
pub(crate) struct PaddedShard {
    lock: Mutex<Shard>,
    /// `free.len() + inactive`, mirrored for lock-free availability reads.
    available: AtomicUsize,
}

/// `free.len()` of one shard, mirrored on a cache line of its own and written only when it
/// changes: allocators read every shard's mirror, and in steady state (no free slots anywhere)
/// those lines are never written, so the reads stay in every core's cache.
#[repr(align(128))]
#[derive(Default)]
struct FreeMirror(AtomicUsize);

impl PaddedShard {
    /// Locks the shard. Critical sections are a few hundred nanoseconds at most, so a waiter
    /// first spins on `try_lock` for about a microsecond before falling back to the mutex's own
    /// slow path (which yields and then parks): on a contended shard that saves a `sched_yield`
    /// or futex system call per acquisition.
    #[inline]
    fn lock(&self) -> MutexGuard<'_, Shard> {
        if let Some(g) = self.lock.try_lock() {
            return g;
        }
        for _ in 0..64 {
            for _ in 0..16 {
                std::hint::spin_loop();
            }
            if !self.lock.is_locked()
                && let Some(g) = self.lock.try_lock()
            {
                return g;
            }
        }
        self.lock.lock()
    }
}

/// Everything release paths need, shared by the manager and every slot.
pub(crate) struct Shared {
    /// Process-unique id of the manager (never 0).
    pub(crate) manager_id: u64,
    shards: Box<[PaddedShard]>,
    policy: PaddedPolicy,
    free_mirrors: Box<[FreeMirror]>,
    shard_mask: usize,
    pub(crate) total_blocks: usize,
    pub(crate) duplication: DuplicationPolicy,
    pub(crate) default_evict_on_release: bool,
    hooks: Hooks,
    tracker: Option<Arc<dyn FrequencyTracker>>,
    pub(crate) policy_name: String,
    /// Counters bumped outside any shard lock, striped by thread to avoid contention.
    pub(crate) stripes: Box<[Stripe]>,
    /// Which lookup hits the policy wants (its factory's `hit_signals`, read once at build).
    hit_signals: HitSignals,
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

/// Holds at most one shard lock while a batch walks through hashes; switching shards releases
/// the previous lock first (lock order rule 1).
struct Walker<'a> {
    shared: &'a Shared,
    current: Option<(usize, ShardGuard<'a>)>,
}

impl<'a> Walker<'a> {
    fn new(shared: &'a Shared) -> Self {
        Self {
            shared,
            current: None,
        }
    }

    #[inline]
    fn shard(&mut self, s: usize) -> &mut ShardGuard<'a> {
        if self.current.as_ref().map(|(c, _)| *c) != Some(s) {
            self.finish();
            self.current = Some((s, self.shared.lock_shard(s)));
        }
        match &mut self.current {
            Some((_, g)) => g,
            None => unreachable!("a shard was just locked"),
        }
    }

    fn finish(&mut self) {
        if let Some((s, g)) = self.current.take() {
            self.shared.sync_available(s, &g);
        }
    }
}

impl Drop for Walker<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Shared {
    /// Builds the shared state and the slots (the slots point back at the shared state).
    pub(crate) fn build(
        total_blocks: usize,
        shards: usize,
        factory: Arc<dyn PolicyFactory>,
        duplication: DuplicationPolicy,
        default_evict_on_release: bool,
        hooks: Hooks,
        tracker: Option<Arc<dyn FrequencyTracker>>,
    ) -> (Arc<Shared>, Box<[Arc<Slot>]>) {
        let shard_count = shards.max(1).next_power_of_two();
        let shard_vec: Vec<PaddedShard> = (0..shard_count)
            .map(|_| PaddedShard {
                lock: Mutex::new(Shard {
                    index: BlockIndex::with_capacity(total_blocks / shard_count + 16),
                    free: Vec::with_capacity(total_blocks / shard_count + 16),
                    inactive: 0,
                    events: Vec::new(),
                    counters: ShardCounters::default(),
                }),
                available: AtomicUsize::new(0),
            })
            .collect();
        // One instance for the whole manager, whatever the shard count (see the module docs).
        let policy = ManagerPolicy::new(
            factory.clone(),
            PolicyContext {
                total_blocks,
                shard: 0,
                shards: 1,
            },
        );
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let shared = Arc::new(Shared {
            manager_id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shards: shard_vec.into_boxed_slice(),
            policy: PaddedPolicy(Mutex::new(policy)),
            free_mirrors: (0..shard_count).map(|_| FreeMirror::default()).collect(),
            shard_mask: shard_count - 1,
            total_blocks,
            duplication,
            default_evict_on_release,
            hooks,
            tracker,
            policy_name: factory.name().to_string(),
            stripes: (0..shard_count).map(|_| Stripe::default()).collect(),
            hit_signals: factory.hit_signals(),
        });
        let slots: Box<[Arc<Slot>]> = (0..total_blocks)
            .map(|i| {
                Slot::new(
                    BlockId::new(i as u32),
                    shared.clone(),
                    default_evict_on_release,
                )
            })
            .collect();
        // Deal the free slots out to the shards; each free list pops from its end, so the
        // lowest ids come out first.
        for i in (0..total_blocks).rev() {
            let s = i & shared.shard_mask;
            let mut g = shared.shards[s].lock();
            g.free.push(BlockId::new(i as u32));
            shared.sync_available(s, &g);
        }
        (shared, slots)
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Locks shard `s` for an operation that may record policy events.
    #[inline]
    fn lock_shard(&self, s: usize) -> ShardGuard<'_> {
        ShardGuard {
            shard: Some(self.shards[s].lock()),
            shared: self,
            flush: false,
        }
    }

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
    fn evict_into(
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

    #[inline]
    pub(crate) fn shard_of(&self, hash: SequenceHash) -> usize {
        hash.run_tag() as usize & self.shard_mask
    }

    #[inline]
    fn home(&self) -> usize {
        home_hint() & self.shard_mask
    }

    #[inline]
    fn sync_available(&self, s: usize, g: &Shard) {
        let shard = &self.shards[s];
        shard
            .available
            .store(g.free.len() + g.inactive, Ordering::Relaxed);
        let mirror = &self.free_mirrors[s].0;
        if mirror.load(Ordering::Relaxed) != g.free.len() {
            mirror.store(g.free.len(), Ordering::Relaxed);
        }
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

    /// Registers staged slots (state Staged, hash set, no references), in order; consecutive
    /// slots of one shard share one lock acquisition.
    pub(crate) fn register_batch(
        &self,
        slots: &[Arc<Slot>],
        staged: impl Iterator<Item = Arc<Slot>>,
        out: &mut Vec<SlotRef>,
    ) {
        let scope = PanicScope::enter();
        let mut created: Vec<SequenceHash> = Vec::new();
        let mut w = Walker::new(self);
        for slot in staged {
            let hash = slot.hash();
            // A fresh registration starts with the manager default, whatever the slot's previous
            // owner asked for.
            slot.set_evict_on_release(self.default_evict_on_release);
            let g = w.shard(self.shard_of(hash));
            g.counters.mutable_delta -= 1;
            g.counters.registrations += 1;
            match g.index.get(hash, slots) {
                None => {
                    g.index.insert(hash, slot.id);
                    slot.handles.store(1, Ordering::Relaxed);
                    slot.set_state(SlotState::Primary);
                    g.record(EventKind::Access {
                        hash,
                        kind: AccessKind::Register,
                    });
                    g.counters.primaries_created += 1;
                    if self.hooks.is_active() || self.tracker.is_some() {
                        created.push(hash);
                    }
                    out.push(SlotRef::adopt(slot));
                }
                Some(pid) => {
                    let primary = Self::acquire_locked(g, &slots[pid.index()]);
                    g.record(EventKind::Access {
                        hash,
                        kind: AccessKind::Hit,
                    });
                    match self.duplication {
                        DuplicationPolicy::Reject => {
                            slot.set_state(SlotState::Reset);
                            g.free.push(slot.id);
                            g.counters.dedups += 1;
                            out.push(primary);
                        }
                        DuplicationPolicy::Allow => {
                            slot.handles.store(1, Ordering::Relaxed);
                            slot.set_state(SlotState::Duplicate);
                            *slot.dup_of.lock() = Some(primary.into_slot());
                            g.counters.duplicates += 1;
                            out.push(SlotRef::adopt(slot));
                        }
                    }
                }
            }
        }
        w.finish();
        drop(w);
        self.hooks.registered(&created);
        if let Some(t) = &self.tracker {
            for h in created {
                t.touch(h.mix64());
            }
        }
        scope.finish();
    }

    /// Counts accesses into the manager's frequency tracker, if any (call without locks).
    pub(crate) fn touch_tracker(&self, hashes: impl Iterator<Item = SequenceHash>) {
        if let Some(t) = &self.tracker {
            for h in hashes {
                t.touch(h.mix64());
            }
        }
    }

    /// Whether `hash` is registered, without touching recency or frequency.
    pub(crate) fn contains(&self, slots: &[Arc<Slot>], hash: SequenceHash) -> bool {
        let s = self.shard_of(hash);
        self.shards[s].lock().index.get(hash, slots).is_some()
    }

    /// Length of the registered prefix of `hashes`, without taking references.
    pub(crate) fn prefix_len(&self, slots: &[Arc<Slot>], hashes: &[SequenceHash]) -> usize {
        let mut w = Walker::new(self);
        hashes
            .iter()
            .take_while(|&&h| w.shard(self.shard_of(h)).index.get(h, slots).is_some())
            .count()
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

    /// Per-shard view for snapshots: (free, inactive, registered primaries, counters).
    pub(crate) fn shard_view(&self, s: usize) -> (usize, usize, usize, ShardCounters) {
        let g = self.shards[s].lock();
        (g.free.len(), g.inactive, g.index.len(), g.counters)
    }

    /// Counts one match (or scan) request in the calling thread's stripe.
    pub(crate) fn count_match(&self, requested: usize, returned: usize, scan: bool) {
        let st = self.stripe();
        if scan {
            st.scan_requested
                .fetch_add(requested as u64, Ordering::Relaxed);
            st.scan_returned
                .fetch_add(returned as u64, Ordering::Relaxed);
        } else {
            st.match_requested
                .fetch_add(requested as u64, Ordering::Relaxed);
            st.match_returned
                .fetch_add(returned as u64, Ordering::Relaxed);
        }
    }
}
