//! [`ReplayRow`]: one result line (a policy at a capacity), shared by every simulator and the
//! manager replay, and the small counter type they fill in.
//!
//! The metric: per request, hits = the leading run of its blocks found cached; hit rate = total
//! hits / total blocks requested. Requests per second are measured over the replay loop only
//! (parsing, chain building and simulator set-up excluded).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Requests between two calls of a progress callback.
pub const PROGRESS_EVERY: u64 = 1024;

/// One result of replaying a trace: a policy at one capacity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReplayRow {
    /// Lower-case policy name (`lru`, `fifo`, `belady`, `infinite`, ...).
    pub policy: String,
    /// Blocks the cache holds; `None` for the infinite-capacity bound.
    pub capacity: Option<usize>,
    /// Shard count of the replayed block manager as built; `None` for the offline bounds
    /// (Belady, infinite), which are not managers.
    #[serde(default)]
    pub shards: Option<usize>,
    /// Blocks found cached (sum over requests of the leading run of hits).
    pub hit_blocks: u64,
    /// Blocks requested.
    pub total_blocks: u64,
    /// `hit_blocks / total_blocks` (0 when nothing was requested).
    pub hit_rate: f64,
    /// Requests replayed.
    pub requests: u64,
    /// Requests per second of wall time over the replay loop alone.
    pub requests_per_sec: f64,
    /// Requests with more blocks than the capacity: their hits are counted, nothing is
    /// allocated for them.
    pub oversized: u64,
}

/// Counters a replay loop accumulates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) hit_blocks: u64,
    pub(crate) total_blocks: u64,
    pub(crate) requests: u64,
    pub(crate) oversized: u64,
}

impl Counts {
    pub(crate) fn into_row(
        self,
        policy: &str,
        capacity: Option<usize>,
        wall: Duration,
    ) -> ReplayRow {
        let secs = wall.as_secs_f64();
        ReplayRow {
            policy: policy.to_string(),
            capacity,
            shards: None,
            hit_blocks: self.hit_blocks,
            total_blocks: self.total_blocks,
            hit_rate: if self.total_blocks == 0 {
                0.0
            } else {
                self.hit_blocks as f64 / self.total_blocks as f64
            },
            requests: self.requests,
            requests_per_sec: if secs > 0.0 {
                self.requests as f64 / secs
            } else {
                0.0
            },
            oversized: self.oversized,
        }
    }
}

/// Calls `progress` every [`PROGRESS_EVERY`] requests, and once more at the end for the rest.
pub(crate) struct Ticker<'a> {
    progress: &'a mut dyn FnMut(u64),
    pending: u64,
}

impl<'a> Ticker<'a> {
    pub(crate) fn new(progress: &'a mut dyn FnMut(u64)) -> Self {
        Self {
            progress,
            pending: 0,
        }
    }

    #[inline]
    pub(crate) fn tick(&mut self) {
        self.pending += 1;
        if self.pending == PROGRESS_EVERY {
            (self.progress)(self.pending);
            self.pending = 0;
        }
    }

    pub(crate) fn finish(self) {
        if self.pending > 0 {
            (self.progress)(self.pending);
        }
    }
}
