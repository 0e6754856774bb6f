//! [`BlockHasher`]: turns a token slice into block hashes and chained sequence hashes.
//!
//! A hasher is a validated `(block_size, scheme, extra keys)` triple. Only *full* blocks are
//! hashed: a trailing partial block is never hashed, shared or registered. Block `i` covers the
//! token positions `[i * block_size, (i + 1) * block_size)`; those absolute positions decide
//! which multimodal keys apply to it.
//!
//! Hashing allocates nothing per block: the batch functions reuse one byte buffer per call, and
//! [`BlockHasher::hash_block`] streams into XXH3 from a small stack buffer. Both paths hash the
//! same bytes (a unit test checks it). Cloning a hasher is cheap (the keys are shared).

use std::sync::Arc;

use xxhash_rust::xxh3::{Xxh3, xxh3_64_with_seed};

use super::error::HashError;
use super::extra_keys::{ExtraKeys, MM_KEY_BYTES};
use super::scheme::{HashScheme, KVTIER_BLOCK_SEED};
use super::sequence_hash::SequenceHash;

/// Hashes token blocks and chains them into [`SequenceHash`]es under one block size, scheme
/// and set of [`ExtraKeys`].
///
/// # Examples
///
/// ```
/// use kvtier_core::{BlockHasher, ExtraKeys, HashScheme};
///
/// let keys = ExtraKeys::new().with_model("llama-3-8b");
/// let hasher = BlockHasher::new(4, HashScheme::default(), keys)?;
///
/// let prompt = [1, 2, 3, 4, 5, 6, 7, 8, 9];
/// let seq = hasher.sequence_hashes(&prompt);
/// assert_eq!(seq.len(), 2); // token 9 is a partial block: not hashed
///
/// // A request that shares the first block shares the first sequence hash only.
/// let other = hasher.sequence_hashes(&[1, 2, 3, 4, 0, 0, 0, 0]);
/// assert_eq!(seq[0], other[0]);
/// assert_ne!(seq[1], other[1]);
///
/// // Chaining precomputed block hashes gives the same result.
/// assert_eq!(hasher.chain(&hasher.block_hashes(&prompt)), seq);
/// # Ok::<(), kvtier_core::HashError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockHasher {
    block_size: usize,
    scheme: HashScheme,
    /// XXH3 seed of every block hash (scheme seed, with the namespace folded in for compat).
    seed: u64,
    /// `Kvtier` only: the namespace digest written (with the block size) before the tokens.
    prefix: Option<u64>,
    extra: Arc<ExtraKeys>,
}

impl BlockHasher {
    /// The largest accepted block size, in tokens (`1 << 16`).
    pub const MAX_BLOCK_SIZE: usize = 1 << 16;

    /// A hasher for blocks of `block_size` tokens.
    ///
    /// # Errors
    ///
    /// - [`HashError::InvalidBlockSize`] if `block_size` is 0 or above
    ///   [`BlockHasher::MAX_BLOCK_SIZE`];
    /// - [`HashError::EmptyMmRange`] / [`HashError::MmRangeOutOfBounds`] if a multimodal key's
    ///   range is empty or ends past [`crate::MmKey::MAX_END`].
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, ExtraKeys, HashError, HashScheme};
    ///
    /// assert!(BlockHasher::new(16, HashScheme::default(), ExtraKeys::new()).is_ok());
    /// let bad = ExtraKeys::new().with_mm(0xFEED, 8..8);
    /// assert!(matches!(
    ///     BlockHasher::new(16, HashScheme::default(), bad),
    ///     Err(HashError::EmptyMmRange { start: 8, end: 8, .. })
    /// ));
    /// ```
    pub fn new(block_size: usize, scheme: HashScheme, extra: ExtraKeys) -> Result<Self, HashError> {
        if block_size == 0 || block_size > Self::MAX_BLOCK_SIZE {
            return Err(HashError::InvalidBlockSize {
                block_size,
                max: Self::MAX_BLOCK_SIZE,
            });
        }
        extra.validate()?;
        let (seed, prefix) = match scheme {
            HashScheme::Kvtier => (KVTIER_BLOCK_SEED, Some(extra.namespace_digest_always())),
            HashScheme::Xxh3Compat { block_seed, .. } => {
                (block_seed ^ extra.namespace_digest().unwrap_or(0), None)
            }
        };
        Ok(Self {
            block_size,
            scheme,
            seed,
            prefix,
            extra: Arc::new(extra),
        })
    }

    /// Block size, in tokens.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The hashing scheme.
    pub fn scheme(&self) -> HashScheme {
        self.scheme
    }

    /// The extra keys every hash is bound to.
    pub fn extra_keys(&self) -> &ExtraKeys {
        &self.extra
    }

    /// How many full blocks `token_count` tokens make.
    pub fn full_blocks(&self, token_count: usize) -> usize {
        token_count / self.block_size
    }

    /// The block hash of every full block of `tokens` (a trailing partial block is skipped).
    ///
    /// Block `i` is `tokens[i * block_size..(i + 1) * block_size]`.
    pub fn block_hashes(&self, tokens: &[u32]) -> Vec<u64> {
        let mut scratch = self.scratch();
        tokens
            .chunks_exact(self.block_size)
            .enumerate()
            .map(|(i, block)| self.hash_block_with(&mut scratch, i, block))
            .collect()
    }

    /// The sequence hash of every full block of `tokens` (a trailing partial block is skipped).
    pub fn sequence_hashes(&self, tokens: &[u32]) -> Vec<SequenceHash> {
        let mut scratch = self.scratch();
        let mut out = Vec::with_capacity(self.full_blocks(tokens.len()));
        let mut parent = None;
        for (i, block) in tokens.chunks_exact(self.block_size).enumerate() {
            let next = self.extend_chain(parent, self.hash_block_with(&mut scratch, i, block));
            out.push(next);
            parent = Some(next);
        }
        out
    }

    /// Chains precomputed block hashes (for example hashes published by another engine) into
    /// sequence hashes, starting from the root.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, ExtraKeys, HashScheme};
    ///
    /// let hasher = BlockHasher::new(16, HashScheme::dynamo(), ExtraKeys::new())?;
    /// let seq = hasher.chain(&[11, 22, 33]);
    /// assert_eq!(seq.len(), 3);
    /// assert_eq!(seq[0].chained(), 11);
    /// assert_eq!(seq[2].position(), 2);
    /// # Ok::<(), kvtier_core::HashError>(())
    /// ```
    pub fn chain(&self, block_hashes: &[u64]) -> Vec<SequenceHash> {
        let mut parent = None;
        block_hashes
            .iter()
            .map(|&h| {
                let next = self.extend_chain(parent, h);
                parent = Some(next);
                next
            })
            .collect()
    }

    /// Extends a chain by one block in constant time: the root when `parent` is `None`,
    /// otherwise the child of `parent`. Same as [`HashScheme::link`] with this hasher's scheme.
    #[inline]
    pub fn extend_chain(&self, parent: Option<SequenceHash>, block_hash: u64) -> SequenceHash {
        self.scheme.link(parent, block_hash)
    }

    /// The block hash of one full block, `tokens`, at index `block_index` of its sequence.
    ///
    /// The index matters only for multimodal keys (it decides which of them overlap the block).
    /// Allocates nothing.
    ///
    /// # Errors
    ///
    /// [`HashError::BlockLength`] if `tokens.len()` is not the block size.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::{BlockHasher, ExtraKeys, HashScheme};
    ///
    /// let hasher = BlockHasher::new(2, HashScheme::default(), ExtraKeys::new())?;
    /// let all = hasher.block_hashes(&[1, 2, 3, 4]);
    /// assert_eq!(hasher.hash_block(1, &[3, 4])?, all[1]);
    /// assert!(hasher.hash_block(0, &[1]).is_err());
    /// # Ok::<(), kvtier_core::HashError>(())
    /// ```
    pub fn hash_block(&self, block_index: usize, tokens: &[u32]) -> Result<u64, HashError> {
        if tokens.len() != self.block_size {
            return Err(HashError::BlockLength {
                expected: self.block_size,
                actual: tokens.len(),
            });
        }
        let (start, end) = self.block_range(block_index);
        // Common case: the whole input fits a stack buffer and is hashed in one call, which
        // skips the streaming state's setup and buffering (same bytes, same hash).
        let mut one_shot = [0u8; ONE_SHOT_BYTES];
        let prefix_len = if self.prefix.is_some() { 12 } else { 0 };
        let tokens_end = prefix_len + tokens.len() * 4;
        if tokens_end <= ONE_SHOT_BYTES {
            if let Some(prefix) = self.prefix {
                one_shot[..12].copy_from_slice(&self.prefix_bytes(prefix));
            }
            write_le_tokens(&mut one_shot[prefix_len..tokens_end], tokens);
            let mut len = tokens_end;
            let mut fits = true;
            for key in self.overlapping_mm(start, end) {
                if len + MM_KEY_BYTES > ONE_SHOT_BYTES {
                    fits = false;
                    break;
                }
                one_shot[len..len + MM_KEY_BYTES].copy_from_slice(&key.encode(start));
                len += MM_KEY_BYTES;
            }
            if fits {
                return Ok(xxh3_64_with_seed(&one_shot[..len], self.seed));
            }
        }
        let mut h = Xxh3::with_seed(self.seed);
        if let Some(prefix) = self.prefix {
            h.update(&self.prefix_bytes(prefix));
        }
        let mut chunk = [0u8; 256];
        for part in tokens.chunks(chunk.len() / 4) {
            let bytes = &mut chunk[..part.len() * 4];
            write_le_tokens(bytes, part);
            h.update(bytes);
        }
        for key in self.overlapping_mm(start, end) {
            h.update(&key.encode(start));
        }
        Ok(h.digest())
    }

    /// A byte buffer large enough for one block in the common case.
    pub(super) fn scratch(&self) -> Vec<u8> {
        Vec::with_capacity(12 + 4 * self.block_size + MM_KEY_BYTES * self.extra.mm().len().min(4))
    }

    /// Hashes one full block through `scratch` (cleared first). `tokens.len()` must be the
    /// block size.
    pub(super) fn hash_block_with(
        &self,
        scratch: &mut Vec<u8>,
        block_index: usize,
        tokens: &[u32],
    ) -> u64 {
        debug_assert_eq!(tokens.len(), self.block_size);
        scratch.clear();
        if let Some(prefix) = self.prefix {
            scratch.extend_from_slice(&self.prefix_bytes(prefix));
        }
        let at = scratch.len();
        scratch.resize(at + tokens.len() * 4, 0);
        write_le_tokens(&mut scratch[at..], tokens);
        let (start, end) = self.block_range(block_index);
        for key in self.overlapping_mm(start, end) {
            scratch.extend_from_slice(&key.encode(start));
        }
        xxh3_64_with_seed(scratch, self.seed)
    }

    /// `LE64(namespace digest) || LE32(block_size)`: the `Kvtier` block prefix.
    fn prefix_bytes(&self, ns: u64) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&ns.to_le_bytes());
        // block_size <= MAX_BLOCK_SIZE = 1 << 16, so it fits a u32.
        out[8..].copy_from_slice(&(self.block_size as u32).to_le_bytes());
        out
    }

    /// Token positions `[start, end)` of block `block_index`.
    fn block_range(&self, block_index: usize) -> (usize, usize) {
        let start = block_index.saturating_mul(self.block_size);
        (start, start.saturating_add(self.block_size))
    }

    /// The multimodal keys that overlap token positions `[start, end)`, in canonical order.
    fn overlapping_mm(&self, start: usize, end: usize) -> impl Iterator<Item = &super::MmKey> {
        // Keys are sorted by start: none after the first that starts at or past `end` overlaps.
        self.extra
            .mm()
            .iter()
            .take_while(move |k| k.start < end)
            .filter(move |k| k.overlaps(start, end))
    }
}

/// The longest input [`BlockHasher::hash_block`] hashes in one call from a stack buffer
/// (a block of 64 tokens with its prefix and a few multimodal keys); longer ones stream.
const ONE_SHOT_BYTES: usize = 384;

/// Writes `tokens` as little-endian `u32`s into `out` (`out.len() == 4 * tokens.len()`).
#[inline]
fn write_le_tokens(out: &mut [u8], tokens: &[u32]) {
    // On little-endian hosts this compiles to a plain copy.
    for (dst, t) in out.chunks_exact_mut(4).zip(tokens) {
        dst.copy_from_slice(&t.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashers() -> Vec<BlockHasher> {
        let keys = ExtraKeys::new()
            .with_model("m")
            .with_salt(b"s".to_vec())
            .with_mm(9, 3..70)
            .with_mm(7, 130..131);
        let mut out = Vec::new();
        for scheme in [HashScheme::Kvtier, HashScheme::dynamo()] {
            for bs in [1, 3, 16, 64, 65, 300] {
                out.push(BlockHasher::new(bs, scheme, ExtraKeys::new()).unwrap());
                out.push(BlockHasher::new(bs, scheme, keys.clone()).unwrap());
            }
        }
        out
    }

    #[test]
    fn streaming_path_equals_buffered_path() {
        let tokens: Vec<u32> = (0..1000u32)
            .map(|t| t.wrapping_mul(2_654_435_761))
            .collect();
        for h in hashers() {
            let batch = h.block_hashes(&tokens);
            for (i, block) in tokens.chunks_exact(h.block_size()).enumerate() {
                assert_eq!(h.hash_block(i, block).unwrap(), batch[i], "{h:?} block {i}");
            }
        }
    }

    #[test]
    fn one_shot_and_streamed_blocks_hash_alike() {
        // Blocks of 64 tokens with 0..=12 multimodal keys over them: the first fit the
        // one-shot buffer, the last overflow it and stream.
        let tokens: Vec<u32> = (0..128u32).map(|t| t.wrapping_mul(0x9E37_79B9)).collect();
        for scheme in [HashScheme::Kvtier, HashScheme::dynamo()] {
            for n in 0..=12u64 {
                let mut keys = ExtraKeys::new().with_model("m");
                for k in 0..n {
                    keys = keys.with_mm(100 + k, (k as usize)..(70 + k as usize));
                }
                let h = BlockHasher::new(64, scheme, keys).unwrap();
                let all = h.block_hashes(&tokens);
                assert_eq!(h.hash_block(0, &tokens[..64]).unwrap(), all[0], "{n} keys");
                assert_eq!(h.hash_block(1, &tokens[64..]).unwrap(), all[1], "{n} keys");
            }
        }
    }

    #[test]
    fn block_size_bounds() {
        let ok = |bs| BlockHasher::new(bs, HashScheme::default(), ExtraKeys::new()).is_ok();
        assert!(!ok(0));
        assert!(ok(1));
        assert!(ok(BlockHasher::MAX_BLOCK_SIZE));
        assert!(!ok(BlockHasher::MAX_BLOCK_SIZE + 1));
    }

    #[test]
    fn overlapping_mm_selects_by_range() {
        let keys = ExtraKeys::new()
            .with_mm(1, 0..2)
            .with_mm(2, 3..9)
            .with_mm(3, 8..9);
        let h = BlockHasher::new(4, HashScheme::default(), keys).unwrap();
        let hashes = |s, e| {
            h.overlapping_mm(s, e)
                .map(|k| k.content_hash)
                .collect::<Vec<_>>()
        };
        assert_eq!(hashes(0, 4), [1, 2]);
        assert_eq!(hashes(4, 8), [2]);
        assert_eq!(hashes(8, 12), [2, 3]);
        assert_eq!(hashes(12, 16), Vec::<u64>::new());
    }
}
