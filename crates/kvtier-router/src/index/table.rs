//! [`HolderTable`]: the hash table under the prefix index, from a 128-bit sequence hash to the
//! sorted set of `u32` holder keys (`slot << 2 | medium`) that hold it.
//!
//! It owns the memory layout and nothing of the index's meaning (counters, slots, media and the
//! query walk live in the parent module). It is an open-addressing table with linear probing,
//! Robin Hood ordering and backward-shift deletion (no tombstones), written here rather than
//! taken from `hashbrown` because the cost of the index is cache and TLB misses, one per block
//! looked up, and this layout lets a caller overlap them:
//!
//! - a bucket carries its key and up to [`INLINE`] holders in one 32-byte [`Slot`], two slots
//!   per 64-byte-aligned line, and every home is an even bucket, so a key at its home or one
//!   bucket on costs exactly one line (`hashbrown` reads a control group and then the bucket);
//! - the bucket a key starts at is known before anything is read, so a batch or a query can
//!   [`touch`](HolderTable::touch) the home lines of the next dozens of keys first and wait for
//!   all of their misses at once. There is no safe prefetch instruction, so a touch is a plain
//!   load whose value is kept alive with `black_box`.
//!
//! ```text
//! Line (64 bytes) = Slot | Slot          Slot (32 bytes) = key: u128 | holders: [u32; 4]
//!   holders = [EMPTY, ..]                free bucket (the key is stale)
//!           = [k0 < k1 < .. EMPTY..]     1..=4 holders inline, sorted, padded with EMPTY
//!           = [SPILL, i, ..]             more holders: sorted in spill[i]
//! ```
//!
//! Invariants:
//! - every occupied bucket has at least one holder, and holder lists are strictly increasing;
//! - Robin Hood order: along a cluster, the distance from home grows by at most one from one
//!   bucket to the next, so a lookup stops at the first bucket that is free or closer to its
//!   own home than the key sought would be;
//! - the load stays at most [`MAX_LOAD_NUM`]/[`MAX_LOAD_DEN`]; the table grows (doubling) only
//!   in [`reserve`](HolderTable::reserve), never inside an insert, so bucket indices stay valid
//!   for a whole batch of inserts;
//! - a spilled list holds at least [`INLINE`] keys; a free spill vector is empty.

use std::hint::black_box;

/// Marks a free bucket in `holders[0]`, and pads inline holder lists (it sorts after every key).
pub(super) const EMPTY: u32 = u32::MAX;
/// Marks, in `holders[0]`, a bucket whose holders live in the spill arena (index in `holders[1]`).
const SPILL: u32 = u32::MAX - 1;
/// Holders kept inside the bucket.
pub(super) const INLINE: usize = 4;
/// Largest load factor before the table doubles (numerator).
const MAX_LOAD_NUM: usize = 3;
/// Largest load factor before the table doubles (denominator).
const MAX_LOAD_DEN: usize = 4;
/// Smallest bucket count once anything was inserted.
const MIN_BUCKETS: usize = 16;

/// One bucket: a key and its holders (see the module docs for the encoding).
#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
struct Slot {
    key: u128,
    holders: [u32; INLINE],
}

impl Slot {
    const FREE: Slot = Slot {
        key: 0,
        holders: [EMPTY; INLINE],
    };

    #[inline]
    fn is_free(&self) -> bool {
        self.holders[0] == EMPTY
    }
}

/// Two buckets: one cache line. Homes are even bucket indices, so a key found at its home or
/// one bucket on costs one line.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Line([Slot; 2]);

/// The bucket array, indexed by bucket, stored as cache lines.
#[derive(Clone, Debug, Default)]
struct Buckets(Vec<Line>);

impl Buckets {
    fn new(buckets: usize) -> Self {
        Self(vec![Line([Slot::FREE; 2]); buckets / 2])
    }

    #[inline]
    fn len(&self) -> usize {
        self.0.len() * 2
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = &Slot> + '_ {
        self.0.iter().flat_map(|line| line.0.iter())
    }

    fn fill_free(&mut self) {
        self.0.fill(Line([Slot::FREE; 2]));
    }
}

impl std::ops::Index<usize> for Buckets {
    type Output = Slot;
    #[inline]
    fn index(&self, idx: usize) -> &Slot {
        &self.0[idx >> 1].0[idx & 1]
    }
}

impl std::ops::IndexMut<usize> for Buckets {
    #[inline]
    fn index_mut(&mut self, idx: usize) -> &mut Slot {
        &mut self.0[idx >> 1].0[idx & 1]
    }
}

/// Number of keys in an inline holder list (sorted, padded with [`EMPTY`]).
#[inline]
fn inline_len(h: &[u32; INLINE]) -> usize {
    h.iter().map(|&k| usize::from(k != EMPTY)).sum()
}

/// What removing one holder from a bucket did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Removed {
    /// The holder was not in the list.
    Absent,
    /// Removed; others remain.
    Kept,
    /// Removed, and it was the last one: the caller must [`HolderTable::delete`] the bucket.
    Emptied,
}

/// Sequence hash (as `u128`) -> sorted holder keys. See the module docs.
#[derive(Clone, Debug, Default)]
pub(super) struct HolderTable {
    /// Buckets; the length is zero or a power of two at least [`MIN_BUCKETS`].
    slots: Buckets,
    /// `slots.len() - 1`, or 0 while empty.
    mask: usize,
    /// `64 - log2(slots.len())`: a home bucket is the top bits of [`mix`].
    shift: u32,
    /// Occupied buckets.
    len: usize,
    /// Holder lists that outgrew the bucket.
    spill: Vec<Vec<u32>>,
    /// Indices of empty vectors in `spill`, for reuse.
    free_spill: Vec<u32>,
}

/// The digest a key's home bucket is taken from (its top bits): the key's low 64 bits (a
/// sequence hash's chained XXH3 hash) times an odd constant (Fibonacci hashing).
///
/// Only the low 64 bits count, so that a key can also be found from them alone (`find_low`,
/// used by the per-instance lists, which keep 8 bytes per entry instead of 16). They are
/// usually uniform already; the multiply carries every bit of them into the top bits, so small
/// test ids and arithmetic sequences spread too. One multiply, because the digest is computed
/// for every bucket a probe, insert or delete passes (see `distance`).
#[inline]
fn mix(key: u128) -> u64 {
    (key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl HolderTable {
    /// An empty table that can take `keys` distinct keys before it grows.
    ///
    /// An empty table (growing as needed) when that much memory cannot be had.
    pub(super) fn with_capacity(keys: usize) -> Self {
        let mut buckets = MIN_BUCKETS;
        while buckets / MAX_LOAD_DEN * MAX_LOAD_NUM < keys {
            match buckets.checked_mul(2) {
                Some(b) => buckets = b,
                None => return Self::default(),
            }
        }
        let mut lines = Vec::new();
        if lines.try_reserve_exact(buckets / 2).is_err() {
            return Self::default();
        }
        lines.resize(buckets / 2, Line([Slot::FREE; 2]));
        Self {
            slots: Buckets(lines),
            mask: buckets - 1,
            shift: 64 - buckets.trailing_zeros(),
            ..Self::default()
        }
    }

    /// Distinct keys stored.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Keys the table can hold before it grows.
    pub(super) fn capacity(&self) -> usize {
        self.slots.len() / MAX_LOAD_DEN * MAX_LOAD_NUM
    }

    #[inline]
    fn home(&self, key: u128) -> usize {
        (mix(key) >> self.shift) as usize & !1
    }

    /// How far bucket `idx` is from the home of the key stored in it.
    #[inline]
    fn distance(&self, idx: usize, key: u128) -> usize {
        idx.wrapping_sub(self.home(key)) & self.mask
    }

    /// Makes room for `additional` more keys without growing during the inserts.
    pub(super) fn reserve(&mut self, additional: usize) {
        let need = self.len.saturating_add(additional);
        if need <= self.capacity() && !self.slots.is_empty() {
            return;
        }
        let mut buckets = self.slots.len().max(MIN_BUCKETS);
        while buckets / MAX_LOAD_DEN * MAX_LOAD_NUM < need {
            buckets = buckets.checked_mul(2).expect("capacity overflow");
        }
        if buckets != self.slots.len() {
            self.rehash(buckets);
        }
    }

    fn rehash(&mut self, buckets: usize) {
        let old = std::mem::replace(&mut self.slots, Buckets::new(buckets));
        self.mask = buckets - 1;
        self.shift = 64 - buckets.trailing_zeros();
        self.len = 0;
        for &slot in old.iter().filter(|s| !s.is_free()) {
            let (idx, _) = self.probe(slot.key);
            self.place(idx, slot);
        }
    }

    /// Where `key` is (`(bucket, true)`), or where it would be inserted (`(bucket, false)`):
    /// the first bucket that is free or closer to its home than `key` would be.
    #[inline]
    fn probe(&self, key: u128) -> (usize, bool) {
        let mut idx = self.home(key);
        let mut dist = 0;
        loop {
            let s = &self.slots[idx];
            if s.is_free() {
                return (idx, false);
            }
            if s.key == key {
                return (idx, true);
            }
            if self.distance(idx, s.key) < dist {
                return (idx, false);
            }
            idx = (idx + 1) & self.mask;
            dist += 1;
        }
    }

    /// Puts `slot` at `idx`, shifting the rest of the cluster one bucket on (Robin Hood order
    /// makes insertion a shift). Needs a free bucket somewhere, which the load limit ensures.
    fn place(&mut self, idx: usize, slot: Slot) {
        let mut free = idx;
        while !self.slots[free].is_free() {
            free = (free + 1) & self.mask;
        }
        while free != idx {
            let prev = free.wrapping_sub(1) & self.mask;
            self.slots[free] = self.slots[prev];
            free = prev;
        }
        self.slots[idx] = slot;
        self.len += 1;
    }

    /// The bucket of a key whose low 64 bits are `low` and that `holder` holds, if any (two
    /// keys that share their low 64 bits — a chained hash — and a holder are taken as one: a
    /// 2^-64 chance per pair).
    pub(super) fn find_low(&self, low: u64, holder: u32) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mut idx = self.home(u128::from(low));
        let mut dist = 0;
        loop {
            let s = &self.slots[idx];
            if s.is_free() || self.distance(idx, s.key) < dist {
                return None;
            }
            if s.key as u64 == low && self.holders(idx).binary_search(&holder).is_ok() {
                return Some(idx);
            }
            idx = (idx + 1) & self.mask;
            dist += 1;
        }
    }

    /// Bucket of `key`, if stored.
    #[inline]
    pub(super) fn find(&self, key: u128) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        match self.probe(key) {
            (idx, true) => Some(idx),
            _ => None,
        }
    }

    /// The holders of `key`, sorted (empty when absent).
    #[inline]
    pub(super) fn get(&self, key: u128) -> &[u32] {
        match self.find(key) {
            Some(idx) => self.holders(idx),
            None => &[],
        }
    }

    /// Loads, for each of `keys`, its home bucket (the whole line: the home and the bucket
    /// after it), the first holders of a spilled list, and when `span > 1` also the bucket
    /// `span - 1` after the home; all of these misses overlap, and the lookups that follow hit
    /// the cache. Only a hint: it has no effect on results. `span == 0` loads nothing.
    #[inline]
    pub(super) fn touch(&self, keys: impl Iterator<Item = u128>, span: usize) {
        if self.len == 0 || span == 0 {
            return;
        }
        let mut acc = 0u32;
        for key in keys {
            let home = self.home(key);
            let h = &self.slots[home].holders;
            acc ^= h[0];
            if h[0] == SPILL {
                // A hot block: its list lives elsewhere; start that miss too.
                acc ^= self.spill[h[1] as usize].first().copied().unwrap_or(0);
            }
            if span > 1 {
                acc ^= self.slots[(home + span - 1) & self.mask].holders[0];
            }
        }
        black_box(acc);
    }

    /// The holders stored in bucket `idx` (occupied), sorted.
    #[inline]
    pub(super) fn holders(&self, idx: usize) -> &[u32] {
        let h = &self.slots[idx].holders;
        if h[0] == SPILL {
            &self.spill[h[1] as usize]
        } else {
            &h[..inline_len(h)]
        }
    }

    /// Adds `holder` to `key`'s list, inserting `key` if needed. Returns whether `holder` was
    /// new. Call [`reserve`](Self::reserve) first: this never grows the table.
    #[inline]
    pub(super) fn insert(&mut self, key: u128, holder: u32) -> bool {
        debug_assert!(holder < SPILL);
        if self.slots.is_empty() {
            self.reserve(1);
        }
        match self.probe(key) {
            (idx, true) => self.add_holder(idx, holder),
            (idx, false) => {
                debug_assert!(self.len < self.capacity(), "insert without reserve");
                let mut holders = [EMPTY; INLINE];
                holders[0] = holder;
                self.place(idx, Slot { key, holders });
                true
            }
        }
    }

    fn add_holder(&mut self, idx: usize, holder: u32) -> bool {
        let h = &mut self.slots[idx].holders;
        if h[0] == SPILL {
            let list = &mut self.spill[h[1] as usize];
            return match list.binary_search(&holder) {
                Ok(_) => false,
                Err(at) => {
                    list.insert(at, holder);
                    true
                }
            };
        }
        // Inline: sorted and padded with EMPTY, which sorts last.
        let at = h.iter().position(|&k| k >= holder).unwrap_or(INLINE);
        if at < INLINE && h[at] == holder {
            return false;
        }
        if h[INLINE - 1] == EMPTY {
            h.copy_within(at..INLINE - 1, at + 1);
            h[at] = holder;
            return true;
        }
        // Full: move the list out to the spill arena.
        let old = *h;
        let i = match self.free_spill.pop() {
            Some(i) => i,
            None => {
                self.spill.push(Vec::with_capacity(2 * INLINE));
                (self.spill.len() - 1) as u32
            }
        };
        let list = &mut self.spill[i as usize];
        debug_assert!(list.is_empty());
        list.extend_from_slice(&old[..at]);
        list.push(holder);
        list.extend_from_slice(&old[at..]);
        self.slots[idx].holders = [SPILL, i, EMPTY, EMPTY];
        true
    }

    /// Returns spill vector `i` (already emptied) to the free list.
    fn free_spill_vec(&mut self, i: u32) {
        let list = &mut self.spill[i as usize];
        debug_assert!(list.is_empty());
        // Keep small buffers for reuse; give a hot prefix's big one back.
        if list.capacity() > 16 * INLINE {
            *list = Vec::new();
        }
        self.free_spill.push(i);
    }

    /// Removes `holder` from bucket `idx` (occupied). On [`Removed::Emptied`] the bucket has no
    /// holders left and the caller must [`delete`](Self::delete) it before any other call.
    #[inline]
    pub(super) fn remove_holder(&mut self, idx: usize, holder: u32) -> Removed {
        let h = &mut self.slots[idx].holders;
        if h[0] == SPILL {
            let i = h[1];
            let list = &mut self.spill[i as usize];
            let Ok(at) = list.binary_search(&holder) else {
                return Removed::Absent;
            };
            list.remove(at);
            if list.len() < INLINE {
                self.unspill(idx, i);
            }
            return Removed::Kept;
        }
        let Some(at) = h.iter().position(|&k| k == holder) else {
            return Removed::Absent;
        };
        h.copy_within(at + 1.., at);
        h[INLINE - 1] = EMPTY;
        if h[0] == EMPTY {
            Removed::Emptied
        } else {
            Removed::Kept
        }
    }

    /// Moves spill list `i` (fewer than [`INLINE`] keys, at least one) back into bucket `idx`.
    fn unspill(&mut self, idx: usize, i: u32) {
        let list = &mut self.spill[i as usize];
        debug_assert!(!list.is_empty() && list.len() < INLINE);
        let mut h = [EMPTY; INLINE];
        h[..list.len()].copy_from_slice(list);
        list.clear();
        self.free_spill_vec(i);
        self.slots[idx].holders = h;
    }

    /// Frees bucket `idx`, shifting the rest of its cluster back (no tombstones). Only for a
    /// bucket left without holders ([`Removed::Emptied`]).
    pub(super) fn delete(&mut self, idx: usize) {
        let mut hole = idx;
        loop {
            let next = (hole + 1) & self.mask;
            let s = self.slots[next];
            if s.is_free() || self.distance(next, s.key) == 0 {
                break;
            }
            self.slots[hole] = s;
            hole = next;
        }
        self.slots[hole] = Slot::FREE;
        self.len -= 1;
    }

    /// Every stored key with its holders, in bucket order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u128, &[u32])> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_free())
            .map(|(idx, s)| (s.key, self.holders(idx)))
    }

    /// Removes everything, keeping the bucket array.
    pub(super) fn clear(&mut self) {
        self.slots.fill_free();
        self.len = 0;
        self.spill.clear();
        self.free_spill.clear();
    }

    /// Checks the invariants of the module docs (tests only).
    #[cfg(test)]
    pub(super) fn check(&self) {
        let mut occupied = 0;
        for (idx, s) in self.slots.iter().enumerate() {
            if s.is_free() {
                continue;
            }
            occupied += 1;
            let holders = self.holders(idx);
            assert!(!holders.is_empty());
            assert!(holders.windows(2).all(|w| w[0] < w[1]), "{holders:?}");
            if s.holders[0] == SPILL {
                assert!(holders.len() >= INLINE);
            }
            // Robin Hood: the previous bucket is free or at most one closer to its home.
            let prev = idx.wrapping_sub(1) & self.mask;
            let d = self.distance(idx, s.key);
            if d > 0 {
                let p = &self.slots[prev];
                assert!(!p.is_free(), "gap before a displaced key");
                assert!(self.distance(prev, p.key) + 1 >= d);
            }
            assert_eq!(self.find(s.key), Some(idx));
        }
        assert_eq!(occupied, self.len);
        assert!(self.len <= self.capacity() || self.slots.is_empty());
    }
}
