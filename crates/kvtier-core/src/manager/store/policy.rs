//! [`ManagerPolicy`]: the manager's one eviction-policy instance behind a panic barrier;
//! [`PanicScope`]: where a policy's panic is resumed.
//!
//! Eviction policies are user code, called under the policy lock (itself taken under a shard
//! lock, see `store/mod.rs`). If a panic unwound straight out of such a call it would leave a
//! slot half-moved (counted as handled but never handed out, marked inactive but in no policy),
//! and it would drop block guards of the unwinding frames while the locks are still held — a
//! guard's `Drop` takes a shard lock, so the thread would deadlock on itself. So every policy call
//! goes through [`ManagerPolicy`], which catches the panic, records its payload for the calling
//! thread and returns as if the call had not been made; the store finishes the operation with
//! consistent state, releases its locks, and the outermost [`PanicScope`] of the thread then
//! resumes the panic, so the caller still sees it.
//!
//! A policy that panicked cannot be trusted afterwards (it may have half-applied the call), so it
//! is replaced by a fresh instance from the factory (an LRU if the factory panics too). The
//! blocks the old instance held stay cached and matchable: they become *orphans*, recognised by
//! the policy epoch stored in their slot, and are given up in slot order once the new instance
//! has no victim left. The shards count their inactive blocks themselves, so pool sizes and
//! metrics stay exact whatever a policy reports from `len`.
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

/// One eviction-policy instance for the whole manager behind a panic barrier, with the orphans
/// of replaced instances and the count of wrong answers.
///
/// It lives behind its own lock, taken after a shard lock (to apply `insert` / `remove` /
/// `on_access` in the same critical section that changes the slot) or alone (to choose
/// victims); never a shard lock under it. Victims are only *candidates*: the allocator takes
/// each one under its shard lock after checking it is still the inactive block the policy
/// gave up (see `alloc.rs`).
pub(crate) struct ManagerPolicy {
    policy: Box<dyn EvictionPolicy>,
    factory: Arc<dyn PolicyFactory>,
    ctx: PolicyContext,
    /// Bumped each time the instance is replaced; an inactive slot whose `policy_epoch` differs
    /// is an orphan (held by no instance).
    epoch: u32,
    /// Orphan candidates collected for `collected_epoch`; each is checked again when used.
    orphans: Vec<BlockId>,
    collected_epoch: u32,
    /// Policy calls that panicked.
    panics: u64,
    /// Victims the instance returned that were not inactive blocks it held.
    violations: u64,
}

/// A victim the policy gave up: the slot and the inactive version it had then. The allocator
/// takes it only if the slot is still inactive with that version (otherwise a release made it
/// inactive again after the pop, and it is back in the policy under its new version).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Victim {
    pub(crate) id: BlockId,
    pub(crate) version: u32,
}

impl ManagerPolicy {
    /// Builds the manager's instance (a panic of the factory here propagates: no lock is held).
    pub(crate) fn new(factory: Arc<dyn PolicyFactory>, ctx: PolicyContext) -> Self {
        Self {
            policy: factory.build(ctx),
            factory,
            ctx,
            epoch: 0,
            orphans: Vec::new(),
            collected_epoch: 0,
            panics: 0,
            violations: 0,
        }
    }

    /// Policy calls that panicked.
    pub(crate) fn panics(&self) -> u64 {
        self.panics
    }

    /// Victims returned that were not inactive blocks held by the instance.
    pub(crate) fn violations(&self) -> u64 {
        self.violations
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

    /// A registered block became inactive. The caller holds the block's shard lock and has
    /// already marked the slot `Inactive` with a new version (so every victim the policy can
    /// return is seen inactive here).
    #[inline]
    pub(crate) fn insert(&mut self, slot: &Slot, hash: SequenceHash) {
        slot.set_policy_epoch(self.epoch);
        let id = slot.id;
        // On a panic the block stays inactive as an orphan of the replaced instance.
        self.call(|p| p.insert(id, hash));
    }

    /// An inactive block left the pool without being evicted (matched, upgraded). The caller
    /// holds the block's shard lock and marks the slot active only after this call.
    #[inline]
    pub(crate) fn remove(&mut self, slot: &Slot) {
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

    /// Appends up to `want` victims to `out`, in the instance's order, then orphans of replaced
    /// instances. A victim that is not an inactive block of the current instance counts as a
    /// violation and is skipped; after [`MAX_BAD_VICTIMS`] of them in a row the instance is
    /// considered empty for this call.
    pub(crate) fn evict(&mut self, slots: &[Arc<Slot>], want: usize, out: &mut Vec<Victim>) {
        let start = out.len();
        let mut bad = 0;
        while out.len() - start < want {
            let Some(Some(id)) = self.call(|p| p.evict()) else {
                break;
            };
            let epoch = self.epoch;
            match Self::inactive_slot(id, slots, |e| e == epoch) {
                Some(slot) => {
                    bad = 0;
                    out.push(Victim {
                        id,
                        version: slot.version(),
                    });
                }
                None => {
                    self.violations += 1;
                    bad += 1;
                    if bad == MAX_BAD_VICTIMS {
                        break;
                    }
                }
            }
        }
        while out.len() - start < want {
            let Some(v) = self.next_orphan(slots) else {
                break;
            };
            out.push(v);
        }
    }

    /// An orphan of a replaced instance, collected once per replacement by scanning the slots.
    fn next_orphan(&mut self, slots: &[Arc<Slot>]) -> Option<Victim> {
        let epoch = self.epoch;
        if self.panics == 0 {
            return None;
        }
        if self.collected_epoch != epoch {
            self.collected_epoch = epoch;
            self.orphans.clear();
            self.orphans.extend(
                slots
                    .iter()
                    .filter(|s| s.state() == SlotState::Inactive && s.policy_epoch() != epoch)
                    .map(|s| s.id),
            );
            // Popped from the back: the lowest slot goes first.
            self.orphans.reverse();
        }
        while let Some(id) = self.orphans.pop() {
            if let Some(slot) = Self::inactive_slot(id, slots, |e| e != epoch) {
                return Some(Victim {
                    id,
                    version: slot.version(),
                });
            }
        }
        None
    }

    /// The slot `id` if it is inactive and its policy epoch passes `epoch_ok`.
    fn inactive_slot(
        id: BlockId,
        slots: &[Arc<Slot>],
        epoch_ok: impl Fn(u32) -> bool,
    ) -> Option<&Slot> {
        slots
            .get(id.index())
            .map(|s| &**s)
            .filter(|s| s.state() == SlotState::Inactive && epoch_ok(s.policy_epoch()))
    }
}
