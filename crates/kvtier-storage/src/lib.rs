//! kvtier's physical tiers: the bytes behind the logical blocks of `kvtier-core`.
//!
//! - [`layout`]: how many bytes one block holds (from a model's shape or given directly).
//! - [`arena`]: G2, a pre-allocated host-memory arena; block id `i` owns slot `i`.
//! - [`disk`]: G3, block bytes in preallocated files on local disk, indexed, checksummed and
//!   crash safe.

pub mod arena;
pub mod disk;
pub mod layout;
