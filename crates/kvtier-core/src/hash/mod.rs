//! Hashing: token blocks, block hashes, sequence hashes.
//!
//! Owns how a request's tokens become the identities that the rest of kvtier indexes:
//!
//! ```text
//! tokens ──chunks of block_size──▶ block hashes ──chained──▶ sequence hashes
//!   ▲ trailing partial block:         ▲ + ExtraKeys            (position, parent fragment,
//!     never hashed                      (namespace, mm)          chained u64)
//! ```
//!
//! - [`BlockHasher`]: a validated block size, [`HashScheme`] and [`ExtraKeys`]; hashes slices.
//! - [`TokenSequence`]: a growing sequence (decode) that hashes each block once, when it fills.
//! - [`SequenceHash`]: the identity of a block and its whole prefix.
//!
//! This module is synchronous, does no I/O and never panics on input: configuration errors are
//! [`HashError`] values returned by [`BlockHasher::new`].

mod block_hasher;
mod error;
mod extra_keys;
mod scheme;
mod sequence_hash;
mod token_sequence;

pub use block_hasher::BlockHasher;
pub use error::HashError;
pub use extra_keys::{ExtraKeys, MmKey};
pub use scheme::HashScheme;
pub use sequence_hash::{SeqHashBuilder, SeqHashMap, SeqHasher, SequenceHash};
pub use token_sequence::{TokenBlock, TokenSequence};
