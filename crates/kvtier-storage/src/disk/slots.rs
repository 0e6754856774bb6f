//! The in-memory mirror of the index: which hash owns which slot, which slots are free, and the
//! eviction order.
//!
//! Rebuilt from the durable index on open (one scan and one sort), then kept in step with it.
//! Invariants, with `covered` the slots of the data files that exist:
//! - every entry of `map` owns a distinct slot below `covered`, whose bytes are durable and
//!   match the entry's checksum (unless the disk corrupted them);
//! - a slot is in at most one of: an entry of `map`, `free`, a write batch in flight;
//! - every hash in the durable index is in `map`, in `pending_removals`, or in a batch in
//!   flight; a removal stays pending until an index commit removes it, so a slot that a stale
//!   record still points at is only reused by a batch whose commit also removes that record.
//!
//! Eviction is **FIFO by write generation**: when no slot is free, the block written (or last
//! overwritten) longest ago goes first. Reads do not reorder it; the tier above this one (G2)
//! sees the reuse, this one sees only what is spilled to it.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use super::index::Record;

/// Hashing for keys that are already hashes: fold the 128 bits and spread them with one
/// multiply, instead of SipHash (a third of a million-block restart went to SipHash).
type KeyHash = BuildHasherDefault<FoldHasher>;

/// The [`Hasher`] behind [`KeyHash`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u128(&mut self, key: u128) {
        let folded = (key as u64) ^ ((key >> 64) as u64).rotate_left(32);
        let spread = folded.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = spread ^ (spread >> 29);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The in-memory state of the slots.
#[derive(Debug)]
pub(crate) struct SlotTable {
    map: HashMap<u128, Record, KeyHash>,
    /// `(generation, slot, hash)` in write order; entries whose hash no longer maps to that
    /// generation are stale and skipped.
    fifo: VecDeque<(u64, u64, u128)>,
    /// Free slots below `high_water`, lowest on top.
    free: Vec<u64>,
    /// Slots `[high_water, covered)` have never been handed out since open.
    high_water: u64,
    capacity: u64,
    next_generation: u64,
    pending_removals: Vec<u128>,
}

/// A slot handed to a write batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grant {
    /// The slot to write.
    pub(crate) slot: u64,
    /// The generation of the block written there.
    pub(crate) generation: u64,
}

impl SlotTable {
    /// Rebuilds the table from the index's records. Records that point outside the data files
    /// (`covered`), have another length, or lost their slot to a newer record are dropped and
    /// queued for removal.
    pub(crate) fn rebuild(
        records: Vec<(u128, Record)>,
        capacity: u64,
        covered: u64,
        block_bytes: u32,
    ) -> Self {
        const NO_OWNER: usize = usize::MAX;
        let covered = covered.min(capacity);
        // Sort indices, not the 48-byte records: a restart with a million blocks spends most
        // of its time here and in the map.
        let mut order: Vec<(u64, usize)> = records
            .iter()
            .enumerate()
            .map(|(i, (_, r))| (r.generation, i))
            .collect();
        order.sort_unstable();
        let mut owner = vec![NO_OWNER; covered as usize];
        let mut map = HashMap::with_capacity_and_hasher(records.len(), KeyHash::default());
        let mut fifo = VecDeque::with_capacity(records.len());
        let mut pending_removals = Vec::new();
        let mut next_generation = 0;
        for (generation, i) in order {
            let (hash, record) = records[i];
            next_generation = next_generation.max(generation.saturating_add(1));
            if record.slot >= covered || record.len != block_bytes {
                pending_removals.push(hash);
                continue;
            }
            // Newer records come later: a slot claimed twice belongs to the newer one.
            let older = std::mem::replace(&mut owner[record.slot as usize], i);
            if older != NO_OWNER {
                map.remove(&records[older].0);
                pending_removals.push(records[older].0);
            }
            map.insert(hash, record);
            // Entries of records dropped later are stale and skipped when evicting.
            fifo.push_back((generation, record.slot, hash));
        }
        let free = (0..covered)
            .rev()
            .filter(|&slot| owner[slot as usize] == NO_OWNER)
            .collect();
        Self {
            map,
            fifo,
            free,
            high_water: covered,
            capacity,
            next_generation,
            pending_removals,
        }
    }

    /// Blocks held.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The record of `hash`, if held.
    pub(crate) fn get(&self, hash: u128) -> Option<Record> {
        self.map.get(&hash).copied()
    }

    /// Slots a batch can take without evicting, given `covered` slots in existing files.
    pub(crate) fn free_without_growth(&self) -> u64 {
        self.free.len() as u64
    }

    /// Slots not yet handed out since open: `[high_water, capacity)`.
    pub(crate) fn unissued(&self) -> u64 {
        self.capacity.saturating_sub(self.high_water)
    }

    /// First slot never handed out since open.
    pub(crate) fn high_water(&self) -> u64 {
        self.high_water
    }

    /// A slot for a new block: a free one, else a never-used one below `covered`, else the
    /// oldest block's (evicted: it leaves `map` now and its record is queued for removal).
    /// Returns the grant and the evicted hash, or `None` when every slot is in flight.
    pub(crate) fn grant(&mut self, covered: u64) -> Option<(Grant, Option<u128>)> {
        let generation = self.next_generation;
        let slot_and_victim = if let Some(slot) = self.free.pop() {
            Some((slot, None))
        } else if self.high_water < covered.min(self.capacity) {
            self.high_water += 1;
            Some((self.high_water - 1, None))
        } else {
            self.evict_oldest()
        };
        let (slot, victim) = slot_and_victim?;
        self.next_generation += 1;
        Some((Grant { slot, generation }, victim))
    }

    fn evict_oldest(&mut self) -> Option<(u64, Option<u128>)> {
        while let Some((generation, slot, hash)) = self.fifo.pop_front() {
            if self
                .map
                .get(&hash)
                .is_some_and(|r| r.generation == generation)
            {
                self.map.remove(&hash);
                self.pending_removals.push(hash);
                return Some((slot, Some(hash)));
            }
        }
        None
    }

    /// Hands back slots of a batch that failed; their blocks were never published.
    pub(crate) fn release(&mut self, grants: &[Grant]) {
        self.free.extend(grants.iter().rev().map(|g| g.slot));
    }

    /// Takes the removals queued for the next index commit.
    pub(crate) fn take_removals(&mut self) -> Vec<u128> {
        std::mem::take(&mut self.pending_removals)
    }

    /// Puts back removals whose commit failed.
    pub(crate) fn restore_removals(&mut self, removals: Vec<u128>) {
        self.pending_removals.extend(removals);
    }

    /// Removals still queued.
    pub(crate) fn pending_removals(&self) -> usize {
        self.pending_removals.len()
    }

    /// Makes a committed batch visible: each hash now maps to its new record; the slot of a
    /// version it replaced becomes free.
    pub(crate) fn publish(&mut self, committed: &[(u128, Record)]) {
        for (hash, record) in committed {
            if let Some(old) = self.map.insert(*hash, *record) {
                self.free.push(old.slot);
            }
            self.fifo.push_back((record.generation, record.slot, *hash));
        }
        // O(capacity): only small tiers (the tests') pay for it, and only in debug builds.
        #[cfg(debug_assertions)]
        if self.capacity <= 4096 {
            if let Err(broken) = self.check(u64::MAX) {
                panic!("disk slot table invariant broken: {broken}");
            }
        }
        // Overwrites and deletes leave stale FIFO entries; drop them before they outnumber
        // the live ones.
        if self.fifo.len() > 2 * self.map.len() + 1024 {
            let map = &self.map;
            self.fifo
                .retain(|(g, _, h)| map.get(h).is_some_and(|r| r.generation == *g));
        }
    }

    /// Drops `hash` if it still maps to `generation` (it was deleted, or found corrupt):
    /// its slot is free at once and its record is queued for removal. Returns whether it did.
    /// The hashes of every block held.
    pub(crate) fn hashes(&self) -> impl Iterator<Item = u128> + '_ {
        self.map.keys().copied()
    }

    pub(crate) fn drop_entry(&mut self, hash: u128, generation: u64) -> bool {
        match self.map.get(&hash) {
            Some(r) if r.generation == generation => {
                self.free.push(r.slot);
                self.map.remove(&hash);
                self.pending_removals.push(hash);
                true
            }
            _ => false,
        }
    }

    /// Checks the invariants against the real state (tests and debug builds).
    #[cfg(any(test, debug_assertions))]
    pub(crate) fn check(&self, covered: u64) -> Result<(), String> {
        let mut seen = vec![false; self.capacity as usize];
        for r in self
            .map
            .values()
            .map(|r| r.slot)
            .chain(self.free.iter().copied())
        {
            if r >= covered.min(self.capacity) || r >= self.high_water {
                return Err(format!("slot {r} outside the handed-out slots"));
            }
            if std::mem::replace(&mut seen[r as usize], true) {
                return Err(format!("slot {r} owned twice"));
            }
        }
        Ok(())
    }
}
