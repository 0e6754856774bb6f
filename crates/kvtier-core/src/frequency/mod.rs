//! Frequency tracking: how often a key (a block's sequence hash) has been seen recently.
//!
//! [`FrequencyTracker`] is the seam: something that can be told about an access (`touch`) and
//! asked for an approximate recent count (`count`). Two implementations ship:
//! - [`FrequencySketch`], a lock-free TinyLFU count-min sketch (4-bit counters, conservative
//!   update, periodic halving) sized by a builder;
//! - [`NoopTracker`], which counts nothing (every count is 0).
//!
//! Keys are `u64`s; for blocks use [`crate::SequenceHash::mix64`] everywhere so that every
//! component touching one shared tracker agrees on the key. This module does not decide who
//! touches: the multi-level LRU policy counts the access signals it is given, and nothing else
//! in the core touches a tracker behind the caller's back.

mod sketch;

pub use sketch::{FrequencySketch, FrequencySketchBuilder, MAX_SKETCH_CAPACITY, SketchConfigError};

/// Approximate, thread-safe access counting for `u64` keys.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use kvtier_core::{FrequencySketch, FrequencyTracker, NoopTracker};
///
/// let trackers: [Arc<dyn FrequencyTracker>; 2] = [
///     Arc::new(FrequencySketch::builder(256).build()?),
///     Arc::new(NoopTracker),
/// ];
/// for t in &trackers {
///     t.touch(7);
///     t.touch(7);
/// }
/// assert_eq!(trackers[0].count(7), 2);
/// assert_eq!(trackers[1].count(7), 0);
/// # Ok::<(), kvtier_core::SketchConfigError>(())
/// ```
pub trait FrequencyTracker: Send + Sync + 'static {
    /// Records one access of `key`.
    fn touch(&self, key: u64);

    /// The approximate number of recent accesses of `key`.
    fn count(&self, key: u64) -> u32;

    /// The largest value [`Self::count`] can return; thresholds above it are unreachable.
    /// Default: `u32::MAX` (no stated bound).
    fn max_count(&self) -> u32 {
        u32::MAX
    }
}

impl FrequencyTracker for FrequencySketch {
    #[inline]
    fn touch(&self, key: u64) {
        self.increment(key);
    }

    #[inline]
    fn count(&self, key: u64) -> u32 {
        u32::from(self.estimate(key))
    }

    /// 15: counters are four bits wide.
    fn max_count(&self) -> u32 {
        15
    }
}

/// A [`FrequencyTracker`] that records nothing: every count is 0.
///
/// With it, a frequency-tiered policy puts every block in its coldest level (plain LRU).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopTracker;

impl FrequencyTracker for NoopTracker {
    #[inline]
    fn touch(&self, _key: u64) {}

    #[inline]
    fn count(&self, _key: u64) -> u32 {
        0
    }
}
