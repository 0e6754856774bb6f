//! The global prefix index: which `(instance, medium)` holds how long a prefix of a request.
//!
//! [`PrefixIndex`] maps each [`SequenceHash`] (a block *and its whole prefix*) to the set of
//! holders that announced it, a holder being an instance slot and a [`Medium`]. It is fed by
//! the event consumer (`insert` for Create batches, `remove` for Remove batches,
//! `remove_instance` for Cleared, Shutdown and dumps) and asked by the router (`query`: for
//! every holder of the request's first block, the length of the prefix it holds). It owns no
//! instance ids (the caller maps them to dense `u32` slots), no locks (writes take `&mut self`)
//! and no event ordering or gap repair.
//!
//! ```text
//! SequenceHash (u128) ──HolderTable──▶ sorted [slot << 2 | medium]     (4 inline, then spilled)
//! slot ──counts──▶ [blocks on GPU, CPU, DISK, EXTERNAL]                (kept exact on every write)
//! slot ──owned──▶ per medium, the hashes given (stale ones dropped lazily)
//! query(h[0..n]) = walk h[0], h[1], .. while some holder can still extend (see `query`)
//! ```
//!
//! Invariants: `entries()` is the number of (hash, slot, medium) triples stored and equals the
//! sum of all counters of [`PrefixIndex::blocks_of`]; `len()` is the number of distinct hashes
//! with at least one holder. Slots are below [`PrefixIndex::MAX_SLOTS`].
//!
//! Costs: `insert` and `remove` are one table lookup per hash (expected O(1); a hash held by
//! more than four holders adds a binary search in its spilled list), plus an append (insert)
//! or a probe of a small per-slot multiset (remove) to keep the slot's own list of hashes
//! (`owned.rs`); `remove_instance` walks that list, so it costs in proportion to the slot's
//! own entries, not the table's; and `query` is one lookup per block it walks, stopping as soon as no
//! holder can extend. On a fleet-sized index each lookup is a cache and TLB miss, so batches
//! and walks load the lines they are about to need first and wait for the misses together
//! (see `table.rs`); the bench `benches/router.rs` has the figures.

mod owned;
mod query;
mod table;

use kvtier_core::{Medium, SequenceHash};

use owned::OwnedLists;
pub use query::{Overlap, QueryScratch};
use table::{HolderTable, Removed};

/// Touch span for an insert batch (see `HolderTable::touch`): the home line, where a new key
/// usually lands.
const TOUCH_INSERT: usize = 1;
/// Touch span for a remove batch: the home line and the next, because deleting shifts back the
/// keys after the removed one, which for a key one bucket from home are on the next line.
const TOUCH_REMOVE: usize = 3;

/// Why the index refused a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The slot is not below [`PrefixIndex::MAX_SLOTS`].
    #[error("instance slot {slot} is not below the limit of {max} slots")]
    SlotOutOfRange {
        /// The slot given.
        slot: u32,
        /// The limit ([`PrefixIndex::MAX_SLOTS`]).
        max: u32,
    },
}

/// What [`PrefixIndex::remove`] did with a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoveOutcome {
    /// Entries removed.
    pub removed: usize,
    /// Hashes the `(slot, medium)` did not hold (ignored): a sign of a lost or reordered event.
    pub unknown: usize,
}

/// Which `(instance slot, medium)` holds which blocks, and how long a prefix of a request each
/// one holds. See the module docs.
///
/// # Examples
///
/// ```
/// use kvtier_core::{Medium, SequenceHash};
/// use kvtier_router::{Overlap, PrefixIndex, QueryScratch};
///
/// // A chain of five blocks; slot 0 holds three of them on the GPU, slot 1 all five on disk.
/// let mut chain = vec![SequenceHash::root(10)];
/// for c in 11..15 {
///     chain.push(SequenceHash::child_of(*chain.last().unwrap(), c));
/// }
/// let mut index = PrefixIndex::new();
/// assert_eq!(index.insert(0, Medium::Gpu, &chain[..3])?, 3);
/// assert_eq!(index.insert(1, Medium::Disk, &chain)?, 5);
/// assert_eq!(index.blocks_of(1), [0, 0, 5, 0]);
///
/// let mut scratch = QueryScratch::new();
/// let answer = index.query(&chain[..4], |_| false, &mut scratch);
/// assert_eq!(
///     answer,
///     [
///         Overlap { slot: 0, medium: Medium::Gpu, matched: 3, upper: 3 },
///         Overlap { slot: 1, medium: Medium::Disk, matched: 4, upper: 4 },
///     ]
/// );
///
/// // Slot 1 loses block 2 (0-based): it now holds only the first two.
/// assert_eq!(index.remove(1, Medium::Disk, &chain[2..3]).removed, 1);
/// assert_eq!(index.query(&chain, |_| false, &mut scratch)[1].matched, 2);
/// # Ok::<(), kvtier_router::IndexError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct PrefixIndex {
    table: HolderTable,
    /// Per slot, blocks held per medium (indexed by [`Medium::index`]).
    counts: Vec<[usize; 4]>,
    /// Per slot and medium, the hashes it was given (walked to forget it; see `owned.rs`).
    owned: OwnedLists,
    /// (hash, slot, medium) entries stored.
    entries: usize,
    /// Table lookups made by writes (see [`PrefixIndex::lookups`]).
    lookups: u64,
}

impl PrefixIndex {
    /// Slots are `0..MAX_SLOTS`. Per-slot counters are a dense array, so the limit bounds the
    /// memory a bad slot number can make the index allocate (32 MiB).
    pub const MAX_SLOTS: u32 = 1 << 20;

    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty index with room for `blocks` distinct hashes before it grows.
    pub fn with_capacity(blocks: usize) -> Self {
        Self {
            table: HolderTable::with_capacity(blocks),
            ..Self::default()
        }
    }

    #[inline]
    fn key(slot: u32, medium: Medium) -> u32 {
        slot << 2 | medium.index() as u32
    }

    /// Records that `(slot, medium)` holds `hashes`. Returns how many entries are new: a hash
    /// it already holds is not counted again (inserting is idempotent).
    ///
    /// The order of `hashes` does not matter; the index grows at most once per call.
    ///
    /// # Errors
    ///
    /// [`IndexError::SlotOutOfRange`] when `slot >= MAX_SLOTS`; nothing is inserted.
    pub fn insert(
        &mut self,
        slot: u32,
        medium: Medium,
        hashes: &[SequenceHash],
    ) -> Result<usize, IndexError> {
        if slot >= Self::MAX_SLOTS {
            return Err(IndexError::SlotOutOfRange {
                slot,
                max: Self::MAX_SLOTS,
            });
        }
        if hashes.is_empty() {
            return Ok(0);
        }
        let key = Self::key(slot, medium);
        self.table.reserve(hashes.len());
        self.table
            .touch(hashes.iter().map(|h| h.as_u128()), TOUCH_INSERT);
        let mut added = 0;
        let owned = self.owned.get_mut(slot, medium.index());
        for h in hashes {
            if self.table.insert(h.as_u128(), key) {
                owned.push(h.as_u128());
                added += 1;
            }
        }
        self.lookups += hashes.len() as u64;
        let slot = slot as usize;
        if self.counts.len() <= slot {
            self.counts.resize(slot + 1, [0; 4]);
        }
        self.counts[slot][medium.index()] += added;
        self.entries += added;
        Ok(added)
    }

    /// Records that `(slot, medium)` no longer holds `hashes`. A hash it did not hold is
    /// counted in [`RemoveOutcome::unknown`] and otherwise ignored (as is an unknown slot).
    pub fn remove(&mut self, slot: u32, medium: Medium, hashes: &[SequenceHash]) -> RemoveOutcome {
        let total = hashes.len();
        if self
            .counts
            .get(slot as usize)
            .is_none_or(|c| c[medium.index()] == 0)
        {
            return RemoveOutcome {
                removed: 0,
                unknown: total,
            };
        }
        let key = Self::key(slot, medium);
        self.table
            .touch(hashes.iter().map(|h| h.as_u128()), TOUCH_REMOVE);
        let owned = self.owned.get_mut(slot, medium.index());
        let mut removed = 0;
        // Last first: a Remove batch lists children first, so its removals are noted in the
        // order the blocks were given, the order of the slot's own list (see `owned.rs`).
        for h in hashes.iter().rev() {
            let Some(idx) = self.table.find(h.as_u128()) else {
                continue;
            };
            match self.table.remove_holder(idx, key) {
                Removed::Absent => continue,
                Removed::Kept => {}
                Removed::Emptied => self.table.delete(idx),
            }
            removed += 1;
            owned.remove(h.as_u128());
        }
        let live = &mut self.counts[slot as usize][medium.index()];
        *live -= removed;
        owned.settle(*live, 2 * removed);
        self.entries -= removed;
        self.lookups += total as u64;
        RemoveOutcome {
            removed,
            unknown: total - removed,
        }
    }

    /// Forgets everything `slot` holds on `medium`, or on every medium when `None` (an
    /// instance cleared its cache, shut down, or is about to be replaced by a dump). Returns
    /// the number of entries removed.
    ///
    /// Walks the slot's own list of hashes (at most `1.5 * held + 64` per medium): the cost is
    /// in proportion to what the slot holds, whatever the rest of the index holds.
    pub fn remove_instance(&mut self, slot: u32, medium: Option<Medium>) -> usize {
        let Some(counts) = self.counts.get_mut(slot as usize) else {
            return 0;
        };
        let media = match medium {
            Some(m) => m.index()..m.index() + 1,
            None => 0..4,
        };
        let mut removed = 0;
        for m in media {
            let held = std::mem::take(&mut counts[m]);
            let (gone, walked) =
                self.owned
                    .remove_all(&mut self.table, slot, m, Self::key(slot, Medium::ALL[m]));
            debug_assert_eq!(gone, held);
            removed += gone;
            self.lookups += walked as u64;
        }
        self.entries -= removed;
        removed
    }

    /// Table lookups made by writes so far: one per hash of an insert or remove batch, one per
    /// hash of a slot's list walked to forget it or to compact the list. A cost measure for
    /// tests and benches (it does not depend on timing).
    pub fn lookups(&self) -> u64 {
        self.lookups
    }

    /// Blocks `slot` holds per medium, indexed by [`Medium::index`] (zeros for an unknown
    /// slot). O(1).
    pub fn blocks_of(&self, slot: u32) -> [usize; 4] {
        self.counts.get(slot as usize).copied().unwrap_or_default()
    }

    /// Distinct hashes held by at least one `(slot, medium)`.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// (hash, slot, medium) entries stored: the sum of every [`blocks_of`](Self::blocks_of).
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Whether `(slot, medium)` holds `hash`.
    pub fn contains(&self, hash: SequenceHash, slot: u32, medium: Medium) -> bool {
        slot < Self::MAX_SLOTS
            && self
                .table
                .get(hash.as_u128())
                .binary_search(&Self::key(slot, medium))
                .is_ok()
    }

    /// Every (hash, slot, medium) entry, in no particular order (for snapshots). Each hash's
    /// holders come together, by slot then medium.
    pub fn iter(&self) -> impl Iterator<Item = (SequenceHash, u32, Medium)> + '_ {
        self.table.iter().flat_map(|(hash, holders)| {
            holders.iter().map(move |&k| {
                (
                    SequenceHash::from_u128(hash),
                    k >> 2,
                    Medium::ALL[(k & 3) as usize],
                )
            })
        })
    }

    /// Removes everything, keeping the allocated table.
    pub fn clear(&mut self) {
        self.table.clear();
        self.counts.clear();
        self.owned.clear();
        self.entries = 0;
    }

    /// For every `(slot, medium)` holding the request's first block, how long a prefix of the
    /// request it holds; ordered by slot then medium, only lines with `matched > 0`.
    ///
    /// `hashes[i]` is the request's block at 0-based position `i` (a hash whose own
    /// [`SequenceHash::position`] differs is still looked up as given). `sparse(slot)` tells
    /// whether the slot announces only power-of-two positions (`EmitPolicy::PowerOfTwo`): such a
    /// slot is checked at indices `0, 1, 3, 7, ..` only and reported with bounds (see
    /// [`Overlap`]); a dense slot must hold every block up to its `matched`. The walk stops as
    /// soon as no holder can extend, and looks up only power positions once only sparse
    /// holders are left. Requests longer than `u32::MAX` blocks are cut there.
    ///
    /// The answer borrows `scratch`, which keeps its buffers between calls (no allocation in
    /// steady state).
    pub fn query<'s>(
        &self,
        hashes: &[SequenceHash],
        sparse: impl Fn(u32) -> bool,
        scratch: &'s mut QueryScratch,
    ) -> &'s [Overlap] {
        query::walk(&self.table, hashes, sparse, scratch)
    }

    /// Checks the counters against the table (tests only).
    #[cfg(test)]
    fn check(&self) {
        self.table.check();
        let mut counts = vec![[0usize; 4]; self.counts.len()];
        let mut entries = 0;
        for (_, slot, medium) in self.iter() {
            counts[slot as usize][medium.index()] += 1;
            entries += 1;
        }
        assert_eq!(entries, self.entries);
        assert_eq!(counts, self.counts);
        for (hash, slot, medium) in self.iter() {
            let list = self.owned.get(slot, medium.index());
            assert!(
                list.is_some_and(|l| l.contains(hash.as_u128())),
                "{hash:?} missing from its list"
            );
        }
        for (slot, c) in self.counts.iter().enumerate() {
            for (m, &held) in c.iter().enumerate() {
                let len = self.owned.get(slot as u32, m).map_or(0, |l| l.len());
                assert!(
                    len <= held + held / 2 + owned::SLACK,
                    "list of {len} for {held}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
