//! Observers of a manager's registrations and removals (registry presence, events, tests).
//!
//! Observers run on the thread that caused the change, after the shard lock is released, so
//! they may call back into the manager. They must be cheap: they run on the hot path.

use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::sync::Arc;
use crate::{BlockId, SequenceHash};

/// Told when a hash becomes registered in a manager (a new primary) and when it leaves
/// (evicted, drained, or released with evict-on-release).
///
/// Duplicates and deduplicated registrations are not reported: the hash was already present.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use kvtier_core::{BlockManager, BlockObserver, G2, SequenceHash};
///
/// #[derive(Default)]
/// struct Count(AtomicUsize);
/// impl BlockObserver for Count {
///     fn registered(&self, _: SequenceHash) { self.0.fetch_add(1, Ordering::Relaxed); }
///     fn removed(&self, h: &[SequenceHash]) { self.0.fetch_sub(h.len(), Ordering::Relaxed); }
/// }
///
/// let count = Arc::new(Count::default());
/// let manager = BlockManager::<G2>::builder()
///     .with_block_count(4)
///     .with_observer(count.clone())
///     .build()
///     .unwrap();
/// let block = manager.allocate_blocks(1).unwrap().pop().unwrap();
/// let block = block.stage(SequenceHash::root(7), manager.block_size()).unwrap();
/// let _held = manager.register_block(block).unwrap();
/// assert_eq!(count.0.load(Ordering::Relaxed), 1);
/// ```
pub trait BlockObserver: Send + Sync + 'static {
    /// `hash` became registered (a new primary).
    fn registered(&self, hash: SequenceHash);
    /// These hashes became registered, in registration order (one call per batch
    /// registration). The default calls [`BlockObserver::registered`] for each; override it to
    /// take a lock once per batch.
    fn registered_many(&self, hashes: &[SequenceHash]) {
        for &h in hashes {
            self.registered(h);
        }
    }
    /// These hashes are no longer registered in the manager.
    fn removed(&self, hashes: &[SequenceHash]);
}

/// A victim of the manager's eviction policy, shown to an [`EvictionHook`] after it left the
/// index and before its slot reaches the allocating caller (or the free list, when draining).
///
/// While the hook runs, the slot belongs to the evicting operation and to nothing else: no
/// other thread can allocate, write or register it, so its bytes are exactly the evicted
/// block's. The value is only lent to the hook (`&[EvictedBlock<'_>]`) and cannot outlive the
/// call, which is what lets a storage arena treat it as a short-lived read guard of the slot.
#[derive(Debug)]
pub struct EvictedBlock<'a> {
    hash: SequenceHash,
    id: BlockId,
    manager_id: u64,
    _call: PhantomData<&'a ()>,
}

impl EvictedBlock<'_> {
    /// The evicted block's sequence hash.
    #[inline]
    pub fn hash(&self) -> SequenceHash {
        self.hash
    }

    /// The slot the block occupied (not reused until the hook returns).
    #[inline]
    pub fn block_id(&self) -> BlockId {
        self.id
    }

    /// The id of the manager the slot belongs to (see `BlockManager::id`).
    #[inline]
    pub fn manager_id(&self) -> u64 {
        self.manager_id
    }
}

/// Called with the victims of each eviction (an allocation that evicts, or
/// `reset_inactive_pool`) synchronously, with no manager lock held, *before* their slots are
/// reused: the place to copy a block's bytes out for a write-back policy.
///
/// It runs on the evicting caller's thread, so it must be quick and must never block (copy into
/// a bounded staging pool, skip when it is full). It may call back into the manager, but an
/// allocation from inside the hook may evict again and re-enter it. A panic is caught, the
/// eviction completes, and the panic is resumed when the manager call returns (after the slots
/// are held by the caller's guards), as for a panicking eviction policy.
///
/// Blocks freed by their last release with evict-on-release are not victims and are not shown.
pub trait EvictionHook: Send + Sync + 'static {
    /// `victims` are leaving the manager; their slots hold their bytes until this returns.
    fn evicting(&self, victims: &[EvictedBlock<'_>]);
}

/// The observers of one manager.
#[derive(Default, Clone)]
pub(crate) struct Hooks {
    observers: Vec<Arc<dyn BlockObserver>>,
    eviction: Option<Arc<dyn EvictionHook>>,
}

impl Hooks {
    pub(crate) fn push(&mut self, o: Arc<dyn BlockObserver>) {
        self.observers.push(o);
    }

    pub(crate) fn set_eviction(&mut self, h: Arc<dyn EvictionHook>) {
        self.eviction = Some(h);
    }

    /// Whether an eviction hook is installed (the one branch the hot path pays).
    #[inline]
    pub(crate) fn has_eviction(&self) -> bool {
        self.eviction.is_some()
    }

    /// Runs the eviction hook, if any, on victims `ids[i]` of hash `hashes[i]` (call with no
    /// lock held, while the slots are still owned by the evicting operation). A panic is kept
    /// for the thread's outermost `PanicScope`.
    pub(crate) fn evicting(&self, manager_id: u64, ids: &[BlockId], hashes: &[SequenceHash]) {
        let Some(hook) = &self.eviction else {
            return;
        };
        if ids.is_empty() {
            return;
        }
        let victims: Vec<EvictedBlock<'_>> = ids
            .iter()
            .zip(hashes)
            .map(|(&id, &hash)| EvictedBlock {
                hash,
                id,
                manager_id,
                _call: PhantomData,
            })
            .collect();
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| hook.evicting(&victims))) {
            crate::manager::store::defer_panic(payload);
        }
    }

    #[inline]
    pub(crate) fn is_active(&self) -> bool {
        !self.observers.is_empty()
    }

    #[inline]
    pub(crate) fn registered(&self, hashes: &[SequenceHash]) {
        if hashes.is_empty() {
            return;
        }
        for o in &self.observers {
            o.registered_many(hashes);
        }
    }

    #[inline]
    pub(crate) fn evicted(&self, hashes: &[SequenceHash]) {
        if hashes.is_empty() {
            return;
        }
        for o in &self.observers {
            o.removed(hashes);
        }
    }
}
