//! The reference model of the manager: one state per slot, the hash index, strong-reference
//! counts, registration generations, the inactive pool in its policy's order ([`Order`]),
//! expected counters and observer events. Plain data, no concurrency: the harness applies each
//! operation to it and to the real manager and compares.

use std::collections::HashMap;

use kvtier_core::{DuplicationPolicy, MetricsSnapshot, SequenceHash};

use crate::BLOCKS;
use crate::common::Event;
use crate::order::{Access, Order};

/// What a slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum St {
    Free,
    Mutable,
    Staged(SequenceHash),
    Primary(SequenceHash),
    Inactive(SequenceHash),
    Duplicate { hash: SequenceHash, of: usize },
}

/// The reference model: what every slot holds and what the counters must read.
pub struct Model {
    pub st: Vec<St>,
    /// Strong references per slot (handles, pins, duplicates pointing at a primary).
    pub refs: Vec<u32>,
    /// Lookup hits on a slot while it was active, reported to the policy when its last
    /// reference goes (just before it becomes inactive).
    pub pending_hits: Vec<u32>,
    /// Registration generation per slot (bumped whenever a slot leaves the registered states).
    pub generation: Vec<u64>,
    pub evict_flag: Vec<bool>,
    pub default_evict: bool,
    pub index: HashMap<SequenceHash, usize>,
    /// Inactive slots, in the policy's eviction order.
    pub order: Order,
    /// Counters (the gauges are derived in `expected_metrics`).
    pub c: MetricsSnapshot,
    pub events: Vec<Event>,
    pub dup: DuplicationPolicy,
}

impl Model {
    pub fn new(dup: DuplicationPolicy, default_evict: bool, order: Order) -> Self {
        Self {
            st: vec![St::Free; BLOCKS],
            refs: vec![0; BLOCKS],
            pending_hits: vec![0; BLOCKS],
            generation: vec![0; BLOCKS],
            evict_flag: vec![default_evict; BLOCKS],
            default_evict,
            index: HashMap::new(),
            order,
            c: MetricsSnapshot::default(),
            events: Vec::new(),
            dup,
        }
    }

    pub fn count(&self, f: impl Fn(&St) -> bool) -> usize {
        self.st.iter().filter(|s| f(s)).count()
    }

    pub fn free(&self) -> usize {
        self.count(|s| *s == St::Free)
    }

    pub fn available(&self) -> usize {
        self.free() + self.order.len()
    }

    pub fn expected_metrics(&self) -> MetricsSnapshot {
        let mut m = self.c;
        m.reset_pool_size = self.free() as u64;
        m.inactive_pool_size = self.order.len() as u64;
        m.inflight_mutable = self.count(|s| matches!(s, St::Mutable | St::Staged(_))) as u64;
        m.inflight_immutable =
            self.count(|s| matches!(s, St::Primary(_) | St::Duplicate { .. })) as u64;
        m.registered = self.index.len() as u64;
        m.total_blocks = BLOCKS as u64;
        m
    }

    /// The hash a registered slot holds.
    pub fn hash_of(&self, slot: usize) -> SequenceHash {
        match self.st[slot] {
            St::Primary(h) | St::Inactive(h) | St::Duplicate { hash: h, .. } => h,
            other => panic!("slot {slot} is not registered: {other:?}"),
        }
    }

    /// Takes a strong reference on a primary, resurrecting it if inactive.
    pub fn acquire(&mut self, p: usize) {
        if let St::Inactive(h) = self.st[p] {
            assert_eq!(self.refs[p], 0);
            self.order.remove(p);
            self.st[p] = St::Primary(h);
            self.c.resurrections += 1;
        }
        assert!(matches!(self.st[p], St::Primary(_)), "{:?}", self.st[p]);
        self.refs[p] += 1;
    }

    /// A lookup found primary `p` (holding `h`) and takes a reference on it; with `touch` the
    /// hit is reported to the policy: at once if the block was not active, otherwise counted
    /// and reported when its last reference goes.
    pub fn lookup_hit(&mut self, p: usize, h: SequenceHash, touch: bool) {
        let active = self.refs[p] > 0;
        self.acquire(p);
        if touch {
            if active {
                self.pending_hits[p] += 1;
            } else {
                self.order.access(h, Access::Hit);
            }
        }
    }

    pub fn release(&mut self, slot: usize) {
        assert!(self.refs[slot] > 0, "release of unreferenced slot {slot}");
        self.refs[slot] -= 1;
        if self.refs[slot] > 0 {
            return;
        }
        if let St::Primary(h) = self.st[slot] {
            for _ in 0..std::mem::take(&mut self.pending_hits[slot]) {
                self.order.access(h, Access::Hit);
            }
        }
        match self.st[slot] {
            St::Primary(h) if self.evict_flag[slot] => {
                self.index.remove(&h);
                self.free_slot(slot);
                self.c.released_to_reset += 1;
                self.events.push(Event::Removed(h));
            }
            St::Primary(h) => {
                self.st[slot] = St::Inactive(h);
                self.order.insert(slot, h);
            }
            St::Duplicate { of, .. } => {
                self.free_slot(slot);
                self.c.released_to_reset += 1;
                self.release(of);
            }
            other => panic!("last release of slot {slot} in state {other:?}"),
        }
    }

    /// A registered slot leaves the registered states for the reset pool.
    pub fn free_slot(&mut self, slot: usize) {
        self.st[slot] = St::Free;
        self.generation[slot] += 1;
        self.evict_flag[slot] = self.default_evict;
    }

    /// Evicts the inactive block holding `h`; returns its slot (now `Mutable` or `Free`).
    pub fn evict(&mut self, h: SequenceHash, to: St) -> usize {
        let slot = *self
            .index
            .get(&h)
            .unwrap_or_else(|| panic!("evicted {h:?} not registered"));
        assert_eq!(
            self.st[slot],
            St::Inactive(h),
            "evicted a block that is not inactive"
        );
        self.order.remove(slot);
        self.index.remove(&h);
        self.free_slot(slot);
        self.st[slot] = to;
        self.c.evictions += 1;
        self.events.push(Event::Removed(h));
        slot
    }

    /// Registers staged `slot` with `h`; returns the slot the returned handle refers to.
    pub fn register(&mut self, slot: usize, h: SequenceHash) -> usize {
        assert_eq!(self.st[slot], St::Staged(h));
        self.c.registrations += 1;
        match self.index.get(&h).copied() {
            None => {
                self.index.insert(h, slot);
                self.st[slot] = St::Primary(h);
                self.refs[slot] = 1;
                self.c.primaries_created += 1;
                self.events.push(Event::Registered(h));
                self.order.access(h, Access::Register);
                slot
            }
            Some(p) => {
                self.acquire(p);
                self.order.access(h, Access::Hit);
                match self.dup {
                    DuplicationPolicy::Reject => {
                        self.st[slot] = St::Free;
                        self.c.dedups += 1;
                        p
                    }
                    _ => {
                        self.st[slot] = St::Duplicate { hash: h, of: p };
                        self.refs[slot] = 1;
                        self.c.duplicates += 1;
                        slot
                    }
                }
            }
        }
    }

    /// Checks the model's own invariants.
    pub fn self_check(&self) {
        for (slot, st) in self.st.iter().enumerate() {
            match *st {
                St::Primary(h) => {
                    assert!(self.refs[slot] > 0);
                    assert_eq!(self.index.get(&h), Some(&slot));
                }
                St::Inactive(h) => {
                    assert_eq!(self.refs[slot], 0);
                    assert!(self.order.contains(slot));
                    assert_eq!(self.index.get(&h), Some(&slot));
                }
                St::Duplicate { hash, of } => {
                    assert!(self.refs[slot] > 0);
                    assert_eq!(self.st[of], St::Primary(hash));
                }
                _ => assert_eq!(self.refs[slot], 0),
            }
        }
    }
}
