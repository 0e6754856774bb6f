//! Hits on active blocks: counted in the block and reported to the policy in one `on_hits` call
//! when its last handle goes, and only to policies whose `hit_signals` ask for them.
//!
//! - `on_hits(h, n)` of every built-in frequency policy is exactly `n` calls of
//!   `on_access(h, Hit)`: random sequences drive two instances, one each way, and their victims
//!   must agree (the sketch sizes are small, so counters saturate and age along the way).
//! - A recording policy sees, for a block matched `k` times while held, one `on_hits(h, k)` just
//!   before the block's `insert`, and no per-hit `on_access`; resurrection hits still reach
//!   `on_access`; a factory that asks for no hits gets none.

use std::sync::{Arc, Mutex};

use kvtier_core::{
    AccessKind, BlockId, BlockManager, EvictionPolicy, FreqLeaseFactory, G1, HitSignals,
    MultiLruFactory, PolicyContext, PolicyFactory, SequenceHash,
};
use proptest::prelude::*;

fn ctx(total_blocks: usize) -> PolicyContext {
    PolicyContext {
        total_blocks,
        shard: 0,
        shards: 1,
    }
}

#[derive(Clone, Debug)]
enum Op {
    Insert(u32, u8),
    Remove(u32),
    Evict,
    Hits(u8, u32),
    Register(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..16u32, any::<u8>()).prop_map(|(b, h)| Op::Insert(b, h)),
        1 => (0..16u32).prop_map(Op::Remove),
        2 => Just(Op::Evict),
        3 => (any::<u8>(), 0..40u32).prop_map(|(h, n)| Op::Hits(h, n)),
        1 => any::<u8>().prop_map(Op::Register),
    ]
}

/// A chained hash for selector `h` (positions and parents vary, so lineage flags are used).
fn hash(h: u8) -> SequenceHash {
    let root = SequenceHash::root(u64::from(h % 8));
    if h < 8 {
        root
    } else {
        SequenceHash::child_of(root, u64::from(h))
    }
}

/// Runs `ops` on `batched` (hits through `on_hits`) and `single` (one `on_access` per hit);
/// every victim and length must agree.
fn same_order(factory: &dyn PolicyFactory, ops: &[Op]) {
    let mut batched = factory.build(ctx(16));
    let mut single = factory.build(ctx(16));
    for op in ops {
        match *op {
            Op::Insert(b, h) => {
                batched.insert(BlockId::new(b), hash(h));
                single.insert(BlockId::new(b), hash(h));
            }
            Op::Remove(b) => {
                assert_eq!(
                    batched.remove(BlockId::new(b)),
                    single.remove(BlockId::new(b))
                );
            }
            Op::Evict => assert_eq!(batched.evict(), single.evict()),
            Op::Hits(h, n) => {
                batched.on_hits(hash(h), n);
                for _ in 0..n {
                    single.on_access(hash(h), AccessKind::Hit);
                }
            }
            Op::Register(h) => {
                batched.on_access(hash(h), AccessKind::Register);
                single.on_access(hash(h), AccessKind::Register);
            }
        }
        assert_eq!(batched.len(), single.len());
    }
    while let Some(v) = single.evict() {
        assert_eq!(batched.evict(), Some(v));
    }
    assert_eq!(batched.evict(), None);
}

proptest! {
    #[test]
    fn freqlease_on_hits_is_n_hits(ops in prop::collection::vec(op(), 1..400)) {
        same_order(&FreqLeaseFactory::new().with_sketch_keys_per_block(1), &ops);
    }

    #[test]
    fn multi_lru_on_hits_is_n_hits(ops in prop::collection::vec(op(), 1..400)) {
        same_order(&MultiLruFactory::for_capacity(16), &ops);
    }
}

/// What a recording policy was told, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Insert(SequenceHash),
    Remove,
    Hit(SequenceHash),
    Hits(SequenceHash, u32),
}

/// FIFO that records its calls (registrations are not recorded).
struct Recording {
    order: Vec<BlockId>,
    log: Arc<Mutex<Vec<Call>>>,
}

impl EvictionPolicy for Recording {
    fn insert(&mut self, block: BlockId, hash: SequenceHash) {
        self.order.push(block);
        self.log.lock().unwrap().push(Call::Insert(hash));
    }
    fn remove(&mut self, block: BlockId) -> bool {
        let before = self.order.len();
        self.order.retain(|&b| b != block);
        self.log.lock().unwrap().push(Call::Remove);
        before != self.order.len()
    }
    fn evict(&mut self) -> Option<BlockId> {
        (!self.order.is_empty()).then(|| self.order.remove(0))
    }
    fn len(&self) -> usize {
        self.order.len()
    }
    fn on_access(&mut self, hash: SequenceHash, kind: AccessKind) {
        if kind == AccessKind::Hit {
            self.log.lock().unwrap().push(Call::Hit(hash));
        }
    }
    fn on_hits(&mut self, hash: SequenceHash, count: u32) {
        self.log.lock().unwrap().push(Call::Hits(hash, count));
    }
}

struct RecordingFactory {
    log: Arc<Mutex<Vec<Call>>>,
    signals: HitSignals,
}

impl PolicyFactory for RecordingFactory {
    fn name(&self) -> &str {
        "recording"
    }
    fn build(&self, _ctx: PolicyContext) -> Box<dyn EvictionPolicy> {
        Box::new(Recording {
            order: Vec::new(),
            log: self.log.clone(),
        })
    }
    fn hit_signals(&self) -> HitSignals {
        self.signals
    }
}

/// Registers `h`, matches it `active_hits` times while the registration handle is held, drops
/// everything, then resurrects it once; returns the policy's calls (pending events applied).
fn calls(signals: HitSignals, shards: usize, active_hits: usize) -> Vec<Call> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let m = BlockManager::<G1>::builder()
        .with_block_count(8)
        .with_shards(shards)
        .with_policy(Arc::new(RecordingFactory {
            log: log.clone(),
            signals,
        }))
        .build()
        .unwrap();
    let h = SequenceHash::root(42);
    let block = m.allocate_blocks(1).unwrap().pop().unwrap();
    let held = m
        .register_block(block.stage(h, m.block_size()).unwrap())
        .unwrap();
    let mut matched = Vec::new();
    for _ in 0..active_hits {
        matched.extend(m.match_blocks(&[h]));
    }
    drop(held);
    drop(matched);
    drop(m.match_blocks(&[h]));
    let _ = m.metrics(); // applies the buffered events
    let out = log.lock().unwrap().clone();
    drop(m);
    out
}

#[test]
fn active_hits_reach_the_policy_once_before_insert() {
    let h = SequenceHash::root(42);
    for shards in [1, 8] {
        assert_eq!(
            calls(HitSignals::All, shards, 5),
            vec![
                Call::Hits(h, 5),
                Call::Insert(h),
                Call::Remove,
                Call::Hit(h),
                Call::Insert(h),
            ],
            "{shards} shards"
        );
        // No active hit: no `on_hits` call at all.
        assert_eq!(
            calls(HitSignals::All, shards, 0),
            vec![Call::Insert(h), Call::Remove, Call::Hit(h), Call::Insert(h)],
        );
        assert_eq!(
            calls(HitSignals::Inactive, shards, 5),
            vec![Call::Insert(h), Call::Remove, Call::Hit(h), Call::Insert(h)],
        );
        assert_eq!(
            calls(HitSignals::None, shards, 5),
            vec![Call::Insert(h), Call::Remove, Call::Insert(h)],
        );
    }
}
