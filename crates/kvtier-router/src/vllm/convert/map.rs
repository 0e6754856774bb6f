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
//! One slot is 40 bytes, its key in a line of eight keys and its value beside them (no
//! control bytes: fingerprint 0 marks an empty slot), in an open-addressing table that grows
//! by half its size at 13/16 full, so ~50–75 bytes per entry; no entry owns a heap
//! allocation.
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

/// Slots per [`Group`]: the keys of one cache line.
const GROUP: usize = 8;

/// Eight slots: their keys in one cache line, then their entries (two to a line).
///
/// A probe scans keys only, so an insert's walk to the end of its cluster (~5 slots on
/// average at the loads the table keeps) reads one or two lines of keys, then the one entry
/// it needs, instead of 40 bytes per slot it passes.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Group {
    /// Fingerprints; 0: empty.
    keys: [u64; GROUP],
    /// The entry of each occupied slot (unspecified in an empty one).
    entries: [Entry; GROUP],
}

impl Group {
    const EMPTY: Self = Self {
        keys: [0; GROUP],
        entries: [Entry {
            hash: [0; 2],
            parent: 0,
            copies: [0; 4],
        }; GROUP],
    };
}

/// The most entries a table of `slots` slots takes before it grows (13/16 of it).
fn max_len(slots: usize) -> usize {
    slots / 16 * 13 + slots % 16 * 13 / 16
}

/// Where a probe for a fingerprint ended.
enum Probe {
    /// The key is at this slot.
    Found(usize),
    /// The key is absent; this is the first empty slot on its probe path.
    Vacant(usize),
}

/// An open-addressing table of fingerprints, with linear probing and backward-shift deletion.
///
/// Slots are laid out in [`Group`]s of eight: keys first, entries after. A fingerprint's
/// home slot is `fp × slots / 2⁶⁴` (a multiply, no power of two), so the table grows by half
/// its size (not double, in whole groups), and keeps between ~50 and ~75 bytes per entry; as
/// homes follow the order of fingerprints, growing reinserts almost sequentially. Key 0
/// marks an empty slot (fingerprints are never 0), so no control bytes are needed.
#[derive(Debug, Default)]
pub(super) struct Table {
    groups: Vec<Group>,
    pub(super) len: usize,
}

impl Table {
    /// Slots in the table.
    fn slots(&self) -> usize {
        self.groups.len() * GROUP
    }

    /// The home slot of `fp` in a table of `n` slots (`n > 0`).
    fn home(fp: u64, n: usize) -> usize {
        ((u128::from(fp) * n as u128) >> 64) as usize
    }

    fn key(&self, i: usize) -> u64 {
        self.groups[i / GROUP].keys[i % GROUP]
    }

    fn entry(&self, i: usize) -> &Entry {
        &self.groups[i / GROUP].entries[i % GROUP]
    }

    fn entry_mut(&mut self, i: usize) -> &mut Entry {
        &mut self.groups[i / GROUP].entries[i % GROUP]
    }

    fn set(&mut self, i: usize, fp: u64, entry: Entry) {
        let group = &mut self.groups[i / GROUP];
        group.keys[i % GROUP] = fp;
        group.entries[i % GROUP] = entry;
    }

    /// Follows `fp`'s probe path to its slot or to the first empty one (the table has at
    /// least one empty slot; `fp` is not 0).
    fn probe(&self, fp: u64) -> Probe {
        let n = self.slots();
        let mut i = Self::home(fp, n);
        loop {
            let at = self.key(i);
            if at == fp {
                return Probe::Found(i);
            }
            if at == 0 {
                return Probe::Vacant(i);
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
    }

    /// The slot holding `fp` (never one for 0, the mark of an empty slot).
    pub(super) fn find(&self, fp: u64) -> Option<usize> {
        if self.groups.is_empty() || fp == 0 {
            return None;
        }
        match self.probe(fp) {
            Probe::Found(i) => Some(i),
            Probe::Vacant(_) => None,
        }
    }

    /// Reads the cache lines a probe for `fp` is likely to need (its home slot's keys, the
    /// next group's keys when the home is in the second half of its group, and the home
    /// slot's entry) and returns a value made of them, to bring them into the cache before
    /// the probe (loads the processor overlaps with others, as no later work depends on them
    /// but the caller's `black_box`).
    pub(super) fn touch(&self, fp: u64) -> u64 {
        let n = self.slots();
        if n == 0 {
            return 0;
        }
        let home = Self::home(fp, n);
        let ahead = (home + GROUP / 2).min(n - 1);
        self.key(home) ^ self.key(ahead) ^ self.entry(home).parent
    }

    pub(super) fn get(&self, fp: u64) -> Option<&Entry> {
        self.find(fp).map(|i| self.entry(i))
    }

    pub(super) fn get_mut(&mut self, fp: u64) -> Option<&mut Entry> {
        self.find(fp).map(|i| self.entry_mut(i))
    }

    /// The slot of `fp`, inserting `make()` when it has none; `true` when it was inserted.
    /// One probe when the table has room.
    pub(super) fn slot(&mut self, fp: u64, make: impl FnOnce() -> Entry) -> (&mut Entry, bool) {
        let mut probe = if self.groups.is_empty() {
            Probe::Vacant(0)
        } else {
            self.probe(fp)
        };
        if let Probe::Found(i) = probe {
            return (self.entry_mut(i), false);
        }
        if self.len + 1 > max_len(self.slots()) {
            self.grow();
            probe = self.probe(fp);
        }
        let (Probe::Vacant(i) | Probe::Found(i)) = probe;
        self.set(i, fp, make());
        self.len += 1;
        (self.entry_mut(i), true)
    }

    /// The first empty slot on `fp`'s probe path (`fp` is not in the table, which has room).
    fn vacant(&self, fp: u64) -> usize {
        let (Probe::Vacant(i) | Probe::Found(i)) = self.probe(fp);
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
        let removed = *self.entry(found);
        let n = self.slots();
        let mut hole = found;
        let mut j = found;
        loop {
            j = if j + 1 == n { 0 } else { j + 1 };
            let at = self.key(j);
            if at == 0 {
                break;
            }
            // The entry at `j` may fill the hole when the hole is on its probe path.
            let home = Self::home(at, n);
            if (j + n - home) % n >= (j + n - hole) % n {
                let entry = *self.entry(j);
                self.set(hole, at, entry);
                hole = j;
            }
        }
        self.set(hole, 0, Group::EMPTY.entries[0]);
        self.len -= 1;
        Some(removed)
    }

    /// A table of `groups` groups, of the entries kept by `keep`, in slot order.
    fn rebuilt(&self, groups: usize, mut keep: impl FnMut(u64) -> bool) -> Self {
        let mut table = Self {
            groups: vec![Group::EMPTY; groups],
            len: 0,
        };
        for group in &self.groups {
            for (&fp, entry) in group.keys.iter().zip(&group.entries) {
                if fp == 0 || !keep(fp) {
                    continue;
                }
                let at = table.vacant(fp);
                table.set(at, fp, *entry);
                table.len += 1;
            }
        }
        table
    }

    /// An empty table with room for `len` entries before it grows; an empty one (growing as
    /// needed) when that much memory cannot be had.
    pub(super) fn with_capacity(len: usize) -> Self {
        let mut groups = Vec::new();
        // The fewest groups that take `len` entries (not a step of the growth sequence,
        // which may be half as large again).
        let want = len.div_ceil(13).saturating_mul(16).div_ceil(GROUP).max(2);
        if len > 0 && groups.try_reserve_exact(want).is_ok() {
            groups.resize(want, Group::EMPTY);
        }
        Self { groups, len: 0 }
    }

    /// The fewest groups on the growth sequence that hold `len` entries.
    fn groups_for(len: usize) -> usize {
        let mut groups = 2usize;
        while max_len(groups.saturating_mul(GROUP)) < len && groups < usize::MAX / 2 {
            groups += groups / 2;
        }
        groups
    }

    fn grow(&mut self) {
        let n = self.groups.len();
        let groups = (n + n / 2).max(2);
        *self = self.rebuilt(groups, |_| true);
    }

    /// Keeps the first `keep` entries in slot order.
    pub(super) fn truncate(&mut self, mut keep: usize) {
        if self.len <= keep {
            return;
        }
        *self = self.rebuilt(Self::groups_for(keep), |_| {
            let kept = keep > 0;
            keep = keep.saturating_sub(1);
            kept
        });
    }

    #[cfg(any(feature = "zmq", test))]
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &Entry)> {
        self.groups
            .iter()
            .flat_map(|g| g.keys.iter().zip(&g.entries))
            .filter(|(fp, _)| **fp != 0)
            .map(|(fp, e)| (*fp, e))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut Entry)> {
        self.groups
            .iter_mut()
            .flat_map(|g| g.keys.iter().zip(&mut g.entries))
            .filter(|(fp, _)| **fp != 0)
            .map(|(fp, e)| (*fp, e))
    }

    pub(super) fn bytes(&self) -> usize {
        self.groups.len() * size_of::<Group>()
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
    /// An empty map that remembers at most `max_ghosts` ghosts, with room for `capacity`
    /// entries before it grows.
    pub(crate) fn new(max_ghosts: usize, capacity: usize) -> Self {
        Self {
            entries: Table::with_capacity(capacity),
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
