//! kvtier-core behind [`BlockManagerOps`], and the list of every eviction backend kvtier-core
//! exports ([`kvtier_backends`]).
//!
//! A [`KvtierFactory`] builds managers in the default [`BlockManager`] configuration (its
//! default shard count) unless told otherwise ([`KvtierFactory::with_shards`]), and releases a
//! request's handles the way every engine can, one `drop(ImmutableBlock)` at a time, front to
//! back ([`Release::PerHandle`]). kvtier's batch `release_blocks` ([`Release::Batch`]) is a
//! separate configuration whose label says so: kvbm has no batch release, so only per-handle
//! figures compare the two systems like for like.
//!
//! Keys are built the way a serving engine would: `SequenceHash::root(chain[0])`, then
//! `SequenceHash::child_of(previous, chain[i])`, so position and parent fragment are set.

use std::sync::Arc;

use kvtier_core::{
    BlockManager, FifoFactory, FreqLeaseFactory, G1, ImmutableBlock, LineageFactory, LruFactory,
    MultiLruFactory, PolicyFactory, SequenceHash,
};

use crate::ops::{BlockManagerOps, ManagerFactory};

/// Builds the policy factory of one backend for a manager of `capacity` blocks.
pub type PolicyMaker = fn(capacity: usize) -> Arc<dyn PolicyFactory>;

/// Every eviction backend exported by kvtier-core, with default settings (the manager's default
/// shard count, per-handle release), in report order (the manager's default policy,
/// `freqlease`, first).
///
/// This is the one place to extend when kvtier-core exports a new backend; the criterion
/// benches, the smoke run and `vs-kvbm` all iterate over it.
pub fn kvtier_backends() -> Vec<KvtierFactory> {
    fn fifo(_: usize) -> Arc<dyn PolicyFactory> {
        Arc::new(FifoFactory::new())
    }
    fn lru(_: usize) -> Arc<dyn PolicyFactory> {
        Arc::new(LruFactory::new())
    }
    fn lineage(_: usize) -> Arc<dyn PolicyFactory> {
        Arc::new(LineageFactory::new())
    }
    fn multi_lru(capacity: usize) -> Arc<dyn PolicyFactory> {
        // A fresh sketch per manager (the factory's recommended sizing).
        Arc::new(MultiLruFactory::for_capacity(capacity))
    }
    fn freqlease(_: usize) -> Arc<dyn PolicyFactory> {
        Arc::new(FreqLeaseFactory::new())
    }
    vec![
        KvtierFactory::new("freqlease", freqlease),
        KvtierFactory::new("fifo", fifo),
        KvtierFactory::new("lru", lru),
        KvtierFactory::new("lineage", lineage),
        KvtierFactory::new("multi_lru", multi_lru),
    ]
}

/// How a kvtier manager gets a request's handles back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Release {
    /// `drop(Vec<ImmutableBlock>)`: one drop per handle, front to back, as an engine (and
    /// kvbm) does. The default, and the only mode headline figures use.
    #[default]
    PerHandle,
    /// `BlockManager::release_blocks` in the same order: consecutive blocks of one shard share
    /// a lock acquisition. kvbm has no equivalent; reported as an extra row.
    Batch,
}

impl Release {
    /// `per handle` or `batch`.
    pub fn label(self) -> &'static str {
        match self {
            Release::PerHandle => "per handle",
            Release::Batch => "batch",
        }
    }
}

/// Builds kvtier [`BlockManager`]s with one backend.
#[derive(Clone, Copy, Debug)]
pub struct KvtierFactory {
    backend: &'static str,
    policy: PolicyMaker,
    shards: Option<usize>,
    release: Release,
}

impl KvtierFactory {
    /// A factory for `backend` (a label) whose policies come from `policy`; default shard count,
    /// per-handle release.
    pub fn new(backend: &'static str, policy: PolicyMaker) -> Self {
        Self {
            backend,
            policy,
            shards: None,
            release: Release::PerHandle,
        }
    }

    /// Fixes the shard count (the label gains `@N`). Default: the manager's own default.
    pub fn with_shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// How handles are released (the label gains `+batch` for [`Release::Batch`]). Default
    /// [`Release::PerHandle`].
    pub fn with_release(mut self, release: Release) -> Self {
        self.release = release;
        self
    }

    /// The backend label (`lru`, `fifo`, ...).
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The shard count asked for; `None` = the manager's default.
    pub fn shards(&self) -> Option<usize> {
        self.shards
    }

    /// The release mode.
    pub fn release(&self) -> Release {
        self.release
    }

    /// The shard count a manager of `capacity` blocks gets from this factory (the builder's
    /// default, rounding and policy constraints applied). Builds one manager to find out.
    pub fn built_shards(&self, capacity: usize) -> usize {
        self.manager(capacity, 16).shard_count()
    }

    /// A bare manager (for benches that drive the kvtier API directly).
    ///
    /// # Panics
    ///
    /// When the builder rejects the configuration (a bug in this crate).
    pub fn manager(&self, capacity: usize, block_size: usize) -> BlockManager<G1> {
        let mut b = BlockManager::<G1>::builder()
            .with_block_count(capacity)
            .with_block_size(block_size)
            .with_policy((self.policy)(capacity));
        if let Some(s) = self.shards {
            b = b.with_shards(s);
        }
        b.build().expect("valid kvtier manager configuration")
    }
}

impl ManagerFactory for KvtierFactory {
    type M = KvtierOps;

    /// `kvtier/lru` (default configuration), `kvtier/lru@1` (1 shard asked for),
    /// `kvtier/lru +batch` (batch release), or both suffixes.
    fn label(&self) -> String {
        let mut s = format!("kvtier/{}", self.backend);
        if let Some(n) = self.shards {
            s.push_str(&format!("@{n}"));
        }
        if self.release == Release::Batch {
            s.push_str(" +batch");
        }
        s
    }

    fn build(&self, capacity: usize, block_size: usize) -> KvtierOps {
        KvtierOps {
            mgr: self.manager(capacity, block_size),
            release: self.release,
        }
    }
}

/// A kvtier manager driven through [`BlockManagerOps`].
#[derive(Debug)]
pub struct KvtierOps {
    /// The manager.
    pub mgr: BlockManager<G1>,
    /// How [`BlockManagerOps::release`] gives handles back.
    pub release: Release,
}

/// Sequence hashes of a chain: root, then each child of the previous.
///
/// # Examples
///
/// ```
/// use kvtier_bench::kvtier_keys;
///
/// let keys = kvtier_keys(&[10, 20, 30]);
/// assert_eq!(keys[2].position(), 2);
/// assert_eq!(keys[2].parent_fragment(), 20);
/// ```
pub fn kvtier_keys(chain: &[u64]) -> Vec<SequenceHash> {
    let mut out = Vec::with_capacity(chain.len());
    let mut prev: Option<SequenceHash> = None;
    for &h in chain {
        let k = match prev {
            None => SequenceHash::root(h),
            Some(p) => SequenceHash::child_of(p, h),
        };
        out.push(k);
        prev = Some(k);
    }
    out
}

impl BlockManagerOps for KvtierOps {
    type Key = SequenceHash;
    type Handle = ImmutableBlock<G1>;

    fn make_keys(&self, chain: &[u64]) -> Vec<SequenceHash> {
        kvtier_keys(chain)
    }

    #[inline]
    fn match_prefix(&self, keys: &[SequenceHash]) -> Vec<ImmutableBlock<G1>> {
        self.mgr.match_blocks(keys)
    }

    #[inline]
    fn allocate_register(&self, keys: &[SequenceHash]) -> Option<Vec<ImmutableBlock<G1>>> {
        if keys.is_empty() {
            return Some(Vec::new());
        }
        let blocks = self.mgr.allocate_blocks(keys.len()).ok()?;
        let block_size = self.mgr.block_size();
        let staged: Vec<_> = blocks
            .into_iter()
            .zip(keys)
            .map(|(b, &k)| b.stage(k, block_size).expect("block size matches"))
            .collect();
        Some(
            self.mgr
                .register_blocks(staged)
                .expect("blocks come from this manager"),
        )
    }

    #[inline]
    fn release(&self, handles: Vec<ImmutableBlock<G1>>) {
        match self.release {
            Release::PerHandle => drop(handles),
            Release::Batch => self.mgr.release_blocks(handles),
        }
    }

    fn available_blocks(&self) -> usize {
        self.mgr.available_blocks()
    }
}
