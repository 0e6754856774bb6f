//! kvbm-logical 1.6.1 (NVIDIA Dynamo) behind [`BlockManagerOps`], configured as in the anchor
//! harness (`shared/anchors/kvbm-logical-bench/src/kvbm.rs`): duplication policy `Allow`, and a
//! TinyLFU frequency tracker (`FrequencyTrackingCapacity::Medium`) on the registry unless the
//! factory says otherwise ([`KvbmFactory::without_tracker`]).
//!
//! The tracker is what kvbm's README configuration runs with, and `match_blocks` touches it for
//! every returned block: the anchor README measures 41–51 ns per matched block with it and 16–21 ns
//! without it. Both are reported, so a ratio against kvbm names which kvbm it is.
//!
//! kvbm has no batch release: a request's handles are dropped one by one (the trait's default
//! [`BlockManagerOps::release`]). Keys are `PositionalLineageHash::new(chain[i], Some(chain[i -
//! 1]), i)`, the anchor's construction. Only built with the `kvbm` feature.

use kvbm_logical::manager::FrequencyTrackingCapacity;
use kvbm_logical::{BlockManager, BlockRegistry, ImmutableBlock, SequenceHash};

use crate::ops::{BlockManagerOps, ManagerFactory};

/// kvbm's storage-tier marker type parameter.
#[derive(Clone, Copy, Debug)]
pub struct KvbmG1;

/// kvbm inactive-pool backends compared here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvbmBackend {
    /// `with_lru_backend()`.
    Lru,
    /// `with_lineage_backend()` (lineage graph, tick eviction: the builder default).
    Lineage,
}

impl KvbmBackend {
    /// Both, in report order.
    pub const ALL: [KvbmBackend; 2] = [KvbmBackend::Lru, KvbmBackend::Lineage];

    /// Lower-case label.
    pub fn label(self) -> &'static str {
        match self {
            KvbmBackend::Lru => "lru",
            KvbmBackend::Lineage => "lineage",
        }
    }
}

/// Builds kvbm managers with one backend, with or without the TinyLFU tracker.
#[derive(Clone, Copy, Debug)]
pub struct KvbmFactory {
    /// The inactive-pool backend.
    pub backend: KvbmBackend,
    /// Whether the registry gets a TinyLFU frequency tracker (the anchors' configuration).
    pub tracker: bool,
}

impl KvbmFactory {
    /// `backend` with the TinyLFU tracker (the anchors' configuration).
    pub fn new(backend: KvbmBackend) -> Self {
        Self {
            backend,
            tracker: true,
        }
    }

    /// The same backend without the TinyLFU tracker (a plain registry).
    pub fn without_tracker(mut self) -> Self {
        self.tracker = false;
        self
    }
}

impl ManagerFactory for KvbmFactory {
    type M = KvbmOps;

    /// `kvbm/lru`, or `kvbm/lru (no TinyLFU)` without the tracker.
    fn label(&self) -> String {
        if self.tracker {
            format!("kvbm/{}", self.backend.label())
        } else {
            format!("kvbm/{} (no TinyLFU)", self.backend.label())
        }
    }

    fn build(&self, capacity: usize, block_size: usize) -> KvbmOps {
        let registry = if self.tracker {
            BlockRegistry::builder()
                .frequency_tracker(FrequencyTrackingCapacity::Medium.create_tracker())
                .build()
        } else {
            BlockRegistry::builder().build()
        };
        let b = BlockManager::<KvbmG1>::builder()
            .block_count(capacity)
            .block_size(block_size)
            .registry(registry);
        let b = match self.backend {
            KvbmBackend::Lru => b.with_lru_backend(),
            KvbmBackend::Lineage => b.with_lineage_backend(),
        };
        KvbmOps {
            mgr: b.build().expect("kvbm BlockManager build"),
            block_size,
        }
    }
}

/// A kvbm manager driven through [`BlockManagerOps`].
pub struct KvbmOps {
    /// The manager.
    pub mgr: BlockManager<KvbmG1>,
    block_size: usize,
}

impl BlockManagerOps for KvbmOps {
    type Key = SequenceHash;
    type Handle = ImmutableBlock<KvbmG1>;

    fn make_keys(&self, chain: &[u64]) -> Vec<SequenceHash> {
        chain
            .iter()
            .enumerate()
            .map(|(i, &h)| {
                let parent = if i == 0 { None } else { Some(chain[i - 1]) };
                SequenceHash::new(h, parent, i as u64)
            })
            .collect()
    }

    #[inline]
    fn match_prefix(&self, keys: &[SequenceHash]) -> Vec<ImmutableBlock<KvbmG1>> {
        self.mgr.match_blocks(keys)
    }

    #[inline]
    fn allocate_register(&self, keys: &[SequenceHash]) -> Option<Vec<ImmutableBlock<KvbmG1>>> {
        if keys.is_empty() {
            return Some(Vec::new());
        }
        let blocks = self.mgr.allocate_blocks(keys.len())?;
        let staged: Vec<_> = blocks
            .into_iter()
            .zip(keys)
            .map(|(b, &k)| b.stage(k, self.block_size).expect("block size matches"))
            .collect();
        Some(self.mgr.register_blocks(staged))
    }

    fn available_blocks(&self) -> usize {
        self.mgr.available_blocks()
    }
}
