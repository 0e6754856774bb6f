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
//! be reached by prefix matching and is treated as a root. Nothing needs more than one shard's
//! view of the pool, but the rule is only meaningful over *all* blocks, so the factory asks for
//! a single shard.
//!
//! # Structure and collisions
//! Two hash maps index the pool, both keyed by `(position, 32-bit fragment)`: `nodes` finds the
//! blocks whose own key (position, low 32 bits of chained hash) is the key, and `groups` finds
//! the blocks whose *parent* key (position - 1, parent fragment) is the key, i.e. a block's
//! children are `groups[key(block)]`. Each map value heads an intrusive list through per-block
//! links, so several blocks may share a key: a fragment collision (or a duplicate hash) never
//! panics and never leaks a block; at worst an unrelated block counts as a child and the
//! "parent" waits a little longer. A block is a leaf exactly when `groups` has no entry for its
//! key; a block with the highest position in the pool is always a leaf, so `evict` finds a
//! victim whenever the pool is non-empty. Leaves sit in an indexed binary min-heap by insertion
//! tick: insert, remove and evict are O(log n) plus a few hash-map operations on maps reserved
//! for every block up front (no allocation per operation).
//!
//! # Invariants
//! - `heap` holds exactly the present blocks whose key has no `groups` entry.
//! - Every present block is in the `nodes` list of its key and, unless it is a root (position
//!   0), in the `groups` list of its parent key; absent blocks are in no list.

use super::list::NIL;
use super::{EvictionPolicy, PolicyContext, PolicyFactory};
use crate::{BlockId, SeqHashMap, SequenceHash};

/// Builds `lineage` policies: leaves first, oldest leaf first (see the module docs).
///
/// Name: `"lineage"`. Requires a single shard ([`PolicyFactory::requires_single_shard`]).
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
}

/// Per-block state.
#[derive(Clone, Copy, Debug)]
struct Node {
    hash: SequenceHash,
    /// Insertion order; unique among present blocks.
    tick: u64,
    present: bool,
    /// Links in the `groups` list of this block's parent key.
    sib: Links,
    /// Links in the `nodes` list of this block's own key.
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

/// Which per-block links a keyed list uses.
#[derive(Clone, Copy)]
enum Chain {
    /// `groups`: blocks sharing a parent key.
    Siblings,
    /// `nodes`: blocks sharing their own key.
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

/// Pushes `id` at the front of the list `map[key]`; returns whether the list was empty.
fn list_push(
    nodes: &mut [Node],
    map: &mut SeqHashMap<u64, u32>,
    chain: Chain,
    key: u64,
    id: u32,
) -> bool {
    let old = map.insert(key, id);
    let next = old.unwrap_or(NIL);
    *chain.links(&mut nodes[id as usize]) = Links { prev: NIL, next };
    if next != NIL {
        chain.links(&mut nodes[next as usize]).prev = id;
    }
    old.is_none()
}

/// Unlinks `id` from the list `map[key]` (dropping the entry when it empties); returns whether
/// the list is now empty.
fn list_unlink(
    nodes: &mut [Node],
    map: &mut SeqHashMap<u64, u32>,
    chain: Chain,
    key: u64,
    id: u32,
) -> bool {
    let Links { prev, next } = std::mem::replace(chain.links(&mut nodes[id as usize]), UNLINKED);
    if next != NIL {
        chain.links(&mut nodes[next as usize]).prev = prev;
    }
    if prev != NIL {
        chain.links(&mut nodes[prev as usize]).next = next;
        return false;
    }
    // `id` was the head.
    if next != NIL {
        map.insert(key, next);
        false
    } else {
        map.remove(&key);
        true
    }
}

/// An indexed binary min-heap of block ids ordered by their nodes' ticks.
#[derive(Debug)]
struct LeafHeap {
    items: Vec<u32>,
    /// Position of each block in `items`, or `NIL`.
    slot: Box<[u32]>,
}

impl LeafHeap {
    fn new(capacity: usize) -> Self {
        Self {
            // Reserved for every block: pushes never reallocate.
            items: Vec::with_capacity(capacity),
            slot: vec![NIL; capacity].into_boxed_slice(),
        }
    }

    #[inline]
    fn tick(nodes: &[Node], id: u32) -> u64 {
        nodes[id as usize].tick
    }

    #[inline]
    fn place(&mut self, i: usize, id: u32) {
        self.items[i] = id;
        self.slot[id as usize] = i as u32;
    }

    fn sift_up(&mut self, mut i: usize, nodes: &[Node]) {
        let id = self.items[i];
        let t = Self::tick(nodes, id);
        while i > 0 {
            let parent = (i - 1) / 2;
            let p = self.items[parent];
            if Self::tick(nodes, p) <= t {
                break;
            }
            self.place(i, p);
            i = parent;
        }
        self.place(i, id);
    }

    fn sift_down(&mut self, mut i: usize, nodes: &[Node]) {
        let id = self.items[i];
        let t = Self::tick(nodes, id);
        let n = self.items.len();
        loop {
            let left = 2 * i + 1;
            if left >= n {
                break;
            }
            let right = left + 1;
            let child = if right < n
                && Self::tick(nodes, self.items[right]) < Self::tick(nodes, self.items[left])
            {
                right
            } else {
                left
            };
            let c = self.items[child];
            if t <= Self::tick(nodes, c) {
                break;
            }
            self.place(i, c);
            i = child;
        }
        self.place(i, id);
    }

    /// Adds `id` unless it is already in the heap.
    fn push(&mut self, id: u32, nodes: &[Node]) {
        if self.slot[id as usize] != NIL {
            return;
        }
        let i = self.items.len();
        self.items.push(id);
        self.slot[id as usize] = i as u32;
        self.sift_up(i, nodes);
    }

    /// Removes `id` if it is in the heap.
    fn remove(&mut self, id: u32, nodes: &[Node]) {
        let i = self.slot[id as usize];
        if i == NIL {
            return;
        }
        self.slot[id as usize] = NIL;
        let Some(last) = self.items.pop() else {
            return;
        };
        let i = i as usize;
        if i < self.items.len() {
            self.place(i, last);
            self.sift_down(i, nodes);
            self.sift_up(i, nodes);
        }
    }

    /// The id with the smallest tick, without removing it.
    fn peek(&self) -> Option<u32> {
        self.items.first().copied()
    }
}

/// Leaves first, oldest leaf first. See the module docs.
#[derive(Debug)]
pub(crate) struct LineagePolicy {
    nodes: Box<[Node]>,
    /// Own key -> head of the list (through `Node::same`) of present blocks with that key.
    by_key: SeqHashMap<u64, u32>,
    /// Parent key -> head of the list (through `Node::sib`) of present blocks with that parent key.
    children: SeqHashMap<u64, u32>,
    leaves: LeafHeap,
    next_tick: u64,
    len: usize,
}

impl LineagePolicy {
    /// An empty policy for block ids `0..total_blocks` (clamped below `u32::MAX`).
    pub(crate) fn new(total_blocks: usize) -> Self {
        let n = total_blocks.min(NIL as usize);
        Self {
            nodes: vec![ABSENT; n].into_boxed_slice(),
            by_key: SeqHashMap::with_capacity_and_hasher(n, Default::default()),
            children: SeqHashMap::with_capacity_and_hasher(n, Default::default()),
            leaves: LeafHeap::new(n),
            next_tick: 0,
            len: 0,
        }
    }

    /// Takes a present block out of every structure.
    fn detach(&mut self, id: u32) {
        let hash = self.nodes[id as usize].hash;
        self.nodes[id as usize].present = false;
        self.len -= 1;
        self.leaves.remove(id, &self.nodes);
        list_unlink(
            &mut self.nodes,
            &mut self.by_key,
            Chain::SameKey,
            own_key(hash),
            id,
        );
        if let Some(pk) = parent_key(hash) {
            if list_unlink(&mut self.nodes, &mut self.children, Chain::Siblings, pk, id) {
                // The last child under `pk` left: every block keyed `pk` is a leaf again.
                let mut p = self.by_key.get(&pk).copied().unwrap_or(NIL);
                while p != NIL {
                    self.leaves.push(p, &self.nodes);
                    p = self.nodes[p as usize].same.next;
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
        let tick = self.next_tick;
        self.next_tick += 1;
        self.nodes[id as usize] = Node {
            hash,
            tick,
            present: true,
            ..ABSENT
        };
        self.len += 1;
        let key = own_key(hash);
        list_push(&mut self.nodes, &mut self.by_key, Chain::SameKey, key, id);
        if !self.children.contains_key(&key) {
            self.leaves.push(id, &self.nodes);
        }
        if let Some(pk) = parent_key(hash) {
            if list_push(&mut self.nodes, &mut self.children, Chain::Siblings, pk, id) {
                // First child under `pk`: blocks keyed `pk` stop being leaves.
                let mut p = self.by_key.get(&pk).copied().unwrap_or(NIL);
                while p != NIL {
                    self.leaves.remove(p, &self.nodes);
                    p = self.nodes[p as usize].same.next;
                }
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
        let id = self.leaves.peek()?;
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
        let mut nodes = vec![ABSENT; 6];
        for (i, t) in [50, 10, 40, 20, 30, 0].into_iter().enumerate() {
            nodes[i].tick = t;
        }
        let mut h = LeafHeap::new(6);
        for id in 0..6 {
            h.push(id, &nodes);
        }
        h.push(3, &nodes); // idempotent
        h.remove(2, &nodes);
        h.remove(2, &nodes);
        let mut out = Vec::new();
        while let Some(id) = h.peek() {
            h.remove(id, &nodes);
            out.push(id);
        }
        assert_eq!(out, vec![5, 1, 3, 4, 0]);
    }
}
