//! [`HashScheme`]: the exact byte layouts that turn tokens into block hashes and block hashes
//! into chained sequence hashes.
//!
//! Two schemes exist. [`HashScheme::Kvtier`] (the default) binds every hash to its namespace,
//! block size and position in the chain; [`HashScheme::Xxh3Compat`] reproduces the layout
//! that other engines publish, so their hashes can be indexed as they are. Both are pure
//! functions of their inputs: the same tokens and keys give the same hashes on every host and
//! in every release (test vectors in `tests/hashing.rs` pin them).
//!
//! This file owns only the chaining step and the seeds; the block byte layout is assembled by
//! [`crate::BlockHasher`].

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::sequence_hash::SequenceHash;

/// XXH3 seed of [`HashScheme::Kvtier`] block hashes: the LE `u64` of `b"kvtierBK"`.
pub(super) const KVTIER_BLOCK_SEED: u64 = u64::from_le_bytes(*b"kvtierBK");
/// XXH3 seed of [`HashScheme::Kvtier`] root sequence hashes: the LE `u64` of `b"kvtierRT"`.
pub(super) const KVTIER_ROOT_SEED: u64 = u64::from_le_bytes(*b"kvtierRT");
/// XXH3 seed of [`HashScheme::Kvtier`] chained sequence hashes: the LE `u64` of `b"kvtierCH"`.
pub(super) const KVTIER_CHAIN_SEED: u64 = u64::from_le_bytes(*b"kvtierCH");

/// How block hashes and sequence hashes are computed.
///
/// Notation: `XXH3(bytes, seed)` is XXH3-64 with a seed; `LE32`/`LE64` are little-endian
/// encodings; `||` is concatenation; `ns` is the namespace digest of
/// [`crate::ExtraKeys`]; `mm*` are the encodings of the multimodal keys that overlap the block
/// (see [`crate::ExtraKeys`] for both).
///
/// # Examples
///
/// ```
/// use kvtier_core::{BlockHasher, ExtraKeys, HashScheme};
///
/// // Index hashes published by a Dynamo worker with block size 16, as they are.
/// let hasher = BlockHasher::new(16, HashScheme::dynamo(), ExtraKeys::new())?;
/// let tokens: Vec<u32> = (0..40).collect();
/// let seq = hasher.sequence_hashes(&tokens);
/// assert_eq!(seq.len(), 2); // the 8 trailing tokens are not hashed
/// assert_eq!(seq[1].position(), 1);
/// # Ok::<(), kvtier_core::HashError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HashScheme {
    /// kvtier's own scheme (the default): every hash is bound to the namespace, the block size,
    /// and (through the chain) the whole prefix.
    ///
    /// ```text
    /// block[i] = XXH3( LE64(ns) || LE32(block_size) || LE32(token)* || mm* , seed = LE64(b"kvtierBK") )
    /// seq[0]   = XXH3( LE64(block[0]),                seed = LE64(b"kvtierRT") )
    /// seq[i]   = XXH3( LE64(seq[i-1]) || LE64(block[i]), seed = LE64(b"kvtierCH") )
    /// ```
    ///
    /// `ns` is always present here: with no namespace key it is the digest of the empty
    /// encoding. The root uses its own seed (the "root domain tag") so that a root sequence
    /// hash never equals the block hash it came from.
    #[default]
    Kvtier,

    /// The field's interoperable scheme, with configurable seeds:
    ///
    /// ```text
    /// block[i] = XXH3( LE32(token)* || mm* , seed = block_seed ^ ns )   (ns only if a namespace key is set)
    /// seq[0]   = block[0]
    /// seq[i]   = XXH3( LE64(seq[i-1]) || LE64(block[i]), seed = chain_seed )
    /// ```
    ///
    /// With no extra keys this is exactly `XXH3(LE32 tokens, block_seed)` chained with
    /// `chain_seed`, the layout NVIDIA Dynamo uses ([`HashScheme::dynamo`]). Other engines that
    /// use this layout with other seeds (for example Mooncake integrations) are matched by
    /// choosing their seeds; check the engine's exact byte layout before relying on it.
    /// Namespace and multimodal keys only change the blocks they apply to, so plain text
    /// under no namespace stays interoperable.
    Xxh3Compat {
        /// Seed of the per-block XXH3 hash of the tokens.
        block_seed: u64,
        /// Seed of the XXH3 hash that chains a parent sequence hash with a block hash.
        chain_seed: u64,
    },
}

impl HashScheme {
    /// [`HashScheme::Xxh3Compat`] with the given seeds.
    pub const fn xxh3_compat(block_seed: u64, chain_seed: u64) -> Self {
        Self::Xxh3Compat {
            block_seed,
            chain_seed,
        }
    }

    /// NVIDIA Dynamo's seeds: [`HashScheme::Xxh3Compat`] with `block_seed = 0`,
    /// `chain_seed = 1337`.
    pub const fn dynamo() -> Self {
        Self::xxh3_compat(0, 1337)
    }

    /// Links one block onto a chain in constant time: the root when `parent` is `None`,
    /// otherwise the child of `parent`.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_core::HashScheme;
    ///
    /// let scheme = HashScheme::dynamo();
    /// let root = scheme.link(None, 7);
    /// assert_eq!(root.chained(), 7); // Xxh3Compat roots are the block hash itself
    /// let child = scheme.link(Some(root), 9);
    /// assert_eq!(child.position(), 1);
    /// assert!(root.may_be_parent_of(child));
    /// ```
    #[inline]
    pub fn link(self, parent: Option<SequenceHash>, block_hash: u64) -> SequenceHash {
        match parent {
            None => SequenceHash::root(self.root_chained(block_hash)),
            Some(parent) => {
                SequenceHash::child_of(parent, self.next_chained(parent.chained(), block_hash))
            }
        }
    }

    /// The chained value of a root block.
    #[inline]
    fn root_chained(self, block_hash: u64) -> u64 {
        match self {
            Self::Kvtier => xxh3_64_with_seed(&block_hash.to_le_bytes(), KVTIER_ROOT_SEED),
            Self::Xxh3Compat { .. } => block_hash,
        }
    }

    /// The chained value of a block whose parent's chained value is `parent`.
    #[inline]
    fn next_chained(self, parent: u64, block_hash: u64) -> u64 {
        let seed = match self {
            Self::Kvtier => KVTIER_CHAIN_SEED,
            Self::Xxh3Compat { chain_seed, .. } => chain_seed,
        };
        let mut buf = [0u8; 16];
        buf[..8].copy_from_slice(&parent.to_le_bytes());
        buf[8..].copy_from_slice(&block_hash.to_le_bytes());
        xxh3_64_with_seed(&buf, seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvtier_root_differs_from_block_hash_and_from_chain_step() {
        let s = HashScheme::Kvtier;
        let root = s.link(None, 5);
        assert_ne!(root.chained(), 5);
        assert_ne!(root.chained(), s.next_chained(0, 5));
    }

    #[test]
    fn link_sets_position_and_fragment() {
        for s in [HashScheme::Kvtier, HashScheme::dynamo()] {
            let mut prev: Option<SequenceHash> = None;
            for i in 0..5u32 {
                let next = s.link(prev, u64::from(i) * 31);
                assert_eq!(next.position(), i);
                if let Some(p) = prev {
                    assert!(p.may_be_parent_of(next));
                }
                prev = Some(next);
            }
        }
    }
}
