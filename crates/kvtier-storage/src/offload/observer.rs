//! [`OffloadObserver`]: a [`WriteGate`] and an [`OffloadQueue`] installed on a
//! [`BlockManager`](kvtier_core::BlockManager) as its [`BlockObserver`].
//!
//! The manager reports registrations (write-through candidates) and removals (write-back
//! candidates) itself; hits are not observer events, so the caller reports them with
//! [`OffloadObserver::record_hits`] after a match (or through [`OffloadObserver::touch_callback`]
//! on a registry). Each candidate is submitted to the queue without blocking; a full queue
//! skips it and counts it.
//!
//! Write-back caveat: a removal is reported after the manager released the slot, so its bytes
//! may already be overwritten. For write-back bytes use [`WriteBack`](super::WriteBack), which
//! runs in the core's eviction hook before the slot is reused; this observer's write-back
//! decisions are for the replay (hashes only).

use std::sync::Arc;

use kvtier_core::{BlockObserver, SequenceHash, TouchCallback};

use super::{OffloadQueue, OffloadStats, WriteGate};

/// Feeds a manager's registrations, removals and reported hits through a [`WriteGate`] into an
/// [`OffloadQueue`].
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use kvtier_core::{BlockManager, G2, SequenceHash};
/// use kvtier_storage::offload::{OffloadObserver, OffloadQueue, OffloadSink, WriteGate, WritePolicy};
///
/// #[derive(Default)]
/// struct Collect(Mutex<Vec<SequenceHash>>);
/// impl OffloadSink for Collect {
///     fn offload(&self, batch: &[SequenceHash]) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///         self.0.lock().unwrap().extend_from_slice(batch);
///         Ok(())
///     }
/// }
///
/// let sink = Arc::new(Collect::default());
/// let observer = Arc::new(OffloadObserver::new(
///     WriteGate::new(WritePolicy::WriteThrough, 64)?,
///     OffloadQueue::new(64, sink.clone())?,
/// ));
/// let manager = BlockManager::<G2>::builder()
///     .with_block_count(4)
///     .with_observer(observer.clone())
///     .build()?;
/// let block = manager.allocate_blocks(1)?.pop().unwrap();
/// let staged = block.stage(SequenceHash::root(7), manager.block_size()).map_err(|e| e.to_string())?;
/// drop(manager.register_block(staged).map_err(|e| e.to_string())?);
/// assert_eq!(observer.stats().submitted, 1); // registered: a write-through candidate
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct OffloadObserver {
    gate: WriteGate,
    queue: OffloadQueue,
}

impl OffloadObserver {
    /// Candidates chosen by `gate` go to `queue`.
    pub fn new(gate: WriteGate, queue: OffloadQueue) -> Self {
        Self { gate, queue }
    }

    /// The gate (policy and hit counts).
    pub fn gate(&self) -> &WriteGate {
        &self.gate
    }

    /// The queue's counters.
    pub fn stats(&self) -> OffloadStats {
        self.queue.stats()
    }

    /// Reports blocks hit by a match (for `write_through_selective`); never blocks.
    pub fn record_hits(&self, hashes: &[SequenceHash]) {
        for &h in hashes {
            if self.gate.on_hit(h) {
                self.queue.try_submit(h);
            }
        }
    }

    /// A registry touch callback that reports each touched hash as a hit.
    pub fn touch_callback(self: &Arc<Self>) -> TouchCallback {
        let this = self.clone();
        Arc::new(move |h| this.record_hits(&[h]))
    }
}

impl BlockObserver for OffloadObserver {
    fn registered(&self, hash: SequenceHash) {
        if self.gate.on_registered(hash) {
            self.queue.try_submit(hash);
        }
    }

    fn removed(&self, hashes: &[SequenceHash]) {
        for &h in hashes {
            if self.gate.on_evicted(h) {
                self.queue.try_submit(h);
            }
        }
    }
}
