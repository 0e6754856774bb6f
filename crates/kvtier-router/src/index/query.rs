//! The prefix walk of [`PrefixIndex::query`](super::PrefixIndex::query): [`Overlap`] (one line
//! of the answer) and [`QueryScratch`] (the buffers a walk reuses).
//!
//! The holders of the request's first block each get a line of the answer, in key order
//! (`slot << 2 | medium`: by slot, then medium), so the answer never needs sorting. The walk
//! then looks the following hashes up in order and keeps two sorted lists of the keys still
//! matching: dense keys, which must hold every block, and sparse keys (instances announcing
//! only power-of-two positions), checked only at 0-based indices `2^j - 1`. Each step
//! intersects a list with the holders of the current block; a key that drops out has its line
//! filled with the length it reached. The intersection is skipped when the holders equal the
//! dense list (the usual case along a prefix held by the same instances), so a step costs one
//! lookup and one short comparison.
//!
//! ```text
//! i:        0    1    2    3    4 .. 6    7
//! dense:    ∩H0  ∩H1  ∩H2  ∩H3  ∩Hi      ∩H7     drop at i  -> matched = upper = i
//! sparse:   ∩H0  ∩H1       ∩H3           ∩H7     drop at i  -> matched = (i+1)/2, upper = i
//! stop:     both lists empty; only sparse left -> jump to the next index 2^j - 1
//! ```
//!
//! On a large index every lookup is a cache and TLB miss, so the walk first loads the home
//! lines of up to `TOUCH_AHEAD` blocks (see `HolderTable::touch`) and keeps about that many
//! in flight while it goes on: the misses overlap instead of adding up.
//!
//! It owns no index state and allocates nothing once the scratch buffers have grown.

use kvtier_core::{Medium, SequenceHash};

use super::table::HolderTable;

/// How many blocks ahead the walk loads buckets so that their cache misses overlap. A walk
/// that stops early wastes at most this many loads; one that goes on keeps about this many in
/// flight.
const TOUCH_AHEAD: usize = 32;

/// How much of a request one `(slot, medium)` holds: a line of [`PrefixIndex::query`]'s answer.
///
/// For a dense instance `matched == upper`: it holds blocks `0..matched` of the request. For a
/// sparse instance (power-of-two announcements) `matched` is the largest 1-based power-of-two
/// position `2^k` such that it announced positions `1, 2, 4, .., 2^k` of the request, and
/// `upper = min(2^(k+1) - 1, n)`: a prefix-closed cache holds between `matched` and `upper`
/// blocks.
///
/// [`PrefixIndex::query`]: super::PrefixIndex::query
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Overlap {
    /// The instance slot.
    pub slot: u32,
    /// The medium the blocks are on.
    pub medium: Medium,
    /// Leading blocks known to be held (at least 1 in an answer).
    pub matched: u32,
    /// Leading blocks possibly held; equals `matched` for dense instances.
    pub upper: u32,
}

impl Overlap {
    #[inline]
    fn new(key: u32, matched: usize, upper: usize) -> Self {
        let mut line = Self {
            slot: key >> 2,
            medium: Medium::ALL[(key & 3) as usize],
            matched: 0,
            upper: 0,
        };
        line.set(matched, upper);
        line
    }

    #[inline]
    fn set(&mut self, matched: usize, upper: usize) {
        // The walk caps the request at u32::MAX blocks.
        self.matched = matched as u32;
        self.upper = upper as u32;
    }
}

/// Reusable buffers for [`PrefixIndex::query`](super::PrefixIndex::query): keep one per
/// querying thread and the walk allocates nothing once it has grown to the largest answer.
///
/// # Examples
///
/// ```
/// use kvtier_router::{PrefixIndex, QueryScratch};
///
/// let index = PrefixIndex::new();
/// let mut scratch = QueryScratch::new();
/// assert!(index.query(&[], |_| false, &mut scratch).is_empty());
/// ```
#[derive(Clone, Debug, Default)]
pub struct QueryScratch {
    /// Dense keys that held every block so far.
    dense: Alive,
    /// Sparse keys that held every power position so far.
    sparse: Alive,
    /// The answer: one line per holder of the first block, in its (sorted) order.
    out: Vec<Overlap>,
    /// Table lookups made by the last walk (tests check that walks stop early).
    #[cfg(test)]
    pub(super) lookups: usize,
}

impl QueryScratch {
    /// Empty buffers.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Keys still matching, sorted, with the line of the answer each one fills.
#[derive(Clone, Debug, Default)]
struct Alive {
    keys: Vec<u32>,
    lines: Vec<u32>,
}

impl Alive {
    fn clear(&mut self) {
        self.keys.clear();
        self.lines.clear();
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keeps the keys that are also in `held` (sorted), passing the lines of the others to
    /// `dropped`.
    #[inline]
    fn retain_held(&mut self, held: &[u32], mut dropped: impl FnMut(u32)) {
        if same(&self.keys, held) {
            return;
        }
        let Alive { keys, lines } = self;
        let mut kept = 0;
        if held.len() > 8 * keys.len() {
            // A few survivors among many holders (a hot block): binary search each.
            let mut rest = held;
            for r in 0..keys.len() {
                let k = keys[r];
                let at = rest.partition_point(|&h| h < k);
                if rest.get(at) == Some(&k) {
                    keys[kept] = k;
                    lines[kept] = lines[r];
                    kept += 1;
                    rest = &rest[at + 1..];
                } else {
                    dropped(lines[r]);
                    rest = &rest[at..];
                }
            }
        } else {
            let mut j = 0;
            for r in 0..keys.len() {
                let k = keys[r];
                while j < held.len() && held[j] < k {
                    j += 1;
                }
                if j < held.len() && held[j] == k {
                    keys[kept] = k;
                    lines[kept] = lines[r];
                    kept += 1;
                    j += 1;
                } else {
                    dropped(lines[r]);
                }
            }
        }
        keys.truncate(kept);
        lines.truncate(kept);
    }
}

/// Slice equality without a `memcmp` call for the usual short lists.
#[inline]
fn same(a: &[u32], b: &[u32]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if a.len() <= 4 {
        a.iter().zip(b).all(|(x, y)| x == y)
    } else {
        a == b
    }
}

/// The walk itself; see the module docs and [`PrefixIndex::query`](super::PrefixIndex::query).
pub(super) fn walk<'s>(
    table: &HolderTable,
    hashes: &[SequenceHash],
    sparse: impl Fn(u32) -> bool,
    scratch: &'s mut QueryScratch,
) -> &'s [Overlap] {
    #[cfg(test)]
    {
        scratch.lookups = 0;
    }
    let QueryScratch {
        dense,
        sparse: sparse_alive,
        out,
        #[cfg(test)]
        lookups,
    } = scratch;
    dense.clear();
    sparse_alive.clear();
    out.clear();
    let n = hashes.len().min(u32::MAX as usize);
    if n == 0 || table.len() == 0 {
        return out;
    }
    table.touch(hashes[..n.min(TOUCH_AHEAD)].iter().map(|h| h.as_u128()), 1);
    let mut touched = n.min(TOUCH_AHEAD);
    #[cfg(test)]
    {
        *lookups += 1;
    }
    // Every holder of the first block gets a line, in key order (slot, then medium); the walk
    // fills in how far each one went.
    for (line, &k) in table.get(hashes[0].as_u128()).iter().enumerate() {
        out.push(Overlap::new(k, 0, 0));
        let alive = if sparse(k >> 2) {
            &mut *sparse_alive
        } else {
            &mut *dense
        };
        alive.keys.push(k);
        alive.lines.push(line as u32);
    }
    if out.is_empty() {
        return out;
    }

    let mut i = 1;
    while i < n {
        if dense.is_empty() {
            if sparse_alive.is_empty() {
                break;
            }
            // Only sparse keys left: the next block that can tell anything is at 2^j - 1.
            i = (i + 1).next_power_of_two() - 1;
            if i >= n {
                break;
            }
        } else if i + TOUCH_AHEAD / 2 >= touched && touched < n {
            // Keep about TOUCH_AHEAD blocks in flight, in steps of half of it.
            let to = (touched + TOUCH_AHEAD / 2).min(n);
            table.touch(hashes[touched..to].iter().map(|h| h.as_u128()), 1);
            touched = to;
        }
        #[cfg(test)]
        {
            *lookups += 1;
        }
        let held = table.get(hashes[i].as_u128());
        dense.retain_held(held, |line| out[line as usize].set(i, i));
        // 1-based position of this block; sparse holders are checked at powers of two.
        let position = i + 1;
        if position.is_power_of_two() && !sparse_alive.is_empty() {
            // Dropping here: held the previous power, position / 2, but not this one.
            sparse_alive.retain_held(held, |line| out[line as usize].set(position / 2, i));
        }
        i += 1;
    }

    // Survivors held everything up to the end of the request (dense), or every power position
    // up to the largest one <= n (sparse).
    for &line in &dense.lines {
        out[line as usize].set(n, n);
    }
    let last_power = 1usize << n.ilog2();
    for &line in &sparse_alive.lines {
        out[line as usize].set(last_power, n);
    }
    out
}
