//! The `lineage` backend: evict leaves first, so a cached prefix outlives its extensions.
//!
//! Blocks form trees through their sequence hashes: `c` is a child of `p` when
//! [`SequenceHash::may_be_parent_of`] holds, i.e. `c` sits one position deeper and its parent
//! fragment equals the low 32 bits of `p`'s chained hash. Among the blocks in this pool only
//! *leaves* — blocks with no child in the pool — are evictable, and among leaves the one that
//! entered the pool first goes. Evicting or removing a block's last child in the pool makes the
//! block a leaf again, at its original place in insertion order (it keeps its insertion tick).
//! So releasing a request root-first still gives its blocks up leaf-first, unlike `lru`/`fifo`
//! which would evict the root and orphan the rest of the chain.
//!
//! ```text
//!   pool:  A(t1) -> B(t2) -> C(t3)      D(t4)         leaves: C, D   victim: C (oldest leaf)
//!   then:  A(t1) -> B(t2)               D(t4)         leaves: B, D   victim: B
//! ```
//!
//! # What the guarantee covers
//! The policy only sees the inactive pool. The rule is: *no block is evicted while one of its
//! descendants is cached in this pool, connected to it through cached blocks.* Blocks that are
//! active (held by a request) are not in the pool and are protected by the manager anyway; if a
//! block's parent is active or gone, the block is the root of its own subtree here. A child
//! whose parent was evicted (possible only after the child left the pool and came back) cannot
//! be reached by prefix matching and is treated as a root. The rule is only meaningful over *all*
//! blocks, so the factory says it needs one instance for every block; a `BlockManager` always
//! builds exactly that, at any shard count.
//!
//! # Structure and collisions
//! One hash map indexes the pool by a `(position, 32-bit fragment)` key. The entry for key `k`
//! heads two intrusive lists through per-block links: the blocks whose *own* key is `k`
//! (position, low 32 bits of chained hash) and the blocks whose *parent* key is `k`
//! (position - 1, parent fragment) — i.e. the children of the blocks keyed `k`. Because these
//! are lists, several blocks may share a key: a fragment collision (or a duplicate hash) never
//! panics and never leaks a block; at worst an unrelated block counts as a child and its
//! "parent" waits a little longer. A block is a leaf exactly when its key has no children
//! list; a block with the highest position in the pool is always a leaf, so `evict` finds a
//! victim whenever the pool is non-empty.
//!
//! Leaves are ordered by insertion tick in two parts: a block that is a leaf when it enters
//! carries the newest tick, so it is appended to an intrusive FIFO list (O(1)); a block that
//! becomes a leaf *again* (older tick) goes to a small indexed binary min-heap. The victim is
//! the older of the two fronts. Insert and evict cost two hash-map operations (one for a root)
//! plus O(1) list work, or O(log k) for the k re-exposed parents waiting in the heap. The map,
//! list and heap are reserved for every block up front: no allocation per operation.
//!
//! # Invariants
//! - The leaf list and heap together hold exactly the present blocks whose key has no children;
//!   the list is sorted by tick.
//! - Every present block is in the own-key list of its key and, unless it is a root (position
//!   0), in the children list of its parent key; absent blocks are in no list. A map entry
//!   exists exactly while one of its two lists is non-empty.

use hashbrown::hash_map::Entry;

use super::list::{IndexLists, NIL};
use super::{EvictionPolicy, HitSignals, PolicyContext, PolicyFactory};
use crate::{BlockId, SeqHashMap, SequenceHash};

/// Builds `lineage` policies: leaves first, oldest leaf first (see the module docs).
///
/// Name: `"lineage"`. Needs one instance for every block
/// ([`PolicyFactory::requires_single_shard`]), which a `BlockManager` builds at any shard count.
///
/// # Examples
///
/// ```
/// use kvtier_core::{BlockId, LineageFactory, PolicyContext, PolicyFactory, SequenceHash};
///
/// let ctx = PolicyContext { total_blocks: 4, shard: 0, shards: 1 };
/// let mut policy = LineageFactory::new().build(ctx);
/// let root = SequenceHash::root(0xA);
/// let child = SequenceHash::child_of(root, 0xB);
/// policy.insert(BlockId::new(0), root); // released root-first
/// policy.insert(BlockId::new(1), child);
/// assert_eq!(policy.evict(), Some(BlockId::new(1))); // the leaf goes first
/// assert_eq!(policy.evict(), Some(BlockId::new(0)));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct LineageFactory;

impl LineageFactory {
    /// A lineage factory (it has no settings).
    pub const fn new() -> Self {
        Self
    }
}

impl PolicyFactory for LineageFactory {
    fn name(&self) -> &str {
        "lineage"
    }

    fn build(&self, ctx: PolicyContext) -> Box<dyn EvictionPolicy> {
        Box::new(LineagePolicy::new(ctx.total_blocks))
    }

    fn requires_single_shard(&self) -> bool {
        true
    }

    /// Lineage orders by release and by the chain structure, never by hits.
    fn hit_signals(&self) -> HitSignals {
        HitSignals::None
    }
}

/// Per-block state.
#[derive(Clone, Copy, Debug)]
struct Node {
    hash: SequenceHash,
    /// Insertion order; unique among present blocks.
    tick: u64,
    present: bool,
    /// Links in the children list of this block's parent key.
    sib: Links,
    /// Links in the own-key list of this block's key.
    same: Links,
}

#[derive(Clone, Copy, Debug)]
struct Links {
    prev: u32,
    next: u32,
}

const UNLINKED: Links = Links {
    prev: NIL,
    next: NIL,
};

const ABSENT: Node = Node {
    hash: SequenceHash::from_u128(0),
    tick: 0,
    present: false,
    sib: UNLINKED,
    same: UNLINKED,
};

/// The two list heads of one key.
#[derive(Clone, Copy, Debug)]
struct KeyEntry {
    /// First present block whose own key is this key.
    same: u32,
    /// First present block whose parent key is this key.
    children: u32,
}

const EMPTY_ENTRY: KeyEntry = KeyEntry {
    same: NIL,
    children: NIL,
};

/// Which per-block links a keyed list uses.
#[derive(Clone, Copy)]
enum Chain {
    /// Children lists (through `Node::sib`).
    Siblings,
    /// Own-key lists (through `Node::same`).
    SameKey,
}

impl Chain {
    #[inline]
    fn links(self, node: &mut Node) -> &mut Links {
        match self {
            Chain::Siblings => &mut node.sib,
            Chain::SameKey => &mut node.same,
        }
    }
}

/// Pushes `id` at the front of the list starting at `head`.
#[inline]
fn list_push(nodes: &mut [Node], chain: Chain, head: &mut u32, id: u32) {
    let next = std::mem::replace(head, id);
    *chain.links(&mut nodes[id as usize]) = Links { prev: NIL, next };
    if next != NIL {
        chain.links(&mut nodes[next as usize]).prev = id;
    }
}

/// Unlinks `id` from the list starting at `head`.
#[inline]
fn list_unlink(nodes: &mut [Node], chain: Chain, head: &mut u32, id: u32) {
    let Links { prev, next } = std::mem::replace(chain.links(&mut nodes[id as usize]), UNLINKED);
    if next != NIL {
        chain.links(&mut nodes[next as usize]).prev = prev;
    }
    if prev != NIL {
        chain.links(&mut nodes[prev as usize]).next = next;
    } else {
        *head = next;
    }
}

/// A block's own key: `(position, low 32 bits of its chained hash)`.
#[inline]
fn own_key(h: SequenceHash) -> u64 {
    (u64::from(h.position()) << 32) | u64::from(h.chained() as u32)
}

/// A block's parent key `(position - 1, parent fragment)`; `None` for a root.
#[inline]
fn parent_key(h: SequenceHash) -> Option<u64> {
    let pos = h.position().checked_sub(1)?;
    Some((u64::from(pos) << 32) | u64::from(h.parent_fragment()))
}

/// An indexed binary min-heap of `(tick, block)`.
#[derive(Debug)]
struct TickHeap {
    items: Vec<(u64, u32)>,
    /// Position of each block in `items`, or `NIL`.
    slot: Box<[u32]>,
}

impl TickHeap {
    fn new(capacity: usize) -> Self {
        Self {
            // Reserved for every block: pushes never reallocate.
            items: Vec::with_capacity(capacity),
            slot: vec![NIL; capacity].into_boxed_slice(),
        }
    }

    #[inline]
    fn place(&mut self, i: usize, item: (u64, u32)) {
        self.items[i] = item;
        self.slot[item.1 as usize] = i as u32;
    }

    fn sift_up(&mut self, mut i: usize) {
        let item = self.items[i];
        while i > 0 {
            let parent = (i - 1) / 2;
            let p = self.items[parent];
            if p.0 <= item.0 {
                break;
            }
            self.place(i, p);
            i = parent;
        }
        self.place(i, item);
    }

    fn sift_down(&mut self, mut i: usize) {
        let item = self.items[i];
        let n = self.items.len();
        loop {
            let left = 2 * i + 1;
            if left >= n {
                break;
            }
            let right = left + 1;
            let child = if right < n && self.items[right].0 < self.items[left].0 {
                right
            } else {
                left
            };
            let c = self.items[child];
            if item.0 <= c.0 {
                break;
            }
            self.place(i, c);
            i = child;
        }
        self.place(i, item);
    }

    /// Adds `id` with `tick` unless it is already in the heap.
    fn push(&mut self, id: u32, tick: u64) {
        if self.slot[id as usize] != NIL {
            return;
        }
        let i = self.items.len();
        self.items.push((tick, id));
        self.slot[id as usize] = i as u32;
        self.sift_up(i);
    }

    /// Removes `id` if it is in the heap.
    fn remove(&mut self, id: u32) {
        let i = std::mem::replace(&mut self.slot[id as usize], NIL);
        if i == NIL {
            return;
        }
        let Some(last) = self.items.pop() else {
            return;
        };
        let i = i as usize;
        if i < self.items.len() {
            self.place(i, last);
            self.sift_down(i);
            self.sift_up(i);
        }
    }

    /// The smallest `(tick, block)`, without removing it.
    #[inline]
    fn peek(&self) -> Option<(u64, u32)> {
        self.items.first().copied()
    }
}

/// The evictable blocks, oldest first (see the module docs).
#[derive(Debug)]
struct Leaves {
    /// Blocks that were leaves when they entered: sorted by tick, because each had the newest.
    fresh: IndexLists<1>,
    /// Blocks that became leaves again, with their original (older) ticks.
    again: TickHeap,
}

impl Leaves {
    fn new(capacity: usize) -> Self {
        Self {
            fresh: IndexLists::new(capacity),
            again: TickHeap::new(capacity),
        }
    }

    /// A block with the newest tick becomes a leaf.
    #[inline]
    fn push_newest(&mut self, id: u32) {
        self.fresh.push_back(0, id);
    }

    /// A block with an older tick becomes a leaf again.
    #[inline]
    fn push_again(&mut self, id: u32, tick: u64) {
        if !self.fresh.contains(id) {
            self.again.push(id, tick);
        }
    }

    /// `id` stops being a leaf (or leaves the pool); no-op if it was not a leaf.
    #[inline]
    fn remove(&mut self, id: u32) {
        if self.fresh.unlink(id).is_none() {
            self.again.remove(id);
        }
    }

    /// The leaf with the smallest tick.
    #[inline]
    fn oldest(&self, nodes: &[Node]) -> Option<u32> {
        match (self.fresh.front(0), self.again.peek()) {
            (Some(f), Some((tick, a))) => Some(if tick < nodes[f as usize].tick { a } else { f }),
            (Some(f), None) => Some(f),
            (None, again) => again.map(|(_, a)| a),
        }
    }
}

/// Leaves first, oldest leaf first. See the module docs.
#[derive(Debug)]
pub(crate) struct LineagePolicy {
    nodes: Box<[Node]>,
    index: SeqHashMap<u64, KeyEntry>,
    leaves: Leaves,
    next_tick: u64,
    len: usize,
}

impl LineagePolicy {
    /// An empty policy for block ids `0..total_blocks` (clamped below `u32::MAX`).
    pub(crate) fn new(total_blocks: usize) -> Self {
        let n = total_blocks.min(NIL as usize);
        Self {
            nodes: vec![ABSENT; n].into_boxed_slice(),
            // At most two keys per block (its own and its parent's).
            index: SeqHashMap::with_capacity_and_hasher(n.saturating_mul(2), Default::default()),
            leaves: Leaves::new(n),
            next_tick: 0,
            len: 0,
        }
    }

    /// Takes a present block out of every structure.
    fn detach(&mut self, id: u32) {
        let Self {
            nodes,
            index,
            leaves,
            len,
            ..
        } = self;
        let hash = nodes[id as usize].hash;
        nodes[id as usize].present = false;
        *len -= 1;
        leaves.remove(id);
        if let Entry::Occupied(mut e) = index.entry(own_key(hash)) {
            list_unlink(nodes, Chain::SameKey, &mut e.get_mut().same, id);
            if e.get().same == NIL && e.get().children == NIL {
                e.remove();
            }
        }
        let Some(pk) = parent_key(hash) else {
            return;
        };
        if let Entry::Occupied(mut e) = index.entry(pk) {
            let entry = e.get_mut();
            list_unlink(nodes, Chain::Siblings, &mut entry.children, id);
            if entry.children == NIL {
                // The last child under `pk` left: every block keyed `pk` is a leaf again.
                let mut p = entry.same;
                while p != NIL {
                    let node = &nodes[p as usize];
                    leaves.push_again(p, node.tick);
                    p = node.same.next;
                }
                if entry.same == NIL {
                    e.remove();
                }
            }
        }
    }
}

impl EvictionPolicy for LineagePolicy {
    /// Adds the block to the forest. Re-inserting a present block re-inserts it as new; an id
    /// outside `0..total_blocks` (a contract violation) is ignored.
    fn insert(&mut self, block: BlockId, hash: SequenceHash) {
        let id = block.raw();
        let Some(node) = self.nodes.get(id as usize) else {
            return;
        };
        if node.present {
            self.detach(id);
        }
        let Self {
            nodes,
            index,
            leaves,
            next_tick,
            len,
        } = self;
        nodes[id as usize] = Node {
            hash,
            tick: *next_tick,
            present: true,
            ..ABSENT
        };
        *next_tick += 1;
        *len += 1;
        let entry = index.entry(own_key(hash)).or_insert(EMPTY_ENTRY);
        list_push(nodes, Chain::SameKey, &mut entry.same, id);
        if entry.children == NIL {
            leaves.push_newest(id);
        }
        let Some(pk) = parent_key(hash) else {
            return;
        };
        let entry = index.entry(pk).or_insert(EMPTY_ENTRY);
        let first_child = entry.children == NIL;
        list_push(nodes, Chain::Siblings, &mut entry.children, id);
        if first_child {
            // Blocks keyed `pk` stop being leaves.
            let mut p = entry.same;
            while p != NIL {
                leaves.remove(p);
                p = nodes[p as usize].same.next;
            }
        }
    }

    fn remove(&mut self, block: BlockId) -> bool {
        let id = block.raw();
        match self.nodes.get(id as usize) {
            Some(node) if node.present => {
                self.detach(id);
                true
            }
            _ => false,
        }
    }

    fn evict(&mut self) -> Option<BlockId> {
        let id = self.leaves.oldest(&self.nodes)?;
        self.detach(id);
        Some(BlockId::new(id))
    }

    fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_orders_by_tick_and_removes_anywhere() {
        let mut h = TickHeap::new(6);
        for (id, t) in [50, 10, 40, 20, 30, 0].into_iter().enumerate() {
            h.push(id as u32, t);
        }
        h.push(3, 20); // idempotent
        h.remove(2);
        h.remove(2);
        let mut out = Vec::new();
        while let Some((_, id)) = h.peek() {
            h.remove(id);
            out.push(id);
        }
        assert_eq!(out, vec![5, 1, 3, 4, 0]);
    }
}
