//! Arena statistics: what the region holds, derived from the manager's pools, and what went
//! through it, from the arena's counters.
//!
//! Accounting identity (asserted in debug builds on every [`HostArena::stats`] call, and by the
//! tests):
//!
//! ```text
//! capacity_bytes = allocated region
//!                = used_bytes + padding_bytes + free_bytes
//! used_bytes     = entries × block_bytes         padding_bytes = entries × (slot − block)
//! free_bytes     = free_entries × slot_bytes     entries + free_entries = block_count
//! ```
//!
//! [`HostArena::stats`]: super::HostArena::stats

use kvtier_core::MetricsSnapshot;

use crate::layout::BlockLayout;

/// A snapshot of a [`HostArena`](super::HostArena)'s statistics.
///
/// Pool figures are exact when no other thread uses the manager during the call (the
/// manager's snapshot locks one shard at a time); counters are relaxed atomics.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ArenaStats {
    /// Slots in the arena.
    pub block_count: u64,
    /// Bytes of one block.
    pub block_bytes: u64,
    /// Bytes of one slot (block rounded up to a page).
    pub slot_bytes: u64,
    /// Bytes of the region: `block_count × slot_bytes`.
    pub capacity_bytes: u64,
    /// Bytes of the blocks held in slots (`entries × block_bytes`).
    pub used_bytes: u64,
    /// Padding of the occupied slots (`entries × (slot_bytes − block_bytes)`).
    pub padding_bytes: u64,
    /// Bytes of the free slots (`free_entries × slot_bytes`).
    pub free_bytes: u64,
    /// Slots holding a block: being written, registered and held, or cached (inactive).
    pub entries: u64,
    /// Of those, slots held by a guard right now (cannot be evicted).
    pub active_entries: u64,
    /// Of those, cached blocks no guard holds (evictable).
    pub cached_entries: u64,
    /// Free slots (the manager's reset pool).
    pub free_entries: u64,
    /// Slots handed out by the manager since it was built (every allocation path).
    pub allocations: u64,
    /// Cached blocks evicted by the manager, their slots handed out again.
    pub evictions: u64,
    /// Internal fragmentation: `padding_bytes / (used_bytes + padding_bytes)`, 0 when no slot
    /// is occupied. External fragmentation is zero by construction: slots have one size, so any
    /// free slot serves any block.
    pub fragmentation: f64,
    /// Views and copies out of the arena.
    pub reads: u64,
    /// Mutable views and copies into the arena.
    pub writes: u64,
    /// Bytes copied out by `read_into` / `read_many_into`.
    pub bytes_read: u64,
    /// Bytes copied in by `write_from` / `write_many_from`.
    pub bytes_written: u64,
    /// Calls refused (foreign guard, wrong buffer size).
    pub rejected: u64,
}

impl ArenaStats {
    /// Builds the snapshot; `counters` = reads, writes, bytes read, bytes written, rejected.
    pub(crate) fn from_parts(
        layout: &BlockLayout,
        m: &MetricsSnapshot,
        region_bytes: u64,
        counters: [u64; 5],
    ) -> ArenaStats {
        let block_count = m.total_blocks;
        let block_bytes = layout.block_bytes() as u64;
        let slot_bytes = layout.slot_bytes() as u64;
        // Under concurrent use the per-shard snapshot may be momentarily skewed; clamp so the
        // identities hold for every snapshot, exact or not.
        let free_entries = m.reset_pool_size.min(block_count);
        let entries = block_count - free_entries;
        let cached_entries = m.inactive_pool_size.min(entries);
        let active_entries = entries - cached_entries;
        let used_bytes = entries * block_bytes;
        let padding_bytes = entries * (slot_bytes - block_bytes);
        let occupied = used_bytes + padding_bytes;
        let [reads, writes, bytes_read, bytes_written, rejected] = counters;
        ArenaStats {
            block_count,
            block_bytes,
            slot_bytes,
            capacity_bytes: region_bytes,
            used_bytes,
            padding_bytes,
            free_bytes: free_entries * slot_bytes,
            entries,
            active_entries,
            cached_entries,
            free_entries,
            allocations: m.allocations,
            evictions: m.evictions,
            fragmentation: if occupied == 0 {
                0.0
            } else {
                padding_bytes as f64 / occupied as f64
            },
            reads,
            writes,
            bytes_read,
            bytes_written,
            rejected,
        }
    }

    /// Whether the accounting identities hold against a region of `region_bytes`.
    pub fn is_consistent(&self, region_bytes: u64) -> bool {
        self.capacity_bytes == region_bytes
            && self.capacity_bytes == self.block_count * self.slot_bytes
            && self.used_bytes + self.padding_bytes + self.free_bytes == self.capacity_bytes
            && self.entries + self.free_entries == self.block_count
            && self.active_entries + self.cached_entries == self.entries
            && self.used_bytes == self.entries * self.block_bytes
            && (0.0..1.0).contains(&self.fragmentation)
    }

    /// Asserts [`is_consistent`](Self::is_consistent) in debug builds.
    pub(crate) fn debug_check(&self, region_bytes: u64) {
        debug_assert!(
            self.is_consistent(region_bytes),
            "arena statistics disagree with the region of {region_bytes} bytes: {self:?}"
        );
    }
}
