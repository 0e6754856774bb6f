//! [`WriteBack`]: the write-back half of the offload engine, installed as a G2 manager's
//! [`EvictionHook`].
//!
//! When the manager evicts, the hook runs on the evicting caller's thread before the victims'
//! slots are reused: it copies each victim's bytes out of the [`HostArena`] into a buffer taken
//! from a bounded staging pool and hands the batch to a worker thread through a bounded channel;
//! the worker writes the blocks to the lower [`Storage`] (queued batches together, one
//! `put_batch` each) and returns the buffers to the pool.
//! By default the hook never waits: no free buffer, or a full channel, skips the block and
//! counts it. With [`WriteBack::set_max_wait`] it waits that long for staging buffers first, so
//! a lower tier slower than the eviction rate slows the evicting callers down (as the kernel
//! throttles writers of dirty pages) instead of losing blocks.
//!
//! ```text
//!   allocate (evicts) --> hook: copy victim bytes into staging buffers --try_send--> worker
//!        |                     (pool empty / channel full: skipped, counted)          | put
//!        '--> slots reach the caller only after the hook returned                    lower tier
//! ```
//!
//! [`WriteBack::selective`] copies only the victims a [`VictimFilter`] selects. Under a
//! write-through policy, [`PendingWriteThrough`] selects the blocks the policy chose for the lower
//! tier that are not there yet: a block G2 evicts before the offload queue's worker reached it
//! is copied on its way out instead of being lost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvtier_core::{EvictedBlock, EvictionHook, G2, SequenceHash};
use parking_lot::{Condvar, Mutex};

use super::OffloadObserver;
use crate::arena::HostArena;
use crate::tier::{Storage, put_block};

/// Which eviction victims a [`WriteBack::selective`] stage copies down.
pub trait VictimFilter: Send + Sync + 'static {
    /// One answer per hash, in order: whether that victim is copied. Runs on the evicting
    /// thread, with no lock of the manager held; keep it to in-memory lookups.
    fn select(&self, victims: &[SequenceHash]) -> Vec<bool>;
}

/// Selects the victims a write-through policy chose for the lower tier (every block under
/// `write_through`, blocks hit often enough under `write_through_selective`) that the lower tier
/// does not hold yet: the copies the offload queue had not made when G2 evicted them.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use kvtier_core::SequenceHash;
/// use kvtier_storage::offload::{
///     ArenaSink, OffloadObserver, OffloadQueue, PendingWriteThrough, VictimFilter, WriteGate,
///     WritePolicy,
/// };
/// use kvtier_storage::disk::{DiskConfig, DiskTier};
/// use kvtier_storage::tier::{Storage, disk::DiskStorage};
///
/// let dir = tempfile::tempdir()?;
/// let tier = DiskTier::open(dir.path(), DiskConfig::new("doc", 4, 16))?;
/// let lower: Arc<dyn Storage> = Arc::new(DiskStorage::new(Arc::new(tier)));
/// let observer = Arc::new(OffloadObserver::new(
///     WriteGate::new(WritePolicy::WriteThrough, 64)?,
///     OffloadQueue::new(8, Arc::new(ArenaSink::new(lower.clone())))?,
/// ));
/// let (a, b) = (SequenceHash::root(1), SequenceHash::root(2));
/// kvtier_storage::tier::put_block(lower.as_ref(), a, &[0; 4])?;
/// let filter = PendingWriteThrough::new(observer, lower);
/// assert_eq!(filter.select(&[a, b]), [false, true]); // `a` is below already
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PendingWriteThrough {
    observer: Arc<OffloadObserver>,
    lower: Arc<dyn Storage>,
}

impl PendingWriteThrough {
    /// Victims `observer`'s gate chose that `lower` lacks.
    pub fn new(observer: Arc<OffloadObserver>, lower: Arc<dyn Storage>) -> Self {
        Self { observer, lower }
    }
}

impl std::fmt::Debug for PendingWriteThrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingWriteThrough")
            .field("policy", &self.observer.gate().policy())
            .field("lower", &self.lower.name())
            .finish()
    }
}

impl VictimFilter for PendingWriteThrough {
    fn select(&self, victims: &[SequenceHash]) -> Vec<bool> {
        let gate = self.observer.gate();
        // A lower tier that cannot answer: copy (a duplicate write is answered as present).
        let below = self
            .lower
            .contains_batch(victims)
            .unwrap_or_else(|_| vec![false; victims.len()]);
        victims
            .iter()
            .zip(below)
            .map(|(&h, present)| !present && gate.chosen(h))
            .collect()
    }
}

/// Counters of a [`WriteBack`] (a snapshot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteBackStats {
    /// Victims copied into the staging pool.
    pub staged: u64,
    /// Victims skipped: no free staging buffer, a full channel, or no arena attached.
    pub skipped: u64,
    /// Blocks written to the lower tier.
    pub written: u64,
    /// Blocks the lower tier refused (counted, not retried).
    pub failed: u64,
}

#[derive(Default)]
struct Counters {
    staged: AtomicU64,
    skipped: AtomicU64,
    written: AtomicU64,
    failed: AtomicU64,
}

/// State shared by the hook and its worker.
struct Shared {
    arena: OnceLock<Weak<HostArena<G2>>>,
    /// Free staging buffers (each `block_bytes` long); empty: victims are skipped.
    pool: Mutex<Vec<Vec<u8>>>,
    /// Signalled when the worker returns buffers to `pool`.
    returned: Condvar,
    /// Set when the stage closes or its worker ends: no buffer will come back, stop waiting.
    stopped: AtomicBool,
    /// How long the hook waits for buffers (ns; 0: never).
    max_wait_ns: AtomicU64,
    counters: Counters,
}

type Batch = Vec<(SequenceHash, Vec<u8>)>;

/// Why a [`WriteBack`] could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteBackError {
    /// A zero staging pool or queue would skip every victim.
    #[error("write-back staging blocks and queue depth must be at least 1")]
    Zero,
    /// The worker thread could not be started.
    #[error("cannot start the write-back worker: {0}")]
    Spawn(#[from] std::io::Error),
}

/// Copies G2's eviction victims down to a lower tier (write-back). Build it, install it with
/// `BlockManagerBuilder::with_eviction_hook`, create the manager's [`HostArena`], then
/// [`attach`](Self::attach) the arena. Dropping the last handle drains the queue and joins the
/// worker (the manager holds one handle through its hook).
pub struct WriteBack {
    shared: Arc<Shared>,
    /// `None`: every victim is copied.
    filter: Option<Arc<dyn VictimFilter>>,
    sender: Mutex<Option<SyncSender<Batch>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for WriteBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBack")
            .field("stats", &self.stats())
            .finish()
    }
}

impl WriteBack {
    /// A write-back stage with `staging_blocks` buffers of `block_bytes` (allocated and faulted
    /// in now) and a queue of `queue_batches` batches, written to `lower` by a thread named
    /// `kvtier-writeback`.
    ///
    /// # Errors
    ///
    /// [`WriteBackError::Zero`] for a zero pool or queue; [`WriteBackError::Spawn`].
    pub fn new(
        lower: Arc<dyn Storage>,
        block_bytes: usize,
        staging_blocks: usize,
        queue_batches: usize,
    ) -> Result<Arc<Self>, WriteBackError> {
        Self::build(lower, block_bytes, staging_blocks, queue_batches, None)
    }

    /// Like [`new`](Self::new), but only the victims `filter` selects are copied (the others
    /// are not counted anywhere): a write-through policy's safety net, with
    /// [`PendingWriteThrough`].
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn selective(
        lower: Arc<dyn Storage>,
        block_bytes: usize,
        staging_blocks: usize,
        queue_batches: usize,
        filter: Arc<dyn VictimFilter>,
    ) -> Result<Arc<Self>, WriteBackError> {
        Self::build(
            lower,
            block_bytes,
            staging_blocks,
            queue_batches,
            Some(filter),
        )
    }

    fn build(
        lower: Arc<dyn Storage>,
        block_bytes: usize,
        staging_blocks: usize,
        queue_batches: usize,
        filter: Option<Arc<dyn VictimFilter>>,
    ) -> Result<Arc<Self>, WriteBackError> {
        if staging_blocks == 0 || queue_batches == 0 || block_bytes == 0 {
            return Err(WriteBackError::Zero);
        }
        let shared = Arc::new(Shared {
            arena: OnceLock::new(),
            pool: Mutex::new(
                (0..staging_blocks)
                    .map(|_| vec![0u8; block_bytes])
                    .collect(),
            ),
            returned: Condvar::new(),
            stopped: AtomicBool::new(false),
            max_wait_ns: AtomicU64::new(0),
            counters: Counters::default(),
        });
        let (sender, receiver) = sync_channel(queue_batches);
        let worker_shared = shared.clone();
        let worker = std::thread::Builder::new()
            .name("kvtier-writeback".to_string())
            .spawn(move || {
                // Set however the worker ends (a panicking lower tier unwinds through here).
                let _stop = StopOnDrop(&worker_shared);
                drain(&receiver, lower.as_ref(), &worker_shared);
            })?;
        Ok(Arc::new(Self {
            shared,
            filter,
            sender: Mutex::new(Some(sender)),
            worker: Mutex::new(Some(worker)),
        }))
    }

    /// Names the arena whose bytes victims are copied from (held weakly: the arena's manager
    /// holds this hook). Only the first call counts; returns whether it did.
    pub fn attach(&self, arena: &Arc<HostArena<G2>>) -> bool {
        self.shared.arena.set(Arc::downgrade(arena)).is_ok()
    }

    /// How long an eviction waits for free staging buffers before it skips the victims left
    /// over (default zero: it never waits). The wait runs on the evicting caller's thread with
    /// no lock of the manager held.
    pub fn set_max_wait(&self, wait: Duration) {
        let ns = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        self.shared.max_wait_ns.store(ns, Ordering::Relaxed);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> WriteBackStats {
        let c = &self.shared.counters;
        WriteBackStats {
            staged: c.staged.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
            written: c.written.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }

    /// Blocks staged but not yet written or failed.
    pub fn pending(&self) -> u64 {
        let s = self.stats();
        s.staged - s.written - s.failed
    }

    /// Stops accepting victims, writes what is queued and joins the worker (idempotent).
    pub fn close(&self) {
        stop(&self.shared);
        drop(self.sender.lock().take());
        if let Some(w) = self.worker.lock().take() {
            // A panicking lower tier ended the worker; its batches are lost (best effort).
            let _ = w.join();
        }
    }

    /// Up to `count` staging buffers, as many as the pool has; when it has none, waits until
    /// the worker gives some back, the stage closes, or `until` passes (empty then).
    fn take_buffers(&self, count: usize, until: Instant) -> Vec<Vec<u8>> {
        let shared = &self.shared;
        let mut pool = shared.pool.lock();
        while pool.is_empty() && !self.closed() && Instant::now() < until {
            if shared.returned.wait_until(&mut pool, until).timed_out() {
                break;
            }
        }
        let n = count.min(pool.len());
        let at = pool.len() - n;
        pool.split_off(at)
    }

    /// Whether the stage is closing or its worker is gone (ended by a panicking lower tier).
    fn closed(&self) -> bool {
        self.shared.stopped.load(Ordering::Relaxed)
    }

    fn skip(&self, n: usize) {
        self.shared
            .counters
            .skipped
            .fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl Drop for WriteBack {
    fn drop(&mut self) {
        self.close();
    }
}

impl EvictionHook for WriteBack {
    fn evicting(&self, victims: &[EvictedBlock<'_>]) {
        let chosen = self.filter.as_ref().map(|f| {
            let hashes: Vec<SequenceHash> = victims.iter().map(EvictedBlock::hash).collect();
            f.select(&hashes)
        });
        let mut todo: Vec<&EvictedBlock<'_>> = victims
            .iter()
            .enumerate()
            .filter(|(k, _)| {
                chosen
                    .as_ref()
                    .is_none_or(|c| c.get(*k).copied().unwrap_or(false))
            })
            .map(|(_, v)| v)
            .collect();
        if todo.is_empty() {
            return;
        }
        let Some(arena) = self.shared.arena.get().and_then(Weak::upgrade) else {
            self.skip(todo.len());
            return;
        };
        let wait = self.shared.max_wait_ns.load(Ordering::Relaxed);
        let until = Instant::now() + Duration::from_nanos(wait);
        // As many victims at a time as there are free buffers; with a wait set, the next
        // ones wait for the worker to give buffers back (until `until`).
        while !todo.is_empty() {
            let bufs = self.take_buffers(todo.len(), until);
            if bufs.is_empty() {
                self.skip(todo.len());
                return;
            }
            let rest = todo.split_off(bufs.len());
            self.stage(&arena, &todo, bufs);
            todo = rest;
        }
    }
}

impl WriteBack {
    /// Copies `victims` into `bufs` (one each) and queues them for the worker; what cannot be
    /// copied or queued is counted as skipped and its buffer goes back to the pool.
    fn stage(&self, arena: &HostArena<G2>, victims: &[&EvictedBlock<'_>], mut bufs: Vec<Vec<u8>>) {
        let mut batch: Batch = Vec::with_capacity(bufs.len());
        let mut skipped = 0;
        for &v in victims {
            let Ok(bytes) = arena.block(v) else {
                skipped += 1;
                continue;
            };
            match bufs.pop() {
                Some(mut buf) if buf.len() == bytes.len() => {
                    buf.copy_from_slice(bytes);
                    batch.push((v.hash(), buf));
                }
                Some(buf) => {
                    bufs.push(buf);
                    skipped += 1;
                }
                None => skipped += 1,
            }
        }
        let sent = batch.len();
        if sent > 0 {
            let result = match self.sender.lock().as_ref() {
                Some(tx) => tx.try_send(batch),
                None => Err(TrySendError::Disconnected(batch)),
            };
            match result {
                Ok(()) => {
                    self.shared
                        .counters
                        .staged
                        .fetch_add(sent as u64, Ordering::Relaxed);
                }
                Err(TrySendError::Full(b) | TrySendError::Disconnected(b)) => {
                    skipped += sent;
                    bufs.extend(b.into_iter().map(|(_, buf)| buf));
                }
            }
        }
        if !bufs.is_empty() {
            self.shared.pool.lock().append(&mut bufs);
        }
        if skipped > 0 {
            self.skip(skipped);
        }
    }
}

/// Marks the stage stopped and wakes waiting hooks when dropped.
struct StopOnDrop<'a>(&'a Shared);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        stop(self.0);
    }
}

/// Marks the stage stopped and wakes the hooks waiting for buffers.
fn stop(shared: &Shared) {
    shared.stopped.store(true, Ordering::Relaxed);
    // Under the pool lock, so a hook between its check and its wait cannot miss it.
    let _pool = shared.pool.lock();
    shared.returned.notify_all();
}

/// Most blocks the worker writes in one batch (queued batches are coalesced up to this).
const MAX_WRITE: usize = 64;

/// The worker: takes what is queued (up to [`MAX_WRITE`] blocks), writes it down as one batch
/// (for the disk tier: one sync), then returns the buffers to the pool. A batch the lower tier
/// refuses is written again block by block, so each block is counted for itself.
fn drain(rx: &Receiver<Batch>, lower: &dyn Storage, shared: &Shared) {
    while let Ok(mut batch) = rx.recv() {
        while batch.len() < MAX_WRITE {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let blocks: Vec<(SequenceHash, &[u8])> =
            batch.iter().map(|(h, b)| (*h, b.as_slice())).collect();
        let (written, failed) = match lower.put_batch(&blocks) {
            Ok(()) => (blocks.len(), 0),
            Err(_) => blocks.iter().fold((0, 0), |(w, f), (hash, bytes)| {
                match put_block(lower, *hash, bytes) {
                    Ok(()) => (w + 1, f),
                    Err(_) => (w, f + 1),
                }
            }),
        };
        let c = &shared.counters;
        c.written.fetch_add(written as u64, Ordering::Relaxed);
        c.failed.fetch_add(failed as u64, Ordering::Relaxed);
        drop(blocks);
        let mut bufs: Vec<Vec<u8>> = batch.into_iter().map(|(_, buf)| buf).collect();
        shared.pool.lock().append(&mut bufs);
        shared.returned.notify_all();
    }
}
