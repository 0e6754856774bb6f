//! Fixtures shared by the block-manager test files: manager construction, hash chains, an
//! allocate-stage-register helper, a recording observer, a tiny deterministic RNG and the
//! counter identities every quiescent manager must satisfy.
//!
//! Each test crate uses a different subset, hence the `dead_code` allowance.

#![allow(
    dead_code,
    reason = "each test crate uses a different subset of the fixtures"
)]

use std::sync::Arc;

use kvtier_core::{
    BlockManager, BlockObserver, CompleteBlock, DuplicationPolicy, FifoFactory, G1, ImmutableBlock,
    LruFactory, MetricsSnapshot, PolicyFactory, SequenceHash, Tier,
};
use parking_lot::Mutex;

/// Eviction policies the tests build managers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// `FifoFactory`.
    Fifo,
    /// `LruFactory` with hit promotion on.
    Lru,
}

impl Policy {
    pub fn factory(self) -> Arc<dyn PolicyFactory> {
        match self {
            Policy::Fifo => Arc::new(FifoFactory::new()),
            Policy::Lru => Arc::new(LruFactory::new().with_hit_promotion(true)),
        }
    }
}

/// A G1 manager with `blocks` slots of the default block size.
pub fn manager(
    blocks: usize,
    shards: usize,
    policy: Policy,
    dup: DuplicationPolicy,
) -> BlockManager<G1> {
    BlockManager::<G1>::builder()
        .with_block_count(blocks)
        .with_shards(shards)
        .with_policy(policy.factory())
        .with_duplication_policy(dup)
        .build()
        .expect("valid manager config")
}

/// A single-shard FIFO manager (exact, predictable eviction order).
pub fn fifo(blocks: usize, dup: DuplicationPolicy) -> BlockManager<G1> {
    manager(blocks, 1, Policy::Fifo, dup)
}

/// `len` chained sequence hashes starting from root `seed`.
pub fn chain(seed: u64, len: usize) -> Vec<SequenceHash> {
    let mut out = Vec::with_capacity(len);
    let mut cur = SequenceHash::root(seed);
    for i in 0..len {
        if i > 0 {
            cur = SequenceHash::child_of(cur, seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
        }
        out.push(cur);
    }
    out
}

/// Allocates one block per hash and stages it.
pub fn staged<T: Tier>(m: &BlockManager<T>, hashes: &[SequenceHash]) -> Vec<CompleteBlock<T>> {
    m.allocate_blocks(hashes.len())
        .expect("allocation")
        .into_iter()
        .zip(hashes)
        .map(|(b, &h)| b.stage(h, m.block_size()).expect("stage"))
        .collect()
}

/// Allocates, stages and registers one block per hash.
pub fn register<T: Tier>(m: &BlockManager<T>, hashes: &[SequenceHash]) -> Vec<ImmutableBlock<T>> {
    m.register_blocks(staged(m, hashes)).expect("own blocks")
}

/// What an observer saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Registered(SequenceHash),
    Removed(SequenceHash),
}

/// An observer that records every event in order.
#[derive(Default)]
pub struct Recorder {
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    /// Takes the events recorded so far.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock())
    }
}

impl BlockObserver for Recorder {
    fn registered(&self, hash: SequenceHash) {
        self.events.lock().push(Event::Registered(hash));
    }

    fn removed(&self, hashes: &[SequenceHash]) {
        self.events
            .lock()
            .extend(hashes.iter().map(|&h| Event::Removed(h)));
    }
}

/// The pool gauges and counter identities that hold whenever no thread is using `m`.
pub fn assert_consistent<T: Tier>(m: &BlockManager<T>) -> MetricsSnapshot {
    let s = m.metrics();
    let total = m.total_blocks() as u64;
    assert_eq!(s.total_blocks, total);
    assert_eq!(
        s.reset_pool_size + s.inactive_pool_size + s.inflight_mutable + s.inflight_immutable,
        total,
        "every slot is in exactly one pool: {s:?}"
    );
    assert_eq!(
        m.available_blocks() as u64,
        s.reset_pool_size + s.inactive_pool_size,
        "available = free + inactive: {s:?}"
    );
    assert_eq!(
        s.registrations,
        s.primaries_created + s.duplicates + s.dedups,
        "every registration has one outcome: {s:?}"
    );
    assert!(s.allocations_from_reset <= s.allocations, "{s:?}");
    assert!(
        s.registered >= s.inactive_pool_size,
        "inactive blocks are registered: {s:?}"
    );
    assert!(s.match_blocks_returned <= s.match_hashes_requested, "{s:?}");
    assert!(s.scan_blocks_returned <= s.scan_hashes_requested, "{s:?}");
    s
}

/// Asserts the manager is idle: nothing held, every slot free or cached.
pub fn assert_idle<T: Tier>(m: &BlockManager<T>) -> MetricsSnapshot {
    let s = assert_consistent(m);
    assert_eq!(s.inflight_mutable, 0, "{s:?}");
    assert_eq!(s.inflight_immutable, 0, "{s:?}");
    assert_eq!(s.registered, s.inactive_pool_size, "{s:?}");
    assert_eq!(m.available_blocks(), m.total_blocks(), "{s:?}");
    s
}

/// SplitMix64: a tiny deterministic generator for the stress tests.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent / 100`.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}
