//! [`TokenSequence`]: a token sequence that grows during decode and hashes each block exactly
//! once, when its last token arrives; [`TokenBlock`]: a view of one full block.
//!
//! Invariant: `sequence_hashes().len() == block_hashes().len() == len() / block_size`, and the
//! hashes are exactly those [`BlockHasher::sequence_hashes`] gives for `tokens()`, however the
//! tokens arrived (all at once, token by token, in slices, after truncations).
//! The trailing partial block ([`TokenSequence::partial_tokens`]) is never hashed.

use std::fmt;

use super::block_hasher::BlockHasher;
use super::sequence_hash::SequenceHash;

/// A growing token sequence with the hashes of its full blocks.
///
/// Appending costs O(1) amortized per token: a block is hashed once, when it fills, and chained
/// onto the previous block's sequence hash. One byte buffer is reused for every block.
///
/// # Examples
///
/// ```
/// use kvtier_core::{BlockHasher, ExtraKeys, HashScheme, TokenSequence};
///
/// let hasher = BlockHasher::new(4, HashScheme::default(), ExtraKeys::new())?;
/// let mut seq = TokenSequence::new(hasher.clone(), vec![1, 2, 3, 4, 5, 6]);
/// assert_eq!(seq.sequence_hashes().len(), 1);
/// assert_eq!(seq.partial_tokens(), &[5, 6]);
///
/// assert_eq!(seq.append(7), None);
/// let filled = seq.append(8).expect("block 1 is full");
/// assert_eq!(filled.position(), 1);
///
/// // Token by token equals all at once.
/// assert_eq!(seq.sequence_hashes(), hasher.sequence_hashes(&[1, 2, 3, 4, 5, 6, 7, 8]));
/// # Ok::<(), kvtier_core::HashError>(())
/// ```
#[derive(Clone)]
pub struct TokenSequence {
    hasher: BlockHasher,
    tokens: Vec<u32>,
    block_hashes: Vec<u64>,
    sequence_hashes: Vec<SequenceHash>,
    /// Reused for every block so hashing allocates nothing per block.
    scratch: Vec<u8>,
}

impl TokenSequence {
    /// A sequence starting with `tokens`; every full block is hashed now.
    pub fn new(hasher: BlockHasher, tokens: impl Into<Vec<u32>>) -> Self {
        let tokens = tokens.into();
        let blocks = hasher.full_blocks(tokens.len());
        let mut seq = Self {
            scratch: hasher.scratch(),
            hasher,
            tokens,
            block_hashes: Vec::with_capacity(blocks),
            sequence_hashes: Vec::with_capacity(blocks),
        };
        seq.hash_full_blocks();
        seq
    }

    /// Appends one token; returns the new sequence hash if this token completed a block.
    pub fn append(&mut self, token: u32) -> Option<SequenceHash> {
        self.tokens.push(token);
        // The next block fills exactly when the length reaches its end (no division per token).
        let next_end = (self.sequence_hashes.len() + 1) * self.hasher.block_size();
        if self.tokens.len() == next_end {
            self.hash_full_blocks();
            self.sequence_hashes.last().copied()
        } else {
            None
        }
    }

    /// Appends `tokens`; returns the sequence hashes of the blocks they completed (possibly
    /// none).
    pub fn extend(&mut self, tokens: &[u32]) -> &[SequenceHash] {
        let before = self.sequence_hashes.len();
        self.tokens.extend_from_slice(tokens);
        self.hash_full_blocks();
        &self.sequence_hashes[before..]
    }

    /// Shortens the sequence to `len` tokens (no-op if it is not longer). Blocks that lose a
    /// token lose their hashes; earlier blocks keep theirs (they cannot have changed).
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, ExtraKeys, HashScheme, TokenSequence};
    ///
    /// let hasher = BlockHasher::new(4, HashScheme::default(), ExtraKeys::new())?;
    /// let mut seq = TokenSequence::new(hasher, (0..8).collect::<Vec<u32>>());
    /// seq.truncate(7);
    /// assert_eq!(seq.sequence_hashes().len(), 1);
    /// assert_eq!(seq.partial_tokens(), &[4, 5, 6]);
    /// # Ok::<(), kvtier_core::HashError>(())
    /// ```
    pub fn truncate(&mut self, len: usize) {
        if len >= self.tokens.len() {
            return;
        }
        self.tokens.truncate(len);
        let full = self.hasher.full_blocks(len);
        self.block_hashes.truncate(full);
        self.sequence_hashes.truncate(full);
    }

    /// All tokens, including the partial tail.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Number of tokens, including the partial tail.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the sequence has no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The tokens after the last full block (never hashed); shorter than the block size.
    pub fn partial_tokens(&self) -> &[u32] {
        &self.tokens[self.sequence_hashes.len() * self.hasher.block_size()..]
    }

    /// The sequence hash of every full block, in order.
    pub fn sequence_hashes(&self) -> &[SequenceHash] {
        &self.sequence_hashes
    }

    /// The block hash of every full block, in order.
    pub fn block_hashes(&self) -> &[u64] {
        &self.block_hashes
    }

    /// The sequence hash of the last full block, if any.
    pub fn last_sequence_hash(&self) -> Option<SequenceHash> {
        self.sequence_hashes.last().copied()
    }

    /// Number of full blocks.
    pub fn block_count(&self) -> usize {
        self.sequence_hashes.len()
    }

    /// Full block `index`, if it exists.
    pub fn block(&self, index: usize) -> Option<TokenBlock<'_>> {
        let bs = self.hasher.block_size();
        Some(TokenBlock {
            tokens: self.tokens.get(index * bs..(index + 1) * bs)?,
            block_hash: *self.block_hashes.get(index)?,
            sequence_hash: *self.sequence_hashes.get(index)?,
        })
    }

    /// Every full block, in order.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, ExtraKeys, HashScheme, TokenSequence};
    ///
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let seq = TokenSequence::new(hasher, vec![1, 2, 3, 4, 5]);
    /// let blocks: Vec<_> = seq.blocks().collect();
    /// assert_eq!(blocks.len(), 2);
    /// assert_eq!(blocks[1].tokens(), &[3, 4]);
    /// assert_eq!(blocks[1].position(), 1);
    /// # Ok::<(), kvtier_core::HashError>(())
    /// ```
    pub fn blocks(&self) -> impl ExactSizeIterator<Item = TokenBlock<'_>> + '_ {
        self.tokens
            .chunks_exact(self.hasher.block_size())
            .zip(self.block_hashes.iter().zip(&self.sequence_hashes))
            .map(|(tokens, (&block_hash, &sequence_hash))| TokenBlock {
                tokens,
                block_hash,
                sequence_hash,
            })
    }

    /// The hasher this sequence uses.
    pub fn hasher(&self) -> &BlockHasher {
        &self.hasher
    }

    /// Hashes every full block that has no hash yet.
    fn hash_full_blocks(&mut self) {
        let bs = self.hasher.block_size();
        let full = self.hasher.full_blocks(self.tokens.len());
        for index in self.sequence_hashes.len()..full {
            let block = &self.tokens[index * bs..(index + 1) * bs];
            let hash = self.hasher.hash_block_with(&mut self.scratch, index, block);
            let next = self
                .hasher
                .extend_chain(self.sequence_hashes.last().copied(), hash);
            self.block_hashes.push(hash);
            self.sequence_hashes.push(next);
        }
    }
}

impl fmt::Debug for TokenSequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSequence")
            .field("block_size", &self.hasher.block_size())
            .field("len", &self.tokens.len())
            .field("blocks", &self.sequence_hashes.len())
            .field("last", &self.last_sequence_hash())
            .finish()
    }
}

/// One full block of a [`TokenSequence`]: its tokens, block hash and sequence hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBlock<'a> {
    tokens: &'a [u32],
    block_hash: u64,
    sequence_hash: SequenceHash,
}

impl<'a> TokenBlock<'a> {
    /// The block's tokens (exactly the block size).
    pub fn tokens(&self) -> &'a [u32] {
        self.tokens
    }

    /// The block hash (tokens and extra keys, without the prefix).
    pub fn block_hash(&self) -> u64 {
        self.block_hash
    }

    /// The sequence hash (the block and its whole prefix).
    pub fn sequence_hash(&self) -> SequenceHash {
        self.sequence_hash
    }

    /// Index of the block in its sequence.
    pub fn position(&self) -> u32 {
        self.sequence_hash.position()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExtraKeys, HashScheme};

    #[test]
    fn truncate_then_regrow_matches_fresh() {
        let h = BlockHasher::new(3, HashScheme::default(), ExtraKeys::new()).unwrap();
        let mut seq = TokenSequence::new(h.clone(), (0..10).collect::<Vec<u32>>());
        seq.truncate(4);
        assert_eq!(seq.block_count(), 1);
        let new = seq.extend(&[40, 50, 60, 70, 80]).to_vec();
        assert_eq!(new.len(), 2);
        let expected = h.sequence_hashes(&[0, 1, 2, 3, 40, 50, 60, 70, 80]);
        assert_eq!(seq.sequence_hashes(), expected);
        assert_eq!(new, expected[1..]);
        assert_eq!(seq.block(2).map(|b| b.tokens()), Some(&[60, 70, 80][..]));
        assert!(seq.block(3).is_none());
    }

    #[test]
    fn truncate_longer_is_noop() {
        let h = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new()).unwrap();
        let mut seq = TokenSequence::new(h, vec![1, 2, 3]);
        seq.truncate(10);
        assert_eq!(seq.len(), 3);
        seq.truncate(0);
        assert!(seq.is_empty());
        assert_eq!(seq.block_count(), 0);
        assert!(seq.partial_tokens().is_empty());
    }
}
