//! The digests a [`TieredStore`](super::TieredStore) records for the blocks written through
//! it, bounded: at most `capacity` entries, the oldest recorded forgotten first.
//!
//! A digest is an extra check on bytes read back from a slower tier; a block without one still
//! has its tier's own checksum (G3 and G4 verify every read). Forgetting the oldest digests
//! therefore costs only that extra check for blocks written long ago (most of which the tiers
//! have evicted by then), while an unbounded map grew by one entry per block ever written.
//!
//! Order is kept in a queue of `(key, stamp)`; a rewrite gives the key a new stamp, so the
//! queue entry of its older write is stale and skipped at eviction. Stale entries are dropped
//! whenever the queue grows past twice the capacity, so it stays bounded too.

use std::collections::{HashMap, VecDeque};

/// The recorded digests: `key -> (digest, stamp)`, oldest first in `order`.
#[derive(Debug)]
pub(crate) struct Digests {
    capacity: usize,
    map: HashMap<u128, (u64, u64)>,
    order: VecDeque<(u128, u64)>,
    stamp: u64,
}

impl Digests {
    /// An empty set that keeps at most `capacity` digests (0: none, every check passes).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            map: HashMap::new(),
            order: VecDeque::new(),
            stamp: 0,
        }
    }

    /// The digest recorded for `key`, if still kept.
    pub(crate) fn get(&self, key: u128) -> Option<u64> {
        self.map.get(&key).map(|&(d, _)| d)
    }

    /// Records `digest` for `key` (replacing an older one), forgetting the oldest beyond the
    /// capacity.
    pub(crate) fn insert(&mut self, key: u128, digest: u64) {
        if self.capacity == 0 {
            return;
        }
        self.stamp += 1;
        self.map.insert(key, (digest, self.stamp));
        self.order.push_back((key, self.stamp));
        while self.map.len() > self.capacity {
            let Some((old, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|&(_, s)| s == stamp) {
                self.map.remove(&old);
            }
        }
        if self.order.len() > 2 * self.capacity {
            let map = &self.map;
            self.order
                .retain(|(k, s)| map.get(k).is_some_and(|&(_, live)| live == *s));
        }
    }

    /// Forgets `key`'s digest (its queue entry turns stale).
    pub(crate) fn remove(&mut self, key: u128) {
        self.map.remove(&key);
    }

    /// Digests kept now.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Queue entries, stale ones included (for the bound's test).
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_capacity_digests() {
        let mut d = Digests::new(4);
        for k in 0..10u128 {
            d.insert(k, k as u64 * 3);
        }
        assert_eq!(d.len(), 4);
        assert_eq!(d.get(5), None, "an old digest was kept");
        for k in 6..10u128 {
            assert_eq!(d.get(k), Some(k as u64 * 3));
        }
    }

    #[test]
    fn a_rewrite_refreshes_and_the_queue_stays_bounded() {
        let mut d = Digests::new(3);
        d.insert(1, 10);
        d.insert(2, 20);
        d.insert(3, 30);
        d.insert(1, 11); // 1 is now the newest
        d.insert(4, 40); // evicts 2, the oldest live
        assert_eq!(
            (d.get(1), d.get(2), d.get(3), d.get(4)),
            (Some(11), None, Some(30), Some(40))
        );
        for round in 0..1000u64 {
            d.insert(7, round);
        }
        assert_eq!(d.get(7), Some(999));
        assert!(d.len() <= 3);
        assert!(d.queued() <= 2 * 3 + 1, "queue grew to {}", d.queued());
        d.remove(7);
        assert_eq!(d.get(7), None);
        let mut none = Digests::new(0);
        none.insert(1, 1);
        assert_eq!((none.len(), none.get(1)), (0, None));
    }
}
