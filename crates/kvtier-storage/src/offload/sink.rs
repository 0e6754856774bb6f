//! [`ArenaSink`]: the write-through half of the offload engine. An [`OffloadSink`] that copies
//! registered G2 blocks' bytes from a [`HostArena`] down to a lower [`Storage`].
//!
//! Each batch the queue's worker hands over is looked up in the manager with one
//! `scan_matches(.., touch = false)` (a handle that does not count as an access for the eviction
//! policy), so offloading a block does not make it look hot. A block evicted before the worker
//! reached it is counted as `gone`, not as a failure: under write-through, G2 may drop a block
//! before its copy was made. Install [`WriteBack::selective`](super::WriteBack::selective) with
//! [`PendingWriteThrough`](super::PendingWriteThrough) as G2's eviction hook to copy such blocks
//! as they are evicted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use kvtier_core::{G2, SequenceHash};

use super::OffloadSink;
use crate::arena::HostArena;
use crate::tier::Storage;

/// Counters of an [`ArenaSink`] (a snapshot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArenaSinkStats {
    /// Blocks copied down.
    pub written: u64,
    /// Bytes copied down.
    pub bytes: u64,
    /// Blocks no longer registered in G2 when the worker reached them.
    pub gone: u64,
    /// Blocks the lower tier refused (counted, not retried).
    pub failed: u64,
    /// Blocks the lower tier already held (not written again).
    pub present: u64,
}

/// Copies registered G2 blocks down to `lower`; install it as an
/// [`OffloadQueue`](super::OffloadQueue)'s sink behind an
/// [`OffloadObserver`](super::OffloadObserver) with a write-through policy. The observer is
/// installed when the manager is built, before its arena exists: [`attach`](Self::attach) the
/// arena once it does (until then every block counts as `gone`).
pub struct ArenaSink {
    /// Held weakly: the arena's manager holds the observer, its queue, and so this sink.
    arena: OnceLock<Weak<HostArena<G2>>>,
    lower: Arc<dyn Storage>,
    written: AtomicU64,
    bytes: AtomicU64,
    gone: AtomicU64,
    failed: AtomicU64,
    present: AtomicU64,
}

impl std::fmt::Debug for ArenaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArenaSink")
            .field("lower", &self.lower.name())
            .field("stats", &self.stats())
            .finish()
    }
}

impl ArenaSink {
    /// A sink writing to `lower`; [`attach`](Self::attach) the arena to read from.
    pub fn new(lower: Arc<dyn Storage>) -> Self {
        Self {
            arena: OnceLock::new(),
            lower,
            written: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            gone: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            present: AtomicU64::new(0),
        }
    }

    /// Names the arena (and manager) blocks are read from. Only the first call counts; returns
    /// whether it did.
    pub fn attach(&self, arena: &Arc<HostArena<G2>>) -> bool {
        self.arena.set(Arc::downgrade(arena)).is_ok()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ArenaSinkStats {
        ArenaSinkStats {
            written: self.written.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            gone: self.gone.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            present: self.present.load(Ordering::Relaxed),
        }
    }
}

impl OffloadSink for ArenaSink {
    fn offload(
        &self,
        batch: &[SequenceHash],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        // One lookup for the batch, without touching recency; the guards keep each slot (and its
        // bytes) in place while it is copied.
        let Some(arena) = self.arena.get().and_then(Weak::upgrade) else {
            self.gone.fetch_add(batch.len() as u64, Ordering::Relaxed);
            return Ok(());
        };
        let held = arena.manager().scan_matches(batch, false);
        // Blocks already below (a durable PUT wrote them there first) are not written again.
        let below = self.lower.contains_batch(batch).unwrap_or_default();
        let mut blocks = Vec::with_capacity(batch.len());
        for (k, (hash, block)) in batch.iter().zip(&held).enumerate() {
            let Some(block) = block else {
                self.gone.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if below.get(k).copied().unwrap_or(false) {
                self.present.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            blocks.push((*hash, arena.block(block)?));
        }
        if blocks.is_empty() {
            return Ok(());
        }
        // One batched write (for the disk tier: one sync and one index commit for all).
        let mut first_err = None;
        match self.lower.put_batch(&blocks) {
            Ok(()) => {
                self.written
                    .fetch_add(blocks.len() as u64, Ordering::Relaxed);
                let bytes: usize = blocks.iter().map(|(_, b)| b.len()).sum();
                self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
            }
            Err(e) => {
                self.failed
                    .fetch_add(blocks.len() as u64, Ordering::Relaxed);
                first_err = Some(e);
            }
        }
        drop(held);
        match first_err {
            Some(e) => Err(Box::new(e)),
            None => Ok(()),
        }
    }
}
