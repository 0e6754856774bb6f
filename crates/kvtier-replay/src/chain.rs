//! [`Chains`]: a trace's block ids turned into chained [`SequenceHash`] keys.
//!
//! A trace id names a block only under its prefix, so each request becomes a chain of keys:
//!
//! ```text
//! key[0] = SequenceHash::root(mix_root(id[0]))
//! key[i] = SequenceHash::child_of(key[i-1], mix_child(key[i-1].chained(), id[i]))
//! mix_root(id)       = XXH3-64(id as 8 LE bytes)
//! mix_child(p, id)   = XXH3-64(p as 8 LE bytes || id as 8 LE bytes)
//! ```
//!
//! This is the field's interoperable chaining (`seq[i] = XXH3-64(seq[i-1] || block[i])`) with the
//! trace id standing in for the block's tokens. The chained value therefore depends on the whole
//! prefix, so the same id under another prefix is another key even in a trace that is not
//! prefix-consistent. XXH3 also spreads small integer ids over all 64 bits, which the manager's
//! identity-style hash maps rely on.
//!
//! Besides the keys, [`Chains`] numbers the distinct keys densely (`0..unique()`, in order of
//! first appearance) so that offline simulators can use plain vectors instead of hash maps.

use kvtier_core::{SeqHashMap, SequenceHash};
use xxhash_rust::xxh3::xxh3_64;

use crate::Trace;

/// The chained value of a root block with trace id `id`: XXH3-64 of its 8 little-endian bytes.
pub fn mix_root(id: u64) -> u64 {
    xxh3_64(&id.to_le_bytes())
}

/// The chained value of block `id` under a parent whose chained value is `parent`: XXH3-64 of
/// the parent's 8 little-endian bytes followed by the id's.
pub fn mix_child(parent: u64, id: u64) -> u64 {
    let mut buf = [0u8; 16];
    buf[..8].copy_from_slice(&parent.to_le_bytes());
    buf[8..].copy_from_slice(&id.to_le_bytes());
    xxh3_64(&buf)
}

/// Every request of a trace as a chain of [`SequenceHash`] keys, plus a dense numbering of the
/// distinct keys.
///
/// # Examples
///
/// ```
/// use kvtier_replay::{Chains, ParseMode, Trace};
///
/// let text = "{\"hash_ids\": [7, 8]}\n{\"hash_ids\": [7, 9]}\n{\"hash_ids\": [1, 8]}\n";
/// let chains = Chains::from_trace(&Trace::parse_str(text, ParseMode::Strict).unwrap().trace);
/// assert_eq!(chains.len(), 3);
/// assert_eq!(chains.chain(0)[0], chains.chain(1)[0]); // same root id: same block
/// assert_ne!(chains.chain(0)[1], chains.chain(2)[1]); // id 8 under another prefix: another block
/// assert_eq!(chains.unique(), 5);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Chains {
    keys: Vec<SequenceHash>,
    dense: Vec<u32>,
    offsets: Vec<usize>,
    unique: usize,
}

impl Chains {
    /// Builds the chains of every request of `trace`, in order.
    ///
    /// # Panics
    ///
    /// When the trace has `u32::MAX` or more distinct keys.
    pub fn from_trace(trace: &Trace) -> Self {
        let total = trace.total_blocks() as usize;
        let mut keys = Vec::with_capacity(total);
        let mut dense = Vec::with_capacity(total);
        let mut offsets = Vec::with_capacity(trace.len() + 1);
        offsets.push(0);
        let mut index: SeqHashMap<SequenceHash, u32> = SeqHashMap::default();
        for req in trace.iter() {
            let mut parent: Option<SequenceHash> = None;
            for &id in req.hash_ids {
                let key = match parent {
                    None => SequenceHash::root(mix_root(id)),
                    Some(p) => SequenceHash::child_of(p, mix_child(p.chained(), id)),
                };
                let next = u32::try_from(index.len()).expect("fewer than u32::MAX distinct keys");
                dense.push(*index.entry(key).or_insert(next));
                keys.push(key);
                parent = Some(key);
            }
            offsets.push(keys.len());
        }
        Self {
            keys,
            dense,
            offsets,
            unique: index.len(),
        }
    }

    /// Number of requests.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Whether there is no request.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys of request `i`, root first.
    ///
    /// # Panics
    ///
    /// When `i >= self.len()`.
    pub fn chain(&self, i: usize) -> &[SequenceHash] {
        &self.keys[self.offsets[i]..self.offsets[i + 1]]
    }

    /// The dense numbers (`0..unique()`) of request `i`'s keys, aligned with [`chain`](Self::chain).
    ///
    /// # Panics
    ///
    /// When `i >= self.len()`.
    pub fn dense_chain(&self, i: usize) -> &[u32] {
        &self.dense[self.offsets[i]..self.offsets[i + 1]]
    }

    /// Offset of request `i`'s first key in the flat key order (`0..=total_blocks()`).
    ///
    /// # Panics
    ///
    /// When `i > self.len()`.
    pub fn offset(&self, i: usize) -> usize {
        self.offsets[i]
    }

    /// The chains in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[SequenceHash]> + '_ {
        (0..self.len()).map(|i| self.chain(i))
    }

    /// Keys over all requests (blocks requested in total).
    pub fn total_blocks(&self) -> u64 {
        self.keys.len() as u64
    }

    /// Number of distinct keys.
    pub fn unique(&self) -> usize {
        self.unique
    }

    /// Length of the longest chain.
    pub fn max_len(&self) -> usize {
        self.offsets
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0)
    }
}
