//! [`BlockId`]: the index of a block slot inside one manager (`0..block_count`).

use std::fmt;

/// Index of a block slot inside one block manager, in `0..block_count`.
///
/// Ids are dense, so eviction policies can keep per-block state in plain arrays.
///
/// # Examples
///
/// ```
/// use kvtier_core::BlockId;
///
/// let id = BlockId::new(3);
/// assert_eq!(id.index(), 3);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BlockId(u32);

impl BlockId {
    /// Wraps a raw slot index.
    pub const fn new(raw: u32) -> Self {
        Self(raw)
    }

    /// The raw slot index as `u32`.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// The slot index as `usize` (for indexing arrays).
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockId({})", self.0)
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
