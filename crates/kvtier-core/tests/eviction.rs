//! Eviction backends (`fifo`, `lru`, `multi_lru`, `lineage`) and the TinyLFU sketch, tested
//! through the public API.
//!
//! Every backend runs random insert / remove / evict / access sequences against a trivial
//! reference model of its documented order (a `VecDeque`, four of them, or a brute-force leaf
//! scan); each victim and every `len` must agree, and nothing may panic — including ids outside
//! `0..total_blocks` and heavy `(position, fragment)` collisions for `lineage`. Scenario tests
//! pin the behaviours the backends exist for; sketch tests pin the count-min guarantees.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use kvtier_core::{
    AccessKind, BlockId, EvictionConfigError, EvictionPolicy, FifoFactory, FrequencySketch,
    FrequencyTracker, LineageFactory, LruFactory, MultiLruFactory, NoopTracker, PolicyContext,
    PolicyFactory, SequenceHash, SketchConfigError,
};
use proptest::prelude::*;

/// Blocks in every model test; ops also use a couple of ids past the end.
const BLOCKS: u32 = 12;

fn ctx(total_blocks: usize) -> PolicyContext {
    PolicyContext {
        total_blocks,
        shard: 0,
        shards: 1,
    }
}

fn id(raw: u32) -> BlockId {
    BlockId::new(raw)
}

/// One step of a random sequence. `u8`s select a hash (each backend maps them its own way).
#[derive(Clone, Debug)]
enum Op {
    Insert(u32, u8),
    Remove(u32),
    Evict,
    Access(u8, bool),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        5 => (0..BLOCKS + 2, any::<u8>()).prop_map(|(i, h)| Op::Insert(i, h)),
        2 => (0..BLOCKS + 2).prop_map(Op::Remove),
        3 => Just(Op::Evict),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(h, hit)| Op::Access(h, hit)),
    ];
    prop::collection::vec(op, 0..200)
}

fn kind(hit: bool) -> AccessKind {
    if hit {
        AccessKind::Hit
    } else {
        AccessKind::Register
    }
}

/// Flat hashes for the list backends: a small domain so `lru` sees shared hashes.
fn flat_hash(h: u8) -> SequenceHash {
    SequenceHash::root(u64::from(h % 8) * 0x9E37)
}

/// Tiny position / fragment domains: many parent links and many collisions.
fn tree_hash(h: u8) -> SequenceHash {
    SequenceHash::new(
        u64::from((h >> 2) & 3),
        u32::from((h >> 4) & 3),
        u32::from(h & 3),
    )
}

/// A reference model of one backend's order.
trait Model {
    fn insert(&mut self, block: u32, hash: SequenceHash);
    fn remove(&mut self, block: u32) -> bool;
    fn evict(&mut self) -> Option<u32>;
    fn access(&mut self, _hash: SequenceHash, _kind: AccessKind) {}
    fn len(&self) -> usize;
}

/// Runs `ops` on `policy` and `model` side by side, then drains both.
fn check(
    policy: &mut dyn EvictionPolicy,
    model: &mut dyn Model,
    ops: &[Op],
    hash: fn(u8) -> SequenceHash,
) -> Result<(), TestCaseError> {
    for op in ops {
        match *op {
            Op::Insert(b, h) => {
                policy.insert(id(b), hash(h));
                if b < BLOCKS {
                    model.insert(b, hash(h));
                }
            }
            Op::Remove(b) => {
                let expected = b < BLOCKS && model.remove(b);
                prop_assert_eq!(policy.remove(id(b)), expected, "{:?}", op);
            }
            Op::Evict => {
                prop_assert_eq!(policy.evict(), model.evict().map(id), "{:?}", op);
            }
            Op::Access(h, hit) => {
                policy.on_access(hash(h), kind(hit));
                model.access(hash(h), kind(hit));
            }
        }
        prop_assert_eq!(policy.len(), model.len());
        prop_assert_eq!(policy.is_empty(), model.len() == 0);
    }
    loop {
        let victim = policy.evict();
        prop_assert_eq!(victim, model.evict().map(id));
        if victim.is_none() {
            break;
        }
    }
    prop_assert_eq!(policy.len(), 0);
    Ok(())
}

/// Insertion order; re-insertion moves to the back.
#[derive(Default)]
struct FifoModel(VecDeque<u32>);

impl Model for FifoModel {
    fn insert(&mut self, block: u32, _hash: SequenceHash) {
        self.remove(block);
        self.0.push_back(block);
    }
    fn remove(&mut self, block: u32) -> bool {
        let at = self.0.iter().position(|&b| b == block);
        at.and_then(|i| self.0.remove(i)).is_some()
    }
    fn evict(&mut self) -> Option<u32> {
        self.0.pop_front()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Recency order. A hit on a hash promotes the block that last entered the pool with that hash,
/// if it is still there under that hash (the index keeps one block per hash).
#[derive(Default)]
struct LruModel {
    order: FifoModel,
    hash_of: HashMap<u32, SequenceHash>,
    last_entered: HashMap<SequenceHash, u32>,
}

impl Model for LruModel {
    fn insert(&mut self, block: u32, hash: SequenceHash) {
        self.order.insert(block, hash);
        self.hash_of.insert(block, hash);
        self.last_entered.insert(hash, block);
    }
    fn remove(&mut self, block: u32) -> bool {
        self.hash_of.remove(&block);
        self.order.remove(block)
    }
    fn evict(&mut self) -> Option<u32> {
        let victim = self.order.evict()?;
        self.hash_of.remove(&victim);
        Some(victim)
    }
    fn access(&mut self, hash: SequenceHash, kind: AccessKind) {
        let Some(&b) = self.last_entered.get(&hash) else {
            return;
        };
        if kind == AccessKind::Hit && self.hash_of.get(&b) == Some(&hash) {
            self.order.remove(b);
            self.order.0.push_back(b);
        }
    }
    fn len(&self) -> usize {
        self.order.len()
    }
}

/// Four FIFO levels chosen by the shared sketch's estimate at insert.
struct MultiLruModel {
    levels: [FifoModel; 4],
    sketch: Arc<FrequencySketch>,
    thresholds: [u32; 3],
}

impl Model for MultiLruModel {
    fn insert(&mut self, block: u32, hash: SequenceHash) {
        self.remove(block);
        let f = u32::from(self.sketch.estimate(hash.mix64()));
        let level = self.thresholds.iter().filter(|&&t| f >= t).count();
        self.levels[level].insert(block, hash);
    }
    fn remove(&mut self, block: u32) -> bool {
        self.levels.iter_mut().any(|l| l.remove(block))
    }
    fn evict(&mut self) -> Option<u32> {
        self.levels.iter_mut().find_map(FifoModel::evict)
    }
    fn len(&self) -> usize {
        self.levels.iter().map(FifoModel::len).sum()
    }
}

/// Brute force: the oldest present block of which no present block may be a child.
#[derive(Default)]
struct LineageModel {
    present: Vec<(u32, SequenceHash, u64)>,
    tick: u64,
}

impl Model for LineageModel {
    fn insert(&mut self, block: u32, hash: SequenceHash) {
        self.remove(block);
        self.present.push((block, hash, self.tick));
        self.tick += 1;
    }
    fn remove(&mut self, block: u32) -> bool {
        let before = self.present.len();
        self.present.retain(|&(b, _, _)| b != block);
        self.present.len() != before
    }
    fn evict(&mut self) -> Option<u32> {
        let victim = self
            .present
            .iter()
            .filter(|&&(_, h, _)| !self.present.iter().any(|&(_, c, _)| h.may_be_parent_of(c)))
            .min_by_key(|&&(_, _, t)| t)
            .map(|&(b, _, _)| b)?;
        self.remove(victim);
        Some(victim)
    }
    fn len(&self) -> usize {
        self.present.len()
    }
}

proptest! {
    #[test]
    fn fifo_matches_model(ops in ops()) {
        let mut policy = FifoFactory::new().build(ctx(BLOCKS as usize));
        check(policy.as_mut(), &mut FifoModel::default(), &ops, flat_hash)?;
    }

    #[test]
    fn lru_matches_model(ops in ops()) {
        let mut policy = LruFactory::new().with_hit_promotion(true).build(ctx(BLOCKS as usize));
        check(policy.as_mut(), &mut LruModel::default(), &ops, flat_hash)?;
    }

    #[test]
    fn lru_without_hit_promotion_matches_fifo_model(ops in ops()) {
        let mut policy = LruFactory::new().with_hit_promotion(false).build(ctx(BLOCKS as usize));
        check(policy.as_mut(), &mut FifoModel::default(), &ops, flat_hash)?;
    }

    #[test]
    fn multi_lru_matches_model(ops in ops(), t1 in 1u32..4, gap in 1u32..4) {
        // A small sketch that ages often, so levels move both ways during a run.
        let sketch = Arc::new(FrequencySketch::builder(8).with_sample_size(40).build().unwrap());
        let thresholds = [t1, t1 + gap, t1 + 2 * gap];
        let factory = MultiLruFactory::new(sketch.clone(), thresholds).unwrap();
        let mut policy = factory.build(ctx(BLOCKS as usize));
        // Accesses count into the sketch through the policy; the model only reads it.
        let mut model = MultiLruModel { levels: Default::default(), sketch, thresholds };
        check(policy.as_mut(), &mut model, &ops, flat_hash)?;
    }

    #[test]
    fn lineage_matches_model(ops in ops()) {
        let mut policy = LineageFactory::new().build(ctx(BLOCKS as usize));
        check(policy.as_mut(), &mut LineageModel::default(), &ops, tree_hash)?;
    }

    #[test]
    fn sketch_never_undercounts_before_aging(counts in prop::collection::vec(0u8..20, 1..64)) {
        let sketch = FrequencySketch::builder(16).with_sample_size(u64::MAX).build().unwrap();
        for (key, &n) in counts.iter().enumerate() {
            for _ in 0..n {
                sketch.increment(key as u64);
            }
        }
        for (key, &n) in counts.iter().enumerate() {
            prop_assert!(sketch.estimate(key as u64) >= n.min(15), "key {key}");
        }
        prop_assert_eq!(sketch.halvings(), 0);
    }
}

#[test]
fn names_and_sharding() {
    let tracker: Arc<dyn FrequencyTracker> = Arc::new(NoopTracker);
    let multi = MultiLruFactory::with_default_thresholds(tracker).unwrap();
    let factories: [(&dyn PolicyFactory, &str, bool); 4] = [
        (&FifoFactory::new(), "fifo", false),
        (&LruFactory::new(), "lru", false),
        (&multi, "multi_lru", false),
        (&LineageFactory::new(), "lineage", true),
    ];
    for (factory, name, single) in factories {
        assert_eq!(factory.name(), name);
        assert_eq!(factory.requires_single_shard(), single, "{name}");
        // An empty pool (and a zero-block manager) never panics.
        let mut policy = factory.build(ctx(0));
        policy.insert(id(0), SequenceHash::root(1));
        assert!(!policy.remove(id(0)));
        assert_eq!(policy.evict(), None);
        assert!(policy.is_empty());
    }
}

#[test]
fn fifo_reinsert_goes_to_back() {
    let mut p = FifoFactory::new().build(ctx(4));
    for b in 0..3 {
        p.insert(id(b), SequenceHash::root(u64::from(b)));
    }
    assert!(p.remove(id(0)));
    p.insert(id(0), SequenceHash::root(0));
    p.on_access(SequenceHash::root(1), AccessKind::Hit); // ignored by fifo
    assert_eq!(p.evict(), Some(id(1)));
    assert_eq!(p.evict(), Some(id(2)));
    assert_eq!(p.evict(), Some(id(0)));
}

#[test]
fn lru_hit_promotes_only_present_blocks() {
    let mut p = LruFactory::new().with_hit_promotion(true).build(ctx(4));
    p.insert(id(0), SequenceHash::root(10));
    p.insert(id(1), SequenceHash::root(11));
    p.insert(id(2), SequenceHash::root(12));
    p.on_access(SequenceHash::root(10), AccessKind::Hit);
    p.on_access(SequenceHash::root(11), AccessKind::Register); // not a use
    p.on_access(SequenceHash::root(99), AccessKind::Hit); // unknown hash
    assert_eq!(p.evict(), Some(id(1)));
    assert_eq!(p.evict(), Some(id(2)));
    p.on_access(SequenceHash::root(12), AccessKind::Hit); // evicted: forgotten
    assert_eq!(p.evict(), Some(id(0)));
}

#[test]
fn lineage_root_first_release_evicts_leaf_first() {
    let mut p = LineageFactory::new().build(ctx(16));
    let mut chain = vec![SequenceHash::root(0x100)];
    for i in 1..5u64 {
        let parent = chain[chain.len() - 1];
        chain.push(SequenceHash::child_of(parent, 0x100 + i));
    }
    // Root first (what dropping a request's Vec does), then an unrelated single block.
    for (b, &h) in chain.iter().enumerate() {
        p.insert(id(b as u32), h);
    }
    p.insert(id(10), SequenceHash::root(0x999));
    // The chain's leaf is the oldest leaf; each eviction exposes the next parent, which keeps
    // its original (older) insertion tick and so goes before the unrelated block.
    let order: Vec<u32> = std::iter::from_fn(|| p.evict()).map(BlockId::raw).collect();
    assert_eq!(order, vec![4, 3, 2, 1, 0, 10]);
}

#[test]
fn lineage_leaf_first_release_also_links() {
    // Children enter before their parent: the parent must still wait for them.
    let mut p = LineageFactory::new().build(ctx(8));
    let root = SequenceHash::root(7);
    let mid = SequenceHash::child_of(root, 8);
    let leaf = SequenceHash::child_of(mid, 9);
    p.insert(id(2), leaf);
    p.insert(id(1), mid);
    p.insert(id(0), root);
    assert_eq!(p.evict(), Some(id(2)));
    assert_eq!(p.evict(), Some(id(1)));
    assert_eq!(p.evict(), Some(id(0)));
}

#[test]
fn lineage_parent_becomes_evictable_after_its_children_go() {
    let mut p = LineageFactory::new().build(ctx(8));
    let root = SequenceHash::root(1);
    let a = SequenceHash::child_of(root, 2);
    let b = SequenceHash::child_of(root, 3);
    let other = SequenceHash::root(4);
    p.insert(id(0), root);
    p.insert(id(1), a);
    p.insert(id(2), b);
    p.insert(id(3), other);
    // Children resurrected (matched) one by one: the root stays protected until both are gone.
    assert!(p.remove(id(2)));
    assert_eq!(p.evict(), Some(id(1)));
    assert_eq!(
        p.evict(),
        Some(id(0)),
        "last child gone: root is the oldest leaf"
    );
    assert_eq!(p.evict(), Some(id(3)));
    // Removing a parent whose child stays turns the child into a root of its own.
    p.insert(id(0), root);
    p.insert(id(1), a);
    assert!(p.remove(id(0)));
    assert_eq!(p.evict(), Some(id(1)));
    assert_eq!(p.len(), 0);
}

#[test]
fn lineage_fragment_collisions_do_not_panic_or_leak() {
    // 64 blocks at positions 0..2 whose fragments all collide: every position-1 block looks
    // like a child of every position-0 block, and the same hash appears many times.
    let n = 64u32;
    let mut p = LineageFactory::new().build(ctx(n as usize));
    for b in 0..n {
        let pos = b % 2;
        let hash = SequenceHash::new(0x5_0000_0000 | u64::from(b % 3), 0, pos);
        p.insert(id(b), hash);
        if b % 7 == 0 {
            p.insert(id(b), hash); // duplicate insert: re-inserted, not doubled
        }
    }
    assert_eq!(p.len(), n as usize);
    for b in (0..n).step_by(5) {
        assert!(p.remove(id(b)));
    }
    let mut seen = vec![false; n as usize];
    while let Some(v) = p.evict() {
        assert!(
            !std::mem::replace(&mut seen[v.index()], true),
            "{v:?} evicted twice"
        );
    }
    assert_eq!(p.len(), 0);
    assert_eq!(
        seen.iter().filter(|&&s| s).count(),
        (n - n.div_ceil(5)) as usize
    );
}

#[test]
fn multi_lru_frequent_block_outlives_cold_ones() {
    let sketch = Arc::new(FrequencySketch::builder(1024).build().unwrap());
    let shared = MultiLruFactory::with_default_thresholds(sketch).unwrap();
    // The same with per-shard sketches owned by the policy.
    for factory in [shared, MultiLruFactory::for_capacity(64)] {
        frequent_block_outlives_cold_ones(&factory);
    }
}

fn frequent_block_outlives_cold_ones(factory: &MultiLruFactory) {
    let mut p = factory.build(ctx(64));
    let hot = SequenceHash::root(0xBEEF);
    for _ in 0..10 {
        p.on_access(hot, AccessKind::Hit);
    }
    p.insert(id(0), hot); // oldest, but hot (10 >= 8)
    for b in 1..32 {
        let h = SequenceHash::root(u64::from(b));
        p.on_access(h, AccessKind::Register); // one access each: cold
        p.insert(id(b), h);
    }
    for b in 1..32 {
        assert_eq!(p.evict(), Some(id(b)));
    }
    assert_eq!(p.evict(), Some(id(0)));
}

#[test]
fn multi_lru_retiers_on_every_insert() {
    let sketch = Arc::new(FrequencySketch::builder(64).build().unwrap());
    let mut p = MultiLruFactory::new(sketch, [1, 2, 3])
        .unwrap()
        .build(ctx(4));
    let a = SequenceHash::root(1);
    let b = SequenceHash::root(2);
    p.insert(id(0), a); // cold
    p.insert(id(1), b); // cold
    assert!(p.remove(id(0)));
    p.on_access(a, AccessKind::Hit);
    p.insert(id(0), a); // released again, now warm
    assert_eq!(p.evict(), Some(id(1)));
    assert_eq!(p.evict(), Some(id(0)));
}

#[test]
fn multi_lru_rejects_bad_thresholds() {
    let sketch: Arc<dyn FrequencyTracker> = Arc::new(FrequencySketch::builder(64).build().unwrap());
    for bad in [
        [0, 1, 2],
        [3, 3, 15],
        [8, 3, 15],
        [3, 8, 16],
        [1, 2, u32::MAX],
    ] {
        let err = MultiLruFactory::new(sketch.clone(), bad).unwrap_err();
        assert_eq!(
            err,
            EvictionConfigError::InvalidThresholds {
                thresholds: bad,
                max: 15
            }
        );
    }
    let ok = MultiLruFactory::new(sketch, [1, 2, 15]).unwrap();
    assert_eq!(ok.thresholds(), [1, 2, 15]);
    // Without a stated bound, large thresholds are accepted.
    assert!(MultiLruFactory::new(Arc::new(NoopTracker), [10, 100, 1000]).is_ok());
}

#[test]
fn sketch_rejects_bad_config() {
    assert!(matches!(
        FrequencySketch::builder(0).build(),
        Err(SketchConfigError::InvalidCapacity { capacity: 0, .. })
    ));
    let too_big = kvtier_core::MAX_SKETCH_CAPACITY + 1;
    assert!(matches!(
        FrequencySketch::builder(too_big).build(),
        Err(SketchConfigError::InvalidCapacity { .. })
    ));
    assert_eq!(
        FrequencySketch::builder(10)
            .with_sample_size(0)
            .build()
            .unwrap_err(),
        SketchConfigError::ZeroSampleSize
    );
    let s = FrequencySketch::builder(1000).build().unwrap();
    assert_eq!(
        (s.capacity(), s.sample_size(), s.memory_bytes()),
        (1024, 10_000, 8192)
    );
    let tiny = FrequencySketch::builder(1).build().unwrap();
    assert_eq!((tiny.capacity(), tiny.sample_size()), (8, 10));
}

#[test]
fn sketch_counters_saturate_at_15() {
    let s = FrequencySketch::builder(64)
        .with_sample_size(u64::MAX)
        .build()
        .unwrap();
    for _ in 0..100 {
        s.increment(5);
    }
    assert_eq!(s.estimate(5), 15);
    assert_eq!(s.count(5), 15);
    assert_eq!(s.max_count(), 15);
}

#[test]
fn sketch_halving_halves() {
    let s = FrequencySketch::builder(256)
        .with_sample_size(u64::MAX)
        .build()
        .unwrap();
    for key in 0..200u64 {
        for _ in 0..key % 16 {
            s.increment(key);
        }
    }
    let before: Vec<u8> = (0..200).map(|k| s.estimate(k)).collect();
    s.halve();
    for (k, &e) in before.iter().enumerate() {
        assert_eq!(s.estimate(k as u64), e / 2, "key {k}");
    }
    assert_eq!(s.halvings(), 1);
}

#[test]
fn sketch_ages_after_sample_size_increments() {
    let s = FrequencySketch::builder(1024)
        .with_sample_size(100)
        .build()
        .unwrap();
    for key in 0..99u64 {
        s.increment(key);
    }
    assert_eq!(s.halvings(), 0);
    assert_eq!(s.estimate(3), 1);
    s.increment(99);
    assert_eq!(s.halvings(), 1);
    assert_eq!(s.estimate(3), 0, "1 halves to 0");
}

#[test]
fn sketch_keys_sharing_one_block_use_all_its_counters() {
    // Capacity 8 is one 64-byte block: 8 words x 16 counters, and every key lands in it. If
    // only one nibble per word were used (8 counters for 4 hash functions), nearly every key
    // would be over-counted; with all 128 counters most keys see no collision at all.
    let s = FrequencySketch::builder(8)
        .with_sample_size(u64::MAX)
        .build()
        .unwrap();
    let keys = 0..24u64;
    for k in keys.clone() {
        s.increment(k);
    }
    let exact = keys.clone().filter(|&k| s.estimate(k) == 1).count();
    assert!(exact >= 16, "only {exact}/24 keys estimated exactly");
    // Repeated counts keep their ordering despite sharing the block.
    let t = FrequencySketch::builder(8)
        .with_sample_size(u64::MAX)
        .build()
        .unwrap();
    for (k, n) in [(100u64, 2u8), (200, 6), (300, 12)] {
        for _ in 0..n {
            t.increment(k);
        }
    }
    assert!(t.estimate(100) < t.estimate(200) && t.estimate(200) < t.estimate(300));
    assert_eq!(t.estimate(300), 12);
}

#[test]
fn sketch_counts_concurrent_increments_approximately() {
    let s = Arc::new(
        FrequencySketch::builder(4096)
            .with_sample_size(u64::MAX)
            .build()
            .unwrap(),
    );
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for _ in 0..10 {
                    for i in 0..500u64 {
                        // Opposite orders, so the threads rarely race on one shared key (a
                        // race on the same key may drop one of the two increments).
                        let key = if t == 0 { i } else { 499 - i };
                        s.increment(key); // shared keys, both threads
                        s.increment(1_000_000 + t * 1000 + i); // private keys
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Shared keys: true count 20 saturates at 15; races may lose a few updates.
    let shared_low = (0..500).filter(|&k| s.estimate(k) < 12).count();
    assert!(shared_low < 25, "{shared_low} shared keys far below 15");
    // Private keys: true count 10.
    for t in 0..2u64 {
        let private: Vec<u8> = (0..500)
            .map(|k| s.estimate(1_000_000 + t * 1000 + k))
            .collect();
        assert!(private.iter().all(|&e| e >= 8), "thread {t}: {private:?}");
    }
}

#[test]
fn noop_tracker_counts_nothing() {
    let t = NoopTracker;
    t.touch(1);
    assert_eq!(t.count(1), 0);
    assert_eq!(t.max_count(), u32::MAX);
}
