//! [`VllmStats`]: the counters of a running [`crate::VllmSource`], and the shared atomics
//! behind them.
//!
//! The source task is the only writer; readers take a [`VllmStats`] snapshot at any time.
//! Counters are monotonic and individually consistent, not consistent with each other (a
//! snapshot may see a batch counted before its blocks are).

use std::sync::atomic::{AtomicU64, Ordering};

use super::convert::VllmConvertStats;

/// A snapshot of a source's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VllmStats {
    /// Times the SUB socket connected (1 plus reconnects).
    pub connects: u64,
    /// Live batches received and decoded.
    pub batches: u64,
    /// Events in the batches applied (live and replayed).
    pub events: u64,
    /// kvtier messages sent to the consumer.
    pub messages: u64,
    /// Sequence gaps seen on the live stream.
    pub gaps_detected: u64,
    /// Replay requests sent (gap repairs and late-join catch-ups).
    pub replays_requested: u64,
    /// Replayed batches applied.
    pub replayed_batches: u64,
    /// Replay requests that did not finish with the end marker.
    pub replay_failures: u64,
    /// Gaps the replay buffer could not fill; each emitted `Cleared` for the instance.
    pub unrepairable_gaps: u64,
    /// Batches dropped because they were applied already.
    pub duplicates: u64,
    /// Publisher restarts seen (the live sequence went back); each emitted `Cleared`.
    pub resets: u64,
    /// Payloads or frames that could not be decoded, or that named a data-parallel rank past
    /// the 1024 a source follows (skipped).
    pub decode_errors: u64,
    /// Blocks announced as created.
    pub stored_blocks: u64,
    /// Blocks announced as removed.
    pub removed_blocks: u64,
    /// Stored blocks that could not be placed (unknown parent, missing tokens).
    pub unplaceable_blocks: u64,
    /// Removed hashes that were not known.
    pub unknown_removes: u64,
    /// Stored blocks that were known already.
    pub duplicate_stores: u64,
    /// Events dropped by the group filter.
    pub filtered_events: u64,
    /// `Cleared` messages sent (engine resets, unrepairable gaps, `AllBlocksCleared`).
    pub clears: u64,
}

/// The live counters; one writer (the source task).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connects: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) messages: AtomicU64,
    pub(crate) gaps_detected: AtomicU64,
    pub(crate) replays_requested: AtomicU64,
    pub(crate) replayed_batches: AtomicU64,
    pub(crate) replay_failures: AtomicU64,
    pub(crate) unrepairable_gaps: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) resets: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    /// The converters' counters, summed over every rank (stored, not added).
    convert: [AtomicU64; 7],
}

impl Counters {
    /// Adds one to a counter.
    pub(crate) fn bump(counter: &AtomicU64) {
        Self::add(counter, 1);
    }

    /// Adds `n` to a counter.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Publishes the converters' summed counters.
    pub(crate) fn set_convert(&self, total: &VllmConvertStats) {
        let values = [
            total.stored_blocks,
            total.removed_blocks,
            total.unplaceable_blocks,
            total.unknown_removes,
            total.duplicate_stores,
            total.filtered_events,
            total.clears,
        ];
        for (slot, value) in self.convert.iter().zip(values) {
            slot.store(value, Ordering::Relaxed);
        }
    }

    /// A snapshot.
    pub(crate) fn snapshot(&self) -> VllmStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let [
            stored,
            removed,
            unplaceable,
            unknown,
            dup_stores,
            filtered,
            clears,
        ] = self.convert.each_ref().map(get);
        VllmStats {
            connects: get(&self.connects),
            batches: get(&self.batches),
            events: get(&self.events),
            messages: get(&self.messages),
            gaps_detected: get(&self.gaps_detected),
            replays_requested: get(&self.replays_requested),
            replayed_batches: get(&self.replayed_batches),
            replay_failures: get(&self.replay_failures),
            unrepairable_gaps: get(&self.unrepairable_gaps),
            duplicates: get(&self.duplicates),
            resets: get(&self.resets),
            decode_errors: get(&self.decode_errors),
            stored_blocks: stored,
            removed_blocks: removed,
            unplaceable_blocks: unplaceable,
            unknown_removes: unknown,
            duplicate_stores: dup_stores,
            filtered_events: filtered,
            clears,
        }
    }
}
