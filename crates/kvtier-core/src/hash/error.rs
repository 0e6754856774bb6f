//! [`HashError`]: everything that can be wrong with a hashing configuration or input.
//!
//! Hashing itself never fails once a [`crate::BlockHasher`] exists: configuration is checked
//! once in [`crate::BlockHasher::new`], and the only per-call error is handing
//! [`crate::BlockHasher::hash_block`] a slice that is not exactly one block long. No input makes
//! this layer panic.

/// Why a hashing configuration or input was rejected.
///
/// # Examples
///
/// ```
/// use kvtier_core::{BlockHasher, ExtraKeys, HashError, HashScheme};
///
/// let err = BlockHasher::new(0, HashScheme::default(), ExtraKeys::new()).unwrap_err();
/// assert!(matches!(err, HashError::InvalidBlockSize { block_size: 0, .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// The block size is zero or larger than [`crate::BlockHasher::MAX_BLOCK_SIZE`].
    #[error("invalid block size {block_size}: must be in 1..={max}")]
    InvalidBlockSize {
        /// The rejected block size, in tokens.
        block_size: usize,
        /// The largest accepted block size, in tokens.
        max: usize,
    },

    /// A multimodal key covers no tokens (`start >= end`).
    #[error("multimodal key {content_hash:#018x} has an empty token range {start}..{end}")]
    EmptyMmRange {
        /// The content hash of the offending key.
        content_hash: u64,
        /// First token position covered.
        start: usize,
        /// One past the last token position covered.
        end: usize,
    },

    /// A multimodal key ends past the largest token position kvtier can address.
    #[error(
        "multimodal key {content_hash:#018x} range {start}..{end} exceeds the token position limit {limit}"
    )]
    MmRangeOutOfBounds {
        /// The content hash of the offending key.
        content_hash: u64,
        /// First token position covered.
        start: usize,
        /// One past the last token position covered.
        end: usize,
        /// The largest accepted `end`.
        limit: usize,
    },

    /// A slice handed to [`crate::BlockHasher::hash_block`] is not exactly one block long.
    #[error("block has {actual} tokens, expected exactly {expected}")]
    BlockLength {
        /// The hasher's block size.
        expected: usize,
        /// The length of the slice that was passed.
        actual: usize,
    },
}
