//! Observers of a manager's registrations and removals (registry presence, events, tests).
//!
//! Observers run on the thread that caused the change, after the shard lock is released, so
//! they may call back into the manager. They must be cheap: they run on the hot path.

use crate::SequenceHash;
use crate::sync::Arc;

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

/// The observers of one manager.
#[derive(Default, Clone)]
pub(crate) struct Hooks {
    observers: Vec<Arc<dyn BlockObserver>>,
}

impl Hooks {
    pub(crate) fn push(&mut self, o: Arc<dyn BlockObserver>) {
        self.observers.push(o);
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
