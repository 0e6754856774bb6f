//! [`VllmStats`]: the counters of a running [`crate::VllmSource`], and the shared atomics
//! behind them.
//!
//! The source task is the only writer; readers take a [`VllmStats`] snapshot at any time.
//! Counters are monotonic and individually consistent, not consistent with each other (a
//! snapshot may see a batch counted before its blocks are).

use std::sync::atomic::{AtomicU64, Ordering};

use super::convert::VllmConvertStats;

/// How many converter counters there are ([`VllmConvertStats::fields`]).
const CONVERT_FIELDS: usize = 18;

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
    /// Gaps the replay buffer could not fill; the stream continues after them without
    /// clearing the instance (later stores re-establish what it holds).
    pub unrepairable_gaps: u64,
    /// Batches dropped because they were applied already.
    pub duplicates: u64,
    /// Publisher restarts seen (the live sequence went back); each emitted `Cleared`.
    pub resets: u64,
    /// Frames that are not a `[topic, seq, payload]` message, or batches that named a
    /// data-parallel rank past the 1024 a source follows (skipped).
    pub decode_errors: u64,
    /// Payloads that could not be decoded, live or replayed (a batch undecodable in both is
    /// counted twice); skipped without clearing anything.
    pub undecodable_batches: u64,
    /// The converters' counters, summed over every rank.
    pub convert: VllmConvertStats,
}

impl VllmStats {
    /// Every counter as `(metric suffix, help, value)`, for example
    /// `("skipped_events_unknown_tag", "...", 3)`; [`VllmConvertStats::pending_blocks`], a gauge, is
    /// in [`VllmStats::gauges`] instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use kvtier_router::VllmStats;
    ///
    /// let counters = VllmStats::default().counters();
    /// assert!(counters.iter().any(|(name, _, _)| *name == "undecodable_batches"));
    /// ```
    pub fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
        vec![
            (
                "connects",
                "SUB socket connections (1 plus reconnects)",
                self.connects,
            ),
            ("batches", "live batches received and decoded", self.batches),
            ("events", "events in the batches applied", self.events),
            (
                "messages",
                "kvtier messages sent to the router",
                self.messages,
            ),
            (
                "gaps_detected",
                "sequence gaps seen on the live stream",
                self.gaps_detected,
            ),
            (
                "replays_requested",
                "replay requests sent",
                self.replays_requested,
            ),
            (
                "replayed_batches",
                "replayed batches applied",
                self.replayed_batches,
            ),
            (
                "replay_failures",
                "replay requests that did not end with the end marker",
                self.replay_failures,
            ),
            (
                "unrepairable_gaps",
                "gaps the replay buffer could not fill",
                self.unrepairable_gaps,
            ),
            (
                "duplicate_batches",
                "batches dropped as applied already",
                self.duplicates,
            ),
            ("resets", "publisher restarts seen", self.resets),
            (
                "decode_errors",
                "malformed frames and batches naming too many ranks",
                self.decode_errors,
            ),
            (
                "undecodable_batches",
                "batches whose payload could not be decoded (skipped)",
                self.undecodable_batches,
            ),
            (
                "stored_blocks",
                "blocks announced as created",
                self.convert.stored_blocks,
            ),
            (
                "removed_blocks",
                "blocks announced as removed",
                self.convert.removed_blocks,
            ),
            (
                "duplicate_stores",
                "stored copies of blocks already held on that medium",
                self.convert.duplicate_stores,
            ),
            (
                "released_copies",
                "removed copies that were not the last on their medium",
                self.convert.released_copies,
            ),
            (
                "unplaceable_blocks",
                "blocks that could not be placed",
                self.convert.unplaceable_blocks,
            ),
            (
                "pending_dropped_blocks",
                "blocks dropped while waiting for their parent",
                self.convert.pending_dropped,
            ),
            (
                "placed_late_blocks",
                "blocks placed after waiting for their parent",
                self.convert.placed_late,
            ),
            (
                "reestablished_blocks",
                "ancestors held again because a store showed them held",
                self.convert.reestablished_blocks,
            ),
            (
                "learnt_from_peers",
                "mappings learnt from another rank of the source",
                self.convert.learnt_from_peers,
            ),
            (
                "conflicting_stores",
                "stores that remapped a known hash",
                self.convert.conflicting_stores,
            ),
            (
                "pending_removes",
                "removed blocks that were waiting for their parent",
                self.convert.pending_removes,
            ),
            (
                "unknown_removes",
                "removed hashes that were not known",
                self.convert.unknown_removes,
            ),
            (
                "filtered_events",
                "events dropped by the group filter",
                self.convert.filtered_events,
            ),
            ("clears", "Cleared messages sent", self.convert.clears),
            (
                "skipped_events_unknown_tag",
                "events skipped: unknown tag",
                self.convert.skipped_unknown_tag,
            ),
            (
                "skipped_events_unknown_medium",
                "events skipped: unknown medium",
                self.convert.skipped_unknown_medium,
            ),
            (
                "skipped_events_malformed",
                "events skipped: malformed",
                self.convert.skipped_malformed,
            ),
        ]
    }

    /// Every gauge as `(metric suffix, help, value)`: `pending_blocks`.
    pub fn gauges(&self) -> Vec<(&'static str, &'static str, u64)> {
        vec![(
            "pending_blocks",
            "blocks waiting for their parent",
            self.convert.pending_blocks,
        )]
    }
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
    pub(crate) undecodable_batches: AtomicU64,
    /// The converters' counters, summed over every rank (stored, not added).
    convert: [AtomicU64; CONVERT_FIELDS],
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
        for (slot, value) in self.convert.iter().zip(total.fields()) {
            slot.store(value, Ordering::Relaxed);
        }
    }

    /// A snapshot.
    pub(crate) fn snapshot(&self) -> VllmStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let c = VllmConvertStats::from_fields(self.convert.each_ref().map(get));
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
            undecodable_batches: get(&self.undecodable_batches),
            convert: c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_listed_once_with_its_value() {
        let counters = Counters::default();
        Counters::add(&counters.undecodable_batches, 3);
        let convert = VllmConvertStats {
            skipped_unknown_tag: 5,
            pending_blocks: 7,
            ..Default::default()
        };
        counters.set_convert(&convert);
        let stats = counters.snapshot();
        let listed = stats.counters();
        let value = |name: &str| listed.iter().find(|(n, _, _)| *n == name).map(|c| c.2);
        assert_eq!(value("undecodable_batches"), Some(3));
        assert_eq!(value("skipped_events_unknown_tag"), Some(5));
        assert_eq!(
            stats.gauges(),
            [("pending_blocks", "blocks waiting for their parent", 7)]
        );
        let mut names: Vec<_> = listed.iter().map(|c| c.0).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), listed.len(), "unique names");
        // Every field but the gauge is a counter: 31 fields in all.
        assert_eq!(listed.len() + stats.gauges().len(), 31);
    }
}
