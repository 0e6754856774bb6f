//! [`ManagerPolicy`]: the manager's one eviction-policy instance behind a panic barrier;
//! [`PanicScope`]: where a policy's panic is resumed.
//!
//! Eviction policies are user code, called under the policy lock (see `store/mod.rs`, lock
//! order). If a panic unwound straight out of such a call it would leave a
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
pub(crate) fn defer(payload: Payload) {
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

/// A policy call recorded under a shard lock, applied later under the policy lock.
#[derive(Clone, Copy, Debug)]
pub(crate) enum EventKind {
    /// The block became inactive, starting inactive period `version`.
    Insert {
        id: BlockId,
        version: u32,
        hash: SequenceHash,
    },
    /// The block left inactive period `version` without being evicted (matched, upgraded).
    Remove { id: BlockId, version: u32 },
    /// A hit or registration signal.
    Access {
        hash: SequenceHash,
        kind: AccessKind,
    },
    /// Hits counted while the block was active, reported as its last handle went.
    Hits { hash: SequenceHash, count: u32 },
}

/// An [`EventKind`] with its place in the recording thread's order.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Event {
    pub(crate) seq: u64,
    pub(crate) kind: EventKind,
}

thread_local! {
    /// Per-thread event counter: events of one thread are applied in the order it made them.
    static SEQ: Cell<u64> = const { Cell::new(0) };
}

impl Event {
    /// Stamps `kind` with the calling thread's next sequence number.
    #[inline]
    pub(crate) fn new(kind: EventKind) -> Event {
        let seq = SEQ.with(|c| {
            let v = c.get().wrapping_add(1);
            c.set(v);
            v
        });
        Event { seq, kind }
    }
}

/// Whether inactive version `a` is newer than `b` (versions wrap).
#[inline]
fn newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// One eviction-policy instance for the whole manager behind a panic barrier, fed from the
/// shards' event buffers, with the orphans of replaced instances and the count of wrong answers.
///
/// Events of different threads may arrive out of order, so the instance is never told about a
/// block directly: `versions[id].held` is the inactive version the instance holds for slot `id`
/// (0: none) and `versions[id].seen` the newest version any event named. An insert older than `seen` is stale (its
/// remove, or a newer insert, was applied first) and is dropped; a remove applies only to the
/// version held; an insert of a newer version first removes the older one. So whatever the order,
/// the instance ends up holding exactly the slots whose newest event is an insert, once each.
pub(crate) struct ManagerPolicy {
    policy: Box<dyn EvictionPolicy>,
    factory: Arc<dyn PolicyFactory>,
    ctx: PolicyContext,
    /// Per slot, side by side so an event touches one cache line.
    versions: Vec<SlotVersions>,
    /// Blocks a replaced instance held, lowest slot last (popped first); checked when taken.
    orphans: Vec<Victim>,
    /// Policy calls that panicked.
    panics: u64,
    /// Victims the instance returned that were not blocks it held.
    violations: u64,
    /// Emptied event buffers, handed back to the shards.
    pub(crate) spare: Vec<Vec<Event>>,
    /// The buffers one flush collects (kept for its allocation).
    pub(crate) taken: Vec<Vec<Event>>,
}

/// What the manager's policy knows of one slot (see [`ManagerPolicy`]).
#[derive(Clone, Copy, Debug, Default)]
struct SlotVersions {
    /// The inactive version the instance holds (0: none).
    held: u32,
    /// The newest inactive version any applied event named.
    seen: u32,
}

/// A victim the policy gave up: the slot and the inactive version it held. The allocator takes
/// it only if the slot is still inactive with that version (otherwise it was matched since, and
/// its own later events put it back in the policy if it became inactive again).
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
            versions: vec![SlotVersions::default(); ctx.total_blocks],
            orphans: Vec::new(),
            panics: 0,
            violations: 0,
            spare: Vec::new(),
            taken: Vec::new(),
        }
    }

    /// Policy calls that panicked.
    pub(crate) fn panics(&self) -> u64 {
        self.panics
    }

    /// Victims returned that were not blocks held by the instance.
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
        let (factory, ctx) = (&self.factory, self.ctx);
        let fresh = catch_unwind(AssertUnwindSafe(|| factory.build(ctx))).unwrap_or_else(|p| {
            defer(p);
            LruFactory::new().build(ctx)
        });
        let old = std::mem::replace(&mut self.policy, fresh);
        if let Err(p) = catch_unwind(AssertUnwindSafe(move || drop(old))) {
            defer(p);
        }
        let mut newly: Vec<Victim> = self
            .versions
            .iter_mut()
            .enumerate()
            .filter(|(_, v)| v.held != 0)
            .map(|(i, v)| Victim {
                id: BlockId::new(i as u32),
                version: std::mem::take(&mut v.held),
            })
            .collect();
        // A stack: the lowest new slot is popped first, but after the older orphans.
        newly.reverse();
        newly.append(&mut self.orphans);
        self.orphans = newly;
    }

    /// Applies one recorded event (see the type docs for out-of-order events).
    pub(crate) fn apply(&mut self, e: &Event) {
        match e.kind {
            EventKind::Insert { id, version, hash } => {
                let i = id.index();
                let Some(v) = self.versions.get_mut(i) else {
                    return;
                };
                if !newer(version, v.seen) {
                    return;
                }
                v.seen = version;
                if v.held != 0 {
                    v.held = 0;
                    self.call(|p| p.remove(id));
                }
                // Recorded first: on a panic the block stays evictable as an orphan.
                self.versions[i].held = version;
                self.call(|p| p.insert(id, hash));
            }
            EventKind::Remove { id, version } => {
                let Some(v) = self.versions.get_mut(id.index()) else {
                    return;
                };
                if newer(version, v.seen) {
                    v.seen = version;
                }
                if v.held == version {
                    v.held = 0;
                    self.call(|p| p.remove(id));
                }
            }
            EventKind::Access { hash, kind } => {
                self.call(|p| p.on_access(hash, kind));
            }
            EventKind::Hits { hash, count } => {
                self.call(|p| p.on_hits(hash, count));
            }
        }
    }

    /// Appends up to `want` victims to `out`, in the instance's order, then orphans of replaced
    /// instances. A victim the instance did not hold counts as a violation and is skipped; after
    /// [`MAX_BAD_VICTIMS`] of them in a row the instance is considered empty for this call.
    pub(crate) fn evict(&mut self, want: usize, out: &mut Vec<Victim>) {
        let start = out.len();
        let mut bad = 0;
        while out.len() - start < want {
            let Some(Some(id)) = self.call(|p| p.evict()) else {
                break;
            };
            match self.versions.get_mut(id.index()) {
                Some(v) if v.held != 0 => {
                    bad = 0;
                    out.push(Victim {
                        id,
                        version: std::mem::take(&mut v.held),
                    });
                }
                _ => {
                    self.violations += 1;
                    bad += 1;
                    if bad == MAX_BAD_VICTIMS {
                        break;
                    }
                }
            }
        }
        while out.len() - start < want {
            let Some(v) = self.orphans.pop() else {
                break;
            };
            out.push(v);
        }
    }
}
