//! Fan-out writes: one stream, every tier at once, each tier dropped on its own.

use kvtier_core::SequenceHash;
use xxhash_rust::xxh3::Xxh3;

use super::TieredStore;
use super::metrics::inc;
use crate::tier::{MissHandler, StorageError, put_block};

/// Where one tier's copy of the stream goes.
enum Sink {
    /// The tier's own miss handler (tiers without a deadline).
    Direct(Box<dyn MissHandler>),
    /// Gathered here and stored at finish on the tier's workers (tiers with a deadline).
    Buffered(Vec<u8>),
}

/// Which tiers a finished write reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteReport {
    /// Indices of the tiers that published the block, fastest first.
    pub stored: Vec<usize>,
}

/// A write of one block to every tier of a [`TieredStore`]; see [`TieredStore::writer`].
/// Dropped unfinished, it writes nothing anywhere.
pub struct TieredWriter<'a> {
    store: &'a TieredStore,
    hash: SequenceHash,
    len: usize,
    written: usize,
    sinks: Vec<(usize, Sink)>,
    digest: Xxh3,
}

impl std::fmt::Debug for TieredWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredWriter")
            .field("hash", &self.hash)
            .field("len", &self.len)
            .field("written", &self.written)
            .field(
                "tiers",
                &self.sinks.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl TieredStore {
    /// Starts a write of block `hash` (exactly `len` bytes) to every tier. A tier that cannot
    /// take a block of `len` bytes or fails to open a handler is left out (counted as a write
    /// error). Gates apply as the bytes stream: see [`TieredWriter::write_chunk`].
    pub fn writer(&self, hash: SequenceHash, len: usize) -> TieredWriter<'_> {
        let mut sinks = Vec::with_capacity(self.tiers.len());
        for (i, entry) in self.tiers.iter().enumerate() {
            if entry.storage.block_bytes().is_some_and(|b| b != len) {
                inc(&entry.counters.write_errors);
                continue;
            }
            if entry.config.timeout.is_some() {
                sinks.push((i, Sink::Buffered(Vec::with_capacity(len))));
                continue;
            }
            match entry.storage.get_miss_handler(hash, len) {
                Ok(h) => sinks.push((i, Sink::Direct(h))),
                Err(_) => inc(&entry.counters.write_errors),
            }
        }
        TieredWriter {
            store: self,
            hash,
            len,
            written: 0,
            sinks,
            digest: Xxh3::new(),
        }
    }
}

impl TieredWriter<'_> {
    /// Tiers still taking the stream.
    pub fn tiers(&self) -> Vec<usize> {
        self.sinks.iter().map(|(i, _)| *i).collect()
    }

    /// Appends `chunk` for every tier still in the stream. A tier whose gate the bytes written
    /// so far now pass is dropped (its handler unfinished: nothing is written there; counted as
    /// a gate drop); a tier whose write fails is dropped (counted as a write error). The
    /// others carry on.
    ///
    /// # Errors
    ///
    /// [`StorageError::Overflow`] past the declared length (nothing is forwarded).
    pub fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), StorageError> {
        let total = self.written + chunk.len();
        if total > self.len {
            return Err(StorageError::Overflow { len: self.len });
        }
        let store = self.store;
        self.sinks.retain_mut(|(i, sink)| {
            let entry = &store.tiers[*i];
            if !entry.config.admits(total) {
                inc(&entry.counters.gate_drops);
                return false;
            }
            match sink {
                Sink::Buffered(buf) => {
                    buf.extend_from_slice(chunk);
                    true
                }
                Sink::Direct(h) => match h.write_chunk(chunk) {
                    Ok(()) => true,
                    Err(_) => {
                        inc(&entry.counters.write_errors);
                        false
                    }
                },
            }
        });
        self.digest.update(chunk);
        self.written = total;
        Ok(())
    }

    /// Publishes the block in every tier still in the stream. A tier that fails (or misses its
    /// deadline) is counted and left out; the report lists the tiers that published it.
    ///
    /// # Errors
    ///
    /// [`StorageError::Incomplete`] before every declared byte was written (nothing is
    /// published anywhere).
    pub fn finish(self) -> Result<WriteReport, StorageError> {
        if self.written != self.len {
            return Err(StorageError::Incomplete {
                written: self.written,
                len: self.len,
            });
        }
        let store = self.store;
        let hash = self.hash;
        let mut stored = Vec::with_capacity(self.sinks.len());
        for (i, sink) in self.sinks {
            let result = match sink {
                Sink::Direct(h) => h.finish(),
                Sink::Buffered(buf) => store.call(i, move |s| put_block(s, hash, &buf)),
            };
            let counters = &store.tiers[i].counters;
            match result {
                Ok(()) => {
                    inc(&counters.writes);
                    stored.push(i);
                }
                Err(StorageError::Timeout(_)) => {}
                Err(_) => inc(&counters.write_errors),
            }
        }
        if !stored.is_empty() {
            store.record_digest(hash, self.digest.digest());
        }
        Ok(WriteReport { stored })
    }
}
