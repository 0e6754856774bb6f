//! Regression: a user eviction policy that panics must not deadlock or corrupt the manager.
//!
//! The bug: policies run under the shard lock. A panic in `on_access` during a match unwound
//! with the matched block's handle still in a local of the lookup loop; dropping that handle
//! takes the same shard lock, so the thread deadlocked on itself. A panic in `insert`, `remove`
//! or `evict` unwound with a slot half-moved (marked inactive but in no policy, counted as
//! handled but never handed out, taken from the pool but never given back), so the pools no
//! longer added up and `reset_inactive_pool` reported blocks in use forever.
//!
//! Policy calls are recorded under the shard lock and applied later, under the policy lock, by
//! the next call that needs the policy's answer (an allocation that evicts, a metrics snapshot,
//! `reset_inactive_pool`) or that fills an event buffer.
//!
//! What must hold: the panic reaches the caller of the manager call that applied it; afterwards
//! every shard allocates, registers, matches and releases from this thread and from another
//! one (under a timeout, so a deadlock fails the test instead of hanging it), the metrics stay
//! consistent, and once everything is released the manager is idle and fully drainable.

mod common;

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::{assert_consistent, assert_idle, chain, register};
use kvtier_core::{
    AccessKind, BlockId, BlockManager, EvictionPolicy, G1, PolicyContext, PolicyFactory,
    SequenceHash,
};

/// Shards of the manager under test.
const SHARDS: usize = 4;
/// Slots of the manager under test.
const BLOCKS: usize = 64;
/// How long one step may take before it counts as a deadlock.
const DEADLINE: Duration = Duration::from_secs(20);

/// Which policy method panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Method {
    None = 0,
    Insert = 1,
    Remove = 2,
    Evict = 3,
    OnAccess = 4,
}

/// Shared switch: the method that panics, and whether it keeps panicking (sticky) or only once;
/// or, when `every` is non-zero, every `every`-th call of any method.
#[derive(Default)]
struct Trigger {
    method: AtomicU8,
    sticky: AtomicU8,
    every: AtomicU32,
    calls: AtomicU32,
}

impl Trigger {
    fn arm(&self, m: Method, sticky: bool) {
        self.sticky.store(u8::from(sticky), Ordering::SeqCst);
        self.method.store(m as u8, Ordering::SeqCst);
    }

    fn disarm(&self) {
        self.method.store(Method::None as u8, Ordering::SeqCst);
    }

    /// Panics if `m` is armed (before the policy changes anything).
    fn check(&self, m: Method) {
        let every = self.every.load(Ordering::Relaxed);
        if every != 0 && self.calls.fetch_add(1, Ordering::Relaxed) % every == every - 1 {
            panic!("policy panics on demand in {m:?} (periodic)");
        }
        if self.method.load(Ordering::SeqCst) == m as u8 {
            if self.sticky.load(Ordering::SeqCst) == 0 {
                self.disarm();
            }
            panic!("policy panics on demand in {m:?}");
        }
    }
}

/// FIFO that panics on demand.
struct Flaky {
    queue: VecDeque<BlockId>,
    trigger: Arc<Trigger>,
}

impl EvictionPolicy for Flaky {
    fn insert(&mut self, block: BlockId, _hash: SequenceHash) {
        self.trigger.check(Method::Insert);
        self.queue.push_back(block);
    }
    fn remove(&mut self, block: BlockId) -> bool {
        self.trigger.check(Method::Remove);
        let before = self.queue.len();
        self.queue.retain(|&b| b != block);
        before != self.queue.len()
    }
    fn evict(&mut self) -> Option<BlockId> {
        self.trigger.check(Method::Evict);
        self.queue.pop_front()
    }
    fn len(&self) -> usize {
        self.queue.len()
    }
    fn on_access(&mut self, _hash: SequenceHash, _kind: AccessKind) {
        self.trigger.check(Method::OnAccess);
    }
}

struct FlakyFactory(Arc<Trigger>);

impl PolicyFactory for FlakyFactory {
    fn name(&self) -> &str {
        "flaky"
    }
    fn build(&self, _: PolicyContext) -> Box<dyn EvictionPolicy> {
        Box::new(Flaky {
            queue: VecDeque::new(),
            trigger: self.0.clone(),
        })
    }
}

fn manager(trigger: &Arc<Trigger>) -> BlockManager<G1> {
    let m = BlockManager::<G1>::builder()
        .with_block_count(BLOCKS)
        .with_shards(SHARDS)
        .with_policy(Arc::new(FlakyFactory(trigger.clone())))
        .build()
        .unwrap();
    assert_eq!(m.shard_count(), SHARDS);
    m
}

/// Runs `f` on its own thread; fails the test if it does not finish within [`DEADLINE`].
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("{what}: no answer within {DEADLINE:?} (deadlock)"),
    }
}

/// Runs `f`, which must panic with the policy's message.
fn expect_policy_panic(what: &str, f: impl FnOnce()) {
    let err = catch_unwind(AssertUnwindSafe(f)).expect_err(what);
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(msg.contains("policy panics on demand"), "{what}: {msg}");
}

/// One root hash per shard (by run tag), plus a two-block chain under each.
fn per_shard_chains(seed: u64) -> Vec<Vec<SequenceHash>> {
    let mut out: Vec<Option<Vec<SequenceHash>>> = vec![None; SHARDS];
    let mut s = seed;
    while out.iter().any(Option::is_none) {
        // Spread the seeds: a root's run tag is the top byte of its hash.
        let c = chain(s.wrapping_mul(0x9E37_79B9_7F4A_7C15), 3);
        let shard = c[0].run_tag() as usize % SHARDS;
        if out[shard].is_none() && c.iter().all(|h| h.run_tag() == c[0].run_tag()) {
            out[shard] = Some(c);
        }
        s += 1;
    }
    out.into_iter().map(Option::unwrap).collect()
}

/// Allocates, registers, matches and releases on every shard; checks the results.
fn exercise(m: &BlockManager<G1>, seed: u64) {
    for c in per_shard_chains(seed) {
        let held = register(m, &c);
        assert_eq!(held.len(), c.len());
        let hit = m.match_blocks(&c);
        assert_eq!(hit.len(), c.len(), "a held chain matches in full");
        m.release_blocks(hit.into_iter().rev());
        m.release_blocks(held.into_iter().rev());
        let again = m.match_blocks(&c);
        assert_eq!(again.len(), c.len(), "a released chain stays cached");
        drop(again);
        assert_consistent(m);
    }
    // Allocating every slot evicts on every shard.
    let all = m
        .allocate_blocks(BLOCKS)
        .expect("every slot is free or evictable");
    drop(all);
    assert_consistent(m);
}

/// Exercises the manager from this thread and from another one, each under the deadline.
fn still_usable(m: &BlockManager<G1>, seed: u64) {
    let here = m.clone();
    within("same-thread use after the panic", move || {
        exercise(&here, seed)
    });
    let there = m.clone();
    within("other-thread use after the panic", move || {
        std::thread::spawn(move || exercise(&there, seed + 1_000))
            .join()
            .expect("other thread")
    });
}

/// Fills the manager with cached chains on every shard and returns them.
fn warm(m: &BlockManager<G1>) -> Vec<Vec<SequenceHash>> {
    let chains = per_shard_chains(1);
    for c in &chains {
        m.release_blocks(register(m, c).into_iter().rev());
    }
    chains
}

/// The manager call `call` made (applied by a metrics snapshot) while `method` panics (once, or on every call while the caller
/// unwinds when `sticky`) must panic, within the deadline.
fn panic_in<F>(m: &BlockManager<G1>, trigger: &Arc<Trigger>, method: Method, sticky: bool, call: F)
where
    F: FnOnce(&BlockManager<G1>) + Send + 'static,
{
    let (m, trigger) = (m.clone(), trigger.clone());
    within(&format!("the panicking call ({method:?})"), move || {
        trigger.arm(method, sticky);
        expect_policy_panic(&format!("{method:?} panic reaches the caller"), || {
            call(&m);
            // Applies the recorded policy calls (if `call` did not already).
            let _ = m.metrics();
        });
        trigger.disarm();
    });
}

/// Warms a manager, makes `call` panic in `method`, then checks the manager.
fn scenario<F>(method: Method, sticky: bool, call: F)
where
    F: FnOnce(&BlockManager<G1>, &[Vec<SequenceHash>]) + Send + 'static,
{
    let trigger = Arc::new(Trigger::default());
    let m = manager(&trigger);
    let chains = warm(&m);
    panic_in(&m, &trigger, method, sticky, move |m| call(m, &chains));
    let after = assert_consistent(&m);
    assert!(after.policy_panics >= 1, "{after:?}");
    still_usable(&m, 100);
    let s = assert_idle(&m);
    assert_eq!(
        s.policy_panics, after.policy_panics,
        "no panic once disarmed"
    );
    let drained = m.reset_inactive_pool().expect("nothing is held");
    assert_eq!(drained.len() as u64, s.inactive_pool_size);
    assert_eq!(m.metrics().reset_pool_size, BLOCKS as u64);
}

#[test]
fn on_access_panic_during_match_does_not_deadlock() {
    scenario(Method::OnAccess, false, |m, chains| {
        let _ = m.match_blocks(&chains[0]);
    });
}

#[test]
fn on_access_panic_during_registration() {
    scenario(Method::OnAccess, false, |m, _| {
        drop(register(m, &chain(77, 3)));
    });
}

#[test]
fn remove_panic_during_match_leaves_no_stuck_handle() {
    scenario(Method::Remove, false, |m, chains| {
        let _ = m.match_blocks(&chains[1]);
    });
}

#[test]
fn insert_panic_on_release_keeps_the_block() {
    scenario(Method::Insert, false, |m, chains| {
        let held = m.match_blocks(&chains[2]);
        assert_eq!(held.len(), 3);
        m.release_blocks(held);
    });
}

#[test]
fn insert_panic_from_a_dropped_handle() {
    scenario(Method::Insert, false, |m, chains| {
        let mut held = m.match_blocks(&chains[3]);
        drop(held.pop());
    });
}

#[test]
fn evict_panic_during_allocation_gives_every_slot_back() {
    scenario(Method::Evict, false, |m, _| {
        // No free slot is left, so the allocation must evict.
        let _all = m.allocate_blocks(BLOCKS).unwrap();
    });
}

#[test]
fn sticky_panics_while_unwinding_do_not_abort() {
    // Every later call panics too, including the releases made while the first panic unwinds
    // through the caller's handles.
    scenario(Method::OnAccess, true, |m, chains| {
        let first = m.match_blocks(&chains[0]);
        drop(first);
    });
    scenario(Method::Insert, true, |m, chains| {
        let held: Vec<_> = chains.iter().flat_map(|c| m.match_blocks(c)).collect();
        drop(held);
    });
    scenario(Method::Remove, true, |m, chains| {
        let held: Vec<_> = chains.iter().flat_map(|c| m.match_blocks(c)).collect();
        drop(held);
    });
    scenario(Method::Evict, true, |m, _| {
        let _all = m.allocate_blocks(BLOCKS).unwrap();
    });
}

#[test]
fn orphans_of_a_replaced_policy_stay_cached_and_evictable() {
    let trigger = Arc::new(Trigger::default());
    let m = manager(&trigger);
    let chains = warm(&m);
    let cached = m.metrics().inactive_pool_size;
    assert_eq!(cached, (SHARDS * 3) as u64);
    // A panic in `on_access` replaces the shard's policy; its cached blocks become orphans.
    trigger.arm(Method::OnAccess, false);
    // Only the first block is matched: the shard's two other cached blocks stay with the old
    // instance.
    let first = chains[0][..1].to_vec();
    panic_in(&m, &trigger, Method::OnAccess, false, move |m| {
        let _ = m.match_blocks(&first);
    });
    let s = assert_idle(&m);
    assert_eq!(s.inactive_pool_size, cached, "the orphans are still cached");
    for c in &chains {
        assert_eq!(m.prefix_len(c), c.len(), "an orphan still matches");
    }
    // Every slot can still be allocated: the orphans are evicted once the new policy is empty.
    let (all, evicted) = m.allocate_blocks_with_evictions(BLOCKS).unwrap();
    assert_eq!(evicted.len() as u64, cached);
    drop(all);
    assert_idle(&m);
    assert_eq!(m.metrics().policy_panics, 1);
}

#[test]
fn a_block_matched_after_a_remove_panic_is_never_evicted_while_held() {
    let trigger = Arc::new(Trigger::default());
    let m = manager(&trigger);
    let chains = warm(&m);
    let target = chains[1].clone();
    panic_in(&m, &trigger, Method::Remove, false, move |m| {
        let _ = m.match_blocks(&target);
    });
    let held = m.match_blocks(&chains[1]);
    assert_eq!(held.len(), 3);
    assert!(held.iter().all(|b| b.use_count() == 1), "one handle each");
    // Take every slot that is free or evictable: a held block must not be among them.
    let n = m.available_blocks();
    assert_eq!(n, BLOCKS - held.len(), "held blocks are not available");
    let all = m.allocate_blocks(n).unwrap();
    for b in &held {
        assert!(m.contains(b.sequence_hash()), "a held block was evicted");
    }
    drop(all);
    drop(held);
    assert_idle(&m);
}

#[test]
fn periodic_panics_under_two_threads_never_deadlock_or_leak() {
    let trigger = Arc::new(Trigger::default());
    let m = manager(&trigger);
    warm(&m);
    trigger.every.store(37, Ordering::Relaxed);
    let workers: Vec<_> = (0..2u64)
        .map(|t| {
            let m = m.clone();
            std::thread::spawn(move || {
                let mut panics = 0;
                for i in 0..400u64 {
                    let c = chain(1 + (t * 7 + i) % 23, 1 + (i % 5) as usize);
                    let r = catch_unwind(AssertUnwindSafe(|| {
                        let hit = m.match_blocks(&c);
                        let tail = &c[hit.len()..];
                        let held = register(&m, tail);
                        m.release_blocks(held.into_iter().rev().chain(hit.into_iter().rev()));
                    }));
                    panics += usize::from(r.is_err());
                }
                panics
            })
        })
        .collect();
    let caught = within("two threads with periodic policy panics", move || {
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .sum::<usize>()
    });
    trigger.every.store(0, Ordering::Relaxed);
    let s = assert_idle(&m);
    assert!(caught > 0, "some requests saw a panic");
    assert!(s.policy_panics >= caught as u64, "{s:?} vs {caught}");
    still_usable(&m, 500);
    m.reset_inactive_pool().expect("nothing is held");
    assert_eq!(m.metrics().reset_pool_size, BLOCKS as u64);
}
