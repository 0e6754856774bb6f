//! [`SequenceError`]: why a [`crate::RequestSequence`] operation was refused.
//!
//! Every error leaves the sequence exactly as it was before the call: no token appended, no
//! block taken, nothing registered. Allocation failures carry the manager's [`AllocError`].

use crate::AllocError;

/// Why a [`RequestSequence`](crate::RequestSequence) operation was refused. The sequence is
/// unchanged by a failed call.
///
/// # Examples
///
/// ```
/// use kvtier_core::{BlockHasher, BlockManager, ExtraKeys, G1, HashScheme, RequestSequence,
///     SequenceError};
///
/// let manager = BlockManager::<G1>::builder().with_block_count(4).with_block_size(4).build()?;
/// let hasher = BlockHasher::new(8, HashScheme::default(), ExtraKeys::new())?;
/// let err = RequestSequence::new(&manager, hasher, vec![1, 2, 3], 8).unwrap_err();
/// assert_eq!(err, SequenceError::BlockSizeMismatch { hasher: 8, manager: 4 });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SequenceError {
    /// The hasher's block size differs from the manager's.
    #[error("hasher block size {hasher} differs from the manager's block size {manager}")]
    BlockSizeMismatch {
        /// Block size of the [`BlockHasher`](crate::BlockHasher).
        hasher: usize,
        /// Block size of the [`BlockManager`](crate::BlockManager).
        manager: usize,
    },

    /// The manager could not provide the blocks (nothing was taken).
    #[error("block allocation failed")]
    Alloc {
        /// The manager's error (requested and available counts).
        #[from]
        source: AllocError,
    },

    /// Taking more blocks would exceed what the sequence can ever use:
    /// `ceil((prompt + max_output_tokens) / block_size)`.
    #[error("{requested} more blocks would exceed the sequence's maximum of {max} ({held} held)")]
    TooManyBlocks {
        /// Blocks asked for.
        requested: usize,
        /// Blocks already held.
        held: usize,
        /// Most blocks the sequence may hold.
        max: usize,
    },

    /// Appending would generate more than `max_output_tokens` tokens.
    #[error(
        "cannot append {requested} tokens: {remaining} of max_output_tokens \
         {max_output_tokens} left"
    )]
    MaxOutputTokens {
        /// The sequence's output limit.
        max_output_tokens: usize,
        /// Tokens the call tried to append.
        requested: usize,
        /// Tokens that may still be generated.
        remaining: usize,
    },

    /// The sequence's blocks were released; call
    /// [`reacquire`](crate::RequestSequence::reacquire) first.
    #[error("the sequence is released; reacquire it first")]
    Released,

    /// [`reacquire`](crate::RequestSequence::reacquire) was called on a sequence that holds its
    /// blocks.
    #[error("the sequence is not released")]
    NotReleased,

    /// [`match_prefix`](crate::RequestSequence::match_prefix) must come before any block is
    /// allocated.
    #[error("cannot match a prefix: the sequence already holds {held} blocks")]
    BlocksHeld {
        /// Blocks held by the sequence.
        held: usize,
    },

    /// Decoding needs the KV of every token so far: the prompt is not fully prefilled.
    #[error("prefill incomplete: KV covers {kv_position} of {len} tokens")]
    PrefillIncomplete {
        /// Tokens whose KV is covered.
        kv_position: usize,
        /// Tokens in the sequence.
        len: usize,
    },

    /// A prefill chunk is longer than what is left to prefill.
    #[error("prefill chunk of {requested} tokens exceeds the {remaining} tokens left")]
    ChunkTooLarge {
        /// Tokens in the chunk.
        requested: usize,
        /// Tokens left to prefill.
        remaining: usize,
    },

    /// A rollback would remove prompt tokens.
    #[error("cannot roll back {requested} tokens: only {generated} were generated")]
    RollbackTooFar {
        /// Tokens asked to remove.
        requested: usize,
        /// Generated tokens in the sequence.
        generated: usize,
    },
}
