//! [`VllmConvertStats`]: the counters of one [`super::VllmConverter`].

/// Counters of one converter (monotonic, except [`VllmConvertStats::pending_blocks`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VllmConvertStats {
    /// Blocks announced as created (a first copy on a medium), re-established ones included.
    pub stored_blocks: u64,
    /// Blocks announced as removed (the last copy on a medium went).
    pub removed_blocks: u64,
    /// Stored copies of blocks already held on that medium (counted, not announced).
    pub duplicate_stores: u64,
    /// Removed copies that were not the last one on their medium (counted, not announced).
    pub released_copies: u64,
    /// Blocks that could not be placed: an offloaded copy of an unknown hash, missing
    /// tokens, an unusable block size, or a pending block dropped (bound reached, or the
    /// engine cleared its cache while it waited).
    pub unplaceable_blocks: u64,
    /// Of those, pending blocks dropped.
    pub pending_dropped: u64,
    /// Blocks waiting for their parent now (a gauge).
    pub pending_blocks: u64,
    /// Blocks placed after waiting for their parent.
    pub placed_late: u64,
    /// Ancestors held again because a store under them showed the engine holds them.
    pub reestablished_blocks: u64,
    /// Mappings learnt from another rank of the same source.
    pub learnt_from_peers: u64,
    /// Stores that mapped a known external hash to another kvtier hash (the old one is
    /// announced removed).
    pub conflicting_stores: u64,
    /// Removed copies of blocks waiting for their parent (placed as not held).
    pub pending_removes: u64,
    /// Removed copies that were not held on that medium.
    pub unknown_removes: u64,
    /// Events dropped by the group filter.
    pub filtered_events: u64,
    /// `Cleared` messages emitted (`AllBlocksCleared`, engine restarts).
    pub clears: u64,
    /// Events skipped because their tag is unknown.
    pub skipped_unknown_tag: u64,
    /// Events skipped because their medium is unknown.
    pub skipped_unknown_medium: u64,
    /// Events skipped because they are malformed.
    pub skipped_malformed: u64,
}

impl VllmConvertStats {
    /// Adds `other` to `self`, field by field.
    pub fn accumulate(&mut self, other: &VllmConvertStats) {
        let mine = self.fields_mut();
        for (a, b) in mine.into_iter().zip(other.fields()) {
            *a += b;
        }
    }

    /// Every field, in declaration order.
    pub(crate) fn fields(&self) -> [u64; 18] {
        [
            self.stored_blocks,
            self.removed_blocks,
            self.duplicate_stores,
            self.released_copies,
            self.unplaceable_blocks,
            self.pending_dropped,
            self.pending_blocks,
            self.placed_late,
            self.reestablished_blocks,
            self.learnt_from_peers,
            self.conflicting_stores,
            self.pending_removes,
            self.unknown_removes,
            self.filtered_events,
            self.clears,
            self.skipped_unknown_tag,
            self.skipped_unknown_medium,
            self.skipped_malformed,
        ]
    }

    /// Every field, mutably, in declaration order.
    fn fields_mut(&mut self) -> [&mut u64; 18] {
        [
            &mut self.stored_blocks,
            &mut self.removed_blocks,
            &mut self.duplicate_stores,
            &mut self.released_copies,
            &mut self.unplaceable_blocks,
            &mut self.pending_dropped,
            &mut self.pending_blocks,
            &mut self.placed_late,
            &mut self.reestablished_blocks,
            &mut self.learnt_from_peers,
            &mut self.conflicting_stores,
            &mut self.pending_removes,
            &mut self.unknown_removes,
            &mut self.filtered_events,
            &mut self.clears,
            &mut self.skipped_unknown_tag,
            &mut self.skipped_unknown_medium,
            &mut self.skipped_malformed,
        ]
    }

    /// The counters from [`VllmConvertStats::fields`].
    pub(crate) fn from_fields(f: [u64; 18]) -> Self {
        let mut s = Self::default();
        for (slot, v) in s.fields_mut().into_iter().zip(f) {
            *slot = v;
        }
        s
    }
}
