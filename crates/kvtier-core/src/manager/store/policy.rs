//! [`ShardPolicy`]: a shard's eviction policy behind a panic barrier, plus the inactive pool's
//! own bookkeeping; [`PanicScope`]: where a policy's panic is resumed.
//!
//! Eviction policies are user code, called under the shard lock. If a panic unwound straight out
//! of such a call it would leave a slot half-moved (counted as handled but never handed out,
//! marked inactive but in no policy), and it would drop block guards of the unwinding frames
//! while the lock is still held — a guard's `Drop` takes a shard lock, so the thread would
//! deadlock on itself. So every policy call goes through [`ShardPolicy`], which catches the
//! panic, records its payload for the calling thread and returns as if the call had not been
//! made; the store finishes the operation with consistent state, releases its locks, and the
//! outermost [`PanicScope`] of the thread then resumes the panic, so the caller still sees it.
//!
//! A policy that panicked cannot be trusted afterwards (it may have half-applied the call), so it
//! is replaced by a fresh instance from the factory (an LRU if the factory panics too). The
//! blocks the old instance held stay cached and matchable: they become *orphans*, recognised by
//! the policy epoch stored in their slot, and are given up in index order once the new instance
//! has no victim left. The shard counts its inactive blocks itself, so pool sizes and metrics
//! stay exact whatever a policy reports from `len`.
//!
//! ```text
//!   insert / remove / evict / on_access --panic--> payload kept for this thread
//!        |                                          policy replaced, epoch + 1 (old blocks: orphans)
//!        '--> operation completes, locks released --> outermost PanicScope: resume_unwind
//! ```
//!
//! A panic caught while the thread is already unwinding (a guard dropped by another panic) is
//! discarded: the first panic is already on its way to the caller.

use std::any::Any;
use std::cell::Cell;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use crate::eviction::{AccessKind, EvictionPolicy, LruFactory, PolicyContext, PolicyFactory};
use crate::manager::index::BlockIndex;
use crate::manager::slot::{Slot, SlotState};
use crate::sync::Arc;
use crate::{BlockId, SequenceHash};

/// After this many victims in a row that are not inactive blocks of the shard, a policy's
/// `evict` is considered empty for this call.
const MAX_BAD_VICTIMS: usize = 64;

type Payload = Box<dyn Any + Send + 'static>;

thread_local! {
    /// Nesting depth of [`PanicScope`]s on this thread.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The first policy panic caught on this thread and not yet resumed.
    static DEFERRED: Cell<Option<Payload>> = const { Cell::new(None) };
}

/// Keeps `payload` for the calling thread's outermost [`PanicScope`] (the first one wins).
fn defer(payload: Payload) {
    DEFERRED.with(|d| {
        let first = d.take().unwrap_or(payload);
        d.set(Some(first));
    });
}

/// One manager operation on the calling thread. Policy panics caught inside it are resumed when
/// the outermost scope of the thread ends, which callers place after every lock is released and
/// every slot is back in a consistent state.
pub(crate) struct PanicScope {
    /// Thread-bound: the deferred payload lives in this thread's storage.
    _thread: PhantomData<*const ()>,
}

impl PanicScope {
    /// Enters a scope.
    #[inline]
    pub(crate) fn enter() -> Self {
        DEPTH.with(|d| d.set(d.get() + 1));
        PanicScope {
            _thread: PhantomData,
        }
    }

    /// Leaves the scope; if it is the thread's outermost one, resumes a deferred policy panic.
    /// Call it once the operation's result is held by a local, so that unwinding drops it.
    #[inline]
    pub(crate) fn finish(self) {
        drop(self);
    }
}

impl Drop for PanicScope {
    fn drop(&mut self) {
        let depth = DEPTH.with(|d| {
            let v = d.get().saturating_sub(1);
            d.set(v);
            v
        });
        if depth == 0
            && let Some(payload) = DEFERRED.with(Cell::take)
            && !std::thread::panicking()
        {
            resume_unwind(payload);
        }
    }
}

/// A shard's eviction policy behind a panic barrier (see the module docs), with the shard's count
/// of inactive blocks and the orphans of replaced policy instances.
pub(crate) struct ShardPolicy {
    policy: Box<dyn EvictionPolicy>,
    factory: Arc<dyn PolicyFactory>,
    ctx: PolicyContext,
    /// Bumped each time the instance is replaced; an inactive slot whose `policy_epoch` differs
    /// is an orphan (held by no instance).
    epoch: u32,
    /// Inactive blocks of the shard, held by the instance or orphaned.
    inactive: usize,
    /// Orphan candidates collected for `collected_epoch`; each is checked again when used.
    orphans: Vec<BlockId>,
    collected_epoch: u32,
    /// Policy calls that panicked.
    panics: u64,
}

impl ShardPolicy {
    /// Builds the shard's instance (a panic of the factory here propagates: no lock is held).
    pub(crate) fn new(factory: Arc<dyn PolicyFactory>, ctx: PolicyContext) -> Self {
        Self {
            policy: factory.build(ctx),
            factory,
            ctx,
            epoch: 0,
            inactive: 0,
            orphans: Vec::new(),
            collected_epoch: 0,
            panics: 0,
        }
    }

    /// Inactive blocks of the shard.
    #[inline]
    pub(crate) fn inactive(&self) -> usize {
        self.inactive
    }

    /// Policy calls of this shard that panicked.
    pub(crate) fn panics(&self) -> u64 {
        self.panics
    }

    /// Runs one policy call; on a panic, defers it and replaces the instance.
    #[inline]
    fn call<R>(&mut self, f: impl FnOnce(&mut dyn EvictionPolicy) -> R) -> Option<R> {
        let policy = &mut *self.policy;
        match catch_unwind(AssertUnwindSafe(|| f(policy))) {
            Ok(r) => Some(r),
            Err(payload) => {
                defer(payload);
                self.replace();
                None
            }
        }
    }

    /// Swaps in a fresh instance after a panic; every block the old one held becomes an orphan.
    #[cold]
    fn replace(&mut self) {
        self.panics += 1;
        self.epoch = self.epoch.wrapping_add(1);
        let (factory, ctx) = (&self.factory, self.ctx);
        let fresh = catch_unwind(AssertUnwindSafe(|| factory.build(ctx))).unwrap_or_else(|p| {
            defer(p);
            LruFactory::new().build(ctx)
        });
        let old = std::mem::replace(&mut self.policy, fresh);
        if let Err(p) = catch_unwind(AssertUnwindSafe(move || drop(old))) {
            defer(p);
        }
    }

    /// A registered block of this shard became inactive.
    #[inline]
    pub(crate) fn insert(&mut self, slot: &Slot, hash: SequenceHash) {
        self.inactive += 1;
        slot.set_policy_epoch(self.epoch);
        let id = slot.id;
        // On a panic the block stays inactive as an orphan of the replaced instance.
        self.call(|p| p.insert(id, hash));
    }

    /// An inactive block left the pool without being evicted (matched, upgraded).
    #[inline]
    pub(crate) fn remove(&mut self, slot: &Slot) {
        self.inactive = self.inactive.saturating_sub(1);
        if slot.policy_epoch() == self.epoch {
            let id = slot.id;
            // On a panic the replaced instance's copy of the block goes with it.
            self.call(|p| p.remove(id));
        }
    }

    /// Forwards a hit or registration signal.
    #[inline]
    pub(crate) fn on_access(&mut self, hash: SequenceHash, kind: AccessKind) {
        self.call(|p| p.on_access(hash, kind));
    }

    /// Chooses a victim and forgets it: the instance's choice if it names an inactive block of
    /// this shard, else an orphan. `violations` counts wrong answers of the instance.
    pub(crate) fn evict(
        &mut self,
        index: &BlockIndex,
        slots: &[Arc<Slot>],
        violations: &mut u64,
    ) -> Option<BlockId> {
        if self.inactive == 0 {
            return None;
        }
        let mut bad = 0;
        while let Some(Some(id)) = self.call(|p| p.evict()) {
            if Self::is_inactive_here(id, index, slots, |e| e == self.epoch) {
                self.inactive -= 1;
                return Some(id);
            }
            *violations += 1;
            bad += 1;
            if bad == MAX_BAD_VICTIMS {
                break;
            }
        }
        self.next_orphan(index, slots)
    }

    /// An orphan of a replaced instance, collected once per replacement by scanning the index.
    #[cold]
    fn next_orphan(&mut self, index: &BlockIndex, slots: &[Arc<Slot>]) -> Option<BlockId> {
        let epoch = self.epoch;
        if self.collected_epoch != epoch {
            self.collected_epoch = epoch;
            self.orphans.clear();
            self.orphans.extend(
                index
                    .ids()
                    .filter(|&id| Self::is_inactive_here(id, index, slots, |e| e != epoch)),
            );
            // Popped from the back: the first in index order goes first.
            self.orphans.reverse();
        }
        while let Some(id) = self.orphans.pop() {
            if Self::is_inactive_here(id, index, slots, |e| e != epoch) {
                self.inactive -= 1;
                return Some(id);
            }
        }
        None
    }

    /// Whether `id` is an inactive primary of this shard whose policy epoch passes `epoch_ok`.
    fn is_inactive_here(
        id: BlockId,
        index: &BlockIndex,
        slots: &[Arc<Slot>],
        epoch_ok: impl Fn(u32) -> bool,
    ) -> bool {
        slots.get(id.index()).is_some_and(|slot| {
            slot.state() == SlotState::Inactive
                && index.holds(slot.hash(), id)
                && epoch_ok(slot.policy_epoch())
        })
    }
}
