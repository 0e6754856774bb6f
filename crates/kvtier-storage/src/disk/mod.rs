//! G3: block bytes on local disk, in preallocated files of fixed-size slots, indexed in redb,
//! checksummed, and crash safe.
//!
//! A [`DiskTier`] holds up to `capacity_blocks` blocks of exactly `block_bytes` bytes, keyed by
//! their [`SequenceHash`]. It owns a directory:
//!
//! ```text
//! dir/index.redb        hash -> (slot, length, checksum, generation); the tier's settings
//! dir/data-00000.bin    slots 0 .. slots_per_file, each block_bytes long
//! dir/data-00001.bin    the next slots_per_file slots (files are created as slots are needed)
//! ```
//!
//! # Writes: durable before acknowledged
//!
//! A batch (`put` is a batch of one) goes through four steps, under the writer lock:
//!
//! ```text
//! grant slots ──► pwritev the bytes ──► fdatasync data files ──► one redb commit ──► publish
//! (free, new, or    (runs of consecutive   (once per file        (removals first,     (readers
//!  FIFO-evicted)     slots: one syscall)    touched)              then inserts)        see it)
//! ```
//!
//! Checksums are computed on a second thread while the bytes are written and synced (batches
//! of 1 MiB or more; `verify.rs`). A block is acknowledged only when its commit returned. A new version of a hash always goes
//! to a fresh slot (the old one is freed when the new one is published), so a crash in the
//! middle of an overwrite leaves the old version intact. A slot is only rewritten when no live
//! record points at it; a stale record that still does (an evicted or dropped block whose
//! removal is not committed yet) is removed by the same commit that publishes the slot's new
//! block, and until then its checksum no longer matches: it can be reported, never served.
//!
//! # Reads: verified every time
//!
//! Every read checks the block's xxh3-64 checksum (seeded with the hash and the write
//! generation, so stale bytes of an older version or another block fail too). A mismatch drops
//! the block from the index, counts it in [`DiskStats::corrupt`] and returns
//! [`DiskError::Corrupt`]; the caller's buffer then holds bytes it must not use. A mismatch
//! caused by a concurrent eviction (the slot was reused under the reader) is a miss, not a
//! corruption. The removal of a dropped block is committed with the next write, delete,
//! [`DiskTier::flush_removals`] or drop of the tier; after a crash before that, the block is
//! found and reported again. `get_batch` reads consecutive slots with one `pread` per 2 MiB
//! piece and verifies each piece while the next one is read.
//!
//! # Capacity and eviction
//!
//! When every slot is taken, a write evicts the oldest block by write generation (FIFO; see
//! `slots.rs`). A batch larger than the capacity is refused.
//!
//! # Restart
//!
//! Opening a tier reads the settings (a different namespace, block size or slots per file is
//! refused with [`DiskError::ConfigMismatch`]), scans the index once (one range per core) and
//! sorts it by generation; no block bytes are read. 1,000,000 blocks: about 0.4 s
//! (`benches/disk.rs`). After a crash redb first repairs its file: a walk of the whole index,
//! unless the tier runs with [`DiskConfig::with_quick_repair`]. A second handle on an open tier
//! (this process or another) is refused by the index's file lock.
//!
//! # Lock ordering
//!
//! `writer` (one batch, delete or index commit at a time) before `slots` (the in-memory index;
//! held only for lookups and bookkeeping, never across I/O). Readers take only `slots`.
//!
//! # Examples
//!
//! ```
//! use kvtier_core::SequenceHash;
//! use kvtier_storage::disk::{DiskConfig, DiskTier};
//!
//! let dir = tempfile::tempdir()?;
//! let config = DiskConfig::new("demo-model/xxh3/fp16", 4096, 1024);
//! let tier = DiskTier::open(dir.path(), config.clone())?;
//! let hash = SequenceHash::root(42);
//! tier.put(hash, &[7u8; 4096])?;
//! drop(tier);
//!
//! let tier = DiskTier::open(dir.path(), config)?;
//! let mut buf = vec![0u8; 4096];
//! assert!(tier.get(hash, &mut buf)?);
//! assert_eq!(buf, vec![7u8; 4096]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod error;
mod files;
mod index;
mod manifest;
mod slots;
mod stats;
mod verify;

use std::path::{Path, PathBuf};

use kvtier_core::SequenceHash;
use parking_lot::Mutex;

pub use config::{DiskConfig, MAX_NAMESPACE_BYTES};
pub use error::DiskError;
pub use manifest::DiskManifests;
pub use stats::DiskStats;

use files::DataFiles;
use index::{Index, Record};
use slots::{Grant, SlotTable};
use stats::{Counters, add};
use verify::{Piece, checksum};

/// What [`DiskTier::get_batch`] found for one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockRead {
    /// The block's verified bytes are in its part of the output buffer.
    Hit,
    /// The tier does not hold the block.
    Miss,
    /// The block failed its checksum: it was dropped and counted; its part of the output
    /// buffer must not be used.
    Corrupt,
}

/// The G3 disk tier. See the [module documentation](self) for the design.
///
/// All methods take `&self`: the tier is `Sync` and may be shared between threads; writes are
/// serialized, reads run in parallel with each other and with writes.
#[derive(Debug)]
pub struct DiskTier {
    dir: PathBuf,
    config: DiskConfig,
    files: DataFiles,
    /// The index, which is also the writer lock.
    writer: Mutex<Index>,
    slots: Mutex<SlotTable>,
    counters: Counters,
    /// Told which blocks came and went (set once).
    listener: std::sync::OnceLock<std::sync::Arc<dyn DiskListener>>,
}

/// Told which blocks a [`DiskTier`] gained and lost, after the fact and with no lock of the
/// tier held (a node publishes them as block events of the `Disk` medium, so a router knows
/// what the disk can serve). It must not call back into the tier.
pub trait DiskListener: Send + Sync + std::fmt::Debug {
    /// `hashes` became readable: a batch was committed.
    fn stored(&self, hashes: &[SequenceHash]);
    /// `hashes` left the tier: evicted for room, deleted, or found corrupt.
    fn removed(&self, hashes: &[SequenceHash]);
}

impl DiskTier {
    /// Opens the tier in `dir` (created if missing), or creates a new one there.
    ///
    /// # Errors
    ///
    /// [`DiskError::InvalidConfig`] for settings that describe no tier;
    /// [`DiskError::ConfigMismatch`] when `dir` holds a tier with another namespace, block size
    /// or slots per file, or a larger capacity; [`DiskError::Io`] / [`DiskError::Index`] when
    /// the directory, files or index cannot be opened (redb also refuses a tier that another
    /// handle or process has open).
    pub fn open(dir: impl AsRef<Path>, config: DiskConfig) -> Result<Self, DiskError> {
        config.validate()?;
        let dir = dir.as_ref().to_owned();
        std::fs::create_dir_all(&dir).map_err(DiskError::io("creating the tier directory"))?;
        let (index, records) = index::open(&dir, &config)?;
        let max_files = config.capacity_blocks().div_ceil(config.slots_per_file()) as usize;
        let files = DataFiles::open(
            &dir,
            config.block_bytes() as u64,
            config.slots_per_file(),
            config.preallocate(),
            max_files,
        )?;
        let slots = SlotTable::rebuild(
            records,
            config.capacity_blocks(),
            files.covered_slots(),
            config.block_bytes() as u32,
        );
        Ok(Self {
            dir,
            config,
            files,
            writer: Mutex::new(index),
            slots: Mutex::new(slots),
            counters: Counters::default(),
            listener: std::sync::OnceLock::new(),
        })
    }

    /// Tells `listener` of every block stored or removed from now on. One listener per tier:
    /// returns `false` (and keeps the first) when one is set already.
    pub fn set_listener(&self, listener: std::sync::Arc<dyn DiskListener>) -> bool {
        self.listener.set(listener).is_ok()
    }

    /// Every block the tier holds, in no particular order (what a listener set after
    /// [`open`](Self::open) has not been told of).
    pub fn hashes(&self) -> Vec<SequenceHash> {
        self.slots
            .lock()
            .hashes()
            .map(SequenceHash::from_u128)
            .collect()
    }

    fn notify_removed(&self, hashes: &[SequenceHash]) {
        if let Some(l) = self.listener.get()
            && !hashes.is_empty()
        {
            l.removed(hashes);
        }
    }

    /// The tier's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings the tier was opened with.
    pub fn config(&self) -> &DiskConfig {
        &self.config
    }

    /// Bytes in every block.
    pub fn block_bytes(&self) -> usize {
        self.config.block_bytes()
    }

    /// Most blocks the tier holds before it evicts.
    pub fn capacity(&self) -> u64 {
        self.config.capacity_blocks()
    }

    /// Blocks held now.
    pub fn len(&self) -> usize {
        self.slots.lock().len()
    }

    /// Whether the tier holds no block.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the tier holds `hash` (its bytes are not read or verified).
    pub fn contains(&self, hash: SequenceHash) -> bool {
        self.slots.lock().get(hash.as_u128()).is_some()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DiskStats {
        self.counters.snapshot()
    }

    /// Stores one block durably; see [`DiskTier::put_batch`].
    ///
    /// # Errors
    ///
    /// As [`DiskTier::put_batch`].
    pub fn put(&self, hash: SequenceHash, bytes: &[u8]) -> Result<(), DiskError> {
        self.put_batch(&[(hash, bytes)])
    }

    /// Stores every block of `blocks` durably: when this returns `Ok`, all of them survive a
    /// crash. One data sync per file touched and one index commit for the whole batch. A hash
    /// given twice keeps its last bytes; a hash already held gets a new version. Blocks may
    /// evict the oldest ones (FIFO) when the tier is full.
    ///
    /// # Errors
    ///
    /// [`DiskError::WrongSize`] if a block is not `block_bytes` long and
    /// [`DiskError::BatchTooLarge`] if the batch has more distinct hashes than the capacity
    /// (nothing is written in either case); [`DiskError::Io`] or [`DiskError::Index`] when the
    /// disk fails (full, file-size limit, ...): then no block of the batch is acknowledged,
    /// blocks it evicted are gone, and every other block stays readable.
    pub fn put_batch(&self, blocks: &[(SequenceHash, &[u8])]) -> Result<(), DiskError> {
        let expected = self.block_bytes();
        if let Some((_, bad)) = blocks.iter().find(|(_, b)| b.len() != expected) {
            return Err(DiskError::WrongSize {
                expected,
                got: bad.len(),
            });
        }
        let blocks = last_of_each(blocks);
        if blocks.len() as u64 > self.capacity() {
            return Err(DiskError::BatchTooLarge {
                blocks: blocks.len(),
                capacity: self.capacity(),
            });
        }
        if blocks.is_empty() {
            return Ok(());
        }
        let mut index = self.writer.lock();
        let mut evicted = Vec::new();
        let result = self.write_locked(&mut index, &blocks, &mut evicted);
        drop(index);
        if result.is_err() {
            add(&self.counters.errors, 1);
        }
        // Blocks evicted for the batch are gone whether or not it was committed.
        self.notify_removed(&evicted);
        if result.is_ok()
            && let Some(l) = self.listener.get()
        {
            let stored: Vec<SequenceHash> = blocks.iter().map(|(h, _)| *h).collect();
            l.stored(&stored);
        }
        result
    }

    /// The body of [`DiskTier::put_batch`], with the writer lock held.
    fn write_locked(
        &self,
        index: &mut Index,
        blocks: &[(SequenceHash, &[u8])],
        evicted: &mut Vec<SequenceHash>,
    ) -> Result<(), DiskError> {
        self.grow_for(blocks.len() as u64)?;
        let covered = self.files.covered_slots();
        let mut grants: Vec<Grant> = Vec::with_capacity(blocks.len());
        {
            let mut slots = self.slots.lock();
            for _ in blocks {
                let Some((grant, victim)) = slots.grant(covered) else {
                    slots.release(&grants);
                    return Err(DiskError::BatchTooLarge {
                        blocks: blocks.len(),
                        capacity: self.capacity(),
                    });
                };
                if let Some(victim) = victim {
                    add(&self.counters.evictions, 1);
                    evicted.push(SequenceHash::from_u128(victim));
                }
                grants.push(grant);
            }
        }
        let staged = self.write_and_commit(index, blocks, &grants);
        let mut slots = self.slots.lock();
        match staged {
            Ok(records) => {
                slots.publish(&records);
                add(&self.counters.puts, records.len() as u64);
                add(&self.counters.put_batches, 1);
                add(
                    &self.counters.bytes_written,
                    (records.len() * self.block_bytes()) as u64,
                );
                Ok(())
            }
            Err(e) => {
                slots.release(&grants);
                Err(e)
            }
        }
    }

    /// Creates the data files a batch of `blocks` needs beyond the free slots (I/O, with only
    /// the writer lock held).
    fn grow_for(&self, blocks: u64) -> Result<(), DiskError> {
        let (free, unissued, high_water) = {
            let slots = self.slots.lock();
            (
                slots.free_without_growth(),
                slots.unissued(),
                slots.high_water(),
            )
        };
        let covered = self.files.covered_slots();
        let fresh = covered.saturating_sub(high_water);
        let growth = blocks
            .saturating_sub(free + fresh)
            .min(unissued.saturating_sub(fresh));
        if growth == 0 {
            return Ok(());
        }
        let need = (covered + growth).div_ceil(self.config.slots_per_file());
        self.files.ensure(need as usize)
    }

    /// Writes the blocks into their granted slots, syncs them, commits the index; returns the
    /// committed records.
    fn write_and_commit(
        &self,
        index: &mut Index,
        blocks: &[(SequenceHash, &[u8])],
        grants: &[Grant],
    ) -> Result<Vec<(u128, Record)>, DiskError> {
        let runs = self.files.runs(
            grants
                .iter()
                .zip(blocks)
                .map(|(grant, (_, bytes))| (grant.slot, *bytes)),
        );
        let bytes = blocks.len() * self.block_bytes();
        let (written, checksums) = verify::overlap(
            bytes,
            || {
                let touched = self.files.write_runs(&runs)?;
                self.files.sync(&touched)
            },
            || {
                grants
                    .iter()
                    .zip(blocks)
                    .map(|(grant, (hash, bytes))| checksum(hash.as_u128(), grant.generation, bytes))
                    .collect::<Vec<u64>>()
            },
        );
        written?;
        let records: Vec<(u128, Record)> = grants
            .iter()
            .zip(blocks)
            .zip(checksums)
            .map(|((grant, (hash, bytes)), checksum)| {
                let record = Record {
                    slot: grant.slot,
                    len: bytes.len() as u32,
                    checksum,
                    generation: grant.generation,
                };
                (hash.as_u128(), record)
            })
            .collect();
        self.commit_index(index, &records)?;
        Ok(records)
    }

    /// One index commit: the pending removals, then `inserts`. Call with the writer lock held.
    fn commit_index(&self, index: &mut Index, inserts: &[(u128, Record)]) -> Result<(), DiskError> {
        let removals = self.slots.lock().take_removals();
        index.commit(&removals, inserts).inspect_err(|_| {
            self.slots.lock().restore_removals(removals);
        })
    }

    /// Reads block `hash` into `buf` and verifies it. `Ok(true)`: `buf` holds the block;
    /// `Ok(false)`: the tier does not hold it (`buf` is untouched).
    ///
    /// # Errors
    ///
    /// [`DiskError::WrongSize`] if `buf` is not `block_bytes` long; [`DiskError::Corrupt`] if
    /// the bytes failed their checksum (the block is dropped and counted, and `buf` holds bytes
    /// that must not be used); [`DiskError::Io`] if the read failed.
    pub fn get(&self, hash: SequenceHash, buf: &mut [u8]) -> Result<bool, DiskError> {
        match self.get_batch(&[hash], buf)?[0] {
            BlockRead::Hit => Ok(true),
            BlockRead::Miss => Ok(false),
            BlockRead::Corrupt => Err(DiskError::Corrupt { hash }),
        }
    }

    /// Reads the blocks `hashes` into `out` (block `i` at `out[i * block_bytes..]`), verifying
    /// each. Blocks in consecutive slots of one file are read with one `pread`.
    ///
    /// # Errors
    ///
    /// [`DiskError::WrongSize`] if `out` is not `hashes.len() * block_bytes` long;
    /// [`DiskError::Io`] if a read failed (no partial result).
    pub fn get_batch(
        &self,
        hashes: &[SequenceHash],
        out: &mut [u8],
    ) -> Result<Vec<BlockRead>, DiskError> {
        let block = self.block_bytes();
        if Some(out.len()) != hashes.len().checked_mul(block) {
            return Err(DiskError::WrongSize {
                expected: hashes.len().saturating_mul(block),
                got: out.len(),
            });
        }
        add(&self.counters.gets, hashes.len() as u64);
        let records: Vec<Option<Record>> = {
            let slots = self.slots.lock();
            hashes.iter().map(|h| slots.get(h.as_u128())).collect()
        };
        let pieces = self.plan_reads(&records);
        let check = |i: usize, bytes: &[u8]| {
            records[i]
                .is_some_and(|r| checksum(hashes[i].as_u128(), r.generation, bytes) == r.checksum)
        };
        let verdicts = match verify::read_and_verify(&self.files, block, &pieces, out, check) {
            Ok(verdicts) => verdicts,
            Err(e) => {
                add(&self.counters.errors, 1);
                return Err(e);
            }
        };
        let read: usize = pieces.iter().map(|p| p.count).sum();
        add(&self.counters.bytes_read, (read * block) as u64);
        let mut good = vec![false; hashes.len()];
        for (i, ok) in verdicts {
            good[i] = ok;
        }
        let mut results = Vec::with_capacity(hashes.len());
        let mut corrupt = Vec::new();
        for (i, (hash, record)) in hashes.iter().zip(&records).enumerate() {
            let result = match record {
                None => BlockRead::Miss,
                Some(r) => {
                    if good[i] {
                        BlockRead::Hit
                    } else if self.slots.lock().drop_entry(hash.as_u128(), r.generation) {
                        add(&self.counters.corrupt, 1);
                        corrupt.push(*hash);
                        BlockRead::Corrupt
                    } else {
                        // Evicted or replaced while we read: its slot was reused.
                        BlockRead::Miss
                    }
                }
            };
            let counter = match result {
                BlockRead::Hit => &self.counters.hits,
                _ => &self.counters.misses,
            };
            if result != BlockRead::Corrupt {
                add(counter, 1);
            }
            results.push(result);
        }
        self.notify_removed(&corrupt);
        Ok(results)
    }

    /// The reads for `records` (in order, misses skipped): runs of consecutive slots of one
    /// file, cut into pieces of about [`verify::PIECE_BYTES`].
    fn plan_reads(&self, records: &[Option<Record>]) -> Vec<Piece> {
        let per_piece = (verify::PIECE_BYTES / self.block_bytes()).max(1);
        let mut pieces: Vec<Piece> = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let Some(record) = record else { continue };
            if let Some(last) = pieces.last_mut() {
                let follows = last.first + last.count == i
                    && last.slot + last.count as u64 == record.slot
                    && last.count < per_piece
                    && self.files.same_file(last.slot, last.count as u64 + 1);
                if follows {
                    last.count += 1;
                    continue;
                }
            }
            pieces.push(Piece {
                first: i,
                count: 1,
                slot: record.slot,
            });
        }
        pieces
    }

    /// Removes `hash` durably. Returns whether the tier held it.
    ///
    /// # Errors
    ///
    /// [`DiskError::Index`] if the index commit failed: the block is gone from this handle
    /// anyway, and its removal is retried by the next commit.
    pub fn delete(&self, hash: SequenceHash) -> Result<bool, DiskError> {
        let mut index = self.writer.lock();
        let dropped = {
            let mut slots = self.slots.lock();
            match slots.get(hash.as_u128()) {
                Some(record) => slots.drop_entry(hash.as_u128(), record.generation),
                None => false,
            }
        };
        if !dropped {
            return Ok(false);
        }
        add(&self.counters.deletes, 1);
        let committed = self
            .commit_index(&mut index, &[])
            .inspect_err(|_| add(&self.counters.errors, 1));
        drop(index);
        // Gone from this handle either way (see the error case above).
        self.notify_removed(&[hash]);
        committed.map(|()| true)
    }

    /// Commits removals still queued (blocks found corrupt since the last write), so a restart
    /// does not see their records again. Writes do this as part of their commit.
    ///
    /// # Errors
    ///
    /// [`DiskError::Index`] if the commit failed (the removals stay queued).
    pub fn flush_removals(&self) -> Result<(), DiskError> {
        let mut index = self.writer.lock();
        if self.slots.lock().pending_removals() == 0 {
            return Ok(());
        }
        self.commit_index(&mut index, &[])
            .inspect_err(|_| add(&self.counters.errors, 1))
    }

    /// Asks the kernel to drop the data files' cached pages, so the next reads come from the
    /// device (benchmarks use it to measure the disk, not the page cache).
    ///
    /// # Errors
    ///
    /// [`DiskError::Io`] if the advice failed.
    pub fn drop_page_cache(&self) -> Result<(), DiskError> {
        self.files.drop_cache()
    }
}

impl Drop for DiskTier {
    /// Commits removals still queued (best effort: a failure leaves their records to be found
    /// again, and reported again, after the restart; never served).
    fn drop(&mut self) {
        let _ = self.flush_removals();
    }
}

/// The blocks of a batch with each hash once, at the position of its last occurrence, keeping
/// the bytes given last.
fn last_of_each<'a>(blocks: &[(SequenceHash, &'a [u8])]) -> Vec<(SequenceHash, &'a [u8])> {
    let mut seen = std::collections::HashSet::with_capacity(blocks.len());
    let mut unique: Vec<(SequenceHash, &'a [u8])> = blocks
        .iter()
        .rev()
        .filter(|(h, _)| seen.insert(h.as_u128()))
        .copied()
        .collect();
    unique.reverse();
    unique
}

#[cfg(test)]
mod tests;
