//! [`BlockIndex`]: one shard's map from sequence hash to the slot of its primary.
//!
//! Entries are 16 bytes (a 64-bit digest of the hash and the slot id) instead of the 32 a
//! `HashMap<SequenceHash, BlockId>` needs, so twice as many fit in cache: the index is touched
//! by every lookup, registration and eviction, and on large managers its cache misses dominate.
//! A lookup confirms a digest match against the full 128-bit hash stored in the slot (the slot is
//! read anyway to take a reference), so digest collisions can never return a wrong block;
//! removal is by slot id, which is exact.

use hashbrown::HashTable;

use crate::manager::slot::Slot;
use crate::sync::Arc;
use crate::{BlockId, SequenceHash};

#[derive(Clone, Copy)]
struct Entry {
    digest: u64,
    id: u32,
}

/// Sequence hash -> primary slot, for the primaries of one shard.
pub(crate) struct BlockIndex {
    table: HashTable<Entry>,
}

impl BlockIndex {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            table: HashTable::with_capacity(n),
        }
    }

    /// The slot registered for `hash`, if any.
    #[inline]
    pub(crate) fn get(&self, hash: SequenceHash, slots: &[Arc<Slot>]) -> Option<BlockId> {
        let digest = hash.mix64();
        self.table
            .find(digest, |e| {
                e.digest == digest && slots.get(e.id as usize).is_some_and(|s| s.hash() == hash)
            })
            .map(|e| BlockId::new(e.id))
    }

    /// Whether slot `id` is the primary registered under `hash`.
    #[inline]
    pub(crate) fn holds(&self, hash: SequenceHash, id: BlockId) -> bool {
        let digest = hash.mix64();
        self.table
            .find(digest, |e| e.digest == digest && e.id == id.raw())
            .is_some()
    }

    /// Records `id` as the primary of `hash` (the caller checked it is absent).
    #[inline]
    pub(crate) fn insert(&mut self, hash: SequenceHash, id: BlockId) {
        let digest = hash.mix64();
        self.table.insert_unique(
            digest,
            Entry {
                digest,
                id: id.raw(),
            },
            |e| e.digest,
        );
    }

    /// Forgets the entry of slot `id` registered under `hash`. Returns whether it was there.
    #[inline]
    pub(crate) fn remove(&mut self, hash: SequenceHash, id: BlockId) -> bool {
        match self.table.find_entry(hash.mix64(), |e| e.id == id.raw()) {
            Ok(entry) => {
                entry.remove();
                true
            }
            Err(_) => false,
        }
    }

    /// Number of primaries.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }
}
