//! Reference models of the eviction order of every policy the state-machine test runs, written
//! from each policy's documented rule (its module docs), not from its code: plain maps and
//! queues, rebuilt by brute force where that is simplest.
//!
//! - `fifo`, `lru`: least recently released first (they coincide on manager traffic: a hit on
//!   an inactive block takes it out of the pool, so LRU's promotion never reorders the pool).
//! - `multi_lru`: four levels by the access count `f` at insert (`f < 3`, `< 8`, `< 15`, else);
//!   the victim is the oldest insert of the coldest non-empty level.
//! - `freqlease`: a chain-tail list and four frequency tiers (`f <= 1`, `2`, `3..=7`, `>= 8`);
//!   the victim is the oldest tail if any, else the tier front with the smallest
//!   `release tick + (tier - 1) * capacity`, colder tier on ties. A block released seen at most
//!   once whose history is known is a tail when no block named it as parent since it was
//!   registered; it is demoted to the tail list only while tails come back at most half as
//!   often as the other once-seen blocks (Laplace-smoothed rates).
//! - `lineage`: among inactive blocks with no inactive child, the one inserted first.
//!
//! Access counts are exact (the sketches are sized far above the handful of hashes the test
//! uses, and age only after thousands of increments), saturating at 15. The models assume no
//! two hashes of the pool collide in the policies' internal tables; the pool is fixed, so a
//! collision would show up as a deterministic failure, not a flake.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use kvtier_core::{
    FifoFactory, FreqLeaseFactory, LineageFactory, LruFactory, MultiLruFactory, PolicyFactory,
    SequenceHash,
};

/// Eviction policies the state-machine test builds managers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Fifo,
    Lru,
    FreqLease,
    MultiLru,
    Lineage,
}

impl Policy {
    /// The factory of a manager of `blocks` slots.
    pub fn factory(self, blocks: usize) -> Arc<dyn PolicyFactory> {
        match self {
            Policy::Fifo => Arc::new(FifoFactory::new()),
            Policy::Lru => Arc::new(LruFactory::new().with_hit_promotion(true)),
            Policy::FreqLease => Arc::new(FreqLeaseFactory::new()),
            Policy::MultiLru => Arc::new(MultiLruFactory::for_capacity(blocks)),
            Policy::Lineage => Arc::new(LineageFactory::new()),
        }
    }

    /// The reference model of a one-shard manager of `blocks` slots; `parents` maps each hash of
    /// the pool to its parent.
    pub fn model(self, blocks: usize, parents: HashMap<SequenceHash, SequenceHash>) -> Order {
        match self {
            Policy::Fifo | Policy::Lru => Order::Release(VecDeque::new()),
            Policy::MultiLru => Order::MultiLru {
                counts: Counts::default(),
                levels: Default::default(),
            },
            Policy::FreqLease => Order::FreqLease(FreqLease::new(blocks as u64, parents)),
            Policy::Lineage => Order::Lineage {
                parents,
                pool: Vec::new(),
                now: 0,
            },
        }
    }
}

/// The kind of access the manager reports to its policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A lookup or a registration found the hash registered.
    Hit,
    /// A new primary was registered.
    Register,
}

/// Exact access counts per hash, saturating at 15 (a 4-bit sketch counter).
#[derive(Clone, Debug, Default)]
pub struct Counts(HashMap<SequenceHash, u8>);

impl Counts {
    fn touch(&mut self, h: SequenceHash) {
        let c = self.0.entry(h).or_insert(0);
        *c = (*c + 1).min(15);
    }

    fn get(&self, h: SequenceHash) -> u8 {
        self.0.get(&h).copied().unwrap_or(0)
    }
}

/// The inactive pool of the model, in each policy's order.
#[derive(Clone, Debug)]
pub enum Order {
    /// `fifo` / `lru`: slots, least recently released first.
    Release(VecDeque<usize>),
    /// `multi_lru`: four levels of (slot) in insertion order.
    MultiLru {
        counts: Counts,
        levels: [VecDeque<usize>; 4],
    },
    /// `freqlease`.
    FreqLease(FreqLease),
    /// `lineage`: (slot, hash, insertion tick).
    Lineage {
        parents: HashMap<SequenceHash, SequenceHash>,
        pool: Vec<(usize, SequenceHash, u64)>,
        now: u64,
    },
}

impl Order {
    /// `slot`, holding `h`, became inactive.
    pub fn insert(&mut self, slot: usize, h: SequenceHash) {
        match self {
            Order::Release(q) => q.push_back(slot),
            Order::MultiLru { counts, levels } => {
                let level = [3u8, 8, 15]
                    .iter()
                    .take_while(|&&t| counts.get(h) >= t)
                    .count();
                levels[level].push_back(slot);
            }
            Order::FreqLease(f) => f.insert(slot, h),
            Order::Lineage { pool, now, .. } => {
                *now += 1;
                pool.push((slot, h, *now));
            }
        }
    }

    /// `slot` left the pool (resurrected or evicted).
    pub fn remove(&mut self, slot: usize) {
        match self {
            Order::Release(q) => q.retain(|&s| s != slot),
            Order::MultiLru { levels, .. } => {
                levels.iter_mut().for_each(|l| l.retain(|&s| s != slot))
            }
            Order::FreqLease(f) => f
                .lists
                .iter_mut()
                .for_each(|l| l.retain(|&(s, _)| s != slot)),
            Order::Lineage { pool, .. } => pool.retain(|&(s, _, _)| s != slot),
        }
    }

    /// The policy's next victim, taken out of the pool.
    pub fn evict(&mut self) -> Option<usize> {
        let victim = match self {
            Order::Release(q) => q.front().copied(),
            Order::MultiLru { levels, .. } => levels.iter().find_map(|l| l.front().copied()),
            Order::FreqLease(f) => f.victim(),
            Order::Lineage { parents, pool, .. } => pool
                .iter()
                .filter(|(_, h, _)| !pool.iter().any(|(_, c, _)| parents.get(c) == Some(h)))
                .min_by_key(|&&(_, _, tick)| tick)
                .map(|&(s, _, _)| s),
        }?;
        self.remove(victim);
        Some(victim)
    }

    /// The manager told the policy about an access to `h`.
    pub fn access(&mut self, h: SequenceHash, kind: Access) {
        match self {
            Order::Release(_) | Order::Lineage { .. } => {}
            Order::MultiLru { counts, .. } => counts.touch(h),
            Order::FreqLease(f) => f.access(h, kind),
        }
    }

    /// Inactive blocks.
    pub fn len(&self) -> usize {
        match self {
            Order::Release(q) => q.len(),
            Order::MultiLru { levels, .. } => levels.iter().map(VecDeque::len).sum(),
            Order::FreqLease(f) => f.lists.iter().map(VecDeque::len).sum(),
            Order::Lineage { pool, .. } => pool.len(),
        }
    }

    /// Whether `slot` is in the pool.
    pub fn contains(&self, slot: usize) -> bool {
        match self {
            Order::Release(q) => q.contains(&slot),
            Order::MultiLru { levels, .. } => levels.iter().any(|l| l.contains(&slot)),
            Order::FreqLease(f) => f.lists.iter().any(|l| l.iter().any(|&(s, _)| s == slot)),
            Order::Lineage { pool, .. } => pool.iter().any(|&(s, _, _)| s == slot),
        }
    }

    /// The whole eviction order from now on (the pool itself is left unchanged).
    pub fn drain_order(&self) -> Vec<usize> {
        let mut o = self.clone();
        std::iter::from_fn(|| o.evict()).collect()
    }
}

/// What `freqlease` remembers about one hash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct History {
    /// Some block named this one as its parent since it was registered.
    has_child: bool,
    /// Released seen at most once as a chain tail / as a block with a child; not back since.
    released_tail: bool,
    released_once: bool,
}

/// The `freqlease` model: five lists of (slot, release tick), front = oldest.
#[derive(Clone, Debug)]
pub struct FreqLease {
    parents: HashMap<SequenceHash, SequenceHash>,
    counts: Counts,
    /// `None`-valued hashes are unknown (never registered, accessed as a parent or released).
    history: HashMap<SequenceHash, History>,
    tails_out: u64,
    tails_back: u64,
    once_out: u64,
    once_back: u64,
    now: u64,
    /// One lease per tier: the shard's capacity.
    lease: u64,
    lists: [VecDeque<(usize, u64)>; 5],
}

impl FreqLease {
    fn new(capacity: u64, parents: HashMap<SequenceHash, SequenceHash>) -> Self {
        Self {
            parents,
            counts: Counts::default(),
            history: HashMap::new(),
            tails_out: 0,
            tails_back: 0,
            once_out: 0,
            once_back: 0,
            now: 0,
            lease: capacity,
            lists: Default::default(),
        }
    }

    fn tails_are_worse(&self) -> bool {
        // tails_back / tails_out <= once_back / once_out / 2, smoothed: (b + 1) / (o + 2).
        2 * (self.tails_back + 1) * (self.once_out + 2)
            < (self.once_back + 1) * (self.tails_out + 2)
    }

    fn insert(&mut self, slot: usize, h: SequenceHash) {
        let f = self.counts.get(h);
        let mut list = match f {
            0..=1 => 1,
            2 => 2,
            3..=7 => 3,
            _ => 4,
        };
        if f <= 1
            && let Some(known) = self.history.get(&h).copied()
        {
            let mut next = known;
            if known.has_child {
                self.once_out += 1;
                next.released_once = true;
            } else {
                self.tails_out += 1;
                next.released_tail = true;
                if self.tails_are_worse() {
                    list = 0;
                }
            }
            self.history.insert(h, next);
        }
        self.now += 1;
        self.lists[list].push_back((slot, self.now));
    }

    fn victim(&self) -> Option<usize> {
        if let Some(&(s, _)) = self.lists[0].front() {
            return Some(s);
        }
        (1..5)
            .filter_map(|l| {
                let &(s, tick) = self.lists[l].front()?;
                Some((tick + self.lease * (l as u64 - 1), l, s))
            })
            .min()
            .map(|(_, _, s)| s)
    }

    fn access(&mut self, h: SequenceHash, kind: Access) {
        self.counts.touch(h);
        if let Some(hist) = self.history.get_mut(&h)
            && (hist.released_tail || hist.released_once)
        {
            if hist.released_tail {
                self.tails_back += 1;
            } else {
                self.once_back += 1;
            }
            hist.released_tail = false;
            hist.released_once = false;
        }
        if let Some(&p) = self.parents.get(&h) {
            self.history.entry(p).or_default().has_child = true;
        }
        if kind == Access::Register {
            self.history.insert(h, History::default());
        }
    }
}
