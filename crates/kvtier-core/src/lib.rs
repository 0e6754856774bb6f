//! kvtier-core: the logical KV-block layer of kvtier.
//!
//! (Crate map and the main-flow example are filled in as the manager lands.)

mod block_id;
mod eviction;
mod hash;

pub use block_id::BlockId;
pub use eviction::{AccessKind, EvictionPolicy, PolicyContext, PolicyFactory};
pub use hash::{SeqHashBuilder, SeqHashMap, SeqHasher, SequenceHash};
