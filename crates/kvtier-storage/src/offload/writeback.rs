//! [`WriteBack`]: the write-back half of the offload engine, installed as a G2 manager's
//! [`EvictionHook`].
//!
//! When the manager evicts, the hook runs on the evicting caller's thread before the victims'
//! slots are reused: it copies each victim's bytes out of the [`HostArena`] into a buffer taken
//! from a bounded staging pool and hands the batch to a worker thread through a bounded channel;
//! the worker writes the blocks to the lower [`Storage`] and returns the buffers to the pool.
//! The hook never waits: no free buffer, or a full channel, skips the block and counts it.
//!
//! ```text
//!   allocate (evicts) --> hook: copy victim bytes into staging buffers --try_send--> worker
//!        |                     (pool empty / channel full: skipped, counted)          | put
//!        '--> slots reach the caller only after the hook returned                    lower tier
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::JoinHandle;

use kvtier_core::{EvictedBlock, EvictionHook, G2, SequenceHash};
use parking_lot::Mutex;

use crate::arena::HostArena;
use crate::tier::{Storage, put_block};

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
            counters: Counters::default(),
        });
        let (sender, receiver) = sync_channel(queue_batches);
        let worker_shared = shared.clone();
        let worker = std::thread::Builder::new()
            .name("kvtier-writeback".to_string())
            .spawn(move || drain(&receiver, lower.as_ref(), &worker_shared))?;
        Ok(Arc::new(Self {
            shared,
            sender: Mutex::new(Some(sender)),
            worker: Mutex::new(Some(worker)),
        }))
    }

    /// Names the arena whose bytes victims are copied from (held weakly: the arena's manager
    /// holds this hook). Only the first call counts; returns whether it did.
    pub fn attach(&self, arena: &Arc<HostArena<G2>>) -> bool {
        self.shared.arena.set(Arc::downgrade(arena)).is_ok()
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
        drop(self.sender.lock().take());
        if let Some(w) = self.worker.lock().take() {
            // A panicking lower tier ended the worker; its batches are lost (best effort).
            let _ = w.join();
        }
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
        let Some(arena) = self.shared.arena.get().and_then(Weak::upgrade) else {
            self.skip(victims.len());
            return;
        };
        // Take as many buffers as victims (or as the pool has) in one lock.
        let mut bufs = {
            let mut pool = self.shared.pool.lock();
            let n = victims.len().min(pool.len());
            let at = pool.len() - n;
            pool.split_off(at)
        };
        let mut batch: Batch = Vec::with_capacity(bufs.len());
        let mut skipped = 0;
        for v in victims {
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

/// The worker: writes each batch down, then returns its buffers to the pool.
fn drain(rx: &Receiver<Batch>, lower: &dyn Storage, shared: &Shared) {
    while let Ok(batch) = rx.recv() {
        let mut bufs = Vec::with_capacity(batch.len());
        for (hash, buf) in batch {
            let c = match put_block(lower, hash, &buf) {
                Ok(()) => &shared.counters.written,
                Err(_) => &shared.counters.failed,
            };
            c.fetch_add(1, Ordering::Relaxed);
            bufs.push(buf);
        }
        shared.pool.lock().append(&mut bufs);
    }
}
