//! [`SeqTracker`]: what to do with the next batch of one publisher's stream, by sequence number.
//!
//! vLLM's `ZmqEventPublisher` numbers its batches 0, 1, 2, ... (`itertools.count()`); every
//! data-parallel rank runs its own publisher, on its own port, with its own counter, so one
//! tracker follows one rank. The PUB socket delivers a publisher's batches in order but may drop
//! some (slow subscriber, reconnect); the ROUTER replay socket re-sends buffered ones on request,
//! which can duplicate batches the live stream then also delivers.
//!
//! ```text
//! live seq s, nothing applied yet:  s == 0 → Apply          s > 0 → Join { to: s-1 }
//! live seq s, last applied a, previous live seq p:
//!     s <= p       → Reset   (the live stream went back: a new publisher, its cache is empty)
//!     s <= a       → Duplicate (replay already applied it)
//!     s == a + 1   → Apply
//!     s >  a + 1   → Gap { from: a+1, to: s-1 }
//! ```
//!
//! The tracker is synchronous and owns no I/O; the source task acts on the verdicts (replays,
//! clears) and reports what it applied with [`SeqTracker::applied`].

/// What to do with a batch received on the live socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LiveVerdict {
    /// It is the next batch: apply it.
    Apply,
    /// It was applied already (through replay): drop it.
    Duplicate,
    /// Batches `from..=to` were missed: repair them, then offer the batch again.
    Gap { from: u64, to: u64 },
    /// The first batch seen is not the publisher's first: batches `0..=to` may be fetched from
    /// the replay buffer first (best effort: nothing was known, so nothing can be stale).
    Join { to: u64 },
    /// The publisher restarted: forget the stream, then offer the batch again.
    Reset,
}

/// The sequence state of one publisher's stream.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SeqTracker {
    last_applied: Option<u64>,
    last_live: Option<u64>,
}

impl SeqTracker {
    /// A tracker resumed after a restart with `last_applied` as the last batch applied.
    ///
    /// The next live batch continues the stream (`last + 1`), opens a gap that is replayed
    /// (`> last + 1`), or, at or before `last`, shows that the publisher restarted meanwhile
    /// (nothing was replayed yet, so it cannot be a duplicate).
    pub(crate) fn restored(last_applied: Option<u64>) -> Self {
        Self {
            last_applied,
            last_live: last_applied,
        }
    }

    /// Judges a batch received live with sequence number `seq`, and records it as seen live.
    ///
    /// Call it once per live batch: after a [`LiveVerdict::Gap`] or [`LiveVerdict::Join`] the
    /// held batch is checked with [`SeqTracker::is_applied`], not judged again.
    pub(crate) fn on_live(&mut self, seq: u64) -> LiveVerdict {
        let previous_live = self.last_live.replace(seq);
        let Some(last) = self.last_applied else {
            return if seq == 0 {
                LiveVerdict::Apply
            } else {
                LiveVerdict::Join { to: seq - 1 }
            };
        };
        if previous_live.is_some_and(|p| seq <= p) {
            LiveVerdict::Reset
        } else if seq <= last {
            LiveVerdict::Duplicate
        } else if seq == last + 1 {
            LiveVerdict::Apply
        } else {
            LiveVerdict::Gap {
                from: last + 1,
                to: seq - 1,
            }
        }
    }

    /// Whether a batch with sequence number `seq` (from the replay socket) was applied already.
    pub(crate) fn is_applied(&self, seq: u64) -> bool {
        self.last_applied.is_some_and(|a| seq <= a)
    }

    /// The sequence number of the last batch applied.
    pub(crate) fn last_applied(&self) -> Option<u64> {
        self.last_applied
    }

    /// Records that batch `seq` was applied (or given up on: the stream continues after it).
    pub(crate) fn applied(&mut self, seq: u64) {
        self.last_applied = Some(seq);
    }

    /// Forgets everything (publisher restart). The next live batch is judged as a first one.
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_applies_everything() {
        let mut t = SeqTracker::default();
        for seq in 0..5 {
            assert_eq!(t.on_live(seq), LiveVerdict::Apply);
            t.applied(seq);
        }
        assert_eq!(t.last_applied(), Some(4));
    }

    #[test]
    fn late_join_asks_for_the_history() {
        let mut t = SeqTracker::default();
        assert_eq!(t.on_live(7), LiveVerdict::Join { to: 6 });
        t.applied(7);
        assert_eq!(t.on_live(8), LiveVerdict::Apply);
    }

    #[test]
    fn gap_then_duplicates_after_replay() {
        let mut t = SeqTracker::default();
        assert_eq!(t.on_live(0), LiveVerdict::Apply);
        t.applied(0);
        assert_eq!(t.on_live(3), LiveVerdict::Gap { from: 1, to: 2 });
        // The replay delivered 1..=5.
        for seq in 1..=5 {
            assert!(!t.is_applied(seq));
            t.applied(seq);
        }
        // The held live batch 3 is covered; 4 and 5 then arrive live: duplicates.
        assert!(t.is_applied(3));
        assert_eq!(t.on_live(4), LiveVerdict::Duplicate);
        assert_eq!(t.on_live(5), LiveVerdict::Duplicate);
        assert_eq!(t.on_live(6), LiveVerdict::Apply);
    }

    #[test]
    fn a_restored_tracker_continues_replays_or_resets() {
        let mut t = SeqTracker::restored(Some(9));
        assert_eq!(t.on_live(10), LiveVerdict::Apply);
        let mut t = SeqTracker::restored(Some(9));
        assert_eq!(t.on_live(14), LiveVerdict::Gap { from: 10, to: 13 });
        // The engine restarted while the router was down.
        let mut t = SeqTracker::restored(Some(9));
        assert_eq!(t.on_live(2), LiveVerdict::Reset);
        let mut t = SeqTracker::restored(None);
        assert_eq!(t.on_live(3), LiveVerdict::Join { to: 2 });
    }

    #[test]
    fn live_stream_going_back_is_a_restart() {
        let mut t = SeqTracker::default();
        for seq in 0..10 {
            t.on_live(seq);
            t.applied(seq);
        }
        assert_eq!(t.on_live(0), LiveVerdict::Reset);
        t.reset();
        assert_eq!(t.on_live(0), LiveVerdict::Apply);
        // A restart noticed late (after a reconnect) is a reset too, not a run of duplicates.
        for seq in 0..10 {
            t.on_live(seq);
            t.applied(seq);
        }
        assert_eq!(t.on_live(4), LiveVerdict::Reset);
    }
}
