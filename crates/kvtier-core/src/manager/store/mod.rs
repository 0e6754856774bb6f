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
//!    time, only to collect event buffers (a shard whose pending mirror is clear is skipped
//!    unlocked). Victims are picked under the policy lock and taken after it is released, each
//!    run of consecutive victims of one shard under one acquisition of that shard's lock
//!    (`evict.rs`). A guard whose buffer filled up applies the events
//!    only after releasing its shard lock.
//! 3. A slot's `dup_of` mutex may be taken while holding the shard lock of that slot, never the
//!    other way round.
//! 4. No `SlotRef` (a counted handle) is dropped while a shard lock is held: its drop takes a
//!    shard lock. Plain `Arc<Slot>` counts may be dropped under a lock while the manager lives
//!    (its slot table keeps every slot alive, so no `Slot` destructor runs there). No observer,
//!    frequency tracker, eviction hook or other user code runs under a lock, except the eviction policy, which
//!    runs under the policy lock (and no shard lock) behind a panic barrier (`policy.rs`): it is checked (a wrong
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

use crate::eviction::{AccessKind, HitSignals, PolicyContext, PolicyFactory};
use crate::hash::SequenceHash;
use crate::manager::hooks::Hooks;
use crate::manager::index::BlockIndex;
use crate::manager::slot::{Slot, SlotRef, SlotState};
use crate::metrics::ShardCounters;
use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering};
use crate::{BlockId, FrequencyTracker};

mod alloc;
mod evict;
mod handles;
mod policy;

pub(crate) use evict::ShardGuard;
pub(crate) use policy::PanicScope;
pub(crate) use policy::defer as defer_panic;
use policy::{Event, EventKind, ManagerPolicy};

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

/// A shard padded to its own cache lines.
#[repr(align(128))]
pub(crate) struct PaddedShard {
    lock: Mutex<Shard>,
    /// `free.len() + inactive`, mirrored for lock-free availability reads.
    available: AtomicUsize,
    /// Whether `events` may be non-empty: set by the recorder, cleared by the flusher, both under
    /// the lock; a flush skips shards where it is clear without locking them.
    pending: AtomicBool,
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
    pub(crate) hooks: Hooks,
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
                pending: AtomicBool::new(false),
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
        ShardGuard::lock(self, s)
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
