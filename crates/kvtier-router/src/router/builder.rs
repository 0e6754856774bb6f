//! [`RouterBuilder`], the router's settings, and [`RouterStats`], its counters.
//!
//! Nothing here touches the index or the instances: the builder only carries settings into
//! [`Router`], and the stats are plain counters the router bumps as it applies messages.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use hashbrown::HashMap;
use kvtier_core::HashScheme;

use super::Router;
use crate::index::PrefixIndex;
use crate::instances::Instances;
use crate::query::{LoadSignal, NoLoad};

/// Default number of early messages buffered per instance while a gap is open.
pub const DEFAULT_MAX_EARLY: usize = 4096;

/// The most blocks [`RouterBuilder::with_expected_blocks`] sizes the index for (`1 << 30`,
/// a 64 GiB table): a larger figure is almost surely a mistake, and the table can still grow.
pub const MAX_EXPECTED_BLOCKS: usize = 1 << 30;

/// Counters and gauges of a router.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Messages received (including duplicates).
    pub messages: u64,
    /// Block creations applied (hashes in Create batches, repeats included).
    pub creates: u64,
    /// Block removals applied (hashes in Remove batches).
    pub removes: u64,
    /// Removes of hashes the instance was not known to hold (ignored).
    pub unknown_removes: u64,
    /// Messages already applied (duplicates and overlapping replays; ignored).
    pub duplicates: u64,
    /// Messages from retired instances, and stale dumps (ignored).
    pub stale: u64,
    /// Messages and dumps of new instances refused because every slot was taken.
    pub rejected: u64,
    /// Messages and dumps refused because their event id is outside `1..u64::MAX` (0 is
    /// never sent, and `u64::MAX` would leave no id for the next message).
    pub bad_event_ids: u64,
    /// Gaps in an instance's event ids detected.
    pub gaps_detected: u64,
    /// Gaps closed by replay.
    pub repaired_by_replay: u64,
    /// Gaps closed by a dump.
    pub repaired_by_dump: u64,
    /// Repairs (replay, then dump) that failed: the source was unreachable or answered with
    /// neither the range asked for nor a dump of the instance.
    pub repairs_failed: u64,
    /// Gaps skipped with nothing to repair them from (the index may be stale for that instance
    /// until it next clears or dumps).
    pub gaps_skipped: u64,
    /// Instances that shut down.
    pub shutdowns: u64,
    /// Instances that expired after silence.
    pub expired: u64,
    /// Queries answered.
    pub queries: u64,
    /// Instances known now.
    pub instances: u64,
    /// Distinct hashes in the index now.
    pub blocks: u64,
    /// (hash, instance, medium) entries in the index now.
    pub entries: u64,
}

/// Builds a [`Router`].
pub struct RouterBuilder {
    pub(super) max_early: usize,
    pub(super) expiry: Option<Duration>,
    pub(super) weights: [f64; 4],
    pub(super) load: Arc<dyn LoadSignal>,
    pub(super) load_weight: f64,
    pub(super) scheme: HashScheme,
    pub(super) expected_blocks: usize,
}

impl Default for RouterBuilder {
    fn default() -> Self {
        Self {
            max_early: DEFAULT_MAX_EARLY,
            expiry: None,
            weights: [1.0, 0.75, 0.5, 0.25],
            load: Arc::new(NoLoad),
            load_weight: 0.0,
            scheme: HashScheme::default(),
            expected_blocks: 0,
        }
    }
}

impl RouterBuilder {
    /// Early messages buffered per instance while a gap is open (at least 1). Default:
    /// [`DEFAULT_MAX_EARLY`].
    pub fn with_max_early(mut self, n: usize) -> Self {
        self.max_early = n.max(1);
        self
    }

    /// Instances silent for longer than this are forgotten by [`Router::expire`]. Default:
    /// never.
    pub fn with_expiry(mut self, expiry: Option<Duration>) -> Self {
        self.expiry = expiry;
        self
    }

    /// How much one block held on each medium (GPU, CPU, DISK, EXTERNAL, in
    /// [`Medium::ALL`](kvtier_core::Medium::ALL) order) is worth when choosing the best
    /// instance. Default `[1.0, 0.75, 0.5, 0.25]`: a block in accelerator memory saves the most.
    pub fn with_medium_weights(mut self, weights: [f64; 4]) -> Self {
        self.weights = weights;
        self
    }

    /// The load signal that breaks ties between instances with equal overlap. Default:
    /// [`NoLoad`] (ties go to the lowest instance id).
    pub fn with_load_signal(mut self, load: Arc<dyn LoadSignal>) -> Self {
        self.load = load;
        self
    }

    /// How much load counts against overlap: an instance's score is its weighted overlap
    /// minus `weight * load`. With 0 (the default) the best instance is the one with the
    /// largest overlap and load only breaks ties; with load measured in blocks of active work
    /// and weight 1, the choice minimises "blocks to prefill + blocks already queued", which
    /// keeps a popular shared prefix from sending every request to one instance.
    pub fn with_load_weight(mut self, weight: f64) -> Self {
        self.load_weight = if weight.is_finite() {
            weight.max(0.0)
        } else {
            0.0
        };
        self
    }

    /// The hash scheme the instances use (for queries given as tokens). Default:
    /// [`HashScheme::default`].
    pub fn with_hash_scheme(mut self, scheme: HashScheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// How many distinct blocks the index is expected to hold (for example the sum of the
    /// engines' cache sizes), so that its table is allocated once when the router is built
    /// instead of doubling while the engines warm up (each doubling moves every entry and
    /// faults in a new table). The table still grows beyond. Clamped to
    /// [`MAX_EXPECTED_BLOCKS`]. Default 0: unknown, the table starts empty.
    ///
    /// The table takes 32 bytes per bucket at a load of at most 3/4, rounded up to a power of
    /// two: 43–85 bytes per expected block, allocated and written at once.
    pub fn with_expected_blocks(mut self, blocks: usize) -> Self {
        self.expected_blocks = blocks.min(MAX_EXPECTED_BLOCKS);
        self
    }

    /// Builds an empty router.
    pub fn build(self) -> Router {
        Router {
            index: if self.expected_blocks == 0 {
                PrefixIndex::new()
            } else {
                PrefixIndex::with_capacity(self.expected_blocks)
            },
            instances: Instances::default(),
            sources: HashMap::new(),
            repairs: Vec::new(),
            stats: RouterStats::default(),
            queries: AtomicU64::new(0),
            config: self,
        }
    }
}
