//! [`OffloadQueue`]: a bounded queue of blocks to copy down, drained by one worker thread into an
//! [`OffloadSink`].
//!
//! Submitting never blocks: when the queue is full the block is skipped and counted
//! ([`OffloadStats::skipped_full`]); offload is best effort and must not slow the manager's
//! caller. The worker takes what is queued in batches of up to [`MAX_BATCH`] and hands each batch
//! to the sink in submission order.
//!
//! ```text
//! try_submit ──(sync_channel, capacity N)──► worker: recv + drain ≤ MAX_BATCH ──► sink.offload
//!   full: skipped_full += 1                                        ok: offloaded += n
//!                                                                  err: failed += n
//! ```
//!
//! Dropping the queue closes it, lets the worker finish what is queued, and joins it.
//! Invariant, once the worker is idle: `submitted == offloaded + failed`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use kvtier_core::SequenceHash;

/// Most blocks handed to the sink in one call.
pub const MAX_BATCH: usize = 64;

/// Where offloaded blocks go: the lower tier (read the block's bytes from the upper tier, write
/// them down). Called from the queue's worker thread only.
pub trait OffloadSink: Send + Sync + 'static {
    /// Copies these blocks down. An error counts the whole batch as failed; offload is best
    /// effort, so nothing is retried.
    ///
    /// # Errors
    ///
    /// Whatever the lower tier reports; it is counted, never propagated.
    fn offload(
        &self,
        batch: &[SequenceHash],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// Counters of an [`OffloadQueue`] (a snapshot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OffloadStats {
    /// Blocks accepted into the queue.
    pub submitted: u64,
    /// Blocks dropped because the queue was full.
    pub skipped_full: u64,
    /// Blocks the sink reported written.
    pub offloaded: u64,
    /// Blocks in batches the sink failed.
    pub failed: u64,
}

impl OffloadStats {
    /// Accepted blocks the worker has not finished yet.
    pub fn pending(&self) -> u64 {
        self.submitted - self.offloaded - self.failed
    }
}

#[derive(Debug, Default)]
struct Counters {
    submitted: AtomicU64,
    skipped_full: AtomicU64,
    offloaded: AtomicU64,
    failed: AtomicU64,
}

/// Why an [`OffloadQueue`] could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OffloadQueueError {
    /// A zero capacity would make every submission a skip (or a rendezvous).
    #[error("offload queue capacity must be at least 1")]
    ZeroCapacity,
    /// The worker thread could not be started.
    #[error("cannot start the offload worker: {0}")]
    Spawn(#[from] std::io::Error),
}

/// A bounded, non-blocking queue of blocks to offload, with its worker thread.
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use kvtier_core::SequenceHash;
/// use kvtier_storage::offload::{OffloadQueue, OffloadSink};
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
/// let queue = OffloadQueue::new(16, sink.clone())?;
/// assert!(queue.try_submit(SequenceHash::root(1)));
/// drop(queue); // drains, then joins the worker
/// assert_eq!(*sink.0.lock().unwrap(), [SequenceHash::root(1)]);
/// # Ok::<(), kvtier_storage::offload::OffloadQueueError>(())
/// ```
#[derive(Debug)]
pub struct OffloadQueue {
    /// `None` only while dropping.
    sender: Option<SyncSender<SequenceHash>>,
    counters: Arc<Counters>,
    worker: Option<JoinHandle<()>>,
    capacity: usize,
}

impl OffloadQueue {
    /// A queue holding at most `capacity` blocks, drained into `sink` by a thread named
    /// `kvtier-offload`.
    ///
    /// # Errors
    ///
    /// [`OffloadQueueError::ZeroCapacity`]; [`OffloadQueueError::Spawn`] when the thread cannot
    /// be started.
    pub fn new(capacity: usize, sink: Arc<dyn OffloadSink>) -> Result<Self, OffloadQueueError> {
        if capacity == 0 {
            return Err(OffloadQueueError::ZeroCapacity);
        }
        let (sender, receiver) = sync_channel(capacity);
        let counters = Arc::new(Counters::default());
        let worker_counters = counters.clone();
        let worker = std::thread::Builder::new()
            .name("kvtier-offload".to_string())
            .spawn(move || drain(&receiver, sink.as_ref(), &worker_counters))?;
        Ok(Self {
            sender: Some(sender),
            counters,
            worker: Some(worker),
            capacity,
        })
    }

    /// Queues `hash` for offload without blocking: `false` (and counted in
    /// [`OffloadStats::skipped_full`]) when the queue is full.
    #[inline]
    pub fn try_submit(&self, hash: SequenceHash) -> bool {
        let sent = match &self.sender {
            Some(s) => match s.try_send(hash) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
            None => false,
        };
        let counter = if sent {
            &self.counters.submitted
        } else {
            &self.counters.skipped_full
        };
        counter.fetch_add(1, Ordering::Relaxed);
        sent
    }

    /// Most blocks the queue holds (the worker's batch in progress not included).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The counters now.
    pub fn stats(&self) -> OffloadStats {
        let c = &self.counters;
        OffloadStats {
            submitted: c.submitted.load(Ordering::Acquire),
            skipped_full: c.skipped_full.load(Ordering::Relaxed),
            offloaded: c.offloaded.load(Ordering::Acquire),
            failed: c.failed.load(Ordering::Acquire),
        }
    }
}

impl Drop for OffloadQueue {
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(worker) = self.worker.take() {
            // A sink that panicked already lost its batch; nothing more to report here.
            let _ = worker.join();
        }
    }
}

/// The worker: one blocking receive, then whatever else is queued, up to a batch.
fn drain(receiver: &Receiver<SequenceHash>, sink: &dyn OffloadSink, counters: &Counters) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = receiver.recv() {
        batch.clear();
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(h) => batch.push(h),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        match sink.offload(&batch) {
            Ok(()) => counters.offloaded.fetch_add(n, Ordering::Release),
            Err(_) => counters.failed.fetch_add(n, Ordering::Release),
        };
    }
}
