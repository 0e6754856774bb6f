//! [`BlockMap`]: the converter's compact per-block memory of one engine instance.
//!
//! Owns the mapping from an engine's block hash to kvtier's, the parent links between blocks,
//! the per-medium copy counts, and the bounded memory of *ghosts* (blocks the engine no longer
//! holds, kept so that a later store under them can still be placed). It does not hash, decode
//! or emit anything.
//!
//! ```text
//! key   u64   fingerprint of the external hash (XXH3-64 of its tagged bytes, never 0)
//! value 32 B  kvtier hash (2 × u64) │ parent fingerprint (0 = root) │ copies [u16; 4]
//! ```
//!
//! One slot is 40 bytes (no control bytes: fingerprint 0 marks an empty slot), in an
//! open-addressing table that grows by half its size at 13/16 full, so ~50–75 bytes per
//! entry; no entry owns a heap allocation.
//!
//! # Invariants
//!
//! - An entry whose copies are all 0 is a ghost, and its key is in the ghost queue (possibly
//!   with stale duplicates of keys revived since); the queue never holds more than
//!   `max_ghosts` keys, the oldest going first.
//! - Copy counts saturate at `u16::MAX` (a block with that many copies then leaves the index
//!   after `u16::MAX` removals, earlier than the engine drops its last copy).
//! - Fingerprints are 64-bit: two external hashes of one engine collide with probability
//!   about n²/2⁶⁵ (10⁻⁶ for 6 M blocks), which can only mislead routing.

use kvtier_core::{Medium, SequenceHash};
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::super::decode::ExternalHash;

/// Seed of the fingerprint of an integer external hash.
const FP_SEED_INT: u64 = u64::from_le_bytes(*b"kvtvInt\0");
/// Seed of the fingerprint of a byte-string external hash.
const FP_SEED_BYTES: u64 = u64::from_le_bytes(*b"kvtvByte");

/// The 64-bit fingerprint of an external hash: `XXH3-64(LE128(int), seed_int)` or
/// `XXH3-64(bytes, seed_bytes)`; 0 (which means "no parent") becomes 1.
pub(crate) fn fingerprint(hash: &ExternalHash) -> u64 {
    let fp = match hash {
        ExternalHash::Int(v) => xxh3_64_with_seed(&v.to_le_bytes(), FP_SEED_INT),
        ExternalHash::Bytes(b) => xxh3_64_with_seed(b, FP_SEED_BYTES),
    };
    fp.max(1)
}

/// What the map knows of one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The kvtier hash, as two little-endian halves (keeps the entry 8-byte aligned).
    hash: [u64; 2],
    /// The fingerprint of the parent's external hash; 0 for a root.
    pub(crate) parent: u64,
    /// Copies held per medium ([`Medium::index`]).
    pub(crate) copies: [u16; 4],
}

impl Entry {
    /// A ghost entry (no copies).
    pub(crate) fn new(hash: SequenceHash, parent: u64) -> Self {
        let raw = hash.as_u128();
        Self {
            hash: [raw as u64, (raw >> 64) as u64],
            parent,
            copies: [0; 4],
        }
    }

    /// An entry from its parts (as [`Entry::parts`] gave them).
    pub(crate) fn from_parts(hash: u128, parent: u64, copies: [u16; 4]) -> Self {
        let mut entry = Self::new(SequenceHash::from_u128(hash), parent);
        entry.copies = copies;
        entry
    }

    /// `(kvtier hash, parent fingerprint, copies)`.
    pub(crate) fn parts(&self) -> (u128, u64, [u16; 4]) {
        (self.hash().as_u128(), self.parent, self.copies)
    }

    /// The kvtier hash.
    pub(crate) fn hash(&self) -> SequenceHash {
        SequenceHash::from_u128(u128::from(self.hash[0]) | (u128::from(self.hash[1]) << 64))
    }

    /// Copies on `medium`.
    pub(crate) fn copies_on(&self, medium: Medium) -> u16 {
        self.copies[medium.index()]
    }

    /// Whether no medium holds a copy.
    pub(crate) fn is_ghost(&self) -> bool {
        self.copies == [0; 4]
    }
}

/// A hasher that passes fingerprints through (they are XXH3 outputs already).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FpHasher(u64);

impl Hasher for FpHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; fold anything else in for completeness.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Builds [`FpHasher`]s.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FpBuild;

impl BuildHasher for FpBuild {
    type Hasher = FpHasher;

    fn build_hasher(&self) -> FpHasher {
        FpHasher(0)
    }
}

/// One slot of the table: a fingerprint (0: empty) and its entry, 40 bytes.
#[derive(Clone, Copy, Debug)]
struct Slot {
    fp: u64,
    entry: Entry,
}

impl Slot {
    const EMPTY: Self = Self {
        fp: 0,
        entry: Entry {
            hash: [0; 2],
            parent: 0,
            copies: [0; 4],
        },
    };
}

/// The most entries a table of `slots` slots takes before it grows (13/16 of it).
fn max_len(slots: usize) -> usize {
    slots / 16 * 13 + slots % 16 * 13 / 16
}

/// An open-addressing table of fingerprints, with linear probing and backward-shift deletion.
///
/// A fingerprint's home slot is `fp × slots / 2⁶⁴` (a multiply, no power of two), so the
/// table grows by half its size (not double), and keeps between ~50 and ~75 bytes per entry;
/// as homes follow the order of fingerprints, growing reinserts almost sequentially. Key 0
/// marks an empty slot (fingerprints are never 0), so no control bytes are needed.
#[derive(Debug, Default)]
pub(super) struct Table {
    slots: Vec<Slot>,
    pub(super) len: usize,
}

impl Table {
    /// The home slot of `fp` in a table of `n` slots (`n > 0`).
    fn home(fp: u64, n: usize) -> usize {
        ((u128::from(fp) * n as u128) >> 64) as usize
    }

    /// The slot holding `fp` (never one for 0, the mark of an empty slot).
    pub(super) fn find(&self, fp: u64) -> Option<usize> {
        let n = self.slots.len();
        if n == 0 || fp == 0 {
            return None;
        }
        let mut i = Self::home(fp, n);
        loop {
            let at = self.slots[i].fp;
            if at == fp {
                return Some(i);
            }
            if at == 0 {
                return None;
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
    }

    /// Reads `fp`'s home slot and returns its key, to bring the slot into the cache before
    /// it is probed (a load the processor overlaps with others, as no later work depends
    /// on it but the caller's `black_box`).
    pub(super) fn touch(&self, fp: u64) -> u64 {
        let n = self.slots.len();
        if n == 0 {
            return 0;
        }
        let home = Self::home(fp, n);
        // A probe usually runs past the home slot's line: bring the next one in too.
        self.slots[home].fp ^ self.slots[(home + 2).min(n - 1)].fp
    }

    pub(super) fn get(&self, fp: u64) -> Option<&Entry> {
        self.find(fp).map(|i| &self.slots[i].entry)
    }

    pub(super) fn get_mut(&mut self, fp: u64) -> Option<&mut Entry> {
        self.find(fp).map(|i| &mut self.slots[i].entry)
    }

    /// The slot of `fp`, inserting `make()` when it has none; `true` when it was inserted.
    pub(super) fn slot(&mut self, fp: u64, make: impl FnOnce() -> Entry) -> (&mut Entry, bool) {
        if let Some(i) = self.find(fp) {
            return (&mut self.slots[i].entry, false);
        }
        if self.len + 1 > max_len(self.slots.len()) {
            self.grow();
        }
        let i = self.vacant(fp);
        self.slots[i] = Slot { fp, entry: make() };
        self.len += 1;
        (&mut self.slots[i].entry, true)
    }

    /// The first empty slot on `fp`'s probe path (`fp` is not in the table, which has room).
    fn vacant(&self, fp: u64) -> usize {
        let n = self.slots.len();
        let mut i = Self::home(fp, n);
        while self.slots[i].fp != 0 {
            i += 1;
            if i == n {
                i = 0;
            }
        }
        i
    }

    #[cfg(any(feature = "zmq", test))]
    /// Inserts or replaces `fp`'s entry.
    pub(super) fn insert(&mut self, fp: u64, entry: Entry) -> Option<Entry> {
        let (slot, inserted) = self.slot(fp, || entry);
        if inserted {
            None
        } else {
            Some(std::mem::replace(slot, entry))
        }
    }

    /// Removes `fp`'s entry, shifting the rest of its cluster back so no probe path breaks.
    pub(super) fn remove(&mut self, fp: u64) -> Option<Entry> {
        let found = self.find(fp)?;
        let removed = self.slots[found].entry;
        let n = self.slots.len();
        let mut hole = found;
        let mut j = found;
        loop {
            j = if j + 1 == n { 0 } else { j + 1 };
            let at = self.slots[j].fp;
            if at == 0 {
                break;
            }
            // The entry at `j` may fill the hole when the hole is on its probe path.
            let home = Self::home(at, n);
            if (j + n - home) % n >= (j + n - hole) % n {
                self.slots[hole] = self.slots[j];
                hole = j;
            }
        }
        self.slots[hole] = Slot::EMPTY;
        self.len -= 1;
        Some(removed)
    }

    /// A table with room for `len` entries, of the entries kept by `keep`, in slot order.
    fn rebuilt(&self, slots: usize, keep: impl FnMut(&&Slot) -> bool) -> Self {
        let mut table = Self {
            slots: vec![Slot::EMPTY; slots],
            len: 0,
        };
        for slot in self.slots.iter().filter(|s| s.fp != 0).filter(keep) {
            let i = table.vacant(slot.fp);
            table.slots[i] = *slot;
            table.len += 1;
        }
        table
    }

    fn grow(&mut self) {
        let n = self.slots.len();
        let slots = (n + n / 2).max(16);
        *self = self.rebuilt(slots, |_| true);
    }

    /// Keeps the first `keep` entries in slot order.
    pub(super) fn truncate(&mut self, mut keep: usize) {
        if self.len <= keep {
            return;
        }
        let mut slots = 16;
        while max_len(slots) < keep {
            slots += slots / 2;
        }
        *self = self.rebuilt(slots, |_| {
            let kept = keep > 0;
            keep = keep.saturating_sub(1);
            kept
        });
    }

    #[cfg(any(feature = "zmq", test))]
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &Entry)> {
        self.slots
            .iter()
            .filter(|s| s.fp != 0)
            .map(|s| (s.fp, &s.entry))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut Entry)> {
        self.slots
            .iter_mut()
            .filter(|s| s.fp != 0)
            .map(|s| (s.fp, &mut s.entry))
    }

    pub(super) fn bytes(&self) -> usize {
        self.slots.len() * size_of::<Slot>()
    }
}

/// What [`BlockMap::store_copy`] did.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stored {
    /// The hash and copies of an entry with another kvtier hash that was replaced.
    pub(crate) replaced: Option<(SequenceHash, [u16; 4])>,
    /// Whether the copy is the first on its medium.
    pub(crate) first: bool,
}

/// Fingerprint → [`Entry`], with the ghost queue.
#[derive(Debug)]
pub(crate) struct BlockMap {
    entries: Table,
    ghosts: VecDeque<u64>,
    max_ghosts: usize,
    /// Entries with at least one copy.
    held: usize,
}

impl BlockMap {
    /// An empty map that remembers at most `max_ghosts` ghosts.
    pub(crate) fn new(max_ghosts: usize) -> Self {
        Self {
            entries: Table::default(),
            ghosts: VecDeque::new(),
            max_ghosts,
            held: 0,
        }
    }

    /// Entries with at least one copy.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Every entry, ghosts included.
    pub(crate) fn len(&self) -> usize {
        self.entries.len
    }

    /// Loads the home slots of `fps` into the cache, all at once: a batch's misses overlap
    /// instead of costing one memory latency per block when each is probed.
    pub(crate) fn prefetch(&self, fps: &[u64]) {
        let seen = fps.iter().fold(0, |acc, &fp| acc ^ self.entries.touch(fp));
        std::hint::black_box(seen);
    }

    /// The entry of `fp`, ghost or not.
    pub(crate) fn get(&self, fp: u64) -> Option<&Entry> {
        self.entries.get(fp)
    }

    /// Every `(fingerprint, entry)`, in no order.
    #[cfg(any(feature = "zmq", test))]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &Entry)> {
        self.entries.iter()
    }

    /// The ghost queue, oldest first (may hold stale keys).
    #[cfg(any(feature = "zmq", test))]
    pub(crate) fn ghost_queue(&self) -> impl Iterator<Item = u64> + '_ {
        self.ghosts.iter().copied()
    }

    /// Inserts or replaces `fp`'s entry as given (used when restoring state).
    #[cfg(any(feature = "zmq", test))]
    pub(crate) fn restore(&mut self, fp: u64, entry: Entry) {
        if fp == 0 {
            // No fingerprint is 0 (it marks empty slots): only a damaged state holds one.
            return;
        }
        if let Some(old) = self.entries.insert(fp, entry)
            && !old.is_ghost()
        {
            self.held -= 1;
        }
        if !entry.is_ghost() {
            self.held += 1;
        }
    }

    /// Appends `fp` to the ghost queue as it was saved (used when restoring state).
    #[cfg(any(feature = "zmq", test))]
    pub(crate) fn restore_ghost(&mut self, fp: u64) {
        if fp == 0 {
            return;
        }
        self.ghosts.push_back(fp);
        self.trim_ghosts();
    }

    /// Makes sure `fp` has an entry with `hash` and `parent`; an entry with another kvtier
    /// hash is replaced. Returns the replaced entry's hash and copies when it held any, so
    /// that the caller can announce their removal.
    ///
    /// A new entry has no copies: the caller adds one ([`BlockMap::add_copy`]) or declares
    /// it a ghost ([`BlockMap::note_ghost`]).
    pub(crate) fn upsert(
        &mut self,
        fp: u64,
        hash: SequenceHash,
        parent: u64,
    ) -> Option<(SequenceHash, [u16; 4])> {
        let (entry, inserted) = self.entries.slot(fp, || Entry::new(hash, parent));
        if inserted {
            return None;
        }
        if entry.hash() != hash {
            let replaced = (!entry.is_ghost()).then(|| (entry.hash(), entry.copies));
            if replaced.is_some() {
                self.held -= 1;
            }
            *entry = Entry::new(hash, parent);
            return replaced;
        }
        if entry.parent == 0 && parent != 0 {
            // Learnt without its parent (from a peer's root); now it is known.
            entry.parent = parent;
        }
        None
    }

    /// [`BlockMap::upsert`] then [`BlockMap::add_copy`] in one lookup: the hot path of a
    /// store.
    pub(crate) fn store_copy(
        &mut self,
        fp: u64,
        hash: SequenceHash,
        parent: u64,
        medium: Medium,
    ) -> Stored {
        let (entry, _) = self.entries.slot(fp, || Entry::new(hash, parent));
        let mut replaced = None;
        if entry.hash() != hash {
            if !entry.is_ghost() {
                replaced = Some((entry.hash(), entry.copies));
                self.held -= 1;
            }
            *entry = Entry::new(hash, parent);
        } else if entry.parent == 0 && parent != 0 {
            entry.parent = parent;
        }
        if entry.is_ghost() {
            self.held += 1;
        }
        let count = &mut entry.copies[medium.index()];
        let first = *count == 0;
        *count = count.saturating_add(1);
        Stored { replaced, first }
    }

    /// Records that `fp`'s entry is (now) a ghost, so that the bound on ghosts applies to it.
    pub(crate) fn note_ghost(&mut self, fp: u64) {
        if self.entries.get(fp).is_some_and(Entry::is_ghost) {
            self.ghosts.push_back(fp);
            self.trim_ghosts();
        }
    }

    /// Adds one copy of `fp` on `medium`; returns whether it is the first there (`None`: no
    /// such entry).
    pub(crate) fn add_copy(&mut self, fp: u64, medium: Medium) -> Option<bool> {
        let entry = self.entries.get_mut(fp)?;
        let was_ghost = entry.is_ghost();
        let count = &mut entry.copies[medium.index()];
        let first = *count == 0;
        *count = count.saturating_add(1);
        if was_ghost {
            self.held += 1;
        }
        Some(first)
    }

    /// Drops one copy of `fp` on `medium`: `Some((hash, last))` when it had one there, with
    /// `last` set when it was the last copy on that medium.
    pub(crate) fn drop_copy(&mut self, fp: u64, medium: Medium) -> Option<(SequenceHash, bool)> {
        let entry = self.entries.get_mut(fp)?;
        let count = &mut entry.copies[medium.index()];
        if *count == 0 {
            return None;
        }
        *count -= 1;
        let last = *count == 0;
        let hash = entry.hash();
        if entry.is_ghost() {
            self.held -= 1;
            self.ghosts.push_back(fp);
            self.trim_ghosts();
        }
        Some((hash, last))
    }

    /// Turns every entry into a ghost (the engine cleared its cache); the newest `max_ghosts`
    /// are kept, in no particular order.
    pub(crate) fn clear_copies(&mut self) {
        self.ghosts.clear();
        self.held = 0;
        self.entries.truncate(self.max_ghosts);
        for (fp, entry) in self.entries.iter_mut() {
            entry.copies = [0; 4];
            self.ghosts.push_back(fp);
        }
    }

    /// Evicts the oldest ghosts beyond the bound.
    fn trim_ghosts(&mut self) {
        while self.ghosts.len() > self.max_ghosts {
            let Some(fp) = self.ghosts.pop_front() else {
                break;
            };
            if self.entries.get(fp).is_some_and(Entry::is_ghost) {
                self.entries.remove(fp);
            }
        }
    }

    /// Bytes the map's tables occupy (slots and ghost queue), for memory accounting.
    pub(crate) fn table_bytes(&self) -> usize {
        self.entries.bytes() + self.ghosts.capacity() * size_of::<u64>()
    }
}
