//! [`OwnedLists`]: per `(slot, medium)`, the hashes it was given, so that forgetting an
//! instance (Cleared, Shutdown, expiry, a dump) walks its own entries instead of the whole
//! table.
//!
//! A list is a queue in the order hashes were given. Losing a hash does not search the list:
//! the hash is noted in a small `removed` multiset, and stale copies are dropped from the
//! front of the queue as they reach it (caches evict roughly oldest first, so most removed
//! hashes are near the front). A hash still held at the front is rotated to the back, a few
//! per removal, so that long-lived blocks (a system prompt) do not hold the queue up. When
//! the noted removals outgrow half the live count (random eviction), one sequential pass
//! drops them all. None of this touches the table: it costs a probe of the small multiset
//! per removal, no cache miss in the big table.
//!
//! Invariant, for every hash `h` of `(slot, medium)`: the copies of `h` in its queue number
//! `held(h) + removed(h)`, where `held(h)` is 1 when the table holds `(h, slot, medium)` and 0
//! otherwise. After every write, `removed` totals at most `held / 2 + SLACK`, so a queue holds
//! at most `1.5 * held + SLACK` hashes.

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
    /// Hashes in the order given; includes stale copies counted in `removed`.
    queue: VecDeque<u128>,
    /// Stale copies in `queue`, per hash.
    removed: HashMap<u128, u32>,
    /// Sum of `removed`.
    stale: usize,
}

impl Owned {
    /// Notes that `hash` was given.
    #[inline]
    pub(super) fn push(&mut self, hash: u128) {
        self.queue.push_back(hash);
    }

    /// Notes that `hash` was lost (one copy in the queue is now stale).
    #[inline]
    pub(super) fn remove(&mut self, hash: u128) {
        *self.removed.entry(hash).or_insert(0) += 1;
        self.stale += 1;
    }

    /// Drops stale copies from the front (rotating up to `rotations` held hashes to the
    /// back), then compacts when the stale copies exceed `live / 2 + SLACK`.
    pub(super) fn settle(&mut self, live: usize, mut rotations: usize) {
        while self.stale > 0 {
            let Some(&front) = self.queue.front() else {
                break;
            };
            if self.take_stale(front) {
                self.queue.pop_front();
            } else if rotations > 0 {
                rotations -= 1;
                self.queue.rotate_left(1);
            } else {
                break;
            }
        }
        if self.stale > live / 2 + SLACK {
            let mut removed = std::mem::take(&mut self.removed);
            self.queue.retain(|h| match removed.get_mut(h) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    false
                }
                _ => true,
            });
            self.stale = 0;
            debug_assert_eq!(self.queue.len(), live);
            removed.clear();
            self.removed = removed;
            if self.queue.capacity() > 4 * self.queue.len().max(SLACK) {
                self.queue.shrink_to(2 * self.queue.len().max(SLACK));
            }
            if self.removed.capacity() > 4 * SLACK {
                self.removed = HashMap::new();
            }
        }
    }

    /// If a copy of `hash` is stale, un-notes it and returns true.
    #[inline]
    fn take_stale(&mut self, hash: u128) -> bool {
        let Some(n) = self.removed.get_mut(&hash) else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            self.removed.remove(&hash);
        }
        self.stale -= 1;
        true
    }

    /// Copies in the queue, stale ones included.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether the queue holds a copy of `hash`.
    #[cfg(test)]
    pub(super) fn contains(&self, hash: u128) -> bool {
        self.queue.contains(&hash)
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
        table.touch(list.iter().take(TOUCH_AHEAD).copied(), 3);
        for (at, &hash) in list.iter().enumerate() {
            if let Some(&ahead) = list.get(at + TOUCH_AHEAD) {
                table.touch(std::iter::once(ahead), 3);
            }
            let Some(idx) = table.find(hash) else {
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
