//! G4 counters: what went through a [`G4Store`](super::G4Store), as relaxed atomics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of a [`G4Store`](super::G4Store)'s counters (monotonic since it was built).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct G4Stats {
    /// Blocks written successfully.
    pub puts: u64,
    /// Blocks asked for (hits + misses + corrupt + failed).
    pub gets: u64,
    /// Blocks found and verified.
    pub hits: u64,
    /// Blocks not present.
    pub misses: u64,
    /// Values refused by the frame check (wrong magic, owner, length or checksum); never served.
    pub corrupt: u64,
    /// Operations that failed for any reason other than corruption (timeouts included).
    pub errors: u64,
    /// Operations that ran past the store's timeout.
    pub timeouts: u64,
    /// Times the circuit breaker opened.
    pub breaker_trips: u64,
    /// Operations refused without a network call because the breaker was open.
    pub breaker_rejected: u64,
    /// Payload bytes written.
    pub bytes_written: u64,
    /// Payload bytes read and verified.
    pub bytes_read: u64,
    /// Manifest operations (get, put_new, cas_update, delete, touch_ttl) that reached the store.
    pub manifest_ops: u64,
    /// Manifest writes refused because another writer got there first.
    pub manifest_conflicts: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub puts: AtomicU64,
    pub gets: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub corrupt: AtomicU64,
    pub errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub breaker_trips: AtomicU64,
    pub breaker_rejected: AtomicU64,
    pub bytes_written: AtomicU64,
    pub bytes_read: AtomicU64,
    pub manifest_ops: AtomicU64,
    pub manifest_conflicts: AtomicU64,
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> G4Stats {
        G4Stats {
            puts: self.puts.load(Relaxed),
            gets: self.gets.load(Relaxed),
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            corrupt: self.corrupt.load(Relaxed),
            errors: self.errors.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            breaker_trips: self.breaker_trips.load(Relaxed),
            breaker_rejected: self.breaker_rejected.load(Relaxed),
            bytes_written: self.bytes_written.load(Relaxed),
            bytes_read: self.bytes_read.load(Relaxed),
            manifest_ops: self.manifest_ops.load(Relaxed),
            manifest_conflicts: self.manifest_conflicts.load(Relaxed),
        }
    }
}
