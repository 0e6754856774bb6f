//! Counters of the disk tier, updated on every path, and their plain snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a disk tier's counters, from [`DiskTier::stats`](super::DiskTier::stats).
///
/// Counters only grow over the life of one open tier; they start at zero on every open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiskStats {
    /// Blocks acknowledged as durable by `put` / `put_batch`.
    pub puts: u64,
    /// Durable write batches (one data sync and one index commit each).
    pub put_batches: u64,
    /// Blocks looked up by `get` / `get_batch`.
    pub gets: u64,
    /// Lookups that returned the block's bytes.
    pub hits: u64,
    /// Lookups of a block the tier does not hold.
    pub misses: u64,
    /// Blocks whose bytes failed their checksum on read (dropped, never served).
    pub corrupt: u64,
    /// Blocks evicted to make room for new ones.
    pub evictions: u64,
    /// Blocks removed by `delete`.
    pub deletes: u64,
    /// Block bytes written to the data files.
    pub bytes_written: u64,
    /// Block bytes read from the data files (verified or not).
    pub bytes_read: u64,
    /// Operations that failed with an I/O or index error.
    pub errors: u64,
}

/// The live counters behind [`DiskStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) puts: AtomicU64,
    pub(crate) put_batches: AtomicU64,
    pub(crate) gets: AtomicU64,
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) corrupt: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) deletes: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    /// A copy of every counter.
    pub(crate) fn snapshot(&self) -> DiskStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DiskStats {
            puts: get(&self.puts),
            put_batches: get(&self.put_batches),
            gets: get(&self.gets),
            hits: get(&self.hits),
            misses: get(&self.misses),
            corrupt: get(&self.corrupt),
            evictions: get(&self.evictions),
            deletes: get(&self.deletes),
            bytes_written: get(&self.bytes_written),
            bytes_read: get(&self.bytes_read),
            errors: get(&self.errors),
        }
    }
}
