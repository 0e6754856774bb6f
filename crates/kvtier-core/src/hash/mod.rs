//! Hashing: token blocks, block hashes, sequence hashes.

mod sequence_hash;

pub use sequence_hash::{SeqHashBuilder, SeqHashMap, SeqHasher, SequenceHash};
