//! [`OwnedLists`]: per `(slot, medium)`, the hashes it was given, so that forgetting an
//! instance (Cleared, Shutdown, expiry, a dump) walks its own entries instead of the whole
//! table.
//!
//! A list is a queue in the order hashes were given. Losing a hash does not search the
//! list: the hash is appended to a `removed` queue, and stale copies are dropped from the
//! front of the list as they reach it. Caches evict roughly oldest first, and the index notes
//! a Remove batch (children first) last block first, so the hash at the front of the list is
//! usually the first one noted removed (or the last): a comparison, no search. Otherwise a short `removed` queue is
//! scanned; any other hash at the front is rotated to the back, a few per removal, so that
//! long-lived blocks (a system prompt) do not hold the list up. When the noted removals
//! outgrow half the live count (random eviction), one sequential pass drops them all. None of
//! this touches the table or a hash map on the way: a removal costs an append and a compare.
//!
//! A removal of the hash at the front of the list (the common case) drops it there and then.
//!
//! Invariant, for every hash `h` of `(slot, medium)`: the copies of `h` in its list number
//! `held(h) + removed(h)`, where `held(h)` is 1 when the table holds `(h, slot, medium)` and 0
//! otherwise and `removed(h)` counts `h` in the `removed` queue. After every write `removed`
//! holds at most `held / 2 + SLACK` hashes, so a list holds at most `1.5 * held + SLACK`.

use std::collections::VecDeque;

use hashbrown::HashMap;

use super::table::{HolderTable, Removed};

/// Noted removals a list may carry beyond half its live count before a compacting pass.
pub(super) const SLACK: usize = 64;

/// How far ahead of the hash being looked up a list walk loads its bucket (see
/// [`HolderTable::touch`]): enough misses in flight to hide the latency of each.
const TOUCH_AHEAD: usize = 16;

/// The hashes one `(slot, medium)` was given (see the module docs).
#[derive(Clone, Debug, Default)]
pub(super) struct Owned {
    /// Hashes in the order given (their low 64 bits, which find them in the table with the
    /// slot: see `HolderTable::find_low`); includes the stale copies listed in `removed`.
    queue: VecDeque<u64>,
    /// Hashes lost since their copies were last dropped from `queue`, in the order lost.
    removed: VecDeque<u64>,
}

/// Longest `removed` queue scanned for the hash at the front of the list.
const SCAN: usize = 64;

impl Owned {
    /// Notes that `hash` was given.
    #[inline]
    pub(super) fn push(&mut self, hash: u128) {
        self.queue.push_back(hash as u64);
    }

    /// Notes that `hash` was lost (one copy in the list is now stale).
    ///
    /// When the list's front is a copy of `hash` (a cache evicting oldest first), that copy
    /// is dropped at once instead of being noted: the copies of `hash` are interchangeable,
    /// so the invariant holds whichever one goes.
    #[inline]
    pub(super) fn remove(&mut self, hash: u128) {
        let low = hash as u64;
        if self.queue.front() == Some(&low) {
            self.queue.pop_front();
        } else {
            self.removed.push_back(low);
        }
    }

    /// Drops stale copies from the front (rotating up to `rotations` held hashes to the
    /// back), then compacts when the stale copies exceed `live / 2 + SLACK`.
    pub(super) fn settle(&mut self, live: usize, mut rotations: usize) {
        while let Some(&front) = self.queue.front() {
            if self.removed.back() == Some(&front) {
                self.removed.pop_back();
            } else if self.removed.front() == Some(&front) {
                self.removed.pop_front();
            } else if self.removed.is_empty() {
                break;
            } else if let Some(at) = self.scan(front) {
                self.removed.remove(at);
            } else if rotations > 0 {
                // Held (or stale but not cheaply known to be): move it out of the way. A
                // stale copy rotated stays listed in `removed` and is dropped later.
                rotations -= 1;
                self.queue.rotate_left(1);
                continue;
            } else {
                break;
            }
            self.queue.pop_front();
        }
        if self.removed.len() > live / 2 + SLACK {
            self.compact(live);
        }
    }

    /// Where `hash` is in a short `removed` queue (a long one is not scanned).
    fn scan(&self, hash: u64) -> Option<usize> {
        if self.removed.len() > SCAN {
            return None;
        }
        self.removed.iter().position(|&h| h == hash)
    }

    /// Drops every stale copy in one pass over the list.
    fn compact(&mut self, live: usize) {
        let mut stale: HashMap<u64, u32> = HashMap::with_capacity(self.removed.len());
        for h in self.removed.drain(..) {
            *stale.entry(h).or_insert(0) += 1;
        }
        self.queue.retain(|h| match stale.get_mut(h) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        });
        debug_assert_eq!(self.queue.len(), live);
        if self.queue.capacity() > 4 * self.queue.len().max(SLACK) {
            self.queue.shrink_to(2 * self.queue.len().max(SLACK));
        }
        self.removed = VecDeque::new();
    }

    /// Copies in the list, stale ones included.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether the list holds a copy of `hash`.
    #[cfg(test)]
    pub(super) fn contains(&self, hash: u128) -> bool {
        self.queue.contains(&(hash as u64))
    }
}

/// Per slot, per medium: the hashes given (see the module docs).
#[derive(Clone, Debug, Default)]
pub(super) struct OwnedLists {
    lists: Vec<[Owned; 4]>,
}

impl OwnedLists {
    /// The list of `(slot, medium)`, created if needed.
    #[inline]
    pub(super) fn get_mut(&mut self, slot: u32, medium: usize) -> &mut Owned {
        let slot = slot as usize;
        if self.lists.len() <= slot {
            self.lists.resize_with(slot + 1, Default::default);
        }
        &mut self.lists[slot][medium]
    }

    /// The list of `(slot, medium)`, if the slot has lists.
    #[cfg(test)]
    pub(super) fn get(&self, slot: u32, medium: usize) -> Option<&Owned> {
        self.lists.get(slot as usize).map(|l| &l[medium])
    }

    /// Removes `key` (= `(slot, medium)`) from every hash in that list, deleting buckets left
    /// without holders, and forgets the list. Returns (entries removed, lookups made).
    pub(super) fn remove_all(
        &mut self,
        table: &mut HolderTable,
        slot: u32,
        medium: usize,
        key: u32,
    ) -> (usize, usize) {
        let Some(lists) = self.lists.get_mut(slot as usize) else {
            return (0, 0);
        };
        let list = std::mem::take(&mut lists[medium].queue);
        lists[medium] = Owned::default();
        let mut removed = 0;
        // A key's home depends on its low 64 bits only, so they are enough to touch it.
        table.touch(list.iter().take(TOUCH_AHEAD).map(|&l| u128::from(l)), 3);
        for (at, &low) in list.iter().enumerate() {
            if let Some(&ahead) = list.get(at + TOUCH_AHEAD) {
                table.touch(std::iter::once(u128::from(ahead)), 3);
            }
            let Some(idx) = table.find_low(low, key) else {
                continue;
            };
            match table.remove_holder(idx, key) {
                Removed::Absent => {}
                Removed::Kept => removed += 1,
                Removed::Emptied => {
                    removed += 1;
                    table.delete(idx);
                }
            }
        }
        (removed, list.len())
    }

    /// Forgets every list.
    pub(super) fn clear(&mut self) {
        self.lists.clear();
    }
}
