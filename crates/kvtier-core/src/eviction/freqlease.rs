//! `freqlease`: frequency-leased LRU with chain-tail demotion.
//!
//! # Idea
//!
//! Every inactive block gets a *lease*: it is kept for as long as its last release is recent
//! enough, and every frequency tier it has climbed buys it one more lease of
//! `LEASE_PER_TIER × capacity` releases. Concretely the policy keeps five intrusive LRU lists over
//! preallocated per-slot arrays:
//!
//! - list 0, *chain tails*: blocks released with frequency ≤ 1 that no other block ever named as
//!   its parent (the last block of a request, usually a partial block). They are always evicted
//!   first.
//! - lists 1–4, *frequency tiers* by the estimate of a count-min sketch (4 rows of saturating
//!   4-bit counters, TinyLFU-style halving): `f < 2`, `f = 2`, `3 ≤ f < 8`, `f ≥ 8`.
//!
//! A block's eviction key is `release_tick + tier × lease`; the victim is the head (oldest) of the
//! list whose head has the smallest key, so one eviction looks at five list heads: O(1).
//! Recency still matters inside and across tiers (an old frequent block is evicted before a young
//! once-seen block), unlike kvbm's `multi_lru` where a hot tier is never touched while a colder
//! tier has blocks.
//!
//! # Why it works (the trace properties it exploits)
//!
//! On the Mooncake conversation trace reuse distances are long compared with the cache (median
//! ≈ 9k blocks, 75th percentile ≈ 22k), so LRU at 5,000 blocks keeps blocks for too short a time
//! to see their reuse. But reuse is very skewed: a block that has already been hit is reused
//! again with probability ≈ 53% versus ≈ 26% for a block seen once, and ≈ 1% for a request's last
//! block (the next turn of a conversation shares all but the last, partial block). Leasing by
//! frequency keeps the popular prefixes (system prompts, shared documents, multi-turn histories)
//! alive long enough to be reused, while recency keeps serving first reuses; demoting chain tails
//! frees about 4% of the pool for free. Only online signals are used: hashes (position and parent
//! fragment link a block to its parent), `on_access` hits and registrations, and release order.
//!
//! # Measured (prefix-run block hit rate, leaf-first release)
//!
//! Mooncake conversation trace (12,031 requests, 288,500 blocks):
//!
//! | capacity | LRU | FIFO | multi_lru | S3-FIFO | freqlease | Belady |
//! |---|---|---|---|---|---|---|
//! | 1,000 | 4.45% | 4.45% | 7.59% | 5.65% | 4.97% | 17.92% |
//! | 5,000 | 11.18% | 10.64% | 15.22% | 14.43% | 14.71% | 33.97% |
//! | 10,000 | 21.16% | 18.16% | 18.43% | 20.06% | 23.41% | 36.64% |
//! | 20,000 | 28.78% | 25.76% | 26.07% | 25.05% | 30.46% | 36.64% |
//!
//! That closes 15% (5k) and 21% (20k) of the LRU→Belady gap — short of the "half the gap" goal;
//! `multi_lru` is better at ≤ 5k on this trace but loses to LRU from 10k on and collapses on
//! recency-friendly workloads (synthetic chat: 39% vs LRU 49% at 5k), where freqlease stays at or
//! above LRU (49.8%). The same ranking holds on both halves of the trace and on synthetic
//! chat / agent / mixed-with-scans workloads (results in the lab report). A lease of two
//! capacities per tier gives 16.5% at 5k here but loses 3.5 points to LRU on synthetic chat, so
//! one capacity per tier was kept.
//!
//! # Contract notes
//!
//! - Works per shard (`requires_single_shard() == false`); every structure is bounded: per-slot
//!   arrays sized `total_blocks`, a sketch of `4 × clamp(64 × capacity, 2^16, 2^22)` bytes and a
//!   direct-mapped parent table of `4 × capacity` words. Collisions only blur the hints.
//! - Works with any release order; leaf-first release (deepest block first) is recommended: with
//!   it the oldest list head is always the deepest block of the oldest request.
//! - `on_access` must be called as the module docs of `eviction` say (hits and registrations);
//!   without it the policy degrades to LRU with every block in one tier.

use super::{AccessKind, BlockId, EvictionPolicy, PolicyContext, PolicyFactory, SequenceHash};

/// Sentinel for "no slot" in the intrusive lists.
const NIL: u32 = u32::MAX;
/// Marker in `list` for a slot that is not in the pool.
const OUT: u8 = u8::MAX;
/// List of chain tails (evicted first).
const TAILS: usize = 0;
/// Number of lists: tails + 4 frequency tiers.
const LISTS: usize = 5;
/// Extra lifetime per frequency tier, in units of the shard capacity (released blocks).
const LEASE_PER_TIER: u64 = 1;
/// Sketch rows.
const ROWS: usize = 4;
/// Parent table flag: some block named this one as its parent since it was registered.
const HAS_CHILD: u32 = 1;

/// Builds [`FreqLease`] policies (name `freqlease`).
#[derive(Clone, Copy, Debug, Default)]
pub struct FreqLeaseFactory;

impl FreqLeaseFactory {
    /// A factory with the default settings.
    pub const fn new() -> Self {
        Self
    }
}

impl PolicyFactory for FreqLeaseFactory {
    fn name(&self) -> &str {
        "freqlease"
    }

    fn build(&self, ctx: PolicyContext) -> Box<dyn EvictionPolicy> {
        let shards = ctx.shards.max(1);
        let per_shard = ctx.total_blocks.div_ceil(shards).max(1);
        Box::new(FreqLease::new(ctx.total_blocks, per_shard))
    }
}

/// Frequency-leased LRU with chain-tail demotion. See the module docs.
#[derive(Debug)]
pub struct FreqLease {
    prev: Vec<u32>,
    next: Vec<u32>,
    list: Vec<u8>,
    tick: Vec<u64>,
    head: [u32; LISTS],
    tail: [u32; LISTS],
    len: usize,
    now: u64,
    lease: u64,
    sketch: Vec<u8>,
    sketch_mask: usize,
    touches: u64,
    halve_every: u64,
    parents: Vec<u32>,
    parents_mask: usize,
}

/// Key of a block for the parent table: (position, low 32 bits of the chained hash), so that a
/// child can find its parent from `position() - 1` and `parent_fragment()`.
fn link_key(position: u32, fragment: u32) -> u64 {
    let x = ((u64::from(position) << 32) | u64::from(fragment)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let x = x ^ (x >> 31);
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9) ^ (x >> 29)
}

impl FreqLease {
    /// A policy for ids in `0..total_blocks`, sized for a shard of `capacity` blocks.
    pub fn new(total_blocks: usize, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let width = capacity
            .saturating_mul(64)
            .clamp(1 << 16, 1 << 22)
            .next_power_of_two();
        let parents = capacity.saturating_mul(4).max(1024).next_power_of_two();
        Self {
            prev: vec![NIL; total_blocks],
            next: vec![NIL; total_blocks],
            list: vec![OUT; total_blocks],
            tick: vec![0; total_blocks],
            head: [NIL; LISTS],
            tail: [NIL; LISTS],
            len: 0,
            now: 0,
            lease: LEASE_PER_TIER.saturating_mul(capacity as u64),
            sketch: vec![0; width * ROWS],
            sketch_mask: width - 1,
            touches: 0,
            halve_every: (width as u64).saturating_mul(10),
            parents: vec![0; parents],
            parents_mask: parents - 1,
        }
    }

    fn cell(&self, digest: u64, row: usize) -> usize {
        let x = (digest ^ (row as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        row * (self.sketch_mask + 1) + ((x >> 32) as usize & self.sketch_mask)
    }

    fn touch(&mut self, digest: u64) {
        for row in 0..ROWS {
            let c = self.cell(digest, row);
            if let Some(v) = self.sketch.get_mut(c) {
                *v = (*v + 1).min(15);
            }
        }
        self.touches += 1;
        if self.touches >= self.halve_every {
            self.touches = 0;
            for v in &mut self.sketch {
                *v >>= 1;
            }
        }
    }

    fn frequency(&self, digest: u64) -> u8 {
        (0..ROWS)
            .map(|row| {
                self.sketch
                    .get(self.cell(digest, row))
                    .copied()
                    .unwrap_or(0)
            })
            .min()
            .unwrap_or(0)
    }

    /// Parent-table flags of `key`, or `None` if the slot holds another key.
    fn flags(&self, key: u64) -> Option<u32> {
        let e = self
            .parents
            .get(key as usize & self.parents_mask)
            .copied()?;
        (e >> 8 == (key >> 40) as u32).then_some(e & 0xFF)
    }

    fn set_flags(&mut self, key: u64, flags: u32) {
        if let Some(e) = self.parents.get_mut(key as usize & self.parents_mask) {
            *e = (((key >> 40) as u32) << 8) | (flags & 0xFF);
        }
    }

    fn link(&mut self, l: usize, i: usize) {
        let t = self.tail[l];
        self.prev[i] = t;
        self.next[i] = NIL;
        match self.next.get_mut(t as usize) {
            Some(n) => *n = i as u32,
            None => self.head[l] = i as u32,
        }
        self.tail[l] = i as u32;
        self.list[i] = l as u8;
        self.len += 1;
    }

    fn unlink(&mut self, i: usize) -> bool {
        let l = match self.list.get(i) {
            Some(&l) if (l as usize) < LISTS => l as usize,
            _ => return false,
        };
        let (p, n) = (self.prev[i], self.next[i]);
        match self.next.get_mut(p as usize) {
            Some(x) => *x = n,
            None => self.head[l] = n,
        }
        match self.prev.get_mut(n as usize) {
            Some(x) => *x = p,
            None => self.tail[l] = p,
        }
        self.list[i] = OUT;
        self.len -= 1;
        true
    }

    fn tier(f: u8) -> usize {
        match f {
            0..=1 => 1,
            2 => 2,
            3..=7 => 3,
            _ => 4,
        }
    }
}

impl EvictionPolicy for FreqLease {
    fn insert(&mut self, block: BlockId, hash: SequenceHash) {
        let i = block.index();
        if self.list.get(i) != Some(&OUT) {
            return; // out of range or already present: ignore (contract violation)
        }
        let f = self.frequency(hash.mix64());
        let key = link_key(hash.position(), hash.chained() as u32);
        // Unknown history (evicted from the table) counts as "has a child": never demote blindly.
        let has_child = self.flags(key).is_none_or(|fl| fl & HAS_CHILD != 0);
        let l = if f <= 1 && !has_child {
            TAILS
        } else {
            Self::tier(f)
        };
        self.now += 1;
        self.tick[i] = self.now;
        self.link(l, i);
    }

    fn remove(&mut self, block: BlockId) -> bool {
        self.unlink(block.index())
    }

    fn evict(&mut self) -> Option<BlockId> {
        let victim = if self.head[TAILS] != NIL {
            self.head[TAILS]
        } else {
            let mut best = NIL;
            let mut best_key = u64::MAX;
            for l in 1..LISTS {
                let h = self.head[l];
                if let Some(&t) = self.tick.get(h as usize) {
                    let k = t.saturating_add(self.lease.saturating_mul(l as u64 - 1));
                    if best == NIL || k < best_key {
                        best = h;
                        best_key = k;
                    }
                }
            }
            best
        };
        if self.unlink(victim as usize) {
            Some(BlockId::new(victim))
        } else {
            None
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn on_access(&mut self, hash: SequenceHash, kind: AccessKind) {
        self.touch(hash.mix64());
        let pos = hash.position();
        if pos > 0 {
            let parent = link_key(pos - 1, hash.parent_fragment());
            let fl = self.flags(parent).unwrap_or(0);
            self.set_flags(parent, fl | HAS_CHILD);
        }
        if kind == AccessKind::Register {
            self.set_flags(link_key(pos, hash.chained() as u32), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn chain(seed: u64, n: u32) -> Vec<SequenceHash> {
        let mut v = vec![SequenceHash::root(seed)];
        for i in 1..n {
            let p = v[i as usize - 1];
            v.push(SequenceHash::child_of(
                p,
                seed.wrapping_mul(31).wrapping_add(u64::from(i)),
            ));
        }
        v
    }

    #[test]
    fn empty_pool_evicts_nothing() {
        let mut p = FreqLease::new(8, 8);
        assert_eq!(p.evict(), None);
        assert!(p.is_empty());
        assert!(!p.remove(BlockId::new(3)));
        assert!(!p.remove(BlockId::new(100)));
    }

    #[test]
    fn chain_tail_goes_first() {
        let mut p = FreqLease::new(16, 16);
        let c = chain(7, 4);
        for h in &c {
            p.on_access(*h, AccessKind::Register);
        }
        for (i, h) in c.iter().enumerate().rev() {
            p.insert(BlockId::new(i as u32), *h);
        }
        // Root-first release would make the tail the youngest block; it still goes first.
        let mut q = FreqLease::new(16, 16);
        for h in &c {
            q.on_access(*h, AccessKind::Register);
        }
        for (i, h) in c.iter().enumerate() {
            q.insert(BlockId::new(i as u32), *h);
        }
        assert_eq!(p.evict(), Some(BlockId::new(3)));
        assert_eq!(q.evict(), Some(BlockId::new(3)));
    }

    #[test]
    fn frequent_block_outlives_recent_once_seen_blocks() {
        let mut p = FreqLease::new(64, 4);
        let hot = chain(1, 2);
        for _ in 0..4 {
            for h in &hot {
                p.on_access(*h, AccessKind::Hit);
            }
        }
        p.insert(BlockId::new(0), hot[0]);
        // Younger blocks seen once (interior blocks, so not tails).
        for k in 0..6u32 {
            let c = chain(100 + u64::from(k), 2);
            p.on_access(c[0], AccessKind::Register);
            p.on_access(c[1], AccessKind::Register);
            p.insert(BlockId::new(10 + k), c[0]);
        }
        let first = p.evict();
        assert_ne!(first, Some(BlockId::new(0)));
        assert_eq!(first, Some(BlockId::new(10)));
    }

    #[test]
    fn factory_builds_named_policy() {
        let f = FreqLeaseFactory::new();
        assert_eq!(f.name(), "freqlease");
        assert!(!f.requires_single_shard());
        let mut p = f.build(PolicyContext {
            total_blocks: 10,
            shard: 0,
            shards: 2,
        });
        p.insert(BlockId::new(9), SequenceHash::root(1));
        assert_eq!(p.len(), 1);
        assert_eq!(p.evict(), Some(BlockId::new(9)));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u32, u64, u8),
        Remove(u32),
        Evict,
        Access(u64, u8, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..40, 0u64..30, 0u8..6).prop_map(|(b, h, p)| Op::Insert(b, h, p)),
            (0u32..40).prop_map(Op::Remove),
            Just(Op::Evict),
            (0u64..30, 0u8..6, any::<bool>()).prop_map(|(h, p, k)| Op::Access(h, p, k)),
        ]
    }

    fn hash(h: u64, pos: u8) -> SequenceHash {
        SequenceHash::new(h, (h as u32).wrapping_sub(1), u32::from(pos))
    }

    proptest! {
        /// Against a set model: evict returns only present ids, each once; len matches;
        /// removing an absent id is a no-op; draining empties the pool.
        #[test]
        fn matches_set_model(ops in proptest::collection::vec(op(), 0..400)) {
            let mut p = FreqLease::new(32, 8);
            let mut model = BTreeSet::new();
            for o in ops {
                match o {
                    Op::Insert(b, h, pos) => {
                        // The contract forbids inserting a present id; ids >= 32 are out of range.
                        if b < 32 && !model.contains(&b) {
                            p.insert(BlockId::new(b), hash(h, pos));
                            model.insert(b);
                        } else if b >= 32 {
                            p.insert(BlockId::new(b), hash(h, pos));
                        }
                    }
                    Op::Remove(b) => {
                        prop_assert_eq!(p.remove(BlockId::new(b)), model.remove(&b));
                    }
                    Op::Evict => {
                        match p.evict() {
                            Some(v) => prop_assert!(model.remove(&v.raw())),
                            None => prop_assert!(model.is_empty()),
                        }
                    }
                    Op::Access(h, pos, hit) => {
                        let kind = if hit { AccessKind::Hit } else { AccessKind::Register };
                        p.on_access(hash(h, pos), kind);
                    }
                }
                prop_assert_eq!(p.len(), model.len());
            }
            while let Some(v) = p.evict() {
                prop_assert!(model.remove(&v.raw()));
            }
            prop_assert!(model.is_empty());
            prop_assert!(p.is_empty());
        }
    }
}
